//! What an attack on the HTTP surface found (issue #17 §4), each tried as an attacker
//! would: cross-site writes, security headers of the page, WebSocket protocol errors,
//! plain HTTP connections against the limits, the metrics listener.

use serde_json::json;

use crate::support::{Backend, TestHub};

const EVIL: &str = "https://evil.example";

/// `POST path` with `content_type` and `origin` (each optional) and `body`: the status.
async fn post(
    hub: &TestHub,
    path: &str,
    content_type: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> u16 {
    let mut request = reqwest::Client::new()
        .post(hub.http(path))
        .body(body.to_string());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap().status().as_u16()
}

const LOG: &str = r#"{"event":"log","data":{"level":"INFO","message":"m"}}"#;

// A web page can send a "simple" cross-site request (text/plain, form-encoded, or no
// body) without a preflight: in the default configuration such a POST to /events or
// /generate used to get 202. Writes must declare JSON (which a page can only do after
// a preflight the hub does not grant); a request with no body and no Origin (curl, no
// browser) still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_page_could_forge_cross_site_are_refused() {
    let hub = TestHub::start(Backend::Memory).await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in ["/api/v1/projects/x/events", "/api/v1/projects/x/generate"] {
            assert_eq!(
                post(&hub, path, content_type, Some(EVIL), LOG).await,
                415,
                "{path} {content_type:?}"
            );
        }
    }
    for path in ["/api/v1/projects/y/generate", "/api/v1/projects"] {
        assert_eq!(
            post(&hub, path, None, Some(EVIL), "").await,
            415,
            "{path}: no body, but from a browser"
        );
    }
    let json = Some("application/json; charset=utf-8");
    assert_eq!(
        post(&hub, "/api/v1/projects/x/events", json, None, LOG).await,
        202
    );
    assert_eq!(
        post(&hub, "/api/v1/projects/z/generate", None, None, "").await,
        202,
        "curl -X POST .../generate"
    );
    assert_eq!(post(&hub, "/api/v1/projects", None, None, "").await, 201);
    let (status, body) = hub
        .post_event(
            "x",
            &json!({"event": "log", "data": {"level": "INFO", "message": "n"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

// With --allowed-origins, a write from another origin is refused (403) even when it
// declares JSON; the allowed origin and non-browser clients (no Origin) get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_apply_to_writes() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let json = Some("application/json");
    for (path, body) in [
        ("/api/v1/projects/x/events", LOG),
        ("/api/v1/projects/x/generate", "{}"),
        ("/api/v1/projects", ""),
    ] {
        assert_eq!(
            post(&hub, path, json, Some(EVIL), body).await,
            403,
            "{path}"
        );
    }
    assert_eq!(
        post(
            &hub,
            "/api/v1/projects/x/events",
            json,
            Some("https://app.example"),
            LOG
        )
        .await,
        202
    );
    assert_eq!(
        post(&hub, "/api/v1/projects/x/events", json, None, LOG).await,
        202
    );
}

/// Checks what the page and the API docs share: a CSP allowing only the hub's own
/// scripts and connections, no plugins, no framing, and `X-Frame-Options` and
/// `Referrer-Policy`. Returns the CSP.
fn page_protections(path: &str, headers: &reqwest::header::HeaderMap) -> String {
    let csp = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{path}: no CSP"))
        .to_str()
        .unwrap()
        .to_string();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{path}: {directive} not in {csp}");
    }
    assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    csp
}

// The page is served with a Content-Security-Policy (its own scripts, styles and
// connections only; no framing), X-Frame-Options and nosniff; every answer carries
// nosniff. None of these was sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_security_headers() {
    let hub = TestHub::start(Backend::Memory).await;
    for path in ["/", "/projects/abc", "/dashboard"] {
        let response = reqwest::get(hub.http(path)).await.unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        let csp = page_protections(path, headers);
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    for path in [
        "/assets/app.js",
        "/assets/progress-hub-client.js",
        "/assets/progress-hub-projects.js",
        "/assets/dashboard.js",
        "/assets/render.js",
        "/assets/style.css",
        "/api/v1/projects/nobody",
        "/healthz",
    ] {
        let response = reqwest::get(hub.http(path)).await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
    }
}

// Swagger UI at `/docs` gets the page's protections: a Content-Security-Policy (its own
// scripts and connections only, no framing; inline styles allowed, which Swagger UI's
// rendering sets) and X-Frame-Options (issue 23 §9: it had neither).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_docs_are_served_with_security_headers() {
    let hub = TestHub::start(Backend::Memory).await;
    for path in [
        "/docs/",
        "/docs/swagger-initializer.js",
        "/docs/swagger-ui.css",
    ] {
        let response = reqwest::get(hub.http(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = page_protections(path, response.headers());
        let script_src = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(!script_src.contains("unsafe"), "{csp}");
    }
}

/// Writes `bytes` straight onto the client's socket, under the WebSocket layer.
async fn write_raw(client: &mut crate::support::WsClient, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let stream = client.ws.get_mut();
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = stream else {
        panic!("a plain TCP test client");
    };
    tcp.write_all(bytes).await.unwrap();
}

/// One client frame: FIN, `first` (RSV bits + opcode), masked with a zero key unless
/// `masked` is false.
fn raw_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![first];
    if masked {
        frame.push(0x80 | payload.len() as u8);
        frame.extend([0, 0, 0, 0]);
    } else {
        frame.push(payload.len() as u8);
    }
    frame.extend(payload);
    frame
}

// A WebSocket protocol violation is answered with a close frame that says so: 1002
// for a reserved opcode, RSV bits without an extension, or an unmasked client frame;
// 1007 for a text frame that is not UTF-8. The connection used to be dropped without
// a close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_errors_are_closed_with_1002_or_1007() {
    let hub = TestHub::start(Backend::Memory).await;
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("reserved data opcode", raw_frame(0x83, b"x", true), 1002),
        ("reserved control opcode", raw_frame(0x8B, b"", true), 1002),
        (
            "RSV1 without an extension",
            raw_frame(0xC1, b"{}", true),
            1002,
        ),
        ("unmasked client frame", raw_frame(0x81, b"{}", false), 1002),
        (
            "text that is not UTF-8",
            raw_frame(0x81, &[0x7B, 0xFF, 0xFE, 0x7D], true),
            1007,
        ),
    ];
    for (what, frame, code) in cases {
        let mut client = hub.connect("protocol").await;
        assert_eq!(client.next_json().await["event"], "connected");
        write_raw(&mut client, &frame).await;
        assert_eq!(client.expect_close().await, Some(code), "{what}");
    }
    // The hub goes on serving.
    let mut client = hub.connect("protocol").await;
    assert_eq!(client.next_json().await["event"], "connected");
}

