//! The publisher: the hub's publish path as a library (the Rust `ProgressService`).
//!
//! Every way to publish — this library in a worker, `progress-hub publish`, and
//! `POST /api/v1/projects/{id}/events` — goes through [`Publisher::publish`]: validate,
//! fill defaults (timestamp, catalog solutions, trace id), coalesce `progress_update`,
//! then one atomic broker step (history + state + PUBLISH with the id).

mod coalescer;
pub mod prepare;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::broker::{Broker, BrokerError, Fence, PreparedEvent};
use crate::catalog::ErrorCode;
use crate::locale::Locale;
use crate::wire::event::{
    Complete, CompleteStatus, ErrorReport, Log, LogLevel, ProgressUpdate, StageChange,
};
use crate::wire::{Event, EventId, InvalidEvent, ProjectId, Stage, Tag};
use coalescer::{Coalescer, Decision};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid event: {0}")]
    Invalid(#[from] InvalidEvent),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What became of a published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// In the history and on the channel, with this id.
    Sent(EventId),
    /// A `progress_update` held by coalescing: it (or a newer one that supersedes it)
    /// goes out at the end of the current window.
    Coalesced,
}

impl Published {
    pub fn id(&self) -> Option<&EventId> {
        match self {
            Self::Sent(id) => Some(id),
            Self::Coalesced => None,
        }
    }
}

/// A caller's idempotency key: 1 to 128 of `A-Z a-z 0-9 _ - . :`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1 to 128 characters of A-Z a-z 0-9 _ - . :")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(text: &str) -> Result<Self, InvalidIdempotencyKey> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if text.is_empty() || text.len() > Self::MAX_LEN || !text.chars().all(allowed) {
            return Err(InvalidIdempotencyKey);
        }
        Ok(Self(text.to_string()))
    }

    /// The publish receipt it stands for (in its own namespace, apart from the
    /// receipts the publisher makes up for its own retries).
    fn receipt(&self) -> String {
        format!("key:{}", self.0)
    }
}

/// Cheap to clone; clones share the coalescing state.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
    /// The generation job's claim every event of this publisher is published under
    /// (see [`Publisher::for_claim`]).
    claim: Option<Arc<Fence>>,
}

struct Inner {
    broker: Arc<dyn Broker>,
    locale: Locale,
    coalescer: Coalescer,
    /// How long a publish keeps retrying while the broker is unreachable (zero: no
    /// retry, the caller hears the error at once).
    retry_for: Duration,
    /// Publishes that may wait for the broker at once; beyond it a publish fails at
    /// once with an error instead of piling up (the bounded buffer of an outage).
    waiting: Arc<Semaphore>,
    /// The flushes of held updates, so shutdown can wait for them.
    flushes: tokio_util::task::TaskTracker,
}

/// Most publishes of one process waiting out a broker outage at once.
pub const MAX_WAITING_PUBLISHES: usize = 1024;

impl Publisher {
    /// A publisher whose publishes fail at once while the broker is unreachable.
    pub fn new(broker: Arc<dyn Broker>, locale: Locale, coalesce_window: Duration) -> Self {
        Self::retrying(broker, locale, coalesce_window, Duration::ZERO)
    }

