//! Why a multiplexed connection refused a client frame: the codes of
//! `subscription_error` frames (`GET /api/v1/progress`, see docs/PROTOCOL.md). Rendered
//! into `contract/error-catalog.json` (`subscription_errors`) for the clients.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionErrorCode {
    /// `project_id` is missing or not `^[A-Za-z0-9_-]{1,64}$`.
    InvalidProjectId,
    /// `last_event_id` is not an id the hub gave.
    InvalidEventId,
    /// The connection's token does not allow the project.
    Forbidden,
    /// The connection holds its maximum of subscriptions (`--max-subscriptions`).
    TooManySubscriptions,
    /// The connection is subscribed to the project already; that subscription goes on.
    AlreadySubscribed,
    /// A subscription names both a `project_id` and a `tag`: it is to one of them.
    UnsupportedSubscription,
    /// `tag` is missing, not a string, or neither `^[A-Za-z0-9_.:@-]{1,64}$` nor `*`
    /// (every project).
    InvalidTag,
    /// A tag subscription's `status` or `since` is not one the hub knows.
    InvalidFilter,
    /// As many connections of this hub watch the tag as may (per-tag fan-out limit).
    TagAtCapacity,
    /// The frame is not JSON, not an object with a string `event`, or names an event
    /// the hub does not know.
    InvalidFrame,
    /// The hub watches as many projects as it may (`--max-projects`); retry later.
    HubAtCapacity,
}

impl SubscriptionErrorCode {
    pub fn all() -> impl Iterator<Item = Self> {
        [
            Self::InvalidProjectId,
            Self::InvalidEventId,
            Self::Forbidden,
            Self::TooManySubscriptions,
            Self::AlreadySubscribed,
            Self::UnsupportedSubscription,
            Self::InvalidTag,
            Self::InvalidFilter,
            Self::TagAtCapacity,
            Self::InvalidFrame,
            Self::HubAtCapacity,
        ]
        .into_iter()
    }

    /// Whether the same frame may succeed later, unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::HubAtCapacity | Self::TagAtCapacity)
    }

    /// The default message of a `subscription_error` with this code.
    pub fn message(self) -> &'static str {
        match self {
            Self::InvalidProjectId => "project_id must match ^[A-Za-z0-9_-]{1,64}$",
            Self::InvalidEventId => "last_event_id must be an id the hub gave, like k3J9x2Qa7b:42",
            Self::Forbidden => "the connection's token does not grant access to this project",
            Self::TooManySubscriptions => "this connection holds its maximum of subscriptions",
            Self::AlreadySubscribed => "this connection is subscribed to the project already",
            Self::UnsupportedSubscription => {
                "a subscription is to a project_id or to a tag, not both"
            }
            Self::InvalidTag => "tag must match ^[A-Za-z0-9_.:@-]{1,64}$, or be * (every project)",
            Self::InvalidFilter => {
                "status must be a list of QUEUED, stage codes, COMPLETED, FAILED, CANCELLED, active or ended; since an RFC 3339 time"
            }
            Self::TagAtCapacity => {
                "this hub serves its maximum of subscriptions to this tag; retry later"
            }
            Self::InvalidFrame => {
                "expected {\"event\":\"subscribe\"|\"unsubscribe\"|\"ping\"|\"pong\"|\"refresh\",\"data\":{...}}"
            }
            Self::HubAtCapacity => "this hub watches its maximum of projects; retry later",
        }
    }
}
