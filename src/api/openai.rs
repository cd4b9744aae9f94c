//! `POST /v1/chat/completions` and `GET /v1/models`: thin handlers over the
//! gateway.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::json::JsonText;
use super::AppState;
use crate::auth::Caller;
use crate::gateway::{self, ChatReply, Meta};

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    JsonText { value, text }: JsonText<Map<String, Value>>,
) -> Response {
    let caller = caller.map(|Extension(c)| c);
    let routed = gateway::chat_as(state.gateway(), value, Some(text), &headers, caller).await;
    let mut response = match routed.reply {
        Ok(ChatReply::Complete(body)) => {
            let json = HeaderValue::from_static("application/json");
            ([(header::CONTENT_TYPE, json)], body.bytes()).into_response()
        }
        Ok(ChatReply::Stream(stream)) => {
            let mut r = Response::new(Body::from_stream(stream));
            let h = r.headers_mut();
            h.insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert("cache-control", HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => e.into_response(),
    };
    decision_headers(response.headers_mut(), routed.meta);
    response
}

/// The values are the gateway's own strings, taken over rather than copied.
fn decision_headers(h: &mut HeaderMap, meta: Meta) {
    // Names built at compile time: inserting by `&str` parses each name
    // again on every response.
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-switchboard-request-id");
    const MODEL: HeaderName = HeaderName::from_static("x-switchboard-model");
    const ROUTE: HeaderName = HeaderName::from_static("x-switchboard-route");
    const POLICY_VERSION: HeaderName = HeaderName::from_static("x-switchboard-policy-version");
    const DECISION: HeaderName = HeaderName::from_static("x-switchboard-decision");
    let pairs = [
        (REQUEST_ID, Some(meta.request_id)),
        (MODEL, meta.model),
        (ROUTE, meta.route),
        (POLICY_VERSION, meta.policy_version),
        (DECISION, meta.decision_summary),
    ];
    for (name, value) in pairs {
        if let Some(v) = value.and_then(|v| HeaderValue::try_from(v).ok()) {
            h.insert(name, v);
        }
    }
}

pub async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let catalog = &state.gateway().catalog;
    let mut data: Vec<Value> = catalog
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.name.as_str(),
                "object": "model",
                "created": 0,
                "owned_by": m.provider.name,
                "switchboard": {"kind": "model", "provider": m.provider.name},
            })
        })
        .collect();
    data.extend(catalog.routes.iter().map(|r| {
        let models: Vec<&str> = r
            .arms
            .iter()
            .map(|&i| catalog.models[i].name.as_str())
            .collect();
        json!({
            "id": r.name.as_str(),
            "object": "model",
            "created": 0,
            "owned_by": "switchboard",
            "switchboard": {"kind": "route", "models": models, "policy": r.policy},
        })
    }));
    Json(json!({"object": "list", "data": data}))
}
