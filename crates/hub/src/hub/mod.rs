//! The local fan-out: one topic per watched project, and in it the inbox of every
//! session watching it (the session's outbound queue, `session::slow_consumer`). The hub
//! only fans out: what a full inbox does is the session's policy.
//!
//! The hub owns the truth of which projects this process watches. When the first
//! session of a project joins, the topic is created and a `Subscribe` goes to the
//! broker's subscriber; when the last leaves, the topic is removed and an `Unsubscribe`
//! follows. The changes travel through one ordered channel, so a quick leave-then-join
//! can never end unsubscribed. The broker's subscriber hands every published payload to
//! [`Hub::deliver`], which validates it once and shares the one [`Frame`] with every
//! session of the project.
//!
//! Only the publish path assigns ids. A payload on a project's channel is a claim: any
//! legacy publisher can PUBLISH one with a made-up `id`, so a channel frame is forwarded
//! as it is but its id moves no duplicate filter. The filter moves only with frames
//! whose ids the hub has from a record (a history read, the in-process publish path);
//! the position a gap fill starts from moves with channel frames only one step at a
//! time (an id that is not the very next one moves nothing; a made-up next one names
//! the position the real event has anyway). Channel frames of another epoch (a Redis
//! restart begins one that goes on with the sequence, `broker/redis/era.rs`; a history
//! begun anew begins one at 1) are followed the same way from that epoch's first event,
//! apart from the position (`ahead`): a gap fill starts after them if the history holds
//! them, so their events do not come twice, and after the position otherwise, so a
//! made-up epoch moves nothing it starts from.
//!
//! The hub also knows whether the broker is reachable ([`Hub::broker_status`], told by
//! the subscriber): every session hears `broker_status` when that changes, and a
//! session that joins while the broker is down hears it at once.
//!
//! Presence: every member of a topic is one watcher of its project (a single-project
//! session, or one subscription of a multiplexed connection). [`Hub::watchers`] counts
//! them; a broker that shares the counts with other hubs asks [`Deliveries::track_presence`]
//! and then hears which projects' counts changed ([`Hub::presence_changes`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};

pub mod stage_runs;
pub mod stall;

use crate::broker::{Deliveries, SubscriptionChange, Watched};
use crate::metrics as m;
use crate::wire::{EventId, EventKind, Frame, ProjectId, ProjectState};
use stage_runs::StageRuns;

/// Where the hub puts a session's frames. Implemented by the session's outbound queue;
/// the hub sees nothing else of a session, so it depends on no session code.
pub trait Inbox: Send + Sync + std::fmt::Debug {
    /// Queues a frame, never waiting.
    fn push(&self, frame: Frame) -> Pushed;
}

/// What became of a frame pushed into an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for delivery.
    Queued,
    /// Queued, after dropping this many superseded frames to make room.
    QueuedAfterCoalescing(usize),
    /// The inbox overflowed with frames that must not be dropped (now or before): its
    /// session is closed as a slow consumer. The frame was not queued.
    Overflowed,
    /// The session has already ended for another reason; the frame was not queued.
    Ended,
}

/// The sessions watching one project in this process.
#[derive(Debug)]
pub struct Topic {
    project: ProjectId,
    watchers: Mutex<Watchers>,
    /// The project's state read once the broker subscribed, before any delivery (see
    /// [`Fresh`]). Its last id is the topic's origin: where a gap fill starts if the
    /// subscription drops before anything was delivered.
    fresh: Mutex<Option<Fresh>>,
    /// True once the broker confirmed the subscription: a session waits for it before
    /// it says `connected`, so no event published after `connected` can be missed.
    subscribed: watch::Sender<bool>,
}

/// The project's state read by the subscriber just after it subscribed a new topic.
/// Every session that had joined the topic before the read began (its id is below
/// `covers_below`) receives every live event after the read, so the read serves as its
/// late-join snapshot: a project's first watchers cost Redis one read between them, not
/// one each, and wait for no second round trip.
#[derive(Debug)]
struct Fresh {
    covers_below: u64,
    state: Option<(ProjectState, EventId)>,
}

