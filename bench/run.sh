#!/usr/bin/env bash
# Benchmark authbridge against a direct XOAUTH2 connection and email-oauth2-proxy, all against
# the built-in sandbox (fake Entra ID + fake Exchange Online on 127.0.0.1).
#
#   bench/run.sh            full run (30–45 minutes; 5 without email-oauth2-proxy); rewrites the
#                           generated blocks of bench/RESULTS.md
#   bench/run.sh --smoke    a minute or two: tiny N, checks only that every measurement produced a
#                           number and that cold bursts (one authbridge, and the Redis replicas) made
#                           exactly one token request
#
# Both modes make two runs: the main one (everything on loopback: warm logins, relay-mode
# submission, transfers, idle sessions, cold burst, Redis replicas, login storm, Graph backend),
# then warm logins again with a 20 ms round trip emulated between every system and the sandbox's
# mail servers (BENCH_WAN=0 skips that); then `authbridge-bench targets` judges every target from
# the figures both runs wrote and rewrites the targets block. Extra arguments go to the main run's
# load generator (bench/src/main.rs), e.g. --phases login,burst --sessions 300. Environment:
# BENCH_EMAILPROXY=none skips email-oauth2-proxy; BENCH_WORK=DIR keeps logs, configs and the
# figures (DIR/main/figures.json, DIR/wan/figures.json) there (default: a temporary directory);
# BENCH_RESULTS=FILE writes the report there instead of bench/RESULTS.md (partial or trial runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command_line="bench/run.sh${*:+ $*}"

smoke=0
for a in "$@"; do [ "$a" = --smoke ] && smoke=1; done

# Smoke mode reuses the debug build `cargo test` made; the full run measures release builds.
profile=release
[ "$smoke" = 1 ] && profile=debug
target="${CARGO_TARGET_DIR:-$root/target}"
flag=(--release)
[ "$profile" = debug ] && flag=()
echo "==> building authbridge, the sandbox and the load generator ($profile)"
cargo build --quiet "${flag[@]}" -p authbridge -p authbridge-sandbox
cargo build --quiet "${flag[@]}" --manifest-path bench/Cargo.toml --target-dir "$target"

# email-oauth2-proxy (PyPI: emailproxy) in a virtualenv under bench/.venv (git-ignored).
ep="none:BENCH_EMAILPROXY=none"
if [ "${BENCH_EMAILPROXY:-}" != none ]; then
  venv="$root/bench/.venv"
  if [ ! -x "$venv/bin/emailproxy" ]; then
    echo "==> installing email-oauth2-proxy (pip install emailproxy) into bench/.venv"
    if python3 -m venv "$venv" >/dev/null 2>&1 || { rm -rf "$venv"; python3 -m virtualenv -q "$venv" >/dev/null 2>&1; }; then
      "$venv/bin/pip" install --quiet --disable-pip-version-check emailproxy || true
    elif python3 -m pip --version >/dev/null 2>&1; then
      # No venv module (Debian without python3-venv): install into a plain directory instead.
      rm -rf "$venv"
      if python3 -m pip install --quiet --disable-pip-version-check --target "$venv/site" emailproxy; then
        mkdir -p "$venv/bin"
        printf '#!/bin/sh\nPYTHONPATH="%s" exec python3 -m emailproxy "$@"\n' "$venv/site" >"$venv/bin/emailproxy"
        chmod +x "$venv/bin/emailproxy"
      fi
    fi
  fi
  if [ -x "$venv/bin/emailproxy" ]; then
    ep="$venv/bin/emailproxy"
  elif [ "$smoke" = 1 ]; then
    ep="none:could not install the PyPI package emailproxy into bench/.venv (python3 -m venv and pip needed)"
    echo "WARNING: $ep; measuring authbridge and direct only" >&2
  else
    echo "cannot install email-oauth2-proxy into bench/.venv (needs python3 -m venv and pip); BENCH_EMAILPROXY=none skips it" >&2
    exit 1
  fi
fi

# 10,000 idle sessions need ~20,000 descriptors in authbridge: raise the limit (root may raise
# the hard limit too); children inherit it.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work="${BENCH_WORK:-}"
cleanup=0
if [ -z "$work" ]; then work="$(mktemp -d "${TMPDIR:-/tmp}/authbridge-bench.XXXXXX")"; cleanup=1; fi
results="${BENCH_RESULTS:-bench/RESULTS.md}"
[ "$smoke" = 1 ] && results="$work/RESULTS.md"

bench() {
  "$target/$profile/authbridge-bench" \
    --authbridge "$target/$profile/authbridge" \
    --sandbox "$target/$profile/authbridge-sandbox" \
    --emailproxy "$ep" \
    --results "$results" \
    --command "$command_line" \
    "$@"
}
wan=(--sessions 200 --rounds 4)
[ "$smoke" = 1 ] && wan=(--smoke --sessions 4)
set +e
bench --work "$work/main" --block main "$@"
rc=$?
figures=("$work/main/figures.json")
if [ "$rc" = 0 ] && [ "${BENCH_WAN:-1}" != 0 ]; then
  echo "==> warm logins again with a 20 ms round trip to the mail servers"
  bench --work "$work/wan" --block wan --phases login --upstream-rtt-ms 20 "${wan[@]}"
  rc=$?
  figures+=("$work/wan/figures.json")
fi
if [ "$rc" = 0 ]; then
  echo "==> targets"
  "$target/$profile/authbridge-bench" targets --results "$results" --command "$command_line" "${figures[@]}"
  rc=$?
fi
set -e
if [ "$rc" != 0 ]; then
  echo "bench failed (exit $rc); logs and configs kept in $work" >&2
  exit "$rc"
fi

[ "$smoke" = 1 ] || echo "==> results in bench/RESULTS.md"
[ "$cleanup" = 1 ] && rm -rf "$work"
exit 0
