//! Group commit without a hand-off: the request that finds nobody writing becomes the leader
//! and writes every queued record as one batch, with one fsync, on its own thread; records that
//! arrive meanwhile wait for the next leader, a task of its own spawned when the batch is done.
//! A leader first lets the runtime run what it is about to run, so that requests already on
//! their way join its batch (an fsync's cost is paid per batch).
//! A request thus reaches the disk and comes back without waking another thread, and the
//! records it releases are woken on the runtime that runs them.
//!
//! A duties thread does what no request waits for: records nobody waits on (outcomes) left in
//! the queue (within [`SYNC_DELAY`]), the officer tools' spool, checkpoints (signing may take
//! the TPM milliseconds: never on a request's thread), rotation by age, retention, and the
//! final checkpoint at stop.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Job;
use super::metrics::AuditMetrics;
use super::writer::{self, CheckpointFailure, Checkpointer, Writer};

/// The longest a record nobody waits on stays queued before it is written and made durable.
pub(super) const SYNC_DELAY: Duration = Duration::from_millis(10);

/// The most scheduler passes a leader lets run to gather records into its batch.
const GATHER_PASSES: usize = 8;

/// How often the duties thread looks for spooled records (a directory scan).
const SPOOL_EVERY: Duration = Duration::from_millis(100);

pub(super) struct Committer {
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
    healthy: AtomicBool,
    capacity: usize,
    duties: Mutex<Duties>,
    /// The duties thread waits here.
    wake: Condvar,
    /// The duties thread sleeps until the next checkpoint is due (nothing queued): a record
    /// queued without a leader wakes it.
    dozing: AtomicBool,
    /// Set when the gateway's metrics are attached.
    written: OnceLock<AuditMetrics>,
    /// The duties thread runs: without it no checkpoint is signed and no spooled record is
    /// taken, so its end (a panic included) turns the log unhealthy.
    duties_running: AtomicBool,
}

struct Queue {
    jobs: Vec<Job>,
    /// When the oldest of `jobs` was queued (the queue was empty before it).
    since: Option<Instant>,
    /// A leader is writing, or a leader task is on its way: a new record needing durability
    /// only waits.
    leading: bool,
}

#[derive(Default)]
struct Duties {
    stop: bool,
    /// A checkpoint is due by count.
    checkpoint: bool,
    /// Checkpoint now and cut the active segment to its records (the gateway stops).
    forced: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Queue {
    /// Every queued record, for one batch.
    fn take(&mut self) -> Vec<Job> {
        self.since = None;
        std::mem::take(&mut self.jobs)
    }

    /// Every queued record if the oldest has waited [`SYNC_DELAY`] (no leader took it), or
    /// `all`; otherwise none.
    fn take_unattended(&mut self, all: bool) -> Vec<Job> {
        match self.since {
            Some(t) if all || t.elapsed() >= SYNC_DELAY => self.take(),
            _ => Vec::new(),
        }
    }
}

/// A poisoned lock still guards consistent state here (no code under these locks panics; if
/// one did, the batch it held was refused): go on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Committer {
    /// Takes over an opened writer and checkpointer and starts the duties thread.
    pub(super) fn start(
        writer: Writer,
        checkpointer: Checkpointer,
        capacity: usize,
    ) -> std::io::Result<Arc<Committer>> {
        let core = Arc::new(Committer {
            queue: Mutex::new(Queue { jobs: Vec::new(), since: None, leading: false }),
            writer: Mutex::new(writer),
            healthy: AtomicBool::new(true),
            capacity: capacity.max(1),
            duties: Mutex::new(Duties::default()),
            wake: Condvar::new(),
            dozing: AtomicBool::new(false),
            written: OnceLock::new(),
            duties_running: AtomicBool::new(true),
        });
        let c = core.clone();
        std::thread::Builder::new().name("audit-duties".into()).spawn(move || {
            let _end = DutiesEnd(c.clone());
            c.keep(checkpointer);
        })?;
        Ok(core)
    }

