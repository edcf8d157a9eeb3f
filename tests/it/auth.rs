//! Auth: tokens scope watching and publishing to their projects; an expiring token closes
//! with 4401 unless refreshed.

use serde_json::json;

use crate::support::{Backend, TestHub, WsClient, cli};

const SECRET: &str = "test-secret-do-not-use";

fn mint(projects: &[&str], publish: bool, ttl: &str) -> String {
    let mut args = vec!["token"];
    args.extend(projects.iter().flat_map(|p| ["--project", p]));
    args.extend(["--ttl", ttl, "--auth-secret", SECRET]);
    args.extend(publish.then_some("--publish"));
    let out = cli::run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

// With --auth-secret, tokens decide who watches and who publishes; refusals happen
// before the upgrade and say nothing about internals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_watching_and_publishing_to_their_projects() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.auth_secret = Some(SECRET.into());
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let watch_a = mint(&["a"], false, "1h");
    let publish_a = mint(&["a"], true, "1h");
    let base = hub.ws_url("a");
    assert_eq!(upgrade_status(&base, None).await, 401, "no token");
    assert_eq!(
        upgrade_status(&format!("{base}?token=garbage"), None).await,
        401
    );
    assert_eq!(
        upgrade_status(&format!("{}?token={watch_a}", hub.ws_url("b")), None).await,
        403,
        "A's token cannot watch B"
    );
    assert_eq!(
        upgrade_status(
            &format!("{base}?token={watch_a}"),
            Some("https://evil.example")
        )
        .await,
        403,
        "cross-site"
    );
    assert_eq!(
        upgrade_status(
            &format!("{base}?token={watch_a}"),
            Some("https://app.example")
        )
        .await,
        101
    );
    let mut client = WsClient::connected(&format!("{base}?token={watch_a}")).await;

    let http = reqwest::Client::new();
    let post = |token: Option<String>, project: &str| {
        let mut request = http
            .post(hub.http(&format!("/api/v1/projects/{project}/events")))
            .json(&json!({"event": "log", "data": {"level": "INFO", "message": "m"}}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = post(None, "a").await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    assert_eq!(
        post(Some(watch_a.clone()), "a").await.unwrap().status(),
        403,
        "watch tokens cannot publish"
    );
    assert_eq!(
        post(Some(publish_a.clone()), "b").await.unwrap().status(),
        403,
        "nor publish elsewhere"
    );
    assert_eq!(
        post(Some(publish_a.clone()), "a").await.unwrap().status(),
        202
    );
    assert_eq!(client.next_event().await["data"]["message"], "m");
    let generate = http
        .post(hub.http("/api/v1/projects/b/generate"))
        .bearer_auth(&publish_a)
        .send()
        .await
        .unwrap();
    assert_eq!(generate.status(), 403);
    let state = http
        .get(hub.http("/api/v1/projects/a"))
        .bearer_auth(&watch_a)
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 200);
    let sse = http
        .get(hub.http("/api/v1/projects/a/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 401);
}

// A token that expires during a session closes it with 4401, unless refreshed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_tokens_close_with_4401_unless_refreshed() {
    let hub = TestHub::start_with(Backend::Memory, |c| c.auth_secret = Some(SECRET.into())).await;
    let short = mint(&["a"], false, "2s");
    let mut lapsing = WsClient::connected(&format!("{}?token={short}", hub.ws_url("a"))).await;
    let mut refreshed = WsClient::connected(&format!("{}?token={short}", hub.ws_url("a"))).await;
    refreshed
        .send_text(
            &json!({"event": "refresh", "data": {"token": mint(&["a"], false, "1h")}}).to_string(),
        )
        .await;
    assert_eq!(
        lapsing.expect_close().await,
        Some(4401),
        "expired without refresh"
    );
    // The refreshed session outlived the first token.
    let publish = mint(&["a"], true, "1h");
    let status = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/a/events"))
        .bearer_auth(publish)
        .json(&json!({"event": "log", "data": {"level": "INFO", "message": "still here"}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    assert_eq!(
        refreshed.next_event().await["data"]["message"],
        "still here"
    );
}

/// A token signed with the test secret, with exactly these claims (an issuer's own
/// choices, such as a huge `exp` for "never" or an `nbf`).
fn signed(claims: &serde_json::Value) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// An `exp` beyond what the clock can represent (2^63, an issuer's "never") is a valid
// token that does not expire: the upgrade is answered (it used to panic and drop the
// connection), and in a `refresh` frame it keeps the session alive (it used to kill the
// reader task, so the client was closed 4408 while it was speaking).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_exp_is_beyond_the_clock_never_expires() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.auth_secret = Some(SECRET.into());
        c.heartbeat_interval = std::time::Duration::from_millis(300);
        c.heartbeat_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    let never = signed(&json!({"projects": ["a"], "exp": 1u64 << 63}));
    let huge = signed(&json!({"projects": ["a"], "exp": u64::MAX}));
    for token in [&never, &huge] {
        assert_eq!(
            upgrade_status(&format!("{}?token={token}", hub.ws_url("a")), None).await,
            101
        );
    }
    let short = mint(&["a"], false, "1h");
    let mut client = WsClient::connected(&format!("{}?token={short}", hub.ws_url("a"))).await;
    client
        .send_text(&json!({"event": "refresh", "data": {"token": never}}).to_string())
        .await;
    // The reader task is alive: a ping is answered, again and again past the timeout.
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        client.send_text(r#"{"event":"ping"}"#).await;
        loop {
            let frame = client.next_json().await;
            if frame["event"] == "pong" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

// `nbf` (not before) is honoured: a token that is not valid yet is refused like an
// expired one, and one whose `nbf` has passed is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_valid_yet_is_refused() {
    let hub = TestHub::start_with(Backend::Memory, |c| c.auth_secret = Some(SECRET.into())).await;
    let exp = now_secs() + 3600;
    let later = signed(&json!({"projects": ["a"], "exp": exp, "nbf": now_secs() + 600}));
    let earlier = signed(&json!({"projects": ["a"], "exp": exp, "nbf": now_secs() - 10}));
    let url = |t: &str| format!("{}?token={t}", hub.ws_url("a"));
    assert_eq!(upgrade_status(&url(&later), None).await, 401, "nbf ahead");
    assert_eq!(upgrade_status(&url(&earlier), None).await, 101, "nbf past");
}

// The `Authorization` scheme is case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let hub = TestHub::start_with(Backend::Memory, |c| c.auth_secret = Some(SECRET.into())).await;
    let publish = mint(&["a"], true, "1h");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let status = reqwest::Client::new()
            .post(hub.http("/api/v1/projects/a/events"))
            .header("authorization", format!("{scheme} {publish}"))
            .json(&json!({"event": "log", "data": {"level": "INFO", "message": "m"}}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 202, "{scheme}");
    }
    let status = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/a/events"))
        .header("authorization", format!("Basic {publish}"))
        .json(&json!({"event": "log", "data": {"level": "INFO", "message": "m"}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "another scheme is no token");
}

// An empty secret (flag or environment) would silently turn access control off: the
// hub refuses to start and says why.
#[test]
fn an_empty_auth_secret_is_refused_at_start() {
    for (args, envs) in [
        (vec!["--auth-secret", ""], vec![]),
        (vec![], vec![("HUB_AUTH_SECRET", "")]),
    ] {
        let mut child = cli::command()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .envs(envs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary runs");
        // A hub that starts serves until stopped; one that refuses exits at once.
        let deadline = std::time::Instant::now() + crate::support::PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let status = status.unwrap_or_else(|| panic!("{args:?}: the hub started; {stderr}"));
        assert!(!status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains("empty"), "{args:?}: {stderr}");
    }
}
