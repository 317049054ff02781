#!/usr/bin/env bash
# The whole test suite, as the README and .ci/run run it: formatting, lints, every unit and
# integration test, then the official RocketMQ 5 clients (Python, Node.js) against a freshly
# started `vela standalone`, then the metrics against promtool and a real Prometheus running
# every query of the Grafana dashboard, then the Helm chart (real helm, kubernetes-validate, and
# the cluster it renders started locally). It installs what it needs (cargo-nextest, a Python venv with
# the Python client and moto, the S3-compatible server the tier tests use, npm packages) on
# first run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A clean build gains nothing from incremental artifacts; without them target/ is about half the size.
export CARGO_INCREMENTAL=0
# Brokers the tests start must not refuse sends because the (shared) machine's disk is over 95%
# full: how full it is, is not what they test (vela-store tests the disk guard itself).
export VELA_STORE__DISK_FULL_RATIO=1.0

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "toolchain"
rustc --version && cargo --version
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "S3-compatible server for the tier tests (moto)"
scripts/s3-server.sh start
trap 'scripts/s3-server.sh stop' EXIT
# The S3 tests fail instead of skipping if the variables below are missing.
export VELA_TEST_REQUIRE_S3=1
# shellcheck disable=SC1091
source .tools/s3.env

step "cargo nextest (unit + integration tests; the tier tests against moto)"
cargo nextest run --workspace --profile ci --locked

step "official client compatibility (Python 5.1.2, Node.js 1.0.8): standalone, local-cluster, auth on, TLS, a route"
cargo build --locked --bin vela
scripts/compat.sh target/debug/vela
scripts/compat.sh target/debug/vela --cluster
scripts/compat.sh target/debug/vela --auth
scripts/compat.sh target/debug/vela --tls
scripts/compat.sh target/debug/vela --route

step "Kubernetes: helm lint/template, schema validation of every profile, the rendered cluster run locally"
scripts/helm-check.sh target/debug/vela

step "metrics: promtool check metrics, and every query of the Grafana dashboard against a real Prometheus"
scripts/dashboard-check.sh target/debug/vela

step "all green in $(( $(date +%s) - started )) s"
