//! A function compiled twice, for baseline x86-64 and for AVX, that runs
//! the AVX copy when the CPU has it.
//!
//! Owns: the `widest!` macro and, for tests, the switch that makes this
//! thread take the baseline copies (`both`). Must not import bandit types.
//! Why: the binary targets baseline x86-64 (SSE2: two `f64` or four `f32`
//! a step) so it runs anywhere, while the learner's and the decision's
//! dense loops are twice as fast four (eight) lanes wide. Rust never fuses a
//! multiply and an add on its own, and a loop that is not written to
//! reorder a sum is not reordered, so both copies give the same bits.
//! `#[inline]` helpers the body calls (`linalg::dot`) are inlined into
//! each copy and widen with it. std caches the CPU detection: a call costs
//! one load and a test.
//! Invariant: the only `unsafe` is the call into the AVX copy, right after
//! the detection said yes.

#[cfg(test)]
thread_local! {
    /// Set by `both` to run the baseline copies on this thread.
    static BASELINE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
pub(crate) fn baseline_only() -> bool {
    BASELINE_ONLY.with(std::cell::Cell::get)
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn baseline_only() -> bool {
    false
}

/// `f` run by the baseline copies and by the widest ones, on this thread.
#[cfg(test)]
pub(crate) fn both<T>(f: impl Fn() -> T) -> (T, T) {
    BASELINE_ONLY.with(|b| b.set(true));
    let baseline = f();
    BASELINE_ONLY.with(|b| b.set(false));
    (baseline, f())
}

/// `widest! { /// docs
/// fn name(args) -> ret { body } }` defines `name` as described above.
macro_rules! widest {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx")]
            fn avx($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx")
                && !$crate::bandit::widest::baseline_only()
            {
                // SAFETY: `avx` needs only AVX, which the CPU has (checked
                // just above).
                #[allow(unsafe_code)]
                return unsafe { avx($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use widest;
