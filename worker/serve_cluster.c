/* serve_cluster -- `statesaver-worker serve` on a cluster: lease from every
 * shard, complete to the shard the lease came from (the key's owner).
 *
 * One worker process per shard: the parent learns the topology (from
 * --cluster, or from --server when that server's topology has several
 * shards), starts `statesaver-worker serve --server SHARD --no-cluster`
 * with the same flags for each shard, and every SS_SERVE_CLUSTER_REFRESH_MS
 * re-reads the topology: a new shard gets a worker, a removed one's worker
 * is stopped. A child that dies (not by exiting) is restarted after
 * SS_SERVE_CLUSTER_RESTART_MS; a child exiting 1 or 2 (schema conflict,
 * bad flags or model) stops them all with that status; exit 0 (--max-batches)
 * is final for that shard. SIGTERM/SIGINT are passed on, and the parent
 * exits 0 once every child has finished its batch and exited.
 *
 * Why processes: each shard's lease loop is the single-server loop,
 * unchanged (its reconnects, backoff, pipelined Complete and metrics), a
 * shard that is down stalls only its own worker, and nothing of the loop
 * had to learn about shards. The cost: a model copy and unroll threads per
 * shard (give --threads accordingly). --metrics-listen and --stats-json
 * would collide between the children and are refused with --cluster.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "serve.h"
#include "serve_int.h"
#include "ss_log.h"
#include "ss_token.h"
#include "statesaver.h"

/* How often the parent re-reads the topology (ms). */
#define SS_SERVE_CLUSTER_REFRESH_MS 2000
/* Pause before a dead child's shard gets a worker again (ms). */
#define SS_SERVE_CLUSTER_RESTART_MS 1000
/* Timeout of the Topology request that decides whether --server is a
 * cluster (ms). */
#define SS_SERVE_CLUSTER_PROBE_MS 3000
/* Most shards served (a child each). */
#define SS_SERVE_CLUSTER_MAX_SHARDS 1024
/* Parent's poll period (ms). */
#define SS_SERVE_CLUSTER_POLL_MS 50

/* One shard's worker process. */
typedef struct child {
    char addr[SS_REDIRECT_ADDR_MAX + 1]; /* shard address */
    pid_t pid;         /* running process, 0 when none */
    bool done;         /* exited 0 (--max-batches): not restarted */
    bool removed;      /* shard left the topology: not restarted */
    int64_t start_at;  /* restart not before (ms, monotonic) */
} child;

static volatile sig_atomic_t cluster_stop;

static void on_cluster_signal(int sig)
{
    (void)sig;
    cluster_stop = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The child's argv: ours without --cluster/--server, plus the shard. */
static char **child_argv(int argc, char **argv, const char *addr)
{
    char **a = calloc((size_t)argc + 6, sizeof *a);
    size_t n = 0;
    if (!a)
        return NULL;
    a[n++] = "statesaver-worker";
    a[n++] = "serve";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cluster") == 0 || strcmp(argv[i], "--server") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--cluster=", 10) == 0 || strncmp(argv[i], "--server=", 9) == 0)
            continue;
        a[n++] = argv[i];
    }
    a[n++] = "--server";
    a[n++] = (char *)(uintptr_t)addr;
    a[n++] = "--no-cluster";
    a[n] = NULL;
    return a;
}

static pid_t spawn(int argc, char **argv, const char *addr)
{
    char **a = child_argv(argc, argv, addr);
    if (!a)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        execv("/proc/self/exe", a);
        fprintf(stderr, "serve: exec for shard %s: %s\n", addr, strerror(errno));
        _exit(SS_SERVE_EXIT_FAIL);
    }
    free(a);
    return pid;
}

static ss_cluster *open_cluster(const serve_opts *o, int timeout_ms)
{
    const char *seeds[SS_SERVE_CLUSTER_MAX_SHARDS];
    char *list = strdup(o->cluster ? o->cluster : o->server), err[SERVE_ERRSZ];
    char *token = NULL;
    size_t n = 0, token_len = 0;
    ss_cluster *c = NULL;
    ss_cluster_options opt;
    if (!list)
        return NULL;
    for (char *sv = NULL, *t = strtok_r(list, ",", &sv); t && n < SS_SERVE_CLUSTER_MAX_SHARDS;
         t = strtok_r(NULL, ",", &sv))
        seeds[n++] = t;
    if (o->token_file && ss_token_read(o->token_file, &token, &token_len, err, sizeof err) < 0) {
        SS_LOG(SS_LOG_ERROR, "serve: %s", err);
        free(list);
        return NULL;
    }
    ss_cluster_options_init(&opt);
    opt.seeds = seeds;
    opt.n_seeds = n;
    opt.conn.timeout_ms = timeout_ms;
    opt.conn.connect_timeout_ms = timeout_ms;
    opt.conn.token = token;
    opt.conn.token_len = token_len;
    if (n == 0 || ss_cluster_open(&c, &opt, err, sizeof err) < 0) {
        if (o->cluster)
            SS_LOG(SS_LOG_WARN, "serve: cluster %s: %s", o->cluster, n ? err : "no address");
        c = NULL;
    }
    ss_token_free(token, token_len);
    free(list);
    return c;
}

/* Children for every shard of the topology not served yet; children of
 * shards that left it are stopped. */
