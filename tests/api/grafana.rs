//! The Grafana dashboard (deploy/grafana/dashboards/switchboard.json): it
//! parses, every panel uses a provisioned datasource, every SQL panel runs
//! against the views and rollups of a migrated, seeded Postgres and returns
//! rows, and every Prometheus panel names metrics the router exports.

use std::collections::BTreeSet;

use serde_json::Value;
use switchboard::store::Store;
use switchboard::telemetry::names;
use yaml_rust2::YamlLoader;

use crate::dashboard::seed;
use crate::helpers::fresh_postgres;

/// Grafana's macros as Grafana expands them for Postgres, over a window
/// that holds the seeded rows.
fn expand_macros(sql: &str) -> String {
    let mut out = sql.to_owned();
    for (mac, f) in [
        (
            "$__timeFilter(",
            "BETWEEN now() - interval '7 days' AND now() + interval '1 day'",
        ),
        (
            "$__unixEpochFilter(",
            "BETWEEN extract(epoch FROM now() - interval '7 days')::bigint \
             AND extract(epoch FROM now() + interval '1 day')::bigint",
        ),
    ] {
        while let Some(start) = out.find(mac) {
            let end = start + out[start..].find(')').unwrap();
            let column = out[start + mac.len()..end].to_owned();
            out.replace_range(start..=end, &format!("{column} {f}"));
        }
    }
    assert!(!out.contains("$__"), "an unexpanded macro in {out}");
    out
}

#[tokio::test]
async fn every_grafana_panel_runs_against_the_views() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/dashboards/switchboard.json"))
            .unwrap(),
    )
    .unwrap();
    let ds = std::fs::read_to_string(format!(
        "{root}/deploy/grafana/provisioning/datasources/switchboard.yml"
    ))
    .unwrap();
    let ds = &YamlLoader::load_from_str(&ds).unwrap()[0];
    let uids: BTreeSet<String> = ds["datasources"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap().to_owned())
        .collect();

    let url = fresh_postgres().await;
    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    seed(&store).await;
    let Store::Postgres(pool) = &store else {
        unreachable!()
    };

    let panels = dash["panels"].as_array().unwrap();
    let (mut sql_panels, mut prom_panels) = (0, 0);
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate id: {title}"
        );
        let uid = p["datasource"]["uid"].as_str().unwrap();
        assert!(uids.contains(uid), "{title}: unknown datasource {uid}");
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"].as_str(), Some(uid));
            if let Some(sql) = t["rawSql"].as_str() {
                let rows = sqlx::query(&expand_macros(sql))
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"));
                assert!(!rows.is_empty(), "{title} returned no rows");
                sql_panels += 1;
            } else {
                let expr = t["expr"].as_str().unwrap();
                assert!(
                    [
                        names::REQUESTS,
                        names::REQUEST_LATENCY,
                        names::BREAKER_STATE
                    ]
                    .iter()
                    .any(|m| expr.contains(m)),
                    "{title}: {expr}"
                );
                prom_panels += 1;
            }
        }
    }
    assert!(
        sql_panels >= 8 && prom_panels >= 1,
        "{sql_panels} {prom_panels}"
    );
    store.close().await;
}
