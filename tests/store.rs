//! The durable store under the real daemon: every screenshot is recorded as
//! an instance action with its events before the answer goes out, so the
//! record survives `kill -9`, as do replay nonces and the per-instance
//! intervals; and a store vmshot cannot trust stops the start, saying why.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, KEY_ID, SECRET};
use common::fixtures::{self, PATTERN, PATTERN_1080};
use common::host::{wait_until, LibvirtdLock};
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

/// `vmshot hash-password` for `password`: the users file needs a hash, and
/// the command makes it as the daemon checks it.
fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmshot"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One Alibaba screenshot; its status and `Code` ("-" on success).
fn alibaba_screenshot(d: &Daemon, instance: &str) -> (u16, String) {
    let query = signed_query(
        "GET",
        KEY_ID,
        SECRET,
        &[
            ("Action", "GetInstanceScreenshot"),
            ("RegionId", "cn-test"),
            ("InstanceId", instance),
            ("Format", "JSON"),
        ],
    );
    let reply = send(d.addr, "GET", &format!("/?{query}"), &[], b"");
    let code = reply.json()["Code"].as_str().unwrap_or("-").to_owned();
    (reply.status, code)
}

const ORACLE_USER: &str = "/Compute-acme/ops";
const ORACLE_PASSWORD: &str = "throttle-test-password";
const ORACLE_MEDIA: &str = "application/oracle-compute-v3+json";

/// A nimbula cookie for the Oracle test user.
fn oracle_login(d: &Daemon) -> String {
    let body = serde_json::json!({"user": ORACLE_USER, "password": ORACLE_PASSWORD}).to_string();
    let headers = [("Accept", ORACLE_MEDIA), ("Content-Type", ORACLE_MEDIA)];
    let reply = send(d.addr, "POST", "/authenticate/", &headers, body.as_bytes());
    assert_eq!(reply.status, 204, "{}", reply.text());
    let set = reply.header("Set-Cookie").unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// One Oracle capture request for `instance`: its status and message.
fn oracle_capture(d: &Daemon, cookie: &str, instance: &str) -> (u16, String) {
    let body = serde_json::json!({
        "instance": format!("{ORACLE_USER}/{instance}"),
        "cancel": false,
    })
    .to_string();
    let headers = [
        ("Accept", ORACLE_MEDIA),
        ("Content-Type", ORACLE_MEDIA),
        ("Cookie", cookie),
    ];
    let reply = send(
        d.addr,
        "POST",
        "/console/screencapture/",
        &headers,
        body.as_bytes(),
    );
    let message = reply.json()["message"].as_str().unwrap_or("-").to_owned();
    (reply.status, message)
}

#[test]
fn an_interval_taken_before_kill_9_still_holds_after_the_restart() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let users = dir.join("oracle-users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"ops\"\npassword_hash = \"{}\"\nroles = [\"Compute_Operations\"]\n",
            hash_password(ORACLE_PASSWORD)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Short intervals, both dialects on one store; "held" and "free" are two
    // guests, each named in both dialects.
    const INTERVAL: Duration = Duration::from_secs(5);
    let secs = INTERVAL.as_secs();
    let (held, free) = (PATTERN.domain(), PATTERN_1080.domain());
    let alibaba = format!(
        "throttle_interval_secs = {secs}\n\n[alibaba.instances]\n\
         \"i-held\" = \"{held}\"\n\"i-free\" = \"{free}\"\n"
    );
    let extra = format!(
        "[store]\npath = \"{}\"\n\n[oracle]\ncredentials_file = \"{}\"\n\
         identity_domain = \"acme\"\nstart_delay_ms = 0\ncapture_interval_secs = {secs}\n\n\
         [oracle.instances]\n\"held\" = \"{held}\"\n\"free\" = \"{free}\"\n",
        dir.join("slots.db").display(),
        users.display()
    );

    let mut d = Daemon::start(&alibaba, &extra);
    let cookie = oracle_login(&d);
    // Both slots are taken after this instant: neither frees before
    // `since + INTERVAL`.
    let since = Instant::now();
    assert_eq!(alibaba_screenshot(&d, "i-held"), (200, "-".into()));
    assert_eq!(oracle_capture(&d, &cookie, "held").0, 201);
    d.kill_9();

    let d = Daemon::start(&alibaba, &extra);
    // An Argon2 check in a debug build takes a while: log in first, so that
    // both refusals below come early in the interval.
    let cookie = oracle_login(&d);
    let (ali, ora) = (
        alibaba_screenshot(&d, "i-held"),
        oracle_capture(&d, &cookie, "held"),
    );
    assert!(
        since.elapsed() < INTERVAL,
        "the restart took {:?}, longer than the interval under test",
        since.elapsed()
    );
    // Each dialect's documented refusal: Alibaba's 400 Throttling, Oracle's 429.
    assert_eq!(ali, (400, "Throttling".into()));
    assert_eq!(ora.0, 429, "{ora:?}");
    assert!(
        ora.1
            .contains("only one screen capture of an instance per minute"),
        "{ora:?}"
    );
    // Another guest has a slot of its own.
    assert_eq!(alibaba_screenshot(&d, "i-free"), (200, "-".into()));
    assert_eq!(oracle_capture(&d, &cookie, "free").0, 201);

    // Once the interval has passed, the held guest is free again, and not
    // before.
    let (mut ali_free, mut ora_free) = (None, None);
    wait_until("both intervals pass", INTERVAL * 3, || {
        if ali_free.is_none() && alibaba_screenshot(&d, "i-held").0 == 200 {
            ali_free = Some(since.elapsed());
        }
        if ora_free.is_none() && oracle_capture(&d, &cookie, "held").0 == 201 {
            ora_free = Some(since.elapsed());
        }
        ali_free.is_some() && ora_free.is_some()
    });
    for freed in [ali_free.unwrap(), ora_free.unwrap()] {
        assert!(freed >= INTERVAL, "free again after {freed:?}");
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file of `dir` (the database, its WAL, the lock file) and its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(Result::unwrap)
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// `dir` bind-mounted read-only onto itself (a read-only mount stops root
/// too, where a mode would not), unmounted when dropped, panic or not.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(dir: &Path) -> Self {
        let mount = |args: &[&str]| {
            let out = Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "mount {args:?}: {out:?}");
        };
        mount(&["--bind"]);
        let guard = Self(dir.to_owned());
        mount(&["-o", "remount,ro,bind"]);
        guard
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.0).status().is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount {}", self.0.display());
        }
    }
}

