//! systemd's service notifications (sd_notify(3)), for `Type=notify` units: `READY=1` once the
//! gateway serves, `STOPPING=1` when it drains, `WATCHDOG=1` from the runtime while it runs (a
//! runtime that stalls stops the pings, and systemd restarts the service). Without
//! `NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` to the service manager; false when there is none or it cannot be reached.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    notify_to(&socket.to_string_lossy(), state)
}

/// Sends `state` to the socket `NOTIFY_SOCKET` names: a path, or `@name` in the abstract
/// namespace.
fn notify_to(path: &str, state: &str) -> bool {
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path),
    };
    let Ok(addr) = addr else { return false };
    UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), &addr)).is_ok()
}

/// How often to ping the watchdog: half the interval the unit's `WatchdogSec=` set, if it
/// set one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog every `every`, for as long as the runtime runs it.
pub async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    /// A state reaches the socket NOTIFY_SOCKET names, as a path or an abstract name; a socket
    /// nobody listens on is reported, not fatal.
    #[test]
    fn a_state_reaches_the_notify_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        assert!(super::notify_to(path.to_str().unwrap(), "READY=1"));
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("spocgw-notify-test-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        assert!(super::notify_to(&format!("@{name}"), "STOPPING=1"));
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(!super::notify_to(tmp.path().join("nobody").to_str().unwrap(), "READY=1"));
    }
}
