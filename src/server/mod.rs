//! `vmshot serve`: the HTTP(S) daemon the control planes call.
//!
//! Routes: `GET /healthz` (the process answers), `GET /readyz` (libvirt
//! answers), `GET /metrics` (Prometheus; loopback-only by default) and the
//! dialects. Plain HTTP is refused on non-loopback addresses unless configured
//! (see `config`); with a certificate and key it serves TLS through rustls.
//! HTTP/1.1 only, through our own accept loop over hyper (`listener`): it caps
//! the connections and times each one's phases (`connection`). SIGTERM stops
//! accepting and gives requests in flight a bounded time.

mod connection;
mod framing;
mod listener;
mod metrics;
mod tls;
mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

pub use metrics::Metrics;

use crate::api::registry::{self, MountError, Shared};
use crate::api::Answered;
use crate::capture::{JpegSettings, MirrorPolicy, Output, Subsampling};
use crate::config::{self, Config, FastPath, MetricsAccess};
use crate::hypervisor::{Hypervisor, Settings as HvSettings};
use crate::service::{self, Screenshots};
use crate::store::{Store, StoreError, StoreSettings};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Dialect(#[from] MountError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] crate::config::SecretFileError),
    #[error("diagnosis: {0}")]
    Diagnosis(#[from] crate::service::diagnosis::RulesError),
    #[error("uploads: {0}")]
    Uploads(String),
    #[error("cannot load the TLS certificate and key: {0}")]
    Tls(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the routes share.
#[derive(Clone)]
struct App {
    hypervisor: Hypervisor,
    service: Arc<Screenshots>,
    metrics: Arc<Metrics>,
    metrics_access: MetricsAccess,
    readyz_access: MetricsAccess,
    /// The 404 body: it names the dialects served, and a hidden `/metrics` or
    /// `/readyz` answers it too, indistinguishable from a missing path.
    not_found: Arc<str>,
}

impl App {
    fn not_found(&self) -> Response {
        (StatusCode::NOT_FOUND, self.not_found.to_string()).into_response()
    }
}

/// Checks the dialects' sections of the configuration, as `run` would.
pub fn check_dialects(config: &Config) -> Result<(), MountError> {
    registry::check(&config.dialects)
}

/// Builds everything from the configuration; nothing is contacted yet.
fn build(
    config: &Config,
    store: Option<Store>,
    uploads: Option<service::uploads::Uploads>,
) -> Result<(App, Router), ServeError> {
    let mut hv = HvSettings::new(config.libvirt.uri.clone());
    hv.call_timeout = Duration::from_secs(config.libvirt.call_timeout_secs);
    hv.max_calls = config.libvirt.max_calls;
    hv.resync_every = Duration::from_secs(config.libvirt.inventory_resync_secs);
    let hypervisor = Hypervisor::new(hv);
    let metrics = Arc::new(Metrics::default());
    let service = Screenshots::new(
        hypervisor.clone(),
        service::Settings {
            output: Output::Jpeg(JpegSettings {
                quality: config.capture.jpeg_quality,
                subsampling: match config.capture.subsampling {
                    config::Subsampling::S420 => Subsampling::S420,
                    config::Subsampling::S422 => Subsampling::S422,
                    config::Subsampling::S444 => Subsampling::S444,
                    config::Subsampling::Gray => Subsampling::Gray,
                },
            }),
            max_concurrent: config.capture.max_concurrent,
            max_queued: config.capture.max_queued,
            wake_settle: Duration::from_millis(config.capture.wakeup_settle_ms),
            fast_path: match config.capture.fast_path {
                FastPath::Off => None,
                FastPath::Vnc => Some(MirrorPolicy {
                    idle_after: Duration::from_secs(config.capture.mirror_idle_secs),
                    max: config.capture.max_mirrors,
                    memory_budget: config.capture.mirror_memory_mb << 20,
                    ..MirrorPolicy::default()
                }),
            },
            recordings: match (&store, &config.recordings, &config.store) {
                (Some(_), Some(r), Some(st)) if r.enabled => Some(recording_settings(r, st)),
                _ => None,
            },
            store,
        },
    );
    let service = match uploads {
        Some(uploads) => service.with_uploads(uploads),
        None => service,
    };
    let service = Arc::new(match &config.diagnosis {
        d if d.enabled => service.with_diagnosis(diagnosis_settings(d)?),
        _ => service,
    });
    let mounts = registry::mount(
        &config.dialects,
        &Shared {
            service: service.clone(),
            server: config.server.clone(),
        },
    )?;
    let served = match mounts.iter().map(|m| m.serves.as_str()).collect::<Vec<_>>() {
        none if none.is_empty() => "no dialect (the configuration has no dialect section)".into(),
        some => some.join(", "),
    };
    if mounts.is_empty() {
        tracing::warn!("no dialect is configured: only /healthz, /readyz and /metrics answer");
    }
    let app = App {
        hypervisor,
        service,
        metrics: metrics.clone(),
        metrics_access: config.metrics.access,
        readyz_access: config.metrics.readyz_access,
        not_found: Arc::from(format!("no such resource; this host serves {served}\n")),
    };
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(app.clone());
    for mount in mounts {
        router = router.merge(mount.router);
    }
    let router = router
        .fallback({
            let app = app.clone();
            move || async move { app.not_found() }
        })
        .layer(axum::middleware::map_response_with_state(metrics, answered))
        // A backstop: dialects answer their own deadline, in their own terms,
        // a little earlier.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            config.server.request_timeout() + Duration::from_secs(5),
        ));
    Ok((app, router))
}

/// `[diagnosis]` as the service takes it; an admin's rules file is read now.
fn diagnosis_settings(
    d: &config::Diagnosis,
) -> Result<service::DiagnosisSettings, service::diagnosis::RulesError> {
    use service::diagnosis::{Ocr, Rules};
    Ok(service::DiagnosisSettings {
        settle: Duration::from_secs(d.settle_secs),
        stuck_after: Duration::from_secs(d.stuck_after_secs),
        poll: Duration::from_secs(d.poll_secs),
        cpu_percent: d.cpu_percent,
        max_domains: d.max_domains,
        ocr: (!d.ocr_program.as_os_str().is_empty()).then(|| Ocr {
            program: d.ocr_program.clone(),
            timeout: Duration::from_secs(d.ocr_timeout_secs),
        }),
        rules: match &d.rules {
            Some(path) => Rules::with_file(path)?,
            None => Rules::built_in(),
        },
    })
}

fn recording_settings(
    r: &config::Recordings,
    store: &config::Store,
) -> service::recordings::RecordingSettings {
    let dir = r.dir.clone().unwrap_or_else(|| {
        let mut dir = store.path.clone().into_os_string();
        dir.push(".recordings");
        dir.into()
    });
    service::recordings::RecordingSettings {
        dir,
        fps: r.fps,
        interval: Duration::from_secs(r.interval_secs),
        before: Duration::from_secs(r.before_secs),
        after: Duration::from_secs(r.after_secs),
        max_duration: Duration::from_secs(r.max_duration_secs),
        max_concurrent: r.max_concurrent,
        max_disk_bytes: r.max_disk_mb << 20,
        max_recording_bytes: r.max_recording_mb << 20,
        encoder_threads: r.encoder_threads,
    }
}

/// What the pipeline says of each answer (`api::Answered`) becomes metrics.
async fn answered(State(metrics): State<Arc<Metrics>>, mut response: Response) -> Response {
    if let Some(answered) = response.extensions_mut().remove::<Answered>() {
        metrics.answered(&answered);
    }
    response
}

/// Serves until SIGTERM or SIGINT, then drains within the grace period.
pub async fn run(config: Config) -> Result<(), ServeError> {
    // Before anything is announced: a SIGTERM right after "listening" must
    // drain as any other, not kill the process outright.
    let shutdown = ShutdownSignals::install();
    let store = match &config.store {
        Some(settings) => Some(open_store(settings).await?),
        None => None,
    };
    let uploads = match &config.uploads {
        Some(section) => Some(uploads::start(section, store.as_ref()).await?),
        None => None,
    };
    let (app, router) = build(&config, store, uploads)?;
    // Before anything is served: recordings a crash cut are closed first.
    let recordings = app.service.recordings();
    if let Some(recordings) = &recordings {
        match recordings.recover().await {
            Ok(n) => tracing::info!(closed = n, "recordings recovered"),
            Err(e) => tracing::error!(error = %e, "recordings' recovery failed"),
        }
        // After the recovery, which may have just closed some: those and
        // any left uploading are (re)taken by the uploads.
        match recordings.resume_uploads().await {
            Ok(n) => tracing::info!(recordings = n, "recordings' uploads resumed"),
            Err(e) => tracing::error!(error = %e, "recordings' uploads not resumed"),
        }
    }
    let s = &config.server;
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let addr = s.listen;
    let listen_error = |source| ServeError::Listen { addr, source };
    let socket = listener::bind(addr).map_err(listen_error)?;
    let bound = socket.local_addr().map_err(listen_error)?;
    // Beside the connections (and the one accepted while making room): two
    // per libvirt connection, one per VNC mirror, and the runtime's own.
    let reserve = 1 + 2 * config.libvirt.max_calls + config.capture.max_mirrors + 64;
    let max_connections = listener::fit_to_fd_limit(s.max_connections, reserve);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, url = %format!("{scheme}://{bound}/"), "listening");

    let mut http = http1::Builder::new();
    // hyper's own header timeout needs a timer it is not given; ours are in
    // `connection`.
    http.max_buf_size(s.max_header_bytes)
        .header_read_timeout(None);
    let shared = Arc::new(connection::Shared {
        router,
        http,
        tls,
        timeouts: connection::Timeouts {
            header_read: s.header_read_timeout(),
            idle: s.idle_timeout(),
            handshake: s.tls_handshake_timeout(),
            in_service: s.request_timeout() + connection::SEND_ALLOWANCE,
        },
    });
    let (stop, stopping) = watch::channel(false);
    let server = tokio::spawn(listener::serve(
        socket,
        shared,
        max_connections,
        app.metrics.clone(),
        stopping,
    ));

    // Lookups then read the live inventory rather than ask libvirt each time.
    app.hypervisor.start_inventory();
    tokio::spawn(announce_ready(app.hypervisor.clone()));
    shutdown.wait().await;
    tracing::info!(grace_s = s.shutdown_grace_secs, "shutting down");
    crate::daemon::notify::stopping();
    let _ = stop.send(true);
    if let Some(recordings) = &recordings {
        // Closed with their digests, not left for the next start to cut.
        recordings.stop_all(s.shutdown_grace()).await;
    }
    if tokio::time::timeout(s.shutdown_grace(), server)
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the grace period are dropped");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the store (a corrupt, locked, read-only or newer one stops the
/// start, naming why) and keeps it within its bounds, hourly.
async fn open_store(config: &config::Store) -> Result<Store, ServeError> {
    let mut settings = StoreSettings::new(&config.path);
    settings.max_age = Duration::from_secs(config.max_age_days * 24 * 3600);
    settings.max_media_bytes = config.max_media_mb << 20;
    settings.max_actions = config.max_actions;
    let store = Store::open(settings).await?;
    tracing::info!(path = %config.path.display(), "store open");
    let kept = store.clone();
    tokio::spawn(async move {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            hourly.tick().await;
            match kept.retain().await {
                Ok(retained) => tracing::info!(?retained, "store retention"),
                Err(e) => tracing::warn!(error = %e, "store retention failed"),
            }
        }
    });
    Ok(store)
}

