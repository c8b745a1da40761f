//! `vmshot serve`: the HTTP(S) daemon the control planes call.
//!
//! Routes: `GET /healthz` (the process answers), `GET /readyz` (libvirt
//! answers), `GET /metrics` (Prometheus; loopback-only by default) and the
//! dialects. Plain HTTP is refused on non-loopback addresses unless configured
//! (see `config`); with a certificate and key it serves TLS through rustls.
//! SIGTERM stops accepting and gives requests in flight a bounded time.

mod framing;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

pub use metrics::Metrics;

use crate::api::alibaba::{self, Alibaba};
use crate::auth::KeyStore;
use crate::capture::{JpegSettings, MirrorPolicy, Output};
use crate::config::{read_secret_file, Config, FastPath, MetricsAccess};
use crate::hypervisor::{Hypervisor, Settings as HvSettings};
use crate::service::{self, Screenshots};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Keys(#[from] crate::auth::KeysError),
    #[error(transparent)]
    Secret(#[from] crate::config::SecretFileError),
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
}

/// Builds everything from the configuration; nothing is contacted yet.
fn build(config: &Config) -> Result<(App, Router), ServeError> {
    let mut hv = HvSettings::new(config.libvirt.uri.clone());
    hv.call_timeout = Duration::from_secs(config.libvirt.call_timeout_secs);
    hv.max_calls = config.libvirt.max_calls;
    let hypervisor = Hypervisor::new(hv);
    let metrics = Arc::new(Metrics::default());
    let service = Arc::new(Screenshots::new(
        hypervisor.clone(),
        service::Settings {
            output: Output::Jpeg(JpegSettings {
                quality: config.capture.jpeg_quality,
                subsampling: config.capture.subsampling,
            }),
            max_concurrent: config.capture.max_concurrent,
            max_queued: config.capture.max_queued,
            wake_settle: Duration::from_millis(config.alibaba.wakeup_settle_ms),
            fast_path: match config.capture.fast_path {
                FastPath::Off => None,
                FastPath::Vnc => Some(MirrorPolicy {
                    idle_after: Duration::from_secs(config.capture.mirror_idle_secs),
                    max: config.capture.max_mirrors,
                    memory_budget: config.capture.mirror_memory_mb << 20,
                    ..MirrorPolicy::default()
                }),
            },
        },
    ));
    let app = App {
        hypervisor,
        service: service.clone(),
        metrics: metrics.clone(),
        metrics_access: config.metrics.access,
        readyz_access: config.metrics.readyz_access,
    };
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(app.clone());
    if config.alibaba.enabled {
        let path = config
            .alibaba
            .credentials_file
            .as_deref()
            .expect("checked by Config::validate");
        let keys = KeyStore::load(path)?;
        tracing::info!(keys = keys.len(), "alibaba dialect on /");
        let ali = Arc::new(Alibaba::new(
            service,
            keys,
            config.alibaba.clone(),
            &config.server,
            metrics,
        ));
        let methods = MethodFilter::GET.or(MethodFilter::POST);
        router = router.merge(
            Router::new()
                .route("/", on(methods, alibaba::handle))
                .with_state(ali),
        );
    }
    let router = router
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such resource\n") })
        // A backstop: dialects answer their own deadline, in their own terms,
        // a little earlier.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            config.server.request_timeout() + Duration::from_secs(5),
        ));
    Ok((app, router))
}

/// Serves until SIGTERM or SIGINT, then drains within the grace period.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (app, router) = build(&config)?;
    let addr = config.server.listen;
    let handle = axum_server::Handle::new();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();

    let server = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert).map_err(ServeError::Tls)?;
            let key = read_secret_file(key)?;
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
                .await
                .map_err(ServeError::Tls)?;
            let mut server = axum_server::bind_rustls(addr, tls).handle(handle.clone());
            server
                .http_builder()
                .http1()
                .max_buf_size(config.server.max_header_bytes);
            tokio::spawn(server.serve(service))
        }
        _ => {
            let mut server = axum_server::bind(addr).handle(handle.clone());
            server
                .http_builder()
                .http1()
                .max_buf_size(config.server.max_header_bytes);
            tokio::spawn(server.serve(service))
        }
    };
    let Some(bound) = handle.listening().await else {
        let source = match server.await {
            Ok(Err(e)) => e,
            _ => std::io::Error::other("the server stopped before listening"),
        };
        return Err(ServeError::Listen { addr, source });
    };
    let scheme = if config.server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(addr = %bound, url = %format!("{scheme}://{bound}/"), "listening");

    tokio::spawn(announce_ready(app.hypervisor.clone()));
    shutdown_signal().await;
    tracing::info!(grace_s = config.server.shutdown_grace_secs, "shutting down");
    crate::daemon::notify::stopping();
    handle.graceful_shutdown(Some(config.server.shutdown_grace()));
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Whether libvirt answers. The reason is logged: libvirt's own words can
/// name the connection URI (user names, key files), so the body says less.
async fn readyz(State(app): State<App>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !may_read(app.readyz_access, peer) {
        return (StatusCode::NOT_FOUND, "no such resource\n").into_response();
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
        return (StatusCode::NOT_FOUND, "no such resource\n").into_response();
    }
    let body = app
        .metrics
        .encode(app.hypervisor.reconnects(), app.service.mirrors_open());
    let mut response = body.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
