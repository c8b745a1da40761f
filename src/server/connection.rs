//! One client connection: its phases, their timers, and the HTTP/1.1 it speaks.
//!
//! ```text
//!  accept ─(TLS)─► Handshake ─done─┐
//!    │                             ▼
//!    └───────────────────────► Waiting ─first byte─► ReadingHead ─head─► InService
//!                                  ▲                                        │
//!                                  └──────────── response sent ─────────────┘
//!
//!  Handshake    tls_handshake_timeout, from accept
//!  Waiting      header_read_timeout for the first request, idle_timeout after one
//!  ReadingHead  header_read_timeout: the first request's counts from Waiting,
//!               a later one's from its first byte
//!  InService    request_timeout + SEND_ALLOWANCE (the handler has its own deadline)
//! ```
//!
//! All but InService may be evicted for a newcomer at the cap (`listener`).
//! We track the phases ourselves (the IO wrapper sees a request's first bytes,
//! the service marks it in service, its response body marks it done when
//! hyper drops it): hyper's own header timer needs a timer it was never given.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::framing::HeadScan;
use crate::api::{AmbiguousLength, LocalAddr};

/// A response the client does not read is dropped this long after the
/// request deadline.
pub(super) const SEND_ALLOWANCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Handshake,
    Waiting,
    ReadingHead,
    InService,
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    Idle,
    HeaderTimeout,
    HandshakeTimeout,
    Evicted,
    SendTimeout,
}

impl Reason {
    /// Its label in `vmshot_connections_closed_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::HeaderTimeout => "header_timeout",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Evicted => "evicted",
            Self::SendTimeout => "send_timeout",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub handshake: Duration,
    /// The request deadline plus `SEND_ALLOWANCE`.
    pub in_service: Duration,
}

/// A connection's phase and when its clock started: the pure part.
#[derive(Debug, Clone)]
pub(super) struct State {
    phase: Phase,
    since: Instant,
    /// No request yet: its head is due `header_read` after the connection.
    fresh: bool,
    /// Requests in service (hyper's HTTP/1 serves one at a time).
    in_service: u32,
    /// Chosen by the listener to make room; acted on unless now in service.
    evicted: bool,
    /// The head of the request under way, watched for a body length given
    /// two ways (see `framing`).
    head: HeadScan,
}

impl State {
    pub(super) fn new(phase: Phase, now: Instant) -> Self {
        Self {
            phase,
            since: now,
            fresh: true,
            in_service: 0,
            evicted: false,
            head: HeadScan::default(),
        }
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    fn handshake_done(&mut self, now: Instant) {
        if self.phase == Phase::Handshake {
            self.phase = Phase::Waiting;
            self.since = now;
        }
    }

    /// Bytes came in; true if that started a request head.
    fn bytes_arrived(&mut self, now: Instant) -> bool {
        if self.phase != Phase::Waiting {
            return false;
        }
        self.phase = Phase::ReadingHead;
        // A new connection's head was due from the start, not from its first byte.
        if !self.fresh {
            self.since = now;
        }
        true
    }

    /// Bytes read while no request is in service belong to the next head.
    fn head_bytes(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Waiting | Phase::ReadingHead) {
            self.head.feed(bytes);
        }
    }

    fn enter_service(&mut self, now: Instant) {
        if self.in_service == 0 {
            self.phase = Phase::InService;
            self.since = now;
        }
        self.in_service += 1;
        self.fresh = false;
    }

    /// True if the connection is waiting again.
    fn leave_service(&mut self, now: Instant) -> bool {
        self.in_service = self.in_service.saturating_sub(1);
        if self.in_service > 0 {
            return false;
        }
        self.phase = Phase::Waiting;
        self.since = now;
        self.head.reset();
        true
    }

    /// When the current phase runs out, and what that is called.
    pub(super) fn deadline(&self, t: &Timeouts) -> (Instant, Reason) {
        let (limit, reason) = match self.phase {
            Phase::Handshake => (t.handshake, Reason::HandshakeTimeout),
            Phase::Waiting if self.fresh => (t.header_read, Reason::HeaderTimeout),
            Phase::Waiting => (t.idle, Reason::Idle),
            Phase::ReadingHead => (t.header_read, Reason::HeaderTimeout),
            Phase::InService => (t.in_service, Reason::SendTimeout),
        };
        (self.since + limit, reason)
    }

