//! The durable store under the real daemon: every screenshot is recorded as
//! an instance action with its events before the answer goes out, so the
//! record survives `kill -9`; and a store vmshot cannot trust stops the start,
//! saying why.

mod common;

use common::daemon::{Daemon, KEY_ID, SECRET};
use common::fixtures::{self, PATTERN};
use common::host::LibvirtdLock;
use common::http::send;
use common::signing::signed_query;

#[test]
fn a_screenshot_is_recorded_before_its_answer_and_survives_kill_9() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let mut d = Daemon::start(
        &format!(
            "[alibaba.instances]\n\"i-recorded\" = \"{}\"\n",
            PATTERN.domain()
        ),
        "",
    );
    let query = signed_query(
        "GET",
        KEY_ID,
        SECRET,
        &[
            ("Action", "GetInstanceScreenshot"),
            ("RegionId", "cn-test"),
            ("InstanceId", "i-recorded"),
            ("Format", "JSON"),
        ],
    );
    let reply = send(d.addr, "GET", &format!("/?{query}"), &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let request_id = reply.json()["RequestId"].as_str().unwrap().to_owned();
    let sha256 = reply.header("x-vmshot-sha256").unwrap().to_owned();
    // Nothing runs after the answer: what was recorded was committed before it.
    d.kill_9();

    let db = rusqlite::Connection::open_with_flags(
        d.dir.join("vmshot.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (uuid, user, action): (String, String, String) = db
        .query_row(
            "SELECT instance_uuid, user_id, action FROM actions WHERE request_id = ?1",
            [&request_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the screenshot's action is in the store");
    let libvirt_uuid = common::host::virsh(&["domuuid", &PATTERN.domain()]);
    assert_eq!(uuid, libvirt_uuid.trim());
    assert_eq!((user.as_str(), action.as_str()), (KEY_ID, "vmshot_capture"));
    let mut events = db
        .prepare(
            "SELECT e.event, e.result, e.details FROM action_events e JOIN actions a \
             ON a.id = e.action_id WHERE a.request_id = ?1 ORDER BY e.start_time, e.id",
        )
        .unwrap();
    let events: Vec<(String, String, Option<String>)> = events
        .query_map([&request_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let names: Vec<_> = events
        .iter()
        .map(|(e, r, _)| (e.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        names,
        [("vmshot_grab", "Success"), ("vmshot_encode", "Success")]
    );
    // The record names the very image the caller got.
    assert!(
        events[1].2.as_deref().unwrap().contains(&sha256),
        "{events:?}"
    );
}

#[test]
fn a_store_vmshot_cannot_trust_stops_the_start_with_its_reason() {
    let _lock = LibvirtdLock::shared();
    let dir = common::fixtures::tempdir();
    let cases = [
        ("corrupt", "corrupt or not a database"),
        ("newer", "newer schema"),
    ];
    for (case, reason) in cases {
        let path = dir.join(format!("{case}.db"));
        match case {
            "corrupt" => std::fs::write(&path, vec![0x5a; 8192]).unwrap(),
            _ => {
                let db = rusqlite::Connection::open(&path).unwrap();
                db.pragma_update(None, "user_version", 99).unwrap();
            }
        }
        let store = format!("[store]\npath = \"{}\"\n", path.display());
        let (code, logs) = Daemon::try_start("", &store, 0o600).err().expect("refused");
        assert_ne!(code, 0, "{case}");
        assert!(logs.contains(reason), "{case}: {logs}");
        assert!(
            std::fs::read(&path).unwrap().len() >= 4096,
            "{case}: the file is left as it was"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nonce_seen_before_kill_9_is_refused_after_the_restart() {
    let _lock = LibvirtdLock::shared();
    let dir = common::fixtures::tempdir();
    let store = format!("[store]\npath = \"{}\"\n", dir.join("replay.db").display());
    let signed = |nonce: &str| {
        signed_query(
            "GET",
            KEY_ID,
            SECRET,
            &[
                ("Action", "NoSuchAction"),
                ("SignatureNonce", nonce),
                ("Format", "JSON"),
            ],
        )
    };
    let code = |d: &Daemon, query: &str| {
        let reply = send(d.addr, "GET", &format!("/?{query}"), &[], b"");
        reply.json()["Code"].as_str().unwrap_or("-").to_owned()
    };
    let first = signed("replayed-across-a-restart");
    let mut d = Daemon::start("", &store);
    assert_eq!(code(&d, &first), "InvalidAction.NotFound");
    assert_eq!(code(&d, &first), "SignatureNonceUsed");
    d.kill_9();

    let d = Daemon::start("", &store);
    assert_eq!(
        code(&d, &first),
        "SignatureNonceUsed",
        "the replay after the restart"
    );
    assert_eq!(code(&d, &signed("a-fresh-one")), "InvalidAction.NotFound");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
