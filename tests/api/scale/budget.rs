//! A key's budget spread over three replicas.

use super::*;

/// Budgets across replicas (docs/scaling.md, "Budgets"): leases from one
/// shared ledger, so the documented overshoot bound is what real costs
/// exceed their reservations — zero here, where every answer costs less
/// than its reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_spread_over_three_replicas_is_not_overshot() {
    let (a, b) = mocks().await;
    // Slow answers keep the whole burst in flight at once.
    a.set_default(crate::mock::Behaviour::Delay(
        Duration::from_millis(300),
        Box::new(crate::mock::Behaviour::Answer("ok".into())),
    ));
    let cfg = config(&a.base_url(), &b.base_url()).replace(
        "request_timeout_ms = 5000",
        "request_timeout_ms = 20000\nrequire_api_keys = true",
    );
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_postgres().await;
    let mut replicas = Vec::new();
    for id in ["r0", "r1", "r2"] {
        replicas.push(start(&cfg, dir.path(), &db, id).await);
    }
    let http = reqwest::Client::new();
    // `small` costs $1 / $2 per Mtok; the mock reports 12 + 5 tokens
    // ($22e-6); the reservation (local prompt count + 10 output tokens) is
    // larger. Unbounded by leases, 3 replicas x 20 requests would spend $1,320e-6.
    let budget = 300e-6;
    let created: Value = http
        .post(format!("{}/admin/keys", replicas[0].base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"budget_usd_per_day": budget}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (key_id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let body = json!({"model": "small", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Say hello to the three replicas."}]});
    let call = |base: String| {
        let (http, key, body) = (http.clone(), key.clone(), body.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    // Each replica meets the key once (its first use reads the key store).
    for r in &replicas {
        assert_eq!(call(r.base.clone()).await.0, 200);
    }
    let burst = (0..60).map(|i| call(replicas[i % 3].base.clone()));
    let results = futures_util::future::join_all(burst).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count() + 3;
    for (status, code) in &results {
        match status {
            200 => {}
            429 => assert_eq!(code, "budget_exceeded"),
            s => panic!("unexpected status {s} ({code})"),
        }
    }
    assert!(ok < 63, "some requests were refused");

    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE api_key_id = $1")
            .bind(&key_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if n >= ok as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spent: f64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE api_key_id = $1")
            .bind(&key_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let granted: f64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(granted_usd), 0) FROM budget_leases WHERE key_id = $1 AND period LIKE 'day:%'",
    )
    .bind(&key_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(
        spent <= budget + 1e-12,
        "spent {spent} over a budget of {budget}"
    );
    assert!(granted <= budget + 1e-12, "granted {granted} of {budget}");
    // Leases strand at most about one lease and one reservation per replica.
    assert!(spent >= budget / 2.0, "only {spent} of {budget} was usable");
}
