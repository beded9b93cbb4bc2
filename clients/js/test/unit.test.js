// Pure-logic tests of the SDK: a scripted fake WebSocket stands in for the
// bridge so every close code, replay overlap and timing decision is exercised
// deterministically and fast.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, compareIds, backoffDelay, tokenExpiry, isId, sseParser } from '../notifybridge.js';

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

let hosts = 0;
function harness(extra = {}) {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const conn = connect({
    // A host per test: the SDK remembers per endpoint which transport worked.
    url: `ws://bridge-${++hosts}.test/ws`,
    transports: ['websocket'],
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
  const conn = connect({ url: 'http://bridge.test/ws?x=1', user: 'u1', groups: 'a,b', types: ['alarm.*', 'test.done'], WebSocket: FakeWebSocket, fetch: () => new Promise(() => {}) });
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

// --- transports: fallback, memory, dedupe, dead detection, page lifecycle ---

/** A fake EventSource recording every instance. */
function fakeEventSourceClass() {
  const sources = [];
  class FakeEventSource {
    constructor(url) {
      this.url = new URL(url);
      this.closed = false;
      sources.push(this);
    }
    open() {
      this.onopen?.({});
    }
    send(frame) {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }
    fail() {
      this.onerror?.({});
    }
    close() {
      this.closed = true;
    }
  }
  return { FakeEventSource, sources };
}

/** A fake fetch whose requests the test answers by hand. */
function fakeFetch() {
  const requests = [];
  const fetch = (url, init) =>
    new Promise((resolve, reject) => {
      const r = { url: new URL(url), init, resolve, reject };
      r.json = (status, body) => resolve(new Response(typeof body === 'string' ? body : JSON.stringify(body), { status }));
      init?.signal?.addEventListener('abort', () => reject(init.signal.reason ?? new Error('aborted')));
      requests.push(r);
    });
  return { fetch, requests };
}

function allTransports(extra = {}) {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const { FakeEventSource, sources } = fakeEventSourceClass();
  const { fetch, requests } = fakeFetch();
  const h = harness({ transports: undefined, WebSocket: FakeWebSocket, EventSource: FakeEventSource, fetch, ...extra });
  return { ...h, sockets, sources, requests };
}

test('falls back websocket → sse → poll, each resuming, and the state says which is live', async () => {
  const { conn, sockets, sources, requests, seen } = allTransports({ lastEventId: '3-0' });
  await until(() => sockets.length === 1, 'websocket attempt');
  assert.equal(conn.transport, 'websocket');
  assert.equal(sockets[0].url.searchParams.get('heartbeat'), '1');
  sockets[0].drop(1006); // refused at the handshake (a proxy without Upgrade)
  await until(() => sources.length === 1, 'sse attempt');
  const sse = sources[0].url;
  assert.equal(sse.protocol, 'http:');
  assert.equal(sse.pathname, '/events');
  assert.equal(sse.searchParams.get('last_event_id'), '3-0');
  assert.equal(sse.searchParams.get('user'), 'alice');
  assert.equal(sse.searchParams.get('heartbeat'), '1');
  sources[0].fail(); // SSE blocked too
  await until(() => requests.length === 1, 'poll');
  assert.ok(sources[0].closed, 'the SDK closes the EventSource instead of letting it retry by itself');
  assert.equal(requests[0].url.pathname, '/poll');
  assert.equal(requests[0].url.searchParams.get('last_event_id'), '3-0');
  assert.equal(requests[0].url.searchParams.get('heartbeat'), null);
  requests[0].json(200, { frames: [ev('4-0'), { control: 'caught_up', last: '4-0' }], last: '4-0' });
  await until(() => requests.length === 2, 'next poll');
  assert.equal(requests[1].url.searchParams.get('last_event_id'), '4-0');
  assert.equal(conn.state, 'live');
  assert.equal(conn.transport, 'poll');
  assert.equal(seen.states.find(([s]) => s === 'live')[1].transport, 'poll');
  // The fallbacks were immediate, not backed off.
  assert.deepEqual(
    seen.states.filter(([s]) => s === 'reconnecting').map(([, d]) => [d.delay, d.fallback]),
    [
      [0, 'sse'],
      [0, 'poll'],
    ],
  );
  requests[1].json(200, { frames: [ev('5-0')], last: '5-0' });
  await until(() => requests.length === 3, 'third poll');
  assert.deepEqual(seen.events.map((e) => e.id), ['4-0', '5-0']);
  assert.equal(seen.caughtUp.length, 1);
  conn.close();
});

test('a websocket that opens but delivers nothing within probeTimeout falls back to sse', async () => {
  const { conn, sockets, sources, seen } = allTransports({ probeTimeout: 20 });
  await until(() => sockets.length === 1, 'websocket attempt');
  sockets[0].open(); // a proxy accepted the upgrade, then nothing comes through
  await until(() => sources.length === 1, 'sse probe');
  assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: 'client closed' });
  sources[0].open();
  sources[0].send({ control: 'caught_up', last: '0-0' });
  assert.equal(conn.transport, 'sse');
  assert.equal(conn.state, 'live');
  assert.match(seen.states.find(([s, d]) => s === 'reconnecting' && d.fallback === 'sse')[1].reason, /nothing received/);
  conn.close();
});

test('the transport that worked is remembered: reconnects and later connections start with it', async () => {
  const a = allTransports();
  await until(() => a.sockets.length === 1, 'websocket attempt');
  a.sockets[0].drop(1006);
  await until(() => a.sources.length === 1, 'sse');
  a.sources[0].open();
  a.sources[0].send({ control: 'caught_up', last: '1-0' });
  a.sources[0].fail(); // the stream ends (drain, token, proxy timeout)
  await until(() => a.sources.length === 2, 'sse again');
  assert.equal(a.sockets.length, 1, 'no websocket retried');
  assert.equal(a.sources[1].url.searchParams.get('last_event_id'), '1-0');
  // A bridge restart: the remembered transport is retried alone a few times…
  for (let i = 1; i <= 3; i++) {
    a.sources[i].fail();
    await until(() => a.sources.length === i + 2, `sse attempt ${i + 2}`);
  }
  assert.equal(a.sockets.length, 1);
  // …then the others are probed again (the network may have changed).
  a.sources[4].fail();
  await until(() => a.sockets.length === 2 || a.requests.length > 0, 'another transport');
  a.conn.close();

  // A second connection to the same endpoint (same page) starts with SSE.
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const { FakeEventSource, sources } = fakeEventSourceClass();
  const url = `ws://bridge-${hosts}.test/ws`;
  const b = connect({ url, user: 'bob', WebSocket: FakeWebSocket, EventSource: FakeEventSource, fetch: fakeFetch().fetch });
  await until(() => sources.length === 1, 'second connection over sse');
  assert.equal(sockets.length, 0);
  assert.equal(b.transport, 'sse');
  b.close();
});

test('dedupe holds across transports: a replay over sse of what websocket delivered reaches the app once', async () => {
  const { conn, sockets, sources, seen } = allTransports();
  await until(() => sockets.length === 1, 'websocket attempt');
  sockets[0].open();
  sockets[0].send(ev('1-0'));
  sockets[0].send(ev('2-0'));
  sockets[0].drop(1006); // before caught_up: counts as a failed attempt
  await until(() => sources.length === 1, 'sse');
  assert.equal(sources[0].url.searchParams.get('last_event_id'), '2-0');
  sources[0].open();
  sources[0].send(ev('1-0'));
  sources[0].send(ev('2-0'));
  sources[0].send(ev('3-0'));
  sources[0].send({ control: 'caught_up', last: '3-0' });
  sources[0].send({ control: 'ping' });
  assert.deepEqual(seen.events.map((e) => e.id), ['1-0', '2-0', '3-0']);
  assert.equal(conn.lastEventId, '3-0');
  conn.close();
});

test('a connection silent for deadAfter is closed and replaced, resuming; deadAfter 0 turns it off', async () => {
  const { conn, sockets, seen } = harness({ deadAfter: 30 });
  await until(() => sockets.length === 1, 'first socket');
  sockets[0].open();
  sockets[0].send({ control: 'caught_up', last: '8-0' });
  sockets[0].send({ control: 'ping' });
  await until(() => sockets.length === 2, 'reconnect after silence');
  assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: 'client closed' });
  assert.equal(sockets[1].url.searchParams.get('last_event_id'), '8-0');
  const rec = seen.states.find(([s]) => s === 'reconnecting')[1];
  assert.equal(rec.dead, true);
  assert.match(rec.reason, /no frame or heartbeat for 30 ms/);
  conn.close();

  const off = harness({ deadAfter: 0 });
  await until(() => off.sockets.length === 1, 'socket');
  assert.equal(off.sockets[0].url.searchParams.get('heartbeat'), null);
  off.conn.close();
});

