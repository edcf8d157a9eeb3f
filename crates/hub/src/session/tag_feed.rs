//! A tag subscription on a multiplexed connection (`{"event":"subscribe","data":{"tag":
//! "user:7","status":["active"],"since":"..."}}`): `subscribed` with the tag, then one
//! `project_state` (the object `GET /api/v1/projects/{id}` answers) per matching
//! project, newest first (the snapshot: the same projects and order as
//! `GET /api/v1/projects?tag=`), then a `project_state` whenever a project's status,
//! stage, progress or ETA changes, including projects tagged after the subscription.
//!
//! It reads, it does not listen, and a tag is read once per hub however many
//! subscriptions it has: one [`TagPoll`] per tag with subscriptions (made by the first,
//! ended with the last) asks the tag's index every [`POLL`] for entries newer than the
//! newest it has seen and reads the state of every project it follows that has not
//! ended (one `replay` each), then publishes what it read as a [`View`]. Each
//! subscription compares the view with what it last sent (its own status and `since`
//! filters, its own [`MAX_PROJECTS`]). So a change is delivered within a second, progress
//! at most once a second, a log line never; two changes within one poll (or while a
//! subscription's client was slow to read) are seen as one (the newer). A project that
//! stops matching the status filter gets one last `project_state` (so a view can drop
//! it), then nothing until it matches again. The snapshot is each subscription's own
//! read; a subscription joins the poll before it reads it, so that nothing tagged in
//! between is missed. Resuming after a reconnect is subscribing again: the snapshot is
//! every project's current state. A subscription follows at most [`MAX_PROJECTS`]
//! projects (its snapshot's newest).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::{OutboundQueue, Sessions};
use crate::broker::tag_page::{self, TagQuery};
use crate::broker::{Broker, BrokerError, TagEntry};
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

/// How many subscriptions each tag has on this hub (the per-tag fan-out limit), and
/// the tag's poll while it has some.
#[derive(Debug, Default)]
pub struct TagWatchers(
    Mutex<HashMap<Tag, usize>>,
    Mutex<HashMap<Tag, Weak<TagPoll>>>,
);

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

