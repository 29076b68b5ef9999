/* ss_etcd -- a small etcd v3 client over etcd's HTTP/JSON gateway
 * (POST /v3/kv/range, /v3/kv/put, /v3/kv/txn, /v3/kv/deleterange and the
 * streaming /v3/watch; keys and values travel base64-encoded). Enough for
 * a cluster topology: get a key with its mod_revision, put, compare-and-swap
 * on the mod_revision, delete, and watch one key.
 *
 * Built on libcurl (HTTP, timeouts, streaming) and libcjson (the gateway's
 * JSON); docs/decisions.md says why not gRPC.
 *
 * Limits: every unary call has a total timeout (SS_ETCD_TIMEOUT_MS unless
 * set), a connect timeout (SS_ETCD_CONNECT_TIMEOUT_MS) and a response size
 * limit (SS_ETCD_MAX_RESPONSE); a watch event line is bounded the same way.
 *
 * Threads: an ss_etcd handle serialises its calls with a mutex, so it may be
 * shared; a watch runs in the thread that calls ss_etcd_watch_run (the
 * caller owns that thread) and is stopped from any thread with
 * ss_etcd_watch_stop. Errors: 0 or a negative SS_ERR_* (proto/ss_error.h);
 * the last failure's text is copied into the caller's err buffer.
 */
#ifndef SS_ETCD_H
#define SS_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SS_ETCD_TIMEOUT_MS 2000u          /* default total time of one unary call */
#define SS_ETCD_CONNECT_TIMEOUT_MS 1000u  /* TCP connect timeout */
#define SS_ETCD_MAX_RESPONSE (16u << 20)  /* bytes of one response / watch line */
#define SS_ETCD_MAX_KEY 4096u             /* bytes of a key */
#define SS_ETCD_MAX_VALUE (4u << 20)      /* bytes of a value we write */
#define SS_ETCD_MAX_ENDPOINT 512u         /* bytes of the endpoint URL */

typedef struct ss_etcd ss_etcd;

/* A client for `endpoint` ("http://127.0.0.1:2379"; no trailing path).
 * timeout_ms 0 = SS_ETCD_TIMEOUT_MS. Does not connect. 0, SS_ERR_INVALID
 * (bad URL) or SS_ERR_NOMEM. The caller frees it with ss_etcd_free. */
int ss_etcd_new(const char *endpoint, unsigned timeout_ms, ss_etcd **out);
void ss_etcd_free(ss_etcd *e);
const char *ss_etcd_endpoint(const ss_etcd *e);

/* Read `key`. On success *value is a malloc'ed copy (NUL-terminated, *len
 * bytes before the NUL; the caller frees it), *mod_revision the key's
 * mod_revision and *revision (may be NULL) the store revision of the
 * answer. SS_ERR_NOT_FOUND when the key does not exist (then *revision is
 * still set). SS_ERR_CONNECT (etcd unreachable), SS_ERR_TIMEOUT,
 * SS_ERR_TOO_BIG, SS_ERR_PROTO (a reply we cannot read), SS_ERR_NOMEM. */
int ss_etcd_get(ss_etcd *e, const char *key, char **value, size_t *len,
                int64_t *mod_revision, int64_t *revision, char *err,
                size_t errlen);
/* Write `key` unconditionally; *revision (may be NULL) = the new revision. */
int ss_etcd_put(ss_etcd *e, const char *key, const void *value, size_t len,
                int64_t *revision, char *err, size_t errlen);
/* Compare-and-swap: write `key` only if its mod_revision equals
 * expect_mod_revision (0 = the key must not exist). SS_ERR_CONFLICT when
 * it does not (nothing written); *revision (may be NULL) = the new
 * revision on success. */
int ss_etcd_cas(ss_etcd *e, const char *key, const void *value, size_t len,
                int64_t expect_mod_revision, int64_t *revision, char *err,
                size_t errlen);
/* Delete `key` (absent is not an error); *deleted (may be NULL) = 1 if it
 * existed. */
int ss_etcd_delete(ss_etcd *e, const char *key, int *deleted, char *err,
                   size_t errlen);

/* ---- watch -------------------------------------------------------------- */

typedef enum ss_etcd_event_type {
    SS_ETCD_EVENT_PUT = 0,    /* key written (value set) */
    SS_ETCD_EVENT_DELETE = 1, /* key deleted (value empty) */
} ss_etcd_event_type;

/* Called in the watching thread once per event, in revision order. The
 * value is valid only during the call (NUL-terminated). Return 0 to go
 * on, non-zero to end the watch (ss_etcd_watch_run then returns 0). */
typedef int (*ss_etcd_watch_cb)(void *arg, ss_etcd_event_type type,
                                const char *key, const char *value, size_t len,
                                int64_t mod_revision);

typedef struct ss_etcd_watch ss_etcd_watch;

/* A watch of one key on the same endpoint as `e` (its own connection).
 * 0, SS_ERR_NOMEM. Free with ss_etcd_watch_free after run has returned. */
int ss_etcd_watch_new(const ss_etcd *e, ss_etcd_watch **out);
void ss_etcd_watch_free(ss_etcd_watch *w);

/* Watch `key` for events with revision >= start_revision (0 = from now),
 * calling cb per event, until: the callback asks to end (0), ss_etcd_watch_stop
 * (0), max_ms passed (0 = no limit; then 0 is returned, so a caller can
 * re-check the key and watch again), the stream breaks or etcd is
 * unreachable (SS_ERR_CONNECT / SS_ERR_CLOSED), the start revision was
 * compacted (SS_ERR_NOT_FOUND: read the key again), or a reply is
 * malformed or too big (SS_ERR_PROTO / SS_ERR_TOO_BIG). *next_revision (may
 * be NULL) is the revision to resume from (last event's + 1, or
 * start_revision when none came). Blocks the calling thread. */
int ss_etcd_watch_run(ss_etcd_watch *w, const char *key, int64_t start_revision,
                      unsigned max_ms, ss_etcd_watch_cb cb, void *arg,
                      int64_t *next_revision, char *err, size_t errlen);
/* Make a running (or the next) ss_etcd_watch_run return within about
 * SS_ETCD_WATCH_POLL_MS. Thread-safe, async-signal-unsafe. */
void ss_etcd_watch_stop(ss_etcd_watch *w);
/* Undo a stop so the watch can be run again. */
void ss_etcd_watch_reset(ss_etcd_watch *w);

#define SS_ETCD_WATCH_POLL_MS 100u /* how often a watch checks for stop */

/* Base64 (standard alphabet, padded), exposed for the tests. encode:
 * malloc'ed NUL-terminated text or NULL; decode: malloc'ed bytes (plus a
 * NUL) or NULL when malformed / out of memory. */
char *ss_etcd_b64_encode(const void *buf, size_t len);
char *ss_etcd_b64_decode(const char *text, size_t *len);

#endif
