//! Ridge regression from streamed sufficient statistics, with the
//! regularisation chosen by K-fold cross-validation on the same sums.
//!
//! Each row goes to one fold (by a hash of its id) and adds `x x^T`, `x`,
//! `y x`, `y^2` to that fold's `Moments`: O(d^2) per row, O(F d^2) memory
//! whatever the number of rows. For a candidate lambda, fold k's held-out
//! squared error is exact from its moments:
//! `SSE_k = yy_k - 2 theta^T yx_k + theta^T G_k theta` with `theta` solved on
//! the other folds' sums: `(A_0(lambda) + G_-k) theta = yx_-k` (Cholesky,
//! linfa-linalg), where `A_0 = diag(0.01 lambda, lambda, ...)` is the
//! bandit's prior (intercept barely shrunk; see `switchboard::bandit`).
//! Targets are centred on their mean before fitting, as the bandit's are on
//! their prior. Cost per lambda: O(F d^3).

use linfa_linalg::cholesky::CholeskyInplace;
use ndarray::{Array1, Array2, Axis};

/// The bandit's intercept prior ratio (`ridge.rs` in the root crate).
const INTERCEPT_RATIO: f64 = 0.01;

/// The lambdas cross-validation chooses from (log grid).
pub const LAMBDA_GRID: [f64; 9] = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0];

/// Sums over the rows of one fold, for `t` targets sharing one design.
#[derive(Debug, Clone)]
pub struct Moments {
    pub n: f64,
    pub gram: Array2<f64>,
    pub sum_x: Array1<f64>,
    /// `t x d`: row j is `sum y_j x`.
    pub yx: Array2<f64>,
    pub yy: Array1<f64>,
}

impl Moments {
    pub fn new(d: usize, targets: usize) -> Self {
        Self {
            n: 0.0,
            gram: Array2::zeros((d, d)),
            sum_x: Array1::zeros(d),
            yx: Array2::zeros((targets, d)),
            yy: Array1::zeros(targets),
        }
    }

    /// Adds one row. O(d^2) (upper triangle, mirrored on `finish`).
    pub fn add(&mut self, x: &[f64], ys: &[f64]) {
        let d = x.len().min(self.sum_x.len());
        self.n += 1.0;
        for i in 0..d {
            let xi = x[i];
            if xi == 0.0 {
                continue;
            }
            self.sum_x[i] += xi;
            let mut row = self.gram.row_mut(i);
            for j in i..d {
                row[j] += xi * x[j];
            }
        }
        for (t, &y) in ys.iter().enumerate().take(self.yy.len()) {
            self.yy[t] += y * y;
            let mut row = self.yx.row_mut(t);
            for i in 0..d {
                row[i] += y * x[i];
            }
        }
    }

    /// Mirrors the accumulated upper triangle into the lower one.
    pub fn symmetrise(&mut self) {
        let d = self.sum_x.len();
        for i in 0..d {
            for j in 0..i {
                self.gram[[i, j]] = self.gram[[j, i]];
            }
        }
    }

    pub fn merge(&mut self, o: &Moments) {
        self.n += o.n;
        self.gram += &o.gram;
        self.sum_x += &o.sum_x;
        self.yx += &o.yx;
        self.yy += &o.yy;
    }

    /// Means of the targets (0 with no rows); feature 0 is the bias.
    pub fn means(&self) -> Array1<f64> {
        if self.n > 0.0 {
            self.yx.column(0).mapv(|v| v / self.n)
        } else {
            Array1::zeros(self.yy.len())
        }
    }

    /// `(sum (y - c) x, sum (y - c)^2)` for target `t` centred on `c`.
    fn centred(&self, t: usize, c: f64) -> (Array1<f64>, f64) {
        let yx = &self.yx.row(t) - &(&self.sum_x * c);
        let sy = self.yx[[t, 0]];
        (yx, self.yy[t] - 2.0 * c * sy + c * c * self.n)
    }
}

/// Solves `(A_0(lambda) + gram) theta_j = rhs_j` for every row of `rhs`.
pub fn solve(gram: &Array2<f64>, rhs: &Array2<f64>, lambda: f64) -> Option<Array2<f64>> {
    let d = gram.nrows();
    let mut a = gram.clone();
    for i in 0..d {
        a[[i, i]] += if i == 0 {
            INTERCEPT_RATIO * lambda
        } else {
            lambda
        };
    }
    let l = a.cholesky_into().ok()?;
    let mut out = Array2::zeros(rhs.raw_dim());
    for (j, b) in rhs.axis_iter(Axis(0)).enumerate() {
        // Forward then back substitution with the lower factor L.
        let mut z = b.to_owned();
        for i in 0..d {
            let s: f64 = (0..i).map(|k| l[[i, k]] * z[k]).sum();
            z[i] = (z[i] - s) / l[[i, i]];
        }
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|k| l[[k, i]] * z[k]).sum();
            z[i] = (z[i] - s) / l[[i, i]];
        }
        out.row_mut(j).assign(&z);
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// Cross-validation result for one design.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CvChoice {
    pub lambda: f64,
    /// Held-out mean squared error per target at the chosen lambda.
    pub cv_mse: Vec<f64>,
    pub rows: f64,
}

/// Picks the lambda minimising the summed held-out squared error over all
/// targets; with fewer than two non-empty folds, the grid's middle.
pub fn choose_lambda(folds: &[Moments]) -> Option<CvChoice> {
    let first = folds.first()?;
    let mut total = Moments::new(first.sum_x.len(), first.yy.len());
    for f in folds {
        total.merge(f);
    }
    let means = total.means();
    let targets = total.yy.len();
    let used = folds.iter().filter(|f| f.n > 0.0).count();
    if used < 2 {
        return Some(CvChoice {
            lambda: LAMBDA_GRID[LAMBDA_GRID.len() / 2],
            cv_mse: vec![f64::NAN; targets],
            rows: total.n,
        });
    }
    let mut best: Option<(f64, f64, Vec<f64>)> = None;
    for &lambda in &LAMBDA_GRID {
        let mut sse = vec![0.0; targets];
        let mut ok = true;
        for (k, fold) in folds.iter().enumerate() {
            if fold.n == 0.0 {
                continue;
            }
            let mut train = Moments::new(first.sum_x.len(), targets);
            for (j, f) in folds.iter().enumerate() {
                if j != k {
                    train.merge(f);
                }
            }
            let mut rhs = Array2::zeros((targets, first.sum_x.len()));
            for t in 0..targets {
                rhs.row_mut(t).assign(&train.centred(t, means[t]).0);
            }
            let Some(theta) = solve(&train.gram, &rhs, lambda) else {
                ok = false;
                break;
            };
            for (t, s) in sse.iter_mut().enumerate() {
                let (yx, yy) = fold.centred(t, means[t]);
                let th = theta.row(t);
                *s += yy - 2.0 * th.dot(&yx) + th.dot(&fold.gram.dot(&th));
            }
        }
        let score: f64 = sse.iter().sum();
        if ok && score.is_finite() && best.as_ref().is_none_or(|b| score < b.1) {
            best = Some((lambda, score, sse));
        }
    }
    best.map(|(lambda, _, sse)| CvChoice {
        lambda,
        cv_mse: sse.iter().map(|s| s / total.n.max(1.0)).collect(),
        rows: total.n,
    })
}
