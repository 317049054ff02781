#!/usr/bin/env python3
"""Checks the Helm chart and the plain manifests with the real tools, offline.

    .venv/bin/python scripts/helm_check.py HELM KUBECTL

For the default values and every profile in deploy/helm/vela/profiles: `helm lint --strict`,
`helm template`, every built-in object validated against Kubernetes 1.30's schemas in strict
mode (kubernetes-validate; a missing schema is an error), the custom resources (KEDA's
ScaledObject, the ServiceMonitor) checked field by field, and what matters asserted: PDBs, store
anti-affinity, Parallel StatefulSets behind headless Services that publish unready addresses,
the HPA aimed at the proxy Deployment, every Secret and ConfigMap a pod refers to rendered or
named as existing in the profile, probes on /health and /ready of a declared port, every role's
TOML parseable. The same for `kubectl kustomize` of deploy/k8s's overlays. Also: the values
table of the chart README is current and the chart's dashboard is the one in deploy/grafana.
"""
import base64
import ssl
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

import helm_render

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "vela"
K8S = ROOT / "deploy" / "k8s"
KUBE_VERSION = "1.30.0"
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
TLS_PARAMETERS = {"caCert": "ca.pem", "tlsClientCert": "tls.crt", "tlsClientKey": "tls.key"}
failures = []


def fail(where, what):
    failures.append(f"{where}: {what}")


