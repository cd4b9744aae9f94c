//! The demo's terminal output: a live block redrawn in place on a terminal
//! (one plain line per tick otherwise) and the final table. Pure formatting
//! of a [`Summary`]; no I/O but [`Live::draw`].

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::stats::Summary;
use super::upstream::ServedCount;

/// The name shown for a model id: without its vendor prefix.
fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn rate(s: &Summary, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        s.done() as f64 / secs
    } else {
        0.0
    }
}

fn progress(s: &Summary, elapsed: Duration) -> String {
    let share = if s.planned > 0 {
        s.done() as f64 / s.planned as f64
    } else {
        1.0
    };
    format!(
        "{}/{} requests ({}), {:.1} req/s, {} errors, {:.0}s",
        s.done(),
        s.planned,
        pct(share),
        rate(s, elapsed),
        s.errors,
        elapsed.as_secs_f64()
    )
}

/// The block a terminal shows and redraws about once a second.
pub fn live_block(s: &Summary, elapsed: Duration) -> Vec<String> {
    let mut lines = vec![
        format!(
            "switchboard demo: {}, policy {}",
            progress(s, elapsed),
            s.policy.as_deref().unwrap_or("-")
        ),
        format!(
            "  {:<24} {:>7} {:>7} {:>11} {:>7} {:>7} {:>7}",
            "model", "share", "recent", "mean cost", "p50 ms", "p95 ms", "reward"
        ),
    ];
    for m in &s.models {
        lines.push(format!(
            "  {:<24} {:>7} {:>7} {:>11} {:>7.0} {:>7.0} {:>7.3}",
            short(&m.model),
            pct(m.share),
            pct(m.recent_share),
            format!("${:.6}", m.mean_cost),
            m.p50_ms,
            m.p95_ms,
            m.mean_reward
        ));
    }
    lines.push(format!(
        "  {:<24} {:>7} {:>7} {:>11} {:>7.0} {:>7.0} {:>7.3}",
        "all",
        "",
        "",
        format!("${:.6}", s.mean_cost),
        s.p50_ms,
        s.p95_ms,
        s.mean_reward
    ));
    lines
}

/// One line per tick when stdout is not a terminal.
pub fn live_line(s: &Summary, elapsed: Duration) -> String {
    let shares: Vec<String> = s
        .models
        .iter()
        .map(|m| {
            format!(
                "{} {} (recent {})",
                short(&m.model),
                pct(m.share),
                pct(m.recent_share)
            )
        })
        .collect();
    format!(
        "{} | {} | ${:.6}/req | reward {:.3} | p50 {:.0} ms p95 {:.0} ms",
        progress(s, elapsed),
        shares.join(", "),
        s.mean_cost,
        s.mean_reward,
        s.p50_ms,
        s.p95_ms
    )
}

/// Draws the live view: in place on a terminal, appended otherwise.
pub struct Live {
    tty: bool,
    drawn: usize,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    pub fn new() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
        }
    }

    pub fn draw(&mut self, s: &Summary, elapsed: Duration) {
        let mut out = String::new();
        if self.tty {
            if self.drawn > 0 {
                // Back to the first line of the previous block, clear below.
                let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
            }
            let lines = live_block(s, elapsed);
            self.drawn = lines.len();
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        } else {
            out = live_line(s, elapsed);
            out.push('\n');
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

/// The table printed when the traffic is done.
pub fn final_report(s: &Summary, elapsed: Duration, upstream: &[ServedCount]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nDone: {}, last policy version {}",
        progress(s, elapsed),
        s.policy.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        o,
        "\n  {:<24} {:>6} {:>7} {:>7} {:>11} {:>11} {:>7} {:>7} {:>7}",
        "model",
        "count",
        "share",
        "recent",
        "total cost",
        "mean cost",
        "p50 ms",
        "p95 ms",
        "reward"
    );
    for m in &s.models {
        let _ = writeln!(
            o,
            "  {:<24} {:>6} {:>7} {:>7} {:>11} {:>11} {:>7.0} {:>7.0} {:>7.3}",
            short(&m.model),
            m.count,
            pct(m.share),
            pct(m.recent_share),
            format!("${:.4}", m.total_cost),
            format!("${:.6}", m.mean_cost),
            m.p50_ms,
            m.p95_ms,
            m.mean_reward
        );
    }
    let _ = writeln!(
        o,
        "  {:<24} {:>6} {:>7} {:>7} {:>11} {:>11} {:>7.0} {:>7.0} {:>7.3}",
        "router (all)",
        s.answered,
        "",
        "",
        format!("${:.4}", s.total_cost),
        format!("${:.6}", s.mean_cost),
        s.p50_ms,
        s.p95_ms,
        s.mean_reward
    );
    let _ = writeln!(
        o,
        "\n  On the same prompts, a fixed choice would have scored:"
    );
    for (label, b) in &s.baselines {
        let name = if label == "oracle" {
            "oracle (best per prompt)"
        } else {
            short(label)
        };
        let _ = writeln!(
            o,
            "  {:<24} reward {:.3}   mean cost ${:.6}",
            name, b.reward, b.cost
        );
    }
    let errors: Vec<String> = s
        .errors_by_kind
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    let _ = writeln!(
        o,
        "\n  Streamed: {} of {} answers. Client errors: {}{}. Feedback rejected: {}.",
        s.streamed,
        s.answered,
        s.errors,
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        },
        s.feedback_errors
    );
    let injected: Vec<String> = upstream
        .iter()
        .map(|c| format!("{} {}/{}", short(&c.model), c.failed, c.served))
        .collect();
    let _ = writeln!(
        o,
        "  Simulated upstream failures (failed/calls), absorbed by retries and fallbacks: {}.",
        injected.join(", ")
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::dataset::Dataset;
    use crate::sim::stats::Stats;

    #[test]
    fn reports_name_every_model_and_the_totals() {
        let d = Dataset::embedded().unwrap();
        let mut st = Stats::new(&d, 4);
        st.record_answer(&d.rows[0], 1, 120.0, 0.0005, false);
        st.record_error("HTTP 502".into());
        let s = st.summary();
        let block = live_block(&s, Duration::from_secs(2));
        assert_eq!(block.len(), 2 + d.models.len() + 1);
        assert!(block[0].contains("2/4 requests (50.0%)"), "{}", block[0]);
        assert!(block[3].contains("mistral-large-2512") && block[3].contains("100.0%"));
        let line = live_line(&s, Duration::from_secs(2));
        assert!(line.contains("gemini-2.5-pro 0.0%"), "{line}");
        let counts = [ServedCount {
            model: "a/x".into(),
            served: 9,
            failed: 2,
        }];
        let report = final_report(&s, Duration::from_secs(2), &counts);
        assert!(report.contains("HTTP 502: 1"), "{report}");
        assert!(report.contains("oracle (best per prompt)"));
        assert!(report.contains("x 2/9"));
    }
}
