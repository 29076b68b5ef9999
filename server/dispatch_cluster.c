/* dispatch_cluster -- the cluster side of the request layer: the ownership
 * check before keyed requests (MOVED / frozen UNAVAILABLE), and the
 * Topology, SlotFreeze, SlotExport, SlotImport and SlotDelete handlers
 * (docs/cluster.md, docs/protocol.md "Cluster"). Also a server module: its
 * stats hook fills the cluster fields of Stats (and so /readyz and the
 * metrics), its shutdown hook stops the etcd watcher. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "dispatch_internal.h"
#include "jobs_slots.h"
#include "store_slots.h"
#include "ss_error.h"
#include "ss_keyfmt.h"
#include "ss_log.h"
#include "ss_slot.h"
#include "shard.h"

#define CODE(name) STATESAVER__V1__CODE__##name
/* Bytes of a SlotExport reply kept for its envelope and per-record fields. */
#define EXPORT_SLACK (64u * 1024u)
#define EXPORT_PER_RECORD 32u

/* What the slot RPCs keep between calls. */
typedef struct ss_dispatch_cluster {
    ss_dispatch *d;                       /* owner */
    unsigned del_first, del_last;         /* range the delete cursor is for */
    uint8_t del_cursor[SS_STORE_SLOTS_CURSOR_MAX]; /* where the next delete scan starts */
    size_t del_cursor_len;                /* 0 = the beginning */
    bool del_busy;                        /* a SlotDelete is in the writer */
} ss_dispatch_cluster;

static ss_shard *cluster_of(ss_request *req)
{
    return ss_request_dispatch(req)->cluster;
}

/* The cluster view, or NULL after answering (a server wired without one,
 * as some tests do). */
static ss_shard *need_cluster(ss_request *req)
{
    ss_dispatch *d = ss_request_dispatch(req);
    if (!d->cluster || !d->cl) {
        ss_request_error(req, CODE(UNIMPLEMENTED), "this server was started "
                         "without a cluster view");
        return NULL;
    }
    return d->cluster;
}

/* ---- ownership check ---- */

static bool check_one(ss_request *req, ss_shard *c, const uint8_t *key, size_t len,
                      bool write)
{
    ss_shard_where w;
    ss_shard_verdict v = ss_shard_check_key(c, key, len, write, &w);
    if (v == SS_CLUSTER_OK)
        return false;
    char shown[4 * SS_DISPATCH_KEY_SHOW + 8];
    ss_keyfmt(shown, sizeof shown, key, len);
    if (v == SS_CLUSTER_FROZEN) {
        ss_request_error(req, CODE(UNAVAILABLE),
                         "slot %u is being moved, retry (key '%s')", w.slot, shown);
        return true;
    }
    if (!w.shard) {
        ss_request_error(req, CODE(UNAVAILABLE),
                         "slot %u of key '%s' has no owner in topology epoch %" PRIu64
                         "; retry", w.slot, shown, w.epoch);
        return true;
    }
    Statesaver__V1__Redirect r = STATESAVER__V1__REDIRECT__INIT;
    r.address = (char *)w.address;
    r.shard = (char *)w.shard;
    r.epoch = w.epoch;
    r.slot = w.slot;
    ss_request_moved(req, &r, "key '%s' (slot %u) is owned by shard %s at %s "
                     "(topology epoch %" PRIu64 ")", shown, w.slot, w.shard, w.address,
                     w.epoch);
    return true;
}

