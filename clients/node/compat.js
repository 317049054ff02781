#!/usr/bin/env node
/*
 * Compatibility check: the official RocketMQ Node.js client against a live server.
 *
 * Requires rocketmq-client-nodejs 1.0.8 (package.json pins it; run `npm ci` or `npm install` here).
 *
 *     RMQ_ENDPOINT=127.0.0.1:8081 node clients/node/compat.js
 *
 * Environment:
 *     RMQ_ENDPOINT          server host:port (default 127.0.0.1:8081)
 *     RMQ_AK, RMQ_SK        credentials (optional)
 *     COMPAT_STEP_TIMEOUT   seconds any single step may take (default 60)
 *     COMPAT_PUSH_COUNT     messages the PushConsumer must receive (default 5)
 *     COMPAT_RETRY_GROUP    a consumer group allowing 2 delivery attempts; when set, a PushConsumer
 *                           of it fails messages and checks the retry after the back-off and the
 *                           dead-letter queue
 *     COMPAT_RETRY_FIFO_GROUP, COMPAT_RETRY_FIFO_TOPIC
 *                           the same for a FIFO group (2 attempts) on a FIFO topic: the failed
 *                           message is retried in place, then forwarded to the dead-letter queue,
 *                           and its message group goes on
 *     COMPAT_PRIORITY_TOPIC a topic of type priority with 4 queues; when set, priority messages
 *                           sent low first are received highest first
 *     COMPAT_VELA           path of the `vela` binary; when set, `vela admin client list` shows the
 *                           push consumer and `vela admin message verify` to it fails readably
 *                           (Node answers NOT_IMPLEMENTED), asked through COMPAT_ADMIN_SERVER
 *                           (default RMQ_ENDPOINT; another proxy of a cluster crosses proxies)
 *
 * Every topic and group name is unique per run (the server auto-creates them). Each step prints
 * `OK <step>`; the first failure prints `FAIL <step>: <reason>` and exits 1. Every step runs under a
 * deadline, so a server that never answers (e.g. never sends the Settings reply that startup()
 * waits for) fails the run instead of hanging it. Client warnings/errors go to stderr (all client
 * logs with COMPAT_VERBOSE=1).
 */
'use strict';

const crypto = require('crypto');
const { execFile } = require('child_process');
const { Producer, SimpleConsumer, PushConsumer, ConsumeResult, FilterExpression } = require('rocketmq-client-nodejs');
const { FilterType } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');
// Not re-exported by the package's index.
const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const endpoints = process.env.RMQ_ENDPOINT || '127.0.0.1:8081';
const PUSH_COUNT = Number(process.env.COMPAT_PUSH_COUNT || '5');
// Long polling of the simple consumers; one receive may take requestTimeout (3 s) + this.
const AWAIT_MS = 5000;
const INVISIBLE_MS = 20000;
const RUN = crypto.randomBytes(5).toString('hex');
const { STEP_TIMEOUT_MS, logger, check, step, sleep } = require('./steps');
const sessionCredentials = process.env.RMQ_AK
  ? { accessKey: process.env.RMQ_AK, accessSecret: process.env.RMQ_SK || '' }
  : undefined;
const common = { endpoints, namespace: '', sessionCredentials, logger };

const TOPIC = {
  normal: `compat-node-${RUN}-normal`,
  fifo: `compat-node-${RUN}-fifo`,
  delay: `compat-node-${RUN}-delay`,
  push: `compat-node-${RUN}-push`,
  tx: `compat-node-${RUN}-tx`,
};
const GROUP = {
  normal: `compat-node-${RUN}-g-normal`,
  fifo: `compat-node-${RUN}-g-fifo`,
  delay: `compat-node-${RUN}-g-delay`,
  push: `compat-node-${RUN}-g-push`,
  tx: `compat-node-${RUN}-g-tx`,
};

/** Receives until every id in `want` was seen, calling handle(message) once per new message. */
async function receiveUntil(consumer, want, label, handle) {
  const seen = new Set();
  const deadline = Date.now() + STEP_TIMEOUT_MS - 5000;
  while (seen.size < want.length) {
    check(Date.now() < deadline, `${label}: got ${seen.size}/${want.length} messages before the deadline; ` +
      `missing ${want.filter(id => !seen.has(id))}`);
    for (const m of await consumer.receive(16, INVISIBLE_MS)) {
      check(want.includes(m.messageId), `${label}: unexpected message ${m.messageId} (topic ${m.topic})`);
      if (seen.has(m.messageId)) continue;
      seen.add(m.messageId);
      await handle(m);
    }
  }
}

