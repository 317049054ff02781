/*
 * What the Node.js checks share: a client logger that survives shutdown(), and steps that run
 * under a deadline and print `OK <step>` or `FAIL <step>: <reason>` (then exit 1).
 */
'use strict';

const util = require('util');

const STEP_TIMEOUT_MS = Number(process.env.COMPAT_STEP_TIMEOUT || '60') * 1000;

// The default file logger is closed by the first client's shutdown(), after which every other
// client throws "log stream had been closed" into stderr; log through util.format instead.
const logger = {
  info: (...args) => { if (process.env.COMPAT_VERBOSE) console.error('[client]', util.format(...args)); },
  debug: () => {},
  warn: (...args) => console.error('[client] WARN', util.format(...args)),
  error: (...args) => console.error('[client] ERROR', util.format(...args)),
};
class CompatFailure extends Error {}

function check(condition, message) {
  if (!condition) throw new CompatFailure(message);
}

function fail(name, reason) {
  console.log(`FAIL ${name}: ${reason}`);
  // Client timers and streams may still be open on a broken server; do not wait for them.
  process.exit(1);
}

async function step(name, fn, timeoutMs = STEP_TIMEOUT_MS) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CompatFailure(
      `no result within ${timeoutMs / 1000}s (server hung or never answered)`)), timeoutMs);
  });
  try {
    const result = await Promise.race([ fn(), deadline ]);
    console.log(`OK ${name}`);
    return result;
  } catch (err) {
    if (!(err instanceof CompatFailure)) console.error(err);
    fail(name, err instanceof CompatFailure ? err.message : `${err.name}: ${err.message}`);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

module.exports = { STEP_TIMEOUT_MS, logger, CompatFailure, check, fail, step, sleep };
