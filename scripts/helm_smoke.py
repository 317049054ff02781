#!/usr/bin/env python3
"""Runs the cluster the chart describes, on this machine.

    .venv/bin/python scripts/helm_smoke.py HELM VELA_BINARY

Renders the chart with its default values (3 controllers, 3 stores, 2 proxies, auth on, mutual
TLS between the pods with the certificate the chart makes; plus a KEDA ScaledObject), then
starts every pod's container as a local process: the exact args and environment the
StatefulSets and the Deployment give it (Secrets resolved from the rendered ones), HOSTNAME set
to the pod's name, mounted files written out, and only addresses rewritten (each pod's DNS name
and port becomes a loopback port, the proxy Service each proxy itself; /var/lib/vela and /etc/vela a temporary directory). Then,
as the first user from the chart's Secret, it creates a topic and group through a proxy, sends,
asks a controller's KEDA external scaler for the group's backlog over mutual TLS, as the chart's
TriggerAuthentication has KEDA do it (it must count what was sent,
before the group has received anything), receives everything through the other proxy, and asks
again (0). Then a rolling update of every pod (stores, controllers, proxies: SIGTERM, restart
from the upgrade's render on the same volume) between sends: every acknowledged message is
received afterwards. Then the store StatefulSet is scaled out (a fourth store pod joins and
gets replicas) and back in with `vela admin store scale 3`, through a fake Kubernetes API
server that serves only the StatefulSet's scale subresource the chart's Role grants. Finally a
store pod whose volume is lost must refuse to start. Every
process is stopped at the end; logs are printed on failure.
"""
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import http.server
import threading

import helm_render

NS = "mq"


class FakeApiServer:
    """The one thing the controllers ask Kubernetes for: the store StatefulSet's `scale`
    subresource (get and merge-patch), in the namespace their client defaults to (in a pod,
    its own: here the kubeconfig context's). Anything else is a 404, so a wrong name or
    namespace in the chart fails the smoke test."""

    def __init__(self, directory, statefulset, replicas):
        self.replicas, self.patches = replicas, []
        fake = self
        path = f"/apis/apps/v1/namespaces/{NS}/statefulsets/{statefulset}/scale"

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def scale(self):
                return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": {"name": statefulset, "namespace": NS},
                        "spec": {"replicas": fake.replicas}, "status": {"replicas": fake.replicas}}

            def do_GET(self):
                if self.path.split("?")[0] != path:
                    return self.reply(404, {"kind": "Status", "code": 404, "message": f"no {self.path}"})
                self.reply(200, self.scale())

            def do_PATCH(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.split("?")[0] != path:
                    return self.reply(404, {"kind": "Status", "code": 404, "message": f"no {self.path}"})
                fake.replicas = body["spec"]["replicas"]
                fake.patches.append(fake.replicas)
                self.reply(200, self.scale())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.server.server_port}"}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NS}}],
        }))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a hand-rolled client of KEDA's external scaler (a few protobuf fields) ---
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def scaled_object_ref(topic, group):
    ref = field(1, b"consumer") + field(2, NS.encode())
    for k, v in (("topic", topic), ("consumerGroup", group)):
        ref += field(3, field(1, k.encode()) + field(2, v.encode()))
    return ref


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def metric_value(reply):
    """metricValues[0].metricValue of a GetMetricsResponse."""
    i = 0
    while i < len(reply):
        key, i = read_varint(reply, i)
        length, i = read_varint(reply, i)
        body, i = reply[i:i + length], i + length
        if key >> 3 == 1:
            j = 0
            while j < len(body):
                k, j = read_varint(body, j)
                if k & 7 == 0:
                    v, j = read_varint(body, j)
                    if k >> 3 == 2:
                        return v
                elif k & 7 == 1:
                    j += 8
                else:
                    n, j = read_varint(body, j)
                    j += n
    return 0


