//! CSN 36 9791 callback correlation: the messageIDs of the RequestCertificateRequest messages the
//! gateway forwarded, remembered for a while (bounded, expiring). A SendCertificatesRequest callback
//! whose messageID is not among them is answered `failure_messageID_unknown` and not forwarded.
//! The store lives outside the policy bundle, so it survives a reload.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct ForwardedIds {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl ForwardedIds {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity: capacity.max(1), ttl }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, at)) = inner.order.front() {
            let too_old = now.duration_since(*at) > self.ttl;
            if !too_old && inner.order.len() <= self.capacity {
                break;
            }
            // Only drop the map entry if it is this (oldest) registration of the id.
            if inner.seen.get(id) == Some(at) {
                inner.seen.remove(id);
            }
            inner.order.pop_front();
        }
    }

    pub fn remember(&self, id: &str) {
        let now = Instant::now();
        if let Ok(mut inner) = self.inner.lock() {
            inner.seen.insert(id.to_owned(), now);
            inner.order.push_back((id.to_owned(), now));
            self.expire(&mut inner, now);
        }
    }

    /// Takes `id` out if it was forwarded and has not expired: a callback consumes its
    /// messageID, so a replay finds it gone. Returns when it was remembered, for
    /// [`Self::restore`]. Fails closed (None) if the lock is poisoned.
    pub fn claim(&self, id: &str) -> Option<Instant> {
        let now = Instant::now();
        let mut inner = self.inner.lock().ok()?;
        self.expire(&mut inner, now);
        inner.seen.remove(id)
    }

    /// Puts back a messageID claimed by a callback that was not delivered, with its original
    /// time (a SPOC may send the callback again).
    pub fn restore(&self, id: &str, at: Instant) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.seen.insert(id.to_owned(), at);
            inner.order.push_back((id.to_owned(), at));
            self.expire(&mut inner, Instant::now());
        }
    }

    /// Every messageID remembered and not expired, with its age (the pair link's catch-up).
    pub fn snapshot(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        match self.inner.lock() {
            Ok(mut inner) => {
                self.expire(&mut inner, now);
                inner.seen.iter().map(|(id, at)| (id.clone(), now.duration_since(*at))).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Remembers `id` as forwarded `age` ago (by the peer appliance); an age past the lifetime
    /// is not remembered.
    pub fn remember_aged(&self, id: &str, age: Duration) {
        if age < self.ttl
            && let Some(at) = Instant::now().checked_sub(age)
        {
            self.restore(id, at);
        }
    }

    /// True when `id` was forwarded and has not expired. Fails closed if the lock is poisoned.
    pub fn knows(&self, id: &str) -> bool {
        let now = Instant::now();
        match self.inner.lock() {
            Ok(mut inner) => {
                self.expire(&mut inner, now);
                inner.seen.contains_key(id)
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let ids = ForwardedIds::new(2, Duration::from_secs(60));
        ids.remember("a");
        ids.remember("b");
        ids.remember("c");
        assert!(!ids.knows("a"));
        assert!(ids.knows("b") && ids.knows("c"));
        let short = ForwardedIds::new(10, Duration::from_millis(1));
        short.remember("x");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.knows("x"));
    }

    #[test]
    fn a_claim_consumes_and_a_restore_puts_back() {
        let ids = ForwardedIds::new(10, Duration::from_secs(60));
        ids.remember("a");
        let at = ids.claim("a").expect("remembered");
        assert!(ids.claim("a").is_none() && !ids.knows("a"));
        ids.restore("a", at);
        assert!(ids.knows("a"));
        assert!(ids.claim("never").is_none());
    }
}
