//! `spocgw pair-demo [--keep DIR]` (`make pair-demo`): an active-active pair on loopback. Two
//! gateways (child processes of this binary, so that one can be killed with SIGKILL) behind
//! HAProxy in TCP mode, the simulated Ministry and the police receiver. Runs the pair's scenarios
//! (docs/pair.md), prints a table and the failover figures, and exits 0 only when every scenario
//! behaved. `make test` runs it (tests/pair.rs).

mod failover;
mod scenarios;
pub mod setup;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::demo::free_ports;
use super::dev_pki::Ports;
use setup::PairPorts;

pub fn run(keep: Option<&Path>) -> ExitCode {
    super::demo::exit_code("pair-demo", run_inner(keep))
}

/// A child process, killed when dropped.
pub(super) struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: &Path, what: &str) -> anyhow::Result<Proc> {
        let f = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = cmd.stdout(Stdio::null()).stderr(f).spawn().with_context(|| format!("cannot start {what}"))?;
        Ok(Proc { child, what: what.to_owned() })
    }

    /// SIGKILL, as a power cut or a crash would.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (a gateway drains and writes its last checkpoint).
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(what = %self.what, "did not stop on SIGTERM; killed");
        self.kill9();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on an admin listener: the status (0 when nothing answers) and the body.
pub(super) fn admin_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The pair as the scenarios see it.
pub(super) struct Pair {
    pub(super) dir: PathBuf,
    pub(super) ports: PairPorts,
    pub(super) a: Option<Proc>,
    pub(super) b: Option<Proc>,
    haproxy: Option<Proc>,
}

impl Pair {
    pub(super) fn start_gateway(&mut self, which: char) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let config = self.dir.join(format!("gateway-{which}.toml"));
        let mut log = self.dir.join(format!("gateway-{which}.log"));
        if log.exists() {
            log = self.dir.join(format!("gateway-{which}.restarted.log"));
        }
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--config"]).arg(&config).env("RUST_LOG", "info");
        let p = Proc::spawn(&mut cmd, &log, &format!("gateway {which}"))?;
        match which {
            'a' => self.a = Some(p),
            _ => self.b = Some(p),
        }
        Ok(())
    }

    pub(super) fn admin(&self, which: char) -> u16 {
        if which == 'a' { self.ports.a.admin } else { self.ports.b_admin }
    }

    pub(super) fn wait_ready(&self, which: char, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if admin_get(self.admin(which), "/readyz").0 == 200 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Stops both appliances (SIGTERM: they drain and write a last checkpoint), then HAProxy.
    pub(super) fn stop(&mut self) {
        for mut p in [self.a.take(), self.b.take()].into_iter().flatten() {
            p.stop();
        }
        if let Some(mut h) = self.haproxy.take() {
            h.kill9();
        }
    }
}

fn ports() -> anyhow::Result<PairPorts> {
    let [
        gateway,
        callback,
        admin,
        ministry,
        receiver,
        b_police,
        b_callback,
        b_admin,
        a_pair,
        b_pair,
        lb_police,
        lb_callback,
    ] = free_ports()?;
    Ok(PairPorts {
        a: Ports { gateway, callback, admin, ministry, receiver },
        b_police,
        b_callback,
        b_admin,
        a_pair,
        b_pair,
        lb_police,
        lb_callback,
    })
}

fn run_inner(keep: Option<&Path>) -> anyhow::Result<bool> {
    if which("haproxy").is_none() {
        anyhow::bail!("haproxy is not installed (Debian package haproxy; `make pair-demo` installs it as root)");
    }
    let tmp;
    let dir: PathBuf = match keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("spocgw-pair-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let ports = ports()?;
    setup::generate(&dir, ports)?;
    // The simulated Ministry calls back B, 6 s after the request: long enough for A, killed and
    // restarted meanwhile, to take a callback for a request B forwarded before the Ministry's.
    let ministry_file = dir.join("ministry.toml");
    let m = std::fs::read_to_string(&ministry_file)?;
    std::fs::write(&ministry_file, m.replace("callback_delay_ms = 300", "callback_delay_ms = 6000"))?;
    // Load through the balancer: the officer terminal may send far more than a booth does.
    let routes = dir.join("policies/routes.toml");
    let r = std::fs::read_to_string(&routes)?;
    std::fs::write(&routes, r.replacen("per_second = 2\nburst = 5", "per_second = 1000\nburst = 1000", 1))?;
    let log = std::fs::File::create(dir.join("pair-demo.log"))?;
    let _ = tracing_subscriber::fmt().json().with_writer(std::sync::Mutex::new(log)).try_init();
    println!(
        "spocgw pair-demo: two appliances, HAProxy, the simulated Ministry and police receiver in {}",
        dir.display()
    );
    let mut pair = Pair { dir: dir.clone(), ports, a: None, b: None, haproxy: None };
    let rt = super::runtime()?;
    let rows = rt.block_on(async {
        let ministry =
            crate::sim::start_ministry(&crate::sim::ministry::MinistryConfig::load(&ministry_file)?, &ministry_file)
                .await?;
        let receiver_file = dir.join("receiver.toml");
        let (receiver, received) =
            crate::sim::start_receiver(&crate::sim::receiver::ReceiverConfig::load(&receiver_file)?, &receiver_file)
                .await?;
        pair.start_gateway('a')?;
        pair.start_gateway('b')?;
        let mut cmd = Command::new("haproxy");
        cmd.args(["-db", "-f"]).arg(dir.join("haproxy.cfg"));
        pair.haproxy = Some(Proc::spawn(&mut cmd, &dir.join("haproxy.log"), "haproxy")?);
        let rows = scenarios::run(&mut pair, &received).await;
        pair.stop();
        receiver.stop().await;
        ministry.stop().await;
        rows
    })?;
    Ok(scenarios::print(&rows))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}
