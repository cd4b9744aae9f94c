//! Feature tests: layout, cues, capabilities, projection, spec serde, and
//! a property test that encoding is finite, fixed-length and deterministic.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn encode(spec: FeatureSpec, p: &PromptView<'_>) -> Vec<f64> {
    let enc = Encoder::new(spec).unwrap();
    let mut out = Vec::new();
    enc.encode(p, &mut out);
    out
}

#[test]
fn layout_bias_and_dimension() {
    let spec = FeatureSpec::default();
    let v = encode(spec.clone(), &PromptView::single_user("What is 2 + 2?"));
    assert_eq!(v.len(), spec.dimension());
    assert_eq!(v.len(), 1 + 35 + 64);
    assert_eq!(v[0], 1.0);
    let hashed: f64 = v[1 + 35..].iter().map(|x| x * x).sum();
    assert!((hashed - 1.0).abs() < 1e-12);
}

#[test]
fn empty_prompt_is_finite() {
    let v = encode(FeatureSpec::default(), &PromptView::default());
    assert!(v.iter().all(|x| x.is_finite()));
    assert_eq!(v[0], 1.0);
}

#[test]
fn capabilities_and_roles_show_up() {
    let p = PromptView {
        messages: vec![
            MessageView {
                role: Role::System,
                texts: vec!["You are terse."],
            },
            MessageView {
                role: Role::User,
                texts: vec!["Is it raining?"],
            },
        ],
        has_tools: true,
        json_mode: true,
        has_images: false,
        max_tokens: Some(256),
    };
    let v = encode(
        FeatureSpec {
            hash_buckets: 0,
            ..FeatureSpec::default()
        },
        &p,
    );
    let at = |name: &str| v[1 + FIXED_FEATURES.iter().position(|n| *n == name).unwrap()];
    assert_eq!(at("has_system"), 1.0);
    assert_eq!(at("has_tools"), 1.0);
    assert_eq!(at("json_mode"), 1.0);
    assert_eq!(at("has_images"), 0.0);
    assert_eq!(at("ends_with_question"), 1.0);
    assert_eq!(at("last_is_user"), 1.0);
    assert!(at("log_max_tokens") > 0.0);
}

#[test]
fn projection_is_validated_and_applied() {
    let raw = FeatureSpec {
        hash_buckets: 4,
        ..FeatureSpec::default()
    }
    .raw_dimension();
    let bad = FeatureSpec {
        hash_buckets: 4,
        projection: Some(Projection {
            rows: 2,
            cols: raw + 1,
            matrix: vec![0.0; 2 * (raw + 1)],
        }),
        ..FeatureSpec::default()
    };
    assert!(Encoder::new(bad).is_err());
    let mut m = vec![0.0; 2 * raw];
    m[0] = 1.0; // row 0 picks log_chars
    m[raw + 1] = 2.0; // row 1 doubles log_tokens
    let spec = FeatureSpec {
        hash_buckets: 4,
        projection: Some(Projection {
            rows: 2,
            cols: raw,
            matrix: m,
        }),
        ..FeatureSpec::default()
    };
    let p = PromptView::single_user("hello there");
    let full = encode(
        FeatureSpec {
            hash_buckets: 4,
            ..FeatureSpec::default()
        },
        &p,
    );
    let proj = encode(spec.clone(), &p);
    assert_eq!(proj.len(), spec.dimension());
    assert_eq!(proj, vec![1.0, full[1], 2.0 * full[2]]);
    let mut nan = spec;
    if let Some(p) = nan.projection.as_mut() {
        p.matrix[0] = f64::NAN;
    }
    assert!(Encoder::new(nan).is_err());
}

#[test]
fn spec_rejects_unknown_fields_and_fills_defaults() {
    let s: FeatureSpec = serde_json::from_str("{}").unwrap();
    assert_eq!(s, FeatureSpec::default());
    assert!(serde_json::from_str::<FeatureSpec>(r#"{"buckets": 3}"#).is_err());
    assert_ne!(
        s.fingerprint(),
        FeatureSpec {
            use_bigrams: false,
            ..s.clone()
        }
        .fingerprint()
    );
}

#[test]
fn token_estimate_is_reasonable() {
    let text = "word ".repeat(400); // 2,000 ASCII chars
    let t = estimate_prompt_tokens(&PromptView::single_user(&text));
    assert!((500..=520).contains(&t), "{t}");
    let cjk = "日本語".repeat(10);
    assert!(estimate_prompt_tokens(&PromptView::single_user(&cjk)) >= 30);
}

proptest! {
    #[test]
    fn features_are_finite_fixed_length_and_deterministic(
        texts in proptest::collection::vec(any::<String>(), 0..4),
        buckets in 0usize..96,
        bigrams in any::<bool>(),
        max_tokens in proptest::option::of(any::<u32>()),
    ) {
        let spec = FeatureSpec { hash_buckets: buckets, use_bigrams: bigrams, ..FeatureSpec::default() };
        let enc = Encoder::new(spec.clone()).unwrap();
        let p = PromptView {
            messages: texts.iter().enumerate().map(|(i, t)| MessageView {
                role: if i % 2 == 0 { Role::User } else { Role::Assistant },
                texts: vec![t.as_str()],
            }).collect(),
            max_tokens,
            ..PromptView::default()
        };
        let mut a = vec![7.0; 3];
        let mut b = Vec::new();
        enc.encode(&p, &mut a);
        enc.encode(&p, &mut b);
        prop_assert_eq!(a.len(), spec.dimension());
        prop_assert!(a.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        prop_assert_eq!(a, b);
    }
}