/// A topic's sessions (their inboxes), and where its events stand.
#[derive(Debug, Default)]
struct Watchers {
    inboxes: HashMap<u64, Arc<dyn Inbox>>,
    /// The newest id fanned out from a record (see [`Source`]). Frames at or before it
    /// (same epoch) are duplicates, e.g. of a gap fill, and are dropped before fan-out.
    last: Option<EventId>,
    /// The newest event fanned out with every one before it: where a gap fill starts.
    /// Moved by recorded frames, and by channel frames one step at a time.
    position: Option<EventId>,
    /// The same for channel frames of another epoch than `position`'s, from that
    /// epoch's first event (the one after `position`, or 1): where a gap fill starts if
    /// the history holds it (a Redis restart begins a new epoch), so the events the
    /// sessions already had of it do not come again. Kept apart from `position`, so a
    /// made-up epoch moves nothing a gap fill of the real history starts from.
    ahead: Option<EventId>,
    /// What the stall checker knows of the project's events (`stall.rs`).
    activity: stall::Activity,
}

/// Where a frame comes from, which decides what its `id` may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The project's channel: anyone may PUBLISH there, with any `id`.
    Channel,
    /// A record of the project's history (a read of it, or the in-process publish path,
    /// which delivers what it has just recorded): its id is a position.
    Record,
}

impl Watched for Topic {
    fn project(&self) -> &ProjectId {
        &self.project
    }

    fn resume_point(&self) -> Option<EventId> {
        let position = self.watchers.lock().position.clone();
        position.or_else(|| self.origin())
    }

    fn resume_point_ahead(&self) -> Option<EventId> {
        self.watchers.lock().ahead.clone()
    }

    /// Records the topic's origin, and the snapshot of the sessions that joined before
    /// the read.
    fn set_subscribed_state(&self, covers_below: u64, state: Option<(ProjectState, EventId)>) {
        *self.fresh.lock() = Some(Fresh {
            covers_below,
            state,
        });
    }

    fn mark_subscribed(&self) {
        self.subscribed.send_replace(true);
    }
}

impl Topic {
    /// Where the topic's events stood before any was fanned out: the position read just
    /// after subscribing, if any.
    fn origin(&self) -> Option<EventId> {
        let fresh = self.fresh.lock();
        Some(fresh.as_ref()?.state.as_ref()?.1.clone())
    }
}

#[derive(Debug)]
pub struct Hub {
    topics: Mutex<HashMap<ProjectId, Arc<Topic>>>,
    changes: mpsc::UnboundedSender<SubscriptionChange>,
    next_session: AtomicU64,
    /// Most projects this process watches (subscribes) at once.
    max_projects: usize,
    /// Whether the broker is reachable, as the subscriber last said (see
    /// [`Hub::broker_status`]). Changed under the topics' lock, so that a session
    /// joining meanwhile hears either the change or the new value, never neither.
    broker_available: AtomicBool,
    /// Projects whose number of watchers changed since the broker last took them (see
    /// [`Hub::presence_changes`]); kept only once a broker tracks presence, so the
    /// in-process broker (which asks the topics directly) holds no such set.
    presence: Mutex<Option<HashSet<ProjectId>>>,
    /// Woken when `presence` gains a project.
    presence_changed: Notify,
    /// How long each stage took in the runs this hub watched (`stage_runs.rs`).
    pub stage_runs: StageRuns,
}

/// Joining would make the process watch more projects than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this hub watches its maximum of {0} projects")]
pub struct TooManyProjects(pub usize);

