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

// The page is served with a Content-Security-Policy (its own scripts, styles and
// connections only; no framing), X-Frame-Options and nosniff; every answer carries
// nosniff. None of these was sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_security_headers() {
    let hub = TestHub::start(Backend::Memory).await;
    for path in ["/", "/projects/abc"] {
        let response = reqwest::get(hub.http(path)).await.unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap();
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
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
    for path in [
        "/assets/app.js",
        "/assets/progress-hub-client.js",
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
