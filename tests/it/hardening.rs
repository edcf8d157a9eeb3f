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
