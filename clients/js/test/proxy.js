// A tiny HTTP reverse proxy for the tests: it forwards plain requests to the
// bridge, streaming (no buffering), and can refuse what corporate proxies
// refuse: the WebSocket upgrade, or whole paths such as /events.
import http from 'node:http';
import { once } from 'node:events';

/**
 * Starts the proxy on a free port in front of target (`http://host:port`).
 * Its `upgrade` (default false) and `blocked` (paths answered 403) can be
 * changed while it runs.
 */
export async function startProxy(target, { upgrade = false, blocked = [] } = {}) {
  const to = new URL(target);
  const sockets = new Set();
  const p = {
    upgrade,
    blocked: new Set(blocked),
    refusedUpgrades: 0,
    requests: [],
  };
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    p.requests.push(path);
    if (p.blocked.has(path)) {
      res.writeHead(403, { 'Content-Type': 'text/plain' });
      res.end('blocked by the test proxy\n');
      return;
    }
    const up = http.request(
      { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: { ...req.headers, host: to.host } },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        res.flushHeaders();
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket, head) => {
    if (!p.upgrade) {
      // What nginx without the Upgrade headers amounts to for a browser: no 101.
      p.refusedUpgrades++;
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const up = http.request({ host: to.hostname, port: to.port, path: req.url, headers: { ...req.headers, host: to.host } });
    up.on('upgrade', (r, upSocket, upHead) => {
      const lines = [`HTTP/1.1 101 Switching Protocols`, ...Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`)];
      socket.write(lines.join('\r\n') + '\r\n\r\n');
      if (upHead.length) socket.write(upHead);
      if (head.length) upSocket.write(head);
      upSocket.pipe(socket).pipe(upSocket);
      upSocket.on('error', () => socket.destroy());
      socket.on('error', () => upSocket.destroy());
    });
    up.on('response', (r) => {
      socket.end(`HTTP/1.1 ${r.statusCode} ${r.statusMessage}\r\nConnection: close\r\n\r\n`);
    });
    up.on('error', () => socket.destroy());
    up.end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  p.port = port;
  p.http = `http://127.0.0.1:${port}`;
  p.ws = `ws://127.0.0.1:${port}/ws`;
  p.close = async () => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return p;
}
