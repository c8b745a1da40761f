//! The capture job state machine: pure, so that every rule is tested
//! without a store; the store compares-and-sets what this decides.
//!
//! ```text
//!                     Advance          Advance             Advance          Advance
//!   ┌────────┐      ┌─────────┐      ┌─────────────┐     ┌───────────┐     ┌──────────┐
//!   │ queued │ ───▶ │ pending │ ───▶ │ in-progress │ ──▶ │ uploading │ ──▶ │ complete │
//!   └────────┘      └─────────┘      └─────────────┘     └───────────┘     └──────────┘
//!     │  ▲            │                 │                   │
//!     │  └────────────┘ Restarted       │                   │
//!     │  (pending resumes as queued)    │                   │
//!     │ Fail(reason), or Advance once a cancel is requested ("cancelled"),
//!     │ or Restarted from in-progress / uploading ("vmshot restarted during …")
//!     ▼               ▼                 ▼                   ▼
//!   ┌───────────────────────────────────────────────────────────┐
//!   │                          error                            │
//!   └───────────────────────────────────────────────────────────┘
//!
//!   cancellation:  not_requested ──Cancel──▶ requested ──(job ends)──▶ completed
//!                        │                                          ╲
//!                        └──Cancel on a finished job──▶ failed      (failed never
//!                                                                    follows requested)
//! ```
//!
//! `complete` and `error` are terminal: no event moves them, though a
//! Cancel still answers on the cancellation (`failed`, with a reason).
//! A cancel is a request: the worker sees it at its next step (`Advance`),
//! and the job ends in `error` "cancelled" with cancellation `completed`.
//! A job that fails on its own after a cancel was asked also ends the
//! cancellation `completed`: no capture was made, which is what was asked.
//!
//! Restart recovery: `queued` and `pending` resume (as `queued`): no pixel
//! was taken yet, so running them later is what the client would have got
//! from a busy host. `in-progress` and `uploading` end in `error` `"vmshot
//! restarted during <state>"`: a grab had begun, and a new one would be a
//! different picture under the same job, with possibly half-written media.
//! A job with a cancel requested ends cancelled instead of resuming.

use crate::store::{CancellationState, JobState, JobStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The worker finished a step: move to the next state.
    Advance,
    /// The capture failed.
    Fail(String),
    /// The client asked to cancel.
    Cancel,
    /// vmshot restarted and found the job unfinished. Recovery calls
    /// `recover` itself; the property tests drive restarts through `apply`.
    #[cfg_attr(not(test), allow(dead_code))]
    Restarted,
}

/// Why an event was refused; the status is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The job already ended in this state.
    Terminal(JobState),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Terminal(state) => write!(f, "the job has already ended ({state})"),
        }
    }
}

/// The reason a cancelled job gives.
pub(crate) const CANCELLED: &str = "cancelled";

/// The state moves the drawing shows, and no others (a move to the same
/// state, e.g. a cancel request, is not a state move).
#[cfg(test)]
pub(crate) const EDGES: &[(JobState, JobState)] = &[
    (JobState::Queued, JobState::Pending),
    (JobState::Pending, JobState::InProgress),
    (JobState::InProgress, JobState::Uploading),
    (JobState::Uploading, JobState::Complete),
    (JobState::Pending, JobState::Queued),
    (JobState::Queued, JobState::Error),
    (JobState::Pending, JobState::Error),
    (JobState::InProgress, JobState::Error),
    (JobState::Uploading, JobState::Error),
];

fn next_state(state: JobState) -> Option<JobState> {
    match state {
        JobState::Queued => Some(JobState::Pending),
        JobState::Pending => Some(JobState::InProgress),
        JobState::InProgress => Some(JobState::Uploading),
        JobState::Uploading => Some(JobState::Complete),
        JobState::Complete | JobState::Error => None,
    }
}

/// Ends a job in `error`, closing a pending cancellation.
fn ended(status: &JobStatus, reason: String) -> JobStatus {
    let cancellation = match status.cancellation {
        CancellationState::Requested => CancellationState::Completed,
        other => other,
    };
    JobStatus {
        state: JobState::Error,
        error_reason: Some(reason),
        cancellation,
        cancellation_error: status.cancellation_error.clone(),
    }
}

/// The status after `event`, or why it cannot happen.
pub(crate) fn apply(status: &JobStatus, event: &Event) -> Result<JobStatus, Refusal> {
    let state = status.state;
    match event {
        Event::Cancel => Ok(cancel(status)),
        _ if state.is_terminal() => Err(Refusal::Terminal(state)),
        Event::Advance if status.cancellation == CancellationState::Requested => {
            Ok(ended(status, CANCELLED.into()))
        }
        Event::Advance => {
            let next = next_state(state).ok_or(Refusal::Terminal(state))?;
            Ok(JobStatus {
                state: next,
                ..status.clone()
            })
        }
        Event::Fail(reason) => Ok(ended(status, reason.clone())),
        Event::Restarted => Ok(recover(status)),
    }
}

