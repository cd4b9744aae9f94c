//! A policy snapshot's optional learned projection of the features.
//!
//! Owns: mapping a raw feature vector (what the route's encoder writes, what
//! the gateway, the request log and late feedback carry) to the vector the
//! arms' models take (`inner_dimension`), the projection's checks and its
//! bit-exact serialisation. Must not import I/O or the writer.
//!
//! Why the projection lives in the snapshot and not in the route config: a
//! training run fits it together with the arms' statistics, so it is part of
//! the learned state. Everything outside the snapshot keeps handling raw
//! vectors, so a live swap between a projected and an unprojected version
//! changes nothing around it: whichever snapshot is current projects.
//! Shape: raw `x = [1 | z]` with `z` of `dimension - 1` entries; the inner
//! vector is `[1 | P z]`, `P` being `rows x (dimension - 1)`, so the models
//! keep a bias at index 0 (their intercept priors rely on it).
//! Cost of `project`: O(rows * (dimension - 1)), one allocation per call.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::exact;
use super::snapshot::{PolicySnapshot, SnapshotError};
use crate::features::{fnv_words, Projection, FNV_OFFSET};

impl PolicySnapshot {
    /// Width of the vectors the arms' models take: `1 + rows` with a
    /// projection, else the raw `dimension()`.
    pub fn inner_dimension(&self) -> usize {
        self.projection
            .as_ref()
            .map_or(self.dimension, |p| 1 + p.rows)
    }

    /// The learned projection, if this version has one.
    pub fn projection(&self) -> Option<&Projection> {
        self.projection.as_deref()
    }

    /// `x` (raw, `dimension()` entries, checked by the caller) as the
    /// models see it: itself without a projection, else `[1 | P x[1..]]`.
    pub(crate) fn project<'a>(&self, x: &'a [f64]) -> Cow<'a, [f64]> {
        let Some(p) = &self.projection else {
            return Cow::Borrowed(x);
        };
        let mut out = vec![0.0; 1 + p.rows];
        p.apply_with_bias(x, &mut out);
        Cow::Owned(out)
    }

    /// Identity of the space the arms' statistics live in, for deltas:
    /// the feature fingerprint, mixed with the projection when there is one
    /// (two versions projecting to the same width with different matrices
    /// must never exchange statistics).
    pub fn inner_fingerprint(&self) -> u64 {
        let Some(p) = &self.projection else {
            return self.feature_fingerprint;
        };
        // FNV-1a over the fingerprint, the projection's shape and bits.
        p.hash_into(fnv_words(FNV_OFFSET, self.feature_fingerprint))
    }
}

/// The projection fits a raw vector of `dimension` entries (bias excluded)
/// and every entry is finite.
pub(super) fn check(p: &Projection, dimension: usize) -> Result<(), SnapshotError> {
    p.validate(dimension.saturating_sub(1))
        .map_err(|e| SnapshotError::Projection(e.to_string()))
}

/// The projection as `Projection` writes it, but with the matrix in
/// `exact::vec` form so a snapshot reloads to the identical bits.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exact {
    rows: usize,
    cols: usize,
    #[serde(with = "exact::vec")]
    matrix: Vec<f64>,
}

/// `#[serde(with = ...)]` for `Option<Arc<Projection>>` (only called for
/// `Some`: the field is skipped when `None`).
pub(super) fn serialize<S: Serializer>(
    p: &Option<Arc<Projection>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    p.as_deref()
        .map(|p| Exact {
            rows: p.rows,
            cols: p.cols,
            matrix: p.matrix.clone(),
        })
        .serialize(s)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Arc<Projection>>, D::Error> {
    Ok(Option::<Exact>::deserialize(d)?.map(|e| {
        Arc::new(Projection {
            rows: e.rows,
            cols: e.cols,
            matrix: e.matrix,
        })
    }))
}
