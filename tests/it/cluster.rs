//! Scale-out on a real 3-master Redis Cluster: two hubs and a worker on one cluster.
//! Clients of one project spread over both hubs see every event in order; a client
//! moving between hubs resumes without loss; a stopped hub costs its clients only a
//! reconnect; an event's publish touches only its project's shard. On 3 masters with a
//! replica each: a manual failover and a killed master are survived, the hubs'
//! subscriptions following the slot to the promoted replica. Issue 26's multiplexed
//! endpoints on projects in every shard: the WebSocket (resume on the other hub, one
//! `complete` per run), the SSE stream (one `Last-Event-ID` resumes them all) and the
//! tag feed (runs tagged in every shard followed to their end).

use std::collections::HashMap;
use std::time::Duration;

use progress_hub::config::ServeConfig;
use serde_json::Value;

use crate::support::{self, RedisCluster, SseReader, TestHub, WsClient, cli, layout, log_event};

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
    // The replica takes over (CLUSTER FAILOVER) while publishing goes on, one event
    // after another, through both hubs.
    let hubs = (&a, &b);
    let statuses = publishing_through_a_failover(&cluster, replica, [20, 60, 80], |i| async move {
        vec![publish_step(hubs, project, i).await]
    })
    .await;
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

/// Publishes steps 0.. with `publish` (it answers the HTTP statuses), one after another:
/// `at[0]` before replica `replica` takes over from its master (`CLUSTER FAILOVER`), up
/// to `at[1]` while it does, up to `at[2]` after. Every status, in order.
async fn publishing_through_a_failover<F, Fut>(
    cluster: &RedisCluster,
    replica: usize,
    at: [usize; 3],
    publish: F,
) -> Vec<u16>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Vec<u16>>,
{
    let mut statuses = Vec::new();
    for i in 0..at[0] {
        statuses.extend(publish(i).await);
    }
    let publishing = async {
        let mut statuses = Vec::new();
        for i in at[0]..at[1] {
            statuses.extend(publish(i).await);
        }
        statuses
    };
    let failing_over = async {
        cluster.failover(replica).await;
        cluster.wait_master(replica).await;
    };
    let (during, ()) = tokio::join!(publishing, failing_over);
    statuses.extend(during);
    for i in at[1]..at[2] {
        statuses.extend(publish(i).await);
    }
    statuses
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

// Issue 26 on a cluster: one connection watches projects whose keys live on different
// masters, through both hubs.

/// `cluster`, two hubs on it (as [`two_hubs`]) and one project per master
/// (`{prefix}-<i>`).
async fn every_shard(
    cluster: RedisCluster,
    prefix: &str,
) -> (RedisCluster, TestHub, TestHub, Vec<String>) {
    let (a, b) = two_hubs(&cluster).await;
    let projects = one_per_master(&cluster, prefix).await;
    (cluster, a, b, projects)
}

/// One project id per master of `cluster` (`{prefix}-{i}`, the first found on each), so
/// that a connection watching them all reads every shard.
async fn one_per_master(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    let mut by_master: HashMap<usize, String> = HashMap::new();
    for i in 0..1000 {
        let project = format!("{prefix}-{i}");
        let key = layout::history_key(&support::project(&project));
        by_master
            .entry(cluster.owner_of(&key).await)
            .or_insert(project);
        if by_master.len() == 3 {
            let mut projects: Vec<String> = by_master.into_values().collect();
            projects.sort();
            return projects;
        }
    }
    panic!("no project on every master");
}

/// A multiplexed connection (`GET /api/v1/progress`) to `hub`, past its `connected`.
async fn multiplexed(hub: &TestHub) -> WsClient {
    let mut client = WsClient::connect(&format!("ws://{}/api/v1/progress", hub.addr)).await;
    let connected = client.next_json().await;
    assert_eq!(connected["event"], "connected", "{connected}");
    client
}

/// A multiplexed connection to `hub` subscribed to every project of `projects`, each
/// answered as a fresh subscription.
async fn watching(hub: &TestHub, projects: &[String]) -> WsClient {
    let mut client = multiplexed(hub).await;
    for project in projects {
        let answer = subscribed(&mut client, project, None).await;
        assert_eq!(
            answer,
            serde_json::json!({"resumed": false, "recovered": true})
        );
    }
    client
}

/// Subscribes to `project` (from `last_event_id`, if given) and reads the answer, which
/// must be `subscribed`: its data.
async fn subscribed(client: &mut WsClient, project: &str, last_event_id: Option<&str>) -> Value {
    let mut data = serde_json::json!({ "project_id": project });
    if let Some(id) = last_event_id {
        data["last_event_id"] = id.into();
    }
    let frame = serde_json::json!({"event": "subscribe", "data": data});
    client.send_text(&frame.to_string()).await;
    let answer = client.next_event().await;
    assert_eq!(answer["event"], "subscribed", "{answer}");
    assert_eq!(answer["project_id"], project, "{answer}");
    answer["data"].clone()
}

// Projects on all three masters on one multiplexed connection to hub B, published
// through hub A: each frame tagged with its project, every event in order. The client
// then moves to hub A and resumes each subscription from its own last id: recovered,
// exactly the events it missed, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_connection_follows_every_shard_and_resumes_on_the_other_hub() {
    let (_cluster, a, b, projects) = every_shard(RedisCluster::start().await, "mx").await;
    let mut client = watching(&b, &projects).await;
    let mut last: HashMap<String, String> = HashMap::new();
    for i in 0..3 {
        for project in &projects {
            let id = a.publish(project, log_event(&format!("step {i}"))).await;
            let frame = client.next_event().await;
            assert_eq!(frame["project_id"], project.as_str(), "{frame}");
            assert_eq!(frame["id"], id.as_str(), "{frame}");
            assert_eq!(frame["data"]["message"], format!("step {i}"), "{frame}");
            last.insert(project.clone(), id);
        }
    }
    client.close().await;
    // Missed while moving: a different number for each project.
    let mut missed: HashMap<String, Vec<String>> = HashMap::new();
    for (n, project) in projects.iter().enumerate() {
        for i in 3..5 + n {
            let id = b.publish(project, log_event(&format!("step {i}"))).await;
            missed.entry(project.clone()).or_default().push(id);
        }
    }
    let mut client = multiplexed(&a).await;
    for project in &projects {
        let answer = subscribed(&mut client, project, Some(&last[project])).await;
        assert_eq!(
            answer,
            serde_json::json!({"resumed": true, "recovered": true}),
            "{project}"
        );
        for id in &missed[project] {
            let frame = client.next_event().await;
            assert_eq!(frame["project_id"], project.as_str(), "{frame}");
            assert_eq!(frame["id"], id.as_str(), "the missed events, in order");
        }
    }
    // Nothing twice: the next frame of each project is its next live event.
    for project in &projects {
        let id = b.publish(project, log_event("live")).await;
        let frame = client.next_event().await;
        assert_eq!(frame["project_id"], project.as_str(), "{frame}");
        assert_eq!(frame["id"], id.as_str(), "{frame}");
    }
}

