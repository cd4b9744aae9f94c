//! Adjusting a policy's choice distribution for arms that are entering or
//! leaving a route, so the logged propensity stays the exact probability
//! of the choice (off-policy evaluation depends on it).
//!
//! Given the policy's probabilities `pi` over the eligible arms:
//! 1. Retiring arms get weight `w = 1 - progress` (the rest 1):
//!    `pi1(a) = pi(a) w_a / sum_b pi(b) w_b` — a retiring arm's share falls
//!    smoothly to 0 as its window runs out. (If all of `pi`'s mass sits on
//!    zero-weight arms, `pi1` is uniform over the arms with weight.)
//! 2. Onboarding arms with quota left take a forced share: with total
//!    `F = min(sum s_i, MAX_FORCED)`, `pi2(a) = F s_a / sum s + (1 - F) pi1(a)`.
//!
//! Sampling is two-stage (a forced draw with probability `F`, else from
//! `pi1`), which has exactly the marginal `pi2`; the forced flag says which
//! stage chose, so the quota counts forced decisions only. O(K).

use rand::Rng;

/// Forced exploration never takes more than this share of a route.
pub const MAX_FORCED: f64 = 0.5;

/// The adjusted choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The chosen arm's id (whatever the caller uses: a model index).
    pub arm: usize,
    /// Its probability under the adjusted distribution.
    pub propensity: f64,
    /// Drawn by the forced-exploration stage.
    pub forced: bool,
}

/// `pi`: (arm, probability) over the eligible arms, summing to 1.
/// `weights`: (arm, weight in [0, 1]) for retiring arms. `forced`: (arm,
/// share) for onboarding arms with quota left. `None` when neither applies
/// to any eligible arm (keep the policy's own draw).
pub fn adjust<R: Rng + ?Sized>(
    pi: &[(usize, f64)],
    weights: &[(usize, f64)],
    forced: &[(usize, f64)],
    rng: &mut R,
) -> Option<Choice> {
    let weight = |a: usize| {
        weights
            .iter()
            .find(|(w, _)| *w == a)
            .map_or(1.0, |(_, w)| w.clamp(0.0, 1.0))
    };
    let forced: Vec<(usize, f64)> = forced
        .iter()
        .filter(|(a, s)| *s > 0.0 && pi.iter().any(|(p, _)| p == a))
        .copied()
        .collect();
    let retiring = pi.iter().any(|(a, _)| weight(*a) < 1.0);
    if !retiring && forced.is_empty() {
        return None;
    }
    let mut pi1: Vec<(usize, f64)> = pi.iter().map(|&(a, p)| (a, p * weight(a))).collect();
    let z: f64 = pi1.iter().map(|(_, p)| p).sum();
    if z > 0.0 {
        pi1.iter_mut().for_each(|(_, p)| *p /= z);
    } else {
        let n = pi.iter().filter(|(a, _)| weight(*a) > 0.0).count();
        if n == 0 {
            pi1 = pi.to_vec();
        } else {
            for (a, p) in pi1.iter_mut() {
                *p = if weight(*a) > 0.0 {
                    1.0 / n as f64
                } else {
                    0.0
                };
            }
        }
    }
    let total: f64 = forced.iter().map(|(_, s)| s).sum();
    let f = total.min(MAX_FORCED);
    let forced_p = |a: usize| {
        forced
            .iter()
            .find(|(x, _)| *x == a)
            .map_or(0.0, |(_, s)| f * s / total)
    };
    let p2 = |a: usize| {
        let p1 = pi1.iter().find(|(x, _)| *x == a).map_or(0.0, |(_, p)| *p);
        forced_p(a) + (1.0 - f) * p1
    };
    let u: f64 = rng.random();
    if u < f {
        let mut acc = 0.0;
        let mut pick = forced.last().map(|(a, _)| *a);
        for (a, s) in &forced {
            acc += f * s / total;
            if u < acc {
                pick = Some(*a);
                break;
            }
        }
        let arm = pick?;
        return Some(Choice {
            arm,
            propensity: p2(arm),
            forced: true,
        });
    }
    let v: f64 = rng.random();
    let mut acc = 0.0;
    let mut pick = None;
    for (a, p) in &pi1 {
        if *p > 0.0 {
            acc += p;
            pick = Some(*a);
            if v < acc {
                break;
            }
        }
    }
    let arm = pick?;
    Some(Choice {
        arm,
        propensity: p2(arm),
        forced: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn frequencies(
        pi: &[(usize, f64)],
        w: &[(usize, f64)],
        f: &[(usize, f64)],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 200_000;
        let mut counts = [0.0; 4];
        let mut props = [0.0; 4];
        for _ in 0..n {
            let c = adjust(pi, w, f, &mut rng).unwrap();
            counts[c.arm] += 1.0;
            props[c.arm] = c.propensity;
        }
        (
            counts.iter().map(|c| c / n as f64).collect(),
            props.to_vec(),
        )
    }

    #[test]
    fn logged_propensities_match_the_frequencies() {
        let pi = [(0, 0.6), (1, 0.3), (2, 0.1)];
        let (freq, props) = frequencies(&pi, &[(0, 0.5)], &[(2, 0.2)]);
        for a in 0..3 {
            assert!(
                (freq[a] - props[a]).abs() < 0.005,
                "arm {a}: {freq:?} vs {props:?}"
            );
        }
        // By hand: pi1 = (0.3, 0.3, 0.1)/0.7; pi2(2) = 0.2 + 0.8 * 0.1/0.7.
        assert!((props[2] - (0.2 + 0.8 * 0.1 / 0.7)).abs() < 1e-12);
    }

    #[test]
    fn a_fully_annealed_arm_is_never_chosen() {
        let pi = [(0, 0.9), (1, 0.1)];
        let (freq, _) = frequencies(&pi, &[(0, 0.0)], &[]);
        assert_eq!(freq[0], 0.0);
        // Even when the policy put all its mass on it.
        let (freq, _) = frequencies(&[(0, 1.0), (1, 0.0)], &[(0, 0.0)], &[]);
        assert_eq!(freq[1], 1.0);
    }

    #[test]
    fn nothing_to_adjust_keeps_the_policy_draw() {
        let mut rng = rand::rng();
        assert!(adjust(&[(0, 1.0)], &[(5, 0.2)], &[(6, 0.1)], &mut rng).is_none());
    }
}
