//! Background work that yields the core to requests.
//!
//! The outbox encodes its batches on a blocking-pool thread
//! (`outbox::write_beside`), and with SQLite the statements then run on
//! sqlx's worker threads, one per connection. At ordinary priority those
//! threads, when woken, held the request worker off a shared core: up to
//! 5.3 ms at a time (perf sched), and at one request in flight a long poll's
//! wall time was three to six times its CPU time (docs/performance.md).
//! Marked `SCHED_IDLE` they run only when nothing else wants the core, and
//! a request that wakes preempts them (the kernel preempts an idle-policy
//! task for any other on wake-up, ahead of slice protection): at once in
//! user space, and at the end of a system call on a kernel built without
//! full preemption (`CONFIG_PREEMPT_NONE`).
//!
//! An idle-policy thread starves whenever something else keeps the core
//! busy: the router's own load, so callers lower threads only while their
//! work keeps up, write a backlog at ordinary priority, and cap how long a
//! lowering lasts (`Lowering::end` from an ordinary-priority thread); or
//! other processes, which callers cannot see, so the outbox lowers only
//! when `[store] writer_yields` says the router has its cores to itself.
//! Threads are reused: the guard restores what it changed.
//! Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` (or an `RLIMIT_NICE` of 20),
//! which a container does not have by default; a thread that could not be
//! restored would stay idle for good, so the process first checks, once,
//! that a scratch thread can go there and back, and otherwise never lowers
//! anything. Elsewhere than Linux nothing changes either.
#![allow(unsafe_code)]

use std::sync::Mutex;

/// A thread of this process, as the kernel numbers it (its tid).
pub type ThreadId = i32;

/// The calling thread's id (0 where threads cannot be named this way).
pub fn current_thread_id() -> ThreadId {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments and cannot fail.
        unsafe { libc::gettid() }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The ids of this process's threads whose name starts with `prefix`
/// (names are cut to 15 bytes by the kernel). Empty elsewhere than Linux.
pub fn threads_named(prefix: &str) -> Vec<ThreadId> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            comm.starts_with(prefix)
                .then(|| task.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// A thread's scheduling policy (-1 if it is gone), for tests.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn policy_of(id: ThreadId) -> libc::c_int {
    // SAFETY: the kernel checks the id; no memory is passed.
    unsafe { libc::sched_getscheduler(id) }
}

/// Lowers threads to `SCHED_IDLE` until dropped.
pub struct Yielding {
    #[cfg(target_os = "linux")]
    restore: Vec<(ThreadId, libc::c_int, libc::sched_param)>,
}

impl Yielding {
    pub fn current_thread() -> Self {
        Self::threads([current_thread_id()])
    }

    /// Lowers each of `ids` that is not idle already (a thread that is was
    /// lowered by someone else, who restores it) and that the kernel lets
    /// us lower; a thread that has exited since is skipped.
    pub fn threads(ids: impl IntoIterator<Item = ThreadId>) -> Self {
        #[cfg(target_os = "linux")]
        {
            Self {
                restore: ids.into_iter().filter_map(linux::lower).collect(),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = ids;
            Self {}
        }
    }

    /// How many threads run lowered (none where the kernel refused).
    pub fn lowered(&self) -> usize {
        #[cfg(target_os = "linux")]
        {
            self.restore.len()
        }
        #[cfg(not(target_os = "linux"))]
        {
            0
        }
    }

    /// Whether any thread runs lowered.
    pub fn is_lowered(&self) -> bool {
        self.lowered() > 0
    }
}

impl Drop for Yielding {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        for (id, policy, param) in self.restore.drain(..) {
            linux::set(id, policy, &param);
        }
    }
}

/// A lowering that another thread may end early: the worker lowers its
/// threads with `lower`, and a watchdog at ordinary priority calls `end`
/// when the work has run too long (starved, most likely). After `end`,
/// `lower` changes nothing, so a worker that starts late stays ordinary.
#[derive(Default)]
pub struct Lowering(Mutex<LoweringState>);

#[derive(Default)]
enum LoweringState {
    #[default]
    NotYet,
    Lowered(Yielding),
    Ended,
}

impl Lowering {
    /// Lowers `ids` until `end`, unless the lowering has ended already.
    pub fn lower(&self, ids: impl IntoIterator<Item = ThreadId>) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, LoweringState::NotYet) {
            *state = LoweringState::Lowered(Yielding::threads(ids));
        }
    }

    /// Restores what `lower` changed, and makes later `lower`s no-ops.
    /// Returns whether anything was lowered until now.
    pub fn end(&self) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let was = std::mem::replace(&mut *state, LoweringState::Ended);
        matches!(was, LoweringState::Lowered(ref y) if y.is_lowered())
    }
}

