#!/usr/bin/env bash
# Where authbridge's CPU goes while it pipes a 100 MB IMAP FETCH and a 50 MB SMTP DATA:
# `perf record --call-graph dwarf` (cpu-clock, 999 Hz) attached to authbridge over ROUNDS measured
# rounds of both transfers (after one unmeasured warm-up round), then the symbols above 1.5 % of
# the samples (self time) and, for the hottest memmove, its callers.
#
#   bench/profile/perf-fetch.sh          ROUNDS = 3
# Needs perf. Outputs stay in PROFILE_OUT (default: a new directory under /tmp).
source "$(dirname "$0")/common.sh"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
rounds="${ROUNDS:-3}"
build
echo "==> $rounds rounds of FETCH 100 MB + DATA 50 MB through authbridge, perf attached" >&2
trial transfer --phases transfer --systems authbridge --transfer-rounds "$rounds" \
  --attach "perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -o $out/perf-{phase}.data -p {pid}"
echo "## FETCH $(figure transfer transfer.fetch.authbridge.mbps) MB/s at $(figure transfer transfer.fetch.authbridge.cpu_s_per_gb) CPU-s/GB; DATA $(figure transfer transfer.data.authbridge.mbps) MB/s at $(figure transfer transfer.data.authbridge.cpu_s_per_gb) CPU-s/GB (medians of $rounds rounds)"
perf report -i "$out/perf-transfer.data" --stdio --no-children --sort dso,sym \
  --percent-limit 1.5 -g none 2>/dev/null | grep -v '^#' | grep -v '^$'
# The hottest memmove (glibc picks a variant per CPU) and who calls it.
sym="$(perf report -i "$out/perf-transfer.data" --stdio --no-children --sort sym -g none 2>/dev/null \
  | grep -o '__memmove[A-Za-z0-9_]*' | head -1 || true)"
if [ -n "$sym" ]; then
  echo
  echo "## callers of $sym (call chains, innermost first, at most 8 frames)"
  perf report -i "$out/perf-transfer.data" --stdio --no-children --sort sym -S "$sym" \
    -g callee,0.5 --max-stack 8 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-180 | head -60
fi
echo
echo "perf data: $out/perf-transfer.data"
