//! The process's single Redis subscriber connection.
//!
//! Every watched project's channel is subscribed on this one connection: SUBSCRIBE when
//! the hub reports a project's first watcher, UNSUBSCRIBE when its last leaves. The
//! connection is ours alone (not redis-rs's connection manager, whose retry budget runs
//! out on a long outage), so the reconnect policy is explicit: on any failure (the
//! stream ends, a PING keep-alive goes unanswered, a command fails) it reconnects with
//! capped, jittered backoff, forever, and resubscribes every channel that still has
//! watchers. Clients stay connected throughout; only their events pause.
//!
//! Pub/Sub forgets what it could not deliver, so after a reconnect the subscriber fills
//! each watched project's gap from its history: everything after the newest event the
//! topic delivered (or after the position read just before it subscribed), in order,
//! before any live message that arrived meanwhile. The topic drops what it already had,
//! so nothing published through the hub's publish path is lost or doubled.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::RedisConn;
use super::redis::read_replay;
use crate::hub::{Hub, SubscriptionChange, Topic};
use crate::metrics as m;
use crate::wire::{EventId, ProjectId};

/// How long a PING, SUBSCRIBE or UNSUBSCRIBE may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff: from 50 ms, doubling, capped at 2 s, with jitter so that many hubs
/// do not reconnect in lockstep.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Most channels named in one SUBSCRIBE when resubscribing after a reconnect.
pub(super) const RESUBSCRIBE_BATCH: usize = 1000;

pub struct Subscriber {
    client: redis::Client,
    /// For the history reads of gap filling (the subscribed connection cannot run them).
    commands: RedisConn,
    hub: Arc<Hub>,
    up: Arc<AtomicBool>,
    /// Channels that have watchers, with the topic to tell once subscribed.
    wanted: HashMap<ProjectId, Arc<Topic>>,
    /// How often the connection proves it is alive with a PING.
    keepalive: Duration,
}

/// Why a connection was given up.
#[derive(Debug, thiserror::Error)]
pub(super) enum Lost {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The cluster's topology changed under the connection.
    #[error("stale cluster topology: {0}")]
    Stale(String),
}

enum Exit {
    Shutdown,
    Lost(Lost),
}

impl Subscriber {
    pub fn new(
        client: redis::Client,
        commands: RedisConn,
        hub: Arc<Hub>,
        up: Arc<AtomicBool>,
        keepalive: Duration,
    ) -> Self {
        Self {
            client,
            commands,
            hub,
            up,
            wanted: HashMap::new(),
            keepalive,
        }
    }

    pub async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = new_backoff();
        let mut ever_connected = false;
        let mut failures = 0u64;
        loop {
            match self.connect().await {
                Ok((sink, stream)) => {
                    if ever_connected {
                        m::redis_reconnected();
                        tracing::info!(
                            channels = self.wanted.len(),
                            "redis subscriber reconnected and resubscribed"
                        );
                    } else {
                        tracing::debug!(channels = self.wanted.len(), "redis subscriber connected");
                    }
                    ever_connected = true;
                    failures = 0;
                    backoff = new_backoff();
                    let exit = self.serve(sink, stream, &mut changes, &shutdown).await;
                    self.up.store(false, Ordering::Relaxed);
                    match exit {
                        Exit::Shutdown => return,
                        Exit::Lost(why) => {
                            tracing::warn!(error = %why, "redis subscriber connection lost; reconnecting");
                        }
                    }
                }
                Err(why) => {
                    failures += 1;
                    // Say it once per outage, then quietly every 50 attempts.
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(error = %why, attempts = failures, "redis subscriber cannot connect; retrying");
                    }
                }
            }
            let delay = backoff.next().unwrap_or(BACKOFF_MAX);
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            // Keep the wanted set current while waiting, so the resubscribe is exact.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut wait => break,
                    change = changes.recv() => match change {
                        Some(change) => self.want(change),
                        None => return,
                    },
                }
            }
        }
    }

    /// Connects and subscribes every wanted channel.
    async fn connect(&mut self) -> Result<(PubSubSink, PubSubStream), Lost> {
        let pubsub = within(self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let topics: Vec<Arc<Topic>> = self.wanted.values().cloned().collect();
        for batch in topics.chunks(RESUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|t| t.project().channel()).collect();
            within(sink.subscribe(channels)).await?;
        }
        for topic in &topics {
            self.fill_gap(topic).await?;
            topic.mark_subscribed();
        }
        self.up.store(true, Ordering::Relaxed);
        Ok((sink, stream))
    }

    /// Delivers what the topic missed while unsubscribed, from the history.
    async fn fill_gap(&self, topic: &Topic) -> Result<(), Lost> {
        fill_gap(&self.commands, &self.hub, topic).await
    }

    /// Records where each new topic's history stands, before it is subscribed.
    async fn record_origins(&self, topics: &[Arc<Topic>]) -> Result<(), Lost> {
        record_origins(&self.commands, topics).await
    }

    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        changes: &mut mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: &CancellationToken,
    ) -> Exit {
        let mut keepalive = tokio::time::interval(self.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        loop {
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Exit::Shutdown,
                msg = stream.next() => match msg {
                    Some(msg) => {
                        self.deliver(&msg);
                        Ok(())
                    }
                    None => Err(Lost::Closed),
                },
                change = changes.recv() => match change {
                    Some(change) => self.apply(change, changes, &mut sink).await,
                    None => return Exit::Shutdown,
                },
                // In subscribed mode Redis answers PING with ["pong", ""], not "PONG".
                _ = keepalive.tick() => within(sink.ping::<redis::Value>()).await.map(drop),
            };
            if let Err(lost) = result {
                return Exit::Lost(lost);
            }
        }
    }

    fn deliver(&self, msg: &redis::Msg) {
        // Only our own channels are ever subscribed, so anything else is ignored.
        if let Some(project) = ProjectId::from_channel(msg.get_channel_name()) {
            self.hub
                .deliver(&project, Bytes::copy_from_slice(msg.get_payload_bytes()));
        }
    }

    /// Applies `first` and every other change already waiting, with one SUBSCRIBE and
    /// one UNSUBSCRIBE for the lot.
    async fn apply(
        &mut self,
        first: SubscriptionChange,
        changes: &mut mpsc::UnboundedReceiver<SubscriptionChange>,
        sink: &mut PubSubSink,
    ) -> Result<(), Lost> {
        // While serving, `wanted` is exactly what the connection has subscribed.
        let mut was_wanted: HashMap<ProjectId, bool> = HashMap::new();
        let waiting = std::iter::from_fn(|| changes.try_recv().ok());
        for change in std::iter::once(first).chain(waiting) {
            let project = project_of(&change);
            if !was_wanted.contains_key(project) {
                was_wanted.insert(project.clone(), self.wanted.contains_key(project));
            }
            self.want(change);
        }
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        let mut newly_subscribed = Vec::new();
        for (project, was) in was_wanted {
            match self.wanted.get(&project) {
                Some(topic) if was => topic.mark_subscribed(),
                Some(topic) => {
                    subscribe.push(project.channel());
                    newly_subscribed.push(Arc::clone(topic));
                }
                None if was => unsubscribe.push(project.channel()),
                None => {}
            }
        }
        if !unsubscribe.is_empty() {
            within(sink.unsubscribe(unsubscribe)).await?;
        }
        if !subscribe.is_empty() {
            self.record_origins(&newly_subscribed).await?;
            within(sink.subscribe(subscribe)).await?;
            for topic in newly_subscribed {
                topic.mark_subscribed();
            }
        }
        Ok(())
    }

    fn want(&mut self, change: SubscriptionChange) {
        match change {
            SubscriptionChange::Subscribe(topic) => {
                self.wanted.insert(topic.project().clone(), topic);
            }
            SubscriptionChange::Unsubscribe(project) => {
                self.wanted.remove(&project);
            }
        }
    }
}

