// Issue 24: `npm pack` in a fresh clone made a package without dist/. Here dist/ is
// removed (as a clone has none), the package is packed (prepack builds it), installed
// from the tarball into an empty project, imported from Node, and typechecked there.
// Packing builds dist/ only: it never rewrites a file of the repository (review T5).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PKG, ROOT } from './support.mjs';

/** The generated files of the repository that `npm run build` writes. */
const GENERATED = [path.join(PKG, 'src/contract.ts'), path.join(ROOT, 'crates/hub/src/http/page/progress-hub-client.js')];
/** Each file's bytes and modification time: a rewrite with the same bytes shows too. */
const stamp = (files) => files.map((f) => [f, readFileSync(f, 'utf8'), statSync(f).mtimeMs]);

const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('npm pack from a tree without dist/ makes a package that installs, imports and typechecks', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'phc-pack-'));
  try {
    rmSync(path.join(PKG, 'dist'), { recursive: true, force: true });
    // The build (prepack) prints to the same stdout as npm's JSON, before it.
    const before = stamp(GENERATED);
    const stdout = npm(['pack', '--json', '--pack-destination', tmp], PKG);
    assert.deepEqual(stamp(GENERATED), before, 'packing rewrote none of the repository\'s files');
    const [packed] = JSON.parse(stdout.slice(stdout.search(/^\[/m)));
    const files = packed.files.map((f) => f.path);
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/react.js', 'dist/react.d.ts', 'dist/projects.js', 'dist/projects.d.ts', 'README.md', 'package.json']) {
      assert.ok(files.includes(f), `${f} in the package: ${files.join(', ')}`);
    }
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')), files.join(', '));

    const app = path.join(tmp, 'app');
    execFileSync('mkdir', [app]);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    // No runtime dependencies and an optional React peer: nothing is fetched.
    npm(['install', '--offline', '--no-audit', '--no-fund', path.join(tmp, packed.filename)], app);
    assert.deepEqual(readdirSync(path.join(app, 'node_modules')).filter((d) => !d.startsWith('.')), ['progress-hub-client']);
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', `
      import { watchProject, reduce, initialState, STAGES, ProgressHubError } from 'progress-hub-client';
      const s = reduce(initialState('p'), { event: 'stage_change', data: { current_stage: 'RENDERING', progress: 40 } });
      console.log(typeof watchProject, new ProgressHubError('X', 'm').code, STAGES.length, s.status, s.progress);
    `], { cwd: app, encoding: 'utf8' });
    assert.equal(out.trim(), 'function X 5 RENDERING 40');

    writeFileSync(path.join(app, 'main.ts'), `
import { watchProject, type ProgressState } from 'progress-hub-client';
const w = watchProject('http://127.0.0.1:8000', '42');
export const status: ProgressState['status'] = w.state.status;
`);
    execFileSync(path.join(PKG, 'node_modules/.bin/tsc'), [
      '--ignoreConfig', '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext',
      '--lib', 'es2022,dom', '--types', '', 'main.ts',
    ], { cwd: app, encoding: 'utf8', stdio: 'pipe' });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('the build for the package fails on a stale src/contract.ts instead of rewriting it, and writes only dist/', () => {
  // A copy of the repository's layout, whose contract file gained a stage.
  const tmp = mkdtempSync(path.join(tmpdir(), 'phc-dist-'));
  try {
    const pkg = path.join(tmp, 'clients/js');
    for (const dir of ['scripts', 'src']) cpSync(path.join(PKG, dir), path.join(pkg, dir), { recursive: true });
    for (const f of ['package.json', 'tsconfig.json']) cpSync(path.join(PKG, f), path.join(pkg, f));
    symlinkSync(path.join(PKG, 'node_modules'), path.join(pkg, 'node_modules'));
    mkdirSync(path.join(tmp, 'contract'));
    cpSync(path.join(ROOT, 'contract/error-catalog.json'), path.join(tmp, 'contract/error-catalog.json'));
    const wire = JSON.parse(readFileSync(path.join(ROOT, 'contract/wire-values.json'), 'utf8'));
    wire.stages.push('NEW_STAGE');
    writeFileSync(path.join(tmp, 'contract/wire-values.json'), JSON.stringify(wire));
    const contract = readFileSync(path.join(pkg, 'src/contract.ts'), 'utf8');

    const r = spawnSync(process.execPath, ['scripts/build.mjs', '--dist'], { cwd: pkg, encoding: 'utf8' });
    assert.notEqual(r.status, 0, r.stdout);
    assert.match(r.stderr, /src\/contract\.ts is stale/);
    assert.equal(readFileSync(path.join(pkg, 'src/contract.ts'), 'utf8'), contract, 'not rewritten');
    // Fresh again, it builds dist/ and nothing outside the package.
    cpSync(path.join(ROOT, 'contract/wire-values.json'), path.join(tmp, 'contract/wire-values.json'));
    execFileSync(process.execPath, ['scripts/build.mjs', '--dist'], { cwd: pkg, encoding: 'utf8', stdio: 'pipe' });
    assert.ok(readdirSync(path.join(pkg, 'dist')).includes('index.js'));
    assert.deepEqual(readdirSync(tmp).sort(), ['clients', 'contract'], 'no crates/hub/src/http/page copy written');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
