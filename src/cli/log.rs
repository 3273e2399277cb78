//! The JSON log's writer: lines gathered in memory and written to stderr by a thread every
//! 20 ms (sooner when 256 KiB wait), so a request neither waits for stderr nor wakes a thread
//! per line. Nothing is dropped: past 8 MiB waiting, the thread that logs writes the backlog
//! itself. A crash can lose the last 20 ms of operational log lines; the audit log is the
//! record, and it does not go through here.

use std::fmt::Write as _;
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

/// The JSON line format. The gateway's own events (one per request) are written here field by
/// field into the line buffer; tracing-subscriber's JSON formatter, whose serde writer passes
/// each of a line's ~160 pieces through a UTF-8 check and an adaptor, cost about 35,000
/// instructions a line. Events from other crates (the `log` bridge among them) keep the stock
/// formatter. Both write the same line: `timestamp`, `level`, `fields` (`message` first),
/// `target`.
pub struct JsonLines {
    stock: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
}

impl JsonLines {
    pub fn new() -> Self {
        Self { stock: tracing_subscriber::fmt::format().json().with_current_span(false) }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let ours = meta.target().starts_with("spocgw") && ctx.lookup_current().is_none();
        if !ours {
            return self.stock.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        line.push_str(&crate::audit::record::now_rfc3339_micros());
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"fields\":{");
        let mut fields = JsonFields { line, first: true };
        event.record(&mut fields);
        let mut line = fields.line;
        line.push_str("},\"target\":");
        crate::json::string(&mut line, meta.target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

struct JsonFields {
    line: String,
    first: bool,
}

impl JsonFields {
    fn key(&mut self, field: &tracing::field::Field) {
        if !self.first {
            self.line.push(',');
        }
        self.first = false;
        crate::json::string(&mut self.line, field.name());
        self.line.push(':');
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.key(field);
        crate::json::string(&mut self.line, value);
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.key(field);
        crate::json::number(&mut self.line, value);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.key(field);
        // As serde_json writes it (`1e+300`; `null` when not finite).
        self.line.push_str(&serde_json::to_string(&value).unwrap_or_else(|_| "null".into()));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        self.line.push('"');
        let _ = write!(Escaping(&mut self.line), "{value:?}");
        self.line.push('"');
    }
}

/// Formats a value straight into the line, escaped.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        crate::json::escape_into(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn emit() {
        let who = "C=CZ, O=Border \"Police\"\n\t\u{1}é\\/";
        tracing::info!(
            incident_id = "6f1c1c4e",
            subject = %who,
            debug = ?("a", 1),
            count = 42u64,
            small = 7u16,
            negative = -3i64,
            yes = true,
            ratio = 0.1f64,
            big = 1e300f64,
            nan = f64::NAN,
            "request {}",
            "done"
        );
        tracing::warn!("plain");
    }

    /// Lines without their timestamps (which differ), the timestamps checked for shape.
    fn lines(out: &[u8]) -> Vec<String> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let t = v["timestamp"].as_str().unwrap();
                assert!(t.len() == 27 && t.ends_with('Z'), "{t}");
                l.replace(t, "T")
            })
            .collect()
    }

    #[test]
    fn the_gateways_lines_are_the_stock_json_lines() {
        let (ours, stock) = (Capture::default(), Capture::default());
        let s = tracing_subscriber::fmt()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(super::JsonLines::new())
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(s, emit);
        let s = tracing_subscriber::fmt().json().with_current_span(false).with_writer(stock.clone()).finish();
        tracing::subscriber::with_default(s, emit);
        let (ours, stock) = (lines(&ours.0.lock().unwrap()), lines(&stock.0.lock().unwrap()));
        assert_eq!(ours.len(), 2);
        assert_eq!(ours, stock);
    }
}
