//! Refused TLS handshakes, on record without letting a flood write the disk full. A client
//! that presented a certificate the gateway refused (revoked, expired, untrusted, the wrong
//! purpose) gets a `handshake_refusal` record naming that certificate: who tried. Everything
//! else (a bare TCP connect and close, a timeout, no certificate, a protocol error), and
//! certificate refusals past [`RECORDS_PER_WINDOW`] in a window, is counted, and each window
//! with counts ends in one `handshake_refusals` summary record: counts per reason and per
//! source network (IPv4 /24, IPv6 /48; the [`NETWORKS_LISTED`] busiest, the rest summed).
//! The metrics count every refusal as before.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{Audit, ClientCert, Record};
use crate::tls::PeerIdentity;

/// Length of a window; each one with refusals ends in a summary record.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Individual `handshake_refusal` records per window at most.
pub const RECORDS_PER_WINDOW: u32 = 100;

/// Ends a window every [`WINDOW`] (its summary record written by `end`), until aborted.
pub async fn every_window(end: impl Fn()) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + WINDOW, WINDOW);
    loop {
        tick.tick().await;
        end();
    }
}
/// Source networks named in a summary; the others are summed as `other`.
pub const NETWORKS_LISTED: usize = 16;
/// Source networks counted apart in one window (memory stays bounded in a spread flood).
const NETWORKS_TRACKED: usize = 4096;

/// One listener's refused handshakes.
pub struct HandshakeRefusals {
    listener: &'static str,
    audit: Arc<Audit>,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    recorded: u32,
    reasons: HashMap<&'static str, u64>,
    networks: HashMap<IpNetwork, u64>,
    untracked: u64,
}

/// A source network: an IPv4 /24 or an IPv6 /48.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct IpNetwork(IpAddr);

impl IpNetwork {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                IpNetwork(IpAddr::from([a, b, c, 0]))
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpNetwork(IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0]))
            }
        }
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}/24"),
            IpAddr::V6(ip) => write!(f, "{ip}/48"),
        }
    }
}

impl HandshakeRefusals {
    pub fn new(listener: &'static str, audit: Arc<Audit>) -> Self {
        Self { listener, audit, window: Mutex::new(Window::default()) }
    }

    /// A refused handshake from `from`, with the certificate the client presented if it
    /// presented one.
    pub fn refused(&self, from: SocketAddr, reason: &'static str, presented: Option<&[u8]>) {
        let Ok(mut w) = self.window.lock() else { return };
        if let Some(der) = presented
            && w.recorded < RECORDS_PER_WINDOW
        {
            w.recorded += 1;
            drop(w);
            self.record(from, reason, der);
            return;
        }
        *w.reasons.entry(reason).or_default() += 1;
        let net = IpNetwork::of(from.ip());
        if w.networks.len() < NETWORKS_TRACKED || w.networks.contains_key(&net) {
            *w.networks.entry(net).or_default() += 1;
        } else {
            w.untracked += 1;
        }
    }

    fn record(&self, from: SocketAddr, reason: &'static str, der: &[u8]) {
        let mut r = Record::now("handshake_refusal");
        r.listener = Some(self.listener.to_owned());
        r.code = Some(reason.to_owned());
        r.detail = Some(format!("TLS handshake from {from} refused: {reason}"));
        // The certificate was refused, not verified: what it says is who *claims* to be
        // there; the fingerprint pins the exact certificate.
        let who = PeerIdentity::from_der(der).ok();
        r.client = Some(ClientCert {
            fingerprint: crate::encoding::sha256_hex(der),
            subject: who.as_ref().map(|p| p.subject.clone()).unwrap_or_default(),
            issuer: who.as_ref().map(|p| p.issuer.clone()).unwrap_or_default(),
            serial: who.as_ref().map(|p| p.serial.clone()).unwrap_or_default(),
        });
        self.audit.append(&r);
        let subject = who.as_ref().map_or("", |p| p.subject.as_str());
        tracing::warn!(listener = self.listener, peer_addr = %from, reason, subject, "TLS handshake refused");
    }

