//! Liveness, readiness and the Prometheus scrape.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the configuration is loaded (it is, or we would not be
/// serving) and the database answers within a second.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = &state.gateway().store;
    match tokio::time::timeout(Duration::from_secs(1), store.ping()).await {
        Ok(Ok(())) => Json(json!({"status": "ready", "database": store.backend()})).into_response(),
        Ok(Err(e)) => not_ready(e.to_string()),
        Err(_) => not_ready("the database did not answer within 1 s".into()),
    }
}

fn not_ready(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not_ready", "reason": reason})),
    )
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}
