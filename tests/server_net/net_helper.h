/* net_helper -- run the real statesaver-server and talk raw frames to it.
 *
 * For integration tests: starts the built binary on an ephemeral
 * 127.0.0.1 port (--port-file) with an LMDB dir under a mkdtemp directory,
 * and offers blocking socket helpers with timeouts that send and receive
 * length-prefixed protobuf frames directly (no client library). Every wait
 * is bounded.
 */
#ifndef SS_NET_HELPER_H
#define SS_NET_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "statesaver.pb-c.h"

typedef Statesaver__V1__Request treq;
typedef Statesaver__V1__Response tresp;

/* A running server process. */
typedef struct tsrv {
    pid_t pid;          /* server process, 0 when not running */
    int port;           /* bound port */
    char root[256];     /* mkdtemp directory (owned; removed by cleanup) */
    char data[300];     /* LMDB dir inside root */
    char log[300];      /* server stderr */
    char portfile[300]; /* --port-file path */
} tsrv;

/* Create root (mkdtemp) and the paths; does not start anything. */
void tsrv_init(tsrv *s);
/* Start the server with --listen 127.0.0.1:0 --data --port-file plus the
 * NULL-terminated extra args; waits (bounded) for the port file. Fails the
 * test (ck_abort) on error. */
void tsrv_start(tsrv *s, const char *const *extra);
/* Send sig and wait up to timeout_ms for exit. Returns the exit status
 * (0..255), 128+signal when killed by a signal, or -1 on timeout (then
 * the process is SIGKILLed). */
int tsrv_stop(tsrv *s, int sig, int timeout_ms);
/* Stop if running (SIGKILL) and remove root. */
void tsrv_cleanup(tsrv *s);
/* Print the server's log to stderr (for failures). */
void tsrv_dump_log(const tsrv *s);

/* Connect to 127.0.0.1:port (bounded). Returns the fd or -1. */
int tc_connect(int port);
/* Connect to a numeric IPv4 or IPv6 host (bounded). fd or -1. */
int tc_connect_host(const char *host, int port);
/* Write all of buf (bounded by timeout). Returns 0 or -1. */
int tc_write_all(int fd, const void *buf, size_t len, int timeout_ms);
/* A growable byte buffer (doubling, so appending is linear). */
typedef struct tbuf {
    uint8_t *data; /* malloc'd */
    size_t len;    /* bytes used */
    size_t cap;    /* bytes allocated */
} tbuf;
/* Append raw bytes / a framed request. */
void tbuf_append(tbuf *b, const void *data, size_t len);
void tc_frame_append(tbuf *b, const treq *r);
void tbuf_free(tbuf *b);
/* Send one request as a frame. Returns 0 or -1. */
int tc_send(int fd, const treq *r);
/* Receive one response frame (bounded). NULL on timeout, EOF or a bad
 * frame; *eof (optional) tells EOF apart. Free with tresp_free. */
tresp *tc_recv(int fd, int timeout_ms, bool *eof);
/* Send r and receive one response. */
tresp *tc_call(int fd, const treq *r, int timeout_ms);
/* True when the peer closes (EOF or reset) within timeout_ms; any frames
 * received meanwhile are discarded. */
bool tc_wait_closed(int fd, int timeout_ms);
void tresp_free(tresp *r);
/* Status code of r (-1 when r is NULL). */
int tresp_code(const tresp *r);

/* ---- request builders (the result owns its memory: treq_free) ---- */

treq *treq_new(uint64_t id);
void treq_free(treq *r);
treq *treq_hello(uint64_t id, const char *token);
treq *treq_ping(uint64_t id, const void *payload, size_t len);
/* Declare saver with float32 states names[i] of shape [dims[i]]. */
treq *treq_declare(uint64_t id, const char *saver, size_t n,
                   const char *const *names, const int64_t *dims);
/* Fetch keys (n) with an optional barrier. */
treq *treq_fetch(uint64_t id, const char *saver, size_t n,
                 const char *const *keys, uint64_t min_segment,
                 uint32_t wait_ms);
/* Save n keys at segs, float32 states: state i holds n rows of dims[i]
 * values, value(k, i, j) = base + k * 100 + i * 10 + j. */
treq *treq_save(uint64_t id, const char *saver, size_t n,
                const char *const *keys, const uint64_t *segs,
                size_t n_states, const int64_t *dims, float base);
/* Add a raw tensor to a Save (dtype, shape, data copied). */
void treq_save_add_tensor(treq *r, int dtype, size_t rank,
                          const int64_t *shape, const void *data, size_t len);

/* Milliseconds of a monotonic clock. */
uint64_t tnow_ms(void);

#endif
