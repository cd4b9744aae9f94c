//! Results of an experiment arm: traffic, errors, cost, latency and reward
//! with a normal-approximation confidence interval; Welch's comparison of
//! two arms; and the inverse-propensity estimate of a shadow policy's
//! value from logged decisions (Horvitz–Thompson, with its standard error).
//! Pure functions over plain observations. O(n) (a sort for the p95).

use serde::Serialize;

/// One request of an arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Obs {
    pub ok: bool,
    pub cost_usd: f64,
    pub latency_ms: f64,
    /// The latest quality feedback, 0 for a failure, `None` if neither.
    pub reward: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmSummary {
    pub requests: u64,
    pub errors: u64,
    pub mean_cost_usd: f64,
    pub mean_latency_ms: f64,
    pub p95_latency_ms: Option<f64>,
    /// Over the requests with a reward.
    pub reward: Option<Interval>,
}

/// Two-sided normal quantile for a confidence level (0.8 .. 0.999).
pub fn z_for(confidence: f64) -> f64 {
    // Acklam's rational approximation of the inverse normal CDF (|error|
    // < 1.2e-9), at p = 1 - (1 - confidence) / 2.
    let p = (1.0 - (1.0 - confidence.clamp(0.5, 0.999_999)) / 2.0).clamp(0.5, 1.0 - 1e-12);
    let q = (-2.0 * (1.0 - p).ln()).sqrt();
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    if p > 0.975_25 {
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        const A: [f64; 6] = [
            -3.969_683_028_665_376e1,
            2.209_460_984_245_205e2,
            -2.759_285_104_469_687e2,
            1.383_577_518_672_69e2,
            -3.066_479_806_614_716e1,
            2.506_628_277_459_239,
        ];
        const B: [f64; 5] = [
            -5.447_609_879_822_406e1,
            1.615_858_368_580_409e2,
            -1.556_989_798_598_866e2,
            6.680_131_188_771_972e1,
            -1.328_068_155_288_572e1,
        ];
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Mean and interval `mean ± z sd / sqrt(n)` of `values`.
pub fn interval(values: impl Iterator<Item = f64>, z: f64) -> Option<Interval> {
    let (mut n, mut sum, mut sum2) = (0u64, 0.0, 0.0);
    for v in values {
        n += 1;
        sum += v;
        sum2 += v * v;
    }
    if n == 0 {
        return None;
    }
    let mean = sum / n as f64;
    let var = if n > 1 {
        ((sum2 - n as f64 * mean * mean) / (n as f64 - 1.0)).max(0.0)
    } else {
        0.0
    };
    let half = z * (var / n as f64).sqrt();
    Some(Interval {
        mean,
        lo: mean - half,
        hi: mean + half,
        n,
    })
}

pub fn summarize(obs: &[Obs], confidence: f64) -> ArmSummary {
    let n = obs.len() as u64;
    let mean = |f: fn(&Obs) -> f64| {
        if n == 0 {
            0.0
        } else {
            obs.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let mut lat: Vec<f64> = obs.iter().map(|o| o.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let p95 = (!lat.is_empty()).then(|| {
        let rank = ((lat.len() as f64) * 0.95).ceil() as usize;
        lat[rank.clamp(1, lat.len()) - 1]
    });
    ArmSummary {
        requests: n,
        errors: obs.iter().filter(|o| !o.ok).count() as u64,
        mean_cost_usd: mean(|o| o.cost_usd),
        mean_latency_ms: mean(|o| o.latency_ms),
        p95_latency_ms: p95,
        reward: interval(obs.iter().filter_map(|o| o.reward), z_for(confidence)),
    }
}

/// A logged decision as a shadow policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Logged {
    pub reward: f64,
    /// Probability the logging policy gave the logged model.
    pub p_logged: f64,
    /// Probability the shadow policy gives it.
    pub p_target: f64,
}

/// IPS value of the target policy on the logged decisions: the mean of
/// `r p_target / p_logged`, with its normal interval. Rows with a
/// non-positive logged propensity are skipped (no support).
pub fn ips(rows: &[Logged], confidence: f64) -> Option<Interval> {
    interval(
        rows.iter()
            .filter(|l| l.p_logged > 0.0 && l.p_logged.is_finite() && l.p_target.is_finite())
            .map(|l| l.reward * l.p_target / l.p_logged),
        z_for(confidence),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_matches_the_usual_quantiles() {
        assert!((z_for(0.95) - 1.959_964).abs() < 1e-5);
        assert!((z_for(0.90) - 1.644_854).abs() < 1e-5);
        assert!((z_for(0.99) - 2.575_829).abs() < 1e-5);
    }

    #[test]
    fn intervals_shrink_with_n_and_cover_the_mean() {
        let small = interval([0.0, 1.0].into_iter().cycle().take(20), 1.96).unwrap();
        let large = interval([0.0, 1.0].into_iter().cycle().take(2000), 1.96).unwrap();
        assert!((large.mean - 0.5).abs() < 1e-12);
        assert!(large.hi - large.lo < small.hi - small.lo);
        assert!(interval(std::iter::empty(), 1.96).is_none());
    }

    #[test]
    fn ips_of_the_logging_policy_is_its_mean_reward() {
        let rows: Vec<Logged> = (0..100)
            .map(|i| Logged {
                reward: f64::from(i % 2),
                p_logged: 0.5,
                p_target: 0.5,
            })
            .collect();
        assert!((ips(&rows, 0.95).unwrap().mean - 0.5).abs() < 1e-12);
    }
}
