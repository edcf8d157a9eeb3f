//! One connection, many projects (issue 26 §1): `GET /api/v1/progress`, where the client
//! subscribes to projects with frames of its own and hears each one's frames tagged with
//! its `project_id`: snapshots, resume per subscription, unsubscribe, refusals that harm
//! nothing else, hostile input and bursts, one `complete` per run.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Backend, PATIENCE, TestHub, WsClient, fast_hub, log_event};

on_both_brokers!(
    two_projects_on_one_connection_each_tagged,
    a_late_subscription_gets_a_snapshot,
    each_subscription_resumes_from_its_own_position,
    unsubscribe_stops_a_projects_frames,
    refused_subscriptions_leave_the_others_working,
    a_burst_of_10000_subscribes_is_bounded_and_harms_nobody,
    malformed_and_hostile_frames_get_clear_errors,
    exactly_one_complete_per_run_per_subscription,
);

fn url(hub: &TestHub) -> String {
    format!("ws://{}/api/v1/progress", hub.addr)
}

/// A multiplexed connection, past its `connected`.
async fn connect(hub: &TestHub) -> WsClient {
    connect_to(&url(hub)).await
}

async fn connect_to(url: &str) -> WsClient {
    let mut client = WsClient::connect(url).await;
    let connected = client.next_json().await;
    assert_eq!(connected["event"], "connected", "{connected}");
    assert!(connected.get("project_id").is_none(), "{connected}");
    assert!(connected["data"].get("project_id").is_none(), "{connected}");
    assert_eq!(connected["data"]["heartbeat_interval"], 30, "{connected}");
    client
}

async fn subscribe(client: &mut WsClient, project: &str, last_event_id: Option<&str>) {
    let mut data = json!({ "project_id": project });
    if let Some(id) = last_event_id {
        data["last_event_id"] = json!(id);
    }
    let frame = json!({"event": "subscribe", "data": data});
    client.send_text(&frame.to_string()).await;
}

/// Subscribes and reads the answer, which must be `subscribed`.
async fn subscribed(client: &mut WsClient, project: &str, last_event_id: Option<&str>) -> Value {
    subscribe(client, project, last_event_id).await;
    let answer = client.next_event().await;
    assert_eq!(answer["event"], "subscribed", "{answer}");
    assert_eq!(answer["project_id"], project, "{answer}");
    answer
}

/// Unsubscribes and reads the answer, which must be `unsubscribed` (and only that).
async fn unsubscribed(client: &mut WsClient, project: &str) {
    let frame = json!({"event": "unsubscribe", "data": {"project_id": project}});
    client.send_text(&frame.to_string()).await;
    let answer = client.next_event().await;
    assert_eq!(
        answer,
        json!({"event": "unsubscribed", "project_id": project, "data": {}})
    );
}

