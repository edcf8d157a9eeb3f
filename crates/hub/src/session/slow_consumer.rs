//! One session's bounded outbound queue, and the slow-consumer policy.
//!
//! The hub pushes every frame of a project into the queue of each of its sessions (the
//! queue is the session's [`Inbox`]); the session's task drains it into the socket. A client that reads slowly must never slow
//! the others, so a push never waits:
//! - while the queue has room (fewer frames than its capacity, and fewer bytes than its
//!   byte cap: what a session holds is bounded in bytes, whatever its frames weigh),
//!   every frame is kept, in order;
//! - when it is full, the queued frames that a newer one supersedes (`progress_update`,
//!   `ping`) are dropped, so the backed-up client keeps only the newest progress;
//! - if the queue is still full of frames that must not be dropped (`stage_change`,
//!   `log`, `error`, `complete`), the session is marked overflowed and closed with 4429;
//!   the client resumes from history when it reconnects.
//!
//! The queue is also where a session learns that it is over, whoever decides it (the
//! slow-consumer policy, the heartbeat, the client, a restart): [`OutboundQueue::end`]
//! records why and wakes the session, so its task waits on one thing only.
//!
//! On a multiplexed connection (`multiplex`) one queue holds the frames of all its
//! subscriptions: coalescing drops a frame only for a newer one of the same kind *and*
//! subscription, and what the connection itself says (its answers to the client, a
//! subscription's opening) waits for room ([`OutboundQueue::push_when_room`]) instead of
//! overflowing, so a client that asks much and reads slowly is slowed, not closed.
//!
//! The queue allocates nothing while empty, so an idle connection costs no buffer.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::hub::{Inbox, Pushed};
use crate::wire::{CloseReason, Frame};

/// Most frames written to a socket in one go: between batches the session reads its
/// client and counts the progress as life, so a long backlog read slowly by a live
/// client is not taken for silence.
pub const MAX_BATCH: usize = 64;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The hub closes it, with this reason.
    Closed(CloseReason),
    /// The client left or the connection broke.
    ClientGone,
}

#[derive(Debug)]
pub struct OutboundQueue {
    state: Mutex<State>,
    /// Wakes the session's task when frames arrive or the queue overflows.
    wake: Notify,
    /// Wakes what waits for room (see [`OutboundQueue::push_when_room`]).
    room: Notify,
    capacity: usize,
    /// Most bytes of frames queued (a frame alone in the queue is always taken).
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    /// The bytes of `frames`.
    bytes: usize,
    /// Set once; the first reason wins.
    ended: Option<Ended>,
}

impl OutboundQueue {
    /// A queue of at most `capacity` frames and `max_bytes` bytes of them.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    /// Whether `frame` fits beside what is queued.
    fn fits(&self, state: &State, frame: &Frame) -> bool {
        state.frames.is_empty()
            || (state.frames.len() < self.capacity
                && state.bytes.saturating_add(frame.len()) <= self.max_bytes)
    }

    pub fn push(&self, frame: Frame) -> Pushed {
        let outcome = {
            let mut state = self.state.lock();
            match state.ended {
                Some(Ended::Closed(CloseReason::SlowConsumer)) => return Pushed::Overflowed,
                Some(_) => return Pushed::Ended,
                None => {}
            }
            if self.fits(&state, &frame) {
                state.bytes += frame.len();
                state.frames.push_back(frame);
                Pushed::Queued
            } else {
                let before = state.frames.len();
                // Drop the superseded frames: every queued one of a kind the new frame
                // supersedes, and all but the newest of every other supersedable kind.
                // Kinds of one subscription (`Frame::stream`; 0 on a single-project one).
                let incoming = (frame.kind(), frame.stream());
                let mut newest = std::collections::HashSet::new();
                let mut keep = vec![false; state.frames.len()];
                for (i, f) in state.frames.iter().enumerate().rev() {
                    let kind = (f.kind(), f.stream());
                    keep[i] = !kind.0.is_superseded_by_newer()
                        || (kind != incoming && newest.insert(kind));
                }
                let mut index = 0;
                state.frames.retain(|_| {
                    index += 1;
                    keep[index - 1]
                });
                let dropped = before - state.frames.len();
                state.bytes = state.frames.iter().map(Frame::len).sum();
                if self.fits(&state, &frame) {
                    state.bytes += frame.len();
                    state.frames.push_back(frame);
                    Pushed::QueuedAfterCoalescing(dropped)
                } else {
                    state.ended = Some(Ended::Closed(CloseReason::SlowConsumer));
                    state.frames = VecDeque::new();
                    state.bytes = 0;
                    Pushed::Overflowed
                }
            }
        };
        self.wake.notify_one();
        outcome
    }

