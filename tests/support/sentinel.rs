//! A Sentinel-managed Redis of the test's own: one primary, one replica and three
//! sentinels, each a `redis-server` on a free port with its files in a temp dir, killed
//! on drop. Sentinels judge a node down after 1 s, so a failover takes a few seconds.
//!
//! [`SentinelSetup::start_behind_proxy`] puts the primary behind a [`RedisProxy`]: the
//! replica and the sentinels know it only by the proxy's address, so that is the address
//! the sentinels name to a hub.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::Value;

use super::PATIENCE;
use super::proxy::RedisProxy;
use super::redis::{free_port, started};

/// The name the sentinels monitor the primary by.
pub const MASTER: &str = "mymaster";

/// Passwords: the data nodes' (`requirepass`, `masterauth`, the sentinels' `auth-pass`)
/// and the sentinels' own (`requirepass`, `sentinel-pass`). `None`: no password.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub nodes: Option<String>,
    pub sentinels: Option<String>,
}

/// One `redis-server` process (a data node or a sentinel).
struct Process {
    port: u16,
    password: Option<String>,
    child: Option<Child>,
}

impl Process {
    fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The topology; the primary is whichever node the sentinels name now.
pub struct SentinelSetup {
    nodes: Vec<Process>,
    sentinels: Vec<Process>,
    auth: Auth,
    /// The sentinels' config files (a sentinel rewrites its own); removed on drop.
    dir: std::path::PathBuf,
    /// The proxy the primary is known by, if started behind one.
    proxy: Option<RedisProxy>,
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SentinelSetup {
    /// Starts everything and waits until every sentinel knows the replica and the
    /// other two sentinels (so a failover can be agreed at once).
    pub async fn start() -> Self {
        Self::start_with(Auth::default()).await
    }

    /// As [`Self::start`], with passwords.
    pub async fn start_with(auth: Auth) -> Self {
        Self::start_inner(auth, false).await
    }

    /// As [`Self::start`], with the primary behind a [`RedisProxy`] ([`Self::proxy`]):
    /// the replica replicates through it and the sentinels monitor it, so the primary
    /// they name is the proxy. (Only the primary is: a failover would move the hub off
    /// the proxy, and [`Self::kill_primary`] does not find the primary by that port.)
    pub async fn start_behind_proxy() -> Self {
        Self::start_inner(Auth::default(), true).await
    }

    /// The proxy in front of the primary, if started behind one.
    pub fn proxy(&self) -> &RedisProxy {
        self.proxy.as_ref().expect("started behind a proxy")
    }

    async fn start_inner(auth: Auth, proxied: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "progress-hub-sentinel-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let node_pw = auth.nodes.as_deref();
        // A replica writes the primary's snapshot to its `dir`: the temp dir, not the cwd.
        let dir_arg = dir.display().to_string();
        let primary = spawn(|_| vec!["--dir".into(), dir_arg.clone()], false, node_pw).await;
        let proxy = match proxied {
            true => Some(RedisProxy::start(&format!("127.0.0.1:{}", primary.port)).await),
            false => None,
        };
        // The port the replica and the sentinels know the primary by.
        let primary_port = proxy.as_ref().map_or(primary.port, |p| p.port);
        let replica_args = |_| {
            let of = ["--replicaof", "127.0.0.1", &primary_port.to_string()].map(String::from);
            [vec!["--dir".into(), dir_arg.clone()], of.to_vec()].concat()
        };
        let replica = spawn(replica_args, false, node_pw).await;
        let mut secrets = String::new();
        if let Some(pw) = &auth.nodes {
            secrets += &format!("sentinel auth-pass {MASTER} {pw}\n");
        }
        if let Some(pw) = &auth.sentinels {
            secrets += &format!("requirepass {pw}\nsentinel sentinel-pass {pw}\n");
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let conf = dir.join(format!("sentinel-{i}.conf"));
            let config = |port| {
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                         sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {MASTER} 1000\n\
                         sentinel failover-timeout {MASTER} 5000\n\
                         sentinel parallel-syncs {MASTER} 1\n{secrets}",
                        dir = dir.display(),
                        primary = primary_port,
                    ),
                )
                .expect("sentinel config");
                vec![conf.display().to_string(), "--sentinel".into()]
            };
            let sentinel_pw = auth.sentinels.as_deref();
            sentinels.push(spawn(config, true, sentinel_pw).await);
        }
        let setup = Self {
            nodes: vec![primary, replica],
            sentinels,
            auth,
            dir,
            proxy,
        };
        setup.wait_settled().await;
        setup
    }

