//! One connection, many projects (`GET /api/v1/progress`): the client subscribes to
//! and unsubscribes from projects with frames of its own, and hears every project's
//! frames on the one socket, each tagged with its top-level `project_id`.
//!
//! Each subscription is what a single-project session is, made of the same parts: it
//! joins the project's topic in the hub (its [`Feed`] is the topic's inbox), reads its
//! opening the same way (`Sessions::replay_for`, `resume::opening_with`: snapshot for a
//! late join, resume from its own `last_event_id` with an honest `recovered`), and its
//! `connected` becomes `subscribed`. Until its opening is queued, its live frames wait
//! in the feed (bounded as a session's queue is); the opening's floor then skips what
//! the opening covered, as `skip_covered` does for a session.
//!
//! What the connection shares: one outbound queue (its capacity and byte cap, and the
//! slow-consumer rule, apply to the connection; coalescing stays within a subscription,
//! see `Frame::stream`), one heartbeat, one token, one writer (`pump`). The client's
//! frames are heard in one task, which also runs the subscriptions' openings; the
//! answers it queues (and the openings) wait for room in the queue rather than overflow
//! it, so a client that asks faster than it reads is slowed down through its own socket.
//! A refused frame is answered with `subscription_error` (codes:
//! [`SubscriptionErrorCode`]); the connection and its other subscriptions go on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio_util::task::AbortOnDropHandle;

use super::tag_feed;
use super::{
    CompletesSeen, ConnectionAccess, Ended, OutboundQueue, Pulse, Sessions, count_close, fill_gap,
    opening_with, pump, reader, send, skip_covered,
};
use crate::hub::{Inbox, Membership, Pushed};
use crate::metrics as m;
use crate::transport::{Incoming, Reader, Transport, Writer};
use crate::wire::{
    ClientFrame, CloseReason, EventId, Frame, ProjectId, StatusFilter, Subscribe,
    SubscriptionErrorCode, Tag, TagAsk, Target, parse_ms,
};

impl Sessions {
    /// A multiplexed connection, to run to its end.
    pub fn run_multiplexed<T: Transport>(
        self,
        access: Option<ConnectionAccess>,
        transport: T,
    ) -> impl Future<Output = Ended> + Send + 'static {
        let (writer, reader) = transport.split();
        Box::pin(self.multiplexed::<T>(access, writer, reader))
    }

    async fn multiplexed<T: Transport>(
        self,
        access: Option<ConnectionAccess>,
        mut writer: T::Writer,
        reader: T::Reader,
    ) -> Ended {
        let queue = Arc::new(OutboundQueue::new(self.queue_capacity, self.queue_bytes));
        let beating = self.heartbeat.register(Arc::clone(&queue), T::HEARS_CLIENT);
        let pulse = Arc::clone(beating.pulse());
        if let Some(access) = &access {
            pulse.expires_at(access.expires_at());
        }
        let connected = [Frame::connected_multiplexed(
            self.heartbeat.interval().as_secs(),
        )];
        m::connection_opened(T::NAME);
        let broker = std::sync::Arc::clone(&self.broker);
        let subscriptions = Subscriptions {
            queue: Arc::clone(&queue),
            pulse: Arc::clone(&pulse),
            access,
            open: HashMap::new(),
            tags: HashMap::new(),
            next_stream: 0,
            sessions: self,
        };
        let listening = subscriptions.listen(reader);
        let listening = AbortOnDropHandle::new(tokio::spawn(listening));
        let sent = tokio::select! {
            sent = send(&mut writer, &connected, &pulse, T::HEARS_CLIENT) => Ok(sent.is_ok()),
            ended = queue.ended() => Err(ended),
        };
        let ended = match sent {
            Ok(true) => {
                let seen = CompletesSeen::tagged(&broker);
                pump(
                    &queue,
                    &pulse,
                    None,
                    None,
                    &seen,
                    &mut writer,
                    T::HEARS_CLIENT,
                )
                .await
            }
            Ok(false) => Ended::ClientGone,
            Err(ended) => ended,
        };
        m::connection_closed(T::NAME);
        if let Ended::Closed(reason) = ended {
            count_close(reason);
            tracing::debug!(
                code = reason.code(),
                reason = reason.text(),
                "closing a multiplexed connection"
            );
            writer.close(reason).await;
        }
        // Ends the subscriptions (and their openings) with the connection.
        drop(listening);
        drop(beating);
        ended
    }
}