def run(*cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def check_custom(where, obj):
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "ScaledObject":
        if not spec.get("scaleTargetRef", {}).get("name"):
            fail(where, "ScaledObject without scaleTargetRef.name")
        for t in spec.get("triggers", []):
            meta = t.get("metadata", {})
            if t.get("type") != "external":
                fail(where, f"trigger type {t.get('type')}")
            for key in ("scalerAddress", "topic", "consumerGroup", "lagThreshold"):
                if not isinstance(meta.get(key), str) or not meta[key]:
                    fail(where, f"trigger metadata {key} must be a non-empty string")
            if ":" not in meta.get("scalerAddress", ""):
                fail(where, "scalerAddress has no port")
        for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval"):
            if not isinstance(spec.get(key), int):
                fail(where, f"{key} must be an integer")
    elif kind == "TriggerAuthentication":
        refs = {r.get("parameter"): r for r in spec.get("secretTargetRef", [])}
        if set(refs) != set(TLS_PARAMETERS):
            fail(where, f"parameters {sorted(refs)}, expected {sorted(TLS_PARAMETERS)}")
        for parameter, key in TLS_PARAMETERS.items():
            if refs.get(parameter, {}).get("key") != key or not refs.get(parameter, {}).get("name"):
                fail(where, f"{parameter} must come from key {key} of a Secret")
    elif kind == "ServiceMonitor":
        eps = spec.get("endpoints", [])
        if not eps or any(e.get("path") != "/metrics" or not e.get("port") for e in eps):
            fail(where, "ServiceMonitor endpoints need port and path /metrics")
        if not spec.get("selector", {}).get("matchLabels"):
            fail(where, "ServiceMonitor selects nothing")


def pod_specs(objs):
    for o in objs:
        if o["kind"] in ("StatefulSet", "Deployment"):
            yield o, o["spec"]["template"]["spec"]


def check_objects(where, objs, existing, mode):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
        api = (o["apiVersion"], o["kind"])
        if api in CUSTOM:
            check_custom(f"{where} {o['kind']}/{o['metadata']['name']}", o)
            continue
        try:
            kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
        except Exception as e:  # SchemaNotFoundError, ValidationError
            fail(f"{where} {o['kind']}/{o['metadata']['name']}", f"{type(e).__name__}: {e}")
    secrets = {o["metadata"]["name"] for o in by_kind.get("Secret", [])} | existing["secrets"]
    configmaps = {o["metadata"]["name"] for o in by_kind.get("ConfigMap", [])} | existing["configmaps"]
    services = {o["metadata"]["name"]: o for o in by_kind.get("Service", [])}
    for o, spec in pod_specs(objs):
        name = f"{where} {o['kind']}/{o['metadata']['name']}"
        for v in spec.get("volumes", []):
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                fail(name, f"volume {v['name']} names Secret {v['secret']['secretName']}, which nothing creates")
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                fail(name, f"volume {v['name']} names a missing ConfigMap")
        for c in spec["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for env in c.get("env") or []:
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    fail(name, f"env {env['name']} names Secret {ref['name']}, which nothing creates")
            for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")):
                get = c.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") not in ports:
                    fail(name, f"{probe} must GET {path} on a declared port, not {get}")
            if not c.get("securityContext", {}).get("runAsNonRoot"):
                fail(name, "container may run as root")
        if o["kind"] == "StatefulSet":
            svc = services.get(o["spec"]["serviceName"])
            if svc is None or svc["spec"].get("clusterIP") != "None":
                fail(name, "serviceName is not a headless Service of the chart")
            elif not svc["spec"].get("publishNotReadyAddresses"):
                fail(name, "its headless Service must publish not-ready addresses (Raft peers find each other before ready)")
            if mode == "cluster" and o["spec"].get("podManagementPolicy") != "Parallel":
                fail(name, "podManagementPolicy must be Parallel")
    pdb_targets = {o["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") for o in by_kind.get("PodDisruptionBudget", [])}
    if mode == "cluster":
        for component in ("controller", "store", "proxy"):
            if component not in pdb_targets:
                fail(where, f"no PodDisruptionBudget for the {component}s")
        stores = [o for o in by_kind.get("StatefulSet", []) if o["metadata"]["name"].endswith("-store")]
        if len(stores) != 1:
            fail(where, "one store StatefulSet expected")
        else:
            anti = stores[0]["spec"]["template"]["spec"].get("affinity", {}).get("podAntiAffinity", {})
            terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
                t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
            ]
            if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in terms):
                fail(where, "stores are not spread over Kubernetes nodes")
            check_store_scaling(where, by_kind, stores[0])
        proxies = [o for o in by_kind.get("Deployment", []) if o["metadata"]["name"].endswith("-proxy")]
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            ref = hpa["spec"]["scaleTargetRef"]
            if ref["kind"] != "Deployment" or ref["name"] not in {p["metadata"]["name"] for p in proxies}:
                fail(where, f"the HPA aims at {ref}, not the proxy Deployment")
    for cm in by_kind.get("ConfigMap", []):
        for key, text in cm.get("data", {}).items():
            if key.endswith(".toml"):
                try:
                    tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    fail(f"{where} ConfigMap/{cm['metadata']['name']}", f"{key}: {e}")
    auths = {o["metadata"]["name"]: o for o in by_kind.get("TriggerAuthentication", [])}
    for o in by_kind.get("TriggerAuthentication", []):
        for ref in o["spec"].get("secretTargetRef", []):
            if ref.get("name") not in secrets:
                fail(f"{where} TriggerAuthentication/{o['metadata']['name']}", f"names Secret {ref.get('name')}, which nothing creates")
    for o in by_kind.get("ScaledObject", []):
        for t in o["spec"].get("triggers", []):
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref is not None and ref not in auths:
                fail(f"{where} ScaledObject/{o['metadata']['name']}", f"authenticationRef {ref} is not rendered")
    if mode == "cluster":
        check_cluster_tls(where, by_kind)
    return by_kind


