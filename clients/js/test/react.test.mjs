// The React hook in real Chromium (Debian's, driven by playwright-core; no browser is
// downloaded): the example page, bundled with esbuild and served same-origin with a
// real hub through a small proxy, follows a run through a hub restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { buildExample } from '../examples/react/build.mjs';
import { PKG, startHub, startRedis, startWorker, startProxy, generate, stop } from './support.mjs';

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});
after(async () => { await browser?.close(); });

test('useProgress in Chromium: state, connection and the finished run, across a hub restart', async () => {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const worker = await startWorker(redis.url, ['--mock-delay', '100ms']);
  const html = readFileSync(path.join(PKG, 'examples/react/index.html'));
  const site = await startProxy(hub.url, { files: { '/': ['text/html', html], '/app.js': ['text/javascript', await buildExample()] } });
  const id = `react-${Date.now()}`;
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${site.url}/?project=${id}`);
  await page.waitForSelector('[data-testid=connection][data-status=open]');
  await generate(hub, id);
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=log] li')].some((l) => l.textContent.startsWith('[4/15] ')), null, { timeout: 30000 });
  await hub.stop('SIGTERM');
  await page.waitForSelector('[data-testid=connection][data-status=reconnecting]');
  await hub.start();
  await page.waitForSelector('[data-testid=youtube]', { timeout: 30000 });
  assert.equal(await page.textContent('[data-testid=percent]'), '100%');
  assert.match(await page.getAttribute('[data-testid=youtube]', 'href'), /^https:\/\/youtube\.com\/watch\?v=/);
  assert.deepEqual(await page.$$eval('[data-testid^=stage-]', (lis) => lis.map((li) => li.dataset.outcome)), ['done', 'done', 'done', 'done', 'done']);
  assert.equal(await page.getAttribute('[data-testid=connection]', 'data-status'), 'open', 'the hook stays open');
  const lines = await page.$$eval('[data-testid=log] li', (lis) => lis.map((li) => li.textContent));
  assert.equal(new Set(lines).size, lines.length, `no line twice: ${lines.join(' | ')}`);
  for (let n = 1; n <= 15; n++) assert.equal(lines.filter((l) => l.startsWith(`[${n}/15] `)).length, 1, `image ${n} once`);
  assert.equal(await page.$('[data-testid=not-recovered]'), null);
  if (process.env.SCREENSHOT_DIR) await page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR, 'react-example.png'), fullPage: true });
  // A project the hub refuses is an error the hook returns, not a loop.
  await page.goto(`${site.url}/?project=${encodeURIComponent('no spaces!')}`);
  assert.match(await (await page.waitForSelector('[data-testid=fatal]')).textContent(), /^INVALID_PROJECT_ID/);
  assert.deepEqual(errors, []);
  await page.close();
  await stop(worker);
  await hub.stop();
});

/** The many-components page (examples/react/many.tsx): three rows and a refused id,
 * and the list of a tag's running jobs, through a hub SIGKILL with the jobs running; the
 * first row dropped at the end. `noWebSocket`: the browser has none. Returns what was
 * seen: the WebSockets (paths, most open at once) and the SSE streams' queries (the
 * one made when the first row was dropped, `dropped`). */
async function manyComponents(prefix, { noWebSocket = false } = {}) {
  const redis = await startRedis();
  const hub = await startHub(['--redis-url', redis.url, '--no-worker']);
  const html = readFileSync(path.join(PKG, 'examples/react/index.html'));
  const site = await startProxy(hub.url, { files: { '/many.html': ['text/html', html], '/app.js': ['text/javascript', await buildExample('many.tsx')] } });
  const stamp = Date.now();
  const ids = [1, 2, 3].map((n) => `${prefix}-${n}-${stamp}`);
  const tag = `team:${prefix}-${stamp}`;
  const page = await browser.newPage();
  // A browser (or a proxy) without WebSocket: `auto` takes the SSE stream.
  if (noWebSocket) await page.addInitScript(() => { delete window.WebSocket; });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const seen = { ids, tag, sockets: [], most: 0, streams: [] };
  let live = 0;
  page.on('websocket', (ws) => {
    seen.sockets.push(new URL(ws.url()).pathname);
    seen.most = Math.max(seen.most, ++live);
    ws.on('close', () => live--);
  });
  const isStream = (r) => new URL(r.url()).pathname === '/api/v1/progress/events';
  page.on('request', (r) => isStream(r) && seen.streams.push(new URL(r.url()).searchParams));
  await page.goto(`${site.url}/many.html?projects=${ids.join(',')},bad%20id&tag=${encodeURIComponent(tag)}`);
  await page.waitForSelector('[data-testid=connection][data-status=open]');
  await page.waitForSelector('[data-testid="row-bad id"][data-error=INVALID_PROJECT_ID]');
  for (const id of ids) await generate(hub, id, { tags: [tag] });
  // No worker yet: the three runs stay QUEUED (active) until the list shows all three,
  // whenever the tag's poll (every second) reads them. A run of a few seconds could
  // otherwise end before that poll, and never be listed as active.
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=tagged] li').length === n, 3, { timeout: 30000 });
  // The runs go on while the hub is down (the worker publishes to Redis).
  const worker = await startWorker(redis.url, ['--mock-delay', '60ms', '--concurrency', '4']);
  await hub.stop('SIGKILL');
  await page.waitForSelector('[data-testid=connection]:not([data-status=open])');
  await hub.start();
  for (const id of ids) await page.waitForSelector(`[data-testid="row-${id}"][data-status=COMPLETED]`, { timeout: 60000 });
  assert.equal(await page.$$eval(`[data-testid="row-${ids[0]}"]`, (els) => els.length), 2, 'the same project in two components');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=tagged] li').length === 0, null, { timeout: 30000 });
  // Unmounting a row releases its subscription once no component needs it.
  const dropped = noWebSocket && page.waitForRequest(isStream);
  await page.click('[data-testid=drop-first]');
  await page.waitForFunction((id) => !document.querySelector(`[data-testid="row-${id}"]`), ids[0]);
  if (dropped) seen.dropped = new URL((await dropped).url()).searchParams;
  assert.deepEqual(errors, []);
  await page.close();
  await stop(worker);
  await hub.stop();
  return seen;
}

test('many components, one connection: useProgress({ shared: true }) rows and useProjects share one WebSocket, through a hub SIGKILL', async () => {
  const { sockets, most } = await manyComponents('shared');
  assert.ok(sockets.every((p) => p === '/api/v1/progress'), `only the multiplexed endpoint: ${sockets}`);
  assert.equal(most, 1, 'one connection at a time, for every component');
});

test('many components, no WebSocket in the browser: the shared connection is the SSE stream, reopened as rows unmount, through a hub SIGKILL', async () => {
  const { ids, tag, sockets, streams, dropped } = await manyComponents('sse-shared', { noWebSocket: true });
  assert.deepEqual(sockets, [], 'no WebSocket');
  // The rows mounting together made one request, not one per component; the tag's hook
  // subscribes on its next render: one reopen, naming everything.
  assert.deepEqual(streams[0].get('projects').split(',').sort(), [...ids, 'bad id'].sort());
  // (The refused id too, unless its refusal came first.)
  assert.deepEqual(streams[1].get('projects').split(',').filter((p) => p !== 'bad id').sort(), [...ids].sort());
  assert.equal(streams[1].get('tags'), tag);
  assert.deepEqual(dropped.get('projects').split(',').sort(), ids.slice(1).sort(), 'reopened without the row let go of (and the refused id)');
});
