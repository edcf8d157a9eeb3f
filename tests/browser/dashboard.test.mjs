// The dashboard (/dashboard?tag=) in headless Chromium against a real hub, worker and
// redis-server: a tag's running jobs with live bars on ONE WebSocket (the multiplexed
// endpoint, never one per project), jobs starting and finishing while it is open, a hub
// SIGKILL and restart in the middle (it recovers on its own), and a click that opens the
// project's own view. Without a tag (/dashboard): every running job, tagged or not (the
// reserved tag `*`), when the token allows it; a token that does not is asked for a tag.
// And without WebSocket: the multiplexed SSE stream.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { BIN, freePort, start, startHub, startRedis, stop, launchChromium, stopAll } from "./support.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); await stopAll(); });

async function generate(hub, id, tags) {
  const res = await fetch(`${hub.url}/api/v1/projects/${id}/generate`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tags }),
  });
  assert.equal(res.status, 202, await res.text());
}
async function publish(hub, id, event, data, tags) {
  const res = await fetch(`${hub.url}/api/v1/projects/${id}/events`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ event, data, tags }),
  });
  assert.equal(res.status, 202, await res.text());
}
const row = (id) => `#dash-list li[data-project="${id}"]`;
/** The hub SIGKILLed under the open page: the page says so, and comes back by itself
 * once the hub is restarted (returned). */
async function killAndRestart(hub, page, listen) {
  await stop(hub.child, "SIGKILL");
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state !== "online", null, { timeout: 20000 });
  const restarted = await startHub(listen);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online", null, { timeout: 30000 });
  return restarted;
}

test("the dashboard follows a tag's jobs live on one connection, through a hub SIGKILL, and a click opens a job", async () => {
  const redis = await startRedis();
  const port = await freePort();
  const listen = ["--listen", `127.0.0.1:${port}`, "--redis-url", redis.url, "--no-worker", "--locale", "en"];
  let hub = await startHub(listen);
  const worker = await start(BIN, ["worker", "--redis-url", redis.url, "--mock-delay", "60ms"], /worker started/, { NO_COLOR: "1" });
  const tag = `team:${Date.now()}`;
  const stamp = Date.now();
  const [a, b, c] = ["a", "b", "c"].map((x) => `dash-${x}-${stamp}`);
  // a and b are driven by hand through the publish API (so where they are when the hub
  // dies is certain); c is a real job of the worker, started after the restart.
  const say = (id, event, data) => publish(hub, id, event, data, [tag]);
  await say(a, "progress_update", { status: "RENDERING", progress: 40, current_stage: "rendering", estimated_remaining: 90 });

  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const sockets = [];
  let live = 0;
  let most = 0;
  page.on("websocket", (ws) => {
    sockets.push(new URL(ws.url()).pathname);
    most = Math.max(most, ++live);
    ws.on("close", () => live--);
  });
  await page.goto(`${hub.url}/dashboard?tag=${encodeURIComponent(tag)}&lang=en`);
  await page.waitForSelector(`${row(a)}.running`, { timeout: 20000 });
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  assert.equal(await page.textContent(`${row(a)} .percent`), "40%");
  assert.equal(await page.textContent(`${row(a)} .stage`), "Render · rendering");
  assert.equal(await page.textContent(`${row(a)} .eta`), "about 1 min 30 s left");
  assert.equal(await page.getAttribute(`${row(a)} .progress`, "aria-valuenow"), "40");

  // A job that starts while the page is open appears; its bar moves.
  await say(b, "progress_update", { status: "QUEUED", progress: 0, current_stage: "queued", job_id: "jb", queue_position: 2 });
  await page.waitForSelector(`${row(b)}.running`, { timeout: 20000 });
  assert.equal(await page.textContent(`${row(b)} .stage`), "Queued (position 2)");
  await say(b, "stage_change", { previous_stage: "INITIALIZED", current_stage: "SCRIPT_GENERATING", progress: 5 });
  await page.waitForFunction((sel) => document.querySelector(`${sel} .percent`).textContent === "5%", row(b), { timeout: 20000 });
  assert.deepEqual(sockets, ["/api/v1/progress"], "two jobs, one connection");
  if (process.env.SCREENSHOT_DIR) {
    mkdirSync(process.env.SCREENSHOT_DIR, { recursive: true });
    await page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR, "dashboard.png"), fullPage: true });
  }

  // The hub dies mid-run; the page says so and comes back by itself.
  hub = await killAndRestart(hub, page, listen);
  await say(a, "progress_update", { status: "RENDERING", progress: 80, current_stage: "rendering", estimated_remaining: 10 });
  await page.waitForFunction((sel) => document.querySelector(`${sel} .percent`).textContent === "80%", row(a), { timeout: 20000 });
  await generate(hub, c, [tag]);
  await page.waitForSelector(`${row(c)}`, { timeout: 20000 });

  // Jobs finish while the page is open: each row says so, at its end.
  await say(a, "complete", { status: "COMPLETED", youtube_url: "https://youtube.com/watch?v=a" });
  await say(b, "complete", { status: "FAILED" });
  for (const [id, status, text] of [[a, "COMPLETED", "Completed"], [b, "FAILED", "Failed"], [c, "COMPLETED", "Completed"]]) {
    await page.waitForSelector(`${row(id)}[data-status=${status}]`, { timeout: 60000 });
    assert.equal(await page.textContent(`${row(id)} .stage`), text);
    assert.equal(await page.textContent(`${row(id)} .eta`), "");
  }
  assert.equal(await page.textContent(`${row(c)} .percent`), "100%");
  await page.waitForFunction(() => document.querySelector("#dash-empty").textContent === "No job is running now.");
  assert.ok(sockets.every((p) => p === "/api/v1/progress"), `only the multiplexed endpoint: ${sockets}`);
  assert.equal(most, 1, "never two connections at once");
  assert.equal(await page.$$eval("#dash-list li", (lis) => lis.length), 3, "each job once");
  assert.deepEqual(errors, []);

  // A click opens the project's own view (the language kept).
  await page.click(`${row(c)} a`);
  await page.waitForURL(new RegExp(`/projects/${c}\\?lang=en$`));
  await page.waitForSelector("#youtube-link", { timeout: 20000 });
  await page.close();
  await stop(worker.child);
  await stop(hub.child);
  await stop(redis.child);
});

