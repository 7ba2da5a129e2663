//! Logging: human-readable text by default, JSON lines with `log.format = "json"`.
//! `RUST_LOG`, when set, wins over `log.level`.
//!
//! The trace spans ([`crate::trace`]) log under the target `warren::trace` at debug
//! level. With the `otlp` cargo feature and `trace.otlp_endpoint` set, those spans are
//! also exported to an OpenTelemetry collector, whatever the log filter says; without
//! them the subscriber is exactly the logging one, so nothing is paid for the exporter.

use tracing_subscriber::EnvFilter;

use crate::settings::{LogSettings, TraceSettings};

/// What must outlive the service for its telemetry: with an exporter, dropping this
/// sends the spans still batched (so `main` keeps it until it returns).
#[must_use = "dropping it stops the span exporter"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("exporting the last trace spans failed: {e}");
            }
        }
    }
}

fn filter(log: &LogSettings) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logging only, for processes that export no spans (bots, in-process tests).
pub fn init(log: &LogSettings) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(log))
        .with_target(true);
    // A second init (tests that start services in-process) keeps the first subscriber.
    let _already_set = if log.format == "json" {
        // The current span's fields go on each line: a line logged inside a trace span
        // (`warren::trace=debug`) carries that span's `trace_id`.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

/// Logging, and the span exporter when `trace` asks for one. `service` names the spans'
/// source when `trace.service_name` is empty.
pub fn init_service(log: &LogSettings, trace: &TraceSettings, service: &str) -> Telemetry {
    if trace.otlp_endpoint.is_empty() {
        init(log);
        return Telemetry {
            #[cfg(feature = "otlp")]
            provider: None,
        };
    }
    let name = if trace.service_name.is_empty() {
        service
    } else {
        trace.service_name.as_str()
    };
    exporting(log, &trace.otlp_endpoint, name)
}

#[cfg(not(feature = "otlp"))]
fn exporting(log: &LogSettings, _endpoint: &str, _service: &str) -> Telemetry {
    init(log);
    tracing::warn!(
        "trace.otlp_endpoint is set, but this build has no OpenTelemetry exporter (cargo feature `otlp`); no spans are exported"
    );
    Telemetry {}
}

#[cfg(feature = "otlp")]
fn exporting(log: &LogSettings, endpoint: &str, service: &str) -> Telemetry {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let (provider, tracer) = match crate::otlp::pipeline(endpoint, service) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            init(log);
            tracing::error!(error = %e, "the OpenTelemetry exporter could not be built; no spans are exported");
            return Telemetry { provider: None };
        }
    };
    // Each layer filters for itself: the log lines as `log.level` says, the exporter
    // the trace spans only.
    let logs = tracing_subscriber::fmt::layer().with_target(true);
    let logs = if log.format == "json" {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter(log))
            .boxed()
    } else {
        logs.with_ansi(false).with_filter(filter(log)).boxed()
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target(crate::trace::TARGET, LevelFilter::DEBUG));
    let _already_set = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    tracing::info!(endpoint = %crate::otlp::traces_url(endpoint), service, "exporting trace spans over OTLP/HTTP");
    Telemetry {
        provider: Some(provider),
    }
}
