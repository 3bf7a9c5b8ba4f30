# Shared by the scripts in bench/profile/ (sourced, not run): release builds of authbridge, the
# sandbox and the load generator, and `trial`, one run of the load generator writing its report
# and figures into a scratch directory (never into bench/RESULTS.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
out="${PROFILE_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/authbridge-profile.XXXXXX")}"
mkdir -p "$out"

build() {
  echo "==> building release binaries" >&2
  cargo build --quiet --release -p authbridge -p authbridge-sandbox
  cargo build --quiet --release --manifest-path bench/Cargo.toml --target-dir "$target"
}

# trial NAME ARGS...: one load-generator run in $out/NAME (email-oauth2-proxy not started);
# its figures end up in $out/NAME/figures.json. AUTHBRIDGE_BIN overrides the binary measured.
trial() {
  local name="$1"
  shift
  "$target/release/authbridge-bench" \
    --authbridge "${AUTHBRIDGE_BIN:-$target/release/authbridge}" \
    --sandbox "$target/release/authbridge-sandbox" \
    --emailproxy "none:not part of this trial" \
    --results "$out/$name.md" \
    --command "$0" \
    --work "$out/$name" \
    "$@" >"$out/$name.log" 2>&1 || { echo "trial $name failed; see $out/$name.log" >&2; tail -5 "$out/$name.log" >&2; exit 1; }
}

# figure NAME KEY: one figure of a trial (empty if it was not measured).
figure() {
  jq -r --arg k "$2" '.figures[$k] // empty | . * 100 | round / 100' "$out/$1/figures.json"
}

# median of the numbers on stdin
median() {
  sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}
