//! The wire form of a delta in `policy_deltas.delta`: CBOR (RFC 8949),
//! which stores every float in binary, so a delta decodes to the same bits
//! it was encoded from (JSON would need strings for that, at ~2.5x the size:
//! a delta carries two d x d triangles per arm that learned).

use crate::bandit::PolicyDelta;

#[derive(Debug, thiserror::Error)]
#[error("delta encoding: {0}")]
pub struct CodecError(String);

pub fn encode(delta: &PolicyDelta) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(1024);
    ciborium::into_writer(delta, &mut out).map_err(|e| CodecError(e.to_string()))?;
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<PolicyDelta, CodecError> {
    ciborium::from_reader(bytes).map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bandit::{ArmCounts, ArmDelta, ModelDelta};

    #[test]
    fn round_trips_bit_for_bit() {
        let m = ModelDelta {
            log_decay: -0.000_100_005_000_333_35,
            updates: 3,
            weight: 2.999_700_01,
            gram: vec![0.1, 1.0 / 3.0, f64::MIN_POSITIVE, -7.5e-300],
            targets: vec![vec![0.2, std::f64::consts::PI]],
            noise: vec![(0.012_345_678_901_234_5, 2.9)],
        };
        let d = PolicyDelta {
            dimension: 2,
            feature_fingerprint: u64::MAX - 3,
            arms: vec![ArmDelta {
                arm: "small".into(),
                quality: Some(m.clone()),
                outcome: Some(m),
                counts: ArmCounts {
                    outcomes: 1,
                    errors: 0,
                    feedback: 2,
                },
            }],
            requests: 4,
            spend_usd: 1.234_567_890_123e-5,
            lambda_shift: -0.003,
        };
        let back = decode(&encode(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let q = back.arms[0].quality.as_ref().unwrap();
        assert_eq!(q.gram[1].to_bits(), (1.0f64 / 3.0).to_bits());
        assert!(decode(b"\xff\x00garbage").is_err());
    }
}
