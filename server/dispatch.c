/* dispatch -- request contexts, the handler table and reply helpers. */
#include "dispatch.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "commit_events.h"
#include "conn.h"
#include "dispatch_internal.h"
#include "msg_utf8.h"
#include "server_metrics.h"
#include "ss_error.h"
#include "ss_frame.h"
#include "ss_log.h"

struct ss_request {
    ss_dispatch *d;              /* owning dispatcher */
    ss_server *srv;              /* the server (d->srv) */
    ss_conn *conn;               /* holds a reference until answered */
    ss_request_msg *msg;         /* decoded request (owned) */
    uint64_t id;                 /* Request.id */
    void *data;                  /* handler's slot */
    ss_request_close_fn on_close; /* parked-request wake-up, or NULL */
    void *on_close_arg;          /* its argument */
    ss_request *prev;            /* connection's list of parked requests */
    ss_request *next;            /* (those with on_close set) */
    bool linked;                 /* on that list */
    uint64_t start_ms;           /* uv_now when decoded, for debug logs */
    uint64_t start_ns;           /* monotonic ns when decoded (metrics), or 0 */
    int body;                    /* Request body case (metrics op label) */
    ss_conn_class cls;           /* its class for the per-connection caps */
};

/* The connection's parked requests (those with a close callback): the
 * list head is the pointer the connection keeps for us (ss_conn_data).
 * Only they need finding when it closes, so closing is linear in them. */
static ss_request *conn_parked(const ss_conn *c)
{
    return ss_conn_data(c);
}

static void parked_link(ss_request *req)
{
    ss_request *head = conn_parked(req->conn);
    req->prev = NULL;
    req->next = head;
    if (head)
        head->prev = req;
    ss_conn_set_data(req->conn, req);
    req->linked = true;
}

static void parked_unlink(ss_request *req)
{
    if (!req->linked)
        return;
    if (req->prev)
        req->prev->next = req->next;
    else
        ss_conn_set_data(req->conn, req->next);
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    req->linked = false;
}

int ss_dispatch_register(ss_dispatch *d, int body_case, ss_handler_fn fn,
                         void *ctx)
{
    if (body_case <= 0 || body_case >= SS_DISPATCH_SLOTS)
        return SS_ERR_INVALID;
    d->slots[body_case].fn = fn;
    d->slots[body_case].ctx = ctx;
    return 0;
}

ss_dispatch *ss_request_dispatch(const ss_request *req)
{
    return req->d;
}

ss_conn *ss_request_conn(const ss_request *req)
{
    return req->conn;
}

const ss_request_msg *ss_request_message(const ss_request *req)
{
    return req->msg;
}

uint64_t ss_request_id(const ss_request *req)
{
    return req->id;
}

ss_server *ss_request_server(const ss_request *req)
{
    return req->srv;
}


bool ss_request_closed(const ss_request *req)
{
    return ss_conn_closed(req->conn);
}

void ss_request_set_data(ss_request *req, void *data)
{
    req->data = data;
}

void *ss_request_data(const ss_request *req)
{
    return req->data;
}

void ss_request_on_close(ss_request *req, ss_request_close_fn fn, void *arg)
{
    req->on_close = fn;
    req->on_close_arg = arg;
    if (fn && !req->linked)
        parked_link(req);
    else if (!fn)
        parked_unlink(req);
}