    /// Queues a frame once the queue is at most half full (in frames and bytes), so
    /// that frames pushed this way never overflow it and leave room for live ones;
    /// `Err` once the session has ended.
    pub async fn push_when_room(&self, mut frame: Frame) -> Result<(), Ended> {
        loop {
            let room = self.room();
            match self.try_push_when_room(frame)? {
                None => return Ok(()),
                Some(back) => frame = back,
            }
            room.await;
        }
    }

    /// Queues a frame if the queue is at most half full (`None`), or gives it back;
    /// `Err` once the session has ended. Wait for [`OutboundQueue::room`] (taken
    /// before the try) to try again.
    pub fn try_push_when_room(&self, frame: Frame) -> Result<Option<Frame>, Ended> {
        let mut state = self.state.lock();
        if let Some(ended) = state.ended {
            return Err(ended);
        }
        let has_room = state.frames.is_empty()
            || (state.frames.len() < (self.capacity / 2).max(1)
                && state.bytes.saturating_add(frame.len()) <= self.max_bytes / 2);
        if !has_room {
            return Ok(Some(frame));
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.wake.notify_one();
        Ok(None)
    }

    /// Resolves when frames leave the queue (or it ends), from the moment it is called.
    pub fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.room.notified()
    }

    /// Ends the session (the first reason given wins) and wakes its task. Queued frames
    /// are dropped: nothing will send them.
    pub fn end(&self, why: Ended) {
        {
            let mut state = self.state.lock();
            if state.ended.is_some() {
                return;
            }
            state.ended = Some(why);
            state.frames = VecDeque::new();
            state.bytes = 0;
        }
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    /// Waits until there is something to do: frames to send, or the end.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Takes the oldest queued frames, at most `MAX_BATCH`; `Err` once the session has
    /// ended (an overflow is `Closed(SlowConsumer)`).
    pub fn drain(&self, into: &mut Vec<Frame>) -> Result<(), Ended> {
        let mut state = self.state.lock();
        if let Some(ended) = state.ended {
            return Err(ended);
        }
        let n = state.frames.len().min(MAX_BATCH);
        let start = into.len();
        into.extend(state.frames.drain(..n));
        let taken: usize = into[start..].iter().map(Frame::len).sum();
        state.bytes -= taken;
        if state.frames.is_empty() && state.frames.capacity() > self.capacity / 4 {
            // Give a burst's memory back rather than keep it per idle connection.
            state.frames = VecDeque::new();
        }
        drop(state);
        if n > 0 {
            self.room.notify_waiters();
        }
        Ok(())
    }

    /// Why the session ended, once it has.
    pub fn ended_because(&self) -> Option<Ended> {
        self.state.lock().ended
    }

    /// Waits until the session ends (used while a send is stuck on a slow socket).
    pub async fn ended(&self) -> Ended {
        loop {
            let notified = self.wake.notified();
            if let Some(ended) = self.ended_because() {
                return ended;
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inbox for OutboundQueue {
    fn push(&self, frame: Frame) -> Pushed {
        OutboundQueue::push(self, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EventKind;
    use std::sync::Arc;

    fn frame(kind: EventKind, n: u32) -> Frame {
        Frame::encode(kind, &serde_json::json!({ "n": n }))
    }

    fn drained(q: &OutboundQueue) -> Vec<(EventKind, u64)> {
        let mut out = Vec::new();
        q.drain(&mut out).unwrap();
        out.iter()
            .map(|f| (f.kind(), f.to_value()["data"]["n"].as_u64().unwrap()))
            .collect()
    }

    #[test]
    fn draining_in_batches_loses_nothing() {
        let q = OutboundQueue::new(1024, usize::MAX);
        for i in 0..1000 {
            q.push(frame(EventKind::Log, i));
        }
        let mut seen = Vec::new();
        let mut batch = Vec::new();
        while !q.is_empty() {
            q.drain(&mut batch).unwrap();
            assert!(batch.len() <= MAX_BATCH);
            seen.extend(
                batch
                    .drain(..)
                    .map(|f| f.to_value()["data"]["n"].as_u64().unwrap()),
            );
        }
        assert_eq!(
            seen,
            (0..1000).collect::<Vec<u64>>(),
            "every frame, in order"
        );
    }

    #[test]
    fn keeps_everything_in_order_while_there_is_room() {
        let q = OutboundQueue::new(8, usize::MAX);
        for n in 0..8 {
            assert_eq!(q.push(frame(EventKind::ProgressUpdate, n)), Pushed::Queued);
        }
        assert_eq!(drained(&q).len(), 8);
        assert!(q.is_empty());
    }

    #[test]
    fn when_full_keeps_only_the_newest_progress_and_every_log() {
        let q = OutboundQueue::new(4, usize::MAX);
        q.push(frame(EventKind::ProgressUpdate, 1));
        q.push(frame(EventKind::Log, 2));
        q.push(frame(EventKind::ProgressUpdate, 3));
        q.push(frame(EventKind::StageChange, 4));
        assert_eq!(
            q.push(frame(EventKind::ProgressUpdate, 5)),
            Pushed::QueuedAfterCoalescing(2)
        );
        assert_eq!(
            drained(&q),
            vec![
                (EventKind::Log, 2),
                (EventKind::StageChange, 4),
                (EventKind::ProgressUpdate, 5)
            ]
        );
    }

    #[test]
    fn when_full_of_logs_the_newest_progress_survives() {
        let q = OutboundQueue::new(4, usize::MAX);
        q.push(frame(EventKind::ProgressUpdate, 1));
        q.push(frame(EventKind::ProgressUpdate, 2));
        q.push(frame(EventKind::Log, 3));
        q.push(frame(EventKind::Log, 4));
        assert_eq!(
            q.push(frame(EventKind::Log, 5)),
            Pushed::QueuedAfterCoalescing(1)
        );
        assert_eq!(
            drained(&q),
            vec![
                (EventKind::ProgressUpdate, 2),
                (EventKind::Log, 3),
                (EventKind::Log, 4),
                (EventKind::Log, 5)
            ]
        );
    }

    #[test]
    fn overflows_when_only_undroppable_frames_are_queued() {
        let q = OutboundQueue::new(2, usize::MAX);
        q.push(frame(EventKind::Log, 1));
        q.push(frame(EventKind::Complete, 2));
        assert_eq!(q.push(frame(EventKind::Error, 3)), Pushed::Overflowed);
        assert_eq!(q.ended_because(), Some(SLOW));
        assert_eq!(q.push(frame(EventKind::Log, 4)), Pushed::Overflowed);
        assert_eq!(q.drain(&mut Vec::new()), Err(SLOW));
    }

    #[tokio::test]
    async fn push_wakes_the_reader_even_if_it_was_not_waiting_yet() {
        let q = OutboundQueue::new(2, usize::MAX);
        q.push(frame(EventKind::Log, 1));
        q.ready().await;
        assert_eq!(q.len(), 1);
        q.push(frame(EventKind::Log, 2));
        q.push(frame(EventKind::Log, 3));
        assert_eq!(q.ended().await, SLOW);
    }

    const SLOW: Ended = Ended::Closed(CloseReason::SlowConsumer);

    fn weighing(kind: EventKind, n: u32, bytes: usize) -> Frame {
        Frame::encode(
            kind,
            &serde_json::json!({ "n": n, "pad": "x".repeat(bytes) }),
        )
    }

    #[test]
    fn a_queue_is_bounded_by_bytes_as_well_as_frames() {
        let one = weighing(EventKind::Log, 0, 1000).len();
        let q = OutboundQueue::new(1024, 3 * one + one / 2);
        assert_eq!(
            q.push(weighing(EventKind::ProgressUpdate, 1, 1000)),
            Pushed::Queued
        );
        q.push(weighing(EventKind::ProgressUpdate, 2, 1000));
        q.push(weighing(EventKind::Log, 3, 1000));
        // Over the byte cap: the superseded progress makes room.
        assert_eq!(
            q.push(weighing(EventKind::Log, 4, 1000)),
            Pushed::QueuedAfterCoalescing(1)
        );
        // Nothing left to supersede (the newest progress stays): a slow consumer, with
        // 3 frames of 1,024 queued.
        assert_eq!(
            q.push(weighing(EventKind::Log, 5, 1000)),
            Pushed::Overflowed
        );
        assert_eq!(q.ended_because(), Some(SLOW));
    }

    #[test]
    fn draining_gives_the_bytes_back_and_a_big_frame_alone_is_taken() {
        let q = OutboundQueue::new(1024, 100);
        assert_eq!(q.push(weighing(EventKind::Log, 1, 500)), Pushed::Queued);
        q.drain(&mut Vec::new()).unwrap();
        assert_eq!(q.push(weighing(EventKind::Log, 2, 500)), Pushed::Queued);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn coalescing_keeps_the_newest_progress_of_every_subscription() {
        let p = crate::wire::ProjectId::parse("p").unwrap();
        let q = OutboundQueue::new(3, usize::MAX);
        q.push(frame(EventKind::ProgressUpdate, 1).for_subscription(&p, 1));
        q.push(frame(EventKind::ProgressUpdate, 2).for_subscription(&p, 2));
        q.push(frame(EventKind::ProgressUpdate, 3).for_subscription(&p, 1));
        assert_eq!(
            q.push(frame(EventKind::ProgressUpdate, 4).for_subscription(&p, 1)),
            Pushed::QueuedAfterCoalescing(2),
            "subscription 1's older progress goes, subscription 2's stays"
        );
        let mut out = Vec::new();
        q.drain(&mut out).unwrap();
        let kept: Vec<_> = out
            .iter()
            .map(|f| (f.stream(), f.to_value()["data"]["n"].as_u64().unwrap()))
            .collect();
        assert_eq!(kept, vec![(2, 2), (1, 4)]);
    }

    #[tokio::test]
    async fn pushing_when_room_waits_for_a_half_empty_queue() {
        let q = Arc::new(OutboundQueue::new(4, usize::MAX));
        for n in 0..2 {
            q.push_when_room(frame(EventKind::Log, n)).await.unwrap();
        }
        let waiting = tokio::spawn({
            let q = Arc::clone(&q);
            async move { q.push_when_room(frame(EventKind::Log, 9)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(q.len(), 2, "half full: the third waits");
        assert_eq!(drained(&q).len(), 2);
        waiting.await.unwrap().unwrap();
        assert_eq!(drained(&q), vec![(EventKind::Log, 9)]);
        q.end(Ended::ClientGone);
        assert_eq!(
            q.push_when_room(frame(EventKind::Log, 10)).await,
            Err(Ended::ClientGone)
        );
    }

    #[tokio::test]
    async fn the_first_end_wins_and_drops_what_was_queued() {
        let q = OutboundQueue::new(8, usize::MAX);
        q.push(frame(EventKind::Log, 1));
        q.end(Ended::ClientGone);
        q.end(Ended::Closed(CloseReason::ServiceRestart));
        assert_eq!(q.ended().await, Ended::ClientGone);
        assert_eq!(q.drain(&mut Vec::new()), Err(Ended::ClientGone));
        assert!(q.is_empty());
        assert_eq!(q.push(frame(EventKind::Log, 2)), Pushed::Ended);
    }
}
