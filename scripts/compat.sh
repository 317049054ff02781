#!/usr/bin/env bash
# Runs the official RocketMQ 5 clients (Python 5.1.2, Node.js 1.0.8) against a freshly
# started `vela standalone` (or, with --cluster, `vela local-cluster`: 3 controllers, 3 stores,
# 2 proxies), then stops it with SIGTERM and checks it exits cleanly.
# With --auth: a standalone with auth on (ADR 0019); users, topics and ACLs made with
# `vela admin`, then the clients' auth matrices (clients/*/auth.*; Python under three TZ values,
# since it signs its local time labelled as UTC) and the whole Python and Node checks as a SUPER user.
# With --tls: a standalone serving TLS with a CA and certificate openssl makes; the Python
# client over TLS (clients/python/tls.py), a plaintext one refused.
# With --route: a second standalone B and a route from A to B made with `vela admin route`
# (issue 12); the Python client produces on A and consumes the copies on B
# (clients/python/route.py).
# Usage: scripts/compat.sh [path/to/vela] [--cluster | --auth | --tls | --route]   (default target/debug/vela)
# Installs the clients on first use: .venv (pip) and clients/node/node_modules (npm).
set -euo pipefail
cd "$(dirname "$0")/.."
VELA=target/debug/vela
CLUSTER=
AUTH=
TLS=
ROUTE=
for arg in "$@"; do
  case "$arg" in
    --cluster) CLUSTER=1 ;;
    --auth) AUTH=1 ;;
    --tls) TLS=1 ;;
    --route) ROUTE=1 ;;
    *) VELA=$arg ;;
  esac
done
[ -x "$VELA" ] || { echo "compat: $VELA is not an executable (build it first)" >&2; exit 1; }
# The Node checks run from clients/node and call `vela admin` themselves.
VELA_ABS=$(realpath "$VELA")

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import rocketmq' 2>/dev/null; then
  echo "compat: installing rocketmq-python-client into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r clients/python/requirements.txt
