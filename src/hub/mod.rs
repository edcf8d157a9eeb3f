//! The local fan-out: one topic per watched project, one outbound queue per session.
//!
//! The hub owns the truth of which projects this process watches. When the first
//! session of a project joins, the topic is created and a `Subscribe` goes to the
//! broker's subscriber; when the last leaves, the topic is removed and an `Unsubscribe`
//! follows. The changes travel through one ordered channel, so a quick leave-then-join
//! can never end unsubscribed. The broker's subscriber hands every published payload to
//! [`Hub::deliver`], which validates it once and shares the one [`Frame`] with every
//! session of the project.

mod slow_consumer;

pub use slow_consumer::{Ended, OutboundQueue, Pushed};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::metrics as m;
use crate::wire::{EventId, Frame, ProjectId};

/// A change in the set of channels this process needs, for the broker's subscriber.
#[derive(Debug)]
pub enum SubscriptionChange {
    /// Subscribe the project's channel, then call [`Topic::mark_subscribed`].
    Subscribe(Arc<Topic>),
    Unsubscribe(ProjectId),
}

/// The sessions watching one project in this process.
#[derive(Debug)]
pub struct Topic {
    project: ProjectId,
    sessions: Mutex<Sessions>,
    /// The history position when the broker subscribed, before any delivery: where a
    /// gap fill starts if the subscription drops before anything was delivered.
    origin: Mutex<Option<EventId>>,
    /// True once the broker confirmed the subscription: a session waits for it before
    /// it says `connected`, so no event published after `connected` can be missed.
    subscribed: watch::Sender<bool>,
}

/// A topic's sessions, and the newest event id fanned out to them.
#[derive(Debug, Default)]
struct Sessions {
    queues: HashMap<u64, Arc<OutboundQueue>>,
    /// Frames at or before it (same epoch) are duplicates, e.g. of a gap fill, and are
    /// dropped before fan-out.
    last: Option<EventId>,
}

impl Topic {
    pub fn project(&self) -> &ProjectId {
        &self.project
    }

    /// Where to fill a gap from after the subscription dropped: after the newest event
    /// delivered, or after the position at subscription time.
    pub fn resume_point(&self) -> Option<EventId> {
        lock(&self.sessions)
            .last
            .clone()
            .or_else(|| lock(&self.origin).clone())
    }

    /// Records the history position read just before subscribing.
    pub fn set_origin(&self, position: Option<EventId>) {
        *lock(&self.origin) = position;
    }

    /// Moves the duplicate filter back to `position`, when the history itself went
    /// back (see the subscriber's gap fill).
    pub fn rewind(&self, position: EventId) {
        lock(&self.sessions).last = Some(position);
    }

    pub fn mark_subscribed(&self) {
        self.subscribed.send_replace(true);
    }
}

#[derive(Debug)]
pub struct Hub {
    topics: Mutex<HashMap<ProjectId, Arc<Topic>>>,
    changes: mpsc::UnboundedSender<SubscriptionChange>,
    next_session: AtomicU64,
    queue_capacity: usize,
    /// Most projects this process watches (subscribes) at once.
    max_projects: usize,
}

/// Joining would make the process watch more projects than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this hub watches its maximum of {0} projects")]
pub struct TooManyProjects(pub usize);

