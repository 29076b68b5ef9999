/* client_int -- internals shared by the modules of libstatesaver.
 *
 * Not installed. conn.c owns the connection (socket, framing, matching
 * responses to requests); calls.c builds the typed calls on ss_client_call.
 */
#ifndef SS_CLIENT_INT_H
#define SS_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statesaver.h"
#include "statesaver.pb-c.h"

typedef Statesaver__V1__Request ss_req;
typedef Statesaver__V1__Response ss_resp;

struct ss_client {
    int fd;                    /* connected non-blocking TCP socket */
    uint64_t next_id;          /* id of the next request (starts at 1) */
    int timeout_ms;            /* per-call timeout */
    uint32_t max_frame;        /* largest response frame accepted */
    bool broken;               /* stream unusable after a transport error */
    uint8_t *rbuf;             /* received bytes not yet decoded */
    size_t rlen;               /* bytes valid in rbuf */
    size_t rcap;               /* allocated size of rbuf */
    uint8_t *wbuf;             /* frame being sent (reused) */
    size_t wcap;               /* allocated size of wbuf */
    uint64_t *outstanding;     /* ids sent and neither received nor abandoned */
    size_t n_outstanding;      /* used entries */
    size_t cap_outstanding;    /* allocated entries */
    ss_resp **stash;           /* responses received for other ids */
    size_t n_stash;            /* used entries */
    size_t cap_stash;          /* allocated entries */
    char err[SS_CLIENT_ERRMSG_MAX]; /* last error message ("" after success) */
    bool moved;                /* the last call failed with MOVED */
    ss_redirect redirect;      /* where to, when moved */
};

/* Internal functions are not exported from the shared library. */
#define SS_CLIENT_INTERNAL __attribute__((visibility("hidden")))

/* Set c->err (printf-style) and return rc, for `return ss_client_fail(...)`. */
SS_CLIENT_INTERNAL int ss_client_fail(ss_client *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clear the last error (start of every public call). */
SS_CLIENT_INTERNAL void ss_client_clear_error(ss_client *c);

/* Build a NUL-terminated copy of a protobuf-c string into a fixed buffer. */
SS_CLIENT_INTERNAL void ss_client_copy_str(char *dst, size_t size, const char *src);

/* Start a public call: SS_ERR_INVALID for a NULL c, else clear the last
 * error; then, if bad, fail with SS_ERR_INVALID and the text msg. */
SS_CLIENT_INTERNAL int ss_client_begin(ss_client *c, bool bad, const char *msg);

/* Run req (ss_client_call with wait_ms added to the timeout) and require a
 * response body of want_case (STATESAVER__V1__RESPONSE__BODY_*). */
SS_CLIENT_INTERNAL int ss_client_run(ss_client *c, ss_req *req, uint32_t wait_ms,
                                     int want_case, ss_resp **out);

/* Typed calls in two halves, so the cluster handle can keep one request
 * per shard in flight (calls.c). _send packs and sends (the arguments are
 * only read during the call), _recv waits for the reply to id. */
SS_CLIENT_INTERNAL int ss_client_fetch_send(ss_client *c, const char *saver,
                                            const ss_key *keys, size_t n_keys,
                                            uint64_t min_segment, uint32_t wait_ms,
                                            uint64_t *id);
SS_CLIENT_INTERNAL int ss_client_fetch_recv(ss_client *c, uint64_t id, size_t n_keys,
                                            uint32_t wait_ms, ss_fetch_result **out);
SS_CLIENT_INTERNAL int ss_client_save_send(ss_client *c, const char *saver,
                                           const ss_key *keys, size_t n_keys,
                                           const uint64_t *segments, const bool *final,
                                           const ss_state_data *states, size_t n_states,
                                           uint64_t *id);
SS_CLIENT_INTERNAL int ss_client_save_recv(ss_client *c, uint64_t id, size_t n_keys,
                                           bool *already_applied);

/* One fetch result over several per-shard parts (owned by the result from
 * the call on, also on failure): key k is row krow[k] of parts[kpart[k]].
 * The parts must agree on names, dtypes and shapes (else SS_ERR_PROTO with
 * a message in err). */
SS_CLIENT_INTERNAL int ss_fetch_result_merge(ss_fetch_result **parts, size_t n_parts,
                                             uint32_t *kpart, size_t *krow,
                                             size_t n_keys, ss_fetch_result **out,
                                             char *err, size_t errsz);

/* A list result owning n per-shard parts, with the rows given (pointers
 * into the parts) and more. Takes the parts and the arrays in every case. */
SS_CLIENT_INTERNAL int ss_list_result_merge(ss_list_result **parts, size_t n_parts,
                                            Statesaver__V1__SequenceInfo **seqs,
                                            size_t n_seqs,
                                            Statesaver__V1__SaverInfo **savers,
                                            size_t n_savers, bool more,
                                            ss_list_result **out);
/* The ListResponse inside a list result (for merging). */
SS_CLIENT_INTERNAL const Statesaver__V1__ListResponse *
ss_list_result_pb(const ss_list_result *r);

/* protobuf-c's message structs are not const-correct; packing only reads. */
static inline char *ss_client_unconst(const char *s)
{
    return (char *)(uintptr_t)(s ? s : "");
}

/* Point dst at len bytes of data (borrowed: they must outlive the packing). */
static inline void ss_client_borrow_bytes(ProtobufCBinaryData *dst, const void *data,
                                          size_t len)
{
    dst->data = (uint8_t *)(uintptr_t)data;
    dst->len = len;
}

#endif
