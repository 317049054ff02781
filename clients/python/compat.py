#!/usr/bin/env python3
"""Compatibility check: the official RocketMQ Python client against a live server.

Requires rocketmq-python-client==5.1.2 (see requirements.txt). Usage:

    RMQ_ENDPOINT=127.0.0.1:8081 python3 clients/python/compat.py

Environment:
    RMQ_ENDPOINT          server host:port (default 127.0.0.1:8081)
    RMQ_AK, RMQ_SK        credentials (optional; the client always signs, with an empty key if unset)
    COMPAT_STEP_TIMEOUT   seconds any single step may take (default 60)
    COMPAT_PUSH_COUNT     messages the PushConsumer must receive (default 5)
    COMPAT_RETRY_GROUP    a consumer group allowing 2 delivery attempts (`vela admin group create G
                          --max-attempts 2`); when set, a PushConsumer of it fails messages and
                          checks the retry after the back-off and the dead-letter queue
    COMPAT_BROADCAST_GROUP a broadcast consumer group (`vela admin group create G --broadcast`);
                          when set, two SimpleConsumers of it each receive every message
    COMPAT_PRIORITY_TOPIC a topic of type priority with 4 queues (`vela admin topic create T --type
                          priority --queues 4`); when set, priority messages sent low first are
                          received highest first

Every topic and group name is unique per run (the server auto-creates them). Each step prints
`OK <step>`; the first failure prints `FAIL <step>: <reason>` and exits 1. A step that hangs is a
failure too: every step runs under a deadline. The client logs to
~/logs/rocketmq_python/rocketmq_client.log.
"""

import os
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message,
                      MessageListener, Producer, PushConsumer, SimpleConsumer, TransactionChecker,
                      TransactionResolution)
from rocketmq.grpc_protocol import FilterType

ENDPOINT = os.environ.get("RMQ_ENDPOINT", "127.0.0.1:8081")
STEP_TIMEOUT = float(os.environ.get("COMPAT_STEP_TIMEOUT", "60"))
PUSH_COUNT = int(os.environ.get("COMPAT_PUSH_COUNT", "5"))
# Long polling of the simple consumers; the deadline of one receive is 3 s + this.
AWAIT_SECONDS = 5
INVISIBLE_SECONDS = 20
RUN = uuid.uuid4().hex[:10]

TOPIC_NORMAL = f"compat-py-{RUN}-normal"
TOPIC_FIFO = f"compat-py-{RUN}-fifo"
TOPIC_DELAY = f"compat-py-{RUN}-delay"
TOPIC_PUSH = f"compat-py-{RUN}-push"
TOPIC_TX = f"compat-py-{RUN}-tx"
TOPIC_QUIET = f"compat-py-{RUN}-quiet"
TOPIC_RETRY = f"compat-py-{RUN}-retry"
GROUP_NORMAL = f"compat-py-{RUN}-g-normal"
GROUP_FIFO = f"compat-py-{RUN}-g-fifo"
GROUP_DELAY = f"compat-py-{RUN}-g-delay"
GROUP_PUSH = f"compat-py-{RUN}-g-push"
GROUP_TX = f"compat-py-{RUN}-g-tx"
GROUP_SQL = f"compat-py-{RUN}-g-sql"
# Of the messages send_normal sends, those with index >= 1 and tag TagA match.
SQL_FILTER = "index >= 1 AND TAGS = 'TagA'"

# One worker runs the steps so that a hung client call can be abandoned at its deadline.
_steps = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compat-step")


class CompatFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CompatFailure(message)


def fail(step, reason):
    print(f"FAIL {step}: {reason}", flush=True)
    # Client threads may still be blocked on the broken server; do not wait for them.
    os._exit(1)


def step(name, fn, timeout=STEP_TIMEOUT):
    """Runs fn under a deadline; prints OK or fails the whole run."""
    future = _steps.submit(fn)
    try:
        result = future.result(timeout=timeout)
    except FutureTimeout:
        fail(name, f"no result within {timeout:.0f}s (server hung or never answered)")
    except CompatFailure as e:
        fail(name, str(e))
    except Exception as e:  # the client's own exceptions: report them verbatim
        traceback.print_exc()
        fail(name, f"{type(e).__name__}: {e}")
    print(f"OK {name}", flush=True)
    return result


