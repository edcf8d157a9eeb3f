//! Redis Sentinel: hubs and a worker on `redis+sentinel://` through a forced failover
//! and a killed primary, each mid-stream and mid-job; and a plain `redis://` hub whose
//! node was demoted to a replica (it must say so on `/readyz`).
//!
//! The failover tests print what they measured (`cargo test --test it -- sentinel::
//! --nocapture`): how long publishes were refused, and the time from the fault to the
//! first publish accepted after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;

use crate::support::{
    Auth, PATIENCE, RedisServer, SentinelSetup, TestHub, WsClient, cli, eventually,
};

/// Events published before the fault, and at least this many after both hubs are back.
const BEFORE: usize = 10;
const AFTER: usize = 10;
/// Between two publishes of the stream.
const PACE: Duration = Duration::from_millis(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `SENTINEL FAILOVER`: the replica is promoted, the primary demoted; both live.
    Forced,
    /// SIGKILL to the primary: the sentinels notice after 1 s and promote the replica.
    Killed,
}

async fn hub_on(url: &str) -> TestHub {
    TestHub::start_on(url.to_string(), |c| c.worker = None).await
}

async fn ready(hub: &TestHub) -> u16 {
    match reqwest::get(hub.http("/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// One publish attempt: when it started (since the test's start), how long its answer
/// took, and the answer.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    at: Duration,
    took: Duration,
    status: u16,
}

/// Publishes `n{i}` for i = 0, 1, ... through the two hubs in turn, each with the
/// Idempotency-Key `stream-{i}`, retrying a refused one (503 or no answer) until it is
/// accepted. Stops once `stop` is set; returns how many were accepted.
async fn publish_stream(
    hubs: [String; 2],
    start: Instant,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
) -> usize {
    let http = reqwest::Client::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut tries = 0usize;
        loop {
            // A retry goes to the other hub: a client would as well, behind a balancer.
            let hub = &hubs[(n + tries) % 2];
            let at = start.elapsed();
            let answer = http
                .post(format!("{hub}/api/v1/projects/stream/events"))
                .header("Idempotency-Key", format!("stream-{n}"))
                .json(
                    &json!({"event": "log", "data": {"level": "INFO", "message": format!("n{n}")}}),
                )
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let status = answer.map(|r| r.status().as_u16()).unwrap_or(0);
            let took = start.elapsed() - at;
            attempts.lock().push(Attempt { at, took, status });
            match status {
                202 => break,
                503 | 0 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("publish n{n} answered {other}"),
            }
        }
        n += 1;
        accepted.store(n, Ordering::Relaxed);
        tokio::time::sleep(PACE).await;
    }
    n
}

/// The `n<i>` log messages a client receives until `end`.
async fn stream_of(client: &mut WsClient) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let frame = client.next_event().await;
        if frame["event"] != "log" {
            continue;
        }
        let message = frame["data"]["message"].as_str().unwrap().to_string();
        if message == "end" {
            return seen;
        }
        seen.push(message);
    }
}

/// Samples `/readyz` of both hubs every 50 ms: (when, hub, status).
fn sample_readiness(
    hubs: [String; 2],
    start: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Duration, usize, u16)>> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for (i, hub) in hubs.iter().enumerate() {
                let status = match http
                    .get(format!("{hub}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                samples.push((start.elapsed(), i, status));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        samples
    })
}

