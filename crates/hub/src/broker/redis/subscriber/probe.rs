//! The Pub/Sub liveness probe: PING on the subscriber proves the socket, not the
//! subscription. After a failover behind a proxy or a moved address, a subscriber can
//! keep answering PING while nothing is delivered to it any more (Centrifugo #1189).
//!
//! So every keep-alive interval the hub publishes a numbered message on channels of its
//! own (`layout::probe_channel`, per hub process; on a cluster one per primary, each in
//! a slot that primary serves), through the command connection, the way events are
//! published; the subscriber connection subscribes them like a project's channel. The
//! probe is back when it came back on every one of them. A probe not back [`BOUND`]
//! after Redis accepted its publish makes the subscriber give the connection up: it is
//! rebuilt, resubscribed and every watched project's gap filled from history, as after
//! any lost connection. From the miss until a probe
//! comes back, the broker is not ready (`/readyz` 503, reason `pubsub_probe_missed`).
//!
//! Only one probe is outstanding at a time; its number tells a late answer to an earlier
//! probe (ignored) from the one awaited. The bound runs from the moment Redis answered
//! the probe's last PUBLISH (Redis delivers to subscribers while executing it), so a
//! slow command connection does not pass for a deaf subscription.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::metrics as m;

/// The least time a probe is given to come back, whatever the keep-alive interval: a
/// round trip on a loaded host must not pass for a dead subscription. The subscriber
/// checks a probe this long after its publish (and again at each keep-alive tick), so a
/// miss is seen at most one keep-alive interval plus this after deliveries stop.
pub(in crate::broker::redis) const BOUND: Duration = Duration::from_secs(1);

/// The probe of one hub process. Shared by the subscriber loop (which sends and checks)
/// and the connection's message handler (which receives).
pub(in crate::broker::redis) struct Probe {
    /// Random per process, so that hubs on one Redis never answer each other's probes.
    instance: String,
    state: Mutex<State>,
    /// Set from a missed probe until one comes back; read by `/readyz`.
    failing: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// The number of the next probe.
    next: u64,
    /// On how many channels each probe travels (set per connection).
    channels: usize,
    /// The probe awaited: its number, when it was sent, and when Redis confirmed its
    /// publish (the bound runs from then; until then, from when it was sent).
    pending: Option<Pending>,
}

struct Pending {
    n: u64,
    sent: Instant,
    published: Instant,
    /// The channels (by index) it has not come back on yet.
    outstanding: Vec<usize>,
}

/// What the keep-alive tick should do about the probe.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::broker::redis) enum Due {
    /// Send probe number `n`.
    Send(u64),
    /// One is on its way and still within its bound.
    Wait,
    /// The awaited probe did not come back within the bound.
    Missed(Duration),
}

impl Probe {
    /// A probe with a random instance id.
    pub(in crate::broker::redis) fn new(failing: Arc<AtomicBool>) -> Self {
        let instance: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        Self {
            instance,
            state: Mutex::new(State::default()),
            failing,
        }
    }

    /// The random id naming this process's probe channel.
    pub(in crate::broker::redis) fn instance(&self) -> &str {
        &self.instance
    }

    /// At a keep-alive tick: send a new probe, wait for the one under way, or report it
    /// missed. A miss forgets the probe, so the next connection starts afresh.
    pub(in crate::broker::redis) fn due(&self, now: Instant) -> Due {
        if let Some(late) = self.overdue(now) {
            return Due::Missed(late);
        }
        let mut state = self.lock();
        match state.pending {
            Some(_) => Due::Wait,
            None => {
                let n = state.next;
                state.next += 1;
                state.pending = Some(Pending {
                    n,
                    sent: now,
                    published: now,
                    outstanding: (0..state.channels).collect(),
                });
                Due::Send(n)
            }
        }
    }

    /// If the awaited probe is [`BOUND`] past its publish at `now`: how long past its
    /// publish. It is then missed: forgotten, counted, and the broker not ready until a
    /// probe comes back.
    pub(in crate::broker::redis) fn overdue(&self, now: Instant) -> Option<Duration> {
        let mut state = self.lock();
        let late = now.duration_since(state.pending.as_ref()?.published);
        if late < BOUND {
            return None;
        }
        state.pending = None;
        self.failing.store(true, Ordering::Relaxed);
        m::pubsub_probe_failed();
        Some(late)
    }

    /// Redis answered probe `n`'s publish at `now`: it has been delivered, if the
    /// subscription is alive. The bound starts here.
    pub(in crate::broker::redis) fn published(&self, n: u64, now: Instant) {
        if let Some(p) = self.lock().pending.as_mut()
            && p.n == n
        {
            p.published = now;
        }
    }

    /// Probe `n` could not be published (the command connection failed): not awaited,
    /// since it cannot come back. A dead Redis is the PING keep-alive's to find.
    pub(in crate::broker::redis) fn not_sent(&self, n: u64) {
        let mut state = self.lock();
        if matches!(&state.pending, Some(p) if p.n == n) {
            state.pending = None;
        }
    }

