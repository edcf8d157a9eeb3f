//! The API's documentation, generated from the code so it cannot drift: OpenAPI 3 for
//! the REST endpoints (`/api/v1/openapi.json`, Swagger UI at `/docs`, its assets
//! vendored in the binary), the JSON Schema of every frame
//! (`/api/v1/schema/events.json`), and an AsyncAPI document for the streams
//! (`/api/v1/asyncapi.json`). The routes a program adds (`extension.rs`: the jobs') bring
//! their OpenAPI paths, merged into this one.

use axum::Json;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::catalog::ErrorCode;
use crate::wire::event::{
    Complete, CompleteStatus, ErrorReport, Log, LogLevel, ProgressUpdate, StageChange,
};
use crate::wire::schema::events_schema;
use crate::wire::{Event, ProjectState, Stage};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "progress-hub",
        description = "Real-time progress push for long-running generation jobs. Frames on the WebSocket/SSE streams are described by /api/v1/schema/events.json and /api/v1/asyncapi.json; the rules (ids, resume, close codes) by docs/PROTOCOL.md."
    ),
    paths(
        super::progress::progress,
        super::progress::events,
        super::multiplexed::progress,
        super::multiplexed::events,
        super::publish::publish,
        super::projects::state,
        super::project_list::list,
        super::new_project::create,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        super::webhooks::deliveries,
    ),
    components(schemas(
        Event, ProgressUpdate, StageChange, Log, ErrorReport, Complete, Stage, LogLevel,
        CompleteStatus, ErrorCode, ProjectState,
        super::projects::ProjectStateBody,
        super::error::ErrorBody, super::error::ErrorDetail,
        crate::webhook::body::WebhookBody, crate::webhook::body::WebhookData,
        crate::webhook::DeliveryPage, crate::webhook::Delivery
    )),
    tags(
        (name = "watching", description = "WebSocket and SSE streams of a project's progress"),
        (name = "publishing", description = "The hub's publish path"),
        (name = "projects", description = "Project state and generation jobs"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "webhooks", description = "Webhooks the hub POSTs to the backend (serve --webhook) when a job ends: body WebhookBody (type job.completed, job.failed, job.cancelled: `job.` and the complete's status; job.stalled: a run under way went silent; project.vacated: nobody has watched a project watched before for --webhook-vacated-after), headers webhook-id (the same on every retry), webhook-timestamp and webhook-signature (Standard Webhooks: v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">). See docs/WEBHOOKS.md."),
    )
)]
pub struct ApiDoc;

/// `GET /api/v1/schema/events.json`
pub async fn events_json() -> impl IntoResponse {
    Json(events_schema())
}

/// `GET /api/v1/asyncapi.json`: the streams, their parameters and their messages.
pub async fn asyncapi_json() -> impl IntoResponse {
    Json(asyncapi())
}