/// Delivers what `topic` missed while unsubscribed, from the history: everything after
/// its resume point, in order (the topic drops what it already had). Shared with the
/// cluster subscriber.
pub(super) async fn fill_gap(commands: &RedisConn, hub: &Hub, topic: &Topic) -> Result<(), Lost> {
    let mut conn = commands.clone();
    let project = topic.project();
    let point = match topic.resume_point() {
        Some(point) => point,
        // Nothing delivered and no history when it subscribed (or it joined during the
        // outage): everything in the history now is newer than what its sessions have.
        None => match within(read_replay(&mut conn, project, None)).await?.state {
            Some((_, last)) => EventId::new(last.epoch(), 0),
            None => return Ok(()),
        },
    };
    let mut replay = within(read_replay(&mut conn, project, Some(&point))).await?;
    if let Some((_, last)) = &replay.state {
        if last.epoch() != point.epoch() {
            // The history was lost and begun anew meanwhile: everything in it is new.
            let start = EventId::new(last.epoch(), 0);
            replay = within(read_replay(&mut conn, project, Some(&start))).await?;
        } else if last.seq() < point.seq() {
            // Same history, but it went back: a failover to a replica that had not
            // received the latest writes. New events will reuse sequence numbers
            // this topic already delivered; without rewinding they would all be
            // dropped as duplicates. Clients resuming from a lost id are told
            // `recovered: false` by the resume logic.
            tracing::warn!(project_id = %project, delivered = %point, history = %last, "the project's history went back (Redis lost writes); delivering from its new end");
            m::history_rewound();
            topic.rewind(last.clone());
        }
    }
    if !replay.after.is_empty() {
        tracing::info!(project_id = %project, events = replay.after.len(), "filled a gap from history after reconnecting");
        hub.deliver_missed(project, replay.after);
    }
    Ok(())
}

/// Records where each new topic's history stands, before it is subscribed.
pub(super) async fn record_origins(
    commands: &RedisConn,
    topics: &[Arc<Topic>],
) -> Result<(), Lost> {
    let mut conn = commands.clone();
    for topic in topics {
        let replay = within(read_replay(&mut conn, topic.project(), None)).await?;
        topic.set_origin(replay.state.map(|(_, last)| last));
    }
    Ok(())
}

pub(super) fn project_of(change: &SubscriptionChange) -> &ProjectId {
    match change {
        SubscriptionChange::Subscribe(topic) => topic.project(),
        SubscriptionChange::Unsubscribe(project) => project,
    }
}

pub(super) fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

pub(super) async fn within<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Lost> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Lost::Timeout(COMMAND_TIMEOUT)),
    }
}
