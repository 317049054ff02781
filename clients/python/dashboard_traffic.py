#!/usr/bin/env python3
"""Traffic for the dashboard check (scripts/dashboard-check.sh), with the official Python client.

Sends in rounds (a counter's first increase is only visible to Prometheus once its series
exists), ends transactions both ways twice, receives and acknowledges some messages, leaves
some in flight and more ready, dead-letters two messages of a group allowed one attempt (made
beforehand with `vela admin group create DLQ_GROUP --max-attempts 1`) on a topic of one queue
(`DASH_TOPIC-dlq`, made beforehand with `--queues 1`, so every receive of the group runs that
queue's expiry and the two moves are seconds apart), makes two empty
receives, then prints `TRAFFIC DONE` and keeps its clients connected for DASH_HOLD seconds so
the connection gauges show.

Environment: RMQ_ENDPOINT (host:port), DASH_TOPIC, DASH_GROUP, DASH_DLQ_GROUP, DASH_HOLD.
"""

import os
import sys
import time

from rocketmq import (ClientConfiguration, Credentials, FilterExpression, Message, Producer,
                      SimpleConsumer, TransactionChecker, TransactionResolution)

ENDPOINT = os.environ.get("RMQ_ENDPOINT", "127.0.0.1:8081")
TOPIC = os.environ["DASH_TOPIC"]
TX_TOPIC = TOPIC + "-tx"
DLQ_TOPIC = TOPIC + "-dlq"
EMPTY_TOPIC = TOPIC + "-empty"
GROUP = os.environ["DASH_GROUP"]
DLQ_GROUP = os.environ["DASH_DLQ_GROUP"]
HOLD = float(os.environ.get("DASH_HOLD", "120"))


def log(line):
    print(line, flush=True)


class Checker(TransactionChecker):
    def check(self, message):
        return TransactionResolution.ROLLBACK


def main():
    config = ClientConfiguration(ENDPOINT, Credentials())
    producer = Producer(config, (TOPIC, DLQ_TOPIC))
    producer.startup()
    tx_producer = Producer(config, (TX_TOPIC,), checker=Checker())
    tx_producer.startup()
    consumer = SimpleConsumer(config, GROUP, {TOPIC: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    dlq = SimpleConsumer(config, DLQ_GROUP, {DLQ_TOPIC: FilterExpression("*")}, await_duration=5)
    dlq.startup()
    empty = SimpleConsumer(config, GROUP + "-empty", {EMPTY_TOPIC: FilterExpression("*")}, await_duration=2)
    empty.startup()
    # The groups start at the end of their topic: prime them before anything is sent.
    for c in (consumer, dlq):
        c.receive(1, 20)

    sizes = [100, 1500, 6000, 200, 70000]
    for round_ in range(4):
        for i in range(10):
            msg = Message()
            msg.topic = TOPIC
            msg.body = b"x" * sizes[(round_ + i) % len(sizes)]
            msg.tag = "T"
            producer.send(msg)
        for resolution in ("commit", "rollback") if round_ < 2 else ():
            msg = Message()
            msg.topic = TX_TOPIC
            msg.body = resolution.encode()
            transaction = tx_producer.begin_transaction()
            tx_producer.send(msg, transaction)
            transaction.commit() if resolution == "commit" else transaction.rollback()
        log(f"round {round_} sent")
        time.sleep(2.5)

    # Acknowledged in two rounds; then some left in flight (invisible well past the check).
    for _ in range(2):
        got = consumer.receive(4, 20)
        for m in got:
            consumer.ack(m)
        log(f"acked {len(got)}")
        time.sleep(2.5)
    held = consumer.receive(3, 600)
    log(f"left {len(held)} in flight")

    # Two dead letters, seconds apart: a delivery each, never acknowledged, and a receive after
    # each one's 10 s invisibility runs the expiry of the one queue (one attempt allowed: to
    # the DLQ). A counter's first value is invisible to rate(), so the two moves must fall in
    # different scrapes.
    for body in (b"dead-1", b"dead-2"):
        msg = Message()
        msg.topic = DLQ_TOPIC
        msg.body = body
        producer.send(msg)
    first = dlq.receive(1, 10)
    time.sleep(4)
    second = dlq.receive(1, 10)
    log(f"dlq deliveries {len(first)} + {len(second)}")
    time.sleep(7)
    dlq.receive(32, 600)  # the first has expired: moved
    time.sleep(5)
    dlq.receive(32, 600)  # and the second
    log("dead-lettered two")

    for _ in range(2):
        empty.receive(1, 20)
        time.sleep(1.5)
    log("TRAFFIC DONE")
    time.sleep(HOLD)
    for c in (consumer, dlq, empty):
        c.shutdown()
    producer.shutdown()
    tx_producer.shutdown()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one readable line, non-zero exit
        print(f"dashboard_traffic: {e!r}", file=sys.stderr, flush=True)
        sys.exit(1)
