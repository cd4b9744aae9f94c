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
//! An idle-policy thread starves on a saturated core, so callers lower a
//! thread only while their work keeps up, and write a backlog at ordinary
//! priority. Pool threads are reused: the guard restores what it changed.
//! Elsewhere than Linux, and where the kernel refuses, nothing changes.
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
    /// The thread's policy and parameters before, or `None` if unchanged.
    pub(super) fn lower() -> Option<(libc::c_int, libc::sched_param)> {
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

    #[test]
    #[cfg(target_os = "linux")]
    fn lowers_the_thread_and_restores_it() {
        std::thread::spawn(|| {
            let before = policy();
            {
                let guard = Yielding::current_thread();
                assert!(
                    guard.is_lowered(),
                    "lowering to SCHED_IDLE needs no privilege"
                );
                assert_eq!(policy(), libc::SCHED_IDLE);
            }
            assert_eq!(policy(), before);
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_already_idle_is_left_idle() {
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
}
