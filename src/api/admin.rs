//! `/admin/*`: operator endpoints behind the admin token
//! (`SWITCHBOARD_ADMIN_TOKEN`, compared in constant time). Without a token
//! configured the admin API is closed.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::domain::RequestId;
use crate::error::ApiError;

pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::unauthorized(
            "The admin API is disabled: set SWITCHBOARD_ADMIN_TOKEN to enable it.",
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "A valid admin token is required (Authorization: Bearer ...).",
        ))
    }
}

/// `GET /admin/decisions/{request_id}`: why this model — the stored receipt.
pub async fn decision(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(request_id): Path<String>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let id = match RequestId::parse(&request_id) {
        Ok(id) => id,
        Err(e) => return ApiError::bad_request("invalid_value", e.to_string()).into_response(),
    };
    match state.gateway().store.decision(id.as_str()).await {
        Ok(Some(d)) => Json(json!({
            "request_id": id.as_str(),
            "route": d.route,
            "model": d.model,
            "policy_version": d.policy_version,
            "propensity": d.propensity,
            "cost_usd": d.cost_usd,
            "status": d.status,
            "receipt": d.decision,
        }))
        .into_response(),
        Ok(None) => ApiError::not_found(
            "request_not_found",
            format!("No stored request with id `{}`.", id.as_str()),
        )
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Reading a decision failed.");
            ApiError::unavailable(
                "store_unavailable",
                "The store could not be read; retry later.",
            )
            .into_response()
        }
    }
}

/// `GET /admin/replicas`: this replica's identity and replication status,
/// and every replica's heartbeat with its liveness (docs/scaling.md).
pub async fn replicas(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match crate::gateway::scale::view::replicas(&state.gateway()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "Listing replicas failed.");
            ApiError::unavailable(
                "store_unavailable",
                "The replicas table could not be read; retry later.",
            )
            .into_response()
        }
    }
}
