//! Capture jobs: a screenshot a client asks for now and polls for later
//! (Oracle's screen capture requests). `Jobs` creates each job `queued` in
//! the store and spawns its runner, which alone moves its state through the
//! `machine`: queued → pending → in-progress (the grab, through
//! `Screenshots::take`, so jobs and direct requests share captures) →
//! uploading (the JPEG into the store's media, then, with `[uploads]`, to
//! every upload target: `captures/job-<id>.<ext>`) → complete, or error.
//! A job that a restart finds uploading its stored image waits for that
//! upload again (uploads resume by themselves) instead of failing. Every
//! move is a compare-and-set from the status the runner last saw, so a cancel
//! written between two steps is seen at the next one, and of two runners of
//! one job (a recovery racing a new start) only one gets on.

pub(crate) mod machine;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use machine::Event;

use super::uploads::{Media as UploadMedia, Owner, TargetKind, UploadState};
use super::{Caller, Domain, Error, Interval, Principal, ScreenshotRequest, Screenshots};
use crate::store::{JobFilter, JobStatus, NewJob, Store, StoreError};

pub(crate) use crate::store::{CancellationState, Job, JobState};

/// How one dialect's jobs run.
#[derive(Clone, Copy)]
pub(crate) struct JobSettings {
    pub dialect: &'static str,
    /// How long a job waits in `pending` before its grab.
    pub start_delay: Duration,
    /// How long a job waits in `uploading` before its image is stored: zero
    /// but in tests, which need a window to act on an uploading job.
    pub upload_delay: Duration,
    /// A failed job's `error_reason`, in the dialect's words, from the error
    /// and the state the job was in.
    pub reason: fn(&Error, JobState) -> String,
}

/// A dialect's handle on its jobs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Jobs {
    service: Arc<Screenshots>,
    store: Store,
    settings: JobSettings,
}

/// A job to submit, as the dialect parsed it.
pub(crate) struct Submit<'a> {
    pub who: &'a Principal,
    /// The instance reference to resolve (see `Screenshots::find_instance`).
    pub lookup: &'a str,
    pub table: &'a BTreeMap<String, String>,
    /// The per-instance minimum interval between jobs.
    pub interval: Interval,
    /// The job's unique name.
    pub name: String,
    /// The instance as the client named it, kept with the job.
    pub instance: String,
    pub account: Option<String>,
    pub request_id: String,
}

/// A job's image.
pub(crate) struct Media {
    pub path: PathBuf,
    pub sha256: String,
    pub len: u64,
}

impl Media {
    /// The capture's bytes, checked against the length and SHA-256 recorded
    /// with it: a file damaged on disk (truncated, overwritten) is refused,
    /// never served as if it were the capture.
    pub(crate) async fn read(&self) -> Result<Vec<u8>, Error> {
        read_verified(&self.path, self.len, &self.sha256).await
    }
}

