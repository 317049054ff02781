#!/usr/bin/env bash
# What a replay does to live sends (issues 5 and 10): a fresh release `vela standalone`, a
# backlog of 1 KiB messages (8 s of batched sends), then an open-loop send probe alone, during
# a replay of the backlog from its start by another group, and after it; prints each probe's
# rate and latency percentiles, the replay's rate, and per probe the broker's CPU ticks and how
# long its threads were runnable but waited for a core (/proc/<pid>/task/*/schedstat).
#
# Usage: benches/replay_probe.sh [RATE] [CONSUMERS] [pin]
#   RATE       probe rate in msg/s (default 10000: about half the single-message peak here)
#   CONSUMERS  replaying consumers (default 1)
#   pin        broker on core 0, the load generators on core 1
# Build first: cargo build --release (or set VELA to another binary).
set -euo pipefail
VELA=${VELA:-target/release/vela}
RATE=${1:-10000}
CONSUMERS=${2:-1}
PIN=${3:-}
GRPC=${VELA_BENCH_GRPC:-127.0.0.1:28181}
HTTP=${VELA_BENCH_HTTP:-127.0.0.1:28182}
DATA=$(mktemp -d)
BROKER_CPU=() CLIENT_CPU=()
if [ "$PIN" = pin ]; then BROKER_CPU=(taskset -c 0) CLIENT_CPU=(taskset -c 1); fi

VELA_DATA_DIR=$DATA/data VELA_GRPC_LISTEN=$GRPC VELA_HTTP_LISTEN=$HTTP \
    "${BROKER_CPU[@]}" "$VELA" standalone > "$DATA/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "http://$HTTP/ready" > /dev/null && break; sleep 0.1; done

bench() { "${CLIENT_CPU[@]}" "$VELA" bench --server "$GRPC" --json "$@"; }
ticks() { awk '{print $14 + $15}' "/proc/$BROKER/stat"; }
# Nanoseconds the broker's threads spent runnable but waiting for a core.
waited() { cat /proc/"$BROKER"/task/*/schedstat 2>/dev/null | awk '{w += $2} END {printf "%.0f\n", w}'; }
probe() {
    local before after wait_before wait_after
    before=$(ticks)
    wait_before=$(waited)
    bench --topic probe --producers 32 --producer-clients 4 --consumers 0 --rate "$RATE" \
        --duration 20s --drain 0s | python3 -c '
import json, sys
r = json.load(sys.stdin)
l = r["send_latency"]
print("%6s: %.0f msg/s sent, p50 %s ms, p99 %s ms, p99.9 %s ms, max %s ms" % (
    sys.argv[1], r["send_rate"], l["p50_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"]), end="")' "$1"
    after=$(ticks)
    wait_after=$(waited)
    echo ", broker CPU $((after - before)) ticks, waiting for a core $(((wait_after - wait_before) / 1000000)) ms"
}

bench --topic replay --producers 8 --batch-size 64 --consumers 0 --duration 8s --drain 0s |
    python3 -c 'import json, sys; print("backlog: %d messages" % json.load(sys.stdin)["sent"])'
probe warm-up > /dev/null
probe alone
bench --topic replay --group replay --producers 0 --consumers "$CONSUMERS" --duration 30s \
    --drain 0s > "$DATA/replay.json" &
REPLAY=$!
sleep 3
probe replay
wait $REPLAY
python3 -c 'import json, sys; print("replay: %.0f msg/s" % json.load(open(sys.argv[1]))["receive_rate"])' "$DATA/replay.json"
probe after