int ss_dispatch_status_code(int err)
{
    if (SS_IS_STATUS_ERR(err))
        return SS_STATUS_CODE(err);
    switch (err) {
    case SS_OK:
        return STATESAVER__V1__CODE__OK;
    case SS_ERR_INVALID:
    case SS_ERR_PROTO:
    case SS_ERR_SHAPE:
    case SS_ERR_FORMAT:
        return STATESAVER__V1__CODE__INVALID_ARGUMENT;
    case SS_ERR_NOT_FOUND:
        return STATESAVER__V1__CODE__NOT_FOUND;
    case SS_ERR_CONFLICT:
        return STATESAVER__V1__CODE__FAILED_PRECONDITION;
    case SS_ERR_TOO_BIG:
    case SS_ERR_FULL:
    case SS_ERR_NOMEM:
        return STATESAVER__V1__CODE__RESOURCE_EXHAUSTED;
    case SS_ERR_TIMEOUT:
        return STATESAVER__V1__CODE__DEADLINE_EXCEEDED;
    case SS_ERR_AUTH:
        return STATESAVER__V1__CODE__UNAUTHENTICATED;
    case SS_ERR_CLOSED:
        return STATESAVER__V1__CODE__UNAVAILABLE;
    default:
        return STATESAVER__V1__CODE__INTERNAL;
    }
}

/* Pack resp into a frame and queue it on c. */
static void send_response(ss_server *srv, ss_conn *c, ss_response_msg *resp)
{
    size_t size = statesaver__v1__response__get_packed_size(resp);
    uint32_t max = ss_server_config(srv)->max_frame_bytes;
    if (size > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "response of %zu bytes exceeds the frame "
                 "limit of %" PRIu32 " bytes (--max-frame-bytes); ask for "
                 "fewer keys", size, max);
        Statesaver__V1__Status st = STATESAVER__V1__STATUS__INIT;
        st.code = STATESAVER__V1__CODE__RESOURCE_EXHAUSTED;
        st.message = msg;
        ss_response_msg small = STATESAVER__V1__RESPONSE__INIT;
        small.id = resp->id;
        small.status = &st;
        ss_server_reject(srv, SS_REJECT_RESPONSE_TOO_BIG);
        send_response(srv, c, &small);
        return;
    }
    uint8_t *frame = ss_conn_frame_alloc(SS_FRAME_HEADER + size);
    if (!frame) {
        SS_LOG(SS_LOG_ERROR, "out of memory for a %zu-byte reply to %s", size,
               ss_conn_peer(c));
        /* Not ss_conn_close: its `closed` event would answer parked
         * requests while the caller may be walking them. */
        ss_conn_close_soon(c, "out of memory for a reply");
        return;
    }
    ss_frame_put_header(frame, (uint32_t)size);
    statesaver__v1__response__pack(resp, frame + SS_FRAME_HEADER);
    ss_server_metrics_bytes(srv, 0, SS_FRAME_HEADER + size);
    ss_conn_send(c, frame, SS_FRAME_HEADER + size);
}

/* A standalone error (no request context) on c, e.g. for an oversized
 * frame or a refused connection, then close after flush. */
static void send_error_close(ss_server *srv, ss_conn *c, uint64_t id,
                             int code, const char *msg)
{
    Statesaver__V1__Status st = STATESAVER__V1__STATUS__INIT;
    st.code = code;
    st.message = (char *)msg;
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.id = id;
    resp.status = &st;
    if (!ss_conn_closed(c))
        send_response(srv, c, &resp);
    ss_conn_close_after_flush(c, msg);
}

/* Forget req (answered with status code): unlink, drop the message and
 * the connection reference. */
static void request_release(ss_request *req, int code)
{
    ss_server *srv = req->srv;
    ss_conn *c = req->conn;
    parked_unlink(req);
    if (req->cls == SS_CONN_CLASS_PARKED)
        req->d->parked--;
    if (ss_log_threshold >= SS_LOG_DEBUG)
        SS_LOG(SS_LOG_DEBUG, "request %" PRIu64 " from %s answered in %" PRIu64
               " ms", req->id, ss_conn_peer(c),
               uv_now(ss_server_loop(srv)) - req->start_ms);
    ss_server_metrics_request(srv, req->body, code, req->start_ns);
    ss_conn_class cls = req->cls;
    statesaver__v1__request__free_unpacked(req->msg, NULL);
    free(req);
    ss_server_counters_get(srv)->inflight--;
    ss_conn_request_done(c, cls);
    ss_conn_unref(c);
    ss_server_request_done(srv);
}