    pub(super) fn attach(&self, written: AuditMetrics) {
        written.healthy.set(i64::from(self.is_healthy()));
        written.duties.set(i64::from(self.duties_running.load(Ordering::Relaxed)));
        let _ = self.written.set(written);
    }

    /// Writes a batch with its fsync, and counts it.
    fn write(&self, w: &mut Writer, batch: Vec<Job>) -> Result<(), String> {
        let records = batch.len() as u64;
        let started = Instant::now();
        let result = w.append(batch);
        self.note(&result);
        if let Some(c) = self.written.get() {
            c.healthy.set(i64::from(result.is_ok()));
            match &result {
                Ok(()) => {
                    c.records.inc_by(records);
                    c.batches.inc();
                    c.write_seconds.observe(started.elapsed().as_secs_f64());
                }
                Err(_) => {
                    c.failures.inc();
                }
            }
        }
        result
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.duties_running.load(Ordering::Relaxed)
    }

    pub(super) fn set_unhealthy(&self) {
        self.healthy.store(false, Ordering::Relaxed);
    }

    /// Queues a record. Ok(true): the caller is now the leader and must call [`Committer::lead`].
    /// Records nobody waits on never lead: they go with the next batch.
    pub(super) fn submit(&self, job: Job) -> Result<bool, String> {
        let waited = job.done.is_some();
        // Records no checkpoint would ever sign are not taken (the request is refused).
        if !self.duties_running.load(Ordering::Relaxed) {
            return Err(DUTIES_ENDED.into());
        }
        let mut q = lock(&self.queue);
        if q.jobs.len() >= self.capacity {
            return Err("the audit queue is full".into());
        }
        if q.jobs.is_empty() {
            q.since = Some(Instant::now());
        }
        q.jobs.push(job);
        let lead = waited && !q.leading;
        q.leading |= lead;
        let unattended = !q.leading;
        drop(q);
        if unattended {
            self.unattended();
        }
        Ok(lead)
    }

    /// Records are queued and no leader will take them: the duties thread must not sleep until
    /// the next checkpoint.
    fn unattended(&self) {
        if self.dozing.swap(false, Ordering::SeqCst) {
            // Taking the lock orders this after the duties thread's look at the queue.
            let _d = lock(&self.duties);
            self.wake.notify_one();
        }
    }

    /// Before a leader writes, requests the runtime is about to run may bring records of their
    /// own: the leader lets the scheduler run them, pass after pass, while each pass adds to
    /// the batch (at most [`GATHER_PASSES`]), so one fsync serves them all. A pass that adds
    /// nothing closes the batch: a lone request waits one scheduler pass.
    async fn gather(&self) {
        let mut queued = lock(&self.queue).jobs.len();
        for _ in 0..GATHER_PASSES {
            tokio::task::yield_now().await;
            let now = lock(&self.queue).jobs.len();
            if now == queued {
                break;
            }
            queued = now;
        }
    }

    /// Leads: gathers, then writes the queued records as one batch and makes them durable, on
    /// the caller's thread (it blocks for the write and the fsync). If records that are waited
    /// on came meanwhile, a task of its own leads their batch, so the caller's request goes on.
    ///
    /// A leader's future can be dropped while it gathers (its request's HTTP/2 stream was reset,
    /// its client went away): then it hands the lead on, as a task of its own, so that the
    /// batch is written and `leading` does not stay set with nobody leading.
    pub(super) async fn lead(self: &Arc<Self>) {
        let mut leading = Leading(Some(self.clone()));
        self.gather().await;
        leading.0 = None;
        self.write_queued();
    }

