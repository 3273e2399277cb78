//! The JSON log's writer: lines gathered in memory and written to stderr by a thread every
//! 20 ms (sooner when 256 KiB wait), so a request neither waits for stderr nor wakes a thread
//! per line. Nothing is dropped: past 8 MiB waiting, the thread that logs writes the backlog
//! itself. A crash can lose the last 20 ms of operational log lines; the audit log is the
//! record, and it does not go through here.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const WAKE_AT: usize = 256 * 1024;
const WRITE_THROUGH_AT: usize = 8 * 1024 * 1024;

struct Shared {
    buf: Mutex<Vec<u8>>,
    ready: Condvar,
    stop: AtomicBool,
}

/// The `MakeWriter` handed to tracing-subscriber.
#[derive(Clone)]
pub struct BufferedStderr(Arc<Shared>);

/// Flushes what is left and stops the writer thread when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Writes what waits. stderr is taken before the buffer, so whoever drains first writes the
/// older lines first (lines stay in order when a caller writes a backlog itself).
fn drain(shared: &Shared) -> std::io::Result<()> {
    let mut err = std::io::stderr().lock();
    let pending = match shared.buf.lock() {
        Ok(mut b) => std::mem::take(&mut *b),
        Err(_) => return Err(std::io::Error::other("log buffer poisoned")),
    };
    if pending.is_empty() { Ok(()) } else { err.write_all(&pending).and_then(|()| err.flush()) }
}

impl BufferedStderr {
    pub fn start() -> (BufferedStderr, LogGuard) {
        let shared = Arc::new(Shared {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Relaxed) {
                    if let Ok(g) = s.buf.lock() {
                        let _ = s.ready.wait_timeout(g, FLUSH_EVERY);
                    }
                    let _ = drain(&s);
                }
                let _ = drain(&s);
            })
            .ok();
        (BufferedStderr(shared.clone()), LogGuard { shared, thread })
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut b = self.0.buf.lock().map_err(|_| std::io::Error::other("log buffer poisoned"))?;
        b.extend_from_slice(line);
        let waiting = b.len();
        drop(b);
        if waiting >= WRITE_THROUGH_AT {
            drain(&self.0)?;
        } else if waiting >= WAKE_AT {
            self.0.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStderr {
    type Writer = BufferedStderr;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.ready.notify_one();
        match self.thread.take() {
            Some(t) => {
                let _ = t.join();
            }
            None => {
                let _ = drain(&self.shared);
            }
        }
    }
}
