#!/usr/bin/env node
/*
 * Auth matrix: the official RocketMQ Node.js client against a Vela with auth on (ADR 0019).
 *
 * Run by scripts/compat.sh --auth, which creates the users, topics and ACLs with `vela admin`:
 *
 *     RMQ_ENDPOINT=127.0.0.1:8081 AUTH_TOPIC_OK=t1 AUTH_TOPIC_DENIED=t2 AUTH_GROUP_OK=g \
 *       AUTH_USER=alice AUTH_SECRET=... node clients/node/auth.js
 *
 * AUTH_USER may publish and subscribe to AUTH_TOPIC_OK with AUTH_GROUP_OK, only subscribe to
 * AUTH_TOPIC_DENIED (so its route is served and the send itself is refused), publish to
 * AUTH_TOPIC_PREFIXED through a prefix pattern, and publish to AUTH_TOPIC_TIE by an ALLOW entry
 * that a DENY entry of the same resource for loopback sources overrides (equal specificity:
 * DENY wins). AUTH_DISABLED_USER has a policy but is disabled.
 * Node signs with an upper-case hex signature and a UTC date (protocol.md §5.2).
 */
'use strict';

const crypto = require('crypto');
const { Producer, SimpleConsumer } = require('rocketmq-client-nodejs');
const { logger, check, step } = require('./steps');

const endpoints = process.env.RMQ_ENDPOINT || '127.0.0.1:8081';
const env = name => {
  const value = process.env[name];
  if (!value) { console.log(`FAIL setup: ${name} is not set`); process.exit(1); }
  return value;
};
const TOPIC_OK = env('AUTH_TOPIC_OK');
const TOPIC_DENIED = env('AUTH_TOPIC_DENIED');
const GROUP_OK = env('AUTH_GROUP_OK');
const USER = env('AUTH_USER');
const SECRET = env('AUTH_SECRET');
const TOPIC_PREFIXED = env('AUTH_TOPIC_PREFIXED');
const TOPIC_TIE = env('AUTH_TOPIC_TIE');
const DISABLED_USER = env('AUTH_DISABLED_USER');
const DISABLED_SECRET = env('AUTH_DISABLED_SECRET');
const RUN = crypto.randomBytes(4).toString('hex');
// 40100 and 40300 (apache.rocketmq.v2.Code).
const UNAUTHORIZED = 40100;
const FORBIDDEN = 40300;

const as = (accessKey, accessSecret) => ({
  endpoints, namespace: '', logger,
  sessionCredentials: accessKey ? { accessKey, accessSecret } : undefined,
});

/**
 * fn must fail with the protocol code `code`. startup() wraps the server's refusal in a plain
 * Error that quotes it, or, for a refused route query, says only that routes could not be
 * fetched (allowed when `routeRefusal`).
 */
async function refused(what, fn, code, routeRefusal = false) {
  try {
    await fn();
  } catch (err) {
    const message = String(err.message);
    const quoted = message.includes(`response-code=${code}`);
    const route = routeRefusal && message.includes('Failed to fetch topic routes');
    check(err.code === code || quoted || route,
      `${what}: expected code ${code}, got ${err.code} (${err.name}: ${err.message})`);
    return;
  }
  check(false, `${what}: was allowed`);
}

async function main() {
  console.log(`auth.js: endpoint ${endpoints}, run ${RUN}`);
  // One topic only (as compat.js explains, Node 1.0.8's start can miss a prompt Settings reply
  // with several; and TOPIC_TIE's Settings would be refused): the others' routes are fetched
  // at their first send.
  const producer = new Producer({ ...as(USER, SECRET), topics: [ TOPIC_OK ] });
  await step('signed producer start', () => producer.startup());
  let sent;
  await step('a permitted send succeeds', async () => {
    sent = (await producer.send({ topic: TOPIC_OK, tag: 'auth', body: Buffer.from(`allowed-${RUN}`) })).messageId;
  });
  await step('a send allowed by a prefix pattern (Topic:<prefix>-*) succeeds',
    () => producer.send({ topic: TOPIC_PREFIXED, body: Buffer.from(`prefixed-${RUN}`) }));
  await step('DENY wins over ALLOW at equal specificity (same resource, loopback denied)', () => refused('send',
    () => producer.send({ topic: TOPIC_TIE, body: Buffer.from('no') }), FORBIDDEN));
  await step('a send to a topic the user may not publish to is FORBIDDEN', () => refused('send',
    () => producer.send({ topic: TOPIC_DENIED, body: Buffer.from('no') }), FORBIDDEN));

  const consumer = new SimpleConsumer({
    ...as(USER, SECRET), consumerGroup: GROUP_OK, subscriptions: new Map([[ TOPIC_OK, '*' ]]), awaitDuration: 3000,
  });
  await step('signed consumer start', () => consumer.startup());
  await step('a permitted receive and ack succeed', async () => {
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      for (const m of await consumer.receive(16, 20000)) {
        await consumer.ack(m);
        if (m.messageId === sent) return;
      }
    }
    check(false, 'the permitted message never arrived');
  });
  const stranger = new SimpleConsumer({
    ...as(USER, SECRET), consumerGroup: `not-granted-${RUN}`, subscriptions: new Map([[ TOPIC_OK, '*' ]]),
    awaitDuration: 1000,
  });
  await step('a receive with a group the user has no policy for is FORBIDDEN', () => refused('receive',
    async () => { await stranger.startup(); await stranger.receive(1, 20000); }, FORBIDDEN));
  const wrong = new Producer({ ...as(USER, `${SECRET}-wrong`), topics: [ TOPIC_OK ] });
  await step('a wrong secret is UNAUTHORIZED', () => refused('wrong secret', () => wrong.startup(), UNAUTHORIZED, true));
  const unknown = new Producer({ ...as(`nobody-${RUN}`, SECRET), topics: [ TOPIC_OK ] });
  await step('an unknown access key is UNAUTHORIZED', () => refused('unknown key', () => unknown.startup(), UNAUTHORIZED, true));
  const disabled = new Producer({ ...as(DISABLED_USER, DISABLED_SECRET), topics: [ TOPIC_OK ] });
  await step('a disabled user is UNAUTHORIZED although its policy allows the send',
    () => refused('disabled user', () => disabled.startup(), UNAUTHORIZED, true));
  const anonymous = new Producer({ ...as(undefined), topics: [ TOPIC_OK ] });
  await step('no credentials is UNAUTHORIZED', () => refused('anonymous', () => anonymous.startup(), UNAUTHORIZED, true));
  console.log('auth.js: all steps passed');
  process.exit(0);
}

main().catch(err => { console.log(`FAIL unexpected: ${err.name}: ${err.message}`); process.exit(1); });
