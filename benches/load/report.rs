//! The report: machine and load notes, one table per mode (throughput,
//! latency percentiles, overhead against direct and against the zero-work
//! proxy, CPU used by the side under test), memory and soak rows, and the
//! DESIGN.md targets that these numbers speak to. Printed as Markdown and
//! written next to a JSON copy in the output directory.

use std::fmt::Write as _;
use std::process::Command;

use serde::Serialize;

use crate::driver::RunArgs;
use crate::loadgen::{CellResult, Pcts};
use crate::sides::Layout;

#[derive(Debug, Serialize)]
pub struct Cell {
    pub mode: String,
    pub concurrency: usize,
    pub target: String,
    /// CPU used by the side under test, in cores (1.0 = one core busy).
    pub cpu_share: f64,
    pub result: CellResult,
}

#[derive(Debug, Serialize)]
pub struct MemoryRow {
    /// Asked for; `streams` may be fewer when the descriptor limit is lower.
    pub requested: usize,
    pub streams: usize,
    pub ready: u64,
    pub failed: u64,
    pub open_s: f64,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_after_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct SoakSample {
    pub t_s: f64,
    pub rss_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Vec<String>,
    pub settings: String,
    pub cells: Vec<Cell>,
    /// Cells in which no request finished inside the window and none
    /// failed: the side is alive but slower than the window (LiteLLM's
    /// streams at c = 256 on a slow VM). A number, not a failure.
    pub unfinished: Vec<String>,
    pub rss_idle_start_kib: u64,
    pub rss_idle_after_matrix_kib: Option<u64>,
    /// A restarted router, before the memory phase.
    pub rss_idle_fresh_kib: Option<u64>,
    pub memory: Vec<MemoryRow>,
    pub soak: Vec<SoakSample>,
    pub soak_result: Option<CellResult>,
    #[serde(skip)]
    out: std::path::PathBuf,
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Share of the machine's CPU busy over one second, before anything starts.
fn busy_pct() -> String {
    let read = || -> Option<Vec<u64>> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        s.lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect()
    };
    let a = read();
    std::thread::sleep(std::time::Duration::from_secs(1));
    match (a, read()) {
        (Some(a), Some(b)) if a.len() >= 5 && b.len() >= 5 => {
            let total: u64 = b.iter().zip(&a).map(|(x, y)| x - y).sum();
            let idle = (b[3] + b[4]) - (a[3] + a[4]);
            format!(
                "{:.0} %",
                100.0 * (total - idle) as f64 / total.max(1) as f64
            )
        }
        _ => "unknown".into(),
    }
}

impl Report {
    pub fn new(a: &RunArgs, l: &Layout) -> Self {
        let machine = vec![
            format!("date (UTC): {}", chrono::Utc::now().format("%Y-%m-%d %H:%M")),
            format!("git: {}", sh("git rev-parse --short HEAD 2>/dev/null")),
            format!("nproc: {}", sh("nproc")),
            format!("cpu: {}", sh("lscpu | sed -n 's/^Model name: *//p'")),
            format!("load average before: {}", sh("cut -d' ' -f1-3 /proc/loadavg")),
            format!("machine CPU busy before start (other processes): {}", busy_pct()),
            format!("top other processes: {}", sh("ps -eo pcpu,comm --sort=-pcpu --no-headers | head -4 | tr -s ' ' | paste -sd';'")),
        ];
        let settings = format!(
            "duration {} s + warm-up {} s per cell; levels {:?}; modes {:?}; pinning: load generator + mock on CPU {}, side under test on CPU {}; router database: {}; LiteLLM {} (1 worker)",
            a.duration_s,
            a.warmup_s,
            a.levels,
            a.modes,
            l.client_cpus.as_deref().unwrap_or("any"),
            l.proxy_cpus.as_deref().unwrap_or("any"),
            a.database_url.as_deref().map(|_| "DATABASE_URL given").unwrap_or("fresh SQLite file"),
            a.litellm_version,
        );
        Report {
            machine,
            settings,
            cells: Vec::new(),
            unfinished: Vec::new(),
            rss_idle_start_kib: 0,
            rss_idle_after_matrix_kib: None,
            rss_idle_fresh_kib: None,
            memory: Vec::new(),
            soak: Vec::new(),
            soak_result: None,
            out: a.out.clone(),
        }
    }

    fn find(&self, mode: &str, c: usize, target: &str) -> Option<&CellResult> {
        self.cells
            .iter()
            .find(|x| x.mode == mode && x.concurrency == c && x.target == target)
            .map(|x| &x.result)
    }

