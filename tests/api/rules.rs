use serde_json::json;

use crate::helpers::{spawn, two_providers, Db};
use crate::mock::MockUpstream;

#[tokio::test]
async fn rules_pin_premium_and_restrict_batch_traffic() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = format!(
        "{}\n{}",
        two_providers(&a.base_url(), &b.base_url()),
        r#"
[[rules]]
route = "auto"
pin = "large"
match = { tier = "premium" }

[[rules]]
models = ["small"]
match = { tags = { workload = "batch" } }
"#
    );
    let app = spawn(&cfg, Db::Postgres).await;
    for _ in 0..8 {
        let r = app
            .chat(
                json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                "switchboard": {"tier": "premium"}}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchboard-model"], "large");
        assert_eq!(r.headers()["x-switchboard-policy-version"], "rule.0");
    }
    for _ in 0..8 {
        let r = app
            .chat(
                json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                "switchboard": {"tags": {"workload": "batch"}}}),
            )
            .await;
        assert_eq!(r.headers()["x-switchboard-model"], "small");
        let id = r.headers()["x-switchboard-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let row = app.request_row(&id).await;
        assert_eq!(row.model.as_deref(), Some("small"));
    }
    app.shutdown().await;
}

#[test]
fn a_rule_naming_an_unknown_model_is_refused_at_load() {
    let cfg = format!(
        "{}\n[[rules]]\npin = \"huge\"\nmatch = {{ tier = \"premium\" }}\n",
        two_providers("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    );
    let err = switchboard::config::load_str(&cfg, "t.toml", &Default::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.toml: rules[0].pin: unknown model \"huge\""
    );
}

#[tokio::test]
async fn a_latency_slo_excludes_a_slowed_model() {
    use crate::mock::Behaviour;
    use std::time::Duration;
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = format!(
        "{}\n[[routes]]\nname = \"fast\"\nmodels = [\"small\", \"large\"]\npolicy = \"fixed\"\nlatency_slo_ms = 150\n",
        two_providers(&a.base_url(), &b.base_url())
    );
    let app = spawn(&cfg, Db::Postgres).await;
    let ask =
        || app.chat(json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}));
    for _ in 0..5 {
        assert_eq!(ask().await.headers()["x-switchboard-model"], "small");
    }
    a.set_default(Behaviour::Delay(
        Duration::from_millis(250),
        Box::new(Behaviour::Answer("slow".into())),
    ));
    let mut models = Vec::new();
    for _ in 0..10 {
        models.push(
            ask().await.headers()["x-switchboard-model"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let switched = models
        .iter()
        .position(|m| m == "large")
        .expect("the slowed model was never excluded");
    assert!(
        models[switched..].iter().all(|m| m == "large"),
        "{models:?}"
    );
    assert!(
        switched <= 3,
        "excluded only after {switched} slow answers: {models:?}"
    );
    app.shutdown().await;
}