async fn failover_mid_stream_and_mid_job(fault: Fault) {
    let mut setup = SentinelSetup::start().await;
    let url = setup.url();
    let hubs = [hub_on(&url).await, hub_on(&url).await];
    let _worker = cli::Killed(cli::worker(
        &url,
        &[
            "--mock-delay",
            "100ms",
            "--retry-backoff",
            "50ms",
            "--claim-idle",
            "2s",
        ],
    ));
    for hub in &hubs {
        eventually("the hub is ready", || async { ready(hub).await == 200 }).await;
    }
    let mut stream_clients = Vec::new();
    let mut job_clients = Vec::new();
    for hub in &hubs {
        stream_clients.push(WsClient::connected(&hub.ws_url("stream")).await);
        job_clients.push(WsClient::connected(&hub.ws_url("job")).await);
    }

    // The job is under way on the worker ...
    let (status, body) = hubs[0].generate("job", &json!({})).await;
    assert_eq!(status, 202, "{body}");
    loop {
        let frame = job_clients[1].next_event().await;
        if frame["event"] == "stage_change" && frame["data"]["current_stage"] == "ASSETS_GENERATING"
        {
            break;
        }
    }
    // ... and so is a stream of events through both hubs.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let urls = [hubs[0].http(""), hubs[1].http("")];
    let publisher = tokio::spawn(publish_stream(
        urls.clone(),
        start,
        Arc::clone(&stop),
        Arc::clone(&accepted),
        Arc::clone(&attempts),
    ));
    let readiness_stop = Arc::new(AtomicBool::new(false));
    let readiness = sample_readiness(urls, start, Arc::clone(&readiness_stop));
    eventually("the stream is under way", || async {
        accepted.load(Ordering::Relaxed) >= BEFORE
    })
    .await;

    let old_primary = setup.primary_port().await;
    let fault_at = start.elapsed();
    match fault {
        Fault::Forced => setup.force_failover().await,
        Fault::Killed => setup.kill_primary().await,
    }
    tokio::time::timeout(PATIENCE * 2, setup.wait_switched_from(old_primary))
        .await
        .expect("the sentinels promote the replica");
    let switched_at = start.elapsed();
    for hub in &hubs {
        eventually("the hub is ready again", || async {
            ready(hub).await == 200
        })
        .await;
    }
    let back_at = accepted.load(Ordering::Relaxed);
    eventually("the stream goes on after the failover", || async {
        accepted.load(Ordering::Relaxed) >= back_at + AFTER
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let total = publisher.await.unwrap();
    hubs[1]
        .publish("stream", crate::support::log_event("end"))
        .await;

    // Every accepted event reached every client on both hubs, once and in order.
    let expected: Vec<String> = (0..total).map(|n| format!("n{n}")).collect();
    for (i, client) in stream_clients.iter_mut().enumerate() {
        let seen = stream_of(client).await;
        assert_eq!(seen, expected, "stream on hub {i}");
    }

    // The job completed, once, seen on both hubs.
    for (i, client) in job_clients.iter_mut().enumerate() {
        let frames = client.until_complete(Duration::from_secs(60)).await;
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| {
                f["id"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0] + 1, "job ids on hub {i} contiguous: {seqs:?}");
        }
        let completes = frames.iter().filter(|f| f["event"] == "complete").count();
        assert_eq!(completes, 1, "one complete on hub {i}");
        let last = frames.last().unwrap();
        assert_eq!(last["data"]["status"], "COMPLETED", "hub {i}: {last}");
    }
    hubs[0]
        .publish("job", crate::support::log_event("after"))
        .await;
    for (i, client) in job_clients.iter_mut().enumerate() {
        let next = client.next_event().await;
        assert_eq!(
            next["data"]["message"], "after",
            "no second complete on hub {i}"
        );
    }

    // /readyz was honest: 503 on both hubs while they could not write (a killed primary
    // for at least the sentinels' 1 s; the fence of a forced failover for about 1 s),
    // 200 again after.
    readiness_stop.store(true, Ordering::Relaxed);
    let samples = readiness.await.unwrap();
    for hub in 0..2 {
        let after_fault: Vec<u16> = samples
            .iter()
            .filter(|(at, h, _)| *h == hub && *at > fault_at)
            .map(|(_, _, s)| *s)
            .collect();
        assert!(
            after_fault.contains(&503),
            "hub {hub} said not ready while it could not write: {after_fault:?}"
        );
        assert_eq!(after_fault.last(), Some(&200), "hub {hub} ready at the end");
    }

    // What was measured.
    let attempts = attempts.lock().clone();
    let refused: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status != 202 && a.at >= fault_at)
        .collect();
    let first_refused = refused.first().map(|a| a.at);
    let last_refused = refused.last().map(|a| a.at);
    // The first publish accepted after the fault that had to wait for the new primary
    // (it answered after the last refusal, or was held longer than 200 ms).
    let recovered = attempts
        .iter()
        .filter(|a| a.status == 202 && a.at + a.took >= fault_at)
        .find(|a| Some(a.at) > last_refused || a.took > Duration::from_millis(200))
        .map(|a| a.at + a.took - fault_at);
    let slowest = attempts
        .iter()
        .filter(|a| a.at + a.took >= fault_at)
        .map(|a| a.took)
        .max();
    let switch = switched_at - fault_at;
    eprintln!(
        "SENTINEL {fault:?}: sentinel[0] named the new primary +{switch:?} after the fault \
         (polled every 20 ms); {} publishes refused (503), from +{:?} to +{:?}; first \
         publish accepted on the new primary +{recovered:?} after the fault, {:?} after \
         the switch; slowest answer {slowest:?}; {total} events accepted in {} attempts",
        refused.len(),
        first_refused.map(|t| t - fault_at),
        last_refused.map(|t| t - fault_at),
        recovered.map(|t| t.as_secs_f64() - switch.as_secs_f64()),
        attempts.len()
    );
}

// SENTINEL FAILOVER mid-stream and mid-job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_failover_mid_stream_and_mid_job() {
    failover_mid_stream_and_mid_job(Fault::Forced).await;
}

// SIGKILL of the primary mid-stream and mid-job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_mid_stream_and_mid_job() {
    failover_mid_stream_and_mid_job(Fault::Killed).await;
}

// A plain redis:// hub whose node a failover demoted to a replica (REPLICAOF): it cannot
// write, so /readyz says 503 and a publish answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_node_is_not_ready() {
    let node = RedisServer::start().await;
    let new_primary = RedisServer::start().await;
    let hub = TestHub::start_on(node.url(), |c| c.worker = None).await;
    eventually("the hub is ready", || async { ready(&hub).await == 200 }).await;
    hub.publish("demoted", crate::support::log_event("before"))
        .await;

    let port = new_primary.url().rsplit(':').next().unwrap().to_string();
    let mut conn = node.connection().await;
    // As a replica the node would write its primary's snapshot to its `dir`, the cwd:
    // loaded from the socket instead.
    let _: redis::Value = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-load")
        .arg("swapdb")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query_async(&mut conn)
        .await
        .unwrap();

    eventually("the hub says it is not ready", || async {
        ready(&hub).await == 503
    })
    .await;
    let (status, body) = hub
        .post_event("demoted", &crate::support::log_event("after"))
        .await;
    assert_eq!(status, 503, "{body}");
}

