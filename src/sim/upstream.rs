//! A simulated OpenAI-compatible provider: an axum server on a local port
//! that speaks the Chat Completions wire format (JSON and SSE with usage and
//! `data: [DONE]`). The request's `model` picks a profile (latency, failure
//! rate, prices); prompts found in the embedded dataset get token counts that
//! reproduce that model's dataset cost, so the router records real costs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::answer::{answer, completion_body, stream_events, user_prompt};
use super::dataset::{Dataset, ModelSpec};

/// How one simulated model behaves.
#[derive(Debug, Clone)]
pub struct SimModel {
    pub spec: ModelSpec,
    /// Mean latency of a whole answer before the speed factor.
    pub latency_ms: f64,
    /// Share of requests answered with a 500 or a 429.
    pub failure_rate: f64,
}

impl SimModel {
    /// The demo's profiles from the dataset's speed classes: fast ~150 ms,
    /// balanced ~400 ms, slow ~1.2 s; a few percent of failures each.
    pub fn profiles(dataset: &Dataset) -> Vec<SimModel> {
        dataset
            .models
            .iter()
            .map(|spec| {
                let (latency_ms, failure_rate) = match spec.speed_profile.as_str() {
                    "fast" => (150.0, 0.03),
                    "slow" => (1_200.0, 0.04),
                    _ => (400.0, 0.02),
                };
                SimModel {
                    spec: spec.clone(),
                    latency_ms,
                    failure_rate,
                }
            })
            .collect()
    }
}

/// Requests one simulated model received and how many it failed on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCount {
    pub model: String,
    pub served: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    served: AtomicU64,
    failed: AtomicU64,
}

struct SimState {
    dataset: Arc<Dataset>,
    models: Vec<SimModel>,
    speed: f64,
    counters: Vec<Counters>,
    next_id: AtomicU64,
}