bool ss_dispatch_cluster_check(ss_dispatch *d, ss_request *req)
{
    ss_shard *c = d->cluster;
    if (ss_shard_source_of(c) == SS_CLUSTER_NONE)
        return false;
    const ss_request_msg *m = ss_request_message(req);
    switch (m->body_case) {
    case STATESAVER__V1__REQUEST__BODY_FETCH:
        if (m->fetch)
            for (size_t i = 0; i < m->fetch->n_keys; i++)
                if (check_one(req, c, m->fetch->keys[i].data, m->fetch->keys[i].len, false))
                    return true;
        return false;
    case STATESAVER__V1__REQUEST__BODY_SAVE:
        if (m->save)
            for (size_t i = 0; i < m->save->n_keys; i++)
                if (check_one(req, c, m->save->keys[i].data, m->save->keys[i].len, true))
                    return true;
        return false;
    case STATESAVER__V1__REQUEST__BODY_DROP:
        if (m->drop && !m->drop->all)
            for (size_t i = 0; i < m->drop->n_keys; i++)
                if (check_one(req, c, m->drop->keys[i].data, m->drop->keys[i].len, true))
                    return true;
        return false;
    case STATESAVER__V1__REQUEST__BODY_SUBMIT:
        return m->submit && m->submit->key.len &&
               check_one(req, c, m->submit->key.data, m->submit->key.len, true);
    case STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT:
        /* collecting deletes the record: a write */
        return m->await_segment && m->await_segment->key.len &&
               check_one(req, c, m->await_segment->key.data, m->await_segment->key.len,
                         m->await_segment->collect);
    case STATESAVER__V1__REQUEST__BODY_COMPLETE:
        if (m->complete)
            for (size_t i = 0; i < m->complete->n_items; i++)
                if (m->complete->items[i] &&
                    check_one(req, c, m->complete->items[i]->key.data,
                              m->complete->items[i]->key.len, true))
                    return true;
        return false;
    case STATESAVER__V1__REQUEST__BODY_CANCEL:
        if (m->cancel)
            for (size_t i = 0; i < m->cancel->n_keys; i++)
                if (check_one(req, c, m->cancel->keys[i].data, m->cancel->keys[i].len, true))
                    return true;
        return false;
    default:
        /* Declare, Drop all, List, Stats, Lease, Ping, Hello, Topology and
         * the slot RPCs are local: clients fan them out */
        return false;
    }
}

/* The saver and key of a job record (store_slots.h's view of one). */
static int job_ident(const void *val, size_t len, ss_bytes *saver, ss_bytes *key)
{
    ss_job_rec rec;
    int rc = ss_job_rec_decode(val, len, &rec);
    if (rc < 0)
        return rc;
    *saver = rec.saver;
    *key = rec.key;
    return 0;
}

/* ---- Topology ---- */

static void h_topology(ss_request *req, void *ctx)
{
    (void)ctx;
    ss_shard *c = need_cluster(req);
    if (!c)
        return;
    Statesaver__V1__TopologyResponse *tr = ss_topology_to_pb(ss_shard_topology(c));
    if (!tr) {
        ss_request_error(req, CODE(RESOURCE_EXHAUSTED), "out of memory");
        return;
    }
    char *self = strdup(ss_shard_self(c));
    char *source = strdup(ss_shard_source_name(c));
    if (self && source) {
        tr->self = self;
        tr->source = source;
        self = source = NULL;
    }
    free(self);
    free(source);
    tr->stale = ss_shard_stale(c);
    size_t nf = 0;
    Statesaver__V1__SlotRange **fr = ss_shard_frozen_ranges(c, &nf);
    tr->frozen = fr;
    tr->n_frozen = nf;
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_TOPOLOGY;
    resp.topology = tr;
    ss_request_reply(req, &resp);
    protobuf_c_message_free_unpacked(&tr->base, NULL);
}

/* ---- range checks ---- */

static bool check_range(ss_request *req, unsigned first, unsigned last, const char *what)
{
    if (first > last || last >= SS_SLOT_COUNT) {
        ss_request_error(req, CODE(INVALID_ARGUMENT),
                         "%s: bad slot range %u-%u (slots are 0..%u, first <= last)", what,
                         first, last, SS_SLOT_COUNT - 1);
        return false;
    }
    return true;
}

/* Jobs of a key are held from Lease while its slot is frozen or owned by
 * another shard. */
static bool job_held(void *arg, const uint8_t *key, size_t len)
{
    const ss_shard *c = arg;
    unsigned s = ss_slot_of(key, len);
    return ss_shard_frozen(c, s) || !ss_shard_owns(c, s);
}

static void refresh_holds(ss_dispatch *d)
{
    ss_jobs *j = ss_dispatch_jobs(d);
    if (j && d->cluster && ss_shard_source_of(d->cluster) != SS_CLUSTER_NONE)
        ss_jobs_slots_hold(j, job_held, d->cluster);
}

static void on_topology_change(void *arg)
{
    refresh_holds(arg);
}

/* ---- SlotFreeze ---- */