// Runs in all three shards, run by hub A's worker and watched on one multiplexed
// connection to hub B: each subscription hears its run's `complete` exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_connection_hears_one_complete_per_run_in_every_shard() {
    let (_cluster, a, b, projects) = every_shard(RedisCluster::start().await, "mxrun").await;
    let mut client = watching(&b, &projects).await;
    for project in &projects {
        let (status, answer) = a.generate(project, &serde_json::json!({})).await;
        assert_eq!(status, 202, "{answer}");
    }
    let mut completes: HashMap<String, usize> = HashMap::new();
    while completes.len() < projects.len() {
        let frame = tokio::time::timeout(Duration::from_secs(60), client.next_event())
            .await
            .expect("the runs complete");
        if frame["event"] == "complete" {
            assert_eq!(frame["data"]["status"], "COMPLETED", "{frame}");
            let project = frame["project_id"].as_str().expect("tagged").to_string();
            *completes.entry(project).or_default() += 1;
        }
    }
    // A marker after the ends: no second `complete` came before it.
    for project in &projects {
        a.publish(project, log_event("marker")).await;
    }
    let mut markers = 0;
    while markers < projects.len() {
        let frame = client.next_event().await;
        match frame["event"].as_str() {
            Some("complete") => panic!("a second complete: {frame}"),
            Some("log") if frame["data"]["message"] == "marker" => markers += 1,
            _ => {}
        }
    }
    for project in &projects {
        assert_eq!(completes.get(project), Some(&1), "{project}");
    }
}

/// `GET /api/v1/progress/events?{query}` on `hub`, with `Last-Event-ID` if given, past
/// its `connected`.
async fn multiplexed_sse(hub: &TestHub, query: &str, last_event_id: Option<&str>) -> SseReader {
    let mut request =
        reqwest::Client::new().get(hub.http(&format!("/api/v1/progress/events?{query}")));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let mut sse = SseReader::new(response);
    let (_, connected) = sse.next().await;
    assert_eq!(connected["event"], "connected", "{connected}");
    sse
}