/// A TCP connection to the hub from the loopback address `from` (any 127.x.y.z is
/// this host, so a test can be several clients).
async fn connect_from(hub: &TestHub, from: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(hub.addr).await.unwrap()
}

/// One `GET path` on a kept-alive connection: the status, or `None` when the hub
/// closed the connection without an answer.
async fn get_on(stream: &mut tokio::net::TcpStream, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
    };
    tokio::time::timeout(crate::support::PATIENCE, read)
        .await
        .expect("an answer or a close in time");
    let head = String::from_utf8_lossy(&head);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    // Read the body, so the connection is ready for the next request.
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(status)
}

// Plain HTTP connections count against the per-address and process caps, as
// WebSocket and SSE sessions always did: one client holding many keep-alive
// connections used to hold every one of them (with the open-file limit reached, every
// other client was locked out). Now the ones over its cap are refused (503
// TOO_MANY_CONNECTIONS, then closed), another client still gets in, and the slots come
// back when the holder lets go. A WebSocket session counts once (its connection's
// slot), not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_connections_count_against_the_limits() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.max_connections_per_ip = 4;
        c.max_connections = 8;
        // Longer than PATIENCE: a connection closed in time was closed by the refusal.
        c.handshake_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(&hub, "127.0.0.2").await;
        assert_eq!(get_on(&mut stream, "/healthz").await, Some(200));
        held.push(stream);
    }
    for i in 0..10 {
        let mut over = connect_from(&hub, "127.0.0.2").await;
        let status = get_on(&mut over, "/healthz").await;
        assert!(
            matches!(status, Some(503) | None),
            "connection {} of one address over its cap of 4: {status:?}",
            5 + i
        );
    }
    // An `Upgrade: websocket` header on another route does not keep a refused
    // connection alive: it is answered, then closed.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sneaky = connect_from(&hub, "127.0.0.2").await;
        sneaky
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        tokio::time::timeout(crate::support::PATIENCE, sneaky.read_to_end(&mut seen))
            .await
            .expect("the refused connection is closed after its answer")
            .ok();
    }
    // Another address still gets in, plain and WebSocket, up to the process cap.
    let mut other = connect_from(&hub, "127.0.0.3").await;
    assert_eq!(get_on(&mut other, "/healthz").await, Some(200));
    let mut client = hub.connect("counted").await;
    assert_eq!(client.next_json().await["event"], "connected");
    let mut third = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(&hub, "127.0.0.4").await;
        assert_eq!(get_on(&mut stream, "/healthz").await, Some(200));
        third.push(stream);
    }
    // 4 + 1 + 1 (the WebSocket, counted once) + 2 = 8: the process is full.
    let mut full = connect_from(&hub, "127.0.0.5").await;
    assert!(matches!(
        get_on(&mut full, "/healthz").await,
        Some(503) | None
    ));
    // The holder lets go: its address gets in again.
    drop(held);
    crate::support::eventually("the held slots come back", || async {
        let mut stream = connect_from(&hub, "127.0.0.2").await;
        get_on(&mut stream, "/healthz").await == Some(200)
    })
    .await;
}

