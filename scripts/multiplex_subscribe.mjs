// For scripts/multiplex_memory.sh: opens `conns` multiplexed connections
// (GET /api/v1/progress) and subscribes each to `per` projects (p<offset>.. onwards),
// waits until every subscription is answered, prints the hub's RSS (from /proc/<pid>)
// and holds the connections until its stdin ends.
// Usage: node --experimental-websocket multiplex_subscribe.mjs <url> <hub pid> <conns> <per> <offset>
import { readFileSync } from 'node:fs';
const [url, pid, conns, per, offset] = process.argv.slice(2);
const rss = () => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
const open = [];
let answered = 0;
const want = Number(conns) * Number(per);
await Promise.all(Array.from({ length: Number(conns) }, (_, c) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  open.push(ws);
  ws.onmessage = (m) => {
    const f = JSON.parse(m.data);
    if (f.event === 'connected') {
      for (let i = 0; i < Number(per); i++) {
        ws.send(JSON.stringify({ event: 'subscribe', data: { project_id: `p${Number(offset) + c * Number(per) + i}` } }));
      }
    } else if (f.event === 'subscribed') {
      if (++answered === want) console.log(`subscribed ${want}`);
      resolve();
    } else if (f.event === 'subscription_error') {
      console.error('refused', JSON.stringify(f));
      process.exit(1);
    }
  };
})));
const wait = () => new Promise((r) => { const t = setInterval(() => { if (answered >= want) { clearInterval(t); r(); } }, 50); });
await wait();
await new Promise((r) => setTimeout(r, 1000));
console.log(`rss_kib ${rss()}`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
