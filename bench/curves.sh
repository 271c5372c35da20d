#!/usr/bin/env bash
# The scaling curves of BENCHMARKS.md (issue 11), in one run: the master as its own process on a
# fresh deployment for every row, the load from `inflight-sim --bench-ingest-window`.
#
#   bench/curves.sh [ingest|batch|all]        (default all)
#
# ingest: 10 / 100 / 1,000 terminals sending 100,000 payments between them (window 16, then
#         20,000 at window 1): acked/s, latency p50/p99 (submit -> durable ack), the master's CPU
#         (user + sys from /proc/PID/stat) per payment, and its peak memory (VmHWM); then 1,000
#         terminals with one payment each (what the connections alone cost).
# batch:  `bench_batch` with 1,000 / 10,000 / 100,000 payments: link up -> every result stored at
#         the master (as the benchmark polls it, and from the master's log: reading and digesting
#         the payments, sealing, then upload + decision + results stored), and peak memory.
#
# WORKERS=N sets the master's runtime.worker_threads (default: one per core). Builds the release
# binaries it needs. The load generator runs on the same cores as the master: figures are floors.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
TARGET=${CARGO_TARGET_DIR:-target}
R=$TARGET/release
cargo build -q --release --workspace --bins --examples
HZ=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/inflight-curves.XXXXXX)
MASTER=""
cleanup() { [ -n "$MASTER" ] && kill "$MASTER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
field() { echo "$1" | sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p" | head -1; }

# One row: a fresh deployment of $1 terminals, $2 payments each, window $3.
ingest_row() {
    local terminals=$1 per=$2 window=$3 port=$(( 20000 + RANDOM % 20000 ))
    rm -rf "$WORK/fleet"
    "$R/inflight-setup" local --out "$WORK/fleet" --terminals "$terminals" --base-port "$port" >/dev/null
    [ -n "${WORKERS:-}" ] && sed -i "s/^worker_threads = .*/worker_threads = $WORKERS/" "$WORK/fleet/config/master.toml"
    "$R/inflight-master" run --config "$WORK/fleet/config/master.toml" 2>"$WORK/master.log" &
    MASTER=$!
    sleep 1.5
    local a b out acked
    a=$(awk '{print $14+$15}' "/proc/$MASTER/stat")
    if ! out=$("$R/inflight-sim" --slaves "$terminals" --payments-per-slave "$per" --bench-ingest-window "$window" \
        --bench-deployment "$WORK/fleet" 2>&1); then
        echo "| $terminals | $per | $window | failed: $(echo "$out" | tail -1) |"
        kill "$MASTER"; wait "$MASTER" 2>/dev/null || true; MASTER=""
        return
    fi
    b=$(awk '{print $14+$15}' "/proc/$MASTER/stat")
    acked=$(field "$out" acked)
    printf '| %s | %s | %s | %s | %.0f/s | %.1f ms | %.1f ms | %.1f µs | %s MiB | %.2f s |\n' \
        "$terminals" "$per" "$window" "$acked" "$(field "$out" acked_per_s)" "$(field "$out" latency_p50_ms)" \
        "$(field "$out" latency_p99_ms)" "$(echo "$((b - a)) $HZ $acked" | awk '{print ($1 * 1e6 / $2) / $3}')" \
        "$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$MASTER/status")" \
        "$(echo "$(field "$out" connect_ms)" | awk '{print $1 / 1000}')"
    kill "$MASTER"; wait "$MASTER" 2>/dev/null || true; MASTER=""
}

if [ "$WHAT" = ingest ] || [ "$WHAT" = all ]; then
    echo "| terminals | payments each | window | acked | acked/s | p50 | p99 | master CPU / payment | master VmHWM | connect all |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for t in 10 100 1000; do ingest_row "$t" $(( 100000 / t )) 16; done
    for t in 10 100 1000; do ingest_row "$t" $(( 20000 / t )) 1; done
    ingest_row 1000 1 1
fi

if [ "$WHAT" = batch ] || [ "$WHAT" = all ]; then
    echo
    echo "| payments | terminals | link up -> every result stored at the master (polled) | from the master's log: digest + seal, then upload, decision and results stored | peak memory |"
    echo "|---|---|---|---|---|"
    for row in "1000 10" "10000 10" "100000 20"; do
        set -- $row
        out=$("$R/examples/bench_batch" "$1" "$2" 2>&1) || { echo "| $1 | $2 | failed: $(echo "$out" | grep -m1 panicked) |"; continue; }
        printf '| %s | %s | %s | %s + %s ms, then %s ms | %s |\n' "$1" "$2" \
            "$(echo "$out" | sed -n 's/^link up -> every result stored at the master: //p')" \
            "$(echo "$out" | sed -n 's/.*batch sealed.*digest_ms=\([0-9]*\).*/\1/p' | tail -1)" \
            "$(echo "$out" | sed -n 's/.*batch sealed.*seal_ms=\([0-9]*\).*/\1/p' | tail -1)" \
            "$(echo "$out" | sed -n 's/.*results stored.*elapsed_ms=\([0-9]*\).*/\1/p' | tail -1)" \
            "$(echo "$out" | sed -n 's/^peak memory (VmHWM): //p')"
    done
fi
