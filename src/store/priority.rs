//! Background work that yields the core to requests.
//!
//! The outbox encodes and writes its batches on a blocking-pool thread
//! (`outbox::write_beside`). At ordinary priority that thread, when it woke,
//! held the request worker off a shared core for up to 5.3 ms (perf sched,
//! docs/performance.md). Marked `SCHED_IDLE` it runs only when nothing else
//! wants the core, and a request that wakes preempts it at once (the kernel
//! preempts an idle-policy task for any other on wake-up, ahead of slice
//! protection).
//!
//! An idle-policy thread starves whenever something else keeps the core
//! busy: the router's own load, so callers lower a thread only while their
//! work keeps up and write a backlog at ordinary priority; or other
//! processes, which callers cannot see, so the outbox lowers only when
//! `[store] writer_yields` says the router has its cores to itself. Pool
//! threads are reused: the guard restores what it changed.
//! Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` (or an `RLIMIT_NICE` of 20),
//! which a container does not have by default; a thread that could not be
//! restored would stay idle for good, so the process first checks, once,
//! that a scratch thread can go there and back, and otherwise never lowers
//! anything. Elsewhere than Linux nothing changes either.
#![allow(unsafe_code)]

/// Lowers the calling thread to `SCHED_IDLE` until dropped.
pub struct Yielding {
    #[cfg(target_os = "linux")]
    restore: Option<(libc::c_int, libc::sched_param)>,
}

impl Yielding {
    pub fn current_thread() -> Self {
        #[cfg(target_os = "linux")]
        {
            Self {
                restore: linux::lower(),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            Self {}
        }
    }

    /// Whether the thread runs lowered (false where the kernel refused).
    pub fn is_lowered(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.restore.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }
}

impl Drop for Yielding {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some((policy, param)) = self.restore.take() {
            linux::set(policy, &param);
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::OnceLock;

    /// Whether a thread lowered to `SCHED_IDLE` can be restored (checked
    /// once, on a scratch thread that is left lowered if it cannot).
    fn restorable() -> bool {
        static RESTORABLE: OnceLock<bool> = OnceLock::new();
        *RESTORABLE.get_or_init(|| {
            let probe = std::thread::Builder::new()
                .name("sb-sched-probe".into())
                .spawn(|| try_lower().is_some_and(|(policy, param)| set(policy, &param)))
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
    pub(super) fn lower() -> Option<(libc::c_int, libc::sched_param)> {
        if !restorable() {
            return None;
        }
        try_lower()
    }

    fn try_lower() -> Option<(libc::c_int, libc::sched_param)> {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid, writable
        // `sched_param` for the duration of the call.
        let policy = unsafe {
            let policy = libc::sched_getscheduler(0);
            if policy < 0 || libc::sched_getparam(0, &mut param) != 0 {
                return None;
            }
            policy
        };
        if policy == libc::SCHED_IDLE {
            return None; // already lowered by whoever runs us: leave it so
        }
        set(libc::SCHED_IDLE, &libc::sched_param { sched_priority: 0 }).then_some((policy, param))
    }

    pub(super) fn set(policy: libc::c_int, param: &libc::sched_param) -> bool {
        // SAFETY: pid 0 is the calling thread; `param` is a valid
        // `sched_param` that outlives the call.
        let ok = unsafe { libc::sched_setscheduler(0, policy, param) } == 0;
        if !ok {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
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
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
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
