//! One client's life, whatever the transport: join the project's topic, say
//! `connected`, then move frames from the outbound queue to the socket until the
//! session ends: the client leaves, goes silent, falls behind, or the server stops.
//!
//! Two tasks per session, each woken only by its own work: the session's task writes
//! (it sleeps on the outbound queue), and a reader task hears the client (`reader`).
//! Whoever decides that the session is over (the reader, the heartbeat, the
//! slow-consumer policy, a restart) says so through the queue, so the writer waits on
//! one thing only.

mod access;
mod heartbeat;
mod multiplex;
mod reader;
mod resume;
mod seen;
mod slow_consumer;
mod tag_feed;

pub use access::{Access, ConnectionAccess};
pub use heartbeat::{Beating, Heartbeat, Pulse};
pub use resume::{Opening, fill_gap, opening, opening_with, skip_covered};
pub use slow_consumer::{Ended, OutboundQueue};
pub use tag_feed::TagWatchers;

use seen::CompletesSeen;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use tokio_util::task::AbortOnDropHandle;

use crate::broker::{Broker, Replay};
use crate::hub::{Hub, Membership};
use crate::metrics as m;
use crate::transport::{Transport, Writer};
use crate::wire::{CloseReason, EventId, Frame, ProjectId};

/// How long a new session waits for the broker to confirm the subscription before it
/// says `connected` anyway (during a broker outage the subscriber catches up later).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// What every session shares.
#[derive(Clone)]
pub struct Sessions {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// Pings, silence and token deadlines, and the restart close, for every session.
    pub heartbeat: Arc<Heartbeat>,
    /// Most frames a session's outbound queue holds (see `slow_consumer`).
    pub queue_capacity: usize,
    /// Most bytes of frames it holds.
    pub queue_bytes: usize,
    /// Most subscriptions one multiplexed connection holds (see `multiplex`).
    pub max_subscriptions: usize,
    /// How many subscriptions each tag has on this hub (see `tag_feed`).
    pub tag_watchers: Arc<TagWatchers>,
}

