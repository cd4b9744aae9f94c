//! Seedless, version-stable hashing for feature hashing and fingerprints.
//!
//! Owns: FNV-1a (64-bit) and a SplitMix64 finaliser. Must not import
//! anything outside `core`: the point is that these bits never change across
//! processes, platforms or library upgrades (unlike `std`'s SipHash with a
//! random key), so a learned weight for bucket `i` keeps its meaning.
//! Invariant: every function here is a pure function of its input bytes.

/// FNV-1a offset basis (64-bit).
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a prime (64-bit).
pub(crate) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over a byte string; `const` so keyword tables are computed at
/// compile time and matched with a plain `match`.
pub(crate) const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// Feeds one byte into a running FNV-1a state.
#[inline]
pub(crate) fn fnv_step(h: u64, byte: u8) -> u64 {
    (h ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// Feeds a word's little-endian bytes into a running FNV-1a state.
#[inline]
pub(crate) fn fnv_words(h: u64, word: u64) -> u64 {
    word.to_le_bytes().iter().fold(h, |h, &b| fnv_step(h, b))
}

/// SplitMix64 finaliser: FNV's low bits are weak, so bucket and sign are
/// taken from a fully mixed value.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combines two word hashes into an order-sensitive bigram hash.
#[inline]
pub(crate) fn pair(a: u64, b: u64) -> u64 {
    mix64(a.rotate_left(17) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Maps a hash to (bucket, sign) with Lemire's multiply-shift reduction
/// (unbiased enough for n << 2^32, no division).
#[inline]
pub(crate) fn bucket_and_sign(h: u64, n: usize) -> (usize, f64) {
    let m = mix64(h);
    let bucket = (((m >> 32) * n as u64) >> 32) as usize;
    // +-1.0 from the low bit without a branch (it is a coin flip, so a
    // branch would mispredict half the time): bit 63 is the sign.
    let sign = f64::from_bits(1.0f64.to_bits() | ((m & 1) << 63));
    (bucket, sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let streamed = b"foobar".iter().fold(FNV_OFFSET, |h, &b| fnv_step(h, b));
        assert_eq!(streamed, fnv1a(b"foobar"));
    }

    #[test]
    fn buckets_stay_in_range() {
        for i in 0..1000u64 {
            let (b, s) = bucket_and_sign(fnv1a(&i.to_le_bytes()), 7);
            assert!(b < 7);
            assert!(s == 1.0 || s == -1.0);
            assert_eq!(s == 1.0, mix64(fnv1a(&i.to_le_bytes())) & 1 == 0);
        }
    }
}
