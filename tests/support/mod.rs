//! Test support: a real `redis-server` per test on a free port, a real hub on port 0,
//! and a real WebSocket client. The one place tests get their moving parts from.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
#[allow(unused_imports)] // used by some test files, not all
pub use progress_hub::broker::redis::layout;
use progress_hub::config::ServeConfig;
use progress_hub::server::{self, RunningHub};
use progress_hub::wire::ProjectId;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A project id the test knows to be valid.
pub fn project(id: &str) -> ProjectId {
    ProjectId::parse(id).expect("a valid project id")
}

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A `redis-server` of our own, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self { port, child: None };
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed?)");
    }

    async fn launch(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (the test command installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false; // port taken between choosing and binding
            }
            if self.ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (no goodbye to its clients), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, as in
    /// a network partition or a stalled host. Its data survives.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(
            self.launch().await,
            "redis-server did not come back on port {}",
            self.port
        );
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Cuts every pub/sub connection (`CLIENT KILL TYPE pubsub`), as a network fault
    /// would; returns how many there were.
    pub async fn kill_subscribers(&self) -> i64 {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut self.connection().await)
            .await
            .unwrap()
    }

    /// `PUBSUB NUMSUB progress:{project}`.
    pub async fn numsub(&self, project: &str) -> i64 {
        let mut conn = self.connection().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("progress:{project}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        n
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Which broker a hub under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

/// A hub on a free port, with its own Redis when the backend is Redis.
pub struct TestHub {
    pub hub: Option<RunningHub>,
    pub redis: Option<RedisServer>,
    publisher: Option<redis::aio::MultiplexedConnection>,
    pub addr: SocketAddr,
}

impl TestHub {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => Some(RedisServer::start().await),
        };
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            redis_url: redis.as_ref().map(RedisServer::url),
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let hub = server::start(config).await.expect("hub starts");
        let publisher = match &redis {
            Some(r) => Some(r.connection().await),
            None => None,
        };
        Self {
            addr: hub.local_addr(),
            hub: Some(hub),
            redis,
            publisher,
        }
    }

    /// A hub on an external Redis (e.g. a [`RedisCluster`]'s URL), with no Redis of its
    /// own to stop.
    pub async fn start_on(redis_url: String, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            redis_url: Some(redis_url),
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let hub = server::start(config).await.expect("hub starts");
        Self {
            addr: hub.local_addr(),
            hub: Some(hub),
            redis: None,
            publisher: None,
        }
    }

    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("a Redis-backed hub")
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, project: &str) -> String {
        format!("ws://{}/api/v1/projects/{}/progress", self.addr, project)
    }

    pub async fn connect(&self, project: &str) -> WsClient {
        WsClient::connect(&self.ws_url(project)).await
    }

    /// Publishes as the original Python `ProgressService` does: a plain PUBLISH on
    /// `progress:{project}` (through the in-process broker when there is no Redis).
    pub async fn publish_raw(&self, project: &str, payload: &str) {
        match &self.publisher {
            Some(conn) => {
                let mut conn = conn.clone();
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(format!("progress:{project}"))
                    .arg(payload)
                    .query_async(&mut conn)
                    .await
                    .expect("PUBLISH");
            }
            None => {
                let hub = self.hub.as_ref().expect("running hub");
                hub.broker()
                    .publish_raw(
                        &ProjectId::parse(project).unwrap(),
                        bytes::Bytes::copy_from_slice(payload.as_bytes()),
                    )
                    .await
                    .expect("in-process publish");
            }
        }
    }

    /// Publishes through the hub's HTTP publish path; returns the status and body.
    pub async fn post_event(&self, project: &str, event: &Value) -> (u16, Value) {
        self.post_json(&format!("/api/v1/projects/{project}/events"), event)
            .await
    }

    /// `POST /api/v1/projects/{project}/generate` with `body`: the status and the answer.
    pub async fn generate(&self, project: &str, body: &Value) -> (u16, Value) {
        self.post_json(&format!("/api/v1/projects/{project}/generate"), body)
            .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.http(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Publishes through the HTTP API and returns the event id (asserting 202).
    pub async fn publish(&self, project: &str, event: Value) -> String {
        let (status, body) = self.post_event(project, &event).await;
        assert_eq!(status, 202, "{body}");
        body["id"]
            .as_str()
            .expect("an id (not coalesced)")
            .to_string()
    }

    /// The hub's publisher library (the same path as the HTTP API).
    pub fn publisher(&self) -> &progress_hub::publish::Publisher {
        self.hub.as_ref().expect("running hub").publisher()
    }

    /// Gracefully stops the hub and waits for it.
    pub async fn stop(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.shutdown();
            tokio::time::timeout(PATIENCE, hub.wait())
                .await
                .expect("hub stops within the grace period")
                .expect("hub stops cleanly");
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(hub) = &self.hub {
            hub.shutdown();
        }
    }
}

/// A real WebSocket client.
pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the client saw next.
#[derive(Debug)]
pub enum Seen {
    Frame(Value),
    Close(Option<(u16, String)>),
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Self { ws }
    }

    /// Connects and reads the `connected` frame.
    pub async fn connected(url: &str) -> Self {
        let mut client = Self::connect(url).await;
        let first = client.next_json().await;
        assert_eq!(first["event"], "connected", "{first}");
        client
    }

    /// The next text frame or close, whatever it is.
    pub async fn next_seen(&mut self) -> Seen {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Seen::Frame(serde_json::from_str(&t).expect("frames are JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Seen::Close(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Seen::Close(None),
            }
        }
    }

    /// The next text frame as raw text, skipping control frames.
    pub async fn next_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("no protocol error");
            if let Message::Text(t) = msg {
                return t.to_string();
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        match self.next_seen().await {
            Seen::Frame(v) => v,
            Seen::Close(c) => panic!("expected a frame, got close {c:?}"),
        }
    }

    /// Connects with `?last_event_id=` and reads the `connected` frame.
    pub async fn resume(url: &str, last_event_id: &str) -> (Self, Value) {
        let mut client = Self::connect(&format!("{url}?last_event_id={last_event_id}")).await;
        let first = client.next_json().await;
        assert_eq!(first["event"], "connected", "{first}");
        (client, first)
    }

    /// The next frame that is not a `ping`.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let v = self.next_json().await;
            if v["event"] != "ping" {
                return v;
            }
        }
    }

    /// Reads until the server closes; returns the close code (None: no close frame).
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_seen().await {
                Seen::Frame(_) => continue,
                Seen::Close(c) => return c.map(|(code, _)| code),
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        // Read until the server acknowledges, so the hub has seen the close.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.ws.next()).await {}
    }
}

