//! The driver: starts every side, runs the matrix (mode x concurrency x
//! target, targets interleaved within each cell so drift hits all alike),
//! the memory phase (open streams held by a slow upstream) and the optional
//! soak, then prints and writes the report. Fails only when a side cannot
//! run (does not start, or answers nothing); slow numbers are just numbers.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::loadgen::CellResult;
use crate::procs::{self, Proc};
use crate::report::{Cell, MemoryRow, Report, SoakSample};
use crate::sides::{self, Layout};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub levels: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "nonstream,stream")]
    pub modes: Vec<String>,
    /// Any of direct, zero-proxy, router-fixed, router-bandit, litellm.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,zero-proxy,router-fixed,router-bandit,litellm"
    )]
    pub targets: Vec<String>,
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Open streams held for the memory phase (0: skip it).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub memory_streams: Vec<usize>,
    /// Soak: this many seconds through the bandit route at `soak_concurrency`.
    #[arg(long, default_value_t = 0)]
    pub soak_s: u64,
    #[arg(long, default_value_t = 64)]
    pub soak_concurrency: usize,
    /// Skip the matrix (e.g. memory or soak only).
    #[arg(long)]
    pub no_matrix: bool,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// The router's database (default: a fresh SQLite file in the output directory).
    #[arg(long)]
    pub database_url: Option<String>,
    #[arg(long, default_value = "1.106.2")]
    pub litellm_version: String,
    #[arg(long, default_value = concat!(env!("CARGO_TARGET_TMPDIR"), "/bench-gateway"))]
    pub out: PathBuf,
    /// First of five consecutive ports.
    #[arg(long, default_value_t = 18180)]
    pub base_port: u16,
}

struct Target {
    name: &'static str,
    port: u16,
    model: &'static str,
    feedback: bool,
}

fn targets(a: &RunArgs, l: &Layout) -> anyhow::Result<Vec<Target>> {
    a.targets
        .iter()
        .map(|t| {
            let (port, model, feedback, name) = match t.as_str() {
                "direct" => (l.mock_port, "bench-a", false, "direct"),
                "zero-proxy" => (l.proxy_port, "bench-a", false, "zero-proxy"),
                "router-fixed" => (l.router_port, "bench-a", false, "router-fixed"),
                "router-bandit" => (l.router_port, "auto", true, "router-bandit"),
                "litellm" => (l.litellm_port, "bench-a", false, "litellm"),
                other => bail!("unknown target {other:?}"),
            };
            Ok(Target {
                name,
                port,
                model,
                feedback,
            })
        })
        .collect()
}

