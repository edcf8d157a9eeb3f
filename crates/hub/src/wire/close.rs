//! Why the hub closes a session, and the WebSocket close code that says so.

/// Every way the hub ends a session on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is stopping, usually to restart (1012, "service restart"): reconnect
    /// with jitter and resume.
    ServiceRestart,
    /// A client frame exceeded the size limit (1009).
    MessageTooBig,
    /// The client sent nothing for `heartbeat_timeout` (4408).
    HeartbeatTimeout,
    /// The client could not keep up; it should reconnect and resume (4429).
    SlowConsumer,
    /// A limit (connections, projects) is reached; retry later (1013).
    Overloaded,
    /// The access token expired and was not refreshed (4401).
    TokenExpired,
    /// The client broke the WebSocket protocol: a reserved opcode, RSV bits without an
    /// extension, an unmasked or malformed frame (1002).
    ProtocolError,
    /// A text frame that is not UTF-8 (1007).
    InvalidPayload,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            Self::ServiceRestart => 1012,
            Self::MessageTooBig => 1009,
            Self::HeartbeatTimeout => 4408,
            Self::SlowConsumer => 4429,
            Self::Overloaded => 1013,
            Self::TokenExpired => 4401,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
        }
    }

    /// The close reason text; short, stable, and free of internals.
    pub fn text(self) -> &'static str {
        match self {
            Self::ServiceRestart => "service restart",
            Self::MessageTooBig => "message too big",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::SlowConsumer => "slow consumer",
            Self::Overloaded => "server overloaded, retry later",
            Self::TokenExpired => "token expired",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "invalid UTF-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_contract() {
        assert_eq!(CloseReason::ServiceRestart.code(), 1012);
        assert_eq!(CloseReason::MessageTooBig.code(), 1009);
        assert_eq!(CloseReason::HeartbeatTimeout.code(), 4408);
        assert_eq!(CloseReason::HeartbeatTimeout.text(), "heartbeat timeout");
        assert_eq!(CloseReason::SlowConsumer.code(), 4429);
        assert_eq!(CloseReason::Overloaded.code(), 1013);
        assert_eq!(CloseReason::TokenExpired.code(), 4401);
        assert_eq!(CloseReason::ProtocolError.code(), 1002);
        assert_eq!(CloseReason::InvalidPayload.code(), 1007);
    }
}