    /// Latency the overhead is judged on: TTFB for streams, total otherwise.
    fn key(mode: &str, r: &CellResult) -> Pcts {
        if mode == "stream" {
            r.ttfb.unwrap_or(r.latency)
        } else {
            r.latency
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Machine and load:\n");
        for m in &self.machine {
            let _ = writeln!(s, "- {m}");
        }
        let _ = writeln!(s, "- {}\n", self.settings);
        for u in &self.unfinished {
            let _ = writeln!(s, "- not in the tables: {u}");
        }
        if !self.unfinished.is_empty() {
            let _ = writeln!(s);
        }
        let mut modes: Vec<&str> = self.cells.iter().map(|c| c.mode.as_str()).collect();
        modes.dedup();
        for mode in modes {
            let basis = if mode == "stream" { "TTFB" } else { "latency" };
            let _ = writeln!(s, "### {mode} (overhead columns on {basis} p50/p99, µs)\n");
            let _ = writeln!(s, "| c | target | req/s | % of direct | p50 µs | p90 µs | p99 µs | TTFB p50 | TTFB p99 | +p50 vs direct | +p50 vs zero-proxy | +p99 vs zero-proxy | CPU (cores) | errors |");
            let _ = writeln!(
                s,
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for c in self.cells.iter().filter(|c| c.mode == mode) {
                let r = &c.result;
                let k = Self::key(mode, r);
                let direct = self.find(mode, c.concurrency, "direct");
                let zero = self.find(mode, c.concurrency, "zero-proxy");
                let pct = direct.map(|d| format!("{:.0} %", 100.0 * r.rps / d.rps.max(1e-9)));
                let d50 = direct.map(|d| format!("{:+.0}", k.p50 - Self::key(mode, d).p50));
                let z50 = zero.map(|z| format!("{:+.0}", k.p50 - Self::key(mode, z).p50));
                let z99 = zero.map(|z| format!("{:+.0}", k.p99 - Self::key(mode, z).p99));
                let t = r.ttfb.unwrap_or_default();
                let (t50, t99) = if r.ttfb.is_some() {
                    (format!("{:.0}", t.p50), format!("{:.0}", t.p99))
                } else {
                    ("".into(), "".into())
                };
                let dash = || "–".to_owned();
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.2} | {} |",
                    c.concurrency, c.target, r.rps, pct.unwrap_or_else(dash), r.latency.p50, r.latency.p90,
                    r.latency.p99, t50, t99, d50.unwrap_or_else(dash), z50.unwrap_or_else(dash),
                    z99.unwrap_or_else(dash), c.cpu_share, r.errors + r.feedback_errors,
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "### memory (switchboard resident set)\n");
        let _ = writeln!(
            s,
            "- idle after start: {:.1} MiB",
            self.rss_idle_start_kib as f64 / 1024.0
        );
        if let Some(k) = self.rss_idle_after_matrix_kib {
            let _ = writeln!(s, "- idle after the matrix: {:.1} MiB", k as f64 / 1024.0);
        }
        if let Some(k) = self.rss_idle_fresh_kib {
            let _ = writeln!(
                s,
                "- idle after a restart, before the memory phase: {:.1} MiB",
                k as f64 / 1024.0
            );
        }
        if !self.memory.is_empty() {
            let _ = writeln!(s, "\n| streams asked | attempted | opened | failed | seconds to open | RSS before MiB | RSS open MiB | RSS after close MiB |");
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
            for m in &self.memory {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    m.requested,
                    m.streams,
                    m.ready,
                    m.failed,
                    m.open_s,
                    m.rss_before_kib as f64 / 1024.0,
                    m.rss_open_kib as f64 / 1024.0,
                    m.rss_after_kib as f64 / 1024.0
                );
            }
        }
        if let (Some(first), Some(last)) = (self.soak.first(), self.soak.last()) {
            let rps = self.soak_result.as_ref().map(|r| r.rps).unwrap_or(0.0);
            let _ = writeln!(
                s,
                "\n### soak\n\n{:.0} s through the bandit route with feedback at {:.0} req/s: RSS {:.1} MiB at start, {:.1} MiB at end (max {:.1} MiB)",
                last.t_s, rps, first.rss_kib as f64 / 1024.0, last.rss_kib as f64 / 1024.0,
                self.soak.iter().map(|x| x.rss_kib).max().unwrap_or(0) as f64 / 1024.0
            );
        }
        s += &self.targets();
        s
    }

    fn targets(&self) -> String {
        let mut s = String::from(
            "\n### against the DESIGN.md targets\n\n| what | target | measured |\n|---|---|---|\n",
        );
        for router in ["router-fixed", "router-bandit"] {
            if let (Some(r), Some(z)) = (
                self.find("nonstream", 1, router),
                self.find("nonstream", 1, "zero-proxy"),
            ) {
                let _ = writeln!(
                    s,
                    "| added latency over zero-work proxy, c=1 ({router}) | p50 ≤ 50 µs, p99 ≤ 200 µs | p50 {:+.0} µs, p99 {:+.0} µs |",
                    r.latency.p50 - z.latency.p50, r.latency.p99 - z.latency.p99
                );
            }
        }
        if let (Some(b), Some(d)) = (
            self.find("nonstream", 64, "router-bandit"),
            self.find("nonstream", 64, "direct"),
        ) {
            let _ = writeln!(
                s,
                "| bandit route throughput at c=64, share of direct | ≥ 50 % | {:.0} % |",
                100.0 * b.rps / d.rps.max(1e-9)
            );
        }
        for c in [1, 16, 64, 256] {
            if let (Some(r), Some(l)) = (
                self.find("nonstream", c, "router-fixed"),
                self.find("nonstream", c, "litellm"),
            ) {
                let _ = writeln!(
                    s,
                    "| router vs LiteLLM throughput, c={c} | ≥ 200× | {:.0}× |",
                    r.rps / l.rps.max(1e-9)
                );
            }
        }
        if let Some(m) = self.memory.iter().find(|m| m.requested == 1000) {
            let _ = writeln!(
                s,
                "| resident memory, 1,000 concurrent streams | ≤ 100 MB | {:.1} MiB |",
                m.rss_open_kib as f64 / 1024.0
            );
        }
        s
    }

    pub fn finish(&self) -> anyhow::Result<()> {
        let md = self.markdown();
        println!("{md}");
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        let md_path = self.out.join(format!("run-{stamp}.md"));
        std::fs::write(&md_path, &md)?;
        std::fs::write(
            self.out.join(format!("run-{stamp}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        eprintln!("[load] report written to {}", md_path.display());
        Ok(())
    }
}
