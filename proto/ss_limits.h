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
#define SS_IDLE_CONN_MS_DEFAULT 300000u   /* --idle-timeout-ms */
#define SS_MAP_SIZE_DEFAULT (4ull << 30)  /* --map-size (bytes) */
#define SS_WAIT_MS_MAX 600000u            /* cap on any wait_ms (fixed) */
#define SS_LIST_LIMIT_DEFAULT 1000u       /* ListRequest.limit when 0 */
#define SS_PROTOCOL_VERSION 1u

#endif