typedef struct freeze_op {
    ss_write_op op;                          /* first */
    ss_request *req;                         /* answered when done */
    ss_store *st;                            /* the store */
    uint8_t bits[SS_STORE_SLOTS_BITMAP_BYTES];     /* the frozen set to persist */
} freeze_op;

static int freeze_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    freeze_op *f = (freeze_op *)op;
    return ss_store_slots_frozen_put(txn, f->st, f->bits, msg);
}

static void freeze_done(ss_write_op *op, int rc, const char *msg)
{
    freeze_op *f = (freeze_op *)op;
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cluster: cannot persist the frozen slots: %s", msg);
        ss_request_fail(f->req, rc, msg);
    } else {
        ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
        Statesaver__V1__SlotFreezeResponse body = STATESAVER__V1__SLOT_FREEZE_RESPONSE__INIT;
        resp.body_case = STATESAVER__V1__RESPONSE__BODY_SLOT_FREEZE;
        resp.slot_freeze = &body;
        ss_request_reply(f->req, &resp);
    }
    free(f);
}

static void h_slot_freeze(ss_request *req, void *ctx)
{
    (void)ctx;
    ss_dispatch *d = ss_request_dispatch(req);
    ss_shard *c = need_cluster(req);
    const Statesaver__V1__SlotFreezeRequest *m = ss_request_message(req)->slot_freeze;
    if (!c)
        return;
    if (ss_shard_source_of(c) == SS_CLUSTER_NONE) {
        ss_request_error(req, CODE(FAILED_PRECONDITION),
                         "SlotFreeze: this server is not part of a cluster (start it "
                         "with --etcd or --cluster-config)");
        return;
    }
    if (!m || m->n_ranges == 0) {
        ss_request_error(req, CODE(INVALID_ARGUMENT), "SlotFreeze: no slot ranges given");
        return;
    }
    for (size_t i = 0; i < m->n_ranges; i++)
        if (!check_range(req, m->ranges[i]->first, m->ranges[i]->last, "SlotFreeze"))
            return;
    freeze_op *f = calloc(1, sizeof *f);
    if (!f) {
        ss_request_error(req, CODE(RESOURCE_EXHAUSTED), "out of memory");
        return;
    }
    for (size_t i = 0; i < m->n_ranges; i++)
        ss_shard_set_frozen(c, m->ranges[i]->first, m->ranges[i]->last, m->freeze);
    refresh_holds(d);
    SS_LOG(SS_LOG_INFO, "cluster: %s %zu slot range(s) (first %u-%u, move '%s'); %u "
           "slots frozen now", m->freeze ? "froze" : "thawed", m->n_ranges,
           m->ranges[0]->first, m->ranges[0]->last, m->move_id ? m->move_id : "",
           ss_shard_frozen_count(c));
    /* Persisted through the writer: once this commits, every write queued
     * before the freeze has committed too, so an export sees it. */
    f->req = req;
    f->st = ss_server_store(ss_request_server(req));
    ss_shard_frozen_bitmap(c, f->bits);
    f->op.run = freeze_run;
    f->op.done = freeze_done;
    ss_writer_submit(ss_server_writer(ss_request_server(req)), &f->op);
}

/* ---- SlotExport ---- */

typedef struct export_ctx {
    Statesaver__V1__SlotRecord *recs;   /* records (fields point into bufs) */
    Statesaver__V1__SlotRecord **ptrs;  /* pointers for the reply */
    uint8_t **bufs;                     /* owned copies of key + value */
    size_t n, cap;                      /* records, allocated */
    size_t bytes;                       /* reply bytes so far (estimate) */
    size_t max_bytes;                   /* budget */
    bool nomem;                         /* an allocation failed */
} export_ctx;

