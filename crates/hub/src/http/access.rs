//! Who may do what, checked before any handler work (or upgrade): the token
//! (`?token=` or `Authorization: Bearer`, when `--auth-secret` is set) and the `Origin`
//! (when `--allowed-origins` is set, against cross-site WebSocket hijacking), and that a
//! write is not one a web page could forge cross-site ([`writes_declare_json`]).

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Auth, AuthError, Claims};
use crate::session::{Access, ConnectionAccess};
use crate::wire::ProjectId;

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Forbidden => Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", err.to_string()),
            _ => Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", err.to_string()),
        }
    }
}

fn token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    query.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
    })
}

/// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Refuses a request whose `Origin` is not allowed (requests without one, from
/// non-browser clients, pass: only browsers can be tricked into cross-site requests).
pub fn check_origin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.allowed_origins.is_empty() {
        return Ok(());
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) if !app.allowed_origins.iter().any(|o| o == origin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ORIGIN_NOT_ALLOWED",
            "this origin may not use the hub",
        )),
        _ => Ok(()),
    }
}

/// Every write (`POST`) must declare `Content-Type: application/json`. A web page can
/// send a cross-site "simple" request (`text/plain`, a form, or no body) with no CORS
/// preflight; declaring JSON takes a preflight the hub never grants, so a page on
/// another site cannot make a write (start a job, publish an event) at all. The one
/// exception is a request with neither a body nor an `Origin` (`curl -X POST
/// .../generate`): no browser sends a POST without an `Origin`. 415 otherwise.
pub async fn writes_declare_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::HttpBody;
    use axum::response::IntoResponse;
    if request.method() == axum::http::Method::POST {
        let headers = request.headers();
        let declared = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        let bodyless = request.body().size_hint().exact() == Some(0);
        let from_browser = headers.contains_key(header::ORIGIN);
        if !declared && (from_browser || !bodyless) {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON, with Content-Type: application/json",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// `application/json`, with or without parameters (`; charset=utf-8`), in any case.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// May this request watch `project`? With auth on, also the session's token timer.
pub fn watch(
    app: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
    project: &ProjectId,
) -> Result<Option<Access>, ApiError> {
    check_origin(app, headers)?;
    let Some(auth) = &app.auth else {
        return Ok(None);
    };
    let claims = auth.may_watch(token(headers, query_token), project)?;
    Ok(Some(Access::new(
        Arc::clone(auth),
        project.clone(),
        claims.expires_at(),
    )))
}

/// May this request open a multiplexed connection? With auth on, a valid token (for
/// whichever projects: each subscription is checked against it) and its timer.
pub fn watch_any(
    app: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Option<ConnectionAccess>, ApiError> {
    check_origin(app, headers)?;
    let Some(auth) = &app.auth else {
        return Ok(None);
    };
    let token = token(headers, query_token).ok_or(AuthError::Missing)?;
    Ok(Some(ConnectionAccess::new(Arc::clone(auth), token)?))
}

/// May this request publish to (or start jobs of) `project` (`None`: any project)?
pub fn publish(
    app: &AppState,
    headers: &HeaderMap,
    project: Option<&ProjectId>,
) -> Result<(), ApiError> {
    check_origin(app, headers)?;
    match &app.auth {
        Some(auth) => auth
            .may_publish(token(headers, None), project)
            .map(drop)
            .map_err(Into::into),
        None => Ok(()),
    }
}

/// May this request cancel `project`'s job (a publish or a control token)?
pub fn control(app: &AppState, headers: &HeaderMap, project: &ProjectId) -> Result<(), ApiError> {
    check_origin(app, headers)?;
    match &app.auth {
        Some(auth) => auth
            .may_control(token(headers, None), project)
            .map(drop)
            .map_err(Into::into),
        None => Ok(()),
    }
}

/// May this request read `project`'s state?
pub fn read(app: &AppState, headers: &HeaderMap, project: &ProjectId) -> Result<(), ApiError> {
    check_origin(app, headers)?;
    match &app.auth {
        Some(auth) => auth
            .may_watch(token(headers, None), project)
            .map(drop)
            .map_err(Into::into),
        None => Ok(()),
    }
}

/// May this request list projects? `None`: access control is off (all); else the
/// token's claims, which decide per project ([`Claims::covers`], [`Claims::covers_tag`]).
pub fn list(app: &AppState, headers: &HeaderMap) -> Result<Option<Claims>, ApiError> {
    check_origin(app, headers)?;
    match &app.auth {
        Some(auth) => Ok(Some(
            auth.verify(token(headers, None).ok_or(AuthError::Missing)?)?,
        )),
        None => Ok(None),
    }
}

/// Shared by the handlers' state.
pub type SharedAuth = Option<Arc<Auth>>;

/// Who a request counts as for per-client limits: with access control on, its token (a
/// digest of it: each token is one client, wherever it connects from); else its address.
pub fn client_key(app: &AppState, headers: &HeaderMap, peer: std::net::IpAddr) -> String {
    use std::hash::{Hash, Hasher};
    match (&app.auth, token(headers, None)) {
        (Some(_), Some(token)) => {
            let mut digest = std::hash::DefaultHasher::new();
            token.hash(&mut digest);
            format!("token:{:016x}", digest.finish())
        }
        _ => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{bearer, is_json};

    #[test]
    fn json_is_application_json_with_any_parameters() {
        for value in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
        ] {
            assert!(is_json(value), "{value}");
        }
        for value in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json(value), "{value}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "Bearer  t "] {
            assert_eq!(bearer(value), Some("t"), "{value}");
        }
        assert_eq!(bearer("Basic t"), None);
        assert_eq!(bearer("Bearert"), None);
    }
}