test("the dashboard without a tag shows every running job live on one connection, and a click opens one", async () => {
  const redis = await startRedis();
  const hub = await startHub(["--listen", "127.0.0.1:0", "--redis-url", redis.url, "--no-worker", "--locale", "en"]);
  const worker = await start(BIN, ["worker", "--redis-url", redis.url, "--mock-delay", "60ms"], /worker started/, { NO_COLOR: "1" });
  const stamp = Date.now();
  const [plain, tagged, ended, job] = ["plain", "tagged", "ended", "job"].map((x) => `all-${x}-${stamp}`);
  await publish(hub, plain, "progress_update", { status: "RENDERING", progress: 40, current_stage: "rendering", estimated_remaining: 90 });
  await publish(hub, tagged, "progress_update", { status: "ASSETS_GENERATING", progress: 20, current_stage: "assets" }, [`team:${stamp}`]);
  await publish(hub, ended, "progress_update", { status: "RENDERING", progress: 50, current_stage: "rendering" });
  await publish(hub, ended, "complete", { status: "COMPLETED" });

  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(new URL(ws.url()).pathname));
  await page.goto(`${hub.url}/dashboard?lang=en`);
  await page.waitForSelector(`${row(plain)}.running`, { timeout: 20000 });
  await page.waitForSelector(`${row(tagged)}.running`, { timeout: 20000 });
  assert.equal(await page.textContent("#dash-title"), "All running jobs");
  assert.equal(await page.textContent(`${row(plain)} .percent`), "40%");
  assert.equal(await page.textContent(`${row(plain)} .stage`), "Render · rendering");
  assert.equal(await page.textContent(`${row(plain)} .eta`), "about 1 min 30 s left");
  assert.equal(await page.textContent(`${row(tagged)} .stage`), "Assets · assets");
  assert.equal(await page.$(row(ended)), null, "a run that ended before the page opened is not running");

  // A job that starts while the page is open (untagged, a real worker's) appears, its
  // bar moves, and it finishes; a running one fails.
  await generate(hub, job, undefined);
  await page.waitForSelector(row(job), { timeout: 20000 });
  await publish(hub, plain, "progress_update", { status: "RENDERING", progress: 70, current_stage: "rendering", estimated_remaining: 20 });
  await page.waitForFunction((sel) => document.querySelector(`${sel} .percent`).textContent === "70%", row(plain), { timeout: 20000 });
  await publish(hub, plain, "complete", { status: "FAILED" });
  await publish(hub, tagged, "complete", { status: "CANCELLED" });
  for (const [id, status, text] of [[plain, "FAILED", "Failed"], [tagged, "CANCELLED", "Cancelled"], [job, "COMPLETED", "Completed"]]) {
    await page.waitForSelector(`${row(id)}[data-status=${status}]`, { timeout: 60000 });
    assert.equal(await page.textContent(`${row(id)} .stage`), text);
  }
  assert.equal(await page.textContent(`${row(job)} .percent`), "100%");
  await page.waitForFunction(() => document.querySelector("#dash-empty").textContent === "No job is running now.");
  // An ended project's next run comes back.
  await publish(hub, ended, "progress_update", { status: "UPLOADING", progress: 10, current_stage: "again" });
  await page.waitForSelector(`${row(ended)}.running`, { timeout: 20000 });
  assert.deepEqual(sockets, ["/api/v1/progress"], "every job, one connection");
  assert.deepEqual(errors, []);

  await page.click(`${row(job)} a`);
  await page.waitForURL(new RegExp(`/projects/${job}\\?lang=en$`));
  await page.waitForSelector("#youtube-link", { timeout: 20000 });
  await page.close();
  await stop(worker.child);
  await stop(hub.child);
  await stop(redis.child);
});

