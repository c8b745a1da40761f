//! Signature nonces seen within the accepted clock skew: a request that reuses
//! one is a replay. Entries expire with the skew window (a replay older than
//! that fails the timestamp check instead).
//!
//! Bounded by design, because any holder of a valid key can send nonces:
//! - a nonce is kept as a 16-byte digest, never as the caller's text;
//! - each key has a share of its own (the total divided among the keys), so a
//!   key that fills its share is refused new requests ("busy") until its
//!   nonces expire, and every other key goes on unharmed;
//! - shares are allocated whole at start and never grow, so the worst case is
//!   known then (`worst_case_bytes`: ~77 bytes a nonce). A share's hash set
//!   has room for twice its nonces: a full share churning (one nonce expiring
//!   as the next comes) leaves tombstones, and a table more than half full
//!   when they run out of room is reallocated at double the size, where one
//!   at most half full is rehashed in place (the load soak found the
//!   doubling: docs/RELIABILITY.md, "Load and soak").
//!
//! The cache lives in memory: after a restart, a request captured in the
//! previous 15 minutes could be replayed once. Persisting it belongs with the
//! daemon's store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// 128 bits of SHA-256: a false "reused" would take ~2^64 live nonces.
type Id = [u8; 16];

pub struct NonceCache {
    ttl: Duration,
    shares: HashMap<String, Mutex<Share>>,
    per_key: usize,
    /// What the shares hold, measured once they are allocated.
    worst_case: usize,
}

struct Share {
    seen: HashSet<Id>,
    order: VecDeque<(Instant, Id)>,
}

impl Share {
    /// Writes every slot once, so that the share's memory is resident from
    /// the start: the queue is a ring that reaches a new page every ~128
    /// nonces until it has gone round once (hours, at a steady rate), and the
    /// daemon's RSS crept up by that much all along (the load soak's line).
    /// RSS at start is then the worst case the log states.
    fn make_resident(&mut self, per_key: usize) {
        let now = Instant::now();
        for i in 0..per_key {
            let mut id: Id = [0; 16];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            self.order.push_back((now, id));
            self.seen.insert(id);
        }
        self.order.clear();
        self.seen.clear();
    }
}

/// What `check` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Nonce {
    Fresh,
    Reused,
    /// This key has too many live nonces to remember one more.
    Full,
}

