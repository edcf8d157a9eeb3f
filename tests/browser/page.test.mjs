// The progress monitor page in a real browser (Debian's headless Chromium, driven by
// playwright-core) against a real hub: start a generation, watch it finish, survive a
// hub restart without losing or doubling a log line, and show errors with solutions.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { BIN, freePort, start, startHub, startRedis, stop, launchChromium, stopAll } from "./support.mjs";

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopAll();
});

async function logLines(page) {
  return page.$$eval("#log .line .msg", (els) => els.map((e) => e.textContent));
}

test("a demo generation reaches 100% and shows the YouTube link", async () => {
  // The job waits in the queue until the page watches it (the worker starts then), so
  // the page sees every stage live however slowly the machine runs it.
  const redis = await startRedis();
  const hub = await startHub(["--listen", "127.0.0.1:0", "--redis-url", redis.url, "--no-worker"]);
  const page = await browser.newPage({ viewport: { width: 1000, height: 1100 } });
  // Every text the stage line shows, recorded as the page writes it (a transient text
  // can come and go between two polls of a loaded browser).
  await page.addInitScript(() => {
    window.__stageTexts = [];
    new MutationObserver(() => {
      const el = document.querySelector("#stage-text");
      if (el) window.__stageTexts.push(el.textContent);
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });
  await page.goto(`${hub.url}/`);
  await page.fill("#topic", "AI 科技趨勢");
  await page.click("#start");
  await page.waitForURL(/\/projects\/p-[A-Za-z0-9]+$/);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  const worker = await start(BIN, ["worker", "--redis-url", redis.url, "--mock-delay", "30ms", "--retry-backoff", "30ms"], /worker started/, { NO_COLOR: "1" });
  await page.waitForSelector("#youtube-link", { timeout: 30000 });
  // The assets stage runs its units in parallel and says how many are done.
  const texts = await page.evaluate(() => window.__stageTexts);
  assert.ok(texts.some((t) => /^素材 \d+\/17 · /.test(t)), `the stage line counted the assets: ${[...new Set(texts)].join(" | ")}`);
  assert.doesNotMatch(await page.textContent("#stage-text"), /\/17/, "the count ends with its stage");
  assert.equal(await page.textContent("#percent"), "100%");
  assert.equal(await page.getAttribute("#bar", "aria-valuenow"), "100");
  assert.match(await page.getAttribute("#youtube-link", "href"), /^https:\/\/youtube\.com\/watch\?v=/);
  const states = await page.$$eval("#timeline li", (lis) => lis.map((li) => li.className));
  assert.deepEqual(states, ["done", "done", "done", "done", "done"]);
  const stateText = await page.textContent("#stage-SCRIPT_GENERATING .state");
  assert.match(stateText, /已完成 · 耗時/, "each stage says how long it took");
  const lines = await logLines(page);
  for (let n = 1; n <= 15; n++) {
    assert.equal(lines.filter((l) => l.startsWith(`[${n}/15] 正在生成圖片`)).length, 1, `image ${n} logged once`);
  }
  assert.equal(await page.getAttribute("#conn", "data-state"), "online");
  if (process.env.SCREENSHOT_DIR) {
    mkdirSync(process.env.SCREENSHOT_DIR, { recursive: true });
    await page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR, "monitor.png"), fullPage: true });
  }
  // A page opened later shows the finished run from the snapshot.
  const late = await browser.newPage();
  await late.goto(page.url());
  await late.waitForSelector("#youtube-link");
  assert.equal(await late.textContent("#percent"), "100%");
  await late.close();
  await page.close();
  await stop(worker.child);
  await stop(hub.child);
  await stop(redis.child);
});