impl Sessions {
    /// A session, to run to its end. `last_event_id`: resume after it.
    ///
    /// The transport is split here, before the session's future exists: a future keeps
    /// room for its arguments as long as it lives, and a session lives for hours with
    /// only the two small halves in use (the whole socket held there would be ~0.5 KiB
    /// more per idle connection).
    pub fn run<T: Transport>(
        self,
        project: ProjectId,
        last_event_id: Option<EventId>,
        access: Option<Access>,
        transport: T,
    ) -> impl Future<Output = Ended> + Send + 'static {
        let (writer, reader) = transport.split();
        self.run_split::<T>(project, last_event_id, access, writer, reader)
    }

    /// The session in two phases, each a future of its own: the opening (joining the
    /// topic, the subscription wait, the history read), boxed and freed once the session
    /// is open, then the open session (`Live`), which holds only what the connection
    /// needs once open. `then` keeps one of the two at a time.
    fn run_split<T: Transport>(
        self,
        project: ProjectId,
        last_event_id: Option<EventId>,
        access: Option<Access>,
        writer: T::Writer,
        reader: T::Reader,
    ) -> impl Future<Output = Ended> + Send + 'static {
        Box::pin(self.open_session::<T>(project, last_event_id, access, writer, reader)).then(
            |opened| match opened {
                Ok(live) => Either::Left(live.run()),
                Err(ended) => Either::Right(std::future::ready(ended)),
            },
        )
    }

    async fn open_session<T: Transport>(
        self,
        project: ProjectId,
        last_event_id: Option<EventId>,
        access: Option<Access>,
        mut writer: T::Writer,
        reader: T::Reader,
    ) -> Result<Live<T>, Ended> {
        let queue = Arc::new(OutboundQueue::new(self.queue_capacity, self.queue_bytes));
        // Subscribe first, then read: nothing published in between can be missed.
        let membership = match self.hub.join(&project, Arc::clone(&queue) as _) {
            Ok(membership) => membership,
            Err(full) => {
                tracing::warn!(project_id = %project, error = %full, "refusing a session");
                writer.close(CloseReason::Overloaded).await;
                return Err(Ended::Closed(CloseReason::Overloaded));
            }
        };
        let beating = self.heartbeat.register(Arc::clone(&queue), T::HEARS_CLIENT);
        let pulse = Arc::clone(beating.pulse());
        if let Some(access) = &access {
            pulse.expires_at(access.expires_at());
        }
        let (Opening { frames, floor }, owed) =
            self.open(&membership, &project, last_event_id).await;
        m::connection_opened(T::NAME);
        let listening = reader::listen(reader, Arc::clone(&queue), Arc::clone(&pulse), access);
        let reader = AbortOnDropHandle::new(tokio::spawn(listening));
        Ok(Live {
            writer,
            queue,
            pulse,
            broker: self.broker,
            project,
            frames,
            floor,
            owed,
            _reader: reader,
            _beating: beating,
            _membership: membership,
        })
    }

    /// What the session says first, once the broker confirmed the subscription (or
    /// gave up waiting): `connected`, then the snapshot or the resumed events; and the
    /// client's position when its gap could not be read yet (owed before live events).
    async fn open(
        &self,
        membership: &Membership,
        project: &ProjectId,
        last_event_id: Option<EventId>,
    ) -> (Opening, Option<EventId>) {
        let replay = self
            .replay_for(membership, project, last_event_id.as_ref())
            .await;
        // Resumed without its history (the broker could not be read): the client's gap
        // is owed to it, and is delivered before its next live event (see `pump`).
        let owed = match &replay {
            None => last_event_id.clone(),
            Some(_) => None,
        };
        let opening = opening(
            project,
            self.heartbeat.interval().as_secs(),
            last_event_id.as_ref(),
            replay,
        );
        (opening, owed)
    }

    /// What a new member of the project's topic is owed before its live events, once
    /// the broker confirmed the subscription (or gave up waiting): the project's state
    /// and the events after `last_event_id`; `None` when nothing can be promised.
    async fn replay_for(
        &self,
        membership: &Membership,
        project: &ProjectId,
        last_event_id: Option<&EventId>,
    ) -> Option<Replay> {
        let subscribed = membership.subscribed(SUBSCRIBE_WAIT).await;
        if !subscribed {
            // Without a confirmed subscription nothing can be promised: say
            // `recovered: false`; the subscriber fills the gap from history once it is up.
            tracing::warn!(project_id = %project, "broker has not confirmed the subscription yet; connecting unrecovered");
            None
        } else if let Some(state) = last_event_id
            .is_none()
            .then(|| membership.fresh_state())
            .flatten()
        {
            // Joined a project as one of its first watchers: the subscriber's read
            // just after subscribing is this session's snapshot.
            Some(Replay {
                state,
                after: Vec::new(),
            })
        } else {
            match self.broker.replay(project, last_event_id).await {
                Ok(replay) => Some(replay),
                Err(err) => {
                    tracing::warn!(project_id = %project, error = %err, "cannot read history; going live without it");
                    None
                }
            }
        }
    }
}

/// An open session: what the connection needs once open (the opening frames, `floor`
/// and `owed` are used up at its start and stay as empty room, a few dozen bytes).
///
/// Fields drop in the order declared, at the end of [`Live::run`]: the socket's writing
/// half, then the reader task (aborted), the heartbeat entry, and last the membership
/// (leaving the topic), as before the split.
struct Live<T: Transport> {
    writer: T::Writer,
    queue: Arc<OutboundQueue>,
    pulse: Arc<Pulse>,
    broker: Arc<dyn Broker>,
    project: ProjectId,
    /// The opening frames, until they are sent.
    frames: Vec<Frame>,
    /// What the opening covered (see `skip_covered`).
    floor: Option<EventId>,
    /// The client's position, when its gap could not be read yet (see `Gap`).
    owed: Option<EventId>,
    _reader: AbortOnDropHandle<()>,
    _beating: Beating,
    _membership: Membership,
}

