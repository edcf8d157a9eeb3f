// Defect 9: frames are read through the discriminated `Frame` union, never `any`: an
// `any` would let a renamed field through tsc, and the schema contract test with it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
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
