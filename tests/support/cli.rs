//! The `progress-hub` binary as an operator runs it. The one way tests get it:
//! [`command`] (no `REDIS_URL`/`HUB_URL` inherited from the caller's environment) and the
//! spawners built on it for `serve`, `worker`, `publish`, `watch` and the other
//! subcommands ([`run`]).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

/// A `Command` for the `progress-hub` binary Cargo built for these tests, with the
/// environment variables it reads for its broker and hub cleared (a test sets what it
/// means to use).
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_progress-hub"));
    command.env_remove("REDIS_URL").env_remove("HUB_URL");
    command
}

/// Runs `progress-hub <args>` to the end and returns its output.
pub fn run(args: &[&str]) -> Output {
    command().args(args).output().expect("binary runs")
}

/// Starts `progress-hub serve` on a free port and returns it with the URL it announced
/// and the log lines up to that one.
pub fn serve(extra: &[&str], envs: &[(&str, &str)]) -> (Child, String, Vec<String>) {
    let mut child = command()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("utf-8 log line");
        seen.push(line.clone());
        if let Some(start) = line.find("http://") {
            let url: String = line[start..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                .collect();
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, url, seen);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no start line with a URL; stderr was: {seen:?}");
}

/// Starts a `progress-hub worker` on `redis_url` with `extra` flags, its output discarded.
pub fn worker(redis_url: &str, extra: &[&str]) -> Child {
    command()
        .args(["worker", "--redis-url", redis_url])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker binary runs")
}

/// Runs `progress-hub publish <args>` with `envs` and returns its output.
pub fn publish(args: &[&str], envs: &[(&str, &str)]) -> Output {
    command()
        .arg("publish")
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("binary runs")
}

/// `progress-hub publish --redis-url <redis_url>` of a log event to project `cli-pub`
/// reaches a watcher of it on `hub`, with the id the command printed.
pub async fn publish_reaches_a_watcher(hub: &super::TestHub, redis_url: &str) {
    let mut client = super::WsClient::connected(&hub.ws_url("cli-pub")).await;
    let args = [
        "--redis-url",
        redis_url,
        "--project",
        "cli-pub",
        "log",
        "--level",
        "INFO",
        "from the CLI",
    ];
    let out = publish(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let frame = client.next_event().await;
    assert_eq!(frame["data"]["message"], "from the CLI", "{frame}");
    assert_eq!(frame["id"].as_str(), Some(id.as_str()), "{frame}");
}

/// Starts `progress-hub watch <url>` (`--json` if asked), its output piped, killed on drop.
pub fn watch(url: &str, json: bool) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::from(command());
    cmd.arg("watch").arg(url);
    if json {
        cmd.arg("--json");
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("watch runs")
}

/// Sends SIGTERM to a spawned process, as an orchestrator stopping it would.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
