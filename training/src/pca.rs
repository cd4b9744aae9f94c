//! The optional PCA projection of `switchboard train --pca K`: a bounded
//! uniform sample of the logged feature vectors, principal axes of their
//! hashed-word block (linfa-reduction), and the projection matrix a
//! snapshot carries (`switchboard::bandit` applies it when serving).
//!
//! Why only the hash buckets: they are many, sparse and correlated (words
//! that go together), which is what PCA compresses; the hand-made features
//! are few, already scaled and individually meaningful, so they pass
//! through unchanged (an identity block). The raw vector is
//! `[1 | fixed (N_FIXED) | buckets (B)]`; the projection maps its last
//! `N_FIXED + B` entries to `N_FIXED + K` ones, and the snapshot puts a
//! fresh bias in front.
//! Memory: the sample holds at most `SAMPLE_ROWS` rows and
//! `SAMPLE_ENTRIES` numbers (fewer rows for very wide bucket blocks),
//! whatever the window's size; the fit is O(sample * B * K) per iteration.

use anyhow::Context;
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_reduction::Pca;
use ndarray::Array2;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use switchboard::features::{Projection, FIXED_FEATURES};

/// Most rows the sample keeps.
pub const SAMPLE_ROWS: usize = 20_000;
/// Most numbers the sample keeps (rows x buckets): 128 MiB of f64.
pub const SAMPLE_ENTRIES: usize = 1 << 24;

const N_FIXED: usize = FIXED_FEATURES.len();

/// Checks `--pca K` against the route's feature spec before anything runs.
pub fn check_components(k: usize, hash_buckets: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        hash_buckets > 0,
        "--pca needs hashed word features, but the route's features have hash_buckets = 0"
    );
    anyhow::ensure!(
        (1..=hash_buckets).contains(&k),
        "--pca {k}: the number of components must be between 1 and the route's hash_buckets ({hash_buckets})"
    );
    Ok(())
}

/// Algorithm R over the bucket blocks of the streamed rows: after n
/// offers, every row seen is kept with probability `capacity / n`.
pub struct Reservoir {
    capacity: usize,
    seen: u64,
    rows: Vec<Vec<f64>>,
    rng: SmallRng,
}

