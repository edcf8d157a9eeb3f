//! `GET /api/v1/webhooks/deliveries?limit=&cursor=`: this hub's recent webhook delivery
//! attempts, newest first, a page at a time. With access control on it needs a token
//! that may publish to every project (the backend's), as the publish API's admin use.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::{AppState, access};
use crate::webhook::DeliveryPage;

/// Attempts a page lists when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;

#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "webhooks",
    params(
        ("limit" = Option<usize>, Query, description = "attempts per page, 1 to 200 (default 50)"),
        ("cursor" = Option<u64>, Query, description = "the previous page's next_cursor")),
    responses(
        (status = 200, description = "recent delivery attempts of this hub, newest first", body = DeliveryPage),
        (status = 400, description = "limit or cursor is not a whole number", body = ErrorBody),
        (status = 401, description = "no valid token (with --auth-secret)", body = ErrorBody),
        (status = 403, description = "the token may not publish to every project", body = ErrorBody),
        (status = 404, description = "the hub has no webhooks", body = ErrorBody)))]
pub async fn deliveries(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(denied) = access::publish(&app, &headers, None) {
        return denied.into_response();
    }
    let Some(log) = &app.webhooks else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "NO_WEBHOOKS",
            "this hub has no webhooks (serve --webhook)",
        )
        .into_response();
    };
    let (mut limit, mut cursor) = (DEFAULT_LIMIT, None);
    for pair in query.as_deref().unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let parsed = match name {
            "limit" => value.parse().map(|n| limit = n),
            "cursor" => value.parse().map(|c| cursor = Some(c)),
            _ => Ok(()),
        };
        if parsed.is_err() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
                "limit and cursor must be whole numbers",
            )
            .into_response();
        }
    }
    Json(log.page(limit, cursor)).into_response()
}
