//! Logging: human-readable text by default, JSON lines with `log.format = "json"`.
//! `RUST_LOG`, when set, wins over `log.level`.

use tracing_subscriber::EnvFilter;

use crate::settings::LogSettings;

pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
