//! `/admin/config/reload`, `/admin/routes`, `/admin/models`: the operator's
//! live controls, behind the admin token. Handlers are thin: the work is in
//! `gateway::live` and `gateway::control`.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::admin::authorize;
use super::json::{JsonBody, MaybeJson};
use super::AppState;
use crate::error::ApiError;
use crate::experiments::OnboardConfig;
use crate::gateway::live::{ReloadError, Trigger};
use crate::gateway::operate::OpError;
use crate::gateway::{views, Gateway};

/// `POST /admin/config/reload`: re-reads the configuration file; 200 with
/// the generation now serving, or 422 naming the file, key and reason (the
/// previous configuration stays in force).
pub async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.live.reload(Trigger::Api).await {
        Ok(r) => Json(json!({
            "status": if r.changed { "applied" } else { "unchanged" },
            "generation": r.generation,
            "needs_restart": r.needs_restart,
        }))
        .into_response(),
        Err(e) => refused(&e).into_response(),
    }
}

fn refused(e: &ReloadError) -> ApiError {
    match e {
        ReloadError::NoFile => ApiError::bad_request(
            "no_config_file",
            "The router was started without a configuration file (--config or SWITCHBOARD_CONFIG), so there is nothing to reload.",
        ),
        _ => {
            let err = ApiError::unprocessable(
                "invalid_config",
                format!("Configuration refused; the previous configuration stays in force: {e}"),
            );
            match e.key() {
                Some(k) => err.with_param(k),
                None => err,
            }
        }
    }
}

/// The admin API's error for a refused operator action.
pub(super) fn op_error(e: OpError) -> ApiError {
    match e {
        OpError::NotFound(m) => ApiError::not_found("not_found", m),
        OpError::Invalid(m, param) => ApiError::unprocessable("invalid_value", m).with_param(param),
        OpError::Conflict(m) => ApiError {
            status: http::StatusCode::CONFLICT,
            ..ApiError::bad_request("conflict", m)
        },
        OpError::Store(e) => {
            tracing::error!(error = %e, "An operator action could not reach the store.");
            ApiError::unavailable(
                "store_unavailable",
                "The store could not be reached; nothing was changed. Retry later.",
            )
        }
        OpError::Control(e) => {
            tracing::error!(error = %e, "Applying an operator action failed.");
            ApiError::unavailable(
                "apply_failed",
                format!(
                    "The change is stored but could not be applied yet ({e}); the router retries."
                ),
            )
        }
    }
}

/// `GET /admin/routes`
pub async fn routes(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let gw = state.gateway();
    Json(json!({"object": "list", "data": views::routes(&gw)})).into_response()
}

fn route_index(gw: &Gateway, name: &str) -> Result<usize, ApiError> {
    gw.catalog
        .route_index(name)
        .ok_or_else(|| ApiError::not_found("route_not_found", format!("No route `{name}`.")))
}

/// `GET /admin/routes/{name}`
pub async fn route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let gw = state.gateway();
    match route_index(&gw, &name) {
        Ok(i) => Json(views::route(&gw, i)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct PolicyQuery {
    prompt: Option<String>,
    /// Include the whole serving (and, with scale-out, merged) snapshots.
    #[serde(default)]
    state: bool,
}

/// `GET /admin/routes/{name}/policy?prompt=...&state=true`
pub async fn policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PolicyQuery>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let gw = state.gateway();
    let prompt = q.prompt.as_deref().unwrap_or("Hello");
    match route_index(&gw, &name) {
        Ok(i) => Json(views::policy(&gw, i, prompt, q.state)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /admin/models`
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let gw = state.gateway();
    Json(json!({"object": "list", "data": views::models(&gw)})).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /admin/models/{name}/disable` (optional body `{"reason": "..."}`)
pub async fn disable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    MaybeJson(body): MaybeJson<Reason>,
) -> Response {
    set_disabled(state, headers, name, true, body.unwrap_or_default()).await
}

/// `POST /admin/models/{name}/enable`
pub async fn enable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_disabled(state, headers, name, false, Reason::default()).await
}

async fn set_disabled(
    state: AppState,
    headers: HeaderMap,
    name: String,
    disabled: bool,
    reason: Reason,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state
        .live
        .set_disabled(&name, disabled, reason.reason.as_deref())
        .await
    {
        Ok(()) => Json(json!({"model": name, "disabled": disabled})).into_response(),
        Err(e) => op_error(e).into_response(),
    }
}

/// `POST /admin/routes/{route}/models/{model}/onboard`
pub async fn onboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((route, model)): Path<(String, String)>,
    MaybeJson(body): MaybeJson<OnboardConfig>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let o = body.unwrap_or_default();
    match state.live.onboard(&route, &model, o).await {
        Ok(()) => Json(views::route(&state.gateway(), index_of(&state, &route))).into_response(),
        Err(e) => op_error(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retire {
    window_s: u64,
}

/// `POST /admin/routes/{route}/models/{model}/retire` `{"window_s": N}`
pub async fn retire(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((route, model)): Path<(String, String)>,
    JsonBody(body): JsonBody<Retire>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.live.retire(&route, &model, body.window_s).await {
        Ok(()) => Json(views::route(&state.gateway(), index_of(&state, &route))).into_response(),
        Err(e) => op_error(e).into_response(),
    }
}

/// `DELETE /admin/routes/{route}/models/{model}`: forget the stored
/// onboarding or retirement (the file's definition rules again).
pub async fn restore(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((route, model)): Path<(String, String)>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.live.restore_arm(&route, &model).await {
        Ok(()) => Json(json!({"route": route, "model": model, "restored": true})).into_response(),
        Err(e) => op_error(e).into_response(),
    }
}

fn index_of(state: &AppState, route: &str) -> usize {
    state.gateway().catalog.route_index(route).unwrap_or(0)
}
