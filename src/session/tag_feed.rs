//! A tag subscription on a multiplexed connection (`{"event":"subscribe","data":{"tag":
//! "user:7","status":["active"],"since":"..."}}`): `subscribed` with the tag, then one
//! `project_state` (the object `GET /api/v1/projects/{id}` answers) per matching
//! project, newest first (the snapshot: the same projects and order as
//! `GET /api/v1/projects?tag=`), then a `project_state` whenever a project's status,
//! stage, progress or ETA changes, including projects tagged after the subscription.
//!
//! It reads, it does not listen: every [`POLL`] it asks the tag's index for entries
//! newer than the newest it has seen and reads the state of every project it follows
//! that has not ended (one `replay` each). So a change is delivered within a second,
//! progress at most once a second, a log line never; two changes within one poll are
//! seen as one (the newer). A project that stops matching the status filter gets one
//! last `project_state` (so a view can drop it), then nothing until it matches again.
//! Resuming after a reconnect is subscribing again: the snapshot is every project's
//! current state. A subscription follows at most [`MAX_PROJECTS`] projects (its
//! snapshot's newest).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{OutboundQueue, Sessions};
use crate::broker::tag_page::{self, TagQuery};
use crate::broker::{BrokerError, TagEntry};
use crate::wire::{Frame, ProjectId, ProjectState, StatusFilter, Tag};

/// How often a subscription reads what changed.
pub const POLL: Duration = Duration::from_secs(1);
/// Most projects one tag subscription follows.
pub const MAX_PROJECTS: usize = 5000;
/// Most subscriptions to one tag a hub serves at once (over all its connections).
pub const MAX_WATCHERS_PER_TAG: usize = 1000;

/// What a tag subscription asked for, validated.
pub struct TagSubscription {
    pub tag: Tag,
    pub status: StatusFilter,
    pub since_ms: u64,
}

/// How many subscriptions each tag has on this hub (the per-tag fan-out limit).
#[derive(Debug, Default)]
pub struct TagWatchers(Mutex<HashMap<Tag, usize>>);

/// One subscription's place in [`TagWatchers`]; given back when dropped.
pub struct Watching {
    watchers: Arc<TagWatchers>,
    tag: Tag,
}

impl TagWatchers {
    /// A place for one more subscription to `tag`, unless it has as many as it may.
    pub fn watch(self: &Arc<Self>, tag: &Tag) -> Option<Watching> {
        let mut counts = self.0.lock();
        let count = counts.entry(tag.clone()).or_default();
        if *count >= MAX_WATCHERS_PER_TAG {
            return None;
        }
        *count += 1;
        Some(Watching {
            watchers: Arc::clone(self),
            tag: tag.clone(),
        })
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut counts = self.watchers.0.lock();
        if let Some(count) = counts.get_mut(&self.tag) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tag);
            }
        }
    }
}

/// What a project's last `project_state` said (what a change is measured against).
#[derive(PartialEq)]
struct Seen {
    status: Option<String>,
    stage: Option<String>,
    progress: u8,
    eta: Option<u64>,
    job: Option<String>,
}

impl Seen {
    fn of(state: &ProjectState) -> Self {
        Self {
            status: state.status.clone(),
            stage: state.current_stage.clone(),
            progress: state.progress,
            eta: state.estimated_remaining,
            job: state.job_id.clone(),
        }
    }

    fn ended(&self) -> bool {
        StatusFilter::parse(["ended"]).is_ok_and(|f| f.matches(self.status.as_deref()))
    }
}

/// Runs the subscription until the connection (or the subscription) ends: the
/// snapshot, then the changes. Broker errors are waited out (next poll).
pub async fn run(
    sessions: Sessions,
    queue: Arc<OutboundQueue>,
    ask: TagSubscription,
    _watching: Watching,
) {
    let mut feed = Feed {
        ask,
        followed: HashMap::new(),
        newest: None,
    };
    let snapshot = match feed.snapshot(&sessions).await {
        Ok(frames) => frames,
        Err(err) => {
            tracing::warn!(tag = %feed.ask.tag, error = %err, "reading a tag's snapshot failed");
            Vec::new()
        }
    };
    let subscribed = Frame::tag_subscribed(&feed.ask.tag, snapshot.len());
    for frame in std::iter::once(subscribed).chain(snapshot) {
        if queue.push_when_room(frame).await.is_err() {
            return;
        }
    }
    loop {
        tokio::time::sleep(POLL).await;
        let frames = match feed.changes(&sessions).await {
            Ok(frames) => frames,
            Err(err) => {
                tracing::debug!(tag = %feed.ask.tag, error = %err, "reading a tag's changes failed");
                continue;
            }
        };
        for frame in frames {
            if queue.push_when_room(frame).await.is_err() {
                return;
            }
        }
    }
}

