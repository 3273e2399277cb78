//! Fair shares per key: how many connections (or requests) one source address or one client
//! certificate may hold at once, so that one flood or one misbehaving terminal cannot take
//! every slot from the others. A slot is a guard: it is given back when dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Holders per key, each bounded.
pub struct PerKey<K: Hash + Eq + Clone> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    max: usize,
}

/// One slot of a [`PerKey`], given back on drop.
pub struct Slot<K: Hash + Eq + Clone> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> PerKey<K> {
    pub fn new(max: usize) -> Self {
        Self { held: Arc::new(Mutex::new(HashMap::new())), max: max.max(1) }
    }

    /// A slot for `key`, or None when `key` holds `max` already.
    pub fn take(&self, key: &K) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot { held: self.held.clone(), key: key.clone() })
    }

    /// Keys holding a slot now (memory stays bounded by the holders).
    pub fn keys(&self) -> usize {
        self.held.lock().map_or(0, |h| h.len())
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_max_and_slots_come_back() {
        let p = PerKey::new(2);
        let a1 = p.take(&"a").unwrap();
        let _a2 = p.take(&"a").unwrap();
        assert!(p.take(&"a").is_none());
        let _b = p.take(&"b").unwrap();
        drop(a1);
        assert!(p.take(&"a").is_some());
        assert_eq!(p.keys(), 2);
    }
}
