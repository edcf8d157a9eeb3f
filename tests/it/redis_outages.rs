//! Redis outages: Redis killed, restarted, started late, frozen mid-job (1 s, 10 s and
//! the slow 60 s), subscriber connections cut, history going back in a failover, a job
//! lost with Redis's data, publishes waiting out an outage — nothing is lost.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    self, Backend, PATIENCE, RedisServer, TestHub, WsClient, eventually, layout, log_event,
};

// Redis dies while clients watch; they stay connected, and once Redis is back (empty)
// the hub has resubscribed and messages flow again. /readyz follows the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_clients_stay_and_messages_flow_again() {
    let mut hub = TestHub::start(Backend::Redis).await;
    let mut a = WsClient::connected(&hub.ws_url("p")).await;
    let mut b = WsClient::connected(&hub.ws_url("q")).await;
    hub.redis.as_mut().unwrap().kill();
    let ready = hub.http("/readyz");
    eventually("/readyz says not ready", || async {
        reqwest::get(&ready)
            .await
            .map(|r| r.status() == 503)
            .unwrap_or(false)
    })
    .await;
    hub.redis.as_mut().unwrap().restart().await;
    eventually("/readyz is ready again", || async {
        reqwest::get(&ready)
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    let redis = hub.redis.as_ref().unwrap();
    eventually("the hub resubscribed both channels", || async {
        redis.numsub("p").await == 1 && redis.numsub("q").await == 1
    })
    .await;
    let mut conn = redis.connection().await;
    for (project, client) in [("p", &mut a), ("q", &mut b)] {
        let msg = format!(r#"{{"event":"log","data":{{"message":"back for {project}"}}}}"#);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(layout::channel(&support::project(project)))
            .arg(&msg)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(client.next_text().await, msg);
    }
    hub.stop().await;
}

// A hub started while Redis is down comes up not ready, then serves once Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_started_before_redis_becomes_ready_when_redis_arrives() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    redis.kill();
    let hub = TestHub::start_with(Backend::Memory, |c| c.redis_url = Some(url)).await;
    let ready = hub.http("/readyz");
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 503);
    redis.restart().await;
    eventually("/readyz is ready once Redis is up", || async {
        reqwest::get(&ready)
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
}

// The keep-alive PING on the subscribed connection must not itself break the connection
// (Redis answers PING differently in subscribed mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_keepalive_does_not_drop_the_connection() {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        c.redis_keepalive = Duration::from_millis(20)
    })
    .await;
    let mut client = WsClient::connected(&hub.ws_url("alive")).await;
    let id_before = subscriber_client_id(&hub).await;
    // Many keep-alive rounds go by while messages flow.
    for i in 0..50 {
        let msg = format!(r#"{{"event":"log","data":{{"message":"{i}"}}}}"#);
        hub.publish_raw("alive", &msg).await;
        assert_eq!(client.next_text().await, msg);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        subscriber_client_id(&hub).await,
        id_before,
        "the subscriber connection was never replaced"
    );
}

/// The Redis client id of the hub's subscriber connection (the one in subscribed mode).
async fn subscriber_client_id(hub: &TestHub) -> String {
    let mut conn = hub.redis().connection().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Subscribed to something (its projects' channels and its liveness probe's).
    let subscribers: Vec<&str> = list.lines().filter(|l| !l.contains(" sub=0 ")).collect();
    assert_eq!(
        subscribers.len(),
        1,
        "exactly one subscriber connection: {list}"
    );
    subscribers[0]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

// The hub's subscriber connection is cut while events are being published: after it
// reconnects it fills the gap from history, so a watcher gets every event exactly once,
// in order, without reconnecting itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_connection_cut_mid_stream_loses_nothing() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("cut")).await;
    let first = hub.publish("cut", log_event("0")).await;
    assert_eq!(client.next_event().await["id"], first.as_str());
    let publisher = hub.publisher().clone();
    let project = progress_hub::wire::ProjectId::parse("cut").unwrap();
    let publishing = tokio::spawn(async move {
        for i in 1..=300 {
            let event = progress_hub::wire::Event::from_json(
                log_event(&i.to_string()).to_string().as_bytes(),
            )
            .unwrap();
            publisher.publish(&project, event).await.unwrap();
        }
    });
    // Cut the subscriber off (twice, while events flow).
    for _ in 0..2 {
        let killed = hub.redis().kill_subscribers().await;
        assert_eq!(killed, 1, "the hub holds exactly one subscriber connection");
        tokio::time::sleep(Duration::from_millis(30)).await; // let some events fall in the gap
        support::eventually("the subscriber is back", || async {
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(layout::channel(&support::project("cut")))
                .query_async::<(String, i64)>(&mut hub.redis().connection().await)
                .await
                .unwrap()
                .1
                == 1
        })
        .await;
    }
    publishing.await.unwrap();
    for i in 1..=300 {
        let frame = client.next_event().await;
        assert_eq!(
            frame["data"]["message"],
            i.to_string(),
            "event {i}: exactly once, in order"
        );
    }
    let sentinel = hub.publish("cut", log_event("end")).await;
    assert_eq!(
        client.next_event().await["id"],
        sentinel.as_str(),
        "nothing doubled"
    );
}

