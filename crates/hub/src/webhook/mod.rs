//! Webhooks: the hub tells the backend's endpoints that a job ended (`job.completed`,
//! `job.failed`, `job.cancelled`: `job.` and the `complete`'s status), that a run
//! stalled (`job.stalled`), or that a project watched before has nobody watching it
//! (`project.vacated`), signed the Standard Webhooks way (`attempt.rs`).
//!
//! The events come from the broker's outbox (`broker/outbox.rs`), written in the same
//! atomic step as the `complete`: durable and shared by every hub with Redis, in process
//! (not durable) without. Each hub takes at most `concurrency` events at a time and
//! delivers each in a task of its own, to every endpoint, retrying with capped
//! exponential backoff and jitter (and the receiver's `Retry-After`) until delivered,
//! answered 410 (the endpoint is disabled), or older than `retry_for`; meanwhile it
//! renews its lease, and a hub that dies leaves the event to another. A 410 disables
//! the endpoint for every hub sharing the outbox (`Outbox::set_gone`), checked before
//! each attempt. Publishing and fan-out never wait for any of it. At least once to the
//! receiver, with the same `webhook-id` on every retry (`msg_<outbox id>`).
//!
//! With `skip_watched`, a `job.completed` whose `complete` a watcher received (the
//! broker's `complete_seen`, recorded by the sessions) is not sent: the page showed it.

mod attempt;
pub mod body;
pub mod config;
pub mod deliveries;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::broker::outbox::{Outbox, OutboxEntry, now_ms};
use crate::hub::stall::WorkerProbe;
use crate::metrics;
use crate::wire::EventId;
use crate::wire::stall::Bounds;
pub use attempt::{Outcome, retry_after};
pub use config::{Endpoint, EventType, Secret, WebhookConfig, WebhookConfigError};
pub use deliveries::{Deliveries, Delivery, DeliveryPage};

/// After a failed read of the outbox (Redis down), the next try waits this long.
const OUTBOX_RETRY: Duration = Duration::from_secs(1);

/// The hub's webhooks at work.
struct Dispatch {
    config: WebhookConfig,
    outbox: Arc<dyn Outbox>,
    /// Asked how many watch a project, and whether one saw its `complete`.
    broker: Arc<dyn Broker>,
    client: reqwest::Client,
    log: Arc<Deliveries>,
    shutdown: CancellationToken,
}

