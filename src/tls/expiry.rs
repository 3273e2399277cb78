//! `spocgw_certificate_expiry_seconds{listener,role}`: how long each certificate the gateway
//! presents or trusts stays valid, computed at each scrape (negative once expired). For an
//! alert a month ahead of a rollover that is easy to forget.

use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// The certificates, by endpoint (`police`, `callback`, `pair`, `ministry`, `police_callback`)
/// and role (`server`, `client`, `client_ca`, `server_ca`), with when they stop being valid.
#[derive(Debug, Default)]
pub struct CertExpiry {
    certs: Vec<(&'static str, &'static str, i64)>,
}

impl CertExpiry {
    /// Adds the file's certificate that expires first (a leaf, or the earliest of a CA bundle);
    /// a file that cannot be read adds nothing (the gateway did not start with it anyway).
    pub fn add(&mut self, listener: &'static str, role: &'static str, file: &Path) {
        let Ok(certs) = super::load_certs(file) else { return };
        let earliest = certs
            .iter()
            .filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
            .map(|(_, c)| c.validity().not_after.timestamp())
            .min();
        if let Some(t) = earliest {
            self.certs.push((listener, role, t));
        }
    }
}

impl Collector for CertExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.certs.is_empty() {
            return Ok(());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut family = encoder.encode_descriptor(
            "certificate_expiry_seconds",
            "Seconds until the certificate expires (negative: expired), by endpoint and role",
            None,
            MetricType::Gauge,
        )?;
        for (listener, role, not_after) in &self.certs {
            let gauge = ConstGauge::new(not_after - now);
            gauge.encode(family.encode_family(&[("listener", *listener), ("role", *role)])?)?;
        }
        Ok(())
    }
}
