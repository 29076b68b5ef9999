#!/usr/bin/env python3
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
        kind = w["kind"]
        sel = w["spec"].get("selector", {}).get("matchLabels") or {}
        labels = w["spec"]["template"].get("metadata", {}).get("labels") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            err("k8s: %s selector does not match its pod labels" % kind)
        sc = w["spec"]["template"]["spec"].get("securityContext") or {}
        if not sc.get("runAsNonRoot") or sc.get("runAsUser") in (None, 0):
            err("k8s: %s pods must run as non-root" % kind)
        cs = containers(w)
        if not cs:
            err("k8s: %s has no containers" % kind)
        for c in cs:
            where = "k8s %s/%s" % (kind, c.get("name"))
            if c.get("image") != IMAGE:
                err("%s: image %r, not %s" % (where, c.get("image"), IMAGE))
            argv = argv_of(c.get("command")) + argv_of(c.get("args"))
            check_program(where, argv, err)
            flags.append((where, argv[1:] if argv[:1] == ["statesaver-entrypoint"] else argv))
            for p in ("livenessProbe", "readinessProbe"):
                a = probe_argv(c.get(p))
                if not a and not (c.get(p) or {}).get("httpGet"):
                    err("%s: no %s" % (where, p))
                check_program(where + " " + p, a, err)
            req = (c.get("resources") or {}).get("requests") or {}
            if "cpu" not in req or "memory" not in req:
                err("%s: resources.requests needs cpu and memory" % where)
            if not (c.get("resources") or {}).get("limits", {}).get("memory"):
                err("%s: no memory limit" % where)
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


def check_kustomization(k, k8s_dir, err):
    files = sorted(f for f in os.listdir(k8s_dir)
                   if f.endswith(".yaml") and f != "kustomization.yaml")
    if sorted(k.get("resources") or []) != files:
        err("k8s: kustomization resources %s != files %s" % (k.get("resources"), files))


# ---- flags against --help ---------------------------------------------------

def entrypoint_flags(src):
    """Flags the entrypoint and health check add on the programs' behalf."""
    with open(os.path.join(src, "deploy", "entrypoint.sh")) as f:
        text = f.read()
    server_part, _, worker_part = text.partition("statesaver-worker)")
    out = [("deploy/entrypoint.sh", ["statesaver-server"] + re.findall(r"has (--[\w-]+)", server_part)),
           ("deploy/entrypoint.sh", ["statesaver-worker"] + re.findall(r"has (--[\w-]+)", worker_part))]
    with open(os.path.join(src, "deploy", "healthcheck.sh")) as f:
        code = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("#"))
    out.append(("deploy/healthcheck.sh", ["statesaver"] + re.findall(r"(?<![\w-])(--[a-z][\w-]*)", code)))
    return out


def check_flags(flags, build, err, note):
    """Every --flag a manifest passes must appear in the program's --help."""
    helps = {}
    for prog, rel in BINARIES.items():
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
        helps[prog] = r.stdout + r.stderr
    for where, argv in flags:
        if not argv or argv[0] not in helps:
            continue
        for a in argv[1:]:
            if a.startswith("--") and a.split("=")[0] not in helps[argv[0]]:
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
    return dfile, compose, docs, kust, dash


def run_checks(src, build, dfile, compose, docs, kust, dash, err, note):
    flags = []
    check_dockerfile(dfile, src, err)
    check_compose(compose, src, err, flags)
    check_k8s(docs, src, err, flags)
    check_dashboard(dash, src, err)
    if kust is not None:
        check_kustomization(kust, os.path.join(src, "deploy", "k8s"), err)
    else:
        err("k8s: kustomization.yaml missing")
    if build:
        flags += entrypoint_flags(src)
        check_flags(flags, build, err, note)


def self_test(src, base):
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
    failed = 0
    for name, breaker in breakages.items():
        b = copy.deepcopy(base)
        breaker(b)
        e = Errors(quiet=True)
        run_checks(src, None, *b, e, lambda m: None)
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
        f, n = self_test(src, base)
        failed += f
        passed += n - f
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
