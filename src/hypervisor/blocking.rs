//! The one place where libvirt's blocking calls leave the async runtime.
//!
//! Every call runs on a named thread of its own and the caller waits for it
//! with a deadline. A call that hangs (QEMU wedged, libvirtd stuck) costs its
//! caller a `Timeout`; the thread stays behind until libvirt returns, still
//! holding its permit, so a host with many hung guests runs out of permits
//! (and answers `Timeout` quickly) rather than out of threads.
//!
//! A call on a domain that outlives its deadline marks the domain hung until
//! that call returns: meanwhile every call on it fails at once with `Hung`,
//! so a frozen guest holds one thread and one permit, not one per request,
//! and cannot take the permits the other guests need.
//!
//! ```text
//!            call on D outlives its deadline
//!   answering ------------------------------> hung (calls on D: Hung, at once)
//!       ^                                      |
//!       +------ that call returns -------------+
//! ```

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use super::Error;

pub(crate) struct Blocking {
    permits: Arc<Semaphore>,
    /// Domains (by the reference their calls are made with) whose last call
    /// outlived its deadline and has not returned.
    hung: Arc<Mutex<HashMap<String, Hung>>>,
    tickets: AtomicU64,
}

struct Hung {
    /// The call that hangs: only its return clears the mark.
    ticket: u64,
    since: Instant,
}

/// The hung domains' map. It holds no invariant a panic elsewhere could
/// break, so a poisoned lock is taken as it is.
fn marks(hung: &Mutex<HashMap<String, Hung>>) -> std::sync::MutexGuard<'_, HashMap<String, Hung>> {
    hung.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a call is: `WAITING` for a permit, `RUNNING` on its thread, `DONE`.
const WAITING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

impl Blocking {
    pub(crate) fn new(max_calls: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_calls.max(1))),
            hung: Arc::default(),
            tickets: AtomicU64::new(0),
        }
    }

    /// Domains with a call hanging now.
    pub(crate) fn hung_count(&self) -> usize {
        marks(&self.hung).len()
    }

    /// `run`, for a call on `domain`: refused at once while an earlier call
    /// on it hangs, and marking it hung if this one does.
    pub(crate) async fn run_on<T, F>(
        &self,
        domain: &str,
        what: String,
        deadline: Duration,
        call: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        if let Some(h) = marks(&self.hung).get(domain) {
            return Err(Error::Hung {
                domain: domain.to_owned(),
                since: h.since.elapsed(),
            });
        }
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(AtomicU8::new(WAITING));
        let (hung, key, seen) = (self.hung.clone(), domain.to_owned(), state.clone());
        let tracked = move || {
            seen.store(RUNNING, Ordering::Release);
            let result = call();
            let mut map = marks(&hung);
            seen.store(DONE, Ordering::Release);
            if map.get(&key).is_some_and(|h| h.ticket == ticket) {
                let since = map.remove(&key).map(|h| h.since.elapsed());
                tracing::info!(domain = %key, hung_for_s = since.map(|d| d.as_secs_f64()), "the domain's hung call returned");
            }
            result
        };
        let started = Instant::now();
        let result = self.run(what, deadline, tracked).await;
        if matches!(result, Err(Error::Timeout { .. })) {
            let mut map = marks(&self.hung);
            if state.load(Ordering::Acquire) == RUNNING {
                tracing::warn!(%domain, "a call on the domain outlived its deadline; its calls fail at once until it returns");
                map.insert(
                    domain.to_owned(),
                    Hung {
                        ticket,
                        since: started,
                    },
                );
            }
        }
        result
    }

    /// Runs `call` on a libvirt thread; `what` names it in a timeout error. The
    /// deadline covers the wait for a free permit too.
    pub(crate) async fn run<T, F>(
        &self,
        what: String,
        deadline: Duration,
        call: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        let permits = self.permits.clone();
        let started = std::time::Instant::now();
        tracing::debug!(call = %what, "libvirt call");
        let run = async move {
            let permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (tx, rx) = oneshot::channel();
            std::thread::Builder::new()
                .name("vmshot-libvirt".into())
                .spawn(move || {
                    let _permit = permit;
                    // virt's Drop impls panic on impossible libvirt failures; a
                    // panic here must become an error, not a lost reply.
                    let result = catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|panic| {
                        Err(Error::Libvirt {
                            what: "complete the call".into(),
                            message: panic_message(&panic),
                        })
                    });
                    let _ = tx.send(result);
                })
                .map_err(|e| Error::Libvirt {
                    what: "start a worker thread".into(),
                    message: e.to_string(),
                })?;
            rx.await.unwrap_or_else(|_| {
                Err(Error::Libvirt {
                    what: "complete the call".into(),
                    message: "the worker thread went away".into(),
                })
            })
        };
        let result = tokio::time::timeout(deadline, run)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: what.clone(),
                    after: deadline,
                })
            });
        tracing::debug!(call = %what, ms = started.elapsed().as_secs_f64() * 1e3, ok = result.is_ok(), "libvirt call returned");
        result
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_domain_whose_call_hangs_is_refused_at_once_until_that_call_returns() {
        let blocking = Blocking::new(4);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let hangs = blocking
            .run_on("d1", "hang".into(), Duration::from_millis(50), move || {
                let _ = held.recv();
                Ok(())
            })
            .await;
        assert!(matches!(hangs, Err(Error::Timeout { .. })), "{hangs:?}");
        assert_eq!(blocking.hung_count(), 1);

        let started = Instant::now();
        let refused = blocking
            .run_on("d1", "again".into(), Duration::from_secs(5), || Ok(()))
            .await;
        assert!(matches!(refused, Err(Error::Hung { .. })), "{refused:?}");
        assert!(started.elapsed() < Duration::from_millis(50));
        // Another domain is not held up.
        let other = blocking
            .run_on("d2", "other".into(), Duration::from_secs(5), || Ok(7))
            .await;
        assert_eq!(other.unwrap(), 7);

        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while blocking.hung_count() > 0 {
            assert!(Instant::now() < deadline, "the mark outlived the call");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answered = blocking
            .run_on("d1", "after".into(), Duration::from_secs(5), || Ok(1))
            .await;
        assert_eq!(answered.unwrap(), 1);
    }

    #[tokio::test]
    async fn waiting_for_a_permit_past_the_deadline_marks_no_domain() {
        let blocking = Blocking::new(1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = blocking.run("hold".into(), Duration::from_secs(5), move || {
            let _ = held.recv();
            Ok(())
        });
        let queued = blocking.run_on("d1", "queued".into(), Duration::from_millis(50), || Ok(()));
        let (_, queued) = tokio::join!(
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                release.send(()).unwrap();
            },
            async {
                let (b, q) = tokio::join!(busy, queued);
                b.unwrap();
                q
            }
        );
        assert!(matches!(queued, Err(Error::Timeout { .. })), "{queued:?}");
        assert_eq!(blocking.hung_count(), 0, "the domain's call never ran");
    }
}