static int export_cb(void *arg, const ss_store_slots_rec *r)
{
    export_ctx *x = arg;
    size_t add = r->dk.mv_size + r->val.mv_size + EXPORT_PER_RECORD;
    if (x->n > 0 && x->bytes + add > x->max_bytes)
        return 1;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 64;
        Statesaver__V1__SlotRecord *nr = realloc(x->recs, cap * sizeof *nr);
        if (nr)
            x->recs = nr;
        uint8_t **nb = realloc(x->bufs, cap * sizeof *nb);
        if (nb)
            x->bufs = nb;
        if (!nr || !nb) {
            x->nomem = true;
            return SS_ERR_NOMEM;
        }
        x->cap = cap;
    }
    uint8_t *buf = malloc(r->dk.mv_size + r->val.mv_size + 1);
    if (!buf) {
        x->nomem = true;
        return SS_ERR_NOMEM;
    }
    memcpy(buf, r->dk.mv_data, r->dk.mv_size);
    memcpy(buf + r->dk.mv_size, r->val.mv_data, r->val.mv_size);
    Statesaver__V1__SlotRecord *s = &x->recs[x->n];
    statesaver__v1__slot_record__init(s);
    s->db = (char *)ss_store_slots_db_name(r->db);
    s->key.data = buf;
    s->key.len = r->dk.mv_size;
    s->value.data = buf + r->dk.mv_size;
    s->value.len = r->val.mv_size;
    x->bufs[x->n++] = buf;
    x->bytes += add;
    return 0;
}

static void export_free(export_ctx *x)
{
    for (size_t i = 0; i < x->n; i++)
        free(x->bufs[i]);
    free(x->bufs);
    free(x->recs);
    free(x->ptrs);
}

static void h_slot_export(ss_request *req, void *ctx)
{
    (void)ctx;
    ss_dispatch *d = ss_request_dispatch(req);
    const Statesaver__V1__SlotExportRequest *m = ss_request_message(req)->slot_export;
    const ss_config *cfg = ss_server_config(ss_request_server(req));
    ss_jobs *j = ss_dispatch_jobs(d);
    if (!need_cluster(req) || !m || !check_range(req, m->first, m->last, "SlotExport"))
        return;
    if (!j) {
        ss_request_error(req, CODE(UNAVAILABLE), "the job queue is not running");
        return;
    }
    size_t max = m->max_bytes ? m->max_bytes : cfg->slot_export_bytes;
    if (max > cfg->slot_export_bytes)
        max = cfg->slot_export_bytes;
    size_t frame_room = cfg->max_frame_bytes > 2 * EXPORT_SLACK
                            ? cfg->max_frame_bytes - EXPORT_SLACK
                            : cfg->max_frame_bytes / 2;
    if (max > frame_room)
        max = frame_room;
    export_ctx x = {.max_bytes = max};
    uint8_t next[SS_STORE_SLOTS_CURSOR_MAX];
    size_t next_len = 0;
    bool done = false;
    char msg[SS_STORE_MSG];
    int rc = ss_store_slots_scan(ss_server_store(ss_request_server(req)), ss_jobs_slots_dbi(j),
                           job_ident,
                           m->first, m->last, m->cursor.data, m->cursor.len, export_cb, &x,
                           next, &next_len, &done, msg);
    if (rc < 0) {
        export_free(&x);
        ss_request_fail(req, rc, x.nomem ? "out of memory" : msg);
        return;
    }
    if (x.n == 1 && x.bytes > frame_room) {
        export_free(&x);
        ss_request_error(req, CODE(RESOURCE_EXHAUSTED),
                         "SlotExport: one record is larger than the frame limit "
                         "(--max-frame-bytes)");
        return;
    }
    x.ptrs = malloc((x.n ? x.n : 1) * sizeof *x.ptrs);
    if (!x.ptrs) {
        export_free(&x);
        ss_request_error(req, CODE(RESOURCE_EXHAUSTED), "out of memory");
        return;
    }
    for (size_t i = 0; i < x.n; i++)
        x.ptrs[i] = &x.recs[i];
    Statesaver__V1__SlotExportResponse body = STATESAVER__V1__SLOT_EXPORT_RESPONSE__INIT;
    body.records = x.ptrs;
    body.n_records = x.n;
    body.cursor.data = next;
    body.cursor.len = next_len;
    body.done = done;
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_SLOT_EXPORT;
    resp.slot_export = &body;
    ss_request_reply(req, &resp);
    export_free(&x);
}

/* ---- SlotImport ---- */

typedef struct import_op {
    ss_write_op op;          /* first */
    ss_request *req;         /* answered when done (its message holds the bytes) */
    ss_store *st;            /* the store */
    ss_jobs *jobs;           /* the queue */
    MDB_dbi jobs_dbi;        /* its database */
    size_t n;                /* records */
    ss_store_slots_in *in;         /* n records (borrowing the request) */
    uint64_t written;        /* result */
} import_op;