#[derive(Default)]
struct Followed {
    /// What its last frame said, while it matches the filter.
    sent: Option<Seen>,
    /// Its run has ended: not read again until a new index entry says a run began.
    ended: bool,
}

struct Feed {
    ask: TagSubscription,
    /// Every project followed.
    followed: HashMap<ProjectId, Followed>,
    /// The newest index entry seen: later ones are new projects (or new runs).
    newest: Option<TagEntry>,
}

impl Feed {
    /// The matching projects' states, newest first.
    async fn snapshot(&mut self, sessions: &Sessions) -> Result<Vec<Frame>, BrokerError> {
        let every = StatusFilter::default();
        let mut frames = Vec::new();
        let mut after = None;
        loop {
            let page = tag_page::read(
                sessions.broker.as_ref(),
                TagQuery {
                    tag: &self.ask.tag,
                    status: &every,
                    since_ms: self.ask.since_ms,
                    after,
                    limit: 100,
                },
            )
            .await?;
            for (entry, state) in page.projects {
                if self.followed.len() >= MAX_PROJECTS {
                    return Ok(frames);
                }
                if self.newest.as_ref().is_none_or(|n| n.comes_after(&entry)) {
                    self.newest = Some(entry.clone());
                }
                frames.extend(self.saw(entry.project, &state));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(frames),
            }
        }
    }

    /// What changed since the last look: new index entries, and every followed project
    /// that has not ended.
    async fn changes(&mut self, sessions: &Sessions) -> Result<Vec<Frame>, BrokerError> {
        let broker = sessions.broker.as_ref();
        let since = self
            .newest
            .as_ref()
            .map_or(self.ask.since_ms, |n| n.at_ms.max(self.ask.since_ms));
        let fresh = broker.tagged(&self.ask.tag, since, None, 1000).await?;
        let mut look: Vec<ProjectId> = Vec::new();
        for entry in fresh {
            if self.newest.as_ref().is_none_or(|n| n.comes_after(&entry)) {
                self.newest = Some(entry.clone());
            }
            let known = self.followed.contains_key(&entry.project);
            if known || self.followed.len() < MAX_PROJECTS {
                look.push(entry.project);
            }
        }
        for (project, followed) in &self.followed {
            if !followed.ended && !look.contains(project) {
                look.push(project.clone());
            }
        }
        let mut frames = Vec::new();
        for project in look {
            match broker.replay(&project, None).await?.state {
                Some((state, _)) if state.tags.iter().any(|t| t == self.ask.tag.as_str()) => {
                    frames.extend(self.saw(project, &state));
                }
                // Gone, or no longer tagged: no longer followed.
                _ => {
                    self.followed.remove(&project);
                }
            }
        }
        Ok(frames)
    }

    /// Notes the project's state; the frame to send, if it is news that matches the
    /// filter (or the last one before it stops matching).
    fn saw(&mut self, project: ProjectId, state: &ProjectState) -> Option<Frame> {
        let now = Seen::of(state);
        let matches = self.ask.status.matches(state.status.as_deref());
        let followed = self.followed.entry(project.clone()).or_default();
        followed.ended = now.ended();
        let send = match &followed.sent {
            None => matches,
            Some(sent) => *sent != now,
        };
        followed.sent = matches.then_some(now);
        send.then(|| Frame::project_state(&project, &self.ask.tag, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_has_at_most_so_many_watchers() {
        let watchers = Arc::new(TagWatchers::default());
        let tag = Tag::parse("busy").unwrap();
        let held: Vec<Watching> = (0..MAX_WATCHERS_PER_TAG)
            .map(|_| watchers.watch(&tag).unwrap())
            .collect();
        assert!(watchers.watch(&tag).is_none(), "over the limit");
        assert!(
            watchers.watch(&Tag::parse("calm").unwrap()).is_some(),
            "per tag"
        );
        drop(held);
        assert!(watchers.watch(&tag).is_some(), "given back when dropped");
        assert_eq!(watchers.0.lock().len(), 0, "nothing left behind");
    }
}