/// A running simulated provider.
pub struct SimUpstream {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SimUpstream {
    /// Serves `models` on 127.0.0.1 (a free port). `speed` scales every
    /// latency (1.0 = the profile's, 0.1 = ten times faster).
    pub async fn spawn(
        dataset: Arc<Dataset>,
        models: Vec<SimModel>,
        speed: f64,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState {
            dataset,
            counters: models.iter().map(|_| Counters::default()).collect(),
            models,
            speed: if speed.is_finite() {
                speed.max(0.0)
            } else {
                1.0
            },
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(list_models))
            .with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "The simulated upstream failed.");
            }
        });
        Ok(Self {
            addr,
            state,
            stop,
            task,
        })
    }

    /// The `base_url` a provider entry should use.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Per-model request and injected-failure counts so far.
    pub fn counts(&self) -> Vec<ServedCount> {
        self.state
            .models
            .iter()
            .zip(&self.state.counters)
            .map(|(m, c)| ServedCount {
                model: m.spec.model_id.clone(),
                served: c.served.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Stops accepting and waits briefly for open connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}

async fn list_models(State(st): State<Arc<SimState>>) -> Json<Value> {
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|m| json!({"id": m.spec.model_id, "object": "model", "created": 0, "owned_by": "sim"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn chat(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body is not JSON",
        );
    };
    let requested = body.get("model").and_then(Value::as_str).unwrap_or("");
    let Some(index) = st.models.iter().position(|m| m.spec.model_id == requested) else {
        let msg = format!("The model `{requested}` does not exist");
        return error(StatusCode::NOT_FOUND, "invalid_request_error", &msg);
    };
    let Some(prompt) = user_prompt(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "no user message",
        );
    };
    let model = &st.models[index];
    st.counters[index].served.fetch_add(1, Ordering::Relaxed);
    // Draw everything random up front: the thread RNG must not live across an await.
    let (latency, fail) = {
        let mut rng = rand::rng();
        let jitter = rng.random_range(0.6..1.6);
        let fail = (rng.random::<f64>() < model.failure_rate).then(|| rng.random_bool(0.5));
        (model.latency_ms * jitter * st.speed, fail)
    };
    if let Some(rate_limited) = fail {
        st.counters[index].failed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(latency * 0.2 / 1000.0)).await;
        return if rate_limited {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "simulated rate limit",
            )
        } else {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "simulated upstream error",
            )
        };
    }
    let a = answer(&st.dataset, &model.spec, &prompt);
    let id = format!(
        "chatcmpl-sim-{}",
        st.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let created = chrono::Utc::now().timestamp();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        tokio::time::sleep(Duration::from_secs_f64(latency / 1000.0)).await;
        return Json(completion_body(&id, created, requested, &a)).into_response();
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let events = stream_events(&id, created, requested, &a, include_usage);
    // 40% of the latency before the first token, the rest spread over the chunks.
    let ttft = Duration::from_secs_f64(latency * 0.4 / 1000.0);
    let gap = Duration::from_secs_f64(latency * 0.6 / 1000.0 / events.len().max(1) as f64);
    let timed = events
        .into_iter()
        .enumerate()
        .map(move |(i, ev)| (if i == 0 { ttft } else { gap }, ev));
    let body =
        futures_util::StreamExt::then(futures_util::stream::iter(timed), |(wait, ev)| async move {
            tokio::time::sleep(wait).await;
            Ok::<_, Infallible>(Bytes::from(ev))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "response",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::answer::GENERIC_COMPLETION_TOKENS;

    async fn sim() -> (Arc<Dataset>, SimUpstream) {
        let dataset = Arc::new(Dataset::embedded().unwrap());
        let mut models = SimModel::profiles(&dataset);
        for m in &mut models {
            m.failure_rate = 0.0;
        }
        let up = SimUpstream::spawn(dataset.clone(), models, 0.01)
            .await
            .unwrap();
        (dataset, up)
    }

    fn request(model: &str, prompt: &str, stream: bool) -> Value {
        json!({
            "model": model,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}],
            "stream": stream,
            "stream_options": {"include_usage": true},
        })
    }

    #[tokio::test]
    async fn answers_in_the_openai_shape_with_the_dataset_cost() {
        let (dataset, up) = sim().await;
        let row = &dataset.rows[0];
        let spec = &dataset.models[1];
        let resp = reqwest::Client::new()
            .post(format!("{}/chat/completions", up.base_url()))
            .json(&request(&spec.model_id, &row.prompt, false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], spec.model_id.as_str());
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert!(body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("simulated"));
        let pt = body["usage"]["prompt_tokens"].as_u64().unwrap();
        let ct = body["usage"]["completion_tokens"].as_u64().unwrap();
        assert_eq!(body["usage"]["total_tokens"].as_u64().unwrap(), pt + ct);
        let want = row.arms[&spec.model_id].cost;
        assert!((spec.cost_usd(pt, ct) - want).abs() <= spec.output_cost_per_m / 1e6);
        assert_eq!(up.counts()[1].served, 1);
        up.shutdown().await;
    }

    #[tokio::test]
    async fn stream_ends_with_done_and_carries_usage_when_asked() {
        let (dataset, up) = sim().await;
        let spec = &dataset.models[0];
        let text = reqwest::Client::new()
            .post(format!("{}/chat/completions", up.base_url()))
            .json(&request(&spec.model_id, "an unknown prompt", true))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(content.contains("no recorded answer"), "{content}");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"].as_array().unwrap().len(), 0);
        assert_eq!(
            last["usage"]["completion_tokens"],
            GENERIC_COMPLETION_TOKENS
        );
        up.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_models_get_404_and_always_failing_models_fail() {
        let dataset = Arc::new(Dataset::embedded().unwrap());
        let mut models = SimModel::profiles(&dataset);
        models[0].failure_rate = 1.0;
        let up = SimUpstream::spawn(dataset.clone(), models, 0.0)
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/chat/completions", up.base_url());
        let r = client
            .post(&url)
            .json(&request("nope", "hi", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = client
            .post(&url)
            .json(&request(&dataset.models[0].model_id, "hi", false))
            .send()
            .await
            .unwrap();
        assert!(r.status() == 500 || r.status() == 429, "{}", r.status());
        assert_eq!(up.counts()[0].failed, 1);
        up.shutdown().await;
    }
}
