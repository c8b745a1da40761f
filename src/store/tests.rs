use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use time::macros::datetime;
use time::OffsetDateTime;

use super::*;

/// A fresh directory under the system temp dir, unique to this test run.
fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vmshot-store-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn settings(dir: &Path) -> StoreSettings {
    StoreSettings::new(dir.join("vmshot.db"))
}

/// Opens again once the previous handle's thread has let go of the lock.
async fn reopen(settings: StoreSettings) -> Result<Store, StoreError> {
    for _ in 0..100 {
        match Store::open(settings.clone()).await {
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
    Store::open(settings).await
}

fn new_job(name: &str, principal: &str, created: OffsetDateTime) -> NewJob {
    NewJob {
        name: name.into(),
        dialect: "oracle".into(),
        principal: principal.into(),
        project: Some("acme".into()),
        instance: format!("/Compute-acme/{principal}/vm1"),
        domain_uuid: "b48316c5-71e8-45e4-9884-6c78055b9b13".into(),
        request_id: format!("req-{name}"),
        creation_time: created,
        account: None,
    }
}

fn status(state: JobState) -> JobStatus {
    JobStatus {
        state,
        ..JobStatus::queued()
    }
}

#[tokio::test]
async fn jobs_round_trip() {
    let dir = temp_dir("jobs");
    let store = Store::open(settings(&dir)).await.unwrap();
    let t0 = datetime!(2024-05-01 10:00:00.123456 UTC);

    let job = store
        .create_job(new_job("/Compute-acme/alice/a1", "alice", t0))
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::queued());
    assert_eq!(job.creation_time, t0);
    assert!(!job.status.cancel());
    assert!(matches!(
        store
            .create_job(new_job("/Compute-acme/alice/a1", "alice", t0))
            .await,
        Err(StoreError::Exists { .. })
    ));
    for name in [
        "/Compute-acme/alice/a2",
        "/Compute-acme/alice/a3",
        "/Compute-acme/bob/b1",
    ] {
        let who = name.split('/').nth(2).unwrap();
        store.create_job(new_job(name, who, t0)).await.unwrap();
    }
    assert_eq!(
        store.get_job("/Compute-acme/alice/a1").await.unwrap(),
        Some(job.clone())
    );
    assert_eq!(store.get_job("nope").await.unwrap(), None);

    // Listing: by owner and prefix, in pages.
    let page = |after: Option<&str>| JobFilter {
        dialect: Some("oracle".into()),
        principal: Some("alice".into()),
        name_prefix: Some("/Compute-acme/alice/".into()),
        after: after.map(Into::into),
        limit: 2,
        ..JobFilter::default()
    };
    let first = store.list_jobs(page(None)).await.unwrap();
    let names: Vec<_> = first.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["/Compute-acme/alice/a1", "/Compute-acme/alice/a2"]);
    let second = store.list_jobs(page(Some(names[1]))).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].name, "/Compute-acme/alice/a3");
    let bob = JobFilter {
        principal: Some("bob".into()),
        ..JobFilter::default()
    };
    assert_eq!(store.list_jobs(bob).await.unwrap().len(), 1);
    let literal = JobFilter {
        name_prefix: Some("/Compute-acme/%".into()),
        ..JobFilter::default()
    };
    assert!(
        store.list_jobs(literal).await.unwrap().is_empty(),
        "% is not a wildcard"
    );

    // Compare-and-set: of two writers expecting `queued`, one wins.
    let name = "/Compute-acme/alice/a1";
    let won = store
        .transition_job(name, JobStatus::queued(), status(JobState::Pending))
        .await
        .unwrap();
    assert_eq!(won.status.state, JobState::Pending);
    assert!(won.updated_at >= won.creation_time);
    match store
        .transition_job(name, JobStatus::queued(), status(JobState::Error))
        .await
    {
        Err(StoreError::Conflict { current, .. }) => assert!(current.starts_with("pending")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .transition_job("nope", JobStatus::queued(), status(JobState::Pending))
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // A cancel request through a rule, atomically; a refusal changes nothing.
    let cancelled = store
        .update_job(name, |s| {
            Ok(JobStatus {
                cancellation: CancellationState::Requested,
                ..s.clone()
            })
        })
        .await
        .unwrap();
    assert!(cancelled.status.cancel());
    assert!(matches!(
        store.update_job(name, |_| Err("no".into())).await,
        Err(StoreError::Refused(r)) if r == "no"
    ));
    // The worker's CAS still expecting `not_requested` loses to the cancel.
    assert!(matches!(
        store
            .transition_job(
                name,
                status(JobState::Pending),
                status(JobState::InProgress)
            )
            .await,
        Err(StoreError::Conflict { .. })
    ));

    // Media: on disk, hashed, then gone with the job.
    let bytes = b"\xff\xd8 not really a jpeg \xff\xd9".to_vec();
    let with_media = store
        .set_job_media(
            name,
            bytes.clone(),
            "jpg",
            Some("https://h/m/1".into()),
            None,
        )
        .await
        .unwrap();
    let path = with_media.media_path.clone().unwrap();
    assert!(path.starts_with(&settings(&dir).media_dir));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(
        with_media.media_sha256.unwrap(),
        hex::encode(Sha256::digest(&bytes))
    );
    assert_eq!(with_media.media_bytes, Some(bytes.len() as u64));
    assert_eq!(with_media.media_uri.as_deref(), Some("https://h/m/1"));

    let unfinished = store.unfinished_jobs().await.unwrap();
    assert_eq!(unfinished.len(), 4);
    store
        .transition_job(
            "/Compute-acme/bob/b1",
            JobStatus::queued(),
            status(JobState::Complete),
        )
        .await
        .unwrap();
    assert_eq!(store.unfinished_jobs().await.unwrap().len(), 3);

    assert!(store.delete_job(name).await.unwrap());
    assert!(!path.exists(), "media goes with its job");
    assert!(!store.delete_job(name).await.unwrap());
    assert_eq!(store.get_job(name).await.unwrap(), None);

    // Everything above was committed: it is there after a reopen.
    drop(store);
    let store = reopen(settings(&dir)).await.unwrap();
    assert_eq!(
        store.list_jobs(JobFilter::default()).await.unwrap().len(),
        3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn actions_round_trip_and_nova_paging() {
    let dir = temp_dir("actions");
    let store = Store::open(settings(&dir)).await.unwrap();
    let vm = "aef82e69-0b3e-4056-b1b6-c37d5a278183";
    let base = datetime!(2024-05-01 10:00:00 UTC);
    let at = |s: i64| base + time::Duration::seconds(s);
    for i in 0..5 {
        store
            .start_action(NewAction {
                request_id: format!("req-{i}"),
                instance_uuid: vm.into(),
                project_id: Some("p1".into()),
                user_id: Some("u1".into()),
                action: "vmshot_capture".into(),
                message: None,
                start_time: at(i * 10),
            })
            .await
            .unwrap();
    }
    let dup = NewAction {
        request_id: "req-0".into(),
        instance_uuid: vm.into(),
        project_id: None,
        user_id: None,
        action: "vmshot_capture".into(),
        message: None,
        start_time: at(0),
    };
    assert!(matches!(
        store.start_action(dup).await,
        Err(StoreError::Exists { .. })
    ));

    // Events of req-3: grab succeeds, encode fails.
    store
        .start_event(vm, "req-3", "vmshot_grab", at(31), Some("host1".into()))
        .await
        .unwrap();
    store
        .finish_event(
            vm,
            "req-3",
            "vmshot_grab",
            at(32),
            EventResult::Success,
            None,
            None,
        )
        .await
        .unwrap();
    store
        .start_event(vm, "req-3", "vmshot_encode", at(33), Some("host1".into()))
        .await
        .unwrap();
    store
        .finish_event(
            vm,
            "req-3",
            "vmshot_encode",
            at(34),
            EventResult::Error,
            Some("Traceback: bad frame".into()),
            Some("decode failed".into()),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .start_event(vm, "req-3", "vmshot_grab", at(35), None)
            .await,
        Err(StoreError::Exists { .. })
    ));
    assert!(matches!(
        store
            .start_event(vm, "req-9", "vmshot_grab", at(35), None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .finish_event(
                vm,
                "req-3",
                "vmshot_store",
                at(35),
                EventResult::Success,
                None,
                None
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));

    let action = store.get_action(vm, "req-3").await.unwrap().unwrap();
    assert_eq!(action.action, "vmshot_capture");
    assert_eq!(action.message.as_deref(), Some("Error"));
    assert_eq!(action.start_time, at(30));
    assert_eq!(action.updated_at, at(34));
    let events: Vec<_> = action.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["vmshot_grab", "vmshot_encode"]);
    assert_eq!(action.events[0].result, Some(EventResult::Success));
    assert_eq!(action.events[0].host.as_deref(), Some("host1"));
    assert_eq!(action.events[1].finish_time, Some(at(34)));
    assert_eq!(action.events[1].result, Some(EventResult::Error));
    assert_eq!(
        action.events[1].traceback.as_deref(),
        Some("Traceback: bad frame")
    );
    assert_eq!(action.events[1].details.as_deref(), Some("decode failed"));
    assert_eq!(store.get_action(vm, "req-9").await.unwrap(), None);
    assert_eq!(store.get_action("other-vm", "req-3").await.unwrap(), None);

    let ids = |v: Vec<Action>| v.into_iter().map(|a| a.request_id).collect::<Vec<_>>();
    let all = store.list_actions(vm, ActionPage::default()).await.unwrap();
    assert!(all.iter().all(|a| a.events.is_empty()));
    assert_eq!(ids(all), ["req-4", "req-3", "req-2", "req-1", "req-0"]);
    let page = |limit, marker: Option<&str>| ActionPage {
        limit,
        marker: marker.map(Into::into),
        ..ActionPage::default()
    };
    assert_eq!(
        ids(store.list_actions(vm, page(Some(2), None)).await.unwrap()),
        ["req-4", "req-3"]
    );
    assert_eq!(
        ids(store
            .list_actions(vm, page(Some(2), Some("req-3")))
            .await
            .unwrap()),
        ["req-2", "req-1"]
    );
    assert_eq!(
        ids(store
            .list_actions(vm, page(None, Some("req-1")))
            .await
            .unwrap()),
        ["req-0"]
    );
    assert!(matches!(
        store.list_actions(vm, page(None, Some("req-9"))).await,
        Err(StoreError::MarkerNotFound(m)) if m == "req-9"
    ));
    // changes-since / changes-before bound updated_at, both inclusive
    // (req-3 was updated at +34 by its events).
    let window = ActionPage {
        changes_since: Some(at(20)),
        changes_before: Some(at(34)),
        ..ActionPage::default()
    };
    assert_eq!(
        ids(store.list_actions(vm, window).await.unwrap()),
        ["req-3", "req-2"]
    );
    assert!(store
        .list_actions("other-vm", ActionPage::default())
        .await
        .unwrap()
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_later_stage_is_appended_to_a_recorded_action() {
    let dir = temp_dir("append");
    let store = Store::open(settings(&dir)).await.unwrap();
    let vm = "0c5a6e12-4a1b-4c1e-9a0e-000000000001";
    let at = |s: i64| datetime!(2024-05-01 10:00:00 UTC) + time::Duration::seconds(s);
    let event = |name: &str, start: i64, result| ActionEvent {
        event: name.into(),
        start_time: at(start),
        finish_time: Some(at(start + 1)),
        result: Some(result),
        traceback: None,
        details: Some(format!("{name} details")),
        host: Some("host1".into()),
    };
    let new = |id: &str| NewAction {
        request_id: id.into(),
        instance_uuid: vm.into(),
        project_id: Some("p1".into()),
        user_id: Some("u1".into()),
        action: "vmshot_capture".into(),
        message: None,
        start_time: at(0),
    };
    for id in ["req-ok", "req-bad"] {
        store
            .record_action(new(id), vec![event("vmshot_grab", 0, EventResult::Success)])
            .await
            .unwrap();
    }
    store
        .append_event(vm, "req-ok", event("vmshot_store", 5, EventResult::Success))
        .await
        .unwrap();
    store
        .append_event(vm, "req-bad", event("vmshot_store", 7, EventResult::Error))
        .await
        .unwrap();
    let ok = store.get_action(vm, "req-ok").await.unwrap().unwrap();
    let names: Vec<&str> = ok.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["vmshot_grab", "vmshot_store"]);
    assert_eq!((ok.updated_at, ok.message), (at(6), None));
    let bad = store.get_action(vm, "req-bad").await.unwrap().unwrap();
    assert_eq!(bad.message.as_deref(), Some("Error"));
    assert_eq!(bad.events[1].result, Some(EventResult::Error));
    // Once per event, and only on an action that is there.
    assert!(matches!(
        store
            .append_event(vm, "req-ok", event("vmshot_store", 9, EventResult::Success))
            .await,
        Err(StoreError::Exists { .. })
    ));
    assert!(matches!(
        store
            .append_event(
                vm,
                "req-none",
                event("vmshot_store", 9, EventResult::Success)
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn nonces_and_slots_skip_the_fsync_and_everything_else_keeps_it() {
    let dir = temp_dir("unsynced");
    let store = Store::open(settings(&dir)).await.unwrap();
    let synchronous = || {
        store.call(|db| {
            Ok(db
                .conn
                .pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?)
        })
    };
    let now = OffsetDateTime::now_utc();
    let started = std::time::Instant::now();
    for i in 0..200 {
        let later = now + time::Duration::minutes(5);
        assert!(store
            .insert_nonce_if_absent("alibaba", &format!("k/{i}"), now, later)
            .await
            .unwrap());
    }
    eprintln!("200 nonces in {:?}", started.elapsed());
    // FULL (2) again for the writes that must be on disk when acknowledged.
    assert_eq!(synchronous().await.unwrap(), 2);
    let interval = Duration::from_secs(60);
    store
        .take_throttle_slot("r", "d", now, interval)
        .await
        .unwrap();
    store
        .release_throttle_slot("r", "d", now, interval)
        .await
        .unwrap();
    assert_eq!(synchronous().await.unwrap(), 2);
}

#[tokio::test]
async fn a_batch_of_actions_is_recorded_all_or_none() {
    let dir = temp_dir("batch");
    let store = Store::open(settings(&dir)).await.unwrap();
    let vm = "aef82e69-0b3e-4056-b1b6-c37d5a278183";
    let base = datetime!(2024-05-01 10:00:00 UTC);
    let at = |ms: i64| base + time::Duration::milliseconds(ms);
    let action = |i: i64, result: EventResult| {
        let new = NewAction {
            request_id: format!("req-{i}"),
            instance_uuid: vm.into(),
            project_id: None,
            user_id: Some("u1".into()),
            action: "vmshot_capture".into(),
            message: None,
            start_time: at(i * 1000),
        };
        let event = |name: &str, from: i64, to: i64| ActionEvent {
            event: name.into(),
            start_time: at(i * 1000 + from),
            finish_time: Some(at(i * 1000 + to)),
            result: Some(result),
            traceback: None,
            details: None,
            host: Some("host1".into()),
        };
        (
            new,
            vec![event("vmshot_grab", 0, 30), event("vmshot_encode", 30, 33)],
        )
    };
    store
        .record_actions((0..3).map(|i| action(i, EventResult::Success)).collect())
        .await
        .unwrap();
    // One already there: the whole batch is refused, req-3 included.
    assert!(matches!(
        store
            .record_actions(vec![
                action(3, EventResult::Success),
                action(1, EventResult::Success)
            ])
            .await,
        Err(StoreError::Exists { kind: "action", .. })
    ));
    store
        .record_actions(vec![action(3, EventResult::Error)])
        .await
        .unwrap();
    let ids = |v: Vec<Action>| v.into_iter().map(|a| a.request_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_actions(vm, ActionPage::default()).await.unwrap()),
        ["req-3", "req-2", "req-1", "req-0"]
    );
    let one = store.get_action(vm, "req-1").await.unwrap().unwrap();
    assert_eq!((one.updated_at, one.message), (at(1033), None));
    assert_eq!(
        one.events
            .iter()
            .map(|e| e.event.as_str())
            .collect::<Vec<_>>(),
        ["vmshot_grab", "vmshot_encode"]
    );
    let failed = store.get_action(vm, "req-3").await.unwrap().unwrap();
    assert_eq!(failed.message.as_deref(), Some("Error"));
    // changes-since either way: few changed (sorted from the index of
    // changes) or enough to fill the page (walked newest first), alike.
    let since = |limit, marker: Option<&str>| ActionPage {
        limit,
        marker: marker.map(str::to_owned),
        changes_since: Some(at(1000)),
        changes_before: None,
    };
    for (page, want) in [
        (since(None, None), &["req-3", "req-2", "req-1"][..]),
        (since(Some(2), None), &["req-3", "req-2"]),
        (since(Some(2), Some("req-3")), &["req-2", "req-1"]),
        (since(None, Some("req-2")), &["req-1"]),
    ] {
        let got = ids(store.list_actions(vm, page.clone()).await.unwrap());
        assert_eq!(got, want, "{page:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn nonces_and_throttle_slots_survive_a_reopen() {
    let dir = temp_dir("limits");
    let store = Store::open(settings(&dir)).await.unwrap();
    let t = datetime!(2024-05-01 10:00:00 UTC);
    let min = time::Duration::minutes(1);
    assert!(store
        .insert_nonce_if_absent("aws", "n1", t, t + min)
        .await
        .unwrap());
    assert!(!store
        .insert_nonce_if_absent("aws", "n1", t, t + min)
        .await
        .unwrap());
    assert!(store
        .insert_nonce_if_absent("alibaba", "n1", t, t + min)
        .await
        .unwrap());

    let interval = Duration::from_secs(60);
    assert_eq!(
        store
            .take_throttle_slot("oracle", "d1", t, interval)
            .await
            .unwrap(),
        Slot::Taken
    );
    assert_eq!(
        store
            .take_throttle_slot("oracle", "d2", t, interval)
            .await
            .unwrap(),
        Slot::Taken
    );
    drop(store);

    let store = reopen(settings(&dir)).await.unwrap();
    assert!(!store
        .insert_nonce_if_absent("aws", "n1", t + min / 2, t + min * 2)
        .await
        .unwrap());
    assert!(
        store
            .insert_nonce_if_absent("aws", "n1", t + min, t + min * 2)
            .await
            .unwrap(),
        "an expired nonce is fresh again"
    );
    assert_eq!(
        store
            .take_throttle_slot("oracle", "d1", t + min / 2, interval)
            .await
            .unwrap(),
        Slot::Busy {
            next_allowed: t + min
        }
    );
    // A failed capture gives its slot back.
    store
        .release_throttle_slot("oracle", "d2", t, interval)
        .await
        .unwrap();
    assert_eq!(
        store
            .take_throttle_slot("oracle", "d2", t + min / 2, interval)
            .await
            .unwrap(),
        Slot::Taken
    );
    assert_eq!(
        store
            .take_throttle_slot("oracle", "d1", t + min, interval)
            .await
            .unwrap(),
        Slot::Taken
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retention_keeps_at_most_max_actions_newest_first() {
    let dir = temp_dir("retain-actions");
    let mut s = settings(&dir);
    s.max_actions = 3;
    let store = Store::open(s).await.unwrap();
    let t0 = OffsetDateTime::now_utc() - time::Duration::hours(1);
    for i in 0..5i64 {
        let start = t0 + time::Duration::seconds(i);
        let grab = ActionEvent {
            event: "vmshot_grab".into(),
            start_time: start,
            finish_time: Some(start),
            result: Some(EventResult::Success),
            traceback: None,
            details: None,
            host: None,
        };
        let new = NewAction {
            request_id: format!("req-{i}"),
            instance_uuid: format!("vm-{}", i % 2),
            project_id: None,
            user_id: None,
            action: "vmshot_capture".into(),
            message: None,
            start_time: start,
        };
        store.record_action(new, vec![grab]).await.unwrap();
    }
    let r = store.retain().await.unwrap();
    assert_eq!(r.actions_removed, 2);
    let mut left = Vec::new();
    for vm in ["vm-0", "vm-1"] {
        for a in store.list_actions(vm, ActionPage::default()).await.unwrap() {
            left.push(a.request_id);
        }
    }
    left.sort();
    assert_eq!(left, ["req-2", "req-3", "req-4"]);
    // Their events went with them.
    let events: i64 = store
        .call(|db| {
            Ok(db
                .conn
                .query_row("SELECT count(*) FROM action_events", [], |r| r.get(0))?)
        })
        .await
        .unwrap();
    assert_eq!(events, 3);
}

#[tokio::test]
async fn retention_keeps_the_byte_budget_oldest_first() {
    let dir = temp_dir("retain");
    let mut s = settings(&dir);
    s.max_media_bytes = 1000;
    s.max_age = Duration::from_secs(24 * 3600);
    let store = Store::open(s.clone()).await.unwrap();
    let t0 = datetime!(2024-05-01 00:00:00 UTC);
    let now = t0 + time::Duration::hours(30);
    let mut paths = Vec::new();
    for i in 0..10i64 {
        let name = format!("job-{i:02}");
        store
            .create_job(new_job(&name, "alice", t0 + time::Duration::hours(i * 2)))
            .await
            .unwrap();
        let job = store
            .set_job_media(&name, vec![i as u8; 300], "jpg", None, None)
            .await
            .unwrap();
        paths.push(job.media_path.unwrap());
        // job-09 stays unfinished: never removed, whatever its age or size.
        if i != 9 {
            store
                .transition_job(&name, JobStatus::queued(), status(JobState::Complete))
                .await
                .unwrap();
        }
    }
    // An orphan file (as a crash between file and row would leave).
    let orphan = s.media_dir.join("job-999.jpg");
    std::fs::write(&orphan, b"orphan").unwrap();

    let r = store.retain_at(now).await.unwrap();
    // Age: job-00..02 (0, 2, 4 h) are older than 24 h before `now` (6 h).
    // Budget: 1000 bytes leaves three 300-byte files: job-07, 08 and 09.
    let left: Vec<_> = store
        .list_jobs(JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(left, ["job-07", "job-08", "job-09"]);
    assert_eq!(r.jobs_removed, 7);
    assert_eq!(r.media_bytes_kept, 900);
    assert!(r.media_bytes_kept <= s.max_media_bytes);
    assert_eq!(r.media_bytes_freed, 2100);
    assert_eq!(r.orphans_removed, 1);
    assert!(!orphan.exists());
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(p.exists(), i >= 7, "{}", p.display());
    }
    let on_disk: u64 = std::fs::read_dir(&s.media_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk <= s.max_media_bytes, "{on_disk} bytes on disk");

    // Much later: the finished ones age out; the unfinished one stays.
    let r = store
        .retain_at(now + time::Duration::days(30))
        .await
        .unwrap();
    assert_eq!(r.jobs_removed, 2);
    let left = store.list_jobs(JobFilter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "job-09");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_corrupt_file_is_refused_by_name() {
    let dir = temp_dir("corrupt");
    let s = settings(&dir);
    std::fs::write(&s.path, vec![0x5a; 8192]).unwrap();
    match Store::open(s.clone()).await {
        Err(e @ StoreError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("corrupt or not a database"), "{msg}");
            assert!(msg.contains("vmshot.db"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(&s.path).unwrap(),
        vec![0x5a; 8192],
        "left as it was"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_damaged_database_fails_the_quick_check() {
    let dir = temp_dir("damaged");
    let s = settings(&dir);
    let store = Store::open(s.clone()).await.unwrap();
    for i in 0..200 {
        store
            .create_job(new_job(
                &format!("job-{i:04}"),
                "alice",
                datetime!(2024-05-01 0:00 UTC),
            ))
            .await
            .unwrap();
    }
    drop(store);
    let store = reopen(s.clone()).await.unwrap();
    drop(store);
    // Wait for the lock to go, then fold the WAL into the file, so the
    // damage below is in the pages SQLite reads.
    let store = reopen(s.clone()).await.unwrap();
    store
        .call(|db| Ok(db.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?))
        .await
        .unwrap();
    drop(store);
    let _ = reopen(s.clone()).await.map(drop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Scribble over the pages after the first (the schema page), where the
    // jobs table and its indexes live.
    let mut bytes = std::fs::read(&s.path).unwrap();
    assert!(bytes.len() > 4096 * 3);
    for b in &mut bytes[4096 * 2..4096 * 3] {
        *b = 0xa5;
    }
    std::fs::write(&s.path, bytes).unwrap();
    match reopen(s).await {
        Err(StoreError::Corrupt { detail, .. }) => assert!(!detail.is_empty()),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn read_only_file_or_directory_is_refused() {
    let dir = temp_dir("readonly");
    let s = settings(&dir);
    drop(Store::open(s.clone()).await.unwrap());
    let store = reopen(s.clone()).await.unwrap();
    drop(store);
    tokio::time::sleep(Duration::from_millis(100)).await;

    std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let file = reopen(s.clone()).await;
    std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    match file {
        Err(e @ StoreError::ReadOnly { .. }) => {
            assert!(e.to_string().contains("read-only"), "{e}");
            assert!(e.to_string().contains("database file"), "{e}");
        }
        other => panic!("{other:?}"),
    }

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let in_dir = reopen(s.clone()).await;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    match in_dir {
        Err(e @ StoreError::ReadOnly { .. }) => assert!(e.to_string().contains("directory"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(reopen(s).await.is_ok(), "writable again");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = temp_dir("newer");
    let s = settings(&dir);
    drop(Store::open(s.clone()).await.unwrap());
    // Wait for the thread to let the lock go, then stamp a future version.
    drop(reopen(s.clone()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let conn = rusqlite::Connection::open(&s.path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    match reopen(s).await {
        Err(e @ StoreError::NewerSchema { found: 99, .. }) => {
            assert!(e.to_string().contains("newer schema"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_second_open_is_refused_while_the_first_holds_it() {
    let dir = temp_dir("locked");
    let s = settings(&dir);
    let first = Store::open(s.clone()).await.unwrap();
    match Store::open(s.clone()).await {
        Err(e @ StoreError::Locked { .. }) => assert!(e.to_string().contains("locked"), "{e}"),
        other => panic!("{other:?}"),
    }
    first.get_job("x").await.unwrap();
    drop(first);
    assert!(reopen(s).await.is_ok(), "free once the first is gone");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_slow_call_times_out() {
    let dir = temp_dir("timeout");
    let mut s = settings(&dir);
    s.call_timeout = Duration::from_millis(50);
    let store = Store::open(s).await.unwrap();
    let slow = store
        .call(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
        .await;
    assert!(matches!(slow, Err(StoreError::Timeout(_))), "{slow:?}");
    // The thread is not lost: once the slow call ends, calls run again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    store.sync().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

const KILL_ENV: &str = "VMSHOT_STORE_KILL_DIR";

/// The child of `acknowledged_writes_survive_kill_9`: writes jobs and their
/// media, printing each one's number once its call has returned, until it is
/// killed. Ignored unless the parent runs it.
#[tokio::test]
#[ignore = "run by acknowledged_writes_survive_kill_9 in a child process"]
async fn kill_child() {
    let Some(dir) = std::env::var_os(KILL_ENV) else {
        return;
    };
    let store = Store::open(settings(Path::new(&dir))).await.unwrap();
    let t = datetime!(2024-05-01 0:00 UTC);
    for i in 0..100_000u32 {
        let name = format!("job-{i:06}");
        store.create_job(new_job(&name, "alice", t)).await.unwrap();
        store
            .set_job_media(&name, i.to_le_bytes().repeat(64), "jpg", None, None)
            .await
            .unwrap();
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = temp_dir("kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::kill_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(KILL_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Option<u32> = None;
    while acked.is_none_or(|n| n < 40) {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = Some(n.parse().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Whatever it printed before dying was acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("acked ") {
            acked = Some(n.parse().unwrap());
        }
    }
    let acked = acked.unwrap();

    let store = reopen(settings(&dir)).await.unwrap();
    for i in 0..=acked {
        let job = store
            .get_job(&format!("job-{i:06}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged job {i} lost"));
        let media = std::fs::read(job.media_path.unwrap()).unwrap();
        assert_eq!(media, i.to_le_bytes().repeat(64), "job {i}'s media");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One transaction far larger than usual (the hourly retention's, on a busy
/// host) does not leave the WAL file that large: the next write after its
/// checkpoint cuts it back to `WAL_SIZE_LIMIT` (the load soak's WAL line).
#[tokio::test]
async fn a_large_transaction_does_not_leave_the_wal_large() {
    let dir = temp_dir("wal-limit");
    let store = Store::open(settings(&dir)).await.unwrap();
    let wal = dir.join("vmshot.db-wal");
    store
        .call(|db| {
            Ok(db.conn.execute_batch(
                "CREATE TABLE big (x BLOB); \
                 WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 24000) \
                 INSERT INTO big SELECT randomblob(1000) FROM c;",
            )?)
        })
        .await
        .unwrap();
    let peak = std::fs::metadata(&wal).unwrap().len();
    assert!(
        peak > 2 * open::WAL_SIZE_LIMIT,
        "the test's transaction was small: {peak}"
    );
    // Its commit checkpointed; the next writer starts the log over.
    store
        .call(|db| Ok(db.conn.execute_batch("DELETE FROM big;")?))
        .await
        .unwrap();
    store
        .call(|db| Ok(db.conn.execute_batch("INSERT INTO big VALUES (1);")?))
        .await
        .unwrap();
    let after = std::fs::metadata(&wal).unwrap().len();
    assert!(
        after <= open::WAL_SIZE_LIMIT,
        "the WAL stayed at {after} bytes (peak {peak})"
    );
}

/// A busy host's hour of expired nonces and actions beyond the cap goes in
/// batches: a capture's store call waits for one batch, not for the whole
/// pass (the load soak's hourly stall, p99 3.8 s). The oldest actions go by
/// start time, which here runs against their ids.
#[tokio::test]
async fn retention_removes_in_batches_that_let_other_calls_through() {
    let dir = temp_dir("retain-batches");
    let mut s = settings(&dir);
    s.max_actions = 1_000;
    let store = Store::open(s).await.unwrap();
    let now = to_micros(OffsetDateTime::now_utc());
    let (past, future) = (now - 1_000_000, now + 3_600_000_000);
    store
        .call(move |db| {
            Ok(db.conn.execute_batch(&format!(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 80000) \
                 INSERT INTO nonces SELECT 'alibaba', hex(randomblob(16)), \
                 CASE WHEN i % 4 = 0 THEN {future} ELSE {past} END FROM c; \
                 WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 21000) \
                 INSERT INTO actions (id, request_id, instance_uuid, action, start_time, updated_at) \
                 SELECT i, 'req-' || i, 'vm-' || (i % 7), 'vmshot_capture', {now} - i, {now} FROM c; \
                 INSERT INTO action_events (action_id, event, start_time) \
                 SELECT id, 'vmshot_grab', start_time FROM actions;"
            ))?)
        })
        .await
        .unwrap();

    let pass = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let retained = store.retain().await.unwrap();
            (retained, started.elapsed())
        })
    };
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !pass.is_finished() {
        let asked = Instant::now();
        store
            .call(|db| Ok(db.conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        slowest = slowest.max(asked.elapsed());
        probes += 1;
    }
    let (retained, took) = pass.await.unwrap();
    assert_eq!(retained.nonces_removed, 60_000);
    assert_eq!(retained.actions_removed, 20_000);
    assert!(
        slowest * 4 < took && probes > 4,
        "a call waited {slowest:?} of the pass's {took:?} ({probes} calls)"
    );

    let (nonces, live, first, last, events): (i64, i64, i64, i64, i64) = store
        .call(move |db| {
            Ok(db.conn.query_row(
                &format!(
                    "SELECT (SELECT count(*) FROM nonces), \
                     (SELECT count(*) FROM nonces WHERE expires_at = {future}), \
                     (SELECT min(id) FROM actions), (SELECT max(id) FROM actions), \
                     (SELECT count(*) FROM action_events)"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!((nonces, live), (20_000, 20_000));
    // The newest by start time are the lowest ids here.
    assert_eq!((first, last, events), (1, 1_000, 1_000));
    let _ = std::fs::remove_dir_all(&dir);
}