def receive_until(consumer, want, label, handle, deadline_s=STEP_TIMEOUT - 5):
    """Receives until `want` message ids were seen, calling handle(message) on each new one."""
    seen = {}
    deadline = time.monotonic() + deadline_s
    while len(seen) < len(want):
        check(time.monotonic() < deadline,
              f"{label}: got {len(seen)}/{len(want)} messages before the deadline; missing "
              f"{sorted(set(want) - set(seen))}")
        for m in consumer.receive(16, INVISIBLE_SECONDS):
            check(m.message_id in want, f"{label}: unexpected message {m.message_id} (topic {m.topic})")
            if m.message_id in seen:
                continue
            seen[m.message_id] = m
            handle(m)
    return seen


def main():
    print(f"compat.py: endpoint {ENDPOINT}, run {RUN}", flush=True)
    credentials = Credentials(os.environ.get("RMQ_AK", ""), os.environ.get("RMQ_SK", ""))
    config = ClientConfiguration(ENDPOINT, credentials)
    state = {}

    def start_producer():
        producer = Producer(config, (TOPIC_NORMAL, TOPIC_FIFO, TOPIC_DELAY, TOPIC_PUSH))
        producer.startup()
        state["producer"] = producer
    step("producer startup", start_producer)

    def start_consumers():
        state["normal"] = SimpleConsumer(config, GROUP_NORMAL, {TOPIC_NORMAL: FilterExpression("TagA")},
                                         await_duration=AWAIT_SECONDS)
        state["fifo"] = SimpleConsumer(config, GROUP_FIFO, {TOPIC_FIFO: FilterExpression("*")},
                                       await_duration=AWAIT_SECONDS)
        state["delay"] = SimpleConsumer(config, GROUP_DELAY, {TOPIC_DELAY: FilterExpression("*")},
                                        await_duration=AWAIT_SECONDS)
        state["tx"] = SimpleConsumer(config, GROUP_TX, {TOPIC_TX: FilterExpression("*")},
                                     await_duration=AWAIT_SECONDS)
        # Primes the push group's position before anything is sent (see prime below).
        state["push-primer"] = SimpleConsumer(config, GROUP_PUSH, {TOPIC_PUSH: FilterExpression("*")},
                                              await_duration=AWAIT_SECONDS)
        # The same topic through an SQL92 subscription (its own group).
        state["sql"] = SimpleConsumer(config, GROUP_SQL,
                                      {TOPIC_NORMAL: FilterExpression(SQL_FILTER, FilterType.SQL)},
                                      await_duration=AWAIT_SECONDS)
        for name in ("normal", "fifo", "delay", "tx", "push-primer", "sql"):
            state[name].startup()
    step("simple consumer startup", start_consumers)

    def prime():
        # One (empty) receive per group before sending, so the check passes whether a new group
        # starts at the beginning of the queue or at its end.
        futures = [state[n].receive_async(1, INVISIBLE_SECONDS)
                   for n in ("normal", "fifo", "delay", "tx", "push-primer", "sql")]
        for f in futures:
            got = f.result(timeout=AWAIT_SECONDS + 10)
            check(len(got) == 0, f"a fresh topic delivered {len(got)} message(s)")
        state["push-primer"].shutdown()
    step("prime consumer groups (empty receive)", prime)

    def send_normal():
        ids = []
        for i in range(3):
            msg = Message()
            msg.topic = TOPIC_NORMAL
            msg.body = f"normal-{i}".encode()
            msg.tag = "TagA"
            msg.keys = f"key-{i}"
            msg.add_property("index", str(i))
            receipt = state["producer"].send(msg)
            check(len(receipt.message_id) == 34, f"message id {receipt.message_id!r} is not 34 chars")
            check(receipt.transaction_id == receipt.message_id,
                  f"transaction id {receipt.transaction_id!r} of a plain send (Apache: the message id)")
            ids.append(receipt.message_id)
        other = Message()
        other.topic = TOPIC_NORMAL
        other.body = b"filtered-out"
        other.tag = "TagB"
        state["filtered_id"] = state["producer"].send(other).message_id
        check(len(set(ids)) == 3, f"message ids are not unique: {ids}")
        state["normal_ids"] = ids
    step("send normal messages", send_normal)

    def receive_change_ack():
        ids = state["normal_ids"]
        consumer = state["normal"]

        def handle(m):
            index = ids.index(m.message_id)
            check(m.body == f"normal-{index}".encode(), f"body {m.body!r} for message {index}")
            check(m.tag == "TagA", f"tag {m.tag!r} (TagB must be filtered out)")
            check(f"key-{index}" in m.keys, f"keys {m.keys!r}")
            check(m.properties.get("index") == str(index), f"properties {m.properties!r}")
            old_handle = m.receipt_handle
            consumer.change_invisible_duration(m, INVISIBLE_SECONDS + 10)
            check(m.receipt_handle and m.receipt_handle != old_handle,
                  "change_invisible_duration did not return a new receipt handle")
            consumer.ack(m)
        receive_until(consumer, ids, "normal", handle)
    step("receive + change_invisible_duration + ack (tag filter TagA)", receive_change_ack)

    def acked_stay_acked():
        # Acked messages must not come back, and TagB never matched the filter.
        got = state["normal"].receive(16, INVISIBLE_SECONDS)
        check(not got, f"received {[m.message_id for m in got]} after everything was acked")
    step("acked messages are not redelivered", acked_stay_acked)

    def sql92():
        consumer = state["sql"]
        want = state["normal_ids"][1:]

        def handle(m):
            check(m.message_id in want, f"message {m.message_id} does not match {SQL_FILTER!r}")
            consumer.ack(m)
        receive_until(consumer, want, "sql92", handle)
        got = consumer.receive(16, INVISIBLE_SECONDS)
        check(not got, f"received {[m.properties for m in got]} that do not match {SQL_FILTER!r}")
    step("SQL92 subscription receives exactly what matches", sql92)

    def fifo():
        ids = []
        for i in range(5):
            msg = Message()
            msg.topic = TOPIC_FIFO
            msg.body = f"fifo-{i}".encode()
            msg.message_group = "compat-group-1"
            ids.append(state["producer"].send(msg).message_id)
        order = []

        def handle(m):
            check(m.message_group == "compat-group-1", f"message group {m.message_group!r}")
            check(m.properties.get("__SHARDINGKEY") == "compat-group-1",
                  f"__SHARDINGKEY {m.properties.get('__SHARDINGKEY')!r}")
            order.append(m.message_id)
            state["fifo"].ack(m)
        receive_until(state["fifo"], ids, "fifo", handle)
        check(order == ids, f"FIFO order broken: sent {ids}, received {order}")
    step("FIFO send + receive in order", fifo)

    def delay():
        delay_s = 3
        at = int(time.time()) + delay_s
        msg = Message()
        msg.topic = TOPIC_DELAY
        msg.body = b"delayed"
        msg.delivery_timestamp = at  # epoch seconds, as this client expects
        message_id = state["producer"].send(msg).message_id

        # A second one is recalled before its time (RecallMessage): it must never arrive,
        # and receive_until fails on any message it does not want.
        doomed = Message()
        doomed.topic = TOPIC_DELAY
        doomed.body = b"recalled"
        doomed.delivery_timestamp = at
        receipt = state["producer"].send(doomed)
        check(bool(receipt.recall_handle), f"no recall handle for a delay message: {receipt}")
        recalled = state["producer"].recall_message(TOPIC_DELAY, receipt.recall_handle)
        check(recalled == receipt.message_id, f"recall answered {recalled!r}")
        try:
            state["producer"].recall_message(TOPIC_DELAY, receipt.recall_handle)
            fail("delay", "a second recall of the same handle succeeded")
        except Exception as e:  # the client raises its own error type carrying the code
            check("40400" in str(e), f"a second recall failed with {e!r}, not NOT_FOUND 40400")

        def handle(m):
            now = time.time()
            check(now >= at - 1, f"delay message delivered {at - now:.1f}s before its time")
            check(m.body == b"delayed", f"body {m.body!r}")
            check(m.delivery_timestamp is not None and abs(m.delivery_timestamp / 1000 - at) < 1,
                  f"delivery_timestamp {m.delivery_timestamp!r} (ms) should be {at}s")
            state["delay"].ack(m)
        receive_until(state["delay"], [message_id], "delay", handle)
    step("delay message send + delivery after its time; a recalled one never", delay)

    def short_long_polling():
        # await_duration 2 s gives a 5 s deadline, less than the 5 s minimum long polling plus
        # the server's margin: served with the time left (Apache's proxy answers 40018).
        consumer = SimpleConsumer(config, f"compat-py-{RUN}-g-quiet", {TOPIC_QUIET: FilterExpression("*")},
                                  await_duration=2)
        consumer.startup()
        try:
            started = time.monotonic()
            got = consumer.receive(1, INVISIBLE_SECONDS)
            check(not got, f"a topic nobody sent to delivered {len(got)} message(s)")
            check(time.monotonic() - started < 5, "the receive outlasted its deadline")
        finally:
            consumer.shutdown()
    step("short long polling (await_duration 2 s) is served", short_long_polling)

    asked = {}
    asked_lock = threading.Lock()

    class Checker(TransactionChecker):
        """Answers the server's check-back: commit what the body says to, roll back the rest."""
        def check(self, message):
            with asked_lock:
                asked[message.message_id] = asked.get(message.message_id, 0) + 1
            if message.body.startswith(b"commit"):
                return TransactionResolution.COMMIT
            return TransactionResolution.ROLLBACK

    def start_tx_producer():
        producer = Producer(config, (TOPIC_TX,), checker=Checker())
        producer.startup()
        state["tx_producer"] = producer
    step("transactional producer startup (with a checker)", start_tx_producer)

    def _half(body):
        msg = Message()
        msg.topic = TOPIC_TX
        msg.body = body
        transaction = state["tx_producer"].begin_transaction()
        receipt = state["tx_producer"].send(msg, transaction)
        check(receipt.transaction_id, "a half message's receipt has no transaction id")
        state.setdefault("tx_ids", {})[receipt.message_id] = receipt.transaction_id
        return transaction, receipt.message_id

    def transactions_from_the_client():
        committed, committed_id = _half(b"client-commit")
        rolled_back, rolled_back_id = _half(b"client-rollback")
        rolled_back.rollback()
        committed.commit()
        state["tx_rolled_back"] = [rolled_back_id]

        def handle(m):
            check(m.body == b"client-commit", f"body {m.body!r}")
            want = state["tx_ids"][m.message_id]
            check(m.properties.get("__transactionId__") == want,
                  f"__transactionId__ {m.properties.get('__transactionId__')!r}, sent as {want!r}")
            state["tx"].ack(m)
        receive_until(state["tx"], [committed_id], "transaction commit", handle)
    step("transaction commit + rollback by the producer", transactions_from_the_client)

    def transactions_checked_back():
        # Sent and left open: the server asks the checker (first check 6 s after storing).
        _, commit_id = _half(b"commit-on-check")
        _, rollback_id = _half(b"rollback-on-check")
        state["tx_rolled_back"].append(rollback_id)

        def handle(m):
            check(m.body == b"commit-on-check", f"body {m.body!r} (rolled back or never sent)")
            state["tx"].ack(m)
        receive_until(state["tx"], [commit_id], "transaction check-back", handle)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with asked_lock:
                if rollback_id in asked:
                    break
            time.sleep(0.2)
        with asked_lock:
            got = dict(asked)
        check(commit_id in got and rollback_id in got,
              f"the checker was asked about {sorted(got)}, not both {commit_id} and {rollback_id}")
        # Nothing rolled back comes through.
        late = state["tx"].receive(16, INVISIBLE_SECONDS)
        check(not late, f"received {[m.body for m in late]} after the transactions ended")
    step("transaction check-back: the checker commits one, rolls back one", transactions_checked_back)

    received = {}
    received_lock = threading.Lock()
    all_received = threading.Event()

    class Listener(MessageListener):
        def consume(self, message):
            # Called on the client's consumption thread pool.
            with received_lock:
                received[message.message_id] = received.get(message.message_id, 0) + 1
                if len(received) >= PUSH_COUNT:
                    all_received.set()
            return ConsumeResult.SUCCESS

    def start_push():
        consumer = PushConsumer(config, GROUP_PUSH, Listener(), {TOPIC_PUSH: FilterExpression("*")})
        consumer.startup()
        state["push"] = consumer
    step("push consumer startup", start_push)

    def push_receive():
        ids = [state["producer"].send(_push_message(i)).message_id for i in range(PUSH_COUNT)]
        check(all_received.wait(STEP_TIMEOUT - 10),
              f"listener got {len(received)}/{PUSH_COUNT} messages")
        # Give the acks a moment; a redelivery would show up as a second call for an id.
        time.sleep(2)
        with received_lock:
            got = dict(received)
        check(set(got) == set(ids), f"listener got {sorted(got)}, sent {sorted(ids)}")
        duplicates = {k: v for k, v in got.items() if v > 1}
        check(not duplicates, f"redelivered after SUCCESS: {duplicates}")
    step(f"push consumer receives and acks {PUSH_COUNT} messages", push_receive)

    retry_group = os.environ.get("COMPAT_RETRY_GROUP")
    if retry_group:
        push_retries(config, state["producer"], retry_group)
    priority_topic = os.environ.get("COMPAT_PRIORITY_TOPIC")
    if priority_topic:
        priorities(config, priority_topic)
    broadcast_group = os.environ.get("COMPAT_BROADCAST_GROUP")
    if broadcast_group:
        broadcast(config, state["producer"], broadcast_group)

    def shutdown():
        for name in ("push", "normal", "fifo", "delay", "tx", "sql", "tx_producer", "producer"):
            state[name].shutdown()
    step("shutdown", shutdown)
    print("OK all", flush=True)


