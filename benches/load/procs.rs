//! Child processes of the harness: each side runs in its own process, started
//! through `prlimit` (raises the open-file limit) and `taskset` (pins it to
//! CPUs), in its own process group; every one is stopped by its id when its
//! guard drops, also on error.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Open files wanted for every child (10,000 streams through the router take
/// 20,000 sockets in it alone); capped at the hard limit, which an
/// unprivileged container cannot raise.
pub const NOFILE: u64 = 262_144;

/// The open-file limit children get: `NOFILE` or the hard limit if lower.
pub fn nofile() -> u64 {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            let line = s
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .to_owned();
            let f: Vec<&str> = line.split_whitespace().collect();
            f.get(4).and_then(|h| h.parse::<u64>().ok())
        })
        .unwrap_or(NOFILE);
    hard.min(NOFILE)
}

/// A running side; killed (its whole process group) on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the whole group, so a side
    /// that is not being measured runs nothing on the shared core: LiteLLM
    /// alone used ~3 % of it while idle, in bursts the router's requests
    /// waited behind.
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.pid())])
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("kill {signal} {} failed ({status})", self.name);
        }
        Ok(())
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        // A frozen group would hold SIGTERM until thawed.
        let _ = self.freeze(false);
        let group = format!("-{}", self.pid());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(3));
        }
    }
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?;
    Ok(kib)
}

/// A command that runs `program args` with the raised file limit, pinned to
/// `cpus` (when given), in a new process group.
pub fn command(cpus: Option<&str>, program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new("prlimit");
    let n = nofile();
    cmd.arg(format!("--nofile={n}:{n}")).arg("--");
    if let Some(cpus) = cpus {
        cmd.args(["taskset", "-c", cpus]);
    }
    cmd.arg(program).args(args);
    cmd.process_group(0);
    cmd
}

/// Starts a long-running side with its output in `log`.
pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    eprintln!(
        "[load] started {name} pid={} log={}",
        child.id(),
        log.display()
    );
    Ok(Proc {
        name: name.to_owned(),
        child,
    })
}

/// Waits until `GET url` answers 2xx, failing early when the process dies.
pub async fn wait_ready(proc: &mut Proc, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        proc.check_alive()?;
        if let Ok(r) = client
            .get(url)
            .bearer_auth("sk-bench")
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{} did not answer {url} within {timeout:?}", proc.name)
}

/// CPU seconds (user + system) the process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`; utime and stime are the 12th and 13th of those.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}
