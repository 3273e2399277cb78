//! The circuit breaker in front of an upstream: after `failures` attempts in a row that could
//! not reach it (connect or TLS handshake failed), it opens, and requests are refused at once
//! (502 `UpstreamUnavailable`) instead of each trying to connect. After `open` it lets one
//! request through (half-open): if that reaches the upstream the breaker closes, else it opens
//! again. A successful background probe closes it too.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

/// The breaker's state, as `spocgw_upstream_breaker_state` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial request is out.
    HalfOpen,
}

pub struct Breaker {
    state: Mutex<State>,
    /// Closed with no failure counted: the state of nearly every request, read without the
    /// lock (a forwarded request takes no lock to pass or to report success).
    quiet: AtomicBool,
    threshold: u32,
    open: Duration,
    gauge: std::sync::OnceLock<Gauge>,
}

/// What the breaker lets a request do.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Pass,
    /// Go ahead as the half-open trial: report how it went.
    Trial,
    /// Refused: the breaker is open.
    Refuse,
}

impl Breaker {
    /// `threshold` 0 turns the breaker off.
    pub fn new(threshold: u32, open: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            quiet: AtomicBool::new(true),
            threshold,
            open,
            gauge: std::sync::OnceLock::new(),
        }
    }

    /// Shows the state in `gauge` from now on.
    pub fn attach(&self, gauge: Gauge) {
        gauge.set(self.state() as i64);
        let _ = self.gauge.set(gauge);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn show(&self, s: &State) {
        self.quiet.store(matches!(s, State::Closed { failures: 0 }), Ordering::Release);
        if let Some(g) = self.gauge.get() {
            g.set(view(s) as i64);
        }
    }

    pub fn state(&self) -> BreakerState {
        view(&self.lock())
    }

    pub fn admit(&self) -> Admit {
        if self.threshold == 0 || self.quiet.load(Ordering::Acquire) {
            return Admit::Pass;
        }
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Admit::Pass,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen;
                self.show(&s);
                Admit::Trial
            }
            State::Open { .. } | State::HalfOpen => Admit::Refuse,
        }
    }

    /// The upstream was reached (whatever it answered).
    pub fn reached(&self) {
        if self.quiet.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        if !matches!(*s, State::Closed { failures: 0 }) {
            let was_open = !matches!(*s, State::Closed { .. });
            *s = State::Closed { failures: 0 };
            self.show(&s);
            if was_open {
                tracing::info!("upstream circuit breaker closed: the upstream answers again");
            }
        }
    }

    /// The upstream could not be reached.
    pub fn unreachable(&self) {
        if self.threshold == 0 {
            return;
        }
        let mut s = self.lock();
        let open = match *s {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *s = State::Closed { failures: failures + 1 };
                self.show(&s);
                false
            }
            State::Open { .. } => false,
            State::Closed { .. } | State::HalfOpen => true,
        };
        if open {
            *s = State::Open { until: Instant::now() + self.open };
            self.show(&s);
            tracing::warn!(
                open_ms = self.open.as_millis() as u64,
                "upstream circuit breaker open: requests are refused at once until a trial reaches the upstream"
            );
        }
    }

    /// A trial request ended without saying anything about reachability (the caller gave up):
    /// the next request may try.
    pub fn trial_abandoned(&self) {
        let mut s = self.lock();
        if matches!(*s, State::HalfOpen) {
            *s = State::Open { until: Instant::now() };
            self.show(&s);
        }
    }
}

fn view(s: &State) -> BreakerState {
    match s {
        State::Closed { .. } => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_refuses_then_tries_once_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert_eq!(b.admit(), Admit::Pass);
            b.unreachable();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.unreachable();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admit::Refuse);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Trial);
        assert_eq!(b.admit(), Admit::Refuse, "one trial at a time");
        b.unreachable();
        assert_eq!(b.state(), BreakerState::Open, "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Trial);
        b.reached();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admit::Pass);
    }

    #[test]
    fn a_reached_upstream_resets_the_count_and_zero_turns_it_off() {
        let b = Breaker::new(2, Duration::from_secs(10));
        b.unreachable();
        b.reached();
        b.unreachable();
        assert_eq!(b.state(), BreakerState::Closed);
        let off = Breaker::new(0, Duration::from_secs(10));
        for _ in 0..10 {
            off.unreachable();
        }
        assert_eq!(off.admit(), Admit::Pass);
    }
}
