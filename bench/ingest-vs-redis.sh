#!/usr/bin/env bash
# Side by side, in one run: the master's CPU per payment durably acked against redis-server's CPU
# per RPUSH of 250 bytes with `appendfsync always`, both over mutual TLS 1.3 on loopback, same
# number of clients and pipeline depth, alternating rounds (issue 11). Prints one line per round
# and, last, the ratio of the medians. Installs nothing: without redis-server, redis-benchmark
# and openssl it says how to get them and measures only the master.
#
#   [WORKERS=N] bench/ingest-vs-redis.sh [CLIENTS] [PER_CLIENT] [DEPTH] [ROUNDS]   (default 100 1000 16 3)
#
# Builds the release binaries it needs (cargo build --release). CPU is user + sys of the server
# process from /proc/PID/stat, over the round; the load generators run on the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-100} PER=${2:-1000} DEPTH=${3:-16} ROUNDS=${4:-3}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p inflight-master -p inflight-sim -p inflight-setup
R=$TARGET/release
HZ=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/inflight-vs-redis.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
us_per() { echo "$1 $2 $3" | awk '{printf "%.1f", ($1 * 1e6 / $3) / $2}'; }   # ticks hz count

# The master, as its own process, on a fresh deployment.
PORT=$(( 20000 + RANDOM % 20000 ))
"$R/inflight-setup" local --out "$WORK/fleet" --terminals "$CLIENTS" --base-port "$PORT" >/dev/null
# WORKERS=N: the master's runtime.worker_threads (default: one per core).
[ -n "${WORKERS:-}" ] && sed -i "s/^worker_threads = .*/worker_threads = $WORKERS/" "$WORK/fleet/config/master.toml"
"$R/inflight-master" run --config "$WORK/fleet/config/master.toml" 2>"$WORK/master.log" &
MASTER=$!; PIDS+=("$MASTER")

REDIS=""
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && command -v openssl >/dev/null; then
    T="$WORK/tls"; mkdir -p "$T" "$WORK/redis"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
        -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
    for who in server client; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
            -keyout "$T/$who.key" -out "$T/$who.csr" 2>/dev/null
        openssl x509 -req -in "$T/$who.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
            -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost') -out "$T/$who.pem" 2>/dev/null
    done
    RPORT=$(( PORT + 3000 ))
    redis-server --port 0 --tls-port "$RPORT" --tls-cert-file "$T/server.pem" --tls-key-file "$T/server.key" \
        --tls-ca-cert-file "$T/ca.pem" --tls-auth-clients yes --tls-protocols TLSv1.3 \
        --appendonly yes --appendfsync always --save '' --dir "$WORK/redis" --daemonize no \
        >"$WORK/redis.log" 2>&1 &
    REDIS=$!; PIDS+=("$REDIS")
else
    echo "redis-server, redis-benchmark or openssl missing: measuring the master only." >&2
    echo "  (Debian/Ubuntu: apt-get install redis-server redis-tools openssl)" >&2
fi
sleep 2

N=$(( CLIENTS * PER ))
declare -a M_US R_US
for round in $(seq 1 "$ROUNDS"); do
    a=$(cpu_ticks "$MASTER")
    out=$("$R/inflight-sim" --slaves "$CLIENTS" --payments-per-slave "$PER" --bench-ingest-window "$DEPTH" \
        --bench-deployment "$WORK/fleet" 2>&1)
    b=$(cpu_ticks "$MASTER")
    acked=$(echo "$out" | sed -n 's/.*"acked": \([0-9]*\).*/\1/p')
    rate=$(echo "$out" | sed -n 's/.*"acked_per_s": \([0-9.]*\).*/\1/p')
    m=$(us_per $((b - a)) "$HZ" "$acked")
    M_US+=("$m")
    line="round $round: master ${m} µs/payment (${acked} acked, ${rate%.*}/s)"
    if [ -n "$REDIS" ]; then
        a=$(cpu_ticks "$REDIS")
        rout=$(redis-benchmark --tls --cacert "$T/ca.pem" --cert "$T/client.pem" --key "$T/client.key" \
            -h 127.0.0.1 -p "$RPORT" -t rpush -d 250 -n "$N" -c "$CLIENTS" -P "$DEPTH" -q 2>&1 | tr '\r' '\n' | grep -a 'requests per second' | tail -1)
        b=$(cpu_ticks "$REDIS")
        r=$(us_per $((b - a)) "$HZ" "$N")
        R_US+=("$r")
        line="$line | redis ${r} µs/RPUSH (${rout})"
    fi
    echo "$line"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mm=$(median "${M_US[@]}")
if [ -n "$REDIS" ]; then
    rm_=$(median "${R_US[@]}")
    echo "median: master ${mm} µs/payment, redis ${rm_} µs/RPUSH; ratio master/redis = $(echo "$mm $rm_" | awk '{printf "%.2f", $1/$2}')"
else
    echo "median: master ${mm} µs/payment (redis not measured)"
fi
