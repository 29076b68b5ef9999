/* jobs_store -- persistent job records of the queue in the store's LMDB env. */
#include "jobs_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_log.h"

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void id_key(uint64_t id, uint8_t out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(id >> (56 - 8 * i));
}

static uint64_t id_from_key(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static size_t final_size(const ss_job_tensor *t)
{
    return 2 + 1 + 1 + 8 * t->rank + 8 + t->name_len + t->nbytes;
}

size_t ss_job_rec_size(const ss_job_rec *rec)
{
    if (rec->saver.len > UINT16_MAX || rec->key.len > UINT16_MAX ||
        rec->reason.len > SS_JOB_REASON_MAX || rec->n_final > UINT8_MAX ||
        rec->ext_len > UINT32_MAX)
        return 0;
    uint64_t in = (uint64_t)rec->in_rows * rec->in_cols * 4u;
    uint64_t out = (uint64_t)rec->out_rows * rec->out_cols * 4u;
    uint64_t n = SS_JOB_REC_HEADER + rec->saver.len + rec->key.len + rec->reason.len + in + out +
                 rec->ext_len;
    for (size_t i = 0; i < rec->n_final; i++) {
        const ss_job_tensor *t = &rec->final[i];
        if (t->name_len > UINT16_MAX || t->rank > SS_TENSOR_MAX_RANK)
            return 0;
        n += final_size(t);
    }
    if (n > SIZE_MAX / 2)
        return 0;
    return (size_t)n;
}

void ss_job_rec_encode(const ss_job_rec *rec, uint8_t *buf)
{
    memset(buf, 0, SS_JOB_REC_HEADER);
    buf[0] = rec->is_ctx ? SS_JOB_CTX_VERSION : SS_JOB_REC_VERSION;
    buf[1] = (uint8_t)rec->state;
    buf[2] = rec->last ? 1 : 0;
    buf[3] = (uint8_t)rec->n_final;
    put32(buf + 4, rec->length);
    put32(buf + 8, rec->attempts);
    put32(buf + 12, rec->in_rows);
    put32(buf + 16, rec->in_cols);
    put32(buf + 20, rec->out_rows);
    put32(buf + 24, rec->out_cols);
    put16(buf + 28, (uint16_t)rec->saver.len);
    put16(buf + 30, (uint16_t)rec->key.len);
    put32(buf + 32, (uint32_t)rec->reason.len);
    put32(buf + 36, (uint32_t)rec->ext_len);
    put64(buf + 40, rec->segment);
    put64(buf + 48, rec->submit_ms);
    put64(buf + 56, rec->done_ms);
    uint8_t *p = buf + SS_JOB_REC_HEADER;
    if (rec->saver.len)
        memcpy(p, rec->saver.data, rec->saver.len);
    p += rec->saver.len;
    if (rec->key.len)
        memcpy(p, rec->key.data, rec->key.len);
    p += rec->key.len;
    if (rec->reason.len)
        memcpy(p, rec->reason.data, rec->reason.len);
    p += rec->reason.len;
    size_t in = (size_t)rec->in_rows * rec->in_cols * 4u;
    if (in)
        memcpy(p, rec->inputs, in);
    p += in;
    size_t out = (size_t)rec->out_rows * rec->out_cols * 4u;
    if (out)
        memcpy(p, rec->outputs, out);
    p += out;
    for (size_t i = 0; i < rec->n_final; i++) {
        const ss_job_tensor *t = &rec->final[i];
        put16(p, (uint16_t)t->name_len);
        p[2] = (uint8_t)t->dtype;
        p[3] = (uint8_t)t->rank;
        p += 4;
        for (size_t d = 0; d < t->rank; d++, p += 8)
            put64(p, (uint64_t)t->dims[d]);
        put64(p, t->nbytes);
        p += 8;
        memcpy(p, t->name, t->name_len);
        p += t->name_len;
        if (t->nbytes)
            memcpy(p, t->data, t->nbytes);
        p += t->nbytes;
    }
    if (rec->ext_len)
        memcpy(p, rec->ext, rec->ext_len);
}

int ss_job_rec_decode(const uint8_t *buf, size_t len, ss_job_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    if (len < SS_JOB_REC_HEADER ||
        (buf[0] != SS_JOB_REC_VERSION && buf[0] != SS_JOB_CTX_VERSION))
        return SS_ERR_FORMAT;
    rec->is_ctx = buf[0] == SS_JOB_CTX_VERSION;
    rec->state = buf[1];
    if (rec->is_ctx ? rec->state != 0
                    : (rec->state != SS_JOB_QUEUED && rec->state != SS_JOB_DONE &&
                       rec->state != SS_JOB_FAILED))
        return SS_ERR_FORMAT;
    rec->last = buf[2] != 0;
    rec->n_final = buf[3];
    rec->length = get32(buf + 4);
    rec->attempts = get32(buf + 8);
    rec->in_rows = get32(buf + 12);
    rec->in_cols = get32(buf + 16);
    rec->out_rows = get32(buf + 20);
    rec->out_cols = get32(buf + 24);
    rec->saver.len = get16(buf + 28);
    rec->key.len = get16(buf + 30);
    rec->reason.len = get32(buf + 32);
    rec->ext_len = get32(buf + 36);
    rec->segment = get64(buf + 40);
    rec->submit_ms = get64(buf + 48);
    rec->done_ms = get64(buf + 56);
    /* Element counts fit in 64 bits ((2^32-1)^2); bound each by the
     * record's length before scaling, so the sum below cannot wrap. */
    uint64_t in_e = (uint64_t)rec->in_rows * rec->in_cols;
    uint64_t out_e = (uint64_t)rec->out_rows * rec->out_cols;
    if (in_e > len / 4 || out_e > len / 4)
        return SS_ERR_FORMAT;
    uint64_t in = in_e * 4u;
    uint64_t out = out_e * 4u;
    uint64_t need = SS_JOB_REC_HEADER + (uint64_t)rec->saver.len + rec->key.len +
                    rec->reason.len + in + out + rec->ext_len;
    if (need > len || rec->length > rec->in_rows)
        return SS_ERR_FORMAT;
    const uint8_t *p = buf + SS_JOB_REC_HEADER;
    rec->saver.data = p;
    p += rec->saver.len;
    rec->key.data = p;
    p += rec->key.len;
    rec->reason.data = p;
    p += rec->reason.len;
    rec->inputs = p;
    p += in;
    rec->outputs = out ? p : NULL;
    p += out;
    rec->final_blob = p;
    rec->final_len = len - (size_t)need;
    rec->ext = rec->ext_len ? buf + (len - rec->ext_len) : NULL;
    /* Walk the final states once so later iteration cannot run off. */
    size_t pos = 0;
    ss_job_tensor t;
    for (size_t i = 0; i < rec->n_final; i++)
        if (ss_job_rec_final_next(rec, &pos, &t) != 1)
            return SS_ERR_FORMAT;
    if (pos != rec->final_len)
        return SS_ERR_FORMAT;
    return 0;
}

int ss_job_rec_final_next(const ss_job_rec *rec, size_t *pos, ss_job_tensor *t)
{
    size_t left = rec->final_len - *pos;
    if (left == 0)
        return 0;
    const uint8_t *p = rec->final_blob + *pos;
    if (left < 4)
        return SS_ERR_FORMAT;
    memset(t, 0, sizeof *t);
    t->name_len = get16(p);
    t->dtype = p[2];
    t->rank = p[3];
    if (t->rank > SS_TENSOR_MAX_RANK || left < 4 + 8 * t->rank + 8)
        return SS_ERR_FORMAT;
    p += 4;
    for (size_t d = 0; d < t->rank; d++, p += 8)
        t->dims[d] = (int64_t)get64(p);
    uint64_t nbytes = get64(p);
    p += 8;
    size_t head = 4 + 8 * t->rank + 8;
    if (nbytes > left || t->name_len + nbytes > left - head)
        return SS_ERR_FORMAT;
    t->name = (const char *)p;
    t->data = p + t->name_len;
    t->nbytes = (size_t)nbytes;
    *pos += head + t->name_len + t->nbytes;
    return 1;
}

/* LMDB error -> SS_ERR_* with a message: the store's one mapping
 * (ss_store_lmdb_error), the operation named as the queue's. */
static int lmdb_err(int rc, const char *what, char msg[SS_STORE_MSG])
{
    char w[128];
    snprintf(w, sizeof w, "jobs: %s", what);
    return ss_store_lmdb_error(rc, w, msg);
}

int ss_jobs_db_create(MDB_env *env, char msg[SS_STORE_MSG])
{
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc != 0)
        return lmdb_err(rc, "begin", msg);
    rc = mdb_dbi_open(txn, "jobs", MDB_CREATE, &dbi);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return lmdb_err(rc, "open database", msg);
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        return lmdb_err(rc, "commit", msg);
    return 0;
}