/// A cancel request: idempotent; on a finished job it fails with a reason.
fn cancel(status: &JobStatus) -> JobStatus {
    if status.cancellation != CancellationState::NotRequested {
        return status.clone();
    }
    let (cancellation, error) = match status.state {
        JobState::Complete => (
            CancellationState::Failed,
            Some("the capture is already complete".to_owned()),
        ),
        JobState::Error => (
            CancellationState::Failed,
            Some("the capture has already ended in error".to_owned()),
        ),
        _ => (CancellationState::Requested, None),
    };
    JobStatus {
        cancellation,
        cancellation_error: error,
        ..status.clone()
    }
}

/// What an unfinished job becomes when vmshot starts again (see the
/// module doc). Terminal jobs are left as they are.
pub(crate) fn recover(status: &JobStatus) -> JobStatus {
    match status.state {
        JobState::Complete | JobState::Error => status.clone(),
        _ if status.cancellation == CancellationState::Requested => ended(status, CANCELLED.into()),
        JobState::Queued | JobState::Pending => JobStatus {
            state: JobState::Queued,
            ..status.clone()
        },
        JobState::InProgress | JobState::Uploading => {
            ended(status, format!("vmshot restarted during {}", status.state))
        }
    }
}

/// Whether a job in this state is picked up again after a restart.
pub(crate) fn resumable(state: JobState) -> bool {
    state == JobState::Queued
}

