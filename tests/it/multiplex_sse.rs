//! The multiplexed feed over SSE (issue 26 §1): `GET /api/v1/progress/events?projects=a,b&tags=t`,
//! the frames of the multiplexed WebSocket, and one `Last-Event-ID` that resumes every
//! project at once; refusals per subscription; hostile queries and ids refused with 400.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, Backend, SseReader, TestHub, log_event};

on_both_brokers!(
    projects_on_one_stream_each_tagged_and_resumed_at_once,
    refused_subscriptions_get_errors_and_the_others_go_on,
    a_tag_on_the_stream,
    hostile_queries_and_ids_are_refused,
);

fn path(query: &str) -> String {
    format!("/api/v1/progress/events?{query}")
}

async fn open(hub: &TestHub, query: &str, last_event_id: Option<&str>) -> SseReader {
    let mut request = reqwest::Client::new().get(hub.http(&path(query)));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut sse = SseReader::new(response);
    let (id, connected) = sse.next().await;
    assert_eq!(connected["event"], "connected", "{connected}");
    assert!(connected.get("project_id").is_none(), "{connected}");
    assert_eq!(id, None, "connected moves no position");
    sse
}

/// Reads records until every project of `projects` has said `subscribed` and, where
/// `snapshots` says so, its snapshot; returns the `subscribed` data by project and the
/// last `id:` seen.
async fn openings(
    sse: &mut SseReader,
    projects: &[&str],
    snapshots: &[&str],
) -> (HashMap<String, Value>, Option<String>) {
    let mut subscribed = HashMap::new();
    let mut snapshotted = Vec::new();
    let mut last = None;
    while subscribed.len() < projects.len() || snapshotted.len() < snapshots.len() {
        let (id, frame) = sse.next().await;
        let project = frame["project_id"].as_str().expect("tagged").to_string();
        match frame["event"].as_str().unwrap() {
            "subscribed" => {
                assert_eq!(id, None, "subscribed moves no position: {frame}");
                subscribed.insert(project, frame["data"].clone());
            }
            "snapshot" => {
                assert!(id.is_some(), "a snapshot moves its position: {frame}");
                snapshotted.push(project);
                last = id;
            }
            other => panic!("unexpected {other} in the openings: {frame}"),
        }
    }
    (subscribed, last)
}