def broadcast(config, producer, group):
    """A broadcast group (Vela's, ADR 0029; the official clients have no broadcast mode): two
    plain SimpleConsumers of it each receive and acknowledge every message."""
    topic = f"compat-py-{RUN}-broadcast"
    state = {}

    def start():
        for name in ("a", "b"):
            state[name] = SimpleConsumer(config, group, {topic: FilterExpression("*")},
                                         await_duration=AWAIT_SECONDS)
            state[name].startup()
    step("broadcast consumers startup", start)

    def each():
        ids = set()
        for i in range(3):
            msg = Message()
            msg.topic = topic
            msg.body = f"broadcast-{i}".encode()
            msg.tag = "B"
            ids.add(producer.send(msg).message_id)
        for name in ("a", "b"):
            consumer = state[name]
            receive_until(consumer, ids, f"broadcast consumer {name}", consumer.ack)
    step("broadcast group: each of two consumers receives every message", each)

    def stop():
        for name in ("a", "b"):
            state[name].shutdown()
    step("broadcast consumers shutdown", stop)


def priorities(config, topic):
    """Priority messages (RocketMQ 5.4): four of priority 0 sent first, then two of priority
    3; receives of two take the priority-3 ones first, then the rest in order."""
    group = f"compat-py-{RUN}-g-priority"
    state = {}

    def start():
        state["producer"] = Producer(config, (topic,))
        state["producer"].startup()
        state["consumer"] = SimpleConsumer(config, group, {topic: FilterExpression("*")},
                                           await_duration=AWAIT_SECONDS)
        state["consumer"].startup()
    step("priority producer and consumer startup", start)

    def ordered():
        for body, priority in [("low-0", 0), ("low-1", 0), ("low-2", 0), ("low-3", 0),
                               ("high-0", 3), ("high-1", 3)]:
            msg = Message()
            msg.topic = topic
            msg.body = body.encode()
            msg.priority = priority
            state["producer"].send(msg)
        got = []
        deadline = time.monotonic() + STEP_TIMEOUT - 10
        while len(got) < 6:
            check(time.monotonic() < deadline, f"received {got}")
            for m in state["consumer"].receive(2, INVISIBLE_SECONDS):
                got.append((m.body.decode(), m.priority))
                state["consumer"].ack(m)
        check([b for (b, _) in got] == ["high-0", "high-1", "low-0", "low-1", "low-2", "low-3"],
              f"received in the order {got}")
        check(got[0][1] == 3, f"the priority came back as {got[0][1]!r}")
    step("priority messages: the higher priority is received first", ordered)

    def stop():
        state["consumer"].shutdown()
        state["producer"].shutdown()
    step("priority producer and consumer shutdown", stop)


