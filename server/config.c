/* config -- command-line flags and limits of statesaver-server. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "jobs.h"
#include "ss_error.h"
#include "ss_frame.h"
#include "ss_http.h"
#include "ss_log.h"
#include "ss_parse.h"
#include "ss_token.h"
#include "store.h"
#include "wal.h"
#include "writer.h"

/* Room for one message of the token reader. */
#define SS_CONFIG_MSG_MAX 512

void ss_config_init(ss_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
    cfg->port = SS_DEFAULT_PORT;
    cfg->sync = true;
    cfg->max_frame_bytes = SS_FRAME_MAX_DEFAULT;
    cfg->max_keys = SS_KEYS_PER_REQUEST_DEFAULT;
    cfg->max_key_bytes = SS_KEY_MAX_DEFAULT;
    cfg->max_connections = SS_MAX_CONNECTIONS_DEFAULT;
    cfg->max_output_bytes = SS_OUTBUF_MAX_DEFAULT;
    cfg->idle_timeout_ms = SS_IDLE_CONN_MS_DEFAULT;
    cfg->map_size = SS_MAP_SIZE_DEFAULT;
    cfg->ttl_interval_ms = SS_TTL_INTERVAL_MS_DEFAULT;
    cfg->log_level = SS_LOG_INFO;
    cfg->queue_capacity = SS_JOBS_QUEUE_CAPACITY_DEFAULT;
    cfg->max_attempts = SS_JOBS_MAX_ATTEMPTS_DEFAULT;
    cfg->lease_ms = SS_JOBS_LEASE_MS_DEFAULT;
    cfg->finished_retention_ms = SS_STORE_FINISHED_RETENTION_MS_DEFAULT;
    cfg->max_output_total = SS_OUTBUF_TOTAL_MAX_DEFAULT;
    cfg->max_unauth_frame_bytes = SS_UNAUTH_FRAME_MAX_DEFAULT;
    cfg->unpack_budget_min = SS_UNPACK_BUDGET_MIN_DEFAULT;
    cfg->wal = true;
    cfg->wal_segment_bytes = SS_WAL_SEGMENT_BYTES_DEFAULT;
    cfg->wal_sync_method = SS_WAL_SYNC_FDATASYNC;
    cfg->checkpoint_bytes = SS_CHECKPOINT_BYTES_DEFAULT;
    cfg->checkpoint_interval_ms = SS_CHECKPOINT_INTERVAL_MS_DEFAULT;
    cfg->sync_interval_ms = SS_SYNC_INTERVAL_MS_DEFAULT;
    cfg->unpack_budget_factor = SS_UNPACK_BUDGET_FACTOR_DEFAULT;
    cfg->frame_timeout_ms = SS_FRAME_TIMEOUT_MS_DEFAULT;
    cfg->max_unauth_conns = SS_MAX_UNAUTH_CONN_DEFAULT;
    cfg->max_parked_per_conn = SS_MAX_PARKED_PER_CONN_DEFAULT;
    cfg->max_pending_writes_per_conn = SS_MAX_PENDING_WRITES_PER_CONN_DEFAULT;
    cfg->max_parked_total = SS_MAX_PARKED_TOTAL_DEFAULT;
    cfg->topology_wait_ms = SS_TOPOLOGY_WAIT_MS_DEFAULT;
    cfg->slot_export_bytes = SS_SLOT_EXPORT_BYTES_DEFAULT;
}

/* The owned cluster flag strings of cfg, for clear and copy. */
#define CLUSTER_STRINGS(cfg) \
    { &(cfg)->etcd, &(cfg)->cluster, &(cfg)->shard, &(cfg)->advertise, \
      &(cfg)->cluster_config, &(cfg)->topology_init }
#define N_CLUSTER_STRINGS 6

void ss_config_clear(ss_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->data_dir);
    if (cfg->token)
        memset(cfg->token, 0, cfg->token_len);
    free(cfg->token);
    free(cfg->port_file);
    free(cfg->metrics_listen);
    free(cfg->metrics_port_file);
    cfg->metrics_listen = NULL;
    cfg->metrics_port_file = NULL;
    cfg->data_dir = NULL;
    char **cs[N_CLUSTER_STRINGS] = CLUSTER_STRINGS(cfg);
    for (size_t i = 0; i < N_CLUSTER_STRINGS; i++) {
        free(*cs[i]);
        *cs[i] = NULL;
    }
    cfg->token = NULL;
    cfg->token_len = 0;
    cfg->port_file = NULL;
}

