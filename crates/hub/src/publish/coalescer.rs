//! Coalescing of `progress_update`: at most one per window per project, the newest
//! wins, and none is lost.
//!
//! The first update of a window goes out at once. Later ones in the same window wait
//! in a one-slot buffer (each replacing the last) and the survivor goes out when the
//! window ends. Any other event (stage change, log, error, complete) is never held: it
//! first flushes a waiting update, so the order a worker published in is the order
//! clients see. Publishes of one project are serialized by its slot's lock.
//!
//! A held update is never dropped silently: a flush that fails keeps it (unless a newer
//! one replaced it) and tries again a window later, for up to `FLUSH_RETRY_FOR`; only
//! then is it given up, with an error log and `hub_progress_lost_total`. Slots of idle
//! projects are swept from the map as it grows, so it holds about as many slots as
//! there are active projects.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex as SyncMutex;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::broker::PreparedEvent;
use crate::wire::{EventKind, ProjectId};

/// How long a held update whose flush keeps failing is retried.
pub const FLUSH_RETRY_FOR: Duration = Duration::from_secs(120);

/// Below this many slots the map is not swept.
const SWEEP_FLOOR: usize = 64;

#[derive(Default)]
pub struct Slot {
    /// When the last `progress_update` of this project went out.
    last_sent: Option<Instant>,
    /// The newest update waiting for the window to end.
    pending: Option<Held>,
    /// A task will flush `pending` at the end of the window.
    flush_scheduled: bool,
}

/// An event as submitted, prepared once (`prepare.rs`), with what it is published with
/// however many attempts that takes: its receipt (an attempt that timed out but reached
/// Redis is not published twice; a caller's idempotency key when it gave one) and the
/// job claim it was published under (a held update goes out under its own claim, not
/// under the claim of whichever publish of the project happens to flush it).
pub type Held = PreparedEvent;

impl Slot {
    /// Keeps an update that could not be sent, unless a newer one is already waiting:
    /// its next send is a retry (an attempt may have been done).
    pub fn keep(&mut self, mut held: Held) {
        held.retry = true;
        self.pending.get_or_insert(held);
    }
}

struct Slots {
    map: HashMap<ProjectId, Arc<Mutex<Slot>>>,
    /// The map's size after the last sweep; the next sweep is due at twice it.
    swept_at: usize,
}

pub struct Coalescer {
    window: Duration,
    slots: SyncMutex<Slots>,
}

/// What `submit` decided.
pub enum Decision {
    /// Send now: a waiting update first (if any), then the event.
    Send {
        flushed: Option<Box<Held>>,
        event: Box<Held>,
    },
    /// Held; a flush is due at this instant (schedule it if `schedule` is set).
    Held { flush_at: Instant, schedule: bool },
}