test('poll: a refusal with 401 asks for a new token; an empty answer means live', async () => {
  const { fetch, requests } = fakeFetch();
  const { conn, seen } = harness({ transports: ['poll'], fetch, token: 'old', user: undefined, groups: undefined, onTokenExpired: () => 'new' });
  await until(() => requests.length === 1, 'poll');
  assert.equal(requests[0].url.searchParams.get('token'), 'old');
  requests[0].json(401, 'token expired\n');
  await until(() => requests.length === 2, 'poll with the new token');
  assert.equal(requests[1].url.searchParams.get('token'), 'new');
  assert.equal(seen.states.find(([s]) => s === 'reconnecting')[1].status, 401);
  requests[1].json(200, { frames: [], last: '12-0' });
  await until(() => conn.state === 'live', 'live');
  assert.equal(conn.lastEventId, '12-0');
  assert.deepEqual(seen.caughtUp, [{ last: '12-0' }]);
  conn.close();
});

test('sse over fetch streaming (Node): chunks split anywhere, comments count as life', async () => {
  const { fetch, requests } = fakeFetch();
  const { conn, seen } = harness({ transports: ['sse'], fetch, deadAfter: 0 });
  await until(() => requests.length === 1, 'sse request');
  assert.equal(requests[0].init.headers.Accept, 'text/event-stream');
  let ctl;
  const body = new ReadableStream({ start: (c) => (ctl = c) });
  requests[0].resolve(new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }));
  const enc = new TextEncoder();
  const text = 'retry: 1000\n\n: keep-alive\n\nid: 1-0\ndata: {"id":"1-0","type":"t","data":{"a":1}}\n\nid: 1-0\r\ndata: {"control":"caught_up","last":"1-0"}\r\n\r\n';
  for (let i = 0; i < text.length; i += 7) ctl.enqueue(enc.encode(text.slice(i, i + 7)));
  await until(() => conn.state === 'live', 'live');
  assert.deepEqual(seen.events, [{ id: '1-0', type: 't', data: { a: 1 } }]);
  ctl.close(); // the bridge ended the stream (drain): reconnect and resume
  await until(() => requests.length === 2, 'reconnect');
  assert.equal(requests[1].url.searchParams.get('last_event_id'), '1-0');
  conn.close();
});

