/* dispatch -- request contexts, the handler table and reply helpers: the
 * request layer above the server core (server.h) and its connections.
 *
 * ss_dispatch_new() installs itself on a created server: it receives the
 * connections' frames (ss_conn_events), owns the handler table, the Fetch
 * barrier and the job queue glue, and registers server modules for their
 * shutdown and stats hooks. The server core never calls into it.
 *
 * Every decoded Request becomes an ss_request and goes to the handler
 * registered for its body case. A handler answers exactly once, either
 * before it returns or later (after a writer commit, a barrier wait, a
 * lease wait ...), with ss_request_reply(), ss_request_error() or
 * ss_request_fail(). Answering releases the request: the decoded message,
 * the reference on its connection and the context itself are gone when the
 * reply function returns, so the handler must not touch req afterwards.
 *
 * Everything here runs on the loop thread only.
 *
 * Until a request is answered it holds a reference on its connection, so
 * the connection object outlives it; if the peer went away meanwhile the
 * reply is silently dropped (ss_request_closed() tells a handler early, and
 * ss_request_on_close() lets a parked request be woken when that happens).
 *
 * Handlers: Hello, Ping, Stats in dispatch_admin.c; Declare, Fetch, Save,
 * Drop, List in dispatch_state.c; Submit, Lease, Complete, Await in
 * dispatch_jobs.c (glue to jobs.h).
 */
#ifndef SS_DISPATCH_H
#define SS_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"
#include "statesaver.pb-c.h"

typedef struct ss_request ss_request;   /* opaque: one request in flight */
typedef struct ss_dispatch ss_dispatch; /* opaque: handlers and their state */

typedef Statesaver__V1__Request ss_request_msg;
typedef Statesaver__V1__Response ss_response_msg;

/* A handler. It owns req until it answers it (see above); ctx is what
 * was given to ss_dispatch_register. */
typedef void (*ss_handler_fn)(ss_request *req, void *ctx);

/* Highest body case number + 1 (Request.body field numbers are < 40). */
#define SS_DISPATCH_SLOTS 40

/* Install the request layer on srv (after ss_server_create, before
 * ss_server_start): the built-in handlers, the barrier, the job queue.
 * Returns 0 or a negative code (logged). */
int ss_dispatch_new(ss_dispatch **out, ss_server *srv);
/* Cluster mode (shard.h): route keyed requests by slot ownership and
 * serve Topology and the slot RPCs with c (borrowed; outlives d). Call
 * after ss_dispatch_new, before ss_server_start. Without it (tests that
 * wire the server themselves) every slot is local. */
struct ss_shard;
int ss_dispatch_set_cluster(ss_dispatch *d, struct ss_shard *c);
/* After ss_server_run returned (or a failed start), before
 * ss_server_free. Accepts NULL. */
void ss_dispatch_free(ss_dispatch *d);

/* Register fn (with ctx) for a Request body case
 * (STATESAVER__V1__REQUEST__BODY_*), replacing any earlier handler.
 * Returns SS_ERR_INVALID for a case outside the table. Call before the
 * server starts accepting. */
int ss_dispatch_register(ss_dispatch *d, int body_case, ss_handler_fn fn,
                         void *ctx);

/* ---- the request ---- */

/* The decoded request; valid until the request is answered. Handlers may
 * keep pointers into it (keys, tensor data) until then. */
const ss_request_msg *ss_request_message(const ss_request *req);
uint64_t ss_request_id(const ss_request *req);
ss_server *ss_request_server(const ss_request *req);
/* True once the connection is closing or closed: a reply would be dropped. */
bool ss_request_closed(const ss_request *req);

/* Per-request slot for the handler's own state (NULL initially). */
void ss_request_set_data(ss_request *req, void *data);
void *ss_request_data(const ss_request *req);

/* Called (on the loop thread, at most once) when the connection closes
 * while req is still unanswered, so a parked request can stop waiting. The
 * callback must answer req (the reply is dropped) now or soon. Pass NULL
 * to cancel. A request still unanswered at shutdown is answered by its
 * owner's ss_module.shutdown hook, not by this callback. */
typedef void (*ss_request_close_fn)(ss_request *req, void *arg);
void ss_request_on_close(ss_request *req, ss_request_close_fn fn, void *arg);

/* ---- answering ---- */

/* Answer with status OK and resp's body. The caller fills only
 * body_case and the body pointer; id and status are set here. resp and
 * everything it points to are borrowed: they are packed before this
 * returns, so stack memory is fine. A response larger than the frame limit
 * becomes RESOURCE_EXHAUSTED instead. Releases req. */
void ss_request_reply(ss_request *req, ss_response_msg *resp);

/* Answer with an error status (gRPC code STATESAVER__V1__CODE__*) and a
 * printf-style message (truncated to SS_DISPATCH_MSG_MAX). Releases req. */
void ss_request_error(ss_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Answer with the status for an ss_error.h code (ss_dispatch_status_code)
 * and msg, or ss_strerror(err) when msg is NULL or empty. Releases req. */
void ss_request_fail(ss_request *req, int err, const char *msg);

/* Like ss_request_error, then close the connection once the reply has
 * been written (protocol violations, failed authentication). */
void ss_request_error_close(ss_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SS_DISPATCH_MSG_MAX 512
/* Parked requests cancelled per loop iteration when their connection
 * closes (the rest in later iterations), so the loop never stalls long. */
#define SS_DISPATCH_CANCEL_BATCH 4096u

/* The status code for an ss_error.h code:
 *   SS_ERR_INVALID, SS_ERR_PROTO, SS_ERR_SHAPE, SS_ERR_FORMAT -> INVALID_ARGUMENT
 *   SS_ERR_NOT_FOUND -> NOT_FOUND        SS_ERR_CONFLICT -> FAILED_PRECONDITION
 *   SS_ERR_TOO_BIG, SS_ERR_FULL, SS_ERR_NOMEM -> RESOURCE_EXHAUSTED
 *   SS_ERR_TIMEOUT -> DEADLINE_EXCEEDED  SS_ERR_AUTH -> UNAUTHENTICATED
 *   SS_ERR_CLOSED -> UNAVAILABLE         SS_ERR_STATUS(c) -> c
 *   anything else (SS_ERR_STORE, SS_ERR_IO, ...) -> INTERNAL */
int ss_dispatch_status_code(int err);

/* ---- validation helpers shared by handlers ---- */

/* Check a key against SS_KEY_MIN and the server's --max-key-bytes. On
 * failure answers req with INVALID_ARGUMENT naming what (e.g. "keys[3]")
 * and returns false (req is released). */
bool ss_request_check_key(ss_request *req, const char *what,
                          const uint8_t *key, size_t len);

/* Check a key count against --max-keys (and that it is > 0). On failure
 * answers INVALID_ARGUMENT (0 keys) or RESOURCE_EXHAUSTED (too many) and
 * returns false (req is released). */
bool ss_request_check_key_count(ss_request *req, size_t n);

/* Check a saver name (1..SS_SAVER_NAME_MAX bytes). Same contract. */
bool ss_request_check_saver_name(ss_request *req, const char *saver);

/* Most key bytes shown in a message (common/ss_keyfmt.h gives the form). */
#define SS_DISPATCH_KEY_SHOW 64

#endif
