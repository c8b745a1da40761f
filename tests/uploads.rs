//! Uploads of Oracle's captures to storage targets on the real daemon: a
//! directory and a real S3-compatible server (s3s-fs, which checks SigV4
//! signatures), the objects read back and decoded, their digests against
//! the Marketplace status API's `checkSum`; a `kill -9` of vmshot halfway
//! through an upload, resumed from the chunks it had recorded; the S3
//! server killed between a chunk and the completion (a retry that
//! completes once it is back, or `Failed` if it stays away, never a false
//! `Completed`); wrong credentials, failed with a reason that names no
//! secret; and the Marketplace API's errors and tenant scope.
//!
//! Uploads are held halfway by `[uploads] chunk_pause_ms` (a test hook,
//! zero by default: a wait after each chunk).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::daemon::Daemon;
use common::fixtures::{self, secret_file, shows_pattern};
use common::host::{wait_until, LibvirtdLock};
use common::http::{send, Reply};
use common::image_check::decode_rgb;
use common::oracle;
use common::s3::S3Server;

const ALICE: &str = "/Compute-acme/alice";
const ALICE_PASSWORD: &str = "oracle-test-password-a";
const BUCKET: &str = "captures-bucket";
const MACHINE_IMAGES: &str = "/appstore/publisher/v1/machineimages";