impl Hub {
    /// A hub, and the receiving end of its subscription changes for the broker.
    pub fn new(max_projects: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<SubscriptionChange>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            topics: Mutex::new(HashMap::new()),
            changes,
            next_session: AtomicU64::new(1),
            max_projects,
            broker_available: AtomicBool::new(true),
            presence: Mutex::new(None),
            presence_changed: Notify::new(),
            stage_runs: StageRuns::default(),
        });
        (hub, rx)
    }

    /// Adds a session's inbox to the project's topic. Dropping the returned membership
    /// leaves.
    pub fn join(
        self: &Arc<Self>,
        project: &ProjectId,
        inbox: Arc<dyn Inbox>,
    ) -> Result<Membership, TooManyProjects> {
        let mut topics = self.topics.lock();
        // Taken under the lock that also covers the insertion below, so session ids
        // enter their topics in order (see `joined_so_far`).
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let topic = match topics.get(project) {
            Some(topic) => Arc::clone(topic),
            None if topics.len() >= self.max_projects => {
                return Err(TooManyProjects(self.max_projects));
            }
            None => {
                let topic = Arc::new(Topic {
                    project: project.clone(),
                    watchers: Mutex::new(Watchers::default()),
                    fresh: Mutex::new(None),
                    subscribed: watch::Sender::new(false),
                });
                topics.insert(project.clone(), Arc::clone(&topic));
                m::projects_watched(topics.len());
                // The receiver lives as long as the broker's subscriber; if it is gone the
                // process is shutting down and nothing needs subscribing.
                let _ = self
                    .changes
                    .send(SubscriptionChange::Subscribe(topic.clone()));
                topic
            }
        };
        if !self.broker_available.load(Ordering::Relaxed) {
            // Queued before the opening is sent, so it follows `connected`.
            inbox.push(Frame::broker_status(false));
        }
        let mut watchers = topic.watchers.lock();
        if let Some(stalled) = watchers.activity.joining() {
            inbox.push(stalled);
        }
        watchers.inboxes.insert(id, inbox);
        drop(watchers);
        drop(topics);
        self.presence_changed_for(project);
        Ok(Membership {
            hub: Arc::clone(self),
            topic,
            id,
        })
    }

    fn leave(&self, topic: &Arc<Topic>, id: u64) {
        let mut topics = self.topics.lock();
        let now_empty = {
            let mut watchers = topic.watchers.lock();
            watchers.inboxes.remove(&id);
            watchers.inboxes.is_empty()
        };
        // Only remove the topic if the map still holds this very topic.
        if now_empty
            && topics
                .get(&topic.project)
                .is_some_and(|current| Arc::ptr_eq(current, topic))
        {
            topics.remove(&topic.project);
            m::projects_watched(topics.len());
            let _ = self
                .changes
                .send(SubscriptionChange::Unsubscribe(topic.project.clone()));
        }
        drop(topics);
        self.presence_changed_for(&topic.project);
    }

    /// Notes that the project's number of watchers changed, for a broker tracking it.
    fn presence_changed_for(&self, project: &ProjectId) {
        if let Some(changed) = self.presence.lock().as_mut()
            && changed.insert(project.clone())
        {
            self.presence_changed.notify_one();
        }
    }

    fn deliver_from(&self, project: &ProjectId, payload: Bytes, source: Source) {
        let Some(topic) = self.topics.lock().get(project).cloned() else {
            return;
        };
        let frame = match Frame::from_published(payload) {
            Ok(frame) => frame,
            Err(err) => {
                m::invalid_published();
                tracing::warn!(project_id = %project, error = %err, "dropped an invalid published payload");
                return;
            }
        };
        self.deliver_frame(&topic, frame, source);
    }

    fn deliver_frame(&self, topic: &Topic, frame: Frame, source: Source) {
        let mut watchers = topic.watchers.lock();
        if let Some(id) = frame.id() {
            if watchers
                .last
                .as_ref()
                .is_some_and(|last| id.is_at_or_before(last))
            {
                m::duplicate_dropped();
                return;
            }
            match source {
                Source::Record => {
                    watchers.last = Some(id.clone());
                    watchers.position = Some(id.clone());
                    watchers.ahead = None;
                }
                Source::Channel => {
                    // One step from where the topic stands (or the first event of a
                    // history that was empty when it subscribed, or of a new epoch).
                    match watchers.position.clone().or_else(|| topic.origin()) {
                        Some(position) if position.epoch() != id.epoch() => {
                            // A later epoch goes on with the sequence (a Redis restart),
                            // or a history begun anew starts at 1.
                            let next = match &watchers.ahead {
                                Some(ahead) if ahead.epoch() == id.epoch() => id.follows(ahead),
                                Some(ahead) => {
                                    id.seq() == ahead.seq() + 1
                                        || id.seq() == position.seq() + 1
                                        || id.seq() == 1
                                }
                                None => id.seq() == position.seq() + 1 || id.seq() == 1,
                            };
                            if next {
                                watchers.ahead = Some(id.clone());
                            }
                        }
                        position => {
                            if position.map_or(id.seq() == 1, |p| id.follows(&p)) {
                                watchers.position = Some(id.clone());
                            }
                        }
                    }
                }
            }
        }
        if let Some(step) = stall::Step::of(&frame)
            && let Some((stage, took)) = watchers
                .activity
                .step(frame.received_at().unwrap_or_else(Instant::now), step)
        {
            self.stage_runs.record(stage, took);
        }
        if frame.kind() != EventKind::Stalled
            && let Some(resumed) = watchers
                .activity
                .event(frame.received_at().unwrap_or_else(Instant::now))
        {
            for inbox in watchers.inboxes.values() {
                push(inbox.as_ref(), resumed.clone());
            }
        }
        for inbox in watchers.inboxes.values() {
            push(inbox.as_ref(), frame.clone());
        }
    }

    /// The projects this process currently watches (what the subscriber must hold).
    pub fn watched_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.lock().values().cloned().collect()
    }

    pub fn watched_count(&self) -> usize {
        self.topics.lock().len()
    }
}

