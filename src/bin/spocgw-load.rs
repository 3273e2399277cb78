//! `spocgw-load`: a load generator speaking mutual TLS as a police system does (HTTP/1.1
//! keep-alive or HTTP/2). Modes:
//! - fixed concurrency (default): N workers send back to back for `--duration` seconds;
//! - fixed rate (`--rate R`): requests start on a schedule, latency counted from the scheduled
//!   start (no coordinated omission), at most `--concurrency` outstanding;
//! - `--new-connection`: every request on a new mutual-TLS connection (a full handshake);
//! - `--idle N --hold S`: opens N mutual-TLS connections (one request each), holds them S
//!   seconds, then closes them (for measuring a server's memory per idle connection).
//!
//! Prints one line: requests, errors, req/s, p50/p90/p99/max latency. Bodies come from a file
//! (`--body`) or are generated (`--sample verify:50000`, `--sample identity:3000`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use spocgw::gateway::config::UpstreamConfig;
use spocgw::gateway::upstream::{Upstream, soap_headers};
use spocgw::sim::messages::{self, BioRequest};
use spocgw::xml::SoapVersion;

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
    /// SOAPAction header (taken from --sample when absent)
    #[arg(long)]
    action: Option<String>,
    /// File holding the request body
    #[arg(long, conflicts_with = "sample")]
    body: Option<PathBuf>,
    /// Generated body: `verify:BYTES` (VerifyFingerprintRequest of about BYTES) or
    /// `identity:BYTES` (CheckIdentityRequest padded with indentation to BYTES)
    #[arg(long)]
    sample: Option<String>,
    #[arg(long, default_value = "text/xml; charset=utf-8")]
    content_type: String,
    /// Workers (fixed concurrency), or the most outstanding requests (fixed rate)
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests per second to start (open loop); fixed concurrency when absent
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load (after one warm-up request per worker)
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long)]
    http2: bool,
    /// A new mutual-TLS connection for every request
    #[arg(long)]
    new_connection: bool,
    /// Open this many connections and hold them idle (see --hold)
    #[arg(long)]
    idle: Option<usize>,
    /// Seconds to hold idle connections
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

/// A body and its SOAPAction.
fn sample(spec: &str) -> Result<(Bytes, &'static str), String> {
    let (kind, size) = spec.split_once(':').ok_or("--sample KIND:BYTES")?;
    let size: usize = size.parse().map_err(|_| "--sample: BYTES must be a number")?;
    let id = "6f1c1c4e-3f0a-4d53-9a43-2b5c1e0f9a01";
    match kind {
        "verify" => {
            // Images of at most 64 KiB (the schema's limit): one chip and one live print, or two
            // of each for large bodies; base64 makes 4/3 bytes of envelope per image byte.
            let fingers: usize = if size > 120_000 { 2 } else { 1 };
            let build = |image: usize| {
                let mut r = BioRequest::matching(id, image);
                let (chip, live) = (r.chip[0].clone(), r.live[0].clone());
                for position in 2..=fingers as u8 {
                    r.chip.push(messages::Finger { position, ..chip.clone() });
                    r.live.push(messages::Finger { position, ..live.clone() });
                }
                messages::envelope(SoapVersion::V11, &r.verify_fingerprint())
            };
            let per_byte = 8 * fingers / 3;
            let mut image = size.saturating_sub(1500) / per_byte.max(1);
            let mut body = build(image);
            for _ in 0..4 {
                let diff = size as i64 - body.len() as i64;
                image = (image as i64 + diff / per_byte.max(1) as i64).clamp(1, 65_536) as usize;
                body = build(image);
            }
            Ok((Bytes::from(body), "VerifyFingerprintRequest"))
        }
        "identity" => {
            let inner = BioRequest::matching(id, 16).check_identity();
            let body = messages::envelope(SoapVersion::V11, &inner);
            let pad = size.saturating_sub(body.len());
            let padded = inner.replace(
                "</CheckIdentityRequest>",
                &format!("\n{}</CheckIdentityRequest>", " ".repeat(pad.saturating_sub(1))),
            );
            Ok((Bytes::from(messages::envelope(SoapVersion::V11, &padded)), "CheckIdentityRequest"))
        }
        _ => Err(format!("--sample: unknown kind {kind:?} (verify, identity)")),
    }
}