def check_store_scaling(where, by_kind, store):
    """`vela admin store scale`: the controllers are told the store StatefulSet's name, mount
    their service account's token, and that account may get and patch exactly that
    StatefulSet's scale subresource, nothing more."""
    controllers = [o for o in by_kind.get("StatefulSet", []) if o["metadata"]["name"].endswith("-controller")]
    if len(controllers) != 1:
        return fail(where, "one controller StatefulSet expected")
    spec = controllers[0]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env") or []}
    if env.get("VELA_CONTROLLER__STORE_STATEFULSET") != store["metadata"]["name"]:
        fail(where, f"the controllers are not told the store StatefulSet's name: {env}")
    if spec.get("automountServiceAccountToken") is not True:
        fail(where, "the controllers do not mount their service account's token")
    roles = by_kind.get("Role", [])
    bindings = by_kind.get("RoleBinding", [])
    rules = [r for role in roles for r in role.get("rules", [])]
    wanted = {"apiGroups": ["apps"], "resources": ["statefulsets/scale"],
              "resourceNames": [store["metadata"]["name"]], "verbs": ["get", "patch"]}
    if rules != [wanted]:
        fail(where, f"the Role must grant exactly {wanted}, not {rules}")
    account = spec.get("serviceAccountName")
    bound = [b for b in bindings
             if b["roleRef"]["name"] in {r["metadata"]["name"] for r in roles}
             and any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b.get("subjects", []))]
    if not bound:
        fail(where, f"no RoleBinding gives the Role to the controllers' ServiceAccount {account}")


def handshake(ca, cert, key, hostname):
    """A mutual TLS handshake in memory, server and client presenting `cert`; raises if the
    certificate does not chain to `ca` or does not name `hostname`."""
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, data in (("ca.pem", ca), ("tls.crt", cert), ("tls.key", key)):
            paths[name] = Path(d) / name
            paths[name].write_bytes(data)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(paths["tls.crt"], paths["tls.key"])
        server.load_verify_locations(paths["ca.pem"])
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(paths["ca.pem"])
        client.load_cert_chain(paths["tls.crt"], paths["tls.key"])
        bios = [ssl.MemoryBIO() for _ in range(4)]
        s = server.wrap_bio(bios[0], bios[1], server_side=True)
        c = client.wrap_bio(bios[2], bios[3], server_hostname=hostname)
        done = set()
        for _ in range(20):
            for side, tls in (("client", c), ("server", s)):
                if side in done:
                    continue
                try:
                    tls.do_handshake()
                    done.add(side)
                except ssl.SSLWantReadError:
                    pass
            bios[0].write(bios[3].read())
            bios[2].write(bios[1].read())
            if done == {"client", "server"}:
                return
        raise RuntimeError("handshake did not finish")


def check_cluster_tls(where, by_kind):
    """Mutual TLS between the pods: every role's config has it, and a certificate the chart
    made serves nodes (name vela-cluster) and KEDA (the controllers' Service name)."""
    tls_secrets = set()
    for o, spec in pod_specs(sum((by_kind.get(k, []) for k in ("StatefulSet", "Deployment")), [])):
        for v in spec.get("volumes", []):
            if v["name"] == "cluster-tls":
                tls_secrets.add(v["secret"]["secretName"])
    configs = [text for cm in by_kind.get("ConfigMap", []) for key, text in cm.get("data", {}).items() if key.endswith(".toml")]
    if not tls_secrets:
        if any("[cluster.tls]" in text for text in configs):
            fail(where, "[cluster.tls] in a config without the cluster-tls volume")
        return
    if len(tls_secrets) != 1:
        fail(where, f"several cluster TLS Secrets: {sorted(tls_secrets)}")
    for text in configs:
        if "[cluster.tls]" not in text:
            fail(where, "a role's config lacks [cluster.tls] while the pods mount its Secret")
    made = [o for o in by_kind.get("Secret", []) if o["metadata"]["name"] in tls_secrets]
    controller = next((o for o in by_kind.get("Service", []) if o["metadata"]["name"].endswith("-controller")), None)
    for o in made:
        data = {k: base64.b64decode(v) for k, v in o["data"].items()}
        names = ["vela-cluster"]
        if controller is not None:
            names.append(f"{controller['metadata']['name']}.mq.svc.cluster.local")
        for hostname in names:
            try:
                handshake(data["ca.pem"], data["tls.crt"], data["tls.key"], hostname)
            except Exception as e:  # ssl.SSLError, KeyError, RuntimeError
                fail(f"{where} Secret/{o['metadata']['name']}", f"mutual TLS as {hostname}: {type(e).__name__}: {e}")


