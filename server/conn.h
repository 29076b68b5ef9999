/* conn -- client connections: frame reader, reply writer, backpressure,
 * and the set of all connections of a server (limits, sweeps, flushing).
 *
 * Reading: bytes accumulate in a per-connection buffer that grows only to
 * what the frame at its front needs (its length is checked against the
 * frame limit before growing: --max-frame-bytes, or the much smaller
 * --max-unauth-frame-bytes until Hello succeeded on a server with a
 * token). Whole frames are handed to the `frame` event in order of
 * arrival; a frame is consumed only when complete, and must be complete
 * within --frame-timeout-ms of its first byte.
 *
 * Writing: replies are queued as packed frames and flushed once per loop
 * iteration (uv_try_write first, the rest through one uv_write), so replies
 * produced together leave in one system call. While the bytes queued exceed
 * --max-output-bytes the connection is not read (nor are buffered frames
 * dispatched) until the peer catches up. Past --max-output-bytes-total
 * over all connections, the connection holding the most output is closed
 * (checked in the flush step, never inside a caller's stack).
 *
 * Requests: the layer above reports each request it starts and answers,
 * with its class (ss_conn_class). While a connection has
 * --max-parked-per-conn parkable or --max-pending-writes-per-conn writer
 * requests unanswered, it is not read until one is answered.
 *
 * Admission: a connection is "fresh" until it has sent a first complete
 * request while authenticated. At --max-connections, or with
 * --max-unauth-connections fresh ones, the oldest fresh connection is
 * closed (evicted) to admit a newcomer; only when none is fresh is the
 * newcomer refused with UNAVAILABLE. The idle timeout counts from the last
 * whole request or answer, never from single bytes.
 *
 * The set reports upward only through ss_conn_events (it knows nothing of
 * requests or the server): `frame`, `error` (send a status frame and close
 * after it), `closed` (answer parked requests), `refused` (count).
 *
 * Lifetime: reference counted. The open socket holds one reference,
 * dropped in the uv_close callback; every unanswered request, every write
 * in flight and the dirty list hold one more. The struct is freed when
 * the count reaches zero, never inside its own read/write callback stack.
 *
 * Loop thread only.
 */
#ifndef SS_CONN_H
#define SS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct ss_conn ss_conn;         /* opaque: one connection */
typedef struct ss_conn_set ss_conn_set; /* opaque: all of a server's */

/* Initial (and idle) size of the read buffer. */
#define SS_CONN_READ_INITIAL (64u * 1024u)
/* Most iovecs handed to one write call. */
#define SS_CONN_IOV_MAX 64u

/* Classes of requests, each with its own per-connection cap. */
typedef enum ss_conn_class {
    SS_CONN_CLASS_OTHER = 0,  /* answered at once: no cap */
    SS_CONN_CLASS_PARKED = 1, /* may park: --max-parked-per-conn */
    SS_CONN_CLASS_WRITE = 2,  /* waits for the writer:
                                 --max-pending-writes-per-conn */
    SS_CONN_CLASSES = 3
} ss_conn_class;

/* Why a connection or frame was refused (the `refused` event). */
typedef enum ss_conn_refusal {
    SS_CONN_REFUSED_FRAME_TOO_BIG = 0, /* above --max-frame-bytes */
    SS_CONN_REFUSED_UNAUTH_FRAME,      /* above --max-unauth-frame-bytes */
    SS_CONN_REFUSED_MAX_CONNECTIONS,   /* no fresh connection to evict */
    SS_CONN_REFUSED_FRAME_TIMEOUT,     /* frame not complete in time */
    SS_CONN_REFUSED_EVICTED,           /* fresh connection evicted */
    SS_CONN_REFUSED_OUTPUT_TOTAL,      /* closed: most output when over
                                          --max-output-bytes-total */
} ss_conn_refusal;

