//! A Pub/Sub that is alive, not only reachable: a TCP proxy between hub and Redis passes
//! commands and PING answers but silently drops deliveries (the subscriber still answers
//! PING, as after a failover in Centrifugo #1189). The hub's probe — a message it
//! publishes on its own channel every keep-alive interval and must receive back — finds
//! out, rebuilds the subscriber and fills the gap from history; `/readyz` says so while
//! probes go unanswered.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    PATIENCE, RedisCluster, RedisProxy, RedisServer, TestHub, WsClient, eventually, log_event,
    metric,
};

/// The hub's keep-alive (and probe) interval in these tests.
const KEEPALIVE: Duration = Duration::from_millis(500);

/// A Redis and a proxy in front of it.
async fn proxied_redis() -> (RedisServer, RedisProxy) {
    let redis = RedisServer::start().await;
    let upstream = redis.url().trim_start_matches("redis://").to_string();
    let proxy = RedisProxy::start(&upstream).await;
    (redis, proxy)
}

/// `/readyz`: status code and body.
async fn readiness(hub: &TestHub) -> (u16, Value) {
    let response = reqwest::get(hub.http("/readyz"))
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Reads `n` events and returns their messages (skipping pings).
async fn messages(client: &mut WsClient, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = client.next_event().await;
        out.push(
            frame["data"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    out
}

// Deliveries on the subscriber's connection vanish from some moment on (PING still
// answered): the probe misses, the subscriber is rebuilt, and every event published
// meanwhile reaches every client from history, once and in order, within a few
// keep-alive intervals. Failed without the probe: the clients got nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_dropped_deliveries_are_detected_and_filled_from_history() {
    let (_redis, proxy) = proxied_redis().await;
    let hub = TestHub::start_on(proxy.url(), |c| c.redis_keepalive = KEEPALIVE).await;
    dropped_deliveries_are_refilled(&hub, &[proxy], "single node").await;
}

// The same on a 3-master Redis Cluster, each node behind a proxy (the nodes announce
// the proxies' ports, so the slot map and MOVED lead there too): the probe travels
// SPUBLISH → SSUBSCRIBE on the shard of the hub's probe channel; a miss rebuilds the
// whole cluster connection. Failed without the probe: no miss was ever counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_silently_dropped_deliveries_are_detected_and_filled_from_history() {
    let cluster = RedisCluster::start().await;
    let proxies = cluster.behind_proxies().await;
    let hub = TestHub::start_on(RedisCluster::url_through(&proxies), |c| {
        c.redis_keepalive = KEEPALIVE;
        c.worker = None;
    })
    .await;
    dropped_deliveries_are_refilled(&hub, &proxies, "cluster").await;
}

/// Clients of a few projects watch `hub`; every proxy in `proxies` silences the
/// connections open now while events are published through the hub: each client still
/// gets every event, once, in order, soon; the miss is counted and the hub is ready
/// again after the rebuild, with live deliveries flowing.
async fn dropped_deliveries_are_refilled(hub: &TestHub, proxies: &[RedisProxy], what: &str) {
    // Several projects, so that on a cluster more than one shard is involved.
    let projects = ["probe-a", "probe-b", "probe-c", "probe-d"];
    let mut clients = Vec::new();
    for project in projects {
        let mut client = WsClient::connected(&hub.ws_url(project)).await;
        let id = hub.publish(project, log_event("before")).await;
        assert_eq!(client.next_event().await["id"], id.as_str());
        clients.push(client);
    }
    // While deliveries pass, probes come back: no rebuild (no new connection) in a few
    // probe rounds. (The metric is the process's, shared by tests running alongside.)
    let connections = || proxies.iter().map(RedisProxy::connections).sum::<u64>();
    let opened = connections();
    tokio::time::sleep(3 * KEEPALIVE).await;
    assert_eq!(
        connections(),
        opened,
        "the subscriber was rebuilt while deliveries passed"
    );
    let failures = metric(hub, "hub_pubsub_probe_failures_total").await;

    let dropping_since = Instant::now();
    for proxy in proxies {
        proxy.drop_deliveries_on_open_connections();
    }
    let expected: Vec<String> = (0..20).map(|i| format!("during {i}")).collect();
    // Publish while watching for the rebuild, so its time is measured, not the publishing.
    let publishing = async {
        for message in &expected {
            for project in projects {
                hub.publish(project, log_event(message)).await;
            }
        }
    };
    let rebuilt = async {
        eventually("the subscriber is rebuilt (a new connection)", || async {
            connections() > opened
        })
        .await;
        dropping_since.elapsed()
    };
    let ((), detected) = tokio::join!(publishing, rebuilt);
    for client in &mut clients {
        assert_eq!(
            messages(client, expected.len()).await,
            expected,
            "every event once, in order"
        );
    }
    let all_delivered = dropping_since.elapsed();
    assert!(metric(hub, "hub_pubsub_probe_failures_total").await > failures);
    let dropped: u64 = proxies.iter().map(RedisProxy::dropped).sum();
    assert!(
        dropped > 0,
        "the proxies dropped deliveries (else this test proves nothing)"
    );
    assert!(
        all_delivered < 10 * KEEPALIVE,
        "every event within a few keep-alive intervals, took {all_delivered:?}"
    );
    eprintln!(
        "pubsub probe ({what}, keep-alive {KEEPALIVE:?}): rebuild began {detected:?} after the drop, \
         every event delivered after {all_delivered:?}, {dropped} deliveries dropped"
    );

    // The rebuilt subscriber receives live deliveries again, and the hub is ready.
    eventually("/readyz is ready again", || async {
        readiness(hub).await.0 == 200
    })
    .await;
    for (project, client) in projects.iter().zip(&mut clients) {
        let id = hub.publish(project, log_event("after")).await;
        assert_eq!(
            client.next_event().await["id"],
            id.as_str(),
            "nothing doubled"
        );
    }
}

// Deliveries vanish on every connection, also the rebuilt ones: `/readyz` answers 503
// with the reason for as long as probes go unanswered (each rebuild still fills the gap
// from history, so events keep reaching clients), and is ready once a probe returns.
// Failed without the probe: /readyz stayed 200 and the events never arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_dead_subscription_until_a_probe_returns() {
    let (_redis, proxy) = proxied_redis().await;
    let hub = TestHub::start_on(proxy.url(), |c| c.redis_keepalive = KEEPALIVE).await;
    let mut client = WsClient::connected(&hub.ws_url("deaf")).await;
    assert_eq!(readiness(&hub).await.0, 200);

    proxy.drop_all_deliveries(true);
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        let (status, body) = readiness(&hub).await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never reported the missed probe"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer["reason"], "pubsub_probe_missed", "{answer}");
    // Still not ready a few probe rounds later: every rebuilt subscription is deaf too.
    tokio::time::sleep(4 * KEEPALIVE).await;
    assert_eq!(readiness(&hub).await.0, 503);
    let expected: Vec<String> = (0..5).map(|i| format!("deaf {i}")).collect();
    for message in &expected {
        hub.publish("deaf", log_event(message)).await;
    }
    let got = tokio::time::timeout(PATIENCE, messages(&mut client, expected.len()))
        .await
        .expect("events reach the client from history while deliveries vanish");
    assert_eq!(got, expected);

    proxy.drop_all_deliveries(false);
    eventually("/readyz is ready once a probe returns", || async {
        readiness(&hub).await.0 == 200
    })
    .await;
    let id = hub.publish("deaf", log_event("live")).await;
    assert_eq!(client.next_event().await["id"], id.as_str());
}
