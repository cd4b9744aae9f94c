//! Optional learned linear projection applied after raw feature extraction.
//!
//! Owns: the `k x d` row-major matrix written by an offline training job and
//! its validation. Must not import `bandit` or `sim`. Invariants (checked by
//! `validate`): `rows >= 1`, `matrix.len() == rows * cols`, every entry is
//! finite. Cost of `apply`: O(k * d) multiply-adds, no allocation.

use serde::{Deserialize, Serialize};

use super::FeatureError;

/// `y = P x` with `P` of shape `rows x cols`, stored row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    pub rows: usize,
    pub cols: usize,
    pub matrix: Vec<f64>,
}

impl Projection {
    /// Checks shape against the raw feature width it will be applied to.
    pub fn validate(&self, raw_dimension: usize) -> Result<(), FeatureError> {
        if self.rows == 0 {
            return Err(FeatureError::Projection("rows must be at least 1".into()));
        }
        if self.cols != raw_dimension {
            return Err(FeatureError::Projection(format!(
                "cols is {} but the raw feature vector has {} entries",
                self.cols, raw_dimension
            )));
        }
        let expected = self.rows.checked_mul(self.cols);
        if expected != Some(self.matrix.len()) {
            return Err(FeatureError::Projection(format!(
                "matrix has {} entries, expected rows * cols = {} * {}",
                self.matrix.len(),
                self.rows,
                self.cols
            )));
        }
        if let Some(i) = self.matrix.iter().position(|v| !v.is_finite()) {
            return Err(FeatureError::Projection(format!(
                "matrix entry {i} is not finite"
            )));
        }
        Ok(())
    }

    /// Feeds the shape and the matrix's exact bits (little-endian words)
    /// into the running FNV-1a hash `h`: fingerprints of the feature space.
    pub(crate) fn hash_into(&self, h: u64) -> u64 {
        let words = [self.rows as u64, self.cols as u64]
            .into_iter()
            .chain(self.matrix.iter().map(|v| v.to_bits()));
        words.fold(h, super::hash::fnv_words)
    }

    /// Writes `[1 | P x[1..]]` into `out` (`rows + 1` entries): a raw
    /// feature vector, bias first, mapped to a projected one with a fresh
    /// bias (how a trained policy snapshot sees its inputs).
    pub fn apply_with_bias(&self, x: &[f64], out: &mut [f64]) {
        if let Some((bias, rest)) = out.split_first_mut() {
            *bias = 1.0;
            self.apply(x.get(1..).unwrap_or_default(), rest);
        }
    }

    /// Writes `P x` into `out` (which must have `rows` entries).
    pub(crate) fn apply(&self, x: &[f64], out: &mut [f64]) {
        for (o, row) in out.iter_mut().zip(self.matrix.chunks_exact(self.cols)) {
            *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
        }
    }
}
