//! Recordings shipped by the uploads service (`[uploads]`), on the real
//! daemon, driven through Huawei Workspace's records with an X-Auth-Token
//! (plain HTTP, no SDK): a FULL recording of a tenant's guest, once stopped,
//! is uploaded (video and events) to a directory and to a real S3 server
//! (s3s-fs) and reaches UPLOAD_COMPLETED, the objects equal to the files and
//! to the row's SHA-256, the record naming its bucket and folder; the S3
//! server gone makes it UPLOAD_FAILED with a reason that names no endpoint;
//! a `kill -9` while UPLOADING (uploads held by `chunk_pause_ms`) resumes at
//! the next start and completes, and an UPLOADING recording is not deleted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::daemon::{Daemon, PROJECT_A};
use common::fixtures::tempdir;
use common::host::{wait_until, LibvirtdLock};
use common::http::{send, Reply};
use common::owned::Owned;
use common::s3::S3Server;

const TOKEN_A: &str = "huawei-test-token-project-a-0001";
const BUCKET: &str = "recordings-bucket";

/// `[store]` kept in `dir` (a restarted daemon finds it), `[huawei]` with a
/// token of project A, `[recordings]` in `dir/recordings`, and `uploads`.
fn config(dir: &Path, uploads: &str) -> String {
    let tokens = dir.join("huawei-tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nid = \"{TOKEN_A}\"\nuser_id = \"user-a\"\nproject_id = \"{PROJECT_A}\"\nroles = [\"member\"]\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[store]\npath = \"{}\"\n\n\
         [huawei]\ncredentials_file = \"@KEYS@\"\ntokens_file = \"{}\"\n\n\
         [recordings]\ndir = \"{}\"\n\n{uploads}\n",
        dir.join("vmshot.db").display(),
        tokens.display(),
        dir.join("recordings").display(),
    )
}

fn dir_target(path: &Path) -> String {
    format!(
        "[[uploads.targets]]\nname = \"local\"\nkind = \"dir\"\npath = \"{}\"\n",
        path.display()
    )
}

fn s3_target(s3: &S3Server, dir: &Path) -> String {
    format!(
        "[[uploads.targets]]\nname = \"obs\"\nkind = \"s3\"\nendpoint = \"{}\"\n\
         bucket = \"{BUCKET}\"\nprefix = \"vmshot\"\nallow_http = true\ncredentials_file = \"{}\"\n",
        s3.endpoint(),
        s3.credentials_file(dir, None).display()
    )
}

