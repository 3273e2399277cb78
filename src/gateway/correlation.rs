//! Callback correlation, one owner. A request answered later (CSN 36 9791: a
//! `RequestCertificateRequest` the SPOC acknowledged with `ok_reception_ack`) has its ID
//! remembered; the callback that answers it (`SendCertificatesRequest` with the same
//! `messageID`) consumes it, and gives it back when the police side did not take the callback.
//! What the rule is (which operations, which results announce a callback, how long one is
//! awaited) is data, [`Rule`], so that a channel other than CSN brings its own.
//!
//! The pending IDs are **durable**: each remembering, consumption and return is a line of a
//! journal (`correlation.jsonl`, beside the audit log), synced before the police side hears of
//! it, so that a restart, an upgrade or a power cut loses no pending certificate, and a callback
//! consumed before a restart is not accepted again after it. The journal is compacted when the
//! gateway starts and whenever it holds more lines than twice the live IDs (a new file, synced,
//! renamed over the old). Ages are wall-clock times: a callback may come days later.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use super::routes::Operation;

/// The journal's file name, in the audit directory.
pub const JOURNAL: &str = "correlation.jsonl";

/// What makes a request one answered later, and what answers it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The request whose ID is remembered.
    pub request: Operation,
    /// The results of its reply that announce a callback (a synchronous answer, a failure or a
    /// Fault expects none).
    pub callback_follows: &'static [&'static str],
    /// The callback that consumes the ID.
    pub callback: Operation,
    /// A callback that carries no ID and this result is an unsolicited notification, not a
    /// callback.
    pub unsolicited: Option<&'static str>,
    /// How long a callback is awaited.
    pub ttl: Duration,
    /// The longest ID, in characters of [`Rule::ID_CHARS`] (the schema's `MessageID`): what
    /// the pair link takes from the peer is held to it.
    pub id_max: usize,
}

impl Rule {
    /// CSN 36 9791's certificate exchange.
    pub fn csn369791(ttl: Duration) -> Rule {
        Rule {
            request: Operation::RequestCertificate,
            callback_follows: &["ok_reception_ack", "ok_request_forwarded"],
            callback: Operation::SendCertificates,
            unsolicited: Some("new_cert_available_notification"),
            ttl,
            id_max: 64,
        }
    }

    /// What an ID may be made of, besides letters and digits.
    pub const ID_CHARS: &'static str = "._:-";

    /// Whether `id` could be an ID of this rule (as the schema allows it).
    pub fn valid_id(&self, id: &str) -> bool {
        (1..=self.id_max).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || Self::ID_CHARS.as_bytes().contains(&b))
    }
}

/// A pending ID: when it was forwarded (Unix milliseconds), on which route, for whom (the
/// caller's certificate fingerprint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub at_ms: u64,
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub caller: String,
    /// Forwarded by the peer appliance, which owns it: a callback here claims it from the peer
    /// first, so that a callback is delivered once whichever appliance it reaches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer: bool,
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Remember {
        id: String,
        #[serde(flatten)]
        pending: Pending,
    },
    Consume {
        id: String,
    },
}

/// The correlation metrics.
#[derive(Clone, Default)]
pub struct CorrelationMetrics {
    pub pending: Gauge,
    pub oldest: Gauge,
    pub ttl: Gauge,
    pub journal_failures: Counter,
}

impl CorrelationMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("callbacks_pending", "Requests forwarded whose callback is awaited", self.pending.clone());
        registry.register(
            "callbacks_oldest_pending_timestamp_seconds",
            "When the oldest request whose callback is awaited was forwarded (Unix time; 0: none)",
            self.oldest.clone(),
        );
        registry.register("callbacks_ttl_seconds", "How long a callback is awaited", self.ttl.clone());
        registry.register(
            "callbacks_journal_failures",
            "Writes to the correlation journal that failed (the ID is then remembered in memory only)",
            self.journal_failures.clone(),
        );
    }
}

