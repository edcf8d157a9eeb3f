//! The heartbeat: a `ping` frame to every session each interval, and the end of any
//! session whose client has been silent longer than the timeout or whose access token
//! has expired.
//!
//! One task beats for every session of the process, instead of two timers per session:
//! a session's task then wakes only when it has frames to send (timers re-polled on
//! every wake-up were a measurable share of the cost of a delivery, see
//! docs/benchmark-notes.md). Each session registers a [`Pulse`] (atomics its reader
//! updates when the client shows life); every tick the heartbeat reads them, queues a
//! ping where one is due and ends, through the session's queue, the ones that are over.
//! Deadlines are therefore honoured to within one tick (a tenth of the smaller of the
//! interval and the timeout, at most a second).
//!
//! Silence is one sign of a dead client; on SSE, where the client cannot speak, a write
//! that does not go through is the sign: a session whose write of a frame has waited
//! longer than the timeout (the client takes nothing off its socket) is ended with
//! "heartbeat timeout" too. A reader that stalled would otherwise hold its session,
//! and what was queued for it, for as long as it likes.
//!
//! At shutdown the heartbeat ends every session with 1012 "service restart".

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::session::{Ended, OutboundQueue};
use crate::wire::{CloseReason, Frame};

/// Milliseconds on the heartbeat's clock that mean "never".
const NEVER: u64 = u64::MAX;

/// Every session's pulse, and the task that checks them.
#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// The zero of the milliseconds kept in the pulses' atomics.
    epoch: Instant,
    sessions: Mutex<HashMap<u64, Arc<Pulse>>>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
}

/// One session's signs of life, written by its tasks, read by the heartbeat.
#[derive(Debug)]
pub struct Pulse {
    queue: Arc<OutboundQueue>,
    epoch: Instant,
    /// When the client last showed life; `None` for transports on which it cannot
    /// speak (SSE), whose only end is a failed write.
    last_life: Option<AtomicU64>,
    /// When the access token expires (`NEVER` without one).
    expires: AtomicU64,
    next_ping: AtomicU64,
    /// Since when a write to the client has been waiting (`NEVER`: none is).
    writing_since: AtomicU64,
}

/// A write under way (see [`Pulse::write_pending`]); dropping it says it is over.
#[derive(Debug)]
pub struct WritePending<'a>(&'a Pulse);

impl Drop for WritePending<'_> {
    fn drop(&mut self) {
        self.0.writing_since.store(NEVER, Ordering::Relaxed);
    }
}

impl Pulse {
    /// The client sent something, or took data off its socket: it is alive.
    pub fn saw_life(&self) {
        if let Some(last) = &self.last_life {
            last.store(millis(self.epoch), Ordering::Relaxed);
        }
    }

    /// A write to the client begins; it must go through within the timeout (until the
    /// returned guard is dropped), or the session ends.
    pub fn write_pending(&self) -> WritePending<'_> {
        self.writing_since
            .store(millis(self.epoch), Ordering::Relaxed);
        WritePending(self)
    }

    /// The session's access now expires at `at`.
    pub fn expires_at(&self, at: SystemTime) {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        let left = u64::try_from(left.as_millis()).unwrap_or(NEVER);
        let at = millis(self.epoch).saturating_add(left);
        self.expires.store(at, Ordering::Relaxed);
    }
}

/// A session's registration with the heartbeat; dropping it unregisters.
#[derive(Debug)]
pub struct Beating {
    heartbeat: Arc<Heartbeat>,
    id: u64,
    pulse: Arc<Pulse>,
}

impl Beating {
    pub fn pulse(&self) -> &Arc<Pulse> {
        &self.pulse
    }
}

impl Drop for Beating {
    fn drop(&mut self) {
        self.heartbeat.sessions.lock().remove(&self.id);
    }
}

impl Heartbeat {
    pub fn new(interval: Duration, timeout: Duration, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            interval,
            timeout,
            epoch: Instant::now(),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown,
        })
    }

    /// How often a session is pinged (announced to clients in `connected`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Starts beating for a session. `hears_client`: whether its client can speak, so
    /// that silence can end it. After shutdown began, the session is ended at once.
    pub fn register(self: &Arc<Self>, queue: Arc<OutboundQueue>, hears_client: bool) -> Beating {
        let now = millis(self.epoch);
        let pulse = Arc::new(Pulse {
            queue,
            epoch: self.epoch,
            last_life: hears_client.then(|| AtomicU64::new(now)),
            expires: AtomicU64::new(NEVER),
            next_ping: AtomicU64::new(now.saturating_add(self.interval.as_millis() as u64)),
            writing_since: AtomicU64::new(NEVER),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(id, Arc::clone(&pulse));
        // Checked after inserting, so a shutdown cannot slip between the check and the
        // registration: either this sees it, or the shutdown's sweep sees the session.
        if self.shutdown.is_cancelled() {
            pulse.queue.end(Ended::Closed(CloseReason::ServiceRestart));
        }
        Beating {
            heartbeat: Arc::clone(self),
            id,
            pulse,
        }
    }

    /// Beats until shutdown, then ends every session with "service restart".
    pub async fn run(self: Arc<Self>) {
        let tick = (self.interval.min(self.timeout) / 10)
            .clamp(Duration::from_millis(5), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = ticks.tick() => self.beat(),
            }
        }
        for pulse in self.pulses() {
            pulse.queue.end(Ended::Closed(CloseReason::ServiceRestart));
        }
    }

    /// One beat: pings where due, ends where the client went silent or access expired.
    fn beat(&self) {
        let now = millis(self.epoch);
        let timeout = self.timeout.as_millis() as u64;
        let interval = (self.interval.as_millis() as u64).max(1);
        let ping = Frame::ping();
        for pulse in self.pulses() {
            let silent = pulse
                .last_life
                .as_ref()
                .is_some_and(|last| now.saturating_sub(last.load(Ordering::Relaxed)) > timeout);
            let writing_since = pulse.writing_since.load(Ordering::Relaxed);
            let stuck = writing_since != NEVER && now.saturating_sub(writing_since) > timeout;
            if silent || stuck {
                pulse
                    .queue
                    .end(Ended::Closed(CloseReason::HeartbeatTimeout));
            } else if now >= pulse.expires.load(Ordering::Relaxed) {
                pulse.queue.end(Ended::Closed(CloseReason::TokenExpired));
            } else if now >= pulse.next_ping.load(Ordering::Relaxed) {
                pulse.next_ping.store(now + interval, Ordering::Relaxed);
                pulse.queue.push(ping.clone());
            }
        }
    }

    /// A snapshot of the registered pulses, so that no lock is held while queues are
    /// touched.
    fn pulses(&self) -> Vec<Arc<Pulse>> {
        self.sessions.lock().values().cloned().collect()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().len()
    }
}