/// A Workspace call of project A with its token.
fn call(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> Reply {
    let target = format!("/v2/{PROJECT_A}/screen-records{path}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("X-Auth-Token", TOKEN_A)];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    send(d.addr, method, &target, &headers, body.as_bytes())
}

/// Records `guest` (FULL, 2 fps) for about two seconds; the record as the
/// stop returns it (REC_COMPLETED).
fn record(d: &Daemon, guest: &Owned) -> Value {
    let started = call(
        d,
        "POST",
        "",
        Some(json!({"desktop_id": guest.uuid, "type": "FULL", "fps": 2})),
    );
    assert_eq!(started.status, 200, "{}", started.text());
    let id = started.json()["id"].as_str().unwrap().to_owned();
    // Frames written, not a fixed sleep: the video must not be empty.
    wait_until("a frame recorded", Duration::from_secs(30), || {
        call(d, "GET", &format!("/{id}"), None).json()["size"].as_u64() > Some(0)
    });
    std::thread::sleep(Duration::from_secs(2));
    let stopped = call(d, "POST", &format!("/{id}/stop"), None);
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    let record = stopped.json();
    assert_eq!(record["status"], "REC_COMPLETED", "{record}");
    record
}

/// Polls the record until `done` holds of it.
fn record_until(d: &Daemon, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(what, Duration::from_secs(90), || {
        let reply = call(d, "GET", &format!("/{id}"), None);
        assert_eq!(reply.status, 200, "{}", reply.text());
        last = reply.json();
        done(&last)
    });
    last
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The recording's two files on disk, with the digests the record gives.
fn files(dir: &Path, record: &Value) -> [(String, Vec<u8>); 2] {
    ["video", "event"].map(|f| {
        let name = record[format!("{f}_filename")].as_str().unwrap().to_owned();
        let bytes = std::fs::read(dir.join("recordings").join(&name)).unwrap();
        assert_eq!(
            record[format!("{f}_file_sha256")].as_str(),
            Some(sha256(&bytes).as_str()),
            "{record}"
        );
        (name, bytes)
    })
}

#[test]
fn a_full_recording_lands_in_a_directory_and_a_bucket_whole() {
    let _lock = LibvirtdLock::shared();
    common::host::ensure_libvirtd();
    let dir = tempdir();
    let guest = Owned::running(&format!("vmshot-ru-a-{}", std::process::id()), PROJECT_A);
    let s3 = S3Server::start(BUCKET);
    let out = dir.join("uploads");
    let uploads = format!(
        "[uploads]\n\n{}\n{}",
        dir_target(&out),
        s3_target(&s3, &dir)
    );
    let d = Daemon::start("", &config(&dir, &uploads));
    let stopped = record(&d, &guest);
    let id = stopped["id"].as_str().unwrap().to_owned();
    let done = record_until(&d, &id, "UPLOAD_COMPLETED", |r| {
        !matches!(r["status"].as_str(), Some("REC_COMPLETED" | "UPLOADING"))
    });
    assert_eq!(done["status"], "UPLOAD_COMPLETED", "{done}\n{}", d.logs());
    assert_eq!(done["obs_bucket"], BUCKET, "{done}");
    assert_eq!(done["file_directory"], "vmshot/recordings", "{done}");
    assert_eq!(done["upload_type"], "OBS", "{done}");
    for (name, bytes) in files(&dir, &done) {
        let local = std::fs::read(out.join("recordings").join(&name)).unwrap();
        assert!(local == bytes, "{name}: the directory's copy differs");
        let object = s3
            .object(BUCKET, &format!("vmshot/recordings/{name}"))
            .unwrap_or_else(|| panic!("{name}: no object"));
        assert!(object == bytes, "{name}: the bucket's copy differs");
        assert_eq!(sha256(&object), sha256(&bytes));
    }
    // Finished: it may go now.
    let deleted = call(
        &d,
        "POST",
        "/batch-delete",
        Some(json!({"screen_records": [{"id": id}]})),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.text());
}

#[test]
fn an_s3_server_gone_fails_the_upload_with_a_reason() {
    let _lock = LibvirtdLock::shared();
    common::host::ensure_libvirtd();
    let dir = tempdir();
    let guest = Owned::running(&format!("vmshot-ru-b-{}", std::process::id()), PROJECT_A);
    let mut s3 = S3Server::start(BUCKET);
    let uploads = format!(
        "[uploads]\nmax_attempts = 2\nbackoff_ms = 100\nconnect_timeout_secs = 1\n\n{}",
        s3_target(&s3, &dir)
    );
    s3.kill();
    let d = Daemon::start("", &config(&dir, &uploads));
    let stopped = record(&d, &guest);
    let id = stopped["id"].as_str().unwrap().to_owned();
    let done = record_until(&d, &id, "the upload's end", |r| {
        !matches!(r["status"].as_str(), Some("REC_COMPLETED" | "UPLOADING"))
    });
    assert_eq!(done["status"], "UPLOAD_FAILED", "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.contains("obs:"), "{reason}");
    assert!(reason.contains("gave up after 2 attempts"), "{reason}");
    assert!(
        !reason.contains("127.0.0.1"),
        "the endpoint leaked: {reason}"
    );
    assert!(
        !reason.contains(dir.to_str().unwrap()),
        "a path leaked: {reason}"
    );
    assert!(std::fs::read_dir(s3.dir.join(BUCKET))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn kill_9_while_uploading_resumes_and_completes() {
    let _lock = LibvirtdLock::shared();
    common::host::ensure_libvirtd();
    let dir = tempdir();
    let guest = Owned::running(&format!("vmshot-ru-c-{}", std::process::id()), PROJECT_A);
    let out = dir.join("uploads");
    let slow = format!(
        "[uploads]\nchunk_kib = 1\nchunk_pause_ms = 1500\n\n{}",
        dir_target(&out)
    );
    let mut first = Daemon::start("", &config(&dir, &slow));
    let stopped = record(&first, &guest);
    let id = stopped["id"].as_str().unwrap().to_owned();
    record_until(&first, &id, "UPLOADING", |r| r["status"] == "UPLOADING");
    // Its files are being read: it is not deleted under the upload.
    let refused = call(
        &first,
        "POST",
        "/batch-delete",
        Some(json!({"screen_records": [{"id": id}]})),
    );
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json()["error_code"], "WKS.0409");
    first.kill_9();

    let fast = format!("[uploads]\nchunk_kib = 1\n\n{}", dir_target(&out));
    let second = Daemon::start("", &config(&dir, &fast));
    let done = record_until(&second, &id, "UPLOAD_COMPLETED", |r| {
        r["status"] != "UPLOADING"
    });
    assert_eq!(
        done["status"],
        "UPLOAD_COMPLETED",
        "{done}\n{}",
        second.logs()
    );
    assert_eq!(done["upload_type"], "LOCAL", "{done}");
    assert!(done["obs_bucket"].is_null(), "{done}");
    assert_eq!(done["file_directory"], "recordings", "{done}");
    assert!(
        second.logs().contains("recordings' uploads resumed"),
        "{}",
        second.logs()
    );
    for (name, bytes) in files(&dir, &done) {
        let local = std::fs::read(out.join("recordings").join(&name)).unwrap();
        assert!(local == bytes, "{name}: the directory's copy differs");
    }
}

/// A recording cut by `kill -9` while RECORDING: the next start closes it
/// (REC_COMPLETED, cut) and, with uploads on, ships it like any other.
#[test]
fn a_recording_cut_by_kill_9_is_closed_then_uploaded() {
    let _lock = LibvirtdLock::shared();
    common::host::ensure_libvirtd();
    let dir = tempdir();
    let guest = Owned::running(&format!("vmshot-ru-d-{}", std::process::id()), PROJECT_A);
    let out = dir.join("uploads");
    let uploads = format!("[uploads]\nchunk_kib = 4\n\n{}", dir_target(&out));
    let mut first = Daemon::start("", &config(&dir, &uploads));
    let started = call(
        &first,
        "POST",
        "",
        Some(json!({"desktop_id": guest.uuid, "type": "FULL", "fps": 2})),
    );
    assert_eq!(started.status, 200, "{}", started.text());
    let id = started.json()["id"].as_str().unwrap().to_owned();
    record_until(&first, &id, "a frame recorded", |r| {
        r["size"].as_u64() > Some(0)
    });
    first.kill_9();

    let second = Daemon::start("", &config(&dir, &uploads));
    let done = record_until(&second, &id, "the upload's end", |r| {
        !matches!(
            r["status"].as_str(),
            Some("RECORDING" | "REC_COMPLETED" | "UPLOADING")
        )
    });
    assert_eq!(
        done["status"],
        "UPLOAD_COMPLETED",
        "{done}\n{}",
        second.logs()
    );
    assert!(
        done["reason"].as_str().unwrap_or_default().contains("cut"),
        "{done}"
    );
    for (name, bytes) in files(&dir, &done) {
        let local = std::fs::read(out.join("recordings").join(&name)).unwrap();
        assert!(local == bytes, "{name}: the directory's copy differs");
    }
}
