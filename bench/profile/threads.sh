#!/usr/bin/env bash
# Tokio worker threads in authbridge: TOKIO_WORKER_THREADS=1 against the default (one per core),
# warm SMTP and IMAP login p50 and FETCH/DATA throughput, in TRIALS alternating pairs (the order
# flips each pair, so a change of load on the machine hits both alike). Prints each trial and the
# medians. The byte relay is measured in every trial as a yardstick of the machine's state.
#
#   bench/profile/threads.sh               TRIALS = 3, N = 2000 logins per protocol per trial
#   THREADS="1 2 4" TRIALS=5 bench/profile/threads.sh
source "$(dirname "$0")/common.sh"
trials="${TRIALS:-3}"
n="${N:-2000}"
threads=(${THREADS:-1 default})
build
printf '%-8s %-5s %10s %10s %10s %10s %12s %12s\n' threads trial smtp_p50 imap_p50 relay_smtp relay_imap fetch_MB/s data_MB/s
for ((i = 1; i <= trials; i++)); do
  order=("${threads[@]}")
  if ((i % 2 == 0)); then order=($(printf '%s\n' "${threads[@]}" | tac)); fi
  for t in "${order[@]}"; do
    env_args=()
    [ "$t" != default ] && env_args=(--authbridge-env "TOKIO_WORKER_THREADS=$t")
    name="t$t-$i"
    trial "$name" --phases login,transfer --systems relay,authbridge --sessions "$n" --rounds 2 \
      --transfer-rounds 2 "${env_args[@]}"
    printf '%-8s %-5s %10s %10s %10s %10s %12s %12s\n' "$t" "$i" \
      "$(figure "$name" login.smtp.authbridge.p50)" "$(figure "$name" login.imap.authbridge.p50)" \
      "$(figure "$name" login.smtp.relay.p50)" "$(figure "$name" login.imap.relay.p50)" \
      "$(figure "$name" transfer.fetch.authbridge.mbps)" "$(figure "$name" transfer.data.authbridge.mbps)"
  done
done
echo
echo "medians over $trials trials (ms, MB/s):"
for t in "${threads[@]}"; do
  m() { for ((i = 1; i <= trials; i++)); do figure "t$t-$i" "$1"; done | median; }
  printf '  TOKIO_WORKER_THREADS=%-8s SMTP p50 %s  IMAP p50 %s  FETCH %s  DATA %s\n' "$t" \
    "$(m login.smtp.authbridge.p50)" "$(m login.imap.authbridge.p50)" \
    "$(m transfer.fetch.authbridge.mbps)" "$(m transfer.data.authbridge.mbps)"
done
