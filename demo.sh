#!/usr/bin/env bash
# Start authbridge end-to-end against the built-in sandbox (fake Entra ID + fake Exchange Online,
# all on 127.0.0.1), send one test mail through it and read it back, then keep running so you can
# point a client (or GLPI) at it. Ctrl-C (or SIGTERM to this script) stops everything it started.
#
# Ports: the sandbox takes any free ports. authbridge listens on 1587 (SMTP), 1143 (IMAP) and
# 1110 (POP3) when they are free, else on the next free port; DEMO_SMTP_PORT, DEMO_IMAP_PORT and
# DEMO_POP3_PORT choose them explicitly. DEMO_DIR (default ./sandbox-data) holds the generated
# config, the sandbox's CA and both logs. The build is the debug profile that `cargo test` uses, so
# the README's two commands compile once.
set -euo pipefail
cd "$(dirname "$0")"

bin=${AUTHBRIDGE_DEMO_BIN:-target/debug}   # tests point this at binaries they already built
if [ -z "${AUTHBRIDGE_DEMO_BIN:-}" ]; then
  echo "==> building (debug profile, shared with cargo test; the first build takes a few minutes)"
  cargo build --quiet -p authbridge -p authbridge-sandbox
fi

data=${DEMO_DIR:-sandbox-data}
rm -rf "$data"
mkdir -p "$data"
data=$(cd "$data" && pwd)

pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo "==> stopping"; exit 130' INT
trap 'echo "==> stopping"; exit 143' TERM

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pick_port VAR DEFAULT: the port named by $VAR (which must be free), else DEFAULT or the next free one.
pick_port() {
  local var=$1 port=$2 asked=${!1:-}
  if [ -n "$asked" ]; then
    if in_use "$asked"; then
      echo "demo: port $asked ($var) is already in use on 127.0.0.1: choose another with $var=PORT" >&2
      exit 2
    fi
    echo "$asked"
    return
  fi
  for _ in $(seq 200); do
    in_use "$port" || { echo "$port"; return; }
    port=$((port + 1))
  done
  echo "demo: no free port near $2 on 127.0.0.1: set $var=PORT" >&2
  exit 2
}
smtp_port=$(pick_port DEMO_SMTP_PORT 1587)
imap_port=$(pick_port DEMO_IMAP_PORT 1143)
pop3_port=$(pick_port DEMO_POP3_PORT 1110)

echo "==> starting the sandbox (fake Entra ID + fake Exchange Online on free loopback ports)"
"$bin/authbridge-sandbox" serve --dir "$data" >"$data/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$data/sandbox.json" ] && break; sleep 0.1; done
[ -s "$data/sandbox.json" ] || { echo "sandbox did not start:"; cat "$data/sandbox.log"; exit 1; }
# "name": "127.0.0.1:PORT" → PORT
port_of() { sed -n "s/^ *\"$1\": \"127\\.0\\.0\\.1:\\([0-9]*\\)\".*/\\1/p" "$data/sandbox.json"; }
token_base=$(sed -n 's/^ *"token_base_url": "\(.*\)".*/\1/p' "$data/sandbox.json")
up_smtp=$(port_of smtp) up_imap=$(port_of imap) up_pop3=$(port_of pop3)

# config/sandbox.yaml with this run's ports and paths.
sed -e "s#https://127.0.0.1:18443#$token_base#" \
    -e "s#\.\./sandbox-data/#$data/#g" \
    -e "s#listen: 127.0.0.1:1587#listen: 127.0.0.1:$smtp_port#" \
    -e "s#listen: 127.0.0.1:1143#listen: 127.0.0.1:$imap_port#" \
    -e "s#listen: 127.0.0.1:1110#listen: 127.0.0.1:$pop3_port#" \
    -e "s#port: 18587#port: $up_smtp#" -e "s#port: 18993#port: $up_imap#" -e "s#port: 18995#port: $up_pop3#" \
    config/sandbox.yaml >"$data/authbridge.yaml"

echo "==> checking the configuration, the token and every upstream login (authbridge check)"
"$bin/authbridge" check --config "$data/authbridge.yaml"

echo "==> starting authbridge: SMTP 127.0.0.1:$smtp_port, IMAP 127.0.0.1:$imap_port, POP3 127.0.0.1:$pop3_port (log: $data/authbridge.log)"
"$bin/authbridge" run --config "$data/authbridge.yaml" >"$data/authbridge.log" 2>&1 &
ab=$!
pids+=("$ab")
echo "    pids: sandbox=${pids[0]} authbridge=$ab"
for _ in $(seq 100); do in_use "$smtp_port" && break; kill -0 "$ab" 2>/dev/null || break; sleep 0.1; done
in_use "$smtp_port" || { echo "authbridge did not start:"; cat "$data/authbridge.log"; exit 1; }

echo "==> sending a test mail through authbridge SMTP with curl (local login glpi / demo-password)"
printf 'From: tickets@contoso.com\r\nTo: tickets@contoso.com\r\nSubject: authbridge demo\r\n\r\nHello through authbridge.\r\n' >"$data/mail.txt"
curl -sS --url "smtp://127.0.0.1:$smtp_port" --user glpi:demo-password \
  --mail-from tickets@contoso.com --mail-rcpt tickets@contoso.com --upload-file "$data/mail.txt"
echo "==> reading it back through authbridge IMAP with curl"
curl -sS --url "imap://127.0.0.1:$imap_port/INBOX" --user glpi:demo-password --request 'SEARCH SUBJECT "authbridge demo"'
curl -sS --url "imap://127.0.0.1:$imap_port/INBOX;UID=1" --user glpi:demo-password

cat <<MSG

==> authbridge is running against the sandbox. Try it yourself:
  swaks --server 127.0.0.1:$smtp_port --auth LOGIN --auth-user glpi --auth-password demo-password \\
        --from tickets@contoso.com --to tickets@contoso.com
  curl imap://127.0.0.1:$imap_port/INBOX --user glpi:demo-password --request 'SEARCH ALL'
  curl pop3://127.0.0.1:$pop3_port/1 --user glpi:demo-password
  In GLPI: Setup > Notifications > Email: SMTP, host 127.0.0.1, port $smtp_port, no encryption,
  login glpi, password demo-password, sender tickets@contoso.com.
Config: $data/authbridge.yaml   Logs: $data/authbridge.log, $data/sandbox.log
Ctrl-C stops authbridge and the sandbox. authbridge's log follows:
MSG
tail -n +1 -f --pid="$ab" "$data/authbridge.log" | sed -u 's/^/[authbridge] /' &
wait "$ab"