def scaler_backlog(addr, topic, group, tls):
    """Asks the scaler at `addr` as KEDA does with the chart's TriggerAuthentication: the
    cluster's CA, certificate and key, verifying the controllers' Service name."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls["ca.pem"], private_key=tls["tls.key"], certificate_chain=tls["tls.crt"])
    options = [("grpc.ssl_target_name_override", tls["host"])]
    with grpc.secure_channel(addr, credentials, options) as channel:
        call = channel.unary_unary("/externalscaler.ExternalScaler/GetMetrics")
        request = field(1, scaled_object_ref(topic, group)) + field(2, b"s0-vela")
        return metric_value(call(request, timeout=10))


class Cluster:
    def __init__(self, helm, vela):
        self.vela = vela
        self.dir = Path(tempfile.mkdtemp(prefix="vela-helm-smoke-"))
        self.procs = []
        def render(*extra):
            # A ScaledObject, so the chart renders KEDA's TriggerAuthentication too.
            keda = ["--set", "keda.scaledObjects[0].name=consumer", "--set", "keda.scaledObjects[0].deployment=consumer",
                    "--set", "keda.scaledObjects[0].topic=orders", "--set", "keda.scaledObjects[0].consumerGroup=billing"]
            return helm_render.template(helm, NS, *keda, *extra)
        self.objs = render()
        # What `helm upgrade` renders: the same, except that nothing bootstraps.
        self.upgraded = render("--is-upgrade")
        self.secrets = {
            o["metadata"]["name"]: {k: base64.b64decode(v) for k, v in (o.get("data") or {}).items()}
            for o in self.objs if o["kind"] == "Secret"
        }
        self.configmaps = {o["metadata"]["name"]: o["data"] for o in self.objs if o["kind"] == "ConfigMap"}
        # Every pod: (name, container, its ports by name).
        self.pods = []
        for o in self.objs:
            if o["kind"] not in ("StatefulSet", "Deployment"):
                continue
            replicas = o["spec"].get("replicas", 2)
            for i in range(replicas):
                name = f"{o['metadata']['name']}-{i}"
                self.pods.append((name, o, {p["name"]: free_port() for p in o["spec"]["template"]["spec"]["containers"][0]["ports"]}))
        # DNS name:port of a StatefulSet pod -> loopback port.
        self.addr = {}
        for name, o, ports in self.pods:
            if o["kind"] == "StatefulSet":
                self.addr[name] = ports
        # The Kubernetes API the controllers scale the store StatefulSet through.
        stores = next(o for o in self.objs if o["kind"] == "StatefulSet" and o["metadata"]["name"].endswith("-store"))
        self.kube = FakeApiServer(self.dir, stores["metadata"]["name"], stores["spec"]["replicas"])

    def rewrite_addrs(self, text):
        """Each StatefulSet pod's DNS name:port becomes its loopback port."""
        def pod_addr(m):
            return f"127.0.0.1:{self.addr[m.group(1)]['grpc']}"
        return re.sub(r'([a-z0-9-]+-\d+)\.[a-z0-9.-]+\.svc\.[a-z.]+:\d+', pod_addr, text)

    def rewrite(self, text, ports):
        text = self.rewrite_addrs(text)
        # The proxy Service's name: here each proxy stands in for the Service.
        text = re.sub(r'advertised_endpoint = ".*"', f'advertised_endpoint = "127.0.0.1:{ports["grpc"]}"', text)
        text = re.sub(r'grpc_listen = "0\.0\.0\.0:\d+"', f'grpc_listen = "127.0.0.1:{ports["grpc"]}"', text)
        text = re.sub(r'http_listen = "0\.0\.0\.0:\d+"', f'http_listen = "127.0.0.1:{ports["http"]}"', text)
        return text.replace("/etc/vela/", f"{self.pod_dir}/etc/").replace("/var/lib/vela", f"{self.pod_dir}/data")

    def start(self):
        for name, o, ports in self.pods:
            self.pod_dir = self.dir / name
            (self.pod_dir / "etc").mkdir(parents=True)
            self.write_mounts(o, ports)
            self.procs.append([name, self.spawn(name, o, ports, self.objs), ports])

    def write_mounts(self, o, ports):
        spec = o["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for m in spec["containers"][0].get("volumeMounts", []):
            v = volumes.get(m["name"])
            local = Path(m["mountPath"].replace("/etc/vela/", f"{self.pod_dir}/etc/").replace("/var/lib/vela", f"{self.pod_dir}/data"))
            if v is None:  # the volume claim
                local.mkdir(parents=True, exist_ok=True)
            elif "configMap" in v:
                text = self.configmaps[v["configMap"]["name"]][m["subPath"]]
                local.write_text(self.rewrite(text, ports))
            elif "secret" in v:
                local.mkdir(parents=True, exist_ok=True)
                for key, value in self.secrets[v["secret"]["secretName"]].items():
                    (local / key).write_bytes(value)

    def spawn(self, name, o, ports, objs):
        """Starts pod `name` as the workload of the same name in `objs` describes it."""
        o = next(x for x in objs if x["kind"] == o["kind"] and x["metadata"]["name"] == o["metadata"]["name"])
        c = o["spec"]["template"]["spec"]["containers"][0]
        pod_dir = self.dir / name
        env = {k: v for k, v in os.environ.items() if not k.startswith("VELA_")}
        env["HOSTNAME"] = name
        if "-controller-" in name:
            env["KUBECONFIG"] = str(self.kube.kubeconfig)  # in a pod: its service account
        if "-store-" in name:
            env["VELA_STORE__DISK_FULL_RATIO"] = "1.0"  # the shared machine's disk is not the test's
        for e in c.get("env") or []:
            if "value" in e:
                # Kubernetes expands $(NAME) of the variables listed before it.
                value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
                env[e["name"]] = self.rewrite_addrs(value)
            elif "fieldRef" in e["valueFrom"]:
                assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", e
                env[e["name"]] = name
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets[ref["name"]][ref["key"]].decode()
        args = [a.replace("/etc/vela/", f"{pod_dir}/etc/") for a in c["args"]]
        log = open(pod_dir / "vela.log", "ab")
        proc = subprocess.Popen([self.vela, *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=pod_dir)
        print(f"started {name}: vela {args[0]} (gRPC {ports['grpc']}, HTTP {ports['http']}, VELA_BOOTSTRAP={env.get('VELA_BOOTSTRAP', '-')})")
        return proc

    def scale_out(self, name, like):
        """Starts pod `name` of the StatefulSet pod `like` belongs to, as scaling it up does
        (from the upgrade's render: nothing bootstraps), and waits until every pod is ready."""
        o = next(o for n, o, _ in self.pods if n == like)
        container = o["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: free_port() for p in container["ports"]}
        self.addr[name] = ports
        self.pods.append((name, o, ports))
        self.pod_dir = self.dir / name
        (self.pod_dir / "etc").mkdir(parents=True)
        self.write_mounts(o, ports)
        self.procs.append([name, self.spawn(name, o, ports, self.upgraded), ports])
        self.wait_ready()

    def roll(self, name, upgraded):
        """A rolling update's step for one pod: SIGTERM, wait for it to exit, start it from the
        upgrade's render (VELA_BOOTSTRAP=false) on the same volume, wait until ready."""
        entry = next(p for p in self.procs if p[0] == name)
        proc = entry[1]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode == 0, f"{name} stopped with {proc.returncode}"
        o = next(o for n, o, _ in self.pods if n == name)
        entry[1] = self.spawn(name, o, entry[2], upgraded)
        self.wait_ready()

    def wait_ready(self, deadline=120):
        end = time.time() + deadline
        for name, proc, ports in self.procs:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > end:
                    raise RuntimeError(f"{name} not ready after {deadline} s")
                time.sleep(0.5)

    def scaler_tls(self):
        """The files KEDA's TriggerAuthentication hands it, and the host its ScaledObject dials."""
        auth = next(o for o in self.objs if o["kind"] == "TriggerAuthentication")
        files = {}
        for ref in auth["spec"]["secretTargetRef"]:
            files[ref["key"]] = self.secrets[ref["name"]][ref["key"]]
        scaled = next(o for o in self.objs if o["kind"] == "ScaledObject")
        files["host"] = scaled["spec"]["triggers"][0]["metadata"]["scalerAddress"].rsplit(":", 1)[0]
        return files

    def proxy(self, i):
        return [p for n, _, p in self.procs if "-proxy-" in n][i]["grpc"]

    def controller(self, i):
        return [p for n, _, p in self.procs if "-controller-" in n][i]["grpc"]

    def admin(self, proxy_port, *args):
        user = next(v for k, v in self.secrets.items() if k.endswith("-auth"))
        cmd = [self.vela, "admin", "--server", f"127.0.0.1:{proxy_port}",
               "--access-key", user["user"].decode(), "--secret-key", user["password"].decode(), *args]
        for attempt in range(30):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode == 0:
                return done.stdout
            time.sleep(1)  # leaders being elected, the first user being created
        raise RuntimeError(f"vela admin {' '.join(args)}: {done.stderr.strip()}")

    def receive_all(self, proxy_port, group, topic, bodies, when):
        """Receives (and acks) as `group` until every one of `bodies` came back."""
        wanted, seen = set(bodies), set()
        for _ in range(20):
            out = self.admin(proxy_port, "receive", group, topic, "--max", "32", "--wait", "2s", "--ack")
            seen.update(wanted.intersection(re.findall(r"[\w-]+", out)))
            if wanted <= seen:
                return
        raise AssertionError(f"acknowledged but not received {when}: {sorted(wanted - seen)}")

    def stop(self, show_logs):
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc, _ in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if show_logs:
                print(f"----- {name} -----\n" + (self.dir / name / "vela.log").read_text(errors="replace")[-4000:])
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    cluster = Cluster(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
    ok = False
    try:
        cluster.start()
        cluster.wait_ready()
        p0, p1 = cluster.proxy(0), cluster.proxy(1)
        cluster.admin(p0, "topic", "create", "orders", "--queues", "4")
        cluster.admin(p0, "group", "create", "billing")
        cluster.admin(p0, "send", "orders", "--count", "20")
        tls = cluster.scaler_tls()
        backlog = scaler_backlog(f"127.0.0.1:{cluster.controller(2)}", "orders", "billing", tls)
        assert backlog == 20, f"the scaler counts what waits for the group: {backlog}"
        got = 0
        for _ in range(10):
            out = cluster.admin(p1, "receive", "billing", "orders", "--max", "32", "--wait", "3s", "--ack")
            got += sum(1 for line in out.splitlines() if "message-" in line)
            if got >= 20:
                break
        assert got == 20, f"received {got} of 20"
        backlog = scaler_backlog(f"127.0.0.1:{cluster.controller(0)}", "orders", "billing", tls)
        assert backlog == 0, f"backlog after acking everything: {backlog}"
        # A rolling update of every pod (stores, controllers, then proxies, as the
        # StatefulSets and the Deployment do it) while messages are sent: every message whose
        # send was acknowledged is received afterwards.
        cluster.admin(p0, "topic", "create", "rolling", "--queues", "4")
        cluster.admin(p0, "group", "create", "rolling-g")
        sent = set()
        order = [n for n, _, _ in cluster.pods if "-store-" in n] + \
            [n for n, _, _ in cluster.pods if "-controller-" in n] + \
            [n for n, _, _ in cluster.pods if "-proxy-" in n]
        for step, name in enumerate(order):
            via = cluster.proxy(1) if name.endswith("proxy-0") else cluster.proxy(0)
            bodies = [f"roll-{step}-{i}" for i in range(5)]
            cluster.admin(via, "send", "rolling", *bodies)
            sent.update(bodies)
            cluster.roll(name, cluster.upgraded)
            via = cluster.proxy(1) if name.endswith("proxy-0") else cluster.proxy(0)
            bodies = [f"after-{step}-{i}" for i in range(5)]
            cluster.admin(via, "send", "rolling", *bodies)
            sent.update(bodies)
        cluster.receive_all(cluster.proxy(0), "rolling-g", "rolling", sent, "after the rolling update")
        print(f"helm smoke: {len(sent)} messages sent across a rolling update of {len(order)} pods, all received")
        # `kubectl scale statefulset vela-store --replicas 4`: the new pod (node 4, not in the
        # ConfigMap's store list) registers with the controller at the address the chart gives
        # it; a topic of two replicas created afterwards is placed on it too, and serves; the
        # replica balancer moves a replica of a configured shard (`cluster.shards`, where the
        # topics created without --replicas live) onto it as well (ADR 0032).
        # No topic had --replicas so far: every shard is a configured one.
        before = json.loads(cluster.admin(p0, "cluster", "status", "--output", "json"))
        configured = {s["shard"] for s in before["shards"]}
        assert configured, f"no configured shard in the cluster status: {before}"
        cluster.kube.replicas = 4
        cluster.scale_out("vela-store-3", "vela-store-0")
        cluster.admin(p0, "topic", "create", "spread", "--queues", "8", "--replicas", "2")
        cluster.admin(p0, "group", "create", "spread-g")
        for _ in range(120):
            status = json.loads(cluster.admin(p0, "cluster", "status", "--output", "json"))
            held = [s["shard"] for s in status["shards"]
                    if s.get("leader") is not None and any(r["node"] == 4 for r in s["replicas"])]
            if any(s["id"] == 4 and s["reachable"] for s in status["stores"]) and configured & set(held):
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"the scaled-out store pod never held a configured shard's replica: {status}")
        bodies = [f"spread-{i}" for i in range(16)]
        cluster.admin(p1, "send", "spread", *bodies)
        cluster.receive_all(p0, "spread-g", "spread", bodies, "after the scale-out")
        bodies = [f"grown-{i}" for i in range(16)]
        cluster.admin(p1, "send", "rolling", *bodies)
        cluster.receive_all(p0, "rolling-g", "rolling", bodies, "after the scale-out")
        print(f"helm smoke: a store pod added by scaling the StatefulSet joined and holds replicas of shards {held}")
        # `vela admin store scale 3 --wait`: the controller drains node 4, lowers the
        # StatefulSet through the API the chart lets it use, and removes the node; the test
        # stops the pod when the replicas go down, as the StatefulSet controller would.
        user = next(v for k, v in cluster.secrets.items() if k.endswith("-auth"))
        scale_in = subprocess.Popen(
            [cluster.vela, "admin", "--server", f"127.0.0.1:{p1}", "--access-key", user["user"].decode(),
             "--secret-key", user["password"].decode(), "store", "scale", "3", "--wait", "--timeout", "3m"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(180):
            if cluster.kube.replicas == 3 or scale_in.poll() is not None:
                break
            time.sleep(1)
        assert cluster.kube.patches == [3], f"the StatefulSet was patched {cluster.kube.patches}: {scale_in.communicate()}"
        entry = next(p for p in cluster.procs if p[0] == "vela-store-3")
        entry[1].send_signal(signal.SIGTERM)
        assert entry[1].wait(timeout=60) == 0, "vela-store-3 did not stop cleanly"
        cluster.procs.remove(entry)
        out, err = scale_in.communicate(timeout=120)
        assert scale_in.returncode == 0 and "scaled to 3 pods" in out, f"store scale 3: {out}{err}"
        stores = json.loads(cluster.admin(p0, "store", "list", "--output", "json"))["stores"]
        assert [s["id"] for s in stores] == [1, 2, 3], f"after the scale-in: {stores}"
        bodies = [f"shrunk-{i}" for i in range(16)]
        cluster.admin(p1, "send", "spread", *bodies)
        cluster.receive_all(p0, "spread-g", "spread", bodies, "after the scale-in")
        cluster.admin(p1, "send", "rolling", *bodies)
        cluster.receive_all(p0, "rolling-g", "rolling", bodies, "after the scale-in")
        print("helm smoke: `vela admin store scale 3` drained the added pod, lowered the StatefulSet and removed it")
        # After the bootstrap window, a store pod whose volume is lost refuses to start
        # instead of rejoining with an empty log (ADR 0010, ADR 0024).
        entry = next(p for p in cluster.procs if p[0] == "vela-store-2")
        entry[1].send_signal(signal.SIGTERM)
        entry[1].wait(timeout=60)
        shutil.rmtree(cluster.dir / "vela-store-2" / "data")
        (cluster.dir / "vela-store-2" / "data").mkdir()
        o = next(o for n, o, _ in cluster.pods if n == "vela-store-2")
        entry[1] = cluster.spawn("vela-store-2", o, entry[2], cluster.upgraded)
        code = entry[1].wait(timeout=60)
        log = (cluster.dir / "vela-store-2" / "vela.log").read_text(errors="replace")
        assert code != 0 and "cannot rejoin with an empty disk" in log, f"a store on a lost volume started (exit {code})"
        print("helm smoke: a store pod on a lost volume refuses to start after the bootstrap window")
        print("helm smoke: the rendered cluster sends, receives and reports backlog")
        ok = True
    finally:
        cluster.stop(show_logs=not ok)


if __name__ == "__main__":
    main()
