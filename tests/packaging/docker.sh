#!/usr/bin/env bash
# Container check (run by .ci/run): build the sidecar image and the sandbox image from the
# Dockerfile's own builder stage, start the sandbox container (fake Entra ID + Exchange Online),
# run authbridge's image against it the way an operator would (read-only root filesystem, state on
# a named volume, non-root, no capabilities, config mounted read-only), send a mail through the
# container's SMTP listener and read it back through its IMAP listener, check the logs are JSON
# and hold no secret, then `docker stop` and require a clean exit within the grace period.
#
# Public registries are unreachable here, so the bases are made offline once per machine by
# tests/packaging/bases.sh (debootstrap + docker import) and crates are vendored into
# deploy/vendor (git-ignored) so the build needs no network. Set PUBLIC_BASES=1 to build with
# rust:1-bookworm / debian:bookworm-slim instead (a machine that can pull them).
#
# Starts dockerd itself when none answers and stops it by its pid at the end. Exits non-zero on
# any failure; under CI=true a missing tool is a failure, elsewhere it may skip with one line.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh
started=$SECONDS

[ "$(id -u)" = 0 ] || skip_or_fail "docker check needs root (dockerd, debootstrap)"
need_pkg docker.io dockerd docker || skip_or_fail "docker.io is not installed"
need_pkg curl curl || skip_or_fail "curl is not installed"
need_pkg python3 python3 || skip_or_fail "python3 is not installed"
[ -n "${PUBLIC_BASES:-}" ] || need_pkg debootstrap debootstrap || skip_or_fail "debootstrap is not installed"