int ss_config_copy(ss_config *dst, const ss_config *src)
{
    *dst = *src;
    dst->data_dir = NULL;
    dst->token = NULL;
    dst->port_file = NULL;
    dst->metrics_listen = NULL;
    dst->metrics_port_file = NULL;
    char **dcs[N_CLUSTER_STRINGS] = CLUSTER_STRINGS(dst);
    char **scs[N_CLUSTER_STRINGS] = CLUSTER_STRINGS((ss_config *)src);
    for (size_t i = 0; i < N_CLUSTER_STRINGS; i++)
        *dcs[i] = NULL;
    for (size_t i = 0; i < N_CLUSTER_STRINGS; i++)
        if (*scs[i] && !(*dcs[i] = strdup(*scs[i])))
            goto fail;
    if (src->data_dir && !(dst->data_dir = strdup(src->data_dir)))
        goto fail;
    if (src->port_file && !(dst->port_file = strdup(src->port_file)))
        goto fail;
    if (src->metrics_listen &&
        !(dst->metrics_listen = strdup(src->metrics_listen)))
        goto fail;
    if (src->metrics_port_file &&
        !(dst->metrics_port_file = strdup(src->metrics_port_file)))
        goto fail;
    if (src->token) {
        dst->token = malloc(src->token_len);
        if (!dst->token)
            goto fail;
        memcpy(dst->token, src->token, src->token_len);
    }
    return 0;
fail:
    ss_config_clear(dst);
    return SS_ERR_NOMEM;
}

int ss_config_parse_listen(const char *arg, char host[SS_HOST_MAX], int *port)
{
    const char *colon;
    const char *h = arg;
    size_t hlen;
    if (arg[0] == '[') {
        const char *end = strchr(arg, ']');
        if (!end || end[1] != ':')
            return SS_ERR_INVALID;
        h = arg + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(arg, ':');
        if (!colon)
            return SS_ERR_INVALID;
        hlen = (size_t)(colon - arg);
        /* A bare IPv6 literal has more colons; require brackets then. */
        if (memchr(arg, ':', hlen))
            return SS_ERR_INVALID;
    }
    if (hlen == 0 || hlen >= SS_HOST_MAX)
        return SS_ERR_INVALID;
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || !end || *end || end == colon + 1 || p < 0 || p > 65535)
        return SS_ERR_INVALID;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

int ss_config_read_token(const char *path, uint8_t **token, size_t *len,
                         FILE *err)
{
    /* The one token-file rule of every program (common/ss_token.h). */
    char msg[SS_CONFIG_MSG_MAX];
    char *t = NULL;
    size_t n = 0;
    int rc = ss_token_read(path, &t, &n, msg, sizeof msg);
    if (rc < 0) {
        fprintf(err, "statesaver-server: auth token: %s\n", msg);
        return rc;
    }
    if (n > SS_TOKEN_MAX) {
        fprintf(err, "statesaver-server: auth token file %s exceeds %u bytes\n",
                path, SS_TOKEN_MAX);
        ss_token_free(t, n);
        return SS_ERR_TOO_BIG;
    }
    *token = (uint8_t *)t;
    *len = n;
    return 0;
}

/* A numeric flag: ss_parse_u64's strict decimal, optionally followed by
 * one size suffix k, M or G (powers of 1024), within [min, max]. */
static int parse_flag_u64(const char *arg, uint64_t min, uint64_t max,
                          uint64_t *out)
{
    char digits[32];
    uint64_t mul = 1;
    size_t len = arg ? strlen(arg) : 0;
    if (len == 0 || len >= sizeof digits)
        return SS_ERR_INVALID;
    switch (arg[len - 1]) {
    case 'k': case 'K': mul = 1ull << 10; break;
    case 'm': case 'M': mul = 1ull << 20; break;
    case 'g': case 'G': mul = 1ull << 30; break;
    default: break;
    }
    if (mul > 1)
        len--;
    memcpy(digits, arg, len);
    digits[len] = '\0';
    uint64_t v = 0;
    int rc = ss_parse_u64(digits, 0, UINT64_MAX / mul, &v);
    if (rc < 0)
        return rc;
    v *= mul;
    if (v < min || v > max)
        return SS_ERR_TOO_BIG;
    *out = v;
    return 0;
}

/* The cluster flags go together: --etcd with --cluster and --shard, or
 * --cluster-config with --shard, or none of them. */
