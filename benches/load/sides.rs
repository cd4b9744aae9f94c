//! Starting the sides of the comparison: the mock upstream, the zero-work
//! proxy, switchboard (release build of this package, generated config, fresh
//! database) and LiteLLM proxy (installed from PyPI into a virtualenv under the
//! output directory on first use; no database, no callbacks, offline).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::procs::{self, Proc};

/// Where the sides listen and run.
#[derive(Debug, Clone)]
pub struct Layout {
    pub out: PathBuf,
    pub mock_port: u16,
    pub proxy_port: u16,
    pub router_port: u16,
    pub litellm_port: u16,
    /// CPUs of the load generator and the mock; of the proxy under test.
    pub client_cpus: Option<String>,
    pub proxy_cpus: Option<String>,
    /// Bearer token sent to every target: LiteLLM's master key (it refuses to
    /// start without a strong one); the others ignore it.
    pub api_key: String,
}

impl Layout {
    pub fn addr(port: u16) -> String {
        format!("127.0.0.1:{port}")
    }
}

fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the harness binary")
}

pub async fn start_mock(l: &Layout) -> anyhow::Result<Proc> {
    let args = vec!["mock".into(), "--port".into(), l.mock_port.to_string()];
    let cmd = procs::command(l.client_cpus.as_deref(), &exe()?, &args);
    let mut p = procs::spawn("mock", cmd, &l.out.join("mock.log"))?;
    let url = format!("http://127.0.0.1:{}/health", l.mock_port);
    procs::wait_ready(&mut p, &url, Duration::from_secs(10)).await?;
    Ok(p)
}

pub async fn start_proxy(l: &Layout) -> anyhow::Result<Proc> {
    let args = vec![
        "proxy".into(),
        "--port".into(),
        l.proxy_port.to_string(),
        "--upstream".into(),
        Layout::addr(l.mock_port),
    ];
    let cmd = procs::command(l.proxy_cpus.as_deref(), &exe()?, &args);
    let mut p = procs::spawn("zero-proxy", cmd, &l.out.join("zero-proxy.log"))?;
    let url = format!("http://127.0.0.1:{}/health", l.proxy_port);
    procs::wait_ready(&mut p, &url, Duration::from_secs(10)).await?;
    Ok(p)
}

/// The router's config: four models on the mock, a LinUCB route over them,
/// and a `slow` model whose streams the mock holds open.
pub fn router_config(l: &Layout) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n\n[store]\nspill_path = \"{}\"\nwriter_yields = true\n\n\
         [[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\n\n",
        l.router_port,
        l.out.join("spill.jsonl").display(),
        l.mock_port
    );
    let models = [
        ("bench-a", 0.15, 0.6),
        ("bench-b", 2.5, 10.0),
        ("bench-c", 0.8, 4.0),
        ("bench-d", 0.0, 0.0),
    ];
    for (name, input, output) in models.iter().chain([("slow", 0.1, 0.1)].iter()) {
        let upstream = if *name == "slow" { "mock-slow" } else { name };
        s += &format!(
            "[[models]]\nname = \"{name}\"\nprovider = \"mock\"\nupstream_name = \"{upstream}\"\n\
             input_usd_per_mtok = {input}\noutput_usd_per_mtok = {output}\n\n"
        );
    }
    s += "[[routes]]\nname = \"auto\"\nmodels = [\"bench-a\", \"bench-b\", \"bench-c\", \"bench-d\"]\n\
          policy = \"linucb\"\n";
    s
}

pub async fn start_router(l: &Layout, database_url: Option<&str>) -> anyhow::Result<Proc> {
    let config = l.out.join("switchboard.toml");
    std::fs::write(&config, router_config(l))?;
    let db = l.out.join("switchboard.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let url = database_url
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}", db.display()));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_switchboard"));
    let args = vec![
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
    ];
    let mut cmd = procs::command(l.proxy_cpus.as_deref(), &bin, &args);
    cmd.env("DATABASE_URL", url).env("RUST_LOG", "warn");
    let mut p = procs::spawn("switchboard", cmd, &l.out.join("switchboard.log"))?;
    let url = format!("http://127.0.0.1:{}/readyz", l.router_port);
    procs::wait_ready(&mut p, &url, Duration::from_secs(60)).await?;
    Ok(p)
}

fn litellm_config() -> &'static str {
    "# Written by benches/load: one model on the mock upstream, nothing else.\n\
     model_list:\n  - model_name: bench-a\n    litellm_params:\n      model: openai/bench-a\n\
     \x20     api_base: os.environ/BENCH_MOCK_API_BASE\n      api_key: sk-mock\n\
     litellm_settings:\n  telemetry: false\n  num_retries: 0\n  request_timeout: 60\n\
     \x20 callbacks: []\n  success_callback: []\n  failure_callback: []\n\
     general_settings:\n  disable_spend_logs: true\n  disable_error_logs: true\n"
}

/// Creates the virtualenv and installs `litellm[proxy]==version` unless that
/// version is already there. Returns the `litellm` executable.
pub fn install_litellm(out: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let venv = out.join("venv");
    let bin = venv.join("bin/litellm");
    let python = venv.join("bin/python");
    let have = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if bin.exists() && have.as_deref() == Some(version) {
        return Ok(bin);
    }
    eprintln!(
        "[load] installing litellm[proxy]=={version} into {}",
        venv.display()
    );
    if !python.exists() {
        run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run_ok(Command::new(venv.join("bin/pip")).args(["install", "-q", "--upgrade", "pip"]))?;
    run_ok(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        &format!("litellm[proxy]=={version}"),
    ]))?;
    if !bin.exists() {
        bail!("pip installed litellm but {} is missing", bin.display());
    }
    Ok(bin)
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub async fn start_litellm(l: &Layout, bin: &Path) -> anyhow::Result<Proc> {
    let config = l.out.join("litellm.yaml");
    std::fs::write(&config, litellm_config())?;
    let args = vec![
        "--config".into(),
        config.display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        l.litellm_port.to_string(),
        "--num_workers".into(),
        "1".into(),
    ];
    let mut cmd = procs::command(l.proxy_cpus.as_deref(), bin, &args);
    // Offline and quiet: local cost map, no telemetry, no key (auth off).
    cmd.env(
        "BENCH_MOCK_API_BASE",
        format!("http://127.0.0.1:{}/v1", l.mock_port),
    )
    .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    .env("LITELLM_TELEMETRY", "False")
    .env("LITELLM_LOG", "ERROR")
    .env("DISABLE_ADMIN_UI", "True")
    .env("HF_HUB_OFFLINE", "1")
    .env("DO_NOT_TRACK", "1")
    .env("NO_PROXY", "127.0.0.1,localhost")
    .env("LITELLM_MASTER_KEY", &l.api_key)
    .env_remove("DATABASE_URL");
    let mut p = procs::spawn("litellm", cmd, &l.out.join("litellm.log"))?;
    eprintln!("[load] waiting for LiteLLM (its start takes 20-60 s)");
    let url = format!("http://127.0.0.1:{}/health/liveliness", l.litellm_port);
    procs::wait_ready(&mut p, &url, Duration::from_secs(300)).await?;
    Ok(p)
}