/// Reads one counter or gauge from the hub's `/metrics` (summing its label sets).
pub async fn metric(hub: &TestHub, name: &str) -> f64 {
    let text = reqwest::get(hub.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it holds or `PATIENCE` runs out (for state that no event
/// announces, such as Redis's subscriber count).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Defines one test per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name(super::support::Backend::Memory).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name(super::support::Backend::Redis).await
                }
            }
        )*
    };
}

/// A log event with a recognisable message.
pub fn log_event(message: &str) -> Value {
    serde_json::json!({"event": "log", "data": {"level": "INFO", "message": message}})
}

/// A real Redis Cluster on loopback, each node in a temp dir of its own; killed and
/// removed on drop. [`RedisCluster::start`]: 3 masters, no replicas.
/// [`RedisCluster::start_with_replicas`]: 3 masters with one replica each, and a 1 s node
/// timeout so that a failover takes seconds.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// Each node's cluster bus port, chosen free like the port (the default, port +
    /// 10000, is out of range for ports above 55535, where redis-server refuses to start).
    bus_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
    node_timeout_ms: u64,
}

impl RedisCluster {
    /// 3 masters, no replicas.
    pub async fn start() -> Self {
        Self::create(3, 0, 15_000).await
    }

    /// 3 masters and 3 replicas (one per master), node timeout 1 s; a replica takes over
    /// whatever its master's data, so a killed master is always replaced.
    pub async fn start_with_replicas() -> Self {
        Self::create(6, 1, 1_000).await
    }