    /// A message arrived on probe channel number `channel`: once the awaited probe has
    /// come back on every channel, the subscription is alive.
    pub(in crate::broker::redis) fn received(&self, channel: usize, payload: &[u8]) {
        let mut state = self.lock();
        let Some(p) = state.pending.as_mut() else {
            return;
        };
        if payload != p.n.to_string().as_bytes() {
            return;
        }
        p.outstanding.retain(|c| *c != channel);
        if p.outstanding.is_empty() {
            m::pubsub_probe_round_trip(p.sent.elapsed());
            state.pending = None;
            if self.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("redis pub/sub probe received again; the subscription is alive");
            }
        }
    }

    /// A new connection, whose probes travel on `channels` channels: forgets the awaited
    /// probe (what the old connection would have received never arrives).
    pub(in crate::broker::redis) fn reset(&self, channels: usize) {
        let mut state = self.lock();
        state.pending = None;
        state.channels = channels;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but a poisoned state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> (Probe, Arc<AtomicBool>) {
        let failing = Arc::new(AtomicBool::new(false));
        (Probe::new(Arc::clone(&failing)), failing)
    }

    #[test]
    fn a_probe_that_comes_back_is_not_missed() {
        let (probe, failing) = probe();
        let t0 = Instant::now();
        assert_eq!(probe.due(t0), Due::Send(0));
        assert_eq!(probe.due(t0 + Duration::from_millis(999)), Due::Wait);
        probe.received(0, b"0");
        assert_eq!(probe.due(t0 + Duration::from_secs(6)), Due::Send(1));
        assert!(!failing.load(Ordering::Relaxed));
    }

    #[test]
    fn a_probe_not_back_within_the_bound_is_missed_until_one_returns() {
        let (probe, failing) = probe();
        let t0 = Instant::now();
        assert_eq!(probe.due(t0), Due::Send(0));
        // A late answer to another probe does not count.
        probe.received(0, b"7");
        assert_eq!(
            probe.due(t0 + Duration::from_secs(5)),
            Due::Missed(Duration::from_secs(5))
        );
        assert!(failing.load(Ordering::Relaxed));
        // The next connection's probe comes back: ready again.
        assert_eq!(probe.due(t0 + Duration::from_secs(6)), Due::Send(1));
        probe.received(0, b"0");
        assert!(
            failing.load(Ordering::Relaxed),
            "probe 0's answer came too late"
        );
        probe.received(0, b"1");
        assert!(!failing.load(Ordering::Relaxed));
    }

    #[test]
    fn the_bound_is_a_second() {
        let (probe, _) = probe();
        let t0 = Instant::now();
        assert_eq!(probe.due(t0), Due::Send(0));
        assert_eq!(probe.due(t0 + Duration::from_millis(999)), Due::Wait);
        assert!(matches!(
            probe.due(t0 + Duration::from_secs(1)),
            Due::Missed(_)
        ));
    }

    #[test]
    fn the_bound_runs_from_the_confirmed_publish() {
        let (probe, _) = probe();
        let t0 = Instant::now();
        assert_eq!(probe.due(t0), Due::Send(0));
        // The command connection took 4 s to publish it.
        probe.published(0, t0 + Duration::from_secs(4));
        assert_eq!(probe.due(t0 + Duration::from_millis(4500)), Due::Wait);
        assert_eq!(
            probe.due(t0 + Duration::from_secs(6)),
            Due::Missed(Duration::from_secs(2))
        );
    }

    #[test]
    fn an_overdue_check_reports_only_a_late_probe() {
        let (probe, failing) = probe();
        let t0 = Instant::now();
        assert_eq!(
            probe.overdue(t0 + Duration::from_secs(9)),
            None,
            "none awaited"
        );
        assert_eq!(probe.due(t0), Due::Send(0));
        probe.published(0, t0);
        assert_eq!(probe.overdue(t0 + Duration::from_millis(999)), None);
        assert!(!failing.load(Ordering::Relaxed));
        assert_eq!(
            probe.overdue(t0 + Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
        assert!(failing.load(Ordering::Relaxed));
        assert_eq!(
            probe.overdue(t0 + Duration::from_secs(2)),
            None,
            "missed once"
        );
    }

    #[test]
    fn a_probe_is_back_when_back_on_every_channel() {
        let (probe, failing) = probe();
        probe.reset(3);
        let t0 = Instant::now();
        assert_eq!(probe.due(t0), Due::Send(0));
        probe.received(0, b"0");
        probe.received(2, b"0");
        probe.received(2, b"0");
        assert!(matches!(
            probe.due(t0 + Duration::from_secs(1)),
            Due::Missed(_)
        ));
        assert!(failing.load(Ordering::Relaxed), "channel 1 never answered");
        assert_eq!(probe.due(t0 + Duration::from_secs(2)), Due::Send(1));
        for channel in 0..3 {
            probe.received(channel, b"1");
        }
        assert!(!failing.load(Ordering::Relaxed));
        assert_eq!(probe.due(t0 + Duration::from_secs(2)), Due::Send(2));
    }

    #[test]
    fn a_probe_that_could_not_be_sent_is_not_awaited() {
        let (probe, failing) = probe();
        let t0 = Instant::now();
        assert_eq!(probe.due(t0), Due::Send(0));
        probe.not_sent(0);
        assert_eq!(probe.due(t0 + Duration::from_secs(10)), Due::Send(1));
        assert!(!failing.load(Ordering::Relaxed));
    }
}
