//! A software TPM (swtpm) for the demo, tests and benchmarks: its own state directory and two
//! consecutive loopback ports (server, control); killed when dropped. Never used by `serve`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SoftTpm {
    child: Option<Child>,
    pub port: u16,
    state: PathBuf,
}

/// Whether `swtpm` is on the PATH.
pub fn installed() -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("swtpm").is_file()))
}

fn free_port_pair() -> std::io::Result<u16> {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if p < 65_000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
}

impl SoftTpm {
    /// Starts swtpm with its state in `state` (created if missing) and waits until it listens.
    ///
    /// # Errors
    /// Swtpm cannot be started, or does not listen within its deadline.
    pub fn start(state: &Path) -> std::io::Result<SoftTpm> {
        std::fs::create_dir_all(state)?;
        let mut t = SoftTpm { child: None, port: free_port_pair()?, state: state.to_path_buf() };
        t.restart()?;
        Ok(t)
    }

    /// `swtpm:host=127.0.0.1,port=N`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// (Re)starts swtpm on the same state and ports.
    ///
    /// # Errors
    /// As [`SoftTpm::start`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state.display()))
            .args(["--server", &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port)])
            .args(["--ctrl", &format!("type=tcp,port={},bindaddr=127.0.0.1", self.port + 1)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                self.kill();
                return Err(std::io::Error::other(format!("swtpm did not listen on port {}", self.port)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills swtpm at once (SIGKILL), as a failing TPM would vanish.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SoftTpm {
    fn drop(&mut self) {
        self.kill();
    }
}
