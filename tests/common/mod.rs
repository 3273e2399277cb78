//! Test harness: a fresh development PKI per test (made by the real `spocgw dev-pki`), the
//! real binary started as child processes on ports the test chose, and clients that speak
//! mutual TLS as police systems do. Every child is killed when its handle drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spocgw::gateway::config::UpstreamConfig;
use spocgw::gateway::upstream::{Reply, Upstream, UpstreamError, soap_headers};

pub const BIN: &str = env!("CARGO_BIN_EXE_spocgw");

/// A port for a child to listen on: free when chosen, and below the kernel's ephemeral range.
/// A port from `bind(0)` comes from that range, where an outgoing connection (the tests make
/// thousands, several tests at once) can take it as its local port before the child binds it
/// (a gateway that then cannot listen: "nothing listens on port ..."). Within one test binary
/// no port is handed out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST).max(1_000);
    // Test binaries run one after another; a per-process start keeps them apart anyway.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port between {LOWEST} and {ephemeral}");
}

/// A child process killed on drop; its stderr goes to a file the test can read.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(args: &[&str], log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child =
            Command::new(BIN).args(args).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(f).spawn().unwrap();
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_port(port: u16) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port}");
}

/// A plain HTTP GET to the admin listener: (status, body).
pub fn admin_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of one metric line (`name{labels}`), 0 when absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One test's world: PKI, configs, and the processes it started.
pub struct World {
    pub dir: tempfile::TempDir,
    pub gateway_port: u16,
    pub callback_port: u16,
    pub admin_port: u16,
    pub ministry_port: u16,
    pub receiver_port: u16,
    pub procs: Vec<Proc>,
}

impl World {
    /// Makes a fresh PKI and configs; starts nothing.
    pub fn new() -> World {
        World::with_dev_pki_args(&[])
    }

    /// A world whose gateway keys live in `tpm` (dev-pki --tpm), sealed to `pcrs`.
    pub fn with_tpm(tpm: &Swtpm, pcrs: &str) -> World {
        World::with_dev_pki_args(&["--tpm".into(), tpm.tcti(), "--tpm-pcrs".into(), pcrs.into()])
    }

    fn with_dev_pki_args(extra: &[String]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let w = World {
            gateway_port: free_port(),
            callback_port: free_port(),
            admin_port: free_port(),
            ministry_port: free_port(),
            receiver_port: free_port(),
            dir,
            procs: Vec::new(),
        };
        let out = Command::new(BIN)
            .args(["dev-pki", "--out"])
            .arg(w.dir.path())
            .args(["--gateway-port", &w.gateway_port.to_string()])
            .args(["--callback-port", &w.callback_port.to_string()])
            .args(["--admin-port", &w.admin_port.to_string()])
            .args(["--ministry-port", &w.ministry_port.to_string()])
            .args(["--receiver-port", &w.receiver_port.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "dev-pki failed: {}", String::from_utf8_lossy(&out.stderr));
        // Tests send many requests from one certificate: lift the rates (the rate-limit test
        // puts its own back).
        lift_rates(&w.path("policies/routes.toml"));
        w
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Appends TOML to a config file (tables added after the existing ones).
    pub fn append(&self, file: &str, toml: &str) {
        let p = self.path(file);
        let mut s = std::fs::read_to_string(&p).unwrap();
        s.push_str(toml);
        std::fs::write(p, s).unwrap();
    }

    /// Replaces text in a config file.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path(file);
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains(from), "{file} has no {from:?}");
        std::fs::write(p, s.replace(from, to)).unwrap();
    }

    pub fn start_ministry(&mut self) {
        let cfg = self.path("ministry.toml");
        let p = Proc::start(&["sim", "ministry", "--config", cfg.to_str().unwrap()], self.path("ministry.log"));
        self.procs.push(p);
        wait_port(self.ministry_port);
    }

    pub fn start_receiver(&mut self) {
        let cfg = self.path("receiver.toml");
        let p = Proc::start(&["sim", "police-receiver", "--config", cfg.to_str().unwrap()], self.path("receiver.log"));
        self.procs.push(p);
        wait_port(self.receiver_port);
    }

    /// Starts the gateway and waits until it listens (not until the upstream is up).
    pub fn start_gateway(&mut self) -> usize {
        self.start_gateway_with(&["serve"])
    }

    /// Starts the gateway with another command (`bench serve`).
    pub fn start_gateway_with(&mut self, command: &[&str]) -> usize {
        let cfg = self.path("gateway.toml");
        let args = [command, &["--config", cfg.to_str().unwrap()]].concat();
        let p = Proc::start(&args, self.path("gateway.log"));
        self.procs.push(p);
        wait_port(self.gateway_port);
        wait_port(self.admin_port);
        self.procs.len() - 1
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if admin_get(self.admin_port, "/readyz").0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway not ready: {:?}", admin_get(self.admin_port, "/readyz"));
    }

