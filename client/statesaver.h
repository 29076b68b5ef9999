/* statesaver -- C client library for the statesaver server (libstatesaver).
 *
 * One ss_client is one TCP connection. Calls block until the response
 * arrives or the call's timeout passes (poll() on a non-blocking socket).
 *
 * Threads: thread-compatible, not thread-safe. Use one ss_client per thread
 * (or guard one with your own mutex); different clients share nothing.
 *
 * Errors: every int-returning function returns 0 or a negative code from
 * ss_error.h. A non-OK server status is returned as SS_ERR_STATUS(code)
 * (e.g. SS_ERR_STATUS(9) for FAILED_PRECONDITION); ss_client_last_error()
 * then gives the server's message. ss_strerror() names any code.
 *
 * Ownership: the library never keeps a caller pointer after a call returns.
 * Result objects (ss_fetch_result, ss_list_result) are owned by the caller,
 * freed with their *_free() (which accepts NULL), and every pointer an
 * accessor returns stays valid until that result is freed.
 */
#ifndef STATESAVER_H
#define STATESAVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ss_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Library version (same as the server's release). */
const char *ss_client_version(void);

/* Element types; the numbers are the wire's DType values. */
enum ss_dtype {
    SS_DTYPE_FLOAT32 = 1,
    SS_DTYPE_INT32 = 2,
    SS_DTYPE_INT64 = 3,
    SS_DTYPE_FLOAT64 = 4,
};

/* Default per-call timeout when none is given (ms). */
#define SS_CLIENT_TIMEOUT_MS_DEFAULT 30000
/* Longest server message kept for ss_client_last_error (bytes). */
#define SS_CLIENT_ERRMSG_MAX 1024

typedef struct ss_client ss_client; /* opaque: socket, buffers, pending replies */

/* A sequence key: any bytes (1..1024 on the default server). Borrowed. */
typedef struct ss_key {
    const void *data; /* key bytes */
    size_t len;       /* number of bytes */
} ss_key;

/* ---- connection ------------------------------------------------------ */

typedef struct ss_client_options {
    const char *server;       /* "host:port", "[v6]:port", "host" (port 7450) */
    int connect_timeout_ms;   /* <= 0: use timeout_ms */
    int timeout_ms;           /* per call; <= 0: SS_CLIENT_TIMEOUT_MS_DEFAULT */
    const void *token;        /* auth token or NULL; sent in Hello on connect */
    size_t token_len;         /* bytes of token */
    const char *client_name;  /* for server logs; NULL = "libstatesaver/VER" */
    uint32_t max_frame_bytes; /* largest response accepted; 0 = 64 MiB */
} ss_client_options;

/* Fill o with defaults (server NULL, 30 s timeouts, no token). */
void ss_client_options_init(ss_client_options *o);

/* Resolve (getaddrinfo), connect with a timeout, set TCP_NODELAY and, if a
 * token is given, say Hello. On failure *out is NULL and, if err is not
 * NULL, a message of at most errsz bytes is written there. */
int ss_client_open(ss_client **out, const ss_client_options *opt, char *err,
                   size_t errsz);

/* Shorthand: no token, timeout_ms for connect and for every call. */
int ss_client_connect(ss_client **out, const char *hostport, int timeout_ms);

/* Close the connection and free everything. Accepts NULL. Results obtained
 * from c stay valid (they do not point into the client). */
void ss_client_close(ss_client *c);

/* Message of the last failed call on c: the server's status message, or a
 * local description. "" when the last call succeeded. Valid until the next
 * call on c. Never NULL (also for c == NULL). */
const char *ss_client_last_error(const ss_client *c);

/* Change the per-call timeout (ms, > 0). Calls that wait on the server
 * (fetch barrier, lease, await) add their wait_ms to it. */
void ss_client_set_timeout(ss_client *c, int timeout_ms);

