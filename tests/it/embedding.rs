//! The hub library on its own, as a program embedding it starts it (issue 22 §5): no
//! extension, so no job routes, worker or job queue; its own routes all there. And the
//! jobs as an extension: their routes merged behind the hub's access checks.

use progress_hub::config::ServeConfig;
use progress_hub::server;
use serde_json::{Value, json};

use crate::support::{Backend, TestHub, WsClient, log_event};

fn on_port_0() -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_extensions_serves_everything_but_jobs() {
    let hub = server::start(on_port_0()).await.expect("hub starts");
    let base = format!("http://{}", hub.local_addr());
    let http = reqwest::Client::new();
    for route in ["generate", "retry", "cancel"] {
        let answer = http
            .post(format!("{base}/api/v1/projects/p1/{route}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404, "{route}: no jobs, no route");
    }
    let api: Value = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = api["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/projects/{project_id}/events"));
    assert!(paths.contains_key("/api/v1/projects"), "a new project id");
    for job_path in ["generate", "retry", "cancel"] {
        assert!(
            !paths.contains_key(&format!("/api/v1/projects/{{project_id}}/{job_path}")),
            "{job_path} is the jobs' path"
        );
    }
    assert!(api["components"]["schemas"]["GenerateRequest"].is_null());
    // Its own publish path and streams work as ever.
    let created = http
        .post(format!("{base}/api/v1/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let mut client = WsClient::connect(&format!(
        "ws://{}/api/v1/projects/p1/progress",
        hub.local_addr()
    ))
    .await;
    assert_eq!(client.next_json().await["event"], "connected");
    let published = http
        .post(format!("{base}/api/v1/projects/p1/events"))
        .json(&log_event("embedded"))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202);
    assert_eq!(client.next_json().await["data"]["message"], "embedded");
    hub.shutdown();
    hub.wait().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_routes_are_documented_and_behind_the_hubs_checks() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.worker = None;
        c.auth_secret = Some("embedding-test-secret".into());
    })
    .await;
    let api: Value = reqwest::get(hub.http("/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api["paths"]["/api/v1/projects/{project_id}/generate"]["post"].is_object());
    assert!(api["paths"]["/api/v1/projects/{project_id}/retry"]["post"].is_object());
    assert!(api["paths"]["/api/v1/projects/{project_id}/cancel"]["post"].is_object());
    assert!(api["components"]["schemas"]["GenerateRequest"].is_object());
    // The hub's access control covers the merged routes: no token, no job.
    let (status, body) = hub.generate("p1", &json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
}
