#!/usr/bin/python3
"""check_manifests -- consistency checks of deploy/: Dockerfile, compose.yaml
and the Kubernetes manifests.

Parses every file (YAML with python3-yaml, the Dockerfile with a small
instruction parser) and checks what an operator relies on: stages and
install-deps modes, the non-root user, the /data volume, port 7450
everywhere, image names, probes, resources, volumes and claims, the model
ConfigMap (byte-identical to scripts/make-model.py's output), selectors, and
that every program a manifest runs is installed in the image; the metrics
ports (9450 server, 9451 worker), the HTTP probes on /healthz and /readyz,
the Prometheus scrape annotations, and that the Grafana dashboard
(deploy/grafana-dashboard.json) only queries metrics the programs register,
every one of which docs/deploy.md documents. With the build tree present,
every flag a manifest passes must appear in that program's --help.

The cluster variants (compose.cluster.yaml, k8s/sharded/, cluster-topology.json)
get the same checks plus: the topology files parse as ss_topology does
(every slot 0-16383 exactly once, known shard ids); each shard has its own
named volume / PVC at /data, a distinct STATESAVER_SHARD of the topology and
a STATESAVER_ADVERTISE that resolves (compose service name, or the pod's
name under the headless Service) and equals that shard's primary; shards
reach etcd by a name that exists; etcd runs a version-pinned etcd image with
a data volume and a consistent --initial-cluster; workers point at a shard.
Every STATESAVER_* variable a manifest gives a program must be mapped to a
flag by deploy/entrypoint.sh (or read by the health check), and the mapped
flags go to the --help check.

Usage: check_manifests.py [--source-root DIR] [--build-root DIR] [--self-test]
--self-test also breaks each manifest in memory in known ways and checks
that every breakage is reported. Exit 0 when all checks pass, 1 otherwise.
"""
import argparse
import base64
import copy
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.parse

import yaml

PORT = 7450
METRICS_PORT = 9450         # server --metrics-listen
WORKER_METRICS_PORT = 9451  # worker --metrics-listen
METRIC_SOURCES = ("server/server_metrics.c", "worker/serve_metrics.c")
IMAGE = "statesaver:latest"
PROGRAMS = {"statesaver-server", "statesaver-worker", "statesaver",
            "statesaver-entrypoint", "statesaver-healthcheck", "statesaver-demo"}
BINARIES = {"statesaver-server": "server/statesaver-server",
            "statesaver-worker": "worker/statesaver-worker",
            "statesaver": "client/statesaver"}


# ---- Dockerfile -----------------------------------------------------------