/* After a transport error (timeout while sending, closed peer, malformed
 * frame) the connection is unusable and every call returns SS_ERR_CLOSED;
 * reconnect with a new client. */
bool ss_client_broken(const ss_client *c);

/* What the server said in Hello. */
typedef struct ss_server_info {
    char server_version[64];  /* NUL-terminated, truncated if longer */
    uint32_t protocol_version; /* wire protocol version */
    uint32_t max_frame_bytes;  /* server's frame limit */
    uint32_t max_keys;         /* keys per request limit */
} ss_server_info;

/* Hello handshake; token may be NULL. info may be NULL. */
int ss_client_hello(ss_client *c, const void *token, size_t token_len,
                    ss_server_info *info);

/* Round trip; *server_time_ms (may be NULL) gets the server clock. */
int ss_client_ping(ss_client *c, uint64_t *server_time_ms);

/* ---- savers ---------------------------------------------------------- */

/* One state of a schema (all pointers borrowed for the call). */
typedef struct ss_state_def {
    const char *name;      /* state name, e.g. "cell_0/c" */
    int dtype;             /* enum ss_dtype */
    const int64_t *shape;  /* per-sequence shape, e.g. {512} */
    size_t rank;           /* dims in shape */
    const void *initial;   /* initial value (one sequence) or NULL = zeros */
    size_t initial_bytes;  /* bytes of initial (0 when NULL) */
} ss_state_def;

/* Declare a saver. Same schema again: 0 with *created = false; a different
 * schema: SS_ERR_STATUS(ALREADY_EXISTS). created may be NULL. */
int ss_client_declare(ss_client *c, const char *saver, const ss_state_def *states,
                      size_t n_states, uint64_t idle_ttl_ms, bool keep_final,
                      bool *created);

/* What a Declare sets beyond the states (ss_client_declare sets the first
 * two and no cap). Part of the schema: the same saver declared with other
 * values is SS_ERR_STATUS(ALREADY_EXISTS). */
typedef struct ss_declare_opts {
    uint64_t idle_ttl_ms;   /* 0 = never expire */
    bool keep_final;        /* keep a sequence's record after its final save */
    uint32_t max_in_flight; /* job queue: most sequences leased at once, 0 = no cap */
} ss_declare_opts;
int ss_client_declare_opts(ss_client *c, const char *saver, const ss_state_def *states,
                           size_t n_states, const ss_declare_opts *o, bool *created);

/* ---- fetch ----------------------------------------------------------- */

typedef struct ss_fetch_result ss_fetch_result; /* opaque: owns the reply */

/* Fetch the states of n keys in one request. With wait_ms > 0 the server
 * holds the reply until every key's next_segment >= min_segment (barrier),
 * else fails with SS_ERR_STATUS(DEADLINE_EXCEEDED). */
int ss_client_fetch(ss_client *c, const char *saver, const ss_key *keys,
                    size_t n_keys, uint64_t min_segment, uint32_t wait_ms,
                    ss_fetch_result **out);

size_t ss_fetch_result_keys(const ss_fetch_result *r);   /* keys fetched */
size_t ss_fetch_result_states(const ss_fetch_result *r); /* schema states */
/* Name of state i (schema order), NULL if out of range. */
const char *ss_fetch_result_name(const ss_fetch_result *r, size_t i);
/* Index of a state by name, or SS_ERR_NOT_FOUND. */
int ss_fetch_result_find(const ss_fetch_result *r, const char *name);
/* dtype (enum ss_dtype) of state i; 0 if out of range. */
int ss_fetch_result_dtype(const ss_fetch_result *r, size_t i);
/* Per-sequence shape of state i (without the batch dimension). */
const int64_t *ss_fetch_result_shape(const ss_fetch_result *r, size_t i,
                                     size_t *rank);
/* State i of key k: pointer to its bytes (aligned for the dtype), *nbytes
 * set if not NULL. NULL if i or k is out of range. */