// Two projects on one stream, each frame tagged with its project; the record's `id:`
// holds both positions, and reconnecting with it resumes both: exactly the events
// missed, none twice, each subscription `resumed` and `recovered`.
async fn projects_on_one_stream_each_tagged_and_resumed_at_once(b: Backend) {
    let hub = TestHub::start(b).await;
    hub.publish("a", support::progress(10)).await;
    hub.publish("b", support::progress(20)).await;
    let mut sse = open(&hub, "projects=a,b", None).await;
    let (subscribed, _) = openings(&mut sse, &["a", "b"], &["a", "b"]).await;
    assert_eq!(
        subscribed["a"],
        json!({"resumed": false, "recovered": true})
    );
    let ida = hub.publish("a", log_event("to a")).await;
    let (id_after_a, frame) = sse.next().await;
    assert_eq!(frame["project_id"], "a", "{frame}");
    assert_eq!(frame["id"], ida.as_str(), "the frame's own id is intact");
    let idb = hub.publish("b", log_event("to b")).await;
    let (id_after_b, frame) = sse.next().await;
    assert_eq!(frame["project_id"], "b", "{frame}");
    assert_eq!(frame["id"], idb.as_str());
    let id_after_a = id_after_a.expect("an event moves a position");
    let id_after_b = id_after_b.expect("an event moves a position");
    assert!(id_after_a.starts_with("m1."), "{id_after_a}");
    assert!(
        id_after_b.ends_with(&format!(".{ida},{idb}")),
        "both positions, in the list's order: {id_after_b}"
    );
    drop(sse);
    // Missed while away: two events of each.
    let mut missed: HashMap<&str, Vec<String>> = HashMap::new();
    for (project, message) in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")] {
        let id = hub.publish(project, log_event(message)).await;
        missed.entry(project).or_default().push(id);
    }
    let mut sse = open(&hub, "projects=a,b", Some(&id_after_b)).await;
    let mut heard: HashMap<String, Vec<String>> = HashMap::new();
    let mut resumed = HashMap::new();
    let mut last_id = None;
    while heard.values().map(Vec::len).sum::<usize>() < 4 || resumed.len() < 2 {
        let (id, frame) = sse.next().await;
        let project = frame["project_id"].as_str().unwrap().to_string();
        match frame["event"].as_str().unwrap() {
            "subscribed" => {
                resumed.insert(project, frame["data"].clone());
            }
            "log" => {
                heard
                    .entry(project)
                    .or_default()
                    .push(frame["id"].as_str().unwrap().to_string());
                last_id = id;
            }
            other => panic!("a resume sends no {other}: {frame}"),
        }
    }
    for project in ["a", "b"] {
        assert_eq!(
            resumed[project],
            json!({"resumed": true, "recovered": true})
        );
        assert_eq!(heard[project], missed[project], "exactly the missed events");
    }
    let last_id = last_id.unwrap();
    assert!(
        last_id.ends_with(&format!(".{},{}", missed["a"][1], missed["b"][1])),
        "{last_id}"
    );
    // Nothing more (no duplicate): the next record is the next live event.
    let live = hub.publish("b", log_event("live")).await;
    let (_, frame) = sse.next().await;
    assert_eq!(frame["id"], live.as_str(), "{frame}");
    // A stream of one project also takes that project's plain event id.
    let mut single = open(&hub, "projects=a", Some(&missed["a"][0])).await;
    let (_, frame) = single.next().await;
    assert_eq!(frame["event"], "subscribed");
    assert_eq!(frame["data"], json!({"resumed": true, "recovered": true}));
    let (_, frame) = single.next().await;
    assert_eq!(frame["id"], missed["a"][1].as_str());
}

const SECRET: &str = "multiplex-sse-secret";

fn token(projects: &[&str]) -> String {
    let auth = progress_hub::auth::Auth::new(SECRET).unwrap();
    let projects: Vec<String> = projects.iter().map(|p| p.to_string()).collect();
    auth.mint(&projects, false, Duration::from_secs(3600))
        .unwrap()
}

