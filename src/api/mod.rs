//! HTTP edge: axum routes and thin handlers. Handlers extract, call one
//! gateway function that takes no axum types, and map the result.

mod admin;
mod auth;
mod control;
mod dashboard;
mod experiments;
mod feedback;
mod health;
pub mod json;
mod keys;
mod openai;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Extension, Router};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::{Service, ServiceBuilder};
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::error::ApiError;
use crate::gateway::live::Live;
use crate::gateway::Gateway;
use json::BodyLimit;

#[derive(Clone)]
pub struct AppState {
    /// The serving gateway; `gateway()` loads the current one.
    pub live: Arc<Live>,
    pub metrics: Option<PrometheusHandle>,
    /// `SWITCHBOARD_ADMIN_TOKEN`; `None` closes the admin API.
    pub admin_token: Option<String>,
}

impl AppState {
    /// The gateway a request uses from start to end (a reload swaps in a
    /// new one for later requests).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.current()
    }
}

/// Every endpoint and its handler (the `/v1/*` ones behind the client-key
/// check); `app` adds what wraps them all.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/feedback", post(feedback::post_feedback))
        // Client keys guard every `/v1/*` route above this line.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::client_key,
        ))
        .route("/admin/keys", post(keys::create).get(keys::list))
        .route("/admin/keys/{id}", delete(keys::revoke))
        .route("/admin/keys/{id}/flags", put(keys::set_flags))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/admin/decisions/{request_id}", get(admin::decision))
        .route("/admin/config/reload", post(control::reload))
        .route("/admin/routes", get(control::routes))
        .route("/admin/routes/{name}", get(control::route))
        .route("/admin/routes/{name}/policy", get(control::policy))
        .route(
            "/admin/routes/{route}/models/{model}",
            delete(control::restore),
        )
        .route(
            "/admin/routes/{route}/models/{model}/onboard",
            post(control::onboard),
        )
        .route(
            "/admin/routes/{route}/models/{model}/retire",
            post(control::retire),
        )
        .route("/admin/models", get(control::models))
        .route("/admin/models/{name}/disable", post(control::disable))
        .route("/admin/models/{name}/enable", post(control::enable))
        .route("/admin/experiments", get(experiments::list))
        .route("/admin/experiments/{name}", get(experiments::status))
        .route("/admin/experiments/{name}/start", post(experiments::start))
        .route(
            "/admin/experiments/{name}/promote",
            post(experiments::promote),
        )
        .route("/admin/experiments/{name}/stop", post(experiments::stop))
        .route("/admin/replicas", get(admin::replicas))
        .merge(dashboard::routes())
        .fallback(|| async {
            ApiError::not_found("unknown_url", "No such endpoint on this router.")
        })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: http::StatusCode::METHOD_NOT_ALLOWED,
                ..ApiError::bad_request(
                    "method_not_allowed",
                    "This endpoint does not accept that HTTP method.",
                )
            }
        })
        .with_state(state)
}

/// The service the server runs: `router` inside the layers every request
/// passes (the body's time limit, its size limit and that limit's value
/// for messages). They wrap the router once: `Router::layer` wraps every
/// route's handler in its own boxed copy of each layer, which a request
/// then clones and boxes its future through, level by level (~15 boxes a
/// request; callgrind, docs/performance.md).
pub fn app(
    state: AppState,
    max_body_bytes: usize,
    body_timeout: std::time::Duration,
) -> impl Service<
    Request<Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .service(router(state))
}