impl<T: Transport> Live<T> {
    /// Sends the opening, then frames from the queue until the session ends, and closes.
    ///
    /// Not an `async fn`: one keeps room for its arguments twice (as arguments and as
    /// the locals they are moved into); this `async move` block uses `self` in place.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps its arguments twice for the session's life"
    )]
    fn run(mut self) -> impl Future<Output = Ended> + Send {
        async move {
            // A long replay to a client that does not read must still end with the
            // session (heartbeat, token expiry, restart: the heartbeat ends every
            // session at shutdown).
            let sent = tokio::select! {
                sent = send(&mut self.writer, &self.frames, &self.pulse, T::HEARS_CLIENT) => Ok(sent.is_ok()),
                ended = self.queue.ended() => Err(ended),
            };
            let seen = CompletesSeen::of(&self.broker, &self.project);
            if let Ok(true) = sent {
                seen.written(&self.frames);
            }
            // Sent: an idle session need not keep them (~0.3 KiB).
            drop(std::mem::take(&mut self.frames));
            let ended = match sent {
                Ok(true) => {
                    let (broker, project) = (self.broker.as_ref(), &self.project);
                    let gap = self.owed.take().map(|after| Gap {
                        broker,
                        project,
                        after,
                    });
                    let floor = self.floor.take();
                    let pumping = pump::<T::Writer>(
                        &self.queue,
                        &self.pulse,
                        floor,
                        gap,
                        &seen,
                        &mut self.writer,
                        T::HEARS_CLIENT,
                    );
                    pumping.await
                }
                Ok(false) => Ended::ClientGone,
                Err(ended) => ended,
            };
            m::connection_closed(T::NAME);
            match ended {
                Ended::Closed(reason) => {
                    count_close(reason);
                    tracing::debug!(project_id = %self.project, code = reason.code(), reason = reason.text(), "closing session");
                    self.writer.close(reason).await;
                }
                Ended::ClientGone => {
                    tracing::debug!(project_id = %self.project, "client left");
                }
            }
            // The block must hold all of `self` to the end, not only the fields it
            // reads (a block captures just those): the reader task, the heartbeat entry
            // and the topic membership end here, with the session.
            drop(self);
            ended
        }
    }
}

/// Counts a session closed by the hub, by reason.
fn count_close(reason: CloseReason) {
    match reason {
        CloseReason::HeartbeatTimeout => m::heartbeat_timed_out(),
        CloseReason::SlowConsumer => m::slow_consumer_closed(),
        CloseReason::MessageTooBig => m::client_frame_oversized(),
        CloseReason::ServiceRestart
        | CloseReason::Overloaded
        | CloseReason::TokenExpired
        | CloseReason::ProtocolError
        | CloseReason::InvalidPayload => {}
    }
}

/// Writes `frames`. Where the client cannot speak (SSE), each frame must go through
/// within the heartbeat timeout (see `heartbeat`): the only sign of a reader that
/// stalled, and one that a reader that is slow but reads never fails, frame by frame.
/// Where it can (WebSocket), its silence is the sign, and its socket's write buffer is
/// capped.
async fn send<W: Writer>(
    writer: &mut W,
    frames: &[Frame],
    pulse: &Pulse,
    hears_client: bool,
) -> Result<(), crate::transport::TransportClosed> {
    if hears_client {
        return writer.send(frames).await;
    }
    for frame in frames {
        let _pending = pulse.write_pending();
        writer.send(std::slice::from_ref(frame)).await?;
    }
    Ok(())
}

/// A client's position whose following events it has not been given: it resumed while
/// the broker could not be read. Live events would move it past them for good.
struct Gap<'a> {
    broker: &'a dyn Broker,
    project: &'a ProjectId,
    after: EventId,
}

