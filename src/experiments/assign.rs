//! Which arm of an experiment a request is in. Sticky assignment hashes
//! the experiment's name and the user id with FNV-1a and a SplitMix64
//! finaliser (seedless and version-stable, so a user stays in the same arm
//! across restarts, replicas and releases); a request without a user, or
//! an experiment that is not sticky, is assigned at random.

use rand::Rng;

/// A number in [0, 1) fixed by (experiment, user).
pub fn unit(experiment: &str, user: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in experiment
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(user.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // SplitMix64 finaliser: FNV alone leaves the high bits poorly mixed
    // for short, similar keys like `user-1`, `user-2`.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Is this request in the candidate arm? `user` is used when the
/// experiment is sticky and the request names one.
pub fn in_candidate<R: Rng + ?Sized>(
    experiment: &str,
    share: f64,
    sticky_user: Option<&str>,
    rng: &mut R,
) -> bool {
    if share <= 0.0 {
        return false;
    }
    if share >= 1.0 {
        return true;
    }
    let u = match sticky_user {
        Some(user) => unit(experiment, user),
        None => rng.random::<f64>(),
    };
    u < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_assignment_is_stable_and_near_the_share() {
        let mut rng = rand::rng();
        let n = 20_000;
        let inside = (0..n)
            .filter(|i| in_candidate("exp", 0.1, Some(&format!("user-{i}")), &mut rng))
            .count();
        let share = inside as f64 / n as f64;
        assert!((share - 0.1).abs() < 0.01, "{share}");
        for i in 0..100 {
            let u = format!("user-{i}");
            let first = in_candidate("exp", 0.3, Some(&u), &mut rng);
            assert_eq!(first, in_candidate("exp", 0.3, Some(&u), &mut rng));
        }
    }

    #[test]
    fn experiments_split_users_independently() {
        let same = (0..1000)
            .filter(|i| {
                let u = format!("u{i}");
                (unit("a", &u) < 0.5) == (unit("b", &u) < 0.5)
            })
            .count();
        assert!((400..600).contains(&same), "{same}");
    }

    #[test]
    fn a_larger_share_keeps_the_users_it_had() {
        for i in 0..1000 {
            let u = format!("u{i}");
            let mut rng = rand::rng();
            if in_candidate("ramp", 0.05, Some(&u), &mut rng) {
                assert!(in_candidate("ramp", 0.25, Some(&u), &mut rng));
            }
        }
    }
}
