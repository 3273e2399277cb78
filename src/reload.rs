//! Reloadable state: a value in force, swapped atomically for a new one that loaded and was
//! checked whole, or kept with the reason the new one was refused (and the digest of the source
//! that was refused, so the same files are not tried again until they change). Used by the
//! policy bundle and the revocation lists. This module imports nothing of the crate.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

pub struct Reloadable<T> {
    current: ArcSwap<T>,
    /// The digest of the source last refused, and why.
    refused: Mutex<Option<(String, String)>>,
    /// Bumped each time a new value comes into force.
    generation: AtomicU64,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Self {
        Self { current: ArcSwap::from_pointee(value), refused: Mutex::new(None), generation: AtomicU64::new(0) }
    }

    /// The value in force.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// A cheap look at the value in force (no reference count taken).
    pub fn peek(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// Puts `value` in force; a refusal on record is cleared.
    pub fn put(&self, value: T) {
        self.current.store(Arc::new(value));
        self.generation.fetch_add(1, Ordering::Release);
        if let Ok(mut r) = self.refused.lock() {
            *r = None;
        }
    }

    /// Records that the source with `digest` was refused, and why; the value in force stays.
    pub fn refuse(&self, digest: String, why: String) {
        if let Ok(mut r) = self.refused.lock() {
            *r = Some((digest, why));
        }
    }

    /// The last refusal still on record: (source digest, why).
    pub fn refused(&self) -> Option<(String, String)> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }

    /// How many values came into force after the first.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Reloadable;

    #[test]
    fn a_refusal_keeps_the_value_and_a_new_value_clears_the_refusal() {
        let r = Reloadable::new(1);
        r.refuse("d2".into(), "bad".into());
        assert_eq!(*r.get(), 1);
        assert_eq!(r.refused(), Some(("d2".into(), "bad".into())));
        r.put(3);
        assert_eq!((*r.get(), r.generation(), r.refused()), (3, 1, None));
    }
}
