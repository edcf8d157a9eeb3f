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
//! topic delivered (or after the position read just after it subscribed), in order,
//! before any live message that arrived meanwhile. The topic drops what it already had,
//! so nothing published through the hub's publish path is lost or doubled.
//!
//! Watchers are told: when the connection is lost (or cannot be made) the hub says
//! `broker_status {available: false}` to every session, and once a connection is back
//! and every gap is filled, `{available: true}` ([`Deliveries::broker_status`]).
//!
//! The loop (connect, serve, reconnect with capped backoff while keeping the wanted set
//! current) and the subscription bookkeeping are written once, in [`Subscriber`], over a
//! [`Connection`]: [`Single`] on one node (`single.rs`, SUBSCRIBE), and [`Cluster`] on a
//! Redis Cluster (`cluster.rs`, sharded Pub/Sub).
//!
//! PING proves the socket, not the subscription: with every keep-alive the subscriber
//! also sends a liveness probe through the command connection on a channel of its own
//! and expects it back on the subscribed connection (`probe.rs`); a probe that does not
//! come back within its bound is one more reason to give the connection up and rebuild
//! it, whatever kind of connection it is.

mod cluster;
mod probe;
mod single;

pub(super) use cluster::Cluster;
pub(super) use single::{Node, Single};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::RedisConn;
use super::era::Era;
use super::layout::read_replay;
use crate::broker::{Deliveries, Replay, SubscriptionChange, Watched};
use crate::metrics as m;
use crate::wire::{EventId, ProjectId, ProjectState};
use probe::{Due, Probe};

/// How long a PING, SUBSCRIBE or UNSUBSCRIBE may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff: from 50 ms, doubling, capped at 2 s, with jitter so that many hubs
/// do not reconnect in lockstep.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE.
pub(super) const RESUBSCRIBE_BATCH: usize = 1000;

/// The process's subscriber, over one node or a cluster (`C`).
pub(super) struct Subscriber<C: Connection> {
    /// Where to connect: a client for one node, seeds for a cluster.
    target: C::Target,
    shared: Shared,
    up: Arc<AtomicBool>,
    /// How often the connection proves it is alive (see [`Connection::keepalive`]).
    keepalive: Duration,
    /// One node: the era (see `era.rs`). The subscriber stamps it each time it
    /// connects (it reconnects soon after a restart, whether anyone publishes or not),
    /// and marks it unsure the moment its connection drops: the command connection may
    /// reach a new server next, and its next publish stamps first.
    era: Option<Era>,
}

/// What a connection's message handler may use.
pub(super) struct Shared {
    /// For the history reads of gap filling (the subscribed connection cannot run them).
    pub(super) commands: RedisConn,
    pub(super) deliveries: Arc<dyn Deliveries>,
    /// Projects that have watchers, with the topic to tell once subscribed. While
    /// serving, exactly what the connection has subscribed.
    pub(super) wanted: HashMap<ProjectId, Arc<dyn Watched>>,
    /// The liveness probe, and the channels it travels on (subscribed with the
    /// projects; chosen by each new connection).
    probe: Probe,
    probe_channels: Vec<String>,
}

impl Shared {
    /// If `channel` is one of the probe's, takes `payload` as a probe answer and says so
    /// (the handler then looks no further).
    pub(super) fn probe_received(&self, channel: &[u8], payload: &[u8]) -> bool {
        let ours = self
            .probe_channels
            .iter()
            .position(|c| c.as_bytes() == channel);
        if let Some(index) = ours {
            self.probe.received(index, payload);
        }
        ours.is_some()
    }
}

/// One subscribed connection, to one node or to a cluster, as [`Subscriber`] drives it.
pub(super) trait Connection: Sized + Send {
    /// Where to connect.
    type Target: Send + Sync;
    /// What the connection receives.
    type Message: Send;
    /// Names the subscriber in log lines.
    const NAME: &'static str;
    /// The command that publishes the liveness probe on its channels.
    const PROBE_PUBLISH: &'static str;

