//! CORS (`--cors-origins`): a page on a listed origin may call the HTTP routes the
//! clients use (state, SSE, the refusal probe, writes); an unlisted origin gets no CORS
//! headers; a preflight is answered 204 before any route or check sees it.

use reqwest::{Method, Response, header};

use crate::support::{Backend, TestHub, cli};

const APP: &str = "https://app.example";

async fn hub_for(origins: &[&str], allowed: &[&str]) -> TestHub {
    let origins: Vec<_> = origins.iter().map(|o| o.parse().unwrap()).collect();
    let allowed: Vec<String> = allowed.iter().map(|o| (*o).to_owned()).collect();
    TestHub::start_with(Backend::Memory, move |c| {
        c.cors_origins = origins;
        c.allowed_origins = allowed;
    })
    .await
}

async fn preflight(hub: &TestHub, path: &str, origin: &str, method: &str) -> Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, hub.http(path))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,last-event-id,content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

fn allow_origin(response: &Response) -> Option<&str> {
    response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_gets_its_preflight_and_its_answers() {
    let hub = hub_for(&[APP, "http://localhost:3000"], &[]).await;
    for (path, method) in [
        ("/api/v1/projects/p1/events", "GET"),
        ("/api/v1/projects/p1", "GET"),
        ("/api/v1/projects/p1/progress", "GET"),
        ("/api/v1/projects/p1/events", "POST"),
    ] {
        let answer = preflight(&hub, path, APP, method).await;
        assert_eq!(answer.status(), 204, "{method} {path}");
        assert_eq!(allow_origin(&answer), Some(APP), "{method} {path}");
        let headers = answer.headers();
        let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap();
        assert!(methods.contains(method), "{methods}");
        let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for h in [
            "authorization",
            "content-type",
            "last-event-id",
            "idempotency-key",
        ] {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
        assert!(
            !headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "no credentials: tokens travel in Authorization, not cookies"
        );
    }
    // The actual answers carry the same origin, the refusal (404) included.
    let state = reqwest::Client::new()
        .get(hub.http("/api/v1/projects/p1"))
        .header(header::ORIGIN, APP)
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 404);
    assert_eq!(allow_origin(&state), Some(APP));
    let published = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/p1/events"))
        .header(header::ORIGIN, "http://localhost:3000")
        .json(&serde_json::json!({"event":"log","data":{"level":"INFO","message":"hi"}}))
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success(), "{}", published.status());
    assert_eq!(allow_origin(&published), Some("http://localhost:3000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_origin_gets_no_cors_headers() {
    let hub = hub_for(&[APP], &[]).await;
    let answer = preflight(
        &hub,
        "/api/v1/projects/p1/events",
        "https://evil.example",
        "GET",
    )
    .await;
    assert_eq!(allow_origin(&answer), None);
    assert!(
        !answer
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
    );
    let state = reqwest::Client::new()
        .get(hub.http("/api/v1/projects/p1"))
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(allow_origin(&state), None);
    // A look-alike of a listed origin is not it.
    for look_alike in [
        "https://app.example.evil",
        "http://app.example",
        "https://app.example:8443",
    ] {
        let answer = preflight(&hub, "/api/v1/projects/p1", look_alike, "GET").await;
        assert_eq!(allow_origin(&answer), None, "{look_alike}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_the_hub_sends_no_cors_headers() {
    let hub = hub_for(&[], &[]).await;
    let answer = preflight(&hub, "/api/v1/projects/p1", APP, "GET").await;
    assert_eq!(allow_origin(&answer), None);
    assert_ne!(answer.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_origins_pass_the_origin_check() {
    let hub = hub_for(&[APP], &["https://other.example"]).await;
    for (origin, status) in [
        (APP, 404),
        ("https://other.example", 404),
        ("https://evil.example", 403),
    ] {
        let answer = reqwest::Client::new()
            .get(hub.http("/api/v1/projects/p1"))
            .header(header::ORIGIN, origin)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{origin}");
    }
}

#[test]
fn the_binary_refuses_what_is_not_an_exact_origin() {
    for bad in [
        "*",
        "https://app.example/path",
        "app.example",
        "ftp://x.example",
    ] {
        let out = cli::run(&["serve", "--listen", "127.0.0.1:0", "--cors-origins", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--cors-origins"), "{bad}: {err}");
        assert!(
            err.contains("https://app.example"),
            "the error shows the form: {err}"
        );
    }
}
