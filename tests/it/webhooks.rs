//! Webhooks (issue 27 §1): every job's end reaches the backend's endpoint, signed the
//! Standard Webhooks way, with the same id on every retry, through a receiver that fails
//! in every way the tests can make it; nothing is lost when a hub is SIGKILLed, and two
//! hubs sharing the outbox deliver each event once.

use std::time::Duration;

use progress_hub::webhook::WebhookConfig;
use serde_json::{Value, json};

use crate::support::HubConfig;
use crate::support::receiver::{Got, Receiver, Reply, SECRET, distinct_ok};
use crate::support::{Backend, PATIENCE, TestHub, cli, metric};

/// Webhooks to `receiver`, retried fast so the tests take seconds.
pub(crate) fn webhooks_to(receiver: &Receiver) -> WebhookConfig {
    let mut config = WebhookConfig::new(
        vec![receiver.url().parse().unwrap()],
        SECRET.parse().unwrap(),
    );
    config.retry_base = Duration::from_millis(50);
    config.retry_max = Duration::from_millis(400);
    config.attempt_timeout = Duration::from_millis(500);
    config.lease = Duration::from_secs(2);
    config
}

fn with_webhooks(receiver: &Receiver) -> impl FnOnce(&mut HubConfig) {
    let webhooks = webhooks_to(receiver);
    move |c: &mut HubConfig| c.webhooks = Some(webhooks)
}

/// What the hub's AsyncAPI document says a webhook's body is.
pub async fn webhook_schema(hub: &TestHub) -> jsonschema::Validator {
    let asyncapi: Value = reqwest::get(hub.http("/api/v1/asyncapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &asyncapi["channels"]["webhook"]["subscribe"]["message"]["payload"];
    jsonschema::validator_for(schema).expect("a valid JSON Schema")
}

fn complete(status: &str) -> Value {
    json!({"event": "complete", "data": {"status": status, "youtube_url": "https://youtu.be/done"}})
}

on_both_brokers!(every_end_is_delivered_signed_and_nothing_else);

async fn every_end_is_delivered_signed_and_nothing_else(backend: Backend) {
    let receiver = Receiver::start().await;
    let hub = TestHub::start_with(backend, with_webhooks(&receiver)).await;
    hub.publish("done", crate::support::progress(50)).await;
    hub.publish("done", complete("COMPLETED")).await;
    hub.publish("broke", complete("FAILED")).await;
    let got = receiver.until_delivered(2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.iter().all(|g| g.signed), "signatures verify: {got:#?}");
    assert!(got.iter().all(|g| g.id.starts_with("msg_")));
    let by_project = |p: &str| {
        got.iter()
            .find(|g| g.body["data"]["project_id"] == p)
            .unwrap()
    };
    let done = &by_project("done").body;
    assert_eq!(done["type"], "job.completed");
    assert_eq!(done["data"]["status"], "COMPLETED");
    assert_eq!(done["data"]["youtube_url"], "https://youtu.be/done");
    assert_eq!(done["data"]["progress"], 100);
    assert!(done["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(by_project("broke").body["type"], "job.failed");
    assert!(metric(&hub, "hub_webhook_attempts_total{outcome=\"delivered\"}").await >= 2.0);
    // Every body is what the hub's AsyncAPI document says a webhook is.
    let validator = webhook_schema(&hub).await;
    for g in &got {
        let errors: Vec<String> = validator
            .iter_errors(&g.body)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", g.body);
    }
    assert!(!validator.is_valid(&json!({"type": "job.completed"})));
}

on_both_brokers!(an_event_filtered_out_is_not_sent);

async fn an_event_filtered_out_is_not_sent(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut webhooks = webhooks_to(&receiver);
    webhooks.events = vec!["job.failed".parse().unwrap()];
    let hub = TestHub::start_with(backend, |c| c.webhooks = Some(webhooks)).await;
    hub.publish("ok", complete("COMPLETED")).await;
    hub.publish("bad", complete("FAILED")).await;
    let got = receiver.until_delivered(1).await;
    // Outbox order is publish order: had the first been sent, it would be in by now.
    let all = receiver.got();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(got[0].body["type"], "job.failed");
}

// 500, 500 with Retry-After, a hang past the attempt's timeout, a 10 MB answer: each
// retried, the same id every time, until a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_id_through_every_failure() {
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::Status(500),
        Reply::RetryAfter(503, 1),
        Reply::Hang,
        Reply::Huge,
        Reply::Status(302),
        Reply::Ok,
    ]);
    let hub = TestHub::start_with(Backend::Redis, with_webhooks(&receiver)).await;
    hub.publish("p", complete("COMPLETED")).await;
    let got = receiver
        .until("a delivery after five failures", |g| distinct_ok(g) == 1)
        .await;
    assert_eq!(got.len(), 6, "{got:#?}");
    assert!(
        got.iter().all(|g| g.id == got[0].id && g.signed),
        "{got:#?}"
    );
    // Retry-After: 1 was honoured (the backoff is 50 ms to 400 ms).
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(950),
        "{got:#?}"
    );
    assert!(
        metric(
            &hub,
            "hub_webhook_attempts_total{outcome=\"failed_transport\"}"
        )
        .await
            >= 1.0
    );
    crate::support::eventually_eq("the outbox empty once delivered", 0.0, || {
        metric(&hub, "hub_webhook_pending")
    })
    .await;
}

