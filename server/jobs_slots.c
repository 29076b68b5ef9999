/* jobs_slots -- the job index side of slot moves: adopt imported records,
 * forget deleted ones, hold the jobs of frozen slots. */
#include "jobs_slots.h"

#include "jobs_internal.h"

MDB_dbi ss_jobs_slots_dbi(const ss_jobs *j)
{
    return j->dbi;
}

static seq *find_seq(ss_jobs *j, const ss_job_rec *rec)
{
    char name[SS_SAVER_NAME_MAX + 1];
    if (rec->saver.len == 0 || rec->saver.len > SS_SAVER_NAME_MAX)
        return NULL;
    memcpy(name, rec->saver.data, rec->saver.len);
    name[rec->saver.len] = '\0';
    saverq *sv = jq_saver_find(j, name);
    return sv ? jq_seq_find(sv, rec->key.data, rec->key.len) : NULL;
}

/* The job of a segment record (never of a context record). */
static job *find_job(ss_jobs *j, const ss_job_rec *rec)
{
    seq *sq = rec->is_ctx ? NULL : find_seq(j, rec);
    return sq ? jq_seq_job(sq, rec->segment) : NULL;
}

bool ss_jobs_slots_has(ss_jobs *j, const ss_job_rec *rec)
{
    if (rec->is_ctx) {
        seq *sq = find_seq(j, rec);
        return sq && sq->ctx_id != 0;
    }
    return find_job(j, rec) != NULL;
}

uint64_t ss_jobs_slots_new_id(ss_jobs *j)
{
    return j->next_id++;
}

int ss_jobs_slots_adopt(ss_jobs *j, uint64_t id, const ss_job_rec *rec, bool held)
{
    if (ss_jobs_slots_has(j, rec))
        return 0;
    saverq *sv = jq_saver_get(j, (const char *)rec->saver.data, rec->saver.len);
    if (!sv)
        return SS_ERR_NOMEM;
    seq *sq = jq_seq_find(sv, rec->key.data, rec->key.len);
    if (!sq && !(sq = jq_seq_new(j, sv, rec->key.data, rec->key.len, rec->submit_ms)))
        return SS_ERR_NOMEM;
    if (rec->is_ctx) {
        /* the sequence's context (training): no job, and no settle here,
         * which would delete a context whose jobs come in a later batch */
        if (!rec->ext || jq_train_blob_check(rec->ext, rec->ext_len) < 0)
            return SS_ERR_FORMAT;
        sq->ctx_id = id;
        sq->ctx_len = rec->ext_len;
        sq->ctx_crc = jq_train_crc(rec->ext, rec->ext_len);
        return 0;
    }
    job *jb = jq_job_from_record(id, rec);
    if (!jb)
        return SS_ERR_NOMEM;
    jb->held = held;
    if (jq_seq_insert(sq, jb) < 0) {
        jq_job_free(jb);
        jq_seq_settle(j, sq);
        return SS_ERR_NOMEM;
    }
    sv->n[jb->state]++;
    if (jb->state <= J_LEASED)
        j->n_active++;
    jq_refresh_next(j, sq);
    jq_propagate(j, sq);
    jq_seq_settle(j, sq);
    return 0;
}

typedef struct hold_ctx {
    ss_jobs *j;                 /* the queue */
    ss_jobs_slots_pred pred;    /* held or not, by key */
    void *arg;                  /* its argument */
    seq **touched;              /* sequences to settle after the walk */
    size_t n, cap;              /* entries, allocated */
} hold_ctx;

static void hold_seq_cb(void *arg, ss_map_node *node)
{
    hold_ctx *x = arg;
    seq *sq = (seq *)node;
    bool held = x->pred(x->arg, sq->key, sq->key_len);
    bool changed = false;
    for (size_t i = 0; i < sq->n_jobs; i++)
        if (sq->jobs[i]->held != held) {
            sq->jobs[i]->held = held;
            changed = true;
        }
    if (!changed)
        return;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 64;
        seq **t = realloc(x->touched, cap * sizeof *t);
        if (!t)
            return; /* settled later by the queue's own changes */
        x->touched = t;
        x->cap = cap;
    }
    x->touched[x->n++] = sq;
}

static void hold_saver_cb(void *arg, ss_map_node *node)
{
    ss_map_each(&((saverq *)node)->seqs, hold_seq_cb, arg);
}

void ss_jobs_slots_hold(ss_jobs *j, ss_jobs_slots_pred held, void *arg)
{
    hold_ctx x = {.j = j, .pred = held, .arg = arg};
    ss_map_each(&j->savers, hold_saver_cb, &x);
    /* settle outside the walk: settling may free a sequence or serve leases */
    for (size_t i = 0; i < x.n; i++)
        jq_seq_settle(j, x.touched[i]);
    free(x.touched);
}

bool ss_jobs_slots_can_forget(ss_jobs *j, const ss_job_rec *rec)
{
    job *jb = find_job(j, rec); /* a context record can always go */
    if (!jb)
        return true;
    if (jb->state == J_LEASED || jb->busy > 0 || jb->submits > 0 || jb->collecting) {
        jb->held = true;
        return false;
    }
    return true;
}

void ss_jobs_slots_forget(ss_jobs *j, const ss_job_rec *rec)
{
    if (rec->is_ctx) {
        seq *sq = find_seq(j, rec);
        if (sq) {
            sq->ctx_id = 0; /* its record is deleted already */
            sq->ctx_len = 0;
            sq->ctx_crc = 0;
        }
        return;
    }
    job *jb = find_job(j, rec);
    if (!jb)
        return;
    seq *sq = jb->sq;
    bool was_waking = jb->waking;
    jb->waking = true;
    waiter *w;
    while ((w = jb->awaits)) {
        jq_waiter_unpark(j, w);
        jq_reply_status(w->cb, w->arg, CODE(UNAVAILABLE),
                        "segment %" PRIu64 " moved to another shard; retry (the "
                        "topology names its owner)", jb->segment);
        free(w);
    }
    jb->waking = was_waking;
    jb->held = false;
    jq_job_detach(j, jb);
    jq_job_release(jb);
    jq_seq_settle(j, sq);
    jq_rearm(j);
}
