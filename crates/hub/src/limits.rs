//! Connection limits: per process and per client IP. Every accepted TCP connection
//! counts (plain HTTP too: a client holding many keep-alive connections would
//! otherwise hold file descriptors no limit sees); a WebSocket or SSE session holds its
//! connection's slot, so it counts once. A connection over a limit is refused with a
//! clear answer (WebSocket close 1013, HTTP 503 `TOO_MANY_CONNECTIONS`) and a log line
//! (at most one per [`REFUSAL_LOG_INTERVAL`], with the count of the others), never
//! silently; when more than [`MAX_REFUSING`] refusals are already being answered, a
//! connection over a limit is closed at once (a flood must not hold descriptors just to
//! be told no).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::telemetry::Throttle;

/// Connections over a limit that are being answered (503, close 1013) at once; each
/// holds a descriptor until it has sent its request (or the handshake timeout). Beyond
/// this, a connection over a limit is closed as soon as it is accepted.
pub const MAX_REFUSING: usize = 64;

/// At most one WARN line per this about refused connections; it counts the others.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Caps fitted under the process's open-file limit: a cap the descriptors cannot honour
/// would let connections fail with EMFILE (every client locked out, even ones under
/// their cap) instead of being refused clearly. Some descriptors are kept back for
/// Redis, logs and refusals being answered (`reserve`: 128, or half the limit when it
/// is tiny); when the limit binds, one address may hold at most half of what is left,
/// so that a single client cannot take every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FittedCaps {
    pub max_total: usize,
    pub max_per_ip: usize,
    /// Whether the open-file limit lowered the configured caps.
    pub lowered: bool,
}

/// Descriptors kept back from the connection caps (Redis, logs, answering refusals).
const RESERVED_DESCRIPTORS: u64 = 128;

/// The configured caps, fitted under `open_files` (the soft `RLIMIT_NOFILE`; `None`:
/// unlimited or unknown).
pub fn fit_to_open_files(
    max_total: usize,
    max_per_ip: usize,
    open_files: Option<u64>,
) -> FittedCaps {
    let Some(open_files) = open_files else {
        return FittedCaps {
            max_total,
            max_per_ip,
            lowered: false,
        };
    };
    let reserve = RESERVED_DESCRIPTORS.min(open_files / 2);
    let usable = usize::try_from(open_files - reserve)
        .unwrap_or(usize::MAX)
        .max(1);
    if usable >= max_total {
        return FittedCaps {
            max_total,
            max_per_ip,
            lowered: false,
        };
    }
    FittedCaps {
        max_total: usable,
        max_per_ip: max_per_ip.min((usable / 2).max(1)),
        lowered: true,
    }
}

/// Raises this process's soft open-file limit to its hard limit (as the Go runtime
/// does): a hub is a server of many sockets, and a soft limit of 1,024 is a common
/// default well under the hard one. Returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        let raised = Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %err, "cannot raise the open-file limit");
        }
    }
    open_file_limit()
}

/// The soft open-file limit of this process (`None`: unlimited).
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Refused connections being answered now (bounded by [`MAX_REFUSING`]).
    refusing: AtomicUsize,
    /// Keeps a flood of refusals from becoming a flood of log lines.
    refusal_log: Throttle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the hub holds its maximum of {0} connections")]
    Process(usize),
    #[error("this address holds its maximum of {0} connections")]
    PerIp(usize),
}

/// A held connection slot, released on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

/// One accepted connection's standing: a permit, or the limit that refused it. Shared
/// (`Arc`) by the connection's task and what outlives it on its behalf (a WebSocket
/// session after the upgrade, an SSE stream): the slot returns when the last is gone.
#[derive(Debug)]
pub struct ConnectionSlot(Result<ConnectionPermit, Refusal>);

/// A refused connection being answered; counted in `refusing` while it lives.
#[derive(Debug)]
struct Refusal {
    limit: LimitExceeded,
    /// Set when counted in the limits' `refusing` (connections from the listener).
    counted: Option<Arc<ConnectionLimits>>,
}

impl ConnectionSlot {
    /// The limit this connection is over, if it is.
    pub fn refused(&self) -> Option<LimitExceeded> {
        self.0.as_ref().err().map(|refusal| refusal.limit)
    }
}

