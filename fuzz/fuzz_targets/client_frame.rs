//! `ClientFrame::parse` on any text a WebSocket client can send.
//!
//! Invariants beyond "no panic": whatever is accepted is a JSON object with a string
//! `event`, and the variant is the one that name (and, for `refresh`, the token) says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use progress_hub::wire::{ClientFrame, ClientFrameError};
use serde::de::IgnoredAny;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time the session parses them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = ClientFrame::parse(text);
    let frame = match parsed {
        Ok(frame) => frame,
        Err(ClientFrameError::Malformed) => return,
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            // The parser skips fields it ignores without reading their numbers, so it
            // accepts a number too large for an f64 there (JSON's grammar allows it);
            // anything else it accepts must read as JSON.
            assert!(
                e.to_string().starts_with("number out of range")
                    && serde_json::from_str::<IgnoredAny>(text).is_ok(),
                "accepted frame is not JSON ({e}): {text:?}"
            );
            return;
        }
    };
    let name = value["event"]
        .as_str()
        .expect("accepted frame has no string \"event\"");
    let token = value["data"]["token"].as_str();
    let expected = match name {
        "pong" => ClientFrame::Pong,
        "ping" => ClientFrame::Ping,
        "refresh" => match token {
            Some(token) => ClientFrame::Refresh(token.to_string()),
            None => ClientFrame::Unknown("refresh".into()),
        },
        other => ClientFrame::Unknown(other.chars().take(64).collect()),
    };
    assert_eq!(frame, expected, "{text:?}");
    if let ClientFrame::Unknown(name) = &frame {
        assert!(name.chars().count() <= 64);
    }
});