def parse_dockerfile(text):
    """List of (INSTRUCTION, argument text) with continuations joined."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def dockerfile_facts(instrs):
    args, stages, facts = {}, [], {"env": {}, "copies": []}
    for ins, rest in instrs:
        if ins == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        elif ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            base = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), ""), m.group(1))
            stages.append({"base": base, "name": m.group(2), "runs": [], "copies": []})
        elif ins == "RUN":
            stages[-1]["runs"].append(rest)
        elif ins == "COPY":
            stages[-1]["copies"].append(rest)
        elif ins == "ENV":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                facts["env"][k] = v
        else:
            facts.setdefault(ins, []).append(rest)
    facts["stages"] = stages
    return facts


def check_dockerfile(f, src, err):
    st = f["stages"]
    if len(st) < 2:
        err("Dockerfile: needs a build and a runtime stage, found %d" % len(st))
        return
    for s in st:
        if s["base"] != "debian:bookworm-slim":
            err("Dockerfile: stage %s is based on %r, not debian:bookworm-slim" % (s["name"], s["base"]))
    runs_build = " ".join(st[0]["runs"])
    runs_final = " ".join(st[-1]["runs"])
    if "install-deps --dev" not in runs_build:
        err("Dockerfile: build stage does not run scripts/install-deps --dev")
    if "install-deps --runtime" not in runs_final or "--dev" in runs_final:
        err("Dockerfile: runtime stage must run install-deps --runtime and nothing --dev")
    if not any("--from=" + (st[0]["name"] or "0") in c for c in st[-1]["copies"]):
        err("Dockerfile: runtime stage copies nothing from the build stage")
    if "meson install" not in runs_build or "DESTDIR=/stage" not in runs_build:
        err("Dockerfile: build stage does not meson install into /stage")
    for prog in BINARIES:
        if "statesaver-server statesaver-worker statesaver;" not in runs_build:
            err("Dockerfile: build stage does not check that %s was installed" % prog)
        if prog + " --version" not in runs_final:
            err("Dockerfile: runtime stage does not run %s --version" % prog)
    for script, prog in (("entrypoint.sh", "statesaver-entrypoint"),
                         ("healthcheck.sh", "statesaver-healthcheck"),
                         ("demo.sh", "statesaver-demo")):
        if not os.path.exists(os.path.join(src, "deploy", script)):
            err("Dockerfile: deploy/%s is missing" % script)
        if "deploy/%s /stage/usr/local/bin/%s" % (script, prog) not in runs_build:
            err("Dockerfile: %s not installed as %s" % (script, prog))
    if "make-model.py /stage/opt/statesaver/models/default.safetensors" not in runs_build:
        err("Dockerfile: no default model written in the build stage")
    for c in st[0]["copies"] + st[-1]["copies"]:
        if c.startswith("--from"):
            continue
        for p in shlex.split(c)[:-1]:
            if not os.path.exists(os.path.join(src, p)):
                err("Dockerfile: COPY source %s does not exist" % p)
    user = (f.get("USER") or [""])[-1].split(":")[0]
    if user in ("", "0", "root"):
        err("Dockerfile: final USER must be non-root, found %r" % user)
    vols = " ".join(f.get("VOLUME", []))
    if "/data" not in vols:
        err("Dockerfile: no VOLUME /data")
    exposed = " ".join(f.get("EXPOSE", [])).split()
    for p in (PORT, METRICS_PORT, WORKER_METRICS_PORT):
        if str(p) not in exposed:
            err("Dockerfile: EXPOSE %d missing" % p)
    hc = " ".join(f.get("HEALTHCHECK", []))
    if "statesaver-healthcheck" not in hc:
        err("Dockerfile: HEALTHCHECK must run statesaver-healthcheck")
    env = f["env"]
    want = {"STATESAVER_LISTEN": "0.0.0.0:%d" % PORT, "STATESAVER_DATA": "/data",
            "STATESAVER_MODEL": "/opt/statesaver/models/default.safetensors"}
    for k, v in want.items():
        if env.get(k) != v:
            err("Dockerfile: ENV %s should be %r, found %r" % (k, v, env.get(k)))
    if not env.get("STATESAVER_METRICS_LISTEN", "").endswith(":%d" % METRICS_PORT):
        err("Dockerfile: ENV STATESAVER_METRICS_LISTEN should listen on :%d, found %r"
            % (METRICS_PORT, env.get("STATESAVER_METRICS_LISTEN")))
    for k in ("STATESAVER_SERVER", "STATESAVER_SAVER", "STATESAVER_SYNC"):
        if k not in env:
            err("Dockerfile: ENV %s missing" % k)
    if "statesaver-entrypoint" not in " ".join(f.get("ENTRYPOINT", [])):
        err("Dockerfile: ENTRYPOINT must be statesaver-entrypoint")
    if "-t %s" % IMAGE not in open(os.path.join(src, "deploy", "Dockerfile")).read():
        err("Dockerfile: header does not document the image name %s" % IMAGE)


# ---- compose --------------------------------------------------------------

def argv_of(cmd):
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def check_program(where, argv, err):
    if argv and argv[0] not in PROGRAMS:
        err("%s: runs %r, which the image does not install" % (where, argv[0]))


def check_compose(c, src, err, flags):
    svcs = c.get("services") or {}
    for name in ("server", "worker", "demo"):
        if name not in svcs:
            err("compose: service %r missing" % name)
    if err.count:
        return
    vols = c.get("volumes") or {}
    for name, s in svcs.items():
        if s.get("image") != IMAGE:
            err("compose: service %s uses image %r, not %s" % (name, s.get("image"), IMAGE))
        check_program("compose " + name, argv_of(s.get("command")), err)
        flags.append(("compose " + name, argv_of(s.get("command"))))
    srv, wrk, demo = svcs["server"], svcs["worker"], svcs["demo"]
    b = srv.get("build") or {}
    df = os.path.normpath(os.path.join(src, "deploy", b.get("context", "."), b.get("dockerfile", "")))
    if df != os.path.join(src, "deploy", "Dockerfile"):
        err("compose: server build does not point at deploy/Dockerfile (%s)" % df)
    mounts = [str(v) for v in srv.get("volumes") or []]
    named = [m.split(":")[0] for m in mounts if m.endswith(":/data")]
    if not named or named[0] not in vols:
        err("compose: server must mount a named volume (declared under volumes:) at /data")
    ports = [str(p) for p in srv.get("ports") or []]
    if not any(p.endswith(":%d" % PORT) for p in ports):
        err("compose: server does not publish port %d" % PORT)
    if not srv.get("healthcheck", {}).get("test"):
        err("compose: server has no healthcheck")
    if srv.get("environment", {}).get("STATESAVER_DATA", "/data") != "/data":
        err("compose: server STATESAVER_DATA is not the /data volume")
    if not srv.get("environment", {}).get("STATESAVER_LISTEN", "").endswith(":%d" % PORT):
        err("compose: server STATESAVER_LISTEN does not use port %d" % PORT)
    if not srv.get("environment", {}).get("STATESAVER_METRICS_LISTEN", "").endswith(
            ":%d" % METRICS_PORT):
        err("compose: server STATESAVER_METRICS_LISTEN does not use port %d" % METRICS_PORT)
    if not any(p.endswith(":%d" % METRICS_PORT) for p in ports):
        err("compose: server does not publish the metrics port %d" % METRICS_PORT)
    if not (wrk.get("environment") or {}).get("STATESAVER_WORKER_METRICS_LISTEN", "").endswith(
            ":%d" % WORKER_METRICS_PORT):
        err("compose: worker STATESAVER_WORKER_METRICS_LISTEN does not use port %d"
            % WORKER_METRICS_PORT)
    for name, s in (("worker", wrk), ("demo", demo)):
        if s.get("environment", {}).get("STATESAVER_SERVER") != "server:%d" % PORT:
            err("compose: %s STATESAVER_SERVER is not server:%d" % (name, PORT))
        if "server" not in (s.get("depends_on") or {}):
            err("compose: %s does not depend on server" % name)
    for key in ("ports", "container_name"):
        if key in wrk:
            err("compose: worker sets %s, which breaks --scale" % key)
    if argv_of(wrk.get("command"))[:2] != ["statesaver-worker", "serve"]:
        err("compose: worker command is not statesaver-worker serve")
    if demo.get("restart") not in ("no", None) or not demo.get("profiles"):
        err("compose: demo must be a one-shot service behind a profile")


# ---- kubernetes -----------------------------------------------------------

def containers(doc):
    return ((doc.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []


def probe_argv(p):
    return ((p or {}).get("exec") or {}).get("command") or []


def check_workload(pre, w, err, flags, image_ok=None):
    """Selector, non-root pods, images, programs, probes and resources of a
    StatefulSet or Deployment; the argv of each container goes to `flags`."""
    kind = w["kind"]
    sel = w["spec"].get("selector", {}).get("matchLabels") or {}
    labels = w["spec"]["template"].get("metadata", {}).get("labels") or {}
    if not sel or any(labels.get(k) != v for k, v in sel.items()):
        err("%s: %s selector does not match its pod labels" % (pre, kind))
    sc = w["spec"]["template"]["spec"].get("securityContext") or {}
    if not sc.get("runAsNonRoot") or sc.get("runAsUser") in (None, 0):
        err("%s: %s pods must run as non-root" % (pre, kind))
    cs = containers(w)
    if not cs:
        err("%s: %s has no containers" % (pre, kind))
    for c in cs:
        where = "%s %s/%s" % (pre, kind, c.get("name"))
        argv = argv_of(c.get("command")) + argv_of(c.get("args"))
        if image_ok is not None:
            image_ok(where, c.get("image"), argv)
        else:
            if c.get("image") != IMAGE:
                err("%s: image %r, not %s" % (where, c.get("image"), IMAGE))
            check_program(where, argv, err)
            flags.append((where, argv[1:] if argv[:1] == ["statesaver-entrypoint"] else argv))
        for p in ("livenessProbe", "readinessProbe"):
            a = probe_argv(c.get(p))
            if not a and not (c.get(p) or {}).get("httpGet"):
                err("%s: no %s" % (where, p))
            if image_ok is None:
                check_program(where + " " + p, a, err)
        req = (c.get("resources") or {}).get("requests") or {}
        if "cpu" not in req or "memory" not in req:
            err("%s: resources.requests needs cpu and memory" % where)
        if not (c.get("resources") or {}).get("limits", {}).get("memory"):
            err("%s: no memory limit" % where)


def check_k8s(docs, src, err, flags):
    by = {}
    for d in docs:
        for k in ("apiVersion", "kind", "metadata"):
            if k not in d:
                err("k8s: a document lacks %s" % k)
        by.setdefault(d.get("kind"), {})[(d.get("metadata") or {}).get("name")] = d
    sts = by.get("StatefulSet", {}).get("statesaver-server")
    dep = by.get("Deployment", {}).get("statesaver-worker")
    svcs = by.get("Service", {})
    cms = by.get("ConfigMap", {})
    if sts is None or dep is None:
        err("k8s: needs StatefulSet statesaver-server and Deployment statesaver-worker")
        return
    if "statesaver" not in svcs:
        err("k8s: no Service named statesaver")
    head = svcs.get(sts["spec"].get("serviceName"))
    if head is None or head["spec"].get("clusterIP") != "None":
        err("k8s: StatefulSet serviceName must name a headless Service")
    if sts["spec"].get("replicas") != 1:
        err("k8s: the server StatefulSet must have exactly 1 replica (one LMDB owner)")
    for w in (sts, dep):
        check_workload("k8s", w, err, flags)
    # Server: port, volume claim on /data.
    srv = containers(sts)[0] if containers(sts) else {}
    ports = {p.get("name"): p.get("containerPort") for p in srv.get("ports") or []}
    if ports.get("rpc") != PORT:
        err("k8s server: containerPort rpc must be %d" % PORT)
    env = {e["name"]: e.get("value") for e in srv.get("env") or []}
    if not str(env.get("STATESAVER_LISTEN", "")).endswith(":%d" % PORT):
        err("k8s server: STATESAVER_LISTEN does not use port %d" % PORT)
    claims = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates") or []}
    mounts = {m["name"]: m["mountPath"] for m in srv.get("volumeMounts") or []}
    data = [n for n, p in mounts.items() if p == "/data"]
    if not data or data[0] not in claims:
        err("k8s server: /data must be mounted from a volumeClaimTemplate")
    else:
        spec = claims[data[0]]["spec"]
        if not spec.get("resources", {}).get("requests", {}).get("storage"):
            err("k8s server: the data claim requests no storage")
        if "ReadWriteOnce" not in (spec.get("accessModes") or []):
            err("k8s server: the data claim must be ReadWriteOnce")
    for name, s in svcs.items():
        sp = s.get("spec") or {}
        labels = sts["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in (sp.get("selector") or {}).items()):
            err("k8s Service %s: selector does not match the server pods" % name)
        for p in sp.get("ports") or []:
            if p.get("port") != PORT or p.get("targetPort") not in ("rpc", PORT):
                err("k8s Service %s: port must be %d to the rpc port" % (name, PORT))
    # Worker: server address, model volume from the ConfigMap.
    wc = containers(dep)[0] if containers(dep) else {}
    wenv = {e["name"]: e.get("value") for e in wc.get("env") or []}
    if wenv.get("STATESAVER_SERVER") != "statesaver:%d" % PORT:
        err("k8s worker: STATESAVER_SERVER must be the statesaver Service on %d" % PORT)
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes") or []}
    model = str(wenv.get("STATESAVER_MODEL", ""))
    found = False
    for m in wc.get("volumeMounts") or []:
        if model.startswith(m["mountPath"].rstrip("/") + "/"):
            cm_name = (vols.get(m["name"], {}).get("configMap") or {}).get("name")
            cm = cms.get(cm_name)
            key = model[len(m["mountPath"].rstrip("/")) + 1:]
            if cm is None or key not in (cm.get("binaryData") or {}):
                err("k8s worker: model %s is not a key of an existing ConfigMap" % model)
            found = True
    if not found:
        err("k8s worker: STATESAVER_MODEL %r is not under a mounted volume" % model)
    check_metrics_pod("k8s server", sts, "STATESAVER_METRICS_LISTEN", METRICS_PORT, err)
    check_metrics_pod("k8s worker", dep, "STATESAVER_WORKER_METRICS_LISTEN",
                      WORKER_METRICS_PORT, err)
    cm = cms.get("statesaver-model")
    if cm is None:
        err("k8s: ConfigMap statesaver-model missing")
    else:
        blob = base64.b64decode((cm.get("binaryData") or {}).get("model.safetensors", ""))
        spec = importlib.util.spec_from_file_location(
            "make_model", os.path.join(src, "scripts", "make-model.py"))
        mm = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mm)
        if blob != mm.model_bytes():
            err("k8s: ConfigMap model differs from scripts/make-model.py "
                "(regenerate: scripts/make-model.py --configmap deploy/k8s/model-configmap.yaml)")


def check_metrics_pod(where, w, env_name, port, err):
    """Metrics port, env, HTTP probes and scrape annotations of a workload."""
    c = containers(w)[0] if containers(w) else {}
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    if ports.get("metrics") != port:
        err("%s: containerPort metrics must be %d" % (where, port))
    env = {e["name"]: e.get("value") for e in c.get("env") or []}
    if not str(env.get(env_name, "")).endswith(":%d" % port):
        err("%s: %s does not listen on port %d" % (where, env_name, port))
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        p = c.get(probe)
        if p is None and probe == "startupProbe":
            continue
        hg = (p or {}).get("httpGet") or {}
        if hg.get("path") != path or hg.get("port") not in ("metrics", port):
            err("%s: %s must be httpGet %s on the metrics port, found %r"
                % (where, probe, path, hg or (p or {}).get("exec")))
    ann = (w["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port) \
            or ann.get("prometheus.io/path", "/metrics") != "/metrics":
        err("%s: pod annotations must say prometheus.io/scrape \"true\", port \"%d\", "
            "path /metrics" % (where, port))


def metric_names(src):
    """Metric names the programs register (string literals in their sources)."""
    names = set()
    for rel in METRIC_SOURCES:
        with open(os.path.join(src, rel)) as f:
            names |= set(re.findall(r'"(statesaver_[a-z0-9_]+)"', f.read()))
    return names


def check_dashboard(dash, src, err):
    """Dashboard JSON: panels with queries of registered metrics; docs list them all."""
    if not isinstance(dash, dict) or not dash.get("panels"):
        err("grafana: deploy/grafana-dashboard.json has no panels")
        return
    names = metric_names(src)
    ids, queried = set(), set()
    for p in dash["panels"]:
        if p.get("id") in ids:
            err("grafana: panel id %r used twice" % p.get("id"))
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            err("grafana: panel %r has no queries" % p.get("title"))
        for t in p.get("targets") or []:
            for m in re.findall(r"statesaver_[a-z0-9_]+", t.get("expr", "")):
                base = re.sub(r"_(bucket|sum|count)$", "", m)
                if m not in names and base not in names:
                    err("grafana: panel %r queries %s, which no program registers"
                        % (p.get("title"), m))
                queried.add(m if m in names else base)
    with open(os.path.join(src, "docs", "deploy.md")) as f:
        docs = f.read()
    for n in sorted(names):
        if n not in docs:
            err("docs/deploy.md does not document the metric %s" % n)
    for n in ("statesaver_requests_total", "statesaver_request_duration_seconds",
              "statesaver_commit_duration_seconds", "statesaver_queue_queued",
              "statesaver_worker_steps_total", "statesaver_worker_lease_roundtrip_seconds"):
        if n not in queried:
            err("grafana: no panel shows %s" % n)


def check_kustomization(k, k8s_dir, err, pre="k8s"):
    files = sorted(f for f in os.listdir(k8s_dir)
                   if f.endswith(".yaml") and f != "kustomization.yaml")
    if sorted(k.get("resources") or []) != files:
        err("%s: kustomization resources %s != files %s" % (pre, k.get("resources"), files))


# ---- cluster: topology, compose.cluster.yaml, k8s/sharded -----------------

SLOT_COUNT = 16384             # SS_SLOT_COUNT (common/ss_topology.h)
TOPO_MAX_ID = 64               # SS_TOPO_MAX_ID
TOPO_MAX_ADDR = 255            # SS_TOPO_MAX_ADDR
ETCD_PORT = 2379
ETCD_IMAGE_RE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)*[\w.-]*etcd[\w.-]*:v?\d+\.\d+\.\d+$")
SHARD_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,%d}$" % TOPO_MAX_ID)
CLUSTER_ENV = {"STATESAVER_ETCD": "--etcd", "STATESAVER_CLUSTER": "--cluster",
               "STATESAVER_SHARD": "--shard", "STATESAVER_ADVERTISE": "--advertise",
               "STATESAVER_TOPOLOGY_INIT": "--topology-init"}


def split_hostport(a):
    """(host, port) of HOST:PORT, or None."""
    host, sep, port = str(a).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def check_topology(where, t, err):
    """Python twin of ss_topology_parse + ss_topology_validate: every slot
    0-16383 exactly once, by a known shard. Returns {id: primary}."""
    if not isinstance(t, dict):
        err("%s: topology is not a JSON object" % where)
        return {}
    cl, ep = t.get("cluster"), t.get("epoch")
    if cl is not None and (not isinstance(cl, str) or len(cl.encode()) > TOPO_MAX_ID):
        err("%s: \"cluster\" must be a string of at most %d bytes" % (where, TOPO_MAX_ID))
    if ep is not None and (not isinstance(ep, int) or isinstance(ep, bool) or ep < 0):
        err("%s: \"epoch\" must be a non-negative integer" % where)
    shards, slots = t.get("shards"), t.get("slots")
    if not isinstance(shards, list) or not isinstance(slots, list):
        err("%s: \"shards\" and \"slots\" must be arrays" % where)
        return {}
    ids = {}
    for i, s in enumerate(shards):
        sid, pr = (s or {}).get("id"), (s or {}).get("primary")
        if not isinstance(sid, str) or not SHARD_ID_RE.match(sid) or not isinstance(pr, str) \
                or len(pr) > TOPO_MAX_ADDR or split_hostport(pr) is None:
            err("%s: shard %d: bad id %r or primary %r (HOST:PORT)" % (where, i, sid, pr))
            continue
        if sid in ids:
            err("%s: shard %d: id '%s' appears twice" % (where, i, sid))
        reps = s.get("replicas", [])
        if not isinstance(reps, list) or any(not isinstance(r, str) or split_hostport(r) is None
                                             for r in reps):
            err("%s: shard '%s': replicas must be an array of HOST:PORT" % (where, sid))
        ids[sid] = pr
    if not ids:
        err("%s: topology has no shards" % where)
    owner = [None] * SLOT_COUNT
    for i, r in enumerate(slots):
        f, l, sh = (r or {}).get("first"), (r or {}).get("last"), (r or {}).get("shard")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (f, l)) \
                or not 0 <= f <= l < SLOT_COUNT:
            err("%s: slot range %d (%r-%r): slots are integers 0-%d, first <= last"
                % (where, i, f, l, SLOT_COUNT - 1))
            continue
        if sh not in ids:
            err("%s: slot range %d (%d-%d) names unknown shard %r" % (where, i, f, l, sh))
            continue
        taken = [s for s in range(f, l + 1) if owner[s] is not None]
        if taken:
            err("%s: slot range %d (%d-%d, shard '%s') overlaps slot %d of shard '%s'"
                % (where, i, f, l, sh, taken[0], owner[taken[0]]))
            continue
        for s in range(f, l + 1):
            owner[s] = sh
    free = [s for s in range(SLOT_COUNT) if owner[s] is None]
    if free and ids:
        err("%s: %d slots (first %d) are not assigned to any shard" % (where, len(free), free[0]))
    return ids


def slot_map(t):
    return sorted((r.get("first"), r.get("last"), r.get("shard")) for r in t.get("slots") or [])


def entrypoint_env(text):
    """{program: {ENV: flag}} from deploy/entrypoint.sh, and the set of
    variables it expands {ordinal}/{hostname} in."""
    srv_at, wrk_at = text.find("statesaver-server)"), text.find("statesaver-worker)")
    end = text.find("*)", wrk_at)
    parts = {"statesaver-server": text[srv_at:wrk_at], "statesaver-worker": text[wrk_at:end]}
    pat = re.compile(r'set -- (--[\w-]+) "(?:\$\(expand ")?\$(STATESAVER_\w+)')
    maps = {p: {v: f for f, v in pat.findall(t)} for p, t in parts.items()}
    expanded = set(re.findall(r'\$\(expand "\$(STATESAVER_\w+)"\)', text))
    return maps, expanded


def env_dict(e):
    """compose environment (mapping or list of K=V) or k8s env list -> dict."""
    if isinstance(e, dict):
        return {k: ("" if v is None else str(v)) for k, v in e.items()}
    out = {}
    for x in e or []:
        if isinstance(x, dict):
            out[x["name"]] = str(x.get("value", "")) if "valueFrom" not in x else None
        else:
            k, _, v = str(x).partition("=")
            out[k] = v
    return out


def check_env(envs, ep_text, hc_text, err, flags):
    """Every STATESAVER_* variable a manifest gives statesaver-server or
    statesaver-worker serve must be mapped to a flag by the entrypoint (or
    read by the health check); the mapped flags go to the --help check."""
    maps, expanded = entrypoint_env(ep_text)
    hc_vars = set(re.findall(r"\$\{?(STATESAVER_\w+)", hc_text))
    for var, flag in CLUSTER_ENV.items():
        if maps["statesaver-server"].get(var) != flag:
            err("deploy/entrypoint.sh: %s is not passed to statesaver-server as %s (found %r)"
                % (var, flag, maps["statesaver-server"].get(var)))
    for prog, m in maps.items():
        flags.append(("deploy/entrypoint.sh env", [prog] + sorted(set(m.values()))))
    for where, prog, env in envs:
        m = maps.get(prog, {})
        for k, v in env.items():
            if not k.startswith("STATESAVER_"):
                continue
            if k not in m and k not in hc_vars:
                err("%s: %s is set but deploy/entrypoint.sh maps it to no %s flag "
                    "(silently ignored)" % (where, k, prog))
            if v and ("{ordinal}" in v or "{hostname}" in v) and k not in expanded:
                err("%s: %s=%r uses {ordinal}/{hostname}, which the entrypoint does not "
                    "expand in it" % (where, k, v))


def entry_prog(argv):
    """statesaver-server / statesaver-worker (serve) behind the entrypoint, or None."""
    a = argv[1:] if argv[:1] == ["statesaver-entrypoint"] else argv
    if a[:1] == ["statesaver-server"]:
        return "statesaver-server"
    if a[:2] == ["statesaver-worker", "serve"]:
        return "statesaver-worker"
    return None


def check_etcd_image(where, image, argv, err):
    if not ETCD_IMAGE_RE.match(str(image)):
        err("%s: etcd image %r is not pinned to a version tag (NAME:vX.Y.Z)" % (where, image))
    if argv[:1] != ["etcd"]:
        err("%s: runs %r, not etcd (what the etcd image installs)" % (where, argv[:1]))


def flag_value(argv, flag):
    for i, a in enumerate(argv):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_initial_cluster(where, argv, members, err):
    """--initial-cluster must name exactly `members` {name: peer host}."""
    ic = flag_value(argv, "--initial-cluster") or ""
    got = {}
    for m in ic.split(","):
        n, _, u = m.partition("=")
        got[n] = urllib.parse.urlsplit(u).hostname
    if got != members:
        err("%s: --initial-cluster %r does not list the members %s" % (where, ic, members))


def check_compose_cluster(c, topo, src, err, flags, envs):
    pre = "compose.cluster"
    svcs = c.get("services") or {}
    vols = c.get("volumes") or {}
    etcd = {n: s for n, s in svcs.items() if "etcd" in str(s.get("image", ""))
            or argv_of(s.get("command"))[:1] == ["etcd"]}
    shards = {n: s for n, s in svcs.items() if entry_prog(argv_of(s.get("command"))) ==
              "statesaver-server"}
    workers = {n: s for n, s in svcs.items() if entry_prog(argv_of(s.get("command"))) ==
               "statesaver-worker"}
    ids = check_topology("deploy/cluster-topology.json", topo, err)
    built = False
    for name, s in svcs.items():
        where = "%s %s" % (pre, name)
        argv = argv_of(s.get("command"))
        if name in etcd:
            check_etcd_image(where, s.get("image"), argv, err)
        else:
            if s.get("image") != IMAGE:
                err("%s: image %r, not %s" % (where, s.get("image"), IMAGE))
            check_program(where, argv, err)
            flags.append((where, argv))
            envs.append((where, entry_prog(argv), env_dict(s.get("environment"))))
            check_program(where + " healthcheck",
                          [a for a in argv_of((s.get("healthcheck") or {}).get("test"))
                           if a not in ("CMD", "CMD-SHELL")], err)
        if "cluster" not in (s.get("profiles") or []):
            err("%s: not behind the \"cluster\" profile" % where)
        b = s.get("build")
        if b:
            df = os.path.normpath(os.path.join(src, "deploy", b.get("context", "."),
                                               b.get("dockerfile", "")))
            if df != os.path.join(src, "deploy", "Dockerfile"):
                err("%s: build does not point at deploy/Dockerfile (%s)" % (where, df))
            built = True
    if not built:
        err("%s: no service builds %s from deploy/Dockerfile" % (pre, IMAGE))
    if len(etcd) != 1 or not shards or not workers:
        err("%s: needs one etcd service, shard services and a worker (found etcd %s, "
            "shards %s, workers %s)" % (pre, sorted(etcd), sorted(shards), sorted(workers)))
        return

    def mounts(s):
        out = {}
        for v in s.get("volumes") or []:
            parts = str(v).split(":")
            if len(parts) >= 2:
                out[parts[1]] = (parts[0], parts[2:])
        return out

    # etcd: a named data volume at its --data-dir, client port 2379.
    en, es = next(iter(etcd.items()))
    eargv = argv_of(es.get("command"))
    ddir = flag_value(eargv, "--data-dir")
    m = mounts(es).get(ddir)
    if not ddir or not m or m[0] not in vols:
        err("%s %s: --data-dir %r is not a named volume (declared under volumes:)"
            % (pre, en, ddir))
    check_initial_cluster("%s %s" % (pre, en), eargv, {flag_value(eargv, "--name"): en}, err)
    lcu = flag_value(eargv, "--listen-client-urls") or ""
    if ":%d" % ETCD_PORT not in lcu:
        err("%s %s: does not listen for clients on %d" % (pre, en, ETCD_PORT))
    # Shards: own volume, distinct ids of the topology, advertise = primary.
    seen_vol, seen_id = {}, {}
    for name, s in shards.items():
        where = "%s %s" % (pre, name)
        env = env_dict(s.get("environment"))
        ms = mounts(s)
        data = ms.get("/data")
        if data is None or data[0] not in vols:
            err("%s: /data is not a named volume declared under volumes:" % where)
        elif data[0] in seen_vol:
            err("%s: /data volume %s is also %s's: every shard needs its own"
                % (where, data[0], seen_vol[data[0]]))
        else:
            seen_vol[data[0]] = name
        if env.get("STATESAVER_DATA", "/data") != "/data":
            err("%s: STATESAVER_DATA is not the /data volume" % where)
        listen = split_hostport(env.get("STATESAVER_LISTEN", ""))
        if listen is None or listen[1] != PORT:
            err("%s: STATESAVER_LISTEN does not use port %d" % (where, PORT))
        if not env.get("STATESAVER_METRICS_LISTEN", "").endswith(":%d" % METRICS_PORT):
            err("%s: STATESAVER_METRICS_LISTEN does not use port %d" % (where, METRICS_PORT))
        if not (s.get("healthcheck") or {}).get("test"):
            err("%s: no healthcheck" % where)
        sid = env.get("STATESAVER_SHARD")
        if sid in seen_id:
            err("%s: STATESAVER_SHARD %r is also %s's" % (where, sid, seen_id[sid]))
        seen_id[sid] = name
        if sid not in ids:
            err("%s: STATESAVER_SHARD %r is not a shard of deploy/cluster-topology.json %s"
                % (where, sid, sorted(ids)))
        adv = env.get("STATESAVER_ADVERTISE", "")
        hp = split_hostport(adv)
        if hp is None or hp[0] not in shards or hp[1] != PORT:
            err("%s: STATESAVER_ADVERTISE %r is not HOST:%d of a shard service" % (where, adv, PORT))
        elif hp[0] != name:
            err("%s: STATESAVER_ADVERTISE %r names another service" % (where, adv))
        if sid in ids and ids[sid] != adv:
            err("%s: STATESAVER_ADVERTISE %r is not shard %s's primary %r in the topology"
                % (where, adv, sid, ids[sid]))
        u = urllib.parse.urlsplit(env.get("STATESAVER_ETCD", ""))
        if u.scheme != "http" or u.hostname != en or (u.port or 80) != ETCD_PORT:
            err("%s: STATESAVER_ETCD %r is not http://%s:%d" % (where, env.get("STATESAVER_ETCD"),
                                                               en, ETCD_PORT))
        if en not in (s.get("depends_on") or {}):
            err("%s: does not depend on %s" % (where, en))
        if env.get("STATESAVER_CLUSTER") != topo.get("cluster"):
            err("%s: STATESAVER_CLUSTER %r is not the topology's cluster %r"
                % (where, env.get("STATESAVER_CLUSTER"), topo.get("cluster")))
        ti = env.get("STATESAVER_TOPOLOGY_INIT")
        tm = ms.get(ti)
        if tm is None or os.path.normpath(os.path.join(src, "deploy", tm[0])) != \
                os.path.join(src, "deploy", "cluster-topology.json") or "ro" not in tm[1]:
            err("%s: STATESAVER_TOPOLOGY_INIT %r is not ./cluster-topology.json mounted read-only"
                % (where, ti))
    if ids and set(seen_id) != set(ids):
        err("%s: shards %s != topology shards %s" % (pre, sorted(seen_id), sorted(ids)))
    for name, s in workers.items():
        where = "%s %s" % (pre, name)
        env = env_dict(s.get("environment"))
        for k in ("STATESAVER_SERVER", "STATESAVER_HEALTH_SERVER"):
            if k not in env and k == "STATESAVER_HEALTH_SERVER":
                continue
            hp = split_hostport(env.get(k, ""))
            if hp is None or hp[0] not in shards or hp[1] != PORT:
                err("%s: %s %r is not a shard service on %d" % (where, k, env.get(k), PORT))
            elif hp[0] not in (s.get("depends_on") or {}):
                err("%s: does not depend on %s" % (where, hp[0]))
        if not env.get("STATESAVER_WORKER_METRICS_LISTEN", "").endswith(":%d" % WORKER_METRICS_PORT):
            err("%s: STATESAVER_WORKER_METRICS_LISTEN does not use port %d"
                % (where, WORKER_METRICS_PORT))
        for key in ("ports", "container_name"):
            if key in s:
                err("%s: sets %s, which breaks --scale" % (where, key))


def check_k8s_sharded(docs, kust, topo_file, src, err, flags, envs):
    pre = "k8s/sharded"
    by = {}
    for d in docs:
        for k in ("apiVersion", "kind", "metadata"):
            if k not in d:
                err("%s: a document lacks %s" % (pre, k))
        by.setdefault(d.get("kind"), {})[(d.get("metadata") or {}).get("name")] = d
    stss = by.get("StatefulSet", {})
    svcs = by.get("Service", {})
    cms = by.get("ConfigMap", {})
    shard = [w for w in stss.values() if containers(w) and
             entry_prog(argv_of(containers(w)[0].get("command")) +
                        argv_of(containers(w)[0].get("args"))) == "statesaver-server"]
    etcd = [w for w in stss.values() if containers(w) and
            "etcd" in str(containers(w)[0].get("image", ""))]
    deps = [w for w in by.get("Deployment", {}).values() if containers(w) and
            entry_prog(argv_of(containers(w)[0].get("command")) +
                       argv_of(containers(w)[0].get("args"))) == "statesaver-worker"]
    if len(shard) != 1 or len(etcd) != 1 or len(deps) != 1:
        err("%s: needs one shard StatefulSet, one etcd StatefulSet and one worker Deployment"
            % pre)
        return
    sts, ests, dep = shard[0], etcd[0], deps[0]

    def etcd_image(where, image, argv):
        check_etcd_image(where, image, argv, err)

    check_workload(pre, sts, err, flags)
    check_workload(pre, dep, err, flags)
    check_workload(pre + " etcd", ests, err, flags, etcd_image)

    def pod_labels(w):
        return w["spec"]["template"].get("metadata", {}).get("labels") or {}

    def selects(svc, w):
        sel = (svc.get("spec") or {}).get("selector") or {}
        return bool(sel) and all(pod_labels(w).get(k) == v for k, v in sel.items())

    def headless(w, what):
        h = svcs.get(w["spec"].get("serviceName"))
        if h is None or h["spec"].get("clusterIP") != "None" or not selects(h, w):
            err("%s: %s serviceName %r must name a headless Service selecting its pods"
                % (pre, what, w["spec"].get("serviceName")))
            return None
        return h

    # etcd: data from a claim at --data-dir, reachable by pod DNS name.
    ec = containers(ests)[0]
    eargv = argv_of(ec.get("command")) + argv_of(ec.get("args"))
    ddir = flag_value(eargv, "--data-dir")
    eclaims = {t["metadata"]["name"] for t in ests["spec"].get("volumeClaimTemplates") or []}
    if not any(m.get("mountPath") == ddir and m.get("name") in eclaims
               for m in ec.get("volumeMounts") or []):
        err("%s etcd: --data-dir %r is not mounted from a volumeClaimTemplate" % (pre, ddir))
    ehead = headless(ests, "etcd StatefulSet")
    eport = {p.get("name"): p.get("containerPort") for p in ec.get("ports") or []}.get("client")
    etcd_hosts = {ests["metadata"]["name"]}
    if ehead is not None:
        en = ehead["metadata"]["name"]
        etcd_hosts = {en} | {"%s-%d.%s" % (ests["metadata"]["name"], i, en)
                             for i in range(ests["spec"].get("replicas", 1))}
        check_initial_cluster(pre + " etcd", eargv, {
            "%s-%d" % (ests["metadata"]["name"], i): "%s-%d.%s" % (ests["metadata"]["name"], i, en)
            for i in range(ests["spec"].get("replicas", 1))}, err)
    # Shards.
    c = containers(sts)[0]
    env = env_dict(c.get("env"))
    envs.append(("%s StatefulSet/%s" % (pre, c.get("name")), "statesaver-server", env))
    head = headless(sts, "shard StatefulSet")
    if head is not None and not head["spec"].get("publishNotReadyAddresses"):
        err("%s: headless Service %s must publish not-ready shards (publishNotReadyAddresses)"
            % (pre, head["metadata"]["name"]))
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    if ports.get("rpc") != PORT:
        err("%s shard: containerPort rpc must be %d" % (pre, PORT))
    listen = split_hostport(env.get("STATESAVER_LISTEN", ""))
    if listen is None or listen[1] != PORT:
        err("%s shard: STATESAVER_LISTEN does not use port %d" % (pre, PORT))
    if env.get("STATESAVER_DATA", "/data") != "/data":
        err("%s shard: STATESAVER_DATA is not /data" % pre)
    claims = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates") or []}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    dm = mounts.get("/data")
    if dm is None or dm["name"] not in claims:
        err("%s shard: /data must be mounted from a volumeClaimTemplate (one PVC per shard)" % pre)
    else:
        spec = claims[dm["name"]]["spec"]
        if not spec.get("resources", {}).get("requests", {}).get("storage") or \
                "ReadWriteOnce" not in (spec.get("accessModes") or []):
            err("%s shard: the data claim must be ReadWriteOnce and request storage" % pre)
    check_metrics_pod(pre + " shard", sts, "STATESAVER_METRICS_LISTEN", METRICS_PORT, err)
    u = urllib.parse.urlsplit(env.get("STATESAVER_ETCD") or "")
    if u.scheme != "http" or u.hostname not in etcd_hosts or u.port != eport:
        err("%s shard: STATESAVER_ETCD %r is not http://HOST:%s with HOST one of %s"
            % (pre, env.get("STATESAVER_ETCD"), eport, sorted(etcd_hosts)))
    # The topology it creates: a ConfigMap key mounted at STATESAVER_TOPOLOGY_INIT.
    ti = env.get("STATESAVER_TOPOLOGY_INIT") or ""
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes") or []}
    topo = None
    for mp, m in mounts.items():
        if ti.startswith(mp.rstrip("/") + "/"):
            cm = cms.get((vols.get(m["name"], {}).get("configMap") or {}).get("name"))
            key = ti[len(mp.rstrip("/")) + 1:]
            if cm is not None and key in (cm.get("data") or {}):
                try:
                    topo = json.loads(cm["data"][key])
                except ValueError as e:
                    err("%s: topology ConfigMap key %s is not JSON: %s" % (pre, key, e))
                    topo = {}
    if topo is None:
        err("%s shard: STATESAVER_TOPOLOGY_INIT %r is not a key of a mounted ConfigMap" % (pre, ti))
        topo = {}
    ids = check_topology(pre + " topology ConfigMap", topo, err)
    if topo and isinstance(topo_file, dict) and slot_map(topo) != slot_map(topo_file):
        err("%s: the topology ConfigMap's slots differ from deploy/cluster-topology.json" % pre)
    if env.get("STATESAVER_CLUSTER") != topo.get("cluster"):
        err("%s shard: STATESAVER_CLUSTER %r is not the topology's cluster %r"
            % (pre, env.get("STATESAVER_CLUSTER"), topo.get("cluster")))
    # Every pod's shard id and address, as the entrypoint expands them.
    n = sts["spec"].get("replicas", 1)
    got = {}
    for o in range(n):
        host = "%s-%d" % (sts["metadata"]["name"], o)

        def x(v):
            return str(v or "").replace("{hostname}", host).replace("{ordinal}", str(o))
        sid, adv = x(env.get("STATESAVER_SHARD")), x(env.get("STATESAVER_ADVERTISE"))
        if sid in got:
            err("%s: pods %s and %s both get STATESAVER_SHARD %r" % (pre, got[sid], host, sid))
        got[sid] = host
        if sid not in ids:
            err("%s: pod %s gets STATESAVER_SHARD %r, not a topology shard %s"
                % (pre, host, sid, sorted(ids)))
        hp = split_hostport(adv)
        hs = head["metadata"]["name"] if head is not None else None
        names = {"%s.%s" % (host, hs), "%s.%s.svc" % (host, hs)}
        if hp is None or not (hp[0] in names or re.match(
                r"^%s\.%s\.[a-z0-9-]+\.svc(\.cluster\.local)?$" % (re.escape(host), re.escape(str(hs))),
                hp[0])) or hp[1] != PORT:
            err("%s: pod %s advertises %r, not %s.<headless Service>:%d"
                % (pre, host, adv, host, PORT))
        if sid in ids and ids[sid] != adv:
            err("%s: pod %s advertises %r but the topology's primary of %s is %r"
                % (pre, host, adv, sid, ids[sid]))
    if ids and set(got) != set(ids):
        err("%s: %d shard pods (ids %s) != topology shards %s"
            % (pre, n, sorted(got), sorted(ids)))
    # Workers: STATESAVER_SERVER a Service of the shards (or a shard pod).
    wc = containers(dep)[0]
    wenv = env_dict(wc.get("env"))
    envs.append(("%s Deployment/%s" % (pre, wc.get("name")), "statesaver-worker", wenv))
    hp = split_hostport(wenv.get("STATESAVER_SERVER", ""))
    ok = hp is not None and hp[1] == PORT and (
        (hp[0] in svcs and selects(svcs[hp[0]], sts) and
         any(p.get("port") == PORT and p.get("targetPort") in ("rpc", PORT)
             for p in svcs[hp[0]]["spec"].get("ports") or [])) or hp[0] in got.values())
    if not ok:
        err("%s worker: STATESAVER_SERVER %r is not a Service of the shards on %d"
            % (pre, wenv.get("STATESAVER_SERVER"), PORT))
    check_metrics_pod(pre + " worker", dep, "STATESAVER_WORKER_METRICS_LISTEN",
                      WORKER_METRICS_PORT, err)
    for name, s in svcs.items():
        if not any(selects(s, w) for w in (sts, ests, dep)):
            err("%s: Service %s selects no pods" % (pre, name))
    if kust is None:
        err("%s: kustomization.yaml missing" % pre)
    else:
        check_kustomization(kust, os.path.join(src, "deploy", "k8s", "sharded"), err, pre)


# ---- flags against --help ---------------------------------------------------

def entrypoint_flags(text, hc_text):
    """Flags the entrypoint and health check add on the programs' behalf."""
    server_part, _, worker_part = text.partition("statesaver-worker)")
    out = [("deploy/entrypoint.sh", ["statesaver-server"] + re.findall(r"has (--[\w-]+)", server_part)),
           ("deploy/entrypoint.sh", ["statesaver-worker"] + re.findall(r"has (--[\w-]+)", worker_part))]
    code = "\n".join(l for l in hc_text.splitlines() if not l.lstrip().startswith("#"))
    out.append(("deploy/healthcheck.sh", ["statesaver"] + re.findall(r"(?<![\w-])(--[a-z][\w-]*)", code)))
    return out