static int cluster_flags_check(const ss_config *cfg, FILE *err)
{
    if (cfg->etcd && cfg->cluster_config) {
        fprintf(err, "statesaver-server: --etcd and --cluster-config exclude "
                "each other\n");
        return SS_ERR_INVALID;
    }
    if (cfg->etcd && (!cfg->cluster || !cfg->shard)) {
        fprintf(err, "statesaver-server: --etcd needs --cluster NAME and "
                "--shard ID\n");
        return SS_ERR_INVALID;
    }
    if (cfg->topology_init && !cfg->etcd) {
        fprintf(err, "statesaver-server: --topology-init needs --etcd\n");
        return SS_ERR_INVALID;
    }
    if (cfg->cluster_config && !cfg->shard) {
        fprintf(err, "statesaver-server: --cluster-config needs --shard ID\n");
        return SS_ERR_INVALID;
    }
    if (!cfg->etcd && !cfg->cluster_config &&
        (cfg->cluster || cfg->shard || cfg->advertise)) {
        fprintf(err, "statesaver-server: --cluster, --shard and --advertise "
                "need --etcd URL or --cluster-config FILE\n");
        return SS_ERR_INVALID;
    }
    if (cfg->cluster && cfg->etcd &&
        (strlen(cfg->cluster) == 0 || strlen(cfg->cluster) > 64 ||
         strchr(cfg->cluster, '/'))) {
        fprintf(err, "statesaver-server: bad --cluster '%s' (1..64 bytes, no "
                "'/')\n", cfg->cluster);
        return SS_ERR_INVALID;
    }
    if (cfg->advertise) {
        char host[SS_HOST_MAX];
        int port = 0;
        if (ss_config_parse_listen(cfg->advertise, host, &port) < 0 || port == 0) {
            fprintf(err, "statesaver-server: bad --advertise '%s' (want "
                    "HOST:PORT)\n", cfg->advertise);
            return SS_ERR_INVALID;
        }
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: statesaver-server --data DIR [options]\n"
        "\n"
        "Networked state saver for segment-wise RNN unrolls (protocol v%u).\n"
        "\n"
        "  --listen HOST:PORT       address to listen on (default %s;\n"
        "                           IPv6 as [::1]:7450; a host name is\n"
        "                           resolved once; port 0 = ephemeral)\n"
        "  --data DIR               LMDB directory (required; created if missing)\n"
        "  --sync on|off            a write is answered once durable (default\n"
        "                           on); off: once written, synced every\n"
        "                           --sync-interval-ms and at shutdown\n"
        "  --wal on|off             write-ahead log in DATA/wal (default on;\n"
        "                           off: every LMDB commit is synced)\n"
        "  --wal-segment-bytes N    log segment file size (default %llu)\n"
        "  --wal-sync-method M      fdatasync or odsync (default fdatasync)\n"
        "  --checkpoint-bytes N     checkpoint after N bytes of log (default %llu)\n"
        "  --checkpoint-interval-ms N\n"
        "                           ... or N ms after the last one (default %u)\n"
        "  --sync-interval-ms N     log sync period with --sync off (default %u)\n"
        "  --wal-truncate-corrupt   start even if the log is corrupt in the\n"
        "                           middle, dropping everything after the damage\n"
        "                           (operator decision; logged loudly)\n"
        "  --max-frame-bytes N      largest frame payload (default %u)\n"
        "  --max-keys N             keys per request (default %u)\n"
        "  --max-key-bytes N        bytes in a sequence key (default %u)\n"
        "  --max-connections N      open connections (default %u)\n"
        "  --max-output-bytes N     buffered replies per connection before the\n"
        "                           server stops reading from it (default %u)\n"
        "  --max-output-bytes-total N\n"
        "                           buffered replies over all connections; past\n"
        "                           it the connection holding the most is closed\n"
        "                           (default %llu)\n"
        "  --idle-timeout-ms N      close connections with no whole request for\n"
        "                           this long; 0 = never (default %u)\n"
        "  --frame-timeout-ms N     a started frame must be complete within this,\n"
        "                           or the connection is closed; 0 = never\n"
        "                           (default %u)\n"
        "  --max-unauth-connections N\n"
        "                           connections without a first complete request\n"
        "                           (and Hello, with a token); past it, or at\n"
        "                           --max-connections, the oldest such one is\n"
        "                           closed for a newcomer (default %u)\n"
        "  --max-unauth-frame-bytes N\n"
        "                           largest frame before Hello succeeded, with\n"
        "                           --auth-token-file (default %u)\n"
        "  --unpack-budget-min N    --unpack-budget-factor N\n"
        "                           memory one request may take to decode: MIN\n"
        "                           plus FACTOR x its frame bytes (defaults %u, %u)\n"
        "  --max-parked-per-conn N  unanswered Fetch waits, Leases and Awaits of\n"
        "                           one connection before it is not read until\n"
        "                           one is answered (default %u)\n"
        "  --max-pending-writes-per-conn N\n"
        "                           the same for Declare, Save, Drop, Submit and\n"
        "                           Complete waiting for the writer (default %u)\n"
        "  --max-parked-total N     Fetch waits, Leases and Awaits unanswered over\n"
        "                           all connections; past it RESOURCE_EXHAUSTED\n"
        "                           (default %u)\n"
        "  --map-size N             LMDB map size in bytes at start (default %llu)\n"
        "  --max-map-size N         the map grows at run time up to this; writes\n"
        "                           past it get RESOURCE_EXHAUSTED (default\n"
        "                           " SS_STORE_MAP_GROWTH_STR " x --map-size)\n"
        "  --auth-token-file FILE   require Hello with this shared secret\n"
        "  --ttl-interval-ms N      how often idle sequences are evicted;\n"
        "                           0 = never (default %u)\n"
        "  --log-level LEVEL        error|warn|info|debug (default info)\n"
        "  --port-file FILE         write the bound port here after listening\n"
        "  --queue-capacity N       job queue: queued + leased segments before\n"
        "                           Submit gets RESOURCE_EXHAUSTED (default %u)\n"
        "  --max-attempts N         job queue: failed or expired attempts before\n"
        "                           a segment is marked failed (default %u)\n"
        "  --lease-ms N             job queue: lease duration when a Lease asks\n"
        "                           for 0 (default %u, at most %u)\n"
        "  --finished-retention-ms N\n"
        "                           how long a final save that ended a sequence\n"
        "                           stays retryable as already_applied\n"
        "                           (default %u)\n"
        "  --metrics-listen HOST:PORT\n"
        "                           serve Prometheus /metrics, /healthz and\n"
        "                           /readyz over HTTP here (off by default;\n"
        "                           :PORT = all interfaces, port 0 = ephemeral)\n"
        "  --metrics-port-file FILE write the bound metrics port here\n"
        "\n"
        "Cluster (docs/cluster.md; without these: one shard owning every slot):\n"
        "  --etcd URL               topology from etcd (http://127.0.0.1:2379),\n"
        "                           key /statesaver/NAME/topology, watched\n"
        "  --cluster NAME           cluster name (with --etcd)\n"
        "  --shard ID               this server's shard id in the topology\n"
        "  --advertise HOST:PORT    address clients reach this shard at\n"
        "                           (checked against the topology's primary)\n"
        "  --cluster-config FILE    static topology file instead of etcd\n"
        "  --topology-init FILE     with --etcd: if the topology key is missing,\n"
        "                           create it from FILE (compare-and-swap: never\n"
        "                           overwrites; every shard may pass the same file)\n"
        "  --topology-wait-ms N     wait this long for a missing topology key\n"
        "                           in etcd before giving up (default %u)\n"
        "  --slot-export-max-bytes N\n"
        "                           largest SlotExport reply (default %u)\n"
        "  --help, --version\n"
        "\n"
        "Sizes accept k, M, G suffixes (powers of 1024).\n",
        SS_PROTOCOL_VERSION, SS_LISTEN_DEFAULT,
        (unsigned long long)SS_WAL_SEGMENT_BYTES_DEFAULT,
        (unsigned long long)SS_CHECKPOINT_BYTES_DEFAULT,
        SS_CHECKPOINT_INTERVAL_MS_DEFAULT, SS_SYNC_INTERVAL_MS_DEFAULT,
        SS_FRAME_MAX_DEFAULT,
        SS_KEYS_PER_REQUEST_DEFAULT, SS_KEY_MAX_DEFAULT,
        SS_MAX_CONNECTIONS_DEFAULT, SS_OUTBUF_MAX_DEFAULT,
        (unsigned long long)SS_OUTBUF_TOTAL_MAX_DEFAULT,
        SS_IDLE_CONN_MS_DEFAULT, SS_FRAME_TIMEOUT_MS_DEFAULT,
        SS_MAX_UNAUTH_CONN_DEFAULT, SS_UNAUTH_FRAME_MAX_DEFAULT,
        SS_UNPACK_BUDGET_MIN_DEFAULT, SS_UNPACK_BUDGET_FACTOR_DEFAULT,
        SS_MAX_PARKED_PER_CONN_DEFAULT, SS_MAX_PENDING_WRITES_PER_CONN_DEFAULT,
        SS_MAX_PARKED_TOTAL_DEFAULT, (unsigned long long)SS_MAP_SIZE_DEFAULT,
        SS_TTL_INTERVAL_MS_DEFAULT, SS_JOBS_QUEUE_CAPACITY_DEFAULT,
        SS_JOBS_MAX_ATTEMPTS_DEFAULT, SS_JOBS_LEASE_MS_DEFAULT, SS_JOBS_LEASE_MS_MAX,
        SS_STORE_FINISHED_RETENTION_MS_DEFAULT, SS_TOPOLOGY_WAIT_MS_DEFAULT,
        SS_SLOT_EXPORT_BYTES_DEFAULT);
}