struct Inner {
    seen: HashMap<String, Pending>,
    /// Registration order, for expiry and the bound.
    order: VecDeque<(String, u64)>,
    /// IDs dropped because their TTL passed, the newest [`Correlation::capacity`] of them: a
    /// late callback is told apart from one never forwarded.
    expired: HashMap<String, u64>,
    expired_order: VecDeque<String>,
    journal: Option<Journal>,
}

impl Inner {
    fn new() -> Inner {
        Inner {
            seen: HashMap::new(),
            order: VecDeque::new(),
            expired: HashMap::new(),
            expired_order: VecDeque::new(),
            journal: None,
        }
    }

    fn tombstone(&mut self, id: String, at_ms: u64, capacity: usize) {
        if self.expired.insert(id.clone(), at_ms).is_none() {
            self.expired_order.push_back(id);
        }
        while self.expired_order.len() > capacity {
            if let Some(old) = self.expired_order.pop_front() {
                self.expired.remove(&old);
            }
        }
    }
}

struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
}

/// The pending IDs of one gateway (its peer's too, in a pair).
pub struct Correlation {
    rule: Rule,
    capacity: usize,
    inner: Mutex<Inner>,
    metrics: CorrelationMetrics,
}

/// The current time, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The pending IDs a journal holds, replayed (a torn last line, from a crash mid-write, is
/// ignored), and how many lines it has.
///
/// # Errors
/// The journal cannot be read, or a line other than the last does not parse.
pub fn replay(path: &Path) -> Result<(HashMap<String, Pending>, usize), String> {
    let mut seen = HashMap::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((seen, 0)),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let lines: Vec<String> =
        BufReader::new(file).lines().collect::<Result<_, _>>().map_err(|e| format!("{}: {e}", path.display()))?;
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Remember { id, pending }) => {
                seen.insert(id, pending);
            }
            Ok(Line::Consume { id }) => {
                seen.remove(&id);
            }
            Err(_) if i + 1 == n => {}
            Err(e) => return Err(format!("{} line {}: {e}", path.display(), i + 1)),
        }
    }
    Ok((seen, n))
}

impl Correlation {
    /// The IDs in memory only (tests, tools).
    pub fn in_memory(rule: Rule, capacity: usize) -> Correlation {
        let inner = Inner::new();
        Correlation {
            rule,
            capacity: capacity.max(1),
            inner: Mutex::new(inner),
            metrics: CorrelationMetrics::default(),
        }
    }