/// The next `subscription_error`'s code, checking the project it names.
async fn refused(client: &mut WsClient, project: Option<&str>) -> String {
    let answer = client.next_event().await;
    assert_eq!(answer["event"], "subscription_error", "{answer}");
    assert_eq!(
        answer.get("project_id").and_then(Value::as_str),
        project,
        "{answer}"
    );
    assert!(
        answer["data"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
    answer["data"]["code"].as_str().unwrap().to_string()
}

// Two projects on one socket: each one's frames come tagged with it, ids intact.
async fn two_projects_on_one_connection_each_tagged(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = connect(&hub).await;
    let a = subscribed(&mut client, "a", None).await;
    assert_eq!(a["data"], json!({"resumed": false, "recovered": true}));
    subscribed(&mut client, "b", None).await;
    let ida = hub.publish("a", log_event("to a")).await;
    let idb = hub.publish("b", log_event("to b")).await;
    let first = client.next_event().await;
    assert_eq!(first["project_id"], "a", "{first}");
    assert_eq!(first["id"], ida.as_str());
    assert_eq!(first["data"]["message"], "to a");
    let second = client.next_event().await;
    assert_eq!(second["project_id"], "b", "{second}");
    assert_eq!(second["id"], idb.as_str());
    assert_eq!(second["data"]["message"], "to b");
    // The single-project endpoint is untouched: no project_id added there.
    let mut single = WsClient::connected(&hub.ws_url("a")).await;
    let snapshot = single.next_event().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert!(snapshot.get("project_id").is_none(), "{snapshot}");
    hub.publish("a", log_event("again")).await;
    let plain = single.next_event().await;
    assert_eq!(plain["data"]["message"], "again");
    assert!(plain.get("project_id").is_none(), "{plain}");
    let tagged = client.next_event().await;
    assert_eq!(tagged["project_id"], "a");
    assert_eq!(tagged["data"]["message"], "again");
}

// A subscription to a project with history opens with its snapshot, then live.
async fn a_late_subscription_gets_a_snapshot(b: Backend) {
    let hub = TestHub::start(b).await;
    let last = hub.publish("p", support::progress(40)).await;
    let mut client = connect(&hub).await;
    let answer = subscribed(&mut client, "p", None).await;
    assert_eq!(answer["data"], json!({"resumed": false, "recovered": true}));
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["project_id"], "p");
    assert_eq!(snapshot["data"]["progress"], 40);
    assert_eq!(snapshot["data"]["last_event_id"], last.as_str());
    let live = hub.publish("p", log_event("live")).await;
    let frame = client.next_event().await;
    assert_eq!(
        frame["id"],
        live.as_str(),
        "no duplicate, no gap after the snapshot"
    );
    assert_eq!(frame["project_id"], "p");
}

// Each subscription resumes from its own last_event_id, and `recovered` says honestly
// whether it could.
async fn each_subscription_resumes_from_its_own_position(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut a = Vec::new();
    for i in 0..4 {
        a.push(hub.publish("a", log_event(&format!("a{i}"))).await);
    }
    hub.publish("b", log_event("b0")).await;
    let mut client = connect(&hub).await;
    let answer = subscribed(&mut client, "a", Some(&a[1])).await;
    assert_eq!(answer["data"], json!({"resumed": true, "recovered": true}));
    for id in &a[2..] {
        let frame = client.next_event().await;
        assert_eq!(frame["project_id"], "a", "{frame}");
        assert_eq!(
            frame["id"],
            id.as_str(),
            "exactly the missed events, in order"
        );
    }
    // An epoch b never had: not recovered, and a snapshot that says so.
    let answer = subscribed(&mut client, "b", Some("NotAnEpoch:7")).await;
    assert_eq!(answer["data"], json!({"resumed": true, "recovered": false}));
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["project_id"], "b");
    assert_eq!(snapshot["data"]["recovered"], false);
    // Up to date: nothing more, then live.
    let mut other = connect(&hub).await;
    let answer = subscribed(&mut other, "a", Some(&a[3])).await;
    assert_eq!(answer["data"], json!({"resumed": true, "recovered": true}));
    let live = hub.publish("a", log_event("live")).await;
    assert_eq!(other.next_event().await["id"], live.as_str());
    assert_eq!(client.next_event().await["id"], live.as_str());
}

// After `unsubscribed`, nothing more of that project; the other subscription goes on.
async fn unsubscribe_stops_a_projects_frames(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = connect(&hub).await;
    subscribed(&mut client, "a", None).await;
    subscribed(&mut client, "b", None).await;
    unsubscribed(&mut client, "a").await;
    hub.publish("a", log_event("not for you")).await;
    let idb = hub.publish("b", log_event("for you")).await;
    let next = client.next_event().await;
    assert_eq!(next["project_id"], "b", "a's event must not come: {next}");
    assert_eq!(next["id"], idb.as_str());
    // Unsubscribing again is answered the same; subscribing again works.
    unsubscribed(&mut client, "a").await;
    subscribed(&mut client, "a", None).await;
    let snapshot = client.next_event().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert!(snapshot["data"]["last_event_id"].as_str().is_some());
    let ida = hub.publish("a", log_event("welcome back")).await;
    assert_eq!(client.next_event().await["id"], ida.as_str());
}

const SECRET: &str = "multiplex-test-secret";

fn token(projects: &[&str], publish: bool) -> String {
    let auth = progress_hub::auth::Auth::new(SECRET).unwrap();
    let projects: Vec<String> = projects.iter().map(|p| p.to_string()).collect();
    auth.mint(&projects, publish, Duration::from_secs(3600))
        .unwrap()
}

