//! `spocgw-load`: a small load generator speaking mutual TLS as a police system does (HTTP/1.1
//! keep-alive or HTTP/2), at fixed concurrency for a fixed time. Prints requests per second,
//! latency percentiles and errors. Used for quick measurements and by the benchmark harness.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use spocgw::config::UpstreamConfig;
use spocgw::gateway::upstream::{Upstream, soap_headers};

#[derive(Debug, Parser)]
#[command(name = "spocgw-load", about = "mutual-TLS SOAP load generator")]
struct Args {
    /// https://host:port
    #[arg(long)]
    url: String,
    #[arg(long)]
    ca: PathBuf,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value = "/bio/v1")]
    path: String,
    /// SOAPAction header
    #[arg(long)]
    action: String,
    /// File holding the request body
    #[arg(long)]
    body: PathBuf,
    #[arg(long, default_value = "text/xml; charset=utf-8")]
    content_type: String,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load (after one warm-up request per worker)
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long)]
    http2: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let body = match std::fs::read(&args.body) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("spocgw-load: {}: {e}", args.body.display());
            return ExitCode::from(2);
        }
    };
    let mut cfg = UpstreamConfig::client(args.url.clone(), &args.ca, &args.cert, &args.key);
    cfg.http2 = args.http2;
    cfg.pool_max_idle = args.concurrency.max(1);
    let client = match Upstream::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spocgw-load: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spocgw-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let headers = soap_headers(&args.content_type, Some(&args.action), None);
    let (mut lat, errors, elapsed) = rt.block_on(async {
        let duration = Duration::from_secs_f64(args.duration);
        let mut tasks = Vec::new();
        // Warm-up: every worker opens its connection before the clock starts.
        let start_gate = std::sync::Arc::new(tokio::sync::Barrier::new(args.concurrency + 1));
        for _ in 0..args.concurrency {
            let (client, headers, body, path, gate) =
                (client.clone(), headers.clone(), body.clone(), args.path.clone(), start_gate.clone());
            tasks.push(tokio::spawn(async move {
                let _ = client.post(&path, headers.clone(), body.clone()).await;
                gate.wait().await;
                let end = Instant::now() + duration;
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    match client.post(&path, headers.clone(), body.clone()).await {
                        Ok(r) if r.status.is_success() => lat.push(t.elapsed().as_micros() as u64),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        start_gate.wait().await;
        let started = Instant::now();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            if let Ok((l, e)) = t.await {
                all.extend(l);
                errors += e;
            }
        }
        (all, errors, started.elapsed())
    });
    lat.sort_unstable();
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "requests={} errors={} seconds={:.2} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        lat.len(),
        errors,
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(lat.last().copied().unwrap_or(0)),
    );
    if errors > 0 && lat.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