    /// The whole chain, ready to serve.
    pub fn full() -> World {
        let mut w = World::new();
        w.start_ministry();
        w.start_receiver();
        w.start_gateway();
        w.wait_ready();
        w
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin_port, "/metrics").1
    }

    /// A police client with `clients/<who>` credentials.
    pub fn client(&self, who: &str, http2: bool) -> Upstream {
        let mut cfg = UpstreamConfig::client(
            format!("https://127.0.0.1:{}", self.gateway_port),
            &self.path("ca/police-ca.pem"),
            &self.path(&format!("clients/{who}.pem")),
            &self.path(&format!("clients/{who}.key")),
        );
        cfg.http2 = http2;
        Upstream::new(&cfg).unwrap()
    }

    /// A raw mutual-TLS connection to the police listener as `clients/<who>`, for requests
    /// written byte by byte.
    pub async fn raw_client(&self, who: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let cfg = UpstreamConfig::client(
            format!("https://127.0.0.1:{}", self.gateway_port),
            &self.path("ca/police-ca.pem"),
            &self.path(&format!("clients/{who}.pem")),
            &self.path(&format!("clients/{who}.key")),
        );
        let tls = tokio_rustls::TlsConnector::from(
            spocgw::tls::client_config(&cfg.client_tls(), cfg.key.file_key().unwrap()).unwrap(),
        );
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.gateway_port)).await.unwrap();
        tls.connect("localhost".try_into().unwrap(), tcp).await.unwrap()
    }

    /// A client of the callback listener with `cert`/`key` (relative paths), trusting the
    /// Ministry CA: `ministry/client` is the National SPOC.
    pub fn callback_client(&self, cert: &str, key: &str) -> Upstream {
        Upstream::new(&UpstreamConfig::client(
            format!("https://127.0.0.1:{}", self.callback_port),
            &self.path("ca/ministry-ca.pem"),
            &self.path(cert),
            &self.path(key),
        ))
        .unwrap()
    }

    /// The gateway's log so far (it writes its lines every 20 ms: wait for them first).
    pub fn gateway_log(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(self.path("gateway.log")).unwrap_or_default()
    }
}

pub async fn post(
    c: &Upstream,
    path: &str,
    content_type: &str,
    action: Option<&str>,
    body: String,
) -> Result<Reply, UpstreamError> {
    c.post(path, soap_headers(content_type, action, None), Bytes::from(body)).await
}

pub fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The `GatewayFault` code of a reply, if it is one.
pub fn fault_code(r: &Reply) -> Option<String> {
    let t = text(r);
    let start = t.find("<Code>")? + 6;
    let end = t[start..].find("</Code>")? + start;
    Some(t[start..end].to_owned())
}

/// Reads a child's log lines until one contains `needle`.
pub fn log_contains(path: &Path, needle: &str) -> bool {
    std::fs::File::open(path)
        .map(|f| BufReader::new(f).lines().map_while(Result::ok).any(|l| l.contains(needle)))
        .unwrap_or(false)
}

/// Lifts every rate of a `routes.toml` to 100,000 a second: tests send many requests from one
/// certificate.
pub fn lift_rates(routes: &Path) {
    let lifted: String = std::fs::read_to_string(routes)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("per_second") || l.starts_with("burst") {
                format!("{} = 100000\n", l.split('=').next().unwrap().trim())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(routes, lifted).unwrap();
}

/// Whether an external tool is installed; with `CI` set, a missing tool fails the test.
pub fn have_tool(name: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{name} is required when CI is set (make deps installs it)");
        eprintln!("SKIPPED: {name} is not installed (`make deps` installs it)");
    }
    found
}

/// One software TPM for one test: its own state directory and TCP port pair; killed on drop.
pub struct Swtpm {
    inner: spocgw::tpm::swtpm::SoftTpm,
    pub state: tempfile::TempDir,
}

impl Swtpm {
    /// None (test skipped) when swtpm is not installed and CI is not set.
    pub fn start() -> Option<Swtpm> {
        if !have_tool("swtpm") || !have_tool("tpm2_pcrextend") {
            return None;
        }
        let state = tempfile::tempdir().unwrap();
        let inner = spocgw::tpm::swtpm::SoftTpm::start(state.path()).expect("swtpm starts");
        Some(Swtpm { inner, state })
    }

    pub fn tcti(&self) -> String {
        self.inner.tcti()
    }

    /// Restarts swtpm on the same state and ports.
    pub fn restart(&mut self) {
        self.inner.restart().expect("swtpm restarts");
    }

    /// Kills swtpm at once (SIGKILL).
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Runs a tpm2-tools command against this TPM.
    pub fn tool(&self, args: &[&str]) -> std::process::Output {
        Command::new(args[0]).args(&args[1..]).env("TPM2TOOLS_TCTI", self.tcti()).output().unwrap()
    }
}
