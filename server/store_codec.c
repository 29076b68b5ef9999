/* store_codec -- keys and record codec: DB keys (long-key hash), sequence
 * records, eviction and finished markers, counters, error mapping.
 *
 * Byte layouts (all integers little-endian; see docs/store-format.md):
 *
 *   seqs key      saver bytes, 0x00, key bytes          (when it fits)
 *                 saver bytes, 0x00, key[0..P), hash16  (long keys: the DB
 *                 key is exactly maxkey bytes long, short ones are shorter;
 *                 P = maxkey - 16 - len(saver) - 1)
 *   seqs value    u8 version (1), u8 flags (0), u16 reserved (0),
 *                 u32 key_len (bytes of the full key that follow the header;
 *                 0 when the DB key holds the whole key),
 *                 u64 next_segment, u64 updated_ms,        -- 24 bytes
 *                 key bytes (key_len), then every state's bytes in schema
 *                 order (states[i].nbytes each, as sent on the wire).
 *   evicted key   as seqs key
 *   evicted value u8 version (1), u8 0, u16 0, u32 key_len, u64 next_segment,
 *                 u64 updated_ms, u64 evicted_ms,          -- 32 bytes
 *                 key bytes (key_len).
 *   finished key  as seqs key
 *   finished val  u8 version (1), u8 0, u16 0, u32 key_len, u64 next_segment
 *                 (segment + 1 of the final save), u64 finished_ms, -- 24
 *                 bytes, key bytes (key_len).
 *   savers        saver name -> u64 generation + packed DeclareRequest
 *   counts        saver name -> u64 sequences, u64 evicted  (16 bytes)
 */
#include "store.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

/* ---- small helpers ---- */

uint32_t ss_le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

void ss_le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Map an LMDB error to ours with a message. */
int store_mdb_fail(int rc, const char *what, char *msg)
{
    if (rc == MDB_MAP_FULL) {
        snprintf(msg, SS_STORE_MSG,
                 "%s: LMDB map is full; Drop sequences or savers (their "
                 "space is reusable at once) or restart the server with a "
                 "larger --map-size", what);
        return SS_ERR_FULL;
    }
    if (rc == MDB_TXN_FULL) {
        snprintf(msg, SS_STORE_MSG,
                 "%s: transaction too large for LMDB (%s); use smaller batches",
                 what, mdb_strerror(rc));
        return SS_ERR_FULL;
    }
    if (rc == MDB_READERS_FULL) {
        snprintf(msg, SS_STORE_MSG, "%s: %s; raise the reader slots", what,
                 mdb_strerror(rc));
        return SS_ERR_FULL;
    }
    snprintf(msg, SS_STORE_MSG, "%s: %s", what, mdb_strerror(rc));
    return SS_ERR_STORE;
}

/* Printable form of a key for messages: ASCII as is, the rest as \xHH,
 * cut with "..." when longer than the buffer allows. */
void store_key_escape(const uint8_t *k, size_t n, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = k[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '\\' && c != '\'';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > size) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

void store_fmt_time(uint64_t ms, char *out, size_t size)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    char base[32];
    gmtime_r(&sec, &tm);
    if (strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        base[0] = '\0';
    snprintf(out, size, "%.24s.%03uZ", base, (unsigned)(ms % 1000));
}

uint64_t store_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* 128-bit hash of a long key. Lookups compare the full key stored in the
 * record, so a collision is detected (and refused), never silently merged. */
static void key_hash(const uint8_t *p, size_t n, uint8_t out[HASH_BYTES])
{
    uint64_t a = 0x9e3779b97f4a7c15ull ^ n, b = 0x6a09e667f3bcc909ull + n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = ss_le64_get(p + i);
        a = store_mix64(a ^ w) + 0x9e3779b97f4a7c15ull;
        b = store_mix64(b + (w * 0xff51afd7ed558ccdull)) ^ a;
    }
    uint8_t tail[8] = {0};
    memcpy(tail, p + i, n - i);
    uint64_t w = ss_le64_get(tail);
    a = store_mix64(a ^ w ^ 0x243f6a8885a308d3ull);
    b = store_mix64(b + w + a);
    ss_le64_put(out, a);
    ss_le64_put(out + 8, b);
}

