#!/usr/bin/env python3
"""deploy/k8s: plain manifests (a kustomize base and `cluster` / `standalone` overlays) rendered
from the Helm chart, for users without Helm.

    .venv/bin/python scripts/render_k8s.py HELM           # exit 1 if deploy/k8s is out of date
    .venv/bin/python scripts/render_k8s.py HELM --write   # render it again

The chart is rendered as release `vela` with Secrets left out (the manifests name Secrets the
user creates: deploy/k8s/README.md) and Helm's bookkeeping labels removed. Objects both modes
share go to the base; the rest to each overlay.
"""
import sys
from pathlib import Path

import yaml

import helm_render

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "k8s"
HEADER = "# Rendered from deploy/helm/vela by scripts/render_k8s.py; do not edit by hand.\n"
SECRETS = [
    "--set", "auth.existingSecret=vela-auth",
    "--set", "metadataKeySecret=vela-metadata-key",
    "--set", "cluster.tls.secretName=vela-cluster-tls",
]
MODES = {
    # The plain cluster bootstraps on its first start; README says when to turn that off.
    "cluster": ["--set", "cluster.bootstrap=true"],
    "standalone": ["--set", "mode=standalone", "--set", "auth.enabled=false"],
}


def render(helm, extra):
    objs = []
    for o in helm_render.template(helm, "vela", *SECRETS, *extra):
        if o["kind"] == "Secret":
            continue
        strip(o)
        objs.append(o)
    return objs


def strip(node):
    """Drops Helm's labels and the config checksum (kustomize users restart by hand)."""
    if isinstance(node, dict):
        for key in ("helm.sh/chart", "app.kubernetes.io/managed-by", "checksum/config"):
            node.pop(key, None)
        for key in [k for k, v in node.items() if v == {} and k in ("annotations", "labels")]:
            node.pop(key)
        for v in node.values():
            strip(v)
    elif isinstance(node, list):
        for v in node:
            strip(v)


def key(o):
    return (o["kind"], o["metadata"]["name"])


def dump(objs):
    return HEADER + yaml.safe_dump_all(objs, sort_keys=False, width=100)


def files(helm):
    rendered = {mode: render(helm, extra) for mode, extra in MODES.items()}
    shared_keys = set(map(key, rendered["cluster"])) & set(map(key, rendered["standalone"]))
    base = [o for o in rendered["cluster"] if key(o) in shared_keys
            and o == next(s for s in rendered["standalone"] if key(s) == key(o))]
    base_keys = set(map(key, base))
    out = {
        "base/vela.yaml": dump(base),
        "base/kustomization.yaml": HEADER + "resources:\n  - vela.yaml\n",
    }
    for mode, objs in rendered.items():
        own = [o for o in objs if key(o) not in base_keys]
        out[f"overlays/{mode}/vela.yaml"] = dump(own)
        out[f"overlays/{mode}/kustomization.yaml"] = (
            HEADER + "namespace: vela\nresources:\n  - ../../base\n  - vela.yaml\n")
    return out


def main():
    helm = sys.argv[1]
    wanted = files(helm)
    if "--write" in sys.argv:
        for name, text in wanted.items():
            path = OUT / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return
    stale = [n for n, t in wanted.items() if not (OUT / n).exists() or (OUT / n).read_text() != t]
    if stale:
        sys.exit(f"deploy/k8s is out of date ({', '.join(stale)}): run .venv/bin/python scripts/render_k8s.py .tools/bin/helm --write")
    print("deploy/k8s up to date")


if __name__ == "__main__":
    main()
