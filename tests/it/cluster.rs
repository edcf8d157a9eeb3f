//! Scale-out on a real 3-master Redis Cluster: two hubs and a worker on one cluster.
//! Clients of one project spread over both hubs see every event in order; a client
//! moving between hubs resumes without loss; a stopped hub costs its clients only a
//! reconnect; an event's publish touches only its project's shard. On 3 masters with a
//! replica each: a manual failover and a killed master are survived, the hubs'
//! subscriptions following the slot to the promoted replica.

use std::collections::HashMap;
use std::time::Duration;

use progress_hub::config::ServeConfig;
use serde_json::Value;

use crate::support::{self, RedisCluster, TestHub, WsClient, cli, layout, log_event};

/// Two hubs on the cluster; the first runs the in-process worker (fast mock work).
async fn two_hubs(cluster: &RedisCluster) -> (TestHub, TestHub) {
    two_hubs_with(cluster, |_| {}).await
}

/// As [`two_hubs`], each hub's configuration then changed by `tweak`.
async fn two_hubs_with(
    cluster: &RedisCluster,
    tweak: impl Fn(&mut ServeConfig),
) -> (TestHub, TestHub) {
    let a = TestHub::start_on(cluster.url(), |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = Duration::from_millis(2);
        }
        tweak(c);
    })
    .await;
    let b = TestHub::start_on(cluster.url(), |c| {
        c.worker = None;
        tweak(c);
    })
    .await;
    (a, b)
}

/// Four clients of `project`, alternately on hub A and hub B.
async fn watchers(a: &TestHub, b: &TestHub, project: &str) -> Vec<WsClient> {
    let mut clients = Vec::new();
    for hub in [a, b, a, b] {
        clients.push(WsClient::connected(&hub.ws_url(project)).await);
    }
    clients
}

/// Hub A for even `i`, hub B for odd: publishers alternate.
fn alternate<'h>(hubs: (&'h TestHub, &'h TestHub), i: usize) -> &'h TestHub {
    if i.is_multiple_of(2) { hubs.0 } else { hubs.1 }
}

/// Reads `n` events that carry an id (skipping pings and opening frames).
async fn events(client: &mut WsClient, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = client.next_event().await;
        if frame.get("id").is_some() && frame["event"] != "snapshot" {
            out.push(frame);
        }
    }
    out
}

