// The SDK against the real notifybridge binary: targeting, type filters,
// resume across a bridge restart with nothing lost or repeated, gap reports
// and token refresh on close 1008.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { connect } from '../notifybridge.js';
import { startBridge, startRedis, publish, waitFor } from './harness.js';

const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

/** Connects the SDK (with the `ws` package) and records everything it reports. */
function subscribe(opts) {
  const conn = connect({ WebSocket, minDelay: 50, maxDelay: 500, ...opts });
  const rec = { conn, events: [], states: [], gaps: [], caughtUp: [] };
  conn.on('event', (e) => rec.events.push(e));
  conn.on('state', (s, d) => rec.states.push({ state: s, ...d }));
  conn.on('gap', (g) => rec.gaps.push(g));
  conn.on('caught_up', (c) => rec.caughtUp.push(c));
  cleanups.push(() => conn.close());
  rec.live = () => waitFor('caught_up', () => rec.caughtUp.length > 0 && conn.state === 'live', 10000);
  rec.waitIds = (ids, what = 'events') => waitFor(`${what} ${ids.join(',')}`, () => ids.every((id) => rec.events.some((e) => e.id === id)), 10000);
  return rec;
}

function jwt(secret, claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = enc({ alg: 'HS256', typ: 'JWT' });
  const body = enc(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

test('a client receives exactly the events addressed to its user, its groups and everyone', async () => {
  const bridge = await startBridge();
  cleanups.push(() => bridge.kill());
  const alice = subscribe({ url: bridge.ws, user: 'alice', groups: ['ops'] });
  await alice.live();

  const data = { fiber: 'F-12', km: 3.2 };
  const forAlice = await publish(bridge.redisUrl, 'user:alice', 'alarm.fiber_break', data);
  const forBob = await publish(bridge.redisUrl, 'user:bob', 'alarm.fiber_break', data);
  const forOps = await publish(bridge.redisUrl, 'group:ops', 'alarm.attenuation', { fiber: 'F-7', loss_db: 4.2 });
  const forOthers = await publish(bridge.redisUrl, 'group:lab', 'test.done', { fiber: 'F-1' });
  const forAll = await publish(bridge.redisUrl, '*', 'test.done', { fiber: 'F-2' });
  // Published last: once it is here, everything before it was either
  // delivered or withheld, since one connection receives in stream order.
  const sentinel = await publish(bridge.redisUrl, 'user:bob,user:alice', 'notification', '"done"');
  await alice.waitIds([sentinel]);

  assert.deepEqual(alice.events.map((e) => e.id), [forAlice, forOps, forAll, sentinel]);
  assert.ok(!alice.events.some((e) => e.id === forBob || e.id === forOthers));
  assert.deepEqual(alice.events[0], { id: forAlice, type: 'alarm.fiber_break', data });
  assert.equal(alice.events[3].data, 'done');
  assert.equal(alice.conn.lastEventId, sentinel);
});

test('the types filter is applied by the bridge', async () => {
  const bridge = await startBridge();
  cleanups.push(() => bridge.kill());
  const c = subscribe({ url: bridge.ws, user: 'u1', types: ['alarm.*'] });
  await c.live();
  const a = await publish(bridge.redisUrl, 'user:u1', 'alarm.fiber_break', '{}');
  await publish(bridge.redisUrl, 'user:u1', 'test.done', '{}');
  const b = await publish(bridge.redisUrl, 'user:u1', 'alarm.attenuation', '{}');
  await c.waitIds([b]);
  assert.deepEqual(c.events.map((e) => e.id), [a, b]);
});

test('a bridge restart loses nothing: the SDK resumes and every missed event arrives once', async () => {
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  let bridge = await startBridge({ redisUrl: redis.url, nodeId: 'js-restart' });
  cleanups.push(() => bridge.kill());
  const c = subscribe({ url: bridge.ws, user: 'alice', groups: ['ops'] });
  await c.live();
  const before = await publish(redis.url, 'user:alice', 'alarm.fiber_break', { n: 0 });
  await c.waitIds([before]);

  const exit = await bridge.stop();
  assert.equal(exit.code, 0, `bridge exit ${JSON.stringify(exit)}`);
  await waitFor('the SDK to notice the shutdown', () => c.states.some((s) => s.state === 'reconnecting'), 5000);
  // The contract says a draining node closes with 1001; a client that saw
  // only the TCP drop (1006) must cope too, so both are accepted here.
  const closeCode = c.states.find((s) => s.state === 'reconnecting').code;
  assert.ok([1001, 1006].includes(closeCode), `close code ${closeCode}`);

  const missed = [];
  for (let i = 1; i <= 8; i++) {
    missed.push(await publish(redis.url, i % 2 ? 'user:alice' : 'group:ops', 'alarm.attenuation', { n: i }));
  }
  await publish(redis.url, 'user:bob', 'alarm.attenuation', { n: 'not for alice' });

  bridge = await startBridge({ redisUrl: redis.url, nodeId: 'js-restart', listenPort: bridge.port });
  cleanups.push(() => bridge.kill());
  await c.waitIds(missed, 'missed events');
  await c.live();
  const after = await publish(redis.url, 'user:alice', 'test.done', { n: 9 });
  await c.waitIds([after]);

  const ids = c.events.map((e) => e.id);
  assert.deepEqual(ids, [before, ...missed, after], 'every event exactly once, in stream order');
  assert.equal(c.gaps.length, 0);
});

test('a resume from an id trimmed out of the stream reports a gap', async () => {
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  const early = await publish(redis.url, 'user:alice', 'alarm.fiber_break', { n: 1 });
  await publish(redis.url, 'user:alice', 'alarm.fiber_break', { n: 2 });
  const kept = await publish(redis.url, 'user:alice', 'alarm.fiber_break', { n: 3 });
  // Trim all but the newest entry before the bridge starts, so its window
  // cannot hold the older ones either.
  assert.match(await redis.command('XTRIM', 'notifications', 'MAXLEN', '1'), /^:\d+$/);
  const bridge = await startBridge({ redisUrl: redis.url, nodeId: 'js-gap' });
  cleanups.push(() => bridge.kill());

  const c = subscribe({ url: bridge.ws, user: 'alice', lastEventId: early });
  await c.live();
  assert.equal(c.gaps.length, 1, `gaps: ${JSON.stringify(c.gaps)}`);
  assert.equal(c.gaps[0].requested, early);
  assert.deepEqual(c.events.map((e) => e.id), [kept]);
});

test('close 1008 on token expiry: the SDK asks for a new token and resumes without loss', async () => {
  const secret = 'integration-test-secret-0123456789abcdef';
  const bridge = await startBridge({ auth: 'jwt', args: ['--jwt-secret', secret] });
  cleanups.push(() => bridge.kill());
  const now = Math.floor(Date.now() / 1000);
  let refreshed = 0;
  const c = subscribe({
    url: bridge.ws,
    refreshAt: 0, // this test is about close 1008; the refresh before expiry has its own
    token: jwt(secret, { sub: 'alice', groups: ['ops'], exp: now + 2 }),
    onTokenExpired: () => {
      refreshed++;
      return jwt(secret, { sub: 'alice', groups: ['ops'], exp: now + 3600 });
    },
  });
  await c.live();
  const first = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { n: 1 });
  await c.waitIds([first]);
  await waitFor('close 1008 and a refreshed token', () => refreshed === 1, 8000);
  // Published around the expiry: must arrive through the resumed connection.
  const second = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { n: 2 });
  await c.waitIds([second]);
  assert.deepEqual(c.events.map((e) => e.id), [first, second]);
  assert.ok(!c.states.some((s) => s.state === 'closed'));
});
