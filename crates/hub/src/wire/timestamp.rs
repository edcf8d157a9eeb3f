//! Timestamps on the wire: ISO 8601 UTC with a `Z` suffix and millisecond precision.

use chrono::{SecondsFormat, Utc};

/// The current time as the wire writes it, e.g. `2025-10-19T10:35:00.123Z`.
pub fn now_iso8601() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, in milliseconds since the Unix epoch (the tag indexes' scores).
pub fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

/// An RFC 3339 timestamp (`2025-10-19T10:35:00Z`) in milliseconds since the Unix epoch;
/// `None` when it is not one or is before the epoch.
pub fn parse_ms(text: &str) -> Option<u64> {
    let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(at.timestamp_millis()).ok()
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

    #[test]
    fn milliseconds() {
        assert_eq!(parse_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_ms("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_ms("yesterday"), None);
        assert!(parse_ms(&now_iso8601()).unwrap() <= now_ms());
    }
}
