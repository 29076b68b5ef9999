/* cli_cluster -- `statesaver cluster`: init (write a first topology into
 * etcd), add-shard (name a new, empty shard in it), status (the topology
 * and what every shard says), move-slots (the resharding mover,
 * cli_mover.c).
 */
#include "cli.h"
#include "cli_mover.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_etcd.h"
#include "ss_parse.h"
#include "ss_topology.h"
#include "statesaver.pb-c.h"

static const char cluster_usage[] =
    "usage: statesaver cluster init --etcd URL --cluster NAME --shards ID=HOST:PORT,...\n"
    "       statesaver cluster add-shard --etcd URL --cluster NAME --shard ID=HOST:PORT\n"
    "       statesaver cluster status [--json]\n"
    "       statesaver cluster move-slots --etcd URL --cluster NAME --from A --to B\n"
    "                                     --slots X-Y [--batch-bytes N]\n"
    "  init        write a first topology (epoch 1, slots split evenly over the\n"
    "              shards in the order given) to etcd key /statesaver/NAME/topology;\n"
    "              refused when the cluster already has one\n"
    "  add-shard   name a new shard (owning no slots yet) in the topology, epoch + 1;\n"
    "              start it with --shard ID, then move slots to it\n"
    "  status      the topology (from --server or --cluster) and, per shard, its\n"
    "              address, whether it answers, the epoch it serves, its slots and\n"
    "              frozen ranges\n"
    "  move-slots  move slots X..Y from shard A to shard B online (see docs/cluster.md);\n"
    "              rerun after any failure: it resumes or rolls back\n";

/* ---- init ----------------------------------------------------------------- */

