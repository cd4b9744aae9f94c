//! The client-key layer on `/v1/*`: authenticates `Authorization: Bearer`
//! through the gateway's `KeyRing` and hands the caller to handlers as a
//! request extension. Refusals are OpenAI-shaped (401, or 503 when a key
//! never seen before cannot be looked up).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::ApiError;

pub async fn client_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(http::header::AUTHORIZATION);
    // A header that is not visible ASCII cannot be a key of ours.
    let value = match header.map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return ApiError::unauthorized("Incorrect API key provided.").into_response()
        }
        None => None,
    };
    match state.gateway().keys.authenticate(value).await {
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}
