//! What the hub's webhooks are (`serve --webhook ...`): the endpoints, the signing
//! secret, the events, and the retry timings, each checked before the hub starts.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::Url;

/// How long an event is retried before it is given up (the Standard Webhooks habit:
/// about a day).
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// The first retry's delay; each next one doubles, up to [`DEFAULT_RETRY_MAX`].
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long one attempt (connect, send, answer) may take.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// A hub that holds an event this long without renewing its lease is taken for dead,
/// and another hub delivers the event.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Events this hub delivers at once (each to every endpoint).
pub const DEFAULT_CONCURRENCY: usize = 32;
/// With `--webhook-skip-watched`: how long after a `complete` the hub looks whether a
/// watcher received it (the sessions record that as they write it, within milliseconds).
pub const DEFAULT_SEEN_GRACE: Duration = Duration::from_secs(1);
/// How long a project must stay without a watcher (over every hub) before
/// `project.vacated` is sent: a reload or a flaky network reconnects within it.
pub const DEFAULT_VACATED_AFTER: Duration = Duration::from_secs(30);

/// Standard Webhooks: a secret is 24 to 64 random bytes.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WebhookConfigError {
    #[error("--webhook {0:?} is not an http(s) URL")]
    NotHttp(String),
    #[error("--webhook {0:?} points at this hub itself")]
    Itself(String),
    #[error(
        "--webhook-secret must be whsec_ followed by the base64 of 24 to 64 random bytes \
         (Standard Webhooks)"
    )]
    BadSecret,
    #[error("--webhook needs --webhook-secret (every delivery is signed)")]
    NoSecret,
    #[error(
        "unknown webhook event {0:?} (known: job.completed, job.failed, job.cancelled, \
         job.stalled, project.vacated)"
    )]
    UnknownEvent(String),
    #[error("--webhook-retry-base must be more than 0 and at most --webhook-retry-max")]
    BadRetry,
    #[error("--webhook-vacated-after must be more than 0")]
    BadVacatedAfter,
    #[error("webhooks need Redis on one node, Sentinel's primary, or none: {0}")]
    Unsupported(&'static str),
}

/// What a webhook says happened. `job.*` of a run's end follow the `complete`'s status
/// (`job.` and the status in lower case); `job.stalled` and `project.vacated` come from
/// the hubs' scans (`broker/redis/stall.rs`, `broker/redis/vacancy.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    JobCompleted,
    JobFailed,
    JobCancelled,
    JobStalled,
    ProjectVacated,
}

impl EventType {
    pub const ALL: [Self; 5] = [
        Self::JobCompleted,
        Self::JobFailed,
        Self::JobCancelled,
        Self::JobStalled,
        Self::ProjectVacated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobCompleted => "job.completed",
            Self::JobFailed => "job.failed",
            Self::JobCancelled => "job.cancelled",
            Self::JobStalled => "job.stalled",
            Self::ProjectVacated => "project.vacated",
        }
    }
}

impl FromStr for EventType {
    type Err = WebhookConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s.trim())
            .ok_or_else(|| WebhookConfigError::UnknownEvent(s.to_string()))
    }
}

/// The signing secret, `whsec_<base64>`; never printed.
#[derive(Clone)]
pub struct Secret(Arc<standardwebhooks::Webhook>);