static int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {
        {"etcd", required_argument, NULL, 'e'},
        {"cluster", required_argument, NULL, 'c'},
        {"shards", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *etcd_url = NULL, *name = NULL, *shards = NULL;
    ss_topology *t = NULL;
    ss_etcd *etcd = NULL;
    char *list = NULL, *json = NULL, key[CLI_ETCD_KEY_MAX], err[1024];
    int o, status = CLI_EXIT_FAIL;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(cluster_usage, stdout); return CLI_EXIT_OK;
        case 'e': etcd_url = optarg; break;
        case 'c': name = optarg; break;
        case 's': shards = optarg; break;
        default: return cli_usage("cluster init", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (!etcd_url || !name || !shards || optind < argc)
        return cli_usage("cluster init", "want --etcd URL --cluster NAME --shards ID=HOST:PORT,...");
    t = ss_topology_new(name);
    list = strdup(shards);
    if (!t || !list) {
        cli_error("out of memory");
        goto out;
    }
    for (char *save = NULL, *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(e, '=');
        if (!eq || eq == e) {
            status = cli_usage("cluster init", "bad shard '%s' (want ID=HOST:PORT)", e);
            goto out;
        }
        *eq = '\0';
        int rc = ss_topology_add_shard(t, e, eq + 1);
        if (rc < 0) {
            status = cli_usage("cluster init", "shard '%s' at '%s': %s", e, eq + 1,
                               rc == SS_ERR_CONFLICT ? "id given twice" : "bad id or address");
            goto out;
        }
    }
    ss_topology_set_epoch(t, 1);
    if (ss_topology_assign_even(t) < 0 || ss_topology_validate(t, err, sizeof err) < 0) {
        status = cli_usage("cluster init", "%s", err);
        goto out;
    }
    json = ss_topology_to_json(t);
    if (!json) {
        cli_error("out of memory");
        goto out;
    }
    if (cli_etcd_open(etcd_url, &etcd) != CLI_EXIT_OK)
        goto out;
    cli_etcd_key(key, sizeof key, name, "topology");
    int rc = ss_etcd_cas(etcd, key, json, strlen(json), 0, NULL, err, sizeof err);
    if (rc == SS_ERR_CONFLICT) {
        cli_error("cluster '%s' already has a topology in etcd (%s); not overwritten", name,
                  key);
        goto out;
    }
    if (rc < 0) {
        cli_error("etcd %s: %s", etcd_url, err);
        goto out;
    }
    printf("cluster %s: epoch 1, %zu shards written to %s\n", name, ss_topology_n_shards(t),
           key);
    for (size_t i = 0; i < ss_topology_n_ranges(t); i++) {
        unsigned first, last;
        int sh;
        ss_topology_range(t, i, &first, &last, &sh);
        printf("  slots %u-%u -> %s (%s)\n", first, last, ss_topology_shard_id(t, (size_t)sh),
               ss_topology_shard_primary(t, (size_t)sh));
    }
    status = CLI_EXIT_OK;
out:
    ss_etcd_free(etcd);
    free(json);
    free(list);
    ss_topology_free(t);
    return status;
}

/* ---- add-shard --------------------------------------------------------------- */

/* One attempt: read the topology, add the shard, write it back by
 * compare-and-swap on the revision read. ADD_RETRY = someone else wrote
 * in between (try again), else a CLI exit status. */
#define ADD_RETRY (-1)
static int add_shard_once(ss_etcd *etcd, const char *key, const char *id, const char *addr)
{
    char *val = NULL, *json = NULL, err[1024];
    size_t len = 0;
    int64_t rev = 0;
    ss_topology *t = NULL;
    int status = CLI_EXIT_FAIL;
    int rc = ss_etcd_get(etcd, key, &val, &len, &rev, NULL, err, sizeof err);
    if (rc == SS_ERR_NOT_FOUND) {
        cli_error("no topology at %s (run `statesaver cluster init` first)", key);
        goto out;
    }
    if (rc < 0) {
        cli_error("etcd: %s", err);
        goto out;
    }
    if (ss_topology_parse(val, len, &t, err, sizeof err) < 0) {
        cli_error("topology at %s: %s", key, err);
        goto out;
    }
    int have = ss_topology_find_shard(t, id);
    if (have >= 0) {
        if (strcmp(ss_topology_shard_primary(t, (size_t)have), addr) == 0) {
            printf("shard %s (%s) is in the topology already (epoch %llu)\n", id, addr,
                   (unsigned long long)ss_topology_epoch(t));
            status = CLI_EXIT_OK;
        } else {
            cli_error("shard %s is in the topology already at %s, not %s", id,
                      ss_topology_shard_primary(t, (size_t)have), addr);
        }
        goto out;
    }
    rc = ss_topology_add_shard(t, id, addr);
    if (rc < 0) {
        status = cli_usage("cluster add-shard", "shard '%s' at '%s': %s", id, addr,
                           rc == SS_ERR_FULL ? "too many shards" : "bad id or address");
        goto out;
    }
    ss_topology_set_epoch(t, ss_topology_epoch(t) + 1);
    if (!(json = ss_topology_to_json(t))) {
        cli_error("out of memory");
        goto out;
    }
    rc = ss_etcd_cas(etcd, key, json, strlen(json), rev, NULL, err, sizeof err);
    if (rc == SS_ERR_CONFLICT) {
        status = ADD_RETRY;
        goto out;
    }
    if (rc < 0) {
        cli_error("etcd: %s", err);
        goto out;
    }
    printf("shard %s (%s) added, owning no slots; topology epoch %llu\n", id, addr,
           (unsigned long long)ss_topology_epoch(t));
    status = CLI_EXIT_OK;
out:
    free(json);
    free(val);
    ss_topology_free(t);
    return status;
}

static int cmd_add_shard(int argc, char **argv)
{
    static const struct option opts[] = {
        {"etcd", required_argument, NULL, 'e'},
        {"cluster", required_argument, NULL, 'c'},
        {"shard", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *etcd_url = NULL, *name = NULL, *spec = NULL;
    char key[CLI_ETCD_KEY_MAX], id[SS_TOPO_MAX_ID + 1];
    ss_etcd *etcd = NULL;
    int o, status = CLI_EXIT_FAIL;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(cluster_usage, stdout); return CLI_EXIT_OK;
        case 'e': etcd_url = optarg; break;
        case 'c': name = optarg; break;
        case 's': spec = optarg; break;
        default: return cli_usage("cluster add-shard", "bad option '%s'", argv[optind - 1]);
        }
    }
    const char *eq = spec ? strchr(spec, '=') : NULL;
    if (!etcd_url || !name || !eq || eq == spec || (size_t)(eq - spec) > SS_TOPO_MAX_ID ||
        optind < argc)
        return cli_usage("cluster add-shard",
                         "want --etcd URL --cluster NAME --shard ID=HOST:PORT");
    memcpy(id, spec, (size_t)(eq - spec));
    id[eq - spec] = '\0';
    if (cli_etcd_open(etcd_url, &etcd) != CLI_EXIT_OK)
        goto out;
    cli_etcd_key(key, sizeof key, name, "topology");
    for (unsigned t = 0; t < CLI_MOVE_CAS_TRIES; t++)
        if ((status = add_shard_once(etcd, key, id, eq + 1)) != ADD_RETRY)
            goto out;
    cli_error("the topology kept changing; %u compare-and-swap attempts failed",
              CLI_MOVE_CAS_TRIES);
    status = CLI_EXIT_FAIL;
out:
    ss_etcd_free(etcd);
    return status;
}

/* ---- status ------------------------------------------------------------------ */

int cli_topology_call(ss_client *sc, Statesaver__V1__Response **out)
{
    Statesaver__V1__TopologyRequest t = STATESAVER__V1__TOPOLOGY_REQUEST__INIT;
    Statesaver__V1__Request req = STATESAVER__V1__REQUEST__INIT;
    req.body_case = STATESAVER__V1__REQUEST__BODY_TOPOLOGY;
    req.topology = &t;
    int rc = ss_client_call(sc, &req, 0, out);
    if (rc == 0 && (*out)->body_case != STATESAVER__V1__RESPONSE__BODY_TOPOLOGY) {
        ss_client_response_free(*out);
        *out = NULL;
        rc = SS_ERR_PROTO;
    }
    return rc;
}

static char *ranges_text(Statesaver__V1__SlotRange **r, size_t n)
{
    size_t cap = 16 + n * 24;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t off = 0;
    s[0] = '\0';
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(s + off, cap - off, "%s%u-%u", i ? "," : "", r[i]->first,
                                r[i]->last);
    return s;
}

static int cmd_status(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    bool json = false;
    ss_cluster *c = NULL;
    cJSON *obj = NULL, *arr = NULL;
    int o, status, down = 0;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(cluster_usage, stdout); return CLI_EXIT_OK;
        case 'j': json = true; break;
        default: return cli_usage("cluster status", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage("cluster status", "unexpected argument '%s'", argv[optind]);
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        return status;
    status = CLI_EXIT_FAIL;
    if (json) {
        obj = cJSON_CreateObject();
        if (!obj || !cJSON_AddStringToObject(obj, "cluster", ss_cluster_name(c)) ||
            !cJSON_AddNumberToObject(obj, "epoch", (double)ss_cluster_epoch(c)) ||
            !(arr = cJSON_AddArrayToObject(obj, "shards")))
            goto nomem;
    } else {
        printf("cluster %s  epoch %llu  shards %zu\n",
               ss_cluster_name(c)[0] ? ss_cluster_name(c) : "(none)",
               (unsigned long long)ss_cluster_epoch(c), ss_cluster_shards(c));
    }
    for (size_t i = 0; i < ss_cluster_shards(c); i++) {
        ss_client *sc = NULL;
        Statesaver__V1__Response *r = NULL;
        const char *why = "";
        int rc = ss_cluster_client(c, i, &sc);
        if (rc < 0)
            why = ss_cluster_last_error(c);
        else if ((rc = cli_topology_call(sc, &r)) < 0)
            why = ss_client_last_error(sc)[0] ? ss_client_last_error(sc) : ss_strerror(rc);
        const Statesaver__V1__TopologyResponse *tp = r ? r->topology : NULL;
        char *frozen = tp ? ranges_text(tp->frozen, tp->n_frozen) : NULL;
        if (rc < 0)
            down++;
        if (!json) {
            printf("  %-12s %-22s slots=%-5u %s", ss_cluster_shard_id(c, i),
                   ss_cluster_shard_address(c, i), ss_cluster_shard_slots(c, i),
                   rc < 0 ? "DOWN" : "up");
            if (tp)
                printf("  epoch=%llu source=%s%s%s%s", (unsigned long long)tp->epoch,
                       tp->source, tp->stale ? " STALE" : "",
                       frozen && frozen[0] ? " frozen=" : "", frozen ? frozen : "");
            else
                printf("  (%s)", why);
            printf("\n");
        } else {
            cJSON *so = cJSON_CreateObject();
            if (!so || !cJSON_AddItemToArray(arr, so) ||
                !cJSON_AddStringToObject(so, "id", ss_cluster_shard_id(c, i)) ||
                !cJSON_AddStringToObject(so, "address", ss_cluster_shard_address(c, i)) ||
                !cJSON_AddNumberToObject(so, "slots", ss_cluster_shard_slots(c, i)) ||
                !cJSON_AddBoolToObject(so, "up", rc == 0) ||
                (tp && (!cJSON_AddNumberToObject(so, "epoch", (double)tp->epoch) ||
                        !cJSON_AddStringToObject(so, "source", tp->source) ||
                        !cJSON_AddBoolToObject(so, "stale", tp->stale) ||
                        !cJSON_AddStringToObject(so, "frozen", frozen ? frozen : ""))) ||
                (!tp && !cJSON_AddStringToObject(so, "error", why))) {
                free(frozen);
                ss_client_response_free(r);
                goto nomem;
            }
        }
        free(frozen);
        ss_client_response_free(r);
    }
    if (obj) {
        char *text = cJSON_PrintUnformatted(obj);
        if (!text)
            goto nomem;
        printf("%s\n", text);
        free(text);
    }
    status = down ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    if (down)
        cli_error("%d shard(s) did not answer", down);
    goto out;
nomem:
    cli_error("out of memory");
out:
    cJSON_Delete(obj);
    ss_cluster_close(c);
    return status;
}

int cli_cmd_cluster(const cli_ctx *ctx, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage("cluster", "want init, add-shard, status or move-slots");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(cluster_usage, stdout);
        return CLI_EXIT_OK;
    }
    optind = 0;
    if (strcmp(sub, "init") == 0)
        return cmd_init(argc - 1, argv + 1);
    if (strcmp(sub, "add-shard") == 0)
        return cmd_add_shard(argc - 1, argv + 1);
    if (strcmp(sub, "status") == 0)
        return cmd_status(ctx, argc - 1, argv + 1);
    if (strcmp(sub, "move-slots") == 0)
        return cli_mover_main(ctx, argc - 1, argv + 1);
    return cli_usage("cluster", "unknown subcommand '%s'", sub);
}
