//! The one place where libvirt's blocking calls leave the async runtime.
//!
//! Every call runs on a named thread of its own and the caller waits for it
//! with a deadline. A call that hangs (QEMU wedged, libvirtd stuck) costs its
//! caller a `Timeout`; the thread stays behind until libvirt returns, still
//! holding its permit, so a host with many hung guests runs out of permits
//! (and answers `Timeout` quickly) rather than out of threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::Error;

pub(crate) struct Blocking {
    permits: Arc<Semaphore>,
}

impl Blocking {
    pub(crate) fn new(max_calls: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_calls.max(1))),
        }
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
