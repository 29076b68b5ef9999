/* ss_http -- the metrics and health HTTP endpoint (libmicrohttpd).
 *
 * HTTP parsing, keep-alive and timeouts are libmicrohttpd's; this file only
 * binds the address, routes three paths and builds the bodies.
 */
#include "ss_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_parse.h"
#include "ss_log.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define TEXT_CONTENT_TYPE "text/plain; charset=utf-8"
#define SS_HTTP_HOST_MAX 256 /* bytes of the host part of an address */

struct ss_http {
    struct MHD_Daemon *d;  /* the daemon (owned) */
    ss_metrics *m;         /* served registry (borrowed) */
    ss_http_handlers h;    /* program callbacks */
    int port;              /* bound port */
};

int ss_http_parse_listen(const char *listen, void *sa, unsigned *salen,
                         char *err, size_t errsize)
{
    char host[SS_HTTP_HOST_MAX];
    const char *port;
    size_t hlen;
    if (!listen)
        listen = "";
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':')
            goto bad;
        hlen = (size_t)(end - listen - 1);
        if (hlen == 0 || hlen >= sizeof host)
            goto bad;
        memcpy(host, listen + 1, hlen);
        port = end + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon)
            goto bad;
        hlen = (size_t)(colon - listen);
        /* A bare IPv6 literal has more colons: brackets are required. */
        if (hlen >= sizeof host || memchr(listen, ':', hlen))
            goto bad;
        memcpy(host, listen, hlen);
        port = colon + 1;
    }
    host[hlen] = '\0';
    uint64_t p; /* strict: " 80" and "+80" are refused too */
    if (ss_parse_u64(port, 0, 65535, &p) < 0)
        goto bad;
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int grc = getaddrinfo(hlen ? host : NULL, port, &hints, &ai);
    if (grc != 0 || !ai) {
        snprintf(err, errsize, "cannot resolve '%s': %s", host,
                 grc ? gai_strerror(grc) : "no address");
        return SS_ERR_INVALID;
    }
    /* With no host, AI_PASSIVE gives the IPv4 wildcard first on most
     * systems; take the first answer either way. */
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *salen = (unsigned)ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
bad:
    snprintf(err, errsize, "bad address '%s' (want HOST:PORT, [V6]:PORT or "
             ":PORT)", listen);
    return SS_ERR_INVALID;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    SS_LOG(SS_LOG_WARN, "metrics http: %s", msg);
}

/* Queue a response; text is copied (len bytes) or, with owned, taken
 * over and freed by libmicrohttpd. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status,
                               const char *ctype, char *text, size_t len,
                               bool owned)
{
    struct MHD_Response *r;
    if (owned)
        r = MHD_create_response_from_buffer_with_free_callback(len, text, free);
    else
        r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_COPY);
    if (!r) {
        if (owned)
            free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn,
                                    unsigned status, const char *text)
{
    return respond(conn, status, TEXT_CONTENT_TYPE, (char *)text, strlen(text),
                   false);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    ss_http *h = cls;
    (void)version;
    (void)upload;
    (void)req_cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        /* A body we do not read: answering now makes libmicrohttpd
         * discard it and close the connection. */
        *upload_size = 0;
        return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "method not allowed: use GET\n");
    }
    if (strcmp(url, "/metrics") == 0) {
        if (h->h.collect)
            h->h.collect(h->h.arg);
        char *text = NULL;
        size_t len = 0;
        int rrc = h->h.render ? h->h.render(h->h.arg, &text, &len)
                              : ss_metrics_render(h->m, &text, &len);
        if (rrc < 0) {
            free(text);
            return respond_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                "cannot render the metrics\n");
        }
        return respond(conn, MHD_HTTP_OK, PROM_CONTENT_TYPE, text, len, true);
    }
    if (strcmp(url, "/healthz") == 0) {
        bool ok = !h->h.healthy || h->h.healthy(h->h.arg);
        return respond_text(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                            ok ? "ok\n" : "unhealthy: the main loop does not "
                            "answer\n");
    }
    if (strcmp(url, "/readyz") == 0) {
        char reason[SS_HTTP_REASON_MAX] = "";
        bool ok = !h->h.ready || h->h.ready(h->h.arg, reason, sizeof reason);
        if (ok)
            return respond_text(conn, MHD_HTTP_OK, "ready\n");
        char body[SS_HTTP_REASON_MAX + 32];
        snprintf(body, sizeof body, "not ready: %s\n",
                 reason[0] ? reason : "starting");
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body);
    }
    return respond_text(conn, MHD_HTTP_NOT_FOUND,
                        "not found: try /metrics, /healthz or /readyz\n");
}

int ss_http_start(ss_http **out, const char *listen, ss_metrics *m,
                  const ss_http_handlers *hd, char *err, size_t errsize)
{
    struct sockaddr_storage sa;
    unsigned salen = 0;
    *out = NULL;
    int rc = ss_http_parse_listen(listen, &sa, &salen, err, errsize);
    if (rc < 0)
        return rc;
    ss_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errsize, "out of memory");
        return SS_ERR_NOMEM;
    }
    h->m = m;
    if (hd)
        h->h = *hd;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The port argument is ignored when MHD_OPTION_SOCK_ADDR is given. */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)SS_HTTP_CONNECTIONS_MAX,
                            MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)SS_HTTP_TIMEOUT_S,
                            MHD_OPTION_END);
    if (!h->d) {
        int e = errno;
        snprintf(err, errsize, "cannot serve HTTP on %s: %s", listen,
                 e ? strerror(e) : "libmicrohttpd refused to start");
        free(h);
        return SS_ERR_IO;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? (int)info->port : 0;
    *out = h;
    return 0;
}

int ss_http_port(const ss_http *h)
{
    return h ? h->port : 0;
}

void ss_http_stop(ss_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}

int ss_http_write_port_file(const char *path, int port)
{
    char tmp[4096];
    if (!path || snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >=
                     (int)sizeof tmp)
        return SS_ERR_INVALID;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return SS_ERR_IO;
    int rc = 0;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0)
        rc = SS_ERR_IO;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = SS_ERR_IO;
    if (rc < 0)
        unlink(tmp);
    return rc;
}
