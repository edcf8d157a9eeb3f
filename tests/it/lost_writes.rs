//! Redis losing acknowledged writes (issue 23 §2): a restart from an older save. Ids
//! must never repeat within an epoch, a resume across the loss must say `recovered:
//! false`, and a live watcher must never see ids go backwards without a reset.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use crate::support::{self, RedisProxy, RedisServer, TestHub, WsClient, log_event};

fn split(id: &str) -> (String, u64) {
    let (epoch, seq) = id.split_once(':').expect("an id is <epoch>:<seq>");
    (epoch.to_string(), seq.parse().expect("a sequence number"))
}

/// The reproduction: publish 10, SAVE, publish 10 more (a client has seen the 20th),
/// kill -9 Redis, restart it from the save (it holds the 10th), publish 15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_save_starts_a_new_epoch() {
    let redis = RedisServer::start_with_saves().await;
    let mut hub = TestHub::start_with_redis(Some(redis), |_| {}).await;
    let mut live = WsClient::connected(&hub.ws_url("saved")).await;
    let mut seen = Vec::new();
    for i in 1..=20 {
        if i == 11 {
            hub.redis().save().await;
        }
        let id = hub
            .publish("saved", log_event(&format!("before {i}")))
            .await;
        assert_eq!(live.next_event().await["id"], id.as_str());
        seen.push(id);
    }
    let twentieth = seen.last().unwrap().clone();
    let (old_epoch, _) = split(&twentieth);

    let redis = hub.redis.as_mut().unwrap();
    redis.kill();
    redis.restart().await;
    let restarted = Instant::now();
    let state: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(support::layout::state_key(&support::project("saved")))
        .query_async(&mut hub.redis().connection().await)
        .await
        .unwrap();
    assert_eq!(
        state["seq"], "10",
        "the restart loaded the save (the case under test)"
    );
    // The hub finds the new incarnation by itself (the window, measured): its era.
    support::eventually("the hub stamped the new incarnation", || async {
        era_is_current(hub.redis()).await
    })
    .await;
    eprintln!(
        "era stamped {:?} after the restarted Redis answered",
        restarted.elapsed()
    );
    // The hub's gap fill done (it resets the watcher: what it had is not in the history
    // any more) before the new events, so that each reaches it live.
    let ready = hub.http("/readyz");
    support::eventually("the hub is ready on the restarted Redis", || async {
        hub.redis().numsub("saved").await == 1
            && reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    // The live watcher had up to the 20th, which the history lost: it is reset to the
    // history as the save left it (the 10th), before anything else.
    let reset = live.next_event().await;
    assert_eq!(reset["event"], "snapshot", "{reset}");
    assert_eq!(reset["data"]["recovered"], false, "{reset}");
    assert_eq!(reset["data"]["last_event_id"], seen[9].as_str(), "{reset}");

    let mut after = Vec::new();
    for i in 1..=15 {
        after.push(publish_when_back(&hub, "saved", log_event(&format!("after {i}"))).await);
    }
    for id in &after {
        let (epoch, seq) = split(id);
        assert!(
            epoch != old_epoch || seq > 20,
            "{id} repeats an id handed out before the loss (up to {twentieth})"
        );
    }

    // Resuming across the loss is never `recovered: true`.
    let (mut resumed, connected) = WsClient::resume(&hub.ws_url("saved"), &twentieth).await;
    assert_eq!(connected["data"]["recovered"], false, "{connected}");
    let snapshot = resumed.next_event().await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["data"]["recovered"], false, "{snapshot}");
    assert_eq!(
        snapshot["data"]["last_event_id"],
        after.last().unwrap().as_str()
    );

    // The live watcher: the 15 new events, and ids that never go back within an epoch
    // unless a snapshot with `recovered: false` reset its view first.
    let mut last = Some(split(&twentieth));
    let mut messages = Vec::new();
    while messages.len() < 15 {
        let frame: Value = live.next_event().await;
        if frame["event"] == "snapshot" {
            assert_eq!(frame["data"]["recovered"], false, "{frame}");
            last = frame["data"]["last_event_id"].as_str().map(split);
            continue;
        }
        let id = split(frame["id"].as_str().expect("an id"));
        if let Some((epoch, seq)) = &last {
            assert!(
                id.0 != *epoch || id.1 > *seq,
                "ids went back without a reset: {id:?} after {epoch}:{seq}"
            );
        }
        last = Some(id);
        messages.push(frame["data"]["message"].as_str().unwrap().to_string());
    }
    let expected: Vec<String> = (1..=15).map(|i| format!("after {i}")).collect();
    assert_eq!(messages, expected);
}

