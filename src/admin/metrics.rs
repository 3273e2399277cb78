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

/// `spocgw_build_info{version}` 1: which build answers.
pub fn register_build_info(registry: &mut Registry) {
    let info: prometheus_client::metrics::family::Family<
        [(&'static str, &'static str); 1],
        prometheus_client::metrics::gauge::Gauge,
    > = Default::default();
    info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))]).set(1);
    registry.register("build_info", "The running build (1), by version", info);
}

/// The standard process metrics (`process_*`), read from /proc at each scrape, in OpenMetrics
/// text (counters without `_total` in their family lines).
fn process_metrics() -> String {
    let mut out = String::new();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis (the command may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let ticks = 100.0; // USER_HZ on Linux
    let page = 4096.0;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok()));
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let sample = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
            out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n{sample} {v}\n"));
        }
    };
    metric(
        "process_cpu_seconds",
        "counter",
        "Total user and system CPU time spent in seconds",
        field(14).zip(field(15)).map(|(u, s)| (u + s) / ticks),
    );
    metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes", field(23));
    metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes", field(24).map(|p| p * page));
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds",
        field(22).zip(boot).map(|(s, b)| b + s / ticks),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors",
        std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64),
    );
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
        t.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse::<f64>().ok()
    });
    metric("process_max_fds", "gauge", "Maximum number of open file descriptors", max_fds);
    out
}

/// OpenMetrics text as the Prometheus text format 0.0.4 (what `promtool check metrics` and
/// older scrapers read): a counter family's HELP and TYPE name its `_total` samples, no `# EOF`
/// and no `# UNIT`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The metrics the admin listener exports, once every stage has registered its own.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// The OpenMetrics text exposition, with the process metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        let end = out.rfind("# EOF").unwrap_or(out.len());
        out.insert_str(end, &process_metrics());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_in_the_prometheus_text_format() {
        let om = "# HELP spocgw_requests Requests.\n# TYPE spocgw_requests counter\nspocgw_requests_total{code=\"ok\"} 1\n# HELP spocgw_up Up.\n# TYPE spocgw_up gauge\nspocgw_up 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP spocgw_requests_total Requests.\n# TYPE spocgw_requests_total counter\nspocgw_requests_total{code=\"ok\"} 1\n# HELP spocgw_up Up.\n# TYPE spocgw_up gauge\nspocgw_up 1\n"
        );
        let mut registry = registry();
        register_build_info(&mut registry);
        let text = Exposition::new(registry).encode();
        assert!(
            text.contains("spocgw_build_info{version=\"") && text.contains("process_resident_memory_bytes "),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total ") && text.ends_with("# EOF\n"), "{text}");
    }
}
