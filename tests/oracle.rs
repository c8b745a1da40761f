//! Oracle Compute Classic's screen capture requests on the real daemon, the
//! real libvirtd and the fixture guests, over plain HTTP as Oracle's curl
//! examples make them: authenticate for a nimbula cookie, create a capture,
//! poll it to `complete`, fetch its JPEG; the throttle, a delete, Oracle's
//! media type; a cancel in each state, `kill -9` in each state and the
//! restart; tenants (users bound to projects, and an admin); and retention
//! within a media budget.
//!
//! States are held for the tests by `[oracle] start_delay_ms` (pending),
//! a frozen QEMU (SIGSTOP: in-progress) and `upload_delay_ms` (uploading).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::daemon::{Daemon, PROJECT_A, PROJECT_B};
use common::fixtures::{
    self, shows_pattern, KERNEL_PANIC, NO_BOOT_DEVICE, PATTERN, PATTERN_1080, STALL,
};
use common::host::{qemu_pid, stall_guard, virsh, wait_until, Frozen, LibvirtdLock};
use common::http::{send, Reply};
use common::image_check::decode_rgb;
use common::nova::{self, Token};
use common::oracle::{authenticate, call, create, MEDIA_TYPE};
use common::owned::Owned;
use common::users::{ALICE_PASSWORD, BOB_PASSWORD, USERS};

const CAPTURES: &str = "/console/screencapture";
const ALICE: &str = "/Compute-acme/alice";
const BOB: &str = "/Compute-acme/bob";
const CAROL: &str = "/Compute-acme/carol";
const ROOT: &str = "/Compute-acme/root";

/// What a test sets of the daemon: the `[oracle]` hold-ups, the interval,
/// and a store of its own that outlives one daemon, with its media budget.
#[derive(Clone, Copy)]
struct Knobs<'a> {
    start_delay_ms: u64,
    upload_delay_ms: u64,
    interval_secs: u64,
    store: Option<&'a Path>,
    max_media_mb: Option<u64>,
}

const PLAIN: Knobs<'static> = Knobs {
    start_delay_ms: 0,
    upload_delay_ms: 0,
    interval_secs: 60,
    store: None,
    max_media_mb: None,
};

/// The `[oracle]` section (users written to `dir`) and, if asked, `[store]`.
fn oracle_section(dir: &Path, knobs: Knobs) -> String {
    let users = dir.join("oracle-users.toml");
    std::fs::write(&users, USERS).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = String::new();
    if let Some(store) = knobs.store {
        text += &format!("[store]\npath = \"{}\"\n", store.display());
        if let Some(mb) = knobs.max_media_mb {
            text += &format!("max_media_mb = {mb}\n");
        }
        text += "\n";
    }
    text += &format!(
        "[oracle]\ncredentials_file = \"{}\"\nidentity_domain = \"acme\"\n\
         start_delay_ms = {}\nupload_delay_ms = {}\ncapture_interval_secs = {}\n\n\
         [oracle.instances]\n\"pattern\" = \"{}\"\n\"pattern-1080\" = \"{}\"\n\
         \"stall\" = \"{STALL}\"\n\"nobootdev\" = \"{}\"\n\"panic\" = \"{}\"\n",
        users.display(),
        knobs.start_delay_ms,
        knobs.upload_delay_ms,
        knobs.interval_secs,
        PATTERN.domain(),
        PATTERN_1080.domain(),
        NO_BOOT_DEVICE.domain(),
        KERNEL_PANIC.domain(),
    );
    text
}

fn setup(start_delay_ms: u64) -> (LibvirtdLock, Daemon, std::path::PathBuf) {
    let lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let knobs = Knobs {
        start_delay_ms,
        ..PLAIN
    };
    let daemon = Daemon::start("", &oracle_section(&dir, knobs));
    (lock, daemon, dir)
}

fn path_of(name: &str) -> String {
    format!("/console/screencapture{name}")
}