    /// Eviction order: waiting first (0), then handshakes and heads under
    /// way (1); never a request in service.
    pub(super) fn eviction_rank(&self) -> Option<u8> {
        match self.phase {
            Phase::Waiting => Some(0),
            Phase::Handshake | Phase::ReadingHead => Some(1),
            Phase::InService => None,
        }
    }

    pub(super) fn since(&self) -> Instant {
        self.since
    }

    pub(super) fn evicted(&self) -> bool {
        self.evicted
    }
}

/// A connection's state as shared by its task, its IO, its requests and the
/// listener.
pub(super) struct Tracker {
    state: Mutex<State>,
    /// Wakes the connection's task: its deadline moved, or it was evicted.
    wake: Notify,
    /// The listener's: a connection became evictable, declined eviction, or closed.
    listener: Arc<Notify>,
}

impl Tracker {
    pub(super) fn new(phase: Phase, listener: Arc<Notify>) -> Self {
        Self {
            state: Mutex::new(State::new(phase, Instant::now())),
            wake: Notify::new(),
            listener,
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handshake_done(&self) {
        self.state().handshake_done(Instant::now());
        self.wake.notify_one();
    }

    fn bytes_arrived(&self, bytes: &[u8]) {
        let mut state = self.state();
        let started = state.bytes_arrived(Instant::now());
        state.head_bytes(bytes);
        drop(state);
        if started {
            self.wake.notify_one();
        }
    }

    /// Marks a request in service; true if its head gave its length two ways.
    fn enter_service(self: &Arc<Self>) -> (InService, bool) {
        let mut state = self.state();
        let ambiguous = state.head.ambiguous();
        state.enter_service(Instant::now());
        drop(state);
        self.wake.notify_one();
        (InService(self.clone()), ambiguous)
    }

    fn leave_service(&self) {
        let waiting = self.state().leave_service(Instant::now());
        self.wake.notify_one();
        if waiting {
            self.listener.notify_waiters();
        }
    }

    /// Marks the connection for closing if it is not in service; false if it
    /// is, or was already marked.
    pub(super) fn evict(&self) -> bool {
        let mut state = self.state();
        if state.evicted || state.eviction_rank().is_none() {
            return false;
        }
        state.evicted = true;
        drop(state);
        self.wake.notify_one();
        true
    }

    /// In the connection's task: close for eviction? A request that began
    /// since the listener chose this connection cancels it.
    fn eviction_due(&self) -> bool {
        let mut state = self.state();
        if !state.evicted {
            return false;
        }
        if state.eviction_rank().is_some() {
            return true;
        }
        state.evicted = false;
        drop(state);
        self.listener.notify_waiters();
        false
    }
}

/// Held while a request is in service: by its handler's future, then by its
/// response body until hyper has sent it.
struct InService(Arc<Tracker>);

impl Drop for InService {
    fn drop(&mut self) {
        self.0.leave_service();
    }
}

/// The IO, watched for the first bytes of a request.
struct Watched<T> {
    inner: T,
    tracker: Arc<Tracker>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.tracker.bytes_arrived(&buf.filled()[before..]);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The router as hyper calls it: one per connection.
#[derive(Clone)]
struct Handler {
    router: Router,
    peer: SocketAddr,
    local: SocketAddr,
    tracker: Arc<Tracker>,
}

type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = HandlerFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let (in_service, ambiguous) = self.tracker.enter_service();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(LocalAddr(self.local));
        if ambiguous {
            request.extensions_mut().insert(AmbiguousLength);
        }
        let response = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_service: in_service,
            }))
        })
    }
}