enum {
    OPT_LISTEN = 256,
    OPT_DATA,
    OPT_SYNC,
    OPT_MAX_FRAME,
    OPT_MAX_KEYS,
    OPT_MAX_KEY_BYTES,
    OPT_MAX_CONN,
    OPT_MAX_OUTPUT,
    OPT_IDLE,
    OPT_MAP_SIZE,
    OPT_MAX_MAP_SIZE,
    OPT_TOKEN,
    OPT_TTL,
    OPT_LOG,
    OPT_PORT_FILE,
    OPT_QUEUE_CAPACITY,
    OPT_MAX_ATTEMPTS,
    OPT_LEASE_MS,
    OPT_FIN_RETENTION,
    OPT_METRICS_LISTEN,
    OPT_METRICS_PORT_FILE,
    OPT_MAX_OUTPUT_TOTAL,
    OPT_MAX_UNAUTH_FRAME,
    OPT_UNPACK_MIN,
    OPT_UNPACK_FACTOR,
    OPT_FRAME_TIMEOUT,
    OPT_MAX_UNAUTH_CONN,
    OPT_MAX_PARKED_CONN,
    OPT_MAX_PENDING_WRITES,
    OPT_MAX_PARKED_TOTAL,
    OPT_WAL,
    OPT_WAL_SEGMENT,
    OPT_WAL_SYNC_METHOD,
    OPT_CHECKPOINT_BYTES,
    OPT_CHECKPOINT_INTERVAL,
    OPT_SYNC_INTERVAL,
    OPT_WAL_TRUNCATE,
    OPT_ETCD,
    OPT_CLUSTER,
    OPT_SHARD,
    OPT_ADVERTISE,
    OPT_CLUSTER_CONFIG,
    OPT_TOPOLOGY_WAIT,
    OPT_TOPOLOGY_INIT,
    OPT_SLOT_EXPORT_BYTES,
    OPT_HELP,
    OPT_VERSION,
};