#[test]
fn a_read_only_or_locked_store_stops_the_start_and_is_left_as_it_was() {
    let _lock = LibvirtdLock::shared();
    let dir = fixtures::tempdir();
    let section = |path: &Path| format!("[store]\npath = \"{}\"\n", path.display());
    let refused = |store: &str, reason: &str| {
        let (code, logs) = Daemon::try_start("", store, 0o600)
            .err()
            .unwrap_or_else(|| panic!("started on a store that is {reason}"));
        assert_ne!(code, 0, "{reason}");
        assert!(logs.contains(reason), "{reason}: {logs}");
    };

    // A store a daemon made and left, then mounted read-only.
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    let store = section(&ro.join("vmshot.db"));
    let mut maker = Daemon::start("", &store);
    maker.settled();
    maker.stop();
    let before = files(&ro);
    assert!(before.contains_key("vmshot.db"), "{:?}", before.keys());
    {
        let _mount = ReadOnlyMount::new(&ro);
        refused(&store, "read-only: directory");
    }
    assert_eq!(files(&ro), before, "the read-only store is as it was");

    // The database's mode says no write: root could, but vmshot does not.
    let db = ro.join("vmshot.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    refused(&store, "has mode 400");
    assert_eq!(files(&ro), before, "the 0400 store is as it was");

    // A store another daemon has open: the second one stops, the first goes on.
    let held = dir.join("held");
    std::fs::create_dir(&held).unwrap();
    let store = section(&held.join("vmshot.db"));
    let mut first = Daemon::start("", &store);
    // Its retention pass, at start, is its last write until it is asked for something.
    assert!(
        first.logs().contains("\"store retention\"")
            || first
                .wait_for_log("\"store retention\"", Duration::from_secs(10))
                .is_some(),
        "{}",
        first.logs()
    );
    let durable = |files: BTreeMap<String, Vec<u8>>| {
        // The WAL index (-shm) is shared memory, not content.
        files
            .into_iter()
            .filter(|(name, _)| !name.ends_with("-shm"))
            .collect::<BTreeMap<_, _>>()
    };
    let before = durable(files(&held));
    refused(&store, "locked by another vmshot");
    assert_eq!(
        durable(files(&held)),
        before,
        "the locked store is as it was"
    );
    assert!(first.running(), "the first daemon goes on");
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}
