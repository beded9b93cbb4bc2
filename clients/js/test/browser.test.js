// The demo alarm board in real Chromium against the real binary: targeting,
// then a bridge restart while events are published, after which every missed
// alarm must show exactly once; then the page's own "disconnect" button.
//
// Needs /usr/bin/chromium (Debian's package; scripts/test-clients.sh installs
// it). CHROMIUM=<path> overrides. NOTIFYBRIDGE_UPDATE_SCREENSHOT=1 also
// writes docs/demo.png.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startBridge, startRedis, publish, repoRoot } from './harness.js';

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

const T = 15000; // Bound for every wait on the page.

test('alarm board in Chromium: targeting, resume after a bridge restart, disconnect button', { timeout: 180000 }, async () => {
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  let bridge = await startBridge({ redisUrl: redis.url, demo: true, nodeId: 'browser-test' });
  cleanups.push(() => bridge.kill());

  const userDataDir = mkdtempSync(path.join(os.tmpdir(), 'notifybridge-chromium-'));
  cleanups.push(() => rmSync(userDataDir, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 860 },
    timeout: 60000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  cleanups.push(() => context.close());
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(T);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (msg) => msg.type() === 'error' && pageErrors.push(msg.text()));

  const alarm = (id) => page.locator(`#events li[data-id="${id}"]`);
  const waitShown = async (ids) => {
    for (const id of ids) await alarm(id).waitFor({ state: 'attached', timeout: T });
  };
  const shownIds = () => page.$$eval('#events li', (lis) => lis.map((li) => li.dataset.id));
  const live = () => page.locator('#state[data-state="live"]').waitFor({ timeout: T });

  let passed = false;
  try {
    const res = await page.goto(`${bridge.http}/demo?user=alice&groups=ops,noc-north&pause=3`);
    assert.equal(res.status(), 200, `GET /demo: ${res.status()} (is the demo handler mounted with --demo?)`);
    await live();

    // 1. Targeting.
    const mine = [
      await publish(redis.url, 'user:alice', 'alarm.fiber_break', { fiber: 'F-12', km: 3.2, route: 'Lyon – Grenoble', severity: 'critical' }),
      await publish(redis.url, 'group:ops', 'alarm.attenuation', { fiber: 'F-7', km: 11.4, loss_db: 4.7, threshold_db: 3 }),
      await publish(redis.url, '*', 'test.done', { fiber: 'F-3', test_id: 'T-4821', result: 'pass', length_km: 18.2 }),
    ];
    const notMine = [
      await publish(redis.url, 'user:bob', 'alarm.fiber_break', { fiber: 'F-99', km: 1 }),
      await publish(redis.url, 'group:noc-south', 'alarm.attenuation', { fiber: 'F-98', km: 2, loss_db: 9 }),
    ];
    // Through the page's own form and /demo/publish.
    await page.fill('#pub-to', 'group:noc-north');
    await page.selectOption('#pub-type', 'alarm.attenuation');
    await page.fill('#pub-fiber', 'F-21');
    await page.fill('#pub-km', '7.9');
    await page.click('#publish-form button[type=submit]');
    const formText = await page.locator('#pub-result').filter({ hasText: 'published' }).textContent({ timeout: T });
    const fromForm = formText.match(/published (\d+-\d+)/)[1];
    mine.push(fromForm);
    await waitShown(mine);
    for (const id of notMine) assert.equal(await alarm(id).count(), 0, `event ${id} for someone else is shown`);

    // 2. The bridge goes away (SIGTERM: drain, close 1001) while alarms keep coming.
    const exit = await bridge.stop();
    assert.equal(exit.code, 0);
    await page.locator('#state[data-state="reconnecting"], #state[data-state="connecting"]').waitFor({ timeout: T });
    const missed = [];
    for (let i = 0; i < 6; i++) {
      missed.push(await publish(redis.url, i % 2 ? 'group:ops' : 'user:alice', 'alarm.fiber_break', { fiber: `F-${40 + i}`, km: 2 + i, route: 'Annecy – Chambéry' }));
    }
    notMine.push(await publish(redis.url, 'user:bob', 'alarm.fiber_break', { fiber: 'F-97', km: 1 }));
    bridge = await startBridge({ redisUrl: redis.url, demo: true, nodeId: 'browser-test', listenPort: bridge.port });
    cleanups.push(() => bridge.kill());
    await waitShown(missed);
    await live();

    // 3. The page's "disconnect for N s" button: publish while it is away.
    await page.click('#pause');
    await page.locator('#state[data-state="paused"]').waitFor({ timeout: T });
    const whilePaused = [
      await publish(redis.url, 'user:alice', 'alarm.attenuation', { fiber: 'F-12', km: 3.3, loss_db: 5.1, threshold_db: 3 }),
      await publish(redis.url, 'group:noc-north', 'test.done', { fiber: 'F-12', test_id: 'T-4822', result: 'fail', length_km: 3.2 }),
    ];
    await waitShown(whilePaused);
    await live();
    for (const id of whilePaused) {
      assert.equal(await alarm(id).locator('.tag.resumed').count(), 1, `${id} is not marked as arrived on resume`);
    }

    // Exactly once each, nothing else.
    const ids = await shownIds();
    const expected = [...mine, ...missed, ...whilePaused];
    assert.equal(ids.length, new Set(ids).size, `duplicates on the board: ${ids}`);
    assert.deepEqual([...ids].sort(), [...expected].sort());
    for (const id of notMine) assert.ok(!ids.includes(id), `event ${id} for someone else is shown`);
    assert.equal(await page.textContent('#count-dupes'), '0');
    assert.deepEqual(pageErrors.filter((m) => !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m)), []);
    passed = true;
  } finally {
    mkdirSync(artifacts, { recursive: true });
    const shot = path.join(artifacts, 'demo.png');
    await page.screenshot({ path: shot, fullPage: true }).catch((err) => console.error('screenshot:', err));
    // Only a passing run may become the documentation's picture.
    if (passed && process.env.NOTIFYBRIDGE_UPDATE_SCREENSHOT === '1') {
      copyFileSync(shot, path.join(repoRoot, 'docs', 'demo.png'));
    }
  }
});
