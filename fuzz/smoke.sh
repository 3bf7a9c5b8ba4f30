#!/usr/bin/env bash
# CI smoke run of every fuzz target: build once, then run each target for FUZZ_SECS seconds
# (default 15) from its seed corpus (fuzz/seeds/<target>, made by fuzz/seeds.py from the client
# transcripts). Any crash or failed property fails the run; the reproducer is left under
# fuzz/artifacts/<target>/ (`cargo +nightly fuzz run <target> <file>` replays it).
#
# Needs a nightly toolchain and cargo-fuzz; both are installed if missing (rustup and crates.io).
# If either cannot be had: under CI=true the run FAILS (exit 1: a fuzz run that did not happen
# must not pass); elsewhere it is skipped with one line (exit 0), as the stable test suite does
# not depend on it.
#
# Environment: FUZZ_SECS (per target), FUZZ_TARGETS (space-separated subset),
# FUZZ_SANITIZER (default none: authbridge forbids unsafe code; use `address` for long local
# runs), FUZZ_TARGET_DIR (build cache; default outside the clone so repeated CI runs on one
# machine rebuild only what changed).
set -euo pipefail
cd "$(dirname "$0")"

secs=${FUZZ_SECS:-15}
sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/authbridge-fuzz-target}
targets=${FUZZ_TARGETS:-"smtp_client smtp_upstream sasl xoauth2 imap_client imap_upstream pop3 relay probe_reply token_response store_record first_replies"}
start=$(date +%s)

# A missing tool: a failure in CI, a one-line skip elsewhere.
missing() {
  if [ "${CI:-}" = "true" ]; then
    echo "fuzz smoke: FAILED: $1 (CI=true: a missing fuzz toolchain is a failure, not a skip)"
    exit 1
  fi
  echo "fuzz smoke: SKIPPED: $1"
  exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz smoke: installing the nightly toolchain (rustup, minimal profile)"
  if ! rustup toolchain install nightly --profile minimal >/dev/null 2>&1 \
    || ! cargo +nightly --version >/dev/null 2>&1; then
    missing "no nightly toolchain could be installed (cargo-fuzz needs nightly for -Zsanitizer and sancov)"
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke: installing cargo-fuzz (crates.io)"
  if ! cargo install --locked cargo-fuzz >/dev/null 2>&1; then
    missing "cargo-fuzz could not be installed"
  fi
fi
echo "fuzz smoke: $(cargo +nightly --version), $(cargo fuzz --version)"

flags=(-O -a -s "$sanitizer" --codegen-units 16 --target-dir "$target_dir")
cargo +nightly fuzz build "${flags[@]}"
built=$(date +%s)
echo "fuzz smoke: built in $((built - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in $targets; do
  mkdir -p "$work/$t"
  log="$work/$t.log"
  if cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "seeds/$t" -- \
    -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz smoke: $t ok, $execs executions in ${secs} s"
  else
    echo "fuzz smoke: $t FAILED:"
    grep -E 'panicked|assert|ERROR|SUMMARY|Test unit written|left|right' "$log" | head -20 || tail -30 "$log"
    failed+=("$t")
  fi
done
echo "fuzz smoke: total $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke: failed targets: ${failed[*]}"
  exit 1
fi
