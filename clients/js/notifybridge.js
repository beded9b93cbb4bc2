// notifybridge browser SDK: one connection to a notifybridge node (WebSocket,
// else Server-Sent Events, else long-poll) that survives restarts, deploys,
// proxies and flaky networks without losing or repeating events.
//
// The protocol is in docs/contract.md. What this file adds on top of a bare
// WebSocket is the client half of the resume contract:
//   - it remembers the newest stream id it has been sent (events, caught_up.last,
//     cursor.last) and asks for everything after it on every reconnect;
//   - it drops any event whose id is not newer than that, so a replay that
//     overlaps what the app already saw never reaches the app twice;
//   - it reconnects with capped exponential backoff and jitter, so a node
//     shutting down (1001) does not get all its clients back in one instant;
//   - it asks the app for a fresh token when the bridge says the old one
//     expired (1008) instead of hammering the bridge with a dead token, and
//     before that, at ~80% of the token's lifetime, refreshes it in band
//     (WebSocket: {"token":…} on the open connection, no reconnect);
//   - it treats a revocation (4001, or HTTP 401 on SSE/poll) as "stop, or get
//     a new token", never as "reconnect with the same token"; 4002 (groups
//     changed by a refresh) reconnects at once and resumes.
//
//   - it falls back from WebSocket to SSE to long-poll when a transport cannot
//     open or delivers nothing, and remembers what worked for the page's life;
//   - it replaces a connection silent for longer than the bridge's heartbeat
//     allows, and reconnects at once when the page comes back (online,
//     visible, restored from the back/forward cache).
//
// No runtime dependencies: it runs as an ES module in browsers and in Node
// (SSE and poll through fetch; pass a WebSocket implementation such as the
// `ws` package for WebSocket there).

/**
 * @typedef {Object} NotifyEvent
 * @property {string} id    Redis stream entry id, `<ms>-<seq>`.
 * @property {string} type  Event type, for example `alarm.fiber_break`.
 * @property {*}      data  The producer's JSON value, parsed.
 */

/**
 * @typedef {Object} Gap
 * @property {string} requested The id the client resumed from.
 * @property {string} oldest    The oldest id the bridge could still deliver.
 */

/**
 * @typedef {'connecting'|'replaying'|'live'|'reconnecting'|'closed'} ConnectionState
 */

/**
 * @typedef {'websocket'|'sse'|'poll'} TransportName
 */

/**
 * @typedef {Object} StateDetail
 * @property {TransportName} [transport] The transport of the attempt this state is about.
 * @property {number} [status]  HTTP status of a refused SSE or poll request.
 * @property {TransportName} [fallback] `reconnecting`: the next transport, tried at once.
 * @property {boolean} [dead]   `reconnecting`: closed by the SDK after `deadAfter` ms of silence.
 * @property {'online'|'visible'|'pageshow'} [trigger] `connecting`: the page event that skipped the backoff.
 * @property {number} [code]    Close code of the connection that ended, when there was one.
 * @property {string} [reason]  Close reason, or why the SDK stopped.
 * @property {number} [delay]   Milliseconds until the next attempt (state `reconnecting`).
 * @property {number} [attempt] Consecutive failed attempts so far.
 * @property {boolean} [opened] Whether the connection that ended had completed its handshake
 *   (false: refused or unreachable; a browser cannot tell which).
 */

