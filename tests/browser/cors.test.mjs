// A page served from ANOTHER origin than the hub (the app's own site): with
// `--cors-origins` listing it, the TypeScript client's SSE transport and its refusal
// probe work there, with a token the backend minted in Python (progress_hub.tokens); from an origin not listed, the
// browser blocks them, as without the option.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import path from "node:path";
import { freePort, root, startHub, launchChromium, stopAll } from "./support.mjs";

const SECRET = "cors-test-secret";
let browser;
const servers = [];

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  servers.forEach((s) => s.close());
  await stopAll();
});

/** An app's site on a port of its own: one empty page, the test drives it. */
async function appSite() {
  const port = await freePort();
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>app</title><p>app</p>");
  });
  servers.push(server);
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return `http://127.0.0.1:${port}`;
}

const PYTHON = process.env.PROGRESS_HUB_PYTHON || path.join(root, "clients/python/.venv/bin/python");

/** A token as the app's Python backend mints it: `progress_hub.tokens.mint` (the SDK's
 * venv that scripts/setup.sh makes). */
function mint(project, scope = "watch") {
  const code = "import sys; from progress_hub import tokens; print(tokens.mint(sys.argv[1], projects=[sys.argv[2]], scope=sys.argv[3], ttl=600))";
  return execFileSync(PYTHON, ["-c", code, SECRET, project, scope]).toString().trim();
}

async function publish(hub, project, token, body) {
  const r = await fetch(`${hub.url}/api/v1/projects/${project}/events`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  assert.ok(r.ok, `publish: ${r.status} ${await r.text()}`);
}

/** In the app's page: watch `project` on the hub with the embedded client. */
function watchInPage(page, hubUrl, project, options) {
  return page.evaluate(async ({ hubUrl, project, options }) => {
    const { watchProject } = await import(`${hubUrl}/assets/progress-hub-client.js`);
    const w = watchProject(hubUrl, project, options);
    globalThis.watches = { ...(globalThis.watches || {}), [project]: w };
    globalThis.seen = { ...(globalThis.seen || {}), [project]: [] };
    w.done.then(
      (d) => { globalThis.seen[project].push({ done: d }); },
      (e) => { globalThis.seen[project].push({ error: e.code, status: e.status }); },
    );
  }, { hubUrl, project, options });
}

function outcome(page, project) {
  return page.waitForFunction((p) => globalThis.seen?.[p]?.[0], project, { timeout: 20000 }).then((h) => h.jsonValue());
}

test("from a listed origin: SSE with a minted token follows a run to its end, and a refused WebSocket is reported, not retried", async () => {
  const app = await appSite();
  const hub = await startHub(["--listen", "127.0.0.1:0", "--no-worker", "--auth-secret", SECRET, "--cors-origins", app]);
  const page = await browser.newPage();
  await page.goto(app);
  const token = mint("p-sse", "publish");
  await watchInPage(page, hub.url, "p-sse", { transport: "sse", token });
  await page.waitForFunction(() => globalThis.watches["p-sse"].connection.status === "open", null, { timeout: 20000 });
  await publish(hub, "p-sse", token, { event: "progress_update", data: { status: "RENDERING", progress: 60, current_stage: "rendering", estimated_remaining: 30 } });
  await publish(hub, "p-sse", token, { event: "complete", data: { status: "COMPLETED", youtube_url: "https://youtu.be/x" } });
  assert.deepEqual(await outcome(page, "p-sse"), { done: { status: "COMPLETED", youtubeUrl: "https://youtu.be/x" } });
  assert.equal(await page.evaluate(() => globalThis.watches["p-sse"].connection.transport), "sse");

  // A token for another project: the WebSocket is refused, the probe (a cross-origin
  // fetch) reads why, and the client stops with the hub's code instead of retrying.
  await watchInPage(page, hub.url, "p-ws", { transport: "websocket", token: mint("someone-else") });
  const refused = await outcome(page, "p-ws");
  assert.equal(refused.status, 403, JSON.stringify(refused));
  assert.equal(refused.error, "FORBIDDEN");
});

test("from an origin not listed, the browser blocks the hub's answers", async () => {
  const listed = await appSite();
  const other = await appSite();
  const hub = await startHub(["--listen", "127.0.0.1:0", "--no-worker", "--cors-origins", listed]);
  const page = await browser.newPage();
  await page.goto(other);
  const blocked = await page.evaluate(async (u) => {
    try { await fetch(`${u}/api/v1/projects/p1`); return "answered"; } catch (e) { return e.name; }
  }, hub.url);
  assert.equal(blocked, "TypeError");
});