// Behind Sentinel, the primary a hub is connected to is demoted with nothing announced
// to the hub (the sentinels are re-pointed with REMOVE/MONITOR, no +try-failover nor
// +switch-master): the hub's next write meets READONLY, asks the sentinels again and is
// resent to the new primary, so the publish is accepted; the subscriber follows, and
// the hub is ready on the new primary. Failed before: the publish answered 503 (the
// READONLY reply was never recognised, see connection.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readonly_reply_behind_sentinel_makes_the_hub_ask_the_sentinels_again() {
    let setup = SentinelSetup::start().await;
    let hub = hub_on(&setup.url()).await;
    eventually("the hub is ready", || async { ready(&hub).await == 200 }).await;
    let mut client = WsClient::connected(&hub.ws_url("readonly")).await;
    let id = hub
        .publish("readonly", crate::support::log_event("before"))
        .await;
    assert_eq!(client.next_event().await["id"], id.as_str());
    let old = setup.primary_port().await;

    let new = setup.demote_primary_unannounced().await;
    assert_ne!(new, old);
    assert_eq!(
        setup.primary_port().await,
        new,
        "the sentinels name the new one"
    );
    let demoted_at = Instant::now();
    let (status, body) = hub
        .post_event("readonly", &crate::support::log_event("after"))
        .await;
    let took = demoted_at.elapsed();
    assert_eq!(
        status, 202,
        "the refused write was resent to the new primary: {body}"
    );
    let frame = client.next_event().await;
    assert_eq!(frame["id"], body["id"], "{frame}");
    eprintln!("sentinel READONLY: the first publish after the demotion answered 202 in {took:?}");
    eventually("the hub is ready on the new primary", || async {
        ready(&hub).await == 200
    })
    .await;
    // Live deliveries from the new primary, nothing doubled.
    let id = hub
        .publish("readonly", crate::support::log_event("live"))
        .await;
    assert_eq!(client.next_event().await["id"], id.as_str());

    // Demoted again (back to the first node), and no write follows: `/readyz` finds the
    // node answering ROLE as a replica and has the sentinels asked again, so the hub is
    // ready on the primary they name without waiting for a write. (Failed before: 503
    // until the next publish.)
    let back = setup.demote_primary_unannounced().await;
    assert_eq!(back, old);
    let demoted_at = Instant::now();
    eventually(
        "the hub is ready on the new primary, with no write",
        || async { ready(&hub).await == 200 },
    )
    .await;
    eprintln!(
        "sentinel demotion, no write: /readyz 200 again {:?} after it",
        demoted_at.elapsed()
    );
    let id = hub
        .publish("readonly", crate::support::log_event("back"))
        .await;
    assert_eq!(client.next_event().await["id"], id.as_str());
}

// `progress-hub publish --redis-url redis+sentinel://...` goes to the primary the
// sentinels name (the worker CLI is in the failover tests above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_cli_works_on_a_sentinel_url() {
    let setup = SentinelSetup::start().await;
    let url = setup.url();
    let hub = hub_on(&url).await;
    eventually("the hub is ready", || async { ready(&hub).await == 200 }).await;
    cli::publish_reaches_a_watcher(&hub, &url).await;

    // A URL without the master's name is refused, saying why.
    let out = cli::publish(
        &[
            "--redis-url",
            "redis+sentinel://127.0.0.1:1",
            "--project",
            "p",
            "log",
            "x",
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no master name"), "{stderr}");
}

// Passwords on the data nodes and on the sentinels: the URL's userinfo is the data
// nodes', `sentinel_password` the sentinels'. With both right the hub is ready and
// delivers; with the data nodes' wrong, it is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_and_data_node_passwords_are_each_used_where_they_belong() {
    let setup = SentinelSetup::start_with(Auth {
        nodes: Some("node-pw".into()),
        sentinels: Some("sentinel-pw".into()),
    })
    .await;
    let url = setup.url();
    assert!(url.contains(":node-pw@") && url.ends_with("?sentinel_password=sentinel-pw"));
    let hub = hub_on(&url).await;
    eventually("the hub is ready", || async { ready(&hub).await == 200 }).await;
    let mut client = WsClient::connected(&hub.ws_url("auth")).await;
    let id = hub
        .publish("auth", crate::support::log_event("with passwords"))
        .await;
    let frame = client.next_event().await;
    assert_eq!(frame["id"].as_str(), Some(id.as_str()), "{frame}");

    let wrong = hub_on(&url.replace("node-pw", "wrong")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ready(&wrong).await,
        503,
        "wrong data-node password: not ready"
    );
    let (status, _) = wrong
        .post_event("auth", &crate::support::log_event("refused"))
        .await;
    assert_eq!(status, 503);
}
