#!/usr/bin/env bash
# Pipe buffer size trial: authbridge built once per value of the buffer-size constant
# BUFFER_CONST in BUFFER_FILE (restored afterwards), then TRIALS rounds over the sizes in rotating
# order, each measuring FETCH 100 MB and DATA 50 MB throughput and CPU (byte relay alongside as
# the yardstick) and the RSS per idle logged-in IMAP session at N = IDLE. Prints each trial and
# the medians. Default constant: the largest copy buffer per direction (`pipe_buffers::MAX` in
# src/limits.rs, buffers growing from pipe_buffers::START on full reads); before growing buffers, the
# fixed `PIPE_BUFFER` of src/pipe.rs.
#
#   bench/profile/buffers.sh                         SIZES_KIB="16 64 256", TRIALS = 3, IDLE = 1000
#   SIZES_KIB="16 256" TRIALS=5 bench/profile/buffers.sh
#   BUFFER_FILE=src/pipe.rs BUFFER_CONST=PIPE_BUFFER SIZES_KIB="4 16 64 256" bench/profile/buffers.sh
# Rebuilds authbridge (release) once per size: several minutes each on a busy machine.
source "$(dirname "$0")/common.sh"
if [ -z "${BUFFER_CONST:-}" ] && grep -q "const PIPE_BUFFER: usize" src/pipe.rs; then
  BUFFER_FILE=src/pipe.rs BUFFER_CONST=PIPE_BUFFER
fi
file="${BUFFER_FILE:-src/limits.rs}"
const="${BUFFER_CONST:-MAX}"
sizes=(${SIZES_KIB:-16 64 256})
trials="${TRIALS:-3}"
idle="${IDLE:-1000}"
pattern="const $const: usize = [0-9_]+ \* 1024;"
if [ "$(grep -Ec "$pattern" "$file")" != 1 ]; then
  echo "$file has not exactly one line 'const $const: usize = <n> * 1024;': set BUFFER_FILE and BUFFER_CONST" >&2
  exit 1
fi
build
cp "$file" "$out/source.orig"
trap 'cp "$out/source.orig" "$root/$file"' EXIT
for k in "${sizes[@]}"; do
  echo "==> building authbridge with $const = $k KiB" >&2
  sed -E "s/$pattern/const $const: usize = $k * 1024;/" "$out/source.orig" >"$file"
  cargo build --quiet --release -p authbridge
  cp "$target/release/authbridge" "$out/authbridge-$k"
done
cp "$out/source.orig" "$file"
cargo build --quiet --release -p authbridge   # leave the tree's binary as the source says
printf '%-8s %-5s %11s %9s %11s %9s %11s %10s\n' KiB trial fetch_MB/s cpu_s/GB data_MB/s cpu_s/GB relay_fetch KiB/idle
for ((i = 1; i <= trials; i++)); do
  order=("${sizes[@]}")
  rot=$(( (i - 1) % ${#sizes[@]} ))
  order=("${order[@]:rot}" "${order[@]:0:rot}")
  for k in "${order[@]}"; do
    name="b$k-$i"
    AUTHBRIDGE_BIN="$out/authbridge-$k" trial "$name" --phases transfer,idle --systems relay,authbridge \
      --transfer-rounds 2 --idle "$idle"
    printf '%-8s %-5s %11s %9s %11s %9s %11s %10s\n' "$k" "$i" \
      "$(figure "$name" transfer.fetch.authbridge.mbps)" "$(figure "$name" transfer.fetch.authbridge.cpu_s_per_gb)" \
      "$(figure "$name" transfer.data.authbridge.mbps)" "$(figure "$name" transfer.data.authbridge.cpu_s_per_gb)" \
      "$(figure "$name" transfer.fetch.relay.mbps)" "$(figure "$name" "idle.$idle.authbridge.kib_per_session")"
  done
done
echo
echo "medians over $trials trials:"
for k in "${sizes[@]}"; do
  m() { for ((i = 1; i <= trials; i++)); do figure "b$k-$i" "$1"; done | median; }
  printf '  %4s KiB: FETCH %s MB/s (%s CPU-s/GB), DATA %s MB/s, relay FETCH %s MB/s, %s KiB per idle session\n' "$k" \
    "$(m transfer.fetch.authbridge.mbps)" "$(m transfer.fetch.authbridge.cpu_s_per_gb)" \
    "$(m transfer.data.authbridge.mbps)" "$(m transfer.fetch.relay.mbps)" "$(m "idle.$idle.authbridge.kib_per_session")"
done
