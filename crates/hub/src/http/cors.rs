//! CORS for pages served from another origin (`--cors-origins`): the app's own page on
//! `https://app.example` reads a project's state, falls back to SSE and probes a refused
//! WebSocket on the hub at `https://hub.example`.
//!
//! Only exact origins are listed: no wildcard, and nothing is sent for an origin that is
//! not listed (the browser then blocks the response, as without this option). The
//! headers are tower-http's `CorsLayer`; what is ours is the parsing of the list (so a
//! typo is refused at start, not silently never matched) and the 204 of a preflight
//! (tower-http answers 200).

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// One origin a browser may call the hub from: `http(s)://host[:port]`, in the form a
/// browser sends it in `Origin` (lower case, no default port, no path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--cors-origins: {value:?} is not an origin ({why}); list exact origins such as \
     https://app.example or http://localhost:3000, comma-separated"
)]
pub struct InvalidOrigin {
    value: String,
    why: &'static str,
}

impl FromStr for CorsOrigin {
    type Err = InvalidOrigin;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = |why| InvalidOrigin {
            value: value.to_owned(),
            why,
        };
        if value.contains('*') {
            return Err(refuse("a wildcard is not allowed"));
        }
        let uri: Uri = value.parse().map_err(|_| refuse("not a URL"))?;
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return Err(refuse("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| refuse("no host"))?;
        if authority.as_str().contains('@') {
            return Err(refuse("an origin has no user name or password"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(refuse("an origin has no path or query"));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(refuse("no host"));
        }
        let scheme = uri.scheme_str().unwrap_or_default();
        Ok(Self(match authority.port_u16() {
            Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        }))
    }
}

impl fmt::Display for CorsOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CorsOrigin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The layer for the listed origins, or `None` when there are none (no CORS at all).
pub fn layer(origins: &[CorsOrigin]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.as_str()).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Around the layer: a preflight it answered for a listed origin (200, empty) becomes
/// 204 No Content, as the contract says; an origin not listed gets no CORS header at all
/// (tower-http withholds only `Access-Control-Allow-Origin` then, which is enough for a
/// browser but says more than it needs to).
pub async fn finish(
    axum::extract::State(origins): axum::extract::State<std::sync::Arc<Vec<CorsOrigin>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let listed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| origins.iter().any(|l| l.as_str() == o));
    let mut response = next.run(request).await;
    if listed {
        if preflight && response.status() == StatusCode::OK {
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
    } else {
        let headers = response.headers_mut();
        let cors: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Result<String, InvalidOrigin> {
        s.parse::<CorsOrigin>().map(|o| o.to_string())
    }

    #[test]
    fn origins_are_kept_in_the_form_browsers_send() {
        assert_eq!(
            origin("https://App.Example").unwrap(),
            "https://app.example"
        );
        assert_eq!(
            origin("https://a.example:443/").unwrap(),
            "https://a.example"
        );
        assert_eq!(
            origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(origin("http://127.0.0.1:80").unwrap(), "http://127.0.0.1");
        assert_eq!(origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
    }

    #[test]
    fn what_is_not_an_exact_origin_is_refused_with_the_reason() {
        for (bad, why) in [
            ("*", "wildcard"),
            ("https://*.example", "wildcard"),
            ("app.example", "scheme"),
            ("ftp://app.example", "scheme"),
            ("https://app.example/path", "path"),
            ("https://app.example/?q=1", "path or query"),
            ("https://user:pw@app.example", "user name"),
            ("", "URL"),
            ("null", "scheme"),
            ("https://", "URL"),
        ] {
            let err = origin(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("--cors-origins"), "{err}");
        }
    }
}