/* Build the DB key of (saver, key) into buf. *is_long tells whether the
 * key was shortened (then the full key lives in the record). */
void store_dbkey_make(const ss_store *st, const char *saver, size_t slen,
                       const uint8_t *key, size_t klen, uint8_t *buf,
                       size_t *len, bool *is_long)
{
    memcpy(buf, saver, slen);
    buf[slen] = 0;
    if (slen + 1 + klen < st->maxkey) {
        memcpy(buf + slen + 1, key, klen);
        *len = slen + 1 + klen;
        *is_long = false;
        return;
    }
    size_t p = st->maxkey - HASH_BYTES - slen - 1;
    memcpy(buf + slen + 1, key, p);
    key_hash(key, klen, buf + slen + 1 + p);
    *len = st->maxkey;
    *is_long = true;
}

int store_rec_parse(const MDB_val *v, store_rec *r)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < REC_HDR || p[0] != REC_VERSION)
        return SS_ERR_STORE;
    size_t kl = ss_le32_get(p + 4);
    if (kl > v->mv_size - REC_HDR)
        return SS_ERR_STORE;
    r->next_segment = ss_le64_get(p + 8);
    r->updated_ms = ss_le64_get(p + 16);
    r->key = kl ? p + REC_HDR : NULL;
    r->key_len = kl;
    r->states = p + REC_HDR + kl;
    r->states_len = v->mv_size - REC_HDR - kl;
    return 0;
}

/* Does a record found under a long DB key belong to this very key? */
bool store_rec_key_matches(const store_rec *r, bool is_long, const uint8_t *key,
                            size_t klen)
{
    if (!is_long)
        return r->key_len == 0;
    return r->key_len == klen && memcmp(r->key, key, klen) == 0;
}

int store_key_check(const ss_bytes *k, char *msg)
{
    if (k->len == 0 || k->len > SS_STORE_KEY_MAX) {
        snprintf(msg, SS_STORE_MSG, "key of %zu bytes (must be 1..%u)", k->len,
                 SS_STORE_KEY_MAX);
        return SS_ERR_INVALID;
    }
    return 0;
}

/* ---- counts ---- */

int store_counts_get(MDB_txn *t, ss_store *st, const char *saver,
                      uint64_t *seqs, uint64_t *evicted, char *msg)
{
    MDB_val k = {strlen(saver), (void *)(uintptr_t)saver}, v;
    int rc = mdb_get(t, st->counts, &k, &v);
    *seqs = *evicted = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return store_mdb_fail(rc, "read counts", msg);
    if (v.mv_size != COUNTS_BYTES) {
        snprintf(msg, SS_STORE_MSG, "corrupt counts of saver '%.64s'", saver);
        return SS_ERR_STORE;
    }
    *seqs = ss_le64_get(v.mv_data);
    *evicted = ss_le64_get((const uint8_t *)v.mv_data + 8);
    return 0;
}

int store_counts_add(MDB_txn *t, ss_store *st, const char *saver,
                      int64_t dseqs, uint64_t devicted, char *msg)
{
    uint64_t seqs, ev;
    int rc = store_counts_get(t, st, saver, &seqs, &ev, msg);
    if (rc < 0)
        return rc;
    seqs = (dseqs < 0 && (uint64_t)-dseqs > seqs) ? 0 : seqs + (uint64_t)dseqs;
    ev += devicted;
    uint8_t buf[COUNTS_BYTES];
    ss_le64_put(buf, seqs);
    ss_le64_put(buf + 8, ev);
    MDB_val k = {strlen(saver), (void *)(uintptr_t)saver}, v = {sizeof buf, buf};
    rc = mdb_put(t, st->counts, &k, &v, 0);
    return rc ? store_mdb_fail(rc, "write counts", msg) : 0;
}

/* Check that the saver still exists in this snapshot with schema's
 * generation (or an equal schema): guards against a drop or redeclare
 * between the caller's ss_store_schema and this transaction. */