fn messages(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            f["data"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("step {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_two_hubs_get_every_event_in_order() {
    let cluster = RedisCluster::start().await;
    let (a, b) = two_hubs(&cluster).await;
    let project = "spread";
    let mut clients = watchers(&a, &b, project).await;
    // Publishers on both hubs, alternating, one at a time (so the order is known).
    for i in 0..60 {
        alternate((&a, &b), i)
            .publish(project, log_event(&format!("step {i}")))
            .await;
    }
    for client in &mut clients {
        let got = events(client, 60).await;
        assert_eq!(messages(&got), numbered(0..60));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_works_across_hubs() {
    let cluster = RedisCluster::start().await;
    let (a, b) = two_hubs(&cluster).await;
    let project = "mover";
    let mut on_a = WsClient::connected(&a.ws_url(project)).await;
    for i in 0..10 {
        a.publish(project, log_event(&format!("step {i}"))).await;
    }
    let seen = events(&mut on_a, 10).await;
    let last = seen[9]["id"].as_str().unwrap().to_string();
    on_a.close().await;
    // Missed while moving.
    for i in 10..40 {
        a.publish(project, log_event(&format!("step {i}"))).await;
    }
    let (mut on_b, connected) = WsClient::resume(&b.ws_url(project), &last).await;
    assert_eq!(connected["data"]["recovered"], true, "{connected}");
    for i in 40..50 {
        b.publish(project, log_event(&format!("step {i}"))).await;
    }
    let rest = events(&mut on_b, 40).await;
    assert_eq!(messages(&rest), numbered(10..50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_hub_costs_its_clients_only_a_reconnect() {
    let cluster = RedisCluster::start().await;
    let (a, mut b) = two_hubs(&cluster).await;
    let project = "outage";
    let mut on_b = WsClient::connected(&b.ws_url(project)).await;
    for i in 0..20 {
        a.publish(project, log_event(&format!("step {i}"))).await;
    }
    let first = events(&mut on_b, 20).await;
    let last = first[19]["id"].as_str().unwrap().to_string();
    // Hub B goes away mid-run (graceful stop: its clients get 1012 and reconnect).
    b.stop().await;
    assert_eq!(on_b.expect_close().await, Some(1012));
    for i in 20..40 {
        a.publish(project, log_event(&format!("step {i}"))).await;
    }
    let (mut moved, connected) = WsClient::resume(&a.ws_url(project), &last).await;
    assert_eq!(connected["data"]["recovered"], true, "{connected}");
    let rest = events(&mut moved, 20).await;
    assert_eq!(messages(&rest), numbered(20..40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_job_runs_through_the_cluster() {
    let cluster = RedisCluster::start().await;
    let (a, b) = two_hubs(&cluster).await;
    let project = "video";
    // Watched on the hub that has no worker; the job runs on the other.
    let mut on_b = WsClient::connected(&b.ws_url(project)).await;
    assert_eq!(b.generate(project, &serde_json::json!({})).await.0, 202);
    let mut previous: Option<u64> = None;
    loop {
        let frame = on_b.next_event().await;
        if let Some(seq) = frame["id"]
            .as_str()
            .and_then(|id| id.rsplit(':').next())
            .and_then(|s| s.parse::<u64>().ok())
        {
            if let Some(p) = previous {
                assert_eq!(seq, p + 1, "no gap, no duplicate: {frame}");
            }
            previous = Some(seq);
        }
        if frame["event"] == "complete" {
            assert_eq!(frame["data"]["status"], "COMPLETED", "{frame}");
            break;
        }
    }
    drop(a);
}

/// Per-node counters of the shard publish path.
async fn counters(cluster: &RedisCluster, i: usize) -> HashMap<&'static str, u64> {
    let mut conn = cluster.node(i).await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let calls = |name: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    HashMap::from([
        ("spublish", calls("spublish")),
        ("publish", calls("publish")),
        (
            "bus_publish_sent",
            field("cluster_stats_messages_publish_sent"),
        ),
        (
            "bus_publishshard_sent",
            field("cluster_stats_messages_publishshard_sent"),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_touches_only_its_projects_shard() {
    let cluster = RedisCluster::start().await;
    // Each hub's Pub/Sub probe is an SPUBLISH too (once at start, then every keep-alive,
    // on the shard of its own channel): a keep-alive longer than the test keeps the
    // probes out of the counted window, so the counts below are the events' alone.
    let (a, b) = two_hubs_with(&cluster, |c| c.redis_keepalive = Duration::from_secs(600)).await;
    let project = "sharded";
    let mut on_a = WsClient::connected(&a.ws_url(project)).await;
    let mut on_b = WsClient::connected(&b.ws_url(project)).await;
    let owner = cluster
        .owner_of(&layout::shard_channel(&support::project(project)))
        .await;
    // Both hubs' subscriptions are on the owner only.
    for i in 0..3 {
        let n = shard_subscribers(&cluster, i, project).await;
        assert_eq!(n, if i == owner { 2 } else { 0 }, "node {i}");
    }
    let before: Vec<_> =
        futures_util::future::join_all((0..3).map(|i| counters(&cluster, i))).await;
    const N: u64 = 100;
    for i in 0..N {
        a.publish(project, log_event(&format!("step {i}"))).await;
    }
    events(&mut on_a, N as usize).await;
    events(&mut on_b, N as usize).await;
    let after: Vec<_> = futures_util::future::join_all((0..3).map(|i| counters(&cluster, i))).await;
    for i in 0..3 {
        let delta = |k: &str| after[i][k] - before[i][k];
        eprintln!(
            "node {i}{}: spublish +{}, publish +{}, cluster-bus publish messages sent +{}, shard publish messages sent +{}",
            if i == owner { " (owner)" } else { "" },
            delta("spublish"),
            delta("publish"),
            delta("bus_publish_sent"),
            delta("bus_publishshard_sent"),
        );
        assert_eq!(
            delta("spublish"),
            if i == owner { N } else { 0 },
            "node {i}"
        );
        assert_eq!(delta("publish"), 0, "no plain PUBLISH on node {i}");
        // Nothing crosses the cluster bus: no replicas, and no broadcast.
        assert_eq!(delta("bus_publish_sent"), 0, "node {i}");
        assert_eq!(delta("bus_publishshard_sent"), 0, "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_resubscribed() {
    let mut cluster = RedisCluster::start().await;
    let (a, b) = two_hubs(&cluster).await;
    let project = "restart";
    let mut on_a = WsClient::connected(&a.ws_url(project)).await;
    let mut on_b = WsClient::connected(&b.ws_url(project)).await;
    for i in 0..5 {
        a.publish(project, log_event(&format!("step {i}"))).await;
    }
    events(&mut on_a, 5).await;
    events(&mut on_b, 5).await;
    let owner = cluster
        .owner_of(&layout::shard_channel(&support::project(project)))
        .await;
    // The owner crashes and comes back empty (no persistence): the history is lost, so
    // what follows is a new epoch; the hubs must subscribe again and deliver it.
    cluster.restart_node(owner).await;
    let mut published = 0;
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let (status, _) = a
            .post_event(project, &log_event(&format!("after {published}")))
            .await;
        if status == 202 {
            published += 1;
            if published == 5 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published, 5, "publishing works again after the restart");
    for client in [&mut on_a, &mut on_b] {
        let got = events(client, 5).await;
        let want: Vec<String> = (0..5).map(|i| format!("after {i}")).collect();
        assert_eq!(messages(&got), want);
    }
}

/// Shard channel subscriptions to `project` on node `i` (`PUBSUB SHARDNUMSUB`).
async fn shard_subscribers(cluster: &RedisCluster, i: usize, project: &str) -> i64 {
    let mut conn = cluster.node(i).await;
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(layout::shard_channel(&support::project(project)))
        .query_async(&mut conn)
        .await
        .unwrap();
    n
}

/// Every node's shard subscribers of `project`'s channel, by node.
async fn subscribers_by_node(cluster: &RedisCluster, project: &str) -> Vec<i64> {
    let mut counts = Vec::new();
    for i in 0..cluster.ports.len() {
        counts.push(shard_subscribers(cluster, i, project).await);
    }
    counts
}

/// Publishes `step <i>` through hub A for even `i`, hub B for odd; the HTTP status.
async fn publish_step(hubs: (&TestHub, &TestHub), project: &str, i: usize) -> u16 {
    let (status, body) = alternate(hubs, i)
        .post_event(project, &log_event(&format!("step {i}")))
        .await;
    assert!(status == 202 || status == 503, "{status} {body}");
    if status == 503 {
        // Said plainly, without internals.
        assert_eq!(body["error"]["code"], "BROKER_UNAVAILABLE", "{body}");
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_is_survived() {
    let cluster = RedisCluster::start_with_replicas().await;
    let (a, b) = two_hubs(&cluster).await;
    let project = "failover";
    let mut clients = watchers(&a, &b, project).await;
    let owner = cluster
        .owner_of(&layout::shard_channel(&support::project(project)))
        .await;
    let replica = cluster.replica_of(owner).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(publish_step((&a, &b), project, i).await);
    }
    // The replica takes over (CLUSTER FAILOVER) while publishing goes on, one event
    // after another, through both hubs.
    let publishing = async {
        let mut statuses = Vec::new();
        for i in 20..60 {
            statuses.push(publish_step((&a, &b), project, i).await);
        }
        statuses
    };
    let failing_over = async {
        cluster.failover(replica).await;
        cluster.wait_master(replica).await;
    };
    let (during, ()) = tokio::join!(publishing, failing_over);
    statuses.extend(during);
    for i in 60..80 {
        statuses.push(publish_step((&a, &b), project, i).await);
    }
    // A manual failover loses no write and fails no publish.
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    for (i, client) in clients.iter_mut().enumerate() {
        let got = events(client, 80).await;
        assert_eq!(messages(&got), numbered(0..80), "client {i}");
    }
    // Both hubs' subscriptions followed the slot to its new owner, and none is left
    // elsewhere. Eventually: a hub that found a stale slot map rebuilds its connection,
    // and the old one may still be closing.
    let key = layout::shard_channel(&support::project(project));
    assert_eq!(cluster.owner_of(&key).await, replica, "the new owner");
    let want: Vec<i64> = (0..cluster.ports.len())
        .map(|i| if i == replica { 2 } else { 0 })
        .collect();
    support::eventually_eq(
        &format!("subscribers per node (old owner {owner})"),
        want,
        || subscribers_by_node(&cluster, project),
    )
    .await;
}

/// The `n` of each `step <n>`.
fn steps(frames: &[Value]) -> Vec<usize> {
    messages(frames)
        .iter()
        .filter_map(|m| m.strip_prefix("step ")?.parse().ok())
        .collect()
}

/// Reads events until `step <last>`.
async fn events_until(client: &mut WsClient, last: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while steps(&got).last() != Some(&last) {
        got.extend(events(client, 1).await);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_subscriptions_follow() {
    let mut cluster = RedisCluster::start_with_replicas().await;
    let (a, b) = two_hubs(&cluster).await;
    let project = "killed";
    let mut clients = watchers(&a, &b, project).await;
    let key = layout::shard_channel(&support::project(project));
    let owner = cluster.owner_of(&key).await;
    let replica = cluster.replica_of(owner).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let hub = alternate((&a, &b), i);
        ids.push(hub.publish(project, log_event(&format!("step {i}"))).await);
    }
    for client in &mut clients {
        assert_eq!(messages(&events(client, 20).await), numbered(0..20));
    }
    // Replication is asynchronous: a write acknowledged just before a crash can be lost
    // with its master (lossless.rs tries that case). Here the replica has everything.
    cluster.wait_replicated(owner, replica).await;
    cluster.kill_node(owner);
    // Until the replica is promoted, the HTTP publish path (no retry) waits for Redis up
    // to its command timeout and then says 503 BROKER_UNAVAILABLE, or goes through once
    // the replica has taken over (`publish_step` checks it is one of the two).
    let mut attempted = 20;
    let mut accepted = Vec::new();
    while !cluster.is_master(replica).await {
        if publish_step((&a, &b), project, attempted).await == 202 {
            accepted.push(attempted);
        }
        attempted += 1;
    }
    cluster.wait_master(replica).await;
    // Once it has, every publish goes through.
    for _ in 0..20 {
        assert_eq!(publish_step((&a, &b), project, attempted).await, 202);
        accepted.push(attempted);
        attempted += 1;
    }
    // Both hubs subscribed again on the new owner: every client on either hub gets every
    // accepted event, once, in order. (A publish answered 503 may still have landed, as
    // after any timeout; it would come in its place.)
    let last = attempted - 1;
    let mut after_kill = Vec::new();
    for client in &mut clients {
        let got = steps(&events_until(client, last).await);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "in order, once: {got:?}"
        );
        assert!(
            accepted.iter().all(|i| got.contains(i)),
            "{accepted:?} in {got:?}"
        );
        assert!(got.iter().all(|i| (20..attempted).contains(i)), "{got:?}");
        after_kill = got;
    }
    assert_eq!(cluster.owner_of(&key).await, replica);
    assert_eq!(shard_subscribers(&cluster, replica, project).await, 2);
    // The history survived the failover: a client that saw up to step 9 resumes from it
    // (recovered) and gets the rest, before and after the crash.
    let (mut resumed, connected) = WsClient::resume(&b.ws_url(project), &ids[9]).await;
    assert_eq!(connected["data"]["recovered"], true, "{connected}");
    let got = steps(&events_until(&mut resumed, last).await);
    let want: Vec<usize> = (10..20).chain(after_kill).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_and_publish_clis_work_on_a_cluster_url() {
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let hub = TestHub::start_on(url.clone(), |c| c.worker = None).await;
    let _worker = cli::Killed(cli::worker(&url, &["--mock-delay", "2ms"]));
    // A job queued through the hub runs in the `worker` process, over the cluster.
    let mut watching = WsClient::connected(&hub.ws_url("cli-job")).await;
    assert_eq!(hub.generate("cli-job", &serde_json::json!({})).await.0, 202);
    loop {
        let frame = watching.next_event().await;
        if frame["event"] == "complete" {
            assert_eq!(frame["data"]["status"], "COMPLETED", "{frame}");
            break;
        }
    }
    // `progress-hub publish` straight into the cluster: the event comes with its id.
    cli::publish_reaches_a_watcher(&hub, &url).await;
}