void ss_request_reply(ss_request *req, ss_response_msg *resp)
{
    Statesaver__V1__Status st = STATESAVER__V1__STATUS__INIT;
    st.code = STATESAVER__V1__CODE__OK;
    st.message = "";
    resp->id = req->id;
    resp->status = &st;
    if (!ss_conn_closed(req->conn))
        send_response(req->srv, req->conn, resp);
    request_release(req, STATESAVER__V1__CODE__OK);
}

static void request_verror_redirect(ss_request *req, bool close, int code,
                                    Statesaver__V1__Redirect *redirect,
                                    const char *fmt, va_list ap)
{
    char msg[SS_DISPATCH_MSG_MAX] = "";
    ss_conn *c = req->conn;
    /* A reply to a closed connection is dropped: do not format it (this
     * runs once per parked request when a connection with many closes). */
    if (!ss_conn_closed(c) || close || ss_log_threshold >= SS_LOG_DEBUG)
        vsnprintf(msg, sizeof msg, fmt, ap);
    if (code == STATESAVER__V1__CODE__RESOURCE_EXHAUSTED)
        ss_server_reject(req->srv, SS_REJECT_LIMIT);
    else if (code == STATESAVER__V1__CODE__UNAUTHENTICATED)
        ss_server_reject(req->srv, SS_REJECT_AUTH);
    SS_LOG(SS_LOG_DEBUG, "request %" PRIu64 " from %s: %s: %s", req->id,
           ss_conn_peer(req->conn), ss_status_name(code), msg);
    Statesaver__V1__Status st = STATESAVER__V1__STATUS__INIT;
    st.code = code;
    st.message = msg;
    st.redirect = redirect;
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.id = req->id;
    resp.status = &st;
    if (!ss_conn_closed(c))
        send_response(req->srv, c, &resp);
    if (close)
        ss_conn_close_after_flush(c, msg);
    request_release(req, code);
}

static void request_verror(ss_request *req, bool close, int code,
                           const char *fmt, va_list ap)
{
    request_verror_redirect(req, close, code, NULL, fmt, ap);
}

void ss_request_moved(ss_request *req, Statesaver__V1__Redirect *redirect,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    request_verror_redirect(req, false, STATESAVER__V1__CODE__MOVED, redirect, fmt, ap);
    va_end(ap);
}

void ss_request_error(ss_request *req, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    request_verror(req, false, code, fmt, ap);
    va_end(ap);
}

void ss_request_error_close(ss_request *req, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    request_verror(req, true, code, fmt, ap);
    va_end(ap);
}

void ss_request_fail(ss_request *req, int err, const char *msg)
{
    ss_request_error(req, ss_dispatch_status_code(err), "%s",
                     msg && *msg ? msg : ss_strerror(err));
}

bool ss_request_check_key(ss_request *req, const char *what,
                          const uint8_t *key, size_t len)
{
    uint32_t max = ss_server_config(req->srv)->max_key_bytes;
    if (len < SS_KEY_MIN) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "%s is empty (keys are %u..%" PRIu32 " bytes)", what,
                         SS_KEY_MIN, max);
        return false;
    }
    if (len > max) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "%s is %zu bytes, above the limit of %" PRIu32
                         " (--max-key-bytes)", what, len, max);
        return false;
    }
    return true;
}

bool ss_request_check_key_count(ss_request *req, size_t n)
{
    uint32_t max = ss_server_config(req->srv)->max_keys;
    if (n == 0) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "no keys given");
        return false;
    }
    if (n > max) {
        ss_request_error(req, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                         "%zu keys in one request, above the limit of %" PRIu32
                         " (--max-keys)", n, max);
        return false;
    }
    return true;
}

bool ss_request_check_saver_name(ss_request *req, const char *saver)
{
    size_t len = saver ? strlen(saver) : 0;
    if (len == 0) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "saver name is empty");
        return false;
    }
    if (len > SS_SAVER_NAME_MAX) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "saver name is %zu bytes, above the limit of %u",
                         len, SS_SAVER_NAME_MAX);
        return false;
    }
    return true;
}