    /// Connects and subscribes every project of `topics` (the caller then fills their
    /// gaps).
    async fn open(target: &Self::Target, topics: &[Arc<dyn Watched>]) -> Result<Self, Lost>;
    /// The next message; `None` when the connection has ended.
    async fn next(&mut self) -> Option<Self::Message>;
    /// Delivers or otherwise handles one message.
    async fn handle(&mut self, shared: &Shared, message: Self::Message) -> Result<(), Lost>;
    async fn subscribe(&mut self, topics: &[Arc<dyn Watched>]) -> Result<(), Lost>;
    async fn unsubscribe(&mut self, projects: &[ProjectId]) -> Result<(), Lost>;
    /// Chooses hub process `instance`'s probe channels for this connection (one on one
    /// node, one per primary on a cluster), subscribes them and returns them.
    async fn subscribe_probes(&mut self, instance: &str) -> Result<Vec<String>, Lost>;
    /// Proves the connection is alive (and, on a cluster, current).
    async fn keepalive(&mut self) -> Result<(), Lost>;
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
    TopologyChanged(String),
    /// One node of a cluster connection dropped.
    #[error("a cluster node's connection dropped")]
    NodeDisconnected,
    /// The connection answers, but its liveness probe was not delivered to it.
    #[error("pub/sub probe not received back within {0:?}")]
    ProbeMissed(Duration),
}

enum Exit {
    Shutdown,
    Lost(Lost),
}

impl<C: Connection> Subscriber<C> {
    pub(super) fn new(
        target: C::Target,
        commands: RedisConn,
        deliveries: Arc<dyn Deliveries>,
        up: Arc<AtomicBool>,
        keepalive: Duration,
        probe_failing: Arc<AtomicBool>,
    ) -> Self {
        let probe = Probe::new(probe_failing);
        Self {
            target,
            shared: Shared {
                commands,
                deliveries,
                wanted: HashMap::new(),
                probe,
                probe_channels: Vec::new(),
            },
            up,
            keepalive,
            era: None,
        }
    }

    /// This subscriber keeps `era` (see the field).
    pub(super) fn stamping(mut self, era: Option<Era>) -> Self {
        self.era = era;
        self
    }