def push_retries(config, producer, group):
    """A push consumer of `group` (2 attempts): "flaky" fails its first delivery and must come
    back after the group's back-off (1 s); "poison" fails both and must end in %DLQ%<group>."""
    calls = []
    calls_lock = threading.Lock()

    class Failing(MessageListener):
        def consume(self, message):
            body = message.body.decode()
            with calls_lock:
                calls.append((body, message.delivery_attempt, time.monotonic()))
            if body == "poison" or (body == "flaky" and message.delivery_attempt == 1):
                return ConsumeResult.FAILURE
            return ConsumeResult.SUCCESS

    consumer = PushConsumer(config, group, Failing(), {TOPIC_RETRY: FilterExpression("*")})
    step("push consumer of a 2-attempt group startup", consumer.startup)

    def retried():
        for body in ("flaky", "poison"):
            msg = Message()
            msg.topic = TOPIC_RETRY
            msg.body = body.encode()
            producer.send(msg)
        deadline = time.monotonic() + STEP_TIMEOUT - 10
        while True:
            with calls_lock:
                seen = list(calls)
            attempts = {b: [a for (bb, a, _) in seen if bb == b] for b in ("flaky", "poison")}
            if attempts == {"flaky": [1, 2], "poison": [1, 2]}:
                break
            check(time.monotonic() < deadline, f"listener calls {seen}")
            time.sleep(0.1)
        flaky = [t for (b, _, t) in seen if b == "flaky"]
        check(flaky[1] - flaky[0] >= 0.8, f"flaky retried {flaky[1] - flaky[0]:.2f}s later, not after 1s")
    step("push consumer: a failed message retried after the back-off", retried)

    def dead_lettered():
        dlq = SimpleConsumer(config, f"{group}-dlq", {f"%DLQ%{group}": FilterExpression("*")},
                             await_duration=AWAIT_SECONDS)
        dlq.startup()
        deadline = time.monotonic() + STEP_TIMEOUT - 10
        bodies = []
        while "poison" not in bodies:
            check(time.monotonic() < deadline, f"dead-letter queue held {bodies}")
            for m in dlq.receive(16, INVISIBLE_SECONDS):
                bodies.append(m.body.decode())
                dlq.ack(m)
        check(bodies == ["poison"], f"dead-letter queue held {bodies}")
        dlq.shutdown()
        consumer.shutdown()
    step("push consumer: a message failing every attempt is dead-lettered", dead_lettered)


def _push_message(i):
    msg = Message()
    msg.topic = TOPIC_PUSH
    msg.body = f"push-{i}".encode()
    msg.tag = "TagP"
    return msg


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 -- anything escaping main is a failure
        traceback.print_exc()
        print(f"FAIL unexpected: {type(e).__name__}: {e}", flush=True)
        os._exit(1)
    sys.stdout.flush()
    # Client scheduler threads are not daemons; exit without waiting for them.
    os._exit(0)
