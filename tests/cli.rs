//! The `progress-hub` binary as an operator runs it: start line, env configuration,
//! SIGTERM closing every client with 1012 and exiting promptly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{RedisServer, WsClient};

/// Starts `progress-hub serve` on a free port and returns it with the URL it announced.
fn spawn_serve(
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_progress-hub"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("REDIS_URL")
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

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_announces_its_url_and_sigterm_closes_clients_with_1012() {
    let (mut child, url, lines) = spawn_serve(&[], &[]);
    assert!(
        lines
            .last()
            .unwrap()
            .contains("progress-hub listening on http://127.0.0.1:"),
        "{lines:?}"
    );
    let ws = url.replace("http://", "ws://");
    let mut client = WsClient::connected(&format!("{ws}/api/v1/projects/demo/progress")).await;
    sigterm(&child);
    assert_eq!(client.expect_close().await, Some(1012));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "exits within a few seconds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_redis_and_heartbeat_from_the_environment_and_logs_json() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let (mut child, hub_url, lines) = spawn_serve(
        &["--log-format", "json"],
        &[
            ("REDIS_URL", url.as_str()),
            ("HUB_HEARTBEAT_INTERVAL", "7s"),
        ],
    );
    let start: serde_json::Value =
        serde_json::from_str(lines.last().unwrap()).expect("JSON log line");
    assert_eq!(start["level"], "INFO");
    assert!(
        start["message"].as_str().unwrap().contains("broker redis"),
        "{start}"
    );
    let ws = hub_url.replace("http://", "ws://");
    let mut client = WsClient::connect(&format!("{ws}/api/v1/projects/envtest/progress")).await;
    let connected = client.next_json().await;
    assert_eq!(connected["data"]["heartbeat_interval"], 7);
    assert_eq!(
        redis.numsub("envtest").await,
        1,
        "subscribed through the REDIS_URL Redis"
    );
    sigterm(&child);
    assert_eq!(client.expect_close().await, Some(1012));
    let _ = child.wait();
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_progress-hub"))
        .args(["serve", "--heartbeat-interval", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--heartbeat-interval"), "{err}");
}

#[test]
fn listening_on_a_taken_port_fails_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_progress-hub"))
        .args(["serve", "--listen", &addr])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
}

fn publish_cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_progress-hub"))
        .arg("publish")
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("HUB_URL")
        .envs(envs.iter().copied())
        .output()
        .expect("binary runs")
}

// `progress-hub publish` through the HTTP API of a running hub, and straight into Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cli_goes_through_the_publish_path_both_ways() {
    for backend in [support::Backend::Memory, support::Backend::Redis] {
        let hub = support::TestHub::start(backend).await;
        let mut client = WsClient::connected(&hub.ws_url("cli")).await;
        let hub_url = format!("http://{}", hub.addr);
        let redis_url = hub.redis.as_ref().map(RedisServer::url);
        let mut envs = vec![("HUB_URL", hub_url.as_str())];
        if let Some(url) = &redis_url {
            envs.push(("REDIS_URL", url.as_str()));
        }
        let commands: Vec<Vec<&str>> = vec![
            vec![
                "--project",
                "cli",
                "stage-change",
                "--current-stage",
                "RENDERING",
                "--progress",
                "60",
            ],
            vec![
                "--project",
                "cli",
                "progress-update",
                "--status",
                "RENDERING",
                "--progress",
                "65",
                "--current-stage",
                "渲染中",
                "--estimated-remaining",
                "30",
            ],
            vec![
                "--project",
                "cli",
                "log",
                "--level",
                "WARNING",
                "[3/15] 正在生成圖片",
            ],
            vec![
                "--project",
                "cli",
                "error",
                "--error-code",
                "RENDER_ERROR",
                "--message",
                "boom",
                "--stage",
                "RENDERING",
                "--retry-count",
                "1",
            ],
            vec![
                "--project",
                "cli",
                "complete",
                "--status",
                "COMPLETED",
                "--youtube-url",
                "https://youtube.com/watch?v=cli",
            ],
            vec![
                "--project",
                "cli",
                "json",
                r#"{"event":"log","data":{"level":"INFO","message":"raw"}}"#,
            ],
        ];
        let mut ids = Vec::new();
        for args in &commands {
            let out = publish_cli(args, &envs);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ids.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
        }
        for (id, event) in ids.iter().zip([
            "stage_change",
            "progress_update",
            "log",
            "error",
            "complete",
            "log",
        ]) {
            let frame = client.next_event().await;
            assert_eq!(
                (frame["event"].as_str(), frame["id"].as_str()),
                (Some(event), Some(id.as_str())),
                "{backend:?}"
            );
            if event == "error" {
                assert_eq!(frame["data"]["is_retryable"], true);
                assert_eq!(frame["error"]["code"], "RENDER_ERROR");
            }
        }
        let bad = publish_cli(
            &[
                "--project",
                "cli",
                "progress-update",
                "--status",
                "RENDERING",
                "--progress",
                "120",
                "--current-stage",
                "x",
            ],
            &envs,
        );
        assert!(!bad.status.success());
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains("data.progress"), "{backend:?}: {err}");
    }
    let nowhere = publish_cli(
        &[
            "--project",
            "p",
            "--hub-url",
            "http://127.0.0.1:9",
            "log",
            "x",
        ],
        &[],
    );
    assert!(!nowhere.status.success());
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("unreachable"));
}