impl Hub {
    /// A hub, and the receiving end of its subscription changes for the broker.
    pub fn new(
        queue_capacity: usize,
        max_projects: usize,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<SubscriptionChange>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            topics: Mutex::new(HashMap::new()),
            changes,
            next_session: AtomicU64::new(1),
            queue_capacity,
            max_projects,
        });
        (hub, rx)
    }

    /// Adds a session to the project's topic. Dropping the returned membership leaves.
    pub fn join(self: &Arc<Self>, project: &ProjectId) -> Result<Membership, TooManyProjects> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(OutboundQueue::new(self.queue_capacity));
        let mut topics = lock(&self.topics);
        let topic = match topics.get(project) {
            Some(topic) => Arc::clone(topic),
            None if topics.len() >= self.max_projects => {
                return Err(TooManyProjects(self.max_projects));
            }
            None => {
                let topic = Arc::new(Topic {
                    project: project.clone(),
                    sessions: Mutex::new(Sessions::default()),
                    origin: Mutex::new(None),
                    subscribed: watch::Sender::new(false),
                });
                topics.insert(project.clone(), Arc::clone(&topic));
                m::projects_watched(topics.len());
                // The receiver lives as long as the broker's subscriber; if it is gone the
                // process is shutting down and nothing needs subscribing.
                let _ = self
                    .changes
                    .send(SubscriptionChange::Subscribe(Arc::clone(&topic)));
                topic
            }
        };
        lock(&topic.sessions).queues.insert(id, Arc::clone(&queue));
        drop(topics);
        Ok(Membership {
            hub: Arc::clone(self),
            topic,
            id,
            queue,
        })
    }

    fn leave(&self, topic: &Arc<Topic>, id: u64) {
        let mut topics = lock(&self.topics);
        let now_empty = {
            let mut sessions = lock(&topic.sessions);
            sessions.queues.remove(&id);
            sessions.queues.is_empty()
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
    }

    /// Hands a payload published on `project`'s channel to every local session of it.
    /// A payload that is not a JSON object with a string `event` is dropped and counted.
    pub fn deliver(&self, project: &ProjectId, payload: Bytes) {
        let Some(topic) = lock(&self.topics).get(project).cloned() else {
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
        self.deliver_frame(&topic, frame);
    }

    /// Fans out frames read from the history to fill a gap (see the subscriber).
    /// Frames the topic already delivered are skipped.
    pub fn deliver_missed(&self, project: &ProjectId, frames: Vec<Frame>) {
        let Some(topic) = lock(&self.topics).get(project).cloned() else {
            return;
        };
        for frame in frames {
            self.deliver_frame(&topic, frame);
        }
    }

    fn deliver_frame(&self, topic: &Topic, frame: Frame) {
        let mut sessions = lock(&topic.sessions);
        if let Some(id) = frame.id() {
            if sessions
                .last
                .as_ref()
                .is_some_and(|last| id.is_at_or_before(last))
            {
                m::duplicate_dropped();
                return;
            }
            sessions.last = Some(id.clone());
        }
        for queue in sessions.queues.values() {
            match queue.push(frame.clone()) {
                Pushed::Queued => {}
                Pushed::QueuedAfterCoalescing(dropped) => m::frames_superseded(dropped as u64),
                Pushed::Overflowed => m::frames_dropped_slow_consumer(1),
                Pushed::Ended => {}
            }
        }
    }

    /// The projects this process currently watches (what the subscriber must hold).
    pub fn watched_topics(&self) -> Vec<Arc<Topic>> {
        lock(&self.topics).values().cloned().collect()
    }

    pub fn watched_count(&self) -> usize {
        lock(&self.topics).len()
    }
}

/// A session's place in a topic; leaving happens on drop, so no path can forget it.
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    topic: Arc<Topic>,
    id: u64,
    queue: Arc<OutboundQueue>,
}

impl Membership {
    pub fn queue(&self) -> &Arc<OutboundQueue> {
        &self.queue
    }

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

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.topic, self.id);
    }
}

/// A poisoned lock means a panic elsewhere mid-update of a plain map; the map is still
/// valid, so keep serving the other sessions.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EventKind;

    fn pid(s: &str) -> ProjectId {
        ProjectId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn first_join_subscribes_and_last_leave_unsubscribes() {
        let (hub, mut changes) = Hub::new(16, 100);
        let a = hub.join(&pid("p")).unwrap();
        let b = hub.join(&pid("p")).unwrap();
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
    async fn deliver_shares_one_frame_with_every_session_of_the_project_only() {
        let (hub, _changes) = Hub::new(16, 100);
        let a = hub.join(&pid("p")).unwrap();
        let b = hub.join(&pid("p")).unwrap();
        let other = hub.join(&pid("q")).unwrap();
        hub.deliver(
            &pid("p"),
            Bytes::from_static(br#"{"event":"log","data":{}}"#),
        );
        hub.deliver(&pid("p"), Bytes::from_static(b"garbage"));
        let (mut fa, mut fb, mut fo) = (Vec::new(), Vec::new(), Vec::new());
        a.queue().drain(&mut fa).unwrap();
        b.queue().drain(&mut fb).unwrap();
        other.queue().drain(&mut fo).unwrap();
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
        let (hub, _changes) = Hub::new(16, 1);
        let _a = hub.join(&pid("p")).unwrap();
        let _b = hub.join(&pid("p")).unwrap();
        assert_eq!(hub.join(&pid("q")).unwrap_err(), TooManyProjects(1));
    }

    #[tokio::test]
    async fn subscribed_waits_for_the_broker() {
        let (hub, mut changes) = Hub::new(16, 100);
        let m = hub.join(&pid("p")).unwrap();
        assert!(!m.subscribed(Duration::from_millis(10)).await);
        if let Ok(SubscriptionChange::Subscribe(topic)) = changes.try_recv() {
            topic.mark_subscribed();
        }
        assert!(m.subscribed(Duration::from_secs(5)).await);
    }
}
