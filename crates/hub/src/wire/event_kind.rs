//! Every event name of the contract, spelled once. The serde tags of [`super::Event`]
//! are derived from the same variant names (a test holds them equal), and `publish.lua`
//! and the clients compare against these strings.

/// The event names of the contract. `Other` is any name a legacy publisher used that
/// the contract does not know; it is forwarded like the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Connected,
    Snapshot,
    ProgressUpdate,
    StageChange,
    Log,
    Error,
    Complete,
    Ping,
    Pong,
    /// Whether the hub can reach its broker (Redis): said to every session when the
    /// hub's subscriber loses Redis and when it is back.
    BrokerStatus,
    /// The project's running job went silent, or published again (`wire::stall`): the
    /// hub's own word, no id, not in the history.
    Stalled,
    /// A multiplexed connection's answers to `subscribe` and `unsubscribe`.
    Subscribed,
    Unsubscribed,
    SubscriptionError,
    /// A tag subscription's view of one project: its state.
    ProjectState,
    Other,
}

impl EventKind {
    pub fn from_name(name: &str) -> Self {
        match name {
            "connected" => Self::Connected,
            "snapshot" => Self::Snapshot,
            "progress_update" => Self::ProgressUpdate,
            "stage_change" => Self::StageChange,
            "log" => Self::Log,
            "error" => Self::Error,
            "complete" => Self::Complete,
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            "broker_status" => Self::BrokerStatus,
            "stalled" => Self::Stalled,
            "subscribed" => Self::Subscribed,
            "unsubscribed" => Self::Unsubscribed,
            "subscription_error" => Self::SubscriptionError,
            "project_state" => Self::ProjectState,
            _ => Self::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Snapshot => "snapshot",
            Self::ProgressUpdate => "progress_update",
            Self::StageChange => "stage_change",
            Self::Log => "log",
            Self::Error => "error",
            Self::Complete => "complete",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::BrokerStatus => "broker_status",
            Self::Stalled => "stalled",
            Self::Subscribed => "subscribed",
            Self::Unsubscribed => "unsubscribed",
            Self::SubscriptionError => "subscription_error",
            Self::ProjectState => "project_state",
            Self::Other => "other",
        }
    }

    /// A frame a newer frame of the same kind makes worthless: a backed-up client may
    /// skip it (the slow-consumer policy). Everything else must be delivered.
    pub fn is_superseded_by_newer(self) -> bool {
        matches!(
            self,
            Self::ProgressUpdate | Self::Ping | Self::BrokerStatus | Self::Stalled
        )
    }
}
