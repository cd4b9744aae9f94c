//! Gaussian helpers for Thompson sampling propensities.
//!
//! Owns: the normal CDF and `P(arm a has the largest draw)` for independent
//! Gaussians capped above (`min(N(m, s^2), cap)`). Must not import bandit state: pure numeric functions.
//!
//! Why: linear Thompson sampling draws `theta_a ~ N(theta_hat, v^2 A^-1)`,
//! but a decision only needs each arm's scalar utility at this x, which is
//! exactly `N(mu_a, v^2 x^T A^-1 x)`; arms are independent. So the choice
//! distribution is `P_a = int phi(z) prod_{b != a} Phi((mu_a + s_a z - mu_b)
//! / s_b) dz` (plus, with caps, the point mass at the cap times the others'
//! CDFs there), computed by composite Simpson on z in [-6, 6] (24 panels in
//! all, split at the other arms' caps, where the integrand jumps)
//! in each arm's own standardised variable (accurate to ~1e-6 even when one
//! arm is much sharper than another). The decision then samples from these
//! probabilities, so the logged propensity is the true one (up to that
//! quadrature error), not a Monte-Carlo estimate. Arms more than 6 sd
//! below the best lower bound are pruned (probability < 1e-9); two
//! contenders use the closed form `Phi((mu_a - mu_b) / sqrt(s_a^2 + s_b^2))`.
//! Cost: O(C^2 * 49) normal CDFs for C contenders (usually 1-3).
//! erfc: Numerical Recipes `erfcc` (Chebyshev fit, relative error < 1.2e-7).

const PANELS: usize = 24;
const Z_RANGE: f64 = 6.0;

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// Standard normal CDF.
pub fn cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// One arm's sampled utility: `min(N(mean, sd^2), cap)` — the cap is the
/// utility at quality 1, since rewards are bounded (see `decide.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Capped {
    pub mean: f64,
    pub sd: f64,
    pub cap: f64,
}

impl Capped {
    /// `P(U < u) + P(U = u) / 2` (ties between point masses split evenly).
    fn below(&self, u: f64) -> f64 {
        if u > self.cap {
            1.0
        } else if self.sd > 0.0 {
            let c = cdf((u - self.mean) / self.sd);
            if u == self.cap {
                c + 0.5 * (1.0 - c)
            } else {
                c
            }
        } else if u > self.mean {
            1.0
        } else if u < self.mean {
            0.0
        } else {
            0.5
        }
    }

    fn top(&self) -> f64 {
        (self.mean + Z_RANGE * self.sd).min(self.cap)
    }
}

