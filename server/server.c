/* server -- the statesaver-server process: loop, listener, lifecycle. */
#include "server.h"

#include <errno.h>
#include <netdb.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobs.h"
#include "server_internal.h"
#include "server_metrics.h"
#include "ss_error.h"
#include "ss_log.h"

/* Idle-connection sweep period bounds (the sweep also ends lingering
 * closes and, during shutdown, checks whether everything is closed). */
#define SS_SWEEP_MS_MAX 1000u
#define SS_SWEEP_MS_MIN 10u
#define SS_SWEEP_MS_SHUTDOWN 20u
#define SS_LISTEN_BACKLOG 511

uint64_t ss_server_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uv_loop_t *ss_server_loop(ss_server *srv)
{
    return &srv->loop;
}

ss_store *ss_server_store(ss_server *srv)
{
    return srv->store;
}

ss_writer *ss_server_writer(ss_server *srv)
{
    return srv->writer;
}

const ss_config *ss_server_config(const ss_server *srv)
{
    return &srv->cfg;
}

bool ss_server_shutting_down(const ss_server *srv)
{
    return srv->shutting_down;
}

int ss_server_port(const ss_server *srv)
{
    return srv->port;
}

ss_server_counters *ss_server_counters_get(ss_server *srv)
{
    return &srv->counters;
}

uint64_t ss_server_connections(const ss_server *srv)
{
    return srv->conns ? ss_conn_set_open(srv->conns) : 0;
}

uint64_t ss_server_accepted(const ss_server *srv)
{
    return srv->conns ? ss_conn_set_accepted(srv->conns) : 0;
}

int ss_server_add_module(ss_server *srv, const ss_module *m)
{
    if (srv->n_modules >= SS_SERVER_MODULES_MAX)
        return SS_ERR_FULL;
    srv->modules[srv->n_modules++] = *m;
    return 0;
}

static void on_conn_refused(void *arg, ss_conn_refusal why);

void ss_server_module_stats(ss_server *srv, const char *saver,
                            Statesaver__V1__StatsResponse *out)
{
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i].stats)
            srv->modules[i].stats(srv->modules[i].arg, saver, out);
}

ss_commit_events *ss_server_commits(ss_server *srv)
{
    return srv->commits;
}

void ss_server_set_conn_events(ss_server *srv, const ss_conn_events *ev)
{
    srv->conn_events = *ev;
    srv->conn_events.refused = on_conn_refused;
    srv->conn_events.refused_arg = srv;
    ss_conn_set_events(srv->conns, &srv->conn_events);
}

/* ---- accepting ---- */

/* The connection set's refusals, as reject counters and metrics. */
static void on_conn_refused(void *arg, ss_conn_refusal why)
{
    static const ss_reject_reason map[] = {
        [SS_CONN_REFUSED_FRAME_TOO_BIG] = SS_REJECT_FRAME_TOO_BIG,
        [SS_CONN_REFUSED_UNAUTH_FRAME] = SS_REJECT_UNAUTH_FRAME,
        [SS_CONN_REFUSED_MAX_CONNECTIONS] = SS_REJECT_MAX_CONNECTIONS,
        [SS_CONN_REFUSED_FRAME_TIMEOUT] = SS_REJECT_FRAME_TIMEOUT,
        [SS_CONN_REFUSED_EVICTED] = SS_REJECT_EVICTED,
        [SS_CONN_REFUSED_OUTPUT_TOTAL] = SS_REJECT_OUTPUT_TOTAL,
    };
    if ((size_t)why < sizeof map / sizeof map[0])
        ss_server_reject(arg, map[why]);
}

static void on_connection(uv_stream_t *listener, int status)
{
    ss_server *srv = listener->data;
    if (status < 0) {
        SS_LOG(SS_LOG_WARN, "listen error: %s", uv_strerror(status));
        return;
    }
    if (srv->shutting_down)
        return;
    ss_conn_accept(srv->conns, listener);
}

/* ---- idle sequence eviction ---- */

typedef struct evict_op {
    ss_write_op op;    /* writer op (first member) */
    ss_server *srv;    /* owning server */
    uint64_t now_ms;   /* eviction clock */
    uint64_t evicted;  /* result */
} evict_op;

static int evict_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    evict_op *e = (evict_op *)op;
    (void)msg;
    return ss_store_evict_idle(txn, e->now_ms, SS_EVICT_BATCH, &e->evicted);
}

