// Issue 24: `npm pack` in a fresh clone made a package without dist/. Here dist/ is
// removed (as a clone has none), the package is packed (prepack builds it), installed
// from the tarball into an empty project, imported from Node, and typechecked there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PKG } from './support.mjs';

const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('npm pack from a tree without dist/ makes a package that installs, imports and typechecks', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'phc-pack-'));
  try {
    rmSync(path.join(PKG, 'dist'), { recursive: true, force: true });
    // The build (prepack) prints to the same stdout as npm's JSON, before it.
    const stdout = npm(['pack', '--json', '--pack-destination', tmp], PKG);
    const [packed] = JSON.parse(stdout.slice(stdout.search(/^\[/m)));
    const files = packed.files.map((f) => f.path);
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/react.js', 'dist/react.d.ts', 'README.md', 'package.json']) {
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