impl Deliveries for Hub {
    /// Hands a payload published on `project`'s channel to every local session of it.
    /// A payload that is not a JSON object with a string `event` is dropped and counted.
    /// Its `id`, if any, is a claim (see the module's documentation).
    fn deliver(&self, project: &ProjectId, payload: Bytes) {
        self.deliver_from(project, payload, Source::Channel);
    }

    /// Hands a frame the broker has just recorded in `project`'s history (the in-process
    /// publish path) to every local session of it: its id is a position.
    fn deliver_recorded(&self, project: &ProjectId, payload: Bytes) {
        self.deliver_from(project, payload, Source::Record);
    }

    /// Resets every session of the project to `state` (a `snapshot` with `recovered:
    /// false`) when its history went back under them (Redis lost writes they received):
    /// the events after `last` follow; ids they had up to it may come again, but never
    /// without this reset before them.
    fn reset(&self, project: &ProjectId, state: &ProjectState, last: EventId) {
        let Some(topic) = self.topics.lock().get(project).cloned() else {
            return;
        };
        let mut watchers = topic.watchers.lock();
        watchers.last = Some(last.clone());
        watchers.position = Some(last);
        watchers.ahead = None;
        let snapshot = Frame::snapshot(state, false);
        for inbox in watchers.inboxes.values() {
            push(inbox.as_ref(), snapshot.clone());
        }
    }

    /// Fans out frames read from the history to fill a gap (see the subscriber).
    /// Frames the topic already delivered are skipped.
    fn deliver_missed(&self, project: &ProjectId, frames: Vec<Frame>) {
        let Some(topic) = self.topics.lock().get(project).cloned() else {
            return;
        };
        let filled = !frames.is_empty();
        for frame in frames {
            self.deliver_frame(&topic, frame, Source::Record);
        }
        if filled {
            // When a stage entered during the gap began is not known: it is not timed.
            topic.watchers.lock().activity.forget_stage();
        }
    }

    /// The broker became unreachable (`false`) or reachable again (`true`): every session
    /// of the process hears a `broker_status` frame, once per change. The subscriber says
    /// `true` only after it has filled the gaps, so the events missed during the outage
    /// come before it.
    fn broker_status(&self, available: bool) {
        let topics = self.topics.lock();
        if self.broker_available.swap(available, Ordering::Relaxed) == available {
            return;
        }
        let frame = Frame::broker_status(available);
        for topic in topics.values() {
            for inbox in topic.watchers.lock().inboxes.values() {
                inbox.push(frame.clone());
            }
        }
    }

    /// Every session whose id is below the returned number has joined its topic already
    /// (or left it): what a read made from now on can serve as their snapshot.
    fn joined_so_far(&self) -> u64 {
        let _joins = self.topics.lock();
        self.next_session.load(Ordering::Relaxed)
    }

    /// Whether a session of this process watches the project now.
    fn is_watched(&self, project: &ProjectId) -> bool {
        self.topics.lock().contains_key(project)
    }

    fn watchers(&self, project: &ProjectId) -> usize {
        let topic = self.topics.lock().get(project).cloned();
        topic.map_or(0, |topic| topic.watchers.lock().inboxes.len())
    }

    /// Every watched project with its number of watchers here.
    fn presence(&self) -> Vec<(ProjectId, usize)> {
        self.watched_topics()
            .into_iter()
            .map(|topic| {
                let watchers = topic.watchers.lock().inboxes.len();
                (topic.project.clone(), watchers)
            })
            .collect()
    }

