// Runs the real notifybridge binary (and, when a test needs to restart the
// bridge without losing the stream, a real redis-server) for the Node tests.
// Every process started here is killed when the test file ends, whether it
// passed, failed or was interrupted.
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const children = new Set();
function killAll() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
  children.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + os.constants.signals[sig]);
  });
}

/** Polls cond() until it returns a truthy value; fails after timeout ms with what. */
export async function waitFor(what, cond, timeout = 10000, every = 25) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A TCP port free right now on 127.0.0.1. */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

let built;
/**
 * The notifybridge binary: $NOTIFYBRIDGE_BIN when set (scripts/test-clients.sh
 * builds once for all suites), else built here from the repository. A missing
 * binary is built, never a reason to skip.
 */
export function binary() {
  built ??= (async () => {
    const given = process.env.NOTIFYBRIDGE_BIN;
    if (given) {
      if (!existsSync(given)) throw new Error(`NOTIFYBRIDGE_BIN=${given} does not exist`);
      return given;
    }
    const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'notifybridge-js-')), 'notifybridge');
    await execFileP('go', ['build', '-o', out, '.'], { cwd: repoRoot, timeout: 300000, maxBuffer: 16 << 20 });
    return out;
  })();
  return built;
}

function track(child, name) {
  children.add(child);
  const logs = [];
  const collect = (chunk) => {
    logs.push(chunk.toString());
    if (logs.length > 2000) logs.splice(0, 1000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  child.once('error', (err) => logs.push(`${name}: ${err.message}\n`));
  return { logs: () => logs.join(''), exited };
}

/** Starts redis-server on a free port with no persistence. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const t = track(child, 'redis-server');
  let dead = false;
  t.exited.then(() => (dead = true));
  await waitFor(
    'redis-server to answer PING',
    async () => {
      if (dead) throw new Error(`redis-server exited:\n${t.logs()}`);
      return (await redisCommand(port, 'PING')) === '+PONG';
    },
    10000,
  );
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    command: (...args) => redisCommand(port, ...args),
    async stop() {
      child.kill('SIGKILL');
      await t.exited;
    },
  };
}

/**
 * Sends one command in RESP and returns the first reply line: enough for
 * PING and XTRIM without a Redis client library.
 */
export function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    sock.setTimeout(2000, () => sock.destroy(new Error('redis command timed out')));
    sock.on('error', reject);
    sock.on('connect', () => {
      sock.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join(''));
    });
    sock.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\r\n');
      if (nl >= 0) {
        sock.end();
        resolve(buf.slice(0, nl));
      }
    });
  });
}

/**
 * Starts `notifybridge serve` on free ports and waits for /readyz. Options:
 * redisUrl (default: embedded), auth (default none), demo, listenPort (to
 * restart on the same address), nodeId, args (more flags).
 */
export async function startBridge(opts = {}) {
  const bin = await binary();
  const port = opts.listenPort ?? (await freePort());
  const adminPort = await freePort();
  const args = [
    'serve',
    '--listen', `127.0.0.1:${port}`,
    '--admin-listen', `127.0.0.1:${adminPort}`,
    '--node-id', opts.nodeId ?? `js-${port}`,
    '--auth', opts.auth ?? 'none',
  ];
  if (opts.redisUrl) args.push('--redis-url', opts.redisUrl);
  if (opts.demo) args.push('--demo');
  args.push(...(opts.args ?? []));
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const t = track(child, 'notifybridge');
  let exit;
  t.exited.then((e) => (exit = e));
  const admin = `http://127.0.0.1:${adminPort}`;
  try {
    await waitFor(
      'notifybridge /readyz',
      async () => {
        if (exit) throw new Error(`notifybridge exited (${JSON.stringify(exit)})`);
        const res = await fetch(`${admin}/readyz`, { signal: AbortSignal.timeout(1000) });
        return res.status === 200;
      },
      30000,
      50,
    );
  } catch (err) {
    child.kill('SIGKILL');
    err.message += `\nnotifybridge ${args.join(' ')}\n${t.logs().slice(-4000)}`;
    throw err;
  }
  const redisUrl = opts.redisUrl ?? t.logs().match(/redis:\/\/127\.0\.0\.1:\d+/)?.[0];
  if (!redisUrl) throw new Error(`no embedded Redis address in the log:\n${t.logs()}`);
  return {
    port,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    admin,
    redisUrl,
    logs: t.logs,
    /** SIGTERM (drain: clients get 1001) and wait for the exit, bounded. */
    async stop(timeout = 15000) {
      if (exit) return exit;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
      const e = await t.exited;
      clearTimeout(timer);
      return e;
    },
    kill() {
      child.kill('SIGKILL');
      return t.exited;
    },
  };
}

/** Appends one event with `notifybridge publish`; returns its id. */
export async function publish(redisUrl, to, type, data) {
  const bin = await binary();
  const dataText = typeof data === 'string' ? data : JSON.stringify(data);
  const args = ['publish', '--redis-url', redisUrl, '--to', to, '--data', dataText];
  if (type) args.push('--type', type);
  const { stdout } = await execFileP(bin, args, { timeout: 15000 });
  return stdout.trim();
}
