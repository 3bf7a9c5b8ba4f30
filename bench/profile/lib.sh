# Shared by the bench/profile/ scripts (sourced, not run): start the sandbox and authbridge on free
# loopback ports (as demo.sh does), authbridge optionally under a wrapper (valgrind), and stop
# both on exit. Sets: data, imap_port, smtp_port, pop3_port, ab_pid.
#
# PROFILE_BIN: directory of prebuilt `authbridge` and `authbridge-sandbox` (default: build the
# release profile into target/release). PROFILE_DIR: scratch directory (default: a temp dir).

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${PROFILE_BIN:-$repo/target/release}
if [ -z "${PROFILE_BIN:-}" ]; then
  (cd "$repo" && cargo build --quiet --release -p authbridge -p authbridge-sandbox)
fi
data=${PROFILE_DIR:-$(mktemp -d)}
mkdir -p "$data"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_stack [WRAPPER…]: the sandbox, then authbridge (under WRAPPER if given).
start_stack() {
  "$bin/authbridge-sandbox" serve --dir "$data" --max-sessions 20000 >"$data/sandbox.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$data/sandbox.json" ] && break; sleep 0.1; done
  [ -s "$data/sandbox.json" ] || { echo "sandbox did not start:"; cat "$data/sandbox.log"; exit 1; }
  port_of() { sed -n "s/^ *\"$1\": \"127\\.0\\.0\\.1:\\([0-9]*\\)\".*/\\1/p" "$data/sandbox.json"; }
  local token_base up_smtp up_imap up_pop3
  token_base=$(sed -n 's/^ *"token_base_url": "\(.*\)".*/\1/p' "$data/sandbox.json")
  up_smtp=$(port_of smtp) up_imap=$(port_of imap) up_pop3=$(port_of pop3)
  smtp_port=$(free_port) imap_port=$(free_port) pop3_port=$(free_port)
  sed -e "s#https://127.0.0.1:18443#$token_base#" \
      -e "s#\.\./sandbox-data/#$data/#g" \
      -e "s#listen: 127.0.0.1:1587#listen: 127.0.0.1:$smtp_port#" \
      -e "s#listen: 127.0.0.1:1143#listen: 127.0.0.1:$imap_port#" \
      -e "s#listen: 127.0.0.1:1110#listen: 127.0.0.1:$pop3_port#" \
      -e "s#port: 18587#port: $up_smtp#" -e "s#port: 18993#port: $up_imap#" -e "s#port: 18995#port: $up_pop3#" \
      -e "s#level: info#level: warn#" \
      "$repo/config/sandbox.yaml" >"$data/authbridge.yaml"
  if [ $# -gt 0 ]; then
    # Under valgrind everything is ~50× slower (argon2, TLS): wide deadlines.
    printf 'limits:\n' >>"$data/authbridge.yaml"
    for k in login_budget token_request upstream_auth upstream_setup upstream_connect \
             upstream_tls_handshake capabilities_wait client_write client_tls_handshake; do
      printf '  %s_secs: 60\n' "$k" >>"$data/authbridge.yaml"
    done
  fi
  "$bin/authbridge" check --config "$data/authbridge.yaml" >"$data/check.log" 2>&1 \
    || { echo "authbridge check failed:"; cat "$data/check.log"; exit 1; }
  "$@" "$bin/authbridge" run --config "$data/authbridge.yaml" >"$data/authbridge.log" 2>&1 &
  ab_pid=$!
  pids+=("$ab_pid")
  for _ in $(seq 600); do in_use "$imap_port" && break; kill -0 "$ab_pid" 2>/dev/null || break; sleep 0.1; done
  in_use "$imap_port" || { echo "authbridge did not start:"; cat "$data/authbridge.log"; exit 1; }
}

# The authbridge process itself (valgrind execs the tool, so the pid stays the same).
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$ab_pid/status"; }