    pub(super) async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = new_backoff();
        let mut ever_connected = false;
        let mut failures = 0u64;
        loop {
            match self.connect().await {
                Ok(conn) => {
                    let channels = self.shared.wanted.len();
                    if ever_connected {
                        m::redis_reconnected();
                        tracing::info!(
                            subscriber = C::NAME,
                            channels,
                            "redis subscriber reconnected and resubscribed"
                        );
                    } else {
                        tracing::debug!(
                            subscriber = C::NAME,
                            channels,
                            "redis subscriber connected"
                        );
                    }
                    ever_connected = true;
                    failures = 0;
                    // After `connect`'s gap fills: the missed events come first.
                    self.shared.deliveries.broker_status(true);
                    backoff = new_backoff();
                    let exit = self.serve(conn, &mut changes, &shutdown).await;
                    self.up.store(false, Ordering::Relaxed);
                    if let Some(era) = &self.era {
                        era.mark_unsure();
                    }
                    match exit {
                        Exit::Shutdown => return,
                        Exit::Lost(why) => {
                            self.shared.deliveries.broker_status(false);
                            tracing::warn!(subscriber = C::NAME, error = %why, "redis subscriber connection lost; reconnecting");
                        }
                    }
                }
                Err(why) => {
                    self.shared.deliveries.broker_status(false);
                    failures += 1;
                    // Say it once per outage, then quietly every 50 attempts.
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(subscriber = C::NAME, error = %why, attempts = failures, "redis subscriber cannot connect; retrying");
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

    /// Connects, subscribes every wanted project and fills each one's gap.
    async fn connect(&mut self) -> Result<C, Lost> {
        let topics: Vec<Arc<dyn Watched>> = self.shared.wanted.values().cloned().collect();
        if self.era.is_some() {
            let mut commands = self.shared.commands.clone();
            within(super::era::stamp(&mut commands)).await?;
        }
        let mut conn = C::open(&self.target, &topics).await?;
        self.shared.probe_channels = conn.subscribe_probes(self.shared.probe.instance()).await?;
        for topic in &topics {
            fill_gap(
                &self.shared.commands,
                self.shared.deliveries.as_ref(),
                topic.as_ref(),
            )
            .await?;
            topic.mark_subscribed();
        }
        self.up.store(true, Ordering::Relaxed);
        Ok(conn)
    }

    async fn serve(
        &mut self,
        mut conn: C,
        changes: &mut mpsc::UnboundedReceiver<SubscriptionChange>,
        shutdown: &CancellationToken,
    ) -> Exit {
        let mut keepalive = tokio::time::interval(self.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        // When the probe under way is to be back (armed once it is published).
        let check = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(check);
        let mut armed = false;
        // Prove the new subscription at once (after a miss, readiness waits for it).
        self.shared.probe.reset(self.shared.probe_channels.len());
        match self.probe().await {
            Ok(sent) => arm(&mut check, &mut armed, sent),
            Err(lost) => return Exit::Lost(lost),
        }
        loop {
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Exit::Shutdown,
                message = conn.next() => match message {
                    Some(message) => conn.handle(&self.shared, message).await,
                    None => Err(Lost::Closed),
                },
                change = changes.recv() => match change {
                    Some(change) => self.apply(change, changes, &mut conn).await,
                    None => return Exit::Shutdown,
                },
                _ = keepalive.tick() => match conn.keepalive().await {
                    Ok(()) => self.probe().await.map(|sent| arm(&mut check, &mut armed, sent)),
                    Err(lost) => Err(lost),
                },
                _ = &mut check, if armed => {
                    armed = false;
                    match self.shared.probe.overdue(Instant::now()) {
                        Some(late) => Err(Lost::ProbeMissed(late)),
                        None => Ok(()),
                    }
                }
            };
            if let Err(lost) = result {
                return Exit::Lost(lost);
            }
        }
    }

    /// The keep-alive's liveness probe: sends the next one (and says so), or gives the
    /// connection up when the last one did not come back in time.
    async fn probe(&self) -> Result<bool, Lost> {
        let n = match self.shared.probe.due(Instant::now()) {
            Due::Wait => return Ok(false),
            Due::Missed(after) => return Err(Lost::ProbeMissed(after)),
            Due::Send(n) => n,
        };
        let mut conn = self.shared.commands.clone();
        for channel in &self.shared.probe_channels {
            let mut publish = redis::cmd(C::PROBE_PUBLISH);
            publish.arg(channel).arg(n.to_string());
            if let Err(why) = within(publish.query_async::<i64>(&mut conn)).await {
                tracing::debug!(subscriber = C::NAME, error = %why, "cannot publish the pub/sub probe");
                self.shared.probe.not_sent(n);
                return Ok(false);
            }
        }
        self.shared.probe.published(n, Instant::now());
        Ok(true)
    }

    /// Applies `first` and every other change already waiting, with as few commands as
    /// the connection allows.
    async fn apply(
        &mut self,
        first: SubscriptionChange,
        changes: &mut mpsc::UnboundedReceiver<SubscriptionChange>,
        conn: &mut C,
    ) -> Result<(), Lost> {
        // Each project's topic before the batch (None: not wanted).
        let mut was_wanted: HashMap<ProjectId, Option<Arc<dyn Watched>>> = HashMap::new();
        let waiting = std::iter::from_fn(|| changes.try_recv().ok());
        for change in std::iter::once(first).chain(waiting) {
            let project = project_of(&change);
            if !was_wanted.contains_key(project) {
                was_wanted.insert(project.clone(), self.shared.wanted.get(project).cloned());
            }
            self.want(change);
        }
        let mut unsubscribe = Vec::new();
        let mut newly_subscribed = Vec::new();
        // Topics that replaced one of the same project within the batch (its last
        // watcher left and a new one joined before the leave was applied): the channel
        // stayed subscribed, but the new topic has no origin yet, and must read one as
        // any new topic does, or a later gap fill starts from nothing.
        let mut renewed = Vec::new();
        for (project, was) in was_wanted {
            match (self.shared.wanted.get(&project), was) {
                (Some(topic), Some(old))
                    if std::ptr::addr_eq(Arc::as_ptr(topic), Arc::as_ptr(&old)) =>
                {
                    topic.mark_subscribed()
                }
                (Some(topic), Some(_)) => {
                    tracing::debug!(project_id = %project, "a topic left and joined again in one batch: its origin is read anew");
                    renewed.push(Arc::clone(topic));
                }
                (Some(topic), None) => newly_subscribed.push(Arc::clone(topic)),
                (None, Some(_)) => unsubscribe.push(project),
                (None, None) => {}
            }
        }
        if !unsubscribe.is_empty() {
            conn.unsubscribe(&unsubscribe).await?;
        }
        if !newly_subscribed.is_empty() {
            conn.subscribe(&newly_subscribed).await?;
        }
        newly_subscribed.extend(renewed);
        if !newly_subscribed.is_empty() {
            read_subscribed_states(
                &self.shared.commands,
                self.shared.deliveries.as_ref(),
                &newly_subscribed,
            )
            .await?;
            for topic in newly_subscribed {
                topic.mark_subscribed();
            }
        }
        Ok(())
    }

    fn want(&mut self, change: SubscriptionChange) {
        match change {
            SubscriptionChange::Subscribe(topic) => {
                self.shared.wanted.insert(topic.project().clone(), topic);
            }
            SubscriptionChange::Unsubscribe(project) => {
                self.shared.wanted.remove(&project);
            }
        }
    }
}

/// Arms the probe check [`probe::BOUND`] from now when a probe was `sent`.
fn arm(check: &mut std::pin::Pin<&mut tokio::time::Sleep>, armed: &mut bool, sent: bool) {
    if sent {
        check
            .as_mut()
            .reset(tokio::time::Instant::now() + probe::BOUND);
        *armed = true;
    }
}

/// Each topic's state and newest event id, in order: a batch of reads at a time (the
/// multiplexed connection sends a batch together), at most [`RESUBSCRIBE_BATCH`], so
/// that a resubscription of 100,000 projects is not one burst under one timeout.
async fn read_states(
    commands: &RedisConn,
    topics: &[Arc<dyn Watched>],
) -> Result<Vec<Option<(ProjectState, EventId)>>, Lost> {
    let mut states = Vec::with_capacity(topics.len());
    for batch in topics.chunks(RESUBSCRIBE_BATCH) {
        let reads = batch.iter().map(|topic| {
            let mut conn = commands.clone();
            async move { within(read_replay(&mut conn, topic.project(), None)).await }
        });
        let replays = futures_util::future::try_join_all(reads).await?;
        states.extend(replays.into_iter().map(|replay| replay.state));
    }
    Ok(states)
}

/// Delivers what `topic` missed while unsubscribed, from the history: everything after
/// its resume point, in order (the topic drops what it already had), if the history
/// holds that point; else its sessions are reset. Shared with the cluster subscriber.
///
/// The point is checked against the history (`replay.lua`): first the newest event the
/// topic followed on the channel into a later epoch, if any, then its position (or its
/// origin). A point the history holds is followed by every event after it, across
/// epochs: the last events before a Redis shutdown, which the subscriber may not have
/// received, come before the first ones of the restarted server's new epoch. When it
/// holds none of them but was begun anew since (a new epoch from 1: lost, expired, a
/// node restarted empty), all of it follows. Otherwise Redis lost writes the topic
/// delivered (a restart from an older save, a failover to a replica that had not
/// received them): ids up to them may come again with other events, so the sessions are
/// reset with a snapshot (`recovered: false`) of the history as it stands, and go on
/// after it.
pub(super) async fn fill_gap(
    commands: &RedisConn,
    deliveries: &dyn Deliveries,
    topic: &dyn Watched,
) -> Result<(), Lost> {
    let mut conn = commands.clone();
    let project = topic.project();
    let mut points: Vec<EventId> = topic
        .resume_point_ahead()
        .into_iter()
        .chain(topic.resume_point())
        .collect();
    if points.is_empty() {
        // Nothing delivered and no history when it subscribed (or it joined during the
        // outage): everything in the history now is newer than what its sessions have.
        match within(read_replay(&mut conn, project, None)).await?.state {
            Some((_, last)) => points.push(EventId::new(last.epoch(), 0)),
            None => return Ok(()),
        }
    }
    let mut replay = Replay::default();
    let mut next = 0;
    while let Some(point) = points.get(next).cloned() {
        next += 1;
        replay = within(read_replay(&mut conn, project, Some(&point))).await?;
        let Some((_, last)) = &replay.state else {
            // No history any more: nothing to fill.
            return Ok(());
        };
        if point == *last {
            return Ok(());
        }
        if !replay.after.is_empty() {
            tracing::info!(project_id = %project, events = replay.after.len(), "filled a gap from history after reconnecting");
            deliveries.deliver_missed(project, replay.after);
            return Ok(());
        }
        // A history begun anew (lost, expired, a node restarted empty) since: all of it
        // is new to the sessions, from its first event.
        if next == points.len() && points.iter().all(|p| p.epoch() != last.epoch()) {
            points.push(EventId::new(last.epoch(), 0));
        }
    }
    if let Some((state, last)) = &replay.state {
        tracing::warn!(project_id = %project, delivered = ?points.last(), history = %last, "the history does not hold what the topic delivered (Redis lost writes); its watchers are reset");
        m::history_rewound();
        deliveries.reset(project, state, last.clone());
    }
    Ok(())
}

/// Reads where each newly subscribed topic's history stands: each topic's origin, and
/// the snapshot of the sessions that joined it before the reads began.
async fn read_subscribed_states(
    commands: &RedisConn,
    deliveries: &dyn Deliveries,
    topics: &[Arc<dyn Watched>],
) -> Result<(), Lost> {
    let covers_below = deliveries.joined_so_far();
    for (topic, state) in topics.iter().zip(read_states(commands, topics).await?) {
        topic.set_subscribed_state(covers_below, state);
    }
    Ok(())
}

fn project_of(change: &SubscriptionChange) -> &ProjectId {
    match change {
        SubscriptionChange::Subscribe(topic) => topic.project(),
        SubscriptionChange::Unsubscribe(project) => project,
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
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