    /// From now on, remember which projects' numbers of watchers change (see
    /// [`Deliveries::presence_changes`]). Called by a broker that shares them.
    fn track_presence(&self) {
        self.presence.lock().get_or_insert_with(HashSet::new);
    }

    /// Notified when a project's number of watchers changed since the last
    /// [`Deliveries::presence_changes`] (at once if one did meanwhile: a stored permit).
    fn presence_changed(&self) -> &Notify {
        &self.presence_changed
    }

    /// The projects whose numbers of watchers changed since the last call, each with
    /// its number now (0: nobody here watches it any more).
    fn presence_changes(&self) -> Vec<(ProjectId, usize)> {
        let changed = match self.presence.lock().as_mut() {
            Some(changed) => std::mem::take(changed),
            None => return Vec::new(),
        };
        changed
            .into_iter()
            .map(|project| {
                let watchers = self.watchers(&project);
                (project, watchers)
            })
            .collect()
    }
}

/// Queues a frame in a session's inbox, counting what that cost.
fn push(inbox: &dyn Inbox, frame: Frame) {
    match inbox.push(frame) {
        Pushed::Queued => {}
        Pushed::QueuedAfterCoalescing(dropped) => m::frames_superseded(dropped as u64),
        Pushed::Overflowed => m::frames_dropped_slow_consumer(1),
        Pushed::Ended => {}
    }
}

/// A session's place in a topic; leaving happens on drop, so no path can forget it.
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    topic: Arc<Topic>,
    id: u64,
}

impl Membership {
    /// Waits until the broker confirmed the subscription, at most `limit`. Returns
    /// whether it did; on a broker outage the session goes on and the subscriber
    /// subscribes as soon as it reconnects.
    pub async fn subscribed(&self, limit: Duration) -> bool {
        let mut rx = self.topic.subscribed.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|subscribed| *subscribed)).await,
            Ok(Ok(_))
        )
    }
}

