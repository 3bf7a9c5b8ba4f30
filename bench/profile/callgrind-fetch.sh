#!/usr/bin/env bash
# Instructions authbridge executes per MB piped through an IMAP FETCH (issue 19: the pipe's
# buffers), counted by callgrind. A message of SIZE_MB is delivered through authbridge's SMTP
# listener, then read R times with `FETCH 1 BODY.PEEK[]` through its IMAP listener (one login);
# callgrind's counters are zeroed after the login and dumped after the last FETCH.
#
# Usage: bench/profile/callgrind-fetch.sh [SIZE_MB=8] [R=4]
set -euo pipefail
size=${1:-8}
rounds=${2:-4}
source "$(dirname "$0")/lib.sh"
start_stack valgrind --tool=callgrind --callgrind-out-file="$data/callgrind.%p.out"
python3 - "$smtp_port" "$size" <<'PY'
import smtplib, sys
port, mb = int(sys.argv[1]), int(sys.argv[2])
line = b"x" * 998 + b"\r\n"
body = line * (mb * 1024 * 1024 // len(line))
msg = b"From: tickets@contoso.com\r\nTo: tickets@contoso.com\r\nSubject: fetch\r\n\r\n" + body
s = smtplib.SMTP("127.0.0.1", port, timeout=600)
s.login("glpi", "demo-password")
s.sendmail("tickets@contoso.com", ["tickets@contoso.com"], msg)
s.quit()
PY
python3 - "$imap_port" "$rounds" "$ab_pid" "$data" <<'PY'
import imaplib, subprocess, sys
port, rounds, pid, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = imaplib.IMAP4("127.0.0.1", port, timeout=600)
c.login("glpi", "demo-password")
c.select("INBOX")
typ, ids = c.search(None, 'SUBJECT "fetch"')
last = ids[0].split()[-1]
subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
got = 0
for _ in range(rounds):
    typ, d = c.fetch(last, "(BODY.PEEK[])")
    assert typ == "OK"
    got += len(d[0][1])
subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
open(data + "/fetched", "w").write(str(got))
c.logout()
PY
sleep 1
dump=$(ls -t "$data"/callgrind.*.out.* 2>/dev/null | head -1)
total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dump" | head -1)
[ -n "$total" ] || total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -1)
bytes=$(cat "$data/fetched")
echo "callgrind-fetch: binaries $bin (git $(git -C "$repo" rev-parse --short HEAD) checked out), $rounds × FETCH of a ${size} MB message ($bytes bytes)"
echo "  instructions (Ir): $total total, $((total / (bytes / 1048576))) per MB"