/** Installs a fake window/document for the page-lifecycle hooks; returns them and a restore. */
function fakePage() {
  const win = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = 'visible';
  const saved = { add: globalThis.addEventListener, remove: globalThis.removeEventListener, document: globalThis.document };
  globalThis.addEventListener = win.addEventListener.bind(win);
  globalThis.removeEventListener = win.removeEventListener.bind(win);
  globalThis.document = doc;
  return {
    win,
    doc,
    restore() {
      globalThis.addEventListener = saved.add;
      globalThis.removeEventListener = saved.remove;
      globalThis.document = saved.document;
    },
  };
}

test('online, visibilitychange → visible and pageshow (persisted) skip the backoff', async () => {
  const page = fakePage();
  try {
    const { conn, sockets, seen } = harness({ minDelay: 600000, maxDelay: 600000 });
    await until(() => sockets.length === 1, 'first socket');
    sockets[0].open();
    sockets[0].send(ev('20-0'));
    sockets[0].drop(1006);
    await until(() => conn.state === 'reconnecting', 'backing off');
    assert.ok(seen.states.at(-1)[1].delay >= 300000);
    page.win.dispatchEvent(new Event('online'));
    await until(() => sockets.length === 2, 'reconnect on online');
    assert.equal(sockets[1].url.searchParams.get('last_event_id'), '20-0');
    assert.equal(seen.states.findLast(([s]) => s === 'connecting')[1].trigger, 'online');

    sockets[1].drop(1006);
    await until(() => conn.state === 'reconnecting', 'backing off again');
    page.doc.visibilityState = 'hidden';
    page.doc.dispatchEvent(new Event('visibilitychange'));
    page.doc.visibilityState = 'visible';
    page.doc.dispatchEvent(new Event('visibilitychange'));
    await until(() => sockets.length === 3, 'reconnect on visible');
    assert.equal(seen.states.findLast(([s]) => s === 'connecting')[1].trigger, 'visible');

    // Visible again with a live connection that is hearing the bridge: kept.
    sockets[2].open();
    sockets[2].send({ control: 'caught_up', last: '20-0' });
    page.doc.dispatchEvent(new Event('visibilitychange'));
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(sockets.length, 3);

    const show = new Event('pageshow');
    show.persisted = true;
    page.win.dispatchEvent(show);
    await until(() => sockets.length === 4, 'reconnect on pageshow');
    assert.equal(seen.states.findLast(([s]) => s === 'connecting')[1].trigger, 'pageshow');
    conn.close();
    // Closed: the hooks are gone.
    page.win.dispatchEvent(new Event('online'));
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(sockets.length, 4);
  } finally {
    page.restore();
  }
});

