//! A real hub on port 0, on the in-process broker or a Redis of its own, with the jobs
//! as the `progress-hub` binary starts them (their routes and in-process worker).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use progress_hub::config::ServeConfig;
use progress_hub::server::{self, RunningServer};
use progress_hub::wire::ProjectId;
use progress_hub_jobs::{Jobs, JobsConfig, QueueLimits, WorkerConfig};
use serde_json::Value;

use super::client::WsClient;
use super::redis::RedisServer;
use super::{PATIENCE, layout};

/// Which broker a hub under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

/// What a test hub starts with: the hub's settings, which a tweak reaches as fields of
/// this (`c.stall_after = ...`), and its jobs' (`c.worker`, `c.claim_idle`,
/// `c.job_limits`).
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub hub: ServeConfig,
    /// The in-process worker; `None` runs none (`--no-worker`).
    pub worker: Option<WorkerConfig>,
    /// The job queue's lease without an in-process worker (`--claim-idle`).
    pub claim_idle: Duration,
    /// How many generate jobs may wait (globally and per client).
    pub job_limits: QueueLimits,
}

impl HubConfig {
    fn new(redis_url: Option<String>) -> Self {
        let jobs = JobsConfig::default();
        Self {
            hub: ServeConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                redis_url,
                ..ServeConfig::default()
            },
            worker: jobs.worker,
            claim_idle: jobs.claim_idle,
            job_limits: jobs.limits,
        }
    }

    async fn start(self) -> RunningServer {
        let jobs = Jobs::new(JobsConfig {
            worker: self.worker,
            claim_idle: self.claim_idle,
            limits: self.job_limits,
        });
        server::start_with(self.hub, vec![Box::new(jobs)])
            .await
            .expect("hub starts")
    }
}

impl Deref for HubConfig {
    type Target = ServeConfig;
    fn deref(&self) -> &ServeConfig {
        &self.hub
    }
}

impl DerefMut for HubConfig {
    fn deref_mut(&mut self) -> &mut ServeConfig {
        &mut self.hub
    }
}

/// A hub on a free port, with its own Redis when the backend is Redis.
pub struct TestHub {
    pub hub: Option<RunningServer>,
    pub redis: Option<RedisServer>,
    publisher: Option<redis::aio::MultiplexedConnection>,
    pub addr: SocketAddr,
}

impl TestHub {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut HubConfig)) -> Self {
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => Some(RedisServer::start().await),
        };
        Self::start_with_redis(redis, tweak).await
    }

    /// A hub on `redis` (e.g. one [started with saves](RedisServer::start_with_saves)),
    /// which it owns from now on; in process without one.
    pub async fn start_with_redis(
        redis: Option<RedisServer>,
        tweak: impl FnOnce(&mut HubConfig),
    ) -> Self {
        let mut config = HubConfig::new(redis.as_ref().map(RedisServer::url));
        tweak(&mut config);
        let hub = config.start().await;
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
    pub async fn start_on(redis_url: String, tweak: impl FnOnce(&mut HubConfig)) -> Self {
        let mut config = HubConfig::new(Some(redis_url));
        tweak(&mut config);
        let hub = config.start().await;
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

    /// The project's state as `GET /api/v1/projects/{project}` answers it.
    pub async fn project_state(&self, project: &str) -> Value {
        reqwest::get(self.http(&format!("/api/v1/projects/{project}")))
            .await
            .expect("the hub answers")
            .json()
            .await
            .expect("a JSON state")
    }

    /// Waits until the hub watches exactly `n` projects (a leave or a join reached it).
    pub async fn await_watched_projects(&self, n: usize) {
        let hub = self.hub.as_ref().expect("running hub");
        super::eventually_eq("the hub watches that many projects", n, || async {
            hub.watched_projects()
        })
        .await;
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
                    .arg(layout::channel(&ProjectId::parse(project).unwrap()))
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
        let (status, _, answer) = self.send_json(reqwest::Client::new(), path, body).await;
        (status, answer)
    }

    /// `POST` `body` to `path` from the client address `from` (another loopback address:
    /// another client, as far as the hub can tell): the status, the `Retry-After` and
    /// the answer.
    pub async fn post_json_from(
        &self,
        from: [u8; 4],
        path: &str,
        body: &Value,
    ) -> (u16, Option<String>, Value) {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(from))
            .build()
            .unwrap();
        self.send_json(client, path, body).await
    }

    async fn send_json(
        &self,
        client: reqwest::Client,
        path: &str,
        body: &Value,
    ) -> (u16, Option<String>, Value) {
        let response = client
            .post(self.http(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (
            status,
            retry_after,
            response.json().await.unwrap_or(Value::Null),
        )
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

/// A hub whose in-process worker runs jobs fast (2 ms a step, retries after 5–20 ms).
pub async fn fast_hub(b: Backend) -> TestHub {
    TestHub::start_with(b, |c| {
        if let Some(w) = c.worker.as_mut() {
            w.mock_delay = Duration::from_millis(2);
            w.retry.base = Duration::from_millis(5);
            w.retry.cap = Duration::from_millis(20);
        }
    })
    .await
}