def render(values_files, extra=()):
    args = list(extra)
    for f in values_files:
        args += ["-f", str(f)]
    return helm_render.template(HELM, "mq", *args)


def existing_objects(values_files):
    """The Secrets and ConfigMaps the values name as made outside the chart."""
    found = {"secrets": set(), "configmaps": set()}
    paths = {
        "secrets": (("auth", "existingSecret"), ("receiptKeys", "existingSecret"), ("metadataKeySecret",), ("tier", "existingSecret"), ("cluster", "tls", "secretName")),
        "configmaps": (("telemetry", "otlpCaConfigMap"),),
    }
    for f in values_files:
        v = yaml.safe_load(Path(f).read_text()) or {}
        for kind, kind_paths in paths.items():
            for path in kind_paths:
                node = v
                for p in path:
                    node = node.get(p) if isinstance(node, dict) else None
                if node:
                    found[kind].add(node)
    return found


def main():
    global HELM
    HELM, KUBECTL = sys.argv[1], sys.argv[2]
    profiles = [[]] + [[p] for p in sorted((CHART / "profiles").glob("*.yaml"))]
    for files in profiles:
        where = files[0].name if files else "defaults"
        lint = [HELM, "lint", "--strict", str(CHART)] + [a for f in files for a in ("-f", str(f))]
        run(*lint)
        objs = render(files)
        mode = "standalone" if any((yaml.safe_load(Path(f).read_text()) or {}).get("mode") == "standalone" for f in files) else "cluster"
        by_kind = check_objects(where, objs, existing_objects(files), mode)
        print(f"{where}: {len(objs)} objects ({', '.join(sorted(by_kind))})")
    # An upgrade renders the bootstrap off; a bad value is refused.
    upgraded = render([], ["--is-upgrade"])
    for o, spec in pod_specs(upgraded):
        for env in spec["containers"][0].get("env") or []:
            if env["name"] == "VELA_BOOTSTRAP" and env["value"] != "false":
                fail("upgrade", f"{o['metadata']['name']} bootstraps on upgrade")
    bad = subprocess.run([HELM, "template", "vela", str(CHART), "--set", "controller.replicas=2"], capture_output=True, text=True)
    if bad.returncode == 0 or "1, 3 or 5" not in bad.stderr:
        fail("controller.replicas=2", "not refused with a clear message")
    # Plain manifests: kustomize's own build of each overlay (Secrets the user creates).
    user_secrets = {"vela-auth", "vela-receipt-keys", "vela-metadata-key", "vela-cluster-tls"}
    for overlay in sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir()):
        objs = [o for o in yaml.safe_load_all(run(KUBECTL, "kustomize", str(overlay))) if o]
        mode = "standalone" if overlay.name == "standalone" else "cluster"
        by_kind = check_objects(
            f"k8s/{overlay.name}", objs, {"secrets": user_secrets, "configmaps": set()}, mode
        )
        if any(o["metadata"].get("namespace", "vela") != "vela" for o in objs):
            fail(f"k8s/{overlay.name}", "objects outside the namespace the addresses name")
        print(f"k8s/{overlay.name}: {len(objs)} objects ({', '.join(sorted(by_kind))})")
    # The chart's copy of the dashboard is the dashboard.
    if (CHART / "files" / "vela-dashboard.json").read_bytes() != (ROOT / "deploy" / "grafana" / "vela-dashboard.json").read_bytes():
        fail("dashboard", "deploy/helm/vela/files/vela-dashboard.json differs from deploy/grafana/vela-dashboard.json (copy it over)")
    if failures:
        print("\n".join(["FAILED:"] + failures), file=sys.stderr)
        sys.exit(1)
    print("chart and manifests OK")


if __name__ == "__main__":
    main()