/// The file at `path`, if it still has `len` bytes hashing to `sha256`.
pub(crate) async fn read_verified(
    path: &std::path::Path,
    len: u64,
    sha256: &str,
) -> Result<Vec<u8>, Error> {
    use sha2::{Digest, Sha256};
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        Error::failed(
            "the capture's file cannot be read",
            format!("{}: {e}", path.display()),
        )
    })?;
    let found = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != len || found != sha256 {
        return Err(Error::failed(
            "the capture's file is damaged (it no longer matches its SHA-256); take a new capture",
            format!(
                "{}: {} bytes, SHA-256 {found}; recorded {len} bytes, {sha256}",
                path.display(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

impl Screenshots {
    /// The jobs of one dialect, if there is a store to keep them in.
    pub(crate) fn jobs(self: &Arc<Self>, settings: JobSettings) -> Option<Jobs> {
        let store = self.audit.as_ref()?.store().clone();
        Some(Jobs {
            service: self.clone(),
            store,
            settings,
        })
    }
}

impl Jobs {
    /// Resolves and scopes the instance, takes its interval slot, and
    /// creates the job `queued`: it is committed before this returns, and
    /// its runner is on its way.
    pub(crate) async fn submit(&self, submit: Submit<'_>) -> Result<Job, Error> {
        let domain = self
            .service
            .find_instance(submit.who, submit.lookup, submit.table)
            .await?;
        if let Some(state) = domain.state.filter(|s| !s.has_console()) {
            return Err(Error::NotRunning {
                domain: domain.name.clone(),
                state,
            });
        }
        let slot = self.service.throttle.take(&domain, submit.interval).await?;
        let new = NewJob {
            name: submit.name,
            dialect: self.settings.dialect.to_owned(),
            principal: submit.who.id.clone(),
            project: submit.who.project.clone(),
            instance: submit.instance,
            domain_uuid: domain.uuid.clone(),
            request_id: submit.request_id,
            creation_time: crate::store::now(),
            account: submit.account,
        };
        let job = match self.store.create_job(new).await {
            Ok(job) => job,
            Err(e) => {
                // No job was made: the slot is not spent.
                self.service.throttle.release(slot).await;
                return Err(Error::from(e));
            }
        };
        tokio::spawn(self.clone().run(job.clone(), domain));
        Ok(job)
    }

    /// The job named `name` if `who` owns it (or is an admin, who sees every
    /// job, as every domain): another's is not found, in the same words as
    /// one that does not exist.
    pub(crate) async fn get(&self, who: &Principal, name: &str) -> Result<Job, Error> {
        let not_found = || Error::NotFound {
            domain: name.to_owned(),
        };
        let job = self
            .store
            .get_job(name)
            .await
            .map_err(Error::from)?
            .ok_or_else(not_found)?;
        if job.dialect != self.settings.dialect || !(who.is_admin() || job.principal == who.id) {
            return Err(not_found());
        }
        Ok(job)
    }

    /// `who`'s jobs (an admin's: everyone's) whose names start with
    /// `prefix`, by name.
    pub(crate) async fn list(&self, who: &Principal, prefix: &str) -> Result<Vec<Job>, Error> {
        self.store
            .list_jobs(JobFilter {
                dialect: Some(self.settings.dialect.to_owned()),
                principal: (!who.is_admin()).then(|| who.id.clone()),
                name_prefix: Some(prefix.to_owned()),
                ..JobFilter::default()
            })
            .await
            .map_err(Error::from)
    }

    /// Asks `who`'s job to stop: the runner sees it at its next step. On a
    /// finished job the cancellation fails with a reason (see `machine`).
    pub(crate) async fn cancel(&self, who: &Principal, name: &str) -> Result<Job, Error> {
        self.get(who, name).await?;
        self.store
            .update_job(name, |s| {
                machine::apply(s, &Event::Cancel).map_err(|r| r.to_string())
            })
            .await
            .map_err(Error::from)
    }

    /// Deletes `who`'s job and its media. A runner still at work finds the
    /// job gone at its next step and stops.
    pub(crate) async fn delete(&self, who: &Principal, name: &str) -> Result<(), Error> {
        self.get(who, name).await?;
        self.store.delete_job(name).await.map_err(Error::from)?;
        Ok(())
    }

    /// The image of `who`'s job, once it is `complete`: a job that ended in
    /// error made no capture, whatever file a cancel may have raced past.
    pub(crate) async fn media(&self, who: &Principal, name: &str) -> Result<Media, Error> {
        let job = self.get(who, name).await?;
        match (job.media_path, job.media_sha256, job.media_bytes) {
            (Some(path), Some(sha256), Some(len)) if job.status.state == JobState::Complete => {
                Ok(Media { path, sha256, len })
            }
            _ => Err(Error::NotFound {
                domain: name.to_owned(),
            }),
        }
    }

    /// After a start: every unfinished job of this dialect created before
    /// `started` (by an earlier run: this run's own have live runners) per
    /// the machine's recovery rule; those that resume get a runner again.
    pub(crate) async fn recover(&self, started: OffsetDateTime) -> Result<usize, Error> {
        let mut resumed = 0;
        for job in self.store.unfinished_jobs().await.map_err(Error::from)? {
            if job.dialect != self.settings.dialect || job.creation_time >= started {
                continue;
            }
            // Its image is stored and the upload resumes by itself: the job
            // waits for it again. (Without `[uploads]` an image stored is
            // followed by `complete` in the same step, so this is uploads'.)
            let stored =
                job.media_path.is_some() && job.status.cancellation != CancellationState::Requested;
            if job.status.state == JobState::Uploading && stored && self.service.uploads().is_some()
            {
                tracing::info!(job = %job.name, "job waits for its upload again");
                tokio::spawn(self.clone().resume_upload(job));
                resumed += 1;
                continue;
            }
            let job = self
                .store
                .update_job(&job.name, |s| Ok(machine::recover(s)))
                .await
                .map_err(Error::from)?;
            tracing::info!(job = %job.name, status = %job.status, "job recovered");
            if !machine::resumable(job.status.state) {
                continue;
            }
            match self.service.find(&job.domain_uuid).await {
                Ok(domain) => {
                    tokio::spawn(self.clone().run(job, domain));
                    resumed += 1;
                }
                Err(e) => {
                    let reason = (self.settings.reason)(&e, job.status.state);
                    let _ = self
                        .store
                        .update_job(&job.name, move |s| {
                            machine::apply(s, &Event::Fail(reason)).map_err(|r| r.to_string())
                        })
                        .await;
                }
            }
        }
        Ok(resumed)
    }

    /// The one writer of a job's state, from `queued` to its end.
    async fn run(self, job: Job, domain: Domain) {
        let name = job.name.clone();
        let mut seen = job.status.clone();
        // queued → pending → (the delay) → in-progress.
        if !self.advance(&name, &mut seen).await {
            return;
        }
        if !self.settings.start_delay.is_zero() {
            tokio::time::sleep(self.settings.start_delay).await;
        }
        if !self.advance(&name, &mut seen).await {
            return;
        }
        let request = ScreenshotRequest {
            caller: Some(Caller {
                request_id: job.request_id.clone(),
                user: job.principal.clone(),
            }),
            ..ScreenshotRequest::default()
        };
        let shot = match self.service.take(&domain, &request).await {
            Ok(shot) => shot,
            Err(e) => return self.fail(&name, &seen, &e).await,
        };
        if !self.advance(&name, &mut seen).await {
            return;
        }
        if !self.settings.upload_delay.is_zero() {
            tokio::time::sleep(self.settings.upload_delay).await;
        }
        let bytes = shot.image.as_ref().clone();
        let extension = match shot.output {
            crate::capture::Output::Png => "png",
            _ => "jpg",
        };
        let storing = OffsetDateTime::now_utc();
        let stored = self
            .store
            .set_job_media(&name, bytes, extension, None, Some(seen.clone()))
            .await;
        let uploaded = stored.as_ref().ok().cloned();
        if let Some(audit) = &self.service.audit {
            let what = match &stored {
                Ok(_) => Ok(format!(
                    "{} bytes kept, sha256 {}",
                    shot.image.len(),
                    shot.sha256_hex()
                )),
                Err(StoreError::NotFound { .. }) => Err("the job was deleted".to_owned()),
                Err(StoreError::Conflict { .. }) => Err("the capture was cancelled".to_owned()),
                Err(_) => Err("the store could not keep the image".to_owned()),
            };
            audit
                .record_stored(&domain, &job.request_id, storing, what)
                .await;
        }
        match stored {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => return,
            // A cancel came while the image was on its way: the store wrote
            // nothing, and the job ends cancelled here.
            Err(StoreError::Conflict { .. }) => {
                self.end_if_cancelled(&name, &mut seen).await;
                return;
            }
            Err(e) => return self.fail(&name, &seen, &Error::from(e)).await,
        }
        if let Some(job) = uploaded {
            if let Err(e) = self.upload(&job).await {
                return self.fail(&name, &seen, &e).await;
            }
        }
        self.advance(&name, &mut seen).await;
    }

    /// With `[uploads]`: uploads the job's stored image to every target and
    /// waits for the end; the first S3 target's object becomes the job's
    /// `media_uri`. An upload already made for this image (before a
    /// restart) is waited for, not made again.
    async fn upload(&self, job: &Job) -> Result<(), Error> {
        let Some(uploads) = self.service.uploads() else {
            return Ok(());
        };
        let (Some(path), Some(sha256), Some(bytes)) =
            (&job.media_path, &job.media_sha256, job.media_bytes)
        else {
            return Ok(());
        };
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = format!("captures/{file}");
        let id = match uploads.find(&key, sha256).await? {
            Some(id) => id,
            None => {
                let media = UploadMedia {
                    path: path.clone(),
                    key,
                    sha256: sha256.clone(),
                    bytes,
                    content_type: if file.ends_with(".png") {
                        "image/png"
                    } else {
                        "image/jpeg"
                    },
                };
                let owner = Owner {
                    dialect: self.settings.dialect.to_owned(),
                    principal: job.principal.clone(),
                    project: job.project.clone(),
                };
                uploads.submit(media, owner).await?
            }
        };
        let status = uploads.finished(id).await?;
        if status.state != UploadState::Completed {
            let why: Vec<String> = status
                .targets
                .iter()
                .filter_map(|t| Some(format!("{}: {}", t.target, t.error.as_deref()?)))
                .collect();
            return Err(Error::Failed {
                reason: format!("the upload failed ({})", why.join("; ")),
                detail: format!("upload {id}"),
            });
        }
        let s3 = status.targets.iter().find(|t| t.kind == TargetKind::S3);
        if let Some(uri) = s3.and_then(|t| t.uri.clone()) {
            self.store
                .set_job_media_uri(&job.name, uri)
                .await
                .map_err(Error::from)?;
        }
        Ok(())
    }

    /// After a restart, a job that was uploading its stored image: waits for
    /// the upload and ends the job as it ends.
    async fn resume_upload(self, job: Job) {
        let name = job.name.clone();
        let mut seen = job.status.clone();
        match self.upload(&job).await {
            Ok(()) => {
                self.advance(&name, &mut seen).await;
            }
            Err(e) => self.fail(&name, &seen, &e).await,
        }
    }

    /// Moves the job one step from `seen`; whether the runner goes on. A
    /// cancel written since `seen` is met here: the step ends the job
    /// "cancelled". A job moved by someone else, ended or deleted stops
    /// this runner.
    async fn advance(&self, name: &str, seen: &mut JobStatus) -> bool {
        loop {
            let Ok(next) = machine::apply(seen, &Event::Advance) else {
                return false;
            };
            match self
                .store
                .transition_job(name, seen.clone(), next.clone())
                .await
            {
                Ok(job) => {
                    *seen = job.status;
                    return !seen.state.is_terminal();
                }
                Err(StoreError::Conflict { .. }) => {
                    match self.store.get_job(name).await {
                        // Only the cancellation changed: step again from it.
                        Ok(Some(job)) if job.status.state == seen.state => *seen = job.status,
                        _ => return false,
                    }
                }
                // Deleted while it ran: nothing is left to move.
                Err(StoreError::NotFound { .. }) => return false,
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "job step failed");
                    return false;
                }
            }
        }
    }

    /// After a step lost to another writer: if only a cancel came since
    /// `seen`, the job ends cancelled (the step `advance` takes on it); a job
    /// moved by someone else or deleted is left as it is.
    async fn end_if_cancelled(&self, name: &str, seen: &mut JobStatus) {
        if let Ok(Some(job)) = self.store.get_job(name).await {
            if job.status.state == seen.state && job.status != *seen {
                *seen = job.status;
                self.advance(name, seen).await;
            }
        }
    }

    async fn fail(&self, name: &str, seen: &JobStatus, err: &Error) {
        let reason = (self.settings.reason)(err, seen.state);
        tracing::info!(job = name, %reason, "job failed");
        let result = self
            .store
            .update_job(name, move |s| {
                machine::apply(s, &Event::Fail(reason)).map_err(|r| r.to_string())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(job = name, error = %e, "cannot record a job's failure");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{Hypervisor, Settings as HvSettings};
    use crate::store::StoreSettings;
    use sha2::Digest;

    fn reason(err: &Error, state: JobState) -> String {
        format!("{state}: {err}")
    }

    async fn jobs(dir: &std::path::Path, delay: Duration) -> Jobs {
        let store = Store::open(StoreSettings::new(dir.join("s.db")))
            .await
            .unwrap();
        let service = Arc::new(Screenshots::new(
            Hypervisor::new(HvSettings::new("test:///default")),
            super::super::Settings {
                output: crate::capture::Output::default(),
                max_concurrent: 2,
                max_queued: 2,
                wake_settle: Duration::ZERO,
                fast_path: None,
                store: Some(store),
                recordings: None,
            },
        ));
        service
            .jobs(JobSettings {
                dialect: "test",
                start_delay: delay,
                upload_delay: Duration::ZERO,
                reason,
            })
            .unwrap()
    }

    async fn finished(jobs: &Jobs, who: &Principal, name: &str) -> Job {
        for _ in 0..200 {
            let job = jobs.get(who, name).await.unwrap();
            if job.status.state.is_terminal() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{name} did not finish");
    }

    fn submit<'a>(
        who: &'a Principal,
        table: &'a BTreeMap<String, String>,
        name: &str,
    ) -> Submit<'a> {
        Submit {
            who,
            lookup: "test",
            table,
            interval: Interval {
                rule: "test",
                every: Duration::from_millis(1),
            },
            name: name.into(),
            instance: "vm-test".into(),
            account: None,
            request_id: format!("req-{name}"),
        }
    }

    #[tokio::test]
    async fn a_job_runs_to_complete_a_cancel_stops_one_and_others_see_none() {
        let dir = std::env::temp_dir().join(format!("vmshot-jobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let jobs = jobs(&dir, Duration::from_millis(300)).await;
        let alice = Principal::unlimited("test", "alice");
        let bob = Principal::unlimited("test", "bob");
        let table = BTreeMap::new();

        let job = jobs.submit(submit(&alice, &table, "a/1")).await.unwrap();
        assert_eq!(job.status.state, JobState::Queued);
        let done = finished(&jobs, &alice, "a/1").await;
        assert_eq!(done.status.state, JobState::Complete, "{done:?}");
        let media = jobs.media(&alice, "a/1").await.unwrap();
        let bytes = std::fs::read(&media.path).unwrap();
        assert_eq!((bytes.len() as u64, media.len), (media.len, media.len));
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), media.sha256);

        tokio::time::sleep(Duration::from_millis(5)).await;
        jobs.submit(submit(&alice, &table, "a/2")).await.unwrap();
        let asked = jobs.cancel(&alice, "a/2").await.unwrap();
        assert_eq!(asked.status.cancellation, CancellationState::Requested);
        let cancelled = finished(&jobs, &alice, "a/2").await;
        assert_eq!(
            (
                cancelled.status.error_reason.as_deref(),
                cancelled.status.cancellation
            ),
            (Some(machine::CANCELLED), CancellationState::Completed)
        );
        assert!(cancelled.media_path.is_none());

        assert!(matches!(
            jobs.get(&bob, "a/1").await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            jobs.cancel(&bob, "a/1").await,
            Err(Error::NotFound { .. })
        ));
        assert!(jobs.list(&bob, "a/").await.unwrap().is_empty());
        assert_eq!(jobs.list(&alice, "a/").await.unwrap().len(), 2);
        // An admin sees every job, as it sees every domain.
        let admin = Principal {
            roles: [super::super::scope::ADMIN_ROLE.to_owned()].into(),
            ..Principal::unlimited("test", "root")
        };
        assert_eq!(jobs.get(&admin, "a/1").await.unwrap().name, "a/1");
        assert_eq!(jobs.list(&admin, "a/").await.unwrap().len(), 2);
        // A cancelled job made no capture: it has no image to serve.
        assert!(matches!(
            jobs.media(&alice, "a/2").await,
            Err(Error::NotFound { .. })
        ));
        jobs.delete(&alice, "a/1").await.unwrap();
        assert!(!media.path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Jobs an earlier run left: a pending one resumes and completes, an
    /// in-progress one ends in error; one of this run is left alone.
    #[tokio::test]
    async fn recovery_resumes_or_ends_only_an_earlier_runs_jobs() {
        let dir = std::env::temp_dir().join(format!("vmshot-jobs-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let jobs = jobs(&dir, Duration::ZERO).await;
        let alice = Principal::unlimited("test", "alice");
        let domain = jobs.service.find("test").await.unwrap();
        let left = |name: &str, state: JobState| {
            let store = jobs.store.clone();
            let new = NewJob {
                name: name.into(),
                dialect: "test".into(),
                principal: "alice".into(),
                project: None,
                instance: "vm-test".into(),
                domain_uuid: domain.uuid.clone(),
                request_id: format!("req-{name}"),
                creation_time: crate::store::now(),
                account: None,
            };
            let name = name.to_owned();
            async move {
                store.create_job(new).await.unwrap();
                store
                    .update_job(&name, move |s| Ok(JobStatus { state, ..s.clone() }))
                    .await
                    .unwrap();
            }
        };
        left("old/pending", JobState::Pending).await;
        left("old/grabbing", JobState::InProgress).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = crate::store::now();
        left("new/grabbing", JobState::InProgress).await;

        assert_eq!(jobs.recover(started).await.unwrap(), 1);
        let resumed = finished(&jobs, &alice, "old/pending").await;
        assert_eq!(resumed.status.state, JobState::Complete, "{resumed:?}");
        let ended = jobs.get(&alice, "old/grabbing").await.unwrap();
        assert_eq!(
            ended.status.error_reason.as_deref(),
            Some("vmshot restarted during in-progress")
        );
        let mine = jobs.get(&alice, "new/grabbing").await.unwrap();
        assert_eq!(mine.status.state, JobState::InProgress);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
