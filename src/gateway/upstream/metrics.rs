//! The upstreams' metrics, by upstream name: exchange time, failures by kind, reachability, the
//! breaker's state and connections opened.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{Reply, Upstream, UpstreamError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: &'static str,
    kind: &'static str,
}

/// The upstreams' metrics, by upstream name (`ministry`, `police_callback`).
pub struct UpstreamMetrics {
    duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    errors: Family<UpstreamErrorLabels, Counter>,
    up: Family<UpstreamLabels, Gauge>,
    breaker_state: Family<UpstreamLabels, Gauge>,
    connections_opened: Family<UpstreamLabels, Counter>,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(crate::admin::metrics::latency_histogram as fn() -> Histogram),
            errors: Family::default(),
            up: Family::default(),
            breaker_state: Family::default(),
            connections_opened: Family::default(),
        }
    }
}

impl UpstreamMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("upstream_duration_seconds", "Time spent waiting for the upstream", self.duration.clone());
        registry.register("upstream_errors", "Failed upstream exchanges by kind", self.errors.clone());
        registry.register("upstream_up", "1 when the upstream was reachable at the last attempt", self.up.clone());
        registry.register(
            "upstream_breaker_state",
            "The upstream's circuit breaker: 0 closed, 1 open (refusing at once), 2 half-open (one trial out)",
            self.breaker_state.clone(),
        );
        registry.register(
            "upstream_connections_opened",
            "Connections opened to the upstream (TCP, mutual TLS); pooled ones carry many exchanges each",
            self.connections_opened.clone(),
        );
    }

    /// From now on `upstream` counts the connections it opens, and shows its breaker's state,
    /// under `name`.
    pub fn attach(&self, name: &'static str, upstream: &Upstream) {
        let labels = UpstreamLabels { upstream: name };
        let _ = upstream.inner.pool.opened.set(self.connections_opened.get_or_create(&labels).clone());
        upstream.inner.breaker.attach(self.breaker_state.get_or_create(&labels).clone());
    }

    /// One exchange: how long it took and, when it got to try (not every pooled connection
    /// busy), whether the upstream was reachable; a failure by its kind.
    pub fn exchange(&self, name: &'static str, took: Duration, result: &Result<Reply, UpstreamError>) {
        let labels = UpstreamLabels { upstream: name };
        self.duration.get_or_create(&labels).observe(took.as_secs_f64());
        if !matches!(result, Err(UpstreamError::Busy(..))) {
            self.up.get_or_create(&labels).set(i64::from(result.is_ok()));
        }
        if let Err(e) = result {
            self.failed(name, e.kind());
        }
    }

    /// An exchange that failed after the upstream answered (`status`, `invalid_reply`).
    pub fn failed(&self, name: &'static str, kind: &'static str) {
        self.errors.get_or_create(&UpstreamErrorLabels { upstream: name, kind }).inc();
    }

    /// The gauge that says whether `name` was reachable at the last attempt.
    pub fn up(&self, name: &'static str) -> Gauge {
        self.up.get_or_create(&UpstreamLabels { upstream: name }).clone()
    }
}
