/* dispatch_admin -- handlers for Hello (authentication), Ping and Stats. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "dispatch.h"
#include "dispatch_internal.h"
#include "ss_error.h"
#include "ss_log.h"

/* Compare the presented token with the server's in time that depends only
 * on the server token's length, so a mismatch position does not leak. */
static bool token_equal(const uint8_t *want, size_t want_len,
                        const uint8_t *got, size_t got_len)
{
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < want_len; i++) {
        uint8_t g = i < got_len ? got[i] : (uint8_t)~want[i];
        diff |= (uint8_t)(want[i] ^ g);
    }
    return diff == 0 && want_len == got_len;
}

static void h_hello(ss_request *req, void *ctx)
{
    ss_server *srv = ss_request_server(req);
    const Statesaver__V1__HelloRequest *body = ss_request_message(req)->hello;
    if (ss_server_config(srv)->token) {
        const uint8_t *tok = body->token.data;
        size_t len = body->token.len;
        if (!token_equal(ss_server_config(srv)->token, ss_server_config(srv)->token_len, tok, len)) {
            SS_LOG(SS_LOG_WARN, "connection %s: Hello with a wrong token "
                   "(client '%s')", ss_conn_peer(ss_request_conn(req)),
                   body->client ? body->client : "");
            ss_request_error_close(req, STATESAVER__V1__CODE__UNAUTHENTICATED,
                                   "authentication failed: wrong token");
            return;
        }
        ss_conn_set_authed(ss_request_conn(req));
    }
    SS_LOG(SS_LOG_DEBUG, "connection %s: Hello from '%s'",
           ss_conn_peer(ss_request_conn(req)), body->client ? body->client : "");
    Statesaver__V1__HelloResponse hr = STATESAVER__V1__HELLO_RESPONSE__INIT;
    hr.server_version = "statesaver-server " SS_VERSION;
    hr.protocol_version = SS_PROTOCOL_VERSION;
    hr.max_frame_bytes = ss_server_config(srv)->max_frame_bytes;
    hr.max_keys = ss_server_config(srv)->max_keys;
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_HELLO;
    resp.hello = &hr;
    ss_request_reply(req, &resp);
}

static void h_ping(ss_request *req, void *ctx)
{
    const Statesaver__V1__PingRequest *body = ss_request_message(req)->ping;
    Statesaver__V1__PingResponse pr = STATESAVER__V1__PING_RESPONSE__INIT;
    pr.payload = body->payload;
    pr.server_time_ms = ss_server_now_ms();
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_PING;
    resp.ping = &pr;
    ss_request_reply(req, &resp);
}

static void h_stats(ss_request *req, void *ctx)
{
    ss_server *srv = ss_request_server(req);
    const Statesaver__V1__StatsRequest *body = ss_request_message(req)->stats;
    const char *saver = body->saver && *body->saver ? body->saver : NULL;
    if (saver) {
        if (!ss_request_check_saver_name(req, saver))
            return;
        ss_schema *schema = NULL;
        int rc = ss_store_schema(ss_server_store(srv), saver, &schema);
        if (rc == SS_ERR_NOT_FOUND) {
            ss_request_error(req, STATESAVER__V1__CODE__NOT_FOUND,
                             "saver '%s' is not declared", saver);
            return;
        }
        if (rc < 0) {
            ss_request_fail(req, rc, NULL);
            return;
        }
        ss_schema_unref(schema);
    }
    ss_store_stats st;
    memset(&st, 0, sizeof st);
    int rc = ss_store_stats_get(ss_server_store(srv), saver, &st);
    if (rc < 0) {
        ss_request_fail(req, rc, "reading store statistics failed");
        return;
    }
    ss_writer_stats ws;
    memset(&ws, 0, sizeof ws);
    ss_writer_stats_get(ss_server_writer(srv), &ws);
    Statesaver__V1__StatsResponse sr = STATESAVER__V1__STATS_RESPONSE__INIT;
    sr.uptime_ms = ss_server_now_ms() - ss_server_counters_get(srv)->start_ms;
    sr.savers = st.savers;
    sr.sequences = st.sequences;
    sr.connections = ss_server_connections(srv);
    sr.requests = ss_server_counters_get(srv)->requests;
    sr.commits = ws.commits;
    sr.committed_ops = ws.ops;
    sr.evicted = ss_server_counters_get(srv)->evicted;
    sr.map_size = st.map_size;
    sr.map_used = st.map_used;
    sr.rejected = ss_server_counters_get(srv)->rejected;
    sr.saves_applied = ss_server_counters_get(srv)->saves_applied;
    ss_server_module_stats(srv, saver ? saver : "", &sr);
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_STATS;
    resp.stats = &sr;
    ss_request_reply(req, &resp);
}

void ss_dispatch_admin_register(ss_dispatch *d)
{
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_HELLO, h_hello, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_PING, h_ping, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_STATS, h_stats, NULL);
}