// A failover to a replica that missed the latest writes keeps the epoch but takes the
// sequence back, so new events reuse ids the hub already delivered. The live client is
// reset first (a snapshot with `recovered: false` of the history as it stands: its ids
// never go back without one, issue 23 §2), then new events are delivered (not dropped
// as duplicates), and a client resuming from a lost id is told `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_that_goes_back_in_a_failover_still_delivers_new_events() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("fo")).await;
    let mut conn = hub.redis().connection().await;
    for i in 0..5 {
        let id = hub.publish("fo", log_event(&i.to_string())).await;
        assert_eq!(client.next_event().await["id"], id.as_str());
    }
    // What the replica holds: the project as of the fifth event.
    let fo = support::project("fo");
    let keys = [layout::state_key(&fo), layout::history_key(&fo)];
    let mut replica = Vec::new();
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        replica.push(dump);
    }
    let mut lost = String::new();
    for i in 5..10 {
        lost = hub.publish("fo", log_event(&i.to_string())).await;
        assert_eq!(client.next_event().await["id"], lost.as_str());
    }
    // The failover: the last five writes vanish and connections drop.
    for (key, dump) in keys.iter().zip(&replica) {
        let () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let killed = hub.redis().kill_subscribers().await;
    assert_eq!(killed, 1);
    support::eventually("the subscriber is back", || async {
        hub.redis().numsub("fo").await == 1
    })
    .await;
    let reset = client.next_event().await;
    assert_eq!(
        (
            reset["event"].as_str(),
            reset["data"]["recovered"].as_bool()
        ),
        (Some("snapshot"), Some(false)),
        "{reset}"
    );
    let after = hub.publish("fo", log_event("after failover")).await;
    assert_eq!(
        after.split_once(':').map(|(e, _)| e),
        lost.split_once(':').map(|(e, _)| e),
        "the epoch survived the failover (the case under test)"
    );
    let frame = client.next_event().await;
    assert_eq!(frame["data"]["message"], "after failover", "{frame}");
    assert_eq!(frame["id"], after.as_str());
    let (mut resumed, connected) = WsClient::resume(&hub.ws_url("fo"), &lost).await;
    assert_eq!(connected["data"]["recovered"], false, "{connected}");
    let snapshot = resumed.next_event().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(snapshot["data"]["last_event_id"], after.as_str());
}

// The same cut on a project with no history yet: what is published while the
// subscriber is away is still filled in, from the start of the new history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_cut_before_the_first_event_loses_nothing() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut client = WsClient::connected(&hub.ws_url("fresh")).await;
    let killed = hub.redis().kill_subscribers().await;
    assert_eq!(killed, 1);
    for i in 1..=50 {
        hub.publish("fresh", log_event(&i.to_string())).await;
    }
    for i in 1..=50 {
        let frame = client.next_event().await;
        assert_eq!(
            frame["data"]["message"],
            i.to_string(),
            "event {i}: exactly once, in order"
        );
    }
    let sentinel = hub.publish("fresh", log_event("end")).await;
    assert_eq!(client.next_event().await["id"], sentinel.as_str());
}

/// Watches `project`, starts its generation job, and returns once the job is in its
/// second step (so that a fault hits it mid-run).
async fn watch_a_job_into_its_second_step(hub: &TestHub, project: &str) -> WsClient {
    let mut client = WsClient::connected(&hub.ws_url(project)).await;
    assert_eq!(hub.generate(project, &json!({})).await.0, 202);
    loop {
        let frame = client.next_event().await;
        if frame["data"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("[2/15]"))
        {
            return client;
        }
    }
}

