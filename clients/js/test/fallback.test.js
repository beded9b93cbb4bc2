// Issue 15's proof in real Chromium through a real nginx that does not pass
// WebSocket and buffers responses (deploy/nginx/no-websocket.conf): the demo
// page falls back to SSE (which streams only thanks to the bridge's
// X-Accel-Buffering: no), and with SSE blocked too, to long-poll; on each, a
// bridge restart, a page put in the background (hidden and frozen) and
// brought back, and going offline and online again lose and repeat nothing.
//
// Needs /usr/bin/chromium and nginx (scripts/test-clients.sh installs both).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startBridge, startRedis, publish } from './harness.js';
import { startNginx } from './nginx.js';

const artifacts = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');
const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch (err) {
      console.error('cleanup:', err);
    }
  }
});

const T = 20000; // Bound for every wait on the page (a restart's backoff included).

async function launch() {
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), 'notifybridge-chromium-'));
  cleanups.push(() => rmSync(userDataDir, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 860 },
    timeout: 60000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  cleanups.push(() => context.close());
  return context;
}

/** A demo page at base, with helpers bound to it. */
async function board(context, base, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  const b = {
    page,
    errors,
    async open() {
      const res = await page.goto(`${base}/demo?user=alice&groups=ops,noc-north`);
      assert.equal(res.status(), 200, `GET /demo through nginx: ${res.status()}`);
    },
    live: (transport) => page.locator(`#state[data-state="live"][data-transport="${transport}"]`).waitFor({ timeout: T }),
    async shown(ids) {
      for (const id of ids) await page.locator(`#events li[data-id="${id}"]`).waitFor({ state: 'attached', timeout: T });
    },
    ids: () => page.$$eval('#events li', (lis) => lis.map((li) => li.dataset.id)),
    async screenshot() {
      mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: path.join(artifacts, `fallback-${name}.png`), fullPage: true }).catch(() => {});
    },
  };
  return b;
}

/** Puts the page in the background (hidden, then frozen as Chromium freezes background tabs) or back. */
async function background(context, page, hidden) {
  const cdp = await context.newCDPSession(page);
  if (!hidden) await cdp.send('Page.setWebLifecycleState', { state: 'active' });
  await page.evaluate((h) => {
    Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
    Object.defineProperty(document, 'hidden', { value: h, configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
  if (hidden) await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
  await cdp.detach();
}

test('demo in Chromium through nginx without WebSocket: sse, then (sse blocked) poll; restart, background, offline lose nothing', { timeout: 240000 }, async () => {
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  let bridge = await startBridge({ redisUrl: redis.url, demo: true, nodeId: 'fallback-test' });
  cleanups.push(() => bridge.kill());
  const upstream = `127.0.0.1:${bridge.port}`;
  const noWS = await startNginx('deploy/nginx/no-websocket.conf', upstream);
  cleanups.push(() => noWS.stop());
  const noSSE = await startNginx('deploy/nginx/no-websocket.conf', upstream, [['# return 403;', 'return 403;']]);
  cleanups.push(() => noSSE.stop());

  const context = await launch();
  const alice = [];
  const pub = async (to, n) => {
    const id = await publish(redis.url, to, 'alarm.fiber_break', { fiber: `F-${n}`, km: n });
    if (to !== 'user:bob') alice.push(id);
    return id;
  };
  const restart = async () => {
    assert.equal((await bridge.stop()).code, 0);
    const missed = [await pub('user:alice', 10), await pub('group:ops', 11), await pub('user:bob', 12)];
    bridge = await startBridge({ redisUrl: redis.url, demo: true, nodeId: 'fallback-test', listenPort: bridge.port });
    cleanups.push(() => bridge.kill());
    return missed.filter((_, i) => i !== 2);
  };

  const sse = await board(context, noWS.http, 'sse');
  const poll = await board(context, noSSE.http, 'poll');
  let passed = false;
  try {
    // 1. No Upgrade through the proxy: SSE, streaming although nginx buffers.
    await sse.open();
    await sse.live('sse');
    const first = [await pub('user:alice', 1), await pub('group:noc-north', 2)];
    const bob = await pub('user:bob', 3);
    await sse.shown(first);

    // 2. With SSE blocked too: long-poll, from the start of the stream.
    await poll.open();
    await poll.live('poll');
    await poll.shown(first);

    // 3. A bridge restart: both resume, each missed event once.
    const missed = await restart();
    await sse.shown(missed);
    await poll.shown(missed);
    await sse.live('sse');
    await poll.live('poll');

    // 4. In the background (hidden, frozen) while events come; brought back.
    for (const b of [sse, poll]) await background(context, b.page, true);
    const whileHidden = [await pub('user:alice', 20), await pub('group:ops', 21)];
    await new Promise((r) => setTimeout(r, 1000));
    for (const b of [sse, poll]) await background(context, b.page, false);
    await sse.shown(whileHidden);
    await poll.shown(whileHidden);

    // 5. Offline and online again.
    await context.setOffline(true);
    await new Promise((r) => setTimeout(r, 1000));
    const whileOffline = [await pub('user:alice', 30), await pub('group:noc-north', 31)];
    await context.setOffline(false);
    await sse.shown(whileOffline);
    await poll.shown(whileOffline);
    await sse.live('sse');
    await poll.live('poll');

    // Every event for alice exactly once on each page, nothing for bob.
    for (const b of [sse, poll]) {
      const ids = await b.ids();
      assert.equal(ids.length, new Set(ids).size, `duplicates on the board: ${ids}`);
      assert.deepEqual([...ids].sort(), [...alice].sort());
      assert.ok(!ids.includes(bob));
      assert.equal(await b.page.textContent('#count-dupes'), '0');
      assert.deepEqual(b.errors, []);
    }
    passed = true;
  } finally {
    await sse.screenshot();
    await poll.screenshot();
    if (!passed) console.error(`nginx (no websocket):\n${noWS.logs().slice(-2000)}\nnginx (no sse):\n${noSSE.logs().slice(-2000)}`);
  }
});
