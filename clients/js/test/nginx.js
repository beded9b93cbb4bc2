// Runs a real nginx (Debian's /usr/sbin/nginx; NGINX=<path> overrides) with a
// server block from deploy/nginx, rendered for the test: the listen port and
// the upstream address, plus exact replacements that must each occur once.
// Killed when the test file ends.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, repoRoot, waitFor } from './harness.js';

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

export function nginxBinary() {
  for (const p of [process.env.NGINX, '/usr/sbin/nginx', '/usr/bin/nginx']) if (p && existsSync(p)) return p;
  throw new Error('nginx not found: apt-get install nginx (scripts/install-deps.sh does)');
}

/**
 * @param {string} file  path under the repository, e.g. deploy/nginx/no-websocket.conf
 * @param {string} upstream  host:port of the bridge
 * @param {[string, string][]} replace
 */
export async function startNginx(file, upstream, replace = []) {
  let conf = readFileSync(path.join(repoRoot, file), 'utf8');
  const port = await freePort();
  for (const [from, to] of [['listen 8081;', `listen 127.0.0.1:${port};`], ['server 127.0.0.1:8080;', `server ${upstream};`], ...replace]) {
    const n = conf.split(from).length - 1;
    if (n !== 1) throw new Error(`${file}: "${from}" occurs ${n} times, want once`);
    conf = conf.replace(from, to);
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'notifybridge-nginx-'));
  const main = `worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${conf}
}
`;
  writeFileSync(path.join(dir, 'nginx.conf'), main);
  const child = spawn(
    nginxBinary(),
    ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-g', `daemon off; master_process off; pid ${dir}/nginx.pid; error_log stderr;`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.add(child);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  let exited = false;
  const done = new Promise((r) => child.once('exit', () => ((exited = true), children.delete(child), r())));
  await waitFor(
    'nginx listening',
    () =>
      new Promise((resolve, reject) => {
        if (exited) return reject(new Error(`nginx exited:\n${out}`));
        const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
      }),
    10000,
    50,
  );
  return {
    http: `http://127.0.0.1:${port}`,
    logs: () => out,
    async stop() {
      child.kill('SIGKILL');
      await done;
    },
  };
}