async function main() {
  console.log(`compat.js: endpoint ${endpoints}, run ${RUN}`);
  // Declare ONE topic only: Node 1.0.8's startup() registers its wait for the first Settings reply
  // only after fetching every declared topic's route, so with several topics a prompt reply (from
  // any server) arrives before the wait and startup() hangs until the 5-minute re-sync. The other
  // topics' routes are fetched on first send.
  const producer = new Producer({ ...common, topics: [ TOPIC.normal ] });
  await step('producer startup', () => producer.startup());

  const simple = (group, topic, filter) => new SimpleConsumer({
    ...common, consumerGroup: group, subscriptions: new Map([[ topic, filter ]]), awaitDuration: AWAIT_MS,
  });
  const consumers = {
    normal: simple(GROUP.normal, TOPIC.normal, 'TagA'),
    fifo: simple(GROUP.fifo, TOPIC.fifo, '*'),
    delay: simple(GROUP.delay, TOPIC.delay, '*'),
    tx: simple(GROUP.tx, TOPIC.tx, '*'),
    // Primes the push group's position before anything is sent (see below).
    pushPrimer: simple(GROUP.push, TOPIC.push, '*'),
    // The normal topic through an SQL92 subscription: index >= 1 of the TagA messages.
    sql: simple(`compat-node-${RUN}-g-sql`, TOPIC.normal,
      new FilterExpression("index >= 1 AND TAGS = 'TagA'", FilterType.SQL)),
  };
  await step('simple consumer startup', () => Promise.all(Object.values(consumers).map(c => c.startup())));

  // One (empty) receive per group before sending, so the checks pass whether a new group starts at
  // the beginning of the queue or at its end.
  await step('prime consumer groups (empty receive)', async () => {
    const got = await Promise.all(Object.values(consumers).map(c => c.receive(1, INVISIBLE_MS)));
    for (const batch of got) check(batch.length === 0, `a fresh topic delivered ${batch.length} message(s)`);
    await consumers.pushPrimer.shutdown();
  });

  const normalIds = await step('send normal messages', async () => {
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const receipt = await producer.send({
        topic: TOPIC.normal, tag: 'TagA', keys: [ `key-${i}` ], body: Buffer.from(`normal-${i}`),
        properties: new Map([[ 'index', String(i) ]]),
      });
      check(receipt.messageId.length === 34, `message id ${receipt.messageId} is not 34 chars`);
      check(receipt.transactionId === receipt.messageId,
        `transaction id ${receipt.transactionId} of a plain send (Apache: the message id)`);
      ids.push(receipt.messageId);
    }
    await producer.send({ topic: TOPIC.normal, tag: 'TagB', body: Buffer.from('filtered-out') });
    check(new Set(ids).size === 3, `message ids are not unique: ${ids}`);
    return ids;
  });

  await step('receive + changeInvisibleDuration + ack (tag filter TagA)', () =>
    receiveUntil(consumers.normal, normalIds, 'normal', async m => {
      const index = normalIds.indexOf(m.messageId);
      check(m.body.toString() === `normal-${index}`, `body ${m.body} for message ${index}`);
      check(m.tag === 'TagA', `tag ${m.tag} (TagB must be filtered out)`);
      check(m.keys.includes(`key-${index}`), `keys ${m.keys}`);
      check(m.properties.get('index') === String(index), `properties ${[ ...m.properties ]}`);
      const oldHandle = m.receiptHandle;
      await consumers.normal.changeInvisibleDuration(m, INVISIBLE_MS + 10000);
      check(m.receiptHandle && m.receiptHandle !== oldHandle,
        'changeInvisibleDuration did not return a new receipt handle');
      await consumers.normal.ack(m);
    }));

  await step('SQL92 subscription receives exactly what matches', async () => {
    const want = normalIds.slice(1);
    await receiveUntil(consumers.sql, want, 'sql92', async m => {
      check(want.includes(m.messageId), `message ${m.messageId} does not match the SQL92 filter`);
      await consumers.sql.ack(m);
    });
    const got = await consumers.sql.receive(16, INVISIBLE_MS);
    check(got.length === 0, `received ${got.map(m => m.messageId)} that do not match the SQL92 filter`);
  });

  await step('acked messages are not redelivered', async () => {
    const got = await consumers.normal.receive(16, INVISIBLE_MS);
    check(got.length === 0, `received ${got.map(m => m.messageId)} after everything was acked`);
  });

  await step('FIFO send + receive in order', async () => {
    const ids = [];
    for (let i = 0; i < 5; i++) {
      const receipt = await producer.send({
        topic: TOPIC.fifo, messageGroup: 'compat-group-1', body: Buffer.from(`fifo-${i}`),
      });
      ids.push(receipt.messageId);
    }
    const order = [];
    await receiveUntil(consumers.fifo, ids, 'fifo', async m => {
      check(m.messageGroup === 'compat-group-1', `message group ${m.messageGroup}`);
      check(m.properties.get('__SHARDINGKEY') === 'compat-group-1',
        `__SHARDINGKEY ${m.properties.get('__SHARDINGKEY')}`);
      order.push(m.messageId);
      await consumers.fifo.ack(m);
    });
    check(order.join() === ids.join(), `FIFO order broken: sent ${ids}, received ${order}`);
  });

  await step('delay message send + delivery after its time', async () => {
    const at = new Date(Date.now() + 3000);
    const receipt = await producer.send({ topic: TOPIC.delay, body: Buffer.from('delayed'), deliveryTimestamp: at });
    await receiveUntil(consumers.delay, [ receipt.messageId ], 'delay', async m => {
      const early = at.getTime() - Date.now();
      check(early <= 1000, `delay message delivered ${early}ms before its time`);
      check(m.body.toString() === 'delayed', `body ${m.body}`);
      check(m.deliveryTimestamp && Math.abs(m.deliveryTimestamp.getTime() - at.getTime()) < 1000,
        `deliveryTimestamp ${m.deliveryTimestamp} should be ${at.toISOString()}`);
      await consumers.delay.ack(m);
    });
  });

  await step('a recalled delay message is withdrawn; a second recall fails', async () => {
    const at = new Date(Date.now() + 60000);
    const receipt = await producer.send({ topic: TOPIC.delay, body: Buffer.from('recalled'), deliveryTimestamp: at });
    check(receipt.recallHandle, 'no recall handle for a delay message');
    const recalled = await producer.recallMessage(TOPIC.delay, receipt.recallHandle);
    check(recalled.messageId === receipt.messageId, `recall answered ${recalled.messageId}`);
    let again = null;
    try {
      await producer.recallMessage(TOPIC.delay, receipt.recallHandle);
    } catch (e) {
      again = e;
    }
    check(again && /40400/.test(again.message), `a second recall answered ${again}`);
  });

  // The server's check-back asks this checker about transactions left open: it commits what
  // the body says to and rolls back the rest.
  const asked = new Map();
  const txProducer = new Producer({
    ...common,
    topics: [ TOPIC.tx ],
    checker: {
      async check(messageView) {
        asked.set(messageView.messageId, (asked.get(messageView.messageId) || 0) + 1);
        return messageView.body.toString().startsWith('commit')
          ? TransactionResolution.COMMIT : TransactionResolution.ROLLBACK;
      },
    },
  });
  await step('transactional producer startup (with a checker)', () => txProducer.startup());
  const sendHalf = async body => {
    const transaction = txProducer.beginTransaction();
    const receipt = await txProducer.send({ topic: TOPIC.tx, body: Buffer.from(body) }, transaction);
    check(receipt.transactionId, 'a half message\'s receipt has no transaction id');
    return { transaction, id: receipt.messageId, transactionId: receipt.transactionId };
  };

  await step('transaction commit + rollback by the producer', async () => {
    const committed = await sendHalf('client-commit');
    const rolledBack = await sendHalf('client-rollback');
    await rolledBack.transaction.rollback();
    await committed.transaction.commit();
    await receiveUntil(consumers.tx, [ committed.id ], 'transaction commit', async m => {
      check(m.body.toString() === 'client-commit', `body ${m.body}`);
      check(m.properties.get('__transactionId__') === committed.transactionId,
        `__transactionId__ ${m.properties.get('__transactionId__')}, sent as ${committed.transactionId}`);
      await consumers.tx.ack(m);
    });
  });

  await step('transaction check-back: the checker commits one, rolls back one', async () => {
    // Left open: the server asks the checker (first check 6 s after storing).
    const commit = await sendHalf('commit-on-check');
    const rollback = await sendHalf('rollback-on-check');
    await receiveUntil(consumers.tx, [ commit.id ], 'transaction check-back', async m => {
      check(m.body.toString() === 'commit-on-check', `body ${m.body} (rolled back or never sent)`);
      await consumers.tx.ack(m);
    });
    const deadline = Date.now() + 15000;
    while (!asked.has(rollback.id) && Date.now() < deadline) await sleep(200);
    check(asked.has(commit.id) && asked.has(rollback.id),
      `the checker was asked about ${[ ...asked.keys() ]}, not both ${commit.id} and ${rollback.id}`);
    const late = await consumers.tx.receive(16, INVISIBLE_MS);
    check(late.length === 0, `received ${late.map(m => m.body.toString())} after the transactions ended`);
  });

  const received = new Map();
  let allReceived;
  const allReceivedPromise = new Promise(resolve => { allReceived = resolve; });
  const pushConsumer = new PushConsumer({
    ...common,
    consumerGroup: GROUP.push,
    subscriptions: new Map([[ TOPIC.push, '*' ]]),
    messageListener: {
      consume(messageView) {
        received.set(messageView.messageId, (received.get(messageView.messageId) || 0) + 1);
        if (received.size >= PUSH_COUNT) allReceived();
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await step('push consumer startup', () => pushConsumer.startup());

  await step(`push consumer receives and acks ${PUSH_COUNT} messages`, async () => {
    const ids = [];
    for (let i = 0; i < PUSH_COUNT; i++) {
      const receipt = await producer.send({ topic: TOPIC.push, tag: 'TagP', body: Buffer.from(`push-${i}`) });
      ids.push(receipt.messageId);
    }
    await allReceivedPromise;
    // Give the acks a moment; a redelivery would show up as a second call for an id.
    await sleep(2000);
    check(ids.every(id => received.has(id)) && received.size === ids.length,
      `listener got ${[ ...received.keys() ]}, sent ${ids}`);
    const duplicates = [ ...received ].filter(([ , n ]) => n > 1);
    check(duplicates.length === 0, `redelivered after SUCCESS: ${duplicates}`);
  });

  if (process.env.COMPAT_VELA) {
    await step('vela admin lists the push consumer; message verify says Node does not verify', async () => {
      const server = process.env.COMPAT_ADMIN_SERVER || endpoints;
      const admin = (...args) => new Promise(resolve => execFile(process.env.COMPAT_VELA,
        [ 'admin', '--server', server, ...args ], { timeout: 30000 },
        (err, stdout, stderr) => resolve({ failed: Boolean(err), stdout, stderr })));
      const listed = await admin('client', 'list', '--group', GROUP.push, '--output', 'json');
      check(!listed.failed, `client list: ${listed.stderr}`);
      const me = JSON.parse(listed.stdout).clients.find(c => c.client_id === pushConsumer.clientId);
      check(me && me.language === 'NODE_JS' && me.client_type === 'push_consumer',
        `${pushConsumer.clientId} not listed as a Node push consumer: ${listed.stdout}`);
      const receipt = await producer.send({ topic: TOPIC.push, tag: 'TagP', body: Buffer.from('verify-me') });
      const verified = await admin('message', 'verify', receipt.messageId, '--topic', TOPIC.push,
        '--client-id', pushConsumer.clientId, '--timeout', '10s');
      check(verified.failed && verified.stderr.includes('does not support'),
        `message verify: ${verified.stdout}${verified.stderr}`);
    });
  }

  if (process.env.COMPAT_RETRY_GROUP) {
    await pushRetries(producer, simple, process.env.COMPAT_RETRY_GROUP, `compat-node-${RUN}-retry`, false);
  }
  if (process.env.COMPAT_RETRY_FIFO_GROUP) {
    await pushRetries(producer, simple, process.env.COMPAT_RETRY_FIFO_GROUP, process.env.COMPAT_RETRY_FIFO_TOPIC, true);
  }
  if (process.env.COMPAT_PRIORITY_TOPIC) {
    // A topic of type priority with 4 queues: three of priority 1 sent first, then two of
    // priority 3; receives of two take the priority-3 ones first, then the rest in order.
    // (Node 1.0.8 sends a priority of 0 as a NORMAL message: it tests `!this.priority`.)
    const topic = process.env.COMPAT_PRIORITY_TOPIC;
    const consumer = simple(`compat-node-${RUN}-g-priority`, topic, '*');
    await step('priority consumer startup', () => consumer.startup());
    await step('priority messages: the higher priority is received first', async () => {
      const sends = [[ 'low-0', 1 ], [ 'low-1', 1 ], [ 'low-2', 1 ], [ 'high-0', 3 ], [ 'high-1', 3 ]];
      for (const [ body, priority ] of sends) {
        await producer.send({ topic, body: Buffer.from(body), priority });
      }
      const got = [];
      const deadline = Date.now() + STEP_TIMEOUT_MS - 5000;
      while (got.length < sends.length) {
        check(Date.now() < deadline, `received ${got}`);
        for (const m of await consumer.receive(2, INVISIBLE_MS)) {
          got.push(m.body.toString());
          await consumer.ack(m);
        }
      }
      check(got.join() === 'high-0,high-1,low-0,low-1,low-2', `received in the order ${got}`);
    });
    await consumer.shutdown();
  }

  await step('shutdown', async () => {
    await pushConsumer.shutdown();
    await consumers.normal.shutdown();
    await consumers.fifo.shutdown();
    await consumers.delay.shutdown();
    await consumers.tx.shutdown();
    await consumers.sql.shutdown();
    await txProducer.shutdown();
    await producer.shutdown();
  });
  console.log('OK all');
  process.exit(0);
}

/**
 * A push consumer of `group` (2 attempts) on `topic`: "flaky" fails its first delivery and must
 * come back after the group's back-off (1 s), "poison" fails both and must end in %DLQ%<group>.
 * On a FIFO group (one message group) "after" follows "poison" and must be consumed after it.
 */
async function pushRetries(producer, simple, group, topic, fifo) {
  const kind = fifo ? 'FIFO push consumer' : 'push consumer';
  const calls = [];
  const consumer = new PushConsumer({
    ...common,
    consumerGroup: group,
    subscriptions: new Map([[ topic, '*' ]]),
    messageListener: {
      consume(m) {
        const body = m.body.toString();
        calls.push([ body, m.deliveryAttempt, Date.now() ]);
        const failed = body === 'poison' || (body === 'flaky' && m.deliveryAttempt === 1);
        return failed ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
      },
    },
  });
  await step(`${kind} of a 2-attempt group startup`, () => consumer.startup());
  const bodies = fifo ? [ 'flaky', 'poison', 'after' ] : [ 'flaky', 'poison' ];
  await step(`${kind}: failed messages retried after the back-off`, async () => {
    for (const body of bodies) {
      await producer.send({ topic, body: Buffer.from(body), ...(fifo ? { messageGroup: 'lane' } : {}) });
    }
    const attemptsOf = body => calls.filter(([ b ]) => b === body).map(([ , a ]) => a).join(',');
    const deadline = Date.now() + STEP_TIMEOUT_MS - 10000;
    while (!(attemptsOf('flaky') === '1,2' && attemptsOf('poison') === '1,2' && (!fifo || attemptsOf('after') === '1'))) {
      check(Date.now() < deadline, `listener calls ${JSON.stringify(calls)}`);
      await sleep(100);
    }
    const flaky = calls.filter(([ b ]) => b === 'flaky').map(([ , , t ]) => t);
    check(flaky[1] - flaky[0] >= 800, `flaky retried ${flaky[1] - flaky[0]} ms later, not after 1 s`);
    if (fifo) {
      const order = calls.map(([ b, a ]) => `${b}@${a}`).join(' ');
      check(order === 'flaky@1 flaky@2 poison@1 poison@2 after@1', `FIFO order: ${order}`);
    }
  });
  await step(`${kind}: a message failing every attempt is dead-lettered`, async () => {
    const dlq = simple(`${group}-dlq`, `%DLQ%${group}`, '*');
    await dlq.startup();
    const got = [];
    const deadline = Date.now() + STEP_TIMEOUT_MS - 10000;
    while (!got.includes('poison')) {
      check(Date.now() < deadline, `dead-letter queue held ${got}`);
      for (const m of await dlq.receive(16, INVISIBLE_MS)) {
        got.push(m.body.toString());
        await dlq.ack(m);
      }
    }
    check(got.join() === 'poison', `dead-letter queue held ${got}`);
    await dlq.shutdown();
    await consumer.shutdown();
  });
}

main().catch(err => {
  console.error(err);
  console.log(`FAIL unexpected: ${err && err.message}`);
  process.exit(1);
});