impl Coalescer {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: SyncMutex::new(Slots {
                map: HashMap::new(),
                swept_at: 0,
            }),
        }
    }

    /// The project's slot. Whoever holds the returned `Arc` keeps the slot in the map.
    pub fn slot(&self, project: &ProjectId) -> Arc<Mutex<Slot>> {
        let mut slots = self.slots.lock();
        if !slots.map.contains_key(project)
            && slots.map.len() >= slots.swept_at.max(SWEEP_FLOOR) * 2
        {
            self.sweep(&mut slots);
        }
        Arc::clone(slots.map.entry(project.clone()).or_default())
    }

    /// Removes slots nobody holds (no publish and no flush in progress: the map's `Arc`
    /// is the only one, and it cannot be cloned without this lock) whose window is
    /// over: forgetting them changes nothing, the next update goes out at once anyway.
    fn sweep(&self, slots: &mut Slots) {
        let now = Instant::now();
        slots.map.retain(|_, slot| {
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            match slot.try_lock() {
                Ok(slot) => {
                    slot.pending.is_some() || slot.last_sent.is_some_and(|t| now < t + self.window)
                }
                Err(_) => true,
            }
        });
        slots.swept_at = slots.map.len();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().map.len()
    }

    /// Decides what to do with `event`, given the locked slot.
    pub fn decide(&self, slot: &mut Slot, event: Held) -> Decision {
        let now = Instant::now();
        // Anything but a progress update, and a QUEUED one (the start of a run, which
        // must neither wait nor be superseded) or one giving the run its tags, goes out
        // now, after the one held.
        if event.kind != EventKind::ProgressUpdate
            || event.state.starts_run
            || event.state.tags.is_some()
        {
            let flushed = slot.pending.take().map(Box::new);
            if flushed.is_some() {
                slot.last_sent = Some(now);
            }
            return Decision::Send {
                flushed,
                event: Box::new(event),
            };
        }
        let window_open = slot.last_sent.is_some_and(|t| now < t + self.window);
        if !window_open && slot.pending.is_none() {
            slot.last_sent = Some(now);
            return Decision::Send {
                flushed: None,
                event: Box::new(event),
            };
        }
        slot.pending = Some(event);
        let flush_at = slot.last_sent.map_or(now, |t| t + self.window);
        let schedule = !slot.flush_scheduled;
        slot.flush_scheduled = true;
        Decision::Held { flush_at, schedule }
    }

    /// At the end of a window: takes the waiting update, if any.
    pub fn take_due(&self, slot: &mut Slot) -> Option<Held> {
        slot.flush_scheduled = false;
        let waiting = slot.pending.take();
        if waiting.is_some() {
            slot.last_sent = Some(Instant::now());
        }
        waiting
    }

    /// Runs `flush` for `slot` at `at` (the end of its window); while it fails, keeps
    /// the update and tries again each window, for up to `FLUSH_RETRY_FOR`.
    pub async fn flush_at<F, Fut, E>(&self, slot: Arc<Mutex<Slot>>, at: Instant, mut flush: F)
    where
        F: FnMut(Held) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let give_up = at + FLUSH_RETRY_FOR;
        let mut at = at;
        loop {
            tokio::time::sleep_until(at).await;
            let mut slot = slot.lock().await;
            let Some(held) = self.take_due(&mut slot) else {
                return;
            };
            let Err(err) = flush(held.clone()).await else {
                return;
            };
            if Instant::now() >= give_up {
                tracing::error!(error = %err, "a coalesced progress_update could not be published for {FLUSH_RETRY_FOR:?}; giving it up");
                crate::metrics::progress_lost();
                return;
            }
            tracing::warn!(error = %err, "a coalesced progress_update could not be published yet; retrying");
            crate::metrics::progress_flush_retried();
            slot.keep(held);
            slot.flush_scheduled = true;
            at = Instant::now() + self.window;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locale::Locale;
    use crate::publish::prepare::prepare;
    use crate::wire::event::{Log, LogLevel, ProgressUpdate};
    use crate::wire::{Event, Stage};

    fn held(event: Event) -> Held {
        let project = ProjectId::parse("p").unwrap();
        prepare(event, &project, Locale::En, None, None).unwrap()
    }

    fn progress(p: u8) -> Event {
        Event::ProgressUpdate(ProgressUpdate {
            status: Stage::Rendering.into(),
            progress: p,
            current_stage: String::new(),
            estimated_remaining: None,
            job_id: None,
            queue_position: None,
            units_done: None,
            units_total: None,
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
            Decision::Send { flushed, event } => flushed
                .iter()
                .map(|h| &**h)
                .chain([&**event])
                .map(|h| h.template.progress)
                .collect(),
            Decision::Held { .. } => panic!("held"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_goes_out_later_ones_wait_and_the_newest_wins() {
        let c = Coalescer::new(Duration::from_millis(500));
        let mut slot = Slot::default();
        assert_eq!(
            sent_progress(&c.decide(&mut slot, held(progress(1)))),
            [Some(1)]
        );
        assert!(matches!(
            c.decide(&mut slot, held(progress(2))),
            Decision::Held { schedule: true, .. }
        ));
        assert!(matches!(
            c.decide(&mut slot, held(progress(3))),
            Decision::Held {
                schedule: false,
                ..
            }
        ));
        assert_eq!(
            c.take_due(&mut slot).map(|h| h.template.progress),
            Some(Some(3))
        );
        assert!(c.take_due(&mut slot).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn other_events_flush_the_waiting_update_first() {
        let c = Coalescer::new(Duration::from_millis(500));
        let mut slot = Slot::default();
        c.decide(&mut slot, held(progress(1)));
        c.decide(&mut slot, held(progress(2)));
        assert_eq!(
            sent_progress(&c.decide(&mut slot, held(log()))),
            [Some(2), None]
        );
        assert_eq!(sent_progress(&c.decide(&mut slot, held(log()))), [None]);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_of_idle_projects_are_swept() {
        let c = Coalescer::new(Duration::from_millis(500));
        let project = |i: usize| ProjectId::parse(&format!("p{i}")).unwrap();
        // A project with an update waiting, and one whose window is open, stay.
        let busy = c.slot(&project(0));
        c.decide(&mut *busy.lock().await, held(progress(1)));
        c.decide(&mut *busy.lock().await, held(progress(2)));
        drop(busy);
        for i in 1..=1000 {
            let slot = c.slot(&project(i));
            c.decide(&mut *slot.lock().await, held(progress(1)));
            if i % 100 == 0 {
                tokio::time::advance(Duration::from_millis(600)).await;
            }
        }
        assert!(c.len() < 300, "idle slots are swept: {} left", c.len());
        let held = c.slot(&project(0));
        assert!(
            held.lock().await.pending.is_some(),
            "a slot with a waiting update is never swept"
        );
        // A slot in use (its Arc held) is never swept, even when idle.
        let in_use = c.slot(&project(5000));
        for i in 1001..=3000 {
            drop(c.slot(&project(i)));
        }
        assert!(Arc::ptr_eq(&in_use, &c.slot(&project(5000))));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_window_an_update_goes_out_at_once() {
        let c = Coalescer::new(Duration::from_millis(500));
        let mut slot = Slot::default();
        c.decide(&mut slot, held(progress(1)));
        tokio::time::advance(Duration::from_millis(501)).await;
        assert_eq!(
            sent_progress(&c.decide(&mut slot, held(progress(2)))),
            [Some(2)]
        );
    }
}
