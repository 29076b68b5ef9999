/* cli_mover -- `statesaver cluster move-slots`: the resharding mover, and
 * the etcd and Topology helpers `statesaver cluster` shares with it.
 *
 * The move's steps, its intent record in etcd and why a rerun after a
 * crash at any point resumes or rolls back without losing or duplicating
 * anything: docs/cluster.md ("Moving slots").
 */
#ifndef SS_CLI_MOVER_H
#define SS_CLI_MOVER_H

#include <stddef.h>

#include "cli.h"
#include "ss_etcd.h"
#include "statesaver.pb-c.h"

/* Longest etcd key the CLI builds ("/statesaver/NAME/topology"). */
#define CLI_ETCD_KEY_MAX 256u
/* SlotExport page size asked for (--batch-bytes; the server caps it). */
#define CLI_MOVE_BATCH_BYTES_DEFAULT (4u << 20)
#define CLI_MOVE_BATCH_BYTES_MAX (256u << 20)
/* Records one SlotDelete removes (the server caps it). */
#define CLI_MOVE_DELETE_BATCH 4096u
/* How long the mover waits for both shards to serve the new topology
 * (--wait-ms). */
#define CLI_MOVE_WAIT_MS_DEFAULT 30000u
/* Poll period of that wait. */
#define CLI_MOVE_POLL_MS 50u
/* Compare-and-swap attempts of the topology flip when someone else
 * changed the topology meanwhile. */
#define CLI_MOVE_CAS_TRIES 8u

/* Open an etcd client for url; prints the error itself. */
int cli_etcd_open(const char *url, ss_etcd **out);
/* "/statesaver/<cluster>/<leaf>" into buf. */
void cli_etcd_key(char *buf, size_t size, const char *cluster, const char *leaf);
/* A Topology request on sc; *out (OK status, topology body) is the
 * caller's (ss_client_response_free). */
int cli_topology_call(ss_client *sc, Statesaver__V1__Response **out);

/* `statesaver cluster move-slots ...` (argv[0] = "move-slots"). */
int cli_mover_main(const cli_ctx *ctx, int argc, char **argv);

#endif
