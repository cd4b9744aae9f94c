//! Small dense linear algebra on row-major `d x d` matrices in `[f64]`.
//!
//! Owns: dot products, mat-vec, quadratic forms, the discounted
//! Sherman–Morrison rank-one inverse update and an SPD inverse by Cholesky.
//! Must not import anything from the bandit: pure functions on slices.
//! Invariants: callers pass matrices of exactly `d * d` entries and vectors
//! of `d` (checked once at snapshot validation, not per call); loops are
//! written over `chunks_exact`/`zip` so they auto-vectorise and never panic.
//! Costs: dot O(d); matvec, quad_form, sherman_morrison O(d^2);
//! spd_inverse O(d^3) (used only for periodic refreshes).
//! Vector width: the O(d^2) and O(d^3) functions are each compiled a
//! second time for AVX (four f64 a step instead of SSE2's two) and take
//! that copy when the CPU has it (`widest.rs`), with the same bits: a
//! learner's state does not depend on the CPU it ran on.

use super::widest::widest;

#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four independent accumulators break the add dependency chain.
    let mut acc = [0.0f64; 4];
    let (ca, ra) = (a.chunks_exact(4), a.len() / 4 * 4);
    for (x, y) in ca.zip(b.chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = a[ra..]
        .iter()
        .zip(b.get(ra..).unwrap_or(&[]))
        .map(|(x, y)| x * y)
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

widest! {
/// `out = M x`.
pub fn matvec(m: &[f64], x: &[f64], out: &mut [f64]) {
    let d = x.len();
    for (o, row) in out.iter_mut().zip(m.chunks_exact(d)) {
        *o = dot(row, x);
    }
}
}

widest! {
/// `x^T M x` for a symmetric `M`, reading only the upper triangle:
/// `sum_i x_i (M_ii x_i + 2 sum_{j>i} M_ij x_j)`, half the work of a full
/// mat-vec (this is the per-arm cost of every decision).
pub fn quad_form(m: &[f64], x: &[f64]) -> f64 {
    let d = x.len();
    let mut acc = 0.0;
    for (i, (row, &xi)) in m.chunks_exact(d).zip(x).enumerate() {
        let (Some(diag), Some(tail), Some(xt)) = (row.get(i), row.get(i + 1..), x.get(i + 1..))
        else {
            break;
        };
        acc += xi * (diag * xi + 2.0 * dot(tail, xt));
    }
    acc
}
}

/// Exact symmetry (Sherman–Morrison and `spd_inverse` preserve it bit for
/// bit, since `a * b == b * a` in IEEE arithmetic); `quad_form` relies on it.
pub fn is_symmetric(m: &[f64], d: usize) -> bool {
    (0..d).all(|i| (i + 1..d).all(|j| m.get(i * d + j) == m.get(j * d + i)))
}

widest! {
/// `out = M x` for a symmetric `M`, as the sum of `x_j` times row `j`
/// over the non-zero `x_j` only: hashed prompt features leave most of `x`
/// at zero, and each row's update is a contiguous, vectorised axpy.
/// Each `out_i` adds its terms in ascending `j`, one running sum.
pub fn sym_matvec_sparse(m: &[f64], x: &[f64], out: &mut [f64]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for (row, &xj) in m.chunks_exact(x.len()).zip(x) {
        if xj == 0.0 {
            continue;
        }
        for (o, &mij) in out.iter_mut().zip(row) {
            *o += xj * mij;
        }
    }
}
}

widest! {
/// Discounted Sherman–Morrison (Sherman & Morrison 1950): given `p = A^-1`,
/// overwrites it with `(gamma A + x x^T)^-1
///   = (p - (p x)(p x)^T / (gamma + x^T p x)) / gamma`
/// and writes the gain `(gamma A + x x^T)^-1 x` into `gain`. `p` must be
/// symmetric (it is read by rows as columns). `px` is scratch (left holding
/// `p x / sqrt(gamma + v)`).
/// O(d^2). Returns `x^T p x` (before the update).
pub fn sherman_morrison(
    p: &mut [f64],
    x: &[f64],
    gamma: f64,
    px: &mut [f64],
    gain: &mut [f64],
) -> f64 {
    let d = x.len();
    let (v, inv_g) = sherman_morrison_gain(p, x, gamma, px, gain);
    for (row, &ui) in p.chunks_exact_mut(d).zip(px.iter()) {
        for (m, &uj) in row.iter_mut().zip(px.iter()) {
            *m = sherman_morrison_entry(*m, ui, uj, inv_g);
        }
    }
    v
}
}

widest! {
/// `sherman_morrison`'s matrix update as a new matrix, `p` left as it
/// is: for a matrix a reader still holds, one pass that reads the old
/// entries and writes the new ones, instead of copying it and then updating
/// the copy. `u` and `inv_g` come from `sherman_morrison_gain` on `p`. The
/// same to the bit as the in-place update.
pub fn sherman_morrison_into(p: &[f64], u: &[f64], inv_g: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(p.len());
    for (row, &ui) in p.chunks_exact(u.len()).zip(u) {
        out.extend(
            row.iter()
                .zip(u)
                .map(|(&m, &uj)| sherman_morrison_entry(m, ui, uj, inv_g)),
        );
    }
    out
}
}

widest! {
/// The gain and the scaled `u = p x sqrt(c)` (into `px`); returns `x^T p x`
/// and `1 / gamma`.
pub fn sherman_morrison_gain(
    p: &[f64],
    x: &[f64],
    gamma: f64,
    px: &mut [f64],
    gain: &mut [f64],
) -> (f64, f64) {
    sym_matvec_sparse(p, x, px);
    let v = dot(x, px);
    let c = 1.0 / (gamma + v);
    // gain = p_new x = (p x) / (gamma + v): follows from the formula above.
    for (g, &pi) in gain.iter_mut().zip(px.iter()) {
        *g = pi * c;
    }
    let root = c.sqrt();
    px.iter_mut().for_each(|u| *u *= root);
    (v, 1.0 / gamma)
}
}

/// One entry of the update: subtracting `u u^T` keeps `p` bit-for-bit
/// symmetric, since `u_i * u_j == u_j * u_i` (quad_form reads one triangle).
#[inline(always)]
fn sherman_morrison_entry(m: f64, ui: f64, uj: f64, inv_g: f64) -> f64 {
    (m - ui * uj) * inv_g
}

widest! {
/// `a += w x x^T` for a symmetric `a`, over the rows of the non-zero `x_i`
/// only (each a contiguous, vectorised axpy; a zero `x_j` adds zero).
/// Entries `(i, j)` and `(j, i)` get the same `(x_i x_j) w`, so `a` stays
/// exactly symmetric. O(nnz d).
pub fn add_rank_one_rows(a: &mut [f64], x: &[f64], w: f64) {
    for (row, &xi) in a.chunks_exact_mut(x.len()).zip(x) {
        if xi == 0.0 {
            continue;
        }
        for (m, &xj) in row.iter_mut().zip(x) {
            *m += (xi * xj) * w;
        }
    }
}
}

widest! {
/// `add_rank_one_rows` as a new matrix, `a` left as it is: one pass that
/// copies each untouched row and writes each updated one (a whole-matrix
/// copy first would be a second pass). The same to the bit as the
/// in-place update.
pub fn add_rank_one_rows_into(a: &[f64], x: &[f64], w: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len());
    for (row, &xi) in a.chunks_exact(x.len()).zip(x) {
        if xi == 0.0 {
            out.extend_from_slice(row);
        } else {
            out.extend(row.iter().zip(x).map(|(&m, &xj)| m + (xi * xj) * w));
        }
    }
    out
}
}

