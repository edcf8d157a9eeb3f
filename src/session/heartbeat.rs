//! The heartbeat: a `ping` frame every interval, and a deadline that any sign of life
//! from the client pushes back. One timer pair per session, owned by its task: nothing
//! reads the socket but the session itself.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

pub struct Heartbeat {
    ping: Interval,
    /// When the client will be considered gone; `None` when the transport cannot hear
    /// the client (SSE), so only a failed write ends the session.
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

/// What the heartbeat asks of the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    SendPing,
    TimedOut,
}

impl Heartbeat {
    pub fn new(interval: Duration, timeout: Duration, enforce_timeout: bool) -> Self {
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            ping,
            deadline: enforce_timeout.then(|| Box::pin(tokio::time::sleep(timeout))),
            timeout,
        }
    }

    /// The client sent something: it is alive.
    pub fn saw_life(&mut self) {
        if let Some(deadline) = &mut self.deadline {
            deadline.as_mut().reset(Instant::now() + self.timeout);
        }
    }

    /// The next thing to do. Cancel-safe.
    pub async fn next(&mut self) -> Beat {
        tokio::select! {
            _ = self.ping.tick() => Beat::SendPing,
            () = Self::expiry(&mut self.deadline) => Beat::TimedOut,
        }
    }

    /// Resolves when the client has been silent too long. Cancel-safe.
    pub async fn expired(&mut self) {
        Self::expiry(&mut self.deadline).await;
    }

    async fn expiry(deadline: &mut Option<Pin<Box<Sleep>>>) {
        match deadline {
            Some(deadline) => deadline.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_times_out_without_life() {
        let mut hb = Heartbeat::new(Duration::from_secs(30), Duration::from_secs(75), true);
        let start = Instant::now();
        assert_eq!(hb.next().await, Beat::SendPing);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(hb.next().await, Beat::SendPing);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        assert_eq!(hb.next().await, Beat::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn life_pushes_the_deadline_back() {
        let mut hb = Heartbeat::new(Duration::from_secs(30), Duration::from_secs(60), true);
        tokio::time::sleep(Duration::from_secs(50)).await;
        hb.saw_life();
        let start = Instant::now();
        hb.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn without_enforcement_it_only_pings() {
        let mut hb = Heartbeat::new(Duration::from_secs(1), Duration::from_secs(2), false);
        for _ in 0..5 {
            assert_eq!(hb.next().await, Beat::SendPing);
        }
    }
}