static const char *body_name(int body_case)
{
    switch (body_case) {
    case STATESAVER__V1__REQUEST__BODY_HELLO: return "Hello";
    case STATESAVER__V1__REQUEST__BODY_DECLARE: return "Declare";
    case STATESAVER__V1__REQUEST__BODY_FETCH: return "Fetch";
    case STATESAVER__V1__REQUEST__BODY_SAVE: return "Save";
    case STATESAVER__V1__REQUEST__BODY_DROP: return "Drop";
    case STATESAVER__V1__REQUEST__BODY_LIST: return "List";
    case STATESAVER__V1__REQUEST__BODY_STATS: return "Stats";
    case STATESAVER__V1__REQUEST__BODY_PING: return "Ping";
    case STATESAVER__V1__REQUEST__BODY_SUBMIT: return "Submit";
    case STATESAVER__V1__REQUEST__BODY_LEASE: return "Lease";
    case STATESAVER__V1__REQUEST__BODY_COMPLETE: return "Complete";
    case STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT: return "Await";
    case STATESAVER__V1__REQUEST__BODY_CANCEL: return "Cancel";
    case STATESAVER__V1__REQUEST__BODY_TOPOLOGY: return "Topology";
    case STATESAVER__V1__REQUEST__BODY_SLOT_FREEZE: return "SlotFreeze";
    case STATESAVER__V1__REQUEST__BODY_SLOT_EXPORT: return "SlotExport";
    case STATESAVER__V1__REQUEST__BODY_SLOT_IMPORT: return "SlotImport";
    case STATESAVER__V1__REQUEST__BODY_SLOT_DELETE: return "SlotDelete";
    default: return "unknown";
    }
}

/* The decoding budget of one Request: protobuf-c allocates through this,
 * so a frame of (say) empty repeated messages, about 50 bytes of heap per
 * 2 wire bytes, is refused instead of taking many times its size. Blocks
 * come from malloc, so the message is freed as usual (allocator NULL). */
typedef struct unpack_budget {
    size_t used;  /* bytes handed out */
    size_t limit; /* at most this many */
    bool over;    /* an allocation was refused for the budget */
} unpack_budget;

static void *budget_alloc(void *data, size_t size)
{
    unpack_budget *b = data;
    if (size > b->limit - b->used) {
        b->over = true;
        return NULL;
    }
    void *p = malloc(size);
    if (p)
        b->used += size;
    return p;
}

static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

/* --unpack-budget-min + --unpack-budget-factor x len, saturating. */
static size_t budget_limit(const ss_config *cfg, size_t len)
{
    size_t extra;
    if (__builtin_mul_overflow(len, (size_t)cfg->unpack_budget_factor, &extra) ||
        extra > SIZE_MAX - cfg->unpack_budget_min)
        return SIZE_MAX;
    return (size_t)cfg->unpack_budget_min + extra;
}

/* Which per-connection cap a request counts against. */
static ss_conn_class body_class(int body_case)
{
    switch (body_case) {
    case STATESAVER__V1__REQUEST__BODY_FETCH:
    case STATESAVER__V1__REQUEST__BODY_LEASE:
    case STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT:
        return SS_CONN_CLASS_PARKED;
    case STATESAVER__V1__REQUEST__BODY_DECLARE:
    case STATESAVER__V1__REQUEST__BODY_SAVE:
    case STATESAVER__V1__REQUEST__BODY_DROP:
    case STATESAVER__V1__REQUEST__BODY_SUBMIT:
    case STATESAVER__V1__REQUEST__BODY_COMPLETE:
    case STATESAVER__V1__REQUEST__BODY_CANCEL:
        return SS_CONN_CLASS_WRITE;
    default:
        return SS_CONN_CLASS_OTHER;
    }
}

/* Decode one frame's payload and dispatch it. Returns 0, or a negative
 * code when the frame was refused (an error reply is queued and the
 * connection will close after it). */