impl Secret {
    pub fn signer(&self) -> &standardwebhooks::Webhook {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl FromStr for Secret {
    type Err = WebhookConfigError;

    /// The crate also takes a secret without its prefix, or of any length; the contract
    /// asks for `whsec_` and the spec's 24 to 64 bytes, so both are checked first.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookConfigError::BadSecret)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| WebhookConfigError::BadSecret)?;
        if !SECRET_BYTES.contains(&bytes.len()) {
            return Err(WebhookConfigError::BadSecret);
        }
        let signer = standardwebhooks::Webhook::from_bytes(bytes)
            .map_err(|_| WebhookConfigError::BadSecret)?;
        Ok(Self(Arc::new(signer)))
    }
}

/// An endpoint URL: http or https, nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint(pub Url);

impl FromStr for Endpoint {
    type Err = WebhookConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s).map_err(|_| WebhookConfigError::NotHttp(s.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(WebhookConfigError::NotHttp(s.to_string()));
        }
        Ok(Self(url))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Endpoint {
    /// Whether this URL reaches the hub listening on `listen` (a loop that would have
    /// the hub post to itself).
    fn is_at(&self, listen: SocketAddr) -> bool {
        if self.0.port_or_known_default() != Some(listen.port()) {
            return false;
        }
        let host = self.0.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => ip == listen.ip() || ip.is_loopback() || ip.is_unspecified(),
            Err(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub endpoints: Vec<Endpoint>,
    pub secret: Secret,
    /// The events sent (default: all).
    pub events: Vec<EventType>,
    /// How long an event is retried, from its `complete`.
    pub retry_for: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub attempt_timeout: Duration,
    /// See [`DEFAULT_LEASE`].
    pub lease: Duration,
    pub concurrency: usize,
    /// Send no `job.completed` whose `complete` a watcher received (the page showed it).
    pub skip_watched: bool,
    /// See [`DEFAULT_SEEN_GRACE`].
    pub seen_grace: Duration,
    /// See [`DEFAULT_VACATED_AFTER`].
    pub vacated_after: Duration,
}

impl WebhookConfig {
    /// The endpoints, signed with `secret`, every other setting its default.
    pub fn new(endpoints: Vec<Endpoint>, secret: Secret) -> Self {
        Self {
            endpoints,
            secret,
            events: EventType::ALL.to_vec(),
            retry_for: DEFAULT_RETRY_FOR,
            retry_base: DEFAULT_RETRY_BASE,
            retry_max: DEFAULT_RETRY_MAX,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            lease: DEFAULT_LEASE,
            concurrency: DEFAULT_CONCURRENCY,
            skip_watched: false,
            seen_grace: DEFAULT_SEEN_GRACE,
            vacated_after: DEFAULT_VACATED_AFTER,
        }
    }

    /// Refuses what would not work, before the hub listens: an endpoint at the hub
    /// itself, retry timings that make no sense.
    pub fn check(&self, listen: SocketAddr) -> Result<(), WebhookConfigError> {
        if let Some(own) = self.endpoints.iter().find(|e| e.is_at(listen)) {
            return Err(WebhookConfigError::Itself(own.to_string()));
        }
        if self.retry_base.is_zero() || self.retry_base > self.retry_max {
            return Err(WebhookConfigError::BadRetry);
        }
        if self.vacated_after.is_zero() {
            return Err(WebhookConfigError::BadVacatedAfter);
        }
        Ok(())
    }

    pub fn sends(&self, event: &str) -> bool {
        self.events.iter().any(|e| e.as_str() == event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn secrets_follow_the_standard() {
        assert!(SPEC_SECRET.parse::<Secret>().is_ok());
        for bad in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
            &format!("whsec_{}", "QUFB".repeat(30)),
        ] {
            assert_eq!(
                bad.parse::<Secret>().err(),
                Some(WebhookConfigError::BadSecret),
                "{bad:?}"
            );
        }
        assert_eq!(
            format!("{:?}", SPEC_SECRET.parse::<Secret>().unwrap()),
            "Secret(..)"
        );
    }

    #[test]
    fn only_http_urls_are_endpoints() {
        assert!("https://api.example/hooks".parse::<Endpoint>().is_ok());
        assert!("http://10.0.0.1:9000/h".parse::<Endpoint>().is_ok());
        for bad in [
            "ftp://x/y",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "nope",
            "",
            "http://",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_endpoint_at_the_hub_itself_is_refused() {
        let listen: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let secret: Secret = SPEC_SECRET.parse().unwrap();
        for own in [
            "http://127.0.0.1:8000/x",
            "http://localhost:8000/",
            "http://[::1]:8000/",
            "http://0.0.0.0:8000/",
        ] {
            let config = WebhookConfig::new(vec![own.parse().unwrap()], secret.clone());
            assert!(
                matches!(config.check(listen), Err(WebhookConfigError::Itself(_))),
                "{own}"
            );
        }
        let elsewhere = WebhookConfig::new(vec!["http://127.0.0.1:9000/".parse().unwrap()], secret);
        assert_eq!(elsewhere.check(listen), Ok(()));
    }

    #[test]
    fn event_names_are_the_contracts() {
        for event in EventType::ALL {
            assert_eq!(event.as_str().parse::<EventType>(), Ok(event));
        }
        assert!("job.done".parse::<EventType>().is_err());
    }
}