test('sseParser joins data lines and ignores comments, ids and unknown fields', () => {
  const got = [];
  const p = sseParser({ frame: (d) => got.push(d) });
  p('data: a\ndata:b\nid: 1-0\nevent: x\n: c\n\n\n');
  p('data: c\r');
  p('\n\r\n');
  assert.deepEqual(got, ['a\nb', 'c']);
});

/** An unsigned JWT-shaped token with these claims (the SDK only reads exp and iat). */
const fakeJwt = (claims, tag = '') => `h.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.s${tag}`;

test('poll: the first request of an attempt asks wait=0, later ones do not; any accepted answer is live', async () => {
  const { fetch, requests } = fakeFetch();
  const { conn, seen } = harness({ transports: ['poll'], fetch, lastEventId: '5-0' });
  await until(() => requests.length === 1, 'poll');
  assert.equal(requests[0].url.searchParams.get('wait'), '0');
  assert.equal(requests[0].url.searchParams.get('last_event_id'), '5-0');
  // A page of replay, no caught_up yet: the path works, so live.
  requests[0].json(200, { frames: [ev('6-0')], last: '6-0' });
  await until(() => conn.state === 'live', 'live');
  assert.equal(conn.transport, 'poll');
  assert.deepEqual(seen.caughtUp, []);
  await until(() => requests.length === 2, 'second poll');
  assert.equal(requests[1].url.searchParams.get('wait'), null);
  assert.equal(requests[1].url.searchParams.get('last_event_id'), '6-0');
  requests[1].json(200, { frames: [{ control: 'caught_up', last: '7-0' }], last: '7-0' });
  await until(() => seen.caughtUp.length === 1, 'caught_up');
  await until(() => requests.length === 3, 'third poll');
  requests[2].json(200, { frames: [{ control: 'caught_up', last: '7-0' }], last: '7-0' });
  await until(() => requests.length === 4, 'fourth poll');
  assert.equal(seen.caughtUp.length, 1, 'caught_up once per connection');
  assert.deepEqual(seen.events.map((e) => e.id), ['6-0']);
  conn.close();
});

test('4001 revoked: closed without a callback; never back with the same token; a new token reconnects at once', async () => {
  {
    const { conn, sockets, seen } = harness({ user: undefined, groups: undefined, token: 't1' });
    await until(() => sockets.length === 1, 'socket');
    sockets[0].open();
    sockets[0].drop(4001, 'revoked: logged out');
    await until(() => conn.state === 'closed', 'closed');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(sockets.length, 1);
    assert.equal(seen.states.at(-1)[1].code, 4001);
  }
  {
    let calls = 0;
    const { conn, sockets } = harness({ user: undefined, groups: undefined, token: 't1', onTokenExpired: () => (calls++, 't1') });
    await until(() => sockets.length === 1, 'socket');
    sockets[0].drop(4001, 'revoked: logged out');
    await until(() => conn.state === 'closed', 'closed');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(calls, 1);
    assert.equal(sockets.length, 1, 'reconnected with the revoked token');
  }
  {
    const { conn, sockets, seen } = harness({ user: undefined, groups: undefined, token: 't1', onTokenExpired: () => 't2', minDelay: 5000, maxDelay: 5000 });
    await until(() => sockets.length === 1, 'socket');
    sockets[0].open();
    sockets[0].send(ev('9-0'));
    sockets[0].drop(4001, 'revoked: logged out');
    await until(() => sockets.length === 2, 'reconnect at once (the backoff would be 5 s)');
    assert.equal(sockets[1].url.searchParams.get('token'), 't2');
    assert.equal(sockets[1].url.searchParams.get('last_event_id'), '9-0');
    assert.ok(seen.states.some(([s, d]) => s === 'reconnecting' && d.code === 4001 && d.delay === 0));
    conn.close();
  }
});

