//! Signature nonces seen within the accepted clock skew: a request that reuses
//! one is a replay. Entries expire with the skew window (a replay older than
//! that fails the timestamp check instead), and the cache is bounded: when it
//! is full of live nonces, new requests are refused rather than let a replay in.
//!
//! The cache lives in memory: after a restart, a request captured in the
//! previous 15 minutes could be replayed once. Persisting it belongs with the
//! daemon's store.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct NonceCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

/// What `check` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Nonce {
    Fresh,
    Reused,
    /// Too many live nonces to remember one more.
    Full,
}

impl NonceCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records `nonce` (scoped by `key_id`: two keys may pick the same nonce).
    pub fn check(&self, key_id: &str, nonce: &str) -> Nonce {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            let (_, old) = inner.order.pop_front().expect("front exists");
            inner.seen.remove(&old);
        }
        let id = format!("{key_id}\n{nonce}");
        if inner.seen.contains_key(&id) {
            return Nonce::Reused;
        }
        if inner.seen.len() >= self.capacity {
            return Nonce::Full;
        }
        inner.seen.insert(id.clone(), now);
        inner.order.push_back((now, id));
        Nonce::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_caught_and_entries_expire() {
        let cache = NonceCache::new(Duration::from_millis(50), 2);
        assert_eq!(cache.check("k", "n1"), Nonce::Fresh);
        assert_eq!(cache.check("k", "n1"), Nonce::Reused);
        assert_eq!(cache.check("other", "n1"), Nonce::Fresh, "scoped by key");
        assert_eq!(cache.check("k", "n2"), Nonce::Full);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.check("k", "n2"), Nonce::Fresh, "old entries expired");
        assert_eq!(cache.check("k", "n1"), Nonce::Fresh);
    }
}
