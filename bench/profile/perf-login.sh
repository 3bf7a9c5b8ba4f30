#!/usr/bin/env bash
# Where a warm login's time goes in authbridge: `perf record -g` (cpu-clock, call graphs from
# frame pointers and the kernel) attached to authbridge while it serves N warm SMTP logins, then
# N warm IMAP logins, one at a time over loopback; prints the p50 of each and the symbols above
# 1.5 % of the samples (self time).
#
#   bench/profile/perf-login.sh            N = 20000
#   N=5000 bench/profile/perf-login.sh
# Needs perf (Debian: linux-perf) allowed to attach to our own processes. Outputs stay in
# PROFILE_OUT (default: a new directory under /tmp), e.g. for `perf report -i …`.
source "$(dirname "$0")/common.sh"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
n="${N:-20000}"
build
echo "==> $n warm SMTP logins, then $n warm IMAP logins, perf attached to authbridge" >&2
trial login --phases login --systems authbridge --sessions "$n" --rounds 1 \
  --attach "perf record -e cpu-clock -g -o $out/perf-{phase}.data -p {pid}"
for proto in smtp imap; do
  echo
  echo "## warm $proto logins: p50 $(figure login "login.$proto.authbridge.p50") ms, p99 $(figure login "login.$proto.authbridge.p99") ms (n = $n)"
  perf report -i "$out/perf-login-$proto.data" --stdio --no-children --sort dso,sym \
    --percent-limit 1.5 -g none 2>/dev/null | grep -v '^#' | grep -v '^$'
done
echo
echo "perf data: $out/perf-login-{smtp,imap}.data"
