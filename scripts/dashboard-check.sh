#!/usr/bin/env bash
# Checks Vela's metrics against real tools (issue 9): `promtool check metrics` on /metrics, then
# every PromQL expression of deploy/grafana/vela-dashboard.json against a real Prometheus
# scraping a fresh `vela standalone` under scripted traffic from the official Python client
# (clients/python/dashboard_traffic.py): each must return a non-zero series
# (scripts/dashboard_check.py). Prometheus comes from Debian's package, unpacked under
# .tools/prometheus (no service is installed). Everything listens on loopback.
# Usage: scripts/dashboard-check.sh [path/to/vela]   (default target/debug/vela)
set -euo pipefail
cd "$(dirname "$0")/.."
VELA=${1:-target/debug/vela}
[ -x "$VELA" ] || { echo "dashboard-check: $VELA is not an executable (build it first)" >&2; exit 1; }

PROM_DIR=.tools/prometheus
if [ ! -x "$PROM_DIR/usr/bin/prometheus" ]; then
  echo "dashboard-check: fetching Debian's prometheus package into $PROM_DIR"
  mkdir -p "$PROM_DIR/deb"
  if ! (cd "$PROM_DIR/deb" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$PROM_DIR/deb" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$PROM_DIR"/deb/prometheus_*.deb "$PROM_DIR"
fi
PROMETHEUS="$PROM_DIR/usr/bin/prometheus"
PROMTOOL="$PROM_DIR/usr/bin/promtool"
"$PROMTOOL" --version 2>&1 | head -1

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import rocketmq' 2>/dev/null; then
  echo "dashboard-check: installing rocketmq-python-client into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r clients/python/requirements.txt
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
GRPC=127.0.0.1:$(free_port); HTTP=127.0.0.1:$(free_port); PROM=127.0.0.1:$(free_port)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do timeout 30 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

"$VELA" standalone --data-dir "$WORK/vela" --grpc-listen "$GRPC" --http-listen "$HTTP" >"$WORK/vela.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do
  curl -sf "http://$HTTP/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://$HTTP/ready" >/dev/null || { echo "dashboard-check: vela did not start"; cat "$WORK/vela.log"; exit 1; }

cat >"$WORK/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: vela
    static_configs:
      - targets: ["$HTTP"]
YAML
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="$PROM" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)

RUN=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:8])')
TOPIC="dash-$RUN"; GROUP="dash-$RUN-g"; DLQ_GROUP="dash-$RUN-dlq"
"$VELA" admin --server "$GRPC" group create "$DLQ_GROUP" --max-attempts 1 >/dev/null
# A route copies the traffic's topic to another topic of the same Vela (the Routes panels).
"$VELA" admin --server "$GRPC" topic create "$TOPIC" >/dev/null
"$VELA" admin --server "$GRPC" topic create "$TOPIC-copy" >/dev/null
"$VELA" admin --server "$GRPC" topic create "$TOPIC-dlq" --queues 1 >/dev/null
"$VELA" admin --server "$GRPC" route create "dash-$RUN" --source-topic "$TOPIC" --group "dash-$RUN-route" \
  --target-endpoint "$GRPC" --target-topic "$TOPIC-copy" --start earliest >/dev/null
RMQ_ENDPOINT="$GRPC" DASH_TOPIC="$TOPIC" DASH_GROUP="$GROUP" DASH_DLQ_GROUP="$DLQ_GROUP" DASH_HOLD=120 \
  timeout 300 .venv/bin/python clients/python/dashboard_traffic.py >"$WORK/traffic.log" 2>&1 &
TRAFFIC=$!
PIDS+=("$TRAFFIC")
for _ in $(seq 1 1200); do
  grep -q "TRAFFIC DONE" "$WORK/traffic.log" && break
  kill -0 "$TRAFFIC" 2>/dev/null || { echo "dashboard-check: the traffic failed"; cat "$WORK/traffic.log"; exit 1; }
  sleep 0.1
done
grep -q "TRAFFIC DONE" "$WORK/traffic.log" || { echo "dashboard-check: the traffic did not finish"; cat "$WORK/traffic.log"; exit 1; }
cat "$WORK/traffic.log"

echo "--- promtool check metrics (with traffic)"
curl -sf "http://$HTTP/metrics" >"$WORK/metrics.txt"
"$PROMTOOL" check metrics <"$WORK/metrics.txt"
echo "promtool: $(grep -vc '^#' "$WORK/metrics.txt") samples, no problems"

# A few scrapes after the traffic, so rates see the last increases.
sleep 4
curl -sf "http://$PROM/api/v1/targets" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
bad = [t for t in targets if t["health"] != "up"]
if bad or not targets:
    sys.exit(f"dashboard-check: Prometheus cannot scrape vela: {bad or targets}")
print("prometheus: scraping", targets[0]["scrapeUrl"])'
echo "--- every expression of deploy/grafana/vela-dashboard.json"
python3 scripts/dashboard_check.py deploy/grafana/vela-dashboard.json "http://$PROM"