static int dispatch_frame(ss_dispatch *d, ss_conn *c, const uint8_t *payload,
                          size_t len)
{
    ss_server *srv = d->srv;
    const ss_config *cfg = ss_server_config(srv);
    ss_server_counters_get(srv)->requests++;
    ss_server_metrics_bytes(srv, SS_FRAME_HEADER + len, 0);
    unpack_budget budget = {0, budget_limit(cfg, len), false};
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &budget};
    ss_request_msg *msg = statesaver__v1__request__unpack(&alloc, len, payload);
    if (!msg && budget.over) {
        ss_server_reject(srv, SS_REJECT_DECODE_BUDGET);
        char text[256];
        snprintf(text, sizeof text, "decoding this %zu-byte Request needs "
                 "more than its budget of %zu bytes of memory "
                 "(--unpack-budget-min + --unpack-budget-factor x frame "
                 "bytes)", len, budget.limit);
        SS_LOG(SS_LOG_WARN, "connection %s: %s", ss_conn_peer(c), text);
        send_error_close(srv, c, 0, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                         text);
        return SS_ERR_TOO_BIG;
    }
    if (!msg) {
        ss_server_reject(srv, SS_REJECT_BAD_FRAME);
        char text[128];
        snprintf(text, sizeof text, "malformed Request: %zu-byte frame is not "
                 "a valid statesaver.v1.Request message", len);
        SS_LOG(SS_LOG_WARN, "connection %s: %s", ss_conn_peer(c), text);
        send_error_close(srv, c, 0, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         text);
        return SS_ERR_PROTO;
    }
    ss_request *req = calloc(1, sizeof *req);
    if (!req) {
        statesaver__v1__request__free_unpacked(msg, NULL);
        send_error_close(srv, c, 0, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                         "out of memory");
        return SS_ERR_NOMEM;
    }
    req->d = d;
    req->srv = srv;
    req->conn = c;
    req->msg = msg;
    req->id = msg->id;
    req->start_ms = uv_now(ss_server_loop(srv));
    req->start_ns = ss_server_metrics_clock(srv);
    req->body = (int)msg->body_case;
    req->cls = body_class(req->body);
    ss_conn_ref(c);
    ss_conn_request_started(c, req->cls);
    ss_server_counters_get(srv)->inflight++;
    if (req->cls == SS_CONN_CLASS_PARKED)
        d->parked++;

    int body = (int)msg->body_case;
    if (!ss_conn_authed(c) && body != STATESAVER__V1__REQUEST__BODY_HELLO) {
        SS_LOG(SS_LOG_WARN, "connection %s: %s before authentication",
               ss_conn_peer(c), body_name(body));
        ss_request_error_close(req, STATESAVER__V1__CODE__UNAUTHENTICATED,
                               "this server requires authentication: send "
                               "Hello with the token first");
        return 0;
    }
    char field[160];
    if (!ss_msg_utf8_check(&msg->base, field, sizeof field)) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "%s: field %s is not valid UTF-8 (proto3 strings "
                         "must be)", body_name(body), field);
        return 0;
    }
    if (body <= 0 || body >= SS_DISPATCH_SLOTS) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "request %" PRIu64 " has no body (unknown or missing "
                         "request type)", req->id);
        return 0;
    }
    if (req->cls == SS_CONN_CLASS_PARKED && d->parked > cfg->max_parked_total) {
        ss_request_error(req, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                         "%" PRIu64 " Fetch, Lease and Await requests are "
                         "waiting on this server, the limit "
                         "(--max-parked-total); retry later",
                         cfg->max_parked_total);
        return 0;
    }
    /* Cluster: a key of a slot owned elsewhere is redirected (MOVED), a
     * write to a frozen slot refused (UNAVAILABLE), before any handler. */
    if (d->cluster && ss_dispatch_cluster_check(d, req))
        return 0;
    ss_handler_fn fn = d->slots[body].fn;
    if (!fn) {
        ss_request_error(req, STATESAVER__V1__CODE__UNIMPLEMENTED,
                         "%s is not implemented by this server",
                         body_name(body));
        return 0;
    }
    fn(req, d->slots[body].ctx);
    return 0;
}

