/* store_codec -- keys and record codec: DB keys (long-key hash), sequence
 * records, eviction and finished markers, counters, error mapping.
 *
 * Byte layouts, format 2 (all integers little-endian; see
 * docs/store-format.md). Every value below is followed by a u32 CRC32C of
 * the DB key and the value's other bytes (store_seal); version bytes are
 * 2 (1 in format 1, migrated by store_format.c).
 *
 *   seqs key      saver bytes, 0x00, key bytes          (when it fits)
 *                 saver bytes, 0x00, key[0..P), hash16  (long keys: the DB
 *                 key is exactly maxkey bytes long, short ones are shorter;
 *                 P = maxkey - 16 - len(saver) - 1)
 *   seqs value    u8 version (2), u8 flags (0), u16 reserved (0),
 *                 u32 key_len (bytes of the full key that follow the header;
 *                 0 when the DB key holds the whole key),
 *                 u64 next_segment, u64 updated_ms,        -- 24 bytes
 *                 key bytes (key_len), then every state's bytes in schema
 *                 order (states[i].nbytes each, as sent on the wire).
 *   evicted key   as seqs key
 *   evicted value u8 version (2), u8 0, u16 0, u32 key_len, u64 next_segment,
 *                 u64 updated_ms, u64 evicted_ms,          -- 32 bytes
 *                 key bytes (key_len).
 *   finished key  as seqs key
 *   finished val  u8 version (2), u8 0, u16 0, u32 key_len, u64 next_segment
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
#include "ss_crc32c.h"
#include "store_internal.h"

#include <xxhash.h>

/* Map an LMDB error to ours with a message. */
int store_mdb_fail(int rc, const char *what, char *msg)
{
    if (rc == MDB_MAP_FULL) {
        snprintf(msg, SS_STORE_MSG,
                 "%s: LMDB map is full; Drop sequences or savers (their "
                 "space is reusable at once) or restart the server with a "
                 "larger --max-map-size", what);
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

int ss_store_lmdb_error(int rc, const char *what, char msg[SS_STORE_MSG])
{
    return store_mdb_fail(rc, what, msg);
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

/* 128-bit hash of a long key: XXH3-128 (libxxhash) in its canonical
 * big-endian byte form, stable across platforms and library versions.
 * Lookups compare the full key stored in the record, so a collision is
 * detected (and refused), never silently merged. Format 1 used a
 * hand-written hash; store_format.c re-keys its long keys. */
static void key_hash(const uint8_t *p, size_t n, uint8_t out[HASH_BYTES])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
    memcpy(out, c.digest, HASH_BYTES);
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

/* ---- checksums (format 2) ---- */

uint32_t store_crc(const MDB_val *dk, const void *v, size_t n)
{
    return ss_crc32c(ss_crc32c(0, dk->mv_data, dk->mv_size), v, n);
}

void store_seal(const MDB_val *dk, uint8_t *v, size_t n)
{
    ss_le32_put(v + n, store_crc(dk, v, n));
}

bool store_sealed(const MDB_val *dk, const MDB_val *v)
{
    if (v->mv_size < CRC_BYTES)
        return false;
    size_t n = v->mv_size - CRC_BYTES;
    const uint8_t *p = v->mv_data;
    return ss_le32_get(p + n) == store_crc(dk, p, n);
}

int store_corrupt(ss_store *st, const MDB_val *dk, const char *what,
                  char *msg)
{
    char ek[96], saver[72];
    const uint8_t *p = dk->mv_data;
    const uint8_t *nul = memchr(p, 0, dk->mv_size);
    size_t slen = nul ? (size_t)(nul - p) : dk->mv_size;
    __atomic_fetch_add(&st->corrupt, 1, __ATOMIC_RELAXED);
    ss_keyfmt(saver, sizeof saver, p, slen);
    if (nul) {
        ss_keyfmt(ek, sizeof ek, nul + 1, dk->mv_size - slen - 1);
        snprintf(msg, SS_STORE_MSG,
                 "damaged %s of saver '%s' key '%s' (checksum mismatch); "
                 "Drop the key to clear it", what, saver, ek);
    } else {
        snprintf(msg, SS_STORE_MSG,
                 "damaged %s of saver '%s' (checksum mismatch)", what, saver);
    }
    SS_LOG(SS_LOG_ERROR, "store: %s", msg);
    return SS_STORE_ERR_CORRUPT;
}

int store_rec_parse_raw(const MDB_val *v, store_rec *r)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < REC_HDR + CRC_BYTES || p[0] != REC_VERSION)
        return SS_ERR_STORE;
    size_t size = v->mv_size - CRC_BYTES;
    size_t kl = ss_le32_get(p + 4);
    if (kl > size - REC_HDR)
        return SS_ERR_STORE;
    r->next_segment = ss_le64_get(p + 8);
    r->updated_ms = ss_le64_get(p + 16);
    r->key = kl ? p + REC_HDR : NULL;
    r->key_len = kl;
    r->states = p + REC_HDR + kl;
    r->states_len = size - REC_HDR - kl;
    return 0;
}

int store_rec_parse(ss_store *st, const MDB_val *dk, const MDB_val *v,
                    store_rec *r, char *msg)
{
    char tmp[SS_STORE_MSG];
    if (!store_sealed(dk, v) || store_rec_parse_raw(v, r) < 0)
        return store_corrupt(st, dk, "record", msg ? msg : tmp);
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
    if (v.mv_size != COUNTS_BYTES + CRC_BYTES || !store_sealed(&k, &v))
        return store_corrupt(st, &k, "counts", msg);
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
    uint8_t buf[COUNTS_BYTES + CRC_BYTES];
    ss_le64_put(buf, seqs);
    ss_le64_put(buf + 8, ev);
    MDB_val k = {strlen(saver), (void *)(uintptr_t)saver}, v = {sizeof buf, buf};
    store_seal(&k, buf, COUNTS_BYTES);
    rc = store_put(t, st->counts, &k, &v);
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
    if (!store_sealed(&k, &v))
        return store_corrupt(st, &k, "schema", msg);
    if (v.mv_size >= 8 + CRC_BYTES && schema->generation != 0 &&
        ss_le64_get(v.mv_data) == schema->generation)
        return 0;
    ss_schema *now = NULL;
    rc = store_schema_get(st, &k, &v, &now, msg);
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
int store_marker_get(MDB_txn *t, ss_store *st, MDB_dbi dbi, size_t hdr,
                     const MDB_val *dk, bool is_long, const uint8_t *key,
                     size_t klen, MDB_val *v, char *msg)
{
    MDB_val k = *dk;
    int rc = mdb_get(t, dbi, &k, v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return store_mdb_fail(rc, "read marker", msg);
    if (v->mv_size < hdr + CRC_BYTES ||
        ((const uint8_t *)v->mv_data)[0] != REC_VERSION || !store_sealed(dk, v))
        return store_corrupt(st, dk, dbi == st->evicted ? "eviction marker"
                                                        : "finished marker",
                             msg);
    v->mv_size -= CRC_BYTES; /* callers see the layout without the trailer */
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
    return store_marker_get(t, st, st->evicted, EVICT_HDR, dk, is_long, key,
                            klen, v, msg);
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
    int rc = store_marker_get(t, st, st->finished, FIN_HDR, dk, is_long, key,
                              klen, &v, msg);
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

int store_schema_get(ss_store *st, const MDB_val *k, const MDB_val *v,
                     ss_schema **out, char *msg)
{
    *out = NULL;
    if (!store_sealed(k, v))
        return store_corrupt(st, k, "schema", msg);
    int rc = ss_schema_unpack(v->mv_data, v->mv_size - CRC_BYTES, out, msg);
    if (rc < 0)
        return store_corrupt(st, k, "schema", msg);
    return 0;
}

int store_schema_put(MDB_txn *t, ss_store *st, const ss_schema *schema,
                     uint64_t gen, ss_schema **copy, char *msg)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int ret = ss_schema_pack(schema, gen, &buf, &len);
    if (ret < 0)
        return ret;
    uint8_t *b2 = realloc(buf, len + CRC_BYTES);
    if (!b2) {
        free(buf);
        return SS_ERR_NOMEM;
    }
    buf = b2;
    MDB_val k = {strlen(schema->saver), schema->saver};
    MDB_val v = {len + CRC_BYTES, buf};
    store_seal(&k, buf, len);
    /* The cached schema is parsed back from the stored bytes, so it
     * carries the generation and is exactly what a restart would load. */
    ret = ss_schema_unpack(buf, len, copy, msg);
    if (ret == 0) {
        int rc = store_put(t, st->savers, &k, &v);
        if (rc != 0) {
            ret = store_mdb_fail(rc, "store schema", msg);
            ss_schema_unref(*copy);
            *copy = NULL;
        }
    }
    free(buf);
    return ret;
}
