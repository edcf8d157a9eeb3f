//! A Pub/Sub that is alive, not only reachable: a TCP proxy between hub and Redis passes
//! commands and PING answers but silently drops deliveries (the subscriber still answers
//! PING, as after a failover in Centrifugo #1189). The hub's probe — a message it
//! publishes on its own channel every keep-alive interval and must receive back — finds
//! out, rebuilds the subscriber and fills the gap from history; `/readyz` says so while
//! probes go unanswered.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    self, PATIENCE, RedisCluster, RedisProxy, RedisServer, SentinelSetup, TestHub, WsClient,
    eventually, layout, log_event, metric,
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
    dropped_deliveries_are_refilled(&hub, &[proxy], &[0], &PROJECTS, "single node").await;
}

// The same behind Redis Sentinel (`redis+sentinel://`): the sentinels know the primary
// only by a proxy's address, so the hub, asking them, reaches it through the proxy (the
// fault after a failover behind a Sentinel-managed address). The probe, and the rebuild
// that asks the sentinels again, are those of a single node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_sentinel_silently_dropped_deliveries_are_detected_and_filled_from_history() {
    let setup = SentinelSetup::start_behind_proxy().await;
    let hub = TestHub::start_on(setup.url(), |c| {
        c.redis_keepalive = KEEPALIVE;
        c.worker = None;
    })
    .await;
    let proxies = std::slice::from_ref(setup.proxy());
    dropped_deliveries_are_refilled(&hub, proxies, &[0], &PROJECTS, "sentinel").await;
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
    dropped_deliveries_are_refilled(&hub, &proxies, &[0, 1, 2], &PROJECTS, "cluster").await;
}

// On a cluster, deliveries vanish on one shard only: the probe travels on a channel per
// primary, so it misses there too. The silenced shard is the one with the fewest of the
// hub's probe channels, and two watched projects live on it. Failed with one probe
// channel per hub (on the shard of its random id): no rebuild, the two projects' clients
// got nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_single_deaf_shard_is_found() {
    let cluster = RedisCluster::start().await;
    let proxies = cluster.behind_proxies().await;
    let hub = TestHub::start_on(RedisCluster::url_through(&proxies), |c| {
        c.redis_keepalive = KEEPALIVE;
        c.worker = None;
    })
    .await;
    // The hub's probe channels, node by node (asked directly, not through the proxies).
    let mut probes = Vec::new();
    for i in 0..proxies.len() {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .arg("progress-hub:probe:*")
            .query_async(&mut cluster.node(i).await)
            .await
            .unwrap();
        probes.push(channels.len());
    }
    let deaf = (0..proxies.len()).min_by_key(|i| probes[*i]).unwrap();
    // Two projects in the deaf shard's slots, two elsewhere.
    let mut conn = cluster.node(deaf).await;
    let (mut on_deaf, mut elsewhere) = (Vec::new(), Vec::new());
    for n in 0..100 {
        let project = format!("shard-{n}");
        let list = if owned_by(&mut conn, &project, proxies[deaf].port).await {
            &mut on_deaf
        } else {
            &mut elsewhere
        };
        if list.len() < 2 {
            list.push(project);
        }
    }
    assert_eq!((on_deaf.len(), elsewhere.len()), (2, 2));
    let projects: Vec<String> = on_deaf.into_iter().chain(elsewhere).collect();
    dropped_deliveries_are_refilled(
        &hub,
        &proxies,
        &[deaf],
        &projects,
        "cluster, one deaf shard",
    )
    .await;
}

