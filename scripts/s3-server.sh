#!/usr/bin/env bash
# An S3-compatible server for the tier tests: moto (PyPI), on a free loopback port, with one
# bucket. `start` installs it into .venv on first use, starts it and writes the variables the
# tests read to .tools/s3.env (VELA_TEST_S3_ENDPOINT, VELA_TEST_S3_BUCKET); `stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools
pidfile=.tools/moto.pid

case "${1:-}" in
start)
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c 'import moto.server' 2>/dev/null; then
    echo "s3-server: installing moto into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
  fi
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  .venv/bin/moto_server -H 127.0.0.1 -p "$port" > .tools/moto.log 2>&1 &
  echo $! > "$pidfile"
  endpoint="http://127.0.0.1:$port"
  .venv/bin/python - "$endpoint" <<'PY'
import sys, time, urllib.request
endpoint = sys.argv[1]
deadline = time.time() + 60
while True:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=2)
        break
    except Exception:
        if time.time() > deadline:
            sys.exit("s3-server: moto did not start (see .tools/moto.log)")
        time.sleep(0.2)
urllib.request.urlopen(urllib.request.Request(endpoint + "/vela-test", method="PUT"), timeout=10)
PY
  printf 'export VELA_TEST_S3_ENDPOINT=%s\nexport VELA_TEST_S3_BUCKET=vela-test\n' "$endpoint" > .tools/s3.env
  echo "s3-server: moto on $endpoint, bucket vela-test"
  ;;
stop)
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile" .tools/s3.env
  fi
  ;;
*)
  echo "usage: scripts/s3-server.sh start|stop" >&2
  exit 2
  ;;
esac
