// The SSE transport: `GET .../progress` with `Accept: text/event-stream` through fetch
// (not EventSource, so a refusal's HTTP status is visible and the reconnect policy stays
// the watcher's), resuming with `Last-Event-ID`. It cannot send: the hub expects no pong
// or refresh on SSE.

import type { Link, LinkEvents } from './link.js';

export function openSse(url: string, lastEventId: string | null | undefined, on: LinkEvents): Link {
  const ac = new AbortController();
  let open = true;
  const headers: Record<string, string> = { accept: 'text/event-stream' };
  if (lastEventId) headers['last-event-id'] = lastEventId;
  fetch(url, { headers, signal: ac.signal, cache: 'no-store' })
    .then(async (res) => {
      if (!res.ok || !res.body) return on.refused(res.status, await res.json().catch(() => null));
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let data: string[] = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !open) break;
        buf += value;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (data.length) on.text(data.join('\n'));
            data = [];
          } else if (line.startsWith('data:')) data.push(line.slice(line[5] === ' ' ? 6 : 5));
        }
      }
      on.ended();
    })
    .catch(() => on.ended());
  return {
    send() {},
    close: () => {
      open = false;
      ac.abort();
    },
  };
}
