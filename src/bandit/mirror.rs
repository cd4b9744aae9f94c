//! A read-side f32 copy of a symmetric matrix's upper triangle, for the
//! decision's quadratic form `x^T P x`.
//!
//! Owns: `Upper` (built at most once per published matrix: by the writer
//! as it publishes, `prime`, or else on first use), its quadratic form, and
//! `Probe`, the form's view of `x` that one decision shares across arms.
//! Must not import bandit state.
//! Why: the per-arm `x^T A^-1 x` is the decision's largest cost. Packed
//! f32 halves the memory it streams (d (d + 1) / 2 floats, no unused lower
//! triangle) and doubles the lanes per vector instruction; the binary
//! stays baseline x86-64 and takes AVX's wider lanes where the CPU has
//! them (`accumulate`, through `widest.rs`). The learner's own state
//! stays f64; only the
//! exploration width is computed from the copy: its relative error
//! (~1e-6) is far below anything the width is used for, and the logged
//! propensity is the one of the decision actually made.
//! Invariants: a copy is valid for exactly the matrix it was built from:
//! owners reset it (`Upper::default()`) whenever they change the matrix,
//! which `Design` does in every method that writes `p` (its only writers).
//! It is never serialised and never compared (two designs are equal when
//! their f64 state is).

use std::sync::OnceLock;

use super::widest::widest;

/// Largest dimension the copy is used for; above it the f64 form runs
/// (the x buffer lives on the stack).
pub(crate) const MAX_D: usize = 256; // a multiple of LANES

#[derive(Debug, Default)]
pub(crate) struct Upper(OnceLock<Box<[f32]>>);

/// A clone starts empty and is rebuilt on first use: the learner clones a
/// design (`Arc::make_mut`) only to change its matrix, which resets the copy
/// at once, so copying the readers' mirror (~20 KB at d = 100) was wasted.
impl Clone for Upper {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Upper {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Upper {
    /// Builds the copy of `p` now, unless it is built or `d > MAX_D`.
    /// Why: the writer calls this as it publishes, so no decision pays for
    /// building it. Built on first use instead, the first decision after
    /// each 5 ms publish packed every arm the publish changed (~5,000
    /// floats each at d = 100): one request in every dozen or so at one
    /// in flight, all of it on the request path.
    pub fn prime(&self, p: &[f64], d: usize) {
        if d <= MAX_D && p.len() == d * d {
            self.0.get_or_init(|| pack(p, d));
        }
    }

    #[cfg(test)]
    pub fn is_built(&self) -> bool {
        self.0.get().is_some()
    }

    /// `x^T P x` for the row-major symmetric `d x d` matrix `p`, through
    /// the packed f32 copy (built on first use), with `x` as `probe` holds
    /// it; `None` when `d > MAX_D`.
    pub fn quad_form(&self, p: &[f64], probe: &Probe) -> Option<f64> {
        let d = probe.d;
        if !probe.fits() || p.len() != d * d {
            return None;
        }
        let packed = self.0.get_or_init(|| pack(p, d));
        let mut y = [0.0f32; MAX_D];
        accumulate(packed, probe, &mut y);
        // x . y in f64 over the non-zero x_j only, four partial sums: one
        // running sum would chain every addition on the one before.
        let (xs, nonzero) = (&probe.xs, probe.nonzero());
        let mut acc = [0.0f64; 4];
        let mut quads = nonzero.chunks_exact(4);
        for quad in quads.by_ref() {
            for (a, &j) in acc.iter_mut().zip(quad) {
                let j = usize::from(j);
                *a += f64::from(xs[j]) * f64::from(y[j]);
            }
        }
        for (a, &j) in acc.iter_mut().zip(quads.remainder()) {
            let j = usize::from(j);
            *a += f64::from(xs[j]) * f64::from(y[j]);
        }
        Some((acc[0] + acc[1]) + (acc[2] + acc[3]))
    }
}

/// `x` as the quadratic form reads it: in f32, zero beyond `d`, with the
/// positions of its non-zero entries in ascending order. A decision builds
/// one and every arm's form reads it (each form used to convert and scan
/// `x` itself: a fifth of its instructions at d = 100, four arms).
pub(crate) struct Probe {
    xs: [f32; MAX_D],
    nonzero: [u16; MAX_D],
    count: usize,
    /// `x.len()`; above `MAX_D` the probe holds nothing and forms decline.
    d: usize,
}

impl Probe {
    pub fn new(x: &[f64]) -> Self {
        let mut probe = Self {
            xs: [0.0; MAX_D],
            nonzero: [0; MAX_D],
            count: 0,
            d: x.len(),
        };
        if !probe.fits() {
            return probe;
        }
        for ((i, o), &v) in probe.xs.iter_mut().enumerate().zip(x) {
            *o = v as f32;
            // A zero feature's row adds nothing (the matrix is finite):
            // hashed prompt features leave most of x at zero (57 of 100
            // in the load harness's prompt). An entry too small for f32
            // counts as zero, as it did when the form tested the f32 value.
            if *o != 0.0 {
                probe.nonzero[probe.count] = i as u16; // i < MAX_D < 2^16
                probe.count += 1;
            }
        }
        probe
    }

    fn fits(&self) -> bool {
        self.d <= MAX_D
    }