// A receiver that hangs every attempt slows neither publishing nor watchers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_slows_nothing() {
    let receiver = Receiver::start().await;
    receiver.answer(Reply::Hang);
    let hub = TestHub::start_with(Backend::Redis, |c| {
        let mut webhooks = webhooks_to(&receiver);
        webhooks.attempt_timeout = PATIENCE;
        webhooks.concurrency = 2;
        c.webhooks = Some(webhooks);
    })
    .await;
    let mut watcher = hub.connect("busy").await;
    let started = tokio::time::Instant::now();
    for n in 0..20 {
        hub.publish(&format!("end{n}"), complete("COMPLETED")).await;
    }
    hub.publish("busy", crate::support::progress(7)).await;
    let frame = loop {
        let frame = watcher.next_event().await;
        if frame["event"] == "progress_update" {
            break frame;
        }
    };
    assert_eq!(frame["data"]["progress"], 7);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Two slots: two attempts hang, the rest wait their turn in the outbox.
    receiver
        .until("two hanging attempts", |g| g.len() >= 2)
        .await;
    assert_eq!(receiver.got().len(), 2);
}

// 410 Gone: that endpoint gets nothing more; the other keeps getting everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint() {
    let (gone, fine) = (Receiver::start().await, Receiver::start().await);
    gone.answer(Reply::Status(410));
    let mut webhooks = webhooks_to(&fine);
    webhooks.endpoints.push(gone.url().parse().unwrap());
    let hub = TestHub::start_with(Backend::Redis, |c| c.webhooks = Some(webhooks)).await;
    hub.publish("a", complete("COMPLETED")).await;
    fine.until_delivered(1).await;
    gone.until("the 410", |g| g.len() == 1).await;
    hub.publish("b", complete("COMPLETED")).await;
    fine.until_delivered(2).await;
    assert_eq!(gone.got().len(), 1, "no attempt after 410");
}

// The receiver goes down with events pending and comes back: all of them arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_and_back_gets_everything() {
    receiver_down_and_back(None).await;
}

// The same for the 30 seconds (slow: `scripts/test.sh` runs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: 30 s"]
async fn a_receiver_down_for_30s_gets_everything() {
    receiver_down_and_back(Some(Duration::from_secs(30))).await;
}

async fn receiver_down_and_back(down_for: Option<Duration>) {
    let mut receiver = Receiver::start().await;
    let hub = TestHub::start_with(Backend::Redis, with_webhooks(&receiver)).await;
    receiver.down();
    for n in 0..5 {
        hub.publish(&format!("p{n}"), complete("COMPLETED")).await;
    }
    eventually_failed(&hub, 5.0).await;
    if let Some(down_for) = down_for {
        tokio::time::sleep(down_for).await;
    }
    receiver.up().await;
    let got = receiver.until_delivered(5).await;
    assert!(got.iter().all(|g| g.signed));
}