impl NonceCache {
    /// A cache of at most `total` live nonces, shared evenly among `keys`.
    pub fn new<'a>(ttl: Duration, total: usize, keys: impl IntoIterator<Item = &'a str>) -> Self {
        let keys: Vec<&str> = keys.into_iter().collect();
        let per_key = (total / keys.len().max(1)).max(1);
        let shares = keys
            .into_iter()
            .map(|key| {
                let mut share = Share {
                    // At most half full, ever: see the module's comment.
                    seen: HashSet::with_capacity(2 * per_key + 2),
                    order: VecDeque::with_capacity(per_key),
                };
                share.make_resident(per_key);
                (key.to_owned(), Mutex::new(share))
            })
            .collect::<HashMap<_, _>>();
        let bucket = std::mem::size_of::<Id>() + 1;
        let queued = std::mem::size_of::<(Instant, Id)>();
        // Read now: a table's `capacity()` later counts its tombstones off.
        let worst_case = shares
            .values()
            .map(|share| {
                let share = share.lock().unwrap_or_else(|e| e.into_inner());
                share.order.capacity() * queued + (share.seen.capacity() * 8 / 7 + 1) * bucket
            })
            .sum();
        Self {
            ttl,
            shares,
            per_key,
            worst_case,
        }
    }

    /// Live nonces each key may have.
    pub fn per_key(&self) -> usize {
        self.per_key
    }

    /// Bytes the shares can ever hold: their time-ordered queues, and their
    /// hash tables' buckets (a digest and a control byte each).
    pub fn worst_case_bytes(&self) -> usize {
        self.worst_case
    }

    /// Records `nonce` for `key_id`; two keys may pick the same nonce. A key
    /// the cache was not built with has no share: `Full`.
    pub fn check(&self, key_id: &str, nonce: &str) -> Nonce {
        self.check_at(key_id, nonce, Instant::now())
    }

    fn check_at(&self, key_id: &str, nonce: &str, now: Instant) -> Nonce {
        let Some(share) = self.shares.get(key_id) else {
            return Nonce::Full;
        };
        let id: Id = Sha256::digest(nonce.as_bytes())[..16]
            .try_into()
            .expect("16 of 32 bytes");
        let mut share = share.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, old)) = share.order.front().copied() {
            if now.duration_since(at) < self.ttl {
                break;
            }
            share.order.pop_front();
            share.seen.remove(&old);
        }
        if share.seen.contains(&id) {
            return Nonce::Reused;
        }
        if share.seen.len() >= self.per_key {
            return Nonce::Full;
        }
        share.seen.insert(id);
        share.order.push_back((now, id));
        Nonce::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_caught_and_entries_expire() {
        let cache = NonceCache::new(Duration::from_millis(50), 4, ["k", "other"]);
        assert_eq!(cache.per_key(), 2);
        assert_eq!(cache.check("k", "n1"), Nonce::Fresh);
        assert_eq!(cache.check("k", "n1"), Nonce::Reused);
        assert_eq!(cache.check("other", "n1"), Nonce::Fresh, "scoped by key");
        assert_eq!(cache.check("k", "n2"), Nonce::Fresh);
        assert_eq!(cache.check("k", "n3"), Nonce::Full, "k's share is full");
        assert_eq!(
            cache.check("other", "n3"),
            Nonce::Fresh,
            "a full share does not crowd out another key"
        );
        assert_eq!(cache.check("stranger", "n1"), Nonce::Full, "no share");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.check("k", "n3"), Nonce::Fresh, "old entries expired");
        assert_eq!(cache.check("k", "n1"), Nonce::Fresh);
    }

    #[test]
    fn a_share_holds_digests_not_text() {
        let cache = NonceCache::new(Duration::from_secs(60), 10, ["k"]);
        let long = "x".repeat(64 * 1024);
        assert_eq!(cache.check("k", &long), Nonce::Fresh);
        assert_eq!(cache.check("k", &long), Nonce::Reused);
        let share = cache.shares["k"].lock().unwrap();
        assert_eq!(std::mem::size_of_val(&share.order[0]), 32);
        assert_eq!(share.seen.len(), 1);
    }

    #[test]
    fn the_worst_case_is_fixed_at_start() {
        let cache = NonceCache::new(Duration::from_secs(60), 200_000, ["a", "b"]);
        let worst = cache.worst_case_bytes();
        assert!((14 << 20..16 << 20).contains(&worst), "{worst}");
        for i in 0..200_001 {
            cache.check(if i % 2 == 0 { "a" } else { "b" }, &i.to_string());
        }
        assert_eq!(cache.worst_case_bytes(), worst, "full shares did not grow");
    }

    /// A full share churning for a long time (each new nonce as the oldest
    /// expires, as a key at a steady rate has it) keeps the table it had at
    /// start. With room for only its nonces, tombstones made it reallocate
    /// at double the size (the soak's finding).
    #[test]
    fn a_full_share_churning_keeps_its_table() {
        let per_key = 1000;
        let cache = NonceCache::new(Duration::from_secs(1), per_key, ["k"]);
        let room = |c: &NonceCache| c.shares["k"].lock().unwrap().seen.capacity();
        let at_start = room(&cache);
        let worst = cache.worst_case_bytes();
        let t0 = Instant::now();
        for i in 0..50 * per_key as u64 {
            // One a millisecond for a TTL of a second: the share stays full.
            let now = t0 + Duration::from_millis(i);
            assert_eq!(
                cache.check_at("k", &i.to_string(), now),
                Nonce::Fresh,
                "{i}"
            );
            assert!(
                room(&cache) <= at_start,
                "reallocated after {i}: {} > {at_start}",
                room(&cache)
            );
        }
        assert_eq!(cache.shares["k"].lock().unwrap().seen.len(), per_key);
        assert_eq!(cache.worst_case_bytes(), worst);
    }

    /// VmRSS of this process, in bytes.
    fn rss() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<usize>()
            .unwrap()
            * 1024
    }

    /// The shares are resident once made: RSS grows by most of the worst
    /// case at once, not over the hours a ring takes to go round (untouched,
    /// only the hash table's control bytes are: ~4%). Half, not all: memory
    /// other tests of this process freed may be reused already resident.
    #[test]
    fn the_worst_case_is_resident_at_start() {
        let before = rss();
        let cache = NonceCache::new(Duration::from_secs(60), 1_000_000, ["a"]);
        let grown = rss().saturating_sub(before);
        let worst = cache.worst_case_bytes();
        assert!(grown * 2 >= worst, "RSS grew {grown} of {worst}");
        assert_eq!(cache.check("a", "n"), Nonce::Fresh);
        assert_eq!(cache.shares["a"].lock().unwrap().seen.len(), 1);
    }
}
