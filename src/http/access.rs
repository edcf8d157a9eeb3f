//! Who may do what, checked before any handler work (or upgrade): the token
//! (`?token=` or `Authorization: Bearer`, when `--auth-secret` is set) and the `Origin`
//! (when `--allowed-origins` is set, against cross-site WebSocket hijacking).

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Auth, AuthError};
use crate::session::Access;
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

/// Shared by the handlers' state.
pub type SharedAuth = Option<Arc<Auth>>;

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "Bearer  t "] {
            assert_eq!(bearer(value), Some("t"), "{value}");
        }
        assert_eq!(bearer("Basic t"), None);
        assert_eq!(bearer("Bearert"), None);
    }
}
