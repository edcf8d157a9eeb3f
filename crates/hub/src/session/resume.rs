//! Resume and late join: what a session says between `connected` and the live events.
//!
//! The session subscribes first, then reads the project's state and history in one
//! atomic look, and only then decides. Live events published meanwhile wait in its
//! queue; anything they share with what was read is skipped by id (the *floor*), so the
//! client sees each event once, in order, with no gap.
//!
//! `recovered` is never a guess: it is true only when every event after the client's
//! position follows — its `last_event_id` when resuming, or the snapshot (or the moment
//! of connecting, for a project with no history yet) when joining.

use crate::broker::Replay;
use crate::wire::{EventId, Frame, ProjectId, ProjectState};

/// The frames that open a session, and the position live events must be after.
#[derive(Debug)]
pub struct Opening {
    pub frames: Vec<Frame>,
    pub floor: Option<EventId>,
}

/// Decides the opening. `replay` is `None` when the broker could not be read.
pub fn opening(
    project: &ProjectId,
    heartbeat_secs: u64,
    asked: Option<&EventId>,
    replay: Option<Replay>,
) -> Opening {
    let resumed = asked.is_some();
    let connected = |recovered| Frame::connected(project, heartbeat_secs, resumed, recovered);
    opening_with(connected, asked, replay)
}

/// As [`opening`], with the frame that says `recovered` made by `connected` (a
/// multiplexed connection's subscription says `subscribed`).
pub fn opening_with(
    connected: impl Fn(bool) -> Frame,
    asked: Option<&EventId>,
    replay: Option<Replay>,
) -> Opening {
    let Some(replay) = replay else {
        return Opening {
            frames: vec![connected(false)],
            floor: asked.cloned(),
        };
    };
    let lost = |state: &ProjectState, floor: Option<EventId>| Opening {
        frames: vec![connected(false), Frame::snapshot(state, false)],
        floor,
    };
    match (asked, replay.state) {
        (None, None) => Opening {
            frames: vec![connected(true)],
            floor: None,
        },
        (None, Some((state, last))) => Opening {
            frames: vec![connected(true), Frame::snapshot(&state, true)],
            floor: Some(last),
        },
        // The client's history is gone (lost, expired, flushed, or never was).
        (Some(_), None) => lost(&ProjectState::empty(), None),
        (Some(asked), Some((state, last))) => {
            if *asked == last {
                Opening {
                    frames: vec![connected(true)],
                    floor: Some(last),
                }
            } else if is_contiguous(asked, &replay.after, &last) {
                let mut frames = Vec::with_capacity(replay.after.len() + 1);
                frames.push(connected(true));
                frames.extend(replay.after);
                Opening {
                    frames,
                    floor: Some(last),
                }
            } else {
                // Not in the history (older than it retains, lost with writes Redis
                // did not keep, or made up): the gap cannot be filled.
                lost(&state, Some(last))
            }
        }
    }
}

/// For a session that resumed from `asked` while the broker could not be read, once
/// it can: the frames owed to the client before its next live event (the events after
/// `asked`, or a `snapshot` with `recovered: false` when the history no longer has
/// them), and the position live events must now be after.
pub fn fill_gap(asked: &EventId, replay: Replay) -> (Vec<Frame>, Option<EventId>) {
    match replay.state {
        Some((_, last)) if *asked == last || is_contiguous(asked, &replay.after, &last) => {
            (replay.after, Some(last))
        }
        Some((state, last)) => (vec![Frame::snapshot(&state, false)], Some(last)),
        None => (vec![Frame::snapshot(&ProjectState::empty(), false)], None),
    }
}

/// Drops from a batch of live frames those the opening already covered (at or before
/// `floor`, same epoch). Once a later event has passed (a sequence number beyond the
/// floor's), the floor is no longer needed. A frame of another epoch at or below the
/// floor's sequence number (a gap fill delivering the last events of the epoch before a
/// Redis restart, which the opening may have had too) passes but keeps the floor, so
/// the covered events of the floor's epoch after it are still dropped.
pub fn skip_covered(batch: &mut Vec<Frame>, floor: &mut Option<EventId>) {
    if let Some(seen) = floor {
        batch.retain(|f| f.id().is_none_or(|id| !id.is_at_or_before(seen)));
        if batch
            .iter()
            .any(|f| f.id().is_some_and(|id| id.seq() > seen.seq()))
        {
            *floor = None;
        }
    }
}

