//! The API documentation the hub serves: OpenAPI + Swagger UI, the frames' JSON Schema
//! (checked against real frames), and the AsyncAPI document.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, TestHub, WsClient};

async fn get_json(hub: &TestHub, path: &str) -> Value {
    let response = reqwest::get(hub.http(path)).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_rest_endpoint_and_swagger_ui_is_served() {
    let hub = TestHub::start(Backend::Memory).await;
    let api = get_json(&hub, "/api/v1/openapi.json").await;
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    let paths = api["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/projects", "post"),
        ("/api/v1/projects/{project_id}", "get"),
        ("/api/v1/projects/{project_id}/generate", "post"),
        ("/api/v1/projects/{project_id}/events", "post"),
        ("/api/v1/projects/{project_id}/events", "get"),
        ("/api/v1/projects/{project_id}/progress", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/webhooks/deliveries", "get"),
        ("/api/v1/progress", "get"),
        ("/api/v1/progress/events", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    assert!(api["components"]["schemas"]["Event"].is_object());
    let ui = reqwest::get(hub.http("/docs/")).await.unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.text().await.unwrap().contains("swagger-ui"));
    let css = reqwest::get(hub.http("/docs/swagger-ui.css"))
        .await
        .unwrap();
    assert_eq!(css.status(), 200, "Swagger UI's assets are in the binary");
    let asyncapi = get_json(&hub, "/api/v1/asyncapi.json").await;
    assert_eq!(asyncapi["asyncapi"], "2.6.0");
    assert!(asyncapi["channels"]["/api/v1/projects/{project_id}/progress"]["subscribe"]["message"]["payload"].is_object());
    assert!(
        asyncapi["channels"]["/api/v1/progress/events"]["subscribe"]["message"]["payload"]
            .is_object()
    );
    let webhook = &asyncapi["channels"]["webhook"]["subscribe"]["message"];
    assert!(
        webhook["payload"]["properties"]["data"].is_object(),
        "{webhook}"
    );
    assert!(webhook["headers"]["properties"]["webhook-signature"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_frames_validate_against_the_published_schema() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        c.heartbeat_interval = Duration::from_millis(200);
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = Duration::from_millis(2);
            w.retry.base = Duration::from_millis(5);
        }
    })
    .await;
    let schema = get_json(&hub, "/api/v1/schema/events.json").await;
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");

    let mut client = WsClient::connected(&hub.ws_url("schema")).await;
    let mut frames = Vec::new();
    client.send_text(r#"{"event":"ping"}"#).await;
    let body = json!({"inject_failures": {"RENDERING": 1}});
    assert_eq!(hub.generate("schema", &body).await.0, 202);
    loop {
        let frame = client.next_json().await;
        let done = frame["event"] == "complete";
        frames.push(frame);
        if done {
            break;
        }
    }
    // A late joiner's opening frames too.
    let mut late = WsClient::connect(&hub.ws_url("schema")).await;
    frames.push(late.next_json().await);
    frames.push(late.next_json().await);
    // And a ping from the heartbeat.
    frames.push(late.next_json().await);

    let names: std::collections::BTreeSet<String> = frames
        .iter()
        .map(|f| f["event"].as_str().unwrap().to_string())
        .collect();
    for name in [
        "connected",
        "snapshot",
        "progress_update",
        "stage_change",
        "log",
        "error",
        "complete",
        "ping",
        "pong",
    ] {
        assert!(
            names.contains(name),
            "the run produced a {name} frame: {names:?}"
        );
    }
    for frame in &frames {
        let errors: Vec<String> = validator
            .iter_errors(frame)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{frame}\n{errors:?}");
    }
    // The validator is not vacuous.
    let broken = json!({"event": "progress_update", "data": {"status": "RENDERING", "progress": "half", "current_stage": "x"}});
    assert!(!validator.is_valid(&broken));
    assert!(!validator.is_valid(&json!({"event": "teleport", "data": {}})));
}

// /metrics names what an operator needs: connections by transport, projects watched,
// frames delivered / superseded / dropped, slow-consumer closes, publish → deliver
// latency, coalescing, Redis reconnects and jobs by outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_connections_frames_latency_and_jobs() {
    let hub = TestHub::start_with(Backend::Memory, |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = Duration::from_millis(2);
        }
    })
    .await;
    let mut client = WsClient::connected(&hub.ws_url("metrics")).await;
    let sse = reqwest::get(hub.http("/api/v1/projects/metrics/events"))
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(hub.generate("metrics", &json!({})).await.0, 202);
    loop {
        if client.next_event().await["event"] == "complete" {
            break;
        }
    }
    let text = reqwest::get(hub.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "hub_connections{transport=\"websocket\"}",
        "hub_connections{transport=\"sse\"}",
        "hub_projects_watched",
        "hub_frames_delivered_total",
        "hub_frames_superseded_total",
        "hub_frames_dropped_total{reason=\"slow_consumer\"}",
        "hub_slow_consumer_closes_total",
        "hub_publish_to_deliver_seconds_bucket{le=\"0.005\"}",
        "hub_progress_coalesced_total",
        "hub_redis_reconnects_total",
        "hub_new_projects_refused_total",
        "hub_jobs_total{outcome=\"completed\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    let sse_line = text
        .lines()
        .find(|l| l.starts_with("hub_connections{transport=\"sse\"}"))
        .unwrap();
    assert!(
        !sse_line.ends_with(" 0"),
        "the SSE client is counted: {sse_line}"
    );
    drop(sse);
}