/**
 * @typedef {Object} ConnectOptions
 * @property {string} url  WebSocket endpoint, e.g. `wss://bridge.example/ws`. `http(s)://`
 *   is accepted and rewritten to `ws(s)://`; a relative URL resolves against the page.
 * @property {string} [token]  JWT (auth=jwt). Sent as `?token=` because browsers cannot set
 *   headers on a WebSocket.
 * @property {string} [user]   User id (auth=none, development only).
 * @property {string[]|string} [groups] Groups (auth=none, development only).
 * @property {string[]|string} [types]  Type filter, e.g. `['alarm.*', 'test.done']`.
 * @property {string} [lastEventId] Resume after this id (overrides what storage holds).
 * @property {string|number} [since] First connection only, when no id is known: replay
 *   from this time (RFC 3339 or unix milliseconds).
 * @property {string} [storageKey] Persist the newest id under this key, so a page reload
 *   resumes where the last one stopped.
 * @property {Pick<Storage,'getItem'|'setItem'>} [storage] Where storageKey lives;
 *   defaults to `globalThis.localStorage`.
 * @property {() => (string|Promise<string>)} [onTokenExpired] Returns a new token. Called
 *   at `refreshAt` of the token's lifetime (refresh in band), when the bridge closes with
 *   1008 (expired) or 4001 (revoked), on HTTP 401 from SSE or poll, and when the token's
 *   `exp` has passed before a reconnect. Without it, an expired or revoked token ends the
 *   connection (state `closed`); so does a callback returning the refused token again.
 * @property {number} [refreshAt=0.8] Fraction of the token's lifetime (from `iat`, else from
 *   when the SDK got it, to `exp`) at which it is refreshed before it expires, ± 5 % jitter
 *   so that tokens issued together are not refreshed together; 0 turns it off.
 * @property {TransportName[]} [transports] Order of transports to try (default
 *   `['websocket', 'sse', 'poll']`); ones this runtime lacks are skipped.
 * @property {string} [sseUrl]  SSE endpoint; default `url` with the last path segment `events`.
 * @property {string} [pollUrl] Long-poll endpoint; default `url` with the last path segment `poll`.
 * @property {typeof WebSocket} [WebSocket] WebSocket constructor; defaults to the global one.
 * @property {*} [EventSource] EventSource constructor; defaults to the global one, else SSE
 *   runs over fetch streaming.
 * @property {typeof fetch} [fetch] fetch for SSE over fetch and for long-poll.
 * @property {number} [deadAfter=60000] Silence (ms) after which a connection is replaced;
 *   keep it ≥ 2 × the bridge's ping_interval; 0 turns detection (and heartbeat=1) off.
 * @property {number} [probeTimeout=8000] Ms a WebSocket or SSE attempt may take to deliver
 *   its first frame before the next transport is tried.
 * @property {number} [minDelay=500]   First reconnect delay in ms.
 * @property {number} [maxDelay=30000] Cap of the reconnect delay in ms.
 * @property {() => number} [random=Math.random] Jitter source (tests make it deterministic).
 */

const ID_RE = /^(\d{1,20})-(\d{1,20})$/;

/**
 * Compares two stream ids numerically. Plain string comparison is wrong
 * ("9-0" > "10-0") and Number loses precision past 2^53, so both halves are
 * compared as BigInt.
 * @param {string} a
 * @param {string} b
 * @returns {-1|0|1}
 */
