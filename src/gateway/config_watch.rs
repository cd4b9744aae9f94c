//! Reload triggers besides the admin API: SIGHUP, and a change of the
//! configuration file's text, checked every `server.config_watch_ms`.
//!
//! Why poll the text rather than use inotify or compare mtimes: editors
//! save by writing a new file and renaming it, Kubernetes swaps a ConfigMap
//! through a symlink, and two edits can share an mtime second; reading a
//! few kilobytes every two seconds sees all of them, on every platform.
//! Each new text is tried once: a refused file is not retried (and logged)
//! every tick, only when it changes again or on SIGHUP / the admin API.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::live::{Live, Trigger};

/// Starts the watcher when the router runs from a file. The signal handler
/// is installed before this returns, so a SIGHUP sent afterwards is never
/// lost (nor, with no handler, fatal).
pub fn spawn(
    live: Arc<Live>,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    live.config_path()?;
    #[cfg(unix)]
    let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGHUP; reload through the file or the admin API.");
            None
        }
    };
    #[cfg(not(unix))]
    let hangup: Option<()> = None;
    Some(tokio::spawn(run(live, every, hangup, shutdown)))
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

async fn run(
    live: Arc<Live>,
    every: Duration,
    mut hangup: Hangup,
    mut shutdown: watch::Receiver<bool>,
) {
    let polling = !every.is_zero();
    let mut tick = tokio::time::interval(if polling {
        every
    } else {
        Duration::from_secs(3600)
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let trigger = tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick(), if polling => {
                if !live.file_changed().await {
                    continue;
                }
                Trigger::File
            }
            got = hung_up(&mut hangup) => {
                if !got {
                    hangup = None;
                    continue;
                }
                Trigger::Signal
            }
        };
        // The outcome is logged and counted by `reload`.
        let _ = live.reload(trigger).await;
    }
}

/// Waits for SIGHUP; false if the signal stream ended.
#[cfg(unix)]
async fn hung_up(h: &mut Hangup) -> bool {
    match h {
        Some(s) => s.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn hung_up(_: &mut Hangup) -> bool {
    std::future::pending().await
}
