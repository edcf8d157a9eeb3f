//! A `redis-server` of the test's own on a free port: killed, frozen, restarted at will.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{PATIENCE, layout, project};

/// A `redis-server` of our own, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Where `SAVE` writes and a restart loads from (`start_with_saves`); none: the
    /// server keeps nothing across a restart.
    dir: Option<PathBuf>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_in(None).await
    }

    /// A server that writes its data to a directory of its own on `SAVE` (never by
    /// itself) and loads it when restarted: a restart loses what came after the save.
    pub async fn start_with_saves() -> Self {
        Self::start_in(Some(())).await
    }

    async fn start_in(saves: Option<()>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = saves.map(|()| {
                let dir = std::env::temp_dir()
                    .join(format!("progress-hub-redis-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("a directory for the saves");
                dir
            });
            let mut server = Self {
                port,
                child: None,
                dir,
            };
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed?)");
    }

    /// `SAVE`: what a restart will load.
    pub async fn save(&self) {
        assert!(self.dir.is_some(), "started with saves");
        let () = redis::cmd("SAVE")
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
    }

    async fn launch(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        if let Some(dir) = &self.dir {
            command.arg("--dir").arg(dir);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (the test command installs it)");
        self.child = Some(child);
        let url = self.url();
        let started = match self.child.as_mut() {
            Some(child) => started(&url, child).await,
            None => false,
        };
        if !started {
            self.kill();
        }
        started
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

    /// Starts it again on the same port: empty, or from its last `SAVE` when started
    /// with saves.
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

    /// `PUBSUB NUMSUB` of project `name`'s channel.
    pub async fn numsub(&self, name: &str) -> i64 {
        let mut conn = self.connection().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(layout::channel(&project(name)))
            .query_async(&mut conn)
            .await
            .unwrap();
        n
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Waits until the `redis-server` started as `child` answers on `url` as itself (the
/// `process_id` of its `INFO server` is the child's). A port chosen free can be taken
/// by another process between choosing and binding, e.g. another test's server: the
/// child then exits ("Address already in use") while the other answers on the port, so
/// a PING alone could hand a test someone else's server. `false` when the child has
/// exited or has not answered within `PATIENCE`: the caller tries another port.
pub async fn started(url: &str, child: &mut Child) -> bool {
    let pid = format!("process_id:{}", child.id());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let mut info = redis::cmd("INFO");
        info.arg("server");
        if let Ok(client) = redis::Client::open(url)
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && let Ok(text) = info.query_async::<String>(&mut conn).await
        {
            return text.lines().any(|line| line.trim() == pid);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
