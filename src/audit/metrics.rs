//! The audit log's metrics: what it has written, how long a batch took to be durable, failed
//! writes, and whether the log and its duties thread run. The gateway registers them in its
//! exposition; the log's committer updates them.

use prometheus_client::metrics::counter::Counter;

/// What the log has written, for the metrics: records, batches (one fsync each), how long a
/// batch took to be durable, failed writes, and whether the log writes.
#[derive(Clone)]
pub struct AuditMetrics {
    pub records: Counter,
    pub batches: Counter,
    pub failures: Counter,
    pub healthy: prometheus_client::metrics::gauge::Gauge,
    pub duties: prometheus_client::metrics::gauge::Gauge,
    pub write_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self {
            records: Counter::default(),
            batches: Counter::default(),
            failures: Counter::default(),
            healthy: Default::default(),
            duties: Default::default(),
            write_seconds: crate::admin::metrics::latency_histogram(),
        }
    }
}

impl AuditMetrics {
    /// Registers the log's metrics in the gateway's exposition.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("audit_records_written", "Audit records written and made durable", self.records.clone());
        registry.register(
            "audit_batches_written",
            "Audit batches written, each made durable by one fsync",
            self.batches.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit batches that could not be made durable (their requests refused)",
            self.failures.clone(),
        );
        registry.register(
            "audit_healthy",
            "1 while the audit log writes; 0 after a failed write, until one succeeds",
            self.healthy.clone(),
        );
        registry.register(
            "audit_duties_running",
            "1 while the audit duties thread (checkpoints, spool, rotation, retention) runs; 0 once it ended",
            self.duties.clone(),
        );
        registry.register(
            "audit_write_duration_seconds",
            "Time to write a batch and make it durable (its fsync)",
            self.write_seconds.clone(),
        );
    }
}
