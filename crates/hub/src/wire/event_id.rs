//! Event ids: `<epoch>:<seq>`, the position of an event in its project's history.
//!
//! The epoch names one history: it is created with the history and replaced whenever
//! that history is lost (Redis restarted empty, keys expired, flushed). The sequence
//! number counts events within the epoch from 1. Two ids compare only within one epoch;
//! an id from another epoch cannot be resumed from, and the hub says so.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::Rng;
use rand::distr::Alphanumeric;

/// Length of a freshly minted epoch.
const EPOCH_LEN: usize = 10;
/// Longest epoch accepted when parsing.
const MAX_EPOCH_LEN: usize = 32;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    epoch: Arc<str>,
    seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event id must look like <epoch>:<sequence>, e.g. k3J9x2Qa7b:42")]
pub struct InvalidEventId;

impl EventId {
    pub fn new(epoch: &str, seq: u64) -> Self {
        Self {
            epoch: Arc::from(epoch),
            seq,
        }
    }

    /// A new random epoch, for a history that is being created.
    pub fn new_epoch() -> String {
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(EPOCH_LEN)
            .map(char::from)
            .collect()
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether this is the event right after `other` in the same history.
    pub fn follows(&self, other: &EventId) -> bool {
        self.epoch == other.epoch && self.seq == other.seq + 1
    }

    /// Whether `self` is in the same history as `other` and not after it.
    pub fn is_at_or_before(&self, other: &EventId) -> bool {
        self.epoch == other.epoch && self.seq <= other.seq
    }
}

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s.split_once(':').ok_or(InvalidEventId)?;
        if epoch.is_empty()
            || epoch.len() > MAX_EPOCH_LEN
            || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            || seq.is_empty()
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(InvalidEventId);
        }
        let seq = seq.parse().map_err(|_| InvalidEventId)?;
        Ok(Self::new(epoch, seq))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: EventId = "abcDEF123:42".parse().unwrap();
        assert_eq!((id.epoch(), id.seq()), ("abcDEF123", 42));
        assert_eq!(id.to_string(), "abcDEF123:42");
    }

    #[test]
    fn refuses_malformed_ids() {
        for bad in [
            "",
            "42",
            ":42",
            "abc:",
            "abc:-1",
            "abc:4x",
            "a b:1",
            "abc:1:2",
            "é:1",
            "abc:99999999999999999999999",
            &format!("{}:1", "a".repeat(33)),
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(InvalidEventId), "{bad:?}");
        }
    }

    #[test]
    fn compares_only_within_an_epoch() {
        let a5 = EventId::new("a", 5);
        assert!(EventId::new("a", 4).is_at_or_before(&a5));
        assert!(a5.is_at_or_before(&a5));
        assert!(!EventId::new("a", 6).is_at_or_before(&a5));
        assert!(!EventId::new("b", 1).is_at_or_before(&a5));
    }

    #[test]
    fn new_epochs_differ_and_parse() {
        let (a, b) = (EventId::new_epoch(), EventId::new_epoch());
        assert_ne!(a, b);
        assert!(format!("{a}:1").parse::<EventId>().is_ok());
    }
}