HELP_CACHE = {}


def check_flags(flags, build, err, note):
    """Every --flag a manifest passes must appear in the program's --help."""
    helps = {}
    for prog, rel in BINARIES.items():
        if (build, prog) in HELP_CACHE:
            helps[prog] = HELP_CACHE[(build, prog)]
            continue
        path = os.path.join(build, rel)
        if not os.access(path, os.X_OK):
            note("flags of %s not checked: %s not built" % (prog, path))
            continue
        argv = [path, "serve", "--help"] if prog == "statesaver-worker" else [path, "--help"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            err("`%s %s` exited %d: flags cannot be checked"
                % (prog, " ".join(argv[1:]), r.returncode))
            continue
        helps[prog] = HELP_CACHE[(build, prog)] = r.stdout + r.stderr
    for where, argv in flags:
        if not argv or argv[0] not in helps:
            continue
        for a in argv[1:]:
            # A whole word of the help: --cluster must not pass on --cluster-config.
            if a.startswith("--") and not re.search(
                    r"(?<![\w-])%s(?![\w-])" % re.escape(a.split("=")[0]), helps[argv[0]]):
                err("%s: %s does not accept %s (not in its --help)" % (where, argv[0], a))


# ---- driver -----------------------------------------------------------------

class Errors:
    def __init__(self, quiet=False):
        self.msgs, self.quiet = [], quiet

    def __call__(self, msg):
        self.msgs.append(msg)
        if not self.quiet:
            print("FAIL: " + msg)

    @property
    def count(self):
        return len(self.msgs)


def load(src):
    d = os.path.join(src, "deploy")
    with open(os.path.join(d, "Dockerfile")) as f:
        dfile = dockerfile_facts(parse_dockerfile(f.read()))
    with open(os.path.join(d, "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    docs = []
    k8s = os.path.join(d, "k8s")
    kust = None
    for name in sorted(os.listdir(k8s)):
        if name.endswith(".yaml"):
            with open(os.path.join(k8s, name)) as f:
                found = [x for x in yaml.safe_load_all(f) if x is not None]
            if name == "kustomization.yaml":
                kust = found[0]
            else:
                docs += found
    with open(os.path.join(d, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    cl = {"docs": [], "kust": None}
    with open(os.path.join(d, "compose.cluster.yaml")) as f:
        cl["compose"] = yaml.safe_load(f)
    with open(os.path.join(d, "cluster-topology.json")) as f:
        cl["topology"] = json.load(f)
    sharded = os.path.join(k8s, "sharded")
    for name in sorted(os.listdir(sharded)):
        if name.endswith(".yaml"):
            with open(os.path.join(sharded, name)) as f:
                found = [x for x in yaml.safe_load_all(f) if x is not None]
            if name == "kustomization.yaml":
                cl["kust"] = found[0]
            else:
                cl["docs"] += found
    for key, rel in (("entrypoint", "entrypoint.sh"), ("healthcheck", "healthcheck.sh")):
        with open(os.path.join(d, rel)) as f:
            cl[key] = f.read()
    return dfile, compose, docs, kust, dash, cl


def run_checks(src, build, dfile, compose, docs, kust, dash, cl, err, note):
    flags, envs = [], []
    check_dockerfile(dfile, src, err)
    check_compose(compose, src, err, flags)
    for name, s in (compose.get("services") or {}).items():
        prog = entry_prog(argv_of(s.get("command")))
        if prog:
            envs.append(("compose " + name, prog, env_dict(s.get("environment"))))
    check_k8s(docs, src, err, flags)
    for d in docs:
        for c in containers(d):
            prog = entry_prog(argv_of(c.get("command")) + argv_of(c.get("args")))
            if prog:
                envs.append(("k8s %s/%s" % (d["kind"], c.get("name")), prog, env_dict(c.get("env"))))
    check_compose_cluster(cl["compose"], cl["topology"], src, err, flags, envs)
    check_k8s_sharded(cl["docs"], cl["kust"], cl["topology"], src, err, flags, envs)
    check_env(envs, cl["entrypoint"], cl["healthcheck"], err, flags)
    check_dashboard(dash, src, err)
    if kust is not None:
        check_kustomization(kust, os.path.join(src, "deploy", "k8s"), err)
    else:
        err("k8s: kustomization.yaml missing")
    if build:
        flags += entrypoint_flags(cl["entrypoint"], cl["healthcheck"])
        check_flags(flags, build, err, note)


def cluster_breakages():
    """Breakages of compose.cluster.yaml, k8s/sharded, the topology and the
    entrypoint's variable mapping (b[5] is load()'s cluster dict)."""
    def svc(name):
        return lambda b: b[5]["compose"]["services"][name]

    def cenv(name, k, v):
        def f(b):
            e = b[5]["compose"]["services"][name]["environment"]
            if v is None:
                e.pop(k)
            else:
                e[k] = v
        return f

    def cvol(name, fn):
        def f(b):
            s = b[5]["compose"]["services"][name]
            s["volumes"] = fn(list(s["volumes"]))
        return f

    def kdoc(kind, name, fn):
        def f(b):
            for d in b[5]["docs"]:
                if d["kind"] == kind and d["metadata"]["name"] == name:
                    fn(d)
        return f

    def kenv(kind, name, k, v):
        def fn(d):
            for e in containers(d)[0]["env"]:
                if e["name"] == k:
                    e["value"] = v
        return kdoc(kind, name, fn)

    def topo_cm(fn):
        def f(d):
            t = json.loads(d["data"]["topology.json"])
            fn(t)
            d["data"]["topology.json"] = json.dumps(t)
        return kdoc("ConfigMap", "statesaver-topology", f)

    def etcd_no_data(d):
        containers(d)[0]["volumeMounts"] = []

    def readiness_healthz(d):
        containers(d)[0]["readinessProbe"]["httpGet"]["path"] = "/healthz"

    def shard_replicas(d):
        d["spec"]["replicas"] = 4

    def shard_no_claim(d):
        d["spec"]["volumeClaimTemplates"] = []

    def shard_env_add(d):
        containers(d)[0]["env"].append({"name": "STATESAVER_SHARDS", "value": "s{ordinal}"})

    def not_headless(d):
        d["spec"]["clusterIP"] = "10.0.0.9"

    def ep_rename(b):
        b[5]["entrypoint"] = b[5]["entrypoint"].replace(
            'set -- --etcd "$STATESAVER_ETCD"', 'set -- --etcd-url "$STATESAVER_ETCD"')

    return {
        "cluster topology with a slot gap":
            lambda b: b[5]["topology"]["slots"][1].__setitem__("first", 5470),
        "cluster topology overlap":
            lambda b: b[5]["topology"]["slots"][1].__setitem__("first", 5000),
        "cluster topology unknown shard":
            lambda b: b[5]["topology"]["slots"][2].__setitem__("shard", "s9"),
        "cluster topology duplicate shard id":
            lambda b: b[5]["topology"]["shards"][1].__setitem__("id", "s0"),
        "cluster topology slot 16384":
            lambda b: b[5]["topology"]["slots"][2].__setitem__("last", 16384),
        "compose.cluster shards share a volume":
            cvol("shard1", lambda v: [x.replace("shard1-data", "shard0-data") for x in v]),
        "compose.cluster shard without /data":
            cvol("shard2", lambda v: [x for x in v if not x.endswith(":/data")]),
        "compose.cluster duplicate shard id": cenv("shard2", "STATESAVER_SHARD", "s1"),
        "compose.cluster shard id not in topology": cenv("shard1", "STATESAVER_SHARD", "s7"),
        "compose.cluster advertise unknown host": cenv("shard1", "STATESAVER_ADVERTISE", "shard9:7450"),
        "compose.cluster advertise other shard": cenv("shard1", "STATESAVER_ADVERTISE", "shard2:7450"),
        "compose.cluster etcd URL wrong host": cenv("shard0", "STATESAVER_ETCD", "http://etcd0:2379"),
        "compose.cluster unmapped env var": cenv("shard0", "STATESAVER_SHARDS", "s0"),
        "compose.cluster cluster name mismatch": cenv("shard0", "STATESAVER_CLUSTER", "other"),
        "compose.cluster worker at etcd": cenv("worker", "STATESAVER_SERVER", "etcd:2379"),
        "compose.cluster etcd image latest":
            lambda b: svc("etcd")(b).__setitem__("image", "gcr.io/etcd-development/etcd:latest"),
        "compose.cluster etcd image untagged":
            lambda b: svc("etcd")(b).__setitem__("image", "quay.io/coreos/etcd"),
        "compose.cluster etcd without data volume": lambda b: svc("etcd")(b).pop("volumes"),
        "compose.cluster shard other image":
            lambda b: svc("shard2")(b).__setitem__("image", "statesaver:dev"),
        "compose.cluster worker unknown program":
            lambda b: svc("worker")(b).__setitem__("command", ["python3", "-m", "worker"]),
        "compose.cluster shard without profile": lambda b: svc("shard1")(b).pop("profiles"),
        "compose.cluster topology not mounted":
            cvol("shard0", lambda v: [x for x in v if "topology" not in x]),
        "k8s/sharded shard readiness on /healthz":
            kdoc("StatefulSet", "statesaver-shard", readiness_healthz),
        "k8s/sharded 4 shard pods, 3 in topology":
            kdoc("StatefulSet", "statesaver-shard", shard_replicas),
        "k8s/sharded shards without PVC": kdoc("StatefulSet", "statesaver-shard", shard_no_claim),
        "k8s/sharded fixed shard id": kenv("StatefulSet", "statesaver-shard", "STATESAVER_SHARD", "s0"),
        "k8s/sharded advertise wrong Service":
            kenv("StatefulSet", "statesaver-shard", "STATESAVER_ADVERTISE", "{hostname}.statesaver:7450"),
        "k8s/sharded advertise without pod name":
            kenv("StatefulSet", "statesaver-shard", "STATESAVER_ADVERTISE", "statesaver-shard:7450"),
        "k8s/sharded etcd URL to nothing":
            kenv("StatefulSet", "statesaver-shard", "STATESAVER_ETCD", "http://etcd:2379"),
        "k8s/sharded unmapped env var": kdoc("StatefulSet", "statesaver-shard", shard_env_add),
        "k8s/sharded headless Service not headless": kdoc("Service", "statesaver-shard", not_headless),
        "k8s/sharded etcd image latest": kdoc("StatefulSet", "statesaver-etcd", lambda d: containers(d)[0].__setitem__("image", "quay.io/coreos/etcd:latest")),
        "k8s/sharded etcd without data volume": kdoc("StatefulSet", "statesaver-etcd", etcd_no_data),
        "k8s/sharded 3 etcd replicas, 1 initial member":
            kdoc("StatefulSet", "statesaver-etcd", lambda d: d["spec"].__setitem__("replicas", 3)),
        "compose.cluster etcd --name not in --initial-cluster":
            lambda b: svc("etcd")(b)["command"].__setitem__(1, "--name=etcd1"),
        "k8s/sharded worker at unknown server":
            kenv("Deployment", "statesaver-worker", "STATESAVER_SERVER", "statesaver-x:7450"),
        "k8s/sharded worker image": kdoc("Deployment", "statesaver-worker", lambda d: containers(d)[0].__setitem__("image", "statesaver:1")),
        "k8s/sharded topology ConfigMap gap": topo_cm(lambda t: t["slots"].pop()),
        "k8s/sharded topology ConfigMap primary differs":
            topo_cm(lambda t: t["shards"][0].__setitem__("primary", "shard0:7450")),
        "k8s/sharded kustomization missing a file": lambda b: b[5]["kust"]["resources"].pop(),
        "entrypoint maps STATESAVER_ETCD to --etcd-url": ep_rename,
    }


def flag_breakages():
    """Breakages only the --help check sees (run with a build tree)."""
    def typo(b):
        for d in b[5]["docs"]:
            if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "statesaver-shard":
                containers(d)[0]["args"] = ["--topology-int", "/etc/statesaver/topology.json"]

    def ep_flag(b):
        b[5]["entrypoint"] = b[5]["entrypoint"].replace(
            'set -- --shard "$(expand', 'set -- --shard-id "$(expand').replace(
            'has --shard "$@"', 'has --shard-id "$@"')

    return {"k8s/sharded shard flag not in --help (--topology-int)": typo,
            "entrypoint passes --shard-id, not in --help": ep_flag,
            "compose.cluster shard flag --cluster-name":
                lambda b: b[5]["compose"]["services"]["shard1"].__setitem__(
                    "command", ["statesaver-server", "--cluster-name", "x"])}


def self_test(src, base, build=None):
    """Break the manifests in known ways; each must be reported."""
    def k8s_edit(kind, fn):
        def f(b):
            for d in b[2]:
                if d["kind"] == kind:
                    fn(d)
        return f

    def drop_probe(d):
        del containers(d)[0]["livenessProbe"]

    def no_requests(d):
        containers(d)[0]["resources"]["requests"].pop("memory")

    def wrong_port(d):
        containers(d)[0]["ports"][0]["containerPort"] = 7451

    def no_claim(d):
        d["spec"]["volumeClaimTemplates"] = []

    def bad_image(d):
        containers(d)[0]["image"] = "other:1"

    def two_servers(d):
        d["spec"]["replicas"] = 2

    def cm_tamper(d):
        if d["metadata"]["name"] == "statesaver-model":
            d["binaryData"]["model.safetensors"] = base64.b64encode(b"x").decode()

    def root_user(d):
        d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
        d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False

    def exec_liveness(d):
        containers(d)[0]["livenessProbe"] = {"exec": {"command": ["statesaver-healthcheck"]}}

    def readiness_on_rpc(d):
        containers(d)[0]["readinessProbe"]["httpGet"]["port"] = 7450

    def no_annotations(d):
        d["spec"]["template"]["metadata"].pop("annotations", None)

    def metrics_port_9999(d):
        for p in containers(d)[0]["ports"]:
            if p["name"] == "metrics":
                p["containerPort"] = 9999

    def dash_unknown(b):
        b[4]["panels"][-1]["targets"][0]["expr"] = "rate(statesaver_no_such_metric_total[1m])"

    breakages = {
        "k8s server liveness as exec": k8s_edit("StatefulSet", exec_liveness),
        "k8s worker readiness on the rpc port": k8s_edit("Deployment", readiness_on_rpc),
        "k8s server without scrape annotations": k8s_edit("StatefulSet", no_annotations),
        "k8s worker metrics port 9999": k8s_edit("Deployment", metrics_port_9999),
        "grafana query of an unknown metric": dash_unknown,
        "grafana without panels": lambda b: b[4].__setitem__("panels", []),
        "compose server metrics unpublished": lambda b: b[1]["services"]["server"]["ports"].pop(),
        "compose worker without metrics env": lambda b: b[1]["services"]["worker"]["environment"].pop(
            "STATESAVER_WORKER_METRICS_LISTEN"),
        "Dockerfile metrics off": lambda b: b[0]["env"].pop("STATESAVER_METRICS_LISTEN"),
        "k8s server without liveness probe": k8s_edit("StatefulSet", drop_probe),
        "k8s worker without memory request": k8s_edit("Deployment", no_requests),
        "k8s server on port 7451": k8s_edit("StatefulSet", wrong_port),
        "k8s server without volume claim": k8s_edit("StatefulSet", no_claim),
        "k8s worker with another image": k8s_edit("Deployment", bad_image),
        "k8s two server replicas": k8s_edit("StatefulSet", two_servers),
        "k8s model ConfigMap changed": k8s_edit("ConfigMap", cm_tamper),
        "k8s worker as root": k8s_edit("Deployment", root_user),
        "compose worker with ports": lambda b: b[1]["services"]["worker"].__setitem__("ports", ["7450:7450"]),
        "compose server without volume": lambda b: b[1]["services"]["server"].pop("volumes"),
        "compose server without healthcheck": lambda b: b[1]["services"]["server"].pop("healthcheck"),
        "compose image mismatch": lambda b: b[1]["services"]["demo"].__setitem__("image", "statesaver:old"),
        "compose unknown program": lambda b: b[1]["services"]["demo"].__setitem__("command", ["python3", "x"]),
        "compose missing worker": lambda b: b[1]["services"].pop("worker"),
        "Dockerfile root user": lambda b: b[0].__setitem__("USER", ["root"]),
        "Dockerfile without HEALTHCHECK": lambda b: b[0].pop("HEALTHCHECK"),
        "Dockerfile without /data volume": lambda b: b[0].__setitem__("VOLUME", ['["/var/lib/x"]']),
        "Dockerfile single stage": lambda b: b[0]["stages"].pop(0),
        "Dockerfile runtime with -dev": lambda b: b[0]["stages"][-1]["runs"].append("install-deps --dev"),
        "Dockerfile other base": lambda b: b[0]["stages"][0].__setitem__("base", "ubuntu:24.04"),
        "kustomization missing a file": lambda b: b[3]["resources"].pop(),
    }
    breakages.update(cluster_breakages())
    if build:
        breakages.update(flag_breakages())
    else:
        print("note: self-test: %d --help breakages not run (no build tree)" % len(flag_breakages()))
    failed = 0
    for name, breaker in breakages.items():
        b = copy.deepcopy(base)
        breaker(b)
        e = Errors(quiet=True)
        run_checks(src, build, *b, e, lambda m: None)
        if e.count == 0:
            print("FAIL: self-test: breakage not detected: " + name)
            failed += 1
        else:
            print("ok   self-test %-40s -> %s" % (name, e.msgs[0]))
    return failed, len(breakages)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-root", default=os.environ.get("SS_SOURCE_ROOT") or
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--build-root", default=os.environ.get("SS_BUILD_ROOT"))
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    src = os.path.abspath(a.source_root)
    base = load(src)
    err = Errors()
    run_checks(src, a.build_root, *copy.deepcopy(base), err, lambda m: print("note: " + m))
    passed = 1 if err.count == 0 else 0
    failed = 1 - passed
    if a.self_test:
        f, n = self_test(src, base, a.build_root)
        failed += f
        passed += n - f
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
