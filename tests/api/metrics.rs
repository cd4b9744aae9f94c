//! `/metrics` after known traffic, read with a small Prometheus text-format
//! parser: the families, their types and labels, and the counts. The
//! recorder is process-wide and shared by every test app, so this test uses
//! model and route names of its own and reads only its own series.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::helpers::{spawn, two_providers, Db};
use crate::mock::{Behaviour, MockUpstream};

#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Parses the text exposition format (0.0.4): `# TYPE` lines and samples
/// `name{k="v",...} value`; label values may contain escaped quotes.
fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            out.types.insert(name.into(), kind.into());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(i) => {
                let end = line.rfind('}').expect("closing brace");
                (
                    &line[..i],
                    parse_labels(&line[i + 1..end]),
                    &line[end + 1..],
                )
            }
            None => {
                let (n, r) = line.split_once(' ').expect("sample");
                (n, BTreeMap::new(), r)
            }
        };
        let value = rest.split_whitespace().next().expect("value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.samples.push((name.into(), labels, value));
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.trim().is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label value must be quoted in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(match chars.next() {
                    Some('n') => '\n',
                    Some(o) => o,
                    None => break,
                }),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

impl Exposition {
    /// The value of the one sample of `name` whose labels include `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let hits: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            hits.len() <= 1,
            "{name} {want:?} matches {} samples",
            hits.len()
        );
        hits.first().copied()
    }
}

#[test]
fn the_parser_reads_labels_with_escapes() {
    let e = parse("# TYPE x counter\nx{a=\"1\",b=\"q\\\"uote\"} 3\ny 1.5\n");
    assert_eq!(e.types["x"], "counter");
    assert_eq!(e.value("x", &[("b", "q\"uote")]), Some(3.0));
    assert_eq!(e.value("y", &[]), Some(1.5));
}

#[tokio::test]
async fn metrics_cover_requests_errors_latency_tokens_cost_and_the_outbox() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    // Own names: the recorder is shared with every other test in the binary.
    let cfg = two_providers(&a.base_url(), &b.base_url())
        .replace("\"small\"", "\"mx-small\"")
        .replace("\"large\"", "\"mx-large\"")
        .replace("\"ordered\"", "\"mx-ordered\"")
        .replace("\"auto\"", "\"mx-auto\"");
    let app = spawn(&cfg, Db::Postgres).await;
    let hi = |stream: bool| {
        json!({"model": "mx-ordered", "stream": stream,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]})
    };
    for _ in 0..2 {
        assert_eq!(app.chat(hi(false)).await.status(), 200);
    }
    assert!(app
        .chat(hi(true))
        .await
        .text()
        .await
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
    // Both attempts on mx-small fail with 500, then mx-large answers.
    a.script([Behaviour::Status(500, None), Behaviour::Status(500, None)]);
    assert_eq!(app.chat(hi(false)).await.status(), 200);
    // Both models fail: a request error.
    a.script([Behaviour::Status(400, None)]);
    assert_eq!(app.chat(hi(false)).await.status(), 400);
    app.wait_count("requests", 5).await;

    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = parse(&text);
    for (family, kind) in [
        ("switchboard_requests_total", "counter"),
        ("switchboard_request_errors_total", "counter"),
        ("switchboard_upstream_errors_total", "counter"),
        ("switchboard_request_duration_seconds", "histogram"),
        ("switchboard_time_to_first_token_seconds", "histogram"),
        ("switchboard_tokens_total", "counter"),
        ("switchboard_cost_microusd_total", "counter"),
        ("switchboard_circuit_state", "gauge"),
        ("switchboard_outbox_depth", "gauge"),
        ("switchboard_outbox_batch_size", "histogram"),
        ("switchboard_events_written_total", "counter"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let small = [
        ("route", "mx-ordered"),
        ("model", "mx-small"),
        ("provider", "alpha"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = small.to_vec();
        l.push(extra);
        l
    };
    // Two plain answers and one stream on mx-small.
    assert_eq!(
        m.value("switchboard_requests_total", &with(("status", "2xx"))),
        Some(3.0)
    );
    assert_eq!(
        m.value("switchboard_requests_total", &with(("status", "4xx"))),
        Some(1.0)
    );
    let large = [
        ("route", "mx-ordered"),
        ("model", "mx-large"),
        ("provider", "beta"),
        ("status", "2xx"),
    ];
    assert_eq!(m.value("switchboard_requests_total", &large), Some(1.0));
    assert_eq!(
        m.value(
            "switchboard_request_errors_total",
            &with(("kind", "invalid_request"))
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "switchboard_upstream_errors_total",
            &[
                ("model", "mx-small"),
                ("provider", "alpha"),
                ("kind", "server_error")
            ]
        ),
        Some(2.0)
    );
    // A histogram: cumulative buckets up to +Inf equal to the count.
    assert_eq!(
        m.value("switchboard_request_duration_seconds_count", &small),
        Some(4.0)
    );
    assert_eq!(
        m.value(
            "switchboard_request_duration_seconds_bucket",
            &with(("le", "+Inf"))
        ),
        Some(4.0)
    );
    assert!(m
        .value(
            "switchboard_request_duration_seconds_bucket",
            &with(("le", "0.005"))
        )
        .is_some());
    assert_eq!(
        m.value("switchboard_time_to_first_token_seconds_count", &small),
        Some(1.0)
    );
    // Tokens and cost agree with what the store recorded for mx-small.
    let (input, output, cost): (i64, i64, f64) = match &app.store {
        switchboard::store::Store::Postgres(p) => sqlx::query_as(
            "SELECT SUM(prompt_tokens)::BIGINT, SUM(completion_tokens)::BIGINT, SUM(cost_usd) \
             FROM requests WHERE model = 'mx-small' AND status = 'ok'",
        )
        .fetch_one(p)
        .await
        .unwrap(),
        switchboard::store::Store::Sqlite(_) => unreachable!(),
    };
    assert_eq!(input, 36, "12 prompt tokens per answer");
    assert_eq!(
        m.value("switchboard_tokens_total", &with(("type", "input"))),
        Some(input as f64)
    );
    assert_eq!(
        m.value("switchboard_tokens_total", &with(("type", "output"))),
        Some(output as f64)
    );
    assert_eq!(
        m.value("switchboard_cost_microusd_total", &small),
        Some((cost * 1e6).round())
    );
    assert_eq!(
        m.value("switchboard_circuit_state", &[("model", "mx-large")]),
        Some(0.0)
    );
    assert!(m.value("switchboard_events_written_total", &[]).unwrap() >= 5.0);
    assert!(m.value("switchboard_outbox_batch_size_count", &[]).unwrap() >= 1.0);
    app.shutdown().await;
}