async fn eventually_failed(hub: &TestHub, at_least: f64) {
    crate::support::eventually("failed attempts while the receiver is down", || async {
        metric(
            hub,
            "hub_webhook_attempts_total{outcome=\"failed_transport\"}",
        )
        .await
            >= at_least
    })
    .await;
}

// A hub SIGKILLed with deliveries pending: a hub started after it delivers every one,
// each with the id it had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_with_deliveries_pending_loses_none() {
    let receiver = Receiver::start().await;
    receiver.answer(Reply::Status(500));
    let redis = crate::support::RedisServer::start().await;
    let url = redis.url();
    let target = receiver.url();
    let flags = [
        "--redis-url",
        &url,
        "--webhook",
        &target,
        "--webhook-secret",
        SECRET,
        "--webhook-retry-base",
        "50ms",
        "--webhook-retry-max",
        "200ms",
        "--webhook-lease",
        "1s",
        "--no-worker",
    ];
    let (first, base, _) = cli::serve(&flags, &[]);
    let mut first = cli::Killed(first);
    let http = reqwest::Client::new();
    for n in 0..5 {
        let answer = http
            .post(format!("{base}/api/v1/projects/k{n}/events"))
            .json(&complete("COMPLETED"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
    }
    let before = receiver
        .until("every event attempted", |g| {
            let mut ids: Vec<_> = g.iter().map(|g| g.id.clone()).collect();
            ids.sort();
            ids.dedup();
            ids.len() == 5
        })
        .await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    receiver.answer(Reply::Ok);
    let (second, _, _) = cli::serve(&flags, &[]);
    let _second = cli::Killed(second);
    let got = receiver.until_delivered(5).await;
    let mut ids_before: Vec<_> = before.iter().map(|g| g.id.clone()).collect();
    let mut ids_after: Vec<_> = got.iter().map(|g| g.id.clone()).collect();
    for ids in [&mut ids_before, &mut ids_after] {
        ids.sort();
        ids.dedup();
    }
    assert_eq!(ids_after, ids_before, "the same ids after the restart");
}

// Two hubs on one Redis, a slow receiver: each event delivered once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_deliver_each_event_once() {
    let receiver = Receiver::start().await;
    receiver.answer(Reply::Slow(Duration::from_millis(20)));
    let one = TestHub::start_with(Backend::Redis, with_webhooks(&receiver)).await;
    let two = TestHub::start_on(one.redis().url(), with_webhooks(&receiver)).await;
    for n in 0..40 {
        let hub = if n % 2 == 0 { &one } else { &two };
        hub.publish(&format!("j{n}"), complete("COMPLETED")).await;
    }
    receiver.until_delivered(40).await;
    let got = receiver.got();
    assert_eq!(got.len(), 40, "each once: {got:#?}");
    assert!(got.iter().all(|g| g.signed));
}