const void *ss_fetch_result_state(const ss_fetch_result *r, size_t i, size_t k,
                                  size_t *nbytes);
uint64_t ss_fetch_result_next_segment(const ss_fetch_result *r, size_t k);
uint64_t ss_fetch_result_updated_ms(const ss_fetch_result *r, size_t k);
void ss_fetch_result_free(ss_fetch_result *r); /* accepts NULL */

/* ---- save ------------------------------------------------------------ */

/* The values of one schema state for all keys of a save batch. */
typedef struct ss_state_data {
    int dtype;             /* enum ss_dtype, must match the schema */
    const int64_t *shape;  /* per-sequence shape (no batch dimension) */
    size_t rank;           /* dims in shape */
    const void *data;      /* n_keys rows, row-major, key k at row k */
} ss_state_data;

/* Save the state at the end of segments[k] for keys[k], compare-and-set,
 * one transaction for the batch (all or nothing). states has one entry per
 * schema state, in schema order. final (NULL = none) ends sequences.
 * already_applied (NULL or n_keys entries) reports idempotent retries.
 * A segment mismatch returns SS_ERR_STATUS(FAILED_PRECONDITION) and the
 * server's message naming key, expected and found segment. */
int ss_client_save(ss_client *c, const char *saver, const ss_key *keys,
                   size_t n_keys, const uint64_t *segments, const bool *final,
                   const ss_state_data *states, size_t n_states,
                   bool *already_applied);

/* ---- drop, list, stats ----------------------------------------------- */

/* Drop n keys, or with all = true the whole saver (keys ignored).
 * dropped (may be NULL) gets the number removed. */
int ss_client_drop(ss_client *c, const char *saver, const ss_key *keys,
                   size_t n_keys, bool all, uint64_t *dropped);

typedef struct ss_list_result ss_list_result; /* opaque: owns the reply */

/* One page of savers (saver NULL or "") or of a saver's sequences whose key
 * starts with prefix, after start_after (exclusive). limit 0 = server
 * default. prefix/start_after may be NULL. Continue with the last key (or
 * saver name) of a page while ss_list_result_more(). */
int ss_client_list(ss_client *c, const char *saver, const ss_key *prefix,
                   const ss_key *start_after, uint32_t limit,
                   ss_list_result **out);

bool ss_list_result_more(const ss_list_result *r);
size_t ss_list_result_sequences(const ss_list_result *r); /* sequence rows */
/* Key of sequence row i (not NUL-terminated); NULL if out of range. */
const void *ss_list_result_key(const ss_list_result *r, size_t i, size_t *len);
uint64_t ss_list_result_next_segment(const ss_list_result *r, size_t i);
uint64_t ss_list_result_updated_ms(const ss_list_result *r, size_t i);

/* A saver row of a list of savers; pointers borrowed from the result. */
typedef struct ss_saver_info {
    const char *name;       /* saver name */
    size_t n_states;        /* states in its schema */
    uint64_t idle_ttl_ms;   /* 0 = never expire */
    bool keep_final;        /* records kept after a final save */
    uint64_t sequences;     /* sequence records */
    uint32_t max_in_flight; /* most sequences leased at once, 0 = no cap */
} ss_saver_info;
size_t ss_list_result_savers(const ss_list_result *r); /* saver rows */
/* Fill *out for saver row i; SS_ERR_INVALID if out of range. */
int ss_list_result_saver(const ss_list_result *r, size_t i, ss_saver_info *out);
/* State j of saver row i: name (return), dtype and shape (may be NULL). */
const char *ss_list_result_saver_state(const ss_list_result *r, size_t i,
                                       size_t j, int *dtype,
                                       const int64_t **shape, size_t *rank);
void ss_list_result_free(ss_list_result *r); /* accepts NULL */

/* Longest failure reason kept in ss_server_stats (longer ones are cut). */
#define SS_STATS_REASON_MAX 256