    /// `redis+sentinel://[:pw@]s1,s2,s3/mymaster[?sentinel_password=pw]`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let userinfo = match &self.auth.nodes {
            Some(pw) => format!(":{pw}@"),
            None => String::new(),
        };
        let query = match &self.auth.sentinels {
            Some(pw) => format!("?sentinel_password={pw}"),
            None => String::new(),
        };
        format!(
            "redis+sentinel://{userinfo}{}/{MASTER}{query}",
            hosts.join(",")
        )
    }

    /// A sentinel's own URL (for SENTINEL commands).
    pub fn sentinel_url(&self, i: usize) -> String {
        self.sentinels[i].url()
    }

    /// The primary's port, as the sentinels name it now.
    pub async fn primary_port(&self) -> u16 {
        let mut conn = connect(&self.sentinels[0].url()).await;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query_async(&mut conn)
            .await
            .expect("the sentinel names a primary");
        port
    }

    /// A plain `redis://` URL of the node the sentinels name the primary now.
    pub async fn primary_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.primary_port().await)
    }

    /// `SENTINEL FAILOVER`: the replica is promoted and the primary demoted, both alive.
    pub async fn force_failover(&self) {
        let mut conn = connect(&self.sentinels[0].url()).await;
        let _: Value = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query_async(&mut conn)
            .await
            .expect("SENTINEL FAILOVER");
    }

    /// The primary is demoted behind the sentinels' back, with nothing announced on the
    /// channels a hub follows (no `+try-failover`, no `+switch-master`): the sentinels
    /// forget the master (`SENTINEL REMOVE`), the replica is made the primary
    /// (`REPLICAOF NO ONE`), the old primary its replica, and the sentinels monitor the
    /// new one (`SENTINEL MONITOR`). A hub still connected to the old primary learns of
    /// it only from a `READONLY` reply. Returns the new primary's port.
    pub async fn demote_primary_unannounced(&self) -> u16 {
        assert!(self.proxy.is_none(), "not behind a proxy");
        let old = self.primary_port().await;
        let new = self
            .nodes
            .iter()
            .map(|n| n.port)
            .find(|port| *port != old)
            .expect("a replica");
        for sentinel in &self.sentinels {
            let mut conn = connect(&sentinel.url()).await;
            let _: Value = redis::cmd("SENTINEL")
                .arg("REMOVE")
                .arg(MASTER)
                .query_async(&mut conn)
                .await
                .expect("SENTINEL REMOVE");
        }
        let node = |port: u16| {
            self.nodes
                .iter()
                .find(|n| n.port == port)
                .expect("a node")
                .url()
        };
        let mut promoted = connect(&node(new)).await;
        let _: Value = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut promoted)
            .await
            .expect("REPLICAOF NO ONE");
        let mut demoted = connect(&node(old)).await;
        let _: Value = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(new)
            .query_async(&mut demoted)
            .await
            .expect("REPLICAOF");
        for sentinel in &self.sentinels {
            let mut conn = connect(&sentinel.url()).await;
            let _: Value = redis::cmd("SENTINEL")
                .arg("MONITOR")
                .arg(MASTER)
                .arg("127.0.0.1")
                .arg(new)
                .arg(2)
                .query_async(&mut conn)
                .await
                .expect("SENTINEL MONITOR");
            let mut set = redis::cmd("SENTINEL");
            set.arg("SET")
                .arg(MASTER)
                .arg("down-after-milliseconds")
                .arg(1000)
                .arg("failover-timeout")
                .arg(5000);
            if let Some(pw) = &self.auth.nodes {
                set.arg("auth-pass").arg(pw);
            }
            let _: Value = set.query_async(&mut conn).await.expect("SENTINEL SET");
        }
        new
    }

    /// SIGKILL to the current primary, as a crash would.
    pub async fn kill_primary(&mut self) {
        let port = self.primary_port().await;
        for node in &mut self.nodes {
            if node.port == port {
                node.kill();
            }
        }
    }

    /// Waits until the sentinels name a primary other than the one on `old_port`.
    pub async fn wait_switched_from(&self, old_port: u16) {
        super::eventually("the sentinels name a new primary", || async {
            self.primary_port().await != old_port
        })
        .await;
    }

    async fn wait_settled(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE * 3;
        loop {
            let mut settled = true;
            for sentinel in &self.sentinels {
                let mut conn = connect(&sentinel.url()).await;
                let others: Vec<Value> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(MASTER)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                let replicas: Vec<std::collections::HashMap<String, String>> =
                    redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(MASTER)
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                let replica_ok = replicas.iter().any(|r| {
                    r.get("flags").map(String::as_str) == Some("slave")
                        && r.get("master-link-status").map(String::as_str) == Some("ok")
                });
                settled &= others.len() == 2 && replica_ok;
            }
            if settled {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sentinels never settled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

/// Starts `redis-server` on a free port, `args(port)` its arguments (a sentinel's: its
/// config file, written for that port, and `--sentinel`), and waits until it answers as
/// itself; a port another process took meanwhile is given up for another, 5 at most.
async fn spawn(
    args: impl Fn(u16) -> Vec<String>,
    sentinel: bool,
    password: Option<&str>,
) -> Process {
    for _ in 0..5 {
        let port = free_port();
        let mut command = Command::new("redis-server");
        command.args(args(port));
        if !sentinel {
            command.args(["--port", &port.to_string()]).args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ]);
            if let Some(pw) = password {
                command.args(["--requirepass", pw, "--masterauth", pw]);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        let mut process = Process {
            port,
            password: password.map(str::to_string),
            child: Some(child),
        };
        let url = process.url();
        if let Some(child) = process.child.as_mut()
            && started(&url, child).await
        {
            return process;
        }
    }
    panic!("redis-server did not start on 5 ports");
}
