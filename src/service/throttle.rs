//! A minimum interval between screenshots of one instance, as clouds enforce
//! it ("one call per instance every 10 s"). A slot is taken when a capture
//! starts, so concurrent callers cannot slip through together, and given back
//! if the capture fails: a failed call does not count against the caller.
//!
//! With a store, the store owns the slots (one transaction takes one), so a
//! restart or `kill -9` does not reopen an interval; without one they live in
//! memory. Every dialect's interval comes through here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Domain, Error, Interval};
use crate::store::{self, Store, StoreError};

/// Bound on remembered instances; expired entries are dropped first.
const MAX_ENTRIES: usize = 100_000;

pub(crate) struct Throttle {
    slots: Slots,
}

enum Slots {
    Memory(Mutex<HashMap<String, Instant>>),
    Durable(Store),
}

/// A taken slot; `Throttle::release` gives it back.
#[derive(Debug)]
pub(crate) struct Slot(Option<Held>);

#[derive(Debug)]
enum Held {
    Memory {
        key: String,
        at: Instant,
    },
    Durable {
        rule: &'static str,
        uuid: String,
        at: OffsetDateTime,
        every: Duration,
    },
}

impl Throttle {
    /// Slots kept in `store` if there is one, else in memory.
    pub(crate) fn new(store: Option<Store>) -> Self {
        Self {
            slots: match store {
                Some(store) => Slots::Durable(store),
                None => Slots::Memory(Mutex::new(HashMap::new())),
            },
        }
    }

    /// Takes the slot of `domain` under `interval`'s rule, or says how long
    /// until it is free. A store that fails is `Unavailable`: the caller may
    /// retry, and nothing was captured.
    pub(crate) async fn take(&self, domain: &Domain, interval: Interval) -> Result<Slot, Error> {
        let Interval { rule, every } = interval;
        // No interval, nothing to keep (and no store write per capture).
        if every.is_zero() {
            return Ok(Slot(None));
        }
        let throttled = |retry_after| Error::Throttled {
            domain: domain.name.clone(),
            retry_after,
        };
        match &self.slots {
            Slots::Memory(last) => take_in_memory(last, &format!("{rule}/{}", domain.uuid), every)
                .map(|held| Slot(Some(held)))
                .map_err(throttled),
            Slots::Durable(store) => {
                let at = store::now();
                match store
                    .take_throttle_slot(rule, &domain.uuid, at, every)
                    .await
                {
                    Ok(store::Slot::Taken) => Ok(Slot(Some(Held::Durable {
                        rule,
                        uuid: domain.uuid.clone(),
                        at,
                        every,
                    }))),
                    Ok(store::Slot::Busy { next_allowed }) => {
                        let left = next_allowed - OffsetDateTime::now_utc();
                        Err(throttled(left.try_into().unwrap_or(Duration::ZERO)))
                    }
                    Err(e) => {
                        if matches!(e, StoreError::Timeout(_)) {
                            // The take may still run after the caller gave up
                            // on it: give back whatever it took, behind it on
                            // the store's queue.
                            let (store, uuid) = (store.clone(), domain.uuid.clone());
                            tokio::spawn(async move {
                                let _ = store.release_throttle_slot(rule, &uuid, at, every).await;
                            });
                        }
                        let detail = format!("throttle slot of {}: {e}", domain.name);
                        Err(if e.is_full() {
                            Error::StorageFull { detail }
                        } else {
                            Error::Unavailable {
                                what: "the store",
                                detail,
                            }
                        })
                    }
                }
            }
        }
    }

    /// Gives a slot back, unless a later call has taken it since. A store
    /// that fails here costs the caller the interval, which is logged.
    pub(crate) async fn release(&self, slot: Slot) {
        match (&self.slots, slot.0) {
            (Slots::Memory(last), Some(Held::Memory { key, at })) => {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if last.get(&key) == Some(&at) {
                    last.remove(&key);
                }
            }
            (
                Slots::Durable(store),
                Some(Held::Durable {
                    rule,
                    uuid,
                    at,
                    every,
                }),
            ) => {
                if let Err(e) = store.release_throttle_slot(rule, &uuid, at, every).await {
                    tracing::warn!(rule, domain_uuid = uuid, error = %e, "throttle slot not given back");
                }
            }
            _ => {}
        }
    }
}

