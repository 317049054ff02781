#!/usr/bin/env python3
"""Routes (issue 12): the official RocketMQ Python client produces on Vela A and consumes the
copies a route made on Vela B.

Run by scripts/compat.sh --route, which starts both standalones, creates the topics and
`vela admin route create` on A (ROUTE_SRC on A to ROUTE_DST on B, tag filter `Copy`). Usage:

    RMQ_ENDPOINT_A=127.0.0.1:8081 RMQ_ENDPOINT_B=127.0.0.1:9081 ROUTE_SRC=t ROUTE_DST=u \\
        python3 clients/python/route.py

Each step prints `OK <step>`; the first failure prints `FAIL <step>: <reason>` and exits 1.
"""

import os
import time
import uuid

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

from compat import check, step

A = os.environ["RMQ_ENDPOINT_A"]
B = os.environ["RMQ_ENDPOINT_B"]
SRC = os.environ["ROUTE_SRC"]
DST = os.environ["ROUTE_DST"]
GROUP = f"route-py-{uuid.uuid4().hex[:8]}"


def main():
    print(f"route.py: {SRC} on {A} is copied to {DST} on {B}", flush=True)
    state = {}

    def start():
        state["producer"] = Producer(ClientConfiguration(A, Credentials("", "")), (SRC,))
        state["producer"].startup()
        state["consumer"] = SimpleConsumer(ClientConfiguration(B, Credentials("", "")), GROUP,
                                           {DST: FilterExpression("*")}, await_duration=3)
        state["consumer"].startup()
    step("producer on A, consumer on B", start)

    def send():
        sent = {}
        for i in range(6):
            m = Message()
            m.topic = SRC
            m.body = f"route-{i}".encode()
            m.tag = "Copy" if i % 2 == 0 else "Other"
            m.keys = f"order-{i}"
            m.add_property("index", str(i))
            sent[state["producer"].send(m).message_id] = i
        state["sent"] = sent
    step("send on A (tags Copy and Other)", send)

    def receive():
        want = {mid: i for mid, i in state["sent"].items() if i % 2 == 0}
        seen = {}
        deadline = time.monotonic() + 60
        while len(seen) < len(want):
            check(time.monotonic() < deadline, f"B got {len(seen)} of {len(want)} copies")
            for m in state["consumer"].receive(16, 30):
                origin = m.properties.get("VELA_ORIGIN_MSG_ID")
                check(origin in want, f"B got {origin!r} ({m.body!r}), which the route must not copy")
                i = want[origin]
                check(m.body == f"route-{i}".encode(), f"body {m.body!r}")
                check(m.tag == "Copy", f"tag {m.tag!r}")
                check(f"order-{i}" in m.keys, f"keys {m.keys!r}")
                check(m.properties.get("index") == str(i), f"properties {m.properties!r}")
                check(m.properties.get("VELA_ORIGIN_TOPIC") == SRC, f"origin topic {m.properties!r}")
                check(m.message_id != origin, "a copy has a new id unless --keep-message-id")
                state["consumer"].ack(m)
                seen[origin] = m
        # Nothing else arrives (the Other messages are filtered on A).
        got = state["consumer"].receive(16, 30)
        check(not got, f"B got {[m.body for m in got]} beyond the copies")
    step("receive the copies on B: body, tag, keys, properties as sent; origin set", receive)

    def stop():
        state["producer"].shutdown()
        state["consumer"].shutdown()
    step("shutdown", stop)
    print("ROUTE DONE", flush=True)


if __name__ == "__main__":
    main()
