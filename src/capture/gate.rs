//! A cap on screens being processed at once, with a bounded queue in front
//! of it. Each holds a decoded screen (up to tens of MB); past the queue
//! bound a caller is told "busy" at once instead of waiting unboundedly.
//! A libvirt call is not made under it: a guest that does not answer must
//! not hold a slot the others need (libvirt's own calls are capped by
//! `libvirt.max_calls`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Held for the duration of one capture.
pub(crate) struct Pass {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub(crate) fn new(max_concurrent: usize, max_waiting: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A pass, waiting for one if the queue has room; `None` when it has not.
    pub(crate) async fn enter(&self) -> Option<Pass> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(Pass { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        // Decrement on every exit, including the caller's future being dropped.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        Some(Pass { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[tokio::test]
    async fn beyond_slots_and_queue_callers_are_turned_away() {
        let gate = std::sync::Arc::new(Gate::new(1, 1));
        let first = gate.enter().await.expect("a free slot");
        let queued = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter().await.is_some() })
        };
        tokio::task::yield_now().await;
        while gate.waiting.load(std::sync::atomic::Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(gate.enter().await.is_none(), "queue of one is full");
        drop(first);
        assert!(queued.await.unwrap(), "the queued caller got the slot");
        assert!(gate.enter().await.is_some(), "free again");
    }
}
