// A small HTTP proxy for tests and the React example: forwards requests and WebSocket
// upgrades to a hub, can refuse upgrades (as some corporate proxies do), and can serve a
// few files itself (so a page is same-origin with the hub it watches).
import http from 'node:http';
import { connect } from 'node:net';

/** An HTTP proxy to `target`. `blockUpgrades`: refuses WebSocket upgrades with 403, as
 * some corporate proxies do. `files`: serves these paths itself ({'/': [type, body]}). */
export async function startProxy(target, { blockUpgrades = false, files = {}, port = 0 } = {}) {
  const t = new URL(target);
  const server = http.createServer(async (req, res) => {
    const file = files[req.url.split('?')[0]];
    if (file) {
      res.writeHead(200, { 'content-type': file[0] });
      return res.end(typeof file[1] === 'function' ? await file[1]() : file[1]);
    }
    const up = http.request({ host: t.hostname, port: t.port, path: req.url, method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
      // The hub gone in the middle of a response (killed: an SSE stream): so is the
      // response, as behind a real proxy (pipe() would leave it open).
      ur.on('aborted', () => res.destroy());
    });
    up.on('error', () => {
      if (res.headersSent) return res.destroy();
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  server.on('upgrade', (req, socket, head) => {
    if (blockUpgrades) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const up = connect(Number(t.port), t.hostname, () => {
      up.write(`${req.method} ${req.url} HTTP/1.1\r\n${Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`);
      up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  const bound = await new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server.address().port)));
  return { url: `http://127.0.0.1:${bound}`, server };
}