int ss_config_parse(ss_config *cfg, int argc, char **argv, FILE *out,
                    FILE *err)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"data", required_argument, NULL, OPT_DATA},
        {"sync", required_argument, NULL, OPT_SYNC},
        {"max-frame-bytes", required_argument, NULL, OPT_MAX_FRAME},
        {"max-keys", required_argument, NULL, OPT_MAX_KEYS},
        {"max-key-bytes", required_argument, NULL, OPT_MAX_KEY_BYTES},
        {"max-connections", required_argument, NULL, OPT_MAX_CONN},
        {"max-output-bytes", required_argument, NULL, OPT_MAX_OUTPUT},
        {"idle-timeout-ms", required_argument, NULL, OPT_IDLE},
        {"map-size", required_argument, NULL, OPT_MAP_SIZE},
        {"max-map-size", required_argument, NULL, OPT_MAX_MAP_SIZE},
        {"auth-token-file", required_argument, NULL, OPT_TOKEN},
        {"ttl-interval-ms", required_argument, NULL, OPT_TTL},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"port-file", required_argument, NULL, OPT_PORT_FILE},
        {"queue-capacity", required_argument, NULL, OPT_QUEUE_CAPACITY},
        {"max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS},
        {"lease-ms", required_argument, NULL, OPT_LEASE_MS},
        {"finished-retention-ms", required_argument, NULL, OPT_FIN_RETENTION},
        {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
        {"metrics-port-file", required_argument, NULL, OPT_METRICS_PORT_FILE},
        {"max-output-bytes-total", required_argument, NULL, OPT_MAX_OUTPUT_TOTAL},
        {"max-unauth-frame-bytes", required_argument, NULL, OPT_MAX_UNAUTH_FRAME},
        {"unpack-budget-min", required_argument, NULL, OPT_UNPACK_MIN},
        {"unpack-budget-factor", required_argument, NULL, OPT_UNPACK_FACTOR},
        {"frame-timeout-ms", required_argument, NULL, OPT_FRAME_TIMEOUT},
        {"max-unauth-connections", required_argument, NULL, OPT_MAX_UNAUTH_CONN},
        {"max-parked-per-conn", required_argument, NULL, OPT_MAX_PARKED_CONN},
        {"max-pending-writes-per-conn", required_argument, NULL, OPT_MAX_PENDING_WRITES},
        {"max-parked-total", required_argument, NULL, OPT_MAX_PARKED_TOTAL},
        {"wal", required_argument, NULL, OPT_WAL},
        {"wal-segment-bytes", required_argument, NULL, OPT_WAL_SEGMENT},
        {"wal-sync-method", required_argument, NULL, OPT_WAL_SYNC_METHOD},
        {"checkpoint-bytes", required_argument, NULL, OPT_CHECKPOINT_BYTES},
        {"checkpoint-interval-ms", required_argument, NULL, OPT_CHECKPOINT_INTERVAL},
        {"sync-interval-ms", required_argument, NULL, OPT_SYNC_INTERVAL},
        {"wal-truncate-corrupt", no_argument, NULL, OPT_WAL_TRUNCATE},
        {"etcd", required_argument, NULL, OPT_ETCD},
        {"cluster", required_argument, NULL, OPT_CLUSTER},
        {"shard", required_argument, NULL, OPT_SHARD},
        {"advertise", required_argument, NULL, OPT_ADVERTISE},
        {"cluster-config", required_argument, NULL, OPT_CLUSTER_CONFIG},
        {"topology-wait-ms", required_argument, NULL, OPT_TOPOLOGY_WAIT},
        {"topology-init", required_argument, NULL, OPT_TOPOLOGY_INIT},
        {"slot-export-max-bytes", required_argument, NULL, OPT_SLOT_EXPORT_BYTES},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    const char *token_file = NULL;
    uint64_t v = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (c) {
        case OPT_LISTEN:
            if (ss_config_parse_listen(optarg, cfg->host, &cfg->port) < 0) {
                fprintf(err, "statesaver-server: bad --listen '%s' (want "
                        "HOST:PORT or [V6]:PORT)\n", optarg);
                return SS_ERR_INVALID;
            }
            break;
        case OPT_DATA:
            free(cfg->data_dir);
            if (!(cfg->data_dir = strdup(optarg)))
                return SS_ERR_NOMEM;
            break;
        case OPT_SYNC:
            if (strcmp(optarg, "on") == 0)
                cfg->sync = true;
            else if (strcmp(optarg, "off") == 0)
                cfg->sync = false;
            else {
                fprintf(err, "statesaver-server: --sync takes on or off, not "
                        "'%s'\n", optarg);
                return SS_ERR_INVALID;
            }
            break;
#define NUM_FLAG(OPT, FLAG, MIN, MAX, FIELD, TYPE)                             \
        case OPT:                                                              \
            if (parse_flag_u64(optarg, (MIN), (MAX), &v) < 0) {                     \
                fprintf(err, "statesaver-server: bad " FLAG " '%s' (want an "  \
                        "integer in %llu..%llu)\n", optarg,                    \
                        (unsigned long long)(MIN), (unsigned long long)(MAX)); \
                return SS_ERR_INVALID;                                         \
            }                                                                  \
            cfg->FIELD = (TYPE)v;                                              \
            break;
        NUM_FLAG(OPT_MAX_FRAME, "--max-frame-bytes", 64u, UINT32_MAX - SS_FRAME_HEADER,
                 max_frame_bytes, uint32_t)
        NUM_FLAG(OPT_MAX_KEYS, "--max-keys", 1u, 1u << 24, max_keys, uint32_t)
        NUM_FLAG(OPT_MAX_KEY_BYTES, "--max-key-bytes", 1u, SS_STORE_KEY_MAX,
                 max_key_bytes, uint32_t)
        NUM_FLAG(OPT_MAX_CONN, "--max-connections", 1u, 1u << 20,
                 max_connections, uint32_t)
        NUM_FLAG(OPT_MAX_OUTPUT, "--max-output-bytes", 1u, UINT64_MAX,
                 max_output_bytes, uint64_t)
        NUM_FLAG(OPT_IDLE, "--idle-timeout-ms", 0u, UINT32_MAX,
                 idle_timeout_ms, uint64_t)
        NUM_FLAG(OPT_MAP_SIZE, "--map-size", 1u << 20, UINT64_MAX / 2,
                 map_size, uint64_t)
        NUM_FLAG(OPT_MAX_MAP_SIZE, "--max-map-size", 1u << 20, UINT64_MAX / 2,
                 max_map_size, uint64_t)
        NUM_FLAG(OPT_TTL, "--ttl-interval-ms", 0u, UINT32_MAX,
                 ttl_interval_ms, uint64_t)
        NUM_FLAG(OPT_QUEUE_CAPACITY, "--queue-capacity", 1u, UINT64_MAX / 2,
                 queue_capacity, uint64_t)
        NUM_FLAG(OPT_MAX_ATTEMPTS, "--max-attempts", 1u, 1000000u,
                 max_attempts, uint32_t)
        NUM_FLAG(OPT_LEASE_MS, "--lease-ms", 1u, SS_JOBS_LEASE_MS_MAX,
                 lease_ms, uint32_t)
        NUM_FLAG(OPT_FIN_RETENTION, "--finished-retention-ms", 1u,
                 UINT64_MAX / 2, finished_retention_ms, uint64_t)
        NUM_FLAG(OPT_MAX_OUTPUT_TOTAL, "--max-output-bytes-total", 1u,
                 UINT64_MAX, max_output_total, uint64_t)
        NUM_FLAG(OPT_MAX_UNAUTH_FRAME, "--max-unauth-frame-bytes",
                 SS_UNAUTH_FRAME_MIN, UINT32_MAX - SS_FRAME_HEADER,
                 max_unauth_frame_bytes, uint32_t)
        NUM_FLAG(OPT_UNPACK_MIN, "--unpack-budget-min", 64u * 1024u,
                 UINT64_MAX / 2, unpack_budget_min, uint64_t)
        NUM_FLAG(OPT_UNPACK_FACTOR, "--unpack-budget-factor", 1u, 1000u,
                 unpack_budget_factor, uint32_t)
        NUM_FLAG(OPT_FRAME_TIMEOUT, "--frame-timeout-ms", 0u, UINT32_MAX,
                 frame_timeout_ms, uint64_t)
        NUM_FLAG(OPT_MAX_UNAUTH_CONN, "--max-unauth-connections", 1u, 1u << 20,
                 max_unauth_conns, uint32_t)
        NUM_FLAG(OPT_MAX_PARKED_CONN, "--max-parked-per-conn", 1u, UINT32_MAX,
                 max_parked_per_conn, uint32_t)
        NUM_FLAG(OPT_MAX_PENDING_WRITES, "--max-pending-writes-per-conn", 1u,
                 UINT32_MAX, max_pending_writes_per_conn, uint32_t)
        NUM_FLAG(OPT_MAX_PARKED_TOTAL, "--max-parked-total", 1u,
                 UINT64_MAX / 2, max_parked_total, uint64_t)
        NUM_FLAG(OPT_WAL_SEGMENT, "--wal-segment-bytes", SS_WAL_SEGMENT_BYTES_MIN,
                 SS_WAL_SEGMENT_BYTES_MAX, wal_segment_bytes, uint64_t)
        NUM_FLAG(OPT_CHECKPOINT_BYTES, "--checkpoint-bytes", 1u, UINT64_MAX / 2,
                 checkpoint_bytes, uint64_t)
        NUM_FLAG(OPT_CHECKPOINT_INTERVAL, "--checkpoint-interval-ms", 1u,
                 UINT32_MAX, checkpoint_interval_ms, uint64_t)
        NUM_FLAG(OPT_SYNC_INTERVAL, "--sync-interval-ms", 1u, UINT32_MAX,
                 sync_interval_ms, uint64_t)
        NUM_FLAG(OPT_TOPOLOGY_WAIT, "--topology-wait-ms", 0u, UINT32_MAX,
                 topology_wait_ms, uint64_t)
        NUM_FLAG(OPT_SLOT_EXPORT_BYTES, "--slot-export-max-bytes",
                 SS_SLOT_EXPORT_BYTES_MIN, 1u << 30, slot_export_bytes, uint64_t)
#undef NUM_FLAG
        case OPT_WAL:
            if (strcmp(optarg, "on") == 0)
                cfg->wal = true;
            else if (strcmp(optarg, "off") == 0)
                cfg->wal = false;
            else {
                fprintf(err, "statesaver-server: --wal takes on or off, not "
                        "'%s'\n", optarg);
                return SS_ERR_INVALID;
            }
            break;
        case OPT_WAL_SYNC_METHOD:
            if (strcmp(optarg, "fdatasync") == 0)
                cfg->wal_sync_method = SS_WAL_SYNC_FDATASYNC;
            else if (strcmp(optarg, "odsync") == 0)
                cfg->wal_sync_method = SS_WAL_SYNC_ODSYNC;
            else {
                fprintf(err, "statesaver-server: --wal-sync-method takes "
                        "fdatasync or odsync, not '%s'\n", optarg);
                return SS_ERR_INVALID;
            }
            break;
        case OPT_WAL_TRUNCATE:
            cfg->wal_truncate_corrupt = true;
            break;
#define STR_FLAG(OPT, FIELD)                                                   \
        case OPT:                                                              \
            free(cfg->FIELD);                                                  \
            if (!(cfg->FIELD = strdup(optarg)))                                \
                return SS_ERR_NOMEM;                                           \
            break;
        STR_FLAG(OPT_ETCD, etcd)
        STR_FLAG(OPT_CLUSTER, cluster)
        STR_FLAG(OPT_SHARD, shard)
        STR_FLAG(OPT_ADVERTISE, advertise)
        STR_FLAG(OPT_CLUSTER_CONFIG, cluster_config)
        STR_FLAG(OPT_TOPOLOGY_INIT, topology_init)
#undef STR_FLAG
        case OPT_TOKEN:
            token_file = optarg;
            break;
        case OPT_LOG: {
            int lvl = ss_log_parse_level(optarg);
            if (lvl < 0) {
                fprintf(err, "statesaver-server: bad --log-level '%s' (want "
                        "error, warn, info or debug)\n", optarg);
                return SS_ERR_INVALID;
            }
            cfg->log_level = lvl;
            break;
        }
        case OPT_PORT_FILE:
            free(cfg->port_file);
            if (!(cfg->port_file = strdup(optarg)))
                return SS_ERR_NOMEM;
            break;
        case OPT_METRICS_LISTEN: {
            struct sockaddr_storage sa;
            unsigned salen = 0;
            char why[256];
            if (ss_http_parse_listen(optarg, &sa, &salen, why, sizeof why) < 0) {
                fprintf(err, "statesaver-server: --metrics-listen: %s\n", why);
                return SS_ERR_INVALID;
            }
            free(cfg->metrics_listen);
            if (!(cfg->metrics_listen = strdup(optarg)))
                return SS_ERR_NOMEM;
            break;
        }
        case OPT_METRICS_PORT_FILE:
            free(cfg->metrics_port_file);
            if (!(cfg->metrics_port_file = strdup(optarg)))
                return SS_ERR_NOMEM;
            break;
        case OPT_HELP:
            usage(out);
            return 1;
        case OPT_VERSION:
            fprintf(out, "statesaver-server %s (protocol %u)\n", SS_VERSION,
                    SS_PROTOCOL_VERSION);
            return 1;
        case ':':
            fprintf(err, "statesaver-server: %s needs a value\n", name);
            return SS_ERR_INVALID;
        default:
            fprintf(err, "statesaver-server: unknown option '%s' (see "
                    "--help)\n", name);
            return SS_ERR_INVALID;
        }
    }
    if (optind < argc) {
        fprintf(err, "statesaver-server: unexpected argument '%s' (see "
                "--help)\n", argv[optind]);
        return SS_ERR_INVALID;
    }
    if (!cfg->data_dir) {
        fprintf(err, "statesaver-server: --data DIR is required (see --help)\n");
        return SS_ERR_INVALID;
    }
    if (cfg->max_map_size == 0)
        cfg->max_map_size = cfg->map_size > UINT64_MAX / 2 / SS_STORE_MAP_GROWTH_DEFAULT
                                ? UINT64_MAX / 2
                                : cfg->map_size * SS_STORE_MAP_GROWTH_DEFAULT;
    if (cfg->max_map_size < cfg->map_size) {
        fprintf(err, "statesaver-server: --max-map-size %llu is below --map-size "
                "%llu\n", (unsigned long long)cfg->max_map_size,
                (unsigned long long)cfg->map_size);
        return SS_ERR_INVALID;
    }
    if (cfg->metrics_port_file && !cfg->metrics_listen) {
        fprintf(err, "statesaver-server: --metrics-port-file needs "
                "--metrics-listen\n");
        return SS_ERR_INVALID;
    }
    if (cluster_flags_check(cfg, err) < 0)
        return SS_ERR_INVALID;
    if (token_file) {
        if (cfg->token) {
            memset(cfg->token, 0, cfg->token_len);
            free(cfg->token);
            cfg->token = NULL;
        }
        int rc = ss_config_read_token(token_file, &cfg->token, &cfg->token_len,
                                      err);
        if (rc < 0)
            return rc;
    }
    return 0;
}
