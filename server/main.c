/* main -- statesaver-server entry point: flags, wiring (server core, then
 * the request layer), start, run, exit status. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>

#include "config.h"
#include "dispatch.h"
#include "server.h"
#include "shard.h"
#include "ss_error.h"
#include "ss_log.h"

/* Replies and fetch buffers of up to a few hundred KiB are allocated and
 * freed per request. With glibc's defaults (dynamic mmap threshold from
 * 128 KiB, heap trimmed above 128 KiB free) that memory goes back to the
 * kernel after each request and is faulted in and zeroed again by the
 * next: ~63 page faults per 64-state fetch (docs/benchmarks.md). Keep it
 * in the heap instead; memory above the trim threshold is still returned. */
#define SS_MALLOC_MMAP_THRESHOLD (4 << 20)   /* bytes: larger blocks are mmapped */
#define SS_MALLOC_TRIM_THRESHOLD (256 << 20) /* bytes of free heap kept */
/* No fastbins (small frees coalesce at once; the per-thread tcache still
 * serves the hot path): with them, cancelling 50k parked requests leaves
 * ~10^5 small chunks in the fastbins, and the next free of 64 KiB or more
 * consolidates them all in one go, a 25-30 ms stall of the loop. */
#define SS_MALLOC_MXFAST 0

int main(int argc, char **argv)
{
    mallopt(M_MMAP_THRESHOLD, SS_MALLOC_MMAP_THRESHOLD);
    mallopt(M_TRIM_THRESHOLD, SS_MALLOC_TRIM_THRESHOLD);
    mallopt(M_MXFAST, SS_MALLOC_MXFAST);
    ss_config cfg;
    ss_server *srv = NULL;
    ss_dispatch *dispatch = NULL;
    ss_shard *cluster = NULL;
    int status = 1;
    ss_config_init(&cfg);
    ss_log_set_component("server");
    int rc = ss_config_parse(&cfg, argc, argv, stdout, stderr);
    if (rc == 1) {
        status = 0;
        goto out;
    }
    if (rc < 0) {
        status = 2;
        goto out;
    }
    /* A peer that vanishes must cost a write error, not the process. */
    signal(SIGPIPE, SIG_IGN);
    /* The topology first (docs/cluster.md): an unreachable etcd, a missing
     * or invalid topology, or a --shard not in it ends here with exit 2,
     * before the store is opened. */
    char cerr[768];
    ss_log_threshold = cfg.log_level;
    rc = ss_shard_open(&cluster, &cfg, cerr, sizeof cerr);
    if (rc < 0) {
        fprintf(stderr, "statesaver-server: cluster: %s\n", cerr);
        status = 2;
        goto out;
    }
    /* The core (store, writer, connections), then the request layer on
     * top of it, then listening. */
    rc = ss_server_create(&srv, &cfg);
    if (rc == 0)
        rc = ss_dispatch_new(&dispatch, srv);
    if (rc == 0)
        rc = ss_dispatch_set_cluster(dispatch, cluster);
    if (rc == 0)
        rc = ss_server_start(srv);
    /* After listening (the no-cluster topology names the bound port),
     * before the loop runs (no request is read before it). */
    if (rc == 0)
        rc = ss_shard_start(cluster, ss_server_loop(srv), ss_server_port(srv));
    if (rc < 0) {
        fprintf(stderr, "statesaver-server: cannot start: %s\n",
                ss_strerror(rc));
        goto out;
    }
    rc = ss_server_run(srv);
    status = rc < 0 ? 1 : 0;
out:
    ss_shard_stop(cluster);
    ss_dispatch_free(dispatch);
    ss_server_free(srv);
    ss_shard_free(cluster);
    ss_config_clear(&cfg);
    return status;
}