static int import_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    import_op *o = (import_op *)op;
    return ss_store_slots_import_run(txn, o->st, o->jobs_dbi, o->n, o->in, &o->written, msg);
}

static void import_done(ss_write_op *op, int rc, const char *msg)
{
    import_op *o = (import_op *)op;
    if (rc < 0) {
        ss_request_fail(o->req, rc, msg);
    } else {
        ss_shard *c = cluster_of(o->req);
        for (size_t i = 0; i < o->n; i++) {
            if (o->in[i].db != SS_STORE_SLOTS_JOBS || o->in[i].job_id == 0)
                continue;
            ss_job_rec rec;
            if (ss_job_rec_decode(o->in[i].val.data, o->in[i].val.len, &rec) < 0)
                continue; /* checked before: cannot happen */
            bool held = job_held(c, rec.key.data, rec.key.len);
            if (ss_jobs_slots_adopt(o->jobs, o->in[i].job_id, &rec, held) < 0)
                SS_LOG(SS_LOG_ERROR, "cluster: out of memory indexing imported job "
                       "%" PRIu64 "; it is indexed at the next start", o->in[i].job_id);
        }
        Statesaver__V1__SlotImportResponse body = STATESAVER__V1__SLOT_IMPORT_RESPONSE__INIT;
        body.imported = o->written;
        ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
        resp.body_case = STATESAVER__V1__RESPONSE__BODY_SLOT_IMPORT;
        resp.slot_import = &body;
        ss_request_reply(o->req, &resp);
    }
    free(o->in);
    free(o);
}

/* Same (saver, key, segment) as an earlier jobs record of the batch? */
static bool dup_in_batch(const ss_store_slots_in *in, size_t i, const ss_job_rec *rec)
{
    for (size_t k = 0; k < i; k++) {
        ss_job_rec o;
        if (in[k].db != SS_STORE_SLOTS_JOBS || in[k].job_id == 0 ||
            ss_job_rec_decode(in[k].val.data, in[k].val.len, &o) < 0)
            continue;
        if (o.is_ctx == rec->is_ctx && o.segment == rec->segment &&
            o.key.len == rec->key.len &&
            o.saver.len == rec->saver.len &&
            memcmp(o.key.data, rec->key.data, o.key.len) == 0 &&
            memcmp(o.saver.data, rec->saver.data, o.saver.len) == 0)
            return true;
    }
    return false;
}