test('4002 groups changed reconnects at once and resumes; 401 on sse with the same token again stops', async () => {
  const { conn, sockets } = harness({ minDelay: 5000, maxDelay: 5000 });
  await until(() => sockets.length === 1, 'socket');
  sockets[0].open();
  sockets[0].send(ev('3-0'));
  sockets[0].drop(4002, 'groups changed: reconnect');
  await until(() => sockets.length === 2, 'reconnect at once');
  assert.equal(sockets[1].url.searchParams.get('last_event_id'), '3-0');
  conn.close();

  const { fetch, requests } = fakeFetch();
  const h = harness({ transports: ['sse'], fetch, user: undefined, groups: undefined, token: 'same', onTokenExpired: () => 'same' });
  await until(() => requests.length === 1, 'sse request');
  requests[0].json(401, 'revoked: logged out\n');
  await until(() => h.conn.state === 'closed', 'closed');
  assert.equal(h.seen.states.at(-1)[1].status, 401);
  assert.equal(requests.length, 1);
});

test("sse: the bridge's close event carries the code (4001 revoked → closed, over fetch)", async () => {
  const { fetch, requests } = fakeFetch();
  const { conn, seen } = harness({ transports: ['sse'], fetch, user: undefined, groups: undefined, token: 't' });
  await until(() => requests.length === 1, 'sse request');
  requests[0].resolve(
    new Response('retry: 2000\n\nid: 2-0\ndata: {"control":"caught_up","last":"2-0"}\n\nevent: close\ndata: {"code":4001,"reason":"revoked: bye"}\n\n', {
      status: 200,
    }),
  );
  await until(() => conn.state === 'closed', 'closed');
  assert.equal(seen.states.at(-1)[1].code, 4001);
  assert.equal(requests.length, 1);
});

test('in-band refresh at refreshAt of the lifetime: {"token":…} on the open socket, no reconnect; 0 turns it off', async () => {
  const sent = [];
  const { FakeWebSocket, sockets } = fakeSocketClass();
  class Recording extends FakeWebSocket {
    send(frame) {
      sent.push(frame); // what the SDK sends; the test pushes with push()
    }
    push(frame) {
      super.send(frame);
    }
  }
  const now = Math.floor(Date.now() / 1000);
  const first = fakeJwt({ iat: now, exp: now + 4 });
  const second = fakeJwt({ iat: now, exp: now + 3600 });
  let calls = 0;
  const { conn, seen } = harness({
    WebSocket: Recording,
    user: undefined,
    groups: undefined,
    token: first,
    refreshAt: 0.5, // with random 0: 45 % of 4 s from iat (floored), so 0.8–1.8 s from now
    onTokenExpired: () => (calls++, second),
  });
  await until(() => sockets.length === 1, 'socket');
  sockets[0].open();
  sockets[0].push({ control: 'caught_up', last: '1-0' });
  await until(() => sent.length === 1, 'the refresh frame', 4000);
  assert.deepEqual(JSON.parse(sent[0]), { token: second });
  sockets[0].push({ control: 'token', exp: now + 3600 });
  sockets[0].push(ev('2-0'));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(calls, 1);
  assert.equal(sockets.length, 1);
  assert.deepEqual(seen.events.map((e) => e.id), ['2-0']);
  // A later reconnect carries the new token.
  sockets[0].drop(1001, 'going away');
  await until(() => sockets.length === 2, 'reconnect');
  assert.equal(sockets[1].url.searchParams.get('token'), second);
  conn.close();

  const off = harness({ user: undefined, groups: undefined, token: fakeJwt({ iat: now, exp: now + 1 }), refreshAt: 0, onTokenExpired: () => second });
  await until(() => off.sockets.length === 1, 'socket');
  off.sockets[0].open();
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(off.sockets.length, 1);
  off.conn.close();
});
