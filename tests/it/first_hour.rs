//! What a new user meets in the hub's first hour (issue 24, the hub's side): logs
//! without colour codes when they go to a file or a pipe, numbers in the startup line,
//! a favicon for the page, and watchers told when the broker is down and when it is back.

use std::time::Duration;

use crate::support::{Backend, TestHub, WsClient, cli::Killed};

// Logs that go to a pipe (a file, journald, a log shipper) carry no ANSI colour codes,
// and the startup line says `open_file_limit=1024`, not `Some(1024)`. Before: both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_off_a_terminal_are_plain_and_the_startup_line_gives_numbers() {
    let binary = env!("CARGO_BIN_EXE_progress-hub");
    // Under `ulimit -n 1024` the default caps are lowered to fit, which the hub says.
    let mut child = Killed(
        std::process::Command::new("sh")
            .args([
                "-c",
                &format!("ulimit -n 1024 && exec {binary} serve --listen 127.0.0.1:0 --no-worker"),
            ])
            .env_remove("REDIS_URL")
            .env_remove("NO_COLOR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        let mut lines = std::io::BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let announced = line.contains("http://");
            seen.push(line);
            if announced {
                break;
            }
        }
        let _ = tx.send(seen);
        // Drained to the end, so the hub never writes into a closed pipe.
        for _ in lines {}
    });
    let lines = rx
        .recv_timeout(crate::support::PATIENCE)
        .expect("the hub announces its URL");
    crate::support::cli::sigterm(&child.0);
    let _ = child.0.wait();
    assert!(
        lines.iter().any(|l| l.contains("http://")),
        "the hub started: {lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "a colour code in {line:?}");
    }
    let caps = lines
        .iter()
        .find(|l| l.contains("open_file_limit"))
        .unwrap_or_else(|| panic!("no line names the open-file limit: {lines:#?}"));
    assert!(caps.contains("open_file_limit=1024"), "{caps}");
}

// The page's browser asks for `/favicon.ico` on every visit; it was a 404 (a console
// error each time). It is a real icon, vendored in the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_has_a_favicon() {
    let hub = TestHub::start(Backend::Memory).await;
    let response = reqwest::get(hub.http("/favicon.ico")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/x-icon");
    let body = response.bytes().await.unwrap();
    assert_eq!(&body[..4], &[0, 0, 1, 0], "an ICO file");
    assert!(body.len() < 4096, "a small icon: {} bytes", body.len());
}

/// The next frame of `event`, skipping others.
async fn next_of(client: &mut WsClient, event: &str) -> serde_json::Value {
    loop {
        let frame = client.next_json().await;
        if frame["event"] == event {
            return frame;
        }
    }
}

// When the hub's subscriber loses Redis, every live session hears
// `broker_status {available: false}`; once it is back and the gap is filled,
// `broker_status {available: true}`, then the live events again. Before, nothing told
// watchers (the page said "Connected" throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_told_when_the_broker_is_down_and_when_it_is_back() {
    let mut hub = TestHub::start_with(Backend::Redis, |c| {
        c.redis_keepalive = Duration::from_millis(200);
    })
    .await;
    let mut client = WsClient::connected(&hub.ws_url("outage")).await;
    hub.publish("outage", crate::support::log_event("before"))
        .await;
    assert_eq!(
        next_of(&mut client, "log").await["data"]["message"],
        "before"
    );

    hub.redis.as_mut().unwrap().kill();
    let down = next_of(&mut client, "broker_status").await;
    assert_eq!(down["data"]["available"], false, "{down}");
    assert!(down["data"]["timestamp"].is_string(), "{down}");

    hub.redis.as_mut().unwrap().restart().await;
    let up = next_of(&mut client, "broker_status").await;
    assert_eq!(up["data"]["available"], true, "{up}");
    hub.publish("outage", crate::support::log_event("after"))
        .await;
    assert_eq!(
        next_of(&mut client, "log").await["data"]["message"],
        "after"
    );

    // A session that joins while the broker is down hears it too.
    hub.redis.as_mut().unwrap().kill();
    next_of(&mut client, "broker_status").await;
    let mut late = WsClient::connect(&hub.ws_url("outage")).await;
    let late_status = next_of(&mut late, "broker_status").await;
    assert_eq!(late_status["data"]["available"], false, "{late_status}");
}
