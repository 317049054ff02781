#!/usr/bin/env bash
# helm-check.sh VELA_BINARY: the Kubernetes packaging, checked with the real tools offline.
# Installs helm (and kubectl) into .tools/bin and kubernetes-validate into .venv on first use,
# then: the chart README's values table and deploy/k8s (rendered from the chart) are current;
# `helm lint --strict`, `helm template` and
# strict schema validation of every profile and kustomize overlay (scripts/helm_check.py); and the cluster the chart
# renders started as local processes, sending, receiving and scaling (scripts/helm_smoke.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VELA=${1:?usage: scripts/helm-check.sh VELA_BINARY}
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
PIP=.venv/bin/pip scripts/get-helm.sh .tools/bin >/dev/null
if ! .venv/bin/python -c 'import kubernetes_validate, yaml, grpc' 2>/dev/null; then
  echo "helm-check: installing kubernetes-validate and grpcio into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0' pyyaml grpcio
fi
.venv/bin/python scripts/helm_values_doc.py
.venv/bin/python scripts/render_k8s.py .tools/bin/helm
.venv/bin/python scripts/helm_check.py .tools/bin/helm .tools/bin/kubectl
.venv/bin/python scripts/helm_smoke.py .tools/bin/helm "$VELA"
