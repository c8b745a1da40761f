//! The accept loop: the cap on open connections, eviction, graceful shutdown.
//!
//! ```text
//!  accept ─► below max_connections? ─yes─► register, spawn connection::serve
//!                 │ no (or accept said: out of file descriptors)
//!                 ▼
//!  evict the connection Waiting longest (else the oldest Handshake or
//!  ReadingHead; never one InService) and wait for it to close; if every
//!  connection is in service, wait until one idles or ends
//! ```
//!
//! Accepting before taking a slot holds at most max_connections + 1 sockets;
//! meanwhile the kernel's backlog holds newcomers. So clients that connect
//! and send nothing cannot lock out `/healthz` or a signed call: each newcomer
//! takes the place of the one idle longest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Notify};

use super::connection::{self, Phase, Reason, Shared, Tracker};
use super::Metrics;

/// Connections the kernel completes and holds for us while we are busy or
/// at the cap (the kernel caps it at net.core.somaxconn). tokio's `bind`
/// asks for 128, which a burst of connects overflows: dropped SYNs then cost
/// clients a second each.
const BACKLOG: u32 = 1024;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `listener` until `shutdown` says true; then stops accepting and
/// returns once every connection has ended (waiting ones close at once,
/// requests under way finish; the caller bounds the wait).
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_connections: usize,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry::new(max_connections));
    let mut next_id = 0u64;
    let mut warned_out_of_fds: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_out_of_descriptors(&e) => {
                // Once a minute: under a flood it comes at every accept.
                if warned_out_of_fds.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        error = %e,
                        "cannot accept: out of file descriptors; closing idle connections to make room"
                    );
                    warned_out_of_fds = Some(Instant::now());
                }
                if !registry.free_a_descriptor(&mut shutdown).await {
                    break;
                }
                continue;
            }
            // The client gave up before we took it (ECONNABORTED and the like).
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        if !registry.wait_for_slot(&mut shutdown).await {
            break;
        }
        next_id += 1;
        let phase = match shared.tls {
            Some(_) => Phase::Handshake,
            None => Phase::Waiting,
        };
        let tracker = Arc::new(Tracker::new(phase, registry.changed.clone()));
        let slot = Slot {
            registry: registry.clone(),
            metrics: metrics.clone(),
            id: next_id,
            peer,
            reason: None,
        };
        registry.conns().insert(next_id, tracker.clone());
        metrics.connection_opened();
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let reason = connection::serve(stream, peer, shared, tracker, shutdown).await;
            slot.release(reason);
        });
    }
    drop(listener);
    registry.wait_empty().await;
}

/// A connection's place among the open ones: given back (and its end
/// counted) when its task ends, even by a panic.
struct Slot {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    id: u64,
    peer: SocketAddr,
    reason: Option<Reason>,
}

impl Slot {
    fn release(mut self, reason: Option<Reason>) {
        self.reason = reason;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(reason) = self.reason {
            tracing::debug!(
                peer = %self.peer,
                reason = reason.label(),
                "connection closed by the server"
            );
        }
        self.metrics
            .connection_closed(self.reason.map(Reason::label));
        self.registry.conns().remove(&self.id);
        self.registry.changed.notify_waiters();
    }
}

struct Registry {
    conns: Mutex<HashMap<u64, Arc<Tracker>>>,
    /// A connection closed, became evictable, or declined an eviction.
    changed: Arc<Notify>,
    cap: usize,
}

impl Registry {
    fn new(cap: usize) -> Self {
        Self {
            conns: Mutex::new(HashMap::with_capacity(cap)),
            changed: Arc::new(Notify::new()),
            cap,
        }
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Tracker>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a new connection may be registered; false on shutdown.
    async fn wait_for_slot(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.conns().len() < self.cap {
                return true;
            }
            self.evict_one();
            tokio::select! {
                () = changed => {}
                _ = shutdown.wait_for(|stop| *stop) => return false,
            }
        }
    }

