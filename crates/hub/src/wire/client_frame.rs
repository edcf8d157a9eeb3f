//! Client → server frames: `pong`, `ping`, `refresh`, and on a multiplexed connection
//! `subscribe` and `unsubscribe`; everything else is reported as an error value for the
//! session to count (or answer) and ignore, never to fail on.

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
    /// `{"event":"subscribe","data":{"project_id":"p1","last_event_id":"<id>"}}`
    /// (multiplexed connections only; a single-project session ignores it).
    Subscribe(Subscribe),
    /// `{"event":"unsubscribe","data":{"project_id":"p1"}}`: the raw id, if a string.
    Unsubscribe(Option<String>),
    /// `{"event":"unsubscribe","data":{"tag":"user:7"}}`: the raw tag, if a string.
    UnsubscribeTag(Option<String>),
    /// A well-formed frame with an event name we do not handle.
    Unknown(String),
}

/// What a `subscribe` frame asks for, as sent (validated by the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub target: Target,
    /// `last_event_id`: `None` when absent or null; `Some(Err(()))` when not a string.
    pub last_event_id: Option<Result<String, ()>>,
}

/// What a subscription is to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `project_id`, as sent: `None` when absent or not a string.
    Project(Option<String>),
    /// `tag`, with its filters, as sent.
    Tag(TagAsk),
    /// Both `project_id` and `tag`: one subscription is to one of them.
    Both,
}

/// A tag subscription as sent: `{"tag":"user:7","status":["active"],"since":"<RFC 3339>"}`
/// (validated by the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagAsk {
    /// `None` when not a string.
    pub tag: Option<String>,
    pub status: Option<serde_json::Value>,
    pub since: Option<serde_json::Value>,
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
            "subscribe" => Self::Subscribe(subscribe(probe.data.as_ref())),
            "unsubscribe" => match probe.data.as_ref().and_then(|d| d.get("tag")) {
                Some(tag)
                    if probe
                        .data
                        .as_ref()
                        .and_then(|d| d.get("project_id"))
                        .is_none() =>
                {
                    Self::UnsubscribeTag(tag.as_str().map(str::to_string))
                }
                _ => Self::Unsubscribe(project_id(probe.data.as_ref())),
            },
            other => Self::Unknown(other.chars().take(64).collect()),
        })
    }
}

fn project_id(data: Option<&serde_json::Value>) -> Option<String> {
    data.and_then(|d| d.get("project_id"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

fn subscribe(data: Option<&serde_json::Value>) -> Subscribe {
    let field = |name| data.and_then(|d| d.get(name)).filter(|v| !v.is_null());
    let target = match (field("project_id"), field("tag")) {
        (None, Some(tag)) => Target::Tag(TagAsk {
            tag: tag.as_str().map(str::to_string),
            status: field("status").cloned(),
            since: field("since").cloned(),
        }),
        (Some(_), Some(_)) => Target::Both,
        _ => Target::Project(project_id(data)),
    };
    let last_event_id = field("last_event_id").map(|v| v.as_str().map(str::to_string).ok_or(()));
    Subscribe {
        target,
        last_event_id,
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
    fn subscribe_and_unsubscribe_carry_what_was_sent() {
        let parse = |s: &str| ClientFrame::parse(s).unwrap();
        assert_eq!(
            parse(r#"{"event":"subscribe","data":{"project_id":"p1","last_event_id":"e:3"}}"#),
            ClientFrame::Subscribe(Subscribe {
                target: Target::Project(Some("p1".into())),
                last_event_id: Some(Ok("e:3".into())),
            })
        );
        assert_eq!(
            parse(r#"{"event":"subscribe","data":{"project_id":5,"last_event_id":7}}"#),
            ClientFrame::Subscribe(Subscribe {
                target: Target::Project(None),
                last_event_id: Some(Err(())),
            })
        );
        assert_eq!(
            parse(r#"{"event":"subscribe","data":{"tag":"nightly","last_event_id":null}}"#),
            ClientFrame::Subscribe(Subscribe {
                target: Target::Tag(TagAsk {
                    tag: Some("nightly".into()),
                    status: None,
                    since: None,
                }),
                last_event_id: None,
            })
        );
        assert_eq!(
            parse(r#"{"event":"subscribe","data":{"tag":7,"status":["active"],"since":"x"}}"#),
            ClientFrame::Subscribe(Subscribe {
                target: Target::Tag(TagAsk {
                    tag: None,
                    status: Some(serde_json::json!(["active"])),
                    since: Some(serde_json::json!("x")),
                }),
                last_event_id: None,
            })
        );
        assert_eq!(
            parse(r#"{"event":"subscribe","data":{"tag":"t","project_id":"p"}}"#),
            ClientFrame::Subscribe(Subscribe {
                target: Target::Both,
                last_event_id: None,
            })
        );
        assert_eq!(
            parse(r#"{"event":"unsubscribe","data":{"tag":"t"}}"#),
            ClientFrame::UnsubscribeTag(Some("t".into()))
        );
        assert_eq!(
            parse(r#"{"event":"subscribe"}"#),
            ClientFrame::Subscribe(Subscribe {
                target: Target::Project(None),
                last_event_id: None,
            })
        );
        assert_eq!(
            parse(r#"{"event":"unsubscribe","data":{"project_id":"p1"}}"#),
            ClientFrame::Unsubscribe(Some("p1".into()))
        );
        assert_eq!(
            parse(r#"{"event":"unsubscribe","data":[1]}"#),
            ClientFrame::Unsubscribe(None)
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
