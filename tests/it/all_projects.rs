//! Every project (issue 26 §6, "all jobs"): the reserved tag `*` reads every project's
//! runs, tagged or not. `GET /api/v1/projects` without a tag (or `tag=*`) lists them
//! newest first by when their run began, a `subscribe` to the tag `*` (`?tags=*` on SSE)
//! feeds their states; only a token whose projects include `*` may read it. No run ever
//! carries `*`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, SseReader, TestHub, WsClient, layout, log_event, progress};
use crate::tags::subscribe_tag as subscribe;
use crate::tags::{self, all_pages, listed_state, multiplexed, refused, tagged};
use progress_hub::wire::Tag;

on_both_brokers!(
    every_project_is_listed_newest_first_by_when_its_run_began,
    the_star_feed_gets_every_project_then_every_change,
    star_on_the_sse_stream,
    hostile_stars_are_refused_and_harm_nothing,
);

fn complete(status: &str) -> Value {
    json!({"event": "complete", "data": {"status": status}})
}

/// `GET /api/v1/projects<query>` with `token`: the status and the answer.
async fn get(hub: &TestHub, query: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(hub.http(&format!("/api/v1/projects{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn ids(page: &Value) -> Vec<String> {
    page["projects"]
        .as_array()
        .unwrap_or_else(|| panic!("no projects in {page}"))
        .iter()
        .map(|p| p["project_id"].as_str().unwrap().to_string())
        .collect()
}

/// The next `project_state` of `*`: its project and state.
async fn next_state(client: &mut WsClient) -> (String, Value) {
    tags::next_state(client, "*").await
}

// The list of every project: tagged or not, newest first by when its run began (a new
// run moves a project to the front; a publish within a run does not), paged, filtered
// by status and since, each entry what `GET /api/v1/projects/{id}` answers.
async fn every_project_is_listed_newest_first_by_when_its_run_began(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    let before = progress_hub::wire::now_iso8601();
    let began: Vec<String> = (0..7).map(|i| format!("all-{i}")).collect();
    for (i, project) in began.iter().enumerate() {
        let event = if i % 2 == 0 {
            tagged(progress(10), json!(["team:1"]))
        } else {
            progress(10)
        };
        let (status, answer) = hub.post_event(project, &event).await;
        assert_eq!(status, 202, "{answer}");
    }
    let newest_first: Vec<String> = began.iter().rev().cloned().collect();
    let (listed, pages) = all_pages(&hub, "", 3).await;
    assert_eq!(listed, newest_first);
    assert!(pages >= 3, "{pages} pages of 3 for 7 projects");
    assert_eq!(all_pages(&hub, "tag=*", 100).await.0, newest_first);
    // Each entry is what GET /api/v1/projects/{id} answers (`all_pages` checks); no
    // state lists `*`.
    let (_, page) = get(&hub, "?limit=100", None).await;
    for entry in page["projects"].as_array().unwrap() {
        assert!(
            !entry["tags"].as_array().unwrap().contains(&json!("*")),
            "{entry}"
        );
    }
    // Within a run nothing moves; a run's end, neither; the next run (even without a
    // QUEUED update) moves its project to the front.
    hub.publish("all-2", log_event("within the run")).await;
    hub.publish("all-3", complete("COMPLETED")).await;
    assert_eq!(all_pages(&hub, "", 100).await.0, newest_first);
    hub.publish("all-3", log_event("the next run")).await;
    let (status, _) = hub.generate("all-q", &json!({})).await;
    assert_eq!(status, 202);
    let (_, page) = get(&hub, "?limit=3", None).await;
    assert_eq!(ids(&page), ["all-q", "all-3", "all-6"]);
    assert!(page["next_cursor"].is_string(), "{page}");

    // Filters: status and since.
    hub.publish("all-5", complete("FAILED")).await;
    let (_, page) = get(&hub, "?status=ended", None).await;
    assert_eq!(ids(&page), ["all-5"]);
    let (_, page) = get(&hub, "?tag=*&status=QUEUED", None).await;
    assert_eq!(ids(&page), ["all-q"]);
    let (_, page) = get(&hub, &format!("?since={before}&limit=100"), None).await;
    assert_eq!(ids(&page).len(), 8, "{page}");
    let (_, page) = get(&hub, "?since=2999-01-01T00:00:00Z", None).await;
    assert_eq!(page, json!({"projects": [], "next_cursor": null}));
    // A tag's list is as it was.
    assert_eq!(
        all_pages(&hub, "tag=team:1", 100).await.0,
        ["all-6", "all-4", "all-2", "all-0"]
    );

    if backend == Backend::Redis {
        // Every project's index is the reserved tag's, in its own key (its own slot).
        let mut conn = hub.redis().connection().await;
        let key = layout::tag_index_key(&Tag::all());
        assert_eq!(key, "progress:{tag:*}:projects");
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(members.len(), 8, "{members:?}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "the index expires: {ttl}");
    }
}

// The feed of every project: the snapshot (the list's), then projects that begin after
// the subscription (tagged or not), changes, the last frame of one leaving the filter,
// a new run of an ended project; unsubscribed with `*`; a new subscription is the resume.
async fn the_star_feed_gets_every_project_then_every_change(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    hub.post_event("st-run", &progress(20)).await;
    hub.post_event("st-tag", &tagged(progress(30), json!(["user:1"])))
        .await;
    hub.post_event("st-old", &progress(10)).await;
    hub.publish("st-old", complete("COMPLETED")).await;
    let mut client = multiplexed(&hub, None).await;
    subscribe(&mut client, json!({"tag": "*", "status": ["active"]})).await;
    assert_eq!(
        client.next_event().await,
        json!({"event": "subscribed", "tag": "*", "data": {"projects": 2}})
    );
    let mut snapshot = Vec::new();
    for _ in 0..2 {
        let (project, state) = next_state(&mut client).await;
        assert_eq!(state, listed_state(&hub, &project).await, "{project}");
        snapshot.push(project);
    }
    assert_eq!(snapshot, ["st-tag", "st-run"]);
    let (_, listed) = get(&hub, "?tag=*&status=active", None).await;
    assert_eq!(ids(&listed), snapshot);

    // A project that begins after the subscription, untagged; a change of a followed one.
    hub.publish("st-new", progress(5)).await;
    let (project, state) = next_state(&mut client).await;
    assert_eq!(
        (project.as_str(), state["progress"].clone()),
        ("st-new", json!(5))
    );
    hub.publish("st-run", progress(60)).await;
    let (project, state) = next_state(&mut client).await;
    assert_eq!(
        (project.as_str(), state["progress"].clone()),
        ("st-run", json!(60))
    );
    // Leaving the filter (its run ended): one last frame.
    hub.publish("st-run", complete("FAILED")).await;
    let (project, state) = next_state(&mut client).await;
    assert_eq!(
        (project.as_str(), state["status"].clone()),
        ("st-run", json!("FAILED"))
    );
    // An ended project's next run (no QUEUED update): back in the feed.
    hub.publish("st-old", progress(15)).await;
    let (project, state) = next_state(&mut client).await;
    assert_eq!(
        (project.as_str(), state["status"].clone()),
        ("st-old", json!("RENDERING"))
    );
    assert_eq!(state, listed_state(&hub, "st-old").await);

    tags::unsubscribed_then_quiet(&hub, &mut client, "*", "st-new").await;
    // Resuming is subscribing again: every project's current state, newest run first.
    assert_eq!(
        tags::resubscribed(&hub, "*").await,
        ["st-old", "st-new", "st-tag", "st-run"]
    );
}

async fn open_sse(hub: &TestHub, query: &str) -> SseReader {
    let url = hub.http(&format!("/api/v1/progress/events?{query}"));
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let mut sse = SseReader::new(response);
    assert_eq!(sse.next().await.1["event"], "connected");
    sse
}

// `?tags=*` on the multiplexed SSE stream: every project's states, beside a tag.
async fn star_on_the_sse_stream(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    hub.post_event("sse-plain", &progress(10)).await;
    let mut sse = open_sse(&hub, "tags=*,user:4").await;
    let mut subscribed = Vec::new();
    let mut states = Vec::new();
    while subscribed.len() < 2 || states.is_empty() {
        let (id, frame) = sse.next().await;
        assert_eq!(id, None, "a tag feed moves no position: {frame}");
        match frame["event"].as_str().unwrap() {
            "subscribed" => subscribed.push(frame["tag"].as_str().unwrap().to_string()),
            "project_state" => {
                states.push((frame["tag"].clone(), frame["project_id"].clone()));
            }
            other => panic!("unexpected {other}: {frame}"),
        }
    }
    subscribed.sort();
    assert_eq!(subscribed, ["*", "user:4"]);
    assert_eq!(states, [(json!("*"), json!("sse-plain"))]);
    // A project tagged later: in both feeds.
    hub.post_event("sse-tagged", &tagged(progress(10), json!(["user:4"])))
        .await;
    let mut later = Vec::new();
    while later.len() < 2 {
        let (_, frame) = sse.next().await;
        assert_eq!(frame["event"], "project_state", "{frame}");
        assert_eq!(frame["project_id"], "sse-tagged", "{frame}");
        later.push(frame["tag"].as_str().unwrap().to_string());
    }
    later.sort();
    assert_eq!(later, ["*", "user:4"]);
}

// `*` anywhere else than alone where a tag is read, or given to a run: refused with a
// clear error; the connection and its `*` subscription go on.
async fn hostile_stars_are_refused_and_harm_nothing(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    let mut client = multiplexed(&hub, None).await;
    subscribe(&mut client, json!({"tag": "*"})).await;
    assert_eq!(
        client.next_event().await,
        json!({"event": "subscribed", "tag": "*", "data": {"projects": 0}})
    );
    for (data, code) in [
        (json!({"tag": "*"}), "ALREADY_SUBSCRIBED"),
        (json!({"tag": "**"}), "INVALID_TAG"),
        (json!({"tag": "*user"}), "INVALID_TAG"),
        (json!({"tag": "user:*"}), "INVALID_TAG"),
        (json!({"tag": " *"}), "INVALID_TAG"),
        (json!({"tag": "*,user:1"}), "INVALID_TAG"),
        (json!({"tag": ["*"]}), "INVALID_TAG"),
        (
            json!({"tag": "*", "project_id": "p"}),
            "UNSUPPORTED_SUBSCRIPTION",
        ),
        (json!({"tag": "*", "status": ["running"]}), "INVALID_FILTER"),
        (json!({"project_id": "*"}), "INVALID_PROJECT_ID"),
    ] {
        let (_, got) = refused(&mut client, data.clone()).await;
        assert_eq!(got, code, "{data}");
    }
    // No run carries `*`: a publisher giving it is refused and publishes nothing.
    for tags in [json!(["*"]), json!(["user:1", "*"])] {
        let (status, answer) = hub
            .post_event("star-p", &tagged(progress(10), tags.clone()))
            .await;
        assert_eq!(status, 422, "{tags}: {answer}");
        assert_eq!(answer["error"]["field"], "tags", "{answer}");
        let (status, answer) = hub.generate("star-g", &json!({"tags": tags})).await;
        assert_eq!(status, 422, "{answer}");
    }
    for (query, field) in [
        ("?tag=**", "tag"),
        ("?tag=*user", "tag"),
        ("?tag=%2A%2C", "tag"),
        ("?tag=*&tag=*", "query"),
        ("?tag=&status=active", "tag"),
    ] {
        let (status, answer) = get(&hub, query, None).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
    }
    // Unsubscribing a star never subscribed, or a bad one.
    client
        .send_text(&json!({"event": "unsubscribe", "data": {"tag": "**"}}).to_string())
        .await;
    assert_eq!(client.next_event().await["data"]["code"], "INVALID_TAG");
    // The `*` subscription goes on: the first project published.
    hub.post_event("star-ok", &progress(10)).await;
    assert_eq!(next_state(&mut client).await.0, "star-ok");
    let (_, page) = get(&hub, "", None).await;
    assert_eq!(ids(&page), ["star-ok"], "nothing refused was created");
}

const SECRET: &str = "all-projects-secret";

fn token(projects: &[&str], tags: &[&str]) -> String {
    let auth = progress_hub::auth::Auth::new(SECRET).unwrap();
    let own = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    auth.mint_tagged(&own(projects), &own(tags), false, Duration::from_secs(3600))
        .unwrap()
}

// Access: only a token whose projects include `*` reads every project; a tag-only
// token, a project token and a token claiming the "tag" `*` are refused (FORBIDDEN for
// that subscription only; 403 for the list); a refresh to a token without `*` is
// ignored and the subscription goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_token_for_every_project_reads_star() {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.auth_secret = Some(SECRET.into());
        c.worker = None;
    })
    .await;
    let publisher = {
        let auth = progress_hub::auth::Auth::new(SECRET).unwrap();
        auth.mint(&["*".to_string()], true, Duration::from_secs(3600))
            .unwrap()
    };
    let publish = |project: &'static str| {
        let publisher = publisher.clone();
        let url = hub.http(&format!("/api/v1/projects/{project}/events"));
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(publisher)
                .json(&tagged(progress(10), json!(["user:1"])))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }
    };
    publish("acc-1").await;
    let narrow = [
        token(&[], &["user:1"]),
        token(&["acc-1"], &[]),
        token(&[], &["*"]),
        token(&["acc-1"], &["user:1", "*"]),
    ];
    for t in &narrow {
        let mut client = multiplexed(&hub, Some(t)).await;
        let (tag, code) = refused(&mut client, json!({"tag": "*"})).await;
        assert_eq!((tag, code.as_str()), (Some(json!("*")), "FORBIDDEN"));
        // The connection goes on: what the token allows is served.
        subscribe(&mut client, json!({"project_id": "acc-1"})).await;
        let answer = client.next_event().await;
        if answer["event"] == "subscription_error" {
            assert_eq!(answer["data"]["code"], "FORBIDDEN", "{answer}");
        } else {
            assert_eq!(answer["event"], "subscribed", "{answer}");
        }
        for query in ["", "?tag=*", "?status=active"] {
            let (status, answer) = get(&hub, query, Some(t)).await;
            assert_eq!(status, 403, "{query}: {answer}");
            assert_eq!(answer["error"]["code"], "FORBIDDEN", "{answer}");
        }
        let url = hub.http(&format!("/api/v1/progress/events?tags=*&token={t}"));
        let mut sse = SseReader::new(reqwest::get(url).await.unwrap());
        assert_eq!(sse.next().await.1["event"], "connected");
        let (_, answer) = sse.next().await;
        assert_eq!(answer["event"], "subscription_error", "{answer}");
        assert_eq!(answer["tag"], "*", "{answer}");
        assert_eq!(answer["data"]["code"], "FORBIDDEN", "{answer}");
    }
    for query in ["", "?tag=*"] {
        assert_eq!(get(&hub, query, None).await.0, 401, "{query}");
    }

    let every = token(&["*"], &[]);
    let (status, page) = get(&hub, "", Some(&every)).await;
    assert_eq!((status, ids(&page)), (200, vec!["acc-1".to_string()]));
    let mut client = multiplexed(&hub, Some(&every)).await;
    subscribe(&mut client, json!({"tag": "*"})).await;
    assert_eq!(client.next_event().await["event"], "subscribed");
    assert_eq!(next_state(&mut client).await.0, "acc-1");
    // A refresh that would not allow `*` is ignored: the feed goes on.
    let frame = json!({"event": "refresh", "data": {"token": narrow[0]}});
    client.send_text(&frame.to_string()).await;
    publish("acc-2").await;
    assert_eq!(next_state(&mut client).await.0, "acc-2");
}