int ss_jobs_db_open(MDB_env *env, MDB_dbi *dbi, char msg[SS_STORE_MSG])
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return lmdb_err(rc, "begin read", msg);
    rc = mdb_dbi_open(txn, "jobs", 0, dbi);
    if (rc != 0) {
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND) {
            snprintf(msg, SS_STORE_MSG, "jobs: the jobs database does not exist");
            return SS_ERR_NOT_FOUND;
        }
        return lmdb_err(rc, "open database", msg);
    }
    /* Commit, not abort: an aborted transaction would close the handle. */
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        return lmdb_err(rc, "commit read", msg);
    return 0;
}

int ss_jobs_db_scan(MDB_env *env, MDB_dbi dbi, ss_jobs_scan_cb cb, void *arg,
                    uint64_t *max_id, char msg[SS_STORE_MSG])
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int ret = 0;
    *max_id = 0;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return lmdb_err(rc, "begin read", msg);
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) {
        ret = lmdb_err(rc, "cursor", msg);
        goto out;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            SS_LOG(SS_LOG_WARN, "jobs: skipping record with a %zu-byte key", k.mv_size);
            continue;
        }
        uint64_t id = id_from_key(k.mv_data);
        if (id > *max_id)
            *max_id = id;
        ss_job_rec rec;
        if (ss_job_rec_decode(v.mv_data, v.mv_size, &rec) < 0) {
            SS_LOG(SS_LOG_WARN, "jobs: skipping undecodable record %llu",
                   (unsigned long long)id);
            continue;
        }
        ret = cb(arg, id, &rec);
        if (ret < 0) {
            snprintf(msg, SS_STORE_MSG, "jobs: rebuilding the index: %s", ss_strerror(ret));
            goto out;
        }
    }
    if (rc != MDB_NOTFOUND)
        ret = lmdb_err(rc, "scan", msg);
