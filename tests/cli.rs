//! The `progress-hub` binary as an operator runs it: start line, env configuration,
//! SIGTERM closing every client with 1001 and exiting promptly.

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
async fn serve_announces_its_url_and_sigterm_closes_clients_with_1001() {
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
    assert_eq!(client.expect_close().await, Some(1001));
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
    assert_eq!(client.expect_close().await, Some(1001));
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