// On a Redis Cluster every project's index is one key in its own slot, its projects in
// many: one hub publishes them, the other lists them newest first and feeds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_lists_and_feeds_every_project_across_slots() {
    let cluster = crate::support::RedisCluster::start().await;
    let a = TestHub::start_on(cluster.url(), |c| c.worker = None).await;
    let b = TestHub::start_on(cluster.url(), |c| c.worker = None).await;
    let began: Vec<String> = (0..12).map(|i| format!("cla-{i:02}")).collect();
    for project in &began {
        let (status, answer) = a.post_event(project, &progress(10)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let slots: std::collections::HashSet<u16> = began
        .iter()
        .map(|p| layout::key_slot(p.as_bytes()))
        .collect();
    assert!(slots.len() > 1, "the projects span slots");
    let newest_first: Vec<String> = began.iter().rev().cloned().collect();
    assert_eq!(all_pages(&b, "tag=*", 5).await.0, newest_first);

    let mut client = multiplexed(&b, None).await;
    subscribe(&mut client, json!({"tag": "*"})).await;
    assert_eq!(client.next_event().await["data"]["projects"], 12);
    let mut snapshot = Vec::new();
    for _ in 0..12 {
        snapshot.push(next_state(&mut client).await.0);
    }
    assert_eq!(snapshot, newest_first);
    a.post_event("cla-late", &progress(10)).await;
    assert_eq!(next_state(&mut client).await.0, "cla-late");
}
