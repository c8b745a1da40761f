//! The two kinds of target behind one set of steps: open a multipart upload,
//! put a chunk, complete, read back. S3 through `object_store`'s
//! `MultipartStore`, whose upload and part ids we persist; a directory by
//! positional writes into a partial file we rename at the end, since
//! `LocalFileSystem` has no multipart upload that survives a restart. Both
//! are read back through `object_store`.
//!
//! Errors are sorted here into what a retry may cure and what it cannot, in
//! words that name no endpoint, host path or key; the full error goes to
//! the log only.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};

use super::blocking;
use super::settings::{TargetSettings, UploadSettings};

/// Why a step failed.
#[derive(Debug)]
pub(super) enum StepError {
    /// A retry may succeed (the target did not answer, a 5xx).
    Retry { reason: String, detail: String },
    /// No retry will (refused credentials, the media gone).
    Fatal { reason: String, detail: String },
    /// The target no longer knows the multipart upload: start over.
    Lost { detail: String },
}

impl StepError {
    pub(super) fn reason(&self) -> &str {
        match self {
            Self::Retry { reason, .. } | Self::Fatal { reason, .. } => reason,
            Self::Lost { .. } => "the target lost the unfinished upload",
        }
    }

    pub(super) fn detail(&self) -> &str {
        match self {
            Self::Retry { detail, .. } | Self::Fatal { detail, .. } | Self::Lost { detail } => {
                detail
            }
        }
    }
}

pub(super) fn fatal(reason: impl Into<String>, detail: impl ToString) -> StepError {
    StepError::Fatal {
        reason: reason.into(),
        detail: detail.to_string(),
    }
}

pub(super) fn retry(reason: impl Into<String>, detail: impl ToString) -> StepError {
    StepError::Retry {
        reason: reason.into(),
        detail: detail.to_string(),
    }
}

/// A configured target, ready to take uploads.
pub(super) struct Target {
    pub settings: TargetSettings,
    kind: Kind,
}

enum Kind {
    S3(Arc<AmazonS3>),
    Dir {
        root: PathBuf,
        local: Arc<LocalFileSystem>,
    },
}

impl Target {
    pub(super) fn new(settings: &TargetSettings, all: &UploadSettings) -> Result<Self, String> {
        let kind = match settings {
            TargetSettings::Dir { path, .. } => {
                std::fs::create_dir_all(path)
                    .map_err(|e| format!("directory target {}: {e}", path.display()))?;
                Kind::Dir {
                    root: path.clone(),
                    local: Arc::new(
                        LocalFileSystem::new_with_prefix(path)
                            .map_err(|e| format!("directory target: {e}"))?,
                    ),
                }
            }
            TargetSettings::S3(s) => {
                let options = ClientOptions::new()
                    .with_allow_http(s.allow_http)
                    .with_timeout(all.request_timeout)
                    .with_connect_timeout(all.connect_timeout);
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s.bucket)
                    .with_region(&s.region)
                    .with_access_key_id(&s.access_key_id)
                    .with_secret_access_key(&s.secret_access_key)
                    .with_client_options(options)
                    // Our own attempts, with their backoff and their count
                    // kept in the store, are the retries.
                    .with_retry(RetryConfig {
                        max_retries: 0,
                        retry_timeout: all.request_timeout,
                        ..RetryConfig::default()
                    });
                if let Some(endpoint) = &s.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                // The builder's error may quote the configuration: only the
                // operator's log gets it, from the daemon's start.
                Kind::S3(Arc::new(
                    builder.build().map_err(|e| format!("S3 target: {e}"))?,
                ))
            }
        };
        Ok(Self {
            settings: settings.clone(),
            kind,
        })
    }

    /// Opens a multipart upload of `name`; its id is to be kept.
    pub(super) async fn begin(&self, name: &str, content_type: &str) -> Result<String, StepError> {
        match &self.kind {
            Kind::S3(s3) => {
                let mut attributes = Attributes::new();
                attributes.insert(Attribute::ContentType, content_type.to_owned().into());
                let options = PutMultipartOptions {
                    attributes,
                    ..PutMultipartOptions::default()
                };
                s3.create_multipart_opts(&object_path(name)?, options)
                    .await
                    .map_err(|e| classify(e, "open the upload"))
            }
            Kind::Dir { root, .. } => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let partial = partial_path(root, name, &id);
                blocking::run(move || blocking::create_partial(&partial))
                    .await
                    .map_err(|e| io_error(e, "could not write in the directory"))?;
                Ok(id)
            }
        }
    }

    /// Puts chunk `part` (at `offset` of the file); the id the target gave it.
    pub(super) async fn put(
        &self,
        name: &str,
        upload: &str,
        part: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<String, StepError> {
        match &self.kind {
            Kind::S3(s3) => s3
                .put_part(
                    &object_path(name)?,
                    &upload.to_owned(),
                    part as usize,
                    PutPayload::from(data),
                )
                .await
                .map(|p| p.content_id)
                .map_err(|e| classify(e, "take a chunk")),
            Kind::Dir { root, .. } => {
                let partial = partial_path(root, name, upload);
                let digest = hex::encode(Sha256::digest(&data));
                blocking::run(move || blocking::write_at(&partial, offset, &data))
                    .await
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => StepError::Lost {
                            detail: e.to_string(),
                        },
                        _ => io_error(e, "could not write in the directory"),
                    })?;
                Ok(digest)
            }
        }
    }

    /// Puts the chunks together (in part order) under the object's name.
    pub(super) async fn complete(
        &self,
        name: &str,
        upload: &str,
        parts: Vec<String>,
    ) -> Result<(), StepError> {
        match &self.kind {
            Kind::S3(s3) => {
                let parts = parts
                    .into_iter()
                    .map(|content_id| PartId { content_id })
                    .collect();
                s3.complete_multipart(&object_path(name)?, &upload.to_owned(), parts)
                    .await
                    .map(drop)
                    .map_err(|e| classify(e, "complete the upload"))
            }
            Kind::Dir { root, .. } => {
                let partial = partial_path(root, name, upload);
                let fin = root.join(name);
                blocking::run(move || blocking::publish(&partial, &fin))
                    .await
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => StepError::Lost {
                            detail: e.to_string(),
                        },
                        _ => io_error(e, "could not write in the directory"),
                    })
            }
        }
    }

    /// Forgets an unfinished upload, as far as the target lets us.
    pub(super) async fn abort(&self, name: &str, upload: &str) {
        let result = match &self.kind {
            Kind::S3(s3) => match object_path(name) {
                Ok(path) => s3
                    .abort_multipart(&path, &upload.to_owned())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.detail().to_owned()),
            },
            Kind::Dir { root, .. } => {
                let partial = partial_path(root, name, upload);
                blocking::run(move || std::fs::remove_file(partial))
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(detail) = result {
            tracing::debug!(target_name = self.settings.name(), %detail, "abort failed");
        }
    }

    /// Reads the object back, `chunk` bytes a request (each within the
    /// request timeout, however large the object): its SHA-256 (lowercase
    /// hex) and length.
    pub(super) async fn digest(&self, name: &str, chunk: u64) -> Result<(String, u64), StepError> {
        let path = object_path(name)?;
        let store: &dyn ObjectStore = match &self.kind {
            Kind::S3(s3) => s3.as_ref(),
            Kind::Dir { local, .. } => local.as_ref(),
        };
        let reading = |e| classify(e, "give the object back");
        let len = store.head(&path).await.map_err(reading)?.size;
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < len {
            let end = len.min(offset + chunk.max(1));
            let bytes = store.get_range(&path, offset..end).await.map_err(reading)?;
            if bytes.len() as u64 != end - offset {
                return Err(retry("the target gave back a short read", ""));
            }
            hasher.update(&bytes);
            offset = end;
        }
        Ok((hex::encode(hasher.finalize()), len))
    }
}

