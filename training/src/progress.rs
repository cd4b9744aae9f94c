//! Progress of a long run on the operator's terminal (indicatif), drawn on
//! stderr so stdout keeps only the report. Off unless asked for: the
//! command asks only when stdout is a terminal, so cron, scripts and
//! `serve --retrain-every` get no bars.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Rows between two updates of the bar (keeps the per-row cost nil).
const STEP: u64 = 4_096;

/// One pass over the log; a no-op when disabled.
pub struct Progress {
    bar: Option<ProgressBar>,
    pending: u64,
}

impl Progress {
    pub fn new(enabled: bool, total: Option<u64>, what: &str) -> Self {
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{msg:>24} [{bar:32}] {human_pos}/{human_len} rows ({per_sec}, eta {eta})"
            } else {
                "{msg:>24} {spinner} {human_pos} rows ({per_sec})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_owned());
            bar
        });
        Self { bar, pending: 0 }
    }

    /// One more row read.
    pub fn tick(&mut self) {
        self.pending += 1;
        if self.pending >= STEP {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(b) = &self.bar {
            b.inc(self.pending);
        }
        self.pending = 0;
    }

    /// Leaves the finished bar on screen.
    pub fn finish(mut self) {
        self.flush();
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