/// `progress-hub serve` with `extra` flags: the child, its URL, and every line it logs
/// (collected until it exits).
fn serve_logging(
    extra: &[&str],
) -> (
    std::process::Child,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    Option<String>,
) {
    let mut child = crate::support::cli::command()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let (lines, url_rx) = read_log(child.stderr.take().unwrap());
    let url = url_rx
        .recv_timeout(crate::support::PATIENCE)
        .expect("the hub announces its URL");
    // With --metrics-addr, the next line names the metrics listener.
    let metrics = extra.contains(&"--metrics-addr").then(|| {
        url_rx
            .recv_timeout(crate::support::PATIENCE)
            .expect("the metrics URL")
    });
    (child, url, lines, metrics)
}

// A flood of refused connections is not a flood of log lines: one WARN line per
// interval, saying how many more were refused. Before, every refused WebSocket wrote a
// WARN line (and plain HTTP connections were not refused at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_logged_at_a_bounded_rate() {
    let (child, url, lines, metrics_url) = serve_logging(&[
        "--max-connections-per-ip",
        "1",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let metrics_url = metrics_url.expect("a metrics listener");
    let mut child = crate::support::cli::Killed(child);
    let ws = url.replacen("http://", "ws://", 1) + "/api/v1/projects/flood/progress";
    let mut holder = crate::support::WsClient::connect(&ws).await;
    assert_eq!(holder.next_json().await["event"], "connected");
    for _ in 0..100 {
        let mut refused = crate::support::WsClient::connect(&ws).await;
        assert_eq!(refused.expect_close().await, Some(1013));
    }
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let status = reqwest::Client::new()
            .get(format!("{url}/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        statuses.push(status);
    }
    // Every refusal is counted, though few are logged (the metrics listener has a slot
    // of its own).
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("hub_connections_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 200.0, "{metrics}");
    crate::support::cli::sigterm(&child.0);
    let _ = child.0.wait();
    let lines = lines.lock().unwrap();
    let refusals: Vec<_> = lines.iter().filter(|l| l.contains("refusing")).collect();
    assert!(
        !refusals.is_empty() && refusals.len() <= 2,
        "{} lines about 200 refusals: {refusals:#?}",
        refusals.len()
    );
    for status in statuses {
        assert!(matches!(status, Ok(503) | Err(_)), "{status:?}");
    }
}

// Out of file descriptors (`ulimit -n 48`, 80 connections held for 2 s): the accept
// loop backs off and says so once, not once per attempt (it used to write a WARN line
// every 50 ms, ~700 in the attack), and serves again once descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_backs_off_and_logs_once() {
    let binary = env!("CARGO_BIN_EXE_progress-hub");
    let mut child = crate::support::cli::Killed(
        std::process::Command::new("sh")
            .args([
                "-c",
                &format!("ulimit -n 48 && exec {binary} serve --listen 127.0.0.1:0 --log-format json --no-worker"),
            ])
            .env_remove("REDIS_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs"),
    );
    let (lines, url_rx) = read_log(child.0.stderr.take().unwrap());
    let url = url_rx
        .recv_timeout(crate::support::PATIENCE)
        .expect("the hub announces its URL");
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    drop(held);
    crate::support::eventually("the hub serves again", || async {
        reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    crate::support::cli::sigterm(&child.0);
    let _ = child.0.wait();
    let lines = lines.lock().unwrap();
    let failed: Vec<_> = lines.iter().filter(|l| l.contains("accept")).collect();
    assert!(
        !failed.is_empty() && failed.len() <= 2,
        "{} lines about failed accepts: {:#?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

// A publisher's backdated `data.timestamp` (here 2020) must not inflate the delivery
// latency histogram: it is measured from when the hub received the frame. Before, one
// such event added six years to `hub_publish_to_deliver_seconds_sum`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backdated_timestamp_does_not_inflate_the_delivery_latency() {
    let hub = TestHub::start(Backend::Memory).await;
    let mut client = hub.connect("backdated").await;
    assert_eq!(client.next_json().await["event"], "connected");
    let sum = "hub_publish_to_deliver_seconds_sum";
    let count = "hub_publish_to_deliver_seconds_count";
    let (sum_before, count_before) = (
        crate::support::metric(&hub, sum).await,
        crate::support::metric(&hub, count).await,
    );
    hub.publish(
        "backdated",
        json!({"event": "log", "data": {"level": "INFO", "message": "old", "timestamp": "2020-01-01T00:00:00Z"}}),
    )
    .await;
    assert_eq!(client.next_event().await["data"]["message"], "old");
    crate::support::eventually("the delivery is recorded", || async {
        crate::support::metric(&hub, count).await > count_before
    })
    .await;
    let added = crate::support::metric(&hub, sum).await - sum_before;
    assert!(added < 60.0, "one delivery added {added} s of latency");
}

// With a metrics address (`--metrics-addr`), `/metrics` is served on a listener of its
// own, for deployments that must not expose it, and no longer on the public one (404
// there); without one, it stays on the main listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_on_a_listener_of_their_own() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics_addr = hub
        .hub
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("a metrics listener");
    assert_ne!(metrics_addr, hub.addr);
    let own = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("hub_connections"));
    let public = reqwest::get(hub.http("/metrics")).await.unwrap();
    assert_eq!(public.status(), 404, "not on the public listener");
    let other = reqwest::get(format!("http://{metrics_addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves only /metrics"
    );

    let default = TestHub::start(Backend::Memory).await;
    assert_eq!(
        reqwest::get(default.http("/metrics"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(default.hub.as_ref().unwrap().metrics_addr(), None);
}

/// Reads a hub's log (its stderr) on a thread of its own: every line, kept in order, and
/// each `http://...` address it announces, as it comes.
fn read_log(
    stderr: std::process::ChildStderr,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::sync::mpsc::Receiver<String>,
) {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let seen = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(start) = line.find("http://") {
                let url: String = line[start..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                    .collect();
                let _ = url_tx.send(url);
            }
            seen.lock().unwrap().push(line);
        }
    });
    (lines, url_rx)
}
