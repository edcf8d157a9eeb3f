//! `GET /api/v1/projects?tag=&status=&since=&limit=&cursor=`: a tag's projects with
//! their states, newest first (by when their run was given the tag), paged
//! (`broker::tag_page`); without a tag (or `tag=*`, [`Tag::all`]) every project, newest
//! first by when its run began. Each entry is what `GET /api/v1/projects/{id}` answers,
//! so the list and a tag subscription's `project_state` frames agree. 400 naming the
//! parameter for a bad one; with access control on, only the projects the token grants
//! (all of the tag's when it names the tag or its projects include `*`); every project
//! only to a token whose projects include `*` (403 `FORBIDDEN` for any other).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ErrorBody};
use super::{AppState, access};
use crate::broker::TagEntry;
use crate::broker::tag_page::{self, TagQuery};
use crate::wire::{StatusFilter, Tag, parse_ms};

/// Most projects one page holds, and how many when `limit` is not given.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tag: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    params(
        ("tag" = Option<String>, Query, description = "the tag (^[A-Za-z0-9_.:@-]{1,64}$) whose projects are listed; absent or `*`: every project (newest first by when its run began; with access control on, only for a token whose projects include `*`)"),
        ("status" = Option<String>, Query, description = "comma-separated: QUEUED, a stage code, COMPLETED, FAILED, CANCELLED, or the groups active / ended"),
        ("since" = Option<String>, Query, description = "RFC 3339: only projects whose run was given the tag (without a tag: began) at or after it"),
        ("limit" = Option<u32>, Query, description = "1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the page before")),
    responses(
        (status = 200, description = "{\"projects\": [<the GET /api/v1/projects/{id} object>...], \"next_cursor\": \"...\" | null}, newest first; a page may hold fewer than limit (a status filter matching few) with a next_cursor to go on from"),
        (status = 400, description = "INVALID_QUERY: a missing, unknown, repeated or invalid parameter (error.field names it)", body = ErrorBody),
        (status = 401, description = "a token is required", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: every project (no tag, or `*`) asked with a token whose projects do not include `*`", body = ErrorBody),
        (status = 503, description = "broker unavailable", body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let claims = match access::list(&app, &headers) {
        Ok(claims) => claims,
        Err(denied) => return denied.into_response(),
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return invalid("query", rejection.body_text()),
    };
    let tag = match query.tag.as_deref().map(Tag::parse_or_all) {
        None => Tag::all(),
        Some(Err(bad)) => return invalid("tag", bad.to_string()),
        Some(Ok(tag)) => tag,
    };
    let status = match StatusFilter::parse(query.status.iter().flat_map(|s| s.split(','))) {
        Ok(status) => status,
        Err(bad) => return invalid("status", bad.to_string()),
    };
    let since_ms = match query.since.as_deref().map(parse_ms) {
        None => 0,
        Some(Some(ms)) => ms,
        Some(None) => {
            return invalid(
                "since",
                "must be an RFC 3339 time, e.g. 2026-12-06T00:00:00Z".into(),
            );
        }
    };
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}")),
    };
    let after = match query.cursor.as_deref().map(TagEntry::from_cursor) {
        None => None,
        Some(Some(entry)) => Some(entry),
        Some(None) => return invalid("cursor", "not a cursor this hub gave".into()),
    };
    let whole_tag = claims.as_ref().is_none_or(|c| c.covers_tag(&tag));
    if tag.is_all() && !whole_tag {
        let why = "every project (no tag, or tag=*) is listed only for a token whose projects include \"*\"";
        return ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", why).into_response();
    }
    let broker = app.sessions.broker.as_ref();
    let page = tag_page::read(
        broker,
        TagQuery {
            tag: &tag,
            status: &status,
            since_ms,
            after,
            limit,
        },
    )
    .await;
    match page {
        Ok(page) => {
            let projects: Vec<Value> = page
                .projects
                .into_iter()
                .filter(|(entry, _)| {
                    whole_tag || claims.as_ref().is_some_and(|c| c.covers(&entry.project))
                })
                .map(|(entry, state)| state.to_json(&entry.project))
                .collect();
            let next = page.next.map(|entry| entry.cursor());
            Json(json!({ "projects": projects, "next_cursor": next })).into_response()
        }
        Err(err) => {
            tracing::error!(tag = %tag, error = %err, "listing a tag's projects failed");
            ApiError::unavailable().into_response()
        }
    }
}

fn invalid(field: &str, message: String) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", message)
        .with_field(field)
        .into_response()
}
