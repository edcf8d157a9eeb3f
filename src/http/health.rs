//! Liveness, readiness and metrics endpoints for operators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the broker is reachable; 503 while it is not (e.g. Redis down).
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let broker = app.broker.kind();
    if app.broker.is_ready().await {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "broker": broker })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "broker": broker })),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