/// Publishes with a token allowed to (access control on); returns the event id.
async fn publish_with_token(hub: &TestHub, project: &str, event: &Value) -> String {
    let response = reqwest::Client::new()
        .post(hub.http(&format!("/api/v1/projects/{project}/events")))
        .bearer_auth(token(&[project], true))
        .json(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

// A bad id, a project the token does not allow, a second subscribe, a tag, one over
// the limit: each refused with its code, and the subscriptions that were accepted go on.
async fn refused_subscriptions_leave_the_others_working(b: Backend) {
    let hub = TestHub::start_with(b, |c| {
        c.auth_secret = Some(SECRET.into());
        c.max_subscriptions = 2;
    })
    .await;
    // No token, or a bad one: refused before the upgrade.
    let status = reqwest::get(hub.http("/api/v1/progress"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let mut client = connect_to(&format!(
        "{}?token={}",
        url(&hub),
        token(&["a", "b", "c"], false)
    ))
    .await;
    subscribed(&mut client, "a", None).await;
    subscribe(&mut client, "bad id!", None).await;
    assert_eq!(
        refused(&mut client, Some("bad id!")).await,
        "INVALID_PROJECT_ID"
    );
    subscribe(&mut client, "forbidden", None).await;
    assert_eq!(refused(&mut client, Some("forbidden")).await, "FORBIDDEN");
    subscribe(&mut client, "a", None).await;
    assert_eq!(refused(&mut client, Some("a")).await, "ALREADY_SUBSCRIBED");
    subscribe(&mut client, "a", Some("not-an-id")).await;
    assert_eq!(refused(&mut client, Some("a")).await, "INVALID_EVENT_ID");
    client
        .send_text(r#"{"event":"subscribe","data":{"project_id":"x","tag":"nightly"}}"#)
        .await;
    assert_eq!(refused(&mut client, None).await, "UNSUPPORTED_SUBSCRIPTION");
    subscribed(&mut client, "b", None).await;
    subscribe(&mut client, "c", None).await;
    assert_eq!(
        refused(&mut client, Some("c")).await,
        "TOO_MANY_SUBSCRIPTIONS"
    );
    let ida = publish_with_token(&hub, "a", &log_event("still here")).await;
    let frame = client.next_event().await;
    assert_eq!(frame["project_id"], "a", "{frame}");
    assert_eq!(frame["id"], ida.as_str());
    // Unsubscribing makes room again.
    unsubscribed(&mut client, "b").await;
    subscribed(&mut client, "c", None).await;
}

// 10,000 subscribe frames in one burst: the first `max_subscriptions` are accepted,
// every other one is answered with TOO_MANY_SUBSCRIPTIONS, in order, and a watcher on
// another connection is served meanwhile.
async fn a_burst_of_10000_subscribes_is_bounded_and_harms_nobody(b: Backend) {
    const BURST: usize = 10_000;
    const LIMIT: usize = 100;
    let hub = TestHub::start_with(b, |c| c.max_subscriptions = LIMIT).await;
    let mut bystander = WsClient::connected(&hub.ws_url("bystander")).await;
    let client = connect(&hub).await;
    let (mut sink, mut stream) = client.ws.split();
    let sending = tokio::spawn(async move {
        for i in 0..BURST {
            let frame = json!({"event": "subscribe", "data": {"project_id": format!("p{i}")}});
            sink.feed(Message::text(frame.to_string())).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    let id = hub.publish("bystander", log_event("served")).await;
    assert_eq!(bystander.next_event().await["id"], id.as_str());
    let mut answers: HashMap<String, usize> = HashMap::new();
    let mut refused_from = None;
    let mut seen = 0;
    while seen < BURST {
        let msg = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("answers keep coming")
            .expect("open")
            .expect("no error");
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        let event = frame["event"].as_str().unwrap().to_string();
        if event == "ping" || event == "broker_status" {
            continue;
        }
        seen += 1;
        let n: usize = frame["project_id"].as_str().unwrap()[1..].parse().unwrap();
        if event == "subscription_error" {
            assert_eq!(frame["data"]["code"], "TOO_MANY_SUBSCRIPTIONS", "{frame}");
            assert!(n >= LIMIT, "{frame}");
            refused_from.get_or_insert(n);
        } else {
            assert_eq!(event, "subscribed", "{frame}");
            assert!(n < LIMIT, "{frame}");
        }
        *answers.entry(event).or_default() += 1;
    }
    assert_eq!(answers.get("subscribed"), Some(&LIMIT));
    assert_eq!(answers.get("subscription_error"), Some(&(BURST - LIMIT)));
    assert_eq!(refused_from, Some(LIMIT));
    let _sink = sending.await.unwrap();
    // The accepted ones work.
    let id = hub.publish("p7", log_event("seven")).await;
    loop {
        let msg = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["event"] == "log" {
            assert_eq!(frame["project_id"], "p7");
            assert_eq!(frame["id"], id.as_str());
            break;
        }
    }
}

// Junk, unknown events and hostile ids are answered with an error and change nothing;
// an oversized frame closes that connection only (1009), as on the single endpoint.
async fn malformed_and_hostile_frames_get_clear_errors(b: Backend) {
    let hub = TestHub::start(b).await;
    let mut client = connect(&hub).await;
    subscribed(&mut client, "ok", None).await;
    for junk in [
        "not json",
        "{",
        "[1,2]",
        "{}",
        r#"{"event":"bogus"}"#,
        r#"{"event":5}"#,
        &"[".repeat(10_000),
    ] {
        client.send_text(junk).await;
        assert_eq!(
            refused(&mut client, None).await,
            "INVALID_FRAME",
            "{junk:.40}"
        );
    }
    let long = "x".repeat(1000);
    for (frame, named) in [
        (r#"{"event":"subscribe"}"#.to_string(), None),
        (
            r#"{"event":"subscribe","data":{"project_id":7}}"#.to_string(),
            None,
        ),
        (
            r#"{"event":"subscribe","data":{"project_id":"../../etc"}}"#.to_string(),
            Some("../../etc"),
        ),
        (
            r#"{"event":"subscribe","data":{"project_id":"a\"b"}}"#.to_string(),
            Some("a\"b"),
        ),
        (
            format!(r#"{{"event":"subscribe","data":{{"project_id":"{long}"}}}}"#),
            Some(&long[..64]),
        ),
        (
            r#"{"event":"unsubscribe","data":{"project_id":"../x"}}"#.to_string(),
            Some("../x"),
        ),
        (r#"{"event":"unsubscribe"}"#.to_string(), None),
    ] {
        client.send_text(&frame).await;
        assert_eq!(
            refused(&mut client, named).await,
            "INVALID_PROJECT_ID",
            "{frame:.60}"
        );
    }
    // A ping is still answered, and the subscription still delivers.
    client.send_text(r#"{"event":"ping"}"#).await;
    assert_eq!(client.next_event().await["event"], "pong");
    let id = hub.publish("ok", log_event("fine")).await;
    assert_eq!(client.next_event().await["id"], id.as_str());
    // Oversized: this connection closes with 1009; another one is unaffected.
    let mut other = connect(&hub).await;
    subscribed(&mut other, "ok", None).await;
    assert_eq!(other.next_event().await["event"], "snapshot");
    client.send_text(&"x".repeat(128 * 1024)).await;
    assert_eq!(client.expect_close().await, Some(1009));
    let id = hub.publish("ok", log_event("still fine")).await;
    assert_eq!(other.next_event().await["id"], id.as_str());
}

// Two real runs watched on one connection: each subscription hears its run's
// `complete` exactly once.
async fn exactly_one_complete_per_run_per_subscription(b: Backend) {
    let hub = fast_hub(b).await;
    let mut client = connect(&hub).await;
    subscribed(&mut client, "run-a", None).await;
    subscribed(&mut client, "run-b", None).await;
    for project in ["run-a", "run-b"] {
        let (status, answer) = hub.generate(project, &json!({})).await;
        assert_eq!(status, 202, "{answer}");
    }
    let mut completes: HashMap<String, usize> = HashMap::new();
    let mut done = 0;
    while done < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(60), client.next_event())
            .await
            .expect("the runs complete");
        let project = frame["project_id"].as_str().expect("tagged").to_string();
        if frame["event"] == "complete" {
            *completes.entry(project).or_default() += 1;
            done += 1;
        }
    }
    // A marker after the ends: no second `complete` came before it.
    for project in ["run-a", "run-b"] {
        hub.publish(project, log_event("marker")).await;
    }
    let mut markers = 0;
    while markers < 2 {
        let frame = client.next_event().await;
        match frame["event"].as_str() {
            Some("complete") => panic!("a second complete: {frame}"),
            Some("log") if frame["data"]["message"] == "marker" => markers += 1,
            _ => {}
        }
    }
    assert_eq!(completes.get("run-a"), Some(&1));
    assert_eq!(completes.get("run-b"), Some(&1));
}

// A hub restart on Redis: the connection is closed with 1012, and a new connection to
// the next hub resumes every subscription from its own position, recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_hub_restart_each_subscription_resumes() {
    let mut hub = TestHub::start(Backend::Redis).await;
    let mut client = connect(&hub).await;
    subscribed(&mut client, "a", None).await;
    subscribed(&mut client, "b", None).await;
    let mut last = HashMap::new();
    for project in ["a", "b"] {
        let id = hub.publish(project, log_event("before")).await;
        let frame = client.next_event().await;
        assert_eq!(frame["id"], id.as_str());
        last.insert(project, id);
    }
    let redis = hub.redis.take().expect("a Redis-backed hub");
    hub.stop().await;
    assert_eq!(client.expect_close().await, Some(1012));
    let hub = TestHub::start_with_redis(Some(redis), |_| {}).await;
    let mut missed = HashMap::new();
    for project in ["a", "b"] {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                hub.publish(project, log_event(&format!("missed {i}")))
                    .await,
            );
        }
        missed.insert(project, ids);
    }
    let mut client = connect(&hub).await;
    for project in ["a", "b"] {
        let answer = subscribed(&mut client, project, Some(&last[project])).await;
        assert_eq!(answer["data"], json!({"resumed": true, "recovered": true}));
        for id in &missed[project] {
            let frame = client.next_event().await;
            assert_eq!(frame["project_id"], project, "{frame}");
            assert_eq!(frame["id"], id.as_str(), "the missed events, in order");
        }
    }
}

// The slow-consumer rule applies to the connection: a multiplexed client that stops
// reading while two of its projects publish big logs is closed (4429, or dropped when
// not even the close frame fits), and a reader of one of them gets every log, in order.
// On Redis, whose round trips pace the publisher as a worker's would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_connection_that_stops_reading_is_a_slow_consumer() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut stalled = connect(&hub).await;
    subscribed(&mut stalled, "s1", None).await;
    subscribed(&mut stalled, "s2", None).await;
    let mut reader = WsClient::connected(&hub.ws_url("s1")).await;
    let before = support::metric(&hub, "hub_slow_consumer_closes_total").await;
    let padding = "x".repeat(4096);
    let mut published = 0;
    let mut read = 0;
    let closed = loop {
        assert!(published < 20_000, "never closed as a slow consumer");
        for project in ["s1", "s2"] {
            let frame = format!(
                r#"{{"event":"log","data":{{"level":"INFO","message":"{published} {padding}"}}}}"#
            );
            hub.publish_raw(project, &frame).await;
        }
        // The reader keeps up, frame by frame, in order.
        let text = reader.next_text().await;
        assert!(
            text.contains(&format!(r#""message":"{read} "#)),
            "log {read} next: {text:.80}"
        );
        read += 1;
        published += 1;
        if published % 50 == 0
            && support::metric(&hub, "hub_slow_consumer_closes_total").await > before
        {
            break published;
        }
    };
    assert!(closed > 1, "it read nothing, yet took some");
    if let Some(code) = stalled.expect_close().await {
        assert_eq!(code, 4429);
    }
    // The reader is unharmed.
    let id = hub.publish("s1", log_event("after")).await;
    loop {
        let frame = reader.next_event().await;
        if frame["id"] == id.as_str() {
            break;
        }
        assert_eq!(frame["event"], "log", "{frame}");
    }
}

// A subscription resumed during an outage cannot read its gap: it says `recovered:
// false`. Its gap must still reach it once the broker is back, before its next live
// event (as on the single-project endpoint), and in order, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumed_during_an_outage_gets_its_gap_before_live_events() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut watcher = WsClient::connected(&hub.ws_url("mgap")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(hub.publish("mgap", log_event(&format!("{i}"))).await);
        assert_eq!(watcher.next_event().await["id"], ids[i].as_str());
    }
    let mut client = connect(&hub).await;
    hub.redis().pause();
    subscribe(&mut client, "mgap", Some(&ids[0])).await;
    let answer = client.next_event().await;
    hub.redis().resume();
    assert_eq!(answer["event"], "subscribed", "{answer}");
    assert_eq!(answer["data"]["recovered"], false, "{answer}");
    ids.push(hub.publish("mgap", log_event("live")).await);
    for id in &ids[1..] {
        let frame = client.next_event().await;
        assert_eq!(frame["project_id"], "mgap", "{frame}");
        assert_eq!(frame["id"], id.as_str(), "in order, no gap: {frame}");
    }
}
