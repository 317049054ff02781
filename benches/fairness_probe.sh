#!/usr/bin/env bash
# Producers beside a consumer that keeps up (shard/fairness.rs, shard/saturation.rs): a fresh
# release `vela standalone` per binary, then two loads on one topic with 4 consumers receiving
# as the messages arrive, each for 20 s:
#   open   an open-loop producer at RATE msg/s (32 tasks, 4 connections): a node with room,
#          where the producer should get its rate at its usual latency;
#   flood  256 closed-loop producer tasks (as fast as answers come): a saturated node, where the
#          consumers should still keep pace.
# Prints per binary and load: sent and received msg/s, send p50/p99, and the broker's CPU
# seconds per 100k messages moved (sent + received).
#
# Usage: benches/fairness_probe.sh [RATE] BINARY...
#   RATE     open-loop rate in msg/s (default 10000: about half the single-message peak here)
#   BINARY   `vela` binaries to compare (default target/release/vela), run one after another
set -euo pipefail
RATE=10000
if [[ ${1:-} =~ ^[0-9]+$ ]]; then RATE=$1; shift; fi
BINARIES=("${@:-target/release/vela}")
GRPC=${VELA_BENCH_GRPC:-127.0.0.1:28191}
HTTP=${VELA_BENCH_HTTP:-127.0.0.1:28192}
TICK=$(getconf CLK_TCK)

run() {
    local vela=$1 data broker
    data=$(mktemp -d)
    VELA_DATA_DIR=$data/data VELA_GRPC_LISTEN=$GRPC VELA_HTTP_LISTEN=$HTTP \
        "$vela" standalone > "$data/broker.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do curl -sf "http://$HTTP/ready" > /dev/null && break; sleep 0.1; done
    ticks() { awk '{print $14 + $15}' "/proc/$broker/stat"; }
    load() {
        local name=$1 before after
        shift
        before=$(ticks)
        "$vela" bench --server "$GRPC" --json --topic "$name" --group "$name-g" --consumers 4 \
            --producer-clients 4 --duration 20s --drain 5s "$@" > "$data/$name.json"
        after=$(ticks)
        python3 - "$data/$name.json" "$name" "$vela" "$((after - before))" "$TICK" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["send_latency"]
moved = r["sent"] + r["received"]
cpu = int(sys.argv[4]) / int(sys.argv[5])
print("%-28s %-5s sent %6.0f msg/s, received %6.0f msg/s, send p50 %5s ms p99 %6s ms, "
      "broker %.2f CPU s per 100k moved" % (
          sys.argv[3][-28:], sys.argv[2], r["send_rate"], r["receive_rate"],
          l["p50_ms"], l["p99_ms"], cpu / max(moved, 1) * 1e5))
EOF
    }
    load warm --producers 32 --rate "$RATE" > /dev/null
    load open --producers 32 --rate "$RATE"
    load flood --producers 256
    kill "$broker"
    wait "$broker" 2> /dev/null || true
    rm -rf "$data"
}

for vela in "${BINARIES[@]}"; do run "$vela"; done