/// Polls a capture until it is `complete` or `error`.
fn poll(d: &Daemon, cookie: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = call(d, Some(cookie), "GET", &path_of(name), None);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let capture = reply.json();
        if capture["state"] == "complete" || capture["state"] == "error" {
            return capture;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still {} after 60 s\n{}",
            capture["state"],
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls a capture until it is in `state` (every 20 ms: the holds the tests
/// set are a second or more); a capture that ends elsewhere fails the test.
fn wait_state(d: &Daemon, cookie: &str, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let capture = call(d, Some(cookie), "GET", &path_of(name), None).json();
        if capture["state"] == state {
            return capture;
        }
        assert!(
            !["complete", "error"].contains(&capture["state"].as_str().unwrap_or("")),
            "{name} ended before {state}: {capture}"
        );
        assert!(
            Instant::now() < deadline,
            "{name} never {state}: {capture}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first line the daemon logged with `message`, waiting for it: lines
/// logged as it starts come before "listening", which `wait_for_log` would
/// have read past.
fn logged(d: &Daemon, message: &str) -> String {
    let needle = format!("\"message\":\"{message}\"");
    let find = || {
        d.logs()
            .lines()
            .find(|l| l.contains(&needle))
            .map(str::to_owned)
    };
    wait_until(message, Duration::from_secs(20), || find().is_some());
    find().unwrap()
}

fn media_path(name: &str) -> String {
    format!("/console/screencapture/media{name}")
}

fn cancel(d: &Daemon, cookie: &str, name: &str) -> Reply {
    call(
        d,
        Some(cookie),
        "PUT",
        &path_of(name),
        Some(json!({"cancel": true})),
    )
}

/// The capture's name from a 201, or the test fails with the answer.
fn created_name(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["name"].as_str().unwrap().to_owned()
}

/// The files in a store's media directory (`<db>.media`), by name.
fn media_files(db: &Path) -> Vec<String> {
    let mut dir = db.as_os_str().to_owned();
    dir.push(".media");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_capture_is_created_polled_to_complete_and_its_jpeg_served() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    // Nova beside it: the capture's record, as an admin reads it.
    let admin = Token {
        id: "oracle-test-nova-admin-0000001",
        user: "operator",
        project: "0f5a",
        roles: &["admin"],
        expires: None,
    };
    let config = oracle_section(&dir, PLAIN) + "\n" + &nova::section(&dir, &[admin]);
    let d = Daemon::start("", &config);

    // Authentication: a wrong password, no cookie and a tampered cookie are 401.
    let wrong = authenticate(&d, ALICE, "not-the-password").unwrap_err();
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(wrong.json()["message"].is_string());
    let cookie = authenticate(&d, ALICE, ALICE_PASSWORD).unwrap();
    let list_path = format!("/console/screencapture{ALICE}/");
    assert_eq!(call(&d, None, "GET", &list_path, None).status, 401);
    let mut tampered = cookie.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        call(&d, Some(&tampered), "GET", &list_path, None).status,
        401
    );
    let refreshed = call(&d, Some(&cookie), "GET", "/refresh/", None);
    assert_eq!(refreshed.status, 204);

    // Create: 201 with seed 000's fields.
    let instance = format!("{ALICE}/pattern");
    let created = create(&d, &cookie, &instance);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("Content-Type"), Some(MEDIA_TYPE));
    let capture = created.json();
    for field in [
        "account",
        "cancel",
        "cancellation",
        "creation_time",
        "error_reason",
        "instance",
        "media_uri",
        "name",
        "request_id",
        "state",
        "uri",
    ] {
        assert!(capture.get(field).is_some(), "{field} missing: {capture}");
    }
    assert_eq!(capture["instance"], instance.as_str());
    assert_eq!(capture["account"], "/Compute-acme/cloud_storage");
    assert_eq!(capture["cancel"], false);
    assert_eq!(capture["cancellation"]["state"], "not_requested");
    assert!(capture["cancellation"]["error_reason"].is_null());
    let name = capture["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with(&format!("{instance}/")), "{name}");
    assert_eq!(capture["request_id"].as_str().unwrap().len(), 38);

    // A second capture of the same instance within the minute: Oracle's rule.
    let again = create(&d, &cookie, &instance);
    assert_eq!(again.status, 429, "{}", again.text());
    assert!(
        again.json()["message"]
            .as_str()
            .unwrap()
            .contains("only one screen capture of an instance per minute"),
        "{}",
        again.text()
    );
    assert!(again.header("Retry-After").is_some());

    // Poll to complete; the JPEG at media_uri is the guest's screen.
    let done = poll(&d, &cookie, &name);
    assert_eq!(done["state"], "complete", "{done}");
    assert!(done["error_reason"].is_null(), "{done}");
    let media_uri = done["media_uri"].as_str().expect("media_uri").to_owned();
    let media_path = media_uri
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .unwrap();
    assert_eq!(media_path, format!("/console/screencapture/media{name}"));
    assert_eq!(call(&d, None, "GET", &media_path, None).status, 401);
    let media = call(&d, Some(&cookie), "GET", &media_path, None);
    assert_eq!(media.status, 200, "{}", media.text());
    assert_eq!(media.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(
        media.header("Content-Length"),
        Some(media.body.len().to_string().as_str())
    );
    let digest = hex(&Sha256::digest(&media.body));
    assert_eq!(media.header("X-Vmshot-Sha256"), Some(digest.as_str()));
    assert_eq!(media.header("ETag"), Some(format!("\"{digest}\"").as_str()));
    let img = decode_rgb(&media.body);
    assert_eq!(img.dimensions(), (PATTERN.width, PATTERN.height));
    assert!(shows_pattern(&img, 6.0), "the pattern's colours");

    // One byte range: 206 with those bytes.
    let cookie_header = format!("nimbula={cookie}");
    let part = send(
        d.addr,
        "GET",
        &media_path,
        &[("Cookie", &cookie_header), ("Range", "bytes=2-9")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, media.body[2..=9]);
    assert_eq!(
        part.header("Content-Range"),
        Some(format!("bytes 2-9/{}", media.body.len()).as_str())
    );

    // The list of alice's container has it.
    let list = call(&d, Some(&cookie), "GET", &list_path, None);
    assert_eq!(list.status, 200, "{}", list.text());
    let names: Vec<_> = list.json()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, std::slice::from_ref(&name));

    // Bob, of another project, cannot see, get, list or cancel it, nor its media.
    let bob = authenticate(&d, BOB, BOB_PASSWORD).unwrap();
    assert_eq!(
        call(&d, Some(&bob), "GET", &path_of(&name), None).status,
        404
    );
    assert_eq!(call(&d, Some(&bob), "GET", &media_path, None).status, 404);
    let cancel = Some(json!({"cancel": true}));
    assert_eq!(
        call(&d, Some(&bob), "PUT", &path_of(&name), cancel.clone()).status,
        404
    );
    assert_eq!(
        call(&d, Some(&bob), "DELETE", &path_of(&name), None).status,
        404
    );
    let bobs_view = call(&d, Some(&bob), "GET", &list_path, None);
    assert_eq!(bobs_view.status, 200);
    assert_eq!(bobs_view.json()["result"], json!([]));
    // Nor capture alice's guest: it is not in his project.
    assert_eq!(create(&d, &bob, &format!("{BOB}/pattern")).status, 404);

    // Its record, through Nova: grabbed, encoded, then kept, with the digest
    // of the very bytes served.
    let server = virsh(&["domuuid", &PATTERN.domain()]).trim().to_owned();
    let request_id = done["request_id"].as_str().unwrap();
    let record = send(
        d.addr,
        "GET",
        &format!("/compute/v2.1/servers/{server}/os-instance-actions/{request_id}"),
        &[
            ("X-Auth-Token", "oracle-test-nova-admin-0000001"),
            ("OpenStack-API-Version", "compute 2.84"),
        ],
        b"",
    );
    assert_eq!(record.status, 200, "{}", record.text());
    let events = record.json()["instanceAction"]["events"].clone();
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vmshot_grab", "vmshot_encode", "vmshot_store"]);
    let kept = events[2]["details"].as_str().unwrap();
    assert!(kept.contains(&format!("sha256 {digest}")), "{kept}");
    assert_eq!(events[2]["result"], "Success");

    // A cancel after completion fails on the cancellation, not the capture.
    let late = call(&d, Some(&cookie), "PUT", &path_of(&name), cancel);
    assert_eq!(late.status, 200, "{}", late.text());
    let late = late.json();
    assert_eq!(
        (&late["state"], &late["cancellation"]["state"]),
        (&json!("complete"), &json!("error"))
    );

    // Delete: gone, media included.
    let deleted = call(&d, Some(&cookie), "DELETE", &path_of(&name), None);
    assert_eq!(deleted.status, 204);
    assert_eq!(
        call(&d, Some(&cookie), "GET", &path_of(&name), None).status,
        404
    );
    assert_eq!(
        call(&d, Some(&cookie), "GET", &media_path, None).status,
        404
    );
}

/// The stdlib client (tests/sdk/oracle.py), run as Oracle's curl examples
/// are: every step it prints is what a Compute Classic client would see.
#[test]
fn the_stdlib_client_runs_the_whole_flow() {
    let (_lock, d, dir) = setup(0);
    let password = dir.join("password");
    std::fs::write(&password, format!("{ALICE_PASSWORD}\n")).unwrap();
    let out = dir.join("capture.jpg");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/oracle.py");
    let run = std::process::Command::new("python3")
        .args([script, "--endpoint", &d.endpoint(), "--user", ALICE])
        .args(["--password-file", password.to_str().unwrap()])
        .args(["--instance", &format!("{ALICE}/pattern-1080")])
        .args(["--out", out.to_str().unwrap(), "all"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let context = format!(
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        d.logs()
    );
    assert!(run.status.success(), "{context}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = |action: &str| {
        lines
            .iter()
            .find(|l| l["action"] == action)
            .unwrap_or_else(|| panic!("no {action}: {context}"))
    };
    assert_eq!(first("cookie")["present"], true, "{context}");
    assert_eq!(first("create")["status"], 201, "{context}");
    let media = first("media");
    assert_eq!(media["status"], 200, "{context}");
    assert_eq!(media["content_type"], "image/jpeg");
    assert_eq!(media["sha256_matches"], true, "{context}");
    let img = decode_rgb(&std::fs::read(&out).unwrap());
    assert_eq!(img.dimensions(), (PATTERN_1080.width, PATTERN_1080.height));
    // The second create falls within the minute: Oracle's 429.
    let creates: Vec<_> = lines.iter().filter(|l| l["action"] == "create").collect();
    assert_eq!(creates.len(), 2, "{context}");
    assert_eq!(creates[1]["status"], 429, "{context}");
    // The last list, after the delete, is empty.
    let last_list = lines.iter().rev().find(|l| l["action"] == "list").unwrap();
    assert_eq!(last_list["count"], 0, "{context}");
}

/// A cancel in each state a capture can be held in ends it `error`
/// "cancelled" with its cancellation `requested → complete` and no image,
/// on disk or at `media_uri`; a cancel after `complete` fails on the
/// cancellation and leaves the capture and its image as they were.
///
/// `queued` cannot be held: the runner takes a committed job to `pending`
/// at once, so a cancel meets it there (the rule is the same:
/// `machine::cancel_before_complete_wins` covers a cancel from every state,
/// `queued` included).
#[test]
fn a_cancel_in_each_state_ends_the_capture_cancelled_with_no_media() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let _stall = stall_guard();
    let dir = fixtures::tempdir();
    // 1.5 s in pending and in uploading: windows to cancel in; a frozen
    // QEMU holds the stall guest's capture in-progress.
    let knobs = Knobs {
        start_delay_ms: 1500,
        upload_delay_ms: 1500,
        ..PLAIN
    };
    let d = Daemon::start("", &oracle_section(&dir, knobs));
    let cookie = authenticate(&d, ALICE, ALICE_PASSWORD).unwrap();
    let frozen = Frozen::new(qemu_pid(STALL));
    // (state to cancel in, instance): all created at once, so the holds overlap.
    let rows = [
        ("pending", "pattern"),
        ("in-progress", "stall"),
        ("uploading", "pattern-1080"),
    ];
    let names: Vec<String> = rows
        .iter()
        .map(|(_, instance)| created_name(&create(&d, &cookie, &format!("{ALICE}/{instance}"))))
        .collect();
    let finished = created_name(&create(&d, &cookie, &format!("{ALICE}/nobootdev")));
    for ((state, _), name) in rows.iter().zip(&names) {
        wait_state(&d, &cookie, name, state);
        let asked = cancel(&d, &cookie, name);
        assert_eq!(asked.status, 200, "{state}: {}", asked.text());
        let asked = asked.json();
        assert_eq!(asked["state"], *state, "{asked}");
        assert_eq!(asked["cancel"], true, "{asked}");
        assert_eq!(asked["cancellation"]["state"], "requested", "{asked}");
        assert!(asked["cancellation"]["error_reason"].is_null(), "{asked}");
        // Asking again changes nothing.
        let again = cancel(&d, &cookie, name).json();
        assert_eq!(again["cancellation"]["state"], "requested", "{again}");
    }
    drop(frozen);
    for ((state, _), name) in rows.iter().zip(&names) {
        let done = poll(&d, &cookie, name);
        assert_eq!(
            (
                &done["state"],
                &done["error_reason"],
                &done["cancellation"]["state"]
            ),
            (&json!("error"), &json!("cancelled"), &json!("complete")),
            "cancelled in {state}: {done}"
        );
        assert!(done["media_uri"].is_null(), "cancelled in {state}: {done}");
        let media = call(&d, Some(&cookie), "GET", &media_path(name), None);
        assert_eq!(media.status, 404, "cancelled in {state}: {}", media.text());
    }

    // After complete: the cancellation fails, saying why; the capture stands.
    let done = poll(&d, &cookie, &finished);
    assert_eq!(done["state"], "complete", "{done}");
    let before = call(&d, Some(&cookie), "GET", &media_path(&finished), None);
    assert_eq!(before.status, 200, "{}", before.text());
    let late = cancel(&d, &cookie, &finished);
    assert_eq!(late.status, 200, "{}", late.text());
    let late = late.json();
    assert_eq!(late["state"], "complete", "{late}");
    assert!(late["error_reason"].is_null(), "{late}");
    assert_eq!(late["cancel"], true, "{late}");
    assert_eq!(late["cancellation"]["state"], "error", "{late}");
    assert_eq!(
        late["cancellation"]["error_reason"], "the capture is already complete",
        "{late}"
    );
    assert!(late["media_uri"].is_string(), "{late}");
    let after = call(&d, Some(&cookie), "GET", &media_path(&finished), None);
    assert_eq!(after.status, 200);
    assert_eq!(after.body, before.body);

    // On disk: the complete capture's image and nothing else.
    let files = media_files(&d.dir.join("vmshot.db"));
    assert_eq!(files.len(), 1, "{files:?}");
    let on_disk = std::fs::read(d.dir.join("vmshot.db.media").join(&files[0])).unwrap();
    assert_eq!(on_disk, after.body);
}

/// `kill -9` with a capture in each state that can be held, then a start on
/// the same store: every capture is still there (none lost), and each ends
/// as the restart rule says (none stuck): `pending` resumes and completes, a
/// cancel asked before the kill ends it cancelled, `in-progress` and
/// `uploading` end in error "vmshot restarted during <state>".
#[test]
fn after_kill_9_in_each_state_every_capture_resumes_or_ends_in_error() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let _stall = stall_guard();
    let dir = fixtures::tempdir();
    let store = dir.join("kept.db");
    // 2 s in pending; uploading held past the kill.
    let holding = Knobs {
        start_delay_ms: 2000,
        upload_delay_ms: 60_000,
        store: Some(&store),
        ..PLAIN
    };
    let mut first = Daemon::start("", &oracle_section(&dir, holding));
    let cookie = authenticate(&first, ALICE, ALICE_PASSWORD).unwrap();
    let frozen = Frozen::new(qemu_pid(STALL));

    struct Row {
        instance: &'static str,
        held: &'static str,
        cancel: bool,
        /// `state` and `error_reason` after the restart.
        ends: (&'static str, Option<&'static str>),
    }
    let rows = [
        Row {
            instance: "stall",
            held: "in-progress",
            cancel: false,
            ends: ("error", Some("vmshot restarted during in-progress")),
        },
        Row {
            instance: "pattern-1080",
            held: "uploading",
            cancel: false,
            ends: ("error", Some("vmshot restarted during uploading")),
        },
        Row {
            instance: "pattern",
            held: "pending",
            cancel: false,
            ends: ("complete", None),
        },
        Row {
            instance: "nobootdev",
            held: "pending",
            cancel: true,
            ends: ("error", Some("cancelled")),
        },
    ];
    let create_row = |row: &Row| {
        let name = created_name(&create(
            &first,
            &cookie,
            &format!("{ALICE}/{}", row.instance),
        ));
        if row.cancel {
            assert_eq!(cancel(&first, &cookie, &name).status, 200);
        }
        name
    };
    // The rows held past pending first; those to be killed in pending once
    // the others are where they are held, so all are held at the kill.
    let mut names = vec![String::new(); rows.len()];
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.held != "pending") {
        names[i] = create_row(row);
    }
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.held != "pending") {
        wait_state(&first, &cookie, &names[i], row.held);
    }
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.held == "pending") {
        names[i] = create_row(row);
    }
    for (row, name) in rows.iter().zip(&names) {
        let now = call(&first, Some(&cookie), "GET", &path_of(name), None).json();
        assert_eq!(now["state"], row.held, "before the kill: {now}");
    }
    first.kill_9();
    drop(frozen);

    let second = Daemon::start(
        "",
        &oracle_section(
            &dir,
            Knobs {
                store: Some(&store),
                ..PLAIN
            },
        ),
    );
    let recovered = logged(&second, "oracle jobs recovered");
    assert!(
        recovered.contains("\"resumed\":1"),
        "only the pending capture without a cancel resumes\n{}",
        second.logs()
    );
    // Without a cookie key file each start signs with its own key.
    let cookie = authenticate(&second, ALICE, ALICE_PASSWORD).unwrap();
    for (row, name) in rows.iter().zip(&names) {
        let done = poll(&second, &cookie, name);
        let context = format!("killed in {}: {done}", row.held);
        assert_eq!(done["state"], row.ends.0, "{context}");
        assert_eq!(done["error_reason"], json!(row.ends.1), "{context}");
        let cancellation = if row.cancel {
            "complete"
        } else {
            "not_requested"
        };
        assert_eq!(done["cancellation"]["state"], cancellation, "{context}");
        let media = call(&second, Some(&cookie), "GET", &media_path(name), None);
        if row.ends.0 == "complete" {
            assert_eq!(media.status, 200, "{context}");
            let img = decode_rgb(&media.body);
            assert_eq!(img.dimensions(), (PATTERN.width, PATTERN.height));
            assert!(shows_pattern(&img, 6.0), "the pattern's colours");
        } else {
            assert!(done["media_uri"].is_null(), "{context}");
            assert_eq!(media.status, 404, "{context}");
        }
    }
    // None lost: the container lists every one of them.
    let list = call(
        &second,
        Some(&cookie),
        "GET",
        &format!("{CAPTURES}{ALICE}/"),
        None,
    );
    let mut listed: Vec<String> = list.json()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(media_files(&store).len(), 1, "{:?}", media_files(&store));
}

/// A reply as a caller could compare two: status, media type and body, with
/// `name` written as NAME.
fn shape(reply: &Reply, name: &str) -> (u16, Option<String>, String) {
    (
        reply.status,
        reply.header("Content-Type").map(str::to_owned),
        reply.text().replace(name, "NAME"),
    )
}

/// The names a container's list shows to the caller, sorted.
fn listed(d: &Daemon, cookie: &str, container: &str) -> Vec<String> {
    let reply = call(
        d,
        Some(cookie),
        "GET",
        &format!("{CAPTURES}{container}/"),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut names: Vec<String> = reply.json()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Creates a capture of `user`'s `guest`, retrying while the answer is one
/// of `retry` (404 while the inventory has yet to see a new domain, 429
/// while the guest's interval runs), and polls it to `complete`.
fn capture_of(d: &Daemon, cookie: &str, user: &str, guest: &str, retry: u16) -> String {
    let mut name = None;
    wait_until(
        &format!("{user} captures {guest}"),
        Duration::from_secs(10),
        || {
            let reply = create(d, cookie, &format!("{user}/{guest}"));
            if reply.status == retry {
                return false;
            }
            name = Some(created_name(&reply));
            true
        },
    );
    let name = name.unwrap();
    let done = poll(d, cookie, &name);
    assert_eq!(done["state"], "complete", "{done}");
    name
}

/// Tenants through Oracle's users: carol (project A) and bob (project B)
/// each capture their own guest (Nova's owner metadata says whose); neither
/// can capture the other's guest, nor read, cancel, delete, list or fetch
/// the other's captures, and each refusal is what something that does not
/// exist gets, byte for byte but for the name. root, an admin, sees both.
#[test]
fn a_tenant_sees_only_its_own_guests_and_captures_and_an_admin_sees_all() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let pid = std::process::id();
    let guest_a = Owned::define(&format!("vmshot-oracle-a-{pid}"), PROJECT_A, None).start();
    let guest_b = Owned::define(&format!("vmshot-oracle-b-{pid}"), PROJECT_B, None).start();
    let dir = fixtures::tempdir();
    // One capture per guest per second: root follows the tenants on theirs.
    let knobs = Knobs {
        interval_secs: 1,
        ..PLAIN
    };
    let d = Daemon::start("", &oracle_section(&dir, knobs));
    let carol = authenticate(&d, CAROL, ALICE_PASSWORD).unwrap();
    let bob = authenticate(&d, BOB, BOB_PASSWORD).unwrap();
    let root = authenticate(&d, ROOT, ALICE_PASSWORD).unwrap();

    let a_job = capture_of(&d, &carol, CAROL, &guest_a.name, 404);
    let b_job = capture_of(&d, &bob, BOB, &guest_b.name, 404);
    let b_media = call(&d, Some(&bob), "GET", &media_path(&b_job), None);
    assert_eq!(b_media.status, 200, "{}", b_media.text());

    // The other tenant's guest, by name or UUID, is a guest that does not exist.
    let missing = format!("vmshot-oracle-missing-{pid}");
    for (cookie, user, theirs) in [(&carol, CAROL, &guest_b), (&bob, BOB, &guest_a)] {
        let absent = shape(&create(&d, cookie, &format!("{user}/{missing}")), &missing);
        assert_eq!(absent.0, 404, "{absent:?}");
        assert_eq!(absent.1.as_deref(), Some(MEDIA_TYPE));
        for alias in [&theirs.name, &theirs.uuid] {
            let reply = create(&d, cookie, &format!("{user}/{alias}"));
            assert_eq!(shape(&reply, alias), absent, "{user} on {alias}");
        }
    }

    // bob's capture, to carol, is a capture that does not exist.
    let (container, b_id) = b_job.rsplit_once('/').unwrap();
    let ghost_id = "5f0e8a2c-7b1d-4e3f-9a6b-0c1d2e3f4a5b";
    let ghost = format!("{container}/{ghost_id}");
    type Route = fn(&str) -> String;
    let asks: [(&str, Route, Option<Value>); 4] = [
        ("GET", path_of, None),
        ("PUT", path_of, Some(json!({"cancel": true}))),
        ("DELETE", path_of, None),
        ("GET", media_path, None),
    ];
    for (method, path, body) in asks {
        let theirs = call(&d, Some(&carol), method, &path(&b_job), body.clone());
        let nothing = call(&d, Some(&carol), method, &path(&ghost), body);
        assert_eq!(nothing.status, 404, "{method} {}", nothing.text());
        assert_eq!(
            shape(&theirs, b_id),
            shape(&nothing, ghost_id),
            "{method} {}",
            path(&b_job)
        );
    }
    // ... and it is as it was: not cancelled, not deleted.
    let still = call(&d, Some(&bob), "GET", &path_of(&b_job), None).json();
    assert_eq!(
        (&still["state"], &still["cancel"]),
        (&json!("complete"), &json!(false))
    );
    let again = call(&d, Some(&bob), "GET", &media_path(&b_job), None);
    assert_eq!(again.body, b_media.body);

    // Each lists its own container only.
    assert_eq!(listed(&d, &carol, CAROL), std::slice::from_ref(&a_job));
    assert_eq!(listed(&d, &bob, BOB), std::slice::from_ref(&b_job));
    assert!(listed(&d, &carol, BOB).is_empty());
    assert!(listed(&d, &bob, CAROL).is_empty());

    // root, an admin (bound to project B, which the role overrides),
    // captures either guest and sees both tenants' captures.
    let mut mine = vec![
        capture_of(&d, &root, ROOT, &guest_a.name, 429),
        capture_of(&d, &root, ROOT, &guest_b.name, 429),
    ];
    mine.sort();
    assert_eq!(listed(&d, &root, ROOT), mine);
    assert_eq!(listed(&d, &root, CAROL), std::slice::from_ref(&a_job));
    assert_eq!(listed(&d, &root, BOB), std::slice::from_ref(&b_job));
    let seen = call(&d, Some(&root), "GET", &path_of(&a_job), None);
    assert_eq!(seen.status, 200, "{}", seen.text());
    let media = call(&d, Some(&root), "GET", &media_path(&b_job), None);
    assert_eq!(media.body, b_media.body);
}

/// Retention at the daemon: with a 1 MiB media budget, captures whose
/// images add up to more are thinned at the next start (retention runs then
/// and hourly), oldest first and no more than needed: the removed captures'
/// records go with their images, and their `GET` is the not-found of a
/// capture that never was.
#[test]
fn retention_removes_the_oldest_captures_until_the_media_fit_the_budget() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let store = dir.join("kept.db");
    let knobs = Knobs {
        interval_secs: 1,
        store: Some(&store),
        max_media_mb: Some(1),
        ..PLAIN
    };
    // Best quality, no chroma subsampling: the panic screen's text is then
    // about 380 KB, so a few captures pass 1 MiB.
    let config = format!(
        "[capture]\njpeg_quality = 100\nsubsampling = \"444\"\n\n{}",
        oracle_section(&dir, knobs)
    );
    let mut first = Daemon::start("", &config);
    let cookie = authenticate(&first, ALICE, ALICE_PASSWORD).unwrap();
    // Oldest first; each complete before the next is asked for, so their
    // creation times are in this order.
    let mut captures: Vec<(String, Vec<u8>)> = Vec::new();
    for guest in ["pattern", "panic", "panic", "panic", "nobootdev"] {
        let name = capture_of(&first, &cookie, ALICE, guest, 429);
        let media = call(&first, Some(&cookie), "GET", &media_path(&name), None);
        assert_eq!(media.status, 200, "{}", media.text());
        captures.push((name, media.body));
    }
    const BUDGET: usize = 1 << 20;
    let sizes: Vec<usize> = captures.iter().map(|(_, m)| m.len()).collect();
    let total: usize = sizes.iter().sum();
    assert!(total > BUDGET, "the images must pass the budget: {sizes:?}");
    // What retention must leave: drop the oldest until the rest fit.
    let removed = (0..sizes.len())
        .find(|&k| sizes[k..].iter().sum::<usize>() <= BUDGET)
        .unwrap();
    assert!(removed >= 1 && removed < sizes.len(), "{sizes:?}");
    assert_eq!(first.stop(), 0);

    let second = Daemon::start("", &config);
    // Its first pass runs as the store opens.
    let retained = logged(&second, "store retention");
    assert!(
        retained.contains(&format!("jobs_removed: {removed},")),
        "{sizes:?}\n{retained}"
    );
    let cookie = authenticate(&second, ALICE, ALICE_PASSWORD).unwrap();
    let ghost = format!("{ALICE}/pattern/5f0e8a2c-7b1d-4e3f-9a6b-0c1d2e3f4a5b");
    let never = call(&second, Some(&cookie), "GET", &path_of(&ghost), None);
    assert_eq!(never.status, 404, "{}", never.text());
    for (i, (name, image)) in captures.iter().enumerate() {
        let got = call(&second, Some(&cookie), "GET", &path_of(name), None);
        let media = call(&second, Some(&cookie), "GET", &media_path(name), None);
        if i < removed {
            assert_eq!(shape(&got, name), shape(&never, &ghost), "{name}");
            assert_eq!(media.status, 404, "{name}");
        } else {
            assert_eq!(got.status, 200, "{}", got.text());
            assert_eq!(media.body, *image, "{name}");
        }
    }
    let kept: Vec<String> = captures[removed..].iter().map(|(n, _)| n.clone()).collect();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(listed(&second, &cookie, ALICE), kept_sorted);
    let files = media_files(&store);
    assert_eq!(files.len(), kept.len(), "{files:?}");
    let mut on_disk = store.as_os_str().to_owned();
    on_disk.push(".media");
    let bytes: u64 = files
        .iter()
        .map(|f| {
            std::fs::metadata(Path::new(&on_disk).join(f))
                .unwrap()
                .len()
        })
        .sum();
    assert!(bytes <= BUDGET as u64, "{bytes} bytes kept");
    eprintln!("media {sizes:?}: {removed} oldest removed, {bytes} bytes kept");
}

/// Oracle's media type, `application/oracle-compute-v3+json`: taken on
/// request bodies (plain JSON too, with or without parameters) and sent on
/// every JSON answer, errors included; a body of any other type is 415.
#[test]
fn the_oracle_media_type_is_accepted_on_requests_and_returned() {
    let (_lock, d, _dir) = setup(0);
    // Refused before any password is looked at.
    let credentials = json!({"user": ALICE, "password": ALICE_PASSWORD}).to_string();
    for ct in [Some("text/plain"), Some("application/xml"), None] {
        let mut headers = vec![("Accept", MEDIA_TYPE)];
        headers.extend(ct.map(|ct| ("Content-Type", ct)));
        let reply = send(
            d.addr,
            "POST",
            "/authenticate/",
            &headers,
            credentials.as_bytes(),
        );
        assert_eq!(reply.status, 415, "{ct:?}: {}", reply.text());
        assert_eq!(reply.header("Content-Type"), Some(MEDIA_TYPE));
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(MEDIA_TYPE), "{message}");
    }
    // `authenticate` sends Oracle's type.
    let cookie = authenticate(&d, ALICE, ALICE_PASSWORD).unwrap();
    let cookie_header = format!("nimbula={cookie}");
    let create_body = json!({"instance": format!("{ALICE}/nobootdev")}).to_string();
    let refused = send(
        d.addr,
        "POST",
        "/console/screencapture/",
        &[("Cookie", &cookie_header), ("Content-Type", "text/plain")],
        create_body.as_bytes(),
    );
    assert_eq!(refused.status, 415, "{}", refused.text());
    let created = send(
        d.addr,
        "POST",
        "/console/screencapture/",
        &[("Cookie", &cookie_header), ("Content-Type", MEDIA_TYPE)],
        create_body.as_bytes(),
    );
    let name = created_name(&created);
    assert_eq!(created.header("Content-Type"), Some(MEDIA_TYPE));
    let update = json!({"cancel": false}).to_string();
    let put = |ct: &str| {
        send(
            d.addr,
            "PUT",
            &path_of(&name),
            &[("Cookie", &cookie_header), ("Content-Type", ct)],
            update.as_bytes(),
        )
    };
    assert_eq!(put("text/plain").status, 415);
    for ct in [
        "application/oracle-compute-v3+json; charset=utf-8",
        "application/json",
    ] {
        assert_eq!(put(ct).status, 200, "{ct}");
    }
    // Every JSON answer is of Oracle's type: a capture, an update, a list, a
    // not-found, a refused cookie.
    let answers = [
        (200, put(MEDIA_TYPE)),
        (200, call(&d, Some(&cookie), "GET", &path_of(&name), None)),
        (
            200,
            call(
                &d,
                Some(&cookie),
                "GET",
                &format!("{CAPTURES}{ALICE}/"),
                None,
            ),
        ),
        (
            404,
            call(
                &d,
                Some(&cookie),
                "GET",
                &path_of(&format!("{name}x")),
                None,
            ),
        ),
        (401, call(&d, None, "GET", &path_of(&name), None)),
    ];
    for (status, reply) in answers {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.header("Content-Type"), Some(MEDIA_TYPE), "{status}");
        reply.json();
    }
    assert_eq!(poll(&d, &cookie, &name)["state"], "complete");
}

