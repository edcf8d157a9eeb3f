// What the browser tests share: free ports, processes started and awaited by a log
// line, a hub (the binary Cargo built) and a redis-server of their own, Chromium.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.PROGRESS_HUB_BIN || path.join(root, "target/debug/progress-hub");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const children = [];

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on("error", reject);
  });
}

/** Starts a process and resolves once a stderr line matches `ready`. */
export function start(cmd, args, ready, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let buffer = "";
    const onData = (chunk) => {
      buffer += chunk.toString();
      const m = buffer.match(ready);
      if (m) { child.stderr.off("data", onData); child.stdout.off("data", onData); resolve({ child, match: m }); }
    };
    child.stderr.on("data", onData);
    child.stdout.on("data", onData);
    child.on("exit", (code) => reject(new Error(`${cmd} exited (${code}) before ready: ${buffer}`)));
    setTimeout(() => reject(new Error(`${cmd} not ready in time: ${buffer}`)), 20000);
  });
}

export function stop(child, signal = "SIGTERM") {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}

export async function startHub(args, env) {
  const { child, match } = await start(BIN, ["serve", ...args], /listening on (http:\/\/[0-9.:]+)/, { HUB_LOG_FORMAT: "text", NO_COLOR: "1", ...env });
  return { child, url: match[1] };
}

export async function startRedis() {
  const port = await freePort();
  const { child } = await start("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], /Ready to accept connections/);
  return { child, url: `redis://127.0.0.1:${port}` };
}

/** Debian's headless Chromium, as every browser test launches it. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/** Kills every process a test file started. */
export function stopAll(signal = "SIGKILL") {
  return Promise.all(children.map((c) => stop(c, signal)));
}