static void evict_done(ss_write_op *op, int rc, const char *msg)
{
    evict_op *e = (evict_op *)op;
    e->srv->evicting = false;
    if (rc < 0)
        SS_LOG(SS_LOG_ERROR, "idle eviction failed: %s",
               msg && *msg ? msg : ss_strerror(rc));
    else if (e->evicted > 0) {
        e->srv->counters.evicted += e->evicted;
        SS_LOG(SS_LOG_INFO, "evicted %" PRIu64 " idle sequences (%" PRIu64
               " since start)", e->evicted, e->srv->counters.evicted);
    }
    free(e);
}

static void on_ttl_timer(uv_timer_t *t)
{
    ss_server *srv = t->data;
    if (srv->evicting || srv->shutting_down || !srv->writer)
        return;
    /* Nothing to evict without savers: an idle server must not commit
     * (and fsync) once a period for nothing. */
    ss_store_stats st;
    memset(&st, 0, sizeof st);
    if (ss_store_stats_get(srv->store, NULL, &st) == 0 && st.savers == 0)
        return;
    evict_op *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->op.run = evict_run;
    e->op.done = evict_done;
    e->srv = srv;
    e->now_ms = ss_server_now_ms();
    srv->evicting = true;
    ss_writer_submit(srv->writer, &e->op);
}

/* ---- shutdown ---- */

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Close the server's own handles once the store is closed and no
 * connection is left; the loop then ends. */
static void maybe_finish(ss_server *srv)
{
    if (srv->finished || !srv->draining_done || srv->writer ||
        !ss_conn_set_empty(srv->conns))
        return;
    ss_conn_flush_all(srv->conns);
    srv->finished = true;
    ss_server_metrics_stop(srv);
    close_handle((uv_handle_t *)&srv->sigint);
    close_handle((uv_handle_t *)&srv->sigterm);
    close_handle((uv_handle_t *)&srv->ttl_timer);
    close_handle((uv_handle_t *)&srv->sweep_timer);
    close_handle((uv_handle_t *)&srv->drain_timer);
    close_handle((uv_handle_t *)&srv->grace_timer);
    ss_conn_set_close_handles(srv->conns);
    /* Closing the signal handles restored the default action: a repeated
     * SIGTERM in the last instants must not turn a clean exit into death
     * by signal. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    SS_LOG(SS_LOG_INFO, "shutdown complete");
}

static void on_writer_stopped(void *arg)
{
    ss_server *srv = arg;
    srv->writer = NULL;
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i].free) {
            srv->modules[i].free(srv->modules[i].arg);
            srv->modules[i].free = NULL;
        }
    ss_store_close(srv->store);
    srv->store = NULL;
    SS_LOG(SS_LOG_INFO, "writer stopped, store closed");
    maybe_finish(srv);
}

static void on_drain(uv_timer_t *t)
{
    ss_server *srv = t->data;
    if (srv->draining_done)
        return;
    srv->draining_done = true;
    SS_LOG(SS_LOG_INFO, "requests drained; closing connections");
    ss_conn_close_all(srv->conns, true);
    if (srv->writer && !srv->writer_stopping) {
        srv->writer_stopping = true;
        ss_writer_stop(srv->writer, on_writer_stopped, srv);
    }
}

static void on_grace(uv_timer_t *t)
{
    ss_server *srv = t->data;
    SS_LOG(SS_LOG_WARN, "shutdown grace of %u ms over: %" PRIu64 " requests "
           "still in flight; closing connections", SS_SHUTDOWN_GRACE_MS,
           srv->counters.inflight);
    ss_conn_close_all(srv->conns, false);
    if (!srv->draining_done)
        on_drain(&srv->drain_timer);
}

void ss_server_request_done(ss_server *srv)
{
    if (srv->shutting_down && srv->counters.inflight == 0 &&
        !srv->draining_done && !srv->finished)
        uv_timer_start(&srv->drain_timer, on_drain, 0, 0);
}

static void on_sweep(uv_timer_t *t)
{
    ss_server *srv = t->data;
    ss_conn_sweep(srv->conns, srv->shutting_down ? 0 : srv->cfg.idle_timeout_ms);
    if (srv->shutting_down)
        maybe_finish(srv);
}

void ss_server_shutdown(ss_server *srv)
{
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    SS_LOG(SS_LOG_INFO, "shutting down: %" PRIu64 " requests in flight, %"
           PRIu64 " connections", srv->counters.inflight,
           ss_conn_set_open(srv->conns));
    if (srv->listening) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
        srv->listening = false;
    }
    uv_timer_stop(&srv->ttl_timer);
    ss_conn_stop_all(srv->conns);
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i].shutdown)
            srv->modules[i].shutdown(srv->modules[i].arg);
    uv_timer_start(&srv->grace_timer, on_grace, SS_SHUTDOWN_GRACE_MS, 0);
    uv_timer_start(&srv->sweep_timer, on_sweep, SS_SWEEP_MS_SHUTDOWN,
                   SS_SWEEP_MS_SHUTDOWN);
    ss_server_request_done(srv);
}

static void on_signal(uv_signal_t *h, int signum)
{
    ss_server *srv = h->data;
    if (srv->shutting_down) {
        SS_LOG(SS_LOG_WARN, "signal %d again: closing connections now", signum);
        ss_conn_close_all(srv->conns, false);
        return;
    }
    SS_LOG(SS_LOG_INFO, "signal %d: graceful shutdown", signum);
    ss_server_shutdown(srv);
}

/* ---- start ---- */

static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    int rc = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >=
        (int)sizeof tmp)
        return SS_ERR_INVALID;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        SS_LOG(SS_LOG_ERROR, "cannot write port file %s: %s", tmp,
               strerror(errno));
        return SS_ERR_IO;
    }
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0)
        rc = SS_ERR_IO;
    /* rename makes the file appear whole to a reader polling for it. */
    if (rc == 0 && rename(tmp, path) != 0)
        rc = SS_ERR_IO;
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cannot write port file %s: %s", path,
               strerror(errno));
        unlink(tmp);
    }
    return rc;
}

