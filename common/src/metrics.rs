//! Prometheus metrics: each service builds its own set into a [`Registry`] and serves
//! [`render`] at `/metrics`. The text is OpenMetrics, which Prometheus scrapes as is.

pub use prometheus_client;
pub use prometheus_client::registry::Registry;

use prometheus_client::metrics::histogram::Histogram;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes every metric of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// A latency histogram in seconds, from 100 µs to about 6.5 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 17,
    ))
}

/// Registers each named field of `$metrics` in `$registry` under the field's own name,
/// with its help text: `register_fields!(registry, metrics; commands: "Commands handled",)`.
#[macro_export]
macro_rules! register_fields {
    ($registry:expr, $metrics:expr; $($field:ident: $help:literal,)*) => {
        $($registry.register(stringify!($field), $help, $metrics.$field.clone());)*
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn renders_counters_and_histograms() {
        let mut registry = Registry::with_prefix("warren_test");
        let c: Counter = Counter::default();
        let h = latency_histogram();
        registry.register("things", "Things seen", c.clone());
        registry.register("delay_seconds", "Delay", h.clone());
        c.inc_by(3);
        h.observe(0.002);
        let text = render(&registry);
        assert!(text.contains("warren_test_things_total 3"), "{text}");
        assert!(text.contains("warren_test_delay_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