test("without WebSocket the dashboard reads the multiplexed SSE stream: a tag's running jobs only, live, through a hub SIGKILL", async () => {
  const redis = await startRedis();
  const port = await freePort();
  const listen = ["--listen", `127.0.0.1:${port}`, "--redis-url", redis.url, "--no-worker", "--locale", "en"];
  let hub = await startHub(listen);
  const tag = `team:sse-${Date.now()}`;
  const stamp = Date.now();
  const [done, a, b] = ["done", "a", "b"].map((x) => `dash-sse-${x}-${stamp}`);
  const say = (id, event, data) => publish(hub, id, event, data, [tag]);
  // A job of the tag that ended before the page opened: not a running job. (The SSE
  // stream takes no status filter: the client applies the dashboard's.)
  await say(done, "progress_update", { status: "RENDERING", progress: 50, current_stage: "rendering" });
  await say(done, "complete", { status: "COMPLETED", youtube_url: "https://youtube.com/watch?v=d" });
  await say(a, "progress_update", { status: "RENDERING", progress: 40, current_stage: "rendering", estimated_remaining: 90 });

  const page = await browser.newPage();
  await page.addInitScript(() => { delete window.WebSocket; });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  const streams = [];
  page.on("request", (r) => { if (new URL(r.url()).pathname === "/api/v1/progress/events") streams.push(r.url()); });
  await page.goto(`${hub.url}/dashboard?tag=${encodeURIComponent(tag)}&lang=en`);
  await page.waitForSelector(`${row(a)}.running`, { timeout: 20000 });
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  assert.equal(await page.textContent(`${row(a)} .percent`), "40%");
  assert.equal(await page.$(row(done)), null, "an ended job is no running job");

  await say(b, "progress_update", { status: "QUEUED", progress: 0, current_stage: "queued", job_id: "jb", queue_position: 1 });
  await page.waitForSelector(`${row(b)}.running`, { timeout: 20000 });
  hub = await killAndRestart(hub, page, listen);
  await say(a, "progress_update", { status: "RENDERING", progress: 80, current_stage: "rendering", estimated_remaining: 10 });
  await page.waitForFunction((sel) => document.querySelector(`${sel} .percent`).textContent === "80%", row(a), { timeout: 20000 });
  await say(a, "complete", { status: "COMPLETED", youtube_url: "https://youtube.com/watch?v=a" });
  await page.waitForSelector(`${row(a)}[data-status=COMPLETED]`, { timeout: 20000 });
  assert.equal(await page.textContent(`${row(a)} .stage`), "Completed", "a job that ends while open stays, with its end");
  assert.equal(await page.$(row(done)), null);
  assert.deepEqual(sockets, [], "no WebSocket");
  assert.ok(streams.length >= 2 && streams.every((u) => new URL(u).searchParams.get("tags") === tag), streams.join(" "));
  assert.deepEqual(errors, []);
  await page.close();
  await stop(hub.child);
  await stop(redis.child);
});

test("without a tag, a token that cannot see every project is asked for one; a tag the hub refuses is said, not retried", async () => {
  const secret = "dashboard-secret";
  const mint = (...args) => execFileSync(BIN, ["token", "--auth-secret", secret, ...args]).toString().trim();
  const hub = await startHub(["--listen", "127.0.0.1:0", "--locale", "en", "--auth-secret", secret]);
  const page = await browser.newPage();
  const tagOnly = mint("--tag", "user:7");
  await page.goto(`${hub.url}/dashboard?lang=en&token=${tagOnly}`);
  await page.waitForFunction(() => document.querySelector("#dash-error").textContent.startsWith("FORBIDDEN"));
  assert.match(await page.textContent("#dash-empty"), /cannot see every project: enter a tag/);
  await page.fill("#dash-tag", "user:7");
  await page.click("#dash-show");
  await page.waitForURL(/tag=user%3A7/);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  await page.waitForFunction(() => document.querySelector("#dash-empty").textContent === "No job is running now.");
  assert.equal(await page.textContent("#dash-error"), "");
  // A token for every project: the view of every job.
  await page.goto(`${hub.url}/dashboard?lang=en&token=${mint("--project", "*")}`);
  await page.waitForFunction(() => document.querySelector("#dash-empty").textContent === "No job is running now.");
  assert.equal(await page.textContent("#dash-error"), "");
  assert.equal(await page.textContent("#dash-title"), "All running jobs");
  await page.goto(`${hub.url}/dashboard?lang=en&token=${tagOnly}&tag=${encodeURIComponent("bad tag!")}`);
  await page.waitForFunction(() => document.querySelector("#dash-error").textContent.startsWith("INVALID_TAG"));
  await page.close();
  await stop(hub.child);
});
