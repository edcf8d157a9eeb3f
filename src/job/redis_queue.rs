//! The job queue on Redis Streams, shared by every hub and worker on one Redis.
//!
//! - `progress:jobs` is a stream; workers read it in the consumer group `workers`
//!   (XREADGROUP), so each job goes to one worker, and XACK settles it.
//! - A job stays pending until settled. Its worker resets the entry's idle time every
//!   few seconds (XCLAIM to itself); an entry idle longer than `claim_idle` belongs to a
//!   worker that died, and the next `take` claims it (XAUTOCLAIM).
//! - `progress:{project}:job` holds the running job's id (SET NX): one job per project.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::Job;
use super::queue::{Claimed, JobQueue, QueueError};
use crate::wire::ProjectId;

pub const STREAM: &str = "progress:jobs";
pub const GROUP: &str = "workers";

fn lock_key(project: &ProjectId) -> String {
    format!("progress:{{{project}}}:job")
}

pub struct RedisQueue {
    client: redis::Client,
    commands: ConnectionManager,
    /// XREADGROUP BLOCK holds its connection; it gets one of its own so that it never
    /// delays other commands.
    blocking: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    claim_idle: Duration,
    group_ready: AtomicBool,
    release: redis::Script,
    /// Where the next XAUTOCLAIM scan resumes: each call looks at a few pending entries,
    /// so the cursor must advance for every dead worker's job to be found.
    claim_cursor: std::sync::Mutex<String>,
}

impl RedisQueue {
    pub fn new(url: &str, claim_idle: Duration) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            commands,
            blocking: tokio::sync::Mutex::new(None),
            claim_idle,
            group_ready: AtomicBool::new(false),
            release: redis::Script::new(include_str!("release_lock.lua")),
            claim_cursor: std::sync::Mutex::new("0-0".into()),
        })
    }

    /// The lock outlives several missed keep-alives, and a reclaim re-takes it.
    fn lock_ttl(&self) -> u64 {
        (self.claim_idle.as_secs() * 2).max(60)
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
        self.claim_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets that the group exists (after a NOGROUP error: Redis lost it).
    fn check_group(&self, err: &redis::RedisError) {
        if err.code() == Some("NOGROUP") {
            self.group_ready.store(false, Ordering::Relaxed);
        }
    }

    /// Turns a stream entry into a claimed job; an unreadable entry is settled and
    /// skipped so it cannot block the queue.
    async fn claimed(
        &self,
        entry: StreamId,
        reclaimed: bool,
    ) -> Result<Option<Claimed>, QueueError> {
        let job = entry
            .get::<String>("job")
            .as_deref()
            .and_then(Job::from_json);
        match job {
            Some(job) => Ok(Some(Claimed {
                job,
                entry: entry.id,
                reclaimed,
            })),
            None => {
                tracing::warn!(entry = %entry.id, "dropping an unreadable job entry");
                self.settle(&entry.id).await?;
                Ok(None)
            }
        }
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

    async fn add(&self, job: &Job) -> Result<(), QueueError> {
        let mut conn = self.commands.clone();
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("job")
            .arg(job.to_json())
            .query_async::<String>(&mut conn)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn submit(&self, job: &Job) -> Result<(), QueueError> {
        self.ensure_group().await?;
        let mut conn = self.commands.clone();
        let key = lock_key(&job.project);
        let locked: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&job.id)
            .arg("NX")
            .arg("EX")
            .arg(self.lock_ttl())
            .query_async(&mut conn)
            .await?;
        if locked.is_none() {
            let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            return Err(QueueError::Busy {
                job_id: holder.unwrap_or_default(),
            });
        }
        if let Err(err) = self.add(job).await {
            let _: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
            return Err(err);
        }
        Ok(())
    }

    async fn take(&self, consumer: &str, wait: Duration) -> Result<Option<Claimed>, QueueError> {
        self.ensure_group().await?;
        let mut conn = self.commands.clone();
        // First, a job whose worker stopped showing life.
        let stale: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(STREAM)
            .arg(GROUP)
            .arg(consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg(self.cursor())
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await;
        let stale = stale.inspect_err(|e| self.check_group(e))?;
        *self.claim_cursor.lock().unwrap_or_else(|p| p.into_inner()) = stale.next_stream_id.clone();
        if let Some(entry) = stale.claimed.into_iter().next() {
            let claimed = self.claimed(entry, true).await?;
            if let Some(claimed) = &claimed {
                // The dead worker's lock may have expired: take it again.
                redis::cmd("SET")
                    .arg(lock_key(&claimed.job.project))
                    .arg(&claimed.job.id)
                    .arg("EX")
                    .arg(self.lock_ttl())
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            return Ok(claimed);
        }
        // Then, a new one.
        let mut blocking = self.blocking.lock().await;
        if blocking.is_none() {
            *blocking = Some(self.client.get_multiplexed_async_connection().await?);
        }
        let Some(conn) = blocking.as_mut() else {
            return Ok(None);
        };
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
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                self.check_group(&err);
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
            Some(entry) => self.claimed(entry, false).await,
            None => Ok(None),
        }
    }

    async fn keep_alive(&self, consumer: &str, claimed: &Claimed) -> Result<(), QueueError> {
        let mut conn = self.commands.clone();
        redis::pipe()
            .cmd("XCLAIM")
            .arg(STREAM)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(&claimed.entry)
            .arg("JUSTID")
            .ignore()
            .cmd("SET")
            .arg(lock_key(&claimed.job.project))
            .arg(&claimed.job.id)
            .arg("EX")
            .arg(self.lock_ttl())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn finish(&self, claimed: &Claimed) -> Result<(), QueueError> {
        self.settle(&claimed.entry).await?;
        let mut conn = self.commands.clone();
        self.release
            .key(lock_key(&claimed.job.project))
            .arg(&claimed.job.id)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    async fn hand_back(&self, claimed: &Claimed) -> Result<(), QueueError> {
        self.add(&claimed.job).await?;
        self.settle(&claimed.entry).await
    }
}
