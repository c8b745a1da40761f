//! A minimum interval between screenshots of one instance, as clouds enforce
//! it ("one call per instance every 10 s"). A slot is taken when a capture
//! starts, so concurrent callers cannot slip through together, and given back
//! if the capture fails: a failed call does not count against the caller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound on remembered instances; expired entries are dropped first.
const MAX_ENTRIES: usize = 100_000;

pub(crate) struct Throttle {
    last: Mutex<HashMap<String, Instant>>,
}

/// A taken slot; `release` gives it back.
#[derive(Debug)]
pub(crate) struct Slot {
    key: String,
    at: Instant,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the slot of `key`, or says how long until it is free.
    pub(crate) fn take(&self, key: &str, interval: Duration) -> Result<Slot, Duration> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = last.get(key) {
            let since = now.duration_since(*at);
            if since < interval {
                return Err(interval - since);
            }
        }
        if last.len() >= MAX_ENTRIES {
            last.retain(|_, at| now.duration_since(*at) < interval);
        }
        last.insert(key.to_owned(), now);
        Ok(Slot {
            key: key.to_owned(),
            at: now,
        })
    }

    /// Gives a slot back, unless a later call has taken it since.
    pub(crate) fn release(&self, slot: Slot) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.get(&slot.key) == Some(&slot.at) {
            last.remove(&slot.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_per_interval_and_failures_are_given_back() {
        let t = Throttle::new();
        let second = Duration::from_secs(1);
        let slot = t.take("i-1", second).unwrap();
        let wait = t.take("i-1", second).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= second,
            "{wait:?}"
        );
        assert!(t.take("i-2", second).is_ok(), "other instances are free");
        t.release(slot);
        assert!(
            t.take("i-1", second).is_ok(),
            "a released slot is free again"
        );
        assert!(t.take("i-3", Duration::ZERO).is_ok() && t.take("i-3", Duration::ZERO).is_ok());
    }
}
