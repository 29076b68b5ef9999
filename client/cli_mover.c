/* cli_mover -- `statesaver cluster move-slots`: move a slot range from one
 * shard to another while both serve.
 *
 * Steps (each one safe to repeat; docs/cluster.md):
 *   1. intent: /statesaver/NAME/move = {id, from, to, first, last}, written
 *      with compare-and-swap "must not exist" (one move at a time);
 *   2. freeze the slots on the source (writes answered UNAVAILABLE; the
 *      source persists the frozen set, so a restart keeps it);
 *   3. clear the target's leftovers of the range (an earlier attempt's
 *      partial copy: the target does not own these slots yet, so nothing
 *      there is live), then copy: SlotExport pages from the source, each
 *      imported on the target (idempotent, durable);
 *   4. flip: the topology with the range given to the target and epoch+1,
 *      written by compare-and-swap on the mod_revision it was read at;
 *   5. wait until both shards serve the new epoch, delete the range on the
 *      source in bounded batches, thaw it, delete the intent.
 * Where a rerun starts is decided from etcd alone: no intent = nothing to
 * do; intent and the range still the source's = from step 2 (or, with
 * --abort, roll back: clear the target's copy, thaw, drop the intent);
 * intent and the range the target's = from step 5.
 */
#include "cli_mover.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ss_parse.h"
#include "ss_slot.h"
#include "ss_topology.h"

typedef Statesaver__V1__Request req_t;
typedef Statesaver__V1__Response resp_t;

/* One run of the mover. */
typedef struct mover {
    const cli_ctx *ctx;          /* global options (timeouts, token) */
    ss_etcd *etcd;               /* etcd client */
    char topo_key[CLI_ETCD_KEY_MAX]; /* /statesaver/NAME/topology */
    char move_key[CLI_ETCD_KEY_MAX]; /* /statesaver/NAME/move */
    char from[SS_TOPO_MAX_ID + 1];   /* source shard id */
    char to[SS_TOPO_MAX_ID + 1];     /* target shard id */
    unsigned first, last;        /* the slot range */
    char id[40];                 /* move id (intent) */
    char runner[40];             /* this run's token (intent "runner") */
    int64_t intent_rev;          /* mod_revision of the intent as we wrote it */
    uint32_t batch_bytes;        /* SlotExport max_bytes */
    uint32_t wait_ms;            /* wait for the shards to serve the flip */
    uint32_t throttle_ms;        /* pause after every batch */
    ss_topology *topo;           /* topology as read from etcd */
    int64_t topo_rev;            /* its mod_revision */
    ss_client *src;              /* connection to the source */
    ss_client *dst;              /* connection to the target */
} mover;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout); /* tests and operators follow the phases as they happen */
}

