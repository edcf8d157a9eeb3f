// The client's frame types against the live hub's /api/v1/schema/events.json: types are
// derived from the schema and tsc checks, for every event, that whatever the hub may
// send is accepted by the client's type, that the client reads no field the hub does
// not send, and that no event is missing. A contract change the client does not follow
// fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { PKG, startHub } from './support.mjs';

/** JSON Schema (the subset schemars writes) → a TypeScript type expression. */
function toTs(schema, defs) {
  if (schema === true || schema == null) return 'unknown';
  if (schema.$ref) return toTs(defs[schema.$ref.split('/').pop()], defs);
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  for (const k of ['oneOf', 'anyOf']) if (schema[k]) return schema[k].map((s) => `(${toTs(s, defs)})`).join(' | ');
  if (schema.allOf) return schema.allOf.map((s) => `(${toTs(s, defs)})`).join(' & ');
  const types = [].concat(schema.type ?? (schema.properties ? 'object' : []));
  if (!types.length) return 'unknown';
  return types.map((t) => {
    switch (t) {
      case 'null': return 'null';
      case 'string': return 'string';
      case 'integer': case 'number': return 'number';
      case 'boolean': return 'boolean';
      case 'array': return `Array<${toTs(schema.items, defs)}>`;
      case 'object': {
        if (!schema.properties) return 'Record<string, unknown>';
        const req = new Set(schema.required ?? []);
        return `{ ${Object.entries(schema.properties).map(([k, v]) => `${JSON.stringify(k)}${req.has(k) ? '' : '?'}: ${toTs(v, defs)};`).join(' ')} }`;
      }
      default: return 'unknown';
    }
  }).join(' | ');
}

test('the client frame types follow the hub schema (checked by tsc)', async () => {
  const hub = await startHub([]);
  const schema = await (await fetch(`${hub.url}/api/v1/schema/events.json`)).json();
  await hub.stop();
  const defs = { ...(schema.definitions ?? {}), ...(schema.$defs ?? {}) };
  const variants = schema.oneOf ?? schema.anyOf;
  assert.ok(Array.isArray(variants) && variants.length >= 9, 'one variant per event');
  const lines = [
    `import type { Frame } from './src/frames.js';`,
    `type DataOf<E> = Extract<Frame, { event: E }>['data'];`,
    `type Never<T> = [T] extends [never] ? true : false;`,
  ];
  const events = [];
  for (const v of variants) {
    const ev = v.properties.event;
    const name = ev.const ?? ev.enum?.[0];
    assert.equal(typeof name, 'string', JSON.stringify(v));
    events.push(name);
    const data = v.properties.data ? toTs(v.properties.data, defs) : 'Record<string, never>';
    lines.push(
      `type S_${name} = ${data};`,
      `// hub → client: every value the hub may send fits the client's type`,
      `export const hub_${name}: DataOf<'${name}'> = null as unknown as S_${name};`,
      `// the client reads no field the hub does not send`,
      `export const fields_${name}: Never<Exclude<keyof DataOf<'${name}'>, keyof S_${name}>> = true;`,
    );
  }
  const names = events.map((e) => JSON.stringify(e)).join(' | ');
  lines.push(
    `export const every_event_known: Never<Exclude<${names}, Frame['event']>> = true;`,
    `export const no_event_invented: Never<Exclude<Frame['event'], ${names}>> = true;`,
  );
  const file = path.join(PKG, `.contract-${process.pid}.ts`);
  writeFileSync(file, lines.join('\n') + '\n');
  try {
    execFileSync(path.join(PKG, 'node_modules/.bin/tsc'), [
      '--ignoreConfig', '--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022', '--moduleResolution', 'bundler',
      '--skipLibCheck', '--types', '', file,
    ], { cwd: PKG, encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    assert.fail(`the client's frame types do not follow the hub's schema:\n${err.stdout}${err.stderr}\n--- derived from the schema:\n${lines.join('\n')}`);
  } finally {
    rmSync(file, { force: true });
  }
});