/// READY=1 once libvirt answers, retried until it does; then the watchdog.
async fn announce_ready(hypervisor: Hypervisor) {
    let mut delay = Duration::from_millis(500);
    while let Err(e) = hypervisor.connect().await {
        tracing::warn!(error = %e, "libvirt does not answer yet");
        // `systemctl status` then says why the start is taking long.
        crate::daemon::notify::status(&format!("waiting for libvirt: {e}"));
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    crate::daemon::notify::ready();
    if let Some(interval) = crate::daemon::notify::watchdog_interval() {
        crate::daemon::notify::spawn_watchdog(interval, || true);
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Whether libvirt answers. The reason is logged: libvirt's own words can
/// name the connection URI (user names, key files), so the body says less.
async fn readyz(State(app): State<App>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !may_read(app.readyz_access, peer) {
        return app.not_found();
    }
    match app.hypervisor.connect().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            let reason = match e {
                crate::hypervisor::Error::Timeout { .. } => "libvirt did not answer in time",
                _ => "libvirt does not answer",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            )
                .into_response()
        }
    }
}

fn may_read(access: MetricsAccess, peer: SocketAddr) -> bool {
    match access {
        MetricsAccess::Open => true,
        MetricsAccess::Loopback => peer.ip().is_loopback(),
        MetricsAccess::Off => false,
    }
}

async fn metrics_text(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !may_read(app.metrics_access, peer) {
        return app.not_found();
    }
    let body = app.metrics.encode(&metrics::Now {
        reconnects: app.hypervisor.reconnects(),
        mirrors: app.service.mirrors_open(),
        hung: app.hypervisor.hung_domains(),
        inventory: app
            .hypervisor
            .inventory()
            .map(|inventory| (inventory.is_live(), inventory.len())),
        verdicts: app
            .service
            .diagnoses()
            .into_iter()
            .map(|d| (d.domain, d.verdict.as_str(), d.unchanged_seconds))
            .collect(),
    });
    let mut response = body.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
