#!/usr/bin/env bash
# Deployment files check (run by .ci/run): deploy/compose.yaml through `docker-compose config`
# (Debian's docker-compose; the compose v2 plugin is not packaged in bookworm) for each profile,
# and deploy/kubernetes/*.yaml parsed with PyYAML and held to what the examples promise: the
# authbridge container non-root with a read-only root, no capabilities, probes on the admin port,
# the secret from a Secret, state on a PersistentVolumeClaim. GLPI's and MariaDB's images cannot
# be pulled here, so nothing is started. kubeconform is not packaged in Debian and not used.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh

need_pkg docker-compose docker-compose || skip_or_fail "docker-compose is not installed"
py=python3
$py -c 'import yaml' 2>/dev/null || py=/usr/bin/python3
need_pkg python3-yaml "$py" && $py -c 'import yaml' 2>/dev/null || skip_or_fail "python3 with PyYAML is not available"

work=$(mktemp -d /tmp/authbridge-manifests.XXXXXX)
trap 'rm -rf "$work"' EXIT
for profile in m365 sandbox; do
  GLPI_DB_PASSWORD=ci-only docker-compose --project-directory deploy -f deploy/compose.yaml \
    --profile "$profile" config >"$work/compose-$profile.yaml"
  echo "==> docker-compose config --profile $profile: valid"
done
# Without the database password compose must refuse to start (no default password).
if docker-compose --project-directory deploy -f deploy/compose.yaml config >/dev/null 2>&1; then
  echo "FAIL: compose.yaml accepted an unset GLPI_DB_PASSWORD" >&2
  exit 1
fi

$py - "$work" <<'PY'
import glob, sys, yaml

work = sys.argv[1]
errors = []
def need(cond, what):
    if not cond:
        errors.append(what)

# --- compose, as docker-compose resolved it ---------------------------------------------------
# docker-compose v1 prints every service whatever the profile: check each one's `profiles`.
doc = yaml.safe_load(open(f"{work}/compose-m365.yaml"))
svc = doc["services"]
need({"glpi", "db", "authbridge", "authbridge-sandbox", "sandbox"} <= set(svc), f"compose services: {sorted(svc)}")
for name in ("glpi", "db"):
    need(not svc.get(name, {}).get("profiles"), f"compose {name}: must run in every profile")
need(svc.get("authbridge", {}).get("profiles") == ["m365"], "compose authbridge: not (only) in profile m365")
for name in ("sandbox", "authbridge-sandbox"):
    need(svc.get(name, {}).get("profiles") == ["sandbox"], f"compose {name}: not (only) in profile sandbox")
    need(svc.get(name, {}).get("network_mode") == "service:glpi", f"compose {name}: not in GLPI's network namespace")
for ab, state in (("authbridge", "/var/lib/authbridge"), ("authbridge-sandbox", "/etc/sandbox-data")):
    a = svc.get(ab, {})
    where = f"compose {ab}"
    need(a.get("network_mode") == "service:glpi", f"{where}: not in GLPI's network namespace")
    need(a.get("read_only") is True, f"{where}: root filesystem not read-only")
    need(a.get("cap_drop") == ["ALL"], f"{where}: capabilities not dropped")
    need(str(a.get("user")) == "10001:10001", f"{where}: user is {a.get('user')!r}")
    vols = [str(v) for v in a.get("volumes", [])]
    need(any(v.split(":")[0] in ("authbridge-state", "sandbox-data") and v.split(":")[1] == state for v in vols),
         f"{where}: no named volume at {state}")
    need(any(v.split(":")[1:] in (["/etc/authbridge/authbridge.yaml", "ro"],) for v in vols), f"{where}: no read-only config mount")

# --- kubernetes -------------------------------------------------------------------------------
docs = {}
for path in sorted(glob.glob("deploy/kubernetes/*.yaml")):
    for d in yaml.safe_load_all(open(path)):
        need(isinstance(d, dict) and "apiVersion" in d and "kind" in d, f"{path}: not a Kubernetes object")
        docs.setdefault(d["kind"], []).append(d)
need(set(docs) >= {"Deployment", "ConfigMap", "Secret", "PersistentVolumeClaim"}, f"kubernetes kinds: {sorted(docs)}")
dep = docs["Deployment"][0]["spec"]["template"]["spec"]
ctrs = {c["name"]: c for c in dep["containers"]}
need({"glpi", "authbridge"} <= set(ctrs), f"deployment containers: {sorted(ctrs)}")
a = ctrs["authbridge"]
sc = a.get("securityContext", {})
need(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 10001, "authbridge: not runAsNonRoot/10001")
need(sc.get("readOnlyRootFilesystem") is True, "authbridge: root filesystem not read-only")
need(sc.get("allowPrivilegeEscalation") is False, "authbridge: privilege escalation allowed")
need(sc.get("capabilities", {}).get("drop") == ["ALL"], "authbridge: capabilities not dropped")
need("limits" in a.get("resources", {}) and "requests" in a.get("resources", {}), "authbridge: no resources")
ports = {p["name"]: p["containerPort"] for p in a.get("ports", [])}
need(ports.get("admin") == 9925, "authbridge: no admin port 9925")
need(a.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "authbridge: liveness not /healthz")
need(a.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "authbridge: readiness not /readyz")
for probe in ("livenessProbe", "readinessProbe"):
    need(a.get(probe, {}).get("httpGet", {}).get("port") in ("admin", 9925), f"authbridge: {probe} not on the admin port")
env = {e["name"]: e for e in a.get("env", [])}
need(env.get("M365_CLIENT_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "authbridge-m365",
     "authbridge: M365_CLIENT_SECRET not from the Secret authbridge-m365")
mounts = {m["mountPath"]: m for m in a.get("volumeMounts", [])}
vols = {v["name"]: v for v in dep["volumes"]}
state = mounts.get("/var/lib/authbridge")
need(state is not None and "persistentVolumeClaim" in vols.get(state["name"], {}), "authbridge: state not on a PVC")
cfg = mounts.get("/etc/authbridge")
need(cfg is not None and cfg.get("readOnly") is True and "configMap" in vols.get(cfg["name"], {}),
     "authbridge: config not a read-only ConfigMap")
cm = {c["metadata"]["name"]: c for c in docs["ConfigMap"]}
conf = yaml.safe_load(cm["authbridge-config"]["data"]["authbridge.yaml"])
need(conf["providers"]["m365"]["client_secret"] == {"env": "M365_CLIENT_SECRET"}, "configmap: client_secret not { env: M365_CLIENT_SECRET }")
need(conf["state_dir"] == "/var/lib/authbridge", "configmap: state_dir is not the PVC mount")
need(conf.get("admin", {}).get("listen", "").endswith(":9925"), "configmap: admin listener not on 9925")

if errors:
    sys.exit("FAIL:\n  " + "\n  ".join(errors))
print("==> deploy/kubernetes: %d objects, sidecar settings as documented" % sum(map(len, docs.values())))
PY
echo "PASS: deployment files"
