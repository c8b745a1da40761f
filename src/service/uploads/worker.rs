//! The owner of every upload's progress: one task takes uploads off the
//! queue and runs at most `max_concurrent` at once; each runs its targets
//! one after the other, chunk by chunk, holding one chunk in memory. It is
//! the only writer of the uploads' rows after `submit` created them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::blocking;
use super::settings::UploadSettings;
use super::target::{self, fatal, retry, StepError, Target};
use super::{chunk_count, Error, UploadId, UploadState, UploadStatus, Watchers};
use crate::store::{ChunkRow, Store, TargetRow, TargetUpdate, UploadRow};

pub(super) struct Owner {
    ctx: Arc<Ctx>,
}

/// What every upload's run shares.
struct Ctx {
    store: Store,
    settings: Arc<UploadSettings>,
    watchers: Watchers,
    targets: Vec<Target>,
}

impl Owner {
    pub(super) fn new(
        store: Store,
        settings: Arc<UploadSettings>,
        watchers: Watchers,
    ) -> Result<Self, Error> {
        let targets = settings
            .targets
            .iter()
            .map(|t| Target::new(t, &settings))
            .collect::<Result<_, _>>()
            .map_err(|detail| Error::Failed {
                reason: "an upload target cannot be set up".into(),
                detail,
            })?;
        Ok(Self {
            ctx: Arc::new(Ctx {
                store,
                settings,
                watchers,
                targets,
            }),
        })
    }

    /// Runs the uploads `left` by an earlier run, then those queued, until
    /// every handle is gone and the last upload ended.
    pub(super) async fn run(
        self,
        left: Vec<UploadId>,
        mut queued: mpsc::UnboundedReceiver<UploadId>,
    ) {
        let mut waiting: VecDeque<UploadId> = left.into();
        let mut running = JoinSet::new();
        let mut open = true;
        loop {
            while running.len() < self.ctx.settings.max_concurrent {
                let Some(id) = waiting.pop_front() else { break };
                running.spawn(self.ctx.clone().upload(id));
            }
            if !open && running.is_empty() && waiting.is_empty() {
                return;
            }
            tokio::select! {
                id = queued.recv(), if open => match id {
                    Some(id) => waiting.push_back(id),
                    None => open = false,
                },
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "an upload task failed");
                    }
                }
            }
        }
    }
}

impl Ctx {
    async fn upload(self: Arc<Self>, id: UploadId) {
        // Only the store can fail a run (a target's failure is the target's
        // state): the rows say where it stood, so the run starts again from
        // them, after a pause, until the store answers. Its watchers keep
        // waiting meanwhile rather than see an end that did not happen.
        while let Err(e) = self.upload_targets(id).await {
            tracing::warn!(upload = %id, error = %e, detail = e.detail().unwrap_or(""),
                           "upload interrupted; it starts again from the store's rows");
            tokio::time::sleep(self.settings.max_backoff).await;
        }
    }

    async fn upload_targets(&self, id: UploadId) -> Result<(), Error> {
        let Some(row) = self.store.get_upload(id.0).await.map_err(Error::from)? else {
            return Ok(());
        };
        let open: Vec<&TargetRow> = row
            .targets
            .iter()
            .filter(|t| matches!(t.state.as_str(), "pending" | "uploading"))
            .collect();
        if open.is_empty() {
            self.publish(id).await;
            return Ok(());
        }
        // The media is read once whole before any target gets a byte of
        // it: a file gone or changed since its writer's digest fails every
        // target at once, rather than uploading what no check would pass.
        let source = source_problem(&row).await;
        for t in open {
            let Some(target) = self.targets.iter().find(|c| c.settings.name() == t.target) else {
                self.end(
                    id,
                    &t.target,
                    Err("the target is no longer configured".into()),
                )
                .await?;
                continue;
            };
            if let Some(problem) = &source {
                self.end(id, &t.target, Err(problem.clone())).await?;
                continue;
            }
            self.run_target(&row, t, target).await?;
        }
        Ok(())
    }

