//! The load generator: closed loop, one keep-alive HTTP/1.1 connection per
//! virtual user, one thread. Each user sends a chat completion, reads the
//! whole response (checking it: `usage` in a JSON answer, `data: [DONE]` at
//! the end of a stream), optionally posts feedback for it, and goes again.
//! Prints one JSON line with throughput and latency percentiles.
//!
//! Hold mode (`--hold N`) opens N streams, prints `{"ready":..}` once every
//! stream has its first byte, and keeps them open until stdin closes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Target `host:port`.
    #[arg(long)]
    pub addr: String,
    /// Path of the chat endpoint.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub path: String,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub stream: bool,
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// POST /v1/feedback for every answered request (its id from `x-switchboard-request-id`).
    #[arg(long)]
    pub feedback: bool,
    #[arg(long, default_value = "sk-bench")]
    pub api_key: String,
    /// Hold this many streams open instead of running a timed loop.
    #[arg(long)]
    pub hold: Option<usize>,
    /// Send exactly this many requests (shared by all users), then stop;
    /// every one counts (no warm-up, no deadline). For instruction counting
    /// (`scripts/count-instructions.sh`), where a fixed amount of work matters.
    #[arg(long)]
    pub requests: Option<u64>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Pcts {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// What one timed run measured (only requests started after the warm-up and
/// finished before the end count).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CellResult {
    pub ok: u64,
    pub errors: u64,
    pub feedback_errors: u64,
    pub rps: f64,
    pub latency: Pcts,
    /// Streams only: time to the first body byte.
    pub ttfb: Option<Pcts>,
    pub first_error: Option<String>,
}

struct Cfg {
    args: LoadArgs,
    body: Bytes,
    measure_from: Instant,
    end: Instant,
    /// `--requests`: how many are still to be sent.
    left: Option<std::sync::atomic::AtomicU64>,
}

impl Cfg {
    /// Whether a user may send another request.
    fn go_on(&self) -> bool {
        match &self.left {
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            None => Instant::now() < self.end,
        }
    }
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    feedback_errors: u64,
    latency_us: Vec<u32>,
    ttfb_us: Vec<u32>,
    first_error: Option<String>,
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.hold {
        // Its one line is printed once the streams are open; the reader is gone by the end.
        Some(n) => rt.block_on(hold(args.clone(), n)),
        None => {
            let line = serde_json::to_string(&rt.block_on(timed(args))?)?;
            println!("{line}");
            Ok(())
        }
    }
}

fn chat_body(model: &str, stream: bool) -> Bytes {
    let prompt = "Summarise the plot of a short story about a lighthouse keeper who finds a \
                  message in a bottle, in three sentences, and suggest a title.";
    Bytes::from(
        serde_json::json!({
            "model": model,
            "stream": stream,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}],
        })
        .to_string(),
    )
}

async fn connect(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn post(cfg: &LoadArgs, path: &str, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::post(path)
        .header(HOST, cfg.addr.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {}", cfg.api_key))
        .body(Full::new(body))?)
}

/// One request/response: (total, ttfb, request id).
async fn one(
    sender: &mut SendRequest<Full<Bytes>>,
    cfg: &Cfg,
) -> anyhow::Result<(Duration, Option<Duration>, Option<String>)> {
    let req = post(&cfg.args, &cfg.args.path, cfg.body.clone())?;
    sender.ready().await?;
    let t0 = Instant::now();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let rid = resp
        .headers()
        .get("x-switchboard-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.into_body();
    let mut ttfb = None;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            if ttfb.is_none() && !d.is_empty() {
                ttfb = Some(t0.elapsed());
            }
            buf.extend_from_slice(d);
        }
    }
    let total = t0.elapsed();
    if status != StatusCode::OK {
        bail!(
            "status {status}: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(300)])
        );
    }
    let tail = &buf[buf.len().saturating_sub(600)..];
    let good = if cfg.args.stream {
        String::from_utf8_lossy(tail)
            .trim_end()
            .ends_with("data: [DONE]")
    } else {
        tail.windows(7).any(|w| w == b"\"usage\"")
    };
    if !good {
        bail!("unexpected body: {}", String::from_utf8_lossy(tail));
    }
    Ok((total, ttfb, rid))
}

async fn feedback(
    sender: &mut SendRequest<Full<Bytes>>,
    cfg: &Cfg,
    id: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({"request_id": id, "score": 0.8}).to_string();
    let req = post(&cfg.args, "/v1/feedback", Bytes::from(body))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await?;
    if status != StatusCode::ACCEPTED {
        bail!("feedback status {status}");
    }
    Ok(())
}

