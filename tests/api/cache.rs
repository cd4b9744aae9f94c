use serde_json::{json, Value};

use crate::chat::sse_data;
use crate::helpers::{spawn, two_providers, Db};
use crate::mock::MockUpstream;

#[tokio::test]
async fn a_cache_hit_returns_the_same_answer_costs_nothing_and_calls_no_upstream() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = format!(
        "{}\n[[routes]]\nname = \"cached\"\nmodels = [\"small\"]\npolicy = \"fixed\"\n[routes.cache]\nttl_s = 300\n",
        two_providers(&a.base_url(), &b.base_url())
    );
    let app = spawn(&cfg, Db::Postgres).await;
    let req = json!({"model": "cached", "temperature": 0, "messages": [{"role": "user", "content": "What is 2+2?"}]});
    let first: Value = app.chat(req.clone()).await.json().await.unwrap();
    assert_eq!(a.calls(), 1);

    let r = app.chat(req.clone()).await;
    assert_eq!(r.headers()["x-switchboard-policy-version"], "cache");
    let id = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let second: Value = r.json().await.unwrap();
    assert_eq!(a.calls(), 1, "a hit never reaches the upstream");
    assert_eq!(second["id"], id);
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["choices"], first["choices"]);
    assert_eq!(second["model"], "small");
    let row = app.request_row(&id).await;
    assert_eq!(row.cost_usd, 0.0);
    let hits: i64 = match &app.store {
        switchboard::store::Store::Postgres(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE cache_hit")
                .fetch_one(p)
                .await
                .unwrap()
        }
        switchboard::store::Store::Sqlite(_) => unreachable!(),
    };
    assert_eq!(hits, 1);

    // Served from the cache as a stream.
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let frames = sse_data(&app.chat(streamed).await.text().await.unwrap());
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let text: String = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        text,
        first["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(a.calls(), 1);

    // A sampling request bypasses the cache.
    let mut sampled = req.clone();
    sampled["temperature"] = json!(0.7);
    app.chat(sampled).await;
    assert_eq!(a.calls(), 2);
    app.shutdown().await;
}