/// Moves frames from the queue to the socket until the session ends (telling `seen`
/// what was written). With a `gap`, the
/// first live event waits until the events between the client's position and it are
/// read from history and sent before it (or a snapshot, if the history no longer has
/// them); if the history still cannot be read, the session closes with 1013, and the
/// client reconnects later and resumes from its position.
///
/// Not an `async fn`, for the reason given at [`Live::run`].
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice for the session's life"
)]
fn pump<'a, W: Writer>(
    queue: &'a OutboundQueue,
    pulse: &'a Pulse,
    mut floor: Option<EventId>,
    mut gap: Option<Gap<'a>>,
    seen: &'a CompletesSeen<'a>,
    writer: &'a mut W,
    hears_client: bool,
) -> impl Future<Output = Ended> + Send + 'a {
    async move {
        let mut batch = Vec::new();
        loop {
            if let Err(ended) = queue.drain(&mut batch) {
                return ended;
            }
            skip_covered(&mut batch, &mut floor);
            if let Some(owed) = &gap
                && let Some(first) = batch.iter().find_map(Frame::id)
            {
                if !first.follows(&owed.after) {
                    let read = tokio::select! {
                        read = owed.broker.replay(owed.project, Some(&owed.after)) => read,
                        ended = queue.ended() => return ended,
                    };
                    match read {
                        Ok(replay) => {
                            let (mut frames, read_to) = fill_gap(&owed.after, replay);
                            floor = read_to;
                            skip_covered(&mut batch, &mut floor);
                            frames.append(&mut batch);
                            batch = frames;
                            tracing::info!(project_id = %owed.project, "delivered a resumed session's gap after the broker came back");
                        }
                        Err(err) => {
                            tracing::warn!(project_id = %owed.project, error = %err, "cannot read a resumed session's gap; closing it so it resumes later");
                            return Ended::Closed(CloseReason::Overloaded);
                        }
                    }
                }
                gap = None;
            }
            if batch.is_empty() {
                queue.ready().await;
                continue;
            }
            // A write that had to wait (the socket was full) and then went through means
            // the client is taking data off its socket: it is alive, even if a long backlog
            // keeps it from answering pings for a while. A write that fits in the socket
            // buffers proves nothing (a dead peer's would too).
            let waited = AtomicBool::new(false);
            let sent = {
                let mut send = std::pin::pin!(send(writer, &batch, pulse, hears_client));
                let send = std::future::poll_fn(|cx| {
                    let poll = send.as_mut().poll(cx);
                    if poll.is_pending() {
                        waited.store(true, Ordering::Relaxed);
                    }
                    poll
                });
                // A stuck write must not outlive the session's end (overflow, heartbeat,
                // restart). `biased`: a write that completes at once costs no other poll.
                tokio::select! {
                    biased;
                    sent = send => sent,
                    ended = queue.ended() => return ended,
                }
            };
            if sent.is_err() {
                return Ended::ClientGone;
            }
            if waited.load(Ordering::Relaxed) {
                pulse.saw_life();
            }
            m::frames_delivered(batch.len() as u64);
            seen.written(&batch);
            if let Some(at) = batch.iter().find_map(Frame::received_at) {
                m::delivered_after(at);
            }
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Deliveries, HistoryConfig};
    use crate::transport::Incoming;
    use crate::transport::channel::{self, FakeClient, Written};
    use bytes::Bytes;
    use serde_json::Value;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    /// Sessions over the in-process broker, and a hub to deliver into.
    fn sessions(queue_capacity: usize) -> Sessions {
        let (hub, changes) = Hub::new(100);
        let shutdown = CancellationToken::new();
        let broker = crate::broker::start(
            None,
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
            HistoryConfig::default(),
            hub.clone(),
            changes,
            shutdown.clone(),
            &TaskTracker::new(),
        )
        .unwrap();
        let heartbeat = Heartbeat::new(Duration::from_secs(30), Duration::from_secs(60), shutdown);
        Sessions {
            hub,
            broker,
            heartbeat,
            queue_capacity,
            queue_bytes: usize::MAX,
            max_subscriptions: 1000,
            tag_watchers: Arc::default(),
        }
    }

    fn pid() -> ProjectId {
        ProjectId::parse("p").unwrap()
    }

    async fn next(client: &mut FakeClient) -> Written {
        client.written.recv().await.expect("the session wrote")
    }

    async fn next_event(client: &mut FakeClient) -> Value {
        match next(client).await {
            Written::Frame(text) => serde_json::from_str(&text).unwrap(),
            Written::Close(reason) => panic!("closed: {reason:?}"),
        }
    }

    fn start(sessions: &Sessions) -> (tokio::task::JoinHandle<Ended>, FakeClient) {
        let (transport, client) = channel::pair();
        let sessions = sessions.clone();
        let task = tokio::spawn(sessions.run(pid(), None, None, transport));
        (task, client)
    }

    #[tokio::test]
    async fn says_connected_then_delivers_and_answers_ping() {
        let sessions = sessions(16);
        let (task, mut client) = start(&sessions);
        let connected = next_event(&mut client).await;
        assert_eq!(connected["event"], "connected");
        assert_eq!(connected["data"]["project_id"], "p");
        assert_eq!(connected["data"]["heartbeat_interval"], 30);

        sessions.hub.deliver(
            &pid(),
            Bytes::from_static(br#"{"event":"log","data":{"n":1}}"#),
        );
        assert_eq!(next_event(&mut client).await["data"]["n"], 1);

        client
            .say
            .send(Incoming::Text(r#"{"event":"ping"}"#.into()))
            .unwrap();
        assert_eq!(next_event(&mut client).await["event"], "pong");

        // Open, the session holds its heartbeat entry and its place in the topic.
        assert_eq!(sessions.heartbeat.sessions(), 1);
        assert_eq!(sessions.hub.watched_count(), 1);

        drop(client.say);
        assert_eq!(task.await.unwrap(), Ended::ClientGone);
        assert_eq!(
            sessions.hub.watched_count(),
            0,
            "the session left its topic"
        );
        assert_eq!(sessions.heartbeat.sessions(), 0, "and the heartbeat");
    }

    #[tokio::test]
    async fn an_oversized_client_frame_closes_with_1009() {
        let sessions = sessions(16);
        let (task, mut client) = start(&sessions);
        next_event(&mut client).await;
        client.say.send(Incoming::TooLarge).unwrap();
        assert_eq!(
            next(&mut client).await,
            Written::Close(CloseReason::MessageTooBig)
        );
        assert_eq!(
            task.await.unwrap(),
            Ended::Closed(CloseReason::MessageTooBig)
        );
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_is_closed_as_a_slow_consumer() {
        let sessions = sessions(2);
        let (run, mut client) = start(&sessions);
        next_event(&mut client).await;
        sessions.hub.deliver(
            &pid(),
            Bytes::from_static(br#"{"event":"log","data":{"n":1}}"#),
        );
        // The test runtime has one thread: the session's task runs only when the test
        // awaits, so these undroppable frames all land in its queue of two at once, as
        // they would for a client whose socket stopped draining.
        for n in 2..=4 {
            sessions.hub.deliver(
                &pid(),
                Bytes::from(format!(r#"{{"event":"log","data":{{"n":{n}}}}}"#)),
            );
        }
        let mut closed = None;
        while let Some(written) = client.written.recv().await {
            if let Written::Close(reason) = written {
                closed = Some(reason);
                break;
            }
        }
        assert_eq!(closed, Some(CloseReason::SlowConsumer));
        assert_eq!(run.await.unwrap(), Ended::Closed(CloseReason::SlowConsumer));
    }
}
