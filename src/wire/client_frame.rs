//! Client → server frames. Only `pong` and `ping` mean something; everything else is
//! reported as an error value for the session to count and ignore, never to fail on.

use serde::Deserialize;

/// What a client said, as far as the hub cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Answer to our `ping`.
    Pong,
    /// The client checks that we are alive; we answer `pong`.
    Ping,
    /// A fresher access token: `{"event":"refresh","data":{"token":"..."}}`.
    Refresh(String),
    /// A well-formed frame with an event name we do not handle.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientFrameError {
    #[error("client frame is not a JSON object with a string \"event\"")]
    Malformed,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    /// Read only for `refresh`; any JSON is fine for other events.
    #[serde(default)]
    data: Option<serde_json::Value>,
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<Self, ClientFrameError> {
        if !text.trim_start().starts_with('{') {
            return Err(ClientFrameError::Malformed);
        }
        let probe: Probe<'_> =
            serde_json::from_str(text).map_err(|_| ClientFrameError::Malformed)?;
        Ok(match probe.event.as_ref() {
            "pong" => Self::Pong,
            "ping" => Self::Ping,
            "refresh" => match probe.data.as_ref().and_then(|d| d["token"].as_str()) {
                Some(token) => Self::Refresh(token.to_string()),
                None => Self::Unknown("refresh".into()),
            },
            other => Self::Unknown(other.chars().take(64).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn understands_ping_and_pong() {
        assert_eq!(
            ClientFrame::parse(r#"{"event":"pong"}"#),
            Ok(ClientFrame::Pong)
        );
        assert_eq!(
            ClientFrame::parse(r#" {"event":"ping","data":{"x":[1,2]}}"#),
            Ok(ClientFrame::Ping)
        );
    }

    #[test]
    fn refresh_carries_its_token() {
        assert_eq!(
            ClientFrame::parse(r#"{"event":"refresh","data":{"token":"abc"}}"#),
            Ok(ClientFrame::Refresh("abc".into()))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"event":"refresh","data":{"token":5}}"#),
            Ok(ClientFrame::Unknown("refresh".into()))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"event":"pong","data":[1]}"#),
            Ok(ClientFrame::Pong)
        );
    }

    #[test]
    fn unknown_events_are_named_but_truncated() {
        let long = "x".repeat(1000);
        let parsed = ClientFrame::parse(&format!(r#"{{"event":"{long}"}}"#));
        assert_eq!(parsed, Ok(ClientFrame::Unknown("x".repeat(64))));
    }

    #[test]
    fn hostile_input_is_an_error_value() {
        for bad in [
            "",
            "pong",
            "{",
            "[\"pong\"]",
            "{\"event\":1}",
            "{\"event\":null}",
            "{\"data\":{}}",
            "null",
            &"[".repeat(10_000),
            &format!("{}{}", "{\"a\":".repeat(5000), "1"),
        ] {
            assert_eq!(
                ClientFrame::parse(bad),
                Err(ClientFrameError::Malformed),
                "{bad:.40}"
            );
        }
    }
}