/// What a multiplexed SSE stream said, by kind, with the last record's `id:`.
#[derive(Default)]
struct Heard {
    /// `subscribed` data by project (or `tag:<tag>`).
    subscribed: HashMap<String, Value>,
    snapshots: Vec<String>,
    /// Event ids of the projects' `log` frames, in order, by project.
    logs: HashMap<String, Vec<String>>,
    /// Projects of the tag's `project_state` frames, in order.
    states: Vec<String>,
    last_id: Option<String>,
}

impl Heard {
    /// Reads records until `done` holds.
    async fn until(&mut self, sse: &mut SseReader, done: impl Fn(&Heard) -> bool) {
        while !done(self) {
            let (id, frame) = sse.next().await;
            let project = frame["project_id"].as_str().map(str::to_string);
            match (frame["event"].as_str().unwrap(), project) {
                ("subscribed", Some(project)) => {
                    self.subscribed.insert(project, frame["data"].clone());
                }
                ("subscribed", None) => {
                    let tag = frame["tag"].as_str().expect("a project or a tag");
                    self.subscribed
                        .insert(format!("tag:{tag}"), frame["data"].clone());
                }
                ("snapshot", Some(project)) => self.snapshots.push(project),
                ("log", Some(project)) => {
                    let event_id = frame["id"].as_str().expect("an id").to_string();
                    self.logs.entry(project).or_default().push(event_id);
                }
                ("project_state", Some(project)) => {
                    assert_eq!(id, None, "a tag's frame moves no position: {frame}");
                    self.states.push(project);
                }
                _ => panic!("unexpected frame: {frame}"),
            }
            if id.is_some() {
                self.last_id = id;
            }
        }
    }

    fn logs_of(&self, project: &str) -> usize {
        self.logs.get(project).map_or(0, Vec::len)
    }
}

// The multiplexed SSE stream on a cluster: projects on all three masters and a tag whose
// projects span them, on hub B; then, with the one `Last-Event-ID` of the last record,
// on hub A: every project subscription resumed and recovered with exactly the events it
// missed, and the tag's projects in a fresh snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_multiplexed_sse_stream_resumes_every_shard_with_one_last_event_id() {
    let (cluster, a, b, projects) = every_shard(RedisCluster::start().await, "sx").await;
    let tagged = one_per_master(&cluster, "sxtag").await;
    for project in projects.iter().chain(&tagged) {
        let mut event = support::progress(10);
        event["tags"] = serde_json::json!(["team:5"]);
        let (status, answer) = a.post_event(project, &event).await;
        assert_eq!(status, 202, "{answer}");
    }
    let query = format!("projects={}&tags=team:5", projects.join(","));
    let mut sse = multiplexed_sse(&b, &query, None).await;
    let mut heard = Heard::default();
    // Each project: `subscribed`, then its snapshot; the tag: `subscribed`, then a
    // `project_state` for each of its six projects.
    heard
        .until(&mut sse, |h| {
            h.subscribed.len() == 4 && h.snapshots.len() == 3 && h.states.len() == 6
        })
        .await;
    for project in &projects {
        assert_eq!(
            heard.subscribed[project],
            serde_json::json!({"resumed": false, "recovered": true})
        );
    }
    assert_eq!(heard.subscribed["tag:team:5"]["projects"], 6);
    let mut states = heard.states.clone();
    states.sort();
    let mut all: Vec<String> = projects.iter().chain(&tagged).cloned().collect();
    all.sort();
    assert_eq!(states, all, "every tagged project, from every shard");
    for project in &projects {
        a.publish(project, log_event("seen")).await;
    }
    heard
        .until(&mut sse, |h| projects.iter().all(|p| h.logs_of(p) == 1))
        .await;
    let last_id = heard.last_id.clone().expect("a position");
    drop(sse);

    // Missed while away, through the other hub.
    let mut missed: HashMap<String, Vec<String>> = HashMap::new();
    for (n, project) in projects.iter().enumerate() {
        for i in 0..2 + n {
            let id = b.publish(project, log_event(&format!("missed {i}"))).await;
            missed.entry(project.clone()).or_default().push(id);
        }
    }
    let mut sse = multiplexed_sse(&a, &query, Some(&last_id)).await;
    let mut resumed = Heard::default();
    resumed
        .until(&mut sse, |h| {
            h.subscribed.len() == 4
                && h.states.len() == 6
                && projects.iter().all(|p| h.logs_of(p) >= missed[p].len())
        })
        .await;
    for project in &projects {
        assert_eq!(
            resumed.subscribed[project],
            serde_json::json!({"resumed": true, "recovered": true}),
            "{project}"
        );
        assert_eq!(
            resumed.logs[project], missed[project],
            "exactly the missed events"
        );
    }
    assert!(resumed.snapshots.is_empty(), "a resume sends no snapshot");
    // Nothing twice: the next record is the next live event.
    let live = b.publish(&projects[0], log_event("live")).await;
    let (_, frame) = sse.next().await;
    assert_eq!(frame["id"], live.as_str(), "{frame}");
}

