//! A read-side f32 copy of a symmetric matrix's upper triangle, for the
//! decision's quadratic form `x^T P x`.
//!
//! Owns: `Upper` (built at most once per published matrix: by the writer
//! as it publishes, `prime`, or else on first use) and its quadratic form.
//! Must not import bandit state.
//! Why: the per-arm `x^T A^-1 x` is the decision's largest cost. Packed
//! f32 halves the memory it streams (d (d + 1) / 2 floats, no unused lower
//! triangle) and doubles the lanes per SSE instruction, with no `unsafe`
//! and no CPU-specific build. The learner's own state stays f64; only the
//! exploration width is computed from the copy: its relative error
//! (~1e-6) is far below anything the width is used for, and the logged
//! propensity is the one of the decision actually made.
//! Invariants: a copy is valid for exactly the matrix it was built from:
//! owners reset it (`Upper::default()`) whenever they change the matrix,
//! which `Design` does in every method that writes `p` (its only writers).
//! It is never serialised and never compared (two designs are equal when
//! their f64 state is).

use std::sync::OnceLock;

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
    /// the packed f32 copy (built on first use); `None` when `d > MAX_D`.
    pub fn quad_form(&self, p: &[f64], x: &[f64]) -> Option<f64> {
        let d = x.len();
        if d > MAX_D || p.len() != d * d {
            return None;
        }
        let packed = self.0.get_or_init(|| pack(p, d));
        let mut xs = [0.0f32; MAX_D];
        for (o, &v) in xs.iter_mut().zip(x) {
            *o = v as f32;
        }
        // y_j = sum_{i <= j} U_ij x_i with U the packed rows (off-diagonals
        // doubled), so x^T P x = x . y. Row by row this is an axpy, which
        // vectorises with no horizontal sum per row; rows start on a
        // multiple of LANES (zero-padded) so every row loads and stores `y`
        // at the same aligned offsets and store-to-load forwarding holds.
        let dp = padded(d);
        let mut y = [0.0f32; MAX_D];
        let mut rest = &packed[..];
        for (i, &xi) in xs[..d].iter().enumerate() {
            let start = i / LANES * LANES;
            let (row, tail) = rest.split_at(dp - start);
            rest = tail;
            // A zero feature's row adds nothing (the matrix is finite):
            // hashed prompt features leave most of x at zero (57 of 100 in
            // the load harness's prompt), so skipping their rows is most of
            // the work saved, and the sum keeps its order for the others.
            if xi == 0.0 {
                continue;
            }
            for (yj, &u) in y[start..dp].iter_mut().zip(row) {
                *yj += xi * u;
            }
        }
        // x . y in f64 with four partial sums over the zero-padded rows:
        // one running sum would chain d dependent additions.
        let mut acc = [0.0f64; 4];
        for (a, b) in xs[..dp].chunks_exact(4).zip(y[..dp].chunks_exact(4)) {
            for k in 0..4 {
                acc[k] += f64::from(a[k]) * f64::from(b[k]);
            }
        }
        Some((acc[0] + acc[1]) + (acc[2] + acc[3]))
    }
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

    proptest::proptest! {
        #[test]
        fn the_f32_form_matches_the_f64_one(
            d in 1usize..40,
            seed in proptest::collection::vec(-1.0f64..1.0, 40 * 40),
            // Half the features zero, as hashed prompt features mostly are.
            x in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(0.0), -2.0f64..2.0],
                40,
            ),
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
            let fast = Upper::default().quad_form(&p, x).unwrap();
            proptest::prop_assert!((fast - exact).abs() <= 1e-5 * exact.abs().max(1.0));
        }
    }

    #[test]
    fn a_clone_is_built_from_the_matrix_it_is_next_used_with() {
        let x = [1.0, 2.0];
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
            .quad_form(&vec![0.0; d * d], &vec![0.0; d])
            .is_none());
    }
}
