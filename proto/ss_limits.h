/* ss_limits -- default limits shared by server and clients.
 *
 * Every limit here is a default: the server has a flag for each (see
 * `statesaver-server --help` and docs/protocol.md) and reports the values
 * it uses in HelloResponse.
 */
#ifndef SS_LIMITS_H
#define SS_LIMITS_H

#define SS_DEFAULT_PORT 7450
#define SS_KEY_MIN 1u                     /* bytes in a sequence key */
#define SS_KEY_MAX_DEFAULT 1024u          /* --max-key-bytes */
#define SS_SAVER_NAME_MAX 128u            /* bytes in a saver name (fixed) */
#define SS_STATE_NAME_MAX 256u            /* bytes in a state name (fixed) */
#define SS_STATES_PER_SAVER_MAX 64u       /* state specs per saver (fixed) */
#define SS_KEYS_PER_REQUEST_DEFAULT 4096u /* --max-keys */
#define SS_MAX_CONNECTIONS_DEFAULT 1024u  /* --max-connections */
#define SS_OUTBUF_MAX_DEFAULT (64u * 1024u * 1024u) /* --max-output-bytes */
/* --max-output-bytes-total: replies buffered over all connections; past
 * it the connection with the most buffered output is closed. */
#define SS_OUTBUF_TOTAL_MAX_DEFAULT (256ull * 1024u * 1024u)
/* --max-unauth-frame-bytes: largest frame before Hello succeeded (only
 * with --auth-token-file): room for a Hello with a token of the largest
 * accepted size (4096 bytes) and a client name. */
#define SS_UNAUTH_FRAME_MAX_DEFAULT (8u * 1024u)
/* Decoding budget of one request: --unpack-budget-min plus
 * --unpack-budget-factor times the frame's payload bytes. */
#define SS_UNPACK_BUDGET_MIN_DEFAULT (1024u * 1024u)
#define SS_UNPACK_BUDGET_FACTOR_DEFAULT 4u
/* --frame-timeout-ms: a frame whose first byte arrived must be complete
 * within this; 0 = no deadline. */
#define SS_FRAME_TIMEOUT_MS_DEFAULT 30000u
/* --max-unauth-connections: connections that have not yet completed a
 * first request (and Hello, with a token); the oldest is evicted for a
 * newcomer past it (and when --max-connections is reached). */
#define SS_MAX_UNAUTH_CONN_DEFAULT 256u
/* --max-parked-per-conn / --max-pending-writes-per-conn: unanswered
 * parkable requests (Fetch, Lease, Await) / writer requests (Declare,
 * Save, Drop, Submit, Complete) of one connection before the server stops
 * reading it until one is answered. */
#define SS_MAX_PARKED_PER_CONN_DEFAULT 65536u
#define SS_MAX_PENDING_WRITES_PER_CONN_DEFAULT 65536u
/* --max-parked-total: parkable requests unanswered over all connections;
 * past it a new one gets RESOURCE_EXHAUSTED. */
#define SS_MAX_PARKED_TOTAL_DEFAULT 1048576u
#define SS_IDLE_CONN_MS_DEFAULT 300000u   /* --idle-timeout-ms */
#define SS_MAP_SIZE_DEFAULT (4ull << 30)  /* --map-size (bytes) */
#define SS_WAIT_MS_MAX 600000u            /* cap on any wait_ms (fixed) */
#define SS_LIST_LIMIT_DEFAULT 1000u       /* ListRequest.limit when 0 */
#define SS_PROTOCOL_VERSION 1u

#endif