/// A connection's subscriptions, owned by the task that hears its client.
struct Subscriptions {
    sessions: Sessions,
    queue: Arc<OutboundQueue>,
    pulse: Arc<Pulse>,
    access: Option<ConnectionAccess>,
    open: HashMap<ProjectId, Subscription>,
    /// Tag subscriptions: each its own task (`tag_feed`), ended when dropped.
    tags: HashMap<Tag, AbortOnDropHandle<()>>,
    /// The last subscription number given (see `Frame::stream`).
    next_stream: u32,
}

/// One subscription: its place in the project's topic, and the feed it has there.
struct Subscription {
    feed: Arc<Feed>,
    _membership: Arc<Membership>,
}

/// A subscription's opening, run beside the client's frames.
type Opening = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Subscriptions {
    /// Hears the client until it is gone or the connection ends, and runs the
    /// subscriptions' openings meanwhile.
    async fn listen<R: Reader>(mut self, mut reader: R) {
        let mut openings: FuturesUnordered<Opening> = FuturesUnordered::new();
        loop {
            let incoming = tokio::select! {
                incoming = reader.recv() => incoming,
                Some(()) = openings.next() => continue,
            };
            self.pulse.saw_life();
            let heard = match incoming {
                Incoming::Text(text) => self.heard(&text, &mut openings).await,
                other => match reader::heard(other, &self.queue, &self.pulse, &mut None) {
                    Some(ended) => Err(ended),
                    None => Ok(()),
                },
            };
            if let Err(ended) = heard {
                self.queue.end(ended);
                return;
            }
        }
    }

    /// Answers one client frame; `Err` once the connection is over.
    async fn heard(
        &mut self,
        text: &str,
        openings: &mut FuturesUnordered<Opening>,
    ) -> Result<(), Ended> {
        match ClientFrame::parse(text) {
            Ok(ClientFrame::Pong) => Ok(()),
            Ok(ClientFrame::Ping) => self.queue.push_when_room(Frame::pong()).await,
            Ok(ClientFrame::Refresh(token)) => {
                let refreshed = self.access.as_mut().is_some_and(|access| {
                    access.refresh(&token, self.open.keys(), self.tags.keys()) && {
                        self.pulse.expires_at(access.expires_at());
                        true
                    }
                });
                if !refreshed {
                    m::client_frame_ignored();
                }
                Ok(())
            }
            Ok(ClientFrame::Subscribe(subscribe)) => match self.subscribe(subscribe) {
                Ok(opening) => {
                    openings.push(opening);
                    Ok(())
                }
                Err(refusal) => self.queue.push_when_room(refusal).await,
            },
            Ok(ClientFrame::Unsubscribe(raw)) => {
                let answer = self.unsubscribe(raw.as_deref());
                self.queue.push_when_room(answer).await
            }
            Ok(ClientFrame::UnsubscribeTag(raw)) => {
                let answer = match raw.as_deref().map(Tag::parse_or_all) {
                    Some(Ok(tag)) => {
                        self.tags.remove(&tag);
                        Frame::tag_unsubscribed(&tag)
                    }
                    _ => Frame::tag_subscription_error(
                        raw.as_deref(),
                        SubscriptionErrorCode::InvalidTag,
                    ),
                };
                self.queue.push_when_room(answer).await
            }
            Ok(ClientFrame::Unknown(_)) | Err(_) => {
                m::client_frame_ignored();
                let refusal = Frame::subscription_error(None, SubscriptionErrorCode::InvalidFrame);
                self.queue.push_when_room(refusal).await
            }
        }
    }

    /// Joins the project's topic and returns the subscription's opening to run, or the
    /// refusal to send.
    fn subscribe(&mut self, subscribe: Subscribe) -> Result<Opening, Frame> {
        let refuse = |raw: Option<&str>, code| Frame::subscription_error(raw, code);
        let raw = match subscribe.target {
            Target::Tag(ask) => return self.subscribe_tag(ask),
            Target::Both => {
                return Err(refuse(None, SubscriptionErrorCode::UnsupportedSubscription));
            }
            Target::Project(raw) => raw,
        };
        let Some(project) = raw.as_deref().and_then(|raw| ProjectId::parse(raw).ok()) else {
            return Err(refuse(
                raw.as_deref(),
                SubscriptionErrorCode::InvalidProjectId,
            ));
        };
        let refuse = |code| Err(refuse(Some(project.as_str()), code));
        let asked: Option<EventId> = match subscribe.last_event_id {
            None => None,
            Some(Ok(raw)) if raw.trim().is_empty() => None,
            Some(Ok(raw)) => match raw.trim().parse() {
                Ok(id) => Some(id),
                Err(_) => return refuse(SubscriptionErrorCode::InvalidEventId),
            },
            Some(Err(())) => return refuse(SubscriptionErrorCode::InvalidEventId),
        };
        if self
            .access
            .as_ref()
            .is_some_and(|access| !access.allows(&project))
        {
            return refuse(SubscriptionErrorCode::Forbidden);
        }
        if self.open.contains_key(&project) {
            return refuse(SubscriptionErrorCode::AlreadySubscribed);
        }
        if self.held() >= self.sessions.max_subscriptions {
            return refuse(SubscriptionErrorCode::TooManySubscriptions);
        }
        self.next_stream = self.next_stream.wrapping_add(1).max(1);
        let feed = Arc::new(Feed {
            project: project.clone(),
            stream: self.next_stream,
            queue: Arc::clone(&self.queue),
            state: Mutex::new(FeedState::Opening(Box::new(OutboundQueue::new(
                self.sessions.queue_capacity,
                self.sessions.queue_bytes,
            )))),
        });
        let membership = match self.sessions.hub.join(&project, Arc::clone(&feed) as _) {
            Ok(membership) => Arc::new(membership),
            Err(full) => {
                tracing::warn!(project_id = %project, error = %full, "refusing a subscription");
                return refuse(SubscriptionErrorCode::HubAtCapacity);
            }
        };
        let opening = open(
            self.sessions.clone(),
            Arc::clone(&membership),
            Arc::clone(&feed),
            asked,
        );
        self.open.insert(
            project,
            Subscription {
                feed,
                _membership: membership,
            },
        );
        Ok(Box::pin(opening))
    }

    /// How many subscriptions the connection holds (projects and tags).
    fn held(&self) -> usize {
        self.open.len() + self.tags.len()
    }

    /// Starts a tag subscription (`tag_feed`), or returns the refusal to send. Its
    /// frames go to the queue from its own task, so nothing is left to run here.
    fn subscribe_tag(&mut self, ask: TagAsk) -> Result<Opening, Frame> {
        let raw = ask.tag.as_deref();
        let refuse = |code| Err(Frame::tag_subscription_error(raw, code));
        let Some(Ok(tag)) = raw.map(Tag::parse_or_all) else {
            return refuse(SubscriptionErrorCode::InvalidTag);
        };
        let status = match &ask.status {
            None => Ok(StatusFilter::default()),
            Some(serde_json::Value::Array(values)) => values
                .iter()
                .map(|v| v.as_str().ok_or(()))
                .collect::<Result<Vec<_>, ()>>()
                .and_then(|values| StatusFilter::parse(values).map_err(drop)),
            Some(_) => Err(()),
        };
        let since_ms = match &ask.since {
            None => Some(0),
            Some(since) => since.as_str().and_then(parse_ms),
        };
        let (Ok(status), Some(since_ms)) = (status, since_ms) else {
            return refuse(SubscriptionErrorCode::InvalidFilter);
        };
        if self
            .access
            .as_ref()
            .is_some_and(|access| !access.allows_tag(&tag))
        {
            return refuse(SubscriptionErrorCode::Forbidden);
        }
        if self.tags.contains_key(&tag) {
            return refuse(SubscriptionErrorCode::AlreadySubscribed);
        }
        if self.held() >= self.sessions.max_subscriptions {
            return refuse(SubscriptionErrorCode::TooManySubscriptions);
        }
        let Some(watching) = self.sessions.tag_watchers.watch(&tag) else {
            return refuse(SubscriptionErrorCode::TagAtCapacity);
        };
        let ask = tag_feed::TagSubscription {
            tag: tag.clone(),
            status,
            since_ms,
        };
        let feed = tag_feed::run(
            self.sessions.clone(),
            Arc::clone(&self.queue),
            ask,
            watching,
        );
        self.tags
            .insert(tag, AbortOnDropHandle::new(tokio::spawn(feed)));
        Ok(Box::pin(std::future::ready(())))
    }

    /// Ends the subscription, if there is one: nothing of the project follows the
    /// answer, `unsubscribed`.
    fn unsubscribe(&mut self, raw: Option<&str>) -> Frame {
        let Some(project) = raw.and_then(|raw| ProjectId::parse(raw).ok()) else {
            return Frame::subscription_error(raw, SubscriptionErrorCode::InvalidProjectId);
        };
        if let Some(subscription) = self.open.remove(&project) {
            subscription.feed.close();
        }
        Frame::unsubscribed(&project)
    }
}

