//! `switchboard demo`, the zero-setup first run: simulated providers
//! in-process, the real router in front of them on embedded SQLite, the
//! traffic generator replaying the embedded dataset with feedback, and a live
//! terminal summary. No keys, no network beyond 127.0.0.1.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::dataset::Dataset;
use super::report::{final_report, Live};
use super::stats::Stats;
use super::traffic::{self, TrafficOptions};
use super::upstream::{SimModel, SimUpstream};
use crate::config::{self, Env};
use crate::startup;

/// The database the demo writes to unless `DATABASE_URL` says otherwise.
pub const DEMO_DATABASE_URL: &str = "sqlite://switchboard-demo.db";
/// Where the demo's logs go, so they do not scribble over the live view.
pub const DEMO_LOG_FILE: &str = "switchboard-demo.log";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const ROUTE: &str = "auto";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Requests to send (default: every prompt of the dataset once).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seed of the prompt order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Latency scale of the simulated models (1.0 = realistic: ~150 ms,
    /// ~400 ms, ~1.2 s; 0.25 = four times faster).
    #[arg(long, default_value_t = 0.25)]
    pub speed: f64,
    /// Router address (default 127.0.0.1:8080, or a free port if it is busy).
    #[arg(long)]
    pub listen: Option<String>,
    /// After the traffic, keep the router up until Ctrl-C.
    #[arg(long)]
    pub keep_serving: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            requests: None,
            concurrency: 8,
            seed: 0,
            speed: 0.25,
            listen: None,
            keep_serving: false,
        }
    }
}

/// Logs go to [`DEMO_LOG_FILE`] (`RUST_LOG` filters, default `info`); if it
/// cannot be opened, only errors go to stderr.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DEMO_LOG_FILE);
    let _ = match file {
        Ok(file) => {
            let b = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(Mutex::new(file));
            if json {
                b.json().try_init()
            } else {
                b.try_init()
            }
        }
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("error"))
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// The router's configuration: one provider (the simulator), the dataset's
/// models at their prices, and a learned route over them.
pub fn demo_config_toml(dataset: &Dataset, base_url: &str, listen: &str) -> String {
    let mut t = format!(
        r#"[server]
listen = "{listen}"
shutdown_grace_ms = 10000

[resilience]
backoff_base_ms = 20
backoff_max_ms = 200
breaker_cooldown_ms = 5000

[store]
spill_path = "switchboard-demo-spill.jsonl"

[[providers]]
name = "sim"
kind = "openai"
base_url = "{base_url}"
"#
    );
    for m in &dataset.models {
        let _ = write!(
            t,
            r#"
[[models]]
name = "{}"
provider = "sim"
upstream_name = "{}"
input_usd_per_mtok = {:?}
output_usd_per_mtok = {:?}
context_window = {}
"#,
            m.short_name(),
            m.model_id,
            m.input_cost_per_m,
            m.output_cost_per_m,
            m.context_length
        );
    }
    let names: Vec<String> = dataset
        .models
        .iter()
        .map(|m| format!("\"{}\"", m.short_name()))
        .collect();
    let _ = write!(
        t,
        r#"
[[routes]]
name = "{ROUTE}"
models = [{}]
policy = "linucb"
[routes.budget]
target_usd_per_request = 0.0004
"#,
        names.join(", ")
    );
    t
}

/// The address to serve on: `--listen`, else `SWITCHBOARD_LISTEN`, else
/// 127.0.0.1:8080 when it is free, else a free port.
fn choose_listen(opts: &DemoOptions, env: &Env) -> String {
    let explicit = opts.listen.clone().or_else(|| {
        env.get("SWITCHBOARD_LISTEN")
            .filter(|v| !v.is_empty())
            .cloned()
    });
    match explicit {
        Some(addr) => addr,
        None if std::net::TcpListener::bind(DEFAULT_LISTEN).is_ok() => DEFAULT_LISTEN.to_owned(),
        None => {
            println!("{DEFAULT_LISTEN} is busy; the router will take a free port.");
            "127.0.0.1:0".to_owned()
        }
    }
}

/// Starts the simulated providers and the real router in front of them.
async fn start_stack(
    dataset: &Arc<Dataset>,
    speed: f64,
    listen: &str,
    env: &Env,
) -> anyhow::Result<(SimUpstream, startup::Running)> {
    let upstream = SimUpstream::spawn(dataset.clone(), SimModel::profiles(dataset), speed)
        .await
        .context("starting the simulated providers")?;
    let toml = demo_config_toml(dataset, &upstream.base_url(), listen);
    let config = config::load_str(&toml, "<demo config>", env)?;
    let running = startup::start(config, env).await?;
    Ok((upstream, running))
}

