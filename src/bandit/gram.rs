//! A design's Gram matrix `A`, with its forgetting applied lazily.
//!
//! Owns: `GramMatrix`, stored as `A = scale * raw`. Must not import the
//! design or anything above it: pure arithmetic on `linalg`.
//! Why: forgetting multiplies all of `A` by `g` at every update, a pass
//! over its d^2 entries, while the update's own part (`x x^T` and the
//! prior's diagonal top-up) changes only the rows and columns of x's
//! non-zero entries, which hashed prompt features leave few. Keeping the
//! product of the discounts in `scale` makes an update O(nnz d); `fold`
//! applies it to the entries (one pass) when an exact re-inversion is due.
//! Readers see `A` itself: `get`, `folded`, `entries_mut` and serde, which
//! writes the folded entries, so saved states keep their form.
//! Invariants: `raw` is `d * d` and exactly symmetric (each update adds
//! `(x_i x_j) w` to both `(i, j)` and `(j, i)`, the same bits); `scale` is
//! finite, in `[MIN_SCALE, 1]`. Folding computes `raw * scale`, as `get`
//! does, so a folded copy and `get` agree to the bit.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::exact;
use super::linalg;

/// Below this `scale` an update folds first, so `1 / scale` stays far
/// from overflow (a re-inversion folds long before: at most 1,024 updates
/// of a discount of at least 0.5).
const MIN_SCALE: f64 = 1e-100;

#[derive(Debug, Clone)]
pub(crate) struct GramMatrix {
    raw: Vec<f64>,
    scale: f64,
}

impl GramMatrix {
    pub fn new(entries: Vec<f64>) -> Self {
        Self {
            raw: entries,
            scale: 1.0,
        }
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Entry `k` (row-major) of `A`, or `None` past the end.
    #[inline]
    pub fn get(&self, k: usize) -> Option<f64> {
        self.raw.get(k).map(|v| v * self.scale)
    }

    /// `A`'s entries: borrowed when no discount is pending, else a folded
    /// copy.
    pub fn folded(&self) -> Cow<'_, [f64]> {
        if self.scale == 1.0 {
            Cow::Borrowed(&self.raw)
        } else {
            Cow::Owned(self.raw.iter().map(|v| v * self.scale).collect())
        }
    }

    /// Applies the pending discount to the entries.
    pub fn fold(&mut self) {
        if self.scale != 1.0 {
            let s = self.scale;
            self.raw.iter_mut().for_each(|v| *v *= s);
            self.scale = 1.0;
        }
    }

    /// `A`'s entries to write (folded first).
    pub fn entries_mut(&mut self) -> &mut [f64] {
        self.fold();
        &mut self.raw
    }

    /// `A = gamma A + x x^T + diag(first, rest, ..., rest)`, touching only
    /// the rows of x's non-zero entries and the diagonal.
    pub fn discounted_rank_one(&mut self, x: &[f64], gamma: f64, first: f64, rest: f64) {
        if self.scale * gamma < MIN_SCALE {
            self.fold();
        }
        self.scale *= gamma;
        let w = 1.0 / self.scale;
        linalg::add_rank_one_rows(&mut self.raw, x, w);
        self.top_up(x.len(), first * w, rest * w);
    }

    /// `discounted_rank_one` on a copy, in one pass over the entries (for
    /// a matrix a published snapshot still holds). The same to the bit as
    /// the update on a clone.
    pub fn discounted_rank_one_into(&self, x: &[f64], gamma: f64, first: f64, rest: f64) -> Self {
        if self.scale * gamma < MIN_SCALE {
            let mut next = self.clone();
            next.discounted_rank_one(x, gamma, first, rest);
            return next;
        }
        let scale = self.scale * gamma;
        let w = 1.0 / scale;
        let mut next = Self {
            raw: linalg::add_rank_one_rows_into(&self.raw, x, w),
            scale,
        };
        next.top_up(x.len(), first * w, rest * w);
        next
    }

