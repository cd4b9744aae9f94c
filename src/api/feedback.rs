//! `POST /v1/feedback`: parse and validate at the edge, then hand a typed
//! input to the gateway. 202 on success.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::json::JsonBody;
use super::AppState;
use crate::domain::{RequestId, Reward};
use crate::error::ApiError;
use crate::gateway::feedback::{submit, FeedbackInput};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    request_id: String,
    score: Option<f64>,
    thumbs: Option<String>,
    metric: Option<String>,
    comment: Option<String>,
    feedback_id: Option<String>,
    source: Option<String>,
}

pub async fn post_feedback(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<FeedbackBody>,
) -> Response {
    match parse(body) {
        Ok(input) => match submit(&state.gateway(), input).await {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response(),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

fn parse(b: FeedbackBody) -> Result<FeedbackInput, ApiError> {
    let request_id = RequestId::parse(&b.request_id).map_err(|e| {
        ApiError::bad_request("invalid_value", e.to_string()).with_param("request_id")
    })?;
    let value =
        match (b.score, b.thumbs.as_deref()) {
            (Some(s), None) => Reward::new(s).map_err(|e| {
                ApiError::unprocessable("invalid_value", e.to_string()).with_param("score")
            })?,
            (None, Some("up")) => Reward::ONE,
            (None, Some("down")) => Reward::ZERO,
            (None, Some(other)) => {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    format!("`thumbs` must be \"up\" or \"down\", got {other:?}"),
                )
                .with_param("thumbs"))
            }
            (Some(_), Some(_)) | (None, None) => return Err(ApiError::unprocessable(
                "invalid_value",
                "give exactly one of `score` (a number in [0, 1]) or `thumbs` (\"up\" or \"down\")",
            )),
        };
    let metric = b.metric.unwrap_or_else(|| "quality".into());
    let short = |name: &'static str, v: &Option<String>, max: usize| -> Result<(), ApiError> {
        match v {
            Some(s) if s.len() > max => Err(ApiError::unprocessable(
                "invalid_value",
                format!("`{name}` is longer than {max} bytes"),
            )
            .with_param(name)),
            _ => Ok(()),
        }
    };
    short("metric", &Some(metric.clone()), 64)?;
    short("feedback_id", &b.feedback_id, 256)?;
    short("source", &b.source, 64)?;
    short("comment", &b.comment, 8192)?;
    if metric.is_empty() {
        return Err(
            ApiError::unprocessable("invalid_value", "`metric` must not be empty")
                .with_param("metric"),
        );
    }
    Ok(FeedbackInput {
        request_id,
        metric,
        value,
        source: b.source,
        comment: b.comment,
        feedback_id: b.feedback_id,
    })
}