/* The connection is closing: run the close callbacks of its parked
 * requests, at most SS_DISPATCH_CANCEL_BATCH now; true when none is left
 * (else the connection calls again in a later loop iteration). */
static bool conn_closed(ss_conn *c)
{
    /* Take the head each time: a callback answers its request and may
     * answer others (returned leases can wake parked ones), which unlinks
     * them, so no saved pointer is safe; every step is O(1). */
    ss_request *r;
    size_t n = 0;
    while ((r = conn_parked(c)) != NULL && n < SS_DISPATCH_CANCEL_BATCH) {
        ss_request_close_fn fn = r->on_close;
        void *arg = r->on_close_arg;
        r->on_close = NULL;
        parked_unlink(r);
        fn(r, arg);
        n++;
    }
    if (n == SS_DISPATCH_CANCEL_BATCH && conn_parked(c))
        SS_LOG(SS_LOG_DEBUG, "connection %s: %zu parked requests cancelled, "
               "more in the next loop iteration", ss_conn_peer(c), n);
    return conn_parked(c) == NULL;
}

/* ---- connection events ---- */

static void ev_frame(void *arg, ss_conn *c, const uint8_t *payload, size_t len)
{
    dispatch_frame(arg, c, payload, len);
}

static void ev_error(void *arg, ss_conn *c, int code, const char *msg)
{
    ss_dispatch *d = arg;
    send_error_close(d->srv, c, 0, code, msg);
}

static bool ev_closed(void *arg, ss_conn *c)
{
    (void)arg;
    return conn_closed(c);
}

/* ---- lifecycle ---- */

/* Keys committed: re-check the Fetch waits on them. */
static void on_commit(void *arg, const char *saver, size_t n,
                      const ss_bytes *keys)
{
    ss_dispatch *d = arg;
    ss_barrier_notify(d->barrier, saver, n, keys);
}

/* Shutdown began: parked Fetches get UNAVAILABLE. */
static void mod_shutdown(void *arg)
{
    ss_dispatch *d = arg;
    ss_barrier_shutdown(d->barrier);
}

int ss_dispatch_new(ss_dispatch **out, ss_server *srv)
{
    *out = NULL;
    ss_dispatch *d = calloc(1, sizeof *d);
    if (!d)
        return SS_ERR_NOMEM;
    d->srv = srv;
    d->barrier_sub = -1;
    int rc = ss_barrier_new(&d->barrier, ss_server_loop(srv));
    if (rc < 0)
        goto fail;
    rc = ss_commit_events_subscribe(ss_server_commits(srv), on_commit, d);
    if (rc < 0)
        goto fail;
    d->barrier_sub = rc;
    ss_module mod = {.name = "dispatch", .arg = d, .shutdown = mod_shutdown};
    rc = ss_server_add_module(srv, &mod);
    if (rc < 0)
        goto fail;
    ss_conn_events ev = {
        .arg = d, .frame = ev_frame, .error = ev_error, .closed = ev_closed,
    };
    ss_server_set_conn_events(srv, &ev);
    ss_dispatch_admin_register(d);
    ss_dispatch_state_register(d);
    ss_dispatch_cluster_register(d);
    *out = d;
    rc = ss_dispatch_jobs_init(d);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cannot start the job queue: %s", ss_strerror(rc));
        return rc; /* *out is set: the caller frees it */
    }
    return 0;
fail:
    ss_dispatch_free(d);
    return rc;
}

void ss_dispatch_free(ss_dispatch *d)
{
    if (!d)
        return;
    ss_commit_events_unsubscribe(ss_server_commits(d->srv), d->barrier_sub);
    ss_barrier_free(d->barrier);
    ss_dispatch_cluster_free(d);
    free(d);
}