int store_saver_check(MDB_txn *t, ss_store *st, const ss_schema *schema,
                       char *msg)
{
    MDB_val k = {strlen(schema->saver), schema->saver}, v;
    int rc = mdb_get(t, st->savers, &k, &v);
    if (rc == MDB_NOTFOUND) {
        snprintf(msg, SS_STORE_MSG, "saver '%.128s' is not declared",
                 schema->saver);
        return SS_ERR_NOT_FOUND;
    }
    if (rc != 0)
        return store_mdb_fail(rc, "read saver", msg);
    if (v.mv_size >= 8 && schema->generation != 0 &&
        ss_le64_get(v.mv_data) == schema->generation)
        return 0;
    ss_schema *now = NULL;
    rc = ss_schema_unpack(v.mv_data, v.mv_size, &now, msg);
    if (rc < 0)
        return rc;
    bool same = ss_schema_equal(now, schema);
    ss_schema_unref(now);
    if (!same) {
        snprintf(msg, SS_STORE_MSG,
                 "saver '%.128s' was redeclared with a different schema",
                 schema->saver);
        return SS_ERR_CONFLICT;
    }
    return 0;
}

/* Look up a marker in dbi (evicted or finished: both keep key_len at
 * offset 4 and the full key of a long key after a hdr-byte header).
 * Returns 0 (found, *v set), 1 (none, or another long key's) or an error. */
int store_marker_get(MDB_txn *t, MDB_dbi dbi, size_t hdr, const MDB_val *dk,
                      bool is_long, const uint8_t *key, size_t klen,
                      MDB_val *v, char *msg)
{
    MDB_val k = *dk;
    int rc = mdb_get(t, dbi, &k, v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return store_mdb_fail(rc, "read marker", msg);
    if (is_long) {
        const uint8_t *p = v->mv_data;
        size_t kl = v->mv_size >= hdr ? ss_le32_get(p + 4) : 0;
        if (kl != klen || v->mv_size < hdr + kl ||
            memcmp(p + hdr, key, klen) != 0)
            return 1;
    }
    return 0;
}

int store_evicted_get(MDB_txn *t, ss_store *st, const MDB_val *dk,
                       bool is_long, const uint8_t *key, size_t klen,
                       MDB_val *v, char *msg)
{
    return store_marker_get(t, st->evicted, EVICT_HDR, dk, is_long, key, klen, v,
                      msg);
}

/* Has a marker written at finished_ms expired by now_ms? */
bool store_fin_expired(const ss_store *st, uint64_t finished_ms,
                        uint64_t now_ms)
{
    return finished_ms <= UINT64_MAX - st->fin_retention &&
           finished_ms + st->fin_retention <= now_ms;
}

/* Look up the finished marker of a key. Returns 0 (found and within the
 * retention, *f set), 1 (none, expired or malformed) or an error. An
 * expired marker is ignored here so the outcome of a save does not depend
 * on when the periodic cleanup last ran. */
int store_finished_get(MDB_txn *t, ss_store *st, const MDB_val *dk,
                        bool is_long, const uint8_t *key, size_t klen,
                        uint64_t now_ms, store_fin_mark *f, char *msg)
{
    MDB_val v;
    int rc = store_marker_get(t, st->finished, FIN_HDR, dk, is_long, key, klen, &v,
                        msg);
    if (rc != 0)
        return rc;
    const uint8_t *p = v.mv_data;
    if (v.mv_size < FIN_HDR || p[0] != REC_VERSION)
        return 1;
    f->next_segment = ss_le64_get(p + 8);
    f->finished_ms = ss_le64_get(p + 16);
    return store_fin_expired(st, f->finished_ms, now_ms) ? 1 : 0;
}

bool store_saver_declared(MDB_txn *t, ss_store *st, const char *saver,
                           int *err, char *msg)
{
    MDB_val k = {strlen(saver), (void *)(uintptr_t)saver}, v;
    int rc = mdb_get(t, st->savers, &k, &v);
    *err = 0;
    if (rc == 0)
        return true;
    if (rc == MDB_NOTFOUND)
        snprintf(msg, SS_STORE_MSG, "saver '%.128s' is not declared", saver);
    else
        *err = store_mdb_fail(rc, "read saver", msg);
    return false;
}
