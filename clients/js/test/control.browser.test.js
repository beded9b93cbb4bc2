// Issue 16 on the demo page in real Chromium: the presence badge per group
// counts the connections on all nodes, and "log this user out everywhere"
// closes every page of that user (4001, shown as logged out; the SDK does not
// come back by itself, and the bridge refuses the user from then on) while
// other users stay live.
//
// The button and the badges need the binary to wire demo.WithDisconnect and
// demo.WithPresence; GET /demo/features says whether it does, and the test
// says so and skips when not.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startBridge, publish } from './harness.js';

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

const T = 20000; // Bound for every wait on a page (presence is up to ~5 s old).

test('demo in Chromium: presence badge per group, "log this user out everywhere"', { timeout: 180000 }, async (t) => {
  const bridge = await startBridge({ demo: true, nodeId: 'control-browser' });
  cleanups.push(() => bridge.kill());
  const features = await (await fetch(`${bridge.http}/demo/features`, { signal: AbortSignal.timeout(5000) })).json().catch(() => ({}));
  if (!features.disconnect || !features.presence) {
    t.skip(`this binary's demo does not offer ${JSON.stringify(features)}: internal/node must pass demo.WithDisconnect and demo.WithPresence`);
    return;
  }

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
  const open = async (user, groups) => {
    const page = await context.newPage();
    page.setDefaultTimeout(T);
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${bridge.http}/demo?user=${user}&groups=${groups}`);
    await page.locator('#state[data-state="live"]').waitFor({ timeout: T });
    return { page, errors };
  };
  const badge = (page, group) => page.locator(`.presence[data-group="${group}"]`);
  const count = async (page, group) => Number((await badge(page, group).getAttribute('data-count')) ?? -1);
  const waitCount = (page, group, n) =>
    page.waitForFunction(([g, want]) => document.querySelector(`.presence[data-group="${g}"]`)?.dataset.count === String(want), [group, n], { timeout: T });

  const a1 = await open('alice', 'ops,noc-north');
  const a2 = await open('alice', 'ops');
  const bob = await open('bob', 'noc-south');
  let passed = false;
  try {
    // Presence: two connections in ops (both alice pages), one in noc-north, one in noc-south.
    await waitCount(a1.page, 'ops', 2);
    await waitCount(a1.page, 'noc-north', 1);
    await waitCount(bob.page, 'noc-south', 1);
    assert.equal(await badge(a1.page, 'ops').textContent(), '2 online');

    const before = await publish(bridge.redisUrl, 'user:alice', 'alarm.fiber_break', { fiber: 'F-1', km: 1 });
    for (const p of [a1, a2]) await p.page.locator(`#events li[data-id="${before}"]`).waitFor({ state: 'attached' });

    // Log alice out everywhere from one page: both of her pages close with 4001.
    await a1.page.click('#logout');
    for (const p of [a1, a2]) await p.page.locator('#state[data-state="revoked"]').waitFor({ timeout: T });
    assert.match(await a2.page.textContent('#state'), /logged out everywhere/);
    // Stopped: not back by itself, and the presence count drops to zero.
    await new Promise((r) => setTimeout(r, 1500));
    for (const p of [a1, a2]) assert.equal(await p.page.getAttribute('#state', 'data-state'), 'revoked');
    await waitCount(bob.page, 'ops', 0);
    // bob was not touched.
    assert.equal(await bob.page.getAttribute('#state', 'data-state'), 'live');
    const forBob = await publish(bridge.redisUrl, 'user:bob', 'alarm.attenuation', { fiber: 'F-2', km: 2 });
    await bob.page.locator(`#events li[data-id="${forBob}"]`).waitFor({ state: 'attached' });

    // Published while alice is logged out: her pages stay closed and show nothing more.
    const whileOut = await publish(bridge.redisUrl, 'group:ops', 'alarm.fiber_break', { fiber: 'F-3', km: 3 });
    await new Promise((r) => setTimeout(r, 1000));
    for (const p of [a1, a2]) {
      assert.equal(await p.page.locator(`#events li[data-id="${whileOut}"]`).count(), 0);
      assert.equal(await p.page.getAttribute('#state', 'data-state'), 'revoked');
      assert.match(await p.page.textContent('#pause-note'), /revoked on this bridge/);
    }
    const ids = await a1.page.$$eval('#events li', (lis) => lis.map((li) => li.dataset.id));
    assert.deepEqual(ids, [before]);
    assert.equal(await count(a1.page, 'noc-north'), 0);
    for (const p of [a1, a2, bob]) assert.deepEqual(p.errors, []);
    passed = true;
  } finally {
    mkdirSync(artifacts, { recursive: true });
    await a1.page.screenshot({ path: path.join(artifacts, 'control.png'), fullPage: true }).catch(() => {});
    if (!passed) console.error(bridge.logs().slice(-3000));
  }
});