static void nap(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cli_etcd_open(const char *url, ss_etcd **out)
{
    int rc = ss_etcd_new(url, 0, out);
    if (rc < 0) {
        cli_error("etcd '%s': %s", url, rc == SS_ERR_INVALID ? "bad URL" : ss_strerror(rc));
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

void cli_etcd_key(char *buf, size_t size, const char *cluster, const char *leaf)
{
    snprintf(buf, size, "/statesaver/%s/%s", cluster, leaf);
}

/* ---- etcd: topology and intent ------------------------------------------- */

static int load_topology(mover *m)
{
    char *val = NULL, err[1024];
    size_t len = 0;
    ss_topology_free(m->topo);
    m->topo = NULL;
    int rc = ss_etcd_get(m->etcd, m->topo_key, &val, &len, &m->topo_rev, NULL, err, sizeof err);
    if (rc == SS_ERR_NOT_FOUND) {
        cli_error("no topology at %s (run `statesaver cluster init` first)", m->topo_key);
        return CLI_EXIT_FAIL;
    }
    if (rc < 0) {
        cli_error("etcd: %s", err);
        return CLI_EXIT_FAIL;
    }
    rc = ss_topology_parse(val, len, &m->topo, err, sizeof err);
    free(val);
    if (rc < 0) {
        cli_error("topology at %s: %s", m->topo_key, err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* Who owns the range now: the index of the one shard owning every slot of
 * it, or -1 (several owners). */
static int range_owner(const mover *m)
{
    int o = ss_topology_owner(m->topo, m->first);
    for (unsigned s = m->first + 1; o >= 0 && s <= m->last; s++)
        if (ss_topology_owner(m->topo, s) != o)
            return -1;
    return o;
}

static char *intent_json(const mover *m)
{
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (o && cJSON_AddStringToObject(o, "id", m->id) &&
        cJSON_AddStringToObject(o, "runner", m->runner) &&
        cJSON_AddStringToObject(o, "from", m->from) &&
        cJSON_AddStringToObject(o, "to", m->to) &&
        cJSON_AddNumberToObject(o, "first", m->first) &&
        cJSON_AddNumberToObject(o, "last", m->last))
        text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* Read the intent: 1 when there is one (m's move filled from it, or
 * checked against what the command line asked), 0 when none. */
static int load_intent(mover *m, bool have_args, int *found)
{
    char *val = NULL, err[1024];
    size_t len = 0;
    int64_t rev = 0;
    *found = 0;
    int rc = ss_etcd_get(m->etcd, m->move_key, &val, &len, &rev, NULL, err, sizeof err);
    if (rc == SS_ERR_NOT_FOUND)
        return CLI_EXIT_OK;
    m->intent_rev = rev;
    if (rc < 0) {
        cli_error("etcd: %s", err);
        return CLI_EXIT_FAIL;
    }
    cJSON *o = cJSON_ParseWithLength(val, len);
    free(val);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(o, "from");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(o, "to");
    const cJSON *first = cJSON_GetObjectItemCaseSensitive(o, "first");
    const cJSON *last = cJSON_GetObjectItemCaseSensitive(o, "last");
    if (!cJSON_IsString(id) || !cJSON_IsString(from) || !cJSON_IsString(to) ||
        !cJSON_IsNumber(first) || !cJSON_IsNumber(last) || first->valuedouble < 0 ||
        last->valuedouble >= SS_SLOT_COUNT || first->valuedouble > last->valuedouble ||
        strlen(from->valuestring) > SS_TOPO_MAX_ID || strlen(to->valuestring) > SS_TOPO_MAX_ID ||
        strlen(id->valuestring) >= sizeof m->id) {
        cJSON_Delete(o);
        cli_error("%s holds no valid move intent; inspect it with etcdctl", m->move_key);
        return CLI_EXIT_FAIL;
    }
    unsigned f = (unsigned)first->valuedouble, l = (unsigned)last->valuedouble;
    if (have_args && (strcmp(m->from, from->valuestring) != 0 ||
                      strcmp(m->to, to->valuestring) != 0 || m->first != f || m->last != l)) {
        cli_error("another move is in progress: slots %u-%u from %s to %s (id %s); "
                  "finish it (rerun move-slots without --from/--to/--slots) or roll it "
                  "back with --abort first",
                  f, l, from->valuestring, to->valuestring, id->valuestring);
        cJSON_Delete(o);
        return CLI_EXIT_FAIL;
    }
    snprintf(m->from, sizeof m->from, "%s", from->valuestring);
    snprintf(m->to, sizeof m->to, "%s", to->valuestring);
    snprintf(m->id, sizeof m->id, "%s", id->valuestring);
    m->first = f;
    m->last = l;
    cJSON_Delete(o);
    *found = 1;
    return CLI_EXIT_OK;
}

/* Take the recorded move over: our runner token into the intent, by
 * compare-and-swap on the revision it was read at. A mover still running
 * the same move sees the record change and stops before its next import. */
static int take_intent(mover *m)
{
    char err[1024], *json = intent_json(m);
    int64_t rev = 0;
    if (!json) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    int rc = ss_etcd_cas(m->etcd, m->move_key, json, strlen(json), m->intent_rev, &rev, err,
                         sizeof err);
    free(json);
    if (rc == SS_ERR_CONFLICT) {
        cli_error("the move's record changed while this mover read it (another mover?); "
                  "rerun");
        return CLI_EXIT_FAIL;
    }
    if (rc < 0) {
        cli_error("etcd: %s", err);
        return CLI_EXIT_FAIL;
    }
    m->intent_rev = rev;
    return CLI_EXIT_OK;
}

/* Still our move? A rerun elsewhere takes a move over by rewriting its
 * record; this one must then stop copying (its imports could land after
 * the other's flip). */
static int still_ours(mover *m)
{
    char *val = NULL, err[1024];
    size_t len = 0;
    int64_t rev = 0;
    int rc = ss_etcd_get(m->etcd, m->move_key, &val, &len, &rev, NULL, err, sizeof err);
    free(val);
    if (rc == SS_ERR_NOT_FOUND || (rc == 0 && rev != m->intent_rev)) {
        cli_error("another mover took this move over (its record in %s changed); this one "
                  "stops", m->move_key);
        return CLI_EXIT_FAIL;
    }
    if (rc < 0) {
        cli_error("etcd: %s", err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

static int clear_intent(mover *m)
{
    char err[1024];
    if (ss_etcd_delete(m->etcd, m->move_key, NULL, err, sizeof err) < 0) {
        cli_error("etcd: deleting %s: %s", m->move_key, err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* ---- shard calls ---------------------------------------------------------------- */

static int connect_shard(mover *m, const char *id, ss_client **out)
{
    int i = ss_topology_find_shard(m->topo, id);
    if (i < 0) {
        cli_error("shard '%s' is not in the topology", id);
        return CLI_EXIT_FAIL;
    }
    if (*out && !ss_client_broken(*out))
        return CLI_EXIT_OK;
    ss_client_close(*out);
    *out = NULL;
    cli_ctx one = *m->ctx;
    one.server = ss_topology_shard_primary(m->topo, (size_t)i);
    return cli_connect(&one, out);
}

static int call(ss_client *sc, const char *shard, req_t *req, int want, resp_t **out,
                const char *what)
{
    int rc = ss_client_call(sc, req, 0, out);
    if (rc == 0 && (int)(*out)->body_case != want) {
        ss_client_response_free(*out);
        *out = NULL;
        cli_error("%s on shard %s: unexpected reply", what, shard);
        return CLI_EXIT_FAIL;
    }
    if (rc < 0) {
        cli_error("%s on shard %s: %s", what, shard,
                  ss_client_last_error(sc)[0] ? ss_client_last_error(sc) : ss_strerror(rc));
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

static int freeze(mover *m, bool on)
{
    Statesaver__V1__SlotRange r = STATESAVER__V1__SLOT_RANGE__INIT;
    Statesaver__V1__SlotRange *rp = &r;
    Statesaver__V1__SlotFreezeRequest f = STATESAVER__V1__SLOT_FREEZE_REQUEST__INIT;
    req_t req = STATESAVER__V1__REQUEST__INIT;
    resp_t *resp = NULL;
    r.first = m->first;
    r.last = m->last;
    r.shard = m->from;
    f.n_ranges = 1;
    f.ranges = &rp;
    f.freeze = on;
    f.move_id = m->id;
    req.body_case = STATESAVER__V1__REQUEST__BODY_SLOT_FREEZE;
    req.slot_freeze = &f;
    int st = call(m->src, m->from, &req, STATESAVER__V1__RESPONSE__BODY_SLOT_FREEZE, &resp,
                  on ? "freeze" : "thaw");
    ss_client_response_free(resp);
    return st;
}

/* Delete the range on one shard in bounded batches. UNAVAILABLE (another
 * delete running, or the shard has not seen the topology that gives the
 * slots away yet) is retried for up to --wait-ms. */
static int delete_range(mover *m, ss_client *sc, const char *shard, const char *why)
{
    uint64_t total = 0;
    int64_t busy_since = 0;
    for (unsigned batch = 1;;) {
        Statesaver__V1__SlotDeleteRequest d = STATESAVER__V1__SLOT_DELETE_REQUEST__INIT;
        req_t req = STATESAVER__V1__REQUEST__INIT;
        resp_t *resp = NULL;
        d.first = m->first;
        d.last = m->last;
        d.max_records = CLI_MOVE_DELETE_BATCH;
        req.body_case = STATESAVER__V1__REQUEST__BODY_SLOT_DELETE;
        req.slot_delete = &d;
        int rc = ss_client_call(sc, &req, 0, &resp);
        if (rc == SS_ERR_STATUS(SS_CODE_UNAVAILABLE)) {
            if (busy_since == 0)
                busy_since = mono_ms();
            if (mono_ms() - busy_since < (int64_t)m->wait_ms) {
                nap(CLI_MOVE_POLL_MS);
                continue;
            }
        }
        if (rc == 0 && resp->body_case != STATESAVER__V1__RESPONSE__BODY_SLOT_DELETE) {
            ss_client_response_free(resp);
            cli_error("delete on shard %s: unexpected reply", shard);
            return CLI_EXIT_FAIL;
        }
        if (rc < 0) {
            cli_error("delete on shard %s: %s", shard,
                      ss_client_last_error(sc)[0] ? ss_client_last_error(sc) : ss_strerror(rc));
            return CLI_EXIT_FAIL;
        }
        busy_since = 0;
        bool done = resp->slot_delete->done;
        uint64_t n = resp->slot_delete->deleted;
        ss_client_response_free(resp);
        total += n;
        if (n || done)
            say("delete %s on %s: batch %u, %llu records (total %llu)", why, shard, batch,
                (unsigned long long)n, (unsigned long long)total);
        batch++;
        if (done)
            return CLI_EXIT_OK;
        if (m->throttle_ms)
            nap(m->throttle_ms);
        else if (n == 0)
            nap(CLI_MOVE_POLL_MS); /* a leased segment holds the range until its lease ends */
    }
}

/* Export every record of the range from the source, import on the target. */
static int copy_range(mover *m)
{
    ProtobufCBinaryData cursor = {0, NULL};
    uint8_t *cur = NULL;
    uint64_t total = 0;
    int status = CLI_EXIT_FAIL;
    for (unsigned batch = 1;; batch++) {
        Statesaver__V1__SlotExportRequest e = STATESAVER__V1__SLOT_EXPORT_REQUEST__INIT;
        Statesaver__V1__SlotImportRequest im = STATESAVER__V1__SLOT_IMPORT_REQUEST__INIT;
        req_t req = STATESAVER__V1__REQUEST__INIT, req2 = STATESAVER__V1__REQUEST__INIT;
        resp_t *ex = NULL, *ir = NULL;
        e.first = m->first;
        e.last = m->last;
        e.cursor = cursor;
        e.max_bytes = m->batch_bytes;
        req.body_case = STATESAVER__V1__REQUEST__BODY_SLOT_EXPORT;
        req.slot_export = &e;
        if (call(m->src, m->from, &req, STATESAVER__V1__RESPONSE__BODY_SLOT_EXPORT, &ex,
                 "export") != CLI_EXIT_OK)
            goto out;
        const Statesaver__V1__SlotExportResponse *x = ex->slot_export;
        if (x->n_records && still_ours(m) != CLI_EXIT_OK) {
            ss_client_response_free(ex);
            goto out;
        }
        if (x->n_records) {
            im.n_records = x->n_records;
            im.records = x->records; /* borrowed from the export reply */
            im.move_id = m->id;
            req2.body_case = STATESAVER__V1__REQUEST__BODY_SLOT_IMPORT;
            req2.slot_import = &im;
            if (call(m->dst, m->to, &req2, STATESAVER__V1__RESPONSE__BODY_SLOT_IMPORT, &ir,
                     "import") != CLI_EXIT_OK) {
                ss_client_response_free(ex);
                goto out;
            }
            ss_client_response_free(ir);
        }
        total += x->n_records;
        say("copy %s -> %s: batch %u, %zu records (total %llu)", m->from, m->to, batch,
            x->n_records, (unsigned long long)total);
        bool done = x->done;
        if (!done) {
            if (x->cursor.len == 0) {
                ss_client_response_free(ex);
                cli_error("export on shard %s: no cursor before the end", m->from);
                goto out;
            }
            uint8_t *nc = realloc(cur, x->cursor.len);
            if (!nc) {
                ss_client_response_free(ex);
                cli_error("out of memory");
                goto out;
            }
            cur = nc;
            memcpy(cur, x->cursor.data, x->cursor.len);
            cursor.data = cur;
            cursor.len = x->cursor.len;
        }
        ss_client_response_free(ex);
        if (done)
            break;
        if (m->throttle_ms)
            nap(m->throttle_ms);
    }
    status = CLI_EXIT_OK;
out:
    free(cur);
    return status;
}

/* Wait until sc serves a topology of at least epoch. */
static int wait_epoch(mover *m, ss_client **sc, const char *shard, uint64_t epoch)
{
    int64_t end = mono_ms() + m->wait_ms;
    uint64_t seen = 0;
    for (;;) {
        resp_t *r = NULL;
        if (connect_shard(m, shard, sc) == CLI_EXIT_OK && cli_topology_call(*sc, &r) == 0) {
            seen = r->topology->epoch;
            ss_client_response_free(r);
            if (seen >= epoch)
                return CLI_EXIT_OK;
        }
        if (mono_ms() >= end) {
            cli_error("shard %s still serves epoch %llu after %u ms (want %llu); is it "
                      "connected to etcd? rerun move-slots to finish",
                      shard, (unsigned long long)seen, m->wait_ms, (unsigned long long)epoch);
            return CLI_EXIT_FAIL;
        }
        nap(CLI_MOVE_POLL_MS);
    }
}

/* ---- the phases -------------------------------------------------------------------- */

/* Compare-and-swap the topology with the range given to the target. */
static int flip(mover *m, uint64_t *new_epoch)
{
    char err[1024];
    for (unsigned t = 0; t < CLI_MOVE_CAS_TRIES; t++) {
        int owner = range_owner(m), to = ss_topology_find_shard(m->topo, m->to);
        if (owner == to) {
            *new_epoch = ss_topology_epoch(m->topo);
            return CLI_EXIT_OK; /* flipped by an earlier run */
        }
        if (owner != ss_topology_find_shard(m->topo, m->from) || to < 0) {
            cli_error("the topology changed under the move (slots %u-%u no longer all on "
                      "%s); roll back with --abort",
                      m->first, m->last, m->from);
            return CLI_EXIT_FAIL;
        }
        ss_topology *n = ss_topology_copy(m->topo);
        char *json = NULL;
        if (!n || ss_topology_assign(n, m->first, m->last, (size_t)to) < 0) {
            ss_topology_free(n);
            cli_error("out of memory");
            return CLI_EXIT_FAIL;
        }
        ss_topology_set_epoch(n, ss_topology_epoch(m->topo) + 1);
        if (ss_topology_validate(n, err, sizeof err) < 0 || !(json = ss_topology_to_json(n))) {
            ss_topology_free(n);
            cli_error("new topology: %s", json ? err : "out of memory");
            return CLI_EXIT_FAIL;
        }
        int rc = ss_etcd_cas(m->etcd, m->topo_key, json, strlen(json), m->topo_rev, NULL, err,
                             sizeof err);
        free(json);
        if (rc == 0) {
            *new_epoch = ss_topology_epoch(n);
            ss_topology_free(n);
            say("flip: slots %u-%u now on %s, epoch %llu", m->first, m->last, m->to,
                (unsigned long long)*new_epoch);
            return load_topology(m);
        }
        ss_topology_free(n);
        if (rc != SS_ERR_CONFLICT) {
            /* Unknown outcome (e.g. a timeout): reread and decide again. */
            cli_error("etcd: %s (rechecking)", err);
        }
        if (load_topology(m) != CLI_EXIT_OK)
            return CLI_EXIT_FAIL;
    }
    cli_error("the topology kept changing; %u compare-and-swap attempts failed",
              CLI_MOVE_CAS_TRIES);
    return CLI_EXIT_FAIL;
}

/* After the flip: both shards serve it, the source's copy goes, thaw,
 * intent gone. */
static int finish(mover *m, uint64_t epoch)
{
    if (wait_epoch(m, &m->src, m->from, epoch) != CLI_EXIT_OK ||
        wait_epoch(m, &m->dst, m->to, epoch) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    if (delete_range(m, m->src, m->from, "moved data") != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    if (freeze(m, false) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    say("thawed slots %u-%u on %s", m->first, m->last, m->from);
    if (clear_intent(m) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    say("done: slots %u-%u moved from %s to %s (epoch %llu)", m->first, m->last, m->from,
        m->to, (unsigned long long)epoch);
    return CLI_EXIT_OK;
}

static int rollback(mover *m)
{
    int owner = range_owner(m);
    if (owner >= 0 && owner == ss_topology_find_shard(m->topo, m->to)) {
        cli_error("the topology already gives slots %u-%u to %s: the move cannot be rolled "
                  "back; rerun without --abort to finish it",
                  m->first, m->last, m->to);
        return CLI_EXIT_FAIL;
    }
    if (connect_shard(m, m->to, &m->dst) != CLI_EXIT_OK ||
        delete_range(m, m->dst, m->to, "partial copy") != CLI_EXIT_OK ||
        connect_shard(m, m->from, &m->src) != CLI_EXIT_OK || freeze(m, false) != CLI_EXIT_OK ||
        clear_intent(m) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    say("rolled back: slots %u-%u stay on %s", m->first, m->last, m->from);
    return CLI_EXIT_OK;
}

static int run(mover *m, bool have_args, bool abort_move)
{
    int found = 0;
    if (load_topology(m) != CLI_EXIT_OK || load_intent(m, have_args, &found) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    if (!found && abort_move) {
        say("no move in progress");
        return CLI_EXIT_OK;
    }
    if (!found && !have_args)
        return cli_usage("cluster move-slots", "no move in progress: want --from, --to and --slots");
    if (ss_topology_find_shard(m->topo, m->from) < 0 || ss_topology_find_shard(m->topo, m->to) < 0 ||
        strcmp(m->from, m->to) == 0) {
        cli_error("--from %s / --to %s: want two different shards of the topology", m->from,
                  m->to);
        return CLI_EXIT_FAIL;
    }
    if (found && abort_move)
        return rollback(m);
    int owner = range_owner(m);
    int from = ss_topology_find_shard(m->topo, m->from), to = ss_topology_find_shard(m->topo, m->to);
    if (found && owner == to) {
        say("resuming move %s after its flip", m->id);
        if (connect_shard(m, m->from, &m->src) != CLI_EXIT_OK)
            return CLI_EXIT_FAIL;
        return finish(m, ss_topology_epoch(m->topo));
    }
    if (owner != from) {
        if (!found && owner == to) {
            say("slots %u-%u are already on %s: nothing to do", m->first, m->last, m->to);
            return CLI_EXIT_OK;
        }
        cli_error("slots %u-%u are not all owned by %s%s", m->first, m->last, m->from,
                  found ? "; roll the move back with --abort" : "");
        return CLI_EXIT_FAIL;
    }
    if (!found) {
        char err[1024];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(m->id, sizeof m->id, "%llx-%x", (unsigned long long)ts.tv_sec * 1000000000ull +
                 (unsigned long long)ts.tv_nsec, (unsigned)getpid());
        char *json = intent_json(m);
        if (!json) {
            cli_error("out of memory");
            return CLI_EXIT_FAIL;
        }
        int rc = ss_etcd_cas(m->etcd, m->move_key, json, strlen(json), 0, &m->intent_rev, err,
                             sizeof err);
        free(json);
        if (rc == SS_ERR_CONFLICT) {
            cli_error("another move was recorded meanwhile; rerun to see it");
            return CLI_EXIT_FAIL;
        }
        if (rc < 0) {
            cli_error("etcd: %s", err);
            return CLI_EXIT_FAIL;
        }
        say("intent: move %s of slots %u-%u from %s to %s", m->id, m->first, m->last, m->from,
            m->to);
    } else {
        if (take_intent(m) != CLI_EXIT_OK)
            return CLI_EXIT_FAIL;
        say("resuming move %s before its flip", m->id);
    }
    if (connect_shard(m, m->from, &m->src) != CLI_EXIT_OK ||
        connect_shard(m, m->to, &m->dst) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    if (freeze(m, true) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    say("frozen slots %u-%u on %s", m->first, m->last, m->from);
    if (delete_range(m, m->dst, m->to, "leftovers") != CLI_EXIT_OK ||
        copy_range(m) != CLI_EXIT_OK || still_ours(m) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    uint64_t epoch = 0;
    if (flip(m, &epoch) != CLI_EXIT_OK)
        return CLI_EXIT_FAIL;
    return finish(m, epoch);
}

static const char mover_usage[] =
    "usage: statesaver cluster move-slots --etcd URL --cluster NAME\n"
    "           [--from A --to B --slots X-Y] [--abort] [--batch-bytes N]\n"
    "           [--wait-ms N] [--throttle-ms N]\n"
    "Move hash slots X..Y from shard A to shard B while both serve. Rerun the\n"
    "same command (or without --from/--to/--slots) after any failure: it\n"
    "resumes; --abort rolls back a move that has not flipped the topology yet.\n"
    "  --batch-bytes N  bytes per export/import batch (default 4 MiB)\n"
    "  --wait-ms N      how long to wait for the shards to serve the new\n"
    "                   topology (default 30000)\n"
    "  --throttle-ms N  pause after every batch (default 0)\n";

int cli_mover_main(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"etcd", required_argument, NULL, 'e'},
        {"cluster", required_argument, NULL, 'c'},
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"slots", required_argument, NULL, 's'},
        {"abort", no_argument, NULL, 'a'},
        {"batch-bytes", required_argument, NULL, 'b'},
        {"wait-ms", required_argument, NULL, 'w'},
        {"throttle-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    mover m;
    const char *url = NULL, *name = NULL, *from = NULL, *to = NULL, *slots = NULL;
    bool abort_move = false;
    uint64_t v, a, b;
    int o, status;

    memset(&m, 0, sizeof m);
    m.ctx = ctx;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(m.runner, sizeof m.runner, "%x-%llx", (unsigned)getpid(),
             (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec);
    m.batch_bytes = CLI_MOVE_BATCH_BYTES_DEFAULT;
    m.wait_ms = CLI_MOVE_WAIT_MS_DEFAULT;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(mover_usage, stdout); return CLI_EXIT_OK;
        case 'e': url = optarg; break;
        case 'c': name = optarg; break;
        case 'f': from = optarg; break;
        case 't': to = optarg; break;
        case 'a': abort_move = true; break;
        case 's': {
            slots = optarg;
            char lo[32], *dash = strchr(optarg, '-');
            size_t ll = dash ? (size_t)(dash - optarg) : strlen(optarg);
            if (ll == 0 || ll >= sizeof lo)
                return cli_usage("cluster move-slots", "bad --slots '%s' (want X-Y)", optarg);
            memcpy(lo, optarg, ll);
            lo[ll] = '\0';
            if (ss_parse_u64(lo, 0, SS_SLOT_COUNT - 1, &a) < 0 ||
                ss_parse_u64(dash ? dash + 1 : lo, 0, SS_SLOT_COUNT - 1, &b) < 0 || a > b)
                return cli_usage("cluster move-slots", "bad --slots '%s' (want X-Y, 0..%u)",
                                 optarg, SS_SLOT_COUNT - 1);
            m.first = (unsigned)a;
            m.last = (unsigned)b;
            break;
        }
        case 'b':
            if (ss_parse_u64(optarg, 0, CLI_MOVE_BATCH_BYTES_MAX, &v) < 0 || v == 0)
                return cli_usage("cluster move-slots", "--batch-bytes wants 1..%u",
                                 CLI_MOVE_BATCH_BYTES_MAX);
            m.batch_bytes = (uint32_t)v;
            break;
        case 'w':
            if (ss_parse_u64(optarg, 0, 3600000, &v) < 0 || v == 0)
                return cli_usage("cluster move-slots", "--wait-ms wants 1..3600000");
            m.wait_ms = (uint32_t)v;
            break;
        case 'T':
            if (ss_parse_u64(optarg, 0, 60000, &v) < 0)
                return cli_usage("cluster move-slots", "--throttle-ms wants 0..60000");
            m.throttle_ms = (uint32_t)v;
            break;
        default:
            return cli_usage("cluster move-slots", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (!url || !name || optind < argc)
        return cli_usage("cluster move-slots", "want --etcd URL --cluster NAME");
    bool have_args = from || to || slots;
    if (have_args && !(from && to && slots))
        return cli_usage("cluster move-slots", "--from, --to and --slots go together");
    if (strlen(name) > SS_TOPO_MAX_ID || (from && strlen(from) > SS_TOPO_MAX_ID) ||
        (to && strlen(to) > SS_TOPO_MAX_ID))
        return cli_usage("cluster move-slots", "a name is longer than %u bytes", SS_TOPO_MAX_ID);
    if (from)
        snprintf(m.from, sizeof m.from, "%s", from);
    if (to)
        snprintf(m.to, sizeof m.to, "%s", to);
    cli_etcd_key(m.topo_key, sizeof m.topo_key, name, "topology");
    cli_etcd_key(m.move_key, sizeof m.move_key, name, "move");
    if ((status = cli_etcd_open(url, &m.etcd)) != CLI_EXIT_OK)
        return status;
    status = run(&m, have_args, abort_move);
    ss_client_close(m.src);
    ss_client_close(m.dst);
    ss_topology_free(m.topo);
    ss_etcd_free(m.etcd);
    return status;
}
