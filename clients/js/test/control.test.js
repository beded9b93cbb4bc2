// Issue 16 on the SDK's side, against the real binary (auth=jwt): the token
// refreshed in band before it expires (no reconnect), a refresh with other
// groups (4002: reconnect at once and resume), and a revocation through the
// stream (`notifybridge disconnect`: 4001 on WebSocket and SSE, 401 on the
// next poll) treated as "stop, or a new token", never "the same token again".
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { connect } from '../notifybridge.js';
import { binary, startBridge, publish, waitFor } from './harness.js';

const execFileP = promisify(execFile);
const secret = 'control-test-secret-0123456789abcdef';

const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

function jwt(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = enc({ alg: 'HS256', typ: 'JWT' });
  const body = enc({ iat: Math.floor(Date.now() / 1000), ...claims });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const now = () => Math.floor(Date.now() / 1000);

function subscribe(opts) {
  const conn = connect({ WebSocket, minDelay: 50, maxDelay: 500, ...opts });
  const rec = { conn, events: [], states: [], caughtUp: [] };
  conn.on('event', (e) => rec.events.push(e));
  conn.on('state', (s, d) => rec.states.push({ state: s, ...d }));
  conn.on('caught_up', (c) => rec.caughtUp.push(c));
  cleanups.push(() => conn.close());
  rec.live = () => waitFor('live', () => conn.state === 'live', 10000);
  rec.waitIds = (ids) => waitFor(`events ${ids.join(',')}`, () => ids.every((id) => rec.events.some((e) => e.id === id)), 15000);
  return rec;
}

async function jwtBridge() {
  // No leeway: a token not refreshed in band closes at its exp.
  const bridge = await startBridge({ auth: 'jwt', args: ['--jwt-secret', secret, '--jwt-leeway', '0s'] });
  cleanups.push(() => bridge.kill());
  return bridge;
}

async function disconnect(redisUrl, to, reason) {
  const { stdout } = await execFileP(await binary(), ['disconnect', '--redis-url', redisUrl, '--to', to, '--reason', reason], { timeout: 15000 });
  return stdout.trim();
}

test('websocket: the token is refreshed in band before it expires; the connection outlives it, no reconnect', { timeout: 60000 }, async () => {
  const bridge = await jwtBridge();
  let refreshed = 0;
  const c = subscribe({
    url: bridge.ws,
    transports: ['websocket'],
    token: jwt({ sub: 'alice', groups: ['ops'], exp: now() + 3 }),
    onTokenExpired: () => {
      refreshed++;
      return jwt({ sub: 'alice', groups: ['ops'], exp: now() + 3600 });
    },
  });
  await c.live();
  const first = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { n: 1 });
  await c.waitIds([first]);
  await waitFor('the in-band refresh', () => refreshed === 1, 10000);
  // Past the first token's exp (with a second to spare): still the same connection.
  const dead = (JSON.parse(Buffer.from(c.conn._opts.token.split('.')[1], 'base64url')).exp + 1) * 1000;
  await new Promise((r) => setTimeout(r, Math.max(0, dead - Date.now())));
  const second = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { n: 2 });
  await c.waitIds([second]);
  assert.deepEqual(c.events.map((e) => e.id), [first, second]);
  assert.deepEqual(c.states.map((s) => s.state), ['connecting', 'replaying', 'live'], 'one connection, never closed');
  assert.equal(refreshed, 1);
});

test('websocket: a refresh with other groups gets 4002, the SDK reconnects at once with it and resumes', { timeout: 60000 }, async () => {
  const bridge = await jwtBridge();
  const c = subscribe({
    url: bridge.ws,
    transports: ['websocket'],
    minDelay: 5000,
    maxDelay: 5000, // a backoff would show: 4002 must not wait for it
    token: jwt({ sub: 'alice', groups: ['ops'], exp: now() + 3 }),
    onTokenExpired: () => jwt({ sub: 'alice', groups: ['ops', 'noc-north'], exp: now() + 3600 }),
  });
  await c.live();
  const before = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { n: 1 });
  await c.waitIds([before]);
  await waitFor('close 4002', () => c.states.some((s) => s.code === 4002), 10000);
  const r = c.states.find((s) => s.code === 4002);
  assert.equal(r.state, 'reconnecting');
  assert.equal(r.delay, 0);
  const around = await publish(bridge.redisUrl, 'group:ops', 'alarm.attenuation', { n: 2 });
  const north = await publish(bridge.redisUrl, 'group:noc-north', 'alarm.attenuation', { n: 3 });
  await c.waitIds([around, north]);
  assert.deepEqual(c.events.map((e) => e.id), [before, around, north]);
  assert.ok(!c.states.some((s) => s.state === 'closed'));
});

