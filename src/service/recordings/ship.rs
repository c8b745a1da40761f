//! A finished recording shipped through the uploads service (`[uploads]`):
//! its video and its events file, each one upload (`recordings/<file>`), the
//! digests the row holds.
//!
//! One owner per piece of state: the uploads service owns the uploads (and
//! resumes them itself after a restart); this task only waits for them and
//! moves the recording's row through `upload_moved`. One task a recording,
//! started when it reaches REC_COMPLETED, or at start for each recording a
//! crash left REC_COMPLETED or UPLOADING.
//!
//! Crash safety: the uploads are submitted (committed) before the row goes
//! UPLOADING, and found again by key and digest (`Uploads::find`), so a
//! crash between the two never submits them twice. The row's `upload_id`
//! keeps both ids, `<video>,<events>` (the events' alone if there was no
//! frame), for the dialects' views.

use std::sync::Arc;

use super::{machine::Event, FileKind, Inner, Recordings, Status};
use crate::service::uploads::{Media, Owner, TargetStatus, UploadId, UploadState, Uploads};
use crate::service::Error;

/// Tries of a recording's shipping (1, 2, 4, 8 s apart) before it is left
/// to the next start.
const TRIES: u32 = 5;

/// The object key of a recording's file.
pub(super) fn key(name: &str) -> String {
    format!("recordings/{name}")
}

/// The upload ids the row's `upload_id` holds, in order.
pub(super) fn ids(column: Option<&str>) -> Vec<UploadId> {
    column
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok().map(UploadId))
        .collect()
}

/// Ships `id` in a task of its own; the id is in `shipping` until it ends.
pub(super) fn spawn(inner: Arc<Inner>, uploads: Uploads, id: String) {
    inner.shipping().insert(id.clone());
    tokio::spawn(async move {
        let recordings = Recordings {
            inner: inner.clone(),
        };
        // Each try is idempotent (uploads found again by key and digest, the
        // row's status says which moves remain): a store that did not answer
        // is tried again a few times, then left to the next start.
        let mut wait = std::time::Duration::from_secs(1);
        for attempt in 1..=TRIES {
            match ship(&recordings, &uploads, &id).await {
                Ok(()) => break,
                Err(e) if attempt == TRIES => {
                    tracing::warn!(recording = %id, error = %e, "recording's upload not followed to its end; the next start takes it again");
                }
                Err(e) => {
                    tracing::warn!(recording = %id, error = %e, "recording's upload: trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        inner.shipping().remove(&id);
    });
}

async fn ship(recordings: &Recordings, uploads: &Uploads, id: &str) -> Result<(), Error> {
    let inner = &recordings.inner;
    let Some(row) = inner.store.get_recording(id).await.map_err(Error::from)? else {
        return Ok(());
    };
    let status: Status = row.status.parse().unwrap_or(Status::RecFailed);
    if !matches!(status, Status::RecCompleted | Status::Uploading) {
        return Ok(());
    }
    let owner = Owner {
        dialect: row.dialect.clone(),
        principal: row.principal.clone(),
        project: row.project.clone(),
    };
    let files = [
        (FileKind::Video, row.video.clone()),
        (FileKind::Events, row.events.clone()),
    ];
    let mut started = Vec::new();
    for (kind, file) in files {
        let Some(file) = file else { continue };
        let Some(sha256) = file.sha256.clone() else {
            continue;
        };
        let key = key(&file.name);
        let found = uploads.find(&key, &sha256).await?;
        let upload = match found {
            Some(upload) => upload,
            None => {
                let media = Media {
                    path: inner.path(&file.name),
                    key,
                    sha256,
                    bytes: file.bytes,
                    content_type: kind.content_type(),
                };
                match uploads.submit(media, owner.clone()).await {
                    Ok(upload) => upload,
                    // Refused at once (a file gone or changed): no upload
                    // will ever run, the recording fails in the refusal's
                    // words (they name no path).
                    Err(Error::Failed { reason, .. }) => {
                        let why = format!("{}: {reason}", what(kind));
                        recordings
                            .upload_moved(id, Event::UploadFailed(why))
                            .await?;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        started.push((kind, upload));
    }
    if started.is_empty() {
        let why = "the recording has no finished file to upload".to_owned();
        recordings
            .upload_moved(id, Event::UploadFailed(why))
            .await?;
        return Ok(());
    }
    if status == Status::RecCompleted {
        let column: Vec<String> = started.iter().map(|(_, u)| u.to_string()).collect();
        recordings
            .upload_moved(
                id,
                Event::UploadStarted {
                    upload_id: column.join(","),
                },
            )
            .await?;
        tracing::info!(recording = %id, uploads = %column.join(","), "recording uploading");
    }
    let mut failed = Vec::new();
    for (kind, upload) in started {
        let end = uploads.finished(upload).await?;
        if end.state != UploadState::Completed {
            let why: Vec<String> = end
                .targets
                .iter()
                .filter(|t| t.state != UploadState::Completed)
                .map(|t| {
                    let error = t.error.as_deref().unwrap_or("it did not complete");
                    format!("{}: {error}", t.target)
                })
                .collect();
            failed.push(format!("{}: {}", what(kind), why.join("; ")));
        }
    }
    let event = if failed.is_empty() {
        Event::UploadDone
    } else {
        Event::UploadFailed(format!("the upload failed ({})", failed.join("; ")))
    };
    let row = recordings.upload_moved(id, event).await?;
    tracing::info!(recording = %id, status = %row.status, "recording's upload ended");
    Ok(())
}

fn what(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Video => "video",
        FileKind::Events => "events",
    }
}

/// The targets of the recording's video upload (else of its only one), as
/// the uploads service has them; empty without uploads, or once the
/// upload's row is gone.
pub(super) async fn targets(uploads: &Uploads, column: Option<&str>) -> Vec<TargetStatus> {
    match ids(column).first() {
        Some(id) => uploads
            .status(*id)
            .await
            .map(|s| s.targets)
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_gives_the_ids_in_order() {
        assert_eq!(ids(Some("12,13")), [UploadId(12), UploadId(13)]);
        assert_eq!(ids(Some("7")), [UploadId(7)]);
        assert!(ids(None).is_empty());
        assert!(ids(Some("")).is_empty());
        assert_eq!(key("a.mp4"), "recordings/a.mp4");
    }
}
