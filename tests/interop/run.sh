#!/usr/bin/env bash
# authbridge interop suite: real mail servers upstream, GLPI's real mail libraries as clients.
#
#   bash tests/interop/run.sh
#
# Installs what it needs from Debian (apt-get, as root), builds authbridge and the sandbox, then
# starts everything on 127.0.0.1 under one temporary directory:
#   - the sandbox (fake Entra ID: refresh tokens, access tokens, RFC 7662 introspection; its
#     fake Graph sendMail, which delivers into its own mailboxes, and its IMAP to read them);
#   - Dovecot (IMAP with STARTTLS and on implicit TLS, POP3 with STLS and on implicit TLS, LMTP)
#     taking XOAUTH2/OAUTHBEARER, each token checked by introspection at the sandbox, and a
#     password (PLAIN/LOGIN) from one relay user only (a transactional provider's login);
#   - Postfix: submission (STARTTLS required, SASL through Dovecot: XOAUTH2, or the relay user's
#     password) delivering into Dovecot's mailboxes over LMTP, and a port-25 style listener
#     (STARTTLS, no AUTH);
#   - authbridge in front of them.
#   - a second Postfix in front of authbridge with deploy/postfix/main.cf (the relay client GLPI
#     submits to; its own config, queue and log, retry timers shortened), for the outage cases.
# Then every client (PHPMailer as GLPI 9.5/10, Symfony Mailer as GLPI 11, laminas-mail's bytes,
# swaks, curl, Python smtplib/imaplib/poplib) sends through authbridge and reads back through
# authbridge, plus the negative cases. Issue 18: PHPMailer and Symfony Mailer send a full message
# (Message-ID, UTF-8 line, attachment, Bcc-only recipient) through a Graph listener to the
# sandbox's Graph, read back over IMAP through authbridge and compared field by field (and Graph
# refusing: SendAs denied, 429); relay listeners with upstream.auth (PLAIN, LOGIN) log in to
# Postfix submission as the relay user, the message is read back over IMAP; a wrong relay
# password gives the client 454 4.7.0 and delivers nothing. One PASS/FAIL line per case, then "N passed, M failed".
# Everything started is stopped by pid on exit. INTEROP_KEEP=1 keeps the temporary directory.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SUITE_START=$(date +%s)
PASSED=0
FAILED=0
PIDS=()
T=""

say() { printf '%s\n' "$*"; }
step() { printf -- '-- %s\n' "$*"; }
die() { # a setup failure: counts as one failed case
	FAILED=$((FAILED + 1))
	say "FAIL  setup: $*"
	dump_logs
	say "$PASSED passed, $FAILED failed"
	exit 1
}

dump_logs() { # the tail of every server's log, for a failed run
	local f
	[ -n "$T" ] && [ -d "$T" ] || return 0
	for f in authbridge.log dovecot.log postfix.log postfix-front.log sandbox.log; do
		[ -s "$T/$f" ] || continue
		say "---- last lines of $f"
		tail -n 40 "$T/$f" | cut -c1-400
	done
}

# ---------------------------------------------------------------- packages
# libsasl2-modules: PLAIN and LOGIN for the SASL client of the Postfix in front (a Recommends only).
PACKAGES=(dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix libsasl2-modules php-cli php-imap libphp-phpmailer
	php-symfony-mailer swaks libnet-ssleay-perl curl python3 openssl ca-certificates prometheus)
install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	[ "$(id -u)" = 0 ] || die "missing Debian packages (run as root to install them): ${missing[*]}"
	step "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	# The packages' own services must not start (we run private instances); only a
	# policy-rc.d we create ourselves is removed again.
	local policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
	fi
	local log
	log=$(mktemp)
	apt-get update -qq >"$log" 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1
	local rc=$?
	[ -n "$policy" ] && rm -f "$policy"
	[ $rc = 0 ] || die "apt-get install failed: $(tail -n 20 "$log")"
	rm -f "$log"
}

# Debian's interpreter when there is one (a version manager's shim costs ~0.3 s a start).
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

# ---------------------------------------------------------------- processes and cleanup
cleanup() {
	local rc=$? pid i
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${PIDS[@]}"; do
		for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ -n "$T" ] && [ -d "$T" ]; then
		if [ "${INTEROP_KEEP:-0}" = 1 ]; then
			say "interop: kept $T" >&2
		else
			rm -rf "$T"
		fi
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # PORT [SECONDS]
	local i
	for i in $(seq $((${2:-20} * 10))); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

