//! The built-in dashboard: `GET /dashboard` (one page, HTML/CSS/JS compiled
//! into the binary, no CDN) and its JSON under `/api/dashboard/*`. Handlers
//! parse the query, call one function of `report` and map the result.

mod report;

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::store::dashboard::Window;
use crate::store::StoreError;

const PAGE: &str = include_str!("page.html");
const MAX_HOURS: u32 = 24 * 90;

/// The dashboard's routes, merged into the app's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/api/dashboard/summary", get(summary))
        .route("/api/dashboard/models", get(models))
        .route("/api/dashboard/timeseries", get(timeseries))
        .route("/api/dashboard/errors", get(errors))
        .route("/api/dashboard/spend", get(spend))
        .route("/api/dashboard/policy", get(policy))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `?hours=N` (1..=2160, default 24), `?route=NAME`, `?limit=N` (1..=500).
struct Params {
    window: Window,
    route: Option<String>,
    limit: i64,
}

fn parse(q: &HashMap<String, String>) -> Result<Params, ApiError> {
    let hours = match q.get("hours") {
        None => 24,
        Some(h) => h
            .parse::<u32>()
            .ok()
            .filter(|h| (1..=MAX_HOURS).contains(h))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_value", format!("`hours` must be 1..={MAX_HOURS}"))
                    .with_param("hours")
            })?,
    };
    let limit = match q.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_value", "`limit` must be 1..=500")
                    .with_param("limit")
            })?,
    };
    Ok(Params {
        window: Window::last_hours(hours, chrono::Utc::now()),
        route: q.get("route").filter(|r| !r.is_empty()).cloned(),
        limit,
    })
}

fn reply<T: Serialize>(key: &str, r: Result<T, StoreError>) -> Response {
    match r {
        Ok(v) => Json(json!({ key: v })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "A dashboard query failed.");
            ApiError::unavailable(
                "store_unavailable",
                "The store could not be read; retry later.",
            )
            .into_response()
        }
    }
}

macro_rules! handler {
    ($name:ident, $key:literal, |$s:ident, $p:ident| $call:expr) => {
        async fn $name(
            State($s): State<AppState>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            match parse(&q) {
                Ok($p) => reply($key, $call.await),
                Err(e) => e.into_response(),
            }
        }
    };
}

handler!(summary, "summary", |s, p| report::summary(
    &s.gateway().store,
    p.window
));
handler!(models, "models", |s, p| report::models(
    &s.gateway().store,
    p.window,
    p.route.as_deref()
));
handler!(timeseries, "points", |s, p| report::timeseries(
    &s.gateway().store,
    p.window,
    p.route.as_deref()
));
handler!(errors, "errors", |s, p| report::errors(
    &s.gateway().store,
    p.window,
    p.limit
));
handler!(spend, "keys", |s, p| report::spend(
    &s.gateway().store,
    p.window,
    p.limit
));
handler!(policy, "routes", |s, p| report::policy(
    &s.gateway(),
    p.window
));
