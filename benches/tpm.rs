//! Key custody figures on swtpm (run by `make bench`; throughput runs, not criterion):
//! - TPM signature latency (ECDSA P-256 over a SHA-256 digest, persistent key);
//! - new mutual-TLS handshakes per second to the simulated Ministry with the TPM client key,
//!   against the same with a file key;
//! - TPM signatures per 1,000 requests through the gateway (pooled upstream connections keep
//!   signatures off the per-request path).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spocgw::cli::dev_pki::{self, DevTpm, Ports};
use spocgw::gateway::Gateway;
use spocgw::gateway::config::{GatewayConfig, UpstreamConfig};
use spocgw::gateway::upstream::{Upstream, soap_headers};
use spocgw::keys::{KeyRef, KeyStore};
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn admin_metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("admin");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut t = String::new();
    s.read_to_string(&mut t).expect("read");
    t
}

async fn handshakes(cfg: &UpstreamConfig, key: Arc<dyn rustls::sign::SigningKey>, n: usize) -> f64 {
    let up = Upstream::with_key(cfg, key).expect("upstream");
    let start = Instant::now();
    for _ in 0..n {
        up.probe().await.expect("handshake");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    if !spocgw::tpm::swtpm::installed() {
        println!("tpm bench SKIPPED: swtpm not installed (make deps)");
        return;
    }
    let t = spocgw::tpm::swtpm::SoftTpm::start(&state).expect("swtpm");
    let tcti = t.tcti();
    let pki = dir.path().join("pki");
    let ports = Ports {
        gateway: free_port(),
        callback: free_port(),
        admin: free_port(),
        ministry: free_port(),
        receiver: free_port(),
    };
    dev_pki::generate_with(&pki, ports, Some(&DevTpm { tcti, pcrs: vec![0, 2, 4, 7] })).expect("dev-pki");
    // One terminal sends every request: lift the per-certificate rates.
    let routes = pki.join("policies/routes.toml");
    let lifted: String = std::fs::read_to_string(&routes)
        .expect("routes")
        .lines()
        .map(|l| {
            if l.starts_with("per_second") || l.starts_with("burst") {
                format!("{} = 1000000\n", l.split('=').next().unwrap_or("").trim())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&routes, lifted).expect("routes");
    let gateway_file = pki.join("gateway.toml");
    let cfg = GatewayConfig::load(&gateway_file).expect("config");
    let keys = KeyStore::open(cfg.tpm.as_ref()).expect("keys");
    let tpm = keys.tpm().expect("tpm").clone();

    // 1. Signature latency.
    let mut lat = Vec::new();
    for i in 0..500u32 {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_be_bytes());
        let s = Instant::now();
        tpm.sign(0x8100_0010, d).expect("sign");
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    println!(
        "tpm sign (swtpm, ECDSA P-256): {} signatures, mean {mean:.3} ms, p50 {:.3} ms, p99 {:.3} ms, {:.0} signatures/s",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        1e3 / mean
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    rt.block_on(async {
        let ministry_file = pki.join("ministry.toml");
        let mcfg = spocgw::sim::ministry::MinistryConfig::load(&ministry_file).expect("ministry config");
        let ministry = spocgw::sim::start_ministry(&mcfg, &ministry_file).await.expect("ministry");

        // 2. New handshakes per second: TPM key vs a file key (the Ministry's own client key,
        //    trusted by the same CA).
        let up = &cfg.upstream.ministry;
        let tpm_key = keys.tls_key(&up.key).expect("tpm key");
        let with_tpm = handshakes(up, tpm_key, 300).await;
        let mut file_cfg = up.clone();
        file_cfg.cert = pki.join("ministry/client.pem");
        file_cfg.key = KeyRef::File(pki.join("ministry/client.key"));
        let file_key = keys.tls_key(&file_cfg.key).expect("file key");
        let with_file = handshakes(&file_cfg, file_key, 300).await;
        println!(
            "new mutual-TLS handshakes to the simulated Ministry, sequential: TPM key {with_tpm:.0}/s, file key {with_file:.0}/s ({:.2}x)",
            with_tpm / with_file
        );

        // 3. Signatures per 1,000 requests through the gateway (keep-alive clients).
        let gw = Gateway::start(&cfg, &gateway_file).await.expect("gateway");
        let end = Instant::now() + Duration::from_secs(10);
        while !gw.is_ready() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = metric(&admin_metrics(gw.admin_addr), "spocgw_tpm_operations_total{op=\"sign\",result=\"ok\"}");
        let client_cfg = UpstreamConfig::client(
            format!("https://127.0.0.1:{}", gw.police_addr.port()),
            &pki.join("ca/police-ca.pem"),
            &pki.join("clients/officer.pem"),
            &pki.join("clients/officer.key"),
        );
        let client = Upstream::new(&client_cfg).expect("client");
        let body = Bytes::from(messages::envelope(
            SoapVersion::V11,
            &BioRequest::matching("6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01", 2048).check_identity(),
        ));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, b) = (client.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..125 {
                    let h = soap_headers("text/xml; charset=utf-8", Some("CheckIdentityRequest"), None);
                    let r = c.post("/bio/v1", h, b.clone()).await.expect("request");
                    assert_eq!(r.status, 200);
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let after = metric(&admin_metrics(gw.admin_addr), "spocgw_tpm_operations_total{op=\"sign\",result=\"ok\"}");
        println!(
            "TPM signatures during 1,000 requests through the gateway (8 keep-alive clients): {} (TLS handshakes and audit checkpoints together)",
            after - before
        );
        gw.shutdown().await;
        ministry.stop().await;
    });
}
