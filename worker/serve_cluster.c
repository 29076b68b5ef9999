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
 * belong to the parent: each child serves its metrics on an ephemeral
 * loopback port (reported through an inherited pipe, --metrics-port-fd)
 * and writes its own stats file; serve_cluster_obs.c merges them.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "serve.h"
#include "serve_cluster_obs.h"
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
#define SS_SERVE_CLUSTER_MAX_SHARDS SS_SERVE_COBS_SHARDS_MAX
/* Parent's poll period (ms). */
#define SS_SERVE_CLUSTER_POLL_MS 50

/* One shard's worker process. */
typedef struct child {
    char addr[SS_REDIRECT_ADDR_MAX + 1]; /* shard address */
    pid_t pid;         /* running process, 0 when none */
    bool done;         /* exited 0 (--max-batches): not restarted */
    bool removed;      /* shard left the topology: not restarted */
    int64_t start_at;  /* restart not before (ms, monotonic) */
    int port_fd;       /* read end of the pipe its metrics port comes on, -1 */
    char port_buf[16]; /* what came on it so far */
    size_t port_len;   /* bytes in port_buf */
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

/* Flags of ours a child does not get (each takes a value): the parent
 * owns the cluster view, the metrics endpoint and the stats file. */
static const char *const parent_flags[] = {"--cluster", "--server", "--metrics-listen",
                                           "--metrics-port-file", "--metrics-port-fd",
                                           "--stats-json"};

/* argv[i] is one of parent_flags: 1 as "--flag=value", 2 as "--flag value". */
static int parent_flag(const char *arg)
{
    for (size_t k = 0; k < sizeof parent_flags / sizeof parent_flags[0]; k++) {
        size_t n = strlen(parent_flags[k]);
        if (strncmp(arg, parent_flags[k], n) == 0 && (arg[n] == '=' || arg[n] == '\0'))
            return arg[n] == '=' ? 1 : 2;
    }
    return 0;
}

/* The child's argv: ours without the parent's flags, plus the shard, and
 * (strings in extra, NULL-terminated) its metrics and stats flags. */
static char **child_argv(int argc, char **argv, const char *addr, char *const *extra)
{
    char **a = calloc((size_t)argc + 12, sizeof *a);
    size_t n = 0;
    if (!a)
        return NULL;
    a[n++] = "statesaver-worker";
    a[n++] = "serve";
    for (int i = 1; i < argc; i++) {
        int k = parent_flag(argv[i]);
        if (k) {
            i += k - 1;
            continue;
        }
        a[n++] = argv[i];
    }
    a[n++] = "--server";
    a[n++] = (char *)(uintptr_t)addr;
    a[n++] = "--no-cluster";
    for (size_t k = 0; extra[k]; k++)
        a[n++] = extra[k];
    a[n] = NULL;
    return a;
}

/* Start the worker of kid slot k. With metrics, the child serves them on
 * an ephemeral loopback port and writes it to the pipe whose read end
 * becomes ch->port_fd; with --stats-json it writes its own stats file. */
static pid_t spawn(const serve_opts *o, int argc, char **argv, child *ch, size_t k)
{
    char fd_arg[16], stats[4096];
    char *extra[8] = {NULL};
    size_t ne = 0;
    int pfd[2] = {-1, -1};
    if (o->metrics_listen) {
        if (pipe2(pfd, O_CLOEXEC) < 0)
            return -1;
        snprintf(fd_arg, sizeof fd_arg, "%d", pfd[1]);
        extra[ne++] = "--metrics-listen";
        extra[ne++] = "127.0.0.1:0";
        extra[ne++] = "--metrics-port-fd";
        extra[ne++] = fd_arg;
    }
    if (o->stats_json && ss_serve_cobs_stats_path(stats, sizeof stats, o->stats_json, k) == 0) {
        extra[ne++] = "--stats-json";
        extra[ne++] = stats;
    }
    char **a = child_argv(argc, argv, ch->addr, extra);
    pid_t pid = a ? fork() : -1;
    if (pid == 0) {
        if (pfd[1] >= 0)
            fcntl(pfd[1], F_SETFD, 0); /* the one descriptor the child inherits */
        execv("/proc/self/exe", a);
        fprintf(stderr, "serve: exec for shard %s: %s\n", ch->addr, strerror(errno));
        _exit(SS_SERVE_EXIT_FAIL);
    }
    int saved = errno;
    free(a);
    if (pfd[1] >= 0)
        close(pfd[1]);
    if (pid < 0) {
        if (pfd[0] >= 0)
            close(pfd[0]);
        errno = saved;
        return -1;
    }
    if (pfd[0] >= 0)
        fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    ch->port_fd = pfd[0];
    ch->port_len = 0;
    return pid;
}

/* Read what a child wrote of its metrics port; at "PORT\n" (or EOF) the
 * pipe is closed and the port published. */
static void read_port(ss_serve_cobs *obs, child *ch, size_t k)
{
    if (ch->port_fd < 0)
        return;
    ssize_t r = read(ch->port_fd, ch->port_buf + ch->port_len,
                     sizeof ch->port_buf - 1 - ch->port_len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r > 0)
        ch->port_len += (size_t)r;
    ch->port_buf[ch->port_len] = '\0';
    char *nl = strchr(ch->port_buf, '\n');
    if (!nl && r > 0 && ch->port_len < sizeof ch->port_buf - 1)
        return;
    int port = nl ? atoi(ch->port_buf) : 0;
    close(ch->port_fd);
    ch->port_fd = -1;
    if (port > 0 && port < 65536)
        ss_serve_cobs_set(obs, k, ch->addr, port, true);
}

/* Close a dead or stopped child's pipe; its metrics are gone with it. */
static void forget_port(ss_serve_cobs *obs, child *ch, size_t k)
{
    if (ch->port_fd >= 0)
        close(ch->port_fd);
    ch->port_fd = -1;
    ss_serve_cobs_set(obs, k, ch->addr, 0, !ch->removed);
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
        kids[k].port_fd = -1;
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
    if (o->metrics_port_fd >= 0) {
        fprintf(stderr, "serve: --metrics-port-fd is for the per-shard processes; with a "
                "cluster use --metrics-listen (and --metrics-port-file)\n");
        ss_cluster_close(c);
        return SS_SERVE_EXIT_USAGE;
    }
    if (o->metrics_port_file && !o->metrics_listen) {
        fprintf(stderr, "serve: --metrics-port-file/--metrics-port-fd need --metrics-listen\n");
        ss_cluster_close(c);
        return SS_SERVE_EXIT_USAGE;
    }
    child *kids = calloc(SS_SERVE_CLUSTER_MAX_SHARDS, sizeof *kids);
    size_t n_kids = 0;
    int status = SS_SERVE_EXIT_OK;
    ss_serve_cobs *obs = NULL;
    int64_t t_start = now_ms();
    if (!kids) {
        ss_cluster_close(c);
        return SS_SERVE_EXIT_FAIL;
    }
    if (o->metrics_listen) {
        int rc = ss_serve_cobs_start(&obs, o->metrics_listen, o->metrics_port_file);
        if (rc < 0) {
            free(kids);
            ss_cluster_close(c);
            return rc == SS_ERR_INVALID ? SS_SERVE_EXIT_USAGE : SS_SERVE_EXIT_FAIL;
        }
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
        ss_serve_cobs_beat(obs);
        for (size_t k = 0; k < n_kids; k++) {
            child *ch = &kids[k];
            read_port(obs, ch, k);
            if (ch->pid > 0) {
                int ws = 0;
                pid_t r = waitpid(ch->pid, &ws, WNOHANG);
                if (r == ch->pid) {
                    ch->pid = 0;
                    forget_port(obs, ch, k);
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
                ch->pid = spawn(o, argc, argv, ch, k);
                if (ch->pid > 0)
                    ss_serve_cobs_set(obs, k, ch->addr, 0, true);
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
                kids[k].pid = 0;
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
    if (o->stats_json) {
        const char **addrs = calloc(n_kids + 1, sizeof *addrs);
        for (size_t k = 0; addrs && k < n_kids; k++)
            addrs[k] = kids[k].addr;
        if (!addrs || ss_serve_cobs_write_stats(o->stats_json, addrs, n_kids,
                                                (double)(now_ms() - t_start) / 1e3) < 0) {
            if (status == SS_SERVE_EXIT_OK)
                status = SS_SERVE_EXIT_FAIL;
        }
        free(addrs);
    }
    for (size_t k = 0; k < n_kids; k++)
        if (kids[k].port_fd >= 0)
            close(kids[k].port_fd);
    ss_serve_cobs_stop(obs);
    free(kids);
    ss_cluster_close(c);
    return status;
}