/// Whether `after` holds exactly the events from just after `asked` up to `last`: at
/// least one (the broker reads events only after a position the history holds), each
/// the next sequence number (epochs may change on the way: a new epoch goes on with the
/// sequence), the last of them `last` itself.
fn is_contiguous(asked: &EventId, after: &[Frame], last: &EventId) -> bool {
    let mut expected = asked.seq() + 1;
    for frame in after {
        match frame.id() {
            Some(id) if id.seq() == expected => expected += 1,
            _ => return false,
        }
    }
    !after.is_empty() && after.last().and_then(Frame::id) == Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;

    fn pid() -> ProjectId {
        ProjectId::parse("p").unwrap()
    }

    fn event(epoch: &str, seq: u64) -> Frame {
        let text = format!(r#"{{"event":"log","id":"{epoch}:{seq}","data":{{}}}}"#);
        Frame::from_published(Bytes::from(text)).unwrap()
    }

    fn state(last: &str) -> ProjectState {
        ProjectState {
            last_event_id: Some(last.into()),
            ..ProjectState::empty()
        }
    }

    fn replay(epoch: &str, last: u64, after: std::ops::Range<u64>) -> Replay {
        Replay {
            state: Some((state(&format!("{epoch}:{last}")), EventId::new(epoch, last))),
            after: after.map(|s| event(epoch, s)).collect(),
        }
    }

    fn events(o: &Opening) -> Vec<(String, Value)> {
        o.frames
            .iter()
            .map(|f| {
                let v = f.to_value();
                (v["event"].as_str().unwrap().to_string(), v)
            })
            .collect()
    }

    #[test]
    fn an_owed_gap_is_the_events_after_the_position_or_a_snapshot() {
        let asked = EventId::new("e", 3);
        let (frames, floor) = fill_gap(&asked, replay("e", 6, 4..7));
        let ids: Vec<_> = frames.iter().map(|f| f.id().unwrap().to_string()).collect();
        assert_eq!(ids, ["e:4", "e:5", "e:6"]);
        assert_eq!(floor, Some(EventId::new("e", 6)));
        // Trimmed past the position, another epoch, or no history: a snapshot that
        // says the position was not recovered.
        for (replay, floor) in [
            (replay("e", 6, 5..7), Some(EventId::new("e", 6))),
            (replay("f", 2, 1..3), Some(EventId::new("f", 2))),
            (Replay::default(), None),
        ] {
            let (frames, got) = fill_gap(&asked, replay);
            assert_eq!(frames.len(), 1);
            let v = frames[0].to_value();
            assert_eq!(v["event"], "snapshot");
            assert_eq!(v["data"]["recovered"], false);
            assert_eq!(got, floor);
        }
    }

    #[test]
    fn late_join_gets_a_snapshot_and_a_floor() {
        let o = opening(&pid(), 30, None, Some(replay("e", 7, 1..1)));
        let ev = events(&o);
        assert_eq!(ev[0].0, "connected");
        assert_eq!(ev[0].1["data"]["recovered"], true);
        assert_eq!(ev[1].0, "snapshot");
        assert_eq!(ev[1].1["data"]["last_event_id"], "e:7");
        assert_eq!(o.floor, Some(EventId::new("e", 7)));
    }

    #[test]
    fn join_without_history_is_just_connected() {
        let o = opening(&pid(), 30, None, Some(Replay::default()));
        assert_eq!(o.frames.len(), 1);
        assert_eq!(o.floor, None);
    }

    #[test]
    fn resume_replays_exactly_the_missing_events() {
        let asked = EventId::new("e", 3);
        let o = opening(&pid(), 30, Some(&asked), Some(replay("e", 6, 4..7)));
        let ev = events(&o);
        assert_eq!(ev[0].1["data"]["resumed"], true);
        assert_eq!(ev[0].1["data"]["recovered"], true);
        let ids: Vec<_> = ev[1..]
            .iter()
            .map(|(_, v)| v["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["e:4", "e:5", "e:6"]);
        assert_eq!(o.floor, Some(EventId::new("e", 6)));
    }

    #[test]
    fn resume_goes_on_across_a_new_epoch_that_continues_the_sequence() {
        // A Redis restart began epoch `f` after `e:4`: it goes on at 5.
        let asked = EventId::new("e", 3);
        let replay = Replay {
            state: Some((state("f:6"), EventId::new("f", 6))),
            after: vec![event("e", 4), event("f", 5), event("f", 6)],
        };
        let o = opening(&pid(), 30, Some(&asked), Some(replay));
        let ev = events(&o);
        assert_eq!(ev[0].1["data"]["recovered"], true);
        let ids: Vec<_> = ev[1..]
            .iter()
            .map(|(_, v)| v["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["e:4", "f:5", "f:6"]);
        assert_eq!(o.floor, Some(EventId::new("f", 6)));
    }

    #[test]
    fn an_earlier_epochs_event_keeps_the_floor_of_a_later_one() {
        // A session read the history up to f:22 (f began at 21, after e:20); the gap fill
        // then delivers e:20, f:21, f:22 and the live f:23.
        let mut floor = Some(EventId::new("f", 22));
        let mut batch = vec![event("e", 20), event("f", 21)];
        skip_covered(&mut batch, &mut floor);
        assert_eq!(batch.len(), 1, "e:20 passes (it may be new to the session)");
        assert_eq!(floor, Some(EventId::new("f", 22)), "kept");
        let mut batch = vec![event("f", 22), event("f", 23)];
        skip_covered(&mut batch, &mut floor);
        let ids: Vec<_> = batch.iter().map(|f| f.id().unwrap().to_string()).collect();
        assert_eq!(ids, ["f:23"]);
        assert_eq!(floor, None);
    }

    #[test]
    fn resume_when_up_to_date_sends_nothing_more() {
        let asked = EventId::new("e", 6);
        let o = opening(&pid(), 30, Some(&asked), Some(replay("e", 6, 7..7)));
        assert_eq!(o.frames.len(), 1);
        assert_eq!(events(&o)[0].1["data"]["recovered"], true);
    }

    #[test]
    fn resume_that_cannot_be_honoured_says_so_with_a_snapshot() {
        let cases = [
            (EventId::new("other", 3), replay("e", 6, 7..7)), // not in the history
            (EventId::new("other", 6), replay("e", 6, 7..7)), // the newest's seq, not its id
            (EventId::new("e", 9), replay("e", 6, 7..7)),     // from the future
            (EventId::new("e", 1), replay("e", 6, 4..7)),     // trimmed: 2 and 3 are gone
            (EventId::new("e", 3), replay("e", 6, 4..6)),     // incomplete read
        ];
        for (asked, replay) in cases {
            let o = opening(&pid(), 30, Some(&asked), Some(replay));
            let ev = events(&o);
            assert_eq!(ev.len(), 2, "{asked:?}");
            assert_eq!(ev[0].1["data"]["recovered"], false);
            assert_eq!(ev[1].0, "snapshot");
            assert_eq!(ev[1].1["data"]["recovered"], false);
            assert_eq!(o.floor, Some(EventId::new("e", 6)));
        }
        let o = opening(
            &pid(),
            30,
            Some(&EventId::new("e", 3)),
            Some(Replay::default()),
        );
        assert_eq!(events(&o)[1].1["data"]["last_event_id"], Value::Null);
    }

    proptest::proptest! {
        /// Subscribe at `s`, read state and history at `r` (s ≤ r), resume from `a`
        /// (a ≤ r): whatever way the live events after `s` are split into batches, the
        /// client sees each event after `a` exactly once, in order.
        #[test]
        fn resume_merge_yields_each_event_once_in_order(
            n in 1u64..60,
            picks in proptest::collection::vec(0u64..1000, 3),
            cuts in proptest::collection::vec(1usize..8, 0..20),
        ) {
            let r = picks[0] % (n + 1);
            let s = picks[1] % (r + 1);
            let a = picks[2] % (r + 1);
            let asked = EventId::new("e", a);
            let replay = Replay {
                state: (r > 0).then(|| (state(&format!("e:{r}")), EventId::new("e", r))),
                after: (a + 1..=r).map(|q| event("e", q)).collect(),
            };
            let asked = (a > 0 || r > 0).then_some(asked);
            let o = opening(&pid(), 30, asked.as_ref(), Some(replay));
            let mut seen: Vec<u64> = o
                .frames
                .iter()
                .filter_map(|f| f.id().map(EventId::seq))
                .collect();
            let mut floor = o.floor.clone();
            let live: Vec<Frame> = (s + 1..=n).map(|q| event("e", q)).collect();
            let mut rest = &live[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let take = (*cut.next().unwrap_or(&1)).min(rest.len());
                let mut batch = rest[..take].to_vec();
                rest = &rest[take..];
                skip_covered(&mut batch, &mut floor);
                seen.extend(batch.iter().filter_map(|f| f.id().map(EventId::seq)));
            }
            let start = if asked.is_some() { a } else { r };
            let expected: Vec<u64> = (start + 1..=n).collect();
            proptest::prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn broker_unreachable_is_never_called_recovered() {
        let asked = EventId::new("e", 3);
        let o = opening(&pid(), 30, Some(&asked), None);
        assert_eq!(events(&o)[0].1["data"]["recovered"], false);
        assert_eq!(o.floor, Some(asked));
    }
}