/* Server counters (StatsResponse); plain values, nothing to free. */
typedef struct ss_server_stats {
    uint64_t uptime_ms;      /* since the server started */
    uint64_t savers;         /* declared savers */
    uint64_t sequences;      /* sequence records (of the saver, if given) */
    uint64_t connections;    /* open connections */
    uint64_t requests;       /* requests served */
    uint64_t commits;        /* LMDB write transactions */
    uint64_t committed_ops;  /* write operations in them */
    uint64_t evicted;        /* sequences evicted by idle TTL */
    uint64_t map_size;       /* LMDB map size (bytes) */
    uint64_t map_used;       /* LMDB bytes in use */
    uint64_t rejected;       /* requests refused (limits/auth/protocol) */
    uint64_t queued;         /* job segments queued */
    uint64_t leased;         /* job segments leased */
    uint64_t completed;      /* job segments completed */
    uint64_t failed;         /* job segments failed */
    uint64_t expired_leases; /* leases that passed their deadline */
    uint64_t saves_applied;  /* CAS saves applied */
    uint64_t wal_records;    /* write-ahead log records appended */
    uint64_t wal_bytes;      /* write-ahead log payload bytes appended */
    uint64_t checkpoints;    /* checkpoints (LMDB synced, log recycled) */
    uint64_t applied_lsn;    /* log position LMDB has applied */
    uint64_t checkpoint_lsn; /* log position of the last checkpoint */
    uint64_t wal_failed;     /* 1: the log failed, writes refused until restart */
    char wal_failure[SS_STATS_REASON_MAX]; /* why (NUL-terminated), or "" */
} ss_server_stats;

/* Stats of the whole server (saver NULL or "") or one saver. */
int ss_client_stats(ss_client *c, const char *saver, ss_server_stats *out);

/* ---- redirects (cluster) ----------------------------------------------
 * A server of a cluster answers a request for a key whose hash slot another
 * shard owns with SS_ERR_STATUS(SS_CODE_MOVED) and where to go. */

/* Wire status code of a redirect (Code.MOVED). */
#define SS_CODE_MOVED 32
/* Wire status code of a retryable refusal (Code.UNAVAILABLE), e.g. a slot
 * frozen by a move in progress. */
#define SS_CODE_UNAVAILABLE 14
/* Longest shard id / address kept in an ss_redirect (bytes, without NUL). */
#define SS_REDIRECT_ID_MAX 64
#define SS_REDIRECT_ADDR_MAX 255

/* Where a redirected key lives (Status.redirect). */
typedef struct ss_redirect {
    char address[SS_REDIRECT_ADDR_MAX + 1]; /* owner's HOST:PORT */
    char shard[SS_REDIRECT_ID_MAX + 1];     /* owner's shard id */
    uint64_t epoch;                         /* topology epoch of the answer */
    uint32_t slot;                          /* the key's hash slot */
} ss_redirect;

/* true when the last call on c failed with MOVED; then *out (may be NULL)
 * gets the redirect. Valid until the next call on c. */
bool ss_client_last_redirect(const ss_client *c, ss_redirect *out);

/* ---- cluster handle ---------------------------------------------------
 * An ss_cluster routes every call to the shard owning each key's hash slot
 * (CRC16 of the key, or of its {tag}, mod 16384: the Redis Cluster
 * function). It learns the topology with a Topology request from any seed
 * address, keeps one ss_client per shard (connected on first use, and
 * again after a transport error), splits batched calls by shard (the
 * sub-requests of one call are in flight together) and merges the replies
 * in key order. A redirect (MOVED) refreshes the topology and retries, at
 * most max_redirects times per call ("redirect loop" error past that); an
 * UNAVAILABLE from a shard that has frozen slots (a move in progress; its
 * Topology says so) is retried with backoff for up to unavailable_retry_ms,
 * any other UNAVAILABLE (e.g. a failed write-ahead log) is returned. A server without a cluster (or one that
 * predates Topology) is a cluster of one shard at the seed's address.
 *
 * Atomicity: a batched save is one transaction per shard; keys of one
 * {tag} share a slot and so are saved all or nothing. If the sub-batch of
 * one shard fails, the others may have been applied: repeating the whole
 * call is safe (applied keys report already_applied).
 *
 * Threads and ownership as for ss_client (one thread at a time; results
 * owned by the caller). Strings returned by accessors stay valid until the
 * next call on the cluster.
 */

