//! The primary of a Sentinel-managed Redis: asked of the sentinels on every (re)connect,
//! never remembered across a switch.
//!
//! Every connection of the hub to the primary (the command connection, the subscriber,
//! the job queue's blocking reader) carries the [`Sentinel`]'s *generation* it was opened
//! in. The generation moves on when
//! - a sentinel announces `+switch-master` for our master (a task per sentinel follows
//!   its announcements, so one sentinel lost or partitioned away changes nothing),
//! - a sentinel announces `+try-failover`: until the switch (or an abort, or
//!   `FENCE_MAX`) no connection to the primary is opened, so no write lands on an old
//!   primary after its replica was promoted (such writes would be lost when the old
//!   primary rejoins as a replica), or
//! - a connection meets a `READONLY` reply: the node it talks to has been demoted, even
//!   if no announcement reached us (see [`Sentinel::suspect`]).
//!
//! A connection of an older generation is dropped and opened again on the primary the
//! sentinels name now, so the whole hub moves to the new primary at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::target::SentinelTarget;
use crate::broker::BrokerError;

/// Longest wait for the sentinels to name the primary (and for it to confirm its role).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a sentinel's announcement connection proves it is alive, and how long it
/// may take.
const WATCH_PING: Duration = Duration::from_secs(1);
/// Pause before following a lost sentinel again.
const WATCH_RETRY: Duration = Duration::from_millis(200);
/// The channel a sentinel announces a completed failover on.
const SWITCH_CHANNEL: &str = "+switch-master";
/// The channel a sentinel announces the start of a failover on.
const START_CHANNEL: &str = "+try-failover";
/// The channels the failover's leader announces that it did not happen on. Not
/// `-failover-abort-not-elected`: a sentinel that lost the election says so while the
/// one that won goes on.
const ABORT_CHANNELS: [&str; 2] = [
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];
/// Longest a failover holds writes back: past this the sentinels are asked again,
/// whatever they announced (a switch announcement may have been missed).
const FENCE_MAX: Duration = Duration::from_secs(10);
/// Longest one question for the primary waits for a failover under way to end.
const FENCE_WAIT: Duration = Duration::from_secs(2);

/// The sentinels of one master, shared by every connection to that master.
pub struct Sentinel {
    /// Asks the sentinels (redis-rs caches one connection per sentinel); one question at
    /// a time.
    client: tokio::sync::Mutex<SentinelClient>,
    /// Each followed for its announcements (see [`follow`]).
    sentinels: Vec<ConnectionInfo>,
    master: String,
    /// The data nodes' database.
    db: i64,
    /// The generation: bumped on every switch seen and every demotion met.
    generation: watch::Sender<u64>,
    /// While a failover is under way (announced, not yet switched nor aborted): until
    /// when at most. No connection to the primary is opened meanwhile, so nothing is
    /// written to an old primary that the promoted replica will never hear of.
    fence: watch::Sender<Option<Instant>>,
    /// The primary the last `+switch-master` named (every sentinel announces a switch;
    /// it is followed once).
    switched_to: Mutex<Option<String>>,
    /// Whether the sentinels' followers have been started (on first use, inside the
    /// runtime).
    following: AtomicBool,
}