// The recent attempts, a page at a time; hostile queries refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_deliveries_are_paged() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let hub = TestHub::start_with(Backend::Memory, with_webhooks(&receiver)).await;
    hub.publish("a", complete("COMPLETED")).await;
    hub.publish("b", complete("FAILED")).await;
    receiver.until_delivered(2).await;
    let get = |q: &str| reqwest::get(hub.http(&format!("/api/v1/webhooks/deliveries{q}")));
    // The receiver counts a delivery when it answers; the hub records the attempt once
    // the answer is back: wait for the hub's record of all three.
    crate::support::eventually_eq("the hub records the three attempts", 3, || async {
        let all: Value = get("?limit=10").await.unwrap().json().await.unwrap();
        all["deliveries"].as_array().map_or(0, Vec::len)
    })
    .await;
    let first: Value = get("?limit=2").await.unwrap().json().await.unwrap();
    assert_eq!(first["deliveries"].as_array().unwrap().len(), 2, "{first}");
    let cursor = first["next_cursor"].as_u64().expect("a next page");
    let rest: Value = get(&format!("?limit=2&cursor={cursor}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["next_cursor"], Value::Null, "{rest}");
    let all: Vec<&Value> = first["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["deliveries"].as_array().unwrap())
        .collect();
    // Newest first, each attempt once: a's 500, then a's retry and b, in either order.
    let seqs: Vec<u64> = all.iter().map(|d| d["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 2, 1], "{all:#?}");
    let failed: Vec<_> = all
        .iter()
        .filter(|d| d["outcome"] == "failed_status")
        .collect();
    assert_eq!(failed.len(), 1, "{all:#?}");
    assert_eq!(failed[0]["status"], 500);
    assert_eq!(failed[0]["attempt"], 1);
    for hostile in [
        "?limit=-1",
        "?limit=abc",
        "?cursor=1e9",
        "?limit=99999999999999999999999",
    ] {
        let answer = get(hostile).await.unwrap();
        assert_eq!(answer.status(), 400, "{hostile}");
    }
    let plain = TestHub::start(Backend::Memory).await;
    let answer = reqwest::get(plain.http("/api/v1/webhooks/deliveries"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

// Refused at start: an endpoint that is the hub itself, a non-HTTP one, a bad secret,
// and a Redis Cluster (its outbox is not built yet).
#[test]
fn bad_webhook_settings_stop_the_hub_at_start() {
    for (flags, says) in [
        (
            vec![
                "--listen",
                "127.0.0.1:18765",
                "--webhook",
                "http://localhost:18765/h",
            ],
            "points at this hub itself",
        ),
        (vec!["--webhook", "gopher://x/"], "not an http(s) URL"),
        (
            vec!["--webhook", "http://x/", "--webhook-secret", "whsec_"],
            "--webhook-secret",
        ),
        (
            vec![
                "--webhook",
                "http://x/",
                "--redis-url",
                "redis+cluster://127.0.0.1:1",
            ],
            "not on a Redis Cluster",
        ),
    ] {
        let mut args = vec!["serve"];
        args.extend(flags);
        if !args.contains(&"--webhook-secret") {
            args.extend(["--webhook-secret", SECRET]);
        }
        let out = cli::run(&args);
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("MfKQ9r8"),
            "the secret is never printed: {err}"
        );
    }
}

on_both_brokers!(skip_watched_sends_no_completion_a_watcher_saw);

// --webhook-skip-watched: the `job.completed` a watcher received live is not sent; one
// nobody watched is, and so is a failure even if watched. Each body says its watchers.
async fn skip_watched_sends_no_completion_a_watcher_saw(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut webhooks = webhooks_to(&receiver);
    webhooks.skip_watched = true;
    webhooks.seen_grace = Duration::from_millis(300);
    let hub = TestHub::start_with(backend, |c| c.webhooks = Some(webhooks)).await;
    let mut watcher = hub.connect("watched").await;
    let mut failing = hub.connect("broke").await;
    hub.publish("watched", crate::support::progress(10)).await;
    hub.publish("watched", complete("COMPLETED")).await;
    watcher.until_complete(PATIENCE).await;
    hub.publish("broke", crate::support::progress(10)).await;
    hub.publish("broke", complete("FAILED")).await;
    failing.until_complete(PATIENCE).await;
    hub.publish("alone", complete("COMPLETED")).await;
    let got = receiver.until_delivered(2).await;
    crate::support::eventually("the watched completion skipped", || async {
        let page: Value = reqwest::get(hub.http("/api/v1/webhooks/deliveries"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["outcome"] == "skipped_watched" && d["project_id"] == "watched")
    })
    .await;
    let projects: Vec<_> = got
        .iter()
        .map(|g| g.body["data"]["project_id"].clone())
        .collect();
    assert!(!projects.contains(&json!("watched")), "{got:#?}");
    let by_project = |p: &str| {
        got.iter()
            .find(|g| g.body["data"]["project_id"] == p)
            .unwrap()
    };
    assert_eq!(by_project("alone").body["data"]["watchers"], 0);
    assert_eq!(by_project("broke").body["type"], "job.failed");
    assert_eq!(by_project("broke").body["data"]["watchers"], 1);
}

// A hub with webhooks starts while Redis is down (as one without does), and makes the
// outbox when Redis comes back, empty; then every end is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_started_before_redis_makes_the_outbox_when_it_comes() {
    let receiver = Receiver::start().await;
    let mut redis = crate::support::RedisServer::start().await;
    redis.kill();
    let hub = TestHub::start_on(redis.url(), with_webhooks(&receiver)).await;
    redis.restart().await;
    let conn = redis.connection().await;
    crate::support::eventually("the outbox made", || {
        let mut conn = conn.clone();
        async move {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(crate::support::layout::OUTBOX_KEY)
                .query_async(&mut conn)
                .await
                .unwrap();
            exists == 1
        }
    })
    .await;
    hub.publish("late", complete("COMPLETED")).await;
    let got = receiver.until_delivered(1).await;
    assert_eq!(got[0].body["data"]["project_id"], "late");
}

/// The outbox, empty: every event appended so far was delivered (or given up).
async fn outbox_drained(redis: &crate::support::RedisServer) {
    let conn = redis.connection().await;
    crate::support::eventually("the outbox drained", || {
        let mut conn = conn.clone();
        async move {
            let len: i64 = redis::cmd("XLEN")
                .arg(crate::support::layout::OUTBOX_KEY)
                .query_async(&mut conn)
                .await
                .unwrap();
            len == 0
        }
    })
    .await;
}

// A run under way that goes silent for longer than --stall-after is told as
// `job.stalled` once per stall, however many hubs scan (two here, each many times while
// it stays silent); it publishes again, goes silent again: a second stall, told once;
// then it ends. A queued run silent as long is never told stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_is_told_once_across_hubs() {
    let receiver = Receiver::start().await;
    let bound = Duration::from_millis(300);
    let tweak = |receiver: &Receiver| {
        let webhooks = webhooks_to(receiver);
        move |c: &mut HubConfig| {
            c.worker = None;
            c.stall_after = bound;
            c.webhooks = Some(webhooks);
        }
    };
    let one = TestHub::start_with(Backend::Redis, tweak(&receiver)).await;
    let two = TestHub::start_on(one.redis().url(), tweak(&receiver)).await;
    let rendering =
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 40}});
    one.publish("slow", rendering).await;
    assert_eq!(one.generate("waiting", &json!({})).await.0, 202);
    first_stall(&receiver).await;
    // Silent for many more scans of both hubs: still told once.
    tokio::time::sleep(bound * 4).await;
    two.publish("slow", crate::support::log_event("alive again"))
        .await;
    receiver
        .until("a second stall", |got| stalls(got) >= 2)
        .await;
    tokio::time::sleep(bound * 4).await;
    two.publish("slow", complete("COMPLETED")).await;
    outbox_drained(one.redis()).await;
    two_stalls_then_the_end(&receiver.delivered());
}

/// Waits for the first `job.stalled`: of the run `slow`, silent, since its last event.
async fn first_stall(receiver: &Receiver) {
    let got = receiver
        .until("a job.stalled", |got| stalls(got) >= 1)
        .await;
    let stalled = got
        .iter()
        .find(|g| g.body["type"] == "job.stalled")
        .unwrap();
    assert!(stalled.signed);
    let data = &stalled.body["data"];
    assert_eq!(data["project_id"], "slow");
    assert_eq!(data["status"], "RENDERING");
    assert_eq!(data["reason"], "silent");
    assert_eq!(data["since"], data["updated_at"]);
}

/// How many `job.stalled` were received.
fn stalls(got: &[Got]) -> usize {
    got.iter()
        .filter(|g| g.body["type"] == "job.stalled")
        .count()
}

/// The run `slow` was told stalled twice, then ended; the queued `waiting` never.
fn two_stalls_then_the_end(got: &[Got]) {
    let slow: Vec<&str> = got
        .iter()
        .filter(|g| g.body["data"]["project_id"] == "slow")
        .map(|g| g.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        slow,
        ["job.stalled", "job.stalled", "job.completed"],
        "{got:#?}"
    );
    assert!(
        got.iter()
            .all(|g| g.body["data"]["project_id"] != "waiting"),
        "a queued run is not stalled: {got:#?}"
    );
}

// A 410 from the receiver disables the endpoint on every hub sharing the outbox (one
// hub received it; the other, and a hub started later, send it nothing more), until an
// operator re-enables it; the other endpoints go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_for_every_hub_until_re_enabled() {
    let (gone, fine) = (Receiver::start().await, Receiver::start().await);
    gone.answer(Reply::Status(410));
    let both = || {
        let mut webhooks = webhooks_to(&fine);
        webhooks.endpoints.push(gone.url().parse().unwrap());
        move |c: &mut HubConfig| c.webhooks = Some(webhooks)
    };
    let mut one = TestHub::start_with(Backend::Redis, both()).await;
    let two = TestHub::start_on(one.redis().url(), both()).await;
    one.publish("first", complete("COMPLETED")).await;
    gone.until("the 410", |g| g.len() == 1).await;
    fine.until_delivered(1).await;
    for n in 0..6 {
        let hub = if n % 2 == 0 { &one } else { &two };
        hub.publish(&format!("next{n}"), complete("COMPLETED"))
            .await;
    }
    fine.until_delivered(7).await;
    outbox_drained(one.redis()).await;
    assert_eq!(gone.got().len(), 1, "no hub attempts it after the 410");
    // Persisted: a hub started after it (as after a restart) sends it nothing either.
    let url = one.redis().url();
    one.stop().await;
    let three = TestHub::start_on(url, both()).await;
    three.publish("later", complete("COMPLETED")).await;
    fine.until_delivered(8).await;
    outbox_drained(one.redis()).await;
    assert_eq!(gone.got().len(), 1, "still disabled after a restart");
    // The operator re-enables it (docs/WEBHOOKS.md): the next event is attempted again.
    let mut conn = one.redis().connection().await;
    let removed: i64 = redis::cmd("HDEL")
        .arg(crate::support::layout::WEBHOOKS_GONE_KEY)
        .arg(gone.url())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the 410 is recorded under the endpoint's URL");
    gone.answer(Reply::Ok);
    two.publish("again", complete("COMPLETED")).await;
    gone.until_delivered(1).await;
}

// Behind Sentinel the outbox lives on the primary like the projects' keys: every run's
// end is told, across a forced failover (the replica got the outbox with the rest), and
// a stalled run too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_sentinel_every_end_is_told_across_a_failover() {
    let receiver = Receiver::start().await;
    let sentinel = crate::support::SentinelSetup::start().await;
    let webhooks = webhooks_to(&receiver);
    let hub = TestHub::start_on(sentinel.url(), move |c| {
        c.worker = None;
        c.stall_after = Duration::from_millis(300);
        c.webhooks = Some(webhooks);
    })
    .await;
    hub.publish("before", complete("COMPLETED")).await;
    receiver.until_delivered(1).await;
    let old = sentinel.primary_port().await;
    sentinel.force_failover().await;
    crate::support::eventually("the replica promoted", || async {
        sentinel.primary_port().await != old
    })
    .await;
    // Publishes may be refused while the hub follows the switch: retried until taken.
    crate::support::eventually("a publish taken by the new primary", || async {
        (200..300).contains(&hub.post_event("after", &complete("FAILED")).await.0)
    })
    .await;
    hub.publish(
        "stuck",
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 10}}),
    )
    .await;
    let got = receiver
        .until("the end after the failover and the stall", |got| {
            got.iter().any(|g| g.body["data"]["project_id"] == "after")
                && got.iter().any(|g| g.body["type"] == "job.stalled")
        })
        .await;
    assert!(got.iter().all(|g| g.signed));
    let after = got
        .iter()
        .find(|g| g.body["data"]["project_id"] == "after")
        .unwrap();
    assert_eq!(after.body["type"], "job.failed");
}