/// A restart that lost nothing (the soak's) still begins a new epoch, which a live
/// watcher follows on the channel. The next gap fill (here: the subscriber's connection
/// cut) must go on after what it has, not replay the new epoch from its first event:
/// that re-sent every event of the epoch to every watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_watcher_gets_each_event_of_the_new_epoch_once() {
    let redis = RedisServer::start_with_saves().await;
    let mut hub = TestHub::start_with_redis(Some(redis), |_| {}).await;
    let mut live = WsClient::connected(&hub.ws_url("once")).await;
    let before = hub.publish("once", log_event("before")).await;
    assert_eq!(live.next_event().await["id"], before.as_str());
    hub.redis().save().await;
    hub.redis.as_mut().unwrap().restart().await;
    // The subscriber is back and has filled its gap (nothing) before the next publish:
    // the new epoch's events reach the watcher on the channel only.
    let ready = hub.http("/readyz");
    support::eventually("the hub is ready on the restarted Redis", || async {
        era_is_current(hub.redis()).await
            && hub.redis().numsub("once").await == 1
            && reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let mut after = Vec::new();
    for i in 1..=3 {
        let id = publish_when_back(&hub, "once", log_event(&format!("after {i}"))).await;
        assert_eq!(live.next_event().await["id"], id.as_str());
        after.push(id);
    }
    assert_ne!(
        split(&after[0]).0,
        split(&before).0,
        "the restart began a new epoch (the case under test)"
    );
    assert_eq!(hub.redis().kill_subscribers().await, 1);
    support::eventually("the subscriber is back", || async {
        hub.redis().numsub("once").await == 1
    })
    .await;
    let last = hub.publish("once", log_event("last")).await;
    let frame = live.next_event().await;
    assert_eq!(frame["id"], last.as_str(), "no event twice: {frame}");
}

/// A reconnect storm: a project's last watcher leaves and a new one joins before the
/// subscriber applied the leave (it was busy, here in another project's SUBSCRIBE), so
/// both changes reach it in one batch. The channel stays subscribed, but the new topic
/// must read its origin as any new topic does: without one, the next gap fill (any
/// reconnect of the subscriber) replayed the whole history to every watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_left_and_joined_again_in_one_batch_gets_no_event_twice() {
    let hub = TestHub::start(support::Backend::Redis).await;
    let mut first = WsClient::connected(&hub.ws_url("storm")).await;
    for i in 1..=2 {
        let id = hub.publish("storm", log_event(&format!("early {i}"))).await;
        assert_eq!(first.next_event().await["id"], id.as_str());
    }
    hub.await_watched_projects(1).await;

    // Redis frozen: the subscriber blocks in the SUBSCRIBE of a second project.
    hub.redis().pause();
    let _other = WsClient::connect(&hub.ws_url("other")).await;
    hub.await_watched_projects(2).await;
    // The storm: the last watcher of `storm` leaves, another joins, both queued.
    first.close().await;
    hub.await_watched_projects(1).await;
    let mut second = WsClient::connect(&hub.ws_url("storm")).await;
    hub.await_watched_projects(2).await;
    hub.redis().resume();

    let connected = second.next_json().await;
    assert_eq!(connected["event"], "connected", "{connected}");
    let snapshot = second.next_event().await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    for i in 1..=3 {
        let id = hub.publish("storm", log_event(&format!("live {i}"))).await;
        assert_eq!(second.next_event().await["id"], id.as_str());
    }

    // Any reconnect of the subscriber fills each topic's gap: here, none.
    assert_eq!(hub.redis().kill_subscribers().await, 1);
    support::eventually("the subscriber is back", || async {
        hub.redis().numsub("storm").await == 1
    })
    .await;
    let last = hub.publish("storm", log_event("last")).await;
    let frame = second.next_event().await;
    assert_eq!(frame["id"], last.as_str(), "no event twice: {frame}");
}

