//! One history read shared by the concurrent readers of a project (single flight).
//!
//! When a hub restarts, every client of a project comes back within a second and
//! resumes: read one by one, that is one `replay.lua` call per client. Here the readers
//! of a project that ask while no read of it is in flight start one; those that ask
//! while one is in flight wait for the *next* read, which starts as soon as the current
//! one ends and serves all of them. So a project has at most one read in flight, and
//! a burst of N readers costs about two reads, not N.
//!
//! A reader never shares a read that began before it asked: it asks only once its
//! session is subscribed, and "subscribe first, then read" is what makes a resume lose
//! nothing (an event published between an earlier read and its subscription would be
//! in neither). A read serves each of its readers as that reader's own read would:
//! it starts after the earliest position among them, and each gets the state and the
//! events after its own position if the read met that very id (a position the history
//! does not hold gets none; one the read could not check, because the earliest was not
//! in the history, is read next); a reader without a position (a fresh connect) gets
//! the state only.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::connection::RedisConn;
use super::layout::read_replay;
use crate::broker::{BrokerError, Replay};
use crate::wire::{EventId, ProjectId};

type Answer = oneshot::Sender<Result<Replay, BrokerError>>;

/// The readers waiting for a project's next read.
#[derive(Default)]
struct Waiting {
    readers: Vec<(Option<EventId>, Answer)>,
}

/// Projects with a read in flight, and who waits for their next one.
#[derive(Clone, Default)]
pub struct SharedReads {
    flights: Arc<Mutex<HashMap<ProjectId, Waiting>>>,
}

impl SharedReads {
    /// The project's state and the history after `after`, as `read_replay` returns
    /// them, read together with the other readers of the project asking meanwhile.
    pub async fn replay(
        &self,
        conn: &RedisConn,
        project: &ProjectId,
        after: Option<&EventId>,
    ) -> Result<Replay, BrokerError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut flights = self.flights.lock();
            match flights.get_mut(project) {
                Some(waiting) => {
                    waiting.readers.push((after.cloned(), tx));
                    false
                }
                None => {
                    flights.insert(
                        project.clone(),
                        Waiting {
                            readers: vec![(after.cloned(), tx)],
                        },
                    );
                    true
                }
            }
        };
        if lead {
            // Its own task: a session that ends while waiting does not end the reads
            // the others wait for.
            tokio::spawn(fly(self.clone(), conn.clone(), project.clone()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(BrokerError::Unavailable(
                "the shared history read was dropped".into(),
            ))
        })
    }
}

/// Reads for the project's waiting readers until none is left.
async fn fly(reads: SharedReads, mut conn: RedisConn, project: ProjectId) {
    let _guard = Unwind {
        reads: &reads,
        project: &project,
    };
    loop {
        let readers = {
            let mut flights = reads.flights.lock();
            let Some(waiting) = flights.get_mut(&project) else {
                return;
            };
            if waiting.readers.is_empty() {
                flights.remove(&project);
                return;
            }
            std::mem::take(&mut waiting.readers)
        };
        let again = serve(&mut conn, &project, readers).await;
        if !again.is_empty() {
            // Their positions could not be checked by this read: first in the next.
            let mut flights = reads.flights.lock();
            let waiting = flights.entry(project.clone()).or_default();
            let later = std::mem::replace(&mut waiting.readers, again);
            waiting.readers.extend(later);
        }
    }
}

/// One read for `readers`; returns those it could not serve (a position the read
/// could not check).
async fn serve(
    conn: &mut RedisConn,
    project: &ProjectId,
    readers: Vec<(Option<EventId>, Answer)>,
) -> Vec<(Option<EventId>, Answer)> {
    // The earliest position among them (sequence numbers go on across epochs).
    let from = readers
        .iter()
        .filter_map(|(at, _)| at.as_ref())
        .min_by_key(|at| at.seq())
        .cloned();
    let read = read_replay(conn, project, from.as_ref()).await;
    let replay = match read {
        Ok(replay) => replay,
        Err(err) => {
            let err = BrokerError::from(err);
            let text = err.to_string();
            let mut first = Some(err);
            for (_, answer) in readers {
                let err = first
                    .take()
                    .unwrap_or_else(|| BrokerError::Unavailable(text.clone()));
                let _ = answer.send(Err(err));
            }
            return Vec::new();
        }
    };
    let last = replay.state.as_ref().map(|(_, last)| last);
    // Whether the read found `from` in the history: then it read every event from it
    // to the newest, and a position it did not meet is not in the history.
    let checked = !replay.after.is_empty() || (from.is_some() && from.as_ref() == last);
    let mut again = Vec::new();
    for (at, answer) in readers {
        let after = match &at {
            None => Vec::new(),
            Some(at) if Some(at) == from.as_ref() => replay.after.clone(),
            Some(at) => match replay.after.iter().position(|f| f.id() == Some(at)) {
                Some(i) => replay.after[i + 1..].to_vec(),
                // Not met (or the newest itself): what its own read would say.
                None if checked => Vec::new(),
                // The read could not tell: its own read, next.
                None => {
                    again.push((Some(at.clone()), answer));
                    continue;
                }
            },
        };
        let _ = answer.send(Ok(Replay {
            state: replay.state.clone(),
            after,
        }));
    }
    again
}

/// Should a read panic, its project is forgotten (its waiters hear an error), so that
/// the next reader starts a new flight instead of waiting for one that is gone.
struct Unwind<'a> {
    reads: &'a SharedReads,
    project: &'a ProjectId,
}

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.reads.flights.lock().remove(self.project);
        }
    }
}