// Publishers need no setting: a `complete` published straight into Redis (the CLI, as a
// worker or the Python SDK would) before any hub with webhooks ever ran there is told
// once one starts, and so is a run begun then that goes silent (job.stalled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_published_before_any_hub_with_webhooks_is_told() {
    let receiver = Receiver::start().await;
    let redis = crate::support::RedisServer::start().await;
    let url = redis.url();
    for args in [
        &["--project", "early", "complete", "--status", "COMPLETED"][..],
        &[
            "--project",
            "stuck",
            "stage-change",
            "--current-stage",
            "RENDERING",
            "--progress",
            "5",
        ],
    ] {
        let mut all = vec!["--redis-url", url.as_str()];
        all.extend(args);
        let out = cli::publish(&all, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let webhooks = webhooks_to(&receiver);
    let _hub = TestHub::start_on(url, move |c| {
        c.worker = None;
        c.stall_after = Duration::from_millis(300);
        c.webhooks = Some(webhooks);
    })
    .await;
    let got = receiver
        .until("the early end and the stall", |got| {
            got.iter().any(|g| g.body["data"]["project_id"] == "early")
                && got.iter().any(|g| g.body["type"] == "job.stalled")
        })
        .await;
    let early = got
        .iter()
        .find(|g| g.body["data"]["project_id"] == "early")
        .unwrap();
    assert_eq!(early.body["type"], "job.completed");
    assert!(early.signed);
}

on_both_brokers!(a_stall_is_told_once_per_stall_on_one_hub);

// In process as with Redis: a silent run is told `job.stalled` once per stall (many
// scans later, still once), a second stall after it published again once more, then
// its end; a queued run is never told stalled.
async fn a_stall_is_told_once_per_stall_on_one_hub(backend: Backend) {
    let receiver = Receiver::start().await;
    let bound = Duration::from_millis(300);
    let webhooks = webhooks_to(&receiver);
    let hub = TestHub::start_with(backend, move |c| {
        c.worker = None;
        c.stall_after = bound;
        c.webhooks = Some(webhooks);
    })
    .await;
    hub.publish(
        "slow",
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 40}}),
    )
    .await;
    assert_eq!(hub.generate("waiting", &json!({})).await.0, 202);
    first_stall(&receiver).await;
    tokio::time::sleep(bound * 4).await;
    assert_eq!(stalls(&receiver.got()), 1, "once per stall");
    hub.publish("slow", crate::support::log_event("alive again"))
        .await;
    receiver
        .until("a second stall", |got| stalls(got) >= 2)
        .await;
    tokio::time::sleep(bound * 4).await;
    hub.publish("slow", complete("COMPLETED")).await;
    receiver
        .until("the end", |got| {
            got.iter().any(|g| g.body["type"] == "job.completed")
        })
        .await;
    two_stalls_then_the_end(&receiver.delivered());
}

