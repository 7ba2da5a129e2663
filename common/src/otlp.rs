//! The optional OpenTelemetry exporter (cargo feature `otlp`). Only the trace spans
//! (target [`crate::trace::TARGET`]) are exported, over OTLP/HTTP with protobuf bodies,
//! in batches from the SDK's own thread. A span's ids are the ones its `traceparent`
//! headers carry: the span is parented on the incoming hop, and the hop it hands on is
//! read back from the exported span ([`adopt`]), so logs, headers and the collector
//! agree on every id.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace::TraceParent;

pub use opentelemetry_otlp::ExporterBuildError;

/// The traces URL of a collector's OTLP/HTTP base URL.
pub fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// A provider exporting to `endpoint`, and the tracer the `tracing` layer uses.
pub fn pipeline(
    endpoint: &str,
    service: &str,
) -> Result<(SdkTracerProvider, SdkTracer), ExporterBuildError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("warren");
    Ok((provider, tracer))
}

/// Parents `span`'s OpenTelemetry span on `parent` and returns the hop that span is,
/// or `None` when no exporter is installed (the caller's own ids then serve).
pub(crate) fn adopt(span: &tracing::Span, parent: Option<TraceParent>) -> Option<TraceParent> {
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        span.set_parent(Context::new().with_remote_span_context(remote))
            .ok()?;
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| TraceParent {
        trace_id: own.trace_id().to_bytes(),
        parent_id: own.span_id().to_bytes(),
        flags: own.trace_flags().to_u8(),
    })
}