out:
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return ret;
}

int ss_jobs_db_read_begin(MDB_env *env, MDB_txn **txn, char msg[SS_STORE_MSG])
{
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn);
    if (rc != 0) {
        *txn = NULL;
        return lmdb_err(rc, "begin read", msg);
    }
    return 0;
}

void ss_jobs_db_read_end(MDB_txn *txn)
{
    if (txn)
        mdb_txn_abort(txn);
}

int ss_jobs_db_get(MDB_txn *txn, MDB_dbi dbi, uint64_t id, ss_job_rec *rec,
                   char msg[SS_STORE_MSG])
{
    uint8_t kb[8];
    id_key(id, kb);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        snprintf(msg, SS_STORE_MSG, "job %llu not found", (unsigned long long)id);
        return SS_ERR_NOT_FOUND;
    }
    if (rc != 0)
        return lmdb_err(rc, "get", msg);
    if (ss_job_rec_decode(v.mv_data, v.mv_size, rec) < 0) {
        snprintf(msg, SS_STORE_MSG, "job %llu: corrupt record", (unsigned long long)id);
        return SS_ERR_FORMAT;
    }
    return 0;
}

int ss_jobs_db_put(MDB_txn *txn, MDB_dbi dbi, uint64_t id, const ss_job_rec *rec,
                   char msg[SS_STORE_MSG])
{
    size_t n = ss_job_rec_size(rec);
    if (n == 0) {
        snprintf(msg, SS_STORE_MSG, "job %llu: record too large", (unsigned long long)id);
        return SS_ERR_TOO_BIG;
    }
    uint8_t *buf = malloc(n);
    if (!buf) {
        snprintf(msg, SS_STORE_MSG, "job %llu: out of memory", (unsigned long long)id);
        return SS_ERR_NOMEM;
    }
    ss_job_rec_encode(rec, buf);
    uint8_t kb[8];
    id_key(id, kb);
    MDB_val k = {sizeof kb, kb}, v = {n, buf};
    int rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc != 0) {
        free(buf);
        return lmdb_err(rc, "put", msg);
    }
    /* The write-ahead log's copy of the write (no-op when it is off). */
    int ret = ss_store_log_put(txn, "jobs", &k, &v);
    free(buf);
    if (ret < 0)
        snprintf(msg, SS_STORE_MSG, "job %llu: cannot log the write: %s",
                 (unsigned long long)id, ss_strerror(ret));
    return ret;
}

int ss_jobs_db_del(MDB_txn *txn, MDB_dbi dbi, uint64_t id, char msg[SS_STORE_MSG])
{
    uint8_t kb[8];
    id_key(id, kb);
    MDB_val k = {sizeof kb, kb};
    int rc = mdb_del(txn, dbi, &k, NULL);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return lmdb_err(rc, "delete", msg);
    int ret = ss_store_log_del(txn, "jobs", &k);
    if (ret < 0)
        snprintf(msg, SS_STORE_MSG, "job %llu: cannot log the delete: %s",
                 (unsigned long long)id, ss_strerror(ret));
    return ret;
}
