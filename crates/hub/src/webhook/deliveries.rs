//! The recent delivery attempts of this hub, newest first, for
//! `GET /api/v1/webhooks/deliveries` (paged by a cursor). Kept in memory and bounded:
//! a look at what happened lately, not an archive (`/metrics` counts them all).

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::Serialize;

/// Attempts remembered; older ones are forgotten.
const KEPT: usize = 1_000;
/// Most attempts one page lists.
pub const MAX_PAGE: usize = 200;

/// One attempt to deliver one webhook to one endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// This attempt's place in the hub's log (the page cursor counts down from it).
    pub seq: u64,
    /// The webhook's `webhook-id`: the same on every retry of the event.
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: String,
    pub endpoint: String,
    /// 1 for the first attempt of this event to this endpoint by this hub.
    pub attempt: u32,
    /// When the attempt was made, RFC 3339 UTC.
    pub at: String,
    /// `delivered`, `gone` (410: endpoint disabled), `failed_status`,
    /// `failed_transport` (timeout, refused connection), or `skipped_watched` (not sent:
    /// a watcher received the `complete`; `attempt` 0, no endpoint).
    pub outcome: &'static str,
    pub status: Option<u16>,
    /// Whether the event is given up after this attempt (retried for too long).
    pub given_up: bool,
    pub duration_ms: u64,
}

/// One page: the attempts, and the cursor of the next page (older), if any.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    pub next_cursor: Option<u64>,
}

#[derive(Default)]
pub struct Deliveries {
    log: Mutex<(u64, VecDeque<Delivery>)>,
}

impl Deliveries {
    /// Records an attempt (its `seq` is given here).
    pub fn record(&self, mut delivery: Delivery) {
        let mut log = self.log.lock();
        log.0 += 1;
        delivery.seq = log.0;
        log.1.push_front(delivery);
        log.1.truncate(KEPT);
    }

    /// Up to `limit` attempts older than `cursor` (from the newest without one).
    pub fn page(&self, limit: usize, cursor: Option<u64>) -> DeliveryPage {
        let limit = limit.clamp(1, MAX_PAGE);
        let log = self.log.lock();
        let mut older = log.1.iter().filter(|d| cursor.is_none_or(|c| d.seq < c));
        let deliveries: Vec<Delivery> = older.by_ref().take(limit).cloned().collect();
        let next_cursor = match (older.next(), deliveries.last()) {
            (Some(_), Some(last)) => Some(last.seq),
            _ => None,
        };
        DeliveryPage {
            deliveries,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32) -> Delivery {
        Delivery {
            seq: 0,
            webhook_id: format!("msg_{n}"),
            kind: "job.completed".into(),
            project_id: "p".into(),
            endpoint: "http://x/".into(),
            attempt: n,
            at: String::new(),
            outcome: "delivered",
            status: Some(200),
            given_up: false,
            duration_ms: 1,
        }
    }

    #[test]
    fn pages_walk_from_the_newest_to_the_oldest_once() {
        let log = Deliveries::default();
        for n in 1..=5 {
            log.record(attempt(n));
        }
        let first = log.page(2, None);
        assert_eq!(
            first.deliveries.iter().map(|d| d.seq).collect::<Vec<_>>(),
            [5, 4]
        );
        let second = log.page(2, first.next_cursor);
        assert_eq!(
            second.deliveries.iter().map(|d| d.seq).collect::<Vec<_>>(),
            [3, 2]
        );
        let last = log.page(2, second.next_cursor);
        assert_eq!(
            last.deliveries.iter().map(|d| d.seq).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(last.next_cursor, None);
        assert!(log.page(0, Some(0)).deliveries.is_empty());
    }

    #[test]
    fn the_log_is_bounded() {
        let log = Deliveries::default();
        for n in 0..(KEPT as u32 + 10) {
            log.record(attempt(n));
        }
        assert_eq!(log.log.lock().1.len(), KEPT);
        assert_eq!(log.page(100_000, None).deliveries.len(), MAX_PAGE);
    }
}