fn layout(a: &RunArgs) -> anyhow::Result<Layout> {
    let pin = !a.no_pin && std::thread::available_parallelism()?.get() >= 2;
    let n = std::thread::available_parallelism()?.get();
    Ok(Layout {
        out: a.out.clone(),
        mock_port: a.base_port,
        proxy_port: a.base_port + 1,
        router_port: a.base_port + 2,
        litellm_port: a.base_port + 3,
        client_cpus: pin.then(|| "0".to_owned()),
        proxy_cpus: pin.then(|| {
            if n > 2 {
                format!("1-{}", n - 1)
            } else {
                "1".to_owned()
            }
        }),
        api_key: format!(
            "sk-bench-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
    })
}

pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let l = layout(&a)?;
    let mut report = Report::new(&a, &l);
    let wants = |t: &str| a.targets.iter().any(|x| x == t);

    let litellm_bin = if wants("litellm") && !a.no_matrix {
        Some(sides::install_litellm(&a.out, &a.litellm_version)?)
    } else {
        None
    };
    let mut mock = sides::start_mock(&l).await?;
    let mut proxy = sides::start_proxy(&l).await?;
    let mut router = sides::start_router(&l, a.database_url.as_deref()).await?;
    let mut litellm = match &litellm_bin {
        Some(bin) => Some(sides::start_litellm(&l, bin).await?),
        None => None,
    };
    report.rss_idle_start_kib = router.rss_kib()?;

    if !a.no_matrix {
        let ts = targets(&a, &l)?;
        for mode in &a.modes {
            let stream = match mode.as_str() {
                "stream" => true,
                "nonstream" => false,
                other => bail!("unknown mode {other:?}"),
            };
            // One short run per target first: a side that answers nothing stops the run here.
            for t in &ts {
                focus(Some(t), &proxy, &router, litellm.as_ref())?;
                // A cold side (LiteLLM's first request) may need a few tries; errors end it.
                let mut r = loadgen(&l, t, stream, 1, 1.0, 0.0).await?;
                for _ in 0..9 {
                    if r.ok > 0 || r.errors > 0 {
                        break;
                    }
                    r = loadgen(&l, t, stream, 1, 1.0, 0.0).await?;
                }
                if r.ok == 0 {
                    bail!(
                        "{} ({mode}) answered no request: {:?}",
                        t.name,
                        r.first_error
                    );
                }
            }
            for &c in &a.levels {
                for t in &ts {
                    alive(&mut [&mut mock, &mut proxy, &mut router], litellm.as_mut())?;
                    focus(Some(t), &proxy, &router, litellm.as_ref())?;
                    let cpu0 =
                        procs::cpu_seconds(under_test_pid(t, &proxy, &router, litellm.as_ref()))?;
                    let r = loadgen(&l, t, stream, c, a.duration_s, a.warmup_s).await?;
                    let cpu1 =
                        procs::cpu_seconds(under_test_pid(t, &proxy, &router, litellm.as_ref()))?;
                    if r.ok == 0 && r.errors == 0 {
                        // Alive (checked above and by the short run) but no
                        // request finished inside the window: slow, not broken.
                        let note = format!(
                            "{} ({mode}, c={c}): no request finished within the {} s window, none failed",
                            t.name, a.duration_s
                        );
                        eprintln!("[load] {note}");
                        report.unfinished.push(note);
                        continue;
                    }
                    if r.ok == 0 {
                        bail!(
                            "{} ({mode}, c={c}) answered no request: {:?}",
                            t.name,
                            r.first_error
                        );
                    }
                    eprintln!(
                        "[load] {mode:9} c={c:<3} {:13} {:>9.0} req/s  p50 {:>8.0} us  p99 {:>8.0} us  errors {}",
                        t.name, r.rps, r.latency.p50, r.latency.p99, r.errors + r.feedback_errors
                    );
                    let total = a.duration_s + a.warmup_s;
                    report.cells.push(Cell {
                        mode: mode.clone(),
                        concurrency: c,
                        target: t.name.to_owned(),
                        cpu_share: (cpu1 - cpu0) / total,
                        result: r,
                    });
                }
            }
        }
        focus(None, &proxy, &router, litellm.as_ref())?;
        report.rss_idle_after_matrix_kib = Some(router.rss_kib()?);
    }

    let memory_streams: Vec<usize> = a
        .memory_streams
        .iter()
        .copied()
        .filter(|&n| n > 0)
        .collect();
    if !a.no_matrix && !memory_streams.is_empty() {
        // The matrix leaves ~1M recent decisions in the router's memory: measure streams on a fresh one.
        router.stop(Duration::from_secs(5));
        router = sides::start_router(&l, a.database_url.as_deref()).await?;
        report.rss_idle_fresh_kib = Some(router.rss_kib()?);
    }
    for &n in &memory_streams {
        report.memory.push(memory(&l, &mut router, n).await?);
    }
    if a.soak_s > 0 {
        let (samples, result) = soak(&l, &mut router, a.soak_s, a.soak_concurrency).await?;
        report.soak = samples;
        report.soak_result = Some(result);
    }
    report.finish()?;
    for p in [&mut router, &mut proxy, &mut mock]
        .into_iter()
        .chain(litellm.as_mut())
    {
        p.stop(Duration::from_secs(5));
    }
    Ok(())
}

/// Thaws the side `t` measures and freezes the other proxies (the mock
/// always runs), so each side has the core it is pinned to to itself.
/// `None` thaws them all.
fn focus(
    t: Option<&Target>,
    proxy: &Proc,
    router: &Proc,
    litellm: Option<&Proc>,
) -> anyhow::Result<()> {
    let under_test = t.map(|t| under_test_pid(t, proxy, router, litellm));
    for p in [proxy, router].into_iter().chain(litellm) {
        p.freeze(under_test.is_some_and(|pid| pid != p.pid()))?;
    }
    Ok(())
}

fn under_test_pid(t: &Target, proxy: &Proc, router: &Proc, litellm: Option<&Proc>) -> u32 {
    match t.name {
        "zero-proxy" => proxy.pid(),
        "router-fixed" | "router-bandit" => router.pid(),
        "litellm" => litellm.map(Proc::pid).unwrap_or(0),
        _ => std::process::id(),
    }
}

