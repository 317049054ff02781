#!/usr/bin/env python3
"""Auth matrix: the official RocketMQ Python client against a Vela with auth on (ADR 0019).

Run by scripts/compat.sh --auth, which starts the server, creates the users, topics and ACLs
below with `vela admin`, runs this under several TZ values (the client signs its local time
labelled as UTC), and afterwards checks the refused topic holds nothing. Usage:

    RMQ_ENDPOINT=127.0.0.1:8081 AUTH_TOPIC_OK=t1 AUTH_TOPIC_DENIED=t2 AUTH_GROUP_OK=g \\
        AUTH_USER=alice AUTH_SECRET=... python3 clients/python/auth.py

`AUTH_USER` may publish and subscribe to `AUTH_TOPIC_OK` with `AUTH_GROUP_OK`, only subscribe
to `AUTH_TOPIC_DENIED` (so its route is served and the send itself is refused), publish to
`AUTH_TOPIC_PREFIXED` through a prefix pattern (`Topic:<prefix>-*`), and publish to
`AUTH_TOPIC_TIE` by an ALLOW entry that a DENY entry of the same resource for loopback sources
overrides (equal specificity: DENY wins). `AUTH_DISABLED_USER` has a policy but is disabled. Each step prints `OK <step>`; the first failure prints `FAIL <step>: <reason>`, exits 1.
"""

import os
import time
import uuid

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

from compat import check, step

ENDPOINT = os.environ.get("RMQ_ENDPOINT", "127.0.0.1:8081")
TOPIC_OK = os.environ["AUTH_TOPIC_OK"]
TOPIC_DENIED = os.environ["AUTH_TOPIC_DENIED"]
TOPIC_PREFIXED = os.environ["AUTH_TOPIC_PREFIXED"]
TOPIC_TIE = os.environ["AUTH_TOPIC_TIE"]
DISABLED_USER = os.environ["AUTH_DISABLED_USER"]
DISABLED_SECRET = os.environ["AUTH_DISABLED_SECRET"]
GROUP_OK = os.environ["AUTH_GROUP_OK"]
USER = os.environ["AUTH_USER"]
SECRET = os.environ["AUTH_SECRET"]
RUN = uuid.uuid4().hex[:8]


def config(user, secret):
    return ClientConfiguration(ENDPOINT, Credentials(user, secret))


def refused(what, fn, *names):
    """fn must raise one of the client's exceptions named `names`. At start-up the client wraps
    a refused route query in a plain `Exception("failed to fetch topic:… route")`; that counts
    when `names` includes "route"."""
    try:
        fn()
    except Exception as e:  # the client's own exception types
        wrapped = "route" in names and "failed to fetch topic" in str(e)
        check(type(e).__name__ in names or wrapped,
              f"{what}: expected {names}, got {type(e).__name__}: {e}")
        return
    raise AssertionError(f"{what}: was allowed")


def message(topic, body):
    m = Message()
    m.topic = topic
    m.body = body.encode()
    m.tag = "auth"
    return m


def main():
    tz = os.environ.get("TZ", "(unset)")
    print(f"auth.py: endpoint {ENDPOINT}, TZ {tz}, run {RUN}", flush=True)
    state = {}

    def start():
        p = Producer(config(USER, SECRET), (TOPIC_OK, TOPIC_PREFIXED, TOPIC_TIE))
        p.startup()
        state["producer"] = p
        c = SimpleConsumer(config(USER, SECRET), GROUP_OK, {TOPIC_OK: FilterExpression("*")},
                           await_duration=3)
        c.startup()
        state["consumer"] = c
    step("signed producer and consumer start", start)

    def send_allowed():
        receipt = state["producer"].send(message(TOPIC_OK, f"allowed-{RUN}"))
        state["sent"] = receipt.message_id
    step("a permitted send succeeds", send_allowed)

    step("a send allowed by a prefix pattern (Topic:<prefix>-*) succeeds",
         lambda: state["producer"].send(message(TOPIC_PREFIXED, f"prefixed-{RUN}")))

    step("DENY wins over ALLOW at equal specificity (same resource, loopback denied)",
         lambda: refused("send", lambda: state["producer"].send(message(TOPIC_TIE, "no")),
                         "ForbiddenException"))

    step("a send to a topic the user may not publish to is FORBIDDEN",
         lambda: refused("send", lambda: state["producer"].send(message(TOPIC_DENIED, "no")),
                         "ForbiddenException"))

    def receive_allowed():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for m in state["consumer"].receive(16, 20):
                state["consumer"].ack(m)
                if m.message_id == state["sent"]:
                    return
        raise AssertionError("the permitted message never arrived")
    step("a permitted receive and ack succeed", receive_allowed)

    def other_group():
        c = SimpleConsumer(config(USER, SECRET), f"not-granted-{RUN}", {TOPIC_OK: FilterExpression("*")},
                           await_duration=1)
        state["other"] = c
        c.startup()
        c.receive(1, 20)
    step("a receive with a group the user has no policy for is FORBIDDEN",
         lambda: refused("receive", other_group, "ForbiddenException"))

    def wrong_secret():
        p = Producer(config(USER, SECRET + "-wrong"), (TOPIC_OK,))
        state["wrong"] = p
        p.startup()
        p.send(message(TOPIC_OK, "wrong-secret"))
    step("a wrong secret is UNAUTHORIZED",
         lambda: refused("wrong secret", wrong_secret, "UnauthorizedException", "route"))

    def unknown_key():
        p = Producer(config(f"nobody-{RUN}", SECRET), (TOPIC_OK,))
        state["unknown"] = p
        p.startup()
        p.send(message(TOPIC_OK, "unknown-key"))
    step("an unknown access key is UNAUTHORIZED",
         lambda: refused("unknown key", unknown_key, "UnauthorizedException", "route"))

    def disabled_user():
        p = Producer(config(DISABLED_USER, DISABLED_SECRET), (TOPIC_OK,))
        state["disabled"] = p
        p.startup()
        p.send(message(TOPIC_OK, "disabled"))
    step("a disabled user is UNAUTHORIZED although its policy allows the send",
         lambda: refused("disabled user", disabled_user, "UnauthorizedException", "route"))

    def no_credentials():
        p = Producer(ClientConfiguration(ENDPOINT, Credentials("", "")), (TOPIC_OK,))
        state["anonymous"] = p
        p.startup()
        p.send(message(TOPIC_OK, "anonymous"))
    step("no credentials is UNAUTHORIZED",
         lambda: refused("no credentials", no_credentials, "UnauthorizedException", "route"))

    for name in ("producer", "consumer"):
        try:
            state[name].shutdown()
        except Exception:  # shutting down is not what this checks
            pass
    print("auth.py: all steps passed", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
