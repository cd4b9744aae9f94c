//! `/admin/keys`: create (the key is in the response, once), list, set the
//! feature flags of, and revoke client keys. Behind the admin token like the rest of `/admin`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admin::authorize;
use super::json::JsonBody;
use super::AppState;
use crate::auth::issue::{self, IssueError, KeySpec};
use crate::error::ApiError;

fn store_down(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "The key store failed.");
    ApiError::unavailable(
        "store_unavailable",
        "The store could not be reached; retry later.",
    )
}

/// `POST /admin/keys`
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<KeySpec>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match issue::create(&state.gateway().store, spec).await {
        Ok(issued) => {
            let mut body = issue::public_view(&issued.record);
            body["key"] = json!(issued.key);
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(IssueError::Invalid(field, reason)) => {
            ApiError::unprocessable("invalid_value", format!("`{field}` {reason}"))
                .with_param(field)
                .into_response()
        }
        Err(IssueError::Store(e)) => store_down(e).into_response(),
    }
}

/// `GET /admin/keys`
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.gateway().store.list_keys().await {
        Ok(keys) => {
            let data: Vec<_> = keys.iter().map(issue::public_view).collect();
            Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => store_down(e).into_response(),
    }
}

/// The body of `PUT /admin/keys/{id}/flags`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsBody {
    flags: Vec<String>,
}

/// `PUT /admin/keys/{id}/flags`: replaces the key's flags; in effect at
/// once on this replica, within `key_refresh_s` on the others.
pub async fn set_flags(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<FlagsBody>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let gw = state.gateway();
    match issue::set_flags(&gw.store, &id, &body.flags).await {
        Ok(true) => {
            gw.keys.forget(&id);
            Json(json!({"id": id, "flags": body.flags})).into_response()
        }
        Ok(false) => ApiError::not_found("key_not_found", format!("No live key with id `{id}`."))
            .into_response(),
        Err(IssueError::Invalid(field, reason)) => {
            ApiError::unprocessable("invalid_value", format!("`{field}` {reason}"))
                .with_param(field)
                .into_response()
        }
        Err(IssueError::Store(e)) => store_down(e).into_response(),
    }
}

/// `DELETE /admin/keys/{id}`: revoked at once on this replica.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.gateway().store.revoke_key(&id).await {
        Ok(true) => {
            state.gateway().keys.forget(&id);
            Json(json!({"id": id, "revoked": true})).into_response()
        }
        Ok(false) => ApiError::not_found("key_not_found", format!("No live key with id `{id}`."))
            .into_response(),
        Err(e) => store_down(e).into_response(),
    }
}
