//! The real `switchboard` binary as a child process, for tests that need a
//! process of its own: kill -9 and restart, SIGTERM, its output (logs), its
//! resident memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The real binary, serving a config on a port of its own.
pub struct Router {
    pub child: Child,
    pub base: String,
    /// Its configuration file (what a reload re-reads).
    pub path: PathBuf,
}

impl Drop for Router {
    /// A failed test leaves no router running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How to start it beyond the config: extra environment, the file its
/// output (logs go to stdout, panics to stderr) is written to (discarded
/// when `None`), and a name for its own files when several share `dir`.
#[derive(Default)]
pub struct Launch<'a> {
    pub env: Vec<(&'a str, String)>,
    pub output: Option<&'a Path>,
    pub name: Option<&'a str>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn spill(dir: &Path) -> PathBuf {
    dir.join("spill.jsonl")
}

/// `switchboard serve` with `config` (its `listen` replaced by a free
/// port), `MOCK_KEY` set and `RUST_LOG=error`; returns once `/healthz` answers.
pub async fn start_binary(config: &str, dir: &Path, db_url: &str) -> Router {
    start_binary_with(config, dir, db_url, Launch::default()).await
}

pub async fn start_binary_with(
    config: &str,
    dir: &Path,
    db_url: &str,
    launch: Launch<'_>,
) -> Router {
    let port = free_port();
    let spill_path = match launch.name {
        Some(n) => dir.join(format!("spill-{n}.jsonl")),
        None => spill(dir),
    };
    let text = config.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ) + &format!(
        "\n[store]\nspill_path = \"{}\"\nflush_interval_ms = 20\n",
        spill_path.display()
    );
    let path = dir.join(format!("{}-{port}.toml", launch.name.unwrap_or("router")));
    std::fs::write(&path, text).unwrap();
    let (stdout, stderr) = match launch.output {
        Some(p) => {
            let f = std::fs::File::create(p).unwrap();
            (Stdio::from(f.try_clone().unwrap()), Stdio::from(f))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["serve", "--config"])
        .arg(&path)
        .env("DATABASE_URL", db_url)
        .env("MOCK_KEY", "sk-test-secret")
        .env("RUST_LOG", "error");
    for (k, v) in &launch.env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(stdout).stderr(stderr).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Router { child, base, path };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the router binary never became healthy");
}

pub fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Resident memory of a process, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
