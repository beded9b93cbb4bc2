// notifybridge browser SDK: one WebSocket to a notifybridge node that survives
// restarts, deploys and flaky networks without losing or repeating events.
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
//     expired (1008) instead of hammering the bridge with a dead token.
//
// No runtime dependencies: it runs as an ES module in browsers and in Node
// (pass a WebSocket implementation such as the `ws` package there).

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
 * @typedef {Object} StateDetail
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
 * @property {() => (string|Promise<string>)} [onTokenExpired] Called when the bridge
 *   closes with 1008 (or the token's `exp` has passed before a reconnect); returns the
 *   new token. Without it, an expired token ends the connection (state `closed`).
 * @property {typeof WebSocket} [WebSocket] WebSocket constructor; defaults to the global one.
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

const TOKEN_EXPIRED = 1008;

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
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('notifybridge: no WebSocket implementation; pass options.WebSocket');
    }
    this._opts = options;
    this._WS = WS;
    this._token = options.token;
    this._storage = options.storageKey ? (options.storage ?? globalThis.localStorage) : undefined;
    this._random = options.random ?? Math.random;
    this._minDelay = options.minDelay ?? 500;
    this._maxDelay = options.maxDelay ?? 30000;
    /** @type {Record<string, Set<Function>>} */
    this._listeners = { event: new Set(), gap: new Set(), caught_up: new Set(), state: new Set() };
    /** @type {string|undefined} */
    this._last = undefined;
    this._attempt = 0;
    this._closed = false;
    /** @type {ConnectionState} */
    this._state = 'connecting';
    /** @type {WebSocket|undefined} */
    this._ws = undefined;
    this._timer = undefined;

    const stored = this._storage?.getItem(options.storageKey);
    if (isId(options.lastEventId)) this._last = options.lastEventId;
    else if (isId(stored)) this._last = stored;

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
    const ws = this._ws;
    this._ws = undefined;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, 'client closed');
      } catch {
        // Closing a socket that is still connecting throws in some engines; it is dropped anyway.
      }
    }
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
    this._emit('state', state, detail);
  }

  _url() {
    const o = this._opts;
    const base = globalThis.location?.href;
    const url = base ? new URL(o.url, base) : new URL(o.url);
    if (url.protocol === 'http:') url.protocol = 'ws:';
    if (url.protocol === 'https:') url.protocol = 'wss:';
    const q = url.searchParams;
    if (this._token) q.set('token', this._token);
    if (o.user !== undefined) q.set('user', o.user);
    if (o.groups !== undefined && o.groups.length) q.set('groups', list(o.groups));
    if (o.types !== undefined && o.types.length) q.set('types', list(o.types));
    if (this._last !== undefined) q.set('last_event_id', this._last);
    else if (o.since !== undefined) q.set('since', String(o.since));
    return url.toString();
  }

  async _open() {
    if (this._closed) return;
    // A token whose exp has passed would only earn a 401, which a browser
    // reports as a bare 1006; refresh it first when the app can.
    if (this._token && this._opts.onTokenExpired) {
      const exp = tokenExpiry(this._token);
      if (exp !== undefined && exp * 1000 <= Date.now()) {
        if (!(await this._refreshToken())) return;
      }
    }
    if (this._closed) return;
    this._setState('connecting', { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WS(this._url());
    } catch (err) {
      this._scheduleReconnect({ reason: String(err?.message ?? err) });
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this._setState('replaying');
    };
    ws.onmessage = (ev) => this._frame(ev.data);
    ws.onerror = () => {
      // Always followed by close, which carries the information.
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = undefined;
      detach(ws);
      this._closedBy(ev.code, ev.reason, opened);
    };
  }

  /** @param {string|ArrayBuffer|Uint8Array} raw */
  _frame(raw) {
    const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw);
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return; // Not ours to judge; the contract only sends JSON.
    }
    if (msg === null || typeof msg !== 'object') return;
    if (typeof msg.control === 'string') {
      switch (msg.control) {
        case 'caught_up':
          this._advance(msg.last);
          this._attempt = 0; // A connection that reached live earned a fresh backoff.
          this._setState('live');
          this._emit('caught_up', { last: msg.last });
          return;
        case 'gap':
          this._emit('gap', { requested: msg.requested, oldest: msg.oldest });
          return;
        case 'cursor':
          this._advance(msg.last);
          return;
        default:
          return; // Newer bridges may add control frames; ignoring them is the contract.
      }
    }
    if (!isId(msg.id)) return;
    // Ids on one connection only grow and a resume starts after the stored
    // id, so "not newer than the newest seen" is exactly "already delivered".
    if (this._last !== undefined && compareIds(msg.id, this._last) <= 0) return;
    this._advance(msg.id);
    this._emit('event', { id: msg.id, type: msg.type, data: msg.data });
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

  async _closedBy(code, reason, opened) {
    if (this._closed) return;
    if (code === TOKEN_EXPIRED) {
      if (!(await this._refreshToken())) return;
      this._attempt = 0;
      this._timer = setTimeout(() => this._open(), 0);
      return;
    }
    // Everything else reconnects and resumes: 1001 (node draining), 1013 (too
    // slow), 1006 (dropped, or refused at the handshake: a browser cannot see
    // the HTTP status) by the contract, and any other code too, because the
    // stored id makes resuming safe and a proxy may close with anything.
    this._scheduleReconnect({ code, reason, opened });
  }

  async _refreshToken() {
    const refresh = this._opts.onTokenExpired;
    if (!refresh) {
      this._closed = true;
      this._setState('closed', { code: TOKEN_EXPIRED, reason: 'token expired and no onTokenExpired callback' });
      return false;
    }
    try {
      const token = await refresh();
      if (this._closed) return false;
      if (typeof token !== 'string' || token === '') throw new Error('onTokenExpired returned no token');
      this._token = token;
      return true;
    } catch (err) {
      if (this._closed) return false;
      // The identity provider may be down too; keep trying at the backoff pace.
      this._scheduleReconnect({ code: TOKEN_EXPIRED, reason: `token refresh failed: ${err?.message ?? err}` });
      return false;
    }
  }

  _scheduleReconnect(detail) {
    if (this._closed) return;
    const delay = backoffDelay(this._attempt, this._minDelay, this._maxDelay, this._random);
    this._attempt++;
    this._setState('reconnecting', { ...detail, delay, attempt: this._attempt });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }
}

function list(v) {
  return Array.isArray(v) ? v.join(',') : String(v);
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
}