widest! {
/// Inverse of a symmetric positive-definite `a` via Cholesky `a = L L^T`,
/// `a^-1 = L^-T L^-1`. Returns `None` if `a` is not numerically SPD.
/// O(d^3); allocates two d x d scratch buffers (refresh path only).
pub fn spd_inverse(a: &[f64], d: usize) -> Option<Vec<f64>> {
    if a.len() != d * d {
        return None;
    }
    let mut l = vec![0.0; d * d];
    for j in 0..d {
        let s = a[j * d + j] - dot(&l[j * d..j * d + j], &l[j * d..j * d + j]);
        if !(s > 0.0 && s.is_finite()) {
            return None;
        }
        let ljj = s.sqrt();
        l[j * d + j] = ljj;
        for i in j + 1..d {
            let v = (a[i * d + j] - dot(&l[i * d..i * d + j], &l[j * d..j * d + j])) / ljj;
            l[i * d + j] = v;
        }
    }
    // m = L^-1 (lower triangular): m[i][j] = -(sum over k in j..i of
    // l[i][k] m[k][j]) / l[i][i]. Accumulated a whole row of m at a time
    // (contiguous, so it vectorises) instead of down m's columns; each sum
    // still adds its terms in ascending k, so every entry is the same to
    // the bit as the column-wise loop (`tests::textbook_inverse`). At
    // d = 100: ~0.27 ms instead of ~0.8 ms, on the learner's task, which
    // shares the runtime's worker with requests.
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        let (done, rest) = m.split_at_mut(i * d);
        let row = &mut rest[..d];
        for (k, &lik) in l[i * d..i * d + i].iter().enumerate() {
            let mk = &done[k * d..k * d + k + 1];
            for (acc, &v) in row.iter_mut().zip(mk) {
                *acc += lik * v;
            }
        }
        let lii = l[i * d + i];
        for v in &mut row[..i] {
            *v = -*v / lii;
        }
        row[i] = 1.0 / lii;
    }
    // a^-1 = m^T m = sum_k m[k]^T m[k] (rank-one over rows of m), the lower
    // triangle only, then mirrored: products commute exactly and each entry
    // sums over the same ascending k, so the upper half is bit-identical to
    // computing it.
    let mut out = vec![0.0; d * d];
    for k in 0..d {
        let row = &m[k * d..k * d + k + 1];
        for (i, &ri) in row.iter().enumerate() {
            let dst = &mut out[i * d..i * d + i + 1];
            for (o, &rj) in dst.iter_mut().zip(row) {
                *o += ri * rj;
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            out[j * d + i] = out[i * d + j];
        }
    }
    Some(out)
}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bandit::widest::both;
    use proptest::prelude::*;

    fn identity(d: usize, s: f64) -> Vec<f64> {
        let mut m = vec![0.0; d * d];
        (0..d).for_each(|i| m[i * d + i] = s);
        m
    }

    /// `a = gamma a + x x^T` on every entry (how tests build Gram matrices).
    fn discounted_rank_one(a: &mut [f64], x: &[f64], gamma: f64) {
        let d = x.len();
        for (row, &xi) in a.chunks_exact_mut(d).zip(x) {
            for (m, &xj) in row.iter_mut().zip(x) {
                *m = gamma * *m + xi * xj;
            }
        }
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn spd_inverse_of_known_matrix() {
        let a = [4.0, 2.0, 2.0, 3.0];
        let inv = spd_inverse(&a, 2).unwrap();
        let want = [3.0 / 8.0, -2.0 / 8.0, -2.0 / 8.0, 4.0 / 8.0];
        assert!(max_abs_diff(&inv, &want) < 1e-12);
        assert!(spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        /// The AVX copies give the same bits as the baseline ones, so a
        /// learner's state does not depend on the CPU (on a CPU without
        /// AVX both runs take the baseline and this holds trivially).
        #[test]
        fn widest_copies_give_the_baseline_bits(
            d in 1usize..40,
            gamma in 0.9f64..=1.0,
            seeds in proptest::collection::vec(-2.0f64..2.0, 40 * 41),
            zeros in proptest::collection::vec(any::<bool>(), 40),
        ) {
            // An SPD matrix: r r^T + I.
            let r = &seeds[..d * d];
            let mut a = identity(d, 1.0);
            for i in 0..d {
                for j in 0..d {
                    a[i * d + j] += dot(&r[i * d..i * d + d], &r[j * d..j * d + d]);
                }
            }
            let x: Vec<f64> = seeds[d * d..d * d + d]
                .iter()
                .zip(&zeros)
                .map(|(&v, &z)| if z { 0.0 } else { v })
                .collect();
            let p = spd_inverse(&a, d).unwrap();
            let (inv0, inv1) = both(|| spd_inverse(&a, d).unwrap());
            prop_assert_eq!(bits(&inv0), bits(&inv1));
            let (q0, q1) = both(|| quad_form(&p, &x));
            prop_assert_eq!(q0.to_bits(), q1.to_bits());
            let (m0, m1) = both(|| {
                let mut out = vec![0.0; d];
                matvec(&p, &x, &mut out);
                out
            });
            prop_assert_eq!(bits(&m0), bits(&m1));
            let (s0, s1) = both(|| {
                let (mut q, mut px, mut gain) = (p.clone(), vec![0.0; d], vec![0.0; d]);
                let v = sherman_morrison(&mut q, &x, gamma, &mut px, &mut gain);
                (v.to_bits(), bits(&q), bits(&gain))
            });
            prop_assert_eq!(s0, s1);
            let (c0, c1) = both(|| {
                let (mut px, mut gain) = (vec![0.0; d], vec![0.0; d]);
                let (_, inv_g) = sherman_morrison_gain(&p, &x, gamma, &mut px, &mut gain);
                bits(&sherman_morrison_into(&p, &px, inv_g))
            });
            prop_assert_eq!(c0, c1);
            let (r0, r1) = both(|| {
                let mut q = a.clone();
                add_rank_one_rows(&mut q, &x, 1.0 / gamma);
                (bits(&q), bits(&add_rank_one_rows_into(&a, &x, 1.0 / gamma)))
            });
            prop_assert_eq!(r0, r1);
        }

        /// A sequence of discounted rank-one updates tracked by
        /// Sherman–Morrison equals the direct (Cholesky) inverse.
        #[test]
        fn sherman_morrison_matches_direct_inverse(
            d in 1usize..12,
            lambda in 0.1f64..5.0,
            gamma in 0.9f64..=1.0,
            xs in proptest::collection::vec(proptest::collection::vec(-2.0f64..2.0, 12), 1..40),
        ) {
            let mut a = identity(d, lambda);
            let mut p = identity(d, 1.0 / lambda);
            let (mut px, mut gain) = (vec![0.0; d], vec![0.0; d]);
            for x in &xs {
                let x = &x[..d];
                sherman_morrison(&mut p, x, gamma, &mut px, &mut gain);
                discounted_rank_one(&mut a, x, gamma);
                let mut direct_gain = vec![0.0; d];
                matvec(&p, x, &mut direct_gain);
                prop_assert!(max_abs_diff(&gain, &direct_gain) < 1e-8);
            }
            prop_assert!(is_symmetric(&p, d));
            let direct = spd_inverse(&a, d).unwrap();
            prop_assert!(is_symmetric(&direct, d));
            let scale = direct.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            prop_assert!(max_abs_diff(&p, &direct) / scale < 1e-7,
                "diff {}", max_abs_diff(&p, &direct));
        }

        /// The row-wise inverse is the column-wise textbook one to the bit
        /// (the learner's state must not change with how it is computed).
        #[test]
        fn spd_inverse_is_the_textbook_loops_to_the_bit(
            d in 1usize..24,
            lambda in 0.1f64..5.0,
            xs in proptest::collection::vec(proptest::collection::vec(-2.0f64..2.0, 24), 1..60),
        ) {
            let mut a = identity(d, lambda);
            for x in &xs {
                discounted_rank_one(&mut a, &x[..d], 0.99);
            }
            let fast = spd_inverse(&a, d).unwrap();
            let slow = textbook_inverse(&a, d);
            prop_assert!(fast.iter().zip(&slow).all(|(f, s)| f.to_bits() == s.to_bits()));
        }

        #[test]
        fn quad_form_and_dot_agree(x in proptest::collection::vec(-3.0f64..3.0, 1..20)) {
            let d = x.len();
            let m = identity(d, 2.0);
            prop_assert!((quad_form(&m, &x) - 2.0 * dot(&x, &x)).abs() < 1e-9);
            // Against the full double sum on a symmetric non-diagonal matrix.
            let mut s = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    s[i * d + j] = 1.0 / (1.0 + (i + j) as f64);
                }
            }
            let full: f64 = (0..d).map(|i| (0..d).map(|j| x[i] * s[i * d + j] * x[j]).sum::<f64>()).sum();
            prop_assert!((quad_form(&s, &x) - full).abs() < 1e-9 * (1.0 + full.abs()));
            prop_assert!(is_symmetric(&s, d));
        }

        /// A reader's matrix is updated into a new one (`*_into`) exactly
        /// as the writer's own copy is updated in place.
        #[test]
        fn the_one_pass_updates_are_the_in_place_ones_to_the_bit(
            d in 1usize..24,
            gamma in 0.9f64..=1.0,
            xs in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![Just(0.0), -2.0f64..2.0],
                    24,
                ),
                1..12,
            ),
        ) {
            let (mut p, mut a) = (identity(d, 0.5), identity(d, 2.0));
            let (mut px, mut gain) = (vec![0.0; d], vec![0.0; d]);
            let (mut px2, mut gain2) = (vec![0.0; d], vec![0.0; d]);
            for x in &xs {
                let x = &x[..d];
                let (v2, inv_g) = sherman_morrison_gain(&p, x, gamma, &mut px2, &mut gain2);
                let p2 = sherman_morrison_into(&p, &px2, inv_g);
                let a2 = add_rank_one_rows_into(&a, x, 1.0 / gamma);
                add_rank_one_rows(&mut a, x, 1.0 / gamma);
                let v = sherman_morrison(&mut p, x, gamma, &mut px, &mut gain);
                let bits = |m: &[f64]| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(v.to_bits(), v2.to_bits());
                prop_assert_eq!(bits(&p), bits(&p2));
                prop_assert_eq!(bits(&a), bits(&a2));
                prop_assert_eq!(bits(&gain), bits(&gain2));
            }
        }

        /// Summing the rows of the non-zero features is the dense mat-vec
        /// (up to rounding) on a symmetric matrix.
        #[test]
        fn the_sparse_matvec_is_the_dense_one(
            x in proptest::collection::vec(prop_oneof![Just(0.0), -3.0f64..3.0], 1..30),
        ) {
            let d = x.len();
            let mut s = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    s[i * d + j] = 1.0 / (1.0 + (i + j) as f64) - 0.1 * ((i * j) % 3) as f64;
                }
            }
            let (mut dense, mut sparse) = (vec![0.0; d], vec![7.0; d]);
            matvec(&s, &x, &mut dense);
            sym_matvec_sparse(&s, &x, &mut sparse);
            prop_assert!(max_abs_diff(&dense, &sparse) < 1e-12);
        }
    }

    /// The column-wise loops `spd_inverse` used before (the reference).
    fn textbook_inverse(a: &[f64], d: usize) -> Vec<f64> {
        let mut l = vec![0.0; d * d];
        for j in 0..d {
            let ljj = (a[j * d + j] - dot(&l[j * d..j * d + j], &l[j * d..j * d + j])).sqrt();
            l[j * d + j] = ljj;
            for i in j + 1..d {
                l[i * d + j] =
                    (a[i * d + j] - dot(&l[i * d..i * d + j], &l[j * d..j * d + j])) / ljj;
            }
        }
        let mut m = vec![0.0; d * d];
        for i in 0..d {
            let lii = l[i * d + i];
            m[i * d + i] = 1.0 / lii;
            for j in 0..i {
                let mut s = 0.0;
                for k in j..i {
                    s += l[i * d + k] * m[k * d + j];
                }
                m[i * d + j] = -s / lii;
            }
        }
        let mut out = vec![0.0; d * d];
        for k in 0..d {
            for i in 0..=k {
                for j in 0..=k {
                    out[i * d + j] += m[k * d + i] * m[k * d + j];
                }
            }
        }
        out
    }
}
