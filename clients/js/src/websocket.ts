// The WebSocket transport: frames as text messages, `pong` and `refresh` sent back, and
// the close code as the link's end.

import type { Link, LinkEvents } from './link.js';

export function openWebSocket(WS: typeof WebSocket, url: string, on: LinkEvents): Link {
  let ws: WebSocket;
  try {
    ws = new WS(url);
  } catch {
    // A URL or runtime the WebSocket refuses outright: like a failed dial.
    queueMicrotask(() => on.ended());
    return { send() {}, close() {} };
  }
  ws.onmessage = (m) => typeof m.data === 'string' && on.text(m.data);
  ws.onclose = (e) => on.ended(e.code);
  // Some WebSockets (Node 20's undici) fire only `error` on a failed handshake, never
  // `close`: that is a close without a close frame (1006). The watcher takes one end.
  ws.onerror = () => { if (ws.readyState !== 1) on.ended(1006); };
  return {
    send: (f) => ws.readyState === 1 && ws.send(JSON.stringify(f)),
    close: () => {
      ws.onclose = ws.onmessage = ws.onerror = null;
      try { ws.close(); } catch { /* already closing */ }
    },
  };
}