    /// A publisher that rides out broker outages of up to `retry_for`, retrying with
    /// capped backoff; retries are idempotent (each publish has a receipt).
    pub fn retrying(
        broker: Arc<dyn Broker>,
        locale: Locale,
        coalesce_window: Duration,
        retry_for: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                locale,
                coalescer: Coalescer::new(coalesce_window),
                retry_for,
                waiting: Arc::new(Semaphore::new(MAX_WAITING_PUBLISHES)),
                flushes: tokio_util::task::TaskTracker::new(),
            }),
            claim: None,
        }
    }

    /// This publisher, publishing for one claim of a generation job: the broker refuses
    /// its events once the job was taken over by a newer claim or has completed
    /// (`PublishError::Broker(BrokerError::Stale)`), so a worker that stalled and lost
    /// its job cannot write into the new run or complete the job twice.
    pub fn for_claim(&self, claim: Fence) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            claim: Some(Arc::new(claim)),
        }
    }

    pub fn locale(&self) -> Locale {
        self.inner.locale
    }

    /// Validates and publishes one event.
    pub async fn publish(
        &self,
        project: &ProjectId,
        event: Event,
    ) -> Result<Published, PublishError> {
        self.publish_keyed(project, event, None).await
    }

    /// Publishes one event at most once per `key` (an idempotency key chosen by the
    /// caller, e.g. the HTTP `Idempotency-Key`): a retry with the same key in the same
    /// project, within 10 minutes, gets the first publish's id and appends nothing.
    pub async fn publish_keyed(
        &self,
        project: &ProjectId,
        event: Event,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, PublishError> {
        self.publish_tagged(project, event, key, None).await
    }

    /// Publishes one event (at most once per `key`, as [`Publisher::publish_keyed`]);
    /// `tags`, when given, become the tags of the project's run (the state's `tags`,
    /// and each tag's index: `GET /api/v1/projects?tag=`). An event giving tags is
    /// never coalesced.
    pub async fn publish_tagged(
        &self,
        project: &ProjectId,
        event: Event,
        key: Option<&IdempotencyKey>,
        tags: Option<Vec<Tag>>,
    ) -> Result<Published, PublishError> {
        let mut submitted = prepare::prepare(
            event,
            project,
            self.inner.locale,
            key.map(IdempotencyKey::receipt),
            self.claim.as_deref().cloned(),
        )?;
        if let Some(tags) = tags {
            submitted.state.tag(tags);
        }
        let coalescer = &self.inner.coalescer;
        let slot = coalescer.slot(project);
        let mut guard = slot.lock().await;
        match coalescer.decide(&mut guard, submitted) {
            Decision::Send { flushed, event } => {
                if let Some(held) = flushed
                    && let Err(err) = self.send(project, &held).await
                    && !matches!(err, BrokerError::Stale(_))
                {
                    // Its scheduled flush will try it again; the caller hears why now.
                    guard.keep(*held);
                    return Err(err.into());
                }
                Ok(Published::Sent(self.send(project, &event).await?))
            }
            Decision::Held { flush_at, schedule } => {
                crate::metrics::progress_coalesced();
                if schedule {
                    let this = self.clone();
                    let project = project.clone();
                    let slot = Arc::clone(&slot);
                    self.inner.flushes.spawn(async move {
                        let coalescer = &this.inner.coalescer;
                        coalescer
                            .flush_at(slot, flush_at, |held| {
                                let (this, project) = (&this, &project);
                                async move {
                                    match this.send(project, &held).await {
                                        // Refused for good: the run it belongs to is over.
                                        Ok(_) | Err(BrokerError::Stale(_)) => Ok(()),
                                        Err(err) => Err(err),
                                    }
                                }
                            })
                            .await;
                    });
                }
                Ok(Published::Coalesced)
            }
        }
    }

    /// Waits until every held `progress_update` has been flushed (or given up): call
    /// at shutdown, so that an update answered with `coalesced` is not lost.
    pub async fn drain(&self) {
        self.inner.flushes.close();
        self.inner.flushes.wait().await;
    }

    /// Publishes one event with its receipt, under its claim.
    async fn send(
        &self,
        project: &ProjectId,
        prepared: &PreparedEvent,
    ) -> Result<EventId, BrokerError> {
        let deadline = tokio::time::Instant::now() + self.inner.retry_for;
        let mut delays = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(2))
                .with_jitter()
                .without_max_times(),
        );
        let mut slot = None;
        // Every attempt after the first is a retry: the one before may have been done.
        let mut again: Option<PreparedEvent> = None;
        loop {
            let attempt = again.as_ref().unwrap_or(prepared);
            let err = match self.inner.broker.publish(project, attempt).await {
                Ok(id) => return Ok(id),
                // A job's QUEUED update (no claim) refused because its run has begun is
                // no stale worker: the caller says what it means.
                Err(err @ BrokerError::Stale(_)) if prepared.fence.is_none() => return Err(err),
                Err(err @ BrokerError::Stale(_)) => {
                    crate::metrics::stale_job_event_refused();
                    tracing::warn!(project_id = %project, error = %err, "a job event was refused: its run is no longer the job's");
                    return Err(err);
                }
                Err(err) => err,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(err);
            }
            if slot.is_none() {
                slot = Some(Arc::clone(&self.inner.waiting).try_acquire_owned().map_err(|_| {
                    BrokerError::Unavailable(format!("{err}; and {MAX_WAITING_PUBLISHES} publishes already wait for the broker"))
                })?);
                tracing::warn!(project_id = %project, error = %err, "broker unavailable; retrying the publish");
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(2));
            tokio::time::sleep(delay.min(deadline - now)).await;
            again.get_or_insert_with(|| PreparedEvent {
                retry: true,
                ..prepared.clone()
            });
        }
    }

    /// `progress_update`: where the job is (`status`), how far (`progress`), what a
    /// person should read (`current_stage`), and the ETA in seconds.
    pub async fn publish_progress(
        &self,
        project: &ProjectId,
        status: Stage,
        progress: u8,
        current_stage: &str,
        estimated_remaining: Option<u64>,
    ) -> Result<Published, PublishError> {
        self.publish_units_progress(
            project,
            status,
            progress,
            current_stage,
            estimated_remaining,
            None,
        )
        .await
    }

    /// `progress_update` of a stage that runs parallel units: `units` is
    /// `(units_done, units_total)` (ASSETS 37/120), written into the state as well.
    pub async fn publish_units_progress(
        &self,
        project: &ProjectId,
        status: Stage,
        progress: u8,
        current_stage: &str,
        estimated_remaining: Option<u64>,
        units: Option<(u32, u32)>,
    ) -> Result<Published, PublishError> {
        let event = Event::ProgressUpdate(ProgressUpdate {
            status: status.into(),
            progress,
            current_stage: current_stage.to_string(),
            estimated_remaining,
            job_id: None,
            queue_position: None,
            units_done: units.map(|(done, _)| done),
            units_total: units.map(|(_, total)| total),
            timestamp: None,
        });
        self.publish(project, event).await
    }

    pub async fn publish_stage_change(
        &self,
        project: &ProjectId,
        previous_stage: Option<Stage>,
        current_stage: Stage,
        progress: u8,
    ) -> Result<Published, PublishError> {
        let event = Event::StageChange(StageChange {
            previous_stage: previous_stage.map(Into::into),
            current_stage,
            progress,
            timestamp: None,
        });
        self.publish(project, event).await
    }

    pub async fn publish_log(
        &self,
        project: &ProjectId,
        level: LogLevel,
        message: &str,
    ) -> Result<Published, PublishError> {
        let event = Event::Log(Log {
            level,
            message: message.to_string(),
            timestamp: None,
        });
        self.publish(project, event).await
    }

    /// `error`: `is_retryable` and `solutions` come from the catalog; a trace id is
    /// minted. `details` is free-form context for support.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_error(
        &self,
        project: &ProjectId,
        error_code: ErrorCode,
        message: &str,
        stage: Stage,
        retry_count: u32,
        max_retries: u32,
        details: Map<String, Value>,
    ) -> Result<Published, PublishError> {
        let event = Event::Error(ErrorReport {
            error_code,
            message: message.to_string(),
            stage,
            retry_count,
            max_retries,
            is_retryable: None,
            details: Some(details),
            solutions: None,
            trace_id: None,
            timestamp: None,
        });
        self.publish(project, event).await
    }

    /// `complete`; from a publisher [`for_claim`](Publisher::for_claim) of a job, the
    /// state records the job, so it never completes twice.
    pub async fn publish_complete(
        &self,
        project: &ProjectId,
        status: CompleteStatus,
        youtube_url: Option<&str>,
    ) -> Result<Published, PublishError> {
        let event = Event::Complete(Complete {
            status,
            youtube_url: youtube_url.map(str::to_string),
            timestamp: None,
        });
        self.publish(project, event).await
    }
}

