/* serve_cluster_obs -- what an operator sees of `statesaver-worker serve`
 * on a cluster: one metrics endpoint and one --stats-json file for the
 * worker processes of every shard (serve_cluster.c runs one per shard).
 *
 * Endpoint (--metrics-listen of the parent): each per-shard process serves
 * its own metrics on an ephemeral loopback port and reports the port to the
 * parent. On a scrape of the parent's /metrics the parent fetches every
 * shard process's /metrics (libcurl, bounded in time and bytes) and merges
 * them family by family, each sample gaining the label shard="HOST:PORT",
 * so every family's HELP and TYPE appear once. It adds
 * statesaver_worker_cluster_shards and statesaver_worker_shard_up{shard}
 * (1 when that process answered this scrape). /readyz: 200 when every
 * shard's process is ready (connected, saver declared), else 503 naming
 * the first shard that is not. /healthz: 200 while the parent's loop beats
 * and no shard process reports itself stalled (a process being restarted
 * has no port and is not asked).
 *
 * Threads: the parent's loop calls ss_serve_cobs_set/_beat; the HTTP
 * daemon's thread renders (the shard table is under a mutex, and no HTTP
 * request is made while holding it).
 */
#ifndef SS_SERVE_CLUSTER_OBS_H
#define SS_SERVE_CLUSTER_OBS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ss_serve_cobs ss_serve_cobs; /* opaque */

/* Most shards shown (one table slot per shard process). */
#define SS_SERVE_COBS_SHARDS_MAX 1024
/* Time allowed for one fetch from a shard process (ms). */
#define SS_SERVE_COBS_FETCH_MS 2000
/* Most bytes taken from one shard process's answer. */
#define SS_SERVE_COBS_BODY_MAX (8u << 20)
/* The parent's loop silent this long is unhealthy (ms). */
#define SS_SERVE_COBS_STALL_MS 60000

/* Serve on listen (HOST:PORT, port 0 = ephemeral) and write the bound
 * port to port_file when not NULL. Returns 0, or a negative code after a
 * message on stderr (SS_ERR_INVALID for a bad address). */
int ss_serve_cobs_start(ss_serve_cobs **out, const char *listen, const char *port_file);
/* Stop serving and free. Accepts NULL. */
void ss_serve_cobs_stop(ss_serve_cobs *s);
/* Table slot i (< SS_SERVE_COBS_SHARDS_MAX) is shard addr (copied),
 * served by a process whose metrics are on loopback port (0 = none yet or
 * restarting); present false removes the slot. Accepts NULL s. */
void ss_serve_cobs_set(ss_serve_cobs *s, size_t i, const char *addr, int port, bool present);
/* The parent's loop is alive. Accepts NULL. */
void ss_serve_cobs_beat(ss_serve_cobs *s);

/* --stats-json on a cluster: the per-shard process of slot i writes
 * ss_serve_cobs_stats_path(path, i); after they exited, the parent writes
 * path as {"shards": {ADDR: that process's object, ...}, "batches",
 * "segments", "failed_items" summed, "seconds"} and removes the per-shard
 * files. addrs[i] is slot i's shard, NULL for an unused slot. Returns 0 or
 * a negative code (logged). */
int ss_serve_cobs_stats_path(char *buf, size_t size, const char *path, size_t i);
int ss_serve_cobs_write_stats(const char *path, const char *const *addrs, size_t n,
                              double seconds);

#endif
