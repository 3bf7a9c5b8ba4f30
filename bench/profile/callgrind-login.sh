#!/usr/bin/env bash
# Instructions authbridge executes per warm IMAP login (issue 19), counted by callgrind, which is
# repeatable on a loaded machine where wall-clock time is not. authbridge runs under
# `valgrind --tool=callgrind`; one login warms it up (token fetched, upstream capabilities
# learned), the counters are zeroed, then N logins (LOGIN, SELECT INBOX, LOGOUT, each on a new
# connection, Python's imaplib as the client) run one after the other and the counters are
# dumped. Prints the total and the instructions per login.
#
# Usage: bench/profile/callgrind-login.sh [N=200]. Before/after a change: run it at both commits
# (PROFILE_BIN=dir of prebuilt binaries to skip the release build).
set -euo pipefail
n=${1:-200}
source "$(dirname "$0")/lib.sh"
start_stack valgrind --tool=callgrind --callgrind-out-file="$data/callgrind.%p.out"
login() {
  python3 - "$imap_port" "$1" <<'PY'
import imaplib, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login("glpi", "demo-password")
    typ, _ = c.select("INBOX")
    assert typ == "OK", typ
    c.logout()
PY
}
login 1
callgrind_control -z "$ab_pid" >/dev/null
login "$n"
callgrind_control -d "$ab_pid" >/dev/null
sleep 1
dump=$(ls -t "$data"/callgrind.*.out.* 2>/dev/null | head -1)
total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dump" | head -1)
[ -n "$total" ] || total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -1)
echo "callgrind-login: binaries $bin (git $(git -C "$repo" rev-parse --short HEAD) checked out), $n warm IMAP logins"
echo "  instructions (Ir): $total total, $((total / n)) per login"