fn object_path(name: &str) -> Result<Path, StepError> {
    Path::parse(name).map_err(|e| fatal("the object's name is not valid", e))
}

/// `<root>/<dir>/.<file>.<id>.partial`: beside the final name (so the
/// rename stays in one filesystem), hidden, and one per attempt.
fn partial_path(root: &FsPath, name: &str, id: &str) -> PathBuf {
    let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
    root.join(dir).join(format!(".{file}.{id}.partial"))
}

fn io_error(e: std::io::Error, reason: &str) -> StepError {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EIO) => retry(reason, e),
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => fatal(reason, e),
        _ => retry(reason, e),
    }
}

/// What a failed call to a target means for the upload, in words that
/// name no endpoint or secret.
fn classify(e: object_store::Error, doing: &str) -> StepError {
    use object_store::Error as E;
    let detail = e.to_string();
    let in_upload = doing == "take a chunk" || doing == "complete the upload";
    match e {
        // S3 says 404 NoSuchUpload for an upload it no longer has; s3s-fs
        // says 403. Within an upload that opened, a 403 is taken for the
        // former: starting over opens a new one, and credentials that are
        // really refused fail there, fatally.
        E::PermissionDenied { .. } if in_upload => StepError::Lost { detail },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => fatal(
            format!("the target refused the credentials when asked to {doing}"),
            detail,
        ),
        // A multipart upload that is not (or no longer) there.
        E::NotFound { .. } if in_upload => StepError::Lost { detail },
        E::NotFound { .. } => retry(format!("the target found nothing to {doing}"), detail),
        E::InvalidPath { .. } => fatal("the object's name is not valid", detail),
        E::Generic { ref source, .. } => {
            let mut kind = None;
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cause {
                if let Some(http) = c.downcast_ref::<object_store::client::HttpError>() {
                    kind = Some(http.kind());
                    break;
                }
                cause = c.source();
            }
            use object_store::client::HttpErrorKind as K;
            let reason = match kind {
                Some(K::Connect) => format!("the target could not be reached to {doing}"),
                Some(K::Timeout) => format!("the target did not answer in time to {doing}"),
                Some(K::Request | K::Interrupted) => {
                    format!("the connection to the target broke when asked to {doing}")
                }
                _ => format!("the target failed to {doing}"),
            };
            retry(reason, detail)
        }
        _ => retry(format!("the target failed to {doing}"), detail),
    }
}

/// A backoff's wait before attempt `attempt` (1 is the first retry).
pub(super) fn backoff(settings: &UploadSettings, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1).min(20))
        .unwrap_or(u32::MAX);
    settings
        .backoff
        .saturating_mul(factor)
        .min(settings.max_backoff)
}