    async fn create(nodes: usize, replicas: usize, node_timeout_ms: u64) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "progress-hub-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut cluster = Self {
            ports: Vec::new(),
            bus_ports: Vec::new(),
            children: Vec::new(),
            dir,
            node_timeout_ms,
        };
        while cluster.ports.len() < 2 * nodes {
            let port = free_port();
            if !cluster.ports.contains(&port) {
                cluster.ports.push(port);
            }
        }
        cluster.bus_ports = cluster.ports.split_off(nodes);
        for i in 0..nodes {
            cluster.children.push(None);
            cluster.launch(i).await;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be on PATH");
        assert!(status.success(), "redis-cli --cluster create failed");
        for i in 0..nodes {
            cluster.wait_ok(i).await;
        }
        for i in 0..nodes {
            cluster.wait_in_sync(i).await;
        }
        cluster
    }

    /// Starts node `i` (again) with its nodes.conf, so it rejoins with its slots.
    async fn launch(&mut self, i: usize) {
        let port = self.ports[i].to_string();
        let node_dir = self.dir.join(&port);
        std::fs::create_dir_all(&node_dir).expect("a node dir");
        let child = Command::new("redis-server")
            .current_dir(&node_dir)
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &self.bus_ports[i].to_string()])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &self.node_timeout_ms.to_string()])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        self.children[i] = Some(child);
        let url = self.node_url(i);
        eventually(&format!("cluster node {port} answers"), || {
            let url = url.clone();
            async move { query::<String>(&url, redis::cmd("PING")).await.is_some() }
        })
        .await;
    }

    /// Waits for `CLUSTER INFO` to say cluster_state:ok on node `i`.
    async fn wait_ok(&self, i: usize) {
        let url = self.node_url(i);
        eventually("cluster_state:ok", || {
            let url = url.clone();
            async move {
                let mut info = redis::cmd("CLUSTER");
                info.arg("INFO");
                query::<String>(&url, info)
                    .await
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            }
        })
        .await;
    }

    /// Waits until node `i`, if it is a replica, has finished its sync with its master.
    async fn wait_in_sync(&self, i: usize) {
        eventually(&format!("node {i} in sync"), || async move {
            self.replication(i).await.is_some_and(|r| {
                r.get("role").map(String::as_str) == Some("master")
                    || (r.get("master_link_status").map(String::as_str) == Some("up")
                        && r.get("master_sync_in_progress").map(String::as_str) == Some("0"))
            })
        })
        .await;
    }

    /// `INFO replication` of node `i` as fields; `None` when it does not answer.
    pub async fn replication(&self, i: usize) -> Option<HashMap<String, String>> {
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        let text = query::<String>(&self.node_url(i), info).await?;
        Some(
            text.lines()
                .filter_map(|l| l.trim().split_once(':'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The index of master `master`'s replica.
    pub async fn replica_of(&self, master: usize) -> usize {
        let port = self.ports[master].to_string();
        for j in 0..self.ports.len() {
            if let Some(r) = self.replication(j).await
                && r.get("role").map(String::as_str) == Some("slave")
                && r.get("master_port") == Some(&port)
            {
                return j;
            }
        }
        panic!("node {master} has no replica");
    }

    /// Waits until replica `replica` has received everything its master `master` has
    /// written so far (its replication offset has reached the master's).
    pub async fn wait_replicated(&self, master: usize, replica: usize) {
        let field = |r: Option<HashMap<String, String>>, name: &str| {
            r.and_then(|r| r.get(name)?.parse::<u64>().ok())
        };
        let written = field(self.replication(master).await, "master_repl_offset")
            .expect("the master's replication offset");
        eventually("the replica has caught up with its master", || async move {
            field(self.replication(replica).await, "slave_repl_offset")
                .is_some_and(|got| got >= written)
        })
        .await;
    }

    /// Whether node `i` answers, as a master.
    pub async fn is_master(&self, i: usize) -> bool {
        self.replication(i)
            .await
            .is_some_and(|r| r.get("role").map(String::as_str) == Some("master"))
    }

    /// Waits until node `i` is a master and the cluster is ok on every live node.
    pub async fn wait_master(&self, i: usize) {
        eventually(&format!("node {i} is a master"), || self.is_master(i)).await;
        for n in self.live() {
            self.wait_ok(n).await;
        }
    }

    /// Asks replica `i` to take over from its master (`CLUSTER FAILOVER`: the master
    /// stops writes, the replica catches up, then they swap roles; nothing is lost). It
    /// returns at once: await [`Self::wait_master`].
    pub async fn failover(&self, i: usize) {
        let mut failover = redis::cmd("CLUSTER");
        failover.arg("FAILOVER");
        let answer = query::<String>(&self.node_url(i), failover).await;
        assert_eq!(
            answer.as_deref(),
            Some("OK"),
            "CLUSTER FAILOVER on node {i}"
        );
    }

    /// Kills node `i` (kill -9: a crash) and leaves it down.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The nodes that run.
    fn live(&self) -> Vec<usize> {
        (0..self.ports.len())
            .filter(|i| self.children[*i].is_some())
            .collect()
    }

    /// The hub's `--redis-url` for this cluster (every node a seed).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    /// A plain connection to node `i` (for per-node counters).
    pub async fn node(&self, i: usize) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.node_url(i))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The index of the master that owns `key`'s slot, as the first live node sees it.
    pub async fn owner_of(&self, key: &str) -> usize {
        let first = *self.live().first().expect("a live node");
        let mut conn = self.node(first).await;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let shards: Vec<(i64, i64, Vec<redis::Value>)> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<redis::Value>>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|v| {
                // start, end, master, then replicas: keep the master.
                let mut fields: Vec<redis::Value> = redis::from_redis_value(v).unwrap();
                fields.truncate(3);
                redis::from_redis_value(redis::Value::Array(fields)).unwrap()
            })
            .collect();
        for (start, end, master) in shards {
            if (start..=end).contains(&slot) {
                let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
                return self.ports.iter().position(|p| *p == port).unwrap();
            }
        }
        panic!("no node owns slot {slot}");
    }

    /// Kills node `i` (a crash) and starts it again with its cluster config (empty:
    /// no persistence), then waits until the cluster is ok everywhere.
    pub async fn restart_node(&mut self, i: usize) {
        self.kill_node(i);
        self.launch(i).await;
        for n in 0..self.ports.len() {
            self.wait_ok(n).await;
        }
    }
}

/// One command on a fresh connection to `url`; `None` if anything fails.
async fn query<T: redis::FromRedisValue>(url: &str, cmd: redis::Cmd) -> Option<T> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