// A bad id, a project the token does not allow, a project named twice, one over the
// connection's limit: each gets its `subscription_error`; the others are served.
async fn refused_subscriptions_get_errors_and_the_others_go_on(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.auth_secret = Some(SECRET.into());
        c.max_subscriptions = 2;
    })
    .await;
    let status = reqwest::get(hub.http(&path("projects=a")))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "no token: refused before the stream");
    let query = format!(
        "projects=a,bad%20id!,forbidden,a,b,c&token={}",
        token(&["a", "b", "c"])
    );
    let mut sse = open(&hub, &query, None).await;
    let mut answers = Vec::new();
    while answers.len() < 6 {
        let (_, frame) = sse.next().await;
        if frame["event"] == "snapshot" {
            continue;
        }
        let code = frame["data"]["code"].as_str().unwrap_or("").to_string();
        answers.push((
            frame["event"].as_str().unwrap().to_string(),
            frame["project_id"].as_str().unwrap().to_string(),
            code,
        ));
    }
    let answer = |event: &str, project: &str, code: &str| {
        (event.to_string(), project.to_string(), code.to_string())
    };
    for expected in [
        answer("subscribed", "a", ""),
        answer("subscription_error", "bad id!", "INVALID_PROJECT_ID"),
        answer("subscription_error", "forbidden", "FORBIDDEN"),
        answer("subscription_error", "a", "ALREADY_SUBSCRIBED"),
        answer("subscribed", "b", ""),
        answer("subscription_error", "c", "TOO_MANY_SUBSCRIPTIONS"),
    ] {
        assert!(answers.contains(&expected), "{expected:?} in {answers:?}");
    }
    let response = reqwest::Client::new()
        .post(hub.http("/api/v1/projects/b/events"))
        .bearer_auth({
            let auth = progress_hub::auth::Auth::new(SECRET).unwrap();
            auth.mint(&["b".to_string()], true, Duration::from_secs(3600))
                .unwrap()
        })
        .json(&log_event("still served"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (_, frame) = sse.next().await;
    assert_eq!(frame["project_id"], "b", "{frame}");
    assert_eq!(frame["data"]["message"], "still served");
}

// A tag named in the query: `subscribed` with the tag, then a `project_state` per
// tagged project, without an `id:` (a tag feed resumes with a fresh snapshot).
async fn a_tag_on_the_stream(b: Backend) {
    let hub = TestHub::start_with(b, |c| c.worker = None).await;
    let (status, _) = hub.generate("tagged", &json!({"tags": ["user:7"]})).await;
    assert_eq!(status, 202);
    let mut sse = open(&hub, "tags=user:7", None).await;
    let (id, subscribed) = sse.next().await;
    assert_eq!(subscribed["event"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["tag"], "user:7");
    assert_eq!(id, None);
    let (id, state) = sse.next().await;
    assert_eq!(state["event"], "project_state", "{state}");
    assert_eq!(state["project_id"], "tagged");
    assert_eq!(state["tag"], "user:7");
    assert_eq!(id, None);
}

// Hostile queries and ids: refused with a clear 400 before any stream, and the hub
// goes on serving.
async fn hostile_queries_and_ids_are_refused(b: Backend) {
    let hub = TestHub::start(b).await;
    let client = reqwest::Client::new();
    let refused = |query: String, last_event_id: Option<String>| {
        let client = client.clone();
        let url = hub.http(&path(&query));
        async move {
            let mut request = client.get(url);
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 400, "{query}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            body["error"]["code"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(refused(String::new(), None).await, "INVALID_QUERY");
    assert_eq!(refused("projects=".into(), None).await, "INVALID_QUERY");
    assert_eq!(
        refused("projects=a&projects=b".into(), None).await,
        "INVALID_QUERY"
    );
    let many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    assert_eq!(
        refused(format!("projects={}", many.join(",")), None).await,
        "INVALID_QUERY"
    );
    // Ids: garbage, another list's, too many positions, oversized, a bare id for two.
    let id_of_a = {
        hub.publish("a", log_event("x")).await;
        let mut sse = open(&hub, "projects=a", None).await;
        let (_, id) = openings(&mut sse, &["a"], &["a"]).await;
        id.unwrap()
    };
    for (query, id) in [
        ("projects=a", "garbage".to_string()),
        ("projects=a", "m1.zzzzzzzz.e:1".into()),
        ("projects=b", id_of_a.clone()),
        ("projects=a", format!("{id_of_a},e:2")),
        ("projects=a", format!("{id_of_a}{}", "9".repeat(8_000))),
        ("projects=a,b", "e:1".into()),
        ("projects=a", "m1.%0a.e:1".into()),
    ] {
        assert_eq!(
            refused(query.into(), Some(id.clone())).await,
            "INVALID_EVENT_ID",
            "{id}"
        );
    }
    assert_eq!(
        refused(
            format!("projects=a&last_event_id={}", "x".repeat(10_000)),
            None
        )
        .await,
        "INVALID_EVENT_ID"
    );
    // Not UTF-8 in the header.
    let response = client
        .get(hub.http(&path("projects=a")))
        .header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes(b"m1.\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // The hub goes on: the same stream with its own id resumes.
    let mut sse = open(&hub, "projects=a", Some(&id_of_a)).await;
    let (_, frame) = sse.next().await;
    assert_eq!(frame["data"], json!({"resumed": true, "recovered": true}));
}
