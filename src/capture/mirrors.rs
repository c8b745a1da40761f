//! Which domains have a VNC mirror (the fast path), and when one is used.
//!
//! A mirror is opened in the background the first time a domain is captured;
//! that capture, and any made before the mirror holds a complete screen, take
//! the stable path (`virDomainScreenshot`). So the fast path never makes a
//! request slower or less sure: it only answers once it can.
//!
//! A mirror that dies (QEMU stopped, a user's exclusive VNC client took the
//! console) is forgotten, and the domain is left to the stable path for
//! `retry_after` before another mirror is tried: vmshot never fights a user for
//! the console. Mirrors unused for `idle_after` are closed, at most `max` are
//! open at once, and their screens (3 MiB at 1024x768, 8 MiB at 1920x1080) stay
//! within `memory_budget`: past it, domains take the stable path, and the least
//! recently used mirrors close if screens grew (a guest changed mode).
//!
//! ```text
//!   (none) --first capture--> Opening --synced--> Open --idle / dead--> (none)
//!                                |                                   (dead: Failed)
//!                                +--failed--> Failed --retry_after--> (none)
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::hypervisor::{Hypervisor, Mirror};

/// An opening mirror not settled by then is presumed lost (its libvirt call
/// hung past every deadline): another may be tried.
const OPENING_GIVEN_UP: Duration = Duration::from_secs(60);

/// How mirrors are kept.
#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    /// Close a mirror no capture has used for this long.
    pub idle_after: Duration,
    /// Most mirrors open at once; beyond, domains take the stable path.
    pub max: usize,
    /// After a mirror failed, how long its domain takes the stable path only.
    pub retry_after: Duration,
    /// How long a new mirror may take to hold a complete screen.
    pub sync_within: Duration,
    /// Bytes of screens all mirrors may hold together.
    pub memory_budget: usize,
}

impl Default for MirrorPolicy {
    fn default() -> Self {
        Self {
            idle_after: Duration::from_secs(300),
            max: 64,
            retry_after: Duration::from_secs(60),
            sync_within: Duration::from_secs(10),
            memory_budget: 96 << 20,
        }
    }
}

/// A domain's mirror, when it can serve: its process-unique id (which, with
/// its generation, names a picture exactly) and the mirror.
pub(crate) struct Ready {
    pub id: u64,
    pub mirror: Mirror,
}

enum Slot {
    /// A task is opening one; after `OPENING_GIVEN_UP` it is presumed lost.
    Opening {
        since: Instant,
    },
    Open {
        id: u64,
        mirror: Mirror,
        used: Instant,
        /// Its screen's size when last looked at (see `sweep_once`).
        bytes: usize,
    },
    Failed {
        at: Instant,
    },
}

pub(crate) struct Mirrors {
    hypervisor: Hypervisor,
    policy: MirrorPolicy,
    slots: Mutex<HashMap<String, Slot>>,
    next_id: AtomicU64,
}