/// Runs `work` on a blocking-pool thread and waits for it. With `yields`,
/// that thread and those `also` names (asked from the thread once it runs)
/// drop to `SCHED_IDLE` for at most `cap`: past it this task, at ordinary
/// priority, restores them, since a starved thread cannot restore itself.
/// Returns the work's result and whether the cap ended a lowering.
pub async fn run_beside<T, A, F>(
    yields: bool,
    cap: std::time::Duration,
    also: A,
    work: F,
) -> (Result<T, tokio::task::JoinError>, bool)
where
    T: Send + 'static,
    A: FnOnce() -> Vec<ThreadId> + Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let lowering = std::sync::Arc::new(Lowering::default());
    let on_thread = lowering.clone();
    let mut job = tokio::task::spawn_blocking(move || {
        if yields {
            let mut threads = also();
            threads.push(current_thread_id());
            on_thread.lower(threads);
        }
        let done = work();
        on_thread.end();
        done
    });
    if !yields {
        return (job.await, false);
    }
    match tokio::time::timeout(cap, &mut job).await {
        Ok(done) => (done, false),
        Err(_) => {
            let capped = lowering.end();
            (job.await, capped)
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::OnceLock;

    use super::ThreadId;

    /// Whether a thread lowered to `SCHED_IDLE` can be restored (checked
    /// once, on a scratch thread that is left lowered if it cannot).
    fn restorable() -> bool {
        static RESTORABLE: OnceLock<bool> = OnceLock::new();
        *RESTORABLE.get_or_init(|| {
            let probe = std::thread::Builder::new()
                .name("sb-sched-probe".into())
                .spawn(|| try_lower(0).is_some_and(|(_, policy, param)| set(0, policy, &param)))
                .and_then(|t| t.join().map_err(|_| std::io::Error::other("panicked")));
            let ok = probe.unwrap_or(false);
            if !ok {
                tracing::info!(
                    "Background writes run at ordinary priority: leaving SCHED_IDLE needs \
                     CAP_SYS_NICE or an RLIMIT_NICE of 20 (docs/performance.md)."
                );
            }
            ok
        })
    }

    /// The thread's policy and parameters before, or `None` if unchanged.
    pub(super) fn lower(id: ThreadId) -> Option<(ThreadId, libc::c_int, libc::sched_param)> {
        if !restorable() {
            return None;
        }
        try_lower(id)
    }

    fn try_lower(id: ThreadId) -> Option<(ThreadId, libc::c_int, libc::sched_param)> {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `id` is 0 (the calling thread) or a thread id, which the
        // kernel checks; `param` is a valid, writable `sched_param` for the
        // duration of the call.
        let policy = unsafe {
            let policy = libc::sched_getscheduler(id);
            if policy < 0 || libc::sched_getparam(id, &mut param) != 0 {
                return None;
            }
            policy
        };
        if policy == libc::SCHED_IDLE {
            return None; // already lowered by someone else: leave it so
        }
        set(
            id,
            libc::SCHED_IDLE,
            &libc::sched_param { sched_priority: 0 },
        )
        .then_some((id, policy, param))
    }

    pub(super) fn set(id: ThreadId, policy: libc::c_int, param: &libc::sched_param) -> bool {
        // SAFETY: `id` is 0 (the calling thread) or a thread id, which the
        // kernel checks; `param` is a valid `sched_param` that outlives the
        // call.
        let ok = unsafe { libc::sched_setscheduler(id, policy, param) } == 0;
        if !ok {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                thread = id,
                policy,
                "Changing a background thread's scheduling policy was refused."
            );
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn policy() -> libc::c_int {
        policy_of(0)
    }

    /// A named thread that sends its id and then waits until `stop` is
    /// sent (or dropped), like sqlx's worker between statements.
    fn parked(
        name: &str,
    ) -> (
        ThreadId,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                id_tx.send(current_thread_id()).expect("test waits");
                let _ = stop_rx.recv();
            })
            .expect("spawn");
        (id_rx.recv().expect("thread id"), stop_tx, handle)
    }

    /// Whether this process may leave SCHED_IDLE again (CAP_SYS_NICE, bit
    /// 23 of the effective set, or an RLIMIT_NICE of 20): then threads are
    /// lowered, otherwise never.
    #[cfg(target_os = "linux")]
    fn may_restore() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .expect("CapEff");
        let limits = std::fs::read_to_string("/proc/self/limits").expect("proc limits");
        let nice = limits
            .lines()
            .find(|l| l.starts_with("Max nice priority"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        cap_eff & (1 << 23) != 0 || nice >= 20
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn lowers_the_thread_only_where_it_can_restore_it() {
        if std::env::var_os("SB_EXPECT_NO_SYS_NICE").is_some() {
            assert!(!may_restore(), "setpriv should have dropped CAP_SYS_NICE");
            println!("running without CAP_SYS_NICE");
        }
        std::thread::spawn(|| {
            let before = policy();
            {
                let guard = Yielding::current_thread();
                assert_eq!(guard.is_lowered(), may_restore());
                let expected = if may_restore() {
                    libc::SCHED_IDLE
                } else {
                    before
                };
                assert_eq!(policy(), expected);
            }
            assert_eq!(policy(), before);
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_already_idle_is_left_idle() {
        if !may_restore() {
            return; // nothing is ever lowered here (the test above)
        }
        std::thread::spawn(|| {
            let outer = Yielding::current_thread();
            assert!(outer.is_lowered());
            {
                let inner = Yielding::current_thread();
                assert!(!inner.is_lowered());
            }
            assert_eq!(
                policy(),
                libc::SCHED_IDLE,
                "the inner guard must not restore"
            );
            drop(outer);
            assert_ne!(policy(), libc::SCHED_IDLE);
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn finds_threads_by_name_and_lowers_them_from_outside() {
        let (id, stop, handle) = parked("sb-test-named-1");
        assert_eq!(threads_named("sb-test-named-"), vec![id]);
        assert!(threads_named("sb-test-nobody-").is_empty());
        let before = policy_of(id);
        {
            let guard = Yielding::threads(threads_named("sb-test-named-"));
            assert_eq!(guard.lowered(), usize::from(may_restore()));
            let expected = if may_restore() {
                libc::SCHED_IDLE
            } else {
                before
            };
            assert_eq!(policy_of(id), expected);
            assert_eq!(policy(), before, "the caller is not lowered");
        }
        assert_eq!(policy_of(id), before, "restored on drop");
        drop(stop);
        handle.join().expect("parked thread");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_ended_lowering_restores_and_then_lowers_nothing() {
        let (id, stop, handle) = parked("sb-test-ending");
        let before = policy_of(id);

        let lowering = Lowering::default();
        lowering.lower([id]);
        let expected = if may_restore() {
            libc::SCHED_IDLE
        } else {
            before
        };
        assert_eq!(policy_of(id), expected);
        assert_eq!(lowering.end(), may_restore(), "reports what it undid");
        assert_eq!(policy_of(id), before, "the watchdog restored it");

        // A worker that starts after the deadline stays at ordinary priority.
        lowering.lower([id]);
        assert_eq!(policy_of(id), before);
        assert!(!lowering.end());

        drop(stop);
        handle.join().expect("parked thread");
    }

    /// `run_beside` runs the work lowered (where it may) with the threads
    /// it names, and leaves every one as it found it; past the cap the
    /// caller restores them while the work still runs, and says so.
    #[tokio::test]
    #[cfg(target_os = "linux")]
    async fn work_beside_runs_lowered_and_is_restored() {
        let (id, stop, handle) = parked("sb-test-beside");
        let before = policy_of(id);
        let lowered = if may_restore() {
            libc::SCHED_IDLE
        } else {
            before
        };
        let (seen, capped) = run_beside(
            true,
            std::time::Duration::from_secs(60),
            move || vec![id],
            move || (policy(), policy_of(id), current_thread_id()),
        )
        .await;
        let (own, other, worker) = seen.expect("the work ran");
        assert_eq!((own, other), (lowered, lowered));
        assert!(!capped);
        assert_eq!(policy_of(id), before, "the named thread is restored");
        assert_ne!(policy_of(worker), libc::SCHED_IDLE, "so is the pool's");

        // Past the cap: restored from here while the work still runs. The
        // work waits to be released, which happens once the cap has put the
        // named thread back (at once where nothing is lowered).
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let beside = run_beside(
            true,
            std::time::Duration::from_millis(200),
            move || vec![id],
            move || {
                let _ = wait.recv_timeout(std::time::Duration::from_secs(30));
                policy_of(id)
            },
        );
        let releaser = async {
            if may_restore() {
                for want_idle in [true, false] {
                    for _ in 0..3000 {
                        if (policy_of(id) == libc::SCHED_IDLE) == want_idle {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
            let _ = release.send(());
        };
        let ((seen, capped), ()) = tokio::join!(beside, releaser);
        assert_eq!(
            seen.expect("the work ran"),
            before,
            "restored before it ended"
        );
        assert_eq!(capped, may_restore());

        // Not yielding: nothing changes.
        let (seen, capped) =
            run_beside(false, std::time::Duration::ZERO, move || vec![id], policy).await;
        assert_eq!((seen.expect("the work ran"), capped), (before, false));
        drop(stop);
        handle.join().expect("parked thread");
    }

    /// Without CAP_SYS_NICE (a container's default) nothing is lowered:
    /// the test above again, in this test binary run without the capability.
    #[test]
    #[cfg(target_os = "linux")]
    fn without_cap_sys_nice_nothing_is_lowered() {
        if !std::path::Path::new("/usr/bin/setpriv").exists() || !may_restore() {
            return; // no way to drop it here, or it is already missing
        }
        let me = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new("/usr/bin/setpriv")
            .args(["--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"])
            .arg(me)
            .args([
                "--exact",
                "store::priority::tests::lowers_the_thread_only_where_it_can_restore_it",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("SB_EXPECT_NO_SYS_NICE", "1")
            .output()
            .expect("setpriv runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
        assert!(text.contains("without CAP_SYS_NICE"), "{text}");
    }
}