export function compareIds(a, b) {
  const ma = ID_RE.exec(a);
  const mb = ID_RE.exec(b);
  if (!ma || !mb) throw new TypeError(`malformed stream id: ${ma ? b : a}`);
  for (let i = 1; i <= 2; i++) {
    const x = BigInt(ma[i]);
    const y = BigInt(mb[i]);
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * @param {unknown} id
 * @returns {id is string}
 */
export function isId(id) {
  return typeof id === 'string' && ID_RE.test(id);
}

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped, with
 * "equal jitter" — half fixed, half random — so that a thousand clients
 * dropped by one node spread out but none retries instantly.
 * @param {number} attempt
 * @param {number} minDelay
 * @param {number} maxDelay
 * @param {() => number} random
 */
export function backoffDelay(attempt, minDelay, maxDelay, random) {
  const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * Seconds-since-epoch `exp` of a JWT, or undefined when it has none or is not
 * a JWT. Only read to avoid reconnecting with a token that is already dead;
 * the bridge is what verifies it.
 * @param {string} token
 */
export function tokenExpiry(token) {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = globalThis.atob
      ? globalThis.atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
      : Buffer.from(b64, 'base64').toString('binary');
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** Close codes the SDK acts on (all others reconnect and resume). */
export const CloseCodes = Object.freeze({
  /** Token expired or refused in band: get a new token, reconnect at once. */
  TOKEN_EXPIRED: 1008,
  /** Revoked (logged out everywhere): stop, or get a new token; never the same one. */
  REVOKED: 4001,
  /** An in-band refresh changed the groups: reconnect at once with the new token and resume. */
  GROUPS_CHANGED: 4002,
});
const TOKEN_EXPIRED = CloseCodes.TOKEN_EXPIRED;
const REVOKED = CloseCodes.REVOKED;
const GROUPS_CHANGED = CloseCodes.GROUPS_CHANGED;

/**
 * `{exp, iat}` (seconds) of a JWT, each undefined when absent.
 * @param {string} token
 */
function tokenClaims(token) {
  const part = typeof token === 'string' ? token.split('.')[1] : undefined;
  if (!part) return {};
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = globalThis.atob
      ? globalThis.atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
      : Buffer.from(b64, 'base64').toString('binary');
    const c = JSON.parse(json);
    return { exp: typeof c.exp === 'number' ? c.exp : undefined, iat: typeof c.iat === 'number' ? c.iat : undefined };
  } catch {
    return {};
  }
}

/** The transports in the order tried when the app names none. */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'poll']);

// The transport that reached live per endpoint, for the page's lifetime: a
// second connection (another identity, a manual resume) does not probe a
// WebSocket again that a proxy already refused.
const worked = new Map();

// A transport that worked is retried alone this many times before the others
// are probed again: a bridge restart makes every transport fail for a moment,
// and should not demote a WebSocket that is only briefly away.
const PROVEN_RETRIES = 3;

/**
 * Opens a resilient connection to a notifybridge node.
 * @param {ConnectOptions} options
 * @returns {Connection}
 */
export function connect(options) {
  return new Connection(options);
}

export class Connection {
  /** @param {ConnectOptions} options */
  constructor(options) {
    if (!options || !options.url) throw new TypeError('notifybridge: url is required');
    this._opts = options;
    this._WS = options.WebSocket ?? globalThis.WebSocket;
    this._ES = options.EventSource ?? globalThis.EventSource;
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    const usable = {
      websocket: typeof this._WS === 'function',
      sse: typeof this._ES === 'function' || typeof this._fetch === 'function',
      poll: typeof this._fetch === 'function',
    };
    const wanted = options.transports ?? TRANSPORTS;
    for (const t of wanted) {
      if (!(t in usable)) throw new TypeError(`notifybridge: unknown transport "${t}"`);
    }
    this._transports = wanted.filter((t) => usable[t]);
    if (this._transports.length === 0) {
      throw new TypeError(
        wanted.length === 1 && wanted[0] === 'websocket'
          ? 'notifybridge: no WebSocket implementation; pass options.WebSocket'
          : `notifybridge: none of the transports ${wanted.join(', ')} is available here; pass options.WebSocket or options.fetch`,
      );
    }
    this._token = options.token;
    this._tokenAt = Date.now();
    this._refreshAt = options.refreshAt ?? 0.8;
    this._refreshTimer = undefined;
    this._refreshing = false;
    this._storage = options.storageKey ? (options.storage ?? globalThis.localStorage) : undefined;
    this._random = options.random ?? Math.random;
    this._minDelay = options.minDelay ?? 500;
    this._maxDelay = options.maxDelay ?? 30000;
    this._deadAfter = options.deadAfter ?? 60000;
    this._probeTimeout = options.probeTimeout ?? 8000;
    this._endpoint = resolve(options.url).toString().split('?')[0];
    /** @type {Record<string, Set<Function>>} */
    this._listeners = { event: new Set(), gap: new Set(), caught_up: new Set(), state: new Set() };
    /** @type {string|undefined} */
    this._last = undefined;
    this._attempt = 0;
    this._closed = false;
    /** @type {ConnectionState} */
    this._state = 'connecting';
    /** @type {TransportName|undefined} */
    this._transport = undefined;
    /** The live attempt: { name, t (its handle), opened, live, heard (ms of the last frame) }. */
    this._cur = undefined;
    this._round = [];
    this._roundPos = 0;
    this._timer = undefined;
    this._watch = undefined;

    const stored = this._storage?.getItem(options.storageKey);
    if (isId(options.lastEventId)) this._last = options.lastEventId;
    else if (isId(stored)) this._last = stored;

    this._lifecycle = lifecycleHooks((trigger) => this._wake(trigger));
    this._scheduleRefresh();

    // Listeners are attached synchronously after connect() returns; opening on
    // the next tick guarantees they see the first 'state' and every event.
    this._timer = setTimeout(() => this._open(), 0);
  }

  /** Newest stream id this connection has been sent, or undefined. */
  get lastEventId() {
    return this._last;
  }

  /** @returns {ConnectionState} */
  get state() {
    return this._state;
  }

  /**
   * The transport of the current or last attempt (`websocket`, `sse` or
   * `poll`); with state `live`, the one delivering.
   * @returns {TransportName|undefined}
   */
  get transport() {
    return this._transport;
  }

  /**
   * Subscribes to `event`, `gap`, `caught_up` or `state`. Returns a function
   * that unsubscribes.
   * @param {'event'|'gap'|'caught_up'|'state'} name
   * @param {Function} fn
   */
  on(name, fn) {
    const set = this._listeners[name];
    if (!set) throw new TypeError(`notifybridge: unknown event "${name}"`);
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Closes the connection for good; no reconnect follows. */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    this._lifecycle();
    this._drop();
    this._setState('closed', { reason: 'closed by client' });
  }

  _emit(name, ...args) {
    for (const fn of this._listeners[name]) {
      try {
        fn(...args);
      } catch (err) {
        // An app bug in one listener must not stop delivery or resume.
        if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
        else console.error('notifybridge listener failed:', err);
      }
    }
  }

  _setState(state, detail = {}) {
    this._state = state;
    this._emit('state', state, { transport: this._transport, ...detail });
  }

  /**
   * @param {TransportName} name
   * @param {boolean} [first] poll: the attempt's first request (answered at its caught_up)
   */
  _url(name, first = false) {
    const o = this._opts;
    let url = resolve(o.url);
    if (name === 'sse') url = o.sseUrl ? resolve(o.sseUrl) : sibling(url, 'events');
    if (name === 'poll') url = o.pollUrl ? resolve(o.pollUrl) : sibling(url, 'poll');
    if (name === 'websocket') {
      if (url.protocol === 'http:') url.protocol = 'ws:';
      if (url.protocol === 'https:') url.protocol = 'wss:';
    } else {
      if (url.protocol === 'ws:') url.protocol = 'http:';
      if (url.protocol === 'wss:') url.protocol = 'https:';
    }
    const q = url.searchParams;
    if (this._token) q.set('token', this._token);
    if (o.user !== undefined) q.set('user', o.user);
    if (o.groups !== undefined && o.groups.length) q.set('groups', list(o.groups));
    if (o.types !== undefined && o.types.length) q.set('types', list(o.types));
    if (this._last !== undefined) q.set('last_event_id', this._last);
    else if (o.since !== undefined) q.set('since', String(o.since));
    // Asks for {"control":"ping"} on an idle stream: browsers hide WebSocket
    // pings and SSE comments from scripts, so silence is otherwise unmeasurable.
    if (name !== 'poll' && this._deadAfter > 0) q.set('heartbeat', '1');
    // The first poll of an attempt is answered as soon as it is caught up, so
    // the SDK knows at once that the path works; later ones wait for events.
    if (name === 'poll' && first) q.set('wait', '0');
    return url.toString();
  }

  /** The transports of a new round of attempts, best bet first. */
  _newRound() {
    const proven = worked.get(this._endpoint);
    if (proven && this._transports.includes(proven)) {
      if (this._attempt <= PROVEN_RETRIES) return [proven];
      return [proven, ...this._transports.filter((t) => t !== proven)];
    }
    return [...this._transports];
  }

  /** @param {{trigger?: string, next?: boolean}} [how] */
  async _open(how = {}) {
    if (this._closed) return;
    if (how.next) this._roundPos++;
    else {
      this._round = this._newRound();
      this._roundPos = 0;
    }
    // A token whose exp has passed would only earn a 401, which a browser
    // reports as a bare 1006 or EventSource error; refresh it first when the app can.
    if (this._token && this._opts.onTokenExpired) {
      const exp = tokenExpiry(this._token);
      if (exp !== undefined && exp * 1000 <= Date.now()) {
        if (!(await this._refreshToken())) return;
      }
    }
    if (this._closed) return;
    const name = this._round[this._roundPos];
    this._transport = name;
    this._setState('connecting', { attempt: this._attempt, ...(how.trigger ? { trigger: how.trigger } : {}) });
    const cur = { name, t: undefined, opened: false, live: false, caughtUp: false, heard: Date.now(), ended: false };
    this._cur = cur;
    const handlers = {
      open: () => {
        if (this._cur !== cur || cur.opened) return;
        cur.opened = true;
        this._setState('replaying');
      },
      frame: (msg) => {
        if (this._cur !== cur) return;
        this._heard(cur);
        this._frame(msg, cur);
      },
      activity: () => {
        if (this._cur === cur) this._heard(cur);
      },
      // An accepted poll answer: the path works, whatever the frames were.
      live: () => {
        if (this._cur === cur) this._live(cur);
      },
      closed: (detail) => {
        if (this._cur !== cur || cur.ended) return;
        this._drop();
        this._closedBy({ ...detail, opened: cur.opened }, cur);
      },
    };
    // Until the first frame, the probe bound applies: a proxy that accepts
    // the WebSocket upgrade (or buffers SSE) and then delivers nothing is a
    // failed transport, not a quiet one.
    this._arm(cur, name === 'poll' ? 0 : this._probeTimeout, 'nothing received');
    try {
      cur.t = this._start(name, handlers);
    } catch (err) {
      this._drop();
      this._closedBy({ reason: String(err?.message ?? err), opened: false }, cur);
    }
  }

  /** @param {TransportName} name */
  _start(name, h) {
    const url = this._url(name);
    if (name === 'websocket') return openWebSocket(this._WS, url, h);
    if (name === 'sse') {
      if (typeof this._ES === 'function') return openEventSource(this._ES, url, h, this._fetch);
      return openFetchSSE(this._fetch, url, h);
    }
    return openPoll(this._fetch, (first) => this._url('poll', first), this._deadAfter || 60000, h);
  }

  _heard(cur) {
    cur.heard = Date.now();
    this._arm(cur, this._deadAfter, 'no frame or heartbeat');
  }

  _arm(cur, ms, reason) {
    clearTimeout(this._watch);
    this._watch = undefined;
    if (!(ms > 0)) return;
    this._watch = setTimeout(() => {
      if (this._cur !== cur) return;
      this._drop();
      this._closedBy({ reason: `${reason} for ${ms} ms`, opened: cur.opened, dead: true }, cur);
    }, ms);
  }

  /** Ends the current attempt without reporting it. */
  _drop() {
    clearTimeout(this._watch);
    this._watch = undefined;
    const cur = this._cur;
    this._cur = undefined;
    if (!cur) return;
    cur.ended = true;
    try {
      cur.t?.close();
    } catch {
      // Closing a socket that is still connecting throws in some engines; it is dropped anyway.
    }
  }

  /** @param {string|ArrayBuffer|Uint8Array|object} raw */
  _frame(raw, cur) {
    let msg = raw;
    if (typeof raw !== 'object' || raw instanceof ArrayBuffer || ArrayBuffer.isView(raw)) {
      const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw);
      try {
        msg = JSON.parse(text);
      } catch {
        return; // Not ours to judge; the contract only sends JSON.
      }
    }
    if (msg === null || typeof msg !== 'object') return;
    if (typeof msg.control === 'string') {
      switch (msg.control) {
        case 'caught_up':
          this._advance(msg.last);
          // Once per connection, as on /ws, whatever a transport repeats.
          if (cur.caughtUp) return;
          cur.caughtUp = true;
          this._live(cur);
          this._emit('caught_up', { last: msg.last });
          return;
        case 'token':
          // The bridge took the in-band refresh (the next one is already
          // planned from the new token's exp); exp says until when.
          if (typeof msg.exp === 'number') this._tokenAck = msg.exp;
          return;
        case 'gap':
          this._emit('gap', { requested: msg.requested, oldest: msg.oldest });
          return;
        case 'cursor':
          this._advance(msg.last);
          return;
        default:
          return; // ping, and whatever newer bridges add: ignoring them is the contract.
      }
    }
    if (!isId(msg.id)) return;
    // Ids only grow and every attempt resumes after the stored id, whatever
    // the transport, so "not newer than the newest seen" is exactly "already delivered".
    if (this._last !== undefined && compareIds(msg.id, this._last) <= 0) return;
    this._advance(msg.id);
    this._emit('event', { id: msg.id, type: msg.type, data: msg.data });
  }

  _live(cur) {
    if (!cur || cur.live) return;
    cur.live = true;
    cur.opened = true;
    this._attempt = 0; // A connection that reached live earned a fresh backoff.
    worked.set(this._endpoint, cur.name);
    this._setState('live');
    if (cur.refreshOnLive && this._cur === cur) {
      cur.refreshOnLive = false;
      this._sendToken(cur);
    }
  }

  _advance(id) {
    if (!isId(id)) return;
    if (this._last !== undefined && compareIds(id, this._last) <= 0) return;
    this._last = id;
    if (this._storage) {
      try {
        this._storage.setItem(this._opts.storageKey, id);
      } catch {
        // Quota or privacy mode: memory still holds the id for this page's life.
      }
    }
  }

  /**
   * @param {{code?: number, status?: number, reason?: string, opened?: boolean, dead?: boolean}} detail
   */
  async _closedBy(detail, cur) {
    if (this._closed) return;
    const d = { ...detail };
    if (d.status === undefined) delete d.status;
    if (d.code === undefined) delete d.code;
    if (d.code === REVOKED || (d.status === 401 && this._token)) {
      // Revoked, or refused (a revoked token is refused with 401 until it is
      // replaced): only a different token may come back.
      const refused = this._token;
      if (!(await this._refreshToken(d))) return;
      if (this._token === refused) {
        this._stop({ ...d, reason: `${d.code === REVOKED ? 'revoked' : 'refused'} and onTokenExpired returned the same token` });
        return;
      }
      if (d.code === REVOKED) {
        this._attempt = 0;
        this._setState('reconnecting', { ...d, delay: 0, attempt: this._attempt });
        this._timer = setTimeout(() => this._open(), 0);
      } else {
        // A 401 may as well be a token the bridge will never accept: backoff.
        this._scheduleReconnect(d);
      }
      return;
    }
    if (d.code === GROUPS_CHANGED) {
      // The refreshed token (already adopted) names other groups: reconnect
      // with it at once and resume from the stored id.
      this._attempt = 0;
      this._setState('reconnecting', { ...d, delay: 0, attempt: this._attempt });
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._open(), 0);
      return;
    }
    if (d.code === TOKEN_EXPIRED || d.status === 401) {
      if (!(await this._refreshToken(d))) return;
      if (d.code === TOKEN_EXPIRED) {
        // The bridge said "expired", so the new token is the cure: at once.
        this._attempt = 0;
        this._timer = setTimeout(() => this._open(), 0);
      } else {
        // A 401 may as well be a token the bridge will never accept: backoff.
        this._scheduleReconnect(d);
      }
      return;
    }
    // An attempt that never reached live tries the round's next transport at
    // once; a bridge that is down for all of them earns the backoff.
    if (!cur.live && this._roundPos + 1 < this._round.length) {
      this._setState('reconnecting', { ...d, delay: 0, attempt: this._attempt, fallback: this._round[this._roundPos + 1] });
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._open({ next: true }), 0);
      return;
    }
    // Everything else reconnects and resumes: 1001 (node draining), 1013 (too
    // slow), 1006 (dropped, or refused at the handshake: a browser cannot see
    // the HTTP status) by the contract, a stream the bridge ended, a dead
    // connection, and anything else, because the stored id makes resuming safe.
    this._scheduleReconnect(d);
  }

  /** Ends the connection for good on the SDK's own decision. */
  _stop(detail) {
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    this._lifecycle();
    this._drop();
    this._setState('closed', detail);
  }

  async _refreshToken(detail = {}) {
    const refresh = this._opts.onTokenExpired;
    const code = detail.code ?? (detail.status === undefined ? TOKEN_EXPIRED : undefined);
    const c = code === undefined ? {} : { code };
    if (!refresh) {
      const why = code === REVOKED ? 'revoked' : detail.status === 401 ? 'refused (401)' : 'token expired';
      this._stop({ ...detail, ...c, reason: `${why} and no onTokenExpired callback${detail.reason ? `: ${detail.reason}` : ''}` });
      return false;
    }
    try {
      const token = await refresh();
      if (this._closed) return false;
      if (typeof token !== 'string' || token === '') throw new Error('onTokenExpired returned no token');
      this._setToken(token);
      return true;
    } catch (err) {
      if (this._closed) return false;
      // The identity provider may be down too; keep trying at the backoff pace.
      this._scheduleReconnect({ ...detail, ...c, reason: `token refresh failed: ${err?.message ?? err}` });
      return false;
    }
  }

  /** Adopts token for every later request and plans its refresh. */
  _setToken(token) {
    const old = this._token;
    this._token = token;
    this._tokenAt = Date.now();
    // A callback handing back a token that lives no longer than the old one
    // would be asked again at once: leave that one to expiry (1008).
    const before = tokenClaims(old).exp;
    const now = tokenClaims(token).exp;
    if (token === old || (before !== undefined && now !== undefined && now <= before)) {
      clearTimeout(this._refreshTimer);
      return;
    }
    this._scheduleRefresh();
  }

  /**
   * Plans the refresh of the current token at `refreshAt` of its lifetime,
   * jittered ± 5 %: 10k pages given tokens in the same second spread their
   * refreshes (and, on SSE, their reconnects) over a tenth of the lifetime.
   */
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = undefined;
    if (this._closed || !this._token || !this._opts.onTokenExpired || !(this._refreshAt > 0)) return;
    const { exp, iat } = tokenClaims(this._token);
    if (exp === undefined) return;
    const from = iat !== undefined ? Math.min(iat * 1000, this._tokenAt) : this._tokenAt;
    const life = exp * 1000 - from;
    if (!(life > 0)) return;
    const frac = Math.min(0.99, Math.max(0.01, this._refreshAt + (this._random() - 0.5) * 0.1));
    const delay = Math.max(0, from + life * frac - Date.now());
    if (exp * 1000 <= Date.now()) return; // already dead: the next attempt refreshes first
    this._refreshTimer = setTimeout(() => this._refreshNow(), delay);
  }

  /**
   * In band: the bridge moves this connection's expiry and answers
   * {"control":"token"}; an invalid token closes with 1008, other groups 4002.
   */
  _sendToken(cur) {
    try {
      cur.t.send(JSON.stringify({ token: this._token }));
    } catch {
      // Closing anyway: the reconnect uses the new token.
    }
  }

  /** The refresh before expiry: a new token, handed to the live transport. */
  async _refreshNow() {
    if (this._closed || this._refreshing) return;
    this._refreshing = true;
    let token;
    try {
      token = await this._opts.onTokenExpired();
      if (typeof token !== 'string' || token === '') throw new Error('onTokenExpired returned no token');
    } catch {
      // The identity provider may be down: try again halfway to expiry, and
      // failing that, expiry (1008) takes the usual path.
      this._refreshing = false;
      const { exp } = tokenClaims(this._token);
      const left = exp !== undefined ? exp * 1000 - Date.now() : 0;
      if (!this._closed && left > 2000) this._refreshTimer = setTimeout(() => this._refreshNow(), left / 2);
      return;
    }
    this._refreshing = false;
    if (this._closed) return;
    const cur = this._cur;
    this._setToken(token);
    if (!cur) return; // the next attempt carries the new token
    if (cur.name === 'websocket') {
      // An attempt opened with the old token gets the new one once it is live.
      if (cur.live) this._sendToken(cur);
      else cur.refreshOnLive = true;
      return;
    }
    if (!cur.live) return;
    if (cur.name === 'sse') {
      // SSE has no way back to the bridge: reconnect with the new token now,
      // resuming from the stored id, before the old one ends the stream.
      this._drop();
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._open(), 0);
    }
    // poll: each request carries the current token; nothing more to do.
  }

  _scheduleReconnect(detail) {
    if (this._closed) return;
    const delay = backoffDelay(this._attempt, this._minDelay, this._maxDelay, this._random);
    this._attempt++;
    this._setState('reconnecting', { ...detail, delay, attempt: this._attempt });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  /**
   * The page came back (online, visible, restored from the back/forward
   * cache): a backoff still running is skipped, and a connection that may
   * have died unnoticed while the page slept is replaced. Resume makes an
   * unneeded reconnect cost one handshake, never an event.
   * @param {'online'|'visible'|'pageshow'} trigger
   */
  _wake(trigger) {
    if (this._closed) return;
    const cur = this._cur;
    if (cur && trigger === 'visible') {
      // Visible again with frames (or heartbeats) still arriving: nothing to do.
      const quiet = Date.now() - cur.heard;
      if (cur.live && !(this._deadAfter > 0 && quiet > this._deadAfter / 2)) return;
      if (!cur.live && quiet < this._probeTimeout) return; // an attempt already under way
    }
    this._drop();
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open({ trigger }), 0);
  }
}