impl TagWatchers {
    /// The tag's poll: the one running, or a new one.
    fn poll(&self, tag: &Tag, broker: &Arc<dyn Broker>) -> Arc<TagPoll> {
        let mut polls = self.1.lock();
        polls.retain(|_, poll| poll.strong_count() > 0);
        if let Some(poll) = polls.get(tag).and_then(Weak::upgrade) {
            return poll;
        }
        let poll = TagPoll::start(tag.clone(), Arc::clone(broker));
        polls.insert(tag.clone(), Arc::downgrade(&poll));
        poll
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
/// snapshot, then the changes the tag's poll reads. Broker errors are waited out (the
/// poll's next read).
pub async fn run(
    sessions: Sessions,
    queue: Arc<OutboundQueue>,
    ask: TagSubscription,
    _watching: Watching,
) {
    let poll = sessions.tag_watchers.poll(&ask.tag, &sessions.broker);
    // Joined before the snapshot is read: what is tagged meanwhile is in the next view.
    let mut views = poll.views.subscribe();
    let mut feed = Feed {
        ask,
        followed: HashMap::new(),
        newest: None,
        tick: 0,
    };
    let snapshot = match feed.snapshot(&sessions).await {
        Ok(frames) => frames,
        Err(err) => {
            tracing::warn!(tag = %feed.ask.tag, error = %err, "reading a tag's snapshot failed");
            Vec::new()
        }
    };
    poll.follow(&feed);
    let subscribed = Frame::tag_subscribed(&feed.ask.tag, snapshot.len());
    for frame in std::iter::once(subscribed).chain(snapshot) {
        if queue.push_when_room(frame).await.is_err() {
            return;
        }
    }
    while views.changed().await.is_ok() {
        let view = Arc::clone(&views.borrow_and_update());
        for frame in feed.apply(&view) {
            if queue.push_when_room(frame).await.is_err() {
                return;
            }
        }
    }
}

/// A tag's poll, shared by its subscriptions on this hub; it stops when the last one
/// drops it.
#[derive(Debug)]
pub struct TagPoll {
    following: Arc<Mutex<Following>>,
    views: watch::Sender<Arc<View>>,
    _task: AbortOnDropHandle<()>,
}

/// What the poll reads.
#[derive(Debug, Default)]
struct Following {
    /// Where its index reads start: `None` until a subscription's snapshot says (its
    /// newest entry, or `Some(None)`: from the start, the tag had none).
    from: Option<Option<TagEntry>>,
    projects: HashMap<ProjectId, Watched>,
}

#[derive(Debug, Clone, Copy)]
struct Watched {
    /// When its run was last given the tag (its index entry).
    at_ms: u64,
    /// Its run has ended: not read again until a new index entry says a run began.
    ended: bool,
}

/// What the poll last read: every project it follows, with its newest state.
#[derive(Debug, Default)]
pub struct View {
    /// Counts the polls that changed something.
    tick: u64,
    projects: HashMap<ProjectId, Viewed>,
}

#[derive(Debug, Clone)]
struct Viewed {
    at_ms: u64,
    state: Arc<ProjectState>,
    /// The tick at which its state last changed.
    changed: u64,
}

impl TagPoll {
    fn start(tag: Tag, broker: Arc<dyn Broker>) -> Arc<Self> {
        let following = Arc::new(Mutex::new(Following::default()));
        let (views, _) = watch::channel(Arc::new(View::default()));
        let task = tokio::spawn(poll(tag, broker, Arc::clone(&following), views.clone()));
        Arc::new(Self {
            following,
            views,
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// Adds what a subscription's snapshot follows (and, for the first, where the
    /// index reads start).
    fn follow(&self, feed: &Feed) {
        let mut following = self.following.lock();
        if following.from.is_none() {
            following.from = Some(feed.newest.clone());
        }
        for (project, followed) in &feed.followed {
            let watched = following
                .projects
                .entry(project.clone())
                .or_insert(Watched {
                    at_ms: followed.at_ms,
                    ended: followed.ended,
                });
            watched.at_ms = watched.at_ms.max(followed.at_ms);
            watched.ended &= followed.ended;
        }
    }
}

/// Reads the tag every [`POLL`] and publishes what changed, until the last
/// subscription drops the poll (which aborts this task).
async fn poll(
    tag: Tag,
    broker: Arc<dyn Broker>,
    following: Arc<Mutex<Following>>,
    views: watch::Sender<Arc<View>>,
) {
    loop {
        tokio::time::sleep(POLL).await;
        let last = Arc::clone(&views.borrow());
        match read(&tag, broker.as_ref(), &following, last).await {
            Ok(Some(view)) => {
                views.send_replace(Arc::new(view));
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(tag = %tag, error = %err, "reading a tag's changes failed");
            }
        }
    }
}

/// One poll: new index entries, then the state of every followed project that has not
/// ended. The next view, if anything changed.
async fn read(
    tag: &Tag,
    broker: &dyn Broker,
    following: &Mutex<Following>,
    last: Arc<View>,
) -> Result<Option<View>, BrokerError> {
    let from = following.lock().from.clone();
    if let Some(from) = from {
        let since = from.as_ref().map_or(0, |n| n.at_ms);
        let fresh = broker.tagged(tag, since, None, 1000).await?;
        let mut following = following.lock();
        // Seen before is what the last read reached (`from`), not the newest of this
        // read: it is read newest first, so every other entry of it is older than that.
        let mut newest = from.clone();
        for entry in fresh {
            if from.as_ref().is_some_and(|n| !n.comes_after(&entry)) {
                continue; // seen before
            }
            let full = following.projects.len() >= 2 * MAX_PROJECTS;
            match following.projects.get_mut(&entry.project) {
                Some(watched) => {
                    watched.at_ms = watched.at_ms.max(entry.at_ms);
                    watched.ended = false;
                }
                None if !full => {
                    following.projects.insert(
                        entry.project.clone(),
                        Watched {
                            at_ms: entry.at_ms,
                            ended: false,
                        },
                    );
                }
                None => {}
            }
            if newest.as_ref().is_none_or(|n| n.comes_after(&entry)) {
                newest = Some(entry);
            }
        }
        following.from = Some(newest);
    }
    let look: Vec<(ProjectId, Watched)> = following
        .lock()
        .projects
        .iter()
        .filter(|(_, watched)| !watched.ended)
        .map(|(project, watched)| (project.clone(), *watched))
        .collect();
    if look.is_empty() {
        return Ok(None);
    }
    let tick = last.tick + 1;
    let mut projects = last.projects.clone();
    let mut changed = false;
    for (project, watched) in look {
        match broker.replay(&project, None).await?.state {
            Some((state, _)) if tag.selects(&state.tags) => {
                let now = Seen::of(&state);
                if let Some(watched) = following.lock().projects.get_mut(&project) {
                    watched.ended = now.ended();
                }
                let same = projects
                    .get(&project)
                    .is_some_and(|v| v.at_ms == watched.at_ms && Seen::of(&v.state) == now);
                if !same {
                    changed = true;
                    projects.insert(
                        project,
                        Viewed {
                            at_ms: watched.at_ms,
                            state: Arc::new(state),
                            changed: tick,
                        },
                    );
                }
            }
            // Gone, or no longer tagged: no longer followed.
            _ => {
                following.lock().projects.remove(&project);
                changed |= projects.remove(&project).is_some();
            }
        }
    }
    Ok(changed.then_some(View { tick, projects }))
}

#[derive(Default)]
struct Followed {
    /// What its last frame said, while it matches the filter.
    sent: Option<Seen>,
    /// Its run had ended when last seen.
    ended: bool,
    /// When its run was given the tag (its index entry).
    at_ms: u64,
}

/// One subscription's side: what it sent of each project.
struct Feed {
    ask: TagSubscription,
    /// Every project followed.
    followed: HashMap<ProjectId, Followed>,
    /// The newest index entry its snapshot saw.
    newest: Option<TagEntry>,
    /// The poll's view it last compared with.
    tick: u64,
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
                frames.extend(self.saw(entry.project, entry.at_ms, &state));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(frames),
            }
        }
    }

    /// What the poll's `view` says changed since this subscription last looked:
    /// projects it follows, and projects tagged since (matching its `since`, within its
    /// [`MAX_PROJECTS`]).
    fn apply(&mut self, view: &View) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (project, viewed) in &view.projects {
            if viewed.changed <= self.tick {
                continue;
            }
            let known = self.followed.contains_key(project);
            let fits = viewed.at_ms >= self.ask.since_ms && self.followed.len() < MAX_PROJECTS;
            if known || fits {
                frames.extend(self.saw(project.clone(), viewed.at_ms, &viewed.state));
            }
        }
        self.tick = view.tick;
        frames
    }

    /// Notes the project's state; the frame to send, if it is news that matches the
    /// filter (or the last one before it stops matching).
    fn saw(&mut self, project: ProjectId, at_ms: u64, state: &ProjectState) -> Option<Frame> {
        let now = Seen::of(state);
        let matches = self.ask.status.matches(state.status.as_deref());
        let followed = self.followed.entry(project.clone()).or_default();
        followed.ended = now.ended();
        followed.at_ms = followed.at_ms.max(at_ms);
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
