//! Oracle Compute Classic's screen capture requests on the real daemon, the
//! real libvirtd and the fixture guests, over plain HTTP as Oracle's curl
//! examples make them: authenticate for a nimbula cookie, create a capture,
//! poll it to `complete`, fetch its JPEG; the throttle, a cancel, a delete,
//! another user's view, and a `kill -9` between the answer and the capture.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::daemon::Daemon;
use common::fixtures::{self, shows_pattern, PATTERN, PATTERN_1080, STALL};
use common::host::{qemu_pid, stall_guard, Frozen, LibvirtdLock};
use common::http::{send, Reply};
use common::image_check::decode_rgb;

const MEDIA_TYPE: &str = "application/oracle-compute-v3+json";
const ALICE: &str = "/Compute-acme/alice";
const ALICE_PASSWORD: &str = "oracle-test-password-a";
const BOB: &str = "/Compute-acme/bob";
const BOB_PASSWORD: &str = "oracle-test-password-b";

/// Two users of two projects; the hashes are of the passwords above
/// (Argon2id, the crate's defaults).
const USERS: &str = r#"
[[user]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$MeDYB9OU3kIZyLNm6t1W3g$cHVK+3/4mOSP7oOM0qcIYOpVVmbJHxptnluQE9vv08w"
roles = ["Compute_Operations"]

[[user]]
name = "bob"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$NbALI51wM2sl7j596bu2LA$H/PuF6+NsqyE9YdRSWQqa7j5zOqVVaapZ+zLsyqX37s"
roles = ["Compute_Operations"]
project = "2c1d8f6b-5a9e-4d3f-8b72-1e4f6a8b0c22"
"#;

/// The `[oracle]` section (users written to `dir`) and, if given, a store
/// of the test's own that outlives one daemon.
fn oracle_section(dir: &Path, start_delay_ms: u64, store: Option<&Path>) -> String {
    let users = dir.join("oracle-users.toml");
    std::fs::write(&users, USERS).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = String::new();
    if let Some(store) = store {
        text += &format!("[store]\npath = \"{}\"\n\n", store.display());
    }
    text += &format!(
        "[oracle]\ncredentials_file = \"{}\"\nidentity_domain = \"acme\"\n\
         start_delay_ms = {start_delay_ms}\n\n[oracle.instances]\n\
         \"pattern\" = \"{}\"\n\"pattern-1080\" = \"{}\"\n\"stall\" = \"{STALL}\"\n",
        users.display(),
        PATTERN.domain(),
        PATTERN_1080.domain()
    );
    text
}

fn setup(start_delay_ms: u64) -> (LibvirtdLock, Daemon, std::path::PathBuf) {
    let lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let daemon = Daemon::start("", &oracle_section(&dir, start_delay_ms, None));
    (lock, daemon, dir)
}

/// One call with the cookie (if any) and Oracle's media type.
fn call(d: &Daemon, cookie: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let cookie = cookie.map(|c| format!("nimbula={c}"));
    let mut headers = vec![("Accept", MEDIA_TYPE)];
    if !body.is_empty() {
        headers.push(("Content-Type", MEDIA_TYPE));
    }
    if let Some(c) = &cookie {
        headers.push(("Cookie", c));
    }
    send(d.addr, method, path, &headers, body.as_bytes())
}

/// The nimbula cookie's value for `user`, or the failed reply.
fn authenticate(d: &Daemon, user: &str, password: &str) -> Result<String, Reply> {
    let reply = call(
        d,
        None,
        "POST",
        "/authenticate/",
        Some(json!({"user": user, "password": password})),
    );
    if reply.status != 204 {
        return Err(reply);
    }
    let set = reply.header("Set-Cookie").expect("Set-Cookie").to_owned();
    let value = set
        .strip_prefix("nimbula=")
        .and_then(|v| v.split(';').next())
        .expect("a nimbula cookie");
    Ok(value.to_owned())
}

fn create(d: &Daemon, cookie: &str, instance: &str) -> Reply {
    call(
        d,
        Some(cookie),
        "POST",
        "/console/screencapture/",
        Some(json!({"instance": instance, "cancel": false})),
    )
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

#[test]
fn a_capture_is_created_polled_to_complete_and_its_jpeg_served() {
    let (_lock, d, _dir) = setup(0);

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

#[test]
fn a_capture_cancelled_while_pending_ends_cancelled() {
    // Each capture waits 5 s in pending: the cancel lands before the grab.
    let (_lock, d, _dir) = setup(5000);
    let cookie = authenticate(&d, ALICE, ALICE_PASSWORD).unwrap();
    let created = create(&d, &cookie, &format!("{ALICE}/pattern-1080"));
    assert_eq!(created.status, 201, "{}", created.text());
    let name = created.json()["name"].as_str().unwrap().to_owned();
    let asked = call(
        &d,
        Some(&cookie),
        "PUT",
        &path_of(&name),
        Some(json!({"cancel": true})),
    );
    assert_eq!(asked.status, 200, "{}", asked.text());
    let asked = asked.json();
    assert_eq!(asked["cancel"], true);
    assert!(
        ["queued", "pending"].contains(&asked["state"].as_str().unwrap()),
        "{asked}"
    );
    assert_eq!(asked["cancellation"]["state"], "requested");
    let done = poll(&d, &cookie, &name);
    assert_eq!(done["state"], "error", "{done}");
    assert_eq!(done["error_reason"], "cancelled");
    assert_eq!(done["cancellation"]["state"], "complete");
    assert!(done["media_uri"].is_null(), "{done}");
    assert_eq!(
        call(&d, Some(&cookie), "DELETE", &path_of(&name), None).status,
        204
    );
}

#[test]
fn a_capture_acknowledged_before_kill_9_is_never_left_unfinished() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let store = dir.join("kept.db");
    // The capture waits 3 s in pending, so the kill lands before its grab.
    let mut first = Daemon::start("", &oracle_section(&dir, 3000, Some(&store)));
    let cookie = authenticate(&first, ALICE, ALICE_PASSWORD).unwrap();
    let created = create(&first, &cookie, &format!("{ALICE}/pattern"));
    assert_eq!(created.status, 201, "{}", created.text());
    let name = created.json()["name"].as_str().unwrap().to_owned();
    first.kill_9();

    let second = Daemon::start("", &oracle_section(&dir, 0, Some(&store)));
    // The job was queued or pending: recovery resumes it.
    let recovered = second.wait_for_log("oracle jobs recovered", Duration::from_secs(20));
    assert!(
        recovered.is_some_and(|l| l.contains("\"resumed\":1")),
        "{}",
        second.logs()
    );
    // Without a cookie key file each start signs with its own key.
    let cookie = authenticate(&second, ALICE, ALICE_PASSWORD).unwrap();
    let done = poll(&second, &cookie, &name);
    match done["state"].as_str().unwrap() {
        "complete" => assert!(done["media_uri"].is_string(), "{done}"),
        _ => assert!(
            done["error_reason"]
                .as_str()
                .unwrap()
                .starts_with("vmshot restarted during "),
            "{done}"
        ),
    }
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

/// A grab stuck on a frozen QEMU when the daemon is killed: after the
/// restart the capture ends in error, saying so, and is never left
/// `in-progress`.
#[test]
fn a_capture_killed_mid_grab_ends_in_error_after_the_restart() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let _stall = stall_guard();
    let dir = fixtures::tempdir();
    let store = dir.join("kept.db");
    let mut first = Daemon::start("", &oracle_section(&dir, 0, Some(&store)));
    let cookie = authenticate(&first, ALICE, ALICE_PASSWORD).unwrap();
    let frozen = Frozen::new(qemu_pid(STALL));
    let created = create(&first, &cookie, &format!("{ALICE}/stall"));
    assert_eq!(created.status, 201, "{}", created.text());
    let name = created.json()["name"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = call(&first, Some(&cookie), "GET", &path_of(&name), None).json();
        if now["state"] == "in-progress" {
            break;
        }
        assert!(Instant::now() < deadline, "never in-progress: {now}");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill_9();
    drop(frozen);

    let second = Daemon::start("", &oracle_section(&dir, 0, Some(&store)));
    let cookie = authenticate(&second, ALICE, ALICE_PASSWORD).unwrap();
    let done = poll(&second, &cookie, &name);
    assert_eq!(done["state"], "error", "{done}");
    assert_eq!(done["error_reason"], "vmshot restarted during in-progress");
    assert!(done["media_uri"].is_null(), "{done}");
}