pub fn asyncapi() -> Value {
    let frames = events_schema();
    let project = json!({
        "description": "The project id, ^[A-Za-z0-9_-]{1,64}$",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" }
    });
    json!({
        "asyncapi": "2.6.0",
        "info": {
            "title": "progress-hub streams",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Server → client frames of a project's progress, over WebSocket or SSE. Clients answer {\"event\":\"ping\"} with {\"event\":\"pong\"}. Resume with ?last_event_id= or Last-Event-ID."
        },
        "defaultContentType": "application/json",
        "channels": {
            "/api/v1/projects/{project_id}/progress": {
                "parameters": { "project_id": project.clone() },
                "bindings": { "ws": { "query": { "type": "object", "properties": {
                    "last_event_id": { "type": "string", "description": "resume after this event id" }
                } } } },
                "subscribe": {
                    "summary": "Frames the hub sends",
                    "message": { "name": "ServerFrame", "payload": frames.clone() }
                },
                "publish": {
                    "summary": "Frames a client may send",
                    "message": { "name": "ClientFrame", "payload": {
                        "type": "object", "required": ["event"],
                        "properties": { "event": { "type": "string", "enum": ["pong", "ping"] } }
                    } }
                }
            },
            "/api/v1/progress": {
                "description": "One connection, many projects (WebSocket). First frame `connected` (no project); then the client subscribes to projects. Every frame of a subscription (the frames of /api/v1/projects/{project_id}/progress, its `connected` becoming `subscribed`) carries a top-level `project_id`. A subscription to a tag (`{\"tag\":\"user:7\",\"status\":[\"active\"],\"since\":\"<RFC 3339>\"}`) is answered by `subscribed` with a top-level `tag`, then one `project_state` (top-level `project_id` and `tag`; data: the GET /api/v1/projects/{project_id} object) per matching project, then one whenever a project's status, stage, progress or ETA changes (read every second), projects tagged later included. A refused frame is answered with `subscription_error` (codes: contract/error-catalog.json, `subscription_errors`); the connection and its other subscriptions go on. See docs/PROTOCOL.md.",
                "bindings": { "ws": { "query": { "type": "object", "properties": {
                    "token": { "type": "string", "description": "access token, when access control is on" }
                } } } },
                "subscribe": {
                    "summary": "Frames the hub sends",
                    "message": { "name": "ServerFrame", "payload": frames.clone() }
                },
                "publish": {
                    "summary": "Frames a client may send",
                    "message": { "name": "MultiplexedClientFrame", "payload": {
                        "type": "object", "required": ["event"],
                        "properties": {
                            "event": { "type": "string", "enum": ["subscribe", "unsubscribe", "ping", "pong", "refresh"] },
                            "data": { "type": "object", "properties": {
                                "project_id": project["schema"].clone(),
                                "last_event_id": { "type": "string", "description": "subscribe: resume this project after this event id" },
                                "tag": { "type": "string", "pattern": "^([A-Za-z0-9_.:@-]{1,64}|\\*)$", "description": "subscribe/unsubscribe: a tag instead of a project_id; `*`: every project (a token whose projects include `*`)" },
                                "status": { "type": "array", "items": { "type": "string" }, "description": "tag subscribe: only projects whose status is one of these (QUEUED, a stage code, COMPLETED, FAILED, CANCELLED) or in the groups active / ended" },
                                "since": { "type": "string", "format": "date-time", "description": "tag subscribe: only projects tagged at or after this time" },
                                "token": { "type": "string", "description": "refresh: a fresher token, allowing every subscribed project and tag" }
                            } }
                        }
                    } }
                }
            },
            "/api/v1/progress/events": {
                "description": "The multiplexed feed over SSE: the frames of /api/v1/progress as SSE records (id: + data:), the subscriptions named in the query (projects=a,b: at most 100; tags=user:7). A record that moves a project's position carries an id: holding every project's position (m1.<list>.<epoch>:<seq>,...: <list> is the FNV-1a-32 hex of the projects value, then one position per project in its order, empty for none), so Last-Event-ID resumes every project subscription at once; other records carry no id:. Hostile or oversized ids and another list's id: 400 INVALID_EVENT_ID. See docs/PROTOCOL.md.",
                "bindings": { "http": { "type": "request", "method": "GET", "query": { "type": "object", "properties": {
                    "projects": { "type": "string", "description": "comma-separated project ids, at most 100" },
                    "tags": { "type": "string", "description": "comma-separated tags" },
                    "token": { "type": "string", "description": "access token, when access control is on" },
                    "last_event_id": { "type": "string", "maxLength": crate::wire::positions::MAX_LEN, "description": "resume every project (wins over the Last-Event-ID header)" }
                } } } },
                "subscribe": {
                    "summary": "The multiplexed frames as SSE records",
                    "message": { "name": "ServerFrame", "payload": frames.clone() }
                }
            },
            "/api/v1/projects/{project_id}/events": {
                "parameters": { "project_id": project },
                "subscribe": {
                    "summary": "The same frames as SSE records (id: + data:)",
                    "message": { "name": "ServerFrame", "payload": frames }
                }
            },
            "webhook": {
                "description": "The backend's endpoints (serve --webhook URL): one HTTP POST per job's end, stall and project vacancy, at least once, the same webhook-id on every retry. Signed the Standard Webhooks way; see docs/WEBHOOKS.md.",
                "bindings": { "http": { "type": "request", "method": "POST" } },
                "subscribe": {
                    "summary": "A job ended (job.completed, job.failed, job.cancelled: `job.` and its final status), stalled (job.stalled), or its project has nobody watching (project.vacated)",
                    "message": {
                        "name": "Webhook",
                        "headers": {
                            "type": "object",
                            "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
                            "properties": {
                                "webhook-id": { "type": "string", "description": "msg_<outbox id>: the same on every retry of the event" },
                                "webhook-timestamp": { "type": "string", "description": "Unix seconds of this attempt" },
                                "webhook-signature": { "type": "string", "description": "v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">, keyed with the secret's bytes" }
                            }
                        },
                        "payload": schemars::schema_for!(crate::webhook::body::WebhookBody)
                    }
                }
            }
        }
    })
}