/** Resolves a URL against the page when there is one. */
function resolve(u) {
  const base = globalThis.location?.href;
  return base ? new URL(u, base) : new URL(u);
}

/** `/prefix/ws` → `/prefix/<leaf>`: the bridge serves /ws, /events and /poll side by side. */
function sibling(url, leaf) {
  const u = new URL(url);
  u.pathname = u.pathname.replace(/[^/]*$/, leaf);
  return u;
}

/**
 * Registers the page-lifecycle hooks that make a sleeping page reconnect at
 * once when it wakes; returns the function removing them. Outside a browser
 * there is nothing to hook.
 */
function lifecycleHooks(wake) {
  const win = typeof globalThis.addEventListener === 'function' ? globalThis : undefined;
  const doc = globalThis.document;
  const onOnline = () => wake('online');
  const onShow = (e) => e?.persisted && wake('pageshow');
  const onVisible = () => doc.visibilityState === 'visible' && wake('visible');
  win?.addEventListener('online', onOnline);
  win?.addEventListener('pageshow', onShow);
  doc?.addEventListener?.('visibilitychange', onVisible);
  return () => {
    win?.removeEventListener('online', onOnline);
    win?.removeEventListener('pageshow', onShow);
    doc?.removeEventListener?.('visibilitychange', onVisible);
  };
}

