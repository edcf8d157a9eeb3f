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
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    })
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
