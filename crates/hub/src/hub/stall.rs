//! Stalled runs, told to live watchers: each hub watches the projects it has sessions
//! for (its topics) and sends a project's sessions `stalled: true` when its running job
//! has published nothing for longer than the bound, and `stalled: false` before the
//! next event that reaches them (see `wire::stall`). A session that joins a stalled
//! project hears it at once.
//!
//! It costs the publish path nothing: a fanned-out frame only moves the topic's
//! [`Activity`] (no clock read beyond the one it has, no Redis). A checker ticks a few
//! times per bound and looks at the topics silent for the bound; for each it reads the
//! project's state once (is a run under way, and since when is it silent: the state is
//! the truth, also for a project whose silence began before this hub watched it), then
//! waits for the next frame (a project not running, or stalled) or until the silence
//! would reach the bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Hub, Topic, push};
use crate::broker::Broker;
use crate::wire::stall::{self, StallReason};
use crate::wire::{Frame, ProjectId};

/// Tells whether the worker of a project's job is known lost (its lease ran out): the
/// hub's own job queue can; for other publishers silence is all the hub knows.
#[async_trait]
pub trait WorkerProbe: Send + Sync {
    async fn worker_lost(&self, project: &ProjectId) -> bool;
}

/// A topic's events as the stall checker sees them.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Frames fanned out so far: a check whose read began before a frame is void.
    generation: u64,
    /// When the last frame was fanned out (`None`: none since the topic began).
    last: Option<Instant>,
    /// When to look next, if not `last` + the bound.
    check_at: Option<Instant>,
    /// The project has no run under way (as of `generation`): no look until a frame.
    idle: bool,
    /// Stalled: why, and since when (ISO 8601).
    stall: Option<(StallReason, String)>,
}

impl Activity {
    /// A frame is fanned out (anything but the hub's own `stalled`): the run is alive.
    /// Returns the `stalled: false` to send before it, if the run was stalled.
    pub(super) fn event(&mut self, at: Instant) -> Option<Frame> {
        self.generation += 1;
        self.last = Some(at);
        self.check_at = None;
        self.idle = false;
        let (reason, since) = self.stall.take()?;
        Some(Frame::stalled(false, reason, &since))
    }

    /// The `stalled: true` a session joining now must hear, if the run is stalled.
    pub(super) fn joining(&self) -> Option<Frame> {
        let (reason, since) = self.stall.as_ref()?;
        Some(Frame::stalled(true, *reason, since))
    }

    /// The generation to check now, if the topic is due for a look.
    fn due(&self, now: Instant, bound: Duration) -> Option<u64> {
        if self.idle || self.stall.is_some() {
            return None;
        }
        let at = self.check_at.or_else(|| self.last.map(|last| last + bound));
        at.is_none_or(|at| at <= now).then_some(self.generation)
    }
}

/// Ticks until `shutdown`, telling the hub's topics that stalled (see the module).
pub async fn watch(
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    bound: Duration,
    probe: Option<Arc<dyn WorkerProbe>>,
    shutdown: CancellationToken,
) {
    let mut tick =
        tokio::time::interval((bound / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for topic in hub.watched_topics() {
            check(&topic, broker.as_ref(), bound, probe.as_deref()).await;
        }
    }
}

/// Looks at one topic, if it is due: reads its state and tells its sessions when the
/// run under way went silent for longer than `bound`.
async fn check(
    topic: &Topic,
    broker: &dyn Broker,
    bound: Duration,
    probe: Option<&dyn WorkerProbe>,
) {
    let Some(generation) = topic.watchers.lock().activity.due(Instant::now(), bound) else {
        return;
    };
    let state = match broker.replay(&topic.project, None).await {
        Ok(replay) => replay.state.map(|(state, _)| state),
        // The broker is down: the sessions hear `broker_status`; look again next tick.
        Err(_) => return,
    };
    let now = chrono::Utc::now();
    let since = state
        .as_ref()
        .and_then(|s| stall::silent_since(s, bound, now));
    let reason = match (&since, probe) {
        (Some(_), Some(probe)) if probe.worker_lost(&topic.project).await => {
            StallReason::WorkerLost
        }
        _ => StallReason::Silent,
    };
    let mut watchers = topic.watchers.lock();
    let activity = &mut watchers.activity;
    if activity.generation != generation {
        return;
    }
    match (
        since,
        state.as_ref().and_then(|s| stall::silent_in(s, bound, now)),
    ) {
        (Some(since), _) => {
            let frame = Frame::stalled(true, reason, &since);
            activity.stall = Some((reason, since));
            for inbox in watchers.inboxes.values() {
                push(inbox.as_ref(), frame.clone());
            }
        }
        // Under way, not yet silent that long (by the publisher's clock): look again then.
        (None, Some(left)) => {
            activity.check_at = Some(Instant::now() + left.max(Duration::from_millis(50)));
        }
        (None, None) => activity.idle = true,
    }
}
