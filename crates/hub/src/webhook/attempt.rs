//! One attempt to deliver one webhook to one endpoint: sign, post, classify the answer.
//!
//! The answer's body is never read: a receiver answering 10 MB costs the hub nothing
//! (the connection is dropped after the head), and one that never answers is cut off
//! by the attempt's timeout, which bounds connect, send and the answer's head alike.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};

use super::config::{Endpoint, Secret};

/// What the receiver's answer means for this delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx: delivered.
    Delivered(u16),
    /// 410 Gone: the endpoint asks for no more; it is disabled.
    Gone,
    /// Anything else (another status, a timeout, a refused connection): try again,
    /// not before `after` when the receiver said so (`Retry-After`).
    Failed {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
}

impl Outcome {
    /// The label of `/metrics` and of the deliveries log.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered(_) => "delivered",
            Self::Gone => "gone",
            Self::Failed {
                status: Some(_), ..
            } => "failed_status",
            Self::Failed { status: None, .. } => "failed_transport",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered(status) => Some(*status),
            Self::Gone => Some(410),
            Self::Failed { status, .. } => *status,
        }
    }
}

/// Posts `body` to `endpoint` as webhook `id`, signed with `secret` (Standard Webhooks:
/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`), within `timeout`.
pub async fn attempt(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    id: &str,
    secret: &Secret,
    body: &[u8],
    timeout: Duration,
) -> Outcome {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = match secret.signer().sign(id, timestamp, body) {
        Ok(signature) => signature,
        Err(err) => {
            return Outcome::Failed {
                status: None,
                error: format!("cannot sign: {err}"),
                after: None,
            };
        }
    };
    let sent = client
        .post(endpoint.0.clone())
        .timeout(timeout)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(
            USER_AGENT,
            HeaderValue::from_static("progress-hub-webhooks"),
        )
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(err) => {
            return Outcome::Failed {
                status: None,
                error: transport_error(&err),
                after: None,
            };
        }
    };
    let status = answer.status().as_u16();
    match status {
        200..=299 => Outcome::Delivered(status),
        410 => Outcome::Gone,
        _ => Outcome::Failed {
            status: Some(status),
            error: format!("answered {status}"),
            after: answer
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after),
        },
    }
}

fn transport_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (then the time until it).
pub fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = retry_after(&later).unwrap();
        assert!(
            wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        for bad in ["", "-5", "soon", "1.5", "99999999999999999999999"] {
            assert_eq!(retry_after(bad), None, "{bad:?}");
        }
    }

    /// The Standard Webhooks specification's published example: this secret, id,
    /// timestamp and payload sign to this signature (it is in every official library's
    /// tests).
    #[test]
    fn signatures_match_the_specifications_example() {
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let payload = br#"{"test": 2432232314}"#;
        let signature = secret
            .signer()
            .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload)
            .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
