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
//! would reach the bound. The bound is the stage's (`stage_runs.rs`: measured from
//! past runs of the stage, else `--stall-after`); the fan-out tells the topic's
//! [`Activity`] of each `stage_change` and `complete`, which times the stages.
//!
//! With the hub's own job queue (a [`WorkerProbe`]), a tick first asks the queue which
//! jobs lost their worker (one query for all topics): such a run is stalled with reason
//! `worker_lost` as soon as its lease ran out, silent for the bound or not; a run told
//! `silent` before is told again, `worker_lost`. Its next frame (the worker that took
//! the job over publishes) ends it like any stall.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Hub, Topic, push};
use crate::broker::Broker;
use crate::wire::stall::{self, Bounds, StallReason};
use crate::wire::{EventKind, Frame, ProjectId, Stage};

/// Tells which projects' jobs lost their worker (its lease ran out and no worker took
/// the job over yet): the hub's own job queue can (the jobs crate's, given as an
/// extension's `Parts::worker_probe`); of other publishers (Celery) the hub knows only
/// the silence.
#[async_trait]
pub trait WorkerProbe: Send + Sync {
    /// The projects whose worker is lost now (empty when the queue cannot be read).
    async fn lost(&self) -> HashSet<ProjectId>;
    /// How long a worker's lease lasts: the probe is asked a few times per lease.
    fn lease(&self) -> Duration;
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
    /// The stage under way as seen live (a `stage_change` fanned out), and since when.
    stage: Option<(Stage, Instant)>,
}

/// What a fanned-out frame says of the run's stage.
pub(super) enum Step {
    /// A `stage_change` into this stage.
    Entered(Stage),
    /// A `complete`; `completed`: its status is `COMPLETED`.
    Ended { completed: bool },
}

impl Step {
    /// Reads it from a `stage_change` or `complete` frame (others say nothing of it).
    pub(super) fn of(frame: &Frame) -> Option<Self> {
        let kind = frame.kind();
        if kind != EventKind::StageChange && kind != EventKind::Complete {
            return None;
        }
        let value = frame.to_value();
        let data = &value["data"];
        if kind == EventKind::Complete {
            return Some(Self::Ended {
                completed: data["status"] == "COMPLETED",
            });
        }
        let current = data["current_stage"].as_str()?;
        Stage::ALL
            .into_iter()
            .find(|s| s.as_str() == current)
            .map(Self::Entered)
    }
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

    /// Follows the run's stage; returns the stage that just ran to its end (the next
    /// began, or the run completed) and how long it took, if this hub saw it begin. A
    /// stage entered again (a worker took the job over in it) goes on.
    pub(super) fn step(&mut self, at: Instant, step: Step) -> Option<(Stage, Duration)> {
        let ran = match step {
            Step::Entered(stage) if self.stage.is_some_and(|(s, _)| s == stage) => return None,
            Step::Entered(stage) => self.stage.replace((stage, at)),
            Step::Ended { completed } => self.stage.take().filter(|_| completed),
        };
        ran.map(|(stage, since)| (stage, at.saturating_duration_since(since)))
    }

    /// Stops timing the stage under way (when it began is not known).
    pub(super) fn forget_stage(&mut self) {
        self.stage = None;
    }

    /// The `stalled: true` a session joining now must hear, if the run is stalled.
    pub(super) fn joining(&self) -> Option<Frame> {
        let (reason, since) = self.stall.as_ref()?;
        Some(Frame::stalled(true, *reason, since))
    }

    /// The generation to check now, if the topic is due for a look: silent for the
    /// bound of its stage (if known, else the shortest), or its worker `lost` (also when
    /// it is stalled silent so far).
    fn due(&self, now: Instant, bounds: &Bounds, lost: bool) -> Option<u64> {
        match &self.stall {
            _ if self.idle => return None,
            Some((StallReason::Silent, _)) if lost => return Some(self.generation),
            Some(_) => return None,
            None if lost => return Some(self.generation),
            None => {}
        }
        let bound = match self.stage {
            Some((stage, _)) => bounds.of(Some(stage.as_str())),
            None => bounds.shortest(),
        };
        let at = self.check_at.or_else(|| self.last.map(|last| last + bound));
        at.is_none_or(|at| at <= now).then_some(self.generation)
    }
}

/// Ticks until `shutdown`, telling the hub's topics that stalled (see the module): the
/// bound of a stage is measured from its past runs (`stage_runs.rs`, never below
/// `floor`), else `configured`.
pub async fn watch(
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    (configured, floor): (Duration, Duration),
    probe: Option<Arc<dyn WorkerProbe>>,
    shutdown: CancellationToken,
) {
    let lease = probe.as_ref().map_or(configured, |p| p.lease());
    let shortest = configured.min(floor).min(lease);
    let every = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let topics = hub.watched_topics();
        if topics.is_empty() {
            continue;
        }
        // Each topic's generation before the probe is asked: a frame fanned out since
        // (the worker that took the job over published) makes its answer void.
        let asked: Vec<u64> = topics
            .iter()
            .map(|t| t.watchers.lock().activity.generation)
            .collect();
        let lost = match &probe {
            Some(probe) => probe.lost().await,
            None => HashSet::new(),
        };
        let bounds = hub.stage_runs.bounds(configured, floor);
        for (topic, asked) in topics.iter().zip(asked) {
            let lost = lost.contains(&topic.project).then_some(asked);
            check(topic, broker.as_ref(), &bounds, lost).await;
        }
    }
}

/// Looks at one topic, if it is due: reads its state and tells its sessions when the
/// run under way went silent for longer than its stage's bound, or its worker was found
/// lost (`lost`: the topic's generation when the probe was asked).
async fn check(topic: &Topic, broker: &dyn Broker, bounds: &Bounds, lost: Option<u64>) {
    let due = {
        let activity = &topic.watchers.lock().activity;
        let lost = lost == Some(activity.generation);
        activity
            .due(Instant::now(), bounds, lost)
            .map(|generation| (generation, lost))
    };
    let Some((generation, lost)) = due else {
        return;
    };
    let state = match broker.replay(&topic.project, None).await {
        Ok(replay) => replay.state.map(|(state, _)| state),
        // The broker is down: the sessions hear `broker_status`; look again next tick.
        Err(_) => return,
    };
    let now = chrono::Utc::now();
    let stall = state
        .as_ref()
        .and_then(|s| stall::stall(s, bounds, lost, now));
    let mut watchers = topic.watchers.lock();
    let activity = &mut watchers.activity;
    if activity.generation != generation {
        return;
    }
    match (
        stall,
        state
            .as_ref()
            .and_then(|s| stall::silent_in(s, bounds.of(s.status.as_deref()), now)),
    ) {
        // Stalled silent already, and still only silent: nothing new to tell.
        (Some((StallReason::Silent, _)), _) if activity.stall.is_some() => {}
        (Some((reason, since)), _) => {
            let frame = Frame::stalled(true, reason, &since);
            activity.stall = Some((reason, since));
            for inbox in watchers.inboxes.values() {
                push(inbox.as_ref(), frame.clone());
            }
        }
        // Stalled silent, its worker no longer lost (taken over): stays stalled.
        (None, _) if activity.stall.is_some() => {}
        // Under way, not yet silent that long (by the publisher's clock): look again then.
        (None, Some(left)) => {
            activity.check_at = Some(Instant::now() + left.max(Duration::from_millis(50)));
        }
        (None, None) => activity.idle = true,
    }
}