/// Runs the demo; `env` is the process environment (or a test's).
pub async fn run(opts: DemoOptions, env: &Env) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.speed.is_finite() && opts.speed >= 0.0,
        "--speed must be a non-negative number"
    );
    let dataset = Arc::new(Dataset::embedded().context("reading the embedded dataset")?);
    let mut env = env.clone();
    if env.get("DATABASE_URL").is_none_or(|u| u.is_empty()) {
        env.insert("DATABASE_URL".into(), DEMO_DATABASE_URL.into());
    }
    let listen = choose_listen(&opts, &env);
    // The CLI's address wins over the environment's.
    env.remove("SWITCHBOARD_LISTEN");

    let (upstream, running) = start_stack(&dataset, opts.speed, &listen, &env).await?;
    let router_url = format!("http://{}", running.addr);
    let database = crate::store::redact_url(&startup::database_url(&env));
    println!("switchboard demo: router on {router_url}, route \"{ROUTE}\" (linucb, target $0.0004/request)");
    println!("  dashboard: {router_url}/dashboard");
    for m in SimModel::profiles(&dataset) {
        println!(
            "  simulated {:<24} ${:.2}/${:.2} per Mtok in/out, ~{:.0} ms, {:.0}% failures",
            m.spec.short_name(),
            m.spec.input_cost_per_m,
            m.spec.output_cost_per_m,
            m.latency_ms * opts.speed,
            m.failure_rate * 100.0
        );
    }
    println!("  database {database}, logs in {DEMO_LOG_FILE}\n");

    let requests = opts.requests.unwrap_or(dataset.rows.len());
    let stats = Arc::new(Mutex::new(Stats::new(&dataset, requests)));
    let traffic_opts = TrafficOptions {
        router_url: router_url.clone(),
        model: ROUTE.to_owned(),
        requests,
        concurrency: opts.concurrency,
        seed: opts.seed,
        stream_share: 0.25,
    };
    let mut traffic = tokio::spawn(traffic::run(dataset.clone(), traffic_opts, stats.clone()));
    let started = Instant::now();
    let summary = || stats.lock().unwrap_or_else(|e| e.into_inner()).summary();
    let mut live = Live::new();
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let mut interrupted = false;
    let signal = startup::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = tick.tick() => live.draw(&summary(), started.elapsed()),
            done = &mut traffic => {
                if let Ok(Err(e)) = done {
                    println!("the traffic generator could not start: {e}");
                }
                break;
            }
            _ = &mut signal => {
                traffic.abort();
                interrupted = true;
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    if interrupted {
        println!("\nInterrupted: the traffic stopped early.");
    }
    let last = summary();
    live.draw(&last, elapsed);
    print!("{}", final_report(&last, elapsed, &upstream.counts()));

    if opts.keep_serving && !interrupted {
        println!(
            "\nThe router stays up on {router_url}; Ctrl-C to stop. Try:\n  \
             curl -s {router_url}/v1/chat/completions -H 'content-type: application/json' \\\n    \
             -d '{{\"model\": \"{ROUTE}\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is 2+2?\"}}]}}'"
        );
        startup::shutdown_signal().await;
    }
    println!("\nShutting down: flushing events to {database} ...");
    running.shutdown().await;
    upstream.shutdown().await;
    println!("Done. Requests, decisions and feedback are in {database}.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid_and_keeps_the_budget() {
        let d = Dataset::embedded().unwrap();
        let toml = demo_config_toml(&d, "http://127.0.0.1:9/v1", "127.0.0.1:0");
        let c = config::load_str(&toml, "demo", &Env::new()).unwrap();
        assert_eq!(c.models.len(), 3);
        assert_eq!(c.models[2].upstream_name(), "google/gemini-2.5-pro");
        assert_eq!(c.models[2].output_usd_per_mtok, 10.0);
        let route = &c.routes[0];
        assert_eq!(route.name.as_str(), "auto");
        assert_eq!(route.policy, config::PolicyKind::Linucb);
        assert_eq!(route.budget.map(|b| b.target_usd_per_request), Some(0.0004));
    }

    #[tokio::test]
    async fn the_router_answers_simulated_traffic_and_takes_its_feedback() {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("demo.db").display());
        let env: Env = [("DATABASE_URL".to_owned(), db)].into();
        let dataset = Arc::new(Dataset::embedded().unwrap());
        let (upstream, running) = start_stack(&dataset, 0.0, "127.0.0.1:0", &env)
            .await
            .unwrap();
        let stats = Arc::new(Mutex::new(Stats::new(&dataset, 40)));
        let opts = TrafficOptions {
            router_url: format!("http://{}", running.addr),
            model: ROUTE.to_owned(),
            requests: 40,
            concurrency: 4,
            seed: 3,
            stream_share: 0.5,
        };
        traffic::run(dataset.clone(), opts, stats.clone())
            .await
            .unwrap();
        let s = stats.lock().unwrap().summary();
        // Injected failures are retried or fall back; with three models and
        // a few percent each, every request gets an answer.
        assert_eq!(s.done(), 40);
        assert!(s.answered >= 38, "{s:?}");
        assert_eq!(s.feedback_errors, 0, "{s:?}");
        assert!(s.streamed > 0 && s.mean_cost > 0.0, "{s:?}");
        let served: u64 = upstream.counts().iter().map(|c| c.served).sum();
        assert!(served >= s.answered);
        running.shutdown().await;
        upstream.shutdown().await;
    }

    #[test]
    fn an_explicit_listen_address_wins() {
        let opts = DemoOptions {
            listen: Some("127.0.0.1:9999".into()),
            ..DemoOptions::default()
        };
        let env: Env = [("SWITCHBOARD_LISTEN".to_owned(), "127.0.0.1:7777".to_owned())].into();
        assert_eq!(choose_listen(&opts, &env), "127.0.0.1:9999");
        assert_eq!(
            choose_listen(&DemoOptions::default(), &env),
            "127.0.0.1:7777"
        );
    }
}