    /// Opens the journal in `dir` (created if absent): the IDs still pending, expired ones
    /// dropped, the journal compacted.
    ///
    /// # Errors
    /// The journal cannot be read, does not parse, or cannot be rewritten.
    pub fn open(dir: &Path, rule: Rule, capacity: usize, metrics: CorrelationMetrics) -> Result<Correlation, String> {
        let path = dir.join(JOURNAL);
        let (seen, _) = replay(&path)?;
        let now = now_ms();
        let ttl = rule.ttl.as_millis() as u64;
        let (mut live, gone): (Vec<_>, Vec<_>) =
            seen.into_iter().partition(|(_, p): &(String, Pending)| now.saturating_sub(p.at_ms) <= ttl);
        live.sort_by_key(|(_, p)| p.at_ms);
        metrics.ttl.set(rule.ttl.as_secs() as i64);
        let c = Correlation { rule, capacity: capacity.max(1), inner: Mutex::new(Inner::new()), metrics };
        {
            let mut inner = c.lock();
            for (id, p) in gone {
                inner.tombstone(id, p.at_ms, c.capacity);
            }
            for (id, p) in live {
                inner.order.push_back((id.clone(), p.at_ms));
                inner.seen.insert(id, p);
            }
            let journal = compact(&path, &inner.seen)?;
            inner.journal = Some(journal);
            c.expire(&mut inner, now);
        }
        Ok(c)
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expire(&self, inner: &mut Inner, now: u64) {
        let ttl = self.rule.ttl.as_millis() as u64;
        while let Some((id, at)) = inner.order.front() {
            if now.saturating_sub(*at) <= ttl && inner.order.len() <= self.capacity {
                break;
            }
            // Only the oldest registration of the ID goes; past its TTL, it is remembered as
            // expired.
            let (id, at) = (id.clone(), *at);
            if inner.seen.get(&id).is_some_and(|p| p.at_ms == at) {
                inner.seen.remove(&id);
                if now.saturating_sub(at) > ttl {
                    inner.tombstone(id, at, self.capacity);
                }
            }
            inner.order.pop_front();
        }
        self.metrics.pending.set(inner.seen.len() as i64);
        let oldest = inner.order.iter().find(|(id, at)| inner.seen.get(id).is_some_and(|p| p.at_ms == *at));
        self.metrics.oldest.set(oldest.map_or(0, |(_, at)| (*at / 1000) as i64));
    }

    /// Writes `line` to the journal and syncs it; a failure is logged and counted (the ID stays
    /// in memory), and the journal is compacted when it has grown past twice the live IDs.
    fn journal(&self, inner: &mut Inner, line: &Line) {
        let Some(j) = inner.journal.as_mut() else { return };
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = j.file.write_all(&bytes).and_then(|()| j.file.sync_data()) {
            self.metrics.journal_failures.inc();
            tracing::error!(journal = %j.path.display(), error = %e, "correlation journal write failed");
            return;
        }
        j.lines += 1;
        if j.lines > 2 * inner.seen.len() + 1024 {
            let path = j.path.clone();
            match compact(&path, &inner.seen) {
                Ok(fresh) => inner.journal = Some(fresh),
                Err(e) => {
                    tracing::error!(journal = %path.display(), error = %e, "correlation journal compaction failed")
                }
            }
        }
    }

    /// Remembers `id` (forwarded now, on `route`, for `caller`), durably before it returns.
    pub fn remember(&self, id: &str, route: &str, caller: &str) {
        self.insert(id, Pending { at_ms: now_ms(), route: route.to_owned(), caller: caller.to_owned(), peer: false });
    }

    fn insert(&self, id: &str, pending: Pending) {
        let mut inner = self.lock();
        inner.order.push_back((id.to_owned(), pending.at_ms));
        inner.seen.insert(id.to_owned(), pending.clone());
        self.journal(&mut inner, &Line::Remember { id: id.to_owned(), pending });
        self.expire(&mut inner, now_ms());
    }

    /// Takes `id` out if it is pending: a callback consumes it (durably), so a replay finds it
    /// gone, also after a restart. What was pending, for [`Self::restore`].
    pub fn claim(&self, id: &str) -> Option<Pending> {
        let mut inner = self.lock();
        self.expire(&mut inner, now_ms());
        let p = inner.seen.remove(id)?;
        self.journal(&mut inner, &Line::Consume { id: id.to_owned() });
        self.expire(&mut inner, now_ms());
        Some(p)
    }

    /// Puts back an ID claimed by a callback that was not delivered (the SPOC may send it again).
    pub fn restore(&self, id: &str, pending: Pending) {
        if now_ms().saturating_sub(pending.at_ms) <= self.rule.ttl.as_millis() as u64 {
            self.insert(id, pending);
        }
    }

    /// Remembers `id` as forwarded `age` ago by the peer appliance; one past the TTL is not.
    pub fn remember_aged(&self, id: &str, age: Duration) {
        let at_ms = now_ms().saturating_sub(age.as_millis() as u64);
        self.restore(id, Pending { at_ms, route: String::new(), caller: String::new(), peer: true });
    }

    /// Every pending ID with its age (the pair link's catch-up).
    pub fn snapshot(&self) -> Vec<(String, Duration)> {
        let now = now_ms();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        inner.seen.iter().map(|(id, p)| (id.clone(), Duration::from_millis(now.saturating_sub(p.at_ms)))).collect()
    }

    /// Every pending ID, oldest first.
    pub fn pending(&self) -> Vec<(String, Pending)> {
        let mut inner = self.lock();
        self.expire(&mut inner, now_ms());
        let mut v: Vec<(String, Pending)> = inner.seen.iter().map(|(id, p)| (id.clone(), p.clone())).collect();
        v.sort_by_key(|(_, p)| p.at_ms);
        v
    }

    /// True when `id` was pending and its TTL passed (as far as the newest expired IDs go).
    pub fn expired(&self, id: &str) -> bool {
        let mut inner = self.lock();
        self.expire(&mut inner, now_ms());
        inner.expired.contains_key(id)
    }

    /// True when `id` is pending.
    pub fn knows(&self, id: &str) -> bool {
        let mut inner = self.lock();
        self.expire(&mut inner, now_ms());
        inner.seen.contains_key(id)
    }
}

/// Writes the live IDs to a new journal (synced, renamed over `path`, the directory synced) and
/// opens it for appending.
fn compact(path: &Path, seen: &HashMap<String, Pending>) -> Result<Journal, String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    let mut live: Vec<(&String, &Pending)> = seen.iter().collect();
    live.sort_by_key(|(_, p)| p.at_ms);
    for (id, p) in &live {
        let line = Line::Remember { id: (*id).clone(), pending: (*p).clone() };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        f.write_all(&bytes).map_err(io)?;
    }
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    let file = OpenOptions::new().append(true).open(path).map_err(io)?;
    Ok(Journal { path: path.to_path_buf(), file, lines: live.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ttl_ms: u64) -> Rule {
        Rule::csn369791(Duration::from_millis(ttl_ms))
    }

    #[test]
    fn bounded_and_expiring() {
        let ids = Correlation::in_memory(rule(60_000), 2);
        ids.remember("a", "csn369791", "f");
        ids.remember("b", "csn369791", "f");
        ids.remember("c", "csn369791", "f");
        assert!(!ids.knows("a"));
        assert!(ids.knows("b") && ids.knows("c"));
        let short = Correlation::in_memory(rule(1), 10);
        short.remember("x", "r", "f");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.knows("x"));
        assert!(short.expired("x"), "told apart from one never forwarded");
        assert!(!short.expired("never"));
    }

