// Bundles the example (React from devDependencies; progress-hub-client from this
// package's dist/, built by `npm run build`) into one ESM file, in memory.
import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '../..');

export async function buildExample() {
  const self = {
    name: 'progress-hub-client',
    setup(b) {
      b.onResolve({ filter: /^progress-hub-client(\/react)?$/ }, (a) => ({ path: path.join(pkg, 'dist', a.path.endsWith('/react') ? 'react.js' : 'index.js') }));
    },
  };
  const out = await build({
    entryPoints: [path.join(here, 'main.tsx')], bundle: true, format: 'esm', write: false, minify: true,
    jsx: 'automatic', define: { 'process.env.NODE_ENV': '"production"' }, plugins: [self], logLevel: 'warning',
    absWorkingDir: pkg, nodePaths: [path.join(pkg, 'node_modules')],
  });
  return out.outputFiles[0].text;
}