/// `GET /instanceconsole/{name}`: the serial log's end as text (CRLF kept),
/// with when it was written, in the documented form; scoped as captures are.
#[test]
fn the_instance_console_is_the_end_of_the_serial_log_as_text() {
    let (_lock, d, _dir) = setup(0);
    let cookie = authenticate(&d, ALICE, ALICE_PASSWORD).unwrap();
    let name = format!("{ALICE}/panic");
    let path = format!("/instanceconsole{name}");
    let reply = call(&d, Some(&cookie), "GET", &path, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let log = std::fs::read(fixtures::fixtures_dir().join("run/panic-serial.log")).unwrap();
    let want = String::from_utf8_lossy(&log[log.len().saturating_sub(64 * 1024)..]);
    assert_eq!(body["output"].as_str(), Some(want.as_ref()));
    assert!(want.contains("Kernel panic - not syncing") && want.contains("\r\n"));
    assert_eq!(body["name"], name.as_str());
    let uri = body["uri"].as_str().unwrap();
    assert!(uri.starts_with("http://") && uri.ends_with(&path), "{uri}");
    // 2016-06-17T09:21:19.662570: UTC, microseconds, no zone.
    let t = body["timestamp"].as_str().unwrap();
    assert!(
        t.len() == 26 && &t[10..11] == "T" && &t[19..20] == "." && !t.ends_with('Z'),
        "{t}"
    );

    // Bob's project owns no fixture: not found, as another tenant's capture.
    let bob = authenticate(&d, BOB, BOB_PASSWORD).unwrap();
    let hidden = call(
        &d,
        Some(&bob),
        "GET",
        &format!("/instanceconsole{BOB}/panic"),
        None,
    );
    assert_eq!(hidden.status, 404, "{}", hidden.text());
    assert_eq!(call(&d, None, "GET", &path, None).status, 401);
    assert_eq!(call(&d, Some(&cookie), "POST", &path, None).status, 405);
}