fn millis(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EventKind;

    fn setup(
        interval: u64,
        timeout: u64,
    ) -> (
        Arc<Heartbeat>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let shutdown = CancellationToken::new();
        let hb = Heartbeat::new(
            Duration::from_secs(interval),
            Duration::from_secs(timeout),
            shutdown.clone(),
        );
        let task = tokio::spawn(Arc::clone(&hb).run());
        (hb, shutdown, task)
    }

    async fn next_frame(q: &OutboundQueue) -> Result<EventKind, Ended> {
        loop {
            let mut out = Vec::new();
            q.drain(&mut out)?;
            if let Some(f) = out.first() {
                return Ok(f.kind());
            }
            q.ready().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_then_ends_a_silent_client() {
        let (hb, _shutdown, _task) = setup(30, 75);
        let beating = hb.register(Arc::new(OutboundQueue::new(16, usize::MAX)), true);
        let q = &beating.pulse().queue;
        let start = Instant::now();
        assert_eq!(next_frame(q).await, Ok(EventKind::Ping));
        let first = start.elapsed();
        assert!(
            first >= Duration::from_secs(30) && first <= Duration::from_secs(31),
            "{first:?}"
        );
        assert_eq!(next_frame(q).await, Ok(EventKind::Ping));
        assert_eq!(
            next_frame(q).await,
            Err(Ended::Closed(CloseReason::HeartbeatTimeout))
        );
        let end = start.elapsed();
        assert!(
            end > Duration::from_secs(75) && end <= Duration::from_secs(76),
            "{end:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn life_pushes_the_deadline_back_and_sse_only_pings() {
        let (hb, _shutdown, _task) = setup(30, 60);
        let ws = hb.register(Arc::new(OutboundQueue::new(16, usize::MAX)), true);
        let sse = hb.register(Arc::new(OutboundQueue::new(16, usize::MAX)), false);
        tokio::time::sleep(Duration::from_secs(50)).await;
        ws.pulse().saw_life();
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert_eq!(ws.pulse().queue.ended_because(), None, "life at 50 s");
        let end = ws.pulse().queue.ended().await;
        assert_eq!(end, Ended::Closed(CloseReason::HeartbeatTimeout));
        let at = Instant::now().duration_since(hb.epoch);
        assert!(
            at > Duration::from_secs(110) && at <= Duration::from_secs(111),
            "{at:?}"
        );
        assert_eq!(
            sse.pulse().queue.ended_because(),
            None,
            "SSE is never timed out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_does_not_go_through_within_the_timeout_ends_even_an_sse_session() {
        let (hb, _shutdown, _task) = setup(30, 60);
        let sse = hb.register(Arc::new(OutboundQueue::new(16, usize::MAX)), false);
        {
            let _write = sse.pulse().write_pending();
            tokio::time::sleep(Duration::from_secs(50)).await;
        }
        // That one went through; the next waits past the timeout.
        let _write = sse.pulse().write_pending();
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert_eq!(sse.pulse().queue.ended_because(), None, "50 s of 60");
        let end = sse.pulse().queue.ended().await;
        assert_eq!(end, Ended::Closed(CloseReason::HeartbeatTimeout));
        let at = Instant::now().duration_since(hb.epoch);
        assert!(
            at > Duration::from_secs(110) && at <= Duration::from_secs(111),
            "{at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_ends_the_session_and_a_refresh_extends_it() {
        let (hb, _shutdown, _task) = setup(30, 75);
        let beating = hb.register(Arc::new(OutboundQueue::new(16, usize::MAX)), false);
        beating
            .pulse()
            .expires_at(SystemTime::now() + Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(5)).await;
        beating
            .pulse()
            .expires_at(SystemTime::now() + Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(beating.pulse().queue.ended_because(), None);
        assert_eq!(
            beating.pulse().queue.ended().await,
            Ended::Closed(CloseReason::TokenExpired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_every_session_even_one_that_registers_late() {
        let (hb, shutdown, task) = setup(30, 75);
        let early = hb.register(Arc::new(OutboundQueue::new(16, usize::MAX)), true);
        shutdown.cancel();
        task.await.unwrap();
        let late = hb.register(Arc::new(OutboundQueue::new(16, usize::MAX)), true);
        let restart = Some(Ended::Closed(CloseReason::ServiceRestart));
        assert_eq!(early.pulse().queue.ended_because(), restart);
        assert_eq!(late.pulse().queue.ended_because(), restart);
        drop((early, late));
        assert_eq!(hb.sessions(), 0, "dropping a registration unregisters");
    }
}
