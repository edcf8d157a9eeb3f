//! Timestamps on the wire: ISO 8601 UTC with a `Z` suffix and millisecond precision.

use chrono::{SecondsFormat, Utc};

/// The current time as the wire writes it, e.g. `2025-10-19T10:35:00.123Z`.
pub fn now_iso8601() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_utc_iso8601_with_z() {
        let ts = now_iso8601();
        assert!(ts.ends_with('Z'), "{ts}");
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok(), "{ts}");
    }
}