/// Redis shutting down may not deliver the last channel messages (or replies) of events
/// it saved; after the restart, the first publish begins a new epoch before the hub's
/// subscriber is back. The gap fill must still deliver the saved events, then the new
/// epoch's: every event once, in order. (The new epoch used to drop the history, and
/// the gap fill went on from the new epoch's first event: the last saved ones were lost
/// to live watchers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_saved_as_redis_shuts_down_reaches_live_watchers_across_the_new_epoch() {
    let mut redis = RedisServer::start_with_saves().await;
    let proxy = RedisProxy::start(&redis.url().replace("redis://", "")).await;
    let hub = TestHub::start_on(proxy.url(), |_| {}).await;
    let mut live = WsClient::connected(&hub.ws_url("race")).await;
    let mut sent = Vec::new();
    for i in 1..=2 {
        let id = hub.publish("race", log_event(&format!("before {i}"))).await;
        assert_eq!(live.next_event().await["id"], id.as_str());
        sent.push(id);
    }

    // The last event before the shutdown: written, acknowledged and saved, but its
    // channel message never reaches the hub (as when Redis closes its connections first).
    proxy.drop_all_deliveries(true);
    proxy.hold_new_connections(true);
    sent.push(hub.publish("race", log_event("saved")).await);
    redis.save().await;
    redis.restart().await;

    // The first publish of the restarted server, by another hub (direct to Redis),
    // while this hub's subscriber is still held on its way back.
    let other = TestHub::start_on(redis.url(), |_| {}).await;
    let first = publish_when_back(&other, "race", log_event("after restart")).await;
    assert_ne!(
        split(&first).0,
        split(&sent[0]).0,
        "the restart began a new epoch (the case under test)"
    );
    sent.push(first);
    proxy.drop_all_deliveries(false);
    proxy.hold_new_connections(false);

    sent.push(publish_when_back(&hub, "race", log_event("last")).await);
    // Up to the last event published: every event after what the watcher had, once,
    // in order, with no reset (nothing was lost).
    let last = sent.last().unwrap().clone();
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let frame = live.next_event().await;
        assert_ne!(frame["event"], "snapshot", "nothing was lost: {frame}");
        got.push(frame["id"].as_str().expect("an id").to_string());
    }
    assert_eq!(got, sent[2..], "every event once, in order");

    // A client that had the second resumes across the new epoch: nothing was lost.
    let (mut resumed, connected) = WsClient::resume(&hub.ws_url("race"), &sent[1]).await;
    assert_eq!(connected["data"]["recovered"], true, "{connected}");
    for id in &sent[2..] {
        assert_eq!(resumed.next_event().await["id"], id.as_str());
    }
}

/// Whether the era key names the running server's incarnation.
async fn era_is_current(redis: &RedisServer) -> bool {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let run_id = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let era: Option<String> = redis::cmd("GET")
        .arg(support::layout::ERA_KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    era.as_deref() == Some(run_id.as_str())
}

/// Publishes through the HTTP API, again while the hub answers 503 (its command
/// connection finds the restarted server on its next command); returns the id.
async fn publish_when_back(hub: &TestHub, project: &str, event: Value) -> String {
    let id = std::sync::Mutex::new(None);
    support::eventually("a publish goes through after the restart", || async {
        let (status, body) = hub.post_event(project, &event).await;
        *id.lock().unwrap() = body["id"].as_str().map(str::to_string);
        status == 202
    })
    .await;
    id.into_inner().unwrap().expect("an id")
}