/// alice (no project: she sees every guest); her hash is the one
/// tests/oracle.rs uses.
const USERS: &str = r#"
[[user]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$MeDYB9OU3kIZyLNm6t1W3g$cHVK+3/4mOSP7oOM0qcIYOpVVmbJHxptnluQE9vv08w"
roles = ["Compute_Operations"]
"#;

/// Marketplace bearer tokens: an admin, and a partner of another tenant.
const ADMIN_TOKEN: &str = "marketplace-admin-token-0001";
const OTHER_TOKEN: &str = "marketplace-other-tenant-0002";
const TOKENS: &str = r#"
[[token]]
id = "marketplace-admin-token-0001"
user_id = "publisher@example.com"
roles = ["admin"]

[[token]]
id = "marketplace-other-tenant-0002"
user_id = "other@example.com"
project_id = "9e9e9e9e-0000-4000-8000-000000000000"
"#;

/// `[store]` (kept at `store`, so a restarted daemon finds it), `[oracle]`
/// with the pattern guest, `[marketplace]` and `uploads` (an `[uploads]`
/// body with its targets).
fn config(dir: &Path, store: &Path, uploads: &str) -> String {
    format!(
        "[store]\npath = \"{}\"\n\n\
         [oracle]\ncredentials_file = \"{}\"\nidentity_domain = \"acme\"\ncapture_interval_secs = 1\n\n\
         [oracle.instances]\n\"pattern\" = \"{}\"\n\n\
         [marketplace]\ntokens_file = \"{}\"\n\n\
         {uploads}\n",
        store.display(),
        secret_file(dir, "oracle-users.toml", USERS).display(),
        fixtures::PATTERN.domain(),
        secret_file(dir, "marketplace-tokens.toml", TOKENS).display(),
    )
}

fn dir_target(path: &Path) -> String {
    format!(
        "[[uploads.targets]]\nname = \"local\"\nkind = \"dir\"\npath = \"{}\"\n",
        path.display()
    )
}

fn s3_target(s3: &S3Server, dir: &Path, secret: Option<&str>) -> String {
    format!(
        "[[uploads.targets]]\nname = \"obs\"\nkind = \"s3\"\nendpoint = \"{}\"\n\
         bucket = \"{BUCKET}\"\nprefix = \"vmshot\"\nallow_http = true\ncredentials_file = \"{}\"\n",
        s3.endpoint(),
        s3.credentials_file(dir, secret).display()
    )
}

fn login(d: &Daemon) -> String {
    let reply = oracle::call(
        d,
        None,
        "POST",
        "/authenticate/",
        Some(json!({"user": ALICE, "password": ALICE_PASSWORD})),
    );
    assert_eq!(reply.status, 204, "{}", reply.text());
    let set = reply.header("Set-Cookie").unwrap();
    set.strip_prefix("nimbula=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned()
}

/// Creates a capture of the pattern guest; its name.
fn capture(d: &Daemon, cookie: &str) -> String {
    let reply = oracle::call(
        d,
        Some(cookie),
        "POST",
        "/console/screencapture/",
        Some(json!({"instance": format!("{ALICE}/pattern"), "cancel": false})),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["name"].as_str().unwrap().to_owned()
}

/// Polls a capture until it is complete or in error.
fn finished(d: &Daemon, cookie: &str, name: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let c = oracle::call(
            d,
            Some(cookie),
            "GET",
            &format!("/console/screencapture{name}"),
            None,
        );
        assert_eq!(c.status, 200, "{}", c.text());
        let c = c.json();
        if c["state"] == "complete" || c["state"] == "error" {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is still {c}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn market(d: &Daemon, method: &str, target: &str, token: Option<&str>) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("X-Oracle-UserId", "publisher@example.com")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    send(d.addr, method, target, &headers, b"")
}

fn status(d: &Daemon, id: i64) -> Value {
    let reply = market(
        d,
        "GET",
        &format!("{MACHINE_IMAGES}/{id}"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Polls the Marketplace status until `done` says so.
fn status_until(d: &Daemon, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(d, id);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s}\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first line the daemon logged with `message`, waiting for it: a
/// line logged as it starts comes before "listening", which `wait_for_log`
/// would have read past.
fn logged(d: &Daemon, message: &str) -> Value {
    let needle = format!("\"message\":\"{message}\"");
    let find = || {
        d.logs()
            .lines()
            .find(|l| l.contains(&needle))
            .map(|l| serde_json::from_str(l).unwrap())
    };
    wait_until(message, Duration::from_secs(30), || find().is_some());
    find().unwrap()
}

/// The id of the upload the daemon queued (each test makes one).
fn upload_id(d: &Daemon) -> i64 {
    let line = logged(d, "upload queued");
    line["upload"]
        .as_i64()
        .unwrap_or_else(|| panic!("no upload id in {line}"))
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn target<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["dataCenterImageUploadRequests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["dataCenterName"] == name)
        .unwrap_or_else(|| panic!("no target {name}: {s}"))
}

/// A capture goes to both targets: the S3 object (as s3s-fs stored it) and
/// the directory's file are the JPEG vmshot serves, byte for byte, show the
/// guest's pattern, and hash to the status API's `checkSum`; the capture's
/// `media_uri` names the S3 object. The API's errors and scope too.
#[test]
fn a_capture_lands_in_a_directory_and_a_bucket_whole_and_checked() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let s3 = S3Server::start(BUCKET);
    let out = dir.join("uploads");
    let uploads = format!("{}\n{}", dir_target(&out), s3_target(&s3, &dir, None));
    let d = Daemon::start("", &config(&dir, &dir.join("vmshot.db"), &uploads));
    let cookie = login(&d);
    let name = capture(&d, &cookie);
    let id = upload_id(&d);
    let done = finished(&d, &cookie, &name, Duration::from_secs(60));
    assert_eq!(done["state"], "complete", "{done}\n{}", d.logs());

    let served = oracle::call(
        &d,
        Some(&cookie),
        "GET",
        &format!("/console/screencapture/media{name}"),
        None,
    );
    assert_eq!(served.status, 200);
    let s = status(&d, id);
    let key = s["imageFilePath"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("captures/job-") && key.ends_with(".jpg"),
        "{s}"
    );
    assert_eq!(s["fileName"], key.rsplit('/').next().unwrap());
    assert_eq!(s["statusName"], "Completed");
    assert_eq!(
        (s["uploadedChunks"].as_u64(), s["pendingChunks"].as_u64()),
        (Some(2), Some(0)),
        "{s}"
    );
    assert_eq!(s["checkSum"], sha256(&served.body).as_str());
    assert_eq!(
        done["media_uri"],
        format!("s3://{BUCKET}/vmshot/{key}").as_str()
    );

    let in_bucket = s3
        .object(BUCKET, &format!("vmshot/{key}"))
        .expect("the object in s3s-fs");
    let in_dir = std::fs::read(out.join(&key)).unwrap();
    for (what, bytes) in [("bucket", &in_bucket), ("directory", &in_dir)] {
        assert_eq!(sha256(bytes), sha256(&served.body), "{what}");
        assert!(
            shows_pattern(&decode_rgb(bytes), 12.0),
            "{what}: not the guest's pattern"
        );
    }
    for t in ["local", "obs"] {
        let t = target(&s, t);
        assert_eq!(
            (t["statusName"].as_str(), t["uploadProgress"].as_str()),
            (Some("Completed"), Some("100%")),
            "{t}"
        );
    }
    assert_eq!(target(&s, "obs")["bucketName"], BUCKET);
    // Nothing half-written is left beside the file.
    let names: Vec<_> = std::fs::read_dir(out.join("captures"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // HEAD says the same in headers.
    let head = market(
        &d,
        "HEAD",
        &format!("{MACHINE_IMAGES}/{id}"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("X-Upload-Status"), Some("Completed"));
    assert_eq!(head.header("X-Upload-File-Path"), Some(key.as_str()));
    assert!(head.body.is_empty());

    // Errors: a bad id, no or a wrong token, none such, and another
    // tenant's upload, which is not found in the same words.
    let bad = market(
        &d,
        "GET",
        &format!("{MACHINE_IMAGES}/abc"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        (bad.status, bad.json()["errorCode"].as_str()),
        (400, Some("InvalidParameter"))
    );
    let anonymous = market(&d, "GET", &format!("{MACHINE_IMAGES}/{id}"), None);
    assert_eq!(
        (anonymous.status, anonymous.json()["errorCode"].as_str()),
        (401, Some("NotAuthorized"))
    );
    let wrong = market(
        &d,
        "GET",
        &format!("{MACHINE_IMAGES}/{id}"),
        Some("not-a-known-token-at-all"),
    );
    assert_eq!(wrong.status, 401);
    let none = market(
        &d,
        "GET",
        &format!("{MACHINE_IMAGES}/999999"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        (none.status, none.json()["errorCode"].as_str()),
        (404, Some("EntityNotFound"))
    );
    let other = market(
        &d,
        "GET",
        &format!("{MACHINE_IMAGES}/{id}"),
        Some(OTHER_TOKEN),
    );
    assert_eq!(other.status, 404);
    assert_eq!(
        other.json()["errorMessage"]
            .as_str()
            .unwrap()
            .replace(&id.to_string(), "N"),
        none.json()["errorMessage"]
            .as_str()
            .unwrap()
            .replace("999999", "N")
    );
    let post = market(
        &d,
        "POST",
        &format!("{MACHINE_IMAGES}/{id}"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(post.status, 405);
}

/// `kill -9` of vmshot with an upload halfway (1 KiB chunks, a pause after
/// each): the next start resumes it from the chunks recorded, the capture
/// (left `uploading`) completes, and the file is the capture's JPEG.
#[test]
fn kill_9_halfway_resumes_from_the_recorded_chunks() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let store = dir.join("kept.db");
    let out = dir.join("uploads");
    let slow = format!(
        "[uploads]\nchunk_kib = 1\nchunk_pause_ms = 150\n\n{}",
        dir_target(&out)
    );
    let mut first = Daemon::start("", &config(&dir, &store, &slow));
    let cookie = login(&first);
    let name = capture(&first, &cookie);
    let id = upload_id(&first);
    let before = status_until(&first, id, "3 chunks in", |s| {
        s["uploadedChunks"].as_u64() >= Some(3)
    });
    let total =
        before["uploadedChunks"].as_u64().unwrap() + before["pendingChunks"].as_u64().unwrap();
    assert!(
        total > 6,
        "the capture is too small to stop halfway: {before}"
    );
    first.kill_9();
    // What the first run acknowledged is still there after the kill.
    let kept = before["uploadedChunks"].as_u64().unwrap();

    let fast = format!("[uploads]\nchunk_kib = 1\n\n{}", dir_target(&out));
    let second = Daemon::start("", &config(&dir, &store, &fast));
    let resumed = logged(&second, "upload resumed");
    let chunks_kept = resumed["chunks_kept"].as_u64().unwrap();
    assert!(
        chunks_kept >= kept,
        "{resumed}: fewer than the {kept} seen before the kill"
    );
    let cookie = login(&second);
    let done = finished(&second, &cookie, &name, Duration::from_secs(60));
    assert_eq!(done["state"], "complete", "{done}\n{}", second.logs());
    let s = status(&second, id);
    assert_eq!(
        (s["statusName"].as_str(), s["pendingChunks"].as_u64()),
        (Some("Completed"), Some(0)),
        "{s}"
    );
    let served = oracle::call(
        &second,
        Some(&cookie),
        "GET",
        &format!("/console/screencapture/media{name}"),
        None,
    );
    let file = std::fs::read(out.join(s["imageFilePath"].as_str().unwrap())).unwrap();
    assert_eq!(sha256(&file), sha256(&served.body));
    assert_eq!(s["checkSum"], sha256(&file).as_str());
    assert!(shows_pattern(&decode_rgb(&file), 12.0));
}

/// The S3 server killed after the chunk and before the completion: the
/// upload retries (the status says why, still "In Progress"), and once the
/// server is back on its port and directory it completes with the chunk
/// acknowledged before the kill; read back whole.
#[test]
fn s3_killed_mid_upload_is_retried_and_completes_when_it_returns() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let mut s3 = S3Server::start(BUCKET);
    let uploads = format!(
        "[uploads]\nchunk_pause_ms = 1500\nmax_attempts = 50\nbackoff_ms = 200\nmax_backoff_secs = 1\n\
         connect_timeout_secs = 2\nrequest_timeout_secs = 5\n\n{}",
        s3_target(&s3, &dir, None)
    );
    let d = Daemon::start("", &config(&dir, &dir.join("vmshot.db"), &uploads));
    let cookie = login(&d);
    let name = capture(&d, &cookie);
    let id = upload_id(&d);
    status_until(&d, id, "the chunk in", |s| s["uploadedChunks"] == 1);
    s3.kill();
    let failing = status_until(&d, id, "a retry", |s| {
        !target(s, "obs")["errorMessage"].is_null()
    });
    assert_eq!(failing["statusName"], "In Progress", "{failing}");
    let why = target(&failing, "obs")["errorMessage"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        why.contains("could not be reached") || why.contains("broke"),
        "{why}"
    );
    assert!(!why.contains("127.0.0.1"), "the endpoint leaked: {why}");
    s3.resume();
    let done = finished(&d, &cookie, &name, Duration::from_secs(60));
    assert_eq!(done["state"], "complete", "{done}\n{}", d.logs());
    let s = status(&d, id);
    assert_eq!(s["statusName"], "Completed");
    let key = format!("vmshot/{}", s["imageFilePath"].as_str().unwrap());
    let object = s3.object(BUCKET, &key).expect("the object");
    assert_eq!(s["checkSum"], sha256(&object).as_str());
    assert!(shows_pattern(&decode_rgb(&object), 12.0));
}

/// The S3 server gone for good: the attempts are spent, the target and
/// the capture fail with the reason, and no object exists.
#[test]
fn s3_that_stays_away_fails_the_upload_never_completes_it() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let mut s3 = S3Server::start(BUCKET);
    let uploads = format!(
        "[uploads]\nmax_attempts = 3\nbackoff_ms = 100\nconnect_timeout_secs = 1\n\n{}",
        s3_target(&s3, &dir, None)
    );
    s3.kill();
    let d = Daemon::start("", &config(&dir, &dir.join("vmshot.db"), &uploads));
    let cookie = login(&d);
    let name = capture(&d, &cookie);
    let id = upload_id(&d);
    let done = finished(&d, &cookie, &name, Duration::from_secs(60));
    assert_eq!(done["state"], "error", "{done}");
    let reason = done["error_reason"].as_str().unwrap();
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    let s = status(&d, id);
    assert_eq!(s["statusName"], "Failed");
    assert_eq!(target(&s, "obs")["statusName"], "Failed");
    assert_ne!(target(&s, "obs")["uploadProgress"], "100%");
    assert!(std::fs::read_dir(s3.dir.join(BUCKET))
        .unwrap()
        .next()
        .is_none());
}

/// A wrong secret: s3s-fs refuses the signature, the target fails at once
/// with a reason that says so, and neither the status nor the capture's
/// error names the keys or the endpoint.
#[test]
fn wrong_credentials_fail_with_a_reason_that_leaks_no_secret() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let s3 = S3Server::start(BUCKET);
    let wrong_secret = "wrong-secret-0123456789abcdef0123456789";
    let uploads = s3_target(&s3, &dir, Some(wrong_secret));
    let d = Daemon::start("", &config(&dir, &dir.join("vmshot.db"), &uploads));
    let cookie = login(&d);
    let name = capture(&d, &cookie);
    let id = upload_id(&d);
    let done = finished(&d, &cookie, &name, Duration::from_secs(60));
    assert_eq!(done["state"], "error", "{done}");
    let s = status(&d, id);
    let why = target(&s, "obs")["errorMessage"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("refused the credentials"), "{why}");
    let reason = done["error_reason"].as_str().unwrap().to_owned();
    let body = s.to_string();
    for text in [&why, &reason, &body] {
        for secret in [wrong_secret, &s3.access_key, &s3.secret_key, "127.0.0.1"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    assert!(std::fs::read_dir(s3.dir.join(BUCKET))
        .unwrap()
        .next()
        .is_none());
}
