//! Tags (issue 26 §2): a project's run carries tags, given by `generate`, by the publish
//! API (top-level `tags`) and by the CLI; the state lists them (`"tags": [...]`), a
//! frame never carries them, and hostile tags are refused with a clear error that
//! publishes nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, TestHub, WsClient, layout, log_event, progress};
use progress_hub::wire::Tag;

on_both_brokers!(
    generate_and_publish_give_the_run_its_tags,
    hostile_tags_are_refused_and_publish_nothing,
    the_list_pages_a_tags_projects_newest_first,
    the_list_filters_by_status_and_since,
    bad_list_parameters_get_a_400_naming_them,
    a_tag_subscription_gets_a_snapshot_then_every_change,
    projects_tagged_within_one_poll_are_all_followed,
    refused_tag_subscriptions_say_why_and_harm_nothing,
    a_burst_of_10000_tag_subscribes_gets_clear_errors,
);

/// A token from `progress-hub token --auth-secret <secret> <args>`.
pub(crate) fn mint(secret: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "--auth-secret", secret];
    all.extend(args);
    let out = crate::support::cli::run(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Publishes a progress update giving the run `tags`, with `token`: the status.
async fn post_as(hub: &TestHub, token: &str, project: &str, tags: Value) -> u16 {
    reqwest::Client::new()
        .post(hub.http(&format!("/api/v1/projects/{project}/events")))
        .bearer_auth(token)
        .json(&tagged(progress(10), tags))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A multiplexed connection, past its `connected`.
pub(crate) async fn multiplexed(hub: &TestHub, token: Option<&str>) -> WsClient {
    let mut url = format!("ws://{}/api/v1/progress", hub.addr);
    if let Some(token) = token {
        url.push_str(&format!("?token={token}"));
    }
    let mut client = WsClient::connect(&url).await;
    assert_eq!(client.next_json().await["event"], "connected");
    client
}

pub(crate) async fn subscribe_tag(client: &mut WsClient, data: Value) {
    let frame = json!({"event": "subscribe", "data": data});
    client.send_text(&frame.to_string()).await;
}

/// The next `project_state` (of `tag`): its project and state.
pub(crate) async fn next_state(client: &mut WsClient, tag: &str) -> (String, Value) {
    let frame = client.next_event().await;
    assert_eq!(frame["event"], "project_state", "{frame}");
    assert_eq!(frame["tag"], tag, "{frame}");
    let project = frame["project_id"].as_str().unwrap().to_string();
    assert_eq!(frame["data"]["project_id"], project.as_str(), "{frame}");
    (project, frame["data"].clone())
}

/// What the list and the tag feed give of a project: `GET /api/v1/projects/{id}`'s object
/// without the two fields only that GET computes (`watchers`, read from presence, and
/// `stalled`, from the hub's --stall-after).
pub(crate) async fn listed_state(hub: &TestHub, project: &str) -> Value {
    let mut state = hub.project_state(project).await;
    let fields = state.as_object_mut().expect("an object");
    for only_get in ["watchers", "stalled"] {
        assert!(fields.remove(only_get).is_some(), "GET has {only_get}");
    }
    state
}

/// `GET /api/v1/projects?<query>`: the status and the answer.
pub(crate) async fn list(hub: &TestHub, query: &str) -> (u16, Value) {
    let response = reqwest::get(hub.http(&format!("/api/v1/projects?{query}")))
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Every page of `query` with `limit`, the project ids in order.
pub(crate) async fn all_pages(hub: &TestHub, query: &str, limit: usize) -> (Vec<String>, usize) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut q = format!("{query}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = list(hub, &q).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let projects = page["projects"].as_array().unwrap();
        assert!(projects.len() <= limit, "{page}");
        for p in projects {
            // Each entry is what GET /api/v1/projects/{id} answers.
            let id = p["project_id"].as_str().unwrap().to_string();
            assert_eq!(*p, listed_state(hub, &id).await, "{id}");
            ids.push(id);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (ids, pages),
        }
        assert!(pages < 50, "no end to the pages");
    }
}

pub(crate) fn tagged(event: Value, tags: Value) -> Value {
    let mut event = event;
    event["tags"] = tags;
    event
}

async fn generate_and_publish_give_the_run_its_tags(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    let (status, answer) = hub
        .generate("gen-t", &json!({"tags": ["user:7", "team:2"]}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let state = hub.project_state("gen-t").await;
    assert_eq!(state["status"], "QUEUED", "{state}");
    assert_eq!(state["tags"], json!(["user:7", "team:2"]), "{state}");

    // The publish API: the tags beside the event; the frame is as it always was.
    let mut live = WsClient::connected(&hub.ws_url("pub-t")).await;
    let (status, answer) = hub
        .post_event("pub-t", &tagged(progress(10), json!(["user:7"])))
        .await;
    assert_eq!(status, 202, "{answer}");
    let frame = live.next_event().await;
    assert_eq!(frame["event"], "progress_update", "{frame}");
    assert!(
        frame.get("tags").is_none() && frame["data"].get("tags").is_none(),
        "{frame}"
    );
    // A later event without tags keeps them; one with tags replaces them.
    hub.publish("pub-t", log_event("no tags here")).await;
    assert_eq!(hub.project_state("pub-t").await["tags"], json!(["user:7"]));
    let (status, _) = hub
        .post_event("pub-t", &tagged(progress(20), json!(["team:9"])))
        .await;
    assert_eq!(status, 202);
    assert_eq!(hub.project_state("pub-t").await["tags"], json!(["team:9"]));
    // A project never tagged lists none.
    hub.publish("plain", progress(5)).await;
    assert_eq!(hub.project_state("plain").await["tags"], json!([]));

    if backend == Backend::Redis {
        // Each tag's index names the project, in the tag's own key (its own slot).
        let mut conn = hub.redis().connection().await;
        for (tag, project) in [
            ("user:7", "gen-t"),
            ("team:2", "gen-t"),
            ("user:7", "pub-t"),
        ] {
            let key = layout::tag_index_key(&Tag::parse(tag).unwrap());
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(&key)
                .arg(project)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(score.is_some(), "{key} lacks {project}");
        }
    }
}

async fn hostile_tags_are_refused_and_publish_nothing(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    let long = "t".repeat(65);
    let many: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    let hostile = [
        json!("user:7"),
        json!([7]),
        json!([null]),
        json!([""]),
        json!([long]),
        json!(["a,b"]),
        json!(["{slot}"]),
        json!(["a b"]),
        json!(["ü"]),
        json!(["x\u{0}"]),
        json!(["a", "a"]),
        json!(many),
        json!({"tag": "user:7"}),
    ];
    for tags in hostile {
        let (status, answer) = hub
            .post_event("hostile-t", &tagged(progress(10), tags.clone()))
            .await;
        assert_eq!(status, 422, "{tags}: {answer}");
        assert_eq!(answer["error"]["field"], "tags", "{tags}: {answer}");
        let (status, answer) = hub.generate("hostile-g", &json!({"tags": tags})).await;
        assert_eq!(status, 422, "{tags}: {answer}");
        assert_eq!(answer["error"]["field"], "tags", "{tags}: {answer}");
    }
    for project in ["hostile-t", "hostile-g"] {
        let status = reqwest::get(hub.http(&format!("/api/v1/projects/{project}")))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{project} was created by a refused request");
    }
    assert_eq!(hub.post_event("hostile-t", &progress(1)).await.0, 202);
}

async fn the_list_pages_a_tags_projects_newest_first(backend: Backend) {
    let hub = TestHub::start(backend).await;
    // Tagged in the order of their ids: newest first is the reverse (ties of the same
    // millisecond go by id, descending).
    let tagged_order: Vec<String> = (0..7).map(|i| format!("list-{i}")).collect();
    for project in &tagged_order {
        let (status, _) = hub
            .post_event(project, &tagged(progress(10), json!(["user:1"])))
            .await;
        assert_eq!(status, 202);
    }
    hub.post_event("other", &tagged(progress(10), json!(["user:2"])))
        .await;
    let newest_first: Vec<String> = tagged_order.iter().rev().cloned().collect();
    let (ids, pages) = all_pages(&hub, "tag=user:1", 3).await;
    assert_eq!(ids, newest_first);
    assert!(pages >= 3, "{pages} pages of 3 for 7 projects");
    assert_eq!(all_pages(&hub, "tag=user:1", 100).await.0, newest_first);
    // A project given other tags leaves the tag's list (the state is the truth).
    hub.post_event("list-3", &tagged(progress(20), json!(["team:5"])))
        .await;
    let (ids, _) = all_pages(&hub, "tag=user:1", 100).await;
    assert!(!ids.contains(&"list-3".to_string()), "{ids:?}");
    assert_eq!(all_pages(&hub, "tag=team:5", 100).await.0, ["list-3"]);
    // A tag nobody carries: an empty list.
    let (status, page) = list(&hub, "tag=nobody").await;
    assert_eq!(status, 200);
    assert_eq!(page, json!({"projects": [], "next_cursor": null}));
}

async fn the_list_filters_by_status_and_since(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    let before = progress_hub::wire::now_iso8601();
    hub.post_event("f-run", &tagged(progress(10), json!(["team:3"])))
        .await;
    let (status, _) = hub.generate("f-queued", &json!({"tags": ["team:3"]})).await;
    assert_eq!(status, 202);
    hub.post_event("f-done", &tagged(progress(10), json!(["team:3"])))
        .await;
    hub.publish(
        "f-done",
        json!({"event": "complete", "data": {"status": "FAILED"}}),
    )
    .await;
    let ids = |page: &Value| -> Vec<String> {
        page["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["project_id"].as_str().unwrap().to_string())
            .collect()
    };
    for (status, want) in [
        ("active", vec!["f-queued", "f-run"]),
        ("ended", vec!["f-done"]),
        ("QUEUED", vec!["f-queued"]),
        ("RENDERING,FAILED", vec!["f-done", "f-run"]),
        ("CANCELLED", vec![]),
    ] {
        let (code, page) = list(&hub, &format!("tag=team:3&status={status}")).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(ids(&page), want, "status={status}");
    }
    let (_, page) = list(&hub, &format!("tag=team:3&since={before}")).await;
    assert_eq!(ids(&page).len(), 3, "{page}");
    let (_, page) = list(&hub, "tag=team:3&since=2999-01-01T00:00:00Z").await;
    assert_eq!(ids(&page), Vec::<String>::new(), "{page}");
}

async fn bad_list_parameters_get_a_400_naming_them(backend: Backend) {
    let hub = TestHub::start(backend).await;
    let long = "x".repeat(10_000);
    // No tag at all lists every project (`all_projects.rs`); an empty one is invalid.
    for (query, field) in [
        ("tag=", "tag"),
        ("tag=a%2Cb", "tag"),
        ("tag=%7Bslot%7D", "tag"),
        (&format!("tag={long}") as &str, "tag"),
        ("tag=a&status=running", "status"),
        ("tag=a&status=", "status"),
        ("tag=a&since=yesterday", "since"),
        ("tag=a&since=1969-01-01T00:00:00Z", "since"),
        ("tag=a&limit=0", "limit"),
        ("tag=a&limit=101", "limit"),
        ("tag=a&limit=-1", "limit"),
        ("tag=a&limit=ten", "limit"),
        ("tag=a&cursor=nonsense", "cursor"),
        ("tag=a&cursor=1.bad%20id", "cursor"),
        ("tag=a&cursor=-1.p", "cursor"),
        ("tag=a&tag=b", "query"),
        ("tag=a&project=p", "query"),
    ] {
        let (status, answer) = list(&hub, query).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(
            answer["error"]["code"], "INVALID_QUERY",
            "{query}: {answer}"
        );
        assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
    }
}

// On a Redis Cluster a tag's projects live in many slots and its index in its own: one
// hub tags them, the other lists them newest first and feeds them to a tag subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_lists_and_feeds_a_tags_projects_across_slots() {
    let cluster = crate::support::RedisCluster::start().await;
    let a = TestHub::start_on(cluster.url(), |c| c.worker = None).await;
    let b = TestHub::start_on(cluster.url(), |c| c.worker = None).await;
    let tagged_order: Vec<String> = (0..12).map(|i| format!("cl-{i:02}")).collect();
    for project in &tagged_order {
        let (status, answer) = a
            .post_event(project, &tagged(progress(10), json!(["org:9"])))
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    let slots: std::collections::HashSet<u16> = tagged_order
        .iter()
        .map(|p| layout::key_slot(p.as_bytes()))
        .collect();
    assert!(slots.len() > 1, "the projects span slots");
    let newest_first: Vec<String> = tagged_order.iter().rev().cloned().collect();
    assert_eq!(all_pages(&b, "tag=org:9", 5).await.0, newest_first);

    // The tag's feed on the other hub: the snapshot, then a project tagged later.
    let mut client = multiplexed(&b, None).await;
    subscribe_tag(&mut client, json!({"tag": "org:9"})).await;
    assert_eq!(client.next_event().await["data"]["projects"], 12);
    let mut snapshot = Vec::new();
    for _ in 0..12 {
        snapshot.push(next_state(&mut client, "org:9").await.0);
    }
    assert_eq!(snapshot, newest_first);
    a.post_event("cl-late", &tagged(progress(10), json!(["org:9"])))
        .await;
    assert_eq!(next_state(&mut client, "org:9").await.0, "cl-late");
}

// Access (issue 26 §4): with access control on, a token naming the tag (or `*`) lists
// all of the tag's projects, a token naming projects only those, no token none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_shows_what_the_token_allows() {
    const SECRET: &str = "tags-test-secret";
    let hub = TestHub::start_with(Backend::Redis, |c| c.auth_secret = Some(SECRET.into())).await;
    let token = |args: &[&str]| mint(SECRET, args);
    let publisher = token(&["--project", "*", "--publish"]);
    let client = reqwest::Client::new();
    for project in ["acc-a", "acc-b", "acc-c"] {
        let status = post_as(&hub, &publisher, project, json!(["user:5"])).await;
        assert_eq!(status, 202);
    }
    let listed = |token: Option<String>| {
        let client = client.clone();
        let url = hub.http("/api/v1/projects?tag=user:5");
        async move {
            let mut request = client.get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            let ids: Vec<String> = body["projects"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| p["project_id"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (status, ids)
        }
    };
    let all = vec!["acc-c", "acc-b", "acc-a"];
    assert_eq!(
        listed(Some(token(&["--tag", "user:5"]))).await,
        (200, all.iter().map(|s| s.to_string()).collect())
    );
    assert_eq!(listed(Some(token(&["--project", "*"]))).await.1, all);
    assert_eq!(
        listed(Some(token(&["--project", "acc-b", "--tag", "user:6"]))).await,
        (200, vec!["acc-b".to_string()])
    );
    assert_eq!(listed(None).await.0, 401);
    assert_eq!(listed(Some("not-a-token".into())).await.0, 401);
}

async fn a_tag_subscription_gets_a_snapshot_then_every_change(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    hub.post_event("ts-old", &tagged(progress(10), json!(["user:3"])))
        .await;
    hub.post_event("ts-run", &tagged(progress(20), json!(["user:3"])))
        .await;
    hub.publish(
        "ts-old",
        json!({"event": "complete", "data": {"status": "COMPLETED"}}),
    )
    .await;
    let mut client = multiplexed(&hub, None).await;
    subscribe_tag(&mut client, json!({"tag": "user:3", "status": ["active"]})).await;
    let answer = client.next_event().await;
    assert_eq!(
        answer,
        json!({"event": "subscribed", "tag": "user:3", "data": {"projects": 1}})
    );
    // The snapshot: the matching projects, as the list gives them.
    let (project, state) = next_state(&mut client, "user:3").await;
    assert_eq!(project, "ts-run");
    let (_, listed) = list(&hub, "tag=user:3&status=active").await;
    assert_eq!(listed["projects"], json!([state]));

    // A change of a followed project, and a project tagged after the subscription.
    hub.publish("ts-run", progress(40)).await;
    let (project, state) = next_state(&mut client, "user:3").await;
    assert_eq!(
        (project.as_str(), state["progress"].clone()),
        ("ts-run", json!(40))
    );
    let (status, _) = hub.generate("ts-new", &json!({"tags": ["user:3"]})).await;
    assert_eq!(status, 202);
    let (project, state) = next_state(&mut client, "user:3").await;
    assert_eq!(
        (project.as_str(), state["status"].clone()),
        ("ts-new", json!("QUEUED"))
    );
    assert_eq!(state, listed_state(&hub, "ts-new").await);
    // Leaving the filter: one last frame.
    hub.publish(
        "ts-run",
        json!({"event": "complete", "data": {"status": "FAILED"}}),
    )
    .await;
    let (project, state) = next_state(&mut client, "user:3").await;
    assert_eq!(
        (project.as_str(), state["status"].clone()),
        ("ts-run", json!("FAILED"))
    );

    unsubscribed_then_quiet(&hub, &mut client, "user:3", "ts-new").await;
    // Resuming after a reconnect is subscribing again: every current state.
    assert_eq!(
        resubscribed(&hub, "user:3").await,
        ["ts-new", "ts-run", "ts-old"]
    );
}

/// Unsubscribes `client` from `tag`: `unsubscribed`, and nothing of the tag follows it
/// (not even a change of `project`, one of its projects).
pub(crate) async fn unsubscribed_then_quiet(
    hub: &TestHub,
    client: &mut WsClient,
    tag: &str,
    project: &str,
) {
    client
        .send_text(&json!({"event": "unsubscribe", "data": {"tag": tag}}).to_string())
        .await;
    assert_eq!(
        client.next_event().await,
        json!({"event": "unsubscribed", "tag": tag, "data": {}})
    );
    hub.publish(project, progress(50)).await;
    client.send_text(r#"{"event":"ping"}"#).await;
    let next = client.next_event().await;
    assert_eq!(
        next["event"], "pong",
        "nothing of {tag} after unsubscribed: {next}"
    );
}

/// A new connection's subscription to `tag`: its snapshot's projects, in order.
pub(crate) async fn resubscribed(hub: &TestHub, tag: &str) -> Vec<String> {
    let mut again = multiplexed(hub, None).await;
    subscribe_tag(&mut again, json!({"tag": tag})).await;
    let count = again.next_event().await["data"]["projects"]
        .as_u64()
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..count {
        seen.push(next_state(&mut again, tag).await.0);
    }
    seen
}

// Several projects tagged between two of the tag's polls (a backend starting a batch,
// a page generating three runs): each is followed, not only the newest of them (the
// poll once took the first entry of its newest-first read as the newest seen, and
// skipped the others as "seen before").
async fn projects_tagged_within_one_poll_are_all_followed(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    hub.post_event("burst-0", &tagged(progress(10), json!(["batch:1"])))
        .await;
    let mut client = multiplexed(&hub, None).await;
    subscribe_tag(&mut client, json!({"tag": "batch:1", "status": ["active"]})).await;
    assert_eq!(
        client.next_event().await,
        json!({"event": "subscribed", "tag": "batch:1", "data": {"projects": 1}})
    );
    assert_eq!(next_state(&mut client, "batch:1").await.0, "burst-0");
    let burst = ["burst-1", "burst-2", "burst-3"];
    for project in burst {
        let (status, body) = hub
            .post_event(project, &tagged(progress(20), json!(["batch:1"])))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let mut seen = Vec::new();
    for _ in burst {
        let (project, state) = next_state(&mut client, "batch:1").await;
        assert_eq!(state, listed_state(&hub, &project).await, "{project}");
        seen.push(project);
    }
    seen.sort();
    assert_eq!(seen, burst, "every project tagged within one poll");
}

/// Sends a tag `subscribe` and reads its refusal: the tag it names and the code.
pub(crate) async fn refused(client: &mut WsClient, data: Value) -> (Option<Value>, String) {
    subscribe_tag(client, data).await;
    let answer = client.next_event().await;
    assert_eq!(answer["event"], "subscription_error", "{answer}");
    assert!(answer["data"]["message"].is_string(), "{answer}");
    let code = answer["data"]["code"].as_str().unwrap().to_string();
    (answer.get("tag").cloned(), code)
}

async fn refused_tag_subscriptions_say_why_and_harm_nothing(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.max_subscriptions = 2).await;
    let mut client = multiplexed(&hub, None).await;
    for (data, code) in [
        (json!({"tag": "a,b"}), "INVALID_TAG"),
        (json!({"tag": 7}), "INVALID_TAG"),
        (json!({"tag": "x".repeat(5000)}), "INVALID_TAG"),
        (json!({"tag": "ok", "status": "active"}), "INVALID_FILTER"),
        (
            json!({"tag": "ok", "status": ["running"]}),
            "INVALID_FILTER",
        ),
        (json!({"tag": "ok", "status": [1]}), "INVALID_FILTER"),
        (json!({"tag": "ok", "since": "yesterday"}), "INVALID_FILTER"),
        (json!({"tag": "ok", "since": 5}), "INVALID_FILTER"),
        (
            json!({"tag": "ok", "project_id": "p"}),
            "UNSUPPORTED_SUBSCRIPTION",
        ),
    ] {
        let (_, got) = refused(&mut client, data.clone()).await;
        assert_eq!(got, code, "{data}");
    }
    let (tag, _) = refused(&mut client, json!({"tag": "x".repeat(5000)})).await;
    assert_eq!(
        tag.unwrap().as_str().unwrap().len(),
        64,
        "the tag echoed, cut"
    );
    subscribe_tag(&mut client, json!({"tag": "t1"})).await;
    assert_eq!(client.next_event().await["event"], "subscribed");
    let (_, code) = refused(&mut client, json!({"tag": "t1"})).await;
    assert_eq!(code, "ALREADY_SUBSCRIBED");
    subscribe_tag(&mut client, json!({"tag": "t2"})).await;
    assert_eq!(client.next_event().await["event"], "subscribed");
    let (_, code) = refused(&mut client, json!({"tag": "t3"})).await;
    assert_eq!(code, "TOO_MANY_SUBSCRIPTIONS");
    // The connection and its subscriptions go on.
    hub.post_event("t1-p", &tagged(progress(10), json!(["t1"])))
        .await;
    assert_eq!(next_state(&mut client, "t1").await.0, "t1-p");
}

async fn a_burst_of_10000_tag_subscribes_gets_clear_errors(backend: Backend) {
    const BURST: usize = 10_000;
    let hub = TestHub::start_with(backend, |c| c.max_subscriptions = 20).await;
    let mut bystander = multiplexed(&hub, None).await;
    subscribe_tag(&mut bystander, json!({"tag": "calm"})).await;
    assert_eq!(bystander.next_event().await["event"], "subscribed");
    let mut flood = multiplexed(&hub, None).await;
    let mut burst = String::new();
    for i in 0..BURST {
        let frame = json!({"event": "subscribe", "data": {"tag": format!("flood:{i}")}});
        burst.clear();
        burst.push_str(&frame.to_string());
        flood.send_text(&burst).await;
    }
    let (mut subscribed, mut too_many) = (0, 0);
    while subscribed + too_many < BURST {
        let answer = flood.next_event().await;
        match (answer["event"].as_str(), answer["data"]["code"].as_str()) {
            (Some("subscribed"), _) => subscribed += 1,
            (Some("subscription_error"), Some("TOO_MANY_SUBSCRIPTIONS")) => too_many += 1,
            _ => panic!("unexpected {answer}"),
        }
    }
    assert_eq!((subscribed, too_many), (20, BURST - 20));
    // Nobody else noticed.
    hub.post_event("calm-p", &tagged(progress(10), json!(["calm"])))
        .await;
    assert_eq!(next_state(&mut bystander, "calm").await.0, "calm-p");
}

// Access: a tag subscription needs a token naming the tag (or `*`); a refused one is
// FORBIDDEN for that subscription only; a refresh must keep every subscription allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_subscriptions_follow_the_token() {
    const SECRET: &str = "tags-sub-secret";
    let hub = TestHub::start_with(Backend::Memory, |c| c.auth_secret = Some(SECRET.into())).await;
    let token = |args: &[&str]| mint(SECRET, args);
    let watch = token(&["--tag", "user:1", "--project", "solo"]);
    let mut client = multiplexed(&hub, Some(&watch)).await;
    subscribe_tag(&mut client, json!({"tag": "user:2"})).await;
    let answer = client.next_event().await;
    assert_eq!(answer["data"]["code"], "FORBIDDEN", "{answer}");
    assert_eq!(answer["tag"], "user:2", "{answer}");
    subscribe_tag(&mut client, json!({"tag": "user:1"})).await;
    assert_eq!(client.next_event().await["event"], "subscribed");
    // A refresh that would not allow the tag is ignored; one that does is taken (the
    // connection goes on either way).
    let narrower = token(&["--project", "solo"]);
    let wider = token(&["--tag", "user:1", "--tag", "user:2"]);
    for fresh in [narrower, wider] {
        let frame = json!({"event": "refresh", "data": {"token": fresh}});
        client.send_text(&frame.to_string()).await;
    }
    let publisher = token(&["--project", "*", "--publish"]);
    let status = post_as(&hub, &publisher, "u1-p", json!(["user:1"])).await;
    assert_eq!(status, 202);
    assert_eq!(next_state(&mut client, "user:1").await.0, "u1-p");
}

/// How many times Redis ran `command` so far (`INFO commandstats`).
async fn calls_of(hub: &TestHub, command: &str) -> u64 {
    let mut conn = hub.redis().connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads of the tag's index (`ZREVRANGEBYSCORE`, one per poll) over three seconds, with
/// `subscriptions` subscribed to `tag` (each past its snapshot).
async fn index_reads_with(hub: &TestHub, tag: &str, subscriptions: usize) -> u64 {
    let mut clients = Vec::new();
    for _ in 0..subscriptions {
        let mut client = multiplexed(hub, None).await;
        subscribe_tag(&mut client, json!({"tag": tag})).await;
        let answer = client.next_event().await;
        assert_eq!(answer["event"], "subscribed", "{answer}");
        for _ in 0..answer["data"]["projects"].as_u64().unwrap() {
            next_state(&mut client, tag).await;
        }
        clients.push(client);
    }
    let before = calls_of(hub, "zrevrangebyscore").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spent = calls_of(hub, "zrevrangebyscore").await - before;
    for client in clients {
        client.close().await;
    }
    spent
}

// Issue 26: a tag is polled once per hub, however many subscriptions follow it: five
// subscriptions to one tag read its index (and its projects' states) as often as one
// does (each polling on its own: five times as often).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_to_one_tag_share_one_poll() {
    let hub = TestHub::start_with(Backend::Redis, |c| c.worker = None).await;
    for i in 0..20 {
        hub.post_event(
            &format!("shared-{i}"),
            &tagged(progress(10), json!(["shared"])),
        )
        .await;
    }
    let one = index_reads_with(&hub, "shared", 1).await;
    let five = index_reads_with(&hub, "shared", 5).await;
    assert!(one >= 2, "the tag is read every second: {one} reads in 3 s");
    assert!(
        five <= one + 2,
        "five subscriptions read the index {five} times in 3 s, one {one} times: not shared"
    );
}
