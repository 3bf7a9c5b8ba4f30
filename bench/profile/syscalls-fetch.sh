#!/usr/bin/env bash
# System calls authbridge makes to pipe an IMAP FETCH (issue 19: larger buffers → fewer, larger
# writes, so fewer wake-ups of the reader on the other side; callgrind counts user-space
# instructions only and does not see this). A SIZE_MB message is delivered through authbridge's
# SMTP listener, then read R times with `FETCH 1 BODY.PEEK[]` through its IMAP listener while
# `strace -c -f` counts authbridge's read/write system calls. Also prints the wall time of the
# FETCHes (noisy on a loaded machine: use bench/run.sh for throughput).
#
# Usage: bench/profile/syscalls-fetch.sh [SIZE_MB=32] [R=2]
set -euo pipefail
size=${1:-32}
rounds=${2:-2}
source "$(dirname "$0")/lib.sh"
start_stack
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
import imaplib, signal, subprocess, sys, time
port, rounds, pid, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = imaplib.IMAP4("127.0.0.1", port, timeout=600)
c.login("glpi", "demo-password")
c.select("INBOX")
typ, ids = c.search(None, 'SUBJECT "fetch"')
last = ids[0].split()[-1]
st = subprocess.Popen(["strace", "-c", "-f", "-e", "trace=read,write,readv,writev,sendto,recvfrom,sendmsg,recvmsg",
                       "-o", data + "/strace.txt", "-p", pid])
time.sleep(1)
got, t0 = 0, time.monotonic()
for _ in range(rounds):
    typ, d = c.fetch(last, "(BODY.PEEK[])")
    assert typ == "OK"
    got += len(d[0][1])
secs = time.monotonic() - t0
st.send_signal(signal.SIGINT)
st.wait()
c.logout()
print(f"fetched {got} bytes in {secs:.2f} s ({got / secs / 1e6:.0f} MB/s, under strace)")
PY
echo "syscalls-fetch: binaries $bin (git $(git -C "$repo" rev-parse --short HEAD) checked out), $rounds × FETCH of a ${size} MB message"
sed -n '1,/^-----.*-----$/d; p' "$data/strace.txt" | grep -E "read|write|send|recv|total" || cat "$data/strace.txt"
