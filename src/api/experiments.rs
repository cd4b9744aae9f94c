//! `/admin/experiments`: list, start, status with results, promote, stop.
//! Behind the admin token; the work is in `gateway::operate` and
//! `gateway::report`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admin::authorize;
use super::control::op_error;
use super::json::MaybeJson;
use super::AppState;
use crate::error::ApiError;
use crate::gateway::experiment_ops::{ExperimentDef, PromoteOptions};
use crate::gateway::report;

/// `GET /admin/experiments`
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let gw = state.gateway();
    let plan = gw.plan.load();
    let data: Vec<_> = plan
        .control
        .experiments
        .iter()
        .map(|e| {
            let problem = plan
                .problems
                .iter()
                .find(|(n, _)| *n == e.name)
                .map(|(_, w)| w);
            json!({"name": e.name, "route": e.route, "kind": e.kind, "candidate": e.candidate,
                "share": e.share, "sticky_by": e.sticky_by, "status": e.status,
                "source": e.source, "problem": problem})
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /admin/experiments/{name}`: definition, status and per-arm results.
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let gw = state.gateway();
    let Some(e) = gw.plan.load().control.experiment(&name).cloned() else {
        return ApiError::not_found("experiment_not_found", format!("No experiment `{name}`."))
            .into_response();
    };
    match report::report(&gw, &e).await {
        Ok(doc) => Json(doc).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "Reading an experiment's results failed.");
            ApiError::unavailable(
                "store_unavailable",
                "The store could not be read; retry later.",
            )
            .into_response()
        }
    }
}

/// `POST /admin/experiments/{name}/start`: with a body `{"route", "kind",
/// "candidate", "share", "sticky_by"?, "auto_promote"?}` creates it; without,
/// (re)starts an experiment that exists.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    MaybeJson(def): MaybeJson<ExperimentDef>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.live.start_experiment(&name, def).await {
        Ok(()) => status(State(state), headers, Path(name)).await,
        Err(e) => op_error(e).into_response(),
    }
}

/// `POST /admin/experiments/{name}/promote` (optional body
/// `{"replace": true, "window_s": 600}`)
pub async fn promote(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    MaybeJson(opts): MaybeJson<PromoteOptions>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state
        .live
        .promote_experiment(&name, opts.unwrap_or_default())
        .await
    {
        Ok(()) => status(State(state), headers, Path(name)).await,
        Err(e) => op_error(e).into_response(),
    }
}

/// `POST /admin/experiments/{name}/stop`: back to normal.
pub async fn stop(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.live.stop_experiment(&name).await {
        Ok(()) => status(State(state), headers, Path(name)).await,
        Err(e) => op_error(e).into_response(),
    }
}
