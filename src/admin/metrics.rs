//! The gateway's Prometheus metrics. Labels come from fixed sets (listener, route, operation,
//! fault code, reason), never from message content, so cardinality is bounded and no personal
//! data can reach a metric.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub route: &'static str,
    pub operation: &'static str,
    /// `ok`, or the contract fault code.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: &'static str,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReason {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamError {
    pub upstream: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabels {
    pub digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerResult {
    pub listener: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TpmOp {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TpmOpResult {
    pub op: &'static str,
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric the gateway exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub handshake_failures: Family<ListenerReason, Counter>,
    pub connections_refused: Family<ListenerReason, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_parked: Family<ListenerLabels, Gauge>,
    pub upstream_errors: Family<UpstreamError, Counter>,
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    pub upstream_breaker_state: Family<UpstreamLabels, Gauge>,
    pub upstream_connections_opened: Family<UpstreamLabels, Counter>,
    pub in_flight: Gauge,
    pub policy_bundle: Family<BundleLabels, Gauge>,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub crl_reloads: Family<ListenerResult, Counter>,
    pub tpm_operations: Family<TpmOpResult, Counter>,
    pub tpm_duration: Family<TpmOp, Histogram, fn() -> Histogram>,
    /// Audit records and batches (one fsync each) written.
    pub audit: crate::audit::Written,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spocgw");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by listener, route, operation and outcome code", requests.clone());
        let request_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request headers to response",
            request_duration.clone(),
        );
        let upstream_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time spent waiting for the upstream",
            upstream_duration.clone(),
        );
        let handshake_failures = Family::<ListenerReason, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Refused or failed TLS handshakes by reason",
            handshake_failures.clone(),
        );
        let connections_refused = Family::<ListenerReason, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed unserved, by reason: a cap (connection, source, client) or headers not received in time",
            connections_refused.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register("connections_open", "Open client connections", connections_open.clone());
        let connections_parked = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_parked",
            "Open HTTP/1.1 client connections parked while idle (no HTTP buffers held)",
            connections_parked.clone(),
        );
        let upstream_errors = Family::<UpstreamError, Counter>::default();
        registry.register("upstream_errors", "Failed upstream exchanges by kind", upstream_errors.clone());
        let upstream_up = Family::<UpstreamLabels, Gauge>::default();
        registry.register("upstream_up", "1 when the upstream was reachable at the last attempt", upstream_up.clone());
        let upstream_breaker_state = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "upstream_breaker_state",
            "The upstream's circuit breaker: 0 closed, 1 open (refusing at once), 2 half-open (one trial out)",
            upstream_breaker_state.clone(),
        );
        let upstream_connections_opened = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_connections_opened",
            "Connections opened to the upstream (TCP, mutual TLS); pooled ones carry many exchanges each",
            upstream_connections_opened.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("requests_in_flight", "Requests being processed", in_flight.clone());
        let policy_bundle = Family::<BundleLabels, Gauge>::default();
        registry.register("policy_bundle", "1 for the active policy bundle's digest", policy_bundle.clone());
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register("policy_reloads", "Policy bundle reloads by result", policy_reloads.clone());
        let crl_reloads = Family::<ListenerResult, Counter>::default();
        registry.register("crl_reloads", "CRL reloads by listener and result", crl_reloads.clone());
        let tpm_operations = Family::<TpmOpResult, Counter>::default();
        registry.register("tpm_operations", "TPM operations by kind and result", tpm_operations.clone());
        let tpm_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("tpm_operation_duration_seconds", "Time of successful TPM operations", tpm_duration.clone());
        let audit = crate::audit::Written::default();
        registry.register("audit_records_written", "Audit records written and made durable", audit.records.clone());
        registry.register(
            "audit_batches_written",
            "Audit batches written, each made durable by one fsync",
            audit.batches.clone(),
        );
        Self {
            registry,
            audit,
            tpm_operations,
            tpm_duration,
            policy_bundle,
            policy_reloads,
            crl_reloads,
            requests,
            request_duration,
            upstream_duration,
            handshake_failures,
            connections_refused,
            connections_open,
            connections_parked,
            upstream_errors,
            upstream_up,
            upstream_breaker_state,
            upstream_connections_opened,
            in_flight,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl crate::tpm::Observer for Metrics {
    fn operation(&self, op: &'static str, ok: bool, took: std::time::Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.tpm_operations.get_or_create(&TpmOpResult { op, result }).inc();
        if ok {
            self.tpm_duration.get_or_create(&TpmOp { op }).observe(took.as_secs_f64());
        }
    }
}
