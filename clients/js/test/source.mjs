// Imports a module of src/ that the package does not export (the state machine), bundled
// by the package's own esbuild into a temporary file, so its unit tests need no hub and
// the package's public API stays what it is.
import { build } from 'esbuild';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { PKG } from './support.mjs';

export async function importSource(file) {
  const out = await build({ entryPoints: [path.join(PKG, file)], bundle: true, format: 'esm', platform: 'neutral', write: false, logLevel: 'warning' });
  const dir = mkdtempSync(path.join(tmpdir(), 'phc-'));
  const js = path.join(dir, 'module.mjs');
  writeFileSync(js, out.outputFiles[0].contents);
  try {
    return await import(pathToFileURL(js).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