/// The invariants every reachable status keeps.
#[cfg(test)]
pub(crate) fn valid(status: &JobStatus) -> bool {
    let error_iff = (status.state == JobState::Error) == status.error_reason.is_some();
    let cancellation = match status.cancellation {
        // Requested only while the job can still stop.
        CancellationState::Requested => !status.state.is_terminal(),
        // Completed only by ending the job.
        CancellationState::Completed => status.state == JobState::Error,
        CancellationState::NotRequested => status.cancellation_error.is_none(),
        CancellationState::Failed => status.cancellation_error.is_some(),
    };
    error_iff && cancellation
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => Just(Event::Advance),
            1 => "[a-z ]{0,12}".prop_map(Event::Fail),
            1 => Just(Event::Cancel),
            1 => Just(Event::Restarted),
        ]
    }

    #[test]
    fn the_happy_path_and_a_cancel() {
        let mut s = JobStatus::queued();
        for want in ["pending", "in-progress", "uploading", "complete"] {
            s = apply(&s, &Event::Advance).unwrap();
            assert_eq!(s.state.as_str(), want);
        }
        assert_eq!(
            apply(&s, &Event::Advance),
            Err(Refusal::Terminal(JobState::Complete))
        );
        let late = apply(&s, &Event::Cancel).unwrap();
        assert_eq!(late.state, JobState::Complete);
        assert_eq!(late.cancellation, CancellationState::Failed);

        let s = apply(&JobStatus::queued(), &Event::Advance).unwrap();
        let s = apply(&s, &Event::Cancel).unwrap();
        assert_eq!(s.cancellation, CancellationState::Requested);
        assert!(s.cancel());
        let s = apply(&s, &Event::Advance).unwrap();
        assert_eq!(s.state, JobState::Error);
        assert_eq!(s.error_reason.as_deref(), Some(CANCELLED));
        assert_eq!(s.cancellation, CancellationState::Completed);
    }

    #[test]
    fn recovery_per_state() {
        let at = |state| JobStatus {
            state,
            ..JobStatus::queued()
        };
        assert_eq!(recover(&at(JobState::Queued)).state, JobState::Queued);
        assert_eq!(recover(&at(JobState::Pending)).state, JobState::Queued);
        let r = recover(&at(JobState::InProgress));
        assert_eq!(r.state, JobState::Error);
        assert_eq!(
            r.error_reason.as_deref(),
            Some("vmshot restarted during in-progress")
        );
        assert_eq!(
            recover(&at(JobState::Uploading)).error_reason.as_deref(),
            Some("vmshot restarted during uploading")
        );
    }

    /// The machine driving the store, as the Oracle worker and restart
    /// recovery will: a cancel is an atomic rule, a worker's step a
    /// compare-and-set, recovery a rule over the unfinished jobs.
    #[tokio::test]
    async fn drives_the_store() {
        use crate::store::{NewJob, Store, StoreError, StoreSettings};
        let dir = std::env::temp_dir().join(format!("vmshot-machine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(StoreSettings::new(dir.join("vmshot.db")))
            .await
            .unwrap();
        let job = |name: &str| NewJob {
            name: name.into(),
            dialect: "oracle".into(),
            principal: "alice".into(),
            project: None,
            instance: "vm1".into(),
            domain_uuid: "d1".into(),
            request_id: format!("req-{name}"),
            creation_time: crate::store::now(),
            account: None,
        };
        fn step(s: &JobStatus, e: Event) -> Result<JobStatus, String> {
            apply(s, &e).map_err(|r| r.to_string())
        }

        for name in ["a", "b", "c"] {
            store.create_job(job(name)).await.unwrap();
        }
        // a: the worker takes it to in-progress.
        let mut a = JobStatus::queued();
        for _ in 0..2 {
            let next = step(&a, Event::Advance).unwrap();
            a = store.transition_job("a", a, next).await.unwrap().status;
        }
        // b: pending, then a cancel arrives while the worker holds an old copy.
        let seen = store
            .update_job("b", |s| step(s, Event::Advance))
            .await
            .unwrap();
        let cancelled = store
            .update_job("b", |s| step(s, Event::Cancel))
            .await
            .unwrap();
        assert_eq!(cancelled.status.cancellation, CancellationState::Requested);
        let stale = step(&seen.status, Event::Advance).unwrap();
        assert!(matches!(
            store.transition_job("b", seen.status, stale).await,
            Err(StoreError::Conflict { .. })
        ));

        // Restart: every unfinished job recovered.
        for j in store.unfinished_jobs().await.unwrap() {
            let after = store.update_job(&j.name, |s| Ok(recover(s))).await.unwrap();
            assert!(resumable(after.status.state) || after.status.state.is_terminal());
        }
        let get = |n: &'static str| {
            let store = store.clone();
            async move { store.get_job(n).await.unwrap().unwrap().status }
        };
        let a = get("a").await;
        assert_eq!(a.state, JobState::Error);
        assert_eq!(
            a.error_reason.as_deref(),
            Some("vmshot restarted during in-progress")
        );
        let b = get("b").await;
        assert_eq!(
            (b.state, b.cancellation),
            (JobState::Error, CancellationState::Completed)
        );
        assert_eq!(b.error_reason.as_deref(), Some(CANCELLED));
        assert_eq!(get("c").await, JobStatus::queued());
        let late = store.update_job("a", |s| step(s, Event::Advance)).await;
        assert!(matches!(late, Err(StoreError::Refused(r)) if r.contains("already ended")));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        /// Random event sequences from a new job: every status reached is
        /// valid, every state move is an edge of the drawing, and a terminal
        /// state never changes.
        #[test]
        fn sequences_stay_valid(events in proptest::collection::vec(event(), 0..40)) {
            let mut status = JobStatus::queued();
            prop_assert!(valid(&status));
            for e in &events {
                match apply(&status, e) {
                    Ok(next) => {
                        prop_assert!(valid(&next), "{status:?} --{e:?}--> {next:?}");
                        if next.state != status.state {
                            prop_assert!(
                                EDGES.contains(&(status.state, next.state)),
                                "{} -> {} is not drawn", status.state, next.state
                            );
                        }
                        if status.state.is_terminal() {
                            prop_assert_eq!(next.state, status.state);
                            prop_assert_eq!(&next.error_reason, &status.error_reason);
                        }
                        status = next;
                    }
                    Err(Refusal::Terminal(s)) => {
                        prop_assert!(s.is_terminal());
                        prop_assert_eq!(s, status.state);
                    }
                }
            }
        }

        /// Whatever state a job is found in after a restart, recovery leaves
        /// it resumable or terminal, and recovering twice changes nothing.
        #[test]
        fn recovery_ends_resumable_or_terminal(
            cancel in any::<bool>(),
            events in proptest::collection::vec(event(), 0..12),
        ) {
            // Reach a state through the machine, so the status is one that
            // can exist, then maybe ask for a cancel.
            let mut status = JobStatus::queued();
            for e in &events {
                if let Ok(next) = apply(&status, e) { status = next; }
            }
            if cancel { status = apply(&status, &Event::Cancel).unwrap(); }
            let r = recover(&status);
            prop_assert!(valid(&r));
            prop_assert!(resumable(r.state) || r.state.is_terminal(), "{r:?}");
            prop_assert_eq!(recover(&r), r.clone());
            if r.state != status.state {
                prop_assert!(EDGES.contains(&(status.state, r.state)));
            }
        }

        /// A cancel asked before `complete` always ends the job cancelled at
        /// the worker's next step; once complete, it fails.
        #[test]
        fn cancel_before_complete_wins(steps in 0usize..5) {
            let mut status = JobStatus::queued();
            for _ in 0..steps {
                status = apply(&status, &Event::Advance).unwrap();
            }
            let asked = apply(&status, &Event::Cancel).unwrap();
            if status.state == JobState::Complete {
                prop_assert_eq!(asked.cancellation, CancellationState::Failed);
            } else {
                let done = apply(&asked, &Event::Advance).unwrap();
                prop_assert_eq!(done.state, JobState::Error);
                prop_assert_eq!(done.error_reason.as_deref(), Some(CANCELLED));
                prop_assert_eq!(done.cancellation, CancellationState::Completed);
            }
        }
    }
}
