#!/usr/bin/env bash
# Memory per idle logged-in IMAP session (issue 19: pipe buffers cost nothing while idle). Opens
# N sessions through authbridge (LOGIN, SELECT INBOX, then nothing), reads authbridge's VmRSS
# before and after, checks that every session still answers NOOP, and prints KiB per session.
#
# Usage: bench/profile/idle-rss.sh [N=1000]
set -euo pipefail
n=${1:-1000}
source "$(dirname "$0")/lib.sh"
start_stack
before=$(rss_kib)
python3 - "$imap_port" "$n" "$ab_pid" "$before" <<'PY'
import imaplib, sys, time
port, n, pid, before = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
sessions = []
for _ in range(n):
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login("glpi", "demo-password")
    c.select("INBOX")
    sessions.append(c)
time.sleep(3)
after = rss()
ok = sum(1 for c in sessions if c.noop()[0] == "OK")
print(f"idle-rss: {n} idle logged-in IMAP sessions: VmRSS {before} → {after} KiB, "
      f"{(after - before) / n:.1f} KiB per session; {ok}/{n} answered NOOP")
for c in sessions:
    c.logout()
PY
