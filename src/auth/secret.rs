//! Key material: generating a client key and hashing it for storage and
//! lookup. A key is `sk-sb-` followed by 48 hex digits (192 random bits from
//! `rand::rng()`, a CSPRNG seeded by the OS), so a plain SHA-256 is enough: there is nothing to brute-force.
//!
//! Invariant: nothing outside this module sees how a key is hashed; the key
//! itself is returned once by `generate` and never stored.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every key this router issues starts with this.
pub const PREFIX: &str = "sk-sb-";

/// Characters of the key kept (in clear) to recognise it in lists.
const SHOWN: usize = PREFIX.len() + 6;

/// A fresh key: `(key, prefix, hash)`.
pub fn generate() -> (String, String, String) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{PREFIX}{}", hex::encode(bytes));
    let prefix = key.chars().take(SHOWN).collect();
    let hash = hash(&key);
    (key, prefix, hash)
}

/// Lower-case hex SHA-256 of a presented key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_prefixed_and_hash_to_what_is_stored() {
        let (a, prefix, h) = generate();
        let (b, _, _) = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 48);
        assert!(a.starts_with(&prefix));
        assert_eq!(hash(&a), h);
        assert_ne!(hash(&b), h);
        assert_eq!(h.len(), 64);
    }
}