struct Run {
    latencies_us: Vec<u64>,
    errors: u64,
    elapsed: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (body, default_action) = match (&args.body, &args.sample) {
        (Some(p), _) => match std::fs::read(p) {
            Ok(b) => (Bytes::from(b), ""),
            Err(e) => {
                eprintln!("spocgw-load: {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        (None, Some(s)) => match sample(s) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("spocgw-load: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("spocgw-load: give --body FILE or --sample KIND:BYTES");
            return ExitCode::from(2);
        }
    };
    let action = args.action.clone().unwrap_or_else(|| default_action.to_owned());
    let mut cfg = UpstreamConfig::client(args.url.clone(), &args.ca, &args.cert, &args.key);
    cfg.http2 = args.http2;
    cfg.pool_max_idle = if args.new_connection { 0 } else { args.concurrency.max(1) };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spocgw-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let headers = soap_headers(&args.content_type, Some(&action), None);
    if let Some(n) = args.idle {
        return rt.block_on(idle(&cfg, n, Duration::from_secs_f64(args.hold), headers, body, &args.path));
    }
    let client = match Upstream::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spocgw-load: {e}");
            return ExitCode::from(2);
        }
    };
    let duration = Duration::from_secs_f64(args.duration);
    let run = rt.block_on(async {
        match args.rate {
            Some(rate) => fixed_rate(client, headers, body, args.path.clone(), rate, args.concurrency, duration).await,
            None => fixed_concurrency(client, headers, body, args.path.clone(), args.concurrency, duration).await,
        }
    });
    report(run, body_len_note(&args))
}

fn body_len_note(args: &Args) -> String {
    args.sample.clone().or_else(|| args.body.as_ref().map(|p| p.display().to_string())).unwrap_or_default()
}

fn report(mut run: Run, what: String) -> ExitCode {
    let lat = &mut run.latencies_us;
    lat.sort_unstable();
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "requests={} errors={} seconds={:.2} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} body={what}",
        lat.len(),
        run.errors,
        run.elapsed.as_secs_f64(),
        lat.len() as f64 / run.elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(lat.last().copied().unwrap_or(0)),
    );
    if run.errors > 0 && lat.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

async fn fixed_concurrency(
    client: Upstream,
    headers: http::HeaderMap,
    body: Bytes,
    path: String,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let mut tasks = Vec::new();
    // Warm-up: every worker opens its connection before the clock starts.
    let gate = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    for _ in 0..concurrency {
        let (client, headers, body, path, gate) =
            (client.clone(), headers.clone(), body.clone(), path.clone(), gate.clone());
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
    gate.wait().await;
    let started = Instant::now();
    let mut run = Run { latencies_us: Vec::new(), errors: 0, elapsed: Duration::ZERO };
    for t in tasks {
        if let Ok((l, e)) = t.await {
            run.latencies_us.extend(l);
            run.errors += e;
        }
    }
    run.elapsed = started.elapsed();
    run
}

async fn fixed_rate(
    client: Upstream,
    headers: http::HeaderMap,
    body: Bytes,
    path: String,
    rate: f64,
    max_outstanding: usize,
    duration: Duration,
) -> Run {
    // Warm the pool first.
    let mut warm = Vec::new();
    for _ in 0..max_outstanding.min(64) {
        let (c, h, b, p) = (client.clone(), headers.clone(), body.clone(), path.clone());
        warm.push(tokio::spawn(async move { c.post(&p, h, b).await.is_ok() }));
    }
    for w in warm {
        let _ = w.await;
    }
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let slots = Arc::new(tokio::sync::Semaphore::new(max_outstanding.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, ()>>();
    let started = Instant::now();
    let mut next = started;
    let mut errors = 0u64;
    while next < started + duration {
        tokio::time::sleep_until(next.into()).await;
        let scheduled = next;
        next += interval;
        // Over the outstanding cap: counted as an error (the target could not keep up).
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            errors += 1;
            continue;
        };
        let (c, h, b, p, tx) = (client.clone(), headers.clone(), body.clone(), path.clone(), tx.clone());
        tokio::spawn(async move {
            let r = match c.post(&p, h, b).await {
                Ok(r) if r.status.is_success() => Ok(scheduled.elapsed().as_micros() as u64),
                _ => Err(()),
            };
            drop(permit);
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let mut run = Run { latencies_us: Vec::new(), errors, elapsed: started.elapsed() };
    while let Some(r) = rx.recv().await {
        match r {
            Ok(us) => run.latencies_us.push(us),
            Err(()) => run.errors += 1,
        }
    }
    run
}

/// Opens `n` connections (each through one request), holds them, prints when all are open.
async fn idle(
    cfg: &UpstreamConfig,
    n: usize,
    hold: Duration,
    headers: http::HeaderMap,
    body: Bytes,
    path: &str,
) -> ExitCode {
    let mut clients = Vec::with_capacity(n);
    let mut failed = 0usize;
    for _ in 0..n {
        let mut c = cfg.clone();
        c.pool_max_idle = 1;
        let Ok(client) = Upstream::new(&c) else {
            failed += 1;
            continue;
        };
        match client.post(path, headers.clone(), body.clone()).await {
            Ok(r) if r.status.is_success() => clients.push(client),
            _ => failed += 1,
        }
    }
    println!("idle_open={} failed={failed}", clients.len());
    tokio::time::sleep(hold).await;
    drop(clients);
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
