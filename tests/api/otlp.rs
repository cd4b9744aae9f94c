//! OTLP trace export: the real router binary answers a request while its spans go
//! through the exporter `serve` installs (OTLP/HTTP, protobuf) to a
//! small receiver in the test, which decodes every export. The request, the
//! decision and the upstream call arrive as spans of one trace with their
//! GenAI semantic-convention attributes; neither the prompt nor the
//! provider key is anywhere in what was exported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::helpers::two_providers;
use crate::mock::MockUpstream;
use crate::process::{sigterm, start_binary_with, Launch};
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

const PROMPT: &str = "zebra-crossing-secret-prompt-7731";

type Bodies = Arc<Mutex<Vec<Vec<u8>>>>;

/// An OTLP/HTTP receiver on its own thread and runtime (the exporter's
/// thread posts to it while the test's runtime is busy with the app).
fn receiver() -> (String, Bodies) {
    let bodies: Bodies = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let store = bodies.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                post(move |body: Bytes| {
                    let store = store.clone();
                    async move {
                        store.lock().unwrap().push(body.to_vec());
                        // An empty ExportTraceServiceResponse.
                        (
                            [("content-type", "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/v1/traces"), bodies)
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tokio::test]
async fn spans_are_exported_over_otlp_with_genai_attributes_and_no_prompt_or_key() {
    let (endpoint, bodies) = receiver();
    // The real binary, so its own global subscriber and exporter are what
    // is tested (an in-process subscriber set for one test thread missed
    // spans when other tests ran in parallel in the same process).
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/otlp.db", dir.path().display());
    let mut router = start_binary_with(
        &two_providers(&a.base_url(), &b.base_url()),
        dir.path(),
        &db,
        Launch {
            env: vec![
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.clone()),
                ("OTEL_SERVICE_NAME", "switchboard-test".into()),
            ],
            output: None,
            name: None,
        },
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", router.base))
        .json(&json!({"model": "ordered", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // A graceful stop flushes the batched spans before the process exits.
    sigterm(&router.child);
    let status = tokio::task::spawn_blocking(move || router.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the router exited with {status}");

    let raw: Vec<Vec<u8>> = bodies.lock().unwrap().clone();
    assert!(!raw.is_empty(), "nothing was exported");
    let mut spans: Vec<Span> = Vec::new();
    for body in &raw {
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains(PROMPT), "the prompt was exported");
        assert!(
            !text.contains("sk-test-secret"),
            "the provider key was exported"
        );
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .map(|r| {
                    r.attributes.iter().any(|kv| {
                        kv.key == "service.name"
                            && format!("{:?}", kv.value).contains("switchboard-test")
                    })
                })
                .unwrap_or(false);
            assert!(service, "service.name is set");
            spans.extend(rs.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let request = spans
        .iter()
        .find(|s| attributes(s).get("request_id") == Some(&request_id))
        .unwrap_or_else(|| panic!("no request span among {names:?}"));
    let attrs = attributes(request);
    assert_eq!(request.name, "chat ordered");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(attrs["gen_ai.operation.name"], "chat");
    assert_eq!(attrs["gen_ai.request.model"], "ordered");
    assert_eq!(attrs["gen_ai.response.model"], "small");
    assert_eq!(attrs["gen_ai.system"], "openai");
    assert_eq!(attrs["switchboard.route"], "ordered");
    assert!(attrs["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
    assert!(attrs["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0);

    let upstream = spans
        .iter()
        .find(|s| s.trace_id == request.trace_id && s.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("no upstream span in the request's trace among {names:?}"));
    let up = attributes(upstream);
    assert_eq!(upstream.name, "chat alpha-small-2024");
    assert_eq!(up["gen_ai.request.model"], "alpha-small-2024");
    assert_eq!(up["gen_ai.provider.name"], "openai");
    assert_eq!(up["switchboard.model"], "small");
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == request.trace_id && s.name == "decide"),
        "no decision span in the request's trace among {names:?}"
    );
}