for (const transport of ['websocket', 'sse', 'poll']) {
  test(`${transport}: revoked through the stream: without a new token it stops, never back with the same; with one it resumes, nothing lost`, { timeout: 60000 }, async () => {
    const bridge = await jwtBridge();
    // Issued a little before the revocation, as a real session's token is.
    const old = () => jwt({ sub: 'alice', groups: ['ops'], iat: now() - 5, exp: now() + 3600 });
    const stubborn = old();
    let asked = 0;
    const s = subscribe({ url: bridge.ws, transports: [transport], refreshAt: 0, token: stubborn, onTokenExpired: () => (asked++, stubborn) });
    const none = subscribe({ url: bridge.ws, transports: [transport], refreshAt: 0, token: old() });
    let renewed = 0;
    const fresh = subscribe({
      url: bridge.ws,
      transports: [transport],
      refreshAt: 0,
      token: old(),
      onTokenExpired: () => (renewed++, jwt({ sub: 'alice', groups: ['ops'], exp: now() + 3600 })),
    });
    await Promise.all([s.live(), none.live(), fresh.live()]);
    const e1 = await publish(bridge.redisUrl, 'user:alice', 'alarm.fiber_break', { n: 1 });
    await Promise.all([s.waitIds([e1]), none.waitIds([e1]), fresh.waitIds([e1])]);

    await disconnect(bridge.redisUrl, 'user:alice', 'logged out');
    const e2 = await publish(bridge.redisUrl, 'user:alice', 'alarm.fiber_break', { n: 2 });

    await waitFor('the SDK without a callback to stop', () => none.conn.state === 'closed', 15000);
    await waitFor('the SDK given the same token to stop', () => s.conn.state === 'closed', 15000);
    const code = (r) => r.states.at(-1).code ?? r.states.at(-1).status;
    // WebSocket and SSE see the close code; a poll is answered, and the next one refused.
    const want = transport === 'poll' ? 401 : 4001;
    assert.equal(code(none), want, JSON.stringify(none.states.at(-1)));
    assert.equal(code(s), want, JSON.stringify(s.states.at(-1)));
    assert.equal(asked, 1);
    await fresh.waitIds([e2]);
    assert.equal(renewed, 1);
    assert.deepEqual(fresh.events.map((e) => e.id), [e1, e2]);
    // Stopped means stopped: no attempt after closed.
    const settled = [s.states.length, none.states.length];
    await new Promise((r) => setTimeout(r, 600));
    assert.deepEqual([s.states.length, none.states.length], settled);
  });
}

for (const transport of ['sse', 'poll']) {
  test(`${transport}: the token is refreshed before it expires (sse: a reconnect that resumes; poll: the next request), nothing lost`, { timeout: 60000 }, async () => {
    const bridge = await jwtBridge();
    let refreshed = 0;
    const c = subscribe({
      url: bridge.ws,
      transports: [transport],
      token: jwt({ sub: 'alice', groups: ['ops'], exp: now() + 3 }),
      onTokenExpired: () => (refreshed++, jwt({ sub: 'alice', groups: ['ops'], exp: now() + 3600 })),
    });
    await c.live();
    const first = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { n: 1 });
    await c.waitIds([first]);
    await waitFor('the refresh', () => refreshed === 1, 10000);
    await new Promise((r) => setTimeout(r, 3500)); // past the first token's exp
    const second = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { n: 2 });
    await c.waitIds([second]);
    assert.deepEqual(c.events.map((e) => e.id), [first, second]);
    assert.equal(refreshed, 1, 'refreshed before expiry, not again at 1008 or 401');
    assert.ok(!c.states.some((s) => s.state === 'closed' || s.code === 1008 || s.status === 401), JSON.stringify(c.states));
  });
}