/// Redis freezes mid-job for `outage`: the hub stays up and says it is not ready, the
/// job's publishes wait and retry (idempotently), the subscriber catches up, and the
/// watching client sees every event exactly once — no gap, no duplicate, one complete.
async fn redis_outage_mid_job_loses_nothing(outage: std::time::Duration) {
    let hub = TestHub::start_with(Backend::Redis, |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = std::time::Duration::from_millis(30);
        }
        // This client reads but does not answer pings; the outage is what is tested.
        c.heartbeat_timeout = outage + PATIENCE * 3;
    })
    .await;
    let mut client = watch_a_job_into_its_second_step(&hub, "outage").await;
    hub.redis().pause();
    let ready = reqwest::get(hub.http("/readyz")).await.unwrap().status();
    tokio::time::sleep(outage).await; // the outage itself: a duration, nothing to await
    hub.redis().resume();
    assert_eq!(ready, 503, "not ready while Redis is frozen");
    let frames = client.until_complete(outage + PATIENCE * 2).await;
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| {
            f["id"]
                .as_str()
                .unwrap()
                .split_once(':')
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no duplicate: {seqs:?}"
    );
    for n in 3..=15 {
        let line = format!("[{n}/15]");
        let count = frames
            .iter()
            .filter(|f| {
                f["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&line))
            })
            .count();
        assert_eq!(count, 1, "{line} exactly once");
    }
    assert_eq!(
        frames.iter().filter(|f| f["event"] == "complete").count(),
        1
    );
    assert_eq!(frames.last().unwrap()["data"]["status"], "COMPLETED");
    support::eventually("ready again", || async {
        reqwest::get(hub.http("/readyz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
}

// Redis restarted empty mid-job: the queue lost the job with everything else. The
// worker notices its claim is gone with nobody holding it, queues the job again, and
// the run is done in full (in a new history: watchers get it from its start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lost_with_redis_data_is_queued_again_and_completes() {
    let mut hub = TestHub::start_with(Backend::Redis, |c| {
        if let Some(w) = c.worker.as_mut() {
            // A run of ~5 s: keep-alives (every 0.5 s) see the emptied queue mid-run.
            w.mock_delay = std::time::Duration::from_millis(150);
            w.claim_idle = std::time::Duration::from_secs(2);
        }
    })
    .await;
    let mut client = watch_a_job_into_its_second_step(&hub, "emptied").await;
    hub.redis.as_mut().unwrap().restart().await;
    let frames = client.until_complete(PATIENCE * 3).await;
    let complete = frames.last().unwrap();
    assert_eq!(complete["data"]["status"], "COMPLETED", "{complete}");
    assert!(
        frames.iter().any(|f| f["data"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("[15/15]"))),
        "the run went through to its last step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow (60 s outage): run by scripts/test.sh with --include-ignored"]
async fn redis_outage_of_60s_mid_job_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("progress_hub=info,progress_hub_jobs=info")
        .try_init();
    redis_outage_mid_job_loses_nothing(std::time::Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_of_1s_mid_job_loses_nothing() {
    redis_outage_mid_job_loses_nothing(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_of_10s_mid_job_loses_nothing() {
    redis_outage_mid_job_loses_nothing(std::time::Duration::from_secs(10)).await;
}

// While Redis is down, publishers wait and retry within a bounded buffer: beyond
// `MAX_WAITING_PUBLISHES` waiting at once, a publish fails at once with an error that
// says so (never a silent drop), and those that waited go through when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_wait_out_an_outage_within_a_bound_and_say_when_it_is_hit() {
    use progress_hub::publish::{MAX_WAITING_PUBLISHES, Publisher};
    let mut hub = TestHub::start(Backend::Redis).await;
    let broker = hub.hub.as_ref().unwrap().broker().clone();
    let publisher = Publisher::retrying(
        broker,
        progress_hub::locale::Locale::En,
        std::time::Duration::from_millis(500),
        PATIENCE * 3,
    );
    hub.redis.as_mut().unwrap().kill();
    let total = MAX_WAITING_PUBLISHES + 50;
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..total {
        let publisher = publisher.clone();
        publishes.spawn(async move {
            // One project each: publishes of one project are serialized, and the bound
            // is about the process as a whole.
            let project = progress_hub::wire::ProjectId::parse(&format!("bound-{i}")).unwrap();
            let event = progress_hub::wire::Event::from_json(
                json!({"event": "log", "data": {"level": "INFO", "message": "waited"}})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            publisher.publish(&project, event).await
        });
    }
    // The ones over the bound come back first, each with its reason.
    let mut refused = 0;
    while refused < total - MAX_WAITING_PUBLISHES {
        let result = publishes.join_next().await.unwrap().unwrap();
        let err = result.expect_err("no publish can succeed while Redis is down");
        assert!(
            err.to_string().contains("already wait for the broker"),
            "{err}"
        );
        refused += 1;
    }
    hub.redis.as_mut().unwrap().restart().await;
    let mut delivered = 0;
    while let Some(result) = publishes.join_next().await {
        assert!(result.unwrap().is_ok(), "a waiting publish goes through");
        delivered += 1;
    }
    assert_eq!(delivered, MAX_WAITING_PUBLISHES);
}

// A resume during an outage, on a project this hub already watches, cannot read the
// client's gap: it connects `recovered: false`. Its gap must still reach it, before its
// next live event (the attack: the next live event moved its position past the gap, so
// no reconnect could bring the missing events back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_during_an_outage_gets_its_gap_before_the_next_live_event() {
    let hub = TestHub::start(Backend::Redis).await;
    let mut watcher = WsClient::connected(&hub.ws_url("gap")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(hub.publish("gap", log_event(&format!("{i}"))).await);
        assert_eq!(watcher.next_event().await["id"], ids[i].as_str());
    }
    hub.redis().pause();
    let resumed = WsClient::resume(&hub.ws_url("gap"), &ids[0]).await;
    hub.redis().resume();
    let (mut client, connected) = resumed;
    assert_eq!(connected["data"]["recovered"], false, "{connected}");
    ids.push(hub.publish("gap", log_event("live")).await);
    for id in &ids[1..] {
        assert_eq!(
            client.next_event().await["id"],
            id.as_str(),
            "in order, no gap"
        );
    }
}

// A publish whose answer is lost with its connection, after Redis ran the script, is
// sent again by the publisher as a retry: the script finds its receipt among the
// project's last publishes and answers the first id, so the history holds it once.
// (The receipt is looked up only on a retry: without the publisher saying so, the
// event would be appended twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_answer_was_lost_is_retried_and_appended_once() {
    use progress_hub::publish::{Published, Publisher};
    let redis = RedisServer::start().await;
    let proxy = support::RedisProxy::start(&redis.url().replace("redis://", "")).await;
    let hub = TestHub::start_on(proxy.url(), |_| {}).await;
    let publisher = Publisher::retrying(
        hub.hub.as_ref().unwrap().broker().clone(),
        progress_hub::locale::Locale::En,
        Duration::ZERO,
        PATIENCE,
    );
    let project = support::project("lost-answer");
    let log = |message: &str| {
        progress_hub::wire::Event::from_json(log_event(message).to_string().as_bytes()).unwrap()
    };
    let sent = |published| match published {
        Published::Sent(id) => id.to_string(),
        Published::Coalesced => panic!("a log is never coalesced"),
    };
    let first = sent(publisher.publish(&project, log("first")).await.unwrap());
    proxy.lose_next_publish_answer();
    let second = sent(publisher.publish(&project, log("second")).await.unwrap());
    assert_eq!(proxy.lost_answers(), 1, "the case under test");

    let mut conn = redis.connection().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(layout::history_key(&project))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<String> = entries
        .iter()
        .map(|(_, fields)| {
            let frame: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
            frame["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [first, second],
        "each event once, with the id answered"
    );
}

// The test support's own guard (every test's Redis depends on it): a process that has
// not bound its port (here one that never will), taken by another server meanwhile, is
// never mistaken for the server answering there, however long it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_port_was_taken_is_not_taken_for_the_one_answering() {
    let other = RedisServer::start().await;
    let mut late = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    assert!(!support::redis::started(&other.url(), &mut late).await);
    let _ = late.kill();
    let _ = late.wait();
}
