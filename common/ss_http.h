/* ss_http -- the metrics and health HTTP endpoint (libmicrohttpd).
 *
 * One libmicrohttpd daemon with its own polling thread serves:
 *   GET /metrics  the registry in Prometheus text format 0.0.4
 *   GET /healthz  200 "ok" while the process's main loop answers,
 *                 503 otherwise (liveness)
 *   GET /readyz   200 "ready" when the program can do its work, 503 with
 *                 the reason otherwise (readiness)
 * HEAD works like GET; other methods get 405, other paths 404.
 *
 * Threads: every callback below runs on the daemon's thread, one request
 * at a time, so a callback may block briefly (e.g. wait for the program's
 * event loop, bounded by its own timeout). The registry is read there
 * while other threads update it (ss_metrics.h allows that).
 */
#ifndef SS_HTTP_H
#define SS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "ss_metrics.h"

typedef struct ss_http ss_http; /* opaque: the daemon */

/* Limits of the endpoint (fixed: it serves a handful of scrapers). */
#define SS_HTTP_CONNECTIONS_MAX 32   /* open connections */
#define SS_HTTP_TIMEOUT_S 10         /* idle connection timeout */
#define SS_HTTP_REASON_MAX 256       /* bytes of a /readyz reason */

typedef struct ss_http_handlers {
    /* Before /metrics is rendered: refresh values only the program's own
     * thread may read. May be NULL. */
    void (*collect)(void *arg);
    /* Liveness: true when healthy. NULL = always healthy. */
    bool (*healthy)(void *arg);
    /* Readiness: true when ready; otherwise write why into reason
     * (SS_HTTP_REASON_MAX bytes). NULL = always ready. */
    bool (*ready)(void *arg, char *reason, size_t size);
    /* /metrics body instead of the registry's (a program that merges
     * other processes' metrics): a malloc'd text in *out (*len bytes), which
     * the endpoint frees; a negative return is a 500. NULL = the registry
     * (then m must not be NULL). */
    int (*render)(void *arg, char **out, size_t *len);
    void *arg;          /* passed to every callback */
} ss_http_handlers;

/* Parse "HOST:PORT", "[V6]:PORT" or ":PORT" (all interfaces) and resolve
 * HOST (a literal or a name). Fills *sa (a struct sockaddr_storage) and
 * *salen. Returns 0 or SS_ERR_INVALID with a message in err. */
int ss_http_parse_listen(const char *listen, void *sa, unsigned *salen,
                         char *err, size_t errsize);

/* Start serving m on listen (see ss_http_parse_listen; port 0 picks a
 * free port). m (NULL when h->render is set) and h->arg must outlive the
 * daemon. Returns 0, or
 * SS_ERR_INVALID (bad address) / SS_ERR_IO (cannot bind) / SS_ERR_NOMEM
 * with a message in err. */
int ss_http_start(ss_http **out, const char *listen, ss_metrics *m,
                  const ss_http_handlers *h, char *err, size_t errsize);

/* The bound port. */
int ss_http_port(const ss_http *h);

/* Stop the daemon: waits for its thread (a callback in progress finishes
 * first). Accepts NULL. */
void ss_http_stop(ss_http *h);

/* Write port + "\n" to path atomically (temp file + rename), so a reader
 * polling for the file never sees it half written. Returns 0 or
 * SS_ERR_IO / SS_ERR_INVALID. */
int ss_http_write_port_file(const char *path, int port);

#endif