function openWebSocket(WS, url, h) {
  const ws = new WS(url);
  ws.onopen = () => h.open();
  ws.onmessage = (ev) => h.frame(ev.data);
  ws.onerror = () => {
    // Always followed by close, which carries the information.
  };
  ws.onclose = (ev) => {
    detach(ws);
    h.closed({ code: ev.code, reason: ev.reason });
  };
  return {
    send(text) {
      ws.send(text);
    },
    close() {
      detach(ws);
      ws.close(1000, 'client closed');
    },
  };
}

// A browser's EventSource reconnects by itself, with its own delay and the
// token it was built with; the SDK closes it on the first error instead and
// reconnects on its own terms (backoff, fresh token, fallback, dedupe).
//
// The bridge ends a stream with a named `close` event carrying the code
// (1008 expired, 4001 revoked, 1001 draining…); an EventSource refused at
// the start shows no status, so with a token and fetch at hand the SDK asks
// once for it (a 401 is a token to replace, not a network to wait for).
function openEventSource(ES, url, h, fetchFn) {
  const es = new ES(url);
  let opened = false;
  let ended = false;
  const off = () => {
    ended = true;
    es.onopen = es.onmessage = es.onerror = null;
    es.removeEventListener?.('close', onClose);
    es.close();
  };
  const onClose = (ev) => {
    if (ended) return;
    off();
    h.closed(closeEvent(ev.data));
  };
  es.onopen = () => {
    opened = true;
    h.open();
  };
  es.onmessage = (ev) => h.frame(ev.data);
  es.addEventListener?.('close', onClose);
  es.onerror = () => {
    if (ended) return;
    off();
    // Only a token can be cured by a new one: without one, no probe.
    if (opened || typeof fetchFn !== 'function' || !new URL(url).searchParams.has('token')) {
      return h.closed({ reason: 'event stream ended or refused' });
    }
    refusedStatus(fetchFn, url).then((status) =>
      h.closed(status ? { status, reason: `HTTP ${status}` } : { reason: 'event stream ended or refused' }),
    );
  };
  return { close: off };
}

