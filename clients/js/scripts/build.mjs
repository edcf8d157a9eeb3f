// Builds the package and the copy embedded in the hub's page, deterministically (same
// sources + same locked esbuild → same bytes).
//   dist/index.js, dist/react.js   ESM for npm (react.js imports ./index.js; react external)
//   dist/*.d.ts                    types, from tsc
//   src/http/page/progress-hub-client.js   the minified core the hub serves at
//                                  /assets/progress-hub-client.js
//   src/contract.ts                the closed types, from ../../contract (contract.mjs)
// `--check`: also typechecks (strict; the package, the README's examples and the React
// example), prints the core's min+gzip size and fails over the budget, and fails if the
// embedded copy or src/contract.ts is stale instead of rewriting it.
// `--dist` (npm's prepack): builds dist/ only, and fails if src/contract.ts is stale:
// packing must not rewrite files of the repository (least of all outside the package).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONTRACT_TS, renderContract } from './contract.mjs';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const EMBEDDED = path.resolve(pkg, '../../src/http/page/progress-hub-client.js');
const BUDGET = 6 * 1024;
const check = process.argv.includes('--check');
const distOnly = process.argv.includes('--dist');
const tsc = path.join(pkg, 'node_modules/.bin/tsc');

// The closed types first: everything else compiles against them.
const contract = renderContract();
let stale = false;
if (!check && !distOnly) writeFileSync(CONTRACT_TS, contract);
else if (readFileSync(CONTRACT_TS, 'utf8') !== contract) {
  console.error('FAIL: clients/js/src/contract.ts is stale against contract/*.json: run `npm run build` in clients/js and commit it');
  stale = true;
  // Packing a stale contract would ship types that disagree with the hub.
  if (distOnly) process.exit(1);
}
if (check) execFileSync(tsc, ['--noEmit', '-p', 'tsconfig.json'], { cwd: pkg, stdio: 'inherit' });

rmSync(path.join(pkg, 'dist'), { recursive: true, force: true });
execFileSync(tsc, ['-p', 'tsconfig.json', '--emitDeclarationOnly'], { cwd: pkg, stdio: 'inherit' });
// The React example, against the package's published types (dist/*.d.ts, via exports).
if (check) execFileSync(tsc, ['-p', 'tsconfig.examples.json'], { cwd: pkg, stdio: 'inherit' });

const common = { bundle: true, format: 'esm', target: 'es2022', platform: 'neutral', logLevel: 'warning', absWorkingDir: pkg };
const coreExternal = {
  name: 'core-external',
  setup(b) { b.onResolve({ filter: /^\.\/index\.js$/ }, () => ({ path: './index.js', external: true })); },
};
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.js' });
await build({ ...common, entryPoints: ['src/react.ts'], outfile: 'dist/react.js', external: ['react'], plugins: [coreExternal] });
if (distOnly) process.exit(0);

const min = await build({ ...common, entryPoints: ['src/index.ts'], minify: true, write: false, legalComments: 'none' });
const banner = '// progress-hub-client, built from clients/js by `npm run build` (do not edit; a test checks it is fresh).\n';
const embedded = Buffer.concat([Buffer.from(banner), Buffer.from(min.outputFiles[0].contents)]);
const gz = gzipSync(min.outputFiles[0].contents, { level: 9 }).length;
console.log(`core bundle: ${min.outputFiles[0].contents.length} B minified, ${gz} B min+gzip (budget ${BUDGET} B)`);

if (check) {
  let failed = stale;
  if (gz > BUDGET) { console.error(`FAIL: the core is ${gz} B min+gzip, over the ${BUDGET} B budget`); failed = true; }
  let committed = null;
  try { committed = readFileSync(EMBEDDED); } catch { /* missing */ }
  if (!committed || !committed.equals(embedded)) {
    console.error(`FAIL: ${path.relative(process.cwd(), EMBEDDED)} is stale against clients/js/src: run \`npm run build\` in clients/js and commit it`);
    failed = true;
  } else console.log('embedded page bundle is fresh');
  if (failed) process.exit(1);
} else {
  writeFileSync(EMBEDDED, embedded);
  console.log(`wrote ${path.relative(process.cwd(), EMBEDDED)}`);
}
