#!/usr/bin/env bash
# Start authbridge end-to-end against the built-in sandbox (fake Entra ID + fake Exchange Online,
# all on 127.0.0.1), send one test mail through it and read it back, then keep running so you can
# point a client (or GLPI) at it. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")"

echo "==> building (release)"
cargo build --release --quiet -p authbridge -p authbridge-sandbox

data=sandbox-data
rm -rf "$data"
mkdir -p "$data"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "==> starting the sandbox (fake Entra ID on :18443, fake Exchange SMTP :18587, IMAP :18993, POP3 :18995)"
./target/release/authbridge-sandbox serve --dir "$data" --token-port 18443 --smtp-port 18587 --smtps-port 18465 \
  --imap-port 18993 --imap-starttls-port 18143 --pop3-port 18995 --pop3-starttls-port 18110 >"$data/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$data/ca.pem" ] && [ -s "$data/sandbox.json" ] && break; sleep 0.1; done
[ -s "$data/ca.pem" ] || { echo "sandbox did not start:"; cat "$data/sandbox.log"; exit 1; }

echo "==> starting authbridge with config/sandbox.yaml (SMTP 127.0.0.1:1587, IMAP :1143, POP3 :1110)"
./target/release/authbridge check --config config/sandbox.yaml
./target/release/authbridge run --config config/sandbox.yaml 2>&1 | sed 's/^/[authbridge] /' &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/1587) 2>/dev/null && break; sleep 0.1; done

echo "==> sending a test mail through authbridge SMTP with curl (local login glpi / demo-password)"
printf 'From: tickets@contoso.com\r\nTo: tickets@contoso.com\r\nSubject: authbridge demo\r\n\r\nHello through authbridge.\r\n' >"$data/mail.txt"
curl -sS --url smtp://127.0.0.1:1587 --user glpi:demo-password \
  --mail-from tickets@contoso.com --mail-rcpt tickets@contoso.com --upload-file "$data/mail.txt"
echo "==> reading it back through authbridge IMAP with curl"
curl -sS --url 'imap://127.0.0.1:1143/INBOX' --user glpi:demo-password --request 'SEARCH SUBJECT "authbridge demo"'
curl -sS --url 'imap://127.0.0.1:1143/INBOX;UID=1' --user glpi:demo-password

cat <<'MSG'

==> authbridge is running against the sandbox. Try it yourself:
  swaks --server 127.0.0.1:1587 --auth LOGIN --auth-user glpi --auth-password demo-password \
        --from tickets@contoso.com --to tickets@contoso.com
  curl imap://127.0.0.1:1143/INBOX --user glpi:demo-password --request 'SEARCH ALL'
  curl pop3://127.0.0.1:1110/1 --user glpi:demo-password
  In GLPI: Setup > Notifications > Email: SMTP, host 127.0.0.1, port 1587, no encryption,
  login glpi, password demo-password, sender tickets@contoso.com.
Ctrl-C stops authbridge and the sandbox.
MSG
wait