static void h_slot_import(ss_request *req, void *ctx)
{
    (void)ctx;
    ss_dispatch *d = ss_request_dispatch(req);
    const Statesaver__V1__SlotImportRequest *m = ss_request_message(req)->slot_import;
    ss_jobs *j = ss_dispatch_jobs(d);
    ss_store *st = ss_server_store(ss_request_server(req));
    ss_shard *c = need_cluster(req);
    if (!c)
        return;
    if (!j) {
        ss_request_error(req, CODE(UNAVAILABLE), "the job queue is not running");
        return;
    }
    if (!m || m->n_records == 0) {
        ss_request_error(req, CODE(INVALID_ARGUMENT), "SlotImport: no records given");
        return;
    }
    if (m->n_records > SS_STORE_SLOTS_IMPORT_MAX) {
        ss_request_error(req, CODE(RESOURCE_EXHAUSTED), "SlotImport: %zu records, above "
                         "the limit of %u per request", m->n_records, SS_STORE_SLOTS_IMPORT_MAX);
        return;
    }
    import_op *o = calloc(1, sizeof *o);
    ss_store_slots_in *in = calloc(m->n_records, sizeof *in);
    if (!o || !in) {
        free(o);
        free(in);
        ss_request_error(req, CODE(RESOURCE_EXHAUSTED), "out of memory");
        return;
    }
    char msg[SS_STORE_MSG];
    for (size_t i = 0; i < m->n_records; i++) {
        const Statesaver__V1__SlotRecord *r = m->records[i];
        int db = ss_store_slots_db_from_name(r->db);
        if (db < 0) {
            ss_request_error(req, CODE(INVALID_ARGUMENT), "SlotImport: records[%zu]: "
                             "unknown database '%s' (seqs, evicted, finished, jobs)", i,
                             r->db);
            goto fail;
        }
        in[i].db = (ss_store_slots_db)db;
        in[i].dk.data = r->key.data;
        in[i].dk.len = r->key.len;
        in[i].val.data = r->value.data;
        in[i].val.len = r->value.len;
        unsigned slot = 0;
        int rc = ss_store_slots_check_in(st, job_ident, &in[i], &slot, msg);
        if (rc < 0) {
            ss_request_error(req, ss_dispatch_status_code(rc), "SlotImport: records[%zu]: %s",
                             i, msg);
            goto fail;
        }
        /* A target imports only slots it does not own yet: once the flip
         * has given it the slot, it serves writes there, and a late import
         * (a second mover's batch in flight at the flip) would overwrite
         * them. */
        if (ss_shard_owns(c, slot)) {
            ss_request_error(req, CODE(FAILED_PRECONDITION), "SlotImport: records[%zu]: slot "
                             "%u is already owned by this shard (topology epoch %" PRIu64
                             "); imports go to slots before their flip", i, slot,
                             ss_topology_epoch(ss_shard_topology(c)));
            goto fail;
        }
        if (in[i].db == SS_STORE_SLOTS_JOBS) {
            ss_job_rec rec;
            ss_job_rec_decode(r->value.data, r->value.len, &rec);
            if (!ss_jobs_slots_has(j, &rec) && !dup_in_batch(in, i, &rec))
                in[i].job_id = ss_jobs_slots_new_id(j);
        }
    }
    o->req = req;
    o->st = st;
    o->jobs = j;
    o->jobs_dbi = ss_jobs_slots_dbi(j);
    o->n = m->n_records;
    o->in = in;
    o->op.run = import_run;
    o->op.done = import_done;
    ss_writer_submit(ss_server_writer(ss_request_server(req)), &o->op);
    return;
fail:
    free(in);
    free(o);
}

/* ---- SlotDelete ---- */

/* A deleted job's identity, for the index after the commit. */
typedef struct gone_job {
    uint8_t *buf;         /* saver then key (owned) */
    size_t saver_len;     /* bytes of saver */
    size_t key_len;       /* bytes of key */
    uint64_t segment;     /* segment */
    bool is_ctx;          /* a context record (training), not a segment */
} gone_job;

typedef struct delete_op {
    ss_write_op op;       /* first */
    ss_request *req;      /* answered when done */
    ss_store *st;         /* the store */
    ss_jobs *jobs;        /* the queue */
    MDB_dbi jobs_dbi;     /* its database */
    ss_store_slots_del *del;    /* records to delete (owned) */
    size_t n, cap;        /* entries, allocated */
    gone_job *gone;       /* job records among them (owned) */
    size_t n_gone, cap_gone; /* entries, allocated */
    size_t max;           /* max_records */
    size_t skipped;       /* leased/busy jobs left for a later call */
    bool nomem;           /* an allocation failed while collecting */
    bool done;            /* nothing of the range is left */
    uint64_t deleted;     /* result */
} delete_op;

static int delete_cb(void *arg, const ss_store_slots_rec *r)
{
    delete_op *o = arg;
    if (o->n >= o->max)
        return 1;
    ss_job_rec rec;
    if (r->db == SS_STORE_SLOTS_JOBS) {
        if (ss_job_rec_decode(r->val.mv_data, r->val.mv_size, &rec) < 0)
            return 0;
        if (!ss_jobs_slots_can_forget(o->jobs, &rec)) {
            o->skipped++;
            return 0;
        }
        if (o->n_gone == o->cap_gone) {
            size_t cap = o->cap_gone ? o->cap_gone * 2 : 64;
            gone_job *g = realloc(o->gone, cap * sizeof *g);
            if (!g)
                goto nomem;
            o->gone = g;
            o->cap_gone = cap;
        }
        gone_job *g = &o->gone[o->n_gone];
        g->buf = malloc(rec.saver.len + rec.key.len + 1);
        if (!g->buf)
            goto nomem;
        memcpy(g->buf, rec.saver.data, rec.saver.len);
        memcpy(g->buf + rec.saver.len, rec.key.data, rec.key.len);
        g->saver_len = rec.saver.len;
        g->key_len = rec.key.len;
        g->segment = rec.segment;
        g->is_ctx = rec.is_ctx;
        o->n_gone++;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        ss_store_slots_del *nd = realloc(o->del, cap * sizeof *nd);
        if (!nd)
            goto nomem;
        o->del = nd;
        o->cap = cap;
    }
    ss_store_slots_del *x = &o->del[o->n];
    x->db = r->db;
    x->dk = malloc(r->dk.mv_size ? r->dk.mv_size : 1);
    if (!x->dk)
        goto nomem;
    memcpy(x->dk, r->dk.mv_data, r->dk.mv_size);
    x->dk_len = r->dk.mv_size;
    o->n++;
    return 0;
nomem:
    o->nomem = true;
    return SS_ERR_NOMEM;
}

