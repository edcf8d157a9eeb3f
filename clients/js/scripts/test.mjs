// `npm test`: the build check (typecheck, size budget, embedded copy fresh; it also
// rebuilds dist/, which the tests import), then the tests, one file at a time. On Node 20
// the global WebSocket needs --experimental-websocket; it is passed only where needed, so
// the tests cover the global WebSocket as well as the `ws` package on every Node ≥ 20.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const run = (args) => {
  const r = spawnSync(process.execPath, args, { cwd: pkg, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
run(['scripts/build.mjs', '--check']);
const flags = globalThis.WebSocket ? [] : ['--experimental-websocket'];
const files = process.argv.length > 2 ? process.argv.slice(2) : readdirSync(path.join(pkg, 'test')).filter((f) => f.endsWith('.test.mjs')).map((f) => `test/${f}`);
run([...flags, '--test', '--test-concurrency=1', ...files]);