/// Writes `P(arm a's draw is the maximum)` into `out`; sums to 1.
pub fn max_probabilities(arms: &[Capped], out: &mut [f64]) {
    out.iter_mut().for_each(|p| *p = 0.0);
    let floor = arms
        .iter()
        .map(|a| (a.mean - Z_RANGE * a.sd).min(a.cap))
        .fold(f64::NEG_INFINITY, f64::max);
    // Contenders: arms whose upper range reaches the best lower bound.
    let idx: Vec<usize> = (0..arms.len())
        .filter(|&a| arms[a].top() >= floor)
        .collect();
    let idx = idx.as_slice();
    let uncapped = |a: usize| arms[a].cap >= arms[a].mean + Z_RANGE * arms[a].sd;
    match idx {
        [] => {}
        [a] => out[*a] = 1.0,
        [a, b] if uncapped(*a) && uncapped(*b) => {
            let (x, y) = (arms[*a], arms[*b]);
            let s = (x.sd * x.sd + y.sd * y.sd).sqrt();
            out[*a] = Capped {
                mean: y.mean,
                sd: s,
                cap: f64::INFINITY,
            }
            .below(x.mean);
            out[*b] = 1.0 - out[*a];
        }
        _ => {
            for &a in idx {
                let x = arms[a];
                let others = || idx.iter().filter(move |&&b| b != a).map(|&b| arms[b]);
                out[a] = if x.sd > 0.0 {
                    // Continuous part below the cap, then the point mass at it.
                    let hi = ((x.cap - x.mean) / x.sd).min(Z_RANGE);
                    // Other arms' caps are jumps of the integrand: integrate
                    // piecewise between them so Simpson stays accurate.
                    // Sharp CDFs of much narrower arms also get a cut at
                    // their mean, so the steep part starts a fresh piece.
                    let mut cuts: Vec<f64> = others()
                        .flat_map(|b| {
                            let sharp = b.sd < 0.5 * x.sd;
                            [
                                Some((b.cap - x.mean) / x.sd),
                                sharp.then(|| (b.mean - x.mean) / x.sd),
                            ]
                        })
                        .flatten()
                        .filter(|z| *z > -Z_RANGE && *z < hi)
                        .collect();
                    cuts.push(-Z_RANGE);
                    cuts.push(hi);
                    cuts.sort_by(f64::total_cmp);
                    let mut acc = 0.0;
                    for w in cuts.windows(2) {
                        let (lo, up) = (w[0], w[1]);
                        if up <= lo {
                            continue;
                        }
                        // Panels in proportion to the piece's length (even, >= 2).
                        let n =
                            (((PANELS as f64) * (up - lo) / (hi + Z_RANGE)).ceil() as usize).max(2);
                        let n = n + n % 2;
                        let h = (up - lo) / n as f64;
                        let mut part = 0.0;
                        for i in 0..=n {
                            // Nudge the ends inside the piece so a jump at a
                            // cut is evaluated on the correct side.
                            let z = (lo + h * i as f64).clamp(lo + 1e-12, up - 1e-12);
                            let wt = if i == 0 || i == n {
                                1.0
                            } else if i % 2 == 1 {
                                4.0
                            } else {
                                2.0
                            };
                            let prod: f64 = others().map(|b| b.below(x.mean + x.sd * z)).product();
                            part += wt * (-0.5 * z * z).exp() * prod;
                        }
                        acc += part * h / 3.0;
                    }
                    acc /= (2.0 * std::f64::consts::PI).sqrt();
                    let mass = 1.0 - cdf((x.cap - x.mean) / x.sd);
                    acc + mass * others().map(|b| b.below(x.cap)).product::<f64>()
                } else {
                    others().map(|b| b.below(x.mean.min(x.cap))).product()
                };
            }
        }
    }
    let total: f64 = out.iter().sum();
    if total > 0.0 {
        out.iter_mut().for_each(|p| *p /= total);
    } else if let Some(first) = idx.first() {
        out[*first] = 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_reference_values() {
        assert!((cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((cdf(1.96) - 0.975_002_1).abs() < 1e-6);
        assert!((cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
    }

    #[test]
    fn symmetric_arms_split_evenly_and_sum_to_one() {
        let arm = |m: f64, s: f64| Capped {
            mean: m,
            sd: s,
            cap: f64::INFINITY,
        };
        let mut out = [0.0; 3];
        max_probabilities(&[arm(0.5, 0.1); 3], &mut out);
        for p in out {
            assert!((p - 1.0 / 3.0).abs() < 1e-5, "{out:?}");
        }
        max_probabilities(&[arm(0.5, 0.0); 3], &mut out);
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn matches_monte_carlo() {
        use rand::{Rng, SeedableRng};
        use rand_distr::StandardNormal;
        let (m, s, cap) = (
            [0.6, 0.5, 0.55, -3.0],
            [0.05, 0.2, 0.01, 0.1],
            [0.62, 0.7, 9.0, 9.0],
        );
        let arms: Vec<Capped> = (0..4)
            .map(|a| Capped {
                mean: m[a],
                sd: s[a],
                cap: cap[a],
            })
            .collect();
        let mut out = [0.0; 4];
        max_probabilities(&arms, &mut out);
        assert_eq!(out[3], 0.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut wins = [0u32; 4];
        let n = 200_000;
        for _ in 0..n {
            let draws: Vec<f64> = (0..4)
                .map(|a| (m[a] + s[a] * rng.sample::<f64, _>(StandardNormal)).min(cap[a]))
                .collect();
            let best = (0..4)
                .max_by(|&a, &b| draws[a].total_cmp(&draws[b]))
                .unwrap_or(0);
            wins[best] += 1;
        }
        for a in 0..4 {
            let mc = f64::from(wins[a]) / f64::from(n);
            assert!(
                (mc - out[a]).abs() < 0.005,
                "arm {a}: mc {mc} vs {}",
                out[a]
            );
        }
    }
}
