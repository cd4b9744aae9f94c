//! The demo's traffic generator: sends the dataset's prompts (shuffled with a
//! seed) to the router's `/v1/chat/completions` as a client would, some of
//! them streaming, reads which model answered from `x-switchboard-model`, and
//! posts that model's dataset reward to `/v1/feedback`. Results go to
//! [`Stats`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::dataset::{Dataset, Row};
use super::stats::Stats;

#[derive(Debug, Clone)]
pub struct TrafficOptions {
    /// The router's address, e.g. `http://127.0.0.1:8080`.
    pub router_url: String,
    /// The model or route name to ask for.
    pub model: String,
    pub requests: usize,
    pub concurrency: usize,
    pub seed: u64,
    /// Share of requests sent with `"stream": true`.
    pub stream_share: f64,
}

/// One planned request: a dataset row and whether to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub row: usize,
    pub stream: bool,
}

/// `requests` prompts: whole passes over the dataset, each shuffled with the
/// seed, cut to length. The same seed gives the same plan.
pub fn plan(rows: usize, requests: usize, seed: u64, stream_share: f64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(requests);
    if rows == 0 {
        return out;
    }
    while out.len() < requests {
        let mut pass: Vec<usize> = (0..rows).collect();
        pass.shuffle(&mut rng);
        for row in pass.into_iter().take(requests - out.len()) {
            let stream = rng.random::<f64>() < stream_share;
            out.push(Planned { row, stream });
        }
    }
    out
}

/// What one request brought back.
struct Answered {
    model: usize,
    request_id: String,
    policy: Option<String>,
    usage: Option<(u64, u64)>,
}

/// Sends the plan with `concurrency` workers; returns when every request and
/// its feedback are done. Errors are counted in `stats`, not returned.
pub async fn run(
    dataset: Arc<Dataset>,
    opts: TrafficOptions,
    stats: Arc<Mutex<Stats>>,
) -> Result<(), reqwest::Error> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(opts.concurrency.max(1))
        .build()?;
    let planned = Arc::new(plan(
        dataset.rows.len(),
        opts.requests,
        opts.seed,
        opts.stream_share,
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let opts = Arc::new(opts);
    let mut workers = JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let (client, dataset, opts) = (client.clone(), dataset.clone(), opts.clone());
        let (planned, next, stats) = (planned.clone(), next.clone(), stats.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = planned.get(i).copied() else {
                    break;
                };
                one(&client, &dataset, &opts, p, &stats).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Ok(())
}

fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

async fn one(
    client: &reqwest::Client,
    dataset: &Dataset,
    opts: &TrafficOptions,
    p: Planned,
    stats: &Mutex<Stats>,
) {
    let row = &dataset.rows[p.row];
    let started = Instant::now();
    match chat(client, dataset, opts, row, p.stream).await {
        Ok(a) => {
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let spec = &dataset.models[a.model];
            let cost = match a.usage {
                Some((pt, ct)) => spec.cost_usd(pt, ct),
                None => row.arms.get(&spec.model_id).map_or(0.0, |o| o.cost),
            };
            {
                let mut st = lock(stats);
                st.record_answer(row, a.model, latency_ms, cost, p.stream);
                if let Some(v) = &a.policy {
                    st.record_policy(v);
                }
            }
            let reward = row.arms.get(&spec.model_id).map_or(0.0, |o| o.reward);
            if !feedback(client, &opts.router_url, &a.request_id, reward).await {
                lock(stats).record_feedback_error();
            }
        }
        Err(kind) => lock(stats).record_error(kind),
    }
}

async fn chat(
    client: &reqwest::Client,
    dataset: &Dataset,
    opts: &TrafficOptions,
    row: &Row,
    stream: bool,
) -> Result<Answered, String> {
    let mut body = json!({
        "model": opts.model,
        "messages": [{"role": "user", "content": row.prompt}],
        "max_tokens": 512,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let resp = client
        .post(format!("{}/v1/chat/completions", opts.router_url))
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_owned()
            } else {
                "connection".to_owned()
            }
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request_id = header("x-switchboard-request-id").ok_or("no request id")?;
    let model_name = header("x-switchboard-model").ok_or("no model header")?;
    let policy = header("x-switchboard-policy-version");
    let model = dataset
        .model_index(&model_name)
        .ok_or_else(|| format!("unknown model {model_name}"))?;
    let text = resp.text().await.map_err(|_| "body cut".to_owned())?;
    let usage = if stream {
        stream_usage(&text)?
    } else {
        let v: Value = serde_json::from_str(&text).map_err(|_| "invalid JSON".to_owned())?;
        usage_of(&v)
    };
    Ok(Answered {
        model,
        request_id,
        policy,
        usage,
    })
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage")?;
    Some((
        u.get("prompt_tokens")?.as_u64()?,
        u.get("completion_tokens")?.as_u64()?,
    ))
}

/// Checks an SSE body ends with `[DONE]` and carries no error; returns the
/// usage of the chunk that has one.
fn stream_usage(text: &str) -> Result<Option<(u64, u64)>, String> {
    let mut usage = None;
    let mut done = false;
    for data in text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
    {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).map_err(|_| "invalid chunk".to_owned())?;
        if v.get("error").is_some() {
            return Err("error mid-stream".into());
        }
        usage = usage_of(&v).or(usage);
    }
    if done {
        Ok(usage)
    } else {
        Err("stream cut".into())
    }
}

async fn feedback(
    client: &reqwest::Client,
    router_url: &str,
    request_id: &str,
    score: f64,
) -> bool {
    client
        .post(format!("{router_url}/v1/feedback"))
        .json(&json!({"request_id": request_id, "score": score.clamp(0.0, 1.0), "source": "demo"}))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_seeded_and_covers_each_prompt_once_per_pass() {
        let a = plan(50, 120, 7, 0.25);
        assert_eq!(a, plan(50, 120, 7, 0.25));
        assert_ne!(a, plan(50, 120, 8, 0.25));
        assert_eq!(a.len(), 120);
        let mut first: Vec<usize> = a[..50].iter().map(|p| p.row).collect();
        first.sort_unstable();
        assert_eq!(first, (0..50).collect::<Vec<_>>());
        assert!(a.iter().any(|p| p.stream) && a.iter().any(|p| !p.stream));
        assert!(plan(0, 10, 1, 0.5).is_empty());
    }

    #[test]
    fn stream_usage_needs_done_and_reads_the_usage_chunk() {
        let ok = "data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n";
        assert_eq!(stream_usage(ok), Ok(Some((3, 5))));
        assert_eq!(
            stream_usage("data: {\"choices\":[]}\n\n"),
            Err("stream cut".into())
        );
        let err = "data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n";
        assert!(stream_usage(err).is_err());
    }
}
