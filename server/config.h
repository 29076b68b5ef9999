/* config -- command-line flags and limits of statesaver-server.
 *
 * Every limit is a named constant here or in ss_limits.h, with a flag.
 */
#ifndef SS_CONFIG_H
#define SS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ss_limits.h"

#define SS_LISTEN_DEFAULT "127.0.0.1:7450"
#define SS_TTL_INTERVAL_MS_DEFAULT 1000u   /* --ttl-interval-ms */
#define SS_EVICT_BATCH 10000u              /* sequences evicted per run */
#define SS_SHUTDOWN_GRACE_MS 10000u        /* force-close after this */
#define SS_TOKEN_MAX 4096u                 /* bytes in an auth token file */
#define SS_MAX_READERS 126u                /* LMDB reader slots */
#define SS_HOST_MAX 256u                   /* bytes in --listen's host */
/* cluster (docs/cluster.md) */
#define SS_TOPOLOGY_WAIT_MS_DEFAULT 60000u /* --topology-wait-ms: etcd key missing */
#define SS_SLOT_EXPORT_BYTES_DEFAULT (4u << 20) /* --slot-export-max-bytes */
#define SS_SLOT_EXPORT_BYTES_MIN (64u << 10)    /* its lowest value */
/* Smallest --max-unauth-frame-bytes: a Hello with the largest token. */
#define SS_UNAUTH_FRAME_MIN (SS_TOKEN_MAX + 256u)

typedef struct ss_config {
    char host[SS_HOST_MAX];     /* listen address literal (IPv4 or IPv6) */
    int port;                   /* listen port; 0 = ephemeral */
    char *data_dir;             /* --data (owned) */
    bool sync;                  /* --sync on|off */
    uint32_t max_frame_bytes;   /* --max-frame-bytes */
    uint32_t max_keys;          /* --max-keys: keys per request */
    uint32_t max_key_bytes;     /* --max-key-bytes */
    uint32_t max_connections;   /* --max-connections */
    uint64_t max_output_bytes;  /* --max-output-bytes per connection */
    uint64_t idle_timeout_ms;   /* --idle-timeout-ms; 0 = never */
    uint64_t map_size;          /* --map-size bytes (initial map) */
    uint64_t max_map_size;      /* --max-map-size bytes (0 before parsing:
                                   SS_STORE_MAP_GROWTH_DEFAULT x map_size) */
    uint8_t *token;             /* auth token (owned) or NULL */
    size_t token_len;           /* bytes in token */
    uint64_t ttl_interval_ms;   /* --ttl-interval-ms; 0 = no eviction */
    int log_level;              /* --log-level */
    char *port_file;            /* --port-file (owned) or NULL */
    uint64_t queue_capacity;    /* --queue-capacity: queued + leased segments */
    uint32_t max_attempts;      /* --max-attempts: poison limit of a segment */
    uint32_t lease_ms;          /* --lease-ms: lease when the request says 0 */
    uint64_t finished_retention_ms; /* --finished-retention-ms: how long a
                                       final save stays retryable */
    char *metrics_listen;       /* --metrics-listen HOST:PORT (owned) or NULL */
    char *metrics_port_file;    /* --metrics-port-file (owned) or NULL */
    uint64_t max_output_total;  /* --max-output-bytes-total, all connections */
    uint32_t max_unauth_frame_bytes; /* --max-unauth-frame-bytes before Hello */
    uint64_t unpack_budget_min; /* --unpack-budget-min: decode bytes floor */
    uint32_t unpack_budget_factor; /* --unpack-budget-factor: per payload byte */
    uint64_t frame_timeout_ms;  /* --frame-timeout-ms; 0 = no deadline */
    uint32_t max_unauth_conns;  /* --max-unauth-connections */
    uint32_t max_parked_per_conn; /* --max-parked-per-conn */
    uint32_t max_pending_writes_per_conn; /* --max-pending-writes-per-conn */
    uint64_t max_parked_total;  /* --max-parked-total */
    /* write-ahead log (docs/wal.md) */
    bool wal;                   /* --wal on|off (default on) */
    uint64_t wal_segment_bytes; /* --wal-segment-bytes */
    int wal_sync_method;        /* --wal-sync-method: ss_wal_sync_method */
    uint64_t checkpoint_bytes;  /* --checkpoint-bytes of log between checkpoints */
    uint64_t checkpoint_interval_ms; /* --checkpoint-interval-ms */
    uint64_t sync_interval_ms;  /* --sync-interval-ms (--sync off) */
    bool wal_truncate_corrupt;  /* --wal-truncate-corrupt (operator flag) */
    /* cluster (docs/cluster.md): all NULL = one shard owning every slot */
    char *etcd;                 /* --etcd URL (owned) or NULL */
    char *cluster;              /* --cluster NAME (owned) or NULL */
    char *shard;                /* --shard ID (owned) or NULL */
    char *advertise;            /* --advertise HOST:PORT (owned) or NULL */
    char *cluster_config;       /* --cluster-config FILE (owned) or NULL */
    char *topology_init;        /* --topology-init FILE (owned) or NULL: with
                                   --etcd, create the key from it if missing */
    uint64_t topology_wait_ms;  /* --topology-wait-ms: wait for a missing etcd key */
    uint64_t slot_export_bytes; /* --slot-export-max-bytes: SlotExport reply cap */
} ss_config;

/* Fill the defaults. */
void ss_config_init(ss_config *cfg);

/* Parse argv into cfg (after ss_config_init). Returns 0 to run, 1 when
 * --help/--version printed their text to out, or a negative code after
 * writing a message to err. Reads the token file. */
int ss_config_parse(ss_config *cfg, int argc, char **argv, FILE *out,
                    FILE *err);

/* Deep copy (strings, token). Returns 0 or SS_ERR_NOMEM. */
int ss_config_copy(ss_config *dst, const ss_config *src);

/* Release owned strings. Accepts NULL. */
void ss_config_clear(ss_config *cfg);

/* Read an auth token: the file's bytes with trailing "\n" / "\r\n"
 * removed; empty or larger than SS_TOKEN_MAX is an error (message in err). */
int ss_config_read_token(const char *path, uint8_t **token, size_t *len,
                         FILE *err);

/* Split "HOST:PORT" / "[V6]:PORT" into host and port. */
int ss_config_parse_listen(const char *arg, char host[SS_HOST_MAX], int *port);

#endif