/// Whether `project`'s slot belongs to the primary announced on `port` (a proxy's), as
/// the node behind `conn` sees the slot map.
async fn owned_by(conn: &mut redis::aio::MultiplexedConnection, project: &str, port: u16) -> bool {
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(layout::shard_channel(&support::project(project)))
        .query_async(conn)
        .await
        .unwrap();
    let map: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .unwrap();
    map.into_iter().any(|range| {
        // start, end, primary [host, port, id], replicas...
        let fields: Vec<redis::Value> = redis::from_redis_value(range).unwrap();
        let start: i64 = redis::from_redis_value(fields[0].clone()).unwrap();
        let end: i64 = redis::from_redis_value(fields[1].clone()).unwrap();
        let primary: Vec<redis::Value> = redis::from_redis_value(fields[2].clone()).unwrap();
        let primary_port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
        (start..=end).contains(&slot) && primary_port == port
    })
}

/// The projects of the tests that silence every shard.
const PROJECTS: [&str; 4] = ["probe-a", "probe-b", "probe-c", "probe-d"];

/// Clients of `projects` watch `hub`; the proxies numbered in `silenced` silence the
/// connections open now while events are published through the hub: each client still
/// gets every event, once, in order, soon; the miss is counted and the hub is ready
/// again after the rebuild, with live deliveries flowing.
async fn dropped_deliveries_are_refilled(
    hub: &TestHub,
    proxies: &[RedisProxy],
    silenced: &[usize],
    projects: &[impl AsRef<str>],
    what: &str,
) {
    let projects: Vec<&str> = projects.iter().map(AsRef::as_ref).collect();
    let mut clients = Vec::new();
    for &project in &projects {
        let mut client = WsClient::connected(&hub.ws_url(project)).await;
        let id = hub.publish(project, log_event("before")).await;
        assert_eq!(client.next_event().await["id"], id.as_str());
        clients.push(client);
    }
    // While deliveries pass, probes come back: no rebuild (no new subscriber connection)
    // in a few probe rounds. (The metric is the process's, shared by tests running
    // alongside.) Subscriber connections, not all: behind Sentinel the sentinels' and the
    // replica's links to the primary pass the proxy too.
    let connections = || {
        proxies
            .iter()
            .map(RedisProxy::probe_subscribers)
            .sum::<u64>()
    };
    let opened = connections();
    tokio::time::sleep(3 * KEEPALIVE).await;
    assert_eq!(
        connections(),
        opened,
        "the subscriber was rebuilt while deliveries passed"
    );
    let failures = metric(hub, "hub_pubsub_probe_failures_total").await;

    let dropping_since = Instant::now();
    for &i in silenced {
        proxies[i].drop_deliveries_on_open_connections();
    }
    let expected: Vec<String> = (0..20).map(|i| format!("during {i}")).collect();
    // Publish while watching for the rebuild, so its time is measured, not the publishing.
    let publishing = async {
        for message in &expected {
            for &project in &projects {
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
    readyz_follows_the_probe(&hub, &proxy).await;
}

// The same behind Redis Sentinel, the primary reached through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_sentinel_readyz_reports_a_dead_subscription_until_a_probe_returns() {
    let setup = SentinelSetup::start_behind_proxy().await;
    let hub = TestHub::start_on(setup.url(), |c| {
        c.redis_keepalive = KEEPALIVE;
        c.worker = None;
    })
    .await;
    eventually("the hub is ready", || async {
        readiness(&hub).await.0 == 200
    })
    .await;
    readyz_follows_the_probe(&hub, setup.proxy()).await;
}

/// `proxy` drops every delivery from now on: `/readyz` says `pubsub_probe_missed` soon
/// and for as long as that lasts, while events still reach a client from history; once
/// deliveries pass again the hub is ready and live deliveries flow.
async fn readyz_follows_the_probe(hub: &TestHub, proxy: &RedisProxy) {
    let mut client = WsClient::connected(&hub.ws_url("deaf")).await;
    assert_eq!(readiness(hub).await.0, 200);

    proxy.drop_all_deliveries(true);
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        let (status, body) = readiness(hub).await;
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
    let (status, body) = readiness(hub).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "pubsub_probe_missed", "{body}");
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
        readiness(hub).await.0 == 200
    })
    .await;
    let id = hub.publish("deaf", log_event("live")).await;
    assert_eq!(client.next_event().await["id"], id.as_str());
}
