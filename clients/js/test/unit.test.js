// Pure-logic tests of the SDK: a scripted fake WebSocket stands in for the
// bridge so every close code, replay overlap and timing decision is exercised
// deterministically and fast.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, compareIds, backoffDelay, tokenExpiry, isId } from '../notifybridge.js';

/** A fake WebSocket recording every instance; tests drive it by hand. */
function fakeSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.closedWith = undefined;
      sockets.push(this);
    }
    open() {
      this.onopen?.({});
    }
    send(frame) {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }
    drop(code, reason = '') {
      this.onclose?.({ code, reason });
    }
    close(code, reason) {
      this.closedWith = { code, reason };
    }
  }
  return { FakeWebSocket, sockets };
}

/** Waits until cond() is truthy, polling every few ms, bounded. */
async function until(cond, what, timeout = 2000) {
  const deadline = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function harness(extra = {}) {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const conn = connect({
    url: 'ws://bridge.test/ws',
    user: 'alice',
    groups: ['ops', 'noc'],
    WebSocket: FakeWebSocket,
    minDelay: 1,
    maxDelay: 4,
    random: () => 0,
    ...extra,
  });
  const seen = { events: [], gaps: [], caughtUp: [], states: [] };
  conn.on('event', (e) => seen.events.push(e));
  conn.on('gap', (g) => seen.gaps.push(g));
  conn.on('caught_up', (c) => seen.caughtUp.push(c));
  conn.on('state', (s, d) => seen.states.push([s, d]));
  return { conn, sockets, seen };
}

const ev = (id, type = 'alarm.fiber_break', data = { fiber: 'F-12' }) => ({ id, type, data });

test('compareIds orders numerically, not as strings', () => {
  assert.equal(compareIds('9-0', '10-0'), -1);
  assert.equal(compareIds('10-0', '9-0'), 1);
  assert.equal(compareIds('5-10', '5-9'), 1);
  assert.equal(compareIds('0-0', '0-0'), 0);
  // Beyond 2^53 a Number comparison would call these equal.
  assert.equal(compareIds('18446744073709551615-1', '18446744073709551615-0'), 1);
  assert.equal(compareIds('9007199254740993-0', '9007199254740992-0'), 1);
  assert.throws(() => compareIds('1', '1-0'), TypeError);
  assert.ok(isId('1732451234567-0'));
  assert.ok(!isId('1732451234567'));
  assert.ok(!isId(' 1-0'));
});

test('backoff grows exponentially, is capped, and keeps half as a floor', () => {
  assert.equal(backoffDelay(0, 500, 30000, () => 0), 250);
  assert.equal(backoffDelay(0, 500, 30000, () => 1), 500);
  assert.equal(backoffDelay(3, 500, 30000, () => 0), 2000);
  assert.equal(backoffDelay(20, 500, 30000, () => 0.999999), 30000);
  assert.equal(backoffDelay(1000, 500, 30000, () => 0), 15000);
});

test('tokenExpiry reads exp from a JWT payload and ignores garbage', () => {
  const payload = Buffer.from(JSON.stringify({ sub: '42', exp: 1700000000 })).toString('base64url');
  assert.equal(tokenExpiry(`h.${payload}.s`), 1700000000);
  assert.equal(tokenExpiry('not-a-jwt'), undefined);
  assert.equal(tokenExpiry('a.!!!.b'), undefined);
});

test('first connection carries identity and filter, no resume id', async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const conn = connect({ url: 'http://bridge.test/ws?x=1', user: 'u1', groups: 'a,b', types: ['alarm.*', 'test.done'], WebSocket: FakeWebSocket });
  await until(() => sockets.length === 1, 'first socket');
  const q = sockets[0].url.searchParams;
  assert.equal(sockets[0].url.protocol, 'ws:');
  assert.equal(q.get('x'), '1');
  assert.equal(q.get('user'), 'u1');
  assert.equal(q.get('groups'), 'a,b');
  assert.equal(q.get('types'), 'alarm.*,test.done');
  assert.equal(q.get('last_event_id'), null);
  conn.close();
});

test('events are delivered, the newest id is stored, and resume asks for what follows it', async () => {
  const { conn, sockets, seen } = harness();
  await until(() => sockets.length === 1, 'first socket');
  sockets[0].open();
  sockets[0].send({ control: 'caught_up', last: '0-0' });
  sockets[0].send(ev('100-0'));
  sockets[0].send(ev('100-1'));
  assert.equal(conn.lastEventId, '100-1');
  assert.equal(conn.state, 'live');
  sockets[0].drop(1006);
  await until(() => sockets.length === 2, 'reconnect');
  assert.equal(sockets[1].url.searchParams.get('last_event_id'), '100-1');
  assert.deepEqual(seen.events.map((e) => e.id), ['100-0', '100-1']);
  conn.close();
});

test('duplicates across a reconnect reach the app once', async () => {
  const { conn, sockets, seen } = harness();
  await until(() => sockets.length === 1, 'first socket');
  sockets[0].open();
  sockets[0].send(ev('5-0'));
  sockets[0].send(ev('9-0'));
  sockets[0].drop(1001, 'node shutting down');
  await until(() => sockets.length === 2, 'reconnect');
  sockets[1].open();
  // A replay that overlaps (e.g. a proxy replaying, or a server bug) is filtered.
  sockets[1].send(ev('5-0'));
  sockets[1].send(ev('9-0'));
  sockets[1].send(ev('10-0'));
  sockets[1].send({ control: 'caught_up', last: '10-0' });
  sockets[1].send(ev('10-0'));
  assert.deepEqual(seen.events.map((e) => e.id), ['5-0', '9-0', '10-0']);
  conn.close();
});

