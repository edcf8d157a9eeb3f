//! The job queue on Redis Streams, shared by every hub and worker on one Redis.
//!
//! - `progress:jobs` is a stream; workers read it in the consumer group `workers`
//!   (XREADGROUP), so each job goes to one worker, and XACK settles it.
//! - A job stays pending until settled. Its worker resets the entry's idle time every
//!   few seconds (XCLAIM to itself); an entry idle longer than `claim_idle` belongs to a
//!   worker that died or stalled, and the next `take` claims it (XAUTOCLAIM).
//! - A claim is the consumer and the entry's delivery count (`claim.lua`): keep-alive,
//!   settle and hand-back check it and act in one script, so a stalled worker that
//!   comes back after a reclaim changes nothing and learns it lost the job.
//! - `{progress:jobs}:lock:<project>` holds the id of the project's job from submit
//!   (`submit.lua`) to settle: one job per project, however long it waits in the queue.
//!   It has no expiry; settling the job releases it in the same script.
//! - `{progress:jobs}:done:<job>` holds what the job finished (a [`Checkpoint`]),
//!   recorded under the claim after each provider call, read by every `take`, deleted
//!   when the job is settled.
//! - `{progress:jobs}:cancelled` marks the jobs a cancel was asked of (`cancel.lua`,
//!   through the project's lock); their workers read it between provider calls, and
//!   settling a job removes its mark.
//! - A pending entry idle longer than `claim_idle` is a job whose worker is lost (it
//!   stopped renewing): `lost_workers` reads them (XPENDING IDLE) until one is taken over.
//! - `{progress:jobs}:retry:<project>` keeps what the project's last failed or
//!   cancelled job finished, for `POST .../retry` (a week).
//!
//! Every key of the queue is in the stream's hash slot (tagged `{progress:jobs}`), so
//! each script acts on the job, its lock and its checkpoint in one atomic step.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::streams::{StreamRangeReply, StreamReadReply};

use super::checkpoint::Checkpoint;
use super::queue::{Claimed, JobQueue, Ownership, QueueError, Queued};
use super::{Job, QueueLimits};
use progress_hub::broker::redis::connection::{RedisConn, Timeouts};
use progress_hub::broker::redis::layout::{self, JOB_GROUP, JOB_STREAM};
use progress_hub::broker::redis::sentinel::{Sentinel, is_demoted};
use progress_hub::broker::redis::target::RedisTarget;
use progress_hub::wire::ProjectId;

pub const STREAM: &str = JOB_STREAM;
pub const GROUP: &str = JOB_GROUP;

/// Longest a blocking read (XREADGROUP BLOCK, a few seconds at most) may take to answer.
const BLOCKING_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failed or cancelled job's retry point is kept.
const RETRY_POINT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A blocking read answered this long after its own wait is taken for an outage.
const LATE_ANSWER: Duration = Duration::from_secs(2);
/// A reclaim that reaches Redis later than this after it was sent takes nothing (it
/// waited out an outage). Generous, so that clocks of hosts a few seconds apart agree.
const RECLAIM_WINDOW: Duration = Duration::from_secs(10);
/// Most lost jobs `lost_workers` reads at once.
const MAX_LOST: usize = 1000;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock_key(project: &ProjectId) -> String {
    layout::job_lock_key(project)
}

fn checkpoint_key(job: &Job) -> String {
    layout::job_checkpoint_key(&job.id)
}

/// A job entry `reclaim.lua` took over.
struct Reclaimed {
    entry: String,
    delivery: u64,
    /// Its `job` field.
    job: Option<String>,
}

/// Reads `reclaim.lua`'s reply: the next cursor, and the entry taken over, if any. Read
/// as bytes, so that an entry whose job is not text is still taken (and then dropped
/// as unreadable) instead of failing every `take`.
fn reclaim_reply(reply: Vec<Vec<u8>>) -> Result<(String, Option<Reclaimed>), QueueError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let bad = || QueueError::Unavailable("unexpected reply of the reclaim script".into());
    match reply.as_slice() {
        [cursor] => Ok((text(cursor), None)),
        [cursor, entry, delivery, fields @ ..] => {
            let stale = Reclaimed {
                entry: text(entry),
                delivery: text(delivery).parse().map_err(|_| bad())?,
                job: fields
                    .chunks_exact(2)
                    .find(|kv| kv[0] == b"job")
                    .and_then(|kv| String::from_utf8(kv[1].clone()).ok()),
            };
            Ok((text(cursor), Some(stale)))
        }
        _ => Err(bad()),
    }
}