/** The `close` event's {code, reason}, as a close detail. */
function closeEvent(data) {
  try {
    const m = JSON.parse(data);
    if (typeof m?.code === 'number') return { code: m.code, reason: typeof m.reason === 'string' ? m.reason : '' };
  } catch {
    // Not ours: an ordinary end.
  }
  return { reason: 'event stream ended' };
}

/** The status of a refused request (bounded, body not read); 0 when it was not refused or failed. */
async function refusedStatus(fetchFn, url) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 5000);
  try {
    const res = await fetchFn(url, { headers: { Accept: 'text/event-stream' }, signal: ac.signal, cache: 'no-store' });
    return res.status >= 400 ? res.status : 0;
  } catch {
    return 0;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

/** SSE through fetch streaming (Node, or a browser without EventSource). */
function openFetchSSE(fetchFn, url, h) {
  const ac = new AbortController();
  (async () => {
    let res;
    try {
      res = await fetchFn(url, { headers: { Accept: 'text/event-stream' }, signal: ac.signal, cache: 'no-store' });
    } catch (err) {
      if (!ac.signal.aborted) h.closed({ reason: String(err?.message ?? err) });
      return;
    }
    if (res.status !== 200 || !res.body) {
      const reason = await refusal(res);
      return h.closed({ status: res.status, reason });
    }
    h.open();
    const parser = sseParser({
      frame: h.frame,
      named: (event, data) => {
        if (event === 'close') {
          ac.abort();
          h.closed(closeEvent(data));
        }
      },
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body) {
        h.activity();
        parser(decoder.decode(chunk, { stream: true }));
      }
      h.closed({ reason: 'event stream ended' });
    } catch (err) {
      if (!ac.signal.aborted) h.closed({ reason: String(err?.message ?? err) });
    }
  })();
  return { close: () => ac.abort() };
}

/**
 * A text/event-stream parser (the WHATWG rules the SDK needs: data lines
 * joined by newlines, comments, ids and other fields ignored) that calls
 * h.frame(data) per event, except h.named?.('close', data) for the bridge's
 * close event; fed arbitrary chunks.
 */
export function sseParser(h) {
  let buf = '';
  let data = [];
  let event = '';
  return (text) => {
    buf += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buf);
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (!m || (m[0] === '\r' && m.index === buf.length - 1)) return;
      const line = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      if (line === '') {
        if (data.length) {
          // The bridge names only its close event; anything else is a frame.
          if (event === 'close' && h.named) h.named(event, data.join('\n'));
          else h.frame(data.join('\n'));
        }
        data = [];
        event = '';
        continue;
      }
      if (line[0] === ':') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
    }
  };
}