    /// Adds the prior's share to the diagonal (already divided by `scale`).
    fn top_up(&mut self, d: usize, first: f64, rest: f64) {
        if first != 0.0 || rest != 0.0 {
            for (i, v) in self.raw.iter_mut().step_by(d + 1).enumerate() {
                *v += if i == 0 { first } else { rest };
            }
        }
    }

    pub fn is_consistent(&self, d: usize) -> bool {
        self.raw.len() == d * d
            && self.scale.is_finite()
            && self.scale >= MIN_SCALE
            && self.scale <= 1.0
            && self.raw.iter().all(|v| (v * self.scale).is_finite())
            && (0..d).all(|i| self.get(i * d + i).is_some_and(|v| v > 0.0))
            && linalg::is_symmetric(&self.raw, d)
    }
}

/// Equal when `A` is: the same folded entries, whatever the pending scale.
impl PartialEq for GramMatrix {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && (0..self.len()).all(|k| self.get(k) == other.get(k))
    }
}

impl Serialize for GramMatrix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        exact::vec::serialize(&self.folded(), s)
    }
}

impl<'de> Deserialize<'de> for GramMatrix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        exact::vec::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The eager update this type replaces: every entry discounted.
    fn eager(a: &mut [f64], x: &[f64], gamma: f64, first: f64, rest: f64) {
        let d = x.len();
        for (i, row) in a.chunks_exact_mut(d).enumerate() {
            for (j, m) in row.iter_mut().enumerate() {
                *m = gamma * *m + x[i] * x[j];
            }
            row[i] += if i == 0 { first } else { rest };
        }
    }

    proptest! {
        /// A run of lazy updates is the eager one to rounding, stays
        /// exactly symmetric, and reads, folds and round-trips through
        /// serde as the same matrix.
        #[test]
        fn lazy_forgetting_is_eager_forgetting(
            d in 1usize..12,
            gamma in 0.5f64..=1.0,
            xs in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(0.0), -2.0f64..2.0], 12),
                1..60,
            ),
        ) {
            let prior: Vec<f64> = (0..d * d).map(|k| if k % (d + 1) == 0 { 1.0 } else { 0.0 }).collect();
            let mut want = prior.clone();
            let mut lazy = GramMatrix::new(prior);
            let (first, rest) = ((1.0 - gamma) * 0.01, 1.0 - gamma);
            for x in &xs {
                eager(&mut want, &x[..d], gamma, first, rest);
                let copy = lazy.discounted_rank_one_into(&x[..d], gamma, first, rest);
                lazy.discounted_rank_one(&x[..d], gamma, first, rest);
                prop_assert!(lazy.is_consistent(d));
                prop_assert_eq!(&copy.raw, &lazy.raw);
                prop_assert_eq!(copy.scale.to_bits(), lazy.scale.to_bits());
            }
            let got = lazy.folded().into_owned();
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs()), "{} vs {}", g, w);
            }
            let json = serde_json::to_string(&lazy).unwrap();
            let back: GramMatrix = serde_json::from_str(&json).unwrap();
            prop_assert!(back == lazy);
            let mut folded = lazy.clone();
            folded.fold();
            prop_assert!(folded == lazy);
            prop_assert_eq!(folded.entries_mut().to_vec(), got);
        }
    }

    #[test]
    fn a_long_run_of_strong_forgetting_folds_before_the_scale_underflows() {
        let d = 3;
        let mut a = GramMatrix::new(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        let x = [1.0, 0.0, 0.5];
        for _ in 0..5_000 {
            let copy = a.discounted_rank_one_into(&x, 0.5, 0.005, 0.5);
            a.discounted_rank_one(&x, 0.5, 0.005, 0.5);
            assert!(a.is_consistent(d));
            assert_eq!((&copy.raw, copy.scale), (&a.raw, a.scale));
        }
        // The fixed point of A = A / 2 + x x^T + D: 2 (x x^T + D).
        let got = a.folded();
        assert!((got[0] - 2.01).abs() < 1e-9, "{got:?}");
        assert!((got[2] - 1.0).abs() < 1e-9, "{got:?}");
        assert!((got[4] - 1.0).abs() < 1e-9, "{got:?}");
    }
}