/// Reads the subscription's opening and queues it, then lets its live frames through.
async fn open(
    sessions: Sessions,
    membership: Arc<Membership>,
    feed: Arc<Feed>,
    asked: Option<EventId>,
) {
    let replay = sessions
        .replay_for(&membership, &feed.project, asked.as_ref())
        .await;
    let resumed = asked.is_some();
    // Resumed without its history (the broker could not be read): the client's gap is
    // owed to it, before its next live event (as `Gap` for a session).
    let owed = if replay.is_none() {
        asked.clone()
    } else {
        None
    };
    let opening = opening_with(
        |recovered| Frame::subscribed(resumed, recovered),
        asked.as_ref(),
        replay,
    );
    for frame in opening.frames {
        if feed.push_opening(frame).await.is_err() {
            return;
        }
    }
    match owed {
        None => feed.go_live(opening.floor),
        Some(after) => fill_owed_gap(&sessions, &feed, &after).await,
    }
}

/// Reads a subscription's owed gap until the broker answers (live frames wait in the
/// feed meanwhile, bounded: too many, and the connection is a slow consumer, whose
/// client resumes each project from its own position), then queues it and goes live.
async fn fill_owed_gap(sessions: &Sessions, feed: &Feed, after: &EventId) {
    let mut delay = GAP_RETRY_FIRST;
    loop {
        if feed.is_closed() {
            return;
        }
        match sessions.broker.replay(&feed.project, Some(after)).await {
            Ok(replay) => {
                let (frames, read_to) = fill_gap(after, replay);
                for frame in frames {
                    if feed.push_opening(frame).await.is_err() {
                        return;
                    }
                }
                tracing::info!(project_id = %feed.project, "delivered a subscription's gap after the broker came back");
                feed.go_live(read_to);
                return;
            }
            Err(err) => {
                tracing::debug!(project_id = %feed.project, error = %err, "cannot read a subscription's gap yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(GAP_RETRY_MAX);
            }
        }
    }
}

/// The first wait before reading an owed gap again, and the longest.
const GAP_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const GAP_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// A subscription's inbox in the project's topic: its frames, tagged, into the
/// connection's queue.
#[derive(Debug)]
struct Feed {
    project: ProjectId,
    stream: u32,
    queue: Arc<OutboundQueue>,
    state: Mutex<FeedState>,
}

#[derive(Debug)]
enum FeedState {
    /// The opening is being read and queued: live frames wait here, bounded (and
    /// coalesced) as a session's queue is.
    Opening(Box<OutboundQueue>),
    /// Live: frames at or before the floor were covered by the opening.
    Live(Option<EventId>),
    /// Unsubscribed: nothing more is queued.
    Closed,
}

impl Feed {
    fn tagged(&self, frame: &Frame) -> Frame {
        frame.for_subscription(&self.project, self.stream)
    }

    /// Queues one frame of the opening, waiting for room; `Err` once the subscription
    /// or the connection is over.
    async fn push_opening(&self, frame: Frame) -> Result<(), Ended> {
        let mut frame = self.tagged(&frame);
        loop {
            let room = self.queue.room();
            {
                let state = self.state.lock();
                if matches!(*state, FeedState::Closed) {
                    return Err(Ended::ClientGone);
                }
                match self.queue.try_push_when_room(frame)? {
                    None => return Ok(()),
                    Some(back) => frame = back,
                }
            }
            room.await;
        }
    }

    /// The opening is queued: what waited follows it (less what it covered), and live
    /// frames from now on.
    fn go_live(&self, floor: Option<EventId>) {
        let mut state = self.state.lock();
        let FeedState::Opening(pending) = &*state else {
            return;
        };
        let mut waiting = Vec::new();
        while !pending.is_empty() {
            if pending.drain(&mut waiting).is_err() {
                return;
            }
        }
        let mut floor = floor;
        skip_covered(&mut waiting, &mut floor);
        *state = FeedState::Live(floor);
        for frame in waiting {
            if self.queue.push(self.tagged(&frame)) == Pushed::Overflowed {
                return;
            }
        }
    }

    fn close(&self) {
        *self.state.lock() = FeedState::Closed;
    }

    fn is_closed(&self) -> bool {
        matches!(*self.state.lock(), FeedState::Closed)
    }
}

impl Inbox for Feed {
    fn push(&self, frame: Frame) -> Pushed {
        let mut state = self.state.lock();
        match &mut *state {
            FeedState::Opening(pending) => {
                let pushed = pending.push(frame);
                if pushed == Pushed::Overflowed {
                    self.queue.end(Ended::Closed(CloseReason::SlowConsumer));
                }
                pushed
            }
            FeedState::Live(floor) => {
                if let (Some(seen), Some(id)) = (floor.as_ref(), frame.id()) {
                    if id.is_at_or_before(seen) {
                        return Pushed::Queued;
                    }
                    *floor = None;
                }
                self.queue.push(self.tagged(&frame))
            }
            FeedState::Closed => Pushed::Ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pid() -> ProjectId {
        ProjectId::parse("p1").unwrap()
    }

    fn event(seq: u64) -> Frame {
        let text = format!(r#"{{"event":"log","id":"e:{seq}","data":{{}}}}"#);
        Frame::from_published(Bytes::from(text)).unwrap()
    }

    fn feed(queue: &Arc<OutboundQueue>, capacity: usize) -> Feed {
        Feed {
            project: pid(),
            stream: 3,
            queue: Arc::clone(queue),
            state: Mutex::new(FeedState::Opening(Box::new(OutboundQueue::new(
                capacity,
                usize::MAX,
            )))),
        }
    }

    fn queued(queue: &OutboundQueue) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        queue.drain(&mut frames).unwrap();
        frames.iter().map(Frame::to_value).collect()
    }

    #[tokio::test]
    async fn live_frames_wait_for_the_opening_and_skip_what_it_covered() {
        let queue = Arc::new(OutboundQueue::new(64, usize::MAX));
        let feed = feed(&queue, 64);
        for seq in 5..=7 {
            assert_eq!(feed.push(event(seq)), Pushed::Queued);
        }
        assert!(queue.is_empty(), "nothing before the opening");
        feed.push_opening(Frame::subscribed(false, true))
            .await
            .unwrap();
        feed.push_opening(event(6)).await.unwrap();
        feed.go_live(Some(EventId::new("e", 6)));
        feed.push(event(8));
        let got = queued(&queue);
        let described: Vec<_> = got
            .iter()
            .map(|f| (f["event"].as_str().unwrap(), f["id"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            described,
            [
                ("subscribed", ""),
                ("log", "e:6"),
                ("log", "e:7"),
                ("log", "e:8")
            ],
            "the opening, then what waited less what it covered, then live"
        );
        assert!(got.iter().all(|f| f["project_id"] == "p1"), "all tagged");
        feed.close();
        assert_eq!(feed.push(event(9)), Pushed::Ended);
        assert!(feed.push_opening(event(9)).await.is_err());
        assert!(queue.is_empty(), "nothing after the subscription closed");
    }

    #[test]
    fn a_backlog_while_opening_is_bounded_and_overflows_the_connection() {
        let queue = Arc::new(OutboundQueue::new(64, usize::MAX));
        let feed = feed(&queue, 2);
        feed.push(event(1));
        feed.push(event(2));
        assert_eq!(feed.push(event(3)), Pushed::Overflowed);
        assert_eq!(
            queue.ended_because(),
            Some(Ended::Closed(CloseReason::SlowConsumer))
        );
    }
}
