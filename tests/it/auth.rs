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
