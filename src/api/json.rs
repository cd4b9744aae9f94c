//! A JSON body extractor whose rejections are `ApiError`s, so malformed or
//! oversized bodies get OpenAI's error envelope rather than axum's text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

/// Like `JsonBody`, but an empty body is `None` (for optional options).
pub struct MaybeJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for MaybeJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let limit = parts
            .extensions
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::payload_too_large(limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJson(None));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let JsonBody(v) = JsonBody::from_request(req, state).await?;
        Ok(MaybeJson(Some(v)))
    }
}

/// Like `JsonBody`, keeping the text the value was read from.
pub struct JsonText<T> {
    pub value: T,
    pub text: Bytes,
}

impl<S, T> FromRequest<S> for JsonText<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let text = body_bytes(req, state).await?;
        let value = parse(&text)?;
        Ok(JsonText { value, text })
    }
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

/// The whole body, within the configured limit and time.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(usize::MAX, |l| l.0);
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(limit)
        } else if body_timed_out(&rejection) {
            ApiError {
                status: http::StatusCode::REQUEST_TIMEOUT,
                ..ApiError::bad_request("body_timeout", "The request body did not arrive in time.")
            }
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            ApiError::bad_request(
                "invalid_type",
                format!("The request body has the wrong shape: {e}"),
            )
        } else {
            ApiError::invalid_json(e)
        }
    })
}

/// The body stopped because `RequestBodyTimeoutLayer` ran out of patience.
fn body_timed_out(rejection: &axum::extract::rejection::BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The configured body limit, attached to each request so messages can name it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);