test("the page reconnects after a hub restart and its log has every line exactly once", async () => {
  const redis = await startRedis();
  const port = await freePort();
  const listen = ["--listen", `127.0.0.1:${port}`, "--redis-url", redis.url, "--no-worker"];
  let hub = await startHub(listen);
  const worker = await start(BIN, ["worker", "--redis-url", redis.url, "--mock-delay", "120ms"], /worker started/, { NO_COLOR: "1" });
  const page = await browser.newPage();
  const id = `restart-${Date.now()}`;
  await page.goto(`${hub.url}/projects/${id}`);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  const res = await fetch(`${hub.url}/api/v1/projects/${id}/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(res.status, 202);
  // Mid-run (during the images), restart the hub.
  await page.waitForFunction(() => [...document.querySelectorAll("#log .msg")].some((e) => e.textContent.startsWith("[3/15]")), null, { timeout: 20000 });
  await stop(hub.child);
  await page.waitForFunction(() => ["reconnecting", "connecting", "offline"].includes(document.querySelector("#conn").dataset.state));
  hub = await startHub(listen);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online", null, { timeout: 20000 });
  await page.waitForSelector("#youtube-link", { timeout: 30000 });
  const lines = await logLines(page);
  assert.equal(new Set(lines).size, lines.length, `no line doubled: ${lines.join(" | ")}`);
  for (let n = 1; n <= 15; n++) {
    assert.equal(lines.filter((l) => l.startsWith(`[${n}/15] `)).length, 1, `image ${n} logged exactly once`);
  }
  assert.ok(lines.some((l) => l.startsWith("上傳完成")), "the last lines arrived too");
  await page.close();
  await stop(worker.child);
  await stop(hub.child);
  await stop(redis.child);
});

test("a job taken over after its worker was killed says so on the page and finishes", async () => {
  const redis = await startRedis();
  const hub = await startHub(["--listen", "127.0.0.1:0", "--redis-url", redis.url, "--no-worker"]);
  // One asset call at a time: when "[3/15]" shows, images 1 and 2 are done (in
  // parallel they would still be in flight, and made again after the kill).
  const doomed = await start(BIN, ["worker", "--redis-url", redis.url, "--mock-delay", "120ms", "--asset-concurrency", "1"], /worker started/, { NO_COLOR: "1" });
  const page = await browser.newPage();
  const id = `takeover-${Date.now()}`;
  await page.goto(`${hub.url}/projects/${id}`);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  const res = await fetch(`${hub.url}/api/v1/projects/${id}/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(res.status, 202);
  await page.waitForFunction(() => [...document.querySelectorAll("#log .msg")].some((e) => e.textContent.startsWith("[3/15]")), null, { timeout: 20000 });
  assert.doesNotMatch(await page.textContent("#stage-text"), /接手/);
  await stop(doomed.child, "SIGKILL");
  const rescuer = await start(BIN, ["worker", "--redis-url", redis.url, "--mock-delay", "20ms", "--claim-idle", "1s"], /worker started/, { NO_COLOR: "1" });
  await page.waitForFunction(() => document.querySelector("#stage-text").textContent.includes("接手"), null, { timeout: 20000 });
  await page.waitForSelector("#youtube-link", { timeout: 30000 });
  const lines = await logLines(page);
  assert.equal(lines.filter((l) => l.startsWith("[1/15] ")).length, 1, "a finished image is not made again");
  assert.equal(lines.filter((l) => l.startsWith("開始生成腳本")).length, 1, "the script is not written again");
  await page.close();
  await stop(rescuer.child);
  await stop(hub.child);
  await stop(redis.child);
});

test("an injected failure shows the error card with the catalog's solutions (English)", async () => {
  const hub = await startHub(["--listen", "127.0.0.1:0", "--mock-delay", "40ms", "--retry-backoff", "1500ms", "--locale", "en"]);
  const page = await browser.newPage();
  await page.goto(`${hub.url}/?lang=en`);
  assert.equal(await page.textContent("#start"), "Start");
  await page.check("#flaky");
  await page.click("#start");
  await page.waitForSelector("#error-card:not([hidden])", { timeout: 20000 });
  assert.equal(await page.textContent("#error-code"), "TTS_API_ERROR");
  assert.match(await page.textContent("#error-retry"), /Assets · retry 0 \/ 3/);
  const solutions = await page.$$eval("#error-solutions li", (lis) => lis.map((li) => li.textContent));
  assert.ok(solutions.length >= 1 && solutions[0].length > 0, JSON.stringify(solutions));
  assert.equal(await page.getAttribute("#error-card", "role"), "alert");
  await page.waitForSelector("#youtube-link", { timeout: 30000 });
  await page.close();
  await stop(hub.child);
});

// Issue 24: during a Redis outage the page said "Connected" and kept showing the ETA.
// The hub tells watchers with `broker_status`; here the frames come through the
// project's Redis channel (a plain PUBLISH is forwarded as it is), so the page's side is
// tested whatever makes the hub send them.
test("broker unavailable: the page says updates are paused, drops the ETA, and says when the broker is back", async () => {
  const redis = await startRedis();
  const hub = await startHub(["--listen", "127.0.0.1:0", "--redis-url", redis.url, "--no-worker", "--locale", "en"]);
  const page = await browser.newPage();
  const id = `broker-${Date.now()}`;
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${hub.url}/projects/${id}?lang=en`);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  const res = await fetch(`${hub.url}/api/v1/projects/${id}/events`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ event: "progress_update", data: { status: "RENDERING", progress: 40, current_stage: "rendering", estimated_remaining: 90 } }),
  });
  assert.equal(res.status, 202);
  await page.waitForFunction(() => document.querySelector("#eta").textContent.includes("1 min 30 s"));
  assert.equal(await page.isHidden("#broker"), true, "nothing to say while the broker is up");
  // PUBLISH in RESP on a socket of its own; resolves with Redis's reply.
  const say = (frame) => new Promise((resolve, reject) => {
    const words = ["PUBLISH", `progress:${id}`, JSON.stringify(frame)];
    const sock = connect(Number(new URL(redis.url).port), "127.0.0.1");
    sock.on("error", reject);
    sock.once("data", (d) => { sock.end(); resolve(d.toString()); });
    sock.write(`*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join("")}`);
  });
  // A newer hub's event the client does not know changes nothing and breaks nothing.
  assert.equal(await say({ event: "something_newer", data: { x: 1 } }), ":1\r\n", "one subscriber: the hub");
  await say({ event: "broker_status", data: { available: false, timestamp: new Date().toISOString() } });
  await page.waitForSelector("#broker[data-state=down]");
  assert.match(await page.textContent("#broker"), /^Broker unavailable, updates paused \(since .+\)$/);
  assert.equal(await page.textContent("#eta"), "", "no estimate while no update can arrive");
  assert.equal(await page.textContent("#percent"), "40%");
  await say({ event: "broker_status", data: { available: true, timestamp: new Date().toISOString() } });
  await page.waitForSelector("#broker[data-state=up]");
  assert.match(await page.textContent("#broker"), /^Broker back \(.+\), updates resumed$/);
  assert.match(await page.textContent("#eta"), /1 min 30 s/);
  assert.deepEqual(errors, []);
  await page.close();
  await stop(hub.child);
  await stop(redis.child);
});

test("Cancel stops the run (the page says cancelled), and Retry finishes it from where it stopped", async () => {
  const hub = await startHub(["--listen", "127.0.0.1:0", "--mock-delay", "60ms", "--retry-backoff", "30ms", "--locale", "en"]);
  const page = await browser.newPage();
  const id = `cancel-${Date.now()}`;
  await page.goto(`${hub.url}/projects/${id}?lang=en`);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  assert.equal(await page.isHidden("#cancel-button"), true, "no run, nothing to cancel");
  const res = await fetch(`${hub.url}/api/v1/projects/${id}/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(res.status, 202);
  await page.waitForFunction(() => document.querySelector("#stage-ASSETS_GENERATING").className === "current", null, { timeout: 20000 });
  await page.click("#cancel-button");
  await page.waitForSelector("#done-card:not([hidden])", { timeout: 20000 });
  assert.equal(await page.textContent("#done-title"), "Cancelled");
  assert.equal(await page.getAttribute("#stage-ASSETS_GENERATING", "class"), "cancelled");
  assert.equal(await page.getAttribute("#stage-SCRIPT_GENERATING", "class"), "done");
  assert.equal(await page.isHidden("#cancel-button"), true);
  assert.equal(await page.isHidden("#error-card"), true, "a cancel is not an error");
  await page.click("#retry-button");
  await page.waitForSelector("#youtube-link", { timeout: 30000 });
  assert.equal(await page.textContent("#percent"), "100%");
  assert.equal(await page.isHidden("#retry-button"), true);
  const lines = await logLines(page);
  assert.ok(lines.some((l) => l.startsWith("Retrying from ASSETS_GENERATING")), lines.join(" | "));
  // A second Cancel after the end is refused, and the page says why.
  await page.evaluate(() => { document.querySelector("#cancel-button").hidden = false; });
  await page.click("#cancel-button");
  await page.waitForFunction(() => document.querySelector("#action-error").textContent.includes("already ended"));
  await page.close();
  await stop(hub.child);
});