test('caught_up.last and cursor.last advance the stored id', async () => {
  const { conn, sockets } = harness();
  await until(() => sockets.length === 1, 'first socket');
  sockets[0].open();
  sockets[0].send({ control: 'caught_up', last: '200-3' });
  assert.equal(conn.lastEventId, '200-3');
  sockets[0].send({ control: 'cursor', last: '300-0' });
  assert.equal(conn.lastEventId, '300-0');
  // Never backwards.
  sockets[0].send({ control: 'cursor', last: '250-0' });
  assert.equal(conn.lastEventId, '300-0');
  sockets[0].send({ control: 'something_new', x: 1 });
  sockets[0].send('not json');
  assert.equal(conn.lastEventId, '300-0');
  conn.close();
});

test('gap is reported to the app', async () => {
  const { conn, sockets, seen } = harness({ lastEventId: '1-0' });
  await until(() => sockets.length === 1, 'first socket');
  assert.equal(sockets[0].url.searchParams.get('last_event_id'), '1-0');
  sockets[0].open();
  sockets[0].send({ control: 'gap', requested: '1-0', oldest: '50-0' });
  assert.deepEqual(seen.gaps, [{ requested: '1-0', oldest: '50-0' }]);
  conn.close();
});

test('1013 and 1001 reconnect with growing backoff that resets once live', async () => {
  const { conn, sockets, seen } = harness({ minDelay: 2, maxDelay: 8 });
  await until(() => sockets.length === 1, 'first socket');
  sockets[0].drop(1006);
  await until(() => sockets.length === 2, 'second');
  sockets[1].drop(1006);
  await until(() => sockets.length === 3, 'third');
  sockets[2].drop(1013);
  await until(() => sockets.length === 4, 'fourth');
  const delays = seen.states.filter(([s]) => s === 'reconnecting').map(([, d]) => d.delay);
  assert.deepEqual(delays, [1, 2, 4]);
  sockets[3].open();
  sockets[3].send({ control: 'caught_up', last: '0-0' });
  sockets[3].drop(1001);
  await until(() => sockets.length === 5, 'fifth');
  const last = seen.states.filter(([s]) => s === 'reconnecting').at(-1)[1];
  assert.equal(last.delay, 1);
  assert.equal(last.code, 1001);
  conn.close();
});

test('1008 asks for a new token and reconnects with it', async () => {
  let calls = 0;
  const { conn, sockets } = harness({
    user: undefined,
    groups: undefined,
    token: 'old-token',
    onTokenExpired: async () => {
      calls++;
      return 'new-token';
    },
  });
  await until(() => sockets.length === 1, 'first socket');
  assert.equal(sockets[0].url.searchParams.get('token'), 'old-token');
  sockets[0].open();
  sockets[0].send(ev('7-0'));
  sockets[0].drop(1008, 'token expired');
  await until(() => sockets.length === 2, 'reconnect');
  assert.equal(calls, 1);
  assert.equal(sockets[1].url.searchParams.get('token'), 'new-token');
  assert.equal(sockets[1].url.searchParams.get('last_event_id'), '7-0');
  conn.close();
});

test('1008 without a callback ends the connection', async () => {
  const { conn, sockets, seen } = harness({ token: 't' });
  await until(() => sockets.length === 1, 'first socket');
  sockets[0].drop(1008);
  await until(() => conn.state === 'closed', 'closed');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(sockets.length, 1);
  assert.equal(seen.states.at(-1)[1].code, 1008);
});

test('an already expired token is refreshed before connecting', async () => {
  const expired = `h.${Buffer.from(JSON.stringify({ exp: 1 })).toString('base64url')}.s`;
  const { conn, sockets } = harness({ token: expired, onTokenExpired: () => 'fresh' });
  await until(() => sockets.length === 1, 'first socket');
  assert.equal(sockets[0].url.searchParams.get('token'), 'fresh');
  conn.close();
});

test('storageKey persists the newest id and a new connection resumes from it', async () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const a = harness({ storageKey: 'nb:last', storage });
  await until(() => a.sockets.length === 1, 'first socket');
  a.sockets[0].open();
  a.sockets[0].send(ev('42-0'));
  a.conn.close();
  assert.equal(store.get('nb:last'), '42-0');
  assert.deepEqual(a.sockets[0].closedWith, { code: 1000, reason: 'client closed' });

  const b = harness({ storageKey: 'nb:last', storage });
  await until(() => b.sockets.length === 1, 'second page socket');
  assert.equal(b.sockets[0].url.searchParams.get('last_event_id'), '42-0');
  b.conn.close();
});

test('close() stops reconnecting, and a throwing listener does not stop delivery', async () => {
  const { conn, sockets, seen } = harness();
  const orig = globalThis.reportError;
  const reported = [];
  globalThis.reportError = (e) => reported.push(e);
  try {
    conn.on('event', () => {
      throw new Error('app bug');
    });
    await until(() => sockets.length === 1, 'first socket');
    sockets[0].open();
    sockets[0].send(ev('1-0'));
    sockets[0].send(ev('2-0'));
    assert.equal(seen.events.length, 2);
    assert.equal(reported.length, 2);
    sockets[0].drop(1006);
    conn.close();
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(sockets.length, 1);
    assert.equal(conn.state, 'closed');
  } finally {
    globalThis.reportError = orig;
  }
});