/**
 * Long-poll: one request at a time, each resuming from the newest id the
 * SDK holds, so any node can answer any poll. The first answer opens it.
 */
function openPoll(fetchFn, urlFn, timeout, h) {
  const ac = new AbortController();
  let first = true;
  (async () => {
    while (!ac.signal.aborted) {
      let res;
      let body;
      // Bounded: a poll answers within poll_timeout, so a longer silence is a dead path.
      const timer = setTimeout(() => ac.abort(new Error('poll timed out')), timeout);
      try {
        res = await fetchFn(urlFn(first), { headers: { Accept: 'application/json' }, signal: ac.signal, cache: 'no-store' });
        if (res.status === 200) body = await res.json();
      } catch (err) {
        clearTimeout(timer);
        if (ac.signal.aborted && ac.signal.reason?.message !== 'poll timed out') return;
        return h.closed({ reason: String(err?.message ?? err) });
      }
      clearTimeout(timer);
      if (ac.signal.aborted) return;
      if (res.status !== 200) return h.closed({ status: res.status, reason: await refusal(res) });
      if (!body || !Array.isArray(body.frames)) return h.closed({ reason: 'poll answer without frames' });
      if (first) h.open();
      first = false;
      h.activity();
      for (const f of body.frames) {
        if (ac.signal.aborted) return;
        h.frame(f);
      }
      if (ac.signal.aborted) return;
      h.frame({ control: 'cursor', last: body.last });
      // An empty answer after the wait: nothing is pending, so this is live
      // even from a bridge that sends no caught_up on polls.
      if (body.frames.length === 0) h.frame({ control: 'caught_up', last: body.last });
      // Any accepted answer means the path works: live, even when the answer
      // is a page of replay without caught_up yet.
      if (ac.signal.aborted) return;
      h.live();
    }
  })();
  return { close: () => ac.abort() };
}

async function refusal(res) {
  try {
    return `HTTP ${res.status}: ${(await res.text()).trim().split('\n')[0].slice(0, 200)}`;
  } catch {
    return `HTTP ${res.status}`;
  }
}

function list(v) {
  return Array.isArray(v) ? v.join(',') : String(v);
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
}