    /// Ends the window: one summary record of what was counted, if anything was.
    pub fn end_window(&self) {
        let Ok(mut w) = self.window.lock() else { return };
        let w = std::mem::take(&mut *w);
        let total: u64 = w.reasons.values().sum();
        if total == 0 {
            return;
        }
        let mut reasons: Vec<(&str, u64)> = w.reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut networks: Vec<(IpNetwork, u64)> = w.networks.into_iter().collect();
        networks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.0.cmp(&b.0.0)));
        let other: u64 = w.untracked + networks.iter().skip(NETWORKS_LISTED).map(|n| n.1).sum::<u64>();
        let mut r = Record::now("handshake_refusals");
        r.listener = Some(self.listener.to_owned());
        r.data = reasons.iter().map(|(reason, n)| format!("reason {reason} x{n}")).collect();
        r.data.extend(networks.iter().take(NETWORKS_LISTED).map(|(net, n)| format!("network {net} x{n}")));
        if other > 0 {
            r.data.push(format!("network other x{other}"));
        }
        r.detail = Some(format!("{total} TLS handshakes refused and summarised in this window"));
        self.audit.append(&r);
        tracing::warn!(listener = self.listener, refused = total, "TLS handshakes refused (summarised)");
    }
}

/// Requests refused for load, not content (`Overloaded`: an in-flight cap; `RateLimited`),
/// before they had a request record: the first [`RECORDS_PER_WINDOW`] of a window are recorded
/// one by one, the rest counted per code and per client certificate, and each window with
/// counts ends in one `request_refusals` summary record. A client kept over a cap writes a
/// bounded number of records, not one per refusal.
pub struct RequestRefusals {
    audit: Arc<Audit>,
    window: Mutex<RequestWindow>,
}

#[derive(Default)]
struct RequestWindow {
    recorded: u32,
    codes: HashMap<(&'static str, &'static str), u64>,
    /// Client fingerprint -> (subject, count).
    clients: HashMap<String, (String, u64)>,
    untracked: u64,
}

impl RequestRefusals {
    pub fn new(audit: Arc<Audit>) -> Self {
        Self { audit, window: Mutex::new(RequestWindow::default()) }
    }

    /// A request refused for load: its record (built by `record` only if it is written) goes
    /// on the log while the window allows, else it is counted.
    pub fn refused(
        &self,
        listener: &'static str,
        code: &'static str,
        peer: &PeerIdentity,
        record: impl FnOnce() -> Record,
    ) {
        let Ok(mut w) = self.window.lock() else { return };
        if w.recorded < RECORDS_PER_WINDOW {
            w.recorded += 1;
            drop(w);
            self.audit.append(&record());
            return;
        }
        *w.codes.entry((listener, code)).or_default() += 1;
        if w.clients.len() < NETWORKS_TRACKED || w.clients.contains_key(&peer.fingerprint) {
            w.clients.entry(peer.fingerprint.clone()).or_insert_with(|| (peer.subject.clone(), 0)).1 += 1;
        } else {
            w.untracked += 1;
        }
    }

    /// Ends the window: one summary record of what was counted, if anything was.
    pub fn end_window(&self) {
        let Ok(mut w) = self.window.lock() else { return };
        let w = std::mem::take(&mut *w);
        let total: u64 = w.codes.values().sum();
        if total == 0 {
            return;
        }
        let mut codes: Vec<((&str, &str), u64)> = w.codes.into_iter().collect();
        codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut clients: Vec<(String, (String, u64))> = w.clients.into_iter().collect();
        clients.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(&b.0)));
        let other: u64 = w.untracked + clients.iter().skip(NETWORKS_LISTED).map(|c| c.1.1).sum::<u64>();
        let mut r = Record::now("request_refusals");
        r.data = codes.iter().map(|((listener, code), n)| format!("listener {listener} code {code} x{n}")).collect();
        r.data.extend(
            clients.iter().take(NETWORKS_LISTED).map(|(fp, (subject, n))| format!("client {fp} ({subject}) x{n}")),
        );
        if other > 0 {
            r.data.push(format!("client other x{other}"));
        }
        r.detail = Some(format!("{total} requests refused for load and summarised in this window"));
        self.audit.append(&r);
        tracing::warn!(refused = total, "requests refused for load (summarised)");
    }
}

#[cfg(test)]
mod tests {
    use super::IpNetwork;

    #[test]
    fn networks() {
        assert_eq!(IpNetwork::of("192.0.2.77".parse().unwrap()).to_string(), "192.0.2.0/24");
        assert_eq!(IpNetwork::of("2001:db8:1:2:3::9".parse().unwrap()).to_string(), "2001:db8:1::/48");
    }
}
