//! The Prometheus exposition. Each stage owns its metrics (the listener's connections, the
//! pipeline's requests, the upstreams, the reloads, the TPM, the audit log) and registers them
//! here; the admin listener only encodes the registry. Labels come from fixed sets (listener,
//! route, operation, fault code, reason), never from message content, so cardinality is
//! bounded and no personal data can reach a metric.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The latency buckets every duration histogram uses: 0.25 ms to about 8 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The registry the stages register their metrics in, every name prefixed `spocgw_`.
pub fn registry() -> Registry {
    Registry::with_prefix("spocgw")
}

/// The metrics the admin listener exports, once every stage has registered its own.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