test("a silent running job shows as stalled on the progress card until it publishes again", async () => {
  const hub = await startHub(["--listen", "127.0.0.1:0", "--stall-after", "500ms"]);
  const id = `stalled-${Date.now()}`;
  const post = (event) => fetch(`${hub.url}/api/v1/projects/${id}/events`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event) });
  assert.equal((await post({ event: "stage_change", data: { current_stage: "RENDERING", progress: 40 } })).status < 300, true);
  const page = await browser.newPage();
  await page.goto(`${hub.url}/projects/${id}?lang=en`);
  await page.waitForFunction(() => document.querySelector("#stage-text").dataset.stalled === "silent", null, { timeout: 20000 });
  assert.match(await page.textContent("#stage-text"), /stalled: no update since/);
  assert.equal((await post({ event: "log", data: { level: "INFO", message: "alive again" } })).status < 300, true);
  await page.waitForFunction(() => document.querySelector("#stage-text").dataset.stalled === "", null, { timeout: 20000 });
  assert.doesNotMatch(await page.textContent("#stage-text"), /stalled/);
  await page.close();
});

// Issue 25 §6: a run that failed for good showed the stages it never ran as "done". Live,
// the stages it ran are done, the one it failed in failed, the later ones pending; a page
// opened after the end (it reads the run's history) shows the same.
test("a failed run shows the stages it never ran pending, live and opened later", async () => {
  const hub = await startHub(["--listen", "127.0.0.1:0", "--no-worker"]);
  const id = `failed-${Date.now()}`;
  const post = (event) => fetch(`${hub.url}/api/v1/projects/${id}/events`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event) });
  const page = await browser.newPage();
  await page.goto(`${hub.url}/projects/${id}?lang=en`);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  for (const event of [
    { event: "stage_change", data: { current_stage: "SCRIPT_GENERATING", progress: 5 } },
    { event: "stage_change", data: { previous_stage: "SCRIPT_GENERATING", current_stage: "ASSETS_GENERATING", progress: 30 } },
    { event: "complete", data: { status: "FAILED" } },
  ]) {
    assert.ok((await post(event)).status < 300, JSON.stringify(event));
  }
  await page.waitForFunction(() => document.querySelector("#stage-ASSETS_GENERATING").className === "failed", null, { timeout: 20000 });
  const classes = (p) => p.$$eval("#timeline li", (lis) => lis.map((li) => li.className));
  assert.deepEqual(await classes(page), ["done", "failed", "pending", "pending", "pending"]);
  const late = await browser.newPage();
  await late.goto(page.url());
  await late.waitForFunction(() => document.querySelector("#conn").dataset.state === "online");
  await late.waitForFunction(() => document.querySelector("#percent").textContent === "30%", null, { timeout: 20000 });
  await late.waitForFunction(() => document.querySelector("#stage-ASSETS_GENERATING").className === "failed", null, { timeout: 20000 });
  assert.deepEqual(await classes(late), ["done", "failed", "pending", "pending", "pending"]);
  await late.close();
  await page.close();
  await stop(hub.child);
});