    /// One target, from where its rows say it stood to completed or failed.
    async fn run_target(
        &self,
        row: &UploadRow,
        t: &TargetRow,
        target: &Target,
    ) -> Result<(), Error> {
        let id = UploadId(row.id);
        let mut attempts = t.attempts;
        let mut multipart = t.multipart_id.clone();
        self.store
            .update_upload_target(
                row.id,
                &t.target,
                TargetUpdate {
                    state: Some(UploadState::Uploading.as_str()),
                    ..TargetUpdate::default()
                },
            )
            .await
            .map_err(Error::from)?;
        self.publish(id).await;
        loop {
            let result = self.attempt(row, target, &mut multipart).await;
            let err = match result {
                Ok(()) => return self.end(id, &t.target, Ok(())).await,
                Err(StepError::Fatal { reason, detail }) => {
                    tracing::warn!(upload = %id, target_name = %t.target, %reason, %detail,
                                   "upload failed");
                    self.abandon(row, target, multipart.as_deref()).await;
                    return self.end(id, &t.target, Err(reason)).await;
                }
                Err(e) => e,
            };
            attempts += 1;
            tracing::info!(upload = %id, target_name = %t.target, attempt = attempts,
                           reason = err.reason(), detail = err.detail(), "upload step failed");
            if let StepError::Lost { .. } = err {
                // Its chunks went with it: start over under a new id.
                multipart = None;
                self.store
                    .restart_upload_target(row.id, &t.target, None)
                    .await
                    .map_err(Error::from)?;
            }
            if attempts >= self.settings.max_attempts {
                let reason = format!("gave up after {attempts} attempts: {}", err.reason());
                self.store
                    .update_upload_target(
                        row.id,
                        &t.target,
                        TargetUpdate {
                            attempts: Some(attempts),
                            ..TargetUpdate::default()
                        },
                    )
                    .await
                    .map_err(Error::from)?;
                self.abandon(row, target, multipart.as_deref()).await;
                return self.end(id, &t.target, Err(reason)).await;
            }
            self.store
                .update_upload_target(
                    row.id,
                    &t.target,
                    TargetUpdate {
                        attempts: Some(attempts),
                        error: Some(Some(err.reason().to_owned())),
                        ..TargetUpdate::default()
                    },
                )
                .await
                .map_err(Error::from)?;
            tokio::time::sleep(target::backoff(&self.settings, attempts)).await;
        }
    }

