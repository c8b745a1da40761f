//! Concurrent requests for the same screen share one capture.
//!
//! A console polled by several control-plane workers at once, or an admin
//! hammering refresh, should cost QEMU one screendump, not one per caller. The
//! first caller for a key starts the work as a task of its own; callers that
//! arrive while it runs wait for its result instead of starting another. So a
//! shared result was taken at most one capture's time before a joiner asked.
//!
//! The work runs detached from its first caller: if that caller gives up (its
//! request timed out), the others still get the answer, and the key is freed
//! when the work ends, however it ends.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type InFlight<K, T> = Arc<Mutex<HashMap<K, watch::Receiver<Option<T>>>>>;

pub(crate) struct Flights<K, T> {
    in_flight: InFlight<K, T>,
}

impl<K, T> Flights<K, T>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The result of the work in flight for `key`, or of `start()` run now if
    /// none is, and whether it was another caller's. `None` if the work died
    /// without a result (it panicked).
    pub(crate) async fn join<F, Fut>(&self, key: K, start: F) -> Option<(T, bool)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (mut result, joined) = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get(&key) {
                Some(result) => (result.clone(), true),
                None => {
                    let (tx, rx) = watch::channel(None);
                    in_flight.insert(key.clone(), rx.clone());
                    let landing = Landing {
                        in_flight: self.in_flight.clone(),
                        key,
                    };
                    let work = start();
                    tokio::spawn(async move {
                        // Freed on every exit, a panic included.
                        let _landing = landing;
                        let _ = tx.send(Some(work.await));
                    });
                    (rx, false)
                }
            }
        };
        let done = result.wait_for(Option::is_some).await.ok()?;
        done.clone().map(|value| (value, joined))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

/// Removes a key once its work has ended.
struct Landing<K: Eq + Hash, T> {
    in_flight: InFlight<K, T>,
    key: K,
}

impl<K: Eq + Hash, T> Drop for Landing<K, T> {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::Flights;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn callers_that_overlap_share_one_run_and_later_ones_start_anew() {
        let flights = Arc::new(Flights::<&str, usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |flights: Arc<Flights<&'static str, usize>>, runs: Arc<AtomicUsize>| async move {
            flights
                .join("dom", || async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    runs.fetch_add(1, Ordering::SeqCst) + 1
                })
                .await
        };
        let callers: Vec<_> = (0..5)
            .map(|_| tokio::spawn(call(flights.clone(), runs.clone())))
            .collect();
        let mut joined = 0;
        for caller in callers {
            let (value, shared) = caller.await.unwrap().unwrap();
            assert_eq!(value, 1, "all got the one run");
            joined += usize::from(shared);
        }
        assert_eq!(joined, 4, "one ran it, four joined");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "the key is freed");
        assert_eq!(call(flights.clone(), runs.clone()).await, Some((2, false)));
    }

    #[tokio::test]
    async fn other_keys_do_not_wait() {
        let flights = Flights::<&str, &str>::new();
        let slow = flights.join("a", || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "a"
        });
        let fast = flights.join("b", || async { "b" });
        tokio::select! {
            _ = slow => panic!("the slow one finished first"),
            b = fast => assert_eq!(b, Some(("b", false))),
        }
    }

    #[tokio::test]
    async fn the_first_caller_giving_up_does_not_cancel_the_others() {
        let flights = Arc::new(Flights::<&str, &str>::new());
        let first = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .join("dom", || async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        "done"
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = flights.join("dom", || async { "second run" });
        first.abort();
        assert_eq!(second.await, Some(("done", true)));
    }

    #[tokio::test]
    async fn a_panicking_run_gives_none_and_frees_its_key() {
        let flights = Flights::<&str, u8>::new();
        let got = flights
            .join("dom", || async { panic!("deliberate, in a test") })
            .await;
        assert_eq!(got, None);
        tokio::task::yield_now().await;
        assert_eq!(flights.len(), 0);
        assert_eq!(flights.join("dom", || async { 7 }).await, Some((7, false)));
    }
}
