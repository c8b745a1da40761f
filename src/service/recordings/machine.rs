//! A recording's status, and the only moves it may make. Pure: the store
//! applies `apply` inside the transaction that writes the result.
//!
//! ```text
//!              stop, max duration, domain stopped,
//!              size limit, recovery after a crash (cut)
//!   RECORDING ─────────────────────────────────────► REC_COMPLETED ──upload──► UPLOADING ──done──► UPLOAD_COMPLETED
//!       │                                                                   ▲     │
//!       │ the encoder or the files failed                             retry │     │ failed
//!       ▼                                                                   │     ▼
//!   REC_FAILED                                                              └── UPLOAD_FAILED
//!
//!   (REC_COMPLETED goes straight to UPLOAD_FAILED when its upload is
//!   refused at submission: a file gone or changed.)
//! ```
//!
//! RECORDING is only ever the first status. REC_FAILED and UPLOAD_COMPLETED
//! are final. The upload moves belong to `ship` (which follows the uploads
//! service): this module only says which are allowed.

use super::Status;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The recording ended with its files closed and digested; `reason` says
    /// how if not by a stop.
    Complete {
        reason: Option<String>,
    },
    Fail(String),
    /// The uploads service took it (again).
    UploadStarted {
        upload_id: String,
    },
    UploadDone,
    UploadFailed(String),
}

/// A move the machine does not allow, in words a caller can be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the recording is {from}: it cannot {what}")]
pub struct Refusal {
    pub from: Status,
    pub what: &'static str,
}

/// The status after `event`, with the reason it carries (if any).
pub fn apply(from: Status, event: &Event) -> Result<(Status, Option<String>), Refusal> {
    use Status::*;
    let refuse = |what| Err(Refusal { from, what });
    match (from, event) {
        (Recording, Event::Complete { reason }) => Ok((RecCompleted, reason.clone())),
        (Recording, Event::Fail(reason)) => Ok((RecFailed, Some(reason.clone()))),
        (_, Event::Complete { .. }) => refuse("end: it is not recording"),
        (_, Event::Fail(_)) => refuse("fail: it is not recording"),
        (RecCompleted | UploadFailed, Event::UploadStarted { .. }) => Ok((Uploading, None)),
        (_, Event::UploadStarted { .. }) => refuse("be uploaded now"),
        (Uploading, Event::UploadDone) => Ok((UploadCompleted, None)),
        // From REC_COMPLETED too: an upload refused at its submission.
        (Uploading | RecCompleted, Event::UploadFailed(reason)) => {
            Ok((UploadFailed, Some(reason.clone())))
        }
        (_, Event::UploadDone | Event::UploadFailed(_)) => refuse("end an upload: none runs"),
    }
}

/// Whether a recording in `status` may be deleted: not while its files are
/// being written or read for an upload.
pub fn deletable(status: Status) -> bool {
    !matches!(status, Status::Recording | Status::Uploading)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Complete { reason: None }),
            Just(Event::Fail("disk".into())),
            Just(Event::UploadStarted {
                upload_id: "u".into()
            }),
            Just(Event::UploadDone),
            Just(Event::UploadFailed("s3".into())),
        ]
    }

    proptest! {
        /// Whatever happens: RECORDING is never re-entered, final statuses
        /// stay final, UPLOAD_COMPLETED is reached only from UPLOADING, and
        /// a failed status always carries its reason.
        #[test]
        fn any_sequence_keeps_the_rules(events in proptest::collection::vec(event(), 0..24)) {
            let mut status = Status::Recording;
            for e in &events {
                match apply(status, e) {
                    Ok((next, reason)) => {
                        prop_assert_ne!(next, Status::Recording);
                        prop_assert!(!matches!(status, Status::RecFailed | Status::UploadCompleted));
                        if next == Status::UploadCompleted {
                            prop_assert_eq!(status, Status::Uploading);
                        }
                        if matches!(next, Status::RecFailed | Status::UploadFailed) {
                            prop_assert!(reason.is_some());
                        }
                        status = next;
                    }
                    Err(refusal) => prop_assert_eq!(refusal.from, status),
                }
            }
        }
    }

    #[test]
    fn only_finished_recordings_are_deleted() {
        let deletable: Vec<_> = Status::ALL.iter().filter(|s| deletable(**s)).collect();
        assert_eq!(
            deletable,
            [
                &Status::RecCompleted,
                &Status::UploadCompleted,
                &Status::RecFailed,
                &Status::UploadFailed
            ]
        );
    }

    #[test]
    fn an_upload_refused_at_submission_fails_a_completed_recording() {
        let (status, reason) =
            apply(Status::RecCompleted, &Event::UploadFailed("gone".into())).unwrap();
        assert_eq!(
            (status, reason.as_deref()),
            (Status::UploadFailed, Some("gone"))
        );
        assert!(apply(Status::RecCompleted, &Event::UploadDone).is_err());
    }

    #[test]
    fn a_stop_after_the_end_is_refused_in_words() {
        let e = apply(Status::RecCompleted, &Event::Complete { reason: None }).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the recording is REC_COMPLETED: it cannot end: it is not recording"
        );
    }
}