    fn nonzero(&self) -> &[u16] {
        &self.nonzero[..self.count]
    }
}

widest! {
/// `y_j = sum_{i <= j} U_ij x_i` over the rows of the non-zero `x_i`, with
/// `U` the packed rows (off-diagonals doubled), so `x^T P x = x . y`. Row by
/// row this is an axpy, which vectorises with no horizontal sum per row;
/// rows start on a multiple of `LANES` (zero-padded) so every row loads and
/// stores `y` at the same aligned offsets and store-to-load forwarding holds.
fn accumulate(packed: &[f32], probe: &Probe, y: &mut [f32; MAX_D]) {
    let dp = padded(probe.d);
    for &i in probe.nonzero() {
        let i = usize::from(i);
        let start = i / LANES * LANES;
        let at = row_start(i, dp);
        let (Some(row), Some(ys)) = (packed.get(at..at + dp - start), y.get_mut(start..dp)) else {
            return; // cannot happen: `pack` wrote every row for this d
        };
        let xi = probe.xs[i];
        for (yj, &u) in ys.iter_mut().zip(row) {
            *yj += xi * u;
        }
    }
}
}

/// Where row `i` starts in the packed copy: row `k` holds
/// `dp - LANES * (k / LANES)` floats (`pack`), so with `i = LANES q + r` the
/// rows before it hold `i dp - LANES (LANES q (q - 1) / 2 + q r)`.
fn row_start(i: usize, dp: usize) -> usize {
    let (q, r) = (i / LANES, i % LANES);
    i * dp - LANES * (LANES * q * q.saturating_sub(1) / 2 + q * r)
}

/// Floats per block: two SSE registers (one AVX register).
const LANES: usize = 8;

fn padded(d: usize) -> usize {
    d.div_ceil(LANES) * LANES
}

/// Rows `i = 0..d` of the upper triangle, each from column `i` rounded
/// down to a multiple of `LANES` to `padded(d)`, zeros outside `i..d`, with
/// the off-diagonal entries doubled (each stands for `P_ij` and `P_ji`).
fn pack(p: &[f64], d: usize) -> Box<[f32]> {
    let dp = padded(d);
    let mut out = Vec::with_capacity(d * (dp + LANES) / 2);
    // Plain runs per row (zeros, the diagonal, the doubled tail, padding),
    // so the conversion vectorises: the writer packs each changed arm at
    // every publish.
    for (i, row) in p.chunks_exact(d).enumerate() {
        let (Some(&diag), Some(tail)) = (row.get(i), row.get(i + 1..)) else {
            break;
        };
        out.extend(std::iter::repeat_n(0.0, i % LANES));
        out.push(diag as f32);
        out.extend(tail.iter().map(|&v| (2.0 * v) as f32));
        out.extend(std::iter::repeat_n(0.0, dp - d));
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bandit::linalg;

    /// 40 features, about half of them zero, as hashed prompt features
    /// mostly are.
    fn features() -> impl proptest::strategy::Strategy<Value = Vec<f64>> {
        proptest::collection::vec(
            proptest::prop_oneof![proptest::strategy::Just(0.0), -2.0f64..2.0],
            40,
        )
    }

    proptest::proptest! {
        #[test]
        fn the_f32_form_matches_the_f64_one(
            d in 1usize..40,
            seed in proptest::collection::vec(-1.0f64..1.0, 40 * 40),
            x in features(),
        ) {
            // A symmetric positive definite P = M M^T / d + I.
            let m = &seed[..d * d];
            let mut p = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    let s: f64 = (0..d).map(|k| m[i * d + k] * m[j * d + k]).sum();
                    p[i * d + j] = s / d as f64 + if i == j { 1.0 } else { 0.0 };
                }
            }
            let x = &x[..d];
            let exact = linalg::quad_form(&p, x);
            let fast = Upper::default().quad_form(&p, &Probe::new(x)).unwrap();
            proptest::prop_assert!((fast - exact).abs() <= 1e-5 * exact.abs().max(1.0));
            // The AVX build of the inner loop gives the baseline build's
            // bits (on a CPU without AVX there is nothing to compare).
            let (packed, probe) = (pack(&p, d), Probe::new(x));
            let (plain, wide) = crate::bandit::widest::both(|| {
                let mut y = [0.0f32; MAX_D];
                accumulate(&packed, &probe, &mut y);
                y
            });
            let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits(&plain), bits(&wide));
        }
    }

    #[test]
    fn rows_start_where_pack_put_them() {
        for d in 1..=40 {
            let dp = padded(d);
            let mut at = 0;
            for i in 0..d {
                assert_eq!(row_start(i, dp), at, "d = {d}, row {i}");
                at += dp - i / LANES * LANES;
            }
            assert_eq!(at, pack(&vec![0.0; d * d], d).len(), "d = {d}");
        }
    }

    #[test]
    fn the_probe_lists_the_non_zero_entries_in_order() {
        let probe = Probe::new(&[0.0, 1.5, 0.0, -2.0, 1e-300]);
        // 1e-300 is zero in f32, so its row is skipped like a zero's.
        assert_eq!(probe.nonzero(), &[1, 3]);
        assert!(!Probe::new(&vec![1.0; MAX_D + 1]).fits());
    }

    #[test]
    fn a_clone_is_built_from_the_matrix_it_is_next_used_with() {
        let x = Probe::new(&[1.0, 2.0]);
        let before = [1.0, 0.0, 0.0, 1.0];
        let after = [3.0, 0.5, 0.5, 2.0];
        let built = Upper::default();
        assert_eq!(built.quad_form(&before, &x), Some(5.0));
        // The learner clones a design only to change its matrix.
        let copy = built.clone();
        assert_eq!(copy.quad_form(&after, &x), Some(3.0 + 2.0 + 8.0));
        assert_eq!(
            built.quad_form(&after, &x),
            Some(5.0),
            "the original keeps its copy"
        );
    }

    #[test]
    fn above_the_stack_buffer_it_declines() {
        let d = MAX_D + 1;
        assert!(Upper::default()
            .quad_form(&vec![0.0; d * d], &Probe::new(&vec![0.0; d]))
            .is_none());
    }
}