    /// What was remembered survives a reopening; what was consumed stays consumed; a torn last
    /// line (a crash mid-write) is ignored; the journal is compacted to the live IDs.
    #[test]
    fn pending_ids_survive_a_restart_and_consumed_ones_stay_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Correlation::open(dir.path(), rule(60_000), 100, CorrelationMetrics::default()).unwrap();
        let c = open();
        c.remember("a", "csn369791", "fp-a");
        c.remember("b", "csn369791", "fp-b");
        assert!(c.claim("a").is_some());
        drop(c);
        let mut text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        text.push_str("{\"op\":\"remember\",\"id\":\"torn");
        std::fs::write(dir.path().join(JOURNAL), text).unwrap();
        let c = open();
        assert!(!c.knows("a"), "consumed before the restart");
        let b = c.claim("b").expect("pending across the restart");
        assert_eq!((b.route.as_str(), b.caller.as_str()), ("csn369791", "fp-b"));
        c.restore("b", b);
        drop(c);
        let c = open();
        assert_eq!(c.pending().len(), 1);
        assert_eq!(std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap().lines().count(), 1, "compacted");
        // A journal damaged other than at its end is refused, not half read.
        std::fs::write(dir.path().join(JOURNAL), "junk\n{\"op\":\"consume\",\"id\":\"b\"}\n").unwrap();
        assert!(Correlation::open(dir.path(), rule(60_000), 100, CorrelationMetrics::default()).is_err());
    }
}