/* Redirects followed by one call before it fails (a redirect loop). */
#define SS_CLUSTER_REDIRECTS_DEFAULT 8u
#define SS_CLUSTER_REDIRECTS_MAX 1000u
/* How long a call retries a retryable UNAVAILABLE (ms). */
#define SS_CLUSTER_UNAVAILABLE_RETRY_MS_DEFAULT 30000u
/* Seed addresses accepted by ss_cluster_open. */
#define SS_CLUSTER_SEEDS_MAX 1024u

typedef struct ss_cluster ss_cluster; /* opaque: topology, one client per shard */

typedef struct ss_cluster_options {
    const char *const *seeds;       /* addresses of any shards (borrowed) */
    size_t n_seeds;                 /* >= 1 */
    ss_client_options conn;         /* per-shard connection options; its
                                       server field is ignored */
    uint32_t max_redirects;         /* 0 = SS_CLUSTER_REDIRECTS_DEFAULT */
    uint32_t unavailable_retry_ms;  /* 0 = the default; UINT32_MAX = never */
} ss_cluster_options;

/* Fill o with defaults (no seeds, ss_client_options_init). */
void ss_cluster_options_init(ss_cluster_options *o);

/* Learn the topology from the first seed that answers. */
int ss_cluster_open(ss_cluster **out, const ss_cluster_options *opt, char *err,
                    size_t errsz);
/* Close every shard connection and free. Accepts NULL. */
void ss_cluster_close(ss_cluster *c);
/* Message of the last failed call ("" after success); never NULL. */
const char *ss_cluster_last_error(const ss_cluster *c);
/* Fetch the topology again (from the shards, then the seeds); a topology
 * older (lower epoch) than the one held is ignored. */
int ss_cluster_refresh(ss_cluster *c);

uint64_t ss_cluster_epoch(const ss_cluster *c);       /* topology epoch */
const char *ss_cluster_name(const ss_cluster *c);     /* cluster name or "" */
size_t ss_cluster_shards(const ss_cluster *c);        /* shards */
const char *ss_cluster_shard_id(const ss_cluster *c, size_t i);
const char *ss_cluster_shard_address(const ss_cluster *c, size_t i);
/* Hash slots shard i owns. */
unsigned ss_cluster_shard_slots(const ss_cluster *c, size_t i);
/* Redirects followed since the cluster was opened. */
uint64_t ss_cluster_redirects(const ss_cluster *c);
/* true when some shard has frozen slots (a move is in progress), so an
 * UNAVAILABLE from it is worth retrying; asks every shard (Topology). */
bool ss_cluster_moving(ss_cluster *c);

/* The hash slot of a key (0..16383) and the index of the shard owning it. */
unsigned ss_cluster_slot(const ss_key *key);
int ss_cluster_shard_of(const ss_cluster *c, const ss_key *key);

/* The connection to shard i (connected now if needed; owned by the
 * cluster, valid until the next refresh or call on c). For calls the
 * cluster does not route itself (jobs, per-shard stats). */
int ss_cluster_client(ss_cluster *c, size_t i, ss_client **out);

/* Ping every shard. */
int ss_cluster_ping(ss_cluster *c);
/* Declare on every shard (savers exist everywhere); *created true when
 * any shard created it. */
int ss_cluster_declare(ss_cluster *c, const char *saver, const ss_state_def *states,
                       size_t n_states, uint64_t idle_ttl_ms, bool keep_final,
                       bool *created);
