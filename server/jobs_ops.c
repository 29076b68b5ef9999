/* jobs_ops -- the writer-side ops of the job queue: the ONLY code of the
 * queue that runs on the writer thread. It sees nothing but the op (its
 * patches and copies) and the transaction; never loop-owned data.
 */
#include "jobs_internal.h"

/* Same named sequences, token ids and initial states (the extension past
 * its header: total_length and sequence_count are informational, so a
 * resubmission by a client that does not send them is still identical). */
static bool ext_same(const ss_job_rec *a, const ss_job_rec *b)
{
    size_t la = a->ext_len > JQ_EXT_HEAD ? a->ext_len - JQ_EXT_HEAD : 0;
    size_t lb = b->ext_len > JQ_EXT_HEAD ? b->ext_len - JQ_EXT_HEAD : 0;
    return la == lb && (la == 0 || memcmp(a->ext + JQ_EXT_HEAD, b->ext + JQ_EXT_HEAD, la) == 0);
}

/* Writer thread: apply one patch. */
static int patch_run(jobs_op *op, patch *p, MDB_txn *txn, ss_store_txn *stxn,
                     char msg[SS_STORE_MSG])
{
    ss_job_rec old, rec;
    int rc;
    switch (p->kind) {
    case P_INSERT:
        rc = ss_jobs_db_get(txn, op->dbi, p->id, &old, msg);
        if (rc == SS_ERR_NOT_FOUND) {
            rc = ss_jobs_db_put(txn, op->dbi, p->id, &p->rec, msg);
            p->inserted = rc == 0;
            return rc;
        }
        if (rc < 0)
            return rc;
        if (old.length == p->rec.length && old.last == p->rec.last &&
            old.in_rows == p->rec.in_rows && old.in_cols == p->rec.in_cols &&
            memcmp(old.inputs, p->rec.inputs, (size_t)old.in_rows * old.in_cols * 4u) == 0 &&
            ext_same(&old, &p->rec)) {
            p->already = true;
            return 0;
        }
        snprintf(msg, SS_STORE_MSG,
                 "segment %" PRIu64 " was already submitted with different inputs, "
                 "sequences, length or last flag", p->rec.segment);
        return SS_ERR_CONFLICT;
    case P_DONE: {
        ss_save_item item = {p->key, p->segment, p->final, p->states};
        bool already = false;
        rc = ss_store_save(stxn, op->schema, 1, &item, &already, op->now_ms, p->cmsg);
        if (rc == SS_ERR_CONFLICT) {
            p->conflict = true;
        } else if (rc < 0) {
            snprintf(msg, SS_STORE_MSG, "%s", p->cmsg);
            return rc;
        }
        p->already = already;
        rc = ss_jobs_db_get(txn, op->dbi, p->id, &old, msg);
        if (rc < 0)
            return rc;
        rec = old;
        rec.done_ms = op->now_ms;
        if (p->conflict) {
            rec.state = SS_JOB_FAILED;
            rec.reason.data = (const uint8_t *)p->cmsg;
            rec.reason.len = strlen(p->cmsg);
        } else {
            rec.state = SS_JOB_DONE;
            rec.reason.len = 0;
            rec.out_rows = p->out_rows;
            rec.out_cols = p->out_cols;
            rec.outputs = p->outputs;
            rec.n_final = p->n_finals;
            rec.final = p->finals;
        }
        if (rec.n_final && !rec.final)
            rec.n_final = 0; /* a failed record keeps no final states */
        return ss_jobs_db_put(txn, op->dbi, p->id, &rec, msg);
    }
    case P_RETRY:
    case P_FAIL:
        rc = ss_jobs_db_get(txn, op->dbi, p->id, &old, msg);
        if (rc == SS_ERR_NOT_FOUND)
            return 0; /* collected meanwhile: nothing to record */
        if (rc < 0)
            return rc;
        rec = old;
        rec.n_final = 0;
        rec.final = NULL;
        rec.attempts = p->attempts;
        rec.reason.data = (const uint8_t *)p->reason;
        rec.reason.len = p->reason ? strlen(p->reason) : 0;
        if (p->kind == P_FAIL) {
            rec.state = SS_JOB_FAILED;
            rec.done_ms = op->now_ms;
        }
        return ss_jobs_db_put(txn, op->dbi, p->id, &rec, msg);
    case P_DELETE:
        return ss_jobs_db_del(txn, op->dbi, p->id, msg);
    }
    snprintf(msg, SS_STORE_MSG, "jobs: unknown patch kind %d", p->kind);
    return SS_ERR_INTERNAL;
}

int jq_op_run(ss_write_op *base, ss_store_txn *stxn, char msg[SS_STORE_MSG])
{
    jobs_op *op = (jobs_op *)base;
    if (op->fault_rc < 0) { /* test seam (set on the loop thread at op creation) */
        snprintf(msg, SS_STORE_MSG, "jobs: test fault: write refused as if the map were full");
        return op->fault_rc;
    }
    MDB_txn *txn = ss_store_txn_mdb(stxn);
    for (size_t i = 0; i < op->n; i++) {
        int rc = patch_run(op, &op->p[i], txn, stxn, msg);
        if (rc < 0)
            return rc;
    }
    if (op->kind == OP_CANCEL)
        return jq_cancel_run_states(op, stxn, msg);
    return 0;
}