fn alive(ps: &mut [&mut Proc], litellm: Option<&mut Proc>) -> anyhow::Result<()> {
    for p in ps.iter_mut() {
        p.check_alive()?;
    }
    if let Some(p) = litellm {
        p.check_alive()?;
    }
    Ok(())
}

fn loadgen_args(
    l: &Layout,
    t: &Target,
    stream: bool,
    c: usize,
    dur: f64,
    warm: f64,
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "loadgen".into(),
        "--addr".into(),
        Layout::addr(t.port),
        "--model".into(),
        t.model.into(),
        "--concurrency".into(),
        c.to_string(),
        "--duration-s".into(),
        dur.to_string(),
        "--warmup-s".into(),
        warm.to_string(),
        "--api-key".into(),
        l.api_key.clone(),
    ];
    if stream {
        v.push("--stream".into());
    }
    if t.feedback {
        v.push("--feedback".into());
    }
    v
}

/// Runs one load generator process (pinned with the mock) and parses its line.
async fn loadgen(
    l: &Layout,
    t: &Target,
    stream: bool,
    c: usize,
    dur: f64,
    warm: f64,
) -> anyhow::Result<CellResult> {
    let args = loadgen_args(l, t, stream, c, dur, warm);
    let mut cmd = procs::command(l.client_cpus.as_deref(), &std::env::current_exe()?, &args);
    let out = tokio::task::spawn_blocking(move || cmd.stderr(Stdio::inherit()).output()).await??;
    if !out.status.success() {
        bail!("load generator failed ({}) against {}", out.status, t.name);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .with_context(|| format!("parsing load generator output {text:?}"))
}

/// Holds `n` streams open through the router and samples its resident memory.
async fn memory(l: &Layout, router: &mut Proc, n: usize) -> anyhow::Result<MemoryRow> {
    router.check_alive()?;
    // Each proxied stream holds two sockets in the router.
    let fit = (procs::nofile().saturating_sub(200) / 2) as usize;
    if n > fit {
        eprintln!(
            "[load] memory: {n} streams need {} descriptors; the hard limit allows {fit}",
            2 * n + 200
        );
    }
    let requested = n;
    let n = n.min(fit);
    let before = router.rss_kib()?;
    let t = Target {
        name: "router-fixed",
        port: l.router_port,
        model: "slow",
        feedback: false,
    };
    let mut args = loadgen_args(l, &t, true, 1, 0.0, 0.0);
    args.extend(["--hold".into(), n.to_string()]);
    let mut cmd = procs::command(l.client_cpus.as_deref(), &std::env::current_exe()?, &args);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the load generator")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    let ready: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("hold output {line:?}"))?;
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(router.rss_kib()?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"\n");
    }
    let _ = tokio::task::spawn_blocking(move || child.wait()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let row = MemoryRow {
        requested,
        streams: n,
        ready: ready["ready"].as_u64().unwrap_or(0),
        failed: ready["failed"].as_u64().unwrap_or(0),
        open_s: ready["open_s"].as_f64().unwrap_or(0.0),
        rss_before_kib: before,
        rss_open_kib: peak,
        rss_after_kib: router.rss_kib()?,
    };
    eprintln!("[load] memory: {row:?}");
    if row.ready == 0 {
        bail!("no stream could be opened through the router");
    }
    Ok(row)
}

/// Steady load through the bandit route with feedback; RSS every 10 s.
async fn soak(
    l: &Layout,
    router: &mut Proc,
    secs: u64,
    c: usize,
) -> anyhow::Result<(Vec<SoakSample>, CellResult)> {
    let t = Target {
        name: "router-bandit",
        port: l.router_port,
        model: "auto",
        feedback: true,
    };
    let args = loadgen_args(l, &t, false, c, secs as f64, 0.0);
    let mut cmd = procs::command(l.client_cpus.as_deref(), &std::env::current_exe()?, &args);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    let mut samples = vec![SoakSample {
        t_s: 0.0,
        rss_kib: router.rss_kib()?,
    }];
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        router.check_alive()?;
        samples.push(SoakSample {
            t_s: started.elapsed().as_secs_f64(),
            rss_kib: router.rss_kib()?,
        });
        if child.try_wait()?.is_some() {
            break;
        }
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let r: CellResult = serde_json::from_slice(&out.stdout).context("soak output")?;
    eprintln!(
        "[load] soak: {:.0} req/s, {} errors, {} feedback errors",
        r.rps, r.errors, r.feedback_errors
    );
    if r.ok == 0 {
        bail!("the soak answered no request: {:?}", r.first_error);
    }
    Ok((samples, r))
}