impl Membership {
    /// The project's state as the subscriber read it just after subscribing, when this
    /// session joined before that read (`Some(None)`: the project had no history then).
    /// Valid once [`Membership::subscribed`] said yes.
    pub fn fresh_state(&self) -> Option<Option<(ProjectState, EventId)>> {
        match &*self.topic.fresh.lock() {
            Some(fresh) if self.id < fresh.covers_below => Some(fresh.state.clone()),
            _ => None,
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.topic, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EventKind;

    fn pid(s: &str) -> ProjectId {
        ProjectId::parse(s).unwrap()
    }

    /// An inbox that keeps everything: what the hub fanned out to one session.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Frame>>);

    impl Inbox for Recorder {
        fn push(&self, frame: Frame) -> Pushed {
            self.0.lock().push(frame);
            Pushed::Queued
        }
    }

    fn inbox() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    #[tokio::test]
    async fn first_join_subscribes_and_last_leave_unsubscribes() {
        let (hub, mut changes) = Hub::new(100);
        let a = hub.join(&pid("p"), inbox()).unwrap();
        let b = hub.join(&pid("p"), inbox()).unwrap();
        assert!(
            matches!(changes.try_recv(), Ok(SubscriptionChange::Subscribe(t)) if t.project() == &pid("p"))
        );
        assert!(
            changes.try_recv().is_err(),
            "second join must not subscribe again"
        );
        drop(a);
        assert!(changes.try_recv().is_err());
        drop(b);
        assert!(
            matches!(changes.try_recv(), Ok(SubscriptionChange::Unsubscribe(p)) if p == pid("p"))
        );
        assert_eq!(hub.watched_count(), 0);
    }

    #[tokio::test]
    async fn watchers_are_counted_per_member_and_changes_reported_once_tracked() {
        let (hub, _changes) = Hub::new(100);
        let a = hub.join(&pid("p"), inbox()).unwrap();
        assert!(hub.presence_changes().is_empty(), "not tracked yet");
        hub.track_presence();
        let b = hub.join(&pid("p"), inbox()).unwrap();
        let _c = hub.join(&pid("q"), inbox()).unwrap();
        assert_eq!(hub.watchers(&pid("p")), 2);
        assert_eq!(hub.watchers(&pid("unknown")), 0);
        hub.presence_changed().notified().await;
        let mut changes = hub.presence_changes();
        changes.sort();
        assert_eq!(changes, vec![(pid("p"), 2), (pid("q"), 1)]);
        assert!(hub.presence_changes().is_empty(), "taken once");
        drop(a);
        drop(b);
        assert_eq!(hub.presence_changes(), vec![(pid("p"), 0)]);
        let mut all = hub.presence();
        all.sort();
        assert_eq!(all, vec![(pid("q"), 1)]);
    }

    #[tokio::test]
    async fn deliver_shares_one_frame_with_every_session_of_the_project_only() {
        let (hub, _changes) = Hub::new(100);
        let (a, b, other) = (inbox(), inbox(), inbox());
        let _a = hub.join(&pid("p"), a.clone()).unwrap();
        let _b = hub.join(&pid("p"), b.clone()).unwrap();
        let _other = hub.join(&pid("q"), other.clone()).unwrap();
        hub.deliver(
            &pid("p"),
            Bytes::from_static(br#"{"event":"log","data":{}}"#),
        );
        hub.deliver(&pid("p"), Bytes::from_static(b"garbage"));
        let (fa, fb, fo) = (a.0.lock(), b.0.lock(), other.0.lock());
        assert_eq!(fa.len(), 1);
        assert_eq!(fa[0].kind(), EventKind::Log);
        assert!(
            std::ptr::eq(fa[0].as_str().as_ptr(), fb[0].as_str().as_ptr()),
            "one encoding shared"
        );
        assert!(fo.is_empty());
    }

    #[tokio::test]
    async fn refuses_projects_beyond_the_limit_but_not_more_watchers() {
        let (hub, _changes) = Hub::new(1);
        let _a = hub.join(&pid("p"), inbox()).unwrap();
        let _b = hub.join(&pid("p"), inbox()).unwrap();
        assert_eq!(
            hub.join(&pid("q"), inbox()).unwrap_err(),
            TooManyProjects(1)
        );
    }

    #[tokio::test]
    async fn subscribed_waits_for_the_broker() {
        let (hub, mut changes) = Hub::new(100);
        let m = hub.join(&pid("p"), inbox()).unwrap();
        assert!(!m.subscribed(Duration::from_millis(10)).await);
        if let Ok(SubscriptionChange::Subscribe(topic)) = changes.try_recv() {
            topic.mark_subscribed();
        }
        assert!(m.subscribed(Duration::from_secs(5)).await);
    }

    fn log(id: &str) -> Bytes {
        Bytes::from(format!(r#"{{"event":"log","id":"{id}","data":{{}}}}"#))
    }

    #[test]
    fn a_made_up_id_on_the_channel_moves_no_filter_and_no_position() {
        let (hub, _changes) = Hub::new(100);
        let seen = inbox();
        let _m = hub.join(&pid("p"), seen.clone()).unwrap();
        let topic = hub.watched_topics().remove(0);
        hub.deliver(&pid("p"), log("e:1"));
        hub.deliver(&pid("p"), log("e:1000000"));
        assert_eq!(topic.resume_point(), Some(EventId::new("e", 1)));
        hub.deliver(&pid("p"), log("e:2"));
        hub.deliver(&pid("p"), log("e:2"));
        hub.deliver(&pid("p"), log("e:3"));
        let ids: Vec<_> = seen
            .0
            .lock()
            .iter()
            .map(|f| f.id().unwrap().seq())
            .collect();
        assert_eq!(
            ids,
            vec![1, 1_000_000, 2, 2, 3],
            "channel frames are all forwarded"
        );
        assert_eq!(topic.resume_point(), Some(EventId::new("e", 3)));
        // A recorded frame is a position: what is at or before it is a duplicate.
        hub.deliver_missed(&pid("p"), vec![Frame::from_published(log("e:4")).unwrap()]);
        hub.deliver(&pid("p"), log("e:4"));
        hub.deliver_recorded(&pid("p"), log("e:5"));
        hub.deliver(&pid("p"), log("e:5"));
        assert_eq!(seen.0.lock().len(), 7, "e:4 and e:5 once each");
        assert_eq!(topic.resume_point(), Some(EventId::new("e", 5)));
    }

    #[test]
    fn a_new_epoch_followed_on_the_channel_is_where_its_gap_fill_starts() {
        let (hub, _changes) = Hub::new(100);
        let _m = hub.join(&pid("p"), inbox()).unwrap();
        let topic = hub.watched_topics().remove(0);
        hub.deliver_missed(&pid("p"), vec![Frame::from_published(log("e:3")).unwrap()]);
        hub.deliver(&pid("p"), log("f:2"));
        assert_eq!(topic.resume_point_ahead(), None, "not from its first event");
        // A history begun anew starts at 1.
        hub.deliver(&pid("p"), log("f:1"));
        hub.deliver(&pid("p"), log("f:2"));
        hub.deliver(&pid("p"), log("f:4"));
        assert_eq!(
            topic.resume_point(),
            Some(EventId::new("e", 3)),
            "another epoch on the channel moves no position"
        );
        assert_eq!(topic.resume_point_ahead(), Some(EventId::new("f", 2)));
        hub.deliver(&pid("p"), log("g:1"));
        assert_eq!(topic.resume_point_ahead(), Some(EventId::new("g", 1)));
        hub.deliver_missed(&pid("p"), vec![Frame::from_published(log("g:3")).unwrap()]);
        assert_eq!(topic.resume_point(), Some(EventId::new("g", 3)));
        assert_eq!(
            topic.resume_point_ahead(),
            None,
            "the position is in it now"
        );
        // A Redis restart begins an epoch that goes on with the sequence.
        hub.deliver(&pid("p"), log("h:5"));
        assert_eq!(topic.resume_point_ahead(), None, "not the next one");
        hub.deliver(&pid("p"), log("h:4"));
        hub.deliver(&pid("p"), log("h:5"));
        assert_eq!(topic.resume_point_ahead(), Some(EventId::new("h", 5)));
        // And another after it (a second restart before any gap fill).
        hub.deliver(&pid("p"), log("i:6"));
        assert_eq!(topic.resume_point_ahead(), Some(EventId::new("i", 6)));
        assert_eq!(topic.resume_point(), Some(EventId::new("g", 3)));
    }

    #[test]
    fn broker_status_changes_reach_every_session_once_and_late_joiners() {
        let (hub, _changes) = Hub::new(100);
        let (a, b) = (inbox(), inbox());
        let _a = hub.join(&pid("p"), a.clone()).unwrap();
        let _b = hub.join(&pid("q"), b.clone()).unwrap();
        hub.broker_status(true);
        assert!(a.0.lock().is_empty(), "no change, no frame");
        hub.broker_status(false);
        hub.broker_status(false);
        let late = inbox();
        let _late = hub.join(&pid("p"), late.clone()).unwrap();
        hub.broker_status(true);
        let seen = |r: &Recorder| -> Vec<bool> {
            r.0.lock()
                .iter()
                .map(|f| {
                    assert_eq!(f.kind(), EventKind::BrokerStatus);
                    f.to_value()["data"]["available"].as_bool().unwrap()
                })
                .collect()
        };
        assert_eq!(seen(&a), vec![false, true]);
        assert_eq!(seen(&b), vec![false, true]);
        assert_eq!(seen(&late), vec![false, true], "told at once on joining");
    }

    #[test]
    fn the_subscribers_read_serves_only_the_sessions_that_joined_before_it() {
        let (hub, mut changes) = Hub::new(100);
        let first = hub.join(&pid("p"), inbox()).unwrap();
        let Ok(SubscriptionChange::Subscribe(topic)) = changes.try_recv() else {
            panic!("the first join subscribes");
        };
        let second = hub.join(&pid("p"), inbox()).unwrap();
        assert_eq!(first.fresh_state(), None, "nothing read yet");
        let covers_below = hub.joined_so_far();
        let late = hub.join(&pid("p"), inbox()).unwrap();
        let last = EventId::new("e", 3);
        let state = ProjectState::empty();
        topic.set_subscribed_state(covers_below, Some((state.clone(), last.clone())));
        let read = Some(Some((state, last.clone())));
        assert_eq!(first.fresh_state(), read);
        assert_eq!(second.fresh_state(), read);
        assert_eq!(late.fresh_state(), None, "joined after the read began");
        assert_eq!(topic.resume_point(), Some(last), "the read is the origin");
    }
}