/// Starts delivering the webhooks in `outbox` until `shutdown`; returns the log of
/// recent attempts.
pub fn spawn(
    config: WebhookConfig,
    outbox: Arc<dyn Outbox>,
    broker: Arc<dyn Broker>,
    bounds: StallBounds,
    probe: Option<Arc<dyn WorkerProbe>>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Arc<Deliveries> {
    let log = Arc::new(Deliveries::default());
    // No redirects: a 3xx is an answer like any other non-2xx (retried), so a receiver
    // cannot point the hub's signed posts somewhere else.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(config.concurrency)
        .build()
        .unwrap_or_default();
    let dispatch = Arc::new(Dispatch {
        config,
        outbox,
        broker,
        client,
        log: Arc::clone(&log),
        shutdown,
    });
    if dispatch.config.sends(EventType::JobStalled.as_str()) {
        tracker.spawn(scan(
            Arc::clone(&dispatch.outbox),
            Scan::Stalled { bounds, probe },
            dispatch.shutdown.clone(),
        ));
    }
    if dispatch.config.sends(EventType::ProjectVacated.as_str()) {
        tracker.spawn(scan(
            Arc::clone(&dispatch.outbox),
            Scan::Vacated(dispatch.config.vacated_after),
            dispatch.shutdown.clone(),
        ));
    }
    let tasks = tracker.clone();
    tracker.spawn(dispatch.run(tasks));
    log
}

/// What a scan looks for.
enum Scan {
    /// Runs under way silent for longer than their stage's bound, or whose worker the
    /// `probe` found lost (`Outbox::scan_stalled`).
    Stalled {
        bounds: StallBounds,
        probe: Option<Arc<dyn WorkerProbe>>,
    },
    /// Projects without a watcher for the grace (`Outbox::scan_vacated`).
    Vacated(Duration),
}

/// The stall bounds as they stand (per stage: `hub::stage_runs`).
pub type StallBounds = Arc<dyn Fn() -> Bounds + Send + Sync>;

/// Looks a few times per bound (for stalls: per shortest bound and per lease of the
/// `probe`'s jobs; at most every 5 s), until `shutdown`: each find goes into the outbox
/// once over every hub.
async fn scan(outbox: Arc<dyn Outbox>, what: Scan, shutdown: CancellationToken) {
    let bound = match &what {
        Scan::Stalled { bounds, probe } => {
            let shortest = bounds().shortest();
            shortest.min(probe.as_ref().map_or(shortest, |p| p.lease()))
        }
        Scan::Vacated(grace) => *grace,
    };
    let every = (bound / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (told, what) = match &what {
            Scan::Stalled { bounds, probe } => {
                let lost = match probe {
                    Some(probe) => probe.lost().await,
                    None => HashSet::new(),
                };
                (outbox.scan_stalled(&bounds(), &lost).await, "stalled runs")
            }
            Scan::Vacated(grace) => (outbox.scan_vacated(*grace).await, "vacated projects"),
        };
        match told {
            Ok(0) => {}
            Ok(told) => tracing::info!(told, "{what} told to the webhook outbox"),
            Err(err) => tracing::debug!(error = %err, "{what}: scan failed; trying again"),
        }
    }
}

impl Dispatch {
    /// Takes events as slots free up, each delivered in a task of its own.
    async fn run(self: Arc<Self>, tasks: TaskTracker) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        loop {
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let free = 1 + slots.available_permits();
            let taken = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                taken = self.outbox.take(free) => taken,
            };
            if let Ok(pending) = self.outbox.pending().await {
                metrics::webhook_pending(pending);
            }
            let entries = match taken {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook outbox unreadable; trying again");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(OUTBOX_RETRY) => continue,
                    }
                }
            };
            let mut first = Some(first);
            for entry in entries {
                let slot = match first.take() {
                    Some(slot) => slot,
                    None => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => slot,
                        // Not reachable (only this loop takes slots); the entry's
                        // lease runs out and it is taken again.
                        Err(_) => break,
                    },
                };
                let me = Arc::clone(&self);
                tasks.spawn(async move {
                    me.deliver(entry).await;
                    drop(slot);
                });
            }
        }
    }

    /// Delivers one event to every endpoint that wants it, keeping its lease meanwhile;
    /// then it leaves the outbox. On shutdown it stays, for another hub or the next start.
    async fn deliver(&self, entry: OutboxEntry) {
        let done = async {
            let Some(mut body) = body::body(&entry) else {
                tracing::warn!(id = entry.id, "outbox entry without a run's end; dropped");
                return;
            };
            if !self.config.sends(&body.kind) || self.seen_live(&entry, &body).await {
                return;
            }
            // Older than the retry time already (e.g. written before any hub read the
            // outbox): given up unsent, as it would have been had it been retried.
            let expires_ms = entry
                .enqueued_ms
                .saturating_add(self.config.retry_for.as_millis() as u64);
            if now_ms() > expires_ms {
                tracing::info!(
                    id = entry.id,
                    "webhook older than --webhook-retry-for; given up unsent"
                );
                metrics::webhook_given_up("expired");
                return;
            }
            if body.data.watchers.is_none() {
                body.data.watchers = self.broker.watchers(&entry.project).await.ok();
            }
            let Ok(bytes) = serde_json::to_vec(&body) else {
                return;
            };
            let id = format!("msg_{}", entry.id);
            let to_each =
                self.config.endpoints.iter().map(|endpoint| {
                    self.deliver_to(endpoint, &id, &body, &bytes, entry.enqueued_ms)
                });
            futures_util::future::join_all(to_each).await;
        };
        let mut lease = tokio::time::interval(self.config.lease / 3);
        lease.tick().await;
        tokio::pin!(done);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                () = &mut done => break,
                _ = lease.tick() => {
                    if let Err(err) = self.outbox.keep(&entry.id).await {
                        tracing::debug!(error = %err, "webhook lease not renewed");
                    }
                }
            }
        }
        if let Err(err) = self.outbox.done(&entry.id).await {
            // It is delivered again once its lease runs out: at least once, as promised.
            tracing::warn!(error = %err, id = entry.id, "webhook delivered but not marked done");
        }
    }

    /// Whether this is a `job.completed` that is skipped because a watcher received its
    /// `complete` (with `skip_watched`). Asked once the sessions had `seen_grace` to
    /// record it; when the broker cannot say, the event is sent (better twice told).
    async fn seen_live(&self, entry: &OutboxEntry, body: &body::WebhookBody) -> bool {
        if !self.config.skip_watched || body.kind != EventType::JobCompleted.as_str() {
            return false;
        }
        let Some(complete) = body.data.state.last_event_id.as_deref() else {
            return false;
        };
        let Ok(complete) = complete.parse::<EventId>() else {
            return false;
        };
        let ready_ms = entry
            .enqueued_ms
            .saturating_add(self.config.seen_grace.as_millis() as u64);
        let wait = ready_ms.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let seen = matches!(
            self.broker.complete_seen(&entry.project, &complete).await,
            Ok(true)
        );
        if seen {
            metrics::webhook_given_up("watched");
            self.log.record(Delivery {
                seq: 0,
                webhook_id: format!("msg_{}", entry.id),
                kind: body.kind.clone(),
                project_id: body.data.project_id.clone(),
                endpoint: String::new(),
                attempt: 0,
                at: now_rfc3339(),
                outcome: "skipped_watched",
                status: None,
                given_up: true,
                duration_ms: 0,
            });
        }
        seen
    }

    /// Attempts until delivered, gone, or too old.
    async fn deliver_to(
        &self,
        endpoint: &Endpoint,
        id: &str,
        body: &body::WebhookBody,
        bytes: &[u8],
        enqueued_ms: u64,
    ) {
        let deadline_ms = enqueued_ms.saturating_add(self.config.retry_for.as_millis() as u64);
        let mut attempt = 0u32;
        loop {
            if self.is_gone(endpoint).await {
                metrics::webhook_given_up("gone");
                return;
            }
            attempt += 1;
            let started = Instant::now();
            let outcome = attempt::attempt(
                &self.client,
                endpoint,
                id,
                &self.config.secret,
                bytes,
                self.config.attempt_timeout,
            )
            .await;
            let took = started.elapsed();
            metrics::webhook_attempt(outcome.label(), took);
            let wait = self.backoff(attempt, &outcome);
            let given_up = match (&outcome, wait) {
                (Outcome::Failed { .. }, Some(wait)) => {
                    now_ms().saturating_add(wait.as_millis() as u64) > deadline_ms
                }
                _ => false,
            };
            self.log.record(Delivery {
                seq: 0,
                webhook_id: id.to_string(),
                kind: body.kind.clone(),
                project_id: body.data.project_id.clone(),
                endpoint: endpoint.to_string(),
                attempt,
                at: now_rfc3339(),
                outcome: outcome.label(),
                status: outcome.status(),
                given_up,
                duration_ms: took.as_millis() as u64,
            });
            match outcome {
                Outcome::Delivered(_) => return,
                Outcome::Gone => {
                    tracing::warn!(endpoint = %endpoint, "webhook endpoint answered 410; disabled for every hub");
                    if let Err(err) = self.outbox.set_gone(&endpoint.to_string()).await {
                        tracing::warn!(error = %err, "the 410 not recorded for the other hubs");
                    }
                    metrics::webhook_given_up("gone");
                    return;
                }
                Outcome::Failed { .. } if given_up => {
                    tracing::warn!(endpoint = %endpoint, id, "webhook given up: retried too long");
                    metrics::webhook_given_up("expired");
                    return;
                }
                Outcome::Failed { .. } => {}
            }
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Whether the endpoint answered 410 on any hub (and was not re-enabled since); when
    /// the outbox cannot say, the attempt is made (better twice told).
    async fn is_gone(&self, endpoint: &Endpoint) -> bool {
        matches!(self.outbox.is_gone(&endpoint.to_string()).await, Ok(true))
    }

    /// The wait before the next attempt: the receiver's `Retry-After` (as asked, within
    /// the retry time: a longer one gives the event up), else a full-jitter exponential
    /// backoff between half and all of `base · 2^(n-1)`, capped at `retry_max`.
    fn backoff(&self, attempt: u32, outcome: &Outcome) -> Option<Duration> {
        let Outcome::Failed { after, .. } = outcome else {
            return None;
        };
        let (base, max) = (self.config.retry_base, self.config.retry_max);
        if let Some(after) = after {
            return Some((*after).min(self.config.retry_for));
        }
        let exp = base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(max);
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        Some(half + Duration::from_millis(jitter))
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