fn note(stats: &mut Stats, e: &anyhow::Error) {
    stats.errors += 1;
    if stats.first_error.is_none() {
        stats.first_error = Some(format!("{e:#}"));
    }
}

async fn user(cfg: Arc<Cfg>) -> Stats {
    let mut stats = Stats::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while cfg.go_on() {
        let sender = match conn.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => match connect(&cfg.args.addr).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    note(&mut stats, &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        match one(sender, &cfg).await {
            Ok((total, ttfb, rid)) => {
                let counted = cfg.left.is_some()
                    || (started >= cfg.measure_from && Instant::now() <= cfg.end);
                if counted {
                    stats.ok += 1;
                    stats
                        .latency_us
                        .push(total.as_micros().min(u32::MAX as u128) as u32);
                    if let Some(t) = ttfb {
                        stats
                            .ttfb_us
                            .push(t.as_micros().min(u32::MAX as u128) as u32);
                    }
                }
                if cfg.args.feedback {
                    let sent = match rid {
                        Some(id) => feedback(sender, &cfg, &id).await,
                        None => Err(anyhow::anyhow!("no x-switchboard-request-id header")),
                    };
                    if let Err(e) = sent {
                        stats.feedback_errors += 1;
                        if stats.first_error.is_none() {
                            stats.first_error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            Err(e) => {
                note(&mut stats, &e);
                conn = None;
            }
        }
    }
    stats
}

fn pcts(mut v: Vec<u32>) -> Pcts {
    if v.is_empty() {
        return Pcts::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64;
    Pcts {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

async fn timed(args: LoadArgs) -> anyhow::Result<CellResult> {
    let now = Instant::now();
    let measure_from = now + Duration::from_secs_f64(args.warmup_s);
    let started = Instant::now();
    let cfg = Arc::new(Cfg {
        body: chat_body(&args.model, args.stream),
        end: measure_from + Duration::from_secs_f64(args.duration_s),
        measure_from,
        left: args.requests.map(std::sync::atomic::AtomicU64::new),
        args,
    });
    let tasks: Vec<_> = (0..cfg.args.concurrency)
        .map(|_| tokio::spawn(user(cfg.clone())))
        .collect();
    let mut all = Stats::default();
    for t in tasks {
        let s = t.await?;
        all.ok += s.ok;
        all.errors += s.errors;
        all.feedback_errors += s.feedback_errors;
        all.latency_us.extend(s.latency_us);
        all.ttfb_us.extend(s.ttfb_us);
        all.first_error = all.first_error.or(s.first_error);
    }
    Ok(CellResult {
        ok: all.ok,
        errors: all.errors,
        feedback_errors: all.feedback_errors,
        rps: match cfg.left {
            Some(_) => all.ok as f64 / started.elapsed().as_secs_f64(),
            None => all.ok as f64 / cfg.args.duration_s,
        },
        latency: pcts(all.latency_us),
        ttfb: cfg.args.stream.then(|| pcts(all.ttfb_us)),
        first_error: all.first_error,
    })
}

/// Opens `n` streams (at most 256 connecting at once), reports when all have
/// their first byte, then keeps reading until stdin closes.
async fn hold(args: LoadArgs, n: usize) -> anyhow::Result<()> {
    let cfg = Arc::new(Cfg {
        body: chat_body(&args.model, true),
        measure_from: Instant::now(),
        end: Instant::now(),
        left: None,
        args,
    });
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    for _ in 0..n {
        let (cfg, ready, failed, gate) = (cfg.clone(), ready.clone(), failed.clone(), gate.clone());
        tokio::spawn(async move {
            let opened = async {
                let permit = gate.acquire().await?;
                let mut sender = connect(&cfg.args.addr).await?;
                let req = post(&cfg.args, &cfg.args.path, cfg.body.clone())?;
                let resp = sender.send_request(req).await?;
                if resp.status() != StatusCode::OK {
                    bail!("status {}", resp.status());
                }
                let mut body = resp.into_body();
                let _first = body.frame().await;
                drop(permit);
                anyhow::Ok((sender, body))
            };
            match opened.await {
                Ok((_sender, mut body)) => {
                    ready.fetch_add(1, Ordering::Relaxed);
                    while let Some(Ok(_)) = body.frame().await {}
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let deadline = started + Duration::from_secs(180);
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = serde_json::json!({
        "ready": ready.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "open_s": started.elapsed().as_secs_f64(),
    });
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    // Keep the streams open until the driver closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    Ok(())
}