static int start_listening(ss_server *srv)
{
    struct sockaddr_storage sa;
    bool v6 = strchr(srv->cfg.host, ':') != NULL;
    int rc = v6 ? uv_ip6_addr(srv->cfg.host, srv->cfg.port,
                              (struct sockaddr_in6 *)&sa)
                : uv_ip4_addr(srv->cfg.host, srv->cfg.port,
                              (struct sockaddr_in *)&sa);
    if (rc < 0) {
        /* Not a literal: resolve the name (synchronously; once at start). */
        uv_getaddrinfo_t gai;
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        rc = uv_getaddrinfo(&srv->loop, &gai, NULL, srv->cfg.host, NULL,
                            &hints);
        if (rc < 0 || !gai.addrinfo) {
            SS_LOG(SS_LOG_ERROR, "--listen: cannot resolve '%s': %s",
                   srv->cfg.host, rc < 0 ? uv_strerror(rc) : "no address");
            return SS_ERR_INVALID;
        }
        const struct addrinfo *ai = gai.addrinfo;
        memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
        uv_freeaddrinfo(gai.addrinfo);
        v6 = sa.ss_family == AF_INET6;
        if (v6)
            ((struct sockaddr_in6 *)&sa)->sin6_port =
                htons((uint16_t)srv->cfg.port);
        else
            ((struct sockaddr_in *)&sa)->sin_port =
                htons((uint16_t)srv->cfg.port);
    }
    uv_tcp_init(&srv->loop, &srv->listener);
    srv->listener.data = srv;
    srv->listening = true;
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, SS_LISTEN_BACKLOG,
                       on_connection);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cannot listen on %s%s%s:%d: %s", v6 ? "[" : "",
               srv->cfg.host, v6 ? "]" : "", srv->cfg.port, uv_strerror(rc));
        return SS_ERR_IO;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
    srv->port = ntohs(bound.ss_family == AF_INET6
                          ? ((struct sockaddr_in6 *)&bound)->sin6_port
                          : ((struct sockaddr_in *)&bound)->sin_port);
    SS_LOG(SS_LOG_INFO, "listening on %s%s%s:%d", v6 ? "[" : "", srv->cfg.host,
           v6 ? "]" : "", srv->port);
    if (srv->cfg.port_file)
        return write_port_file(srv->cfg.port_file, srv->port);
    return 0;
}

