//! `[uploads]` to the service's upload settings: the S3 targets' secret
//! files are read here, once, at start, and the TLS provider that
//! object_store's client uses (ring, as for our own TLS) is installed.

use std::time::Duration;

use super::ServeError;
use crate::config::{self, UploadTargetKind};
use crate::service::uploads::{S3Target, TargetSettings, UploadSettings, Uploads};
use crate::store::Store;

pub(super) async fn start(
    config: &config::Uploads,
    store: Option<&Store>,
) -> Result<Uploads, ServeError> {
    let store = store.ok_or_else(|| {
        ServeError::Uploads("[uploads] keeps its progress in the store: configure [store]".into())
    })?;
    // reqwest was built without a provider of its own; another one already
    // installed (a test's, say) is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut targets = Vec::new();
    for t in &config.targets {
        targets.push(match t.kind {
            UploadTargetKind::Dir => TargetSettings::Dir {
                name: t.name.clone(),
                path: t.path.clone().unwrap_or_default(),
            },
            UploadTargetKind::S3 => {
                let creds = t
                    .credentials()
                    .map_err(|e| ServeError::Uploads(e.to_string()))?;
                let mut prefix = t.prefix.clone();
                if !prefix.is_empty() && !prefix.ends_with('/') {
                    prefix.push('/');
                }
                TargetSettings::S3(S3Target {
                    name: t.name.clone(),
                    endpoint: t.endpoint.clone(),
                    bucket: t.bucket.clone().unwrap_or_default(),
                    region: t.region.clone(),
                    prefix,
                    access_key_id: creds.access_key_id,
                    secret_access_key: creds.secret_access_key,
                    allow_http: t.allow_http,
                })
            }
        });
    }
    let settings = UploadSettings {
        chunk_bytes: config.chunk_bytes(),
        max_attempts: config.max_attempts,
        backoff: Duration::from_millis(config.backoff_ms),
        max_backoff: Duration::from_secs(config.max_backoff_secs),
        max_concurrent: config.max_concurrent,
        request_timeout: Duration::from_secs(config.request_timeout_secs),
        connect_timeout: Duration::from_secs(config.connect_timeout_secs),
        chunk_pause: Duration::from_millis(config.chunk_pause_ms),
        targets,
    };
    let uploads = Uploads::start(store.clone(), settings).await.map_err(|e| {
        let detail = e.detail().unwrap_or_default();
        ServeError::Uploads(format!("{e} {detail}").trim_end().to_owned())
    })?;
    tracing::info!(targets = ?uploads.targets(), "uploads on");
    Ok(uploads)
}