// Before any hub reads the outbox it stays bounded (the newest ~1,000 ends), so a
// deployment that never turns webhooks on holds little; a hub that starts later gives
// up unsent what is already older than --webhook-retry-for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_before_any_hub_reads_it_is_bounded_and_old_ends_are_not_sent() {
    let plain = TestHub::start_with(Backend::Redis, |c| {
        c.worker = None;
        c.history.project_quota.per_minute = 0;
        c.history.project_quota.max_per_client = 0;
    })
    .await;
    for n in 0..1_300 {
        plain.publish(&format!("e{n}"), complete("COMPLETED")).await;
    }
    let mut conn = plain.redis().connection().await;
    let len: usize = redis::cmd("XLEN")
        .arg(crate::support::layout::OUTBOX_KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1_000..1_300).contains(&len), "kept {len}");
    let receiver = Receiver::start().await;
    let mut webhooks = webhooks_to(&receiver);
    webhooks.retry_for = Duration::from_millis(1);
    let late = TestHub::start_on(plain.redis().url(), move |c| c.webhooks = Some(webhooks)).await;
    outbox_drained(plain.redis()).await;
    assert!(metric(&late, "hub_webhook_given_up_total{reason=\"expired\"}").await >= len as f64);
    assert!(receiver.got().is_empty(), "nothing that old is sent");
}