/// A response body that ends its request's service when hyper drops it.
struct TrackedBody {
    body: axum::body::Body,
    _in_service: InService,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What every connection of a listener shares.
pub(super) struct Shared {
    pub router: Router,
    pub http: http1::Builder,
    pub tls: Option<TlsAcceptor>,
    pub timeouts: Timeouts,
}

/// Serves one accepted connection to its end; the reason if the server
/// closed it on a timeout or for a newcomer.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Reason> {
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection gone before it was served");
            return None;
        }
    };
    // A response goes out in one piece; don't hold its tail back for an ACK.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &shared.tls else {
        return http(stream, peer, local, &shared, &tracker, &mut shutdown).await;
    };
    let handshake = acceptor.accept(stream);
    tokio::pin!(handshake);
    let drain = |_: Pin<&mut _>| true;
    match supervise(&tracker, &shared.timeouts, &mut shutdown, handshake, drain).await {
        Outcome::Done(Ok(tls)) => {
            tracker.handshake_done();
            http(tls, peer, local, &shared, &tracker, &mut shutdown).await
        }
        Outcome::Done(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Outcome::Closed(reason) => reason,
    }
}

async fn http<T>(
    io: T,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Shared,
    tracker: &Arc<Tracker>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Reason>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched {
        inner: io,
        tracker: tracker.clone(),
    });
    let handler = Handler {
        router: shared.router.clone(),
        peer,
        local,
        tracker: tracker.clone(),
    };
    let conn = shared.http.serve_connection(io, handler);
    tokio::pin!(conn);
    // On shutdown a waiting connection closes now (hyper would keep a new
    // one open); one with a request under way finishes it, then closes.
    let drain = |conn: Pin<&mut http1::Connection<_, _>>| {
        if tracker.state().phase() == Phase::Waiting {
            return true;
        }
        conn.graceful_shutdown();
        false
    };
    match supervise(tracker, &shared.timeouts, shutdown, conn, drain).await {
        Outcome::Done(Ok(())) => None,
        Outcome::Done(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection ended");
            None
        }
        Outcome::Closed(reason) => reason,
    }
}

enum Outcome<T> {
    Done(T),
    /// Dropped by us: a reason, or none for shutdown.
    Closed(Option<Reason>),
}