    /// One pass: open the multipart upload if there is none, put every
    /// chunk not yet acknowledged, complete, and read the object back.
    async fn attempt(
        &self,
        row: &UploadRow,
        target: &Target,
        multipart: &mut Option<String>,
    ) -> Result<(), StepError> {
        let name = target.settings.object_name(&row.object_key);
        let tname = target.settings.name();
        let stored = |e: crate::store::StoreError| retry("the store did not answer", e);
        let mut done: BTreeMap<u64, String> = BTreeMap::new();
        let upload = match multipart.clone() {
            Some(upload) => {
                for c in self
                    .store
                    .upload_chunks(row.id, tname)
                    .await
                    .map_err(stored)?
                {
                    done.insert(c.part, c.content_id);
                }
                upload
            }
            None => {
                let upload = target.begin(&name, &row.content_type).await?;
                self.store
                    .restart_upload_target(row.id, tname, Some(upload.clone()))
                    .await
                    .map_err(stored)?;
                *multipart = Some(upload.clone());
                upload
            }
        };
        let total = chunk_count(row.bytes, row.chunk_bytes);
        let resumed = done.len() as u64;
        if resumed > 0 {
            tracing::info!(
                upload = row.id,
                target_name = tname,
                chunks_kept = resumed,
                chunks = total,
                "upload resumed"
            );
        }
        for part in 0..total {
            if done.contains_key(&part) {
                continue;
            }
            let offset = part * row.chunk_bytes;
            let len = row.chunk_bytes.min(row.bytes - offset) as usize;
            let path = row.media_path.clone();
            let data = blocking::run(move || blocking::read_chunk(&path, offset, len))
                .await
                .map_err(|e| fatal("the media file cannot be read", e))?;
            if data.len() != len {
                return Err(fatal("the media file is shorter than it was", ""));
            }
            let chunk = ChunkRow {
                part,
                content_id: String::new(),
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)),
                bytes: len as u64,
            };
            let content_id = target.put(&name, &upload, part, offset, data).await?;
            self.store
                .record_upload_chunk(
                    row.id,
                    tname,
                    ChunkRow {
                        content_id: content_id.clone(),
                        ..chunk
                    },
                )
                .await
                .map_err(stored)?;
            done.insert(part, content_id);
            if !self.settings.chunk_pause.is_zero() {
                tokio::time::sleep(self.settings.chunk_pause).await;
            }
        }
        let parts = done.into_values().collect();
        match target.complete(&name, &upload, parts).await {
            Ok(()) => {}
            // Completed before a crash kept us from saying so: the object
            // is there, and the read-back below decides.
            Err(StepError::Lost { detail }) if resumed == total => {
                tracing::info!(upload = row.id, target_name = tname, %detail,
                               "the upload was already complete; checking the object");
            }
            Err(e) => return Err(e),
        }
        let (digest, len) = target.digest(&name, row.chunk_bytes).await?;
        if digest != row.sha256 || len != row.bytes {
            tracing::warn!(upload = row.id, target_name = tname, %digest, len,
                           "the object read back differs from the media");
            self.store
                .restart_upload_target(row.id, tname, None)
                .await
                .map_err(stored)?;
            *multipart = None;
            return Err(retry(
                "the object read back does not match the media's SHA-256",
                "",
            ));
        }
        Ok(())
    }

    /// Frees what a failed target holds on its server (S3 keeps the parts
    /// of an open multipart upload until it is aborted).
    async fn abandon(&self, row: &UploadRow, target: &Target, multipart: Option<&str>) {
        if let Some(upload) = multipart {
            target
                .abort(&target.settings.object_name(&row.object_key), upload)
                .await;
        }
    }

    /// Ends a target completed or failed with a reason, and tells watchers.
    async fn end(
        &self,
        id: UploadId,
        target: &str,
        result: Result<(), String>,
    ) -> Result<(), Error> {
        let update = match result {
            Ok(()) => TargetUpdate {
                state: Some(UploadState::Completed.as_str()),
                error: Some(None),
                ..TargetUpdate::default()
            },
            Err(reason) => TargetUpdate {
                state: Some(UploadState::Failed.as_str()),
                error: Some(Some(reason)),
                ..TargetUpdate::default()
            },
        };
        self.store
            .update_upload_target(id.0, target, update)
            .await
            .map_err(Error::from)?;
        self.publish(id).await;
        Ok(())
    }

    /// Tells watchers the upload's overall state, as now stored.
    async fn publish(&self, id: UploadId) {
        if let Ok(Some(row)) = self.store.get_upload(id.0).await {
            self.watchers.publish(id, UploadStatus::from_row(row).state);
        }
    }
}

/// Why the media cannot be uploaded at all, if it cannot: gone, or not the
/// bytes its digest names.
async fn source_problem(row: &UploadRow) -> Option<String> {
    let path = row.media_path.clone();
    match blocking::run(move || blocking::digest(&path)).await {
        Err(e) => {
            tracing::warn!(upload = row.id, error = %e, "media unreadable");
            Some("the media file is gone or unreadable".into())
        }
        Ok((digest, len)) if digest != row.sha256 || len != row.bytes => {
            Some("the media file does not match its SHA-256".into())
        }
        Ok(_) => None,
    }
}