impl Mirrors {
    /// The registry, with a task that closes idle mirrors for as long as the
    /// registry lives. Call from within the tokio runtime.
    pub(crate) fn new(hypervisor: Hypervisor, policy: MirrorPolicy) -> Arc<Self> {
        let mirrors = Arc::new(Self {
            hypervisor,
            policy,
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&mirrors);
        let every =
            (mirrors.policy.idle_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::spawn(sweep(weak, every));
        mirrors
    }

    /// The domain's mirror if it holds a complete, live screen. If the domain
    /// has none yet, one is opened in the background for the next captures.
    pub(crate) fn ready(self: &Arc<Self>, domain: &str) -> Option<Ready> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get_mut(domain) {
            Some(Slot::Open {
                id, mirror, used, ..
            }) => {
                if mirror.is_alive() {
                    *used = Instant::now();
                    return Some(Ready {
                        id: *id,
                        mirror: mirror.clone(),
                    });
                }
                tracing::info!(
                    domain,
                    reason = mirror.failure().unwrap_or_default(),
                    "VNC mirror lost; screenshots until a retry"
                );
                slots.insert(domain.to_owned(), Slot::Failed { at: Instant::now() });
                None
            }
            Some(Slot::Opening { since }) if since.elapsed() < OPENING_GIVEN_UP => None,
            Some(Slot::Failed { at }) if at.elapsed() < self.policy.retry_after => None,
            _ => {
                let open = slots
                    .values()
                    .filter(|s| !matches!(s, Slot::Failed { .. }))
                    .count();
                // Room for a screen as large as the largest held: opening one
                // that settle() would close at once is work for nothing, and
                // asked again it would be done again at every retry.
                let typical = slots
                    .values()
                    .filter_map(|s| match s {
                        Slot::Open { bytes, .. } => Some(*bytes),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                if open >= self.policy.max || held(&slots) + typical > self.policy.memory_budget {
                    return None;
                }
                slots.insert(
                    domain.to_owned(),
                    Slot::Opening {
                        since: Instant::now(),
                    },
                );
                tokio::spawn(open_mirror(self.clone(), domain.to_owned()));
                None
            }
        }
    }

    /// Mirrors holding a screen now.
    pub(crate) fn open_count(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .values()
            .filter(|s| matches!(s, Slot::Open { mirror, .. } if mirror.is_alive()))
            .count()
    }

    /// Records how an opening ended; a synced mirror that would take the
    /// screens past the budget is closed (the domain retries later).
    fn settle(&self, domain: String, slot: Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match slot {
            Slot::Open { bytes, .. } if held(&slots) + bytes > self.policy.memory_budget => {
                tracing::info!(
                    domain,
                    budget_mib = self.policy.memory_budget >> 20,
                    "VNC mirrors at their memory budget; screenshots for this domain"
                );
                Slot::Failed { at: Instant::now() }
            }
            slot => slot,
        };
        slots.insert(domain, slot);
    }

    /// Closes the mirrors unused for `idle_after` and forgets old failures;
    /// if screens grew past the budget, closes the least recently used.
    fn sweep_once(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|domain, slot| match slot {
            Slot::Open { used, .. } if used.elapsed() >= self.policy.idle_after => {
                tracing::debug!(domain, "closing an idle VNC mirror");
                false
            }
            Slot::Failed { at } => at.elapsed() < self.policy.retry_after,
            _ => true,
        });
        for slot in slots.values_mut() {
            if let Slot::Open { mirror, bytes, .. } = slot {
                *bytes = mirror.screen_bytes();
            }
        }
        while held(&slots) > self.policy.memory_budget {
            let oldest = slots
                .iter()
                .filter_map(|(domain, slot)| match slot {
                    Slot::Open { used, .. } => Some((*used, domain.clone())),
                    _ => None,
                })
                .min();
            let Some((_, domain)) = oldest else { break };
            tracing::info!(
                domain,
                "closing a VNC mirror: screens past the memory budget"
            );
            slots.insert(domain, Slot::Failed { at: Instant::now() });
        }
    }
}

/// Bytes of screens the open mirrors hold.
fn held(slots: &HashMap<String, Slot>) -> usize {
    slots
        .values()
        .map(|slot| match slot {
            Slot::Open { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum()
}

async fn open_mirror(mirrors: Arc<Mirrors>, domain: String) {
    let started = Instant::now();
    let slot = match Mirror::open(&mirrors.hypervisor, &domain).await {
        Ok(mirror) if mirror.wait_synced(mirrors.policy.sync_within).await => {
            tracing::info!(
                domain,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "VNC mirror synced: captures of this domain take the fast path"
            );
            Slot::Open {
                id: mirrors.next_id.fetch_add(1, Ordering::Relaxed),
                bytes: mirror.screen_bytes(),
                mirror,
                used: Instant::now(),
            }
        }
        Ok(mirror) => {
            let reason = mirror
                .failure()
                .unwrap_or_else(|| "no complete screen in time".into());
            tracing::info!(domain, reason, "no VNC mirror; screenshots only");
            Slot::Failed { at: Instant::now() }
        }
        Err(e) => {
            // A domain without VNC graphics (SPICE only, none) ends here.
            tracing::info!(domain, error = %e, "no VNC mirror; screenshots only");
            Slot::Failed { at: Instant::now() }
        }
    };
    mirrors.settle(domain, slot);
}

async fn sweep(mirrors: Weak<Mirrors>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match mirrors.upgrade() {
            Some(mirrors) => mirrors.sweep_once(),
            None => return,
        }
    }
}
