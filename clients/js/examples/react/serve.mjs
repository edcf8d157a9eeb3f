// Try the example by hand: `node examples/react/serve.mjs http://127.0.0.1:8000 [port]`
// (after `npm run build`) serves it on http://127.0.0.1:<port>/?project=<id> and
// forwards everything else, WebSocket included, to the hub, so the page is same-origin
// with it.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildExample } from './build.mjs';
import { startProxy } from '../../test/proxy.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const [hub = 'http://127.0.0.1:8000', port = '5173'] = process.argv.slice(2);
const bundle = await buildExample();
const { url } = await startProxy(hub, {
  port: Number(port),
  files: { '/': ['text/html', readFileSync(path.join(here, 'index.html'))], '/app.js': ['text/javascript', bundle] },
});
console.log(`React example on ${url}/?project=<id>, forwarding to ${hub}`);