#[cfg(test)]
mod tests {
    //! The publisher's bookkeeping against the in-process broker (the same contract as
    //! `publish.lua`, checked against real Redis in `tests/`). Found by review: held
    //! updates must keep their own claim and the caller's idempotency key.
    use super::*;
    use crate::broker::HistoryConfig;
    use crate::hub::Hub;
    use crate::wire::event::LogLevel;
    use crate::wire::{EventId, EventKind};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    const WINDOW: Duration = Duration::from_millis(200);

    fn publisher() -> (Publisher, Arc<dyn Broker>) {
        let (hub, changes) = Hub::new(1000);
        let broker = crate::broker::start(
            None,
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
            HistoryConfig::default(),
            hub,
            changes,
            CancellationToken::new(),
            &TaskTracker::new(),
        )
        .unwrap();
        let publisher = Publisher::new(Arc::clone(&broker), Locale::En, WINDOW);
        (publisher, broker)
    }

    fn claim(publisher: &Publisher, job: &str, token: u64) -> Publisher {
        publisher.for_claim(Fence {
            holder: job.into(),
            token,
        })
    }

    /// The `current_stage` texts of the project's `progress_update`s in its history.
    async fn progress_texts(broker: &Arc<dyn Broker>, project: &ProjectId) -> Vec<String> {
        let last = broker.replay(project, None).await.unwrap().state.unwrap().1;
        let first: EventId = format!("{}:0", last.epoch()).parse().unwrap();
        let replay = broker.replay(project, Some(&first)).await.unwrap();
        replay
            .after
            .iter()
            .filter(|f| f.kind() == EventKind::ProgressUpdate)
            .map(|f| f.to_value()["data"]["current_stage"].to_string())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_update_goes_out_under_its_own_claim() {
        let (base, broker) = publisher();
        let project = ProjectId::parse("claims").unwrap();
        // Job A's held update is flushed by A's `complete`; job B starts at once and
        // its first update is held in the same window: it must go out under B's claim.
        let (a, b) = (claim(&base, "A", 1), claim(&base, "B", 1));
        a.publish_progress(&project, Stage::Rendering, 10, "a-10", None)
            .await
            .unwrap();
        let held = a.publish_progress(&project, Stage::Rendering, 20, "a-20", None);
        assert_eq!(held.await.unwrap(), Published::Coalesced);
        a.publish_complete(&project, CompleteStatus::Completed, None)
            .await
            .unwrap();
        b.publish_progress(&project, Stage::Rendering, 7, "b-7", None)
            .await
            .unwrap();
        // A stale claim's held update is not let through by the new claim's publish.
        let (old, new) = (claim(&base, "C", 1), claim(&base, "C", 2));
        let other = ProjectId::parse("claims-2").unwrap();
        old.publish_progress(&other, Stage::Rendering, 10, "old-10", None)
            .await
            .unwrap();
        new.publish_log(&other, LogLevel::Warning, "took over")
            .await
            .unwrap();
        let stale = old.publish_progress(&other, Stage::Rendering, 90, "old-90", None);
        assert_eq!(stale.await.unwrap(), Published::Coalesced);
        new.publish_log(&other, LogLevel::Info, "next step")
            .await
            .unwrap();
        base.drain().await;
        assert_eq!(
            progress_texts(&broker, &project).await,
            ["\"a-10\"", "\"a-20\"", "\"b-7\""]
        );
        assert_eq!(progress_texts(&broker, &other).await, ["\"old-10\""]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_keyed_update_retried_within_the_window_is_appended_once() {
        let (publisher, broker) = publisher();
        let project = ProjectId::parse("keyed").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        let update = || {
            Event::from_json(
                br#"{"event":"progress_update","data":{"status":"RENDERING","progress":50,"current_stage":"x"}}"#,
            )
            .unwrap()
        };
        let first = publisher.publish_keyed(&project, update(), Some(&key));
        assert!(matches!(first.await.unwrap(), Published::Sent(_)));
        publisher
            .publish_keyed(&project, update(), Some(&key))
            .await
            .unwrap();
        publisher.drain().await;
        assert_eq!(progress_texts(&broker, &project).await, ["\"x\""]);
    }
}
