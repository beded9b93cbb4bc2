// Types for notifybridge.js. Kept by hand next to the JSDoc in the module;
// test/types.test.js checks that every export is declared here.

export interface NotifyEvent<T = unknown> {
  /** Redis stream entry id, `<ms>-<seq>`. */
  id: string;
  /** Event type, for example `alarm.fiber_break`. */
  type: string;
  /** The producer's JSON value, parsed. */
  data: T;
}

export interface Gap {
  /** The id the client resumed from. */
  requested: string;
  /** The oldest id the bridge could still deliver; events between the two may be lost. */
  oldest: string;
}

export interface CaughtUp {
  /** Newest stream id the client is now up to date with. */
  last: string;
}

export type ConnectionState = 'connecting' | 'replaying' | 'live' | 'reconnecting' | 'closed';

export interface StateDetail {
  /** Close code of the connection that ended, when there was one. */
  code?: number;
  /** Close reason, or why the SDK stopped. */
  reason?: string;
  /** Milliseconds until the next attempt (state `reconnecting`). */
  delay?: number;
  /** Consecutive failed attempts so far. */
  attempt?: number;
  /** Whether the connection that ended had completed its handshake. */
  opened?: boolean;
  /** The transport of the attempt this state is about. */
  transport?: TransportName;
  /** HTTP status of a refused SSE or poll request (401, 403, 400, 503). */
  status?: number;
  /** `reconnecting` only: the round's next transport, tried at once (delay 0) after this one failed. */
  fallback?: TransportName;
  /** `reconnecting` only: the connection was closed by the SDK after `deadAfter` ms of silence. */
  dead?: boolean;
  /** `connecting` only: the page event that skipped the backoff. */
  trigger?: 'online' | 'visible' | 'pageshow';
}

export type TransportName = 'websocket' | 'sse' | 'poll';

export interface ConnectOptions {
  /** WebSocket endpoint, e.g. `wss://bridge.example/ws`; `http(s)://` and relative URLs are accepted. */
  url: string;
  /** JWT for auth=jwt, sent as `?token=`. */
  token?: string;
  /** User id for auth=none (development only). */
  user?: string;
  /** Groups for auth=none (development only). */
  groups?: string[] | string;
  /** Type filter, e.g. `['alarm.*', 'test.done']`. */
  types?: string[] | string;
  /** Resume after this id (overrides what storage holds). */
  lastEventId?: string;
  /** First connection only, when no id is known: replay from this time (RFC 3339 or unix ms). */
  since?: string | number;
  /** Persist the newest id under this key. */
  storageKey?: string;
  /** Where storageKey lives; defaults to `globalThis.localStorage`. */
  storage?: Pick<Storage, 'getItem' | 'setItem'>;
  /**
   * Returns a new token: at `refreshAt` of the token's lifetime (sent in band on a WebSocket),
   * after close 1008 (expired) or 4001 (revoked), on HTTP 401 from SSE or poll, or when the
   * token's `exp` has passed before a reconnect. Without it (or when it returns the refused
   * token again) an expired or revoked connection ends (state `closed`).
   */
  onTokenExpired?: () => string | Promise<string>;
  /** Fraction of the token's lifetime at which it is refreshed (default 0.8, ± 5 % jitter); 0: off. */
  refreshAt?: number;
  /** Transports in the order tried (default `['websocket', 'sse', 'poll']`); unavailable ones are skipped. */
  transports?: TransportName[];
  /** SSE endpoint; default: `url` with its last path segment replaced by `events`. */
  sseUrl?: string;
  /** Long-poll endpoint; default: `url` with its last path segment replaced by `poll`. */
  pollUrl?: string;
  /** WebSocket constructor; defaults to the global one (pass the `ws` package in Node). */
  WebSocket?: unknown;
  /** EventSource constructor; defaults to the global one; without one SSE runs over `fetch` streaming. */
  EventSource?: unknown;
  /** fetch for SSE-over-fetch and long-poll; defaults to the global one. */
  fetch?: typeof fetch;
  /** Silence in ms after which a connection counts as dead and is replaced (default 60000, ≥ 2 × the bridge's ping_interval; 0: off). */
  deadAfter?: number;
  /** Ms a new WebSocket or SSE attempt may take to deliver its first frame before the next transport is tried (default 8000). */
  probeTimeout?: number;
  /** First reconnect delay in ms (default 500). */
  minDelay?: number;
  /** Cap of the reconnect delay in ms (default 30000). */
  maxDelay?: number;
  /** Jitter source in [0, 1) (default Math.random). */
  random?: () => number;
}

export declare class Connection {
  constructor(options: ConnectOptions);
  /** Newest stream id this connection has been sent. */
  readonly lastEventId: string | undefined;
  readonly state: ConnectionState;
  /** Transport of the current or last attempt; with state `live`, the one delivering. */
  readonly transport: TransportName | undefined;
  on(name: 'event', fn: (event: NotifyEvent) => void): () => void;
  on(name: 'gap', fn: (gap: Gap) => void): () => void;
  on(name: 'caught_up', fn: (caughtUp: CaughtUp) => void): () => void;
  on(name: 'state', fn: (state: ConnectionState, detail: StateDetail) => void): () => void;
  /** Closes for good; no reconnect follows. */
  close(): void;
}

/** The default transport order. */
export declare const TRANSPORTS: readonly TransportName[];
/** Close codes the SDK acts on; every other code reconnects and resumes. */
export declare const CloseCodes: Readonly<{ TOKEN_EXPIRED: 1008; REVOKED: 4001; GROUPS_CHANGED: 4002 }>;
/** A text/event-stream parser fed arbitrary chunks; calls `frame(data)` once per event with data. */
export declare function sseParser(handler: { frame(data: string): void; named?(event: string, data: string): void }): (chunk: string) => void;
export declare function connect(options: ConnectOptions): Connection;
/** Numeric comparison of two `<ms>-<seq>` ids. */
export declare function compareIds(a: string, b: string): -1 | 0 | 1;
export declare function isId(id: unknown): id is string;
export declare function backoffDelay(attempt: number, minDelay: number, maxDelay: number, random: () => number): number;
/** `exp` (seconds since epoch) of a JWT, or undefined. */
export declare function tokenExpiry(token: string): number | undefined;