static int sync_children(ss_cluster *c, child *kids, size_t *n_kids)
{
    for (size_t k = 0; k < *n_kids; k++) {
        bool in = false;
        for (size_t i = 0; i < ss_cluster_shards(c); i++)
            in = in || strcmp(kids[k].addr, ss_cluster_shard_address(c, i)) == 0;
        if (!in && !kids[k].removed) {
            kids[k].removed = true;
            if (kids[k].pid > 0)
                kill(kids[k].pid, SIGTERM);
            SS_LOG(SS_LOG_INFO, "serve: shard at %s left the topology; its worker stops",
                   kids[k].addr);
        }
    }
    for (size_t i = 0; i < ss_cluster_shards(c); i++) {
        const char *a = ss_cluster_shard_address(c, i);
        size_t k = 0;
        while (k < *n_kids && strcmp(kids[k].addr, a) != 0)
            k++;
        if (k < *n_kids) {
            kids[k].removed = false;
            continue;
        }
        if (*n_kids == SS_SERVE_CLUSTER_MAX_SHARDS)
            return SS_ERR_FULL;
        memset(&kids[k], 0, sizeof kids[k]);
        snprintf(kids[k].addr, sizeof kids[k].addr, "%s", a);
        (*n_kids)++;
    }
    return 0;
}

int ss_serve_cluster_main(const serve_opts *o, int argc, char **argv)
{
    if (o->no_cluster)
        return -1;
    ss_cluster *c = open_cluster(o, o->cluster ? (int)o->timeout_ms : SS_SERVE_CLUSTER_PROBE_MS);
    while (!c && o->cluster) {
        /* The cluster away at start is not an error for a worker. */
        sleep(1);
        c = open_cluster(o, (int)o->timeout_ms);
    }
    if (!c || (!o->cluster && ss_cluster_shards(c) < 2)) {
        ss_cluster_close(c);
        return -1; /* one server: the plain lease loop */
    }
    if (o->metrics_listen || o->stats_json) {
        fprintf(stderr, "serve: --metrics-listen and --stats-json are per process; with a "
                "cluster (one worker process per shard) they are not supported yet\n");
        ss_cluster_close(c);
        return SS_SERVE_EXIT_USAGE;
    }
    child *kids = calloc(SS_SERVE_CLUSTER_MAX_SHARDS, sizeof *kids);
    size_t n_kids = 0;
    int status = SS_SERVE_EXIT_OK;
    if (!kids) {
        ss_cluster_close(c);
        return SS_SERVE_EXIT_FAIL;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_cluster_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    SS_LOG(SS_LOG_INFO, "serve: cluster %s epoch %llu: leasing from %zu shards (a worker "
           "process per shard), saver %s", ss_cluster_name(c)[0] ? ss_cluster_name(c) : "-",
           (unsigned long long)ss_cluster_epoch(c), ss_cluster_shards(c), o->saver);
    sync_children(c, kids, &n_kids);
    int64_t next_refresh = now_ms() + SS_SERVE_CLUSTER_REFRESH_MS;
    for (;;) {
        bool live = false, pending = false;
        for (size_t k = 0; k < n_kids; k++) {
            child *ch = &kids[k];
            if (ch->pid > 0) {
                int ws = 0;
                pid_t r = waitpid(ch->pid, &ws, WNOHANG);
                if (r == ch->pid) {
                    ch->pid = 0;
                    if (WIFEXITED(ws) && WEXITSTATUS(ws) == SS_SERVE_EXIT_OK) {
                        ch->done = true;
                    } else if (WIFEXITED(ws) && !cluster_stop && !ch->removed) {
                        SS_LOG(SS_LOG_ERROR, "serve: the worker of shard %s exited with %d; "
                               "stopping", ch->addr, WEXITSTATUS(ws));
                        status = WEXITSTATUS(ws);
                        cluster_stop = 1;
                    } else if (!cluster_stop && !ch->removed) {
                        SS_LOG(SS_LOG_WARN, "serve: the worker of shard %s died (signal %d); "
                               "restarting it", ch->addr, WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
                        ch->start_at = now_ms() + SS_SERVE_CLUSTER_RESTART_MS;
                    }
                }
            }
            if (ch->pid == 0 && !ch->done && !ch->removed && !cluster_stop &&
                now_ms() >= ch->start_at) {
                ch->pid = spawn(argc, argv, ch->addr);
                if (ch->pid < 0) {
                    SS_LOG(SS_LOG_ERROR, "serve: fork for shard %s: %s", ch->addr,
                           strerror(errno));
                    ch->pid = 0;
                    ch->start_at = now_ms() + SS_SERVE_CLUSTER_RESTART_MS;
                }
            }
            live = live || ch->pid > 0;
            pending = pending || (ch->pid == 0 && !ch->done && !ch->removed);
        }
        if (cluster_stop) {
            for (size_t k = 0; k < n_kids; k++)
                if (kids[k].pid > 0)
                    kill(kids[k].pid, SIGTERM);
            for (size_t k = 0; k < n_kids; k++) {
                int ws = 0;
                if (kids[k].pid > 0 && waitpid(kids[k].pid, &ws, 0) == kids[k].pid &&
                    WIFEXITED(ws) && WEXITSTATUS(ws) != 0 && status == SS_SERVE_EXIT_OK)
                    status = WEXITSTATUS(ws);
            }
            break;
        }
        if (!live && !pending)
            break; /* every shard's worker finished (--max-batches) */
        if (now_ms() >= next_refresh) {
            if (ss_cluster_refresh(c) == 0)
                sync_children(c, kids, &n_kids);
            next_refresh = now_ms() + SS_SERVE_CLUSTER_REFRESH_MS;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = SS_SERVE_CLUSTER_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    SS_LOG(SS_LOG_INFO, "serve: cluster workers stopped (status %d)", status);
    free(kids);
    ss_cluster_close(c);
    return status;
}