/// The connection XREADGROUP BLOCK holds.
enum Blocking {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
    /// To the primary the sentinels named in the generation it was opened in.
    Sentinel {
        sentinel: Arc<Sentinel>,
        opened_in: u64,
        conn: redis::aio::MultiplexedConnection,
    },
}

impl Blocking {
    async fn open(commands: &RedisConn, target: &RedisTarget) -> Result<Self, QueueError> {
        Ok(match (commands, target) {
            (RedisConn::Cluster(cluster), _) => Self::Cluster(cluster.separate().await?),
            (RedisConn::Sentinel(conn), _) => {
                let sentinel = Arc::clone(conn.sentinel());
                let opened_in = sentinel.generation();
                let conn = sentinel
                    .primary()
                    .await?
                    .get_multiplexed_async_connection_with_config(&blocking_config())
                    .await?;
                Self::Sentinel {
                    sentinel,
                    opened_in,
                    conn,
                }
            }
            // The default response timeout (500 ms) is shorter than the BLOCK wait: every
            // read that found no job would fail. A frozen Redis is caught by LATE_ANSWER.
            (RedisConn::Single(_), RedisTarget::Single(url)) => Self::Single(
                redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection_with_config(&blocking_config())
                    .await?,
            ),
            (RedisConn::Single(_), _) => {
                return Err(QueueError::Unavailable(
                    "a single-node connection for another kind of target".into(),
                ));
            }
        })
    }

    /// Whether the primary switched since this connection was opened.
    fn is_stale(&self) -> bool {
        matches!(self, Self::Sentinel { sentinel, opened_in, .. } if sentinel.generation() != *opened_in)
    }

    /// Takes note of a failed read: a demoted node makes the sentinels be asked again.
    fn failed(&self, err: &redis::RedisError) {
        if let Self::Sentinel {
            sentinel,
            opened_in,
            ..
        } = self
            && is_demoted(err)
        {
            sentinel.suspect(*opened_in);
        }
    }
}

/// The default response timeout (500 ms) is shorter than the BLOCK wait: every read
/// that found no job would fail. A frozen Redis is caught by LATE_ANSWER.
fn blocking_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCKING_READ_TIMEOUT))
}

impl ConnectionLike for Blocking {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel { conn, .. } => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel { conn, .. } => conn.get_db(),
        }
    }
}

pub struct RedisQueue {
    target: RedisTarget,
    commands: RedisConn,
    /// XREADGROUP BLOCK holds its connection; it gets one of its own so that it never
    /// delays other commands.
    blocking: tokio::sync::Mutex<Option<Blocking>>,
    claim_idle: Duration,
    limits: QueueLimits,
    group_ready: AtomicBool,
    submit: redis::Script,
    claim: redis::Script,
    reclaim: redis::Script,
    cancel: redis::Script,
    /// Where the next XAUTOCLAIM scan resumes: each call looks at a few pending entries,
    /// so the cursor must advance for every dead worker's job to be found.
    claim_cursor: Mutex<String>,
    /// Set while Redis cannot be reached from here.
    outage: AtomicBool,
    /// No reclaim before this instant. After an outage every job looks stale (no worker
    /// could renew its claim), yet their workers may be alive and cut off just as this
    /// one was: they get `claim_idle` to renew before anything is taken from them.
    reclaim_after: Mutex<tokio::time::Instant>,
}