/* Upward events; every hook runs on the loop thread. */
typedef struct ss_conn_events {
    void *arg; /* passed to every hook */
    /* A whole frame's payload (borrowed for the call). */
    void (*frame)(void *arg, ss_conn *c, const uint8_t *payload, size_t len);
    /* Queue a status-only reply (id 0, gRPC code, msg) on c and close it
     * after the reply is written. */
    void (*error)(void *arg, ss_conn *c, int code, const char *msg);
    /* c is closing: its parked requests must be answered now or soon.
     * Return false to be called again in a later loop iteration (work
     * left), so closing a connection with very many parked requests
     * never stalls the loop; the connection stays allocated meanwhile. */
    bool (*closed)(void *arg, ss_conn *c);
    /* Something was refused (count it); called with refused_arg. */
    void (*refused)(void *arg, ss_conn_refusal why);
    void *refused_arg; /* for refused */
} ss_conn_events;

/* ---- the set ---- */

/* cfg is borrowed and must outlive the set. Starts the set's flush
 * handles on loop. Returns 0 or SS_ERR_NOMEM. */
int ss_conn_set_new(ss_conn_set **out, uv_loop_t *loop, const ss_config *cfg);
/* Install the events (copied). Call before accepting. */
void ss_conn_set_events(ss_conn_set *s, const ss_conn_events *ev);
/* Close the set's own handles (after the last connection is gone). */
void ss_conn_set_close_handles(ss_conn_set *s);
/* Free once the loop ran the handles' close callbacks. Accepts NULL. */
void ss_conn_set_free(ss_conn_set *s);

/* Accept a pending connection from listener (see Admission above).
 * Returns 0 or a negative code. */
int ss_conn_accept(ss_conn_set *s, uv_stream_t *listener);

/* Counters. */
uint64_t ss_conn_set_open(const ss_conn_set *s);     /* admitted, open now */
uint64_t ss_conn_set_accepted(const ss_conn_set *s); /* admitted since start */
/* Connections still allocated to the set (refused ones included). */
bool ss_conn_set_empty(const ss_conn_set *s);

/* Write every connection's queued output now. */
void ss_conn_flush_all(ss_conn_set *s);
/* Periodic sweep: lingering closes, frame deadlines, idle connections
 * (idle_timeout_ms 0 = none). */
void ss_conn_sweep(ss_conn_set *s, uint64_t idle_timeout_ms);
/* Shutdown: stop reading every connection (no new requests). */
void ss_conn_stop_all(ss_conn_set *s);
/* Shutdown: close every connection after its output (or at once). */
void ss_conn_close_all(ss_conn_set *s, bool flush);

/* ---- one connection ---- */

void ss_conn_ref(ss_conn *c);
void ss_conn_unref(ss_conn *c); /* frees at zero; accepts NULL */

/* True once closing began (close requested or close-after-flush). */
bool ss_conn_closed(const ss_conn *c);

/* Output frames: allocate len bytes, fill them (header + payload), then
 * ss_conn_send takes ownership (frees them after the write, or at once
 * when the connection is closed). ss_conn_frame_free frees an unsent one. */
uint8_t *ss_conn_frame_alloc(size_t len);
void ss_conn_frame_free(uint8_t *frame);
void ss_conn_send(ss_conn *c, uint8_t *frame, size_t len);

/* Close now (queued output is dropped). reason goes to the debug log.
 * The `closed` event runs inside this call. */
void ss_conn_close(ss_conn *c, const char *reason);
/* Close in the next flush step, outside the caller's stack (for code that
 * must not see the `closed` event re-enter it, e.g. while answering a
 * request). reason must be a static string. Nothing more is read or sent. */
void ss_conn_close_soon(ss_conn *c, const char *reason);
/* Stop reading and dispatching; close once queued output is written. */
void ss_conn_close_after_flush(ss_conn *c, const char *reason);

/* Authentication state (Hello). */
bool ss_conn_authed(const ss_conn *c);
void ss_conn_set_authed(ss_conn *c);

/* One pointer for the layer above (its per-connection state); NULL at
 * first. The connection never looks at it. */
void ss_conn_set_data(ss_conn *c, void *data);
void *ss_conn_data(const ss_conn *c);

/* A request of class cls arrived / was answered. Answering may resume
 * reading (deferred to the flush step) or finish a pending close. */
void ss_conn_request_started(ss_conn *c, ss_conn_class cls);
void ss_conn_request_done(ss_conn *c, ss_conn_class cls);

/* Peer address for logs ("127.0.0.1:5555"). */
const char *ss_conn_peer(const ss_conn *c);

#endif