impl Reservoir {
    /// A reservoir for bucket blocks of `buckets` entries.
    pub fn new(buckets: usize, seed: u64) -> Self {
        Self {
            capacity: SAMPLE_ROWS.min(SAMPLE_ENTRIES / buckets.max(1)).max(1),
            seen: 0,
            rows: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Offers one raw feature vector; its bucket block is what is kept.
    pub fn offer(&mut self, raw: &[f64]) {
        let Some(buckets) = raw.get(1 + N_FIXED..) else {
            return;
        };
        self.seen += 1;
        if self.rows.len() < self.capacity {
            self.rows.push(buckets.to_vec());
            return;
        }
        let j = self.rng.random_range(0..self.seen);
        if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.rows.get_mut(j)) {
            slot.clear();
            slot.extend_from_slice(buckets);
        }
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// What the run reports about the projection (`metrics.pca`).
#[derive(Debug, Clone, Serialize)]
pub struct PcaReport {
    pub components: usize,
    /// The projection's shape: `N_FIXED + K` x `raw_dimension - 1`.
    pub rows: usize,
    pub cols: usize,
    /// Rows the axes were fitted on, of `rows_seen` offered.
    pub sample_rows: usize,
    pub rows_seen: u64,
    /// Share of the hashed block's total variance (in the sample) along
    /// each axis, largest first. (linfa's own ratio is normalised over the
    /// kept axes only, so it always sums to 1; this one does not.)
    pub explained_variance_ratio: Vec<f64>,
    /// Their sum: how much of the hashed block the projection keeps.
    pub explained_variance: f64,
}

/// Fits `k` principal axes on the sample and builds the projection for a
/// raw vector of `raw_dimension` entries (bias included).
pub fn fit(
    sample: Reservoir,
    k: usize,
    raw_dimension: usize,
) -> anyhow::Result<(Projection, PcaReport)> {
    let buckets = raw_dimension.saturating_sub(1 + N_FIXED);
    check_components(k, buckets)?;
    let n = sample.rows.len();
    anyhow::ensure!(
        n > k,
        "--pca {k}: only {n} logged rows to fit principal axes on; need more than {k}"
    );
    let flat: Vec<f64> = sample.rows.into_iter().flatten().collect();
    let records = Array2::from_shape_vec((n, buckets), flat).context("shaping the PCA sample")?;
    let mean = records
        .mean_axis(ndarray::Axis(0))
        .context("the PCA sample is empty")?;
    // Total variance of the sampled block (without a centred copy).
    let total: f64 = records
        .outer_iter()
        .map(|row| {
            row.iter()
                .zip(mean.iter())
                .map(|(v, m)| (v - m) * (v - m))
                .sum::<f64>()
        })
        .sum();
    anyhow::ensure!(
        total > 0.0 && total.is_finite(),
        "--pca {k}: the hashed word features do not vary in the window, there is nothing to project"
    );
    let pca = Pca::params(k)
        .fit(&DatasetBase::from(records))
        .map_err(|e| anyhow::anyhow!("--pca {k}: fitting the principal axes failed: {e}"))?;
    let axes = pca.components();
    anyhow::ensure!(
        axes.dim() == (k, buckets) && axes.iter().all(|v| v.is_finite()),
        "--pca {k}: the principal axes came out malformed ({:?})",
        axes.dim()
    );
    let explained_variance_ratio: Vec<f64> = pca
        .singular_values()
        .iter()
        .map(|s| s * s / total)
        .collect();
    // Rows: identity for the hand-made features, then the axes over the
    // bucket block. No centring offset: the projection stays linear, and a
    // constant shift of the projected features is absorbed by the models'
    // bias coordinate (the ridge fits and the online updates have one).
    let cols = N_FIXED + buckets;
    let rows = N_FIXED + k;
    let mut matrix = vec![0.0; rows * cols];
    for i in 0..N_FIXED {
        if let Some(v) = matrix.get_mut(i * cols + i) {
            *v = 1.0;
        }
    }
    for (j, axis) in axes.outer_iter().enumerate() {
        let start = (N_FIXED + j) * cols + N_FIXED;
        if let Some(row) = matrix.get_mut(start..start + buckets) {
            for (m, a) in row.iter_mut().zip(axis.iter()) {
                *m = *a;
            }
        }
    }
    let projection = Projection { rows, cols, matrix };
    projection
        .validate(cols)
        .map_err(|e| anyhow::anyhow!("--pca {k}: {e}"))?;
    let report = PcaReport {
        components: k,
        rows,
        cols,
        sample_rows: n,
        rows_seen: sample.seen,
        explained_variance: explained_variance_ratio.iter().sum(),
        explained_variance_ratio,
    };
    Ok((projection, report))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Raw vectors whose bucket block is a mix of two fixed directions.
    fn rows(n: usize, buckets: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let (a, b): (f64, f64) = (rng.random(), rng.random());
                let mut x = vec![0.0; 1 + N_FIXED + buckets];
                x[0] = 1.0;
                x[1] = 0.5;
                for i in 0..buckets {
                    let u = if i % 2 == 0 { 1.0 } else { -1.0 };
                    let v = if i < buckets / 2 { 1.0 } else { 0.0 };
                    x[1 + N_FIXED + i] = a * u + b * v + 1e-3 * rng.random::<f64>();
                }
                x
            })
            .collect()
    }

    #[test]
    fn two_components_keep_a_rank_two_bucket_block_and_pass_fixed_features_through() {
        let buckets = 16;
        let mut r = Reservoir::new(buckets, 1);
        for x in rows(500, buckets, 2) {
            r.offer(&x);
        }
        let (p, report) = fit(r, 2, 1 + N_FIXED + buckets).unwrap();
        assert_eq!((p.rows, p.cols), (N_FIXED + 2, N_FIXED + buckets));
        assert_eq!((report.rows, report.cols), (p.rows, p.cols));
        assert_eq!(report.explained_variance_ratio.len(), 2);
        assert!(report.explained_variance > 0.99, "{report:?}");
        // Row 3 picks fixed feature 3 only.
        let row3 = &p.matrix[3 * p.cols..4 * p.cols];
        assert_eq!(row3[3], 1.0);
        assert_eq!(row3.iter().filter(|v| **v != 0.0).count(), 1);
        // The axes are unit vectors over the bucket block only.
        let axis = &p.matrix[N_FIXED * p.cols..(N_FIXED + 1) * p.cols];
        assert!(axis[..N_FIXED].iter().all(|v| *v == 0.0));
        let norm: f64 = axis.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
    }

    #[test]
    fn as_many_components_as_buckets_keep_all_the_variance() {
        let buckets = 8;
        let mut r = Reservoir::new(buckets, 4);
        let mut rng = SmallRng::seed_from_u64(6);
        for _ in 0..300 {
            let mut x = vec![0.0; 1 + N_FIXED + buckets];
            x[1 + N_FIXED..]
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-1.0..1.0));
            r.offer(&x);
        }
        let (p, report) = fit(r, buckets, 1 + N_FIXED + buckets).unwrap();
        assert_eq!(p.rows, N_FIXED + buckets);
        assert!(report.explained_variance > 0.99, "{report:?}");
    }

    #[test]
    fn components_outside_one_to_the_bucket_count_are_refused() {
        assert!(check_components(0, 8).is_err());
        assert!(check_components(9, 8).is_err());
        assert!(check_components(8, 8).is_ok());
        let e = check_components(1, 0).unwrap_err().to_string();
        assert!(e.contains("hash_buckets"), "{e}");
    }

    #[test]
    fn the_reservoir_stays_bounded_and_uniform() {
        let buckets = 1 << 12;
        let mut r = Reservoir::new(buckets, 3);
        assert_eq!(r.capacity, SAMPLE_ENTRIES / buckets);
        let mut x = vec![0.0; 1 + N_FIXED + buckets];
        let n = 3 * r.capacity;
        for i in 0..n {
            x[1 + N_FIXED] = i as f64;
            r.offer(&x);
        }
        assert_eq!(r.rows.len(), r.capacity);
        assert_eq!(r.seen(), n as u64);
        // Each third of the stream holds about a third of the sample.
        let late = r
            .rows
            .iter()
            .filter(|row| row[0] >= (2 * r.capacity) as f64)
            .count() as f64;
        let share = late / r.capacity as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.1, "{share}");
    }
}