static void delete_free(delete_op *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->del[i].dk);
    for (size_t i = 0; i < o->n_gone; i++)
        free(o->gone[i].buf);
    free(o->del);
    free(o->gone);
    free(o);
}

static int delete_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    delete_op *o = (delete_op *)op;
    return ss_store_slots_delete_run(txn, o->st, o->jobs_dbi, o->n, o->del, &o->deleted, msg);
}

static void delete_done(ss_write_op *op, int rc, const char *msg)
{
    delete_op *o = (delete_op *)op;
    ss_dispatch *d = ss_request_dispatch(o->req);
    d->cl->del_busy = false;
    if (rc < 0) {
        ss_request_fail(o->req, rc, msg);
    } else {
        for (size_t i = 0; i < o->n_gone; i++) {
            ss_job_rec rec;
            memset(&rec, 0, sizeof rec);
            rec.saver.data = o->gone[i].buf;
            rec.saver.len = o->gone[i].saver_len;
            rec.key.data = o->gone[i].buf + o->gone[i].saver_len;
            rec.key.len = o->gone[i].key_len;
            rec.segment = o->gone[i].segment;
            rec.is_ctx = o->gone[i].is_ctx;
            ss_jobs_slots_forget(o->jobs, &rec);
        }
        Statesaver__V1__SlotDeleteResponse body = STATESAVER__V1__SLOT_DELETE_RESPONSE__INIT;
        body.deleted = o->deleted;
        body.done = o->done;
        ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
        resp.body_case = STATESAVER__V1__RESPONSE__BODY_SLOT_DELETE;
        resp.slot_delete = &body;
        ss_request_reply(o->req, &resp);
    }
    delete_free(o);
}

static void h_slot_delete(ss_request *req, void *ctx)
{
    (void)ctx;
    ss_dispatch *d = ss_request_dispatch(req);
    ss_dispatch_cluster *cl = d->cl;
    ss_shard *c = need_cluster(req);
    const Statesaver__V1__SlotDeleteRequest *m = ss_request_message(req)->slot_delete;
    ss_jobs *j = ss_dispatch_jobs(d);
    if (!c)
        return;
    if (!m || !check_range(req, m->first, m->last, "SlotDelete"))
        return;
    if (!j) {
        ss_request_error(req, CODE(UNAVAILABLE), "the job queue is not running");
        return;
    }
    for (unsigned s = m->first; s <= m->last; s++)
        if (ss_shard_owns(c, s)) {
            ss_request_error(req, CODE(UNAVAILABLE),
                             "SlotDelete: slot %u is owned by this shard in topology "
                             "epoch %" PRIu64 "; only slots owned elsewhere are deleted "
                             "(retry once the new topology has arrived)", s,
                             ss_topology_epoch(ss_shard_topology(c)));
            return;
        }
    if (m->max_records > SS_STORE_SLOTS_DELETE_MAX) {
        ss_request_error(req, CODE(INVALID_ARGUMENT), "SlotDelete: max_records %" PRIu32
                         " above the limit of %u", m->max_records, SS_STORE_SLOTS_DELETE_MAX);
        return;
    }
    if (cl->del_busy) {
        ss_request_error(req, CODE(UNAVAILABLE), "SlotDelete: another delete is "
                         "running; retry");
        return;
    }
    delete_op *o = calloc(1, sizeof *o);
    if (!o) {
        ss_request_error(req, CODE(RESOURCE_EXHAUSTED), "out of memory");
        return;
    }
    o->req = req;
    o->st = ss_server_store(ss_request_server(req));
    o->jobs = j;
    o->jobs_dbi = ss_jobs_slots_dbi(j);
    o->max = m->max_records ? m->max_records : SS_STORE_SLOTS_DELETE_DEFAULT;
    if (cl->del_first != m->first || cl->del_last != m->last) {
        cl->del_first = m->first;
        cl->del_last = m->last;
        cl->del_cursor_len = 0;
    }
    bool from_start = cl->del_cursor_len == 0;
    uint8_t next[SS_STORE_SLOTS_CURSOR_MAX];
    size_t next_len = 0;
    bool scan_done = false;
    char msg[SS_STORE_MSG];
    int rc = ss_store_slots_scan(o->st, o->jobs_dbi, job_ident, m->first, m->last, cl->del_cursor,
                           cl->del_cursor_len, delete_cb, o, next, &next_len, &scan_done,
                           msg);
    if (rc < 0) {
        bool nomem = o->nomem;
        delete_free(o);
        ss_request_fail(req, rc, nomem ? "out of memory" : msg);
        return;
    }
    if (scan_done) {
        o->done = from_start && o->n == 0 && o->skipped == 0;
        cl->del_cursor_len = 0;
    } else {
        memcpy(cl->del_cursor, next, next_len);
        cl->del_cursor_len = next_len;
    }
    cl->del_busy = true;
    o->op.run = delete_run;
    o->op.done = delete_done;
    ss_writer_submit(ss_server_writer(ss_request_server(req)), &o->op);
}

