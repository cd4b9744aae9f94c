//! `/admin/config/reload`, `/admin/routes`, `/admin/models`: the operator's
//! live controls, behind the admin token. Handlers are thin: the work is in
//! `gateway::live` and `gateway::control`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admin::authorize;
use super::AppState;
use crate::error::ApiError;
use crate::gateway::live::{ReloadError, Trigger};

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
