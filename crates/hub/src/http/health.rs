//! Liveness, readiness and metrics endpoints for operators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process is alive and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the broker can take writes and its subscription receives; 503 while
/// not (Redis down, a node demoted to a replica, a Sentinel failover under way, Pub/Sub
/// probes not delivered), with a `reason` when the subscriber is the cause.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready"), (status = 503, description = "the broker (Redis) is unreachable, cannot take writes (a replica), or its subscription receives nothing")))]
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let broker = app.broker.kind();
    if app.broker.is_ready().await {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "broker": broker })),
        )
    } else {
        let reason = app.broker.unready_reason().unwrap_or("broker_unreachable");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "broker": broker, "reason": reason })),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