/* The same with ss_declare_opts (max_in_flight is each shard's cap). */
int ss_cluster_declare_opts(ss_cluster *c, const char *saver, const ss_state_def *states,
                            size_t n_states, const ss_declare_opts *o, bool *created);
/* As ss_client_fetch, keys split by shard, result in key order. */
int ss_cluster_fetch(ss_cluster *c, const char *saver, const ss_key *keys,
                     size_t n_keys, uint64_t min_segment, uint32_t wait_ms,
                     ss_fetch_result **out);
/* As ss_client_save, split by shard (see Atomicity above). */
int ss_cluster_save(ss_cluster *c, const char *saver, const ss_key *keys,
                    size_t n_keys, const uint64_t *segments, const bool *final,
                    const ss_state_data *states, size_t n_states,
                    bool *already_applied);
/* As ss_client_drop: keys routed, all = true fans out; *dropped summed. */
int ss_cluster_drop(ss_cluster *c, const char *saver, const ss_key *keys,
                    size_t n_keys, bool all, uint64_t *dropped);
/* As ss_client_cancel (statesaver_jobs.h): keys split by owning shard, one
 * sub-request per shard, the counts summed; a redirect or a frozen slot
 * retries the keys not cancelled yet. Each shard's part is its own
 * transaction: on failure the keys of the shards that had answered are
 * cancelled and *cancelled / *segments (may be NULL) hold their counts, so
 * a caller repeating the call (e.g. after UNAVAILABLE "cancel again")
 * adds them to the repeat's counts. */
int ss_cluster_cancel(ss_cluster *c, const char *saver, const ss_key *keys,
                      size_t n_keys, uint64_t *cancelled, uint64_t *segments);
/* As ss_client_list over every shard: savers merged by name (sequence
 * counts summed), sequences merged in key order; the page holds at most
 * limit rows and ss_list_result_more() tells whether any shard has more. */
int ss_cluster_list(ss_cluster *c, const char *saver, const ss_key *prefix,
                    const ss_key *start_after, uint32_t limit,
                    ss_list_result **out);
/* Sum of every shard's counters (uptime and lsn: the largest; wal_failed:
 * any); per-shard figures through ss_cluster_client + ss_client_stats. */
int ss_cluster_stats(ss_cluster *c, const char *saver, ss_server_stats *out);

/* ---- low level: raw protobuf messages ---------------------------------
 * For callers that build statesaver.pb-c.h messages themselves (the worker,
 * new calls). The library assigns req->id. */
struct Statesaver__V1__Request;
struct Statesaver__V1__Response;

/* Send req and wait for its response (timeout: the client's, plus
 * extra_wait_ms for calls the server may hold). On OK status *resp is the
 * unpacked response, owned by the caller (ss_client_response_free). A
 * non-OK status returns SS_ERR_STATUS(code), *resp = NULL and the message
 * in ss_client_last_error. */
int ss_client_call(ss_client *c, struct Statesaver__V1__Request *req,
                   uint32_t extra_wait_ms, struct Statesaver__V1__Response **resp);

/* Pipelining: send without waiting (*id gets the request id), then collect
 * with ss_client_recv in any order. Responses to other outstanding ids that
 * arrive meanwhile are kept until asked for. */
int ss_client_send(ss_client *c, struct Statesaver__V1__Request *req,
                   uint64_t *id);
/* Wait up to timeout_ms (<= 0: the client's timeout) for the response to
 * id. On timeout the id is abandoned (a late reply is discarded). Status
 * handling as in ss_client_call. */
int ss_client_recv(ss_client *c, uint64_t id, int timeout_ms,
                   struct Statesaver__V1__Response **resp);

/* Free a response from ss_client_call/recv. Accepts NULL. */
void ss_client_response_free(struct Statesaver__V1__Response *resp);

#ifdef __cplusplus
}
#endif

#endif
