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