/* ---- module: stats, shutdown ---- */

static void mod_stats(void *arg, const char *saver, Statesaver__V1__StatsResponse *out)
{
    (void)saver;
    ss_dispatch *d = arg;
    ss_shard *c = d->cluster;
    if (!c)
        return;
    out->shard = (char *)ss_shard_self(c);
    out->topology_epoch = ss_topology_epoch(ss_shard_topology(c));
    out->topology_stale = ss_shard_stale(c);
    out->topology_error = (char *)ss_shard_error(c);
    out->etcd_errors = ss_shard_etcd_errors(c);
    out->frozen_slots = ss_shard_frozen_count(c);
    out->owned_slots = ss_shard_owned_slots(c);
}

static void mod_shutdown(void *arg)
{
    ss_dispatch *d = arg;
    ss_shard_stop(d->cluster);
}

void ss_dispatch_cluster_register(ss_dispatch *d)
{
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_TOPOLOGY, h_topology, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_SLOT_FREEZE, h_slot_freeze, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_SLOT_EXPORT, h_slot_export, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_SLOT_IMPORT, h_slot_import, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_SLOT_DELETE, h_slot_delete, NULL);
}

int ss_dispatch_set_cluster(ss_dispatch *d, ss_shard *c)
{
    ss_dispatch_cluster *cl = calloc(1, sizeof *cl);
    if (!cl)
        return SS_ERR_NOMEM;
    cl->d = d;
    d->cl = cl;
    d->cluster = c;
    /* a source killed mid-move comes back frozen */
    uint8_t bits[SS_STORE_SLOTS_BITMAP_BYTES];
    char msg[SS_STORE_MSG];
    int rc = ss_store_slots_frozen_load(ss_server_store(d->srv), bits, msg);
    if (rc < 0)
        SS_LOG(SS_LOG_ERROR, "cluster: %s", msg);
    if (rc < 0 && rc != SS_STORE_ERR_CORRUPT)
        return rc;
    ss_shard_frozen_load(c, bits);
    if (ss_shard_frozen_count(c) > 0)
        SS_LOG(SS_LOG_WARN, "cluster: %u slots are frozen from an unfinished move; "
               "writes to them are refused until the mover thaws or finishes it",
               ss_shard_frozen_count(c));
    ss_shard_on_change(c, on_topology_change, d);
    refresh_holds(d);
    ss_module mod = {.name = "cluster", .arg = d, .shutdown = mod_shutdown,
                     .stats = mod_stats};
    return ss_server_add_module(d->srv, &mod);
}

void ss_dispatch_cluster_free(ss_dispatch *d)
{
    free(d->cl);
    d->cl = NULL;
}
