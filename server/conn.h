/* conn -- one client connection: frame reader, reply writer, backpressure.
 *
 * Reading: bytes accumulate in a per-connection buffer that grows only to
 * what the frame at its front needs (its length is checked against
 * --max-frame-bytes before growing). Whole frames are handed to dispatch in
 * order of arrival; a frame is consumed only when complete.
 *
 * Writing: replies are queued as packed frames and flushed once per loop
 * iteration (uv_try_write first, the rest through one uv_write), so replies
 * produced together leave in one system call. While the bytes queued exceed
 * --max-output-bytes the connection is not read (nor are buffered frames
 * dispatched) until the peer catches up.
 *
 * Lifetime: reference counted. The open socket holds one reference,
 * dropped in the uv_close callback; every unanswered request and every
 * write in flight holds one more. The struct is freed when the count
 * reaches zero, never inside its own read/write callback stack.
 *
 * Loop thread only.
 */
#ifndef SS_CONN_H
#define SS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ss_server ss_server;   /* server.h */
typedef struct ss_conn ss_conn;       /* opaque */
typedef struct ss_request ss_request; /* dispatch.h */

/* Initial (and idle) size of the read buffer. */
#define SS_CONN_READ_INITIAL (64u * 1024u)
/* Most iovecs handed to one write call. */
#define SS_CONN_IOV_MAX 64u

/* Accept a pending connection from listener. With reject set, the
 * connection gets an UNAVAILABLE error and is closed (max connections).
 * Returns 0 or a negative code. */
int ss_conn_accept(ss_server *srv, uv_stream_t *listener, bool reject);

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

/* Write queued frames now (called by the server's flush step). */
void ss_conn_flush(ss_conn *c);

/* Close now (queued output is dropped). reason goes to the debug log. */
void ss_conn_close(ss_conn *c, const char *reason);
/* Stop reading and dispatching; close once queued output is written. */
void ss_conn_close_after_flush(ss_conn *c, const char *reason);

/* Authentication state (Hello). */
bool ss_conn_authed(const ss_conn *c);
void ss_conn_set_authed(ss_conn *c);

/* Requests in flight: dispatch links unanswered requests here. */
ss_request **ss_conn_requests(ss_conn *c);
void ss_conn_request_started(ss_conn *c);
/* A request was answered: may resume reading or finish a pending close. */
void ss_conn_request_done(ss_conn *c);

/* Peer address for logs ("127.0.0.1:5555"). */
const char *ss_conn_peer(const ss_conn *c);

/* Server-wide operations over the connection list. */
/* Close connections idle (nothing read, nothing in flight) for timeout_ms. */
void ss_conn_sweep_idle(ss_server *srv, uint64_t timeout_ms);
/* Shutdown: stop reading every connection (no new requests). */
void ss_conn_stop_all(ss_server *srv);
/* Shutdown: close every connection after its output (or at once). */
void ss_conn_close_all(ss_server *srv, bool flush);

/* Dirty-list link used by the server's flush step. */
ss_conn **ss_conn_dirty_next(ss_conn *c);
bool *ss_conn_dirty_flag(ss_conn *c);

#endif
