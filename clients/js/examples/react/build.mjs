// Bundles the example (React from devDependencies; progress-hub-client from this
// package's dist/, built by `npm run build`) into one ESM file, in memory.
import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '../..');

/** `entry`: main.tsx (one project), or many.tsx (many components, one connection). */
export async function buildExample(entry = 'main.tsx') {
  const self = {
    name: 'progress-hub-client',
    setup(b) {
      b.onResolve({ filter: /^progress-hub-client(\/react|\/projects)?$/ }, (a) => ({ path: path.join(pkg, 'dist', `${a.path.split('/')[1] ?? 'index'}.js`) }));
    },
  };
  const out = await build({
    entryPoints: [path.join(here, entry)], bundle: true, format: 'esm', write: false, minify: true,
    jsx: 'automatic', define: { 'process.env.NODE_ENV': '"production"' }, plugins: [self], logLevel: 'warning',
    absWorkingDir: pkg, nodePaths: [path.join(pkg, 'node_modules')],
  });
  return out.outputFiles[0].text;
}
