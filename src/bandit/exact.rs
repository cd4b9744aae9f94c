//! Bit-exact serde for learned `f64` state.
//!
//! Owns: `#[serde(with = ...)]` helpers. serde_json parses floats "best
//! effort" unless its `float_roundtrip` feature is on (the gateway crate does
//! not enable it), so learned numbers are written as strings of their
//! shortest round-trip representation (zmij, the formatter serde_json
//! itself uses) and parsed with `str::parse`, which is correctly rounded: a
//! snapshot reloads to the identical bits. States saved with Rust's `{:?}`
//! (before zmij) read back the same. Why zmij: formatting the ~80,000
//! numbers of a d = 100, four-arm state through `core::fmt` took ~9 ms per
//! save.
//! Must not import bandit types. Invariant: `parse(format(x)) == x` for
//! every finite `x`; non-finite values are rejected on read.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

fn parse_one<E: serde::de::Error>(s: &str) -> Result<f64, E> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(E::custom(format!("expected a finite number, got {s:?}"))),
    }
}

/// One `f64` as a JSON string.
pub mod num {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(zmij::Buffer::new().format(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        parse_one(&s)
    }
}

/// A `Vec<f64>` as one space-separated JSON string.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(v.len() * 24);
        let mut buf = zmij::Buffer::new();
        for (i, &x) in v.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(buf.format(x));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let s = String::deserialize(d)?;
        s.split_ascii_whitespace()
            .map(parse_one::<D::Error>)
            .collect::<Result<_, _>>()
            .map_err(|e| D::Error::custom(format!("vector: {e}")))
    }
}

/// `Arc<T>` as plain `T` (serde's own `Arc` support needs its `rc` feature,
/// which the gateway crate does not enable).
pub mod shared {
    use super::*;
    use serde::Serialize;
    use std::sync::Arc;

    pub fn serialize<S: Serializer, T: Serialize>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        T::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

/// `Vec<Arc<T>>` as a plain sequence of `T`.
pub mod shared_vec {
    use super::*;
    use serde::Serialize;
    use std::sync::Arc;

    pub fn serialize<S: Serializer, T: Serialize>(v: &[Arc<T>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|a| &**a))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<Arc<T>>, D::Error> {
        Vec::<T>::deserialize(d).map(|v| v.into_iter().map(Arc::new).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct S {
        #[serde(with = "super::num")]
        a: f64,
        #[serde(with = "super::vec")]
        v: Vec<f64>,
    }

    proptest! {
        #[test]
        fn round_trips_bits(a in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
                            v in proptest::collection::vec(proptest::num::f64::NORMAL, 0..20)) {
            let s = S { a, v };
            let back: S = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(back.a.to_bits(), s.a.to_bits());
            prop_assert!(back.v.iter().zip(&s.v).all(|(x, y)| x.to_bits() == y.to_bits()));
            prop_assert_eq!(back.v.len(), s.v.len());
        }

        /// A state saved before zmij (Rust's `{:?}`) reads back to the
        /// same bits.
        #[test]
        fn reads_what_rust_debug_formatting_wrote(
            a in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
            v in proptest::collection::vec(proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL, 0..20),
        ) {
            let old: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
            let text = serde_json::json!({"a": format!("{a:?}"), "v": old.join(" ")}).to_string();
            let back: S = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back.a.to_bits(), a.to_bits());
            prop_assert!(back.v.iter().zip(&v).all(|(x, y)| x.to_bits() == y.to_bits()));
            prop_assert_eq!(back.v.len(), v.len());
        }
    }

    #[test]
    fn rejects_non_finite() {
        assert!(serde_json::from_str::<S>(r#"{"a":"NaN","v":""}"#).is_err());
        assert!(serde_json::from_str::<S>(r#"{"a":"1","v":"1 inf"}"#).is_err());
    }
}