work=$(mktemp -d /tmp/authbridge-docker.XXXXXX)
tag=authbridge-ci-$$
ab_image=authbridge:ci
sb_image=authbridge-sandbox:ci
volume=$tag-state
cleanup() {
  local rc=$?
  trap - EXIT
  if docker info >/dev/null 2>&1; then
    if [ "$rc" != 0 ]; then
      for c in "$tag" "$tag-sandbox"; do
        docker ps -a --format '{{.Names}}' | grep -qx "$c" || continue
        echo "--- docker logs $c (last 40 lines)" >&2
        docker logs --tail 40 "$c" >&2 2>&1 || true
      done
    fi
    docker rm -f "$tag" "$tag-sandbox" >/dev/null 2>&1 || true
    docker volume rm -f "$volume" >/dev/null 2>&1 || true
  fi
  stop_dockerd
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_dockerd "$work"

# --- bases and image -------------------------------------------------------------------------
build_args=()
if [ -z "${PUBLIC_BASES:-}" ]; then
  t0=$SECONDS
  bash tests/packaging/bases.sh >"$work/bases.out"
  cat "$work/bases.out"
  runtime_base=$(sed -n 's/^RUNTIME_BASE=//p' "$work/bases.out")
  builder_base=$(sed -n 's/^BUILDER_BASE=//p' "$work/bases.out")
  build_args=(--build-arg "BUILDER_IMAGE=$builder_base" --build-arg "RUNTIME_IMAGE=$runtime_base")
  echo "==> bases ready in $((SECONDS - t0)) s"
  t0=$SECONDS
  find deploy/vendor -mindepth 1 -maxdepth 1 ! -name .gitignore -exec rm -rf {} +
  cargo vendor --quiet --locked --versioned-dirs deploy/vendor >/dev/null
  echo "==> crates vendored into deploy/vendor in $((SECONDS - t0)) s"
fi
t0=$SECONDS
echo "==> docker build (the Dockerfile's builder stage compiles the release binaries)"
# DOCKER_BUILDKIT=0: Debian's docker.io has no buildx; the classic builder does all we need.
# The builder stage is tagged too: it keeps its layers (the compiled dependencies) as the cache
# of the next run, while older builder layers become dangling and are pruned at the end.
DOCKER_BUILDKIT=0 docker build --quiet --network host "${build_args[@]}" --target builder -t authbridge-builder:ci . >/dev/null
DOCKER_BUILDKIT=0 docker build --quiet --network host "${build_args[@]}" -t "$ab_image" . >/dev/null
DOCKER_BUILDKIT=0 docker build --quiet --network host "${build_args[@]}" --target sandbox -t "$sb_image" . >/dev/null
echo "==> images built in $((SECONDS - t0)) s"

# The image's contract, as configured.
[ "$(docker image inspect -f '{{.Config.User}}' "$ab_image")" = 10001:10001 ] || { echo "FAIL: image user is not 10001:10001" >&2; exit 1; }
[ "$(docker image inspect -f '{{json .Config.Entrypoint}}' "$ab_image")" = '["authbridge"]' ] || { echo "FAIL: entrypoint is not exec form [\"authbridge\"]" >&2; exit 1; }
[ "$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$ab_image")" = '["CMD","authbridge","probe"]' ] || { echo "FAIL: HEALTHCHECK is not CMD authbridge probe" >&2; exit 1; }
docker run --rm --pull never "$ab_image" --version

# --- sandbox container -----------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$work/sandbox"
chmod 0777 "$work/sandbox"   # written by the sandbox container's UID 10001
docker run -d --pull never --name "$tag-sandbox" --network host --read-only --cap-drop ALL \
  --security-opt no-new-privileges -v "$work/sandbox:/data" "$sb_image" serve --dir /data >/dev/null
for _ in $(seq 150); do [ -s "$work/sandbox/sandbox.json" ] && break; sleep 0.2; done
[ -s "$work/sandbox/sandbox.json" ] || { echo "FAIL: the sandbox container did not start" >&2; exit 1; }
port_of() { sed -n "s/^ *\"$1\": \"127\\.0\\.0\\.1:\\([0-9]*\\)\".*/\\1/p" "$work/sandbox/sandbox.json"; }
token_base=$(sed -n 's/^ *"token_base_url": "\(.*\)".*/\1/p' "$work/sandbox/sandbox.json")
smtp_port=$(free_port) imap_port=$(free_port) pop3_port=$(free_port)

# --- authbridge container --------------------------------------------------------------------
# Admin listener and HEALTHCHECK: only once the image's binary has `probe` (the admin listener
# ships with it). Port 9925 is probe's default; when it is taken here, point the check at
# another port with --health-cmd instead.
admin_yaml= health_args=()
if docker run --rm --pull never "$ab_image" probe --help >/dev/null 2>&1; then
  admin_port=9925
  if (exec 3<>/dev/tcp/127.0.0.1/9925) 2>/dev/null; then
    admin_port=$(free_port)
    health_args=(--health-cmd "authbridge probe --url http://127.0.0.1:$admin_port/healthz")
  fi
  admin_yaml="admin: { listen: 127.0.0.1:$admin_port }"
  health_args+=(--health-interval 1s --health-start-period 30s --health-retries 3)
else
  echo "==> this build has no 'authbridge probe': admin listener and HEALTHCHECK not checked"
fi
sed -e "s#https://127.0.0.1:18443#$token_base#" \
    -e "s#^state_dir: .*#state_dir: /var/lib/authbridge#" \
    -e "s#\.\./sandbox-data/#/sandbox/#g" \
    -e "s#^log: .*#log: { level: info, format: json }\n$admin_yaml#" \
    -e "s#listen: 127.0.0.1:1587#listen: 127.0.0.1:$smtp_port#" \
    -e "s#listen: 127.0.0.1:1143#listen: 127.0.0.1:$imap_port#" \
    -e "s#listen: 127.0.0.1:1110#listen: 127.0.0.1:$pop3_port#" \
    -e "s#port: 18587#port: $(port_of smtp)#" -e "s#port: 18993#port: $(port_of imap)#" \
    -e "s#port: 18995#port: $(port_of pop3)#" \
    config/sandbox.yaml >"$work/authbridge.yaml"
chmod 0644 "$work/authbridge.yaml"

run_args=(--pull never --network host --read-only --cap-drop ALL --security-opt no-new-privileges
  -v "$volume:/var/lib/authbridge" -v "$work/authbridge.yaml:/etc/authbridge/authbridge.yaml:ro"
  -v "$work/sandbox:/sandbox:ro")
echo "==> authbridge check in the container"
docker run --rm "${run_args[@]}" "$ab_image" check
echo "==> authbridge run in the container (SMTP $smtp_port, IMAP $imap_port, POP3 $pop3_port)"
docker run -d --name "$tag" "${run_args[@]}" "${health_args[@]}" "$ab_image" >/dev/null
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 150); do in_use "$imap_port" && in_use "$smtp_port" && break; sleep 0.2; done
in_use "$smtp_port" || { echo "FAIL: the container's SMTP listener did not come up" >&2; exit 1; }

subject="authbridge container check $$"
printf 'From: tickets@contoso.com\r\nTo: tickets@contoso.com\r\nSubject: %s\r\n\r\nSent through the container.\r\n' \
  "$subject" >"$work/mail.txt"
curl -sS --max-time 30 --url "smtp://127.0.0.1:$smtp_port" --user glpi:demo-password \
  --mail-from tickets@contoso.com --mail-rcpt tickets@contoso.com --upload-file "$work/mail.txt"
found=$(curl -sS --max-time 30 --url "imap://127.0.0.1:$imap_port/INBOX" --user glpi:demo-password \
  --request "SEARCH SUBJECT \"$subject\"")