fi
if [ ! -d clients/node/node_modules/rocketmq-client-nodejs ]; then
  echo "compat: installing rocketmq-client-nodejs into clients/node"
  (cd clients/node && npm install --no-audit --no-fund --loglevel=error)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -n "$CLUSTER" ]; then
  # `vela local-cluster` (3 controllers, 3 stores, 2 proxies): Python through one proxy, Node
  # through the other, then SIGTERM stops the whole cluster cleanly.
  # Below the ephemeral port range (32768 and up), a block whose ports (base+1 to base+130: every
  # role's gRPC and HTTP port) are all free now: a leftover process must not make it fail.
  BASE=$(python3 - <<'PY'
import random, socket
for _ in range(50):
    base, held, free = random.randrange(20000, 32000, 200), [], True
    try:
        for port in range(base + 1, base + 131):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        free = False
    for s in held:
        s.close()
    if free:
        print(base)
        break
else:
    raise SystemExit("compat: no free block of 130 ports between 20000 and 32000")
PY
)
  DATA=$(mktemp -d); LOG="$DATA/local-cluster.log"
  "$VELA" local-cluster --data-dir "$DATA/cluster" --base-port "$BASE" >"$LOG" 2>&1 &
  PID=$!
  # On a failure exit: SIGTERM lets local-cluster stop its children (SIGKILL would orphan them).
  trap 'kill -TERM "$PID" 2>/dev/null && timeout 90 tail --pid="$PID" -f /dev/null; rm -rf "$DATA"' EXIT
  for _ in $(seq 1 600); do
    grep -q "is running" "$LOG" && break
    kill -0 "$PID" 2>/dev/null || { echo "compat: local-cluster exited during start-up"; cat "$LOG"; exit 1; }
    sleep 0.1
  done
  grep -q "is running" "$LOG" || { echo "compat: local-cluster not ready"; cat "$LOG"; exit 1; }
  P1="127.0.0.1:$((BASE + 21))"; P2="127.0.0.1:$((BASE + 22))"
  echo "compat: vela local-cluster ready, proxies $P1 and $P2"
  status=0
  echo "--- python (rocketmq-python-client 5.1.2) through proxy 1"
  RMQ_ENDPOINT="$P1" timeout 300 .venv/bin/python clients/python/compat.py || status=1
  echo "--- node (rocketmq-client-nodejs 1.0.8) through proxy 2"
  (cd clients/node && RMQ_ENDPOINT="$P2" COMPAT_VELA="$VELA_ABS" COMPAT_ADMIN_SERVER="$P1" \
    timeout 300 node compat.js) || status=1
  echo "--- stopping local-cluster (SIGTERM)"
  kill -TERM "$PID"
  if ! timeout 90 tail --pid="$PID" -f /dev/null; then
    echo "compat: local-cluster did not stop within 90 s of SIGTERM"; status=1
  fi
  wait "$PID" || { echo "compat: local-cluster exited with status $? after SIGTERM"; status=1; }
  trap - EXIT
  if [ "$status" -ne 0 ]; then
    cat "$LOG"
    for f in "$DATA"/cluster/*/vela.log; do echo "--- $f"; tail -n 40 "$f"; done
  fi
  rm -rf "$DATA"
  exit "$status"
fi
GRPC=$(free_port); HTTP=$(free_port)
DATA=$(mktemp -d); LOG="$DATA/vela.log"
ROOT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
if [ -n "$TLS" ]; then
  command -v openssl >/dev/null || { echo "compat: --tls needs openssl to make certificates" >&2; exit 1; }
  CERTS="$DATA/certs"; mkdir -p "$CERTS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=vela compat CA" \
    -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$CERTS/server.key" -out "$CERTS/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$CERTS/san.ext"
  openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 2 -extfile "$CERTS/san.ext" -out "$CERTS/server.pem" 2>/dev/null
  VELA_TLS__ENABLED=true VELA_TLS__CERT_FILE="$CERTS/server.pem" VELA_TLS__KEY_FILE="$CERTS/server.key" \
    "$VELA" standalone --data-dir "$DATA/data" --grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" >"$LOG" 2>&1 &
elif [ -n "$AUTH" ]; then
  VELA_AUTH__ENABLED=true VELA_AUTH__INIT_USER=root VELA_AUTH__INIT_PASSWORD="$ROOT_SECRET" \
    "$VELA" standalone --data-dir "$DATA/data" --grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" >"$LOG" 2>&1 &
else
  "$VELA" standalone --data-dir "$DATA/data" --grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" >"$LOG" 2>&1 &
fi
PID=$!
B_PID=
cleanup() { kill -9 "$PID" 2>/dev/null || true; [ -z "$B_PID" ] || kill -9 "$B_PID" 2>/dev/null || true; }
trap cleanup EXIT

for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$HTTP/ready" >/dev/null; then break; fi
  kill -0 "$PID" 2>/dev/null || { echo "compat: vela exited during start-up"; cat "$LOG"; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP/ready" >/dev/null || { echo "compat: vela not ready"; cat "$LOG"; exit 1; }
echo "compat: vela standalone ready on 127.0.0.1:$GRPC"

status=0
if [ -n "$TLS" ]; then
  echo "--- python over TLS (CA from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)"
  (cd clients/python && GRPC_DEFAULT_SSL_ROOTS_FILE_PATH="$CERTS/ca.pem" RMQ_ENDPOINT="127.0.0.1:$GRPC" \
    timeout 300 ../../.venv/bin/python tls.py) || status=1
  echo "--- vela admin over TLS with --ca-file"
  if "$VELA" admin --server "https://127.0.0.1:$GRPC" --ca-file "$CERTS/ca.pem" topic list | grep -q tls-py; then
    echo "OK vela admin lists the topic over TLS"
  else
    echo "compat: vela admin over TLS failed"; status=1
  fi
elif [ -n "$AUTH" ]; then
  as_root() { "$VELA" admin --server "127.0.0.1:$GRPC" --access-key root --secret-key "$ROOT_SECRET" "$@"; }
  RUN=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
  export RMQ_ENDPOINT="127.0.0.1:$GRPC" AUTH_TOPIC_OK="auth-$RUN-ok" AUTH_TOPIC_DENIED="auth-$RUN-denied" \
    AUTH_GROUP_OK="auth-$RUN-g" AUTH_USER=alice AUTH_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(12))') \
    AUTH_TOPIC_PREFIXED="auth-$RUN-pfx-1" AUTH_TOPIC_TIE="auth-$RUN-tie" \
    AUTH_DISABLED_USER=bob AUTH_DISABLED_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  if ! { as_root topic create "$AUTH_TOPIC_OK" --queues 2 && as_root topic create "$AUTH_TOPIC_DENIED" --queues 2 \
      && as_root group create "$AUTH_GROUP_OK" --from earliest \
      && as_root user create alice --password "$AUTH_SECRET" \
      && as_root acl create --subject User:alice --resource "Topic:$AUTH_TOPIC_OK" --actions PUB,SUB --decision allow \
      && as_root acl create --subject User:alice --resource "Group:$AUTH_GROUP_OK" --actions SUB --decision allow \
      && as_root acl create --subject User:alice --resource "Topic:$AUTH_TOPIC_DENIED" --actions SUB --decision allow \
      && as_root topic create "$AUTH_TOPIC_PREFIXED" --queues 1 && as_root topic create "$AUTH_TOPIC_TIE" --queues 1 \
      && as_root acl create --subject User:alice --resource "Topic:auth-$RUN-pfx-*" --actions PUB --decision allow \
      && as_root acl create --subject User:alice --resource "Topic:$AUTH_TOPIC_TIE" --actions PUB,SUB --decision allow \
      && as_root acl create --subject User:alice --resource "Topic:$AUTH_TOPIC_TIE" --actions PUB --decision deny \
           --source-ip 127.0.0.0/8 \
      && as_root user create bob --password "$AUTH_DISABLED_SECRET" \
      && as_root acl create --subject User:bob --resource "Topic:$AUTH_TOPIC_OK" --actions PUB,SUB --decision allow \
      && as_root user update bob --status disable; }; then
    echo "compat: setting up users and ACLs failed"; status=1
  fi
  if [ "$status" -eq 0 ]; then
    for tz in UTC Asia/Shanghai America/Los_Angeles; do
      echo "--- python auth matrix (TZ=$tz)"
      (cd clients/python && TZ=$tz timeout 300 ../../.venv/bin/python auth.py) || status=1
    done
    echo "--- node auth matrix"
    (cd clients/node && timeout 300 node auth.js) || status=1
    echo "--- python, every step signed as a SUPER user (TZ=Asia/Shanghai)"
    TZ=Asia/Shanghai RMQ_AK=root RMQ_SK="$ROOT_SECRET" timeout 300 .venv/bin/python clients/python/compat.py || status=1
    echo "--- node, every step signed as a SUPER user"
    (cd clients/node && RMQ_AK=root RMQ_SK="$ROOT_SECRET" timeout 300 node compat.js) || status=1
    # Nothing a refused request sent was stored: every queue of the denied topics is empty.
    for t in "$AUTH_TOPIC_DENIED" "$AUTH_TOPIC_TIE"; do
      stored=$(as_root topic describe "$t" | awk '$1 ~ /^[0-9]+$/ { n += $3 - $2 } END { print n + 0 }')
      if [ "$stored" != "0" ]; then
        echo "compat: the denied topic $t holds $stored messages"; status=1
      else
        echo "OK the denied topic $t holds nothing"
      fi
    done
  fi
elif [ -n "$ROUTE" ]; then
  B_GRPC=$(free_port); B_HTTP=$(free_port)
  "$VELA" standalone --data-dir "$DATA/b" --grpc-listen "127.0.0.1:$B_GRPC" --http-listen "127.0.0.1:$B_HTTP" >"$DATA/b.log" 2>&1 &
  B_PID=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$B_HTTP/ready" >/dev/null && break; sleep 0.1; done
  RUN=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
  SRC="route-$RUN"; DST="route-$RUN-copy"
  if ! { "$VELA" admin --server "127.0.0.1:$GRPC" topic create "$SRC" >/dev/null \
      && "$VELA" admin --server "127.0.0.1:$B_GRPC" topic create "$DST" >/dev/null \
      && "$VELA" admin --server "127.0.0.1:$GRPC" route create "py-$RUN" --source-topic "$SRC" \
           --group "route-$RUN" --target-endpoint "127.0.0.1:$B_GRPC" --target-topic "$DST" \
           --filter-tag Copy --start earliest; }; then
    echo "compat: creating the route failed"; status=1
  fi
  if [ "$status" -eq 0 ]; then
    echo "--- python: produce on A, consume the route's copies on B"
    (cd clients/python && RMQ_ENDPOINT_A="127.0.0.1:$GRPC" RMQ_ENDPOINT_B="127.0.0.1:$B_GRPC" \
      ROUTE_SRC="$SRC" ROUTE_DST="$DST" timeout 300 ../../.venv/bin/python route.py) || status=1
    "$VELA" admin --server "127.0.0.1:$GRPC" route describe "py-$RUN" || status=1
  fi
  kill -TERM "$B_PID"
  timeout 30 tail --pid="$B_PID" -f /dev/null || { echo "compat: vela B did not stop within 30 s"; status=1; }
  [ "$status" -eq 0 ] || { echo "--- vela B log"; tail -n 60 "$DATA/b.log"; }
else
  # Groups that allow two delivery attempts, for the push consumers' retry and dead-letter checks,
  # and a broadcast group (every consumer of it gets every message).
  RUN=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
  admin() { "$VELA" admin --server "127.0.0.1:$GRPC" "$@" >/dev/null; }
  export COMPAT_RETRY_FIFO_TOPIC="compat-retry-fifo-$RUN"
  export COMPAT_PRIORITY_TOPIC="compat-priority-$RUN"
  if ! { admin group create "compat-retry-py-$RUN" --max-attempts 2 \
      && admin group create "compat-broadcast-py-$RUN" --broadcast \
      && admin topic create "$COMPAT_PRIORITY_TOPIC" --type priority --queues 4 \
      && admin topic create "compat-priority-node-$RUN" --type priority --queues 4 \
      && admin group create "compat-retry-node-$RUN" --max-attempts 2 \
      && admin topic create "$COMPAT_RETRY_FIFO_TOPIC" --type fifo --queues 2 \
      && admin group create "compat-retry-node-fifo-$RUN" --fifo --max-attempts 2; }; then
    echo "compat: creating the retry groups failed"; status=1
  fi
  echo "--- python (rocketmq-python-client 5.1.2)"
  COMPAT_RETRY_GROUP="compat-retry-py-$RUN" COMPAT_BROADCAST_GROUP="compat-broadcast-py-$RUN" \
    RMQ_ENDPOINT="127.0.0.1:$GRPC" timeout 300 .venv/bin/python clients/python/compat.py || status=1
  echo "--- node (rocketmq-client-nodejs 1.0.8)"
  (cd clients/node && COMPAT_RETRY_GROUP="compat-retry-node-$RUN" COMPAT_RETRY_FIFO_GROUP="compat-retry-node-fifo-$RUN" \
    COMPAT_PRIORITY_TOPIC="compat-priority-node-$RUN" COMPAT_VELA="$VELA_ABS" \
    RMQ_ENDPOINT="127.0.0.1:$GRPC" timeout 300 node compat.js) || status=1
fi

echo "--- stopping vela (SIGTERM)"
kill -TERM "$PID"
if ! timeout 30 tail --pid="$PID" -f /dev/null; then
  echo "compat: vela did not stop within 30 s of SIGTERM"; status=1
fi
wait "$PID" || { echo "compat: vela exited with status $? after SIGTERM"; status=1; }
if [ "$status" -ne 0 ]; then
  echo "--- vela log"; tail -n 100 "$LOG"
fi
rm -rf "$DATA"
exit "$status"