impl Sentinel {
    pub fn new(target: &SentinelTarget) -> Result<Arc<Self>, BrokerError> {
        let invalid = |e: RedisError| BrokerError::InvalidUrl(e.to_string());
        let sentinels = target
            .sentinels
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()
            .map_err(invalid)?;
        let node = target
            .node
            .as_str()
            .into_connection_info()
            .map_err(invalid)?;
        let db = node.redis_settings().db();
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(node.redis_settings().clone());
        let client = SentinelClient::build(
            sentinels.clone(),
            target.master.clone(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(invalid)?;
        Ok(Arc::new(Self {
            client: tokio::sync::Mutex::new(client),
            sentinels,
            master: target.master.clone(),
            db,
            generation: watch::Sender::new(0),
            fence: watch::Sender::new(None),
            switched_to: Mutex::new(None),
            following: AtomicBool::new(false),
        }))
    }

    /// A client for the node the sentinels name the primary now (it has confirmed its
    /// role), once no failover is under way. Starts following the sentinels on first
    /// use.
    pub async fn primary(self: &Arc<Self>) -> RedisResult<redis::Client> {
        if !self.following.swap(true, Ordering::Relaxed) {
            for info in &self.sentinels {
                let follower = follow(Arc::downgrade(self), info.clone(), self.master.clone());
                tokio::spawn(follower);
            }
        }
        let mut fence = self.fence.subscribe();
        let lifted = fence.wait_for(|until| until.is_none_or(|until| Instant::now() >= until));
        if tokio::time::timeout(FENCE_WAIT, lifted).await.is_err() {
            return Err(RedisError::from((
                ErrorKind::Io,
                "a Sentinel failover is under way",
            )));
        }
        // The question is asked by a task of its own, which holds the sentinels' client
        // while it runs: a caller that stops being polled mid-question (a job's pipeline
        // outside its lease) must not keep the client locked from every other caller.
        let this = Arc::clone(self);
        let question = tokio::spawn(async move {
            let mut client = this.client.lock().await;
            tokio::time::timeout(RESOLVE_TIMEOUT, client.async_get_client()).await
        });
        let late = || {
            RedisError::from((
                ErrorKind::Io,
                "the sentinels did not name a primary in time",
            ))
        };
        // Questions wait for each other's client; each is bounded, and so is this wait.
        match tokio::time::timeout(RESOLVE_TIMEOUT * 2, question).await {
            Ok(Ok(Ok(found))) => found,
            Ok(Ok(Err(_))) | Err(_) => Err(late()),
            Ok(Err(join)) => Err(RedisError::from((
                ErrorKind::Io,
                "asking the sentinels failed",
                join.to_string(),
            ))),
        }
    }

    /// The data nodes' database.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The current generation; a connection opened in an older one is stale.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Changes when the generation moves on.
    pub fn switches(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// A connection of generation `seen` met a demoted node: every connection of that
    /// generation is stale. Many connections failing at once move it on only once.
    pub fn suspect(&self, seen: u64) {
        let moved = self.generation.send_if_modified(|generation| {
            let stale = *generation == seen;
            if stale {
                *generation += 1;
            }
            stale
        });
        if moved {
            tracing::warn!(master = %self.master, "redis node answered as a replica (READONLY, or ROLE on /readyz): demoted; asking the sentinels for the primary again");
        }
    }

    fn switched(&self, why: &str) {
        self.fence.send_replace(None);
        self.generation.send_modify(|generation| *generation += 1);
        tracing::warn!(master = %self.master, why, "redis primary switched; reconnecting to the new one");
    }

    /// Acts on what a sentinel announced (`payload`, for the log).
    fn heard(&self, heard: Announcement, payload: &str) {
        match heard {
            Announcement::FailoverStarted => {
                let until = Instant::now() + FENCE_MAX;
                self.fence.send_replace(Some(until));
                // Connections to the old primary are dropped: none writes there now.
                self.generation.send_modify(|generation| *generation += 1);
                tracing::warn!(master = %self.master, payload, "redis Sentinel failover under way; holding writes until the new primary is known");
            }
            Announcement::FailoverAborted => {
                self.fence.send_replace(None);
                tracing::warn!(master = %self.master, payload, "redis Sentinel failover aborted");
            }
            Announcement::Switched(to) => {
                let again = self.switched_to.lock().replace(to.clone()) == Some(to);
                if again && self.fence.borrow().is_none() {
                    return; // another sentinel's announcement of the same switch
                }
                self.switched(payload);
            }
        }
    }
}

/// Whether `err` says the node is no longer a primary (a write refused by a replica),
/// also when it comes from inside a script.
pub fn is_demoted(err: &RedisError) -> bool {
    err.code() == Some("READONLY") || err.to_string().contains("READONLY")
}

/// What a sentinel announced about our master.
#[derive(Debug, PartialEq, Eq)]
enum Announcement {
    /// `+try-failover`: a failover begins; the old primary may still take writes that
    /// the promoted replica will never have.
    FailoverStarted,
    /// `-failover-abort-*`: it did not happen; the primary stays.
    FailoverAborted,
    /// `+switch-master`: the new primary's `ip:port`.
    Switched(String),
}

/// Reads one sentinel event (`channel`, `payload`) if it is about `master`. Payloads
/// name the master as `master <name> <ip> <port>`, or `<type> <name> <ip> <port> @
/// <master> <ip> <port>` for another instance; `+switch-master`'s is
/// `<master> <old-ip> <old-port> <new-ip> <new-port>`.
fn announcement(channel: &str, payload: &str, master: &str) -> Option<Announcement> {
    let words: Vec<&str> = payload.split(' ').collect();
    if channel == SWITCH_CHANNEL {
        return match words.as_slice() {
            [name, _, _, ip, port] if *name == master => {
                Some(Announcement::Switched(format!("{ip}:{port}")))
            }
            _ => None,
        };
    }
    let about_master = match words.as_slice() {
        ["master", name, ..] => *name == master,
        _ => words
            .iter()
            .position(|w| *w == "@")
            .and_then(|at| words.get(at + 1))
            .is_some_and(|name| *name == master),
    };
    if !about_master {
        return None;
    }
    match channel {
        START_CHANNEL => Some(Announcement::FailoverStarted),
        c if c.starts_with("-failover-abort") => Some(Announcement::FailoverAborted),
        _ => None,
    }
}

/// Follows one sentinel's announcements for as long as the [`Sentinel`] lives,
/// reconnecting to it when its connection fails. A reconnect may have missed an
/// announcement, so it counts as a switch.
async fn follow(sentinel: Weak<Sentinel>, info: ConnectionInfo, master: String) {
    let mut followed_before = false;
    loop {
        match follow_once(&sentinel, info.clone(), &master, &mut followed_before).await {
            Ok(()) => return,
            Err(err) => tracing::debug!(error = %err, "following a sentinel: connection lost"),
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// Follows one sentinel until its connection fails; `Ok` once the [`Sentinel`] is gone.
async fn follow_once(
    sentinel: &Weak<Sentinel>,
    info: ConnectionInfo,
    master: &str,
    followed_before: &mut bool,
) -> RedisResult<()> {
    let timed_out = || RedisError::from((ErrorKind::Io, "sentinel did not answer"));
    let client = redis::Client::open(info)?;
    let pubsub = tokio::time::timeout(RESOLVE_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    let (mut sink, mut stream) = pubsub.split();
    let channels = [SWITCH_CHANNEL, START_CHANNEL]
        .into_iter()
        .chain(ABORT_CHANNELS);
    tokio::time::timeout(
        RESOLVE_TIMEOUT,
        sink.subscribe(channels.collect::<Vec<_>>()),
    )
    .await
    .map_err(|_| timed_out())??;
    if std::mem::replace(followed_before, true) {
        match sentinel.upgrade() {
            Some(s) => s.switched("followed a sentinel again after losing it"),
            None => return Ok(()),
        }
    }
    let mut ping = tokio::time::interval(WATCH_PING);
    ping.reset();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Err(RedisError::from((ErrorKind::Io, "sentinel connection closed")));
                };
                let payload = String::from_utf8_lossy(message.get_payload_bytes());
                let Some(heard) = announcement(message.get_channel_name(), &payload, master) else {
                    continue;
                };
                match sentinel.upgrade() {
                    Some(s) => s.heard(heard, &payload),
                    None => return Ok(()),
                }
            }
            _ = ping.tick() => {
                if sentinel.strong_count() == 0 {
                    return Ok(());
                }
                tokio::time::timeout(WATCH_PING, sink.ping::<Value>())
                    .await
                    .map_err(|_| timed_out())??;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_about_our_master_are_read() {
        let m = "mymaster";
        assert_eq!(
            announcement("+switch-master", "mymaster 127.0.0.1 1 127.0.0.1 2", m),
            Some(Announcement::Switched("127.0.0.1:2".into()))
        );
        assert_eq!(
            announcement("+switch-master", "other 127.0.0.1 1 127.0.0.1 2", m),
            None
        );
        assert_eq!(
            announcement("+try-failover", "master mymaster 127.0.0.1 1", m),
            Some(Announcement::FailoverStarted)
        );
        assert_eq!(
            announcement("+try-failover", "master other 127.0.0.1 1", m),
            None
        );
        assert_eq!(
            announcement(
                "-failover-abort-no-good-slave",
                "master mymaster 127.0.0.1 1",
                m
            ),
            Some(Announcement::FailoverAborted)
        );
        assert_eq!(
            announcement(
                "-failover-abort-slave-timeout",
                "slave 127.0.0.1:2 127.0.0.1 2 @ mymaster 127.0.0.1 1",
                m
            ),
            Some(Announcement::FailoverAborted)
        );
    }
}