/// Drives `work` (a handshake, or an HTTP connection) until it ends, its
/// phase's deadline passes, the listener evicts it, or shutdown comes and
/// `drain` says to close (else `drain` has begun a graceful end).
async fn supervise<F: Future>(
    tracker: &Tracker,
    timeouts: &Timeouts,
    shutdown: &mut watch::Receiver<bool>,
    mut work: Pin<&mut F>,
    mut drain: impl FnMut(Pin<&mut F>) -> bool,
) -> Outcome<F::Output> {
    let mut draining = false;
    loop {
        let (deadline, _) = tracker.state().deadline(timeouts);
        tokio::select! {
            biased;
            () = tracker.wake.notified() => {
                if tracker.eviction_due() {
                    return Outcome::Closed(Some(Reason::Evicted));
                }
            }
            _ = shutdown.wait_for(|stop| *stop), if !draining => {
                if drain(work.as_mut()) {
                    return Outcome::Closed(None);
                }
                draining = true;
            }
            out = work.as_mut() => return Outcome::Done(out),
            () = tokio::time::sleep_until(deadline.into()) => {
                // The phase may have moved on since the sleep began.
                let (deadline, reason) = tracker.state().deadline(timeouts);
                if deadline <= Instant::now() {
                    return Outcome::Closed(Some(reason));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        handshake: Duration::from_secs(5),
        in_service: Duration::from_secs(60),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_new_connection_owes_its_head_from_the_start() {
        let t0 = Instant::now();
        let mut s = State::new(Phase::Waiting, t0);
        assert_eq!(s.deadline(&T), (t0 + secs(10), Reason::HeaderTimeout));
        // A first byte 9 s in does not buy another 10 s.
        assert!(s.bytes_arrived(t0 + secs(9)));
        assert_eq!(s.phase(), Phase::ReadingHead);
        assert_eq!(s.deadline(&T), (t0 + secs(10), Reason::HeaderTimeout));
        // Later bytes change nothing.
        assert!(!s.bytes_arrived(t0 + secs(9)));
        assert_eq!(s.deadline(&T).0, t0 + secs(10));
    }

    #[test]
    fn a_kept_alive_connection_idles_then_owes_its_head_from_its_first_byte() {
        let t0 = Instant::now();
        let mut s = State::new(Phase::Waiting, t0);
        s.bytes_arrived(t0);
        s.enter_service(t0 + secs(1));
        assert_eq!(s.phase(), Phase::InService);
        assert_eq!(s.deadline(&T), (t0 + secs(61), Reason::SendTimeout));
        // Body bytes while in service are the handler's business.
        assert!(!s.bytes_arrived(t0 + secs(2)));
        assert!(s.leave_service(t0 + secs(3)));
        assert_eq!(s.phase(), Phase::Waiting);
        assert_eq!(s.deadline(&T), (t0 + secs(63), Reason::Idle));
        assert!(s.bytes_arrived(t0 + secs(50)));
        assert_eq!(s.deadline(&T), (t0 + secs(60), Reason::HeaderTimeout));
    }

    #[test]
    fn a_tls_connection_owes_its_head_from_the_end_of_its_handshake() {
        let t0 = Instant::now();
        let mut s = State::new(Phase::Handshake, t0);
        assert_eq!(s.deadline(&T), (t0 + secs(5), Reason::HandshakeTimeout));
        // Handshake bytes are not a request.
        assert!(!s.bytes_arrived(t0 + secs(1)));
        s.handshake_done(t0 + secs(2));
        assert_eq!(s.deadline(&T), (t0 + secs(12), Reason::HeaderTimeout));
    }

    #[test]
    fn only_a_connection_out_of_service_is_evictable() {
        let t0 = Instant::now();
        let mut s = State::new(Phase::Handshake, t0);
        assert_eq!(s.eviction_rank(), Some(1));
        s.handshake_done(t0);
        assert_eq!(s.eviction_rank(), Some(0));
        s.bytes_arrived(t0);
        assert_eq!(s.eviction_rank(), Some(1));
        s.enter_service(t0);
        assert_eq!(s.eviction_rank(), None);
        s.leave_service(t0);
        assert_eq!(s.eviction_rank(), Some(0));
    }

    /// A real connection on loopback: each request carries the peer and
    /// the local address; the connection then idles out.
    #[tokio::test]
    async fn requests_carry_both_addresses_and_an_idle_connection_closes() {
        use axum::extract::Extension;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = Router::new().route(
            "/",
            axum::routing::get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 Extension(LocalAddr(local)): Extension<LocalAddr>| async move {
                    format!("{peer} {local}")
                },
            ),
        );
        let shared = Arc::new(Shared {
            router,
            http: http1::Builder::new(),
            tls: None,
            timeouts: Timeouts {
                idle: Duration::from_millis(200),
                ..T
            },
        });
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let tracker = Arc::new(Tracker::new(Phase::Waiting, Arc::new(Notify::new())));
        let (_stop, stopping) = watch::channel(false);
        let server = tokio::spawn(serve(stream, peer, shared, tracker, stopping));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8(reply).unwrap();
        let expected = format!(
            "{} {}",
            client.local_addr().unwrap(),
            client.peer_addr().unwrap()
        );
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with(&expected), "{reply}");
        assert_eq!(server.await.unwrap(), Some(Reason::Idle));
    }

    #[test]
    fn eviction_is_cancelled_by_a_request_that_began_meanwhile() {
        let listener = Arc::new(Notify::new());
        let tracker = Arc::new(Tracker::new(Phase::Waiting, listener));
        assert!(tracker.evict());
        assert!(!tracker.evict(), "once");
        assert!(tracker.eviction_due());
        let (in_service, _) = tracker.enter_service();
        assert!(!tracker.eviction_due(), "in service");
        assert!(!tracker.state().evicted());
        assert!(!tracker.evict());
        drop(in_service);
        assert_eq!(tracker.state().phase(), Phase::Waiting);
        assert!(tracker.evict());
    }
}