impl RedisQueue {
    /// `url` names one node or a cluster (see [`RedisTarget`]): every key the queue
    /// uses is one key or keys of one slot, so it works unchanged on a cluster.
    pub fn new(url: &str, claim_idle: Duration) -> Result<Self, QueueError> {
        let target = RedisTarget::parse(url).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(2),
            max_retry_delay: None,
        };
        let commands = RedisConn::open(&target, timeouts)
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(Self {
            target,
            commands,
            blocking: tokio::sync::Mutex::new(None),
            claim_idle,
            limits: QueueLimits::default(),
            group_ready: AtomicBool::new(false),
            submit: redis::Script::new(include_str!("submit.lua")),
            claim: redis::Script::new(include_str!("claim.lua")),
            reclaim: redis::Script::new(include_str!("reclaim.lua")),
            cancel: redis::Script::new(include_str!("cancel.lua")),
            claim_cursor: Mutex::new("0-0".into()),
            outage: AtomicBool::new(false),
            reclaim_after: Mutex::new(tokio::time::Instant::now()),
        })
    }

    pub fn with_limits(mut self, limits: QueueLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Records whether Redis answered; on the first answer after an outage, holds
    /// reclaims back for `claim_idle`.
    fn reached<T, E>(&self, result: &Result<T, E>) {
        if result.is_err() {
            self.outage.store(true, Ordering::Relaxed);
        } else if self.outage.swap(false, Ordering::Relaxed) {
            self.hold_reclaims_back("job queue reachable again");
        }
    }

    fn hold_reclaims_back(&self, why: &str) {
        *self.reclaim_after.lock() = tokio::time::Instant::now() + self.claim_idle;
        tracing::info!(
            wait = ?self.claim_idle,
            "{why}; stale jobs are reclaimed only after their workers had time to renew their claims"
        );
    }

    fn may_reclaim(&self) -> bool {
        !self.outage.load(Ordering::Relaxed)
            && tokio::time::Instant::now() >= *self.reclaim_after.lock()
    }

    async fn ensure_group(&self) -> Result<(), QueueError> {
        if self.group_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut conn = self.commands.clone();
        // From 0: a group created late still sees every job not yet settled.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(STREAM)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(err) if err.code() == Some("BUSYGROUP") => {}
            Err(err) => return Err(err.into()),
        }
        self.group_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn cursor(&self) -> String {
        self.claim_cursor.lock().clone()
    }

    /// Forgets that the group exists (after a NOGROUP error: Redis lost it).
    fn check_group(&self, err: &redis::RedisError) {
        if err.code() == Some("NOGROUP") {
            self.group_ready.store(false, Ordering::Relaxed);
        }
    }

    /// Turns a stream entry (its `job` field) into a claimed job; an unreadable entry is
    /// settled and skipped so it cannot block the queue.
    async fn claimed(
        &self,
        entry: String,
        job: Option<String>,
        consumer: &str,
        delivery: u64,
    ) -> Result<Option<Claimed>, QueueError> {
        match job.as_deref().and_then(Job::from_json) {
            Some(job) => {
                let checkpoint = self.checkpoint(&job).await?;
                Ok(Some(Claimed {
                    job,
                    entry,
                    consumer: consumer.to_string(),
                    delivery,
                    checkpoint,
                }))
            }
            None => {
                tracing::warn!(%entry, "dropping an unreadable job entry");
                self.settle(&entry).await?;
                Ok(None)
            }
        }
    }

    /// Runs `claim.lua`: `action` happens only if `claimed` still holds.
    async fn with_claim(
        &self,
        claimed: &Claimed,
        action: &str,
        payload: String,
    ) -> Result<Ownership, QueueError> {
        let mut conn = self.commands.clone();
        let reply: redis::RedisResult<(i64, String)> = self
            .claim
            .key(STREAM)
            .key(lock_key(&claimed.job.project))
            .key(checkpoint_key(&claimed.job))
            .key(layout::JOB_CLIENTS)
            .key(layout::JOB_CANCELLED)
            .arg(GROUP)
            .arg(&claimed.consumer)
            .arg(&claimed.entry)
            .arg(claimed.delivery)
            .arg(action)
            .arg(payload)
            .arg(&claimed.job.id)
            .arg(claimed.job.client.as_deref().unwrap_or_default())
            .invoke_async(&mut conn)
            .await;
        let (held, holder) = reply.inspect_err(|e| self.check_group(e))?;
        Ok(if held == 1 {
            Ownership::Held
        } else {
            Ownership::Lost {
                holder: Some(holder).filter(|h| !h.is_empty()),
            }
        })
    }

    /// What earlier runs of the job finished (empty if none, or if the record cannot
    /// be read: the job then starts over rather than not at all).
    async fn checkpoint(&self, job: &Job) -> Result<Checkpoint, QueueError> {
        let mut conn = self.commands.clone();
        let text: Option<String> = redis::cmd("GET")
            .arg(checkpoint_key(job))
            .query_async(&mut conn)
            .await?;
        Ok(match text {
            None => Checkpoint::default(),
            Some(text) => Checkpoint::from_json(&text).unwrap_or_else(|| {
                tracing::warn!(project_id = %job.project, job_id = %job.id, "unreadable job checkpoint; the job starts over");
                Checkpoint::default()
            }),
        })
    }

    async fn settle(&self, entry: &str) -> Result<(), QueueError> {
        let mut conn = self.commands.clone();
        redis::pipe()
            .cmd("XACK")
            .arg(STREAM)
            .arg(GROUP)
            .arg(entry)
            .ignore()
            .cmd("XDEL")
            .arg(STREAM)
            .arg(entry)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn submit(&self, job: &Job) -> Result<Queued, QueueError> {
        self.ensure_group().await?;
        let mut conn = self.commands.clone();
        let (queued, detail): (i64, String) = self
            .submit
            .key(STREAM)
            .key(lock_key(&job.project))
            .key(layout::JOB_CLIENTS)
            .arg(&job.id)
            .arg(job.to_json())
            .arg(job.client.as_deref().unwrap_or_default())
            .arg(self.limits.max_queued_per_client)
            .arg(self.limits.max_queued)
            .arg(GROUP)
            .invoke_async(&mut conn)
            .await
            .inspect_err(|e| self.check_group(e))?;
        match queued {
            1 => Ok(Queued {
                position: detail.parse().unwrap_or(1),
            }),
            0 => Err(QueueError::Busy { job_id: detail }),
            -1 => Err(QueueError::ClientFull {
                limit: self.limits.max_queued_per_client,
            }),
            _ => Err(QueueError::Full {
                limit: self.limits.max_queued,
            }),
        }
    }

    async fn take(&self, consumer: &str, wait: Duration) -> Result<Option<Claimed>, QueueError> {
        self.ensure_group().await?;
        let mut conn = self.commands.clone();
        // First, a job whose worker stopped showing life.
        if self.may_reclaim() {
            let stale: redis::RedisResult<Vec<Vec<u8>>> = self
                .reclaim
                .key(STREAM)
                .arg(GROUP)
                .arg(consumer)
                .arg(self.claim_idle.as_millis() as u64)
                .arg(self.cursor())
                .arg(unix_ms() + RECLAIM_WINDOW.as_millis() as u64)
                .invoke_async(&mut conn)
                .await;
            self.reached(&stale);
            let (next_cursor, stale) = reclaim_reply(stale.inspect_err(|e| self.check_group(e))?)?;
            *self.claim_cursor.lock() = next_cursor;
            if let Some(stale) = stale {
                return self
                    .claimed(stale.entry, stale.job, consumer, stale.delivery)
                    .await;
            }
        }
        // Then, a new one.
        let mut blocking = self.blocking.lock().await;
        if blocking.as_ref().is_some_and(Blocking::is_stale) {
            *blocking = None;
        }
        if blocking.is_none() {
            *blocking = Some(Blocking::open(&self.commands, &self.target).await?);
        }
        let Some(conn) = blocking.as_mut() else {
            return Ok(None);
        };
        let asked = tokio::time::Instant::now();
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query_async(conn)
            .await;
        self.reached(&read);
        if asked.elapsed() > wait + LATE_ANSWER {
            // A frozen Redis (or a partition) holds a blocking read without an error:
            // an answer this late is an outage all the same.
            self.hold_reclaims_back("Redis answered a blocking read late");
        }
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                self.check_group(&err);
                if let Some(conn) = blocking.as_ref() {
                    conn.failed(&err);
                }
                // The connection may be broken: make a new one next time.
                *blocking = None;
                return Err(err.into());
            }
        };
        drop(blocking);
        let entry = read
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next());
        match entry {
            // A first delivery (">"): its delivery count is 1.
            Some(entry) => {
                let job = entry.get::<String>("job");
                self.claimed(entry.id, job, consumer, 1).await
            }
            None => Ok(None),
        }
    }

    async fn keep_alive(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
        self.with_claim(claimed, "renew", String::new()).await
    }

    async fn finish(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
        self.with_claim(claimed, "settle", String::new()).await
    }

    async fn hand_back(&self, claimed: &Claimed) -> Result<Ownership, QueueError> {
        self.with_claim(claimed, "hand_back", claimed.job.requeued_again().to_json())
            .await
    }

    async fn record(
        &self,
        claimed: &Claimed,
        checkpoint: &Checkpoint,
    ) -> Result<Ownership, QueueError> {
        self.with_claim(claimed, "record", checkpoint.to_json())
            .await
    }

    async fn cancel(&self, project: &ProjectId) -> Result<Option<String>, QueueError> {
        let mut conn = self.commands.clone();
        let job_id: String = self
            .cancel
            .key(lock_key(project))
            .key(layout::JOB_CANCELLED)
            .arg(unix_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(Some(job_id).filter(|id| !id.is_empty()))
    }

    async fn keep_retry_point(&self, claimed: &Claimed, retryable: bool) -> Result<(), QueueError> {
        let mut conn = self.commands.clone();
        let key = layout::job_retry_point_key(&claimed.job.project);
        let done: Option<String> = if retryable {
            redis::cmd("GET")
                .arg(checkpoint_key(&claimed.job))
                .query_async(&mut conn)
                .await?
        } else {
            None
        };
        // The job still holds its project's lock: no other job of the project writes here.
        match done {
            Some(done) => {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(done)
                    .arg("EX")
                    .arg(RETRY_POINT_TTL.as_secs())
                    .query_async::<()>(&mut conn)
                    .await?
            }
            None => {
                redis::cmd("DEL")
                    .arg(&key)
                    .query_async::<()>(&mut conn)
                    .await?
            }
        }
        Ok(())
    }

    async fn retry_point(&self, project: &ProjectId) -> Result<Option<Checkpoint>, QueueError> {
        let mut conn = self.commands.clone();
        let text: Option<String> = redis::cmd("GET")
            .arg(layout::job_retry_point_key(project))
            .query_async(&mut conn)
            .await?;
        Ok(text.and_then(|t| Checkpoint::from_json(&t)))
    }

    async fn cancel_requested(&self, claimed: &Claimed) -> Result<bool, QueueError> {
        let mut conn = self.commands.clone();
        Ok(redis::cmd("HEXISTS")
            .arg(layout::JOB_CANCELLED)
            .arg(&claimed.job.id)
            .query_async(&mut conn)
            .await?)
    }

    async fn lost_workers(&self) -> Result<HashSet<ProjectId>, QueueError> {
        let mut conn = self.commands.clone();
        // Each: entry id, consumer, idle ms, delivery count.
        let idle: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
            .arg(STREAM)
            .arg(GROUP)
            .arg("IDLE")
            .arg(self.claim_idle.as_millis() as u64)
            .arg("-")
            .arg("+")
            .arg(MAX_LOST)
            .query_async(&mut conn)
            .await;
        let idle = match idle {
            // No job was ever queued here (not an outage).
            Err(err) if err.code() == Some("NOGROUP") => return Ok(HashSet::new()),
            idle => idle,
        };
        self.reached(&idle);
        let idle = idle?;
        // After an outage every job looks idle (no worker could renew its claim): as for
        // reclaims, none is lost before their workers had `claim_idle` to renew.
        if idle.is_empty() || !self.may_reclaim() {
            return Ok(HashSet::new());
        }
        let mut read = redis::pipe();
        for (entry, ..) in &idle {
            read.cmd("XRANGE").arg(STREAM).arg(entry).arg(entry);
        }
        let entries: Vec<StreamRangeReply> = read.query_async(&mut conn).await?;
        Ok(entries
            .into_iter()
            .flat_map(|range| range.ids)
            .filter_map(|entry| entry.get::<String>("job"))
            .filter_map(|job| Job::from_json(&job))
            .map(|job| job.project)
            .collect())
    }
}