free_ports() { # N -> N free loopback ports
	"$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

render() { # TEMPLATE OUT: replace @NAME@ with the exported variable NAME
	"$PY" - "$1" "$2" <<'EOF'
import os, re, sys
src = open(sys.argv[1]).read()
def sub(m):
    if m.group(1) not in os.environ:
        sys.exit(f"render: {sys.argv[1]}: @{m.group(1)}@ is not set")
    return os.environ[m.group(1)]
open(sys.argv[2], "w").write(re.sub(r"@([A-Z][A-Z0-9_]*)@", sub, src))
EOF
}

json_get() { # FILE KEY
	"$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# ---------------------------------------------------------------- cases
CASE_LOG=""
CASE_START=0
now_ms() { date +%s%3N; }
record() { # NAME DETAIL RC
	local took
	took=$(awk -v ms=$(($(now_ms) - CASE_START)) 'BEGIN { printf "%.1f s", ms / 1000 }')
	if [ "$3" = 0 ]; then
		PASSED=$((PASSED + 1))
		printf 'PASS  %-44s %s [%s]\n' "$1" "$2" "$took"
	else
		FAILED=$((FAILED + 1))
		printf 'FAIL  %-44s %s [%s]\n' "$1" "$2" "$took"
		tail -n 25 "$CASE_LOG" | cut -c1-300 | sed 's/^/      | /'
	fi
}

run_case() { # NAME DETAIL FUNCTION ARGS... (the function's output goes to the case log)
	local name=$1 detail=$2
	shift 2
	CASE_LOG="$T/cases/$name.log"
	CASE_START=$(now_ms)
	"$@" >"$CASE_LOG" 2>&1
	record "$name" "$detail" $?
}

expect() { # MESSAGE CONDITION...: fail the case with MESSAGE unless the condition holds
	local msg=$1
	shift
	if "$@"; then return 0; fi
	say "EXPECTED: $msg"
	return 1
}

sandbox_counters() { # KEY... under token_requests -> their values on one line
	curl -sS --cacert "$SANDBOX_CA" "$CONTROL_URL/counters" |
		"$PY" -c 'import json,sys; c = json.load(sys.stdin)["token_requests"]; print(*(c[k] for k in sys.argv[1:]))' "$@"
}

sandbox_post() { # PATH JSON
	curl -sS --fail --cacert "$SANDBOX_CA" -H 'content-type: application/json' -d "$2" "$CONTROL_URL/$1"
}

lines() { wc -l <"$1" 2>/dev/null || echo 0; }
new_lines() { tail -n +"$(($2 + 1))" "$1"; } # FILE OLD_LINE_COUNT

# A message a sender case sends: subject and body carry a token the readers look for.
EXPECTED=()
message_for() { # CASE -> sets SUBJECT, BODY
	SUBJECT="interop $1-$RUN"
	BODY="body-check $1-$RUN end"
}

# ---- senders: NAME is the case name; each function sends one message and expects success
PHP=(timeout 60 php)
send_phpmailer() { "${PHP[@]}" "$HERE/clients/phpmailer.php" "$1" 127.0.0.1 "$2" glpi "$GLPI_PASSWORD" "$MBX" "$MBX" "$SUBJECT" "$BODY"; }
send_symfony() { "${PHP[@]}" "$HERE/clients/symfony.php" 127.0.0.1 "$1" glpi "$GLPI_PASSWORD" "$MBX" "$MBX" "$SUBJECT" "$BODY" "${2:-}"; }
send_swaks() { # PORT SWAKS-ARGS...
	local port=$1
	shift
	timeout 60 swaks --server "127.0.0.1:$port" --auth-user glpi --auth-password "$GLPI_PASSWORD" \
		--from "$MBX" --to "$MBX" --header "Subject: $SUBJECT" --body "$BODY" "$@"
}
send_curl() {
	printf 'From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n' "$MBX" "$MBX" "$SUBJECT" "$BODY" >"$T/curl-mail.txt"
	timeout 60 curl -sS -v --url "smtp://127.0.0.1:$1" --user "glpi:$GLPI_PASSWORD" \
		--mail-from "$MBX" --mail-rcpt "$MBX" --upload-file "$T/curl-mail.txt"
}
send_smtplib() { timeout 60 "$PY" "$HERE/clients/pymail.py" smtp 127.0.0.1 "$1" glpi "$GLPI_PASSWORD" "$MBX" "$MBX" "$SUBJECT" "$BODY" "${@:2}"; }
send_swaks_noauth() {
	timeout 60 swaks --server "127.0.0.1:$1" --from "$MBX" --to "$MBX" --header "Subject: $SUBJECT" --body "$BODY"
}
send_relay_direct() { # straight to Postfix's port-25 style listener: STARTTLS, no AUTH
	timeout 60 swaks --server "127.0.0.1:$POSTFIX_RELAY" --tls --from "$MBX" --to "$MBX" \
		--header "Subject: $SUBJECT" --body "$BODY"
}

sender_case() { # NAME DETAIL FUNCTION ARGS...
	local name=$1 detail=$2
	shift 2
	message_for "$name"
	CASE_LOG="$T/cases/$name.log"
	CASE_START=$(now_ms)
	"$@" >"$CASE_LOG" 2>&1
	local rc=$?
	if [ $rc = 0 ] && grep -q '^RESULT ' "$CASE_LOG" && ! grep -q '^RESULT ok' "$CASE_LOG"; then rc=1; fi
	[ $rc = 0 ] && EXPECTED+=("$name-$RUN")
	record "$name" "$detail" $rc
}

# ---- readers: print every message; the case checks that every expected message is there
read_laminas() { "${PHP[@]}" "$HERE/clients/laminas.php" "$1" "$2" 127.0.0.1 "$3" "${LAMINAS_USER:-glpi}" "${LAMINAS_PASSWORD:-$GLPI_PASSWORD}"; }
read_cclient() { "${PHP[@]}" "$HERE/clients/cclient.php" "$1" "$2" 127.0.0.1 "$3" glpi "$GLPI_PASSWORD"; }
read_py() { timeout 60 "$PY" "$HERE/clients/pymail.py" "$1" 127.0.0.1 "$2" glpi "$GLPI_PASSWORD" "${@:3}"; }
read_curl_imap() { # URL-BASE (imap://127.0.0.1:PORT or imaps://...)
	local base=$1 uids u urls=()
	uids=$(timeout 60 curl -sS -v -k --user "glpi:$GLPI_PASSWORD" "$base/INBOX" -X 'UID SEARCH ALL') || return 1
	say "$uids"
	for u in $(tr -d '\r' <<<"$uids" | sed -n 's/^\* SEARCH//p'); do urls+=("$base/INBOX;UID=$u"); done
	((${#urls[@]})) || return 1
	timeout 60 curl -sS -v -k --user "glpi:$GLPI_PASSWORD" "${urls[@]}"
}
read_curl_pop3() { # URL-BASE
	local base=$1 list n urls=()
	list=$(timeout 60 curl -sS --user "glpi:$GLPI_PASSWORD" "$base/") || return 1
	say "$list"
	for n in $(tr -d '\r' <<<"$list" | awk '{print $1}'); do urls+=("$base/$n"); done
	((${#urls[@]})) || return 1
	timeout 60 curl -sS -v --user "glpi:$GLPI_PASSWORD" "${urls[@]}"
}

reader_case() { # NAME DETAIL FUNCTION ARGS...
	local name=$1 detail=$2 tok missing=()
	shift 2
	CASE_LOG="$T/cases/$name.log"
	CASE_START=$(now_ms)
	"$@" >"$CASE_LOG" 2>&1
	local rc=$?
	if grep -q '^RESULT ' "$CASE_LOG" && ! grep -q '^RESULT ok' "$CASE_LOG"; then rc=1; fi
	if [ $rc = 0 ]; then
		for tok in "${EXPECTED[@]}"; do
			grep -qF "Subject: interop $tok" "$CASE_LOG" && grep -qF "body-check $tok end" "$CASE_LOG" ||
				missing+=("$tok")
		done
		if ((${#missing[@]})); then
			say "EXPECTED: messages missing or incomplete: ${missing[*]}" >>"$CASE_LOG"
			rc=1
		fi
	fi
	record "$name" "$detail (${#EXPECTED[@]} messages)" $rc
}

maildir_count() { # MAILBOX
	find "$T/mail/$1/Maildir/new" "$T/mail/$1/Maildir/cur" -type f 2>/dev/null | wc -l
}
maildir_has() { # TEXT: some message in $MBX's Maildir contains it
	grep -rlF -- "$1" "$T/mail/$MBX/Maildir/new" "$T/mail/$MBX/Maildir/cur" 2>/dev/null | grep -q .
}
not() { ! "$@"; }
wait_maildir() { # TEXT [SECONDS]
	local i
	for i in $(seq $((${2:-30} * 10))); do maildir_has "$1" && return 0; sleep 0.1; done
	return 1
}

# ================================================================ setup
install_packages
for tool in dovecot postfix php swaks curl python3 openssl cargo; do
	command -v "$tool" >/dev/null || die "$tool not found"
done

step "building authbridge and the sandbox"
(cd "$ROOT" && cargo build --quiet -p authbridge -p authbridge-sandbox) || die "cargo build failed"
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
	"$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/debug"
AUTHBRIDGE="$BIN/authbridge"

T=$(mktemp -d "${TMPDIR:-/tmp}/authbridge-interop.XXXXXX") || die "mktemp failed"
chmod 755 "$T" # Dovecot's mail user (nobody) and Postfix must reach their files
mkdir -p "$T/cases" "$T/certs" "$T/dovecot/run" "$T/dovecot/state" "$T/mail" \
	"$T/postfix/etc" "$T/postfix/queue" "$T/postfix/data"
chmod 1777 "$T/mail"
chown postfix "$T/postfix/data"
RUN=$(basename "$T" | sed 's/.*\.//' | tr 'A-Z' 'a-z')
export T RUN
MBX=tickets@contoso.com
HELPDESK=helpdesk@contoso.com
# Local passwords with the bytes clients must quote or escape (space, ", \).
GLPI_PASSWORD='gl"pi \interop pass'
HELPDESK_PASSWORD='helpdesk-pass'
GLPI_LF_PASSWORD=$'first line\nsecond line'
FRONT_PASSWORD='postfix relay pass'
# The transactional provider's login of the relay listeners with upstream.auth (Dovecot knows
# this one user by password) and the one sender Postfix lets it use.
RELAY_USER=relay@contoso.com
RELAY_SENDER=noreply@contoso.com
RELAY_PASSWORD='provider "relay" pass\word'
export RELAY_USER RELAY_SENDER

read -r POSTFIX_SUBMISSION POSTFIX_RELAY DOVECOT_IMAP DOVECOT_IMAPS DOVECOT_POP3 DOVECOT_POP3S \
	AB_SMTP AB_SMTP_TLS AB_IMAP AB_IMAP_UP_ST AB_IMAP_TLS AB_IMAPS AB_POP3 AB_POP3_UP_ST \
	AB_RELAY AB_RELAY_OPEN FRONT_SMTP AB_ADMIN PROMETHEUS_PORT AB_POP3S \
	AB_GRAPH AB_IMAP_SANDBOX AB_RELAY_AUTH_PLAIN AB_RELAY_AUTH_LOGIN <<<"$(free_ports 24)"
export POSTFIX_SUBMISSION POSTFIX_RELAY DOVECOT_IMAP DOVECOT_IMAPS DOVECOT_POP3 DOVECOT_POP3S \
	AB_SMTP AB_SMTP_TLS AB_IMAP AB_IMAP_UP_ST AB_IMAP_TLS AB_IMAPS AB_POP3 AB_POP3_UP_ST \
	AB_RELAY AB_RELAY_OPEN FRONT_SMTP AB_ADMIN PROMETHEUS_PORT AB_POP3S \
	AB_GRAPH AB_IMAP_SANDBOX AB_RELAY_AUTH_PLAIN AB_RELAY_AUTH_LOGIN
AB_PORTS=($AB_SMTP $AB_SMTP_TLS $AB_IMAP $AB_IMAP_UP_ST $AB_IMAP_TLS $AB_IMAPS $AB_POP3 $AB_POP3_UP_ST
	$AB_RELAY $AB_RELAY_OPEN $AB_POP3S $AB_GRAPH $AB_IMAP_SANDBOX $AB_RELAY_AUTH_PLAIN $AB_RELAY_AUTH_LOGIN)

step "certificates (a private CA; the server certificate is for localhost and 127.0.0.1)"
(
	cd "$T/certs" &&
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
			-keyout ca.key -out ca.pem -subj "/CN=authbridge interop CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout server.key -out server.csr -subj "/CN=localhost" &&
		printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
			"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext &&
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
			-extfile server.ext -out server.pem
) >"$T/certs/openssl.log" 2>&1 || die "openssl failed: $(cat "$T/certs/openssl.log")"
chmod 644 "$T/certs/server.key"

step "sandbox token service (fake Entra ID with introspection)"
"$BIN/authbridge-sandbox" serve --dir "$T/sandbox" >"$T/sandbox.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$T/sandbox/sandbox.json" ] && break; sleep 0.1; done
[ -s "$T/sandbox/sandbox.json" ] || die "the sandbox did not start: $(cat "$T/sandbox.log")"
SANDBOX_CA="$T/sandbox/ca.pem"
TOKEN_URL=$(json_get "$T/sandbox/sandbox.json" token_url)
INTROSPECT_URL=$(json_get "$T/sandbox/sandbox.json" introspect_url)
CONTROL_URL=$(json_get "$T/sandbox/sandbox.json" control_url)
CLIENT_ID=$(json_get "$T/sandbox/sandbox.json" client_id)
GRAPH_URL=$(json_get "$T/sandbox/sandbox.json" graph_url)
SANDBOX_IMAP=$(json_get "$T/sandbox/sandbox.json" imap | sed 's/.*://')
export SANDBOX_CA TOKEN_URL INTROSPECT_URL GRAPH_URL SANDBOX_IMAP

# Dovecot re-reads a passwd-file when its mtime (whole seconds) or size changed, and a
# SHA512-CRYPT line always has the same size: two rotations within one second would go unseen.
# So every version gets an mtime of its own (an increasing stamp, not the clock).
RELAY_PASSWD_STAMP=$(($(date +%s) - 100000))
relay_passwd() { # PASSWORD: Dovecot's passdb for the relay user (replaced atomically; re-read on change)
	local hash
	hash=$(printf '%s\n' "$1" | openssl passwd -6 -stdin) || return 1
	RELAY_PASSWD_STAMP=$((RELAY_PASSWD_STAMP + 1))
	printf '%s:{SHA512-CRYPT}%s\n' "$RELAY_USER" "$hash" >"$T/dovecot/relay.passwd.new" &&
		chmod 644 "$T/dovecot/relay.passwd.new" && touch -d "@$RELAY_PASSWD_STAMP" "$T/dovecot/relay.passwd.new" &&
		mv "$T/dovecot/relay.passwd.new" "$T/dovecot/relay.passwd"
}
relay_passwd "$RELAY_PASSWORD" || die "openssl passwd failed"
printf '%s' "$RELAY_PASSWORD" >"$T/relay-password" && chmod 600 "$T/relay-password"

step "Dovecot $(dovecot --version | cut -d' ' -f1) (XOAUTH2/OAUTHBEARER only, passdb oauth2 via introspection)"
render "$HERE/dovecot.conf.in" "$T/dovecot/dovecot.conf" || die "render failed"
render "$HERE/oauth2.conf.in" "$T/dovecot/oauth2.conf" || die "render failed"
doveconf -c "$T/dovecot/dovecot.conf" -n >"$T/dovecot/doveconf.txt" 2>&1 ||
	die "Dovecot refuses its config: $(cat "$T/dovecot/doveconf.txt")"
dovecot -F -c "$T/dovecot/dovecot.conf" >"$T/dovecot.stdout" 2>&1 &
PIDS+=($!)
for p in $DOVECOT_IMAP $DOVECOT_IMAPS $DOVECOT_POP3 $DOVECOT_POP3S; do
	wait_port "$p" || die "Dovecot did not listen on $p: $(cat "$T/dovecot.stdout" "$T/dovecot.log" 2>/dev/null)"
done

step "Postfix $(postconf -d -h mail_version 2>/dev/null) (submission with Dovecot SASL, LMTP into Dovecot; relay listener)"
render "$HERE/postfix-main.cf.in" "$T/postfix/etc/main.cf" || die "render failed"
render "$HERE/postfix-master.cf.in" "$T/postfix/etc/master.cf" || die "render failed"
# The port-25 style listener stands in for a receiver SMTP smuggling works on (Postfix <= 3.8.4
# with its defaults takes a bare LF for a line end). A Postfix that knows
# smtpd_forbid_bare_newline gets it switched off there explicitly (its exclusions default to
# mynetworks, which holds 127.0.0.0/8, anyway); the smuggle-direct-* cases check it holds.
if postconf -d smtpd_forbid_bare_newline 2>/dev/null | grep -q '^smtpd_forbid_bare_newline ='; then
	sed -i 's|^  -o syslog_name=postfix/relay$|&\n  -o smtpd_forbid_bare_newline=no|' "$T/postfix/etc/master.cf"
fi
postfix -c "$T/postfix/etc" check >"$T/postfix.check" 2>&1 ||
	die "postfix check failed: $(cat "$T/postfix.check" "$T/postfix.log" 2>/dev/null)"
/usr/lib/postfix/sbin/master -c "$T/postfix/etc" >"$T/postfix.stdout" 2>&1 &
POSTFIX_PID=$!
PIDS+=($POSTFIX_PID)
for p in $POSTFIX_SUBMISSION $POSTFIX_RELAY; do
	wait_port "$p" || die "Postfix did not listen on $p: $(cat "$T/postfix.stdout" "$T/postfix.log" 2>/dev/null)"
done

step "authbridge"
GLPI_HASH=$(printf '%s' "$GLPI_PASSWORD" | "$AUTHBRIDGE" hash-password) || die "hash-password failed"
HELPDESK_HASH=$(printf '%s' "$HELPDESK_PASSWORD" | "$AUTHBRIDGE" hash-password) || die "hash-password failed"
GLPI_LF_HASH=$(printf '%s' "$GLPI_LF_PASSWORD" | "$AUTHBRIDGE" hash-password --allow-line-breaks) || die "hash-password failed"
FRONT_HASH=$(printf '%s' "$FRONT_PASSWORD" | "$AUTHBRIDGE" hash-password) || die "hash-password failed"
export GLPI_HASH HELPDESK_HASH GLPI_LF_HASH FRONT_HASH
render "$HERE/authbridge.yaml.in" "$T/authbridge.yaml" || die "render failed"
HELPDESK_RT=$(sandbox_post refresh_token "{\"client_id\":\"$CLIENT_ID\",\"mailbox\":\"$HELPDESK\"}" |
	"$PY" -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])') || die "no helpdesk refresh token"
"$AUTHBRIDGE" import-token --config "$T/authbridge.yaml" tickets <"$T/sandbox/refresh_token" >"$T/import.log" 2>&1 ||
	die "import-token tickets failed: $(cat "$T/import.log")"
printf '%s\n' "$HELPDESK_RT" | "$AUTHBRIDGE" import-token --config "$T/authbridge.yaml" helpdesk >>"$T/import.log" 2>&1 ||
	die "import-token helpdesk failed: $(cat "$T/import.log")"

say "cases (client -> authbridge listener -> real server):"
check_upstreams() { timeout 60 "$PY" "$HERE/clients/pymail.py" probe "$POSTFIX_SUBMISSION" "$DOVECOT_IMAP" "$DOVECOT_IMAPS" "$DOVECOT_POP3S"; }
run_case upstream-xoauth2-only "Postfix and Dovecot refuse mailbox users' passwords (as Exchange Online)" check_upstreams
run_case authbridge-check "authbridge check: tokens + upstream setup/login on all ${#AB_PORTS[@]} listeners" \
	timeout 120 "$AUTHBRIDGE" check --config "$T/authbridge.yaml"

"$AUTHBRIDGE" run --config "$T/authbridge.yaml" >"$T/authbridge.log" 2>&1 &
PIDS+=($!)
for p in "${AB_PORTS[@]}"; do
	wait_port "$p" || die "authbridge did not listen on $p: $(cat "$T/authbridge.log")"
done

# ================================================================ sending
S_PLAIN="authbridge smtp (none) -> Postfix submission (STARTTLS)"
S_TLS="authbridge smtp (STARTTLS) -> Postfix submission (STARTTLS)"
sender_case smtp-phpmailer-glpi10-smtp "PHPMailer, GLPI 9.5/10 SMTP: $S_PLAIN" send_phpmailer smtp "$AB_SMTP"
sender_case smtp-phpmailer-glpi10-smtp-tls "PHPMailer, GLPI 9.5/10 SMTP+TLS: $S_TLS" send_phpmailer tls "$AB_SMTP_TLS"
sender_case smtp-symfony-glpi11 "Symfony Mailer, GLPI 11 DSN: $S_PLAIN" send_symfony "$AB_SMTP"
sender_case smtp-symfony-glpi11-starttls "Symfony Mailer, GLPI 11 DSN ?verify_peer=0: $S_TLS" send_symfony "$AB_SMTP_TLS" verify_peer=0
sender_case smtp-swaks-login "swaks AUTH LOGIN: $S_PLAIN" send_swaks "$AB_SMTP" --auth LOGIN
sender_case smtp-swaks-plain "swaks AUTH PLAIN: $S_PLAIN" send_swaks "$AB_SMTP" --auth PLAIN
sender_case smtp-swaks-pipelining "swaks --pipeline: $S_PLAIN" send_swaks "$AB_SMTP" --auth LOGIN --pipeline
sender_case smtp-swaks-starttls "swaks --tls AUTH LOGIN: $S_TLS" send_swaks "$AB_SMTP_TLS" --auth LOGIN --tls
sender_case smtp-curl "curl smtp://: $S_PLAIN" send_curl "$AB_SMTP"
sender_case smtp-python-smtplib "Python smtplib: $S_PLAIN" send_smtplib "$AB_SMTP"
sender_case smtp-python-smtplib-starttls "Python smtplib starttls(): $S_TLS" send_smtplib "$AB_SMTP_TLS" --starttls
R_LOGIN="authbridge relay (none, login) -> Postfix port-25 style (STARTTLS, no AUTH)"
R_OPEN="authbridge relay (none, allow_from) -> Postfix port-25 style (STARTTLS, no AUTH)"
sender_case relay-phpmailer-glpi10-smtp "PHPMailer, GLPI 9.5/10 SMTP: $R_LOGIN" send_phpmailer smtp "$AB_RELAY"
sender_case relay-symfony-glpi11 "Symfony Mailer, GLPI 11 DSN: $R_LOGIN" send_symfony "$AB_RELAY"
sender_case relay-swaks-allowlisted "swaks without AUTH: $R_OPEN" send_swaks_noauth "$AB_RELAY_OPEN"
sender_case smtp-postfix-relay-listener "swaks --tls, no AUTH, straight to Postfix's port-25 style listener" send_relay_direct

step "waiting for Postfix to deliver ${#EXPECTED[@]} messages into Dovecot"
for _ in $(seq 300); do (($(maildir_count "$MBX") >= ${#EXPECTED[@]})) && break; sleep 0.1; done
run_case delivery "Postfix -> LMTP -> Dovecot Maildir: ${#EXPECTED[@]} messages" \
	expect "$(maildir_count "$MBX") delivered" test "$(maildir_count "$MBX")" -ge "${#EXPECTED[@]}"

# ================================================================ reading back
I_IMPL="authbridge imap (none) -> Dovecot IMAP (implicit TLS)"
I_UPST="authbridge imap (none) -> Dovecot IMAP (STARTTLS)"
I_TLS="authbridge imap (STARTTLS) -> Dovecot IMAP (implicit TLS)"
I_SSL="authbridge imap (implicit TLS) -> Dovecot IMAP (implicit TLS)"
P_IMPL="authbridge pop3 (none) -> Dovecot POP3 (implicit TLS)"
P_UPST="authbridge pop3 (none) -> Dovecot POP3 (STLS)"
P_SSL="authbridge pop3 (implicit TLS) -> Dovecot POP3 (implicit TLS)"
reader_case imap-laminas-glpi "laminas-mail bytes, GLPI 9.5-11 /imap/notls: $I_IMPL" read_laminas imap none "$AB_IMAP"
LAMINAS_USER=glpi-lf LAMINAS_PASSWORD=$GLPI_LF_PASSWORD \
	reader_case imap-laminas-glpi-lf-literal "laminas-mail bytes, password with a LF as a {N} literal: $I_IMPL" read_laminas imap none "$AB_IMAP"
reader_case imap-laminas-glpi-upstream-starttls "laminas-mail bytes /imap/notls: $I_UPST" read_laminas imap none "$AB_IMAP_UP_ST"
reader_case imap-laminas-glpi-tls "laminas-mail bytes /imap/tls/novalidate-cert: $I_TLS" read_laminas imap tls "$AB_IMAP_TLS"
reader_case imap-laminas-glpi-ssl "laminas-mail bytes /imap/ssl/novalidate-cert: $I_SSL" read_laminas imap ssl "$AB_IMAPS"
reader_case imap-python-imaplib "Python imaplib: $I_IMPL" read_py imap "$AB_IMAP"
reader_case imap-python-imaplib-upstream-starttls "Python imaplib: $I_UPST" read_py imap "$AB_IMAP_UP_ST"
reader_case imap-python-imaplib-starttls "Python imaplib starttls(): $I_TLS" read_py imap "$AB_IMAP_TLS" --starttls
reader_case imap-python-imaplib-ssl "Python IMAP4_SSL: $I_SSL" read_py imap "$AB_IMAPS" --ssl
reader_case imap-curl "curl imap://: $I_IMPL" read_curl_imap "imap://127.0.0.1:$AB_IMAP"
reader_case imap-curl-upstream-starttls "curl imap://: $I_UPST" read_curl_imap "imap://127.0.0.1:$AB_IMAP_UP_ST"
reader_case imap-curl-imaps "curl imaps:// (AUTHENTICATE PLAIN over TLS): $I_SSL" read_curl_imap "imaps://127.0.0.1:$AB_IMAPS"
reader_case pop3-laminas-glpi "laminas-mail bytes, GLPI 9.5-11 /pop/notls: $P_IMPL" read_laminas pop3 none "$AB_POP3"
reader_case pop3-laminas-glpi-upstream-stls "laminas-mail bytes /pop/notls: $P_UPST" read_laminas pop3 none "$AB_POP3_UP_ST"
# PHP's c-client (php-imap; GLPI <= 9.4): no "SECURITY PROBLEM" notice (cclient.php fails on one).
# /tls (STARTTLS) is left out: Debian's c-client speaks TLS <= 1.1 there, which rustls refuses.
reader_case imap-cclient-notls "PHP c-client (php-imap, GLPI <= 9.4) /imap/notls: $I_IMPL" read_cclient imap notls "$AB_IMAP"
reader_case imap-cclient-ssl "PHP c-client /imap/ssl/novalidate-cert: $I_SSL" read_cclient imap ssl "$AB_IMAPS"
reader_case pop3-cclient-notls "PHP c-client /pop3/notls: $P_IMPL" read_cclient pop3 notls "$AB_POP3"
reader_case pop3-cclient-ssl "PHP c-client /pop3/ssl/novalidate-cert: $P_SSL" read_cclient pop3 ssl "$AB_POP3S"
reader_case pop3-python-poplib "Python poplib: $P_IMPL" read_py pop3 "$AB_POP3"
reader_case pop3-python-poplib-upstream-stls "Python poplib: $P_UPST" read_py pop3 "$AB_POP3_UP_ST"
reader_case pop3-curl "curl pop3://: $P_IMPL" read_curl_pop3 "pop3://127.0.0.1:$AB_POP3"
reader_case pop3-curl-upstream-stls "curl pop3://: $P_UPST" read_curl_pop3 "pop3://127.0.0.1:$AB_POP3_UP_ST"

# ================================================================ issue 18: Graph, relay upstream.auth
# A. SMTP AUTH off: PHPMailer (GLPI 9.5/10) and Symfony Mailer (GLPI 11) send through authbridge's
#    Graph listener; the sandbox's Graph sendMail delivers into the sandbox's mailboxes, read back
#    over IMAP through authbridge (imap-sandbox listener) and compared: Subject, From, To,
#    Message-ID, a UTF-8 body line, the attachment byte for byte, and the Bcc-only recipient
#    (helpdesk, named in RCPT only) has its copy while no copy shows a Bcc header.
ATTACHMENT="$T/report.bin"
UTF8_LINE='Grüße aus Köln — ça marche, 東京 ✓'
"$PY" -c 'import os, sys; open(sys.argv[1], "wb").write(bytes(range(256)) * 4 + os.urandom(3000) + b"\r\n.\r\n\0")' \
	"$ATTACHMENT" || die "cannot write the attachment"
G_PATH="authbridge graph (none) -> sandbox Graph sendMail; read back: authbridge imap -> sandbox IMAP"
graph_counter() { # KEY under graph in the sandbox's counters
	curl -sS --cacert "$SANDBOX_CA" "$CONTROL_URL/counters" |
		"$PY" -c 'import json,sys; print(json.load(sys.stdin)["graph"][sys.argv[1]])' "$1"
}
rich_send() { # LIB NAME: To tickets, Bcc helpdesk, through the Graph listener
	"${PHP[@]}" "$HERE/clients/rich.php" "$1" 127.0.0.1 "$AB_GRAPH" glpi "$GLPI_PASSWORD" "$MBX" "$MBX" "$HELPDESK" \
		"interop $2-$RUN" "body-check $2-$RUN end"$'\n'"$UTF8_LINE"$'\n' "$2-$RUN@glpi.interop.test" "$ATTACHMENT"
}
readback() { # MODE USER PASSWORD SUBJECT [...]: readback.py through authbridge's imap-sandbox listener
	timeout 60 "$PY" "$HERE/clients/readback.py" "$1" 127.0.0.1 "$AB_IMAP_SANDBOX" "${@:2}"
}
graph_case() { # LIB NAME
	local accepted0 accepted1 subject="interop $2-$RUN"
	accepted0=$(graph_counter accepted)
	rich_send "$1" "$2" || return 1
	accepted1=$(graph_counter accepted)
	say "--- the To recipient ($MBX)"
	readback match glpi "$GLPI_PASSWORD" "$subject" "$MBX" "$MBX" "$2-$RUN@glpi.interop.test" "$UTF8_LINE" "$ATTACHMENT" ||
		return 1
	say "--- the Bcc-only recipient ($HELPDESK)"
	readback match helpdesk "$HELPDESK_PASSWORD" "$subject" "$MBX" "$MBX" "$2-$RUN@glpi.interop.test" "$UTF8_LINE" "$ATTACHMENT" ||
		return 1
	expect "one sendMail accepted by the sandbox's Graph" test $((accepted1 - accepted0)) = 1 &&
		expect "the client named the Bcc recipient in RCPT" grep -qi "RCPT TO:<$HELPDESK>" "$CASE_LOG" &&
		expect "and in no Bcc header of what it sent (PHPMailer shows its DATA lines)" \
			not grep -qi 'CLIENT -> SERVER: Bcc:' "$CASE_LOG"
}
run_case graph-phpmailer-glpi10 "PHPMailer, GLPI 9.5/10 SMTP: $G_PATH" graph_case phpmailer graph-phpmailer
run_case graph-symfony-glpi11 "Symfony Mailer, GLPI 11 DSN: $G_PATH" graph_case symfony graph-symfony
graph_refused_case() { # LIB NAME FAILURE REPLY-REGEX: Graph switched to FAILURE for one request
	local accepted0 accepted1 subject="interop $2-$RUN"
	accepted0=$(graph_counter accepted)
	sandbox_post graph "{\"failure\":\"$3\",\"times\":1}" && say || return 1
	rich_send "$1" "$2"
	say "exit code $?"
	sandbox_post graph '{}' && say || return 1
	accepted1=$(graph_counter accepted)
	readback absent glpi "$GLPI_PASSWORD" "$subject" &&
		readback absent helpdesk "$HELPDESK_PASSWORD" "$subject" || return 1
	expect "the client was refused with /$4/" grep -Eq "$4" "$CASE_LOG" &&
		expect "the client reports the refusal" grep -q '^RESULT refused ' "$CASE_LOG" &&
		expect "the sandbox's Graph accepted nothing" test "$accepted1" = "$accepted0"
}
run_case graph-sendas-denied-phpmailer "Graph 403 ErrorSendAsDenied: PHPMailer gets 550 5.7.60 with the fix, nothing delivered" \
	graph_refused_case phpmailer graph-sendas send_as_denied '550 5\.7\.60 .*ErrorSendAsDenied.*grant SendAs'
run_case graph-throttled-symfony "Graph 429 Retry-After: Symfony Mailer gets 451 4.7.0 (GLPI retries), nothing delivered" \
	graph_refused_case symfony graph-throttled 429:7 '451 4\.7\.0 .*throttling.*retry after 7 seconds'

# B. Relay to a transactional provider: relay listeners with upstream.auth log in to Postfix
#    submission (STARTTLS) as the relay user, whom Dovecot knows by password; the message is
#    delivered into Dovecot and read back over IMAP through authbridge.
relay_auth_case() { # MECHANISM PORT
	local tag="relay-auth-$1-$RUN" pf0 mech
	mech=$(tr 'a-z' 'A-Z' <<<"$1")
	pf0=$(lines "$T/postfix.log")
	timeout 60 swaks --server "127.0.0.1:$2" --auth "$mech" --auth-user glpi --auth-password "$GLPI_PASSWORD" \
		--from "$RELAY_SENDER" --to "$MBX" --header "Subject: interop $tag" --body "body-check $tag end" || return 1
	wait_maildir "Subject: interop $tag" 30
	new_lines "$T/postfix.log" "$pf0" | grep -E 'sasl_method|status=' | cut -c1-300
	read_py imap "$AB_IMAP" >"$T/cases/$tag.read" 2>&1
	grep -F -A3 "Subject: interop $tag" "$T/cases/$tag.read"
	expect "Postfix logged the relay user's login with $mech" \
		grep -q "sasl_method=$mech, sasl_username=$RELAY_USER" <(new_lines "$T/postfix.log" "$pf0") &&
		expect "read back over IMAP through authbridge" grep -qF "body-check $tag end" "$T/cases/$tag.read" &&
		expect "the relay password is nowhere in authbridge's log" not grep -qF "$RELAY_PASSWORD" "$T/authbridge.log"
}
R_AUTH="authbridge relay (upstream.auth) -> Postfix submission (STARTTLS, relay user's password) -> Dovecot; imaplib reads back"
run_case relay-auth-plain "swaks AUTH PLAIN, upstream.auth mechanism plain: $R_AUTH" relay_auth_case plain "$AB_RELAY_AUTH_PLAIN"
run_case relay-auth-login "swaks AUTH LOGIN, upstream.auth mechanism login: $R_AUTH" relay_auth_case login "$AB_RELAY_AUTH_LOGIN"
xoauth2_user_password_case() { # the relay user's password is good, yet no mailbox user logs in with a password
	local m rc=0
	for m in PLAIN LOGIN; do
		timeout 60 swaks --server "127.0.0.1:$POSTFIX_SUBMISSION" --tls --tls-verify --tls-ca-path "$T/certs/ca.pem" \
			--tls-sni localhost --auth "$m" --auth-user "$MBX" --auth-password "$RELAY_PASSWORD" --quit-after AUTH
		say "exit code $?"
	done
	expect "AUTH PLAIN and AUTH LOGIN for $MBX refused with 535" test "$(grep -Ec '^<~?\*+ +535 ' "$CASE_LOG")" = 2 &&
		expect "no password login succeeded" not grep -Eq '^<~ +235 ' "$CASE_LOG"
}
run_case relay-auth-xoauth2-user-no-password "Postfix submission: a password login for an XOAUTH2 mailbox user is still refused (535)" \
	xoauth2_user_password_case
relay_login_rc() { # PASSWORD -> swaks's exit code for the relay user's AUTH PLAIN at Postfix submission (28: refused)
	timeout 30 swaks --server "127.0.0.1:$POSTFIX_SUBMISSION" --tls --auth PLAIN --auth-user "$RELAY_USER" \
		--auth-password "$1" --quit-after AUTH >/dev/null 2>&1
	echo $?
}
relay_passwd_now() { # PASSWORD: rotate relay.passwd and wait (bounded) until Postfix/Dovecot take it
	local i
	relay_passwd "$1" || return 1
	# Dovecot looks at a changed passwd-file at most once a second.
	for i in $(seq 40); do [ "$(relay_login_rc "$1")" = 0 ] && return 0; sleep 0.25; done
	say "Postfix submission does not take the relay user's new password"
	return 1
}
relay_auth_wrong_case() { # the provider's password changed (relay.passwd), authbridge still has the old one
	local tag="relay-auth-wrong-$RUN" log0 rc
	log0=$(lines "$T/authbridge.log")
	relay_passwd_now "rotated $RELAY_PASSWORD" || { relay_passwd_now "$RELAY_PASSWORD"; return 1; }
	timeout 60 swaks --server "127.0.0.1:$AB_RELAY_AUTH_PLAIN" --auth PLAIN --auth-user glpi --auth-password "$GLPI_PASSWORD" \
		--from "$RELAY_SENDER" --to "$MBX" --header "Subject: interop $tag" --body "body-check $tag end"
	rc=$?
	say "exit code $rc"
	relay_passwd_now "$RELAY_PASSWORD" || return 1
	new_lines "$T/authbridge.log" "$log0" | cut -c1-300
	expect "swaks was refused at AUTH with 454 4.7.0 naming the relay's own credentials" \
		grep -Eq '^<~?\*\* +454 4\.7\.0 .*upstream\.auth' "$CASE_LOG" &&
		expect "swaks failed" test "$rc" != 0 &&
		expect "nothing delivered" not maildir_has "Subject: interop $tag" &&
		expect "authbridge's log names upstream.auth" grep -q 'upstream.auth' <(new_lines "$T/authbridge.log" "$log0") &&
		expect "the relay passwords are nowhere in authbridge's log" not grep -qF "$RELAY_PASSWORD" "$T/authbridge.log"
}
run_case relay-auth-wrong-password "relay password rotated at the provider: client gets 454 4.7.0 at AUTH, nothing delivered" \
	relay_auth_wrong_case

# ================================================================ negative cases
# 1. An access token the real server refuses (expired at the token service, still cached by
#    authbridge): Dovecot/Postfix say no, authbridge refreshes once and retries, the client
#    never notices.
expired_case() { # KIND (smtp|imap|pop3) COMMAND...
	local kind=$1
	shift
	local refresh0 introspect0 active0 refresh1 introspect1 active1 log0 rc
	read -r refresh0 introspect0 active0 <<<"$(sandbox_counters refresh_token introspect introspect_active)"
	log0=$(lines "$T/authbridge.log")
	sandbox_post expire_access_tokens '{}' && say
	"$@"
	rc=$?
	sleep 0.2
	read -r refresh1 introspect1 active1 <<<"$(sandbox_counters refresh_token introspect introspect_active)"
	local refreshed=$((refresh1 - refresh0)) accepted=$((active1 - active0))
	local refused=$((introspect1 - introspect0 - accepted))
	say "token refreshes: $refreshed, tokens the server refused: $refused, accepted: $accepted"
	new_lines "$T/authbridge.log" "$log0"
	expect "the client's $kind session succeeded" test $rc = 0 &&
		expect "the real server refused the expired token once" test "$refused" -ge 1 &&
		expect "exactly one token refresh" test "$refreshed" = 1 &&
		expect "the refreshed token was accepted" test "$accepted" -ge 1 &&
		expect "authbridge logged the retry" grep -q 'refreshing it and retrying once' <(new_lines "$T/authbridge.log" "$log0")
}
message_for expired-smtp
run_case expired-token-smtp "expired token: Postfix refuses, authbridge refreshes + retries (swaks)" \
	expired_case smtp send_swaks "$AB_SMTP" --auth LOGIN
run_case expired-token-imap "expired token: Dovecot IMAP refuses, authbridge refreshes + retries (imaplib)" \
	expired_case imap read_py imap "$AB_IMAP"
run_case expired-token-pop3 "expired token: Dovecot POP3 refuses, authbridge refreshes + retries (poplib)" \
	expired_case pop3 read_py pop3 "$AB_POP3"

# 2. A revoked refresh token (account helpdesk): first prove the account works, then revoke its
#    refresh token family and expire its access token. Every protocol must answer with a
#    temporary failure (so GLPI keeps its mail queued) and the log must say what to do.
helpdesk_send() {
	message_for helpdesk
	timeout 60 swaks --server "127.0.0.1:$AB_SMTP" --auth LOGIN --auth-user helpdesk --auth-password "$HELPDESK_PASSWORD" \
		--from "$HELPDESK" --to "$HELPDESK" --header "Subject: $SUBJECT" --body "$BODY"
}
helpdesk_read() {
	for _ in $(seq 100); do (($(maildir_count "$HELPDESK") >= 1)) && break; sleep 0.1; done
	timeout 60 "$PY" "$HERE/clients/pymail.py" imap 127.0.0.1 "$AB_IMAP" helpdesk "$HELPDESK_PASSWORD" >"$T/helpdesk-read.txt"
	cat "$T/helpdesk-read.txt"
	expect "the helpdesk message read back" grep -qF "body-check helpdesk-$RUN end" "$T/helpdesk-read.txt"
}
run_case helpdesk-account-works "second account: swaks send + imaplib read back before revocation" \
	eval 'helpdesk_send && helpdesk_read'

revoked_case() { # KIND EXPECTED-REPLY-REGEX COMMAND...
	local kind=$1 want=$2
	shift 2
	local log0
	log0=$(lines "$T/authbridge.log")
	"$@"
	say "exit code $?"
	sleep 0.2
	new_lines "$T/authbridge.log" "$log0"
	expect "a temporary failure matching /$want/" grep -Eq "$want" "$CASE_LOG" &&
		expect "an authbridge log line naming the account, AADSTS50173 and the fix" \
			grep -E 'account helpdesk.*50173.*authbridge (login|import-token) helpdesk' <(new_lines "$T/authbridge.log" "$log0")
}
sandbox_post revoke_refresh_token "{\"refresh_token\":\"$HELPDESK_RT\"}" >/dev/null &&
	sandbox_post expire_access_tokens '{}' >/dev/null || die "cannot revoke the helpdesk refresh token"
helpdesk_smtp() {
	timeout 60 swaks --server "127.0.0.1:$AB_SMTP" --auth LOGIN --auth-user helpdesk --auth-password "$HELPDESK_PASSWORD" \
		--from "$HELPDESK" --to "$HELPDESK" --header "Subject: revoked" --body "revoked"
}
helpdesk_imap() { timeout 60 "$PY" "$HERE/clients/pymail.py" imap 127.0.0.1 "$AB_IMAP" helpdesk "$HELPDESK_PASSWORD"; }
helpdesk_pop3() { timeout 60 "$PY" "$HERE/clients/pymail.py" pop3 127.0.0.1 "$AB_POP3" helpdesk "$HELPDESK_PASSWORD"; }
run_case revoked-refresh-token-smtp "revoked refresh token: SMTP 454 4.7.0 + log line (swaks)" \
	revoked_case smtp '^<\*\* +454 4\.7\.0 ' helpdesk_smtp
run_case revoked-refresh-token-imap "revoked refresh token: IMAP NO [UNAVAILABLE] + log line (imaplib)" \
	revoked_case imap '^RESULT refused .*\[UNAVAILABLE\]' helpdesk_imap
run_case revoked-refresh-token-pop3 "revoked refresh token: POP3 -ERR [SYS/TEMP] + log line (poplib)" \
	revoked_case pop3 '^RESULT refused -ERR \[SYS/TEMP\]' helpdesk_pop3

# 3. Relay mode: a sender outside allowed_senders is refused by authbridge before the connector
#    sees a MAIL FROM.
mail_from_refused() { # SENDER: swaks's reply to that MAIL FROM is a 5xx
	grep -A1 -F -- "-> MAIL FROM:<$1>" "$CASE_LOG" | grep -Eq '^<\*\* +5[0-9][0-9] '
}
relay_sender_case() {
	local pf0 seen
	pf0=$(lines "$T/postfix.log")
	timeout 60 swaks --server "127.0.0.1:$AB_RELAY_OPEN" --from intruder@example.org --to "$MBX" \
		--header "Subject: not allowed" --body "not allowed"
	say "exit code $?"
	sleep 0.3
	seen=$(new_lines "$T/postfix.log" "$pf0" | grep -c 'intruder@example.org')
	say "Postfix log lines naming the sender: $seen"
	expect "MAIL FROM refused with a 5xx" mail_from_refused intruder@example.org &&
		expect "the sender never reached Postfix" test "$seen" = 0
}
run_case relay-sender-not-allowed "relay mode (allow_from): MAIL FROM outside allowed_senders refused, never reaches Postfix" relay_sender_case

# 3b. SMTP smuggling (CVE-2023-51764 class): a body hiding "\n.\r\n" or "\n.\n" and then a
#     second transaction from a sender outside allowed_senders. Straight to Postfix (the
#     control) the hidden message is delivered: the rig reproduces the attack. Through
#     authbridge the body is refused with 550 5.6.11, the connector connection is dropped so
#     Postfix delivers neither message, and the session goes on with a clean message.
smuggle_direct_case() { # ENDING
	local tag="direct-$1-$RUN"
	timeout 60 "$PY" "$HERE/clients/smuggle.py" body 127.0.0.1 "$POSTFIX_RELAY" "$1" "$MBX" "$MBX" \
		"intruder-direct-$1@example.org" "$tag" --starttls --direct
	say "exit code $?"
	expect "Postfix delivered the message hidden behind the bare LF (the rig is a smuggling target)" \
		wait_maildir "Subject: smuggled $tag"
}
smuggle_case() { # ENDING
	local tag="relay-$1-$RUN" intruder="intruder-$1@example.org" pf0
	pf0=$(lines "$T/postfix.log")
	timeout 60 "$PY" "$HERE/clients/smuggle.py" body 127.0.0.1 "$AB_RELAY_OPEN" "$1" "$MBX" "$MBX" "$intruder" "$tag"
	say "exit code $?"
	wait_maildir "Subject: after $tag"
	sleep 1
	local seen
	seen=$(new_lines "$T/postfix.log" "$pf0" | grep -cF "$intruder")
	say "Postfix log lines naming the hidden sender: $seen"
	new_lines "$T/postfix.log" "$pf0" | grep -E 'lost connection|disconnect' | cut -c1-300
	expect "the body was refused with 550 5.6.11" grep -q '^DATA-REPLY 550 5\.6\.11 ' "$CASE_LOG" &&
		expect "the session went on: RSET 250, then a clean message" grep -q '^AFTER-REPLY 250' "$CASE_LOG" &&
		expect "the clean message after RSET was delivered" maildir_has "Subject: after $tag" &&
		expect "the hidden message was not delivered" not maildir_has "Subject: smuggled $tag" &&
		expect "the carrier was not delivered either" not maildir_has "Subject: carrier $tag" &&
		expect "the hidden sender never reached Postfix" test "$seen" = 0 &&
		expect "Postfix saw the unfinished DATA end with the connection" \
			grep -q 'lost connection after DATA' <(new_lines "$T/postfix.log" "$pf0")
}
bypass_case() { # sender check bypass forms (security issue item 2) through authbridge
	local intruder="intruder-bypass@example.org" pf0 seen
	pf0=$(lines "$T/postfix.log")
	timeout 60 "$PY" "$HERE/clients/smuggle.py" bypass 127.0.0.1 "$AB_RELAY_OPEN" "$intruder" "$MBX"
	say "exit code $?"
	sleep 0.3
	seen=$(new_lines "$T/postfix.log" "$pf0" | grep -cF "$intruder")
	say "Postfix log lines naming the sender: $seen"
	say "for comparison, Postfix itself (STARTTLS, no AUTH) answers:"
	timeout 60 "$PY" "$HERE/clients/smuggle.py" bypass 127.0.0.1 "$POSTFIX_RELAY" probe@example.org "$MBX" --starttls |
		grep '^BYPASS-REPLY' | sed 's/^/  direct /'
	expect "both MAIL lines refused with a 5xx" test "$(grep -c '^BYPASS-REPLY 5' "$CASE_LOG")" = 2 &&
		expect "the sender never reached Postfix" test "$seen" = 0
}
run_case smuggle-direct-lf-crlf 'control: "\n.\r\n" straight to Postfix, the hidden message is delivered' smuggle_direct_case lf-crlf
run_case smuggle-direct-lf-lf 'control: "\n.\n" straight to Postfix, the hidden message is delivered' smuggle_direct_case lf-lf
run_case relay-smuggling-lf-crlf 'relay: "\n.\r\n" + hidden MAIL FROM refused (550 5.6.11), nothing delivered, session goes on' smuggle_case lf-crlf
run_case relay-smuggling-lf-lf 'relay: "\n.\n" + hidden MAIL FROM refused (550 5.6.11), nothing delivered, session goes on' smuggle_case lf-lf
run_case relay-sender-check-bypass 'relay: " MAIL FROM:" and "MAIL<TAB>FROM:" refused, never reach Postfix' bypass_case

# 4. A wrong local password never reaches the upstream: no introspection at the token service,
#    no SASL line in Postfix's log, no authentication line in Dovecot's.
wrong_password_case() { # EXPECTED-REPLY-REGEX COMMAND...
	local want=$1
	shift
	local introspect0 pf0 dc0
	introspect0=$(sandbox_counters introspect)
	pf0=$(lines "$T/postfix.log")
	dc0=$(lines "$T/dovecot.log")
	"$@"
	say "exit code $?"
	sleep 0.3
	local introspected pf dc
	introspected=$(($(sandbox_counters introspect) - introspect0))
	pf=$(new_lines "$T/postfix.log" "$pf0" | grep -ci 'sasl')
	dc=$(new_lines "$T/dovecot.log" "$dc0" | grep -Eci 'auth failed|method=|oauth2')
	say "tokens checked upstream: $introspected, Postfix SASL lines: $pf, Dovecot auth lines: $dc"
	expect "the client was refused with /$want/" grep -Eq "$want" "$CASE_LOG" &&
		expect "no token reached Dovecot/Postfix" test "$introspected" = 0 &&
		expect "no SASL attempt in Postfix's log" test "$pf" = 0 &&
		expect "no authentication attempt in Dovecot's log" test "$dc" = 0
}
GOOD_PASSWORD=$GLPI_PASSWORD
GLPI_PASSWORD="wrong $GOOD_PASSWORD"
message_for wrong-password
run_case wrong-password-smtp-phpmailer "wrong local password: 535, nothing sent upstream (PHPMailer)" \
	wrong_password_case '535 5\.7\.8' send_phpmailer smtp "$AB_SMTP"
run_case wrong-password-smtp-symfony "wrong local password: 535 for LOGIN and PLAIN, nothing upstream (Symfony)" \
	wrong_password_case '535' send_symfony "$AB_SMTP"
run_case wrong-password-imap-laminas "wrong local password: NO [AUTHENTICATIONFAILED], nothing upstream (laminas bytes)" \
	wrong_password_case '^RESULT refused TAG1 NO \[AUTHENTICATIONFAILED\]' read_laminas imap none "$AB_IMAP"
run_case wrong-password-pop3-poplib "wrong local password: -ERR [AUTH], nothing upstream (poplib)" \
	wrong_password_case '^RESULT refused -ERR \[AUTH\]' read_py pop3 "$AB_POP3"
GLPI_PASSWORD=$GOOD_PASSWORD

# 6. Postfix in front of authbridge (deploy/postfix/main.cf, README "Queue mail through outages"):
#    GLPI hands mail to a local Postfix, which relays it to authbridge with a SASL login. An
#    outage of the token service must only delay mail (authbridge answers 4xx, Postfix defers and
#    retries); permanent refusals must bounce with a text an admin understands. This Postfix is a
#    second instance with its own config, queue and log; only its retry timers are shortened.
FRONT="$T/postfix-front"
FRONT_LOG="$T/postfix-front.log"
front_setup() {
	mkdir -p "$FRONT/etc" "$FRONT/queue" "$FRONT/data" && chown postfix "$FRONT/data" &&
		cp "$ROOT/deploy/postfix/main.cf" "$FRONT/etc/main.cf" &&
		render "$HERE/postfix-front-master.cf.in" "$FRONT/etc/master.cf" &&
		front_password "$FRONT_PASSWORD" &&
		postconf -c "$FRONT/etc" -e \
			"queue_directory = $FRONT/queue" "data_directory = $FRONT/data" \
			"mail_owner = postfix" "setgid_group = postdrop" \
			"maillog_file = $FRONT_LOG" "maillog_file_prefixes = $T" "syslog_name = postfix-front" \
			"myhostname = glpi.interop.test" "inet_interfaces = 127.0.0.1" "inet_protocols = ipv4" \
			"mynetworks = 127.0.0.0/8" "relayhost = [127.0.0.1]:$AB_SMTP" \
			"smtp_sasl_password_maps = texthash:$FRONT/etc/sasl_passwd" \
			"queue_run_delay = 5s" "minimal_backoff_time = 5s" "maximal_backoff_time = 15s" &&
		postfix -c "$FRONT/etc" check || return 1
	/usr/lib/postfix/sbin/master -c "$FRONT/etc" >"$T/postfix-front.stdout" 2>&1 &
	FRONT_PID=$!
	PIDS+=($FRONT_PID)
	wait_port "$FRONT_SMTP" || { cat "$T/postfix-front.stdout" "$FRONT_LOG"; return 1; }
}
front_password() { # PASSWORD: the login the front Postfix uses at authbridge (reload it after)
	printf '[127.0.0.1]:%s postfix:%s\n' "$AB_SMTP" "$1" >"$FRONT/etc/sasl_passwd" && chmod 600 "$FRONT/etc/sasl_passwd"
}
front_reload() { # a changed sasl_passwd reaches new smtp processes; cached sessions expire in 2 s
	kill -HUP "$FRONT_PID" && sleep 3
}
front_send() { # FROM PREFIX COUNT: COUNT messages in one SMTP session to the front Postfix (as GLPI)
	timeout 120 "$PY" - "$FRONT_SMTP" "$1" "$MBX" "$2" "$3" <<'PYEOF'
import smtplib, sys
port, sender, rcpt, prefix, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
    for n in range(1, count + 1):
        s.sendmail(sender, [rcpt], (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {prefix} {n}\r\n"
                                    f"Message-ID: <{prefix.replace(' ', '.')}.{n}@glpi.interop.test>\r\n\r\nbody {prefix} {n}\r\n"))
print(f"submitted {count} messages")
PYEOF
}
subject_counts() { # PREFIX -> "COUNT SUBJECT" lines, one per distinct subject in $MBX's Maildir
	find "$T/mail/$MBX/Maildir/new" "$T/mail/$MBX/Maildir/cur" -type f -exec grep -h "^Subject: $1 " {} + 2>/dev/null |
		tr -d '\r' | sort | uniq -c
}
front_new() { new_lines "$FRONT_LOG" "$1"; } # OLD_LINE_COUNT
deferred_twice() { # OLD_LINE_COUNT -> number of queue ids deferred at least twice since then
	front_new "$1" | sed -n 's/.*\]: \([0-9A-F]\{6,\}\): to=.*status=deferred.*/\1/p' | sort | uniq -c |
		awk '$1 >= 2' | wc -l
}
front_queue_empty() { postqueue -c "$FRONT/etc" -p 2>&1 | grep -q 'Mail queue is empty'; }
run_case front-postfix-setup "Postfix in front: deploy/postfix/main.cf, own queue, relayhost = authbridge smtp" front_setup
front_relays() {
	local pf0 prefix="pfone-$RUN"
	pf0=$(lines "$FRONT_LOG")
	front_send "$MBX" "$prefix" 1 || return 1
	for _ in $(seq 300); do [ "$(subject_counts "$prefix" | wc -l)" = 1 ] && break; sleep 0.1; done
	front_new "$pf0" | grep -E 'status=' | cut -c1-300
	expect "delivered through authbridge" test "$(subject_counts "$prefix" | wc -l)" = 1 &&
		expect "the front Postfix logged status=sent via authbridge's port" \
			grep -q "relay=127.0.0.1\[127.0.0.1\]:$AB_SMTP,.*status=sent" <(front_new "$pf0")
}
run_case front-postfix-relays "GLPI -> Postfix (loopback, no auth) -> authbridge (SASL PLAIN) -> Postfix submission" front_relays

FRONT_MESSAGES=${FRONT_MESSAGES:-200}
front_outage() {
	local pf0 prefix="pfq-$RUN" i twice delivered counts
	pf0=$(lines "$FRONT_LOG")
	say "token service down (HTTP 500 on every token request) and every access token expired"
	sandbox_post fail '{"mode":"http500"}' && sandbox_post expire_access_tokens '{}' && say || return 1
	front_send "$MBX" "$prefix" "$FRONT_MESSAGES" || { sandbox_post clear '{}'; return 1; }
	for i in $(seq 120); do
		twice=$(deferred_twice "$pf0")
		((twice >= FRONT_MESSAGES)) && break
		sleep 1
	done
	delivered=$(subject_counts "$prefix" | wc -l)
	say "after ${i} s of outage: $twice of $FRONT_MESSAGES messages deferred at least twice, $delivered delivered"
	front_new "$pf0" | grep 'status=deferred' | sed 's/.*status=deferred //' | sort | uniq -c | sort -rn | head -n 5 | cut -c1-300
	say "token service back; flushing the queue"
	sandbox_post clear '{}' && say || return 1
	for i in $(seq 90); do
		((i % 5 == 1)) && postqueue -c "$FRONT/etc" -f
		front_queue_empty && (($(subject_counts "$prefix" | wc -l) >= FRONT_MESSAGES)) && break
		sleep 1
	done
	sleep 1
	counts=$(subject_counts "$prefix")
	say "after ${i} s: $(wc -l <<<"$counts") distinct subjects delivered; $(front_new "$pf0" | grep -c 'status=sent') sent"
	postqueue -c "$FRONT/etc" -p | tail -n 3
	expect "every message deferred at least twice during the outage" test "$twice" -ge "$FRONT_MESSAGES" &&
		expect "nothing delivered during the outage" test "$delivered" = 0 &&
		expect "the deferrals were authbridge's 454 4.7.0" grep -q 'said: 454 4\.7\.0 ' <(front_new "$pf0") &&
		expect "every deferral was a 4xx from authbridge" \
			not grep -v 'said: 4[0-9][0-9] 4\.[0-9]*\.[0-9]* ' <(front_new "$pf0" | grep 'status=deferred') &&
		expect "all $FRONT_MESSAGES arrived" test "$(grep -c . <<<"$counts")" = "$FRONT_MESSAGES" &&
		expect "each exactly once" test "$(awk '$1 != 1' <<<"$counts" | wc -l)" = 0 &&
		expect "nothing bounced" not grep -q 'status=bounced' <(front_new "$pf0") &&
		expect "the front queue is empty" front_queue_empty
}
run_case front-postfix-token-outage "token service down: $FRONT_MESSAGES messages deferred (454) >= 2 times, then each delivered once, none bounced" front_outage

# The upstream down instead: Postfix submission (the stand-in for smtp.office365.com) stopped.
upstream_postfix_stop() {
	local i
	kill -TERM "$POSTFIX_PID" || return 1
	for i in $(seq 100); do
		kill -0 "$POSTFIX_PID" 2>/dev/null && ! ps -o stat= -p "$POSTFIX_PID" | grep -q Z || break
		sleep 0.1
	done
	wait "$POSTFIX_PID" 2>/dev/null
	# master's smtpd children inherit the listening socket and notice master's exit a moment
	# later: the port closes when the last of them has gone (bounded wait).
	for i in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$POSTFIX_SUBMISSION") 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}
upstream_postfix_start() {
	/usr/lib/postfix/sbin/master -c "$T/postfix/etc" >>"$T/postfix.stdout" 2>&1 &
	POSTFIX_PID=$!
	PIDS+=($POSTFIX_PID)
	wait_port "$POSTFIX_SUBMISSION"
}
FRONT_DOWN_MESSAGES=${FRONT_DOWN_MESSAGES:-20}
front_upstream_down() {
	local pf0 prefix="pfdown-$RUN" i twice delivered counts n=$FRONT_DOWN_MESSAGES
	pf0=$(lines "$FRONT_LOG")
	say "upstream Postfix (submission) stopped"
	upstream_postfix_stop || { say "could not stop the upstream Postfix"; upstream_postfix_start; return 1; }
	front_send "$MBX" "$prefix" "$n"
	for i in $(seq 90); do
		twice=$(deferred_twice "$pf0")
		((twice >= n)) && break
		sleep 1
	done
	delivered=$(subject_counts "$prefix" | wc -l)
	say "after ${i} s: $twice of $n messages deferred at least twice, $delivered delivered"
	front_new "$pf0" | grep 'status=deferred' | sed 's/.*status=deferred //' | sort | uniq -c | sort -rn | head -n 5 | cut -c1-300
	say "upstream Postfix started again; flushing the queue"
	upstream_postfix_start || return 1
	for i in $(seq 90); do
		((i % 5 == 1)) && postqueue -c "$FRONT/etc" -f
		front_queue_empty && (($(subject_counts "$prefix" | wc -l) >= n)) && break
		sleep 1
	done
	sleep 1
	counts=$(subject_counts "$prefix")
	say "after ${i} s: $(grep -c . <<<"$counts") distinct subjects delivered"
	expect "every message deferred at least twice while the upstream was down" test "$twice" -ge "$n" &&
		expect "nothing delivered meanwhile" test "$delivered" = 0 &&
		expect "every deferral was a 4xx from authbridge" \
			not grep -v 'said: 4[0-9][0-9] 4\.[0-9]*\.[0-9]* ' <(front_new "$pf0" | grep 'status=deferred') &&
		expect "all $n arrived" test "$(grep -c . <<<"$counts")" = "$n" &&
		expect "each exactly once" test "$(awk '$1 != 1' <<<"$counts" | wc -l)" = 0 &&
		expect "nothing bounced" not grep -q 'status=bounced' <(front_new "$pf0") &&
		expect "the front queue is empty" front_queue_empty
}
run_case front-postfix-upstream-down "upstream down: $FRONT_DOWN_MESSAGES messages deferred (4xx) >= 2 times, then each delivered once, none bounced" front_upstream_down

front_wrong_password() {
	local pf0 prefix="pfwrong-$RUN"
	front_password "wrong $FRONT_PASSWORD" && front_reload || return 1
	pf0=$(lines "$FRONT_LOG")
	front_send "$MBX" "$prefix" 1
	for _ in $(seq 300); do grep -q 'status=bounced' <(front_new "$pf0") && break; sleep 0.1; done
	front_new "$pf0" | grep 'status=' | cut -c1-400
	front_password "$FRONT_PASSWORD" && front_reload
	expect "bounced with authbridge's 535 5.7.8 in the reason" \
		grep -q 'status=bounced (SASL authentication failed; server .* said: 535 5\.7\.8 Authentication credentials invalid' <(front_new "$pf0") &&
		expect "never deferred" not grep -q 'status=deferred' <(front_new "$pf0") &&
		expect "not delivered" test "$(subject_counts "$prefix" | wc -l)" = 0
}
run_case front-postfix-wrong-password "wrong password in sasl_passwd: bounced at once with 535 5.7.8" front_wrong_password

front_sendas() {
	local pf0 prefix="pfsendas-$RUN" dsn=""
	pf0=$(lines "$FRONT_LOG")
	front_send "$HELPDESK" "$prefix" 1
	for _ in $(seq 300); do
		dsn=$(grep -rlF "Subject: $prefix 1" "$T/mail/$HELPDESK/Maildir/new" "$T/mail/$HELPDESK/Maildir/cur" 2>/dev/null | head -n 1)
		[ -n "$dsn" ] && break
		sleep 0.1
	done
	front_new "$pf0" | grep 'status=' | cut -c1-400
	[ -n "$dsn" ] && grep -E 'Final-Recipient|Status:|Diagnostic-Code|not owned' "$dsn"
	expect "bounced with the upstream's 553 5.7.1 ... not owned by user" \
		grep -q 'status=bounced (host .* said: 553 5\.7\.1 .*not owned by user' <(front_new "$pf0") &&
		expect "the bounce reached the sender's mailbox with that text" grep -q 'not owned by user' "${dsn:-/dev/null}" &&
		expect "not delivered" test "$(subject_counts "$prefix" | wc -l)" = 0
}
run_case front-postfix-sender-not-mailbox "From another mailbox (no SendAs): bounced with 553 5.7.1, bounce delivered to the sender" front_sendas

# 5. Over the whole run, every upstream login happened inside TLS. Postfix enforces it itself
#    (smtpd_tls_auth_only); Dovecot treats loopback as secure and would not refuse a plaintext
#    AUTHENTICATE, so its log is checked instead (FACTS.md).
all_logins_tls() {
	local total plain
	total=$(grep -c 'Login: user=' "$T/dovecot.log")
	plain=$(grep 'Login: user=' "$T/dovecot.log" | grep -vc ', TLS')
	say "Dovecot logins: $total, without TLS: $plain"
	expect "Dovecot saw logins" test "$total" -gt 0 && expect "none without TLS" test "$plain" = 0
}
run_case upstream-logins-over-tls "every Dovecot login (IMAPS, STARTTLS, POP3S, STLS) was inside TLS" all_logins_tls

# 6. A real Prometheus (Debian's) scrapes the admin listener: the target is up and the login
#    counters of this run are there. Stopped by pid at the end of the case.
prom_query() { # PROMQL -> the first sample's value, or nothing
	curl -sS -G "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
		"$PY" -c 'import json,sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null
}
prometheus_scrape() {
	local dir="$T/prometheus" pid i up="" logins=""
	mkdir -p "$dir"
	printf '%s\n' 'global: { scrape_interval: 1s, scrape_timeout: 1s }' 'scrape_configs:' \
		'  - job_name: authbridge' "    static_configs: [{ targets: [\"127.0.0.1:$AB_ADMIN\"] }]" \
		>"$dir/prometheus.yml"
	prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
		--web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$T/prometheus.log" 2>&1 &
	pid=$!
	PIDS+=($pid)
	for i in $(seq 60); do
		up=$(prom_query 'up{job="authbridge"}')
		logins=$(prom_query 'sum(authbridge_logins_total{result="ok"})')
		[ "$up" = 1 ] && [ -n "$logins" ] && break
		sleep 0.5
	done
	curl -sS "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/targets" | head -c 2000
	echo
	say "up=$up ok-logins=$logins"
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	expect "Prometheus scraped authbridge (up == 1)" test "$up" = 1 &&
		expect "the login counters were scraped" test "${logins%%.*}" -gt 0
}
run_case prometheus-scrape "a real Prometheus scrapes the admin listener's /metrics (up == 1, login counters)" \
	prometheus_scrape
# 7. authbridge probe: /healthz answers 200; /readyz answers 503 naming helpdesk, whose refresh
#    token was revoked above, with the fix (exit 1).
probe_case() {
	local out rc
	"$AUTHBRIDGE" probe --config "$T/authbridge.yaml" || return 1
	out=$("$AUTHBRIDGE" probe --ready --config "$T/authbridge.yaml" 2>&1)
	rc=$?
	say "$out"
	expect "probe --ready exits 1" test "$rc" = 1 &&
		expect "the reason names helpdesk and its fix" grep -q '"name":"helpdesk","state":"needs login:.*authbridge login helpdesk' <<<"$out"
}
run_case probe "authbridge probe: /healthz 200 (exit 0); --ready: 503 naming the revoked account (exit 1)" probe_case

# ================================================================ summary
((FAILED == 0)) || dump_logs
say "interop suite took $(($(date +%s) - SUITE_START)) s"
say "$PASSED passed, $FAILED failed"
((FAILED == 0))