fn take_in_memory(
    last: &Mutex<HashMap<String, Instant>>,
    key: &str,
    interval: Duration,
) -> Result<Held, Duration> {
    let now = Instant::now();
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
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
    Ok(Held::Memory {
        key: key.to_owned(),
        at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(uuid: &str) -> Domain {
        Domain {
            name: format!("vm-{uuid}"),
            uuid: uuid.into(),
            state: None,
            instance_id: None,
            project: None,
            user: None,
        }
    }

    fn every(every: Duration) -> Interval {
        Interval {
            rule: "test",
            every,
        }
    }

    /// The same rules whoever keeps the slots.
    async fn one_call_per_interval_and_failures_are_given_back(t: Throttle) {
        let second = every(Duration::from_secs(1));
        let slot = t.take(&domain("i-1"), second).await.unwrap();
        match t.take(&domain("i-1"), second).await.unwrap_err() {
            Error::Throttled {
                domain,
                retry_after,
            } => {
                assert_eq!(domain, "vm-i-1");
                assert!(
                    retry_after > Duration::from_millis(800)
                        && retry_after <= Duration::from_secs(1),
                    "{retry_after:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let other_rule = Interval {
            rule: "other",
            ..second
        };
        assert!(
            t.take(&domain("i-1"), other_rule).await.is_ok(),
            "rules do not share slots"
        );
        assert!(
            t.take(&domain("i-2"), second).await.is_ok(),
            "other instances are free"
        );
        t.release(slot).await;
        assert!(
            t.take(&domain("i-1"), second).await.is_ok(),
            "a released slot is free again"
        );
        let none = every(Duration::ZERO);
        assert!(t.take(&domain("i-3"), none).await.is_ok());
        assert!(t.take(&domain("i-3"), none).await.is_ok());
    }

    #[tokio::test]
    async fn in_memory() {
        one_call_per_interval_and_failures_are_given_back(Throttle::new(None)).await;
    }

    #[tokio::test]
    async fn in_the_store_and_kept_across_a_reopen() {
        let dir = std::env::temp_dir().join(format!("vmshot-throttle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let settings = store::StoreSettings::new(dir.join("s.db"));
        let store = Store::open(settings.clone()).await.unwrap();
        one_call_per_interval_and_failures_are_given_back(Throttle::new(Some(store))).await;

        // A slot taken before the store closed is still taken after.
        let long = every(Duration::from_secs(60));
        Throttle::new(Some(reopen(&settings).await))
            .take(&domain("i-4"), long)
            .await
            .unwrap();
        let t = Throttle::new(Some(reopen(&settings).await));
        assert!(matches!(
            t.take(&domain("i-4"), long).await,
            Err(Error::Throttled { retry_after, .. }) if retry_after > Duration::from_secs(55)
        ));

        // A store that does not answer in time refuses the capture as
        // unavailable, and gives back what the late take may still take.
        drop(t);
        let hasty = store::StoreSettings {
            call_timeout: Duration::from_millis(200),
            ..settings.clone()
        };
        let store = reopen(&hasty).await;
        let (started, holding) = tokio::sync::oneshot::channel();
        let held = store.clone();
        tokio::spawn(async move { held.hold(Duration::from_millis(600), started).await });
        holding.await.unwrap();
        let t = Throttle::new(Some(store));
        match t.take(&domain("i-5"), long).await {
            Err(e @ Error::Unavailable { .. }) => {
                assert_eq!(e.to_string(), "the store does not answer");
                assert!(e.detail().unwrap().contains("timed out"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
        drop(t);
        let t = Throttle::new(Some(reopen(&settings).await));
        assert!(t.take(&domain("i-5"), long).await.is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The store at `settings`, once the thread of the last one let go.
    async fn reopen(settings: &store::StoreSettings) -> Store {
        for _ in 0..200 {
            match Store::open(settings.clone()).await {
                Ok(store) => return store,
                Err(StoreError::Locked { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the store stayed locked");
    }
}