uid=$(echo "$found" | tr -d '\r' | sed -n 's/^\* SEARCH \([0-9]*\).*/\1/p')
[ -n "$uid" ] || { echo "FAIL: the mail sent through the container is not in INBOX: $found" >&2; exit 1; }
curl -sS --max-time 30 --url "imap://127.0.0.1:$imap_port/INBOX;UID=$uid" --user glpi:demo-password >"$work/fetched.eml"
grep -q "Sent through the container." "$work/fetched.eml" ||
  { echo "FAIL: fetched message does not have the body sent" >&2; cat "$work/fetched.eml" >&2; exit 1; }
curl -sS --max-time 30 --url "pop3://127.0.0.1:$pop3_port/" --user glpi:demo-password >/dev/null
echo "==> a mail went out through the container's SMTP and came back through its IMAP"

if [ "${#health_args[@]}" -gt 0 ]; then
  for _ in $(seq 60); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$tag")" = healthy ] && break
    sleep 0.5
  done
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$tag")" = healthy ] ||
    { echo "FAIL: HEALTHCHECK (authbridge probe) did not report healthy" >&2; docker inspect -f '{{json .State.Health}}' "$tag" >&2; exit 1; }
  echo "==> HEALTHCHECK: healthy"
fi

# State went to the volume, written by the non-root user.
owner=$(docker run --rm --pull never --entrypoint stat -v "$volume:/s" "$ab_image" -c '%u:%g %a' /s/master.key)
[ "$owner" = "10001:10001 600" ] || { echo "FAIL: master.key in the state volume is '$owner', expected '10001:10001 600'" >&2; exit 1; }

# --- clean stop: SIGTERM drains and exits 0 before docker's timeout ----------------------------
# An IMAP session logged in before the stop must keep working after SIGTERM (drain, not cut)
# while the listeners stop accepting; once it logs out, authbridge exits 0.
python3 - "$imap_port" "$work" <<'PY' &
import imaplib, os, sys, time
port, work = int(sys.argv[1]), sys.argv[2]
m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
m.login("glpi", "demo-password")
m.select("INBOX")
open(f"{work}/session-ready", "w").close()
for _ in range(300):
    if os.path.exists(f"{work}/sigterm-seen"):
        break
    time.sleep(0.1)
else:
    sys.exit("drain: SIGTERM was never seen")
typ, data = m.noop()
if typ != "OK":
    sys.exit(f"drain: NOOP after SIGTERM answered {typ} {data}")
m.logout()
open(f"{work}/session-done", "w").close()
PY
session=$!
for _ in $(seq 150); do [ -e "$work/session-ready" ] && break; sleep 0.2; done
[ -e "$work/session-ready" ] || { echo "FAIL: could not open an IMAP session before the stop" >&2; exit 1; }
t0=$SECONDS
docker stop -t 30 "$tag" >/dev/null &
stopper=$!
# SIGTERM handled: the listener refuses new connections.
for _ in $(seq 100); do in_use "$smtp_port" || break; sleep 0.1; done
! in_use "$smtp_port" || { echo "FAIL: the SMTP listener still accepts 10 s after docker stop" >&2; exit 1; }
touch "$work/sigterm-seen"
wait "$session" || { echo "FAIL: the IMAP session open at SIGTERM did not keep working until its logout" >&2; exit 1; }
wait "$stopper"
stop_secs=$((SECONDS - t0))
code=$(docker inspect -f '{{.State.ExitCode}}' "$tag")
[ "$code" = 0 ] || { echo "FAIL: authbridge exited $code on docker stop (137 = killed after the timeout)" >&2; exit 1; }
docker logs "$tag" >"$work/authbridge.log" 2>&1
grep -q 'SIGTERM: shutting down' "$work/authbridge.log" ||
  { echo "FAIL: no 'SIGTERM: shutting down' in the container's log" >&2; exit 1; }
echo "==> docker stop: a session open at SIGTERM kept working until its logout; exit 0 after ${stop_secs} s"

# Logs: one JSON object per line on stdout, and no secret in them.
python3 - "$work/authbridge.log" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
assert lines, "no log lines"
for l in lines:
    try:
        json.loads(l)
    except ValueError:
        sys.exit(f"FAIL: a log line is not JSON: {l!r}")
print(f"==> {len(lines)} log lines, all JSON")
PY
for secret in demo-password sandbox-client-secret; do
  if grep -q "$secret" "$work/authbridge.log"; then echo "FAIL: the log contains the secret '$secret'" >&2; exit 1; fi
done
docker stop -t 10 "$tag-sandbox" >/dev/null
# Earlier runs' build layers (a compiled target/ each, ~1 GB) that no tag needs any more.
docker image prune -f >/dev/null
echo "PASS: container check in $((SECONDS - started)) s"