    /// Takes over from a leader dropped before it wrote.
    fn hand_off(self: &Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let core = self.clone();
            rt.spawn(async move { core.lead().await });
        } else {
            lock(&self.queue).leading = false;
            self.unattended();
        }
    }

    fn write_queued(self: &Arc<Self>) {
        let mut w = lock(&self.writer);
        let batch = lock(&self.queue).take();
        if !batch.is_empty() {
            let _ = self.write(&mut w, batch);
        }
        let checkpoint = w.checkpoint_wanted();
        drop(w);
        if checkpoint {
            self.ask_checkpoint();
        }
        let mut q = lock(&self.queue);
        let next = q.jobs.iter().any(|j| j.done.is_some());
        let rt = tokio::runtime::Handle::try_current();
        if let (true, Ok(rt)) = (next, &rt) {
            drop(q);
            let core = self.clone();
            rt.spawn(async move { core.lead().await });
            return;
        }
        // Nobody waits on what is left (or, outside a runtime, nobody would run a leader
        // task): the duties thread takes it.
        q.leading = false;
        let left = !q.jobs.is_empty();
        drop(q);
        if left {
            self.unattended();
        }
    }

    fn note(&self, result: &Result<(), String>) {
        match result {
            Ok(()) => self.healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::error!(error = %e, "audit write failed; requests are refused until it succeeds");
                self.healthy.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Asks the duties thread for a checkpoint now, cutting the active segment to its records.
    pub(super) fn force_checkpoint(&self, done: oneshot::Sender<Result<(), String>>) {
        let mut d = lock(&self.duties);
        // Under the duties lock: the thread's end answers what was queued before it.
        if !self.duties_running.load(Ordering::SeqCst) {
            let _ = done.send(Err(DUTIES_ENDED.into()));
            return;
        }
        d.forced.push(done);
        drop(d);
        self.wake.notify_one();
    }

    /// The duties thread finishes (final checkpoint, segment cut to its records) and ends.
    pub(super) fn stop(&self) {
        lock(&self.duties).stop = true;
        self.wake.notify_one();
    }

    /// The duties thread.
    fn keep(self: Arc<Self>, mut cp: Checkpointer) {
        let mut spool_checked = Instant::now().checked_sub(SPOOL_EVERY).unwrap_or_else(Instant::now);
        loop {
            let (forced, stop, asked) = self.wait(&cp);
            let finishing = stop || !forced.is_empty();
            let mut w = lock(&self.writer);
            // Records a leader is about to take stay for it (a checkpoint vouches only for
            // durable records anyway); the rest, and all at the end, are written here.
            let mut batch = lock(&self.queue).take_unattended(finishing);
            let spooled = if finishing || spool_checked.elapsed() >= SPOOL_EVERY {
                spool_checked = Instant::now();
                w.spool.take(&mut batch)
            } else {
                Vec::new()
            };
            let mut written = Ok(());
            if !batch.is_empty() {
                written = self.write(&mut w, batch);
                // A spooled record's file goes only once the record is durable.
                if written.is_ok() {
                    w.spool.durable(spooled);
                }
            }
            if let Err(e) = w.rotate_if_old() {
                tracing::error!(error = %e, "audit segment rotation failed");
            }
            let prune = w.take_prune();
            // Every record the writer holds is durable: a checkpoint vouches for them all.
            let size = w.tree.size();
            let head = (written.is_ok() && cp.due(size, finishing || asked)).then(|| w.tree.root());
            drop(w);
            if let Some((dir, active, retention)) = prune {
                prune_old(&dir, active, retention, &cp);
            }
            let result = match head {
                None => written,
                Some(root) => match cp.write(size, &root) {
                    Ok(()) => {
                        self.checkpointed(size, cp.every);
                        Ok(())
                    }
                    // The signer (the TPM) is away: the records stay durable and chained, and
                    // the next signed checkpoint, one interval later, covers them all.
                    Err(e @ CheckpointFailure::Signer(_)) => {
                        tracing::error!(error = %e, tree_size = size, "audit checkpoint deferred: signer failed");
                        self.checkpointed(size, cp.every);
                        Err(e.to_string())
                    }
                    Err(e @ CheckpointFailure::Write(_)) => {
                        tracing::error!(error = %e, "audit checkpoint failed");
                        self.healthy.store(false, Ordering::Relaxed);
                        Err(e.to_string())
                    }
                },
            };
            // A forced checkpoint is the gateway stopping: the segment is cut to its records.
            let result = match result {
                Ok(()) if finishing => lock(&self.writer).close_segment(),
                r => r,
            };
            if let Err(e) = &result
                && stop
            {
                tracing::error!(error = %e, "audit log not closed cleanly at stop");
            }
            for done in forced {
                let _ = done.send(result.clone());
            }
            if stop {
                return;
            }
        }
    }

    /// The next checkpoint by count is `every` records after `size`; if the records written
    /// while this one was signed already make it due, it comes at once.
    fn checkpointed(&self, size: u64, every: u64) {
        let mut w = lock(&self.writer);
        w.checkpointed(size, every);
        let again = w.checkpoint_wanted();
        drop(w);
        if again {
            self.ask_checkpoint();
        }
    }

    /// A checkpoint is due by count: the duties thread writes it next.
    fn ask_checkpoint(&self) {
        lock(&self.duties).checkpoint = true;
        self.wake.notify_one();
    }

    /// Waits for something to do: a stop, a forced or counted checkpoint, records no leader
    /// took within [`SYNC_DELAY`] of being queued, or the checkpoint interval. Under load
    /// leaders take every record long before that, and this thread writes nothing (an fsync
    /// of its own would cost CPU and hold the writer from a leader).
    fn wait(&self, cp: &Checkpointer) -> (Vec<oneshot::Sender<Result<(), String>>>, bool, bool) {
        let until = Instant::now() + cp.interval;
        let mut d = lock(&self.duties);
        while !(d.stop || d.checkpoint || !d.forced.is_empty()) {
            // Dozing is announced before the look at the queue: a record queued after the look
            // sees it and wakes this thread (under the duties lock, so not before the wait).
            self.dozing.store(true, Ordering::SeqCst);
            let since = lock(&self.queue).since;
            let now = Instant::now();
            let left = until.saturating_duration_since(now);
            let timeout = match since {
                Some(t) => {
                    self.dozing.store(false, Ordering::SeqCst);
                    (t + SYNC_DELAY).saturating_duration_since(now).min(left)
                }
                None => left,
            };
            if timeout.is_zero() {
                break;
            }
            d = self.wake.wait_timeout(d, timeout).unwrap_or_else(|e| e.into_inner()).0;
            self.dozing.store(false, Ordering::SeqCst);
        }
        (std::mem::take(&mut d.forced), d.stop, std::mem::take(&mut d.checkpoint))
    }
}

const DUTIES_ENDED: &str = "the audit duties thread has ended: no checkpoint can be written";

/// Held by the duties thread: when it ends, however (a panic too), the log turns unhealthy,
/// `/readyz` fails, and whoever waits for a checkpoint is answered instead of waiting forever.
struct DutiesEnd(Arc<Committer>);

impl Drop for DutiesEnd {
    fn drop(&mut self) {
        let core = &self.0;
        let stopped = {
            let mut d = lock(&core.duties);
            core.duties_running.store(false, Ordering::SeqCst);
            for done in d.forced.drain(..) {
                let _ = done.send(Err(DUTIES_ENDED.into()));
            }
            d.stop
        };
        if !stopped {
            core.healthy.store(false, Ordering::Relaxed);
            tracing::error!(panicked = std::thread::panicking(), "{DUTIES_ENDED}; requests are refused");
        }
        if let Some(w) = core.written.get() {
            w.duties.set(0);
            w.healthy.set(i64::from(stopped));
        }
    }
}

/// The lead while a leader gathers: dropped before it writes, it hands the lead on.
struct Leading(Option<Arc<Committer>>);

impl Drop for Leading {
    fn drop(&mut self) {
        if let Some(core) = self.0.take() {
            core.hand_off();
        }
    }
}

fn prune_old(dir: &Path, active: u32, retention: Duration, cp: &writer::Checkpointer) {
    if let Err(e) = super::retention::prune(dir, active, retention, cp) {
        tracing::error!(error = %e, "audit retention: pruning failed; nothing was removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Audit, AuditConfig, Record};

    fn job() -> Job {
        Job::new(&Record::now("outcome"), None)
    }

    /// A log in `dir/log` with fresh keys and the settings in `extra`.
    fn log_in(dir: &std::path::Path, extra: &str) -> std::sync::Arc<Audit> {
        let key = dir.join("cp.key");
        let ps = dir.join("ps.key");
        std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        std::fs::write(&ps, "ab".repeat(32)).unwrap();
        let cfg: AuditConfig = toml::from_str(&format!(
            "dir = {:?}\ncheckpoint_key = {key:?}\npseudonym_key = {ps:?}\n{extra}",
            dir.join("log")
        ))
        .unwrap();
        Audit::start(&cfg).unwrap()
    }

    /// A leader whose request is dropped while it gathers (an HTTP/2 stream reset) used to
    /// leave `leading` set with nobody leading: its batch waited for the duties thread, and so
    /// did every later durable record. Now the lead is handed on.
    #[tokio::test(flavor = "current_thread")]
    async fn a_leader_dropped_while_it_gathers_hands_the_lead_on() {
        let tmp = tempfile::tempdir().unwrap();
        let audit = log_in(tmp.path(), "");
        for round in 0..3 {
            let (tx, rx) = oneshot::channel();
            assert!(audit.core.submit(Job::new(&Record::now("request"), Some(tx))).unwrap(), "round {round}: no lead");
            // The leader is polled once (it yields to gather) and dropped, as a reset stream's
            // future is.
            tokio::select! {
                biased;
                _ = audit.core.lead() => panic!("the leader finished without gathering"),
                _ = std::future::ready(()) => {}
            }
            assert!(rx.await.unwrap().is_ok());
            assert!(!lock(&audit.core.queue).leading, "round {round}: the lead was lost");
        }
    }

    /// The duties thread leaves records younger than the delay to the leader on its way.
    #[test]
    fn the_duties_thread_takes_only_records_no_leader_took() {
        let mut q = Queue { jobs: vec![job()], since: Some(Instant::now()), leading: false };
        assert!(q.take_unattended(false).is_empty());
        assert_eq!(q.jobs.len(), 1);
        assert_eq!(q.take_unattended(true).len(), 1);
        assert!(q.since.is_none());
        q.jobs.push(job());
        q.since = Instant::now().checked_sub(SYNC_DELAY);
        assert_eq!(q.take_unattended(false).len(), 1);
        assert!(q.take_unattended(true).is_empty());
    }

    /// A record nobody waits on is made durable without a leader; one queued before a durable
    /// one goes in the leader's batch, and no second batch follows it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_nobody_waits_on_go_with_a_leader_or_after_the_delay() {
        let tmp = tempfile::tempdir().unwrap();
        let audit = log_in(tmp.path(), "checkpoint_every = 1000000\ncheckpoint_interval_ms = 3600000");
        let written = AuditMetrics::default();
        audit.attach_metrics(written.clone());

        audit.append(&Record::now("outcome"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while written.records.get() < 1 && Instant::now() < deadline {
            tokio::time::sleep(SYNC_DELAY / 2).await;
        }
        assert_eq!((written.records.get(), written.batches.get()), (1, 1));

        // (A test thread stalled past the delay between the two calls would see the duties
        // thread write the outcome alone: up to three tries.)
        let mut together = false;
        for _ in 0..3 {
            let (records, batches) = (written.records.get(), written.batches.get());
            audit.append(&Record::now("outcome"));
            audit.append_durable(&Record::now("request")).await.unwrap();
            assert_eq!(written.records.get(), records + 2);
            tokio::time::sleep(SYNC_DELAY * 3).await;
            assert_eq!(written.records.get(), records + 2);
            if written.batches.get() == batches + 1 {
                together = true;
                break;
            }
        }
        assert!(together, "the leader's batch never took the queued outcome");
    }
}