int ss_server_create(ss_server **out, const ss_config *cfg)
{
    int rc;
    ss_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return SS_ERR_NOMEM;
    *out = srv;
    rc = ss_config_copy(&srv->cfg, cfg);
    if (rc < 0)
        return rc;
    ss_log_threshold = srv->cfg.log_level;
    srv->counters.start_ms = ss_server_now_ms();
    rc = uv_loop_init(&srv->loop);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "uv_loop_init: %s", uv_strerror(rc));
        return SS_ERR_IO;
    }
    srv->loop_ready = true;
    uv_timer_init(&srv->loop, &srv->ttl_timer);
    uv_timer_init(&srv->loop, &srv->sweep_timer);
    uv_timer_init(&srv->loop, &srv->drain_timer);
    uv_timer_init(&srv->loop, &srv->grace_timer);
    uv_signal_init(&srv->loop, &srv->sigint);
    uv_signal_init(&srv->loop, &srv->sigterm);
    srv->ttl_timer.data = srv->sweep_timer.data = srv;
    srv->drain_timer.data = srv->grace_timer.data = srv;
    srv->sigint.data = srv->sigterm.data = srv;
    srv->handles_ready = true;
    rc = ss_conn_set_new(&srv->conns, &srv->loop, &srv->cfg);
    if (rc < 0)
        return rc;
    rc = ss_commit_events_new(&srv->commits);
    if (rc < 0)
        return rc;

    ss_store_options so = {
        .dir = srv->cfg.data_dir,
        .map_size = srv->cfg.map_size,
        .sync = srv->cfg.sync,
        .max_readers = SS_MAX_READERS,
    };
    char smsg[SS_STORE_MSG] = "";
    rc = ss_store_open_growing(&srv->store, &so, srv->cfg.max_map_size, smsg);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cannot open store in %s: %s", srv->cfg.data_dir,
               smsg[0] ? smsg : ss_strerror(rc));
        return rc;
    }
    /* Before the writer starts: its thread reads the value unlocked. */
    ss_store_set_finished_retention(srv->store, srv->cfg.finished_retention_ms);
    /* Named databases are created before the writer owns the env
     * (store.h); the job queue's is one of them. */
    char msg[SS_STORE_MSG];
    rc = ss_jobs_prepare(srv->store, msg);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cannot prepare the job queue's database: %s", msg);
        return rc;
    }
    rc = ss_writer_start(&srv->writer, srv->store, &srv->loop);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cannot start writer: %s", ss_strerror(rc));
        return rc;
    }
    return 0;
}

int ss_server_start(ss_server *srv)
{
    int rc = start_listening(srv);
    if (rc < 0)
        return rc;
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    /* Often enough for the idle timeout and the frame deadline. */
    uint64_t sweep = srv->cfg.idle_timeout_ms / 4;
    uint64_t fsweep = srv->cfg.frame_timeout_ms / 4;
    if (fsweep > 0 && (sweep == 0 || fsweep < sweep))
        sweep = fsweep;
    if (sweep > SS_SWEEP_MS_MAX || sweep == 0)
        sweep = SS_SWEEP_MS_MAX;
    if (sweep < SS_SWEEP_MS_MIN)
        sweep = SS_SWEEP_MS_MIN;
    uv_timer_start(&srv->sweep_timer, on_sweep, sweep, sweep);
    if (srv->cfg.ttl_interval_ms > 0)
        uv_timer_start(&srv->ttl_timer, on_ttl_timer, srv->cfg.ttl_interval_ms,
                       srv->cfg.ttl_interval_ms);
    rc = ss_server_metrics_start(srv);
    if (rc < 0)
        return rc;
    SS_LOG(SS_LOG_INFO, "statesaver-server %s: data %s, sync %s, map %" PRIu64
           " bytes, frames up to %" PRIu32 " bytes, %s", SS_VERSION,
           srv->cfg.data_dir, srv->cfg.sync ? "on" : "off", srv->cfg.map_size,
           srv->cfg.max_frame_bytes,
           srv->cfg.token ? "auth token required" : "no auth");
    return 0;
}

int ss_server_run(ss_server *srv)
{
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    return srv->exit_rc;
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void ss_server_free(ss_server *srv)
{
    if (!srv)
        return;
    if (srv->loop_ready) {
        ss_server_metrics_stop(srv);
        /* After a failed start: stop what was started, then let every
         * handle's close callback run before the loop is closed. */
        if (srv->writer) {
            srv->writer_stopping = true;
            ss_writer_stop(srv->writer, on_writer_stopped, srv);
            /* Not UV_RUN_DEFAULT: the flush check handle is still active
             * and would keep that running for ever. */
            while (srv->writer)
                uv_run(&srv->loop, UV_RUN_ONCE);
        }
        if (srv->store) {
            ss_store_close(srv->store);
            srv->store = NULL;
        }
        srv->finished = true;
        uv_walk(&srv->loop, on_walk_close, NULL);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&srv->loop) != 0)
            SS_LOG(SS_LOG_WARN, "event loop closed with handles still open");
    }
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i].free)
            srv->modules[i].free(srv->modules[i].arg);
    ss_server_metrics_free(srv);
    ss_conn_set_free(srv->conns);
    ss_commit_events_free(srv->commits);
    ss_config_clear(&srv->cfg);
    free(srv);
}
