//! Coalescing of `progress_update`: at most one per window per project, the newest
//! wins, and none is lost.
//!
//! The first update of a window goes out at once. Later ones in the same window wait
//! in a one-slot buffer (each replacing the last) and the survivor goes out when the
//! window ends. Any other event (stage change, log, error, complete) is never held: it
//! first flushes a waiting update, so the order a worker published in is the order
//! clients see. Publishes of one project are serialized by its slot's lock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::wire::{Event, ProjectId};

#[derive(Default)]
pub struct Slot {
    /// When the last `progress_update` of this project went out.
    last_sent: Option<Instant>,
    /// The newest update waiting for the window to end.
    pending: Option<Event>,
    /// A task will flush `pending` at the end of the window.
    flush_scheduled: bool,
}

pub struct Coalescer {
    window: Duration,
    slots: StdMutex<HashMap<ProjectId, Arc<Mutex<Slot>>>>,
}

/// What `submit` decided.
pub enum Decision {
    /// Send these now, in order (a flushed waiting update first, if any).
    Send(Vec<Event>),
    /// Held; a flush is due at this instant (schedule it if `schedule` is set).
    Held { flush_at: Instant, schedule: bool },
}

impl Coalescer {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: StdMutex::new(HashMap::new()),
        }
    }

    pub fn slot(&self, project: &ProjectId) -> Arc<Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(project.clone()).or_default())
    }

    /// Forgets a project's slot once its run is complete.
    pub fn forget(&self, project: &ProjectId) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(project);
    }

    /// Decides what to do with `event`, given the locked slot.
    pub fn decide(&self, slot: &mut Slot, event: Event) -> Decision {
        let now = Instant::now();
        if !matches!(event, Event::ProgressUpdate(_)) {
            let mut out = Vec::with_capacity(2);
            if let Some(waiting) = slot.pending.take() {
                slot.last_sent = Some(now);
                out.push(waiting);
            }
            out.push(event);
            return Decision::Send(out);
        }
        let window_open = slot.last_sent.is_some_and(|t| now < t + self.window);
        if !window_open && slot.pending.is_none() {
            slot.last_sent = Some(now);
            return Decision::Send(vec![event]);
        }
        slot.pending = Some(event);
        let flush_at = slot.last_sent.map_or(now, |t| t + self.window);
        let schedule = !slot.flush_scheduled;
        slot.flush_scheduled = true;
        Decision::Held { flush_at, schedule }
    }

    /// At the end of a window: takes the waiting update, if any.
    pub fn take_due(&self, slot: &mut Slot) -> Option<Event> {
        slot.flush_scheduled = false;
        let waiting = slot.pending.take();
        if waiting.is_some() {
            slot.last_sent = Some(Instant::now());
        }
        waiting
    }
}

/// Runs `flush` for `slot` at `at` (the end of its window).
pub async fn flush_at<F, Fut>(coalescer: &Coalescer, slot: Arc<Mutex<Slot>>, at: Instant, flush: F)
where
    F: FnOnce(Event) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::time::sleep_until(at).await;
    let mut slot = slot.lock().await;
    if let Some(event) = coalescer.take_due(&mut slot) {
        flush(event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Stage;
    use crate::wire::event::{Log, LogLevel, ProgressUpdate};

    fn progress(p: u8) -> Event {
        Event::ProgressUpdate(ProgressUpdate {
            status: Stage::Rendering,
            progress: p,
            current_stage: String::new(),
            estimated_remaining: None,
            timestamp: None,
        })
    }

    fn log() -> Event {
        Event::Log(Log {
            level: LogLevel::Info,
            message: "x".into(),
            timestamp: None,
        })
    }

    fn sent_progress(d: &Decision) -> Vec<Option<u8>> {
        match d {
            Decision::Send(events) => events
                .iter()
                .map(|e| match e {
                    Event::ProgressUpdate(p) => Some(p.progress),
                    _ => None,
                })
                .collect(),
            Decision::Held { .. } => panic!("held"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_goes_out_later_ones_wait_and_the_newest_wins() {
        let c = Coalescer::new(Duration::from_millis(500));
        let mut slot = Slot::default();
        assert_eq!(sent_progress(&c.decide(&mut slot, progress(1))), [Some(1)]);
        assert!(matches!(
            c.decide(&mut slot, progress(2)),
            Decision::Held { schedule: true, .. }
        ));
        assert!(matches!(
            c.decide(&mut slot, progress(3)),
            Decision::Held {
                schedule: false,
                ..
            }
        ));
        match c.take_due(&mut slot) {
            Some(Event::ProgressUpdate(p)) => assert_eq!(p.progress, 3),
            other => panic!("{other:?}"),
        }
        assert!(c.take_due(&mut slot).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn other_events_flush_the_waiting_update_first() {
        let c = Coalescer::new(Duration::from_millis(500));
        let mut slot = Slot::default();
        c.decide(&mut slot, progress(1));
        c.decide(&mut slot, progress(2));
        assert_eq!(sent_progress(&c.decide(&mut slot, log())), [Some(2), None]);
        assert_eq!(sent_progress(&c.decide(&mut slot, log())), [None]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_window_an_update_goes_out_at_once() {
        let c = Coalescer::new(Duration::from_millis(500));
        let mut slot = Slot::default();
        c.decide(&mut slot, progress(1));
        tokio::time::advance(Duration::from_millis(501)).await;
        assert_eq!(sent_progress(&c.decide(&mut slot, progress(2))), [Some(2)]);
    }
}
