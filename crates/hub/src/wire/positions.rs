//! Every project's position on a multiplexed SSE stream (`GET /api/v1/progress/events`),
//! as one SSE `id:`, so that the browser's `Last-Event-ID` resumes all of them at once.
//!
//! Format: `m1.<list>.<pos>,<pos>,...`
//! - `m1`: this format's version;
//! - `<list>`: 8 lowercase hex digits, the FNV-1a (32 bits) of the stream's `projects`
//!   query value as sent (`a,b`): it ties the id to the project list it was made for,
//!   so that an id is never read against another list (refused instead);
//! - `<pos>`: one per project of the list, in its order: the project's last event id
//!   (`<epoch>:<seq>`), or empty when it has none (it opens with a snapshot). Empty
//!   positions at the end are left out.
//!
//! Bounded: a stream names at most [`MAX_PROJECTS`] projects, so an id is at most
//! [`MAX_LEN`] bytes (a hub's epochs are 10 characters: ~15 bytes per project in
//! practice). Anything longer, another version, another list's digest, more positions
//! than projects, or a position that is not an event id is refused ([`InvalidPositions`]).
//! Only the list's projects can be named, each only by its place, so an id can move a
//! subscription's resume position and nothing else (access is checked per subscription).

use std::fmt::Write as _;

use super::EventId;

/// Most projects one multiplexed SSE stream names (more: a tag, or the WebSocket).
pub const MAX_PROJECTS: usize = 100;
/// Longest position accepted: a 32-character epoch, `:`, a 20-digit `u64`.
const MAX_POSITION_LEN: usize = 32 + 1 + 20;
const VERSION: &str = "m1";
/// Longest id accepted: version, digest, two dots, and every position with its comma.
pub const MAX_LEN: usize = VERSION.len() + 1 + 8 + 1 + MAX_PROJECTS * (MAX_POSITION_LEN + 1);

/// Why a `Last-Event-ID` was refused. The message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPositions {
    #[error("Last-Event-ID is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error(
        "Last-Event-ID must be an id this stream gave (m1.<list>.<epoch>:<seq>,...), or a single project's event id when the stream names one project"
    )]
    Malformed,
    #[error(
        "Last-Event-ID was given by a stream of another project list: reconnect without it, or with the same projects= as before"
    )]
    OtherList,
    #[error("Last-Event-ID holds more positions than the stream names projects")]
    TooMany,
}

/// The positions of a stream's projects (by their place in its `projects` list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions {
    digest: u32,
    at: Vec<Option<EventId>>,
}

impl Positions {
    /// No position yet for any of `count` projects of the list `projects` (the query
    /// value as sent).
    pub fn new(projects: &str, count: usize) -> Self {
        Self {
            digest: fnv1a(projects),
            at: vec![None; count],
        }
    }

    /// Reads a `Last-Event-ID` given to a stream of `count` projects listed as
    /// `projects`. A bare event id (`<epoch>:<seq>`) is taken as the position of a
    /// stream's only project (what a single-project id means).
    pub fn parse(raw: &str, projects: &str, count: usize) -> Result<Self, InvalidPositions> {
        let mut positions = Self::new(projects, count);
        let raw = raw.trim();
        if raw.len() > MAX_LEN {
            return Err(InvalidPositions::TooLong);
        }
        if raw.is_empty() {
            return Ok(positions);
        }
        let Some(rest) = raw.strip_prefix("m1.") else {
            return match (count, raw.parse::<EventId>()) {
                (1, Ok(id)) => {
                    positions.at[0] = Some(id);
                    Ok(positions)
                }
                _ => Err(InvalidPositions::Malformed),
            };
        };
        let (digest, list) = rest.split_once('.').ok_or(InvalidPositions::Malformed)?;
        if digest.len() != 8
            || !digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(InvalidPositions::Malformed);
        }
        let digest = u32::from_str_radix(digest, 16).map_err(|_| InvalidPositions::Malformed)?;
        if digest != positions.digest {
            return Err(InvalidPositions::OtherList);
        }
        for (place, position) in list.split(',').enumerate() {
            if position.is_empty() {
                continue;
            }
            let slot = positions
                .at
                .get_mut(place)
                .ok_or(InvalidPositions::TooMany)?;
            *slot = Some(position.parse().map_err(|_| InvalidPositions::Malformed)?);
        }
        Ok(positions)
    }

    /// The position of the project at `place`.
    pub fn get(&self, place: usize) -> Option<&EventId> {
        self.at.get(place).and_then(Option::as_ref)
    }

    /// Moves the project at `place` to `position` (`None`: a snapshot with no history).
    pub fn set(&mut self, place: usize, position: Option<EventId>) {
        if let Some(slot) = self.at.get_mut(place) {
            *slot = position;
        }
    }

    /// The SSE `id:` that resumes every project where it stands.
    pub fn encode(&self) -> String {
        let used = self
            .at
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        let mut id = String::with_capacity(12 + used * 16);
        let _ = write!(id, "{VERSION}.{:08x}.", self.digest);
        for (place, position) in self.at[..used].iter().enumerate() {
            if place > 0 {
                id.push(',');
            }
            if let Some(position) = position {
                let _ = write!(id, "{position}");
            }
        }
        id
    }
}

