//! OTLP trace export (OTLP/HTTP with protobuf) when an endpoint is
//! configured: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL; `/v1/traces` is
//! appended), as the OpenTelemetry specification names them, and
//! `OTEL_SERVICE_NAME` (default `switchboard`).
//!
//! The spans are the ones of `spans.rs` (request, decision, upstream call)
//! with their GenAI semantic-convention fields; `tracing-opentelemetry`
//! turns span fields into attributes, so what is exported is exactly what
//! those spans record: names, counts, ids — never a prompt or a key.
//! Spans are batched and exported from the SDK's own thread, off the
//! request path; the exporter's HTTP client logs are kept out of the
//! exported spans (no feedback loop).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::Env;

/// The traces endpoint the environment configures, if any.
pub fn endpoint(env: &Env) -> Option<String> {
    let set = |k: &str| env.get(k).filter(|v| !v.trim().is_empty()).cloned();
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        set("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    })
}

/// A tracer provider exporting to `endpoint` in batches.
pub fn provider(
    endpoint: &str,
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// The `tracing` layer that records spans into `provider`'s tracer.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // Without context activation an OpenTelemetry span starts when its first
    // child needs it or when it closes, so a name recorded after the span
    // was entered (`chat {model}`, known once the body is parsed) still
    // names it. Nothing here propagates OpenTelemetry context elsewhere.
    let layer: OpenTelemetryLayer<S, SdkTracer> = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchboard"))
        .with_context_activation(false);
    // The exporter's own HTTP stack must not feed spans back into it.
    let filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
        .with_target("opentelemetry_http", LevelFilter::OFF);
    layer.with_filter(filter)
}