// The tag feed on a cluster: a subscription on hub B to a tag with no projects yet, then
// runs tagged with it in all three shards, queued through and run by hub A: each run
// appears in the feed and is followed to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_feed_follows_runs_started_in_every_shard_to_their_end() {
    let (_cluster, a, b, projects) = every_shard(RedisCluster::start().await, "tagrun").await;
    let mut client = multiplexed(&b).await;
    let subscribe = serde_json::json!({"event": "subscribe", "data": {"tag": "team:11"}});
    client.send_text(&subscribe.to_string()).await;
    assert_eq!(
        client.next_event().await,
        serde_json::json!({"event": "subscribed", "tag": "team:11", "data": {"projects": 0}})
    );
    for project in &projects {
        let body = serde_json::json!({"tags": ["team:11"]});
        let (status, answer) = a.generate(project, &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let mut status: HashMap<String, String> = HashMap::new();
    while status.len() < projects.len() || status.values().any(|s| s != "COMPLETED") {
        let frame = tokio::time::timeout(Duration::from_secs(60), client.next_event())
            .await
            .expect("the runs appear and end");
        assert_eq!(frame["event"], "project_state", "{frame}");
        assert_eq!(frame["tag"], "team:11", "{frame}");
        let project = frame["project_id"].as_str().unwrap().to_string();
        assert!(projects.contains(&project), "{frame}");
        assert_eq!(
            frame["data"]["tags"],
            serde_json::json!(["team:11"]),
            "{frame}"
        );
        status.insert(
            project,
            frame["data"]["status"].as_str().unwrap().to_string(),
        );
    }
    // What the feed ended with is what the list says, from either hub.
    for hub in [&a, &b] {
        let listed: Value = reqwest::get(hub.http("/api/v1/projects?tag=team:11"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut ids: Vec<&str> = listed["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["status"], "COMPLETED", "{p}");
                p["project_id"].as_str().unwrap()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, projects);
    }
}

// A manual failover under a multiplexed connection watching every shard: publishing
// goes on through both hubs while one master hands over to its replica, and every
// subscription gets every event of its project, once, in order (the subscriptions of
// the moved shard follow it; the others are untouched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_connection_survives_a_failover_of_one_shard() {
    let (cluster, a, b, projects) =
        every_shard(RedisCluster::start_with_replicas().await, "mxfo").await;
    let mut on_b = watching(&b, &projects).await;
    let mut on_a = watching(&a, &projects).await;
    let moved = &projects[0];
    let owner = cluster
        .owner_of(&layout::shard_channel(&support::project(moved)))
        .await;
    let replica = cluster.replica_of(owner).await;
    // Each step: one event for each project, through hub A or B.
    let statuses = publishing_through_a_failover(&cluster, replica, [10, 30, 40], |i| {
        let (a, b, projects) = (&a, &b, &projects);
        async move {
            let mut statuses = Vec::new();
            for project in projects {
                statuses.push(publish_step((a, b), project, i).await);
            }
            statuses
        }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    for client in [&mut on_b, &mut on_a] {
        let mut steps_of: HashMap<String, Vec<usize>> = HashMap::new();
        while steps_of.len() < projects.len() || steps_of.values().any(|s| s.len() < 40) {
            let frame = client.next_event().await;
            assert_eq!(frame["event"], "log", "{frame}");
            let project = frame["project_id"].as_str().unwrap().to_string();
            let step = frame["data"]["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("step "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a step: {frame}"));
            steps_of.entry(project).or_default().push(step);
        }
        for project in &projects {
            assert_eq!(steps_of[project], (0..40).collect::<Vec<_>>(), "{project}");
        }
    }
    assert_eq!(
        cluster
            .owner_of(&layout::shard_channel(&support::project(moved)))
            .await,
        replica
    );
}