    /// After accept ran out of file descriptors: closes one connection, or
    /// waits a little if none may be closed; false on shutdown.
    async fn free_a_descriptor(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let evicting = self.evict_one();
        tokio::select! {
            () = changed => true,
            () = tokio::time::sleep(Duration::from_millis(100)), if !evicting => true,
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// Marks one connection for closing unless one already is; true if one
    /// is (now) on its way out.
    fn evict_one(&self) -> bool {
        let conns = self.conns();
        loop {
            let candidates = conns.iter().map(|(id, tracker)| {
                let state = tracker.state();
                Candidate {
                    id: *id,
                    rank: state.eviction_rank(),
                    since: state.since(),
                    evicted: state.evicted(),
                }
            });
            match choose_victim(candidates) {
                Choice::Pending => return true,
                Choice::Nobody => return false,
                Choice::Victim(id) => {
                    // It may have begun a request since we looked; then look again.
                    if conns[&id].evict() {
                        tracing::debug!(
                            connections = conns.len(),
                            "making room: evicting the connection idle the longest"
                        );
                        return true;
                    }
                }
            }
        }
    }

    async fn wait_empty(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.conns().is_empty() {
                return;
            }
            changed.await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u64,
    rank: Option<u8>,
    since: Instant,
    evicted: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// One already marked is on its way out.
    Pending,
    Victim(u64),
    /// Every connection is in service.
    Nobody,
}

/// The lowest rank (waiting before reading), the longest in its phase.
fn choose_victim(candidates: impl IntoIterator<Item = Candidate>) -> Choice {
    let mut best: Option<(u8, Instant, u64)> = None;
    for c in candidates {
        if c.evicted {
            return Choice::Pending;
        }
        let Some(rank) = c.rank else { continue };
        let key = (rank, c.since, c.id);
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    best.map_or(Choice::Nobody, |(_, _, id)| Choice::Victim(id))
}

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The cap that fits the open-file limit once `reserve` descriptors are
/// left for the rest of the daemon: libvirt (whose GLib aborts the process
/// when it finds no descriptor), VNC mirrors, the runtime. Lowered, with a
/// warning, when the limit is too tight for `max_connections`.
pub(super) fn fit_to_fd_limit(max_connections: usize, reserve: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return max_connections;
    }
    let cap = cap_within(max_connections, reserve, limit.rlim_cur);
    if cap < max_connections {
        tracing::warn!(
            limit = limit.rlim_cur,
            max_connections,
            reserve,
            cap,
            "the open-file limit is too low for server.max_connections beside libvirt and VNC \
             mirrors: serving at most cap connections; raise LimitNOFILE or lower \
             server.max_connections"
        );
    }
    cap
}

fn cap_within(max_connections: usize, reserve: usize, limit: libc::rlim_t) -> usize {
    if limit == libc::RLIM_INFINITY {
        return max_connections;
    }
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve);
    max_connections.min(room).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, rank: Option<u8>, since: Instant) -> Candidate {
        Candidate {
            id,
            rank,
            since,
            evicted: false,
        }
    }

    #[test]
    fn the_victim_is_the_longest_waiting_then_the_oldest_head_never_one_in_service() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let waiting_new = c(1, Some(0), t0 + s(5));
        let waiting_old = c(2, Some(0), t0 + s(3));
        let reading_oldest = c(3, Some(1), t0);
        let serving_oldest = c(4, None, t0);
        let all = [waiting_new, waiting_old, reading_oldest, serving_oldest];
        assert_eq!(choose_victim(all), Choice::Victim(2));
        assert_eq!(
            choose_victim([waiting_new, reading_oldest, serving_oldest]),
            Choice::Victim(1)
        );
        assert_eq!(
            choose_victim([reading_oldest, c(5, Some(1), t0 + s(1)), serving_oldest]),
            Choice::Victim(3)
        );
        assert_eq!(choose_victim([serving_oldest]), Choice::Nobody);
        assert_eq!(choose_victim([]), Choice::Nobody);
    }

    #[test]
    fn no_second_victim_while_one_is_on_its_way_out() {
        let t0 = Instant::now();
        let leaving = Candidate {
            evicted: true,
            ..c(7, Some(0), t0)
        };
        assert_eq!(choose_victim([c(1, Some(0), t0), leaving]), Choice::Pending);
    }

    #[test]
    fn the_cap_leaves_the_reserve_within_the_open_file_limit() {
        assert_eq!(cap_within(1024, 161, 4096), 1024);
        assert_eq!(cap_within(1024, 161, 1024), 863);
        assert_eq!(cap_within(1024, 161, 100), 1);
        assert_eq!(cap_within(1024, 161, libc::RLIM_INFINITY), 1024);
    }

    #[test]
    fn only_resource_errors_count_as_out_of_descriptors() {
        let os = std::io::Error::from_raw_os_error;
        assert!(is_out_of_descriptors(&os(libc::EMFILE)));
        assert!(is_out_of_descriptors(&os(libc::ENFILE)));
        assert!(!is_out_of_descriptors(&os(libc::ECONNABORTED)));
    }
}