impl From<Result<ConnectionPermit, LimitExceeded>> for ConnectionSlot {
    /// A slot not counted among the refusals in flight (for a request that did not
    /// come through the listener).
    fn from(permit: Result<ConnectionPermit, LimitExceeded>) -> Self {
        Self(permit.map_err(|limit| Refusal {
            limit,
            counted: None,
        }))
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        if let Some(limits) = &self.counted {
            limits.refusing.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refusing: AtomicUsize::new(0),
            refusal_log: Throttle::new(REFUSAL_LOG_INTERVAL),
        })
    }

    /// The standing of a newly accepted connection from `ip`: a permit, or a refusal
    /// to answer; `Err` when it is over a limit and [`MAX_REFUSING`] refusals are
    /// already being answered (close it at once).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, LimitExceeded> {
        match self.try_acquire(ip) {
            Ok(permit) => Ok(ConnectionSlot(Ok(permit))),
            Err(limit) => {
                if self.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
                    self.refusing.fetch_sub(1, Ordering::Relaxed);
                    return Err(limit);
                }
                Ok(ConnectionSlot(Err(Refusal {
                    limit,
                    counted: Some(Arc::clone(self)),
                })))
            }
        }
    }

    /// Counts a refused connection, and logs it: one WARN line per
    /// [`REFUSAL_LOG_INTERVAL`], which says how many more were refused since the last.
    /// `shed`: closed as soon as accepted, without an answer.
    pub fn log_refusal(&self, what: &'static str, ip: IpAddr, limit: LimitExceeded, shed: bool) {
        crate::metrics::connection_refused(match limit {
            _ if shed => "shed",
            LimitExceeded::PerIp(_) => "per_ip",
            LimitExceeded::Process(_) => "process",
        });
        if let Some(more) = self.refusal_log.admit() {
            tracing::warn!(peer = %ip, error = %limit, refused_since_last_line = more, "refusing {what}");
        }
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        let mut per_ip = self.per_ip.lock();
        let total = self.total.load(Ordering::Relaxed);
        if total >= self.max_total {
            return Err(LimitExceeded::Process(self.max_total));
        }
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(LimitExceeded::PerIp(self.max_per_ip));
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            limits: Arc::clone(self),
            ip,
        })
    }

    pub fn in_use(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_ip = self.limits.per_ip.lock();
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_per_process_and_releases_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = limits.try_acquire(a).unwrap();
        let _a2 = limits.try_acquire(a).unwrap();
        assert_eq!(limits.try_acquire(a).unwrap_err(), LimitExceeded::PerIp(2));
        let _b1 = limits.try_acquire(b).unwrap();
        assert_eq!(
            limits.try_acquire(b).unwrap_err(),
            LimitExceeded::Process(3)
        );
        drop(a1);
        assert_eq!(limits.in_use(), 2);
        assert!(limits.try_acquire(a).is_ok());
    }

    #[test]
    fn caps_are_fitted_under_the_open_file_limit() {
        let default = (100_000, 1_000);
        assert_eq!(
            fit_to_open_files(default.0, default.1, Some(1024)),
            FittedCaps {
                max_total: 896,
                max_per_ip: 448,
                lowered: true
            }
        );
        assert_eq!(
            fit_to_open_files(default.0, default.1, None),
            FittedCaps {
                max_total: 100_000,
                max_per_ip: 1_000,
                lowered: false
            }
        );
        assert_eq!(
            fit_to_open_files(default.0, default.1, Some(1 << 20)),
            FittedCaps {
                max_total: 100_000,
                max_per_ip: 1_000,
                lowered: false
            }
        );
        let tiny = fit_to_open_files(default.0, default.1, Some(48));
        assert_eq!((tiny.max_total, tiny.max_per_ip), (24, 12));
        let none = fit_to_open_files(default.0, default.1, Some(0));
        assert_eq!((none.max_total, none.max_per_ip), (1, 1));
        assert!(
            !fit_to_open_files(8, 4, Some(1024)).lowered,
            "small caps stay"
        );
    }

    #[test]
    fn refusals_in_flight_are_bounded_and_return() {
        let limits = ConnectionLimits::new(1, 1);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let admitted = limits.admit(a).unwrap();
        assert_eq!(admitted.refused(), None);
        let refusing: Vec<_> = (0..MAX_REFUSING)
            .map(|_| limits.admit(a).unwrap())
            .collect();
        assert!(
            refusing
                .iter()
                .all(|s| s.refused() == Some(LimitExceeded::PerIp(1))
                    || s.refused() == Some(LimitExceeded::Process(1)))
        );
        assert!(
            limits.admit(a).is_err(),
            "beyond MAX_REFUSING: closed at once"
        );
        drop(refusing);
        assert!(limits.admit(a).unwrap().refused().is_some());
        drop(admitted);
        assert_eq!(limits.admit(a).unwrap().refused(), None);
    }
}