/// FNV-1a, 32 bits: a checksum of the project list, not a secret.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_leaves_trailing_empties_out() {
        let mut positions = Positions::new("a,b,c", 3);
        assert_eq!(positions.encode(), format!("m1.{:08x}.", fnv1a("a,b,c")));
        positions.set(0, Some(EventId::new("k3J9x2Qa7b", 42)));
        positions.set(1, Some(EventId::new("zz", 7)));
        positions.set(1, None);
        let id = positions.encode();
        assert!(id.ends_with(".k3J9x2Qa7b:42"), "{id}");
        assert_eq!(Positions::parse(&id, "a,b,c", 3), Ok(positions.clone()));
        positions.set(2, Some(EventId::new("q", 1)));
        let id = positions.encode();
        assert!(id.ends_with(".k3J9x2Qa7b:42,,q:1"), "{id}");
        assert_eq!(Positions::parse(&id, "a,b,c", 3), Ok(positions));
    }

    #[test]
    fn a_bare_event_id_is_the_position_of_a_single_project() {
        let positions = Positions::parse("e:5", "a", 1).unwrap();
        assert_eq!(positions.get(0), Some(&EventId::new("e", 5)));
        assert_eq!(
            Positions::parse("e:5", "a,b", 2),
            Err(InvalidPositions::Malformed)
        );
        assert_eq!(Positions::parse("  ", "a,b", 2).unwrap().get(0), None);
    }

    #[test]
    fn refuses_hostile_ids() {
        let list = "a,b";
        let good = Positions::new(list, 2).encode();
        let prefix = good.trim_end_matches('.');
        for (raw, why) in [
            ("m2.00000000.e:1".to_string(), InvalidPositions::Malformed),
            ("m1.e:1".into(), InvalidPositions::Malformed),
            ("m1.0000000g.e:1".into(), InvalidPositions::Malformed),
            ("m1.ABCDEF01.e:1".into(), InvalidPositions::Malformed),
            ("m1.00000000.e:1".into(), InvalidPositions::OtherList),
            (format!("{prefix}.e:1,e:2,e:3"), InvalidPositions::TooMany),
            (format!("{prefix}.e:x"), InvalidPositions::Malformed),
            (format!("{prefix}.e:1\nid: x"), InvalidPositions::Malformed),
            (format!("{prefix}.é:1"), InvalidPositions::Malformed),
            (
                format!("{prefix}.{}", ",".repeat(MAX_LEN)),
                InvalidPositions::TooLong,
            ),
        ] {
            assert_eq!(Positions::parse(&raw, list, 2), Err(why), "{raw:?}");
        }
    }

    #[test]
    fn the_longest_id_fits_the_bound() {
        let list = vec!["p"; MAX_PROJECTS].join(",");
        let mut positions = Positions::new(&list, MAX_PROJECTS);
        let epoch = "e".repeat(32);
        for place in 0..MAX_PROJECTS {
            positions.set(place, Some(EventId::new(&epoch, u64::MAX)));
        }
        let id = positions.encode();
        assert!(id.len() <= MAX_LEN, "{} > {MAX_LEN}", id.len());
        assert_eq!(Positions::parse(&id, &list, MAX_PROJECTS), Ok(positions));
    }
}
