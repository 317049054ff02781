#!/usr/bin/env python3
"""TLS: the official RocketMQ Python client against a Vela serving TLS on its client port.

Run by scripts/compat.sh --tls, which makes a CA and a server certificate for 127.0.0.1 with
openssl and starts the server with them. The client trusts the CA through gRPC's
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (it has no option of its own). Usage:

    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=ca.pem RMQ_ENDPOINT=127.0.0.1:8081 python3 clients/python/tls.py

Each step prints `OK <step>`; the first failure prints `FAIL <step>: <reason>` and exits 1.
"""

import os
import time
import uuid

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

from compat import check, step

ENDPOINT = os.environ.get("RMQ_ENDPOINT", "127.0.0.1:8081")
RUN = uuid.uuid4().hex[:8]
TOPIC = f"tls-py-{RUN}"
GROUP = f"tls-py-{RUN}-g"


def main():
    print(f"tls.py: endpoint {ENDPOINT}, CA {os.environ.get('GRPC_DEFAULT_SSL_ROOTS_FILE_PATH')}", flush=True)
    config = ClientConfiguration(ENDPOINT, Credentials("", ""))
    state = {}

    def start():
        state["producer"] = Producer(config, (TOPIC,), tls_enable=True)
        state["producer"].startup()
        state["consumer"] = SimpleConsumer(config, GROUP, {TOPIC: FilterExpression("*")},
                                           await_duration=3, tls_enable=True)
        state["consumer"].startup()
    step("producer and consumer start over TLS", start)

    def round_trip():
        m = Message()
        m.topic = TOPIC
        m.body = b"over tls"
        sent = state["producer"].send(m).message_id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for got in state["consumer"].receive(16, 20):
                state["consumer"].ack(got)
                if got.message_id == sent:
                    return
        raise AssertionError("the message sent over TLS never arrived")
    step("send, receive and ack over TLS", round_trip)

    def plaintext():
        p = Producer(config, (TOPIC,))
        state["plain"] = p
        try:
            p.startup()
            m = Message()
            m.topic = TOPIC
            m.body = b"plaintext"
            p.send(m)
        except Exception:  # the client's own error: what it raises does not matter here
            return
        check(False, "a plaintext client was served by the TLS port")
    step("a plaintext client to the TLS port fails", plaintext)
    print("tls.py: all steps passed", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
