// Defect 9: frames are read through the discriminated `Frame` union, never `any`: an
// `any` would let a renamed field through tsc, and the schema contract test with it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PKG } from './support.mjs';

test('no `any` in the client sources (frames narrowed on `event`)', () => {
  const src = path.join(PKG, 'src');
  const hits = [];
  for (const f of readdirSync(src).filter((f) => f.endsWith('.ts'))) {
    readFileSync(path.join(src, f), 'utf8').split('\n').forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '').replace(/^\s*\*.*$/, '');
      if (/(?:\bas\s+any\b|:\s*any\b|<any>|\bany\[\])/.test(code)) hits.push(`${f}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(hits, []);
});

/** Compiles TypeScript files (name → text) against the package's published types
 * (dist/*.d.ts, through its `exports`, as a user's project would); resolves with tsc's
 * output, or rejects with it. */
function compile(files) {
  const dir = path.join(PKG, `.typecheck-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  try {
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
    writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      extends: '../tsconfig.json',
      compilerOptions: { noEmit: true, rootDir: '.', types: [], module: 'ES2022', target: 'ES2022', noUnusedLocals: false },
      include: Object.keys(files),
    }));
    return execFileSync(path.join(PKG, 'node_modules/.bin/tsc'), ['-p', dir], { cwd: PKG, encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    throw new Error(`tsc:\n${err.stdout}${err.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the README's five examples (React, watchProject, SSE only, auth, watchProjects) compile against the package", () => {
  const readme = readFileSync(path.join(PKG, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```(tsx?)\n([\s\S]*?)```/g)];
  assert.equal(blocks.length, 5, 'five examples');
  const files = Object.fromEntries(blocks.map(([, lang, code], i) => [`example${i}.${lang}`, `${code}\nexport {};\n`]));
  assert.match(Object.values(files).join('\n'), /useProgress[\s\S]*transport: 'sse'[\s\S]*getToken/);
  compile(files);
});

// Issue 24: the closed sets are closed types; a value of a newer hub is typed apart.
test('closed types: a typo in a status, stage, level or error code fails to compile; unknown values need an explicit read', () => {
  const ok = `
import { watchProject, STAGES, type ProgressState, type Status, type ErrorCode, type UnknownValue, type Frame, type Stage, type LogLevel, type FinalStatus } from 'progress-hub-client';
declare const s: ProgressState;
const w = watchProject('http://h', 'p');
export const finished: boolean = s.status === 'COMPLETED' || s.status === 'FAILED' || s.status === 'QUEUED';
export const stage: boolean = s.status === 'RENDERING' && STAGES.includes(s.status);
export const code: boolean = s.error?.code === 'GEMINI_QUOTA_EXCEEDED';
export const level: boolean = s.logs[0]?.level === 'WARNING';
export const broker: boolean = s.broker === 'down';
// The escape hatch: a value this version does not know is still the hub's string.
export const cancelled: boolean = String(s.status) === 'CANCELLED';
export const asText: string | null = s.status;
export const fromNewerHub = (v: Status | UnknownValue): string => v;
export const typed: ErrorCode = 'RENDER_ERROR';
w.done.then((d) => d.status === 'COMPLETED');
// Review TA1: fields that were closed types before stay as they were (no UnknownValue),
// so code that assigns them to their type still compiles.
declare const f: Frame;
if (f.event === 'stage_change') {
  const current: Stage = f.data.current_stage;
  const previous: Stage | 'INITIALIZED' | null | undefined = f.data.previous_stage;
  void [current, previous];
}
if (f.event === 'progress_update') { const p: Stage | 'QUEUED' = f.data.status; void p; }
if (f.event === 'log') { const l: LogLevel = f.data.level; void l; }
if (f.event === 'error') { const e: Stage = f.data.stage; void e; }
if (f.event === 'complete') { const c: FinalStatus = f.data.status; void c; }
export const entry: LogLevel | undefined = s.logs[0]?.level;
export const failedIn: Stage | undefined = s.error?.stage;
`;
  const typos = [
    `s.status === 'COMPLETE'`,
    // Lower case: wire values are SCREAMING_SNAKE_CASE, so this can never become valid
    // (CANCELLED will, with issue 25).
    `s.status === 'completed'`,
    `s.error?.code === 'GEMINI_QUOTA_EXCEDED'`,
    `s.error?.stage === 'RENDER'`,
    `s.logs[0]?.level === 'WARN'`,
    `s.broker === 'unavailable'`,
    `((): ErrorCode => 'NOT_A_CODE')()`,
    `((): Status => 'COMPLETE')()`,
    `((v: UnknownValue) => v === 'X')`,
  ];
  const bad = `
import type { ProgressState, Status, ErrorCode, UnknownValue } from 'progress-hub-client';
declare const s: ProgressState;
${typos.map((t) => `// @ts-expect-error\nexport const t${typos.indexOf(t)} = ${t};`).join('\n')}
`;
  compile({ 'ok.ts': ok, 'typos.ts': bad });
});
