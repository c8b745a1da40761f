//! Huawei Workspace's screen records on the real daemon, driven by the real
//! `huaweicloudsdkworkspace` 3.1.219 (tests/sdk/huawei.py): the SDK lists,
//! shows and deletes records and sees every refusal as Huawei's
//! `ClientRequestException`; requests the SDK has no call for (start, stop,
//! downloads) are signed by the SDK's own signer, or carry an X-Auth-Token.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};

use common::daemon::{
    Daemon, ADMIN_KEY, KEY_ID, PROJECT_A, PROJECT_A_KEY, PROJECT_B, PROJECT_B_KEY, SECRET,
};
use common::fixtures::tempdir;
use common::sdk::huawei;

const TOKEN_A: &str = "huawei-test-token-project-a-0001";
const TOKEN_B: &str = "huawei-test-token-project-b-0001";
const TOKEN_EXPIRED: &str = "huawei-test-token-expired-00001";

/// `[huawei]` on the test keys, with tokens for each project, and the
/// recordings it needs.
fn sections(dir: &Path) -> String {
    let tokens = dir.join("huawei-tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nid = \"{TOKEN_A}\"\nuser_id = \"user-a\"\nproject_id = \"{PROJECT_A}\"\nroles = [\"member\"]\n\n\
             [[token]]\nid = \"{TOKEN_B}\"\nuser_id = \"user-b\"\nproject_id = \"{PROJECT_B}\"\n\n\
             [[token]]\nid = \"{TOKEN_EXPIRED}\"\nuser_id = \"user-a\"\nproject_id = \"{PROJECT_A}\"\nexpires = \"2020-01-01T00:00:00Z\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[huawei]\ncredentials_file = \"@KEYS@\"\ntokens_file = \"{}\"\n\n{}",
        tokens.display(),
        recordings_section(dir)
    )
}

/// The recordings service, files under `dir/recordings`.
fn recordings_section(dir: &Path) -> String {
    format!(
        "[recordings]\ndir = \"{}\"\n",
        dir.join("recordings").display()
    )
}

fn endpoint(d: &Daemon) -> String {
    format!("http://{}", d.addr)
}

/// An SDK error line: (status, code, message).
fn refused(line: &Value) -> (u64, String, String) {
    assert_eq!(line["ok"], false, "{line}");
    assert_eq!(line["exception"], "ClientRequestException", "{line}");
    let id = line["request_id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "every answer carries X-Request-Id: {line}"
    );
    (
        line["status_code"].as_u64().unwrap(),
        line["error_code"].as_str().unwrap().to_owned(),
        line["error_msg"].as_str().unwrap().to_owned(),
    )
}

/// A raw call's line: (status, body as JSON or null).
fn raw_reply(line: &Value) -> (u64, Value) {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD
        .decode(line["body_b64"].as_str().unwrap())
        .unwrap();
    let headers = line["headers"].as_object().unwrap();
    assert!(
        headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("x-request-id")),
        "every answer carries X-Request-Id: {line}"
    );
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (line["status_code"].as_u64().unwrap(), json)
}

/// `X-Sdk-Date` for `secs` from now.
fn sdk_date(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.format(time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .unwrap()
}

#[test]
fn the_sdk_lists_an_empty_project_and_sees_each_refusal_as_huaweis() {
    let dir = tempdir();
    let d = Daemon::start("", &sections(&dir));
    let url = endpoint(&d);

    let lines = huawei(
        &url,
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([
            {"call": "list"},
            {"call": "list", "params": {"limit": 5, "offset": 0, "status": "RECORDING", "type": "FULL",
             "desktop_names": "a,b", "username": "alice", "start_time": "2026-11-01 00:00:00",
             "end_time": "2026-11-22 23:59:59", "sort_field": "start_time", "sort_type": "asc"}},
            {"call": "show", "id": "00000000-0000-4000-8000-000000000000"},
            {"call": "list", "params": {"limit": 1001}},
            {"call": "list", "params": {"start_time": "2026-11-01T00:00:00Z"}},
            {"call": "delete", "ids": (0..11).map(|i| format!("r{i}")).collect::<Vec<_>>()},
            {"call": "delete", "ids": ["00000000-0000-4000-8000-000000000000"]},
        ]),
    );
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert_eq!(lines[0]["body"]["total_count"], 0);
    assert_eq!(lines[0]["body"]["screen_records"], json!([]));
    assert_eq!(lines[1]["body"]["total_count"], 0, "{}", lines[1]);
    let (status, code, msg) = refused(&lines[2]);
    assert_eq!((status, code.as_str()), (404, "WKS.0202"), "{msg}");
    assert!(
        msg.contains("00000000-0000-4000-8000-000000000000"),
        "{msg}"
    );
    let (status, code, msg) = refused(&lines[3]);
    assert_eq!((status, code.as_str()), (400, "WKS.0001"));
    assert!(msg.contains("limit"), "{msg}");
    assert_eq!(refused(&lines[4]).1, "WKS.0001");
    assert_eq!(refused(&lines[5]).1, "WKS.0001");
    let (status, code, _) = refused(&lines[6]);
    assert_eq!(
        (status, code.as_str()),
        (404, "WKS.0202"),
        "deleting what is not there"
    );

    // Wrong secret, unknown key, a key with no project.
    let list = json!([{"call": "list"}]);
    let (status, code, msg) =
        refused(&huawei(&url, (PROJECT_A_KEY.0, "wrong"), Some(PROJECT_A), &list)[0]);
    assert_eq!((status, code.as_str()), (401, "APIGW.0301"));
    assert!(msg.contains("verify aksk signature fail"), "{msg}");
    let (_, code, msg) = refused(&huawei(&url, ("no-such-ak", "x"), Some(PROJECT_A), &list)[0]);
    assert_eq!(code, "APIGW.0301");
    assert!(msg.contains("ak not exist"), "{msg}");
    let (status, _, msg) = refused(&huawei(&url, (KEY_ID, SECRET), Some(PROJECT_A), &list)[0]);
    assert_eq!(status, 401);
    assert!(msg.contains("no project"), "{msg}");

    // Another project in the URL and X-Project-Id; the SDK without a
    // project (it sends /v2/%7Bproject_id%7D/...).
    let (status, code, _) = refused(&huawei(&url, PROJECT_A_KEY, Some(PROJECT_B), &list)[0]);
    assert_eq!((status, code.as_str()), (403, "WKS.0003"));
    let (status, code, _) = refused(&huawei(&url, PROJECT_A_KEY, None, &list)[0]);
    assert_eq!((status, code.as_str()), (403, "WKS.0003"));
    // An admin too acts through its own project's URL.
    let (status, _, _) = refused(&huawei(&url, ADMIN_KEY, Some(PROJECT_A), &list)[0]);
    assert_eq!(status, 403);
    assert_eq!(
        huawei(&url, ADMIN_KEY, Some(PROJECT_B), &list)[0]["ok"],
        true
    );
}

#[test]
fn signatures_are_checked_for_time_replay_and_project_and_tokens_stand_in() {
    let dir = tempdir();
    let d = Daemon::start("", &sections(&dir));
    let url = endpoint(&d);
    let now = sdk_date(0);
    let old = sdk_date(-16 * 60);
    let list = "/v2/{project}/screen-records";
    let lines = huawei(
        &url,
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([
            {"call": "raw", "method": "GET", "path": list, "query": {"limit": 1}, "date": now},
            // The same request, byte for byte: a replay.
            {"call": "raw", "method": "GET", "path": list, "query": {"limit": 1}, "date": now},
            {"call": "raw", "method": "GET", "path": list, "query": {"limit": 2}, "date": old},
            // X-Project-Id (signed) naming another project than the path.
            {"call": "raw", "method": "GET", "path": list, "query": {"limit": 3},
             "headers": {"X-Project-Id": PROJECT_B}},
            // Workspace's real neighbours are not served here.
            {"call": "raw", "method": "PUT", "path": "/v2/{project}/screen-records/r1",
             "body": {"traffic_limit_type": "x"}},
            {"call": "raw", "method": "GET", "path": "/v2/{project}/desktops"},
            // Unsigned, with tokens.
            {"call": "raw", "method": "GET", "path": list, "sign": false,
             "headers": {"X-Auth-Token": TOKEN_A}},
            {"call": "raw", "method": "GET", "path": list, "sign": false,
             "headers": {"X-Auth-Token": TOKEN_B}},
            {"call": "raw", "method": "GET", "path": list, "sign": false,
             "headers": {"X-Auth-Token": TOKEN_EXPIRED}},
            {"call": "raw", "method": "GET", "path": list, "sign": false,
             "headers": {"X-Auth-Token": "huawei-test-token-unknown-000001"}},
            {"call": "raw", "method": "GET", "path": list, "sign": false},
            // Signed for another host: not to be replayed here.
            {"call": "raw", "method": "GET", "path": list, "query": {"limit": 4},
             "headers": {"Host": "vmshot.elsewhere.example"}},
            // A body past the server's limit (64 KiB).
            {"call": "raw", "method": "POST", "path": list, "body": "x".repeat(70_000)},
        ]),
    );
    let replies: Vec<(u64, Value)> = lines.iter().map(raw_reply).collect();
    assert_eq!(replies[0].0, 200, "{:?}", replies[0]);
    assert_eq!(replies[0].1["total_count"], 0);
    let auth = |(status, body): &(u64, Value), needle: &str| {
        assert_eq!(
            (*status, body["error_code"].as_str()),
            (401, Some("APIGW.0301")),
            "{body}"
        );
        let msg = body["error_msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
    };
    auth(&replies[1], "replay");
    auth(&replies[2], "X-Sdk-Date");
    assert_eq!(replies[3].0, 403, "{:?}", replies[3]);
    assert_eq!(replies[3].1["error_code"], "WKS.0003");
    for reply in &replies[4..6] {
        assert_eq!(
            (reply.0, reply.1["error_code"].as_str()),
            (404, Some("APIGW.0101")),
            "{reply:?}"
        );
    }
    assert_eq!(replies[6].0, 200, "{:?}", replies[6]);
    assert_eq!(
        replies[7].0, 403,
        "a token of project B on A's URL: {:?}",
        replies[7]
    );
    auth(&replies[8], "expired");
    auth(&replies[9], "not valid");
    auth(&replies[10], "no Authorization");
    auth(&replies[11], "signed for the host");
    assert_eq!(replies[12].0, 413, "{:?}", replies[12]);
    assert_eq!(replies[12].1["error_code"], "APIGW.0201");
}

/// A raw call's body bytes and one header.
fn raw_body(line: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(line["body_b64"].as_str().unwrap())
        .unwrap()
}

fn raw_header<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// One raw call signed with `key` in `project`.
fn raw(d: &Daemon, key: (&str, &str), project: &str, call: Value) -> Value {
    huawei(&endpoint(d), key, Some(project), &json!([call])).remove(0)
}

/// Polls `record` (with a token: unsigned calls are no replays) until
/// `done` holds of it.
fn wait_for_record(d: &Daemon, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    common::host::wait_until(what, std::time::Duration::from_secs(30), || {
        let line = raw(
            d,
            PROJECT_A_KEY,
            PROJECT_A,
            json!({"call": "raw", "method": "GET", "sign": false,
                   "path": format!("/v2/{{project}}/screen-records/{id}"),
                   "headers": {"X-Auth-Token": TOKEN_A}}),
        );
        last = raw_reply(&line).1;
        done(&last)
    });
    last
}

#[test]
fn a_recording_is_started_listed_shown_downloaded_and_deleted() {
    let _lock = common::host::LibvirtdLock::shared();
    common::host::ensure_libvirtd();
    let dir = tempdir();
    let guest =
        common::owned::Owned::running(&format!("vmshot-hw-a-{}", std::process::id()), PROJECT_A);
    let d = Daemon::start("", &sections(&dir));
    let url = endpoint(&d);
    let records = "/v2/{project}/screen-records";

    // Start: the record comes back RECORDING, named after the domain.
    let started = raw(
        &d,
        PROJECT_A_KEY,
        PROJECT_A,
        json!({"call": "raw", "method": "POST", "path": records,
               "body": {"desktop_id": guest.uuid, "type": "FULL", "fps": 2}}),
    );
    let (status, record) = raw_reply(&started);
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "RECORDING");
    assert_eq!(record["type"], "FULL");
    assert_eq!(record["desktop_name"], guest.name);
    assert_eq!(record["desktop_id"], guest.uuid);
    let id = record["id"].as_str().unwrap().to_owned();

    // Project B neither sees nor stops it; the admin sees it.
    let b = huawei(
        &url,
        PROJECT_B_KEY,
        Some(PROJECT_B),
        &json!([
            {"call": "list"}, {"call": "show", "id": id},
        ]),
    );
    assert_eq!(b[0]["body"]["total_count"], 0, "{}", b[0]);
    assert_eq!(refused(&b[1]).1, "WKS.0202");
    let stop_b = raw(
        &d,
        PROJECT_B_KEY,
        PROJECT_B,
        json!({"call": "raw", "method": "POST",
        "path": format!("{records}/{id}/stop")}),
    );
    assert_eq!(raw_reply(&stop_b).0, 404);
    let admin = huawei(
        &url,
        ADMIN_KEY,
        Some(PROJECT_B),
        &json!([{"call": "show", "id": id}]),
    );
    assert_eq!(admin[0]["body"]["id"], id, "{}", admin[0]);

    // Frames arrive; then stop: closed, with digests.
    wait_for_record(&d, &id, "the video grows", |r| {
        r["size"].as_u64().unwrap_or(0) > 0
    });
    let stopped = raw(
        &d,
        PROJECT_A_KEY,
        PROJECT_A,
        json!({"call": "raw", "method": "POST",
        "path": format!("{records}/{id}/stop")}),
    );
    let (status, stopped) = raw_reply(&stopped);
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "REC_COMPLETED");
    let video_sha = stopped["video_file_sha256"].as_str().unwrap().to_owned();
    let events_sha = stopped["event_file_sha256"].as_str().unwrap().to_owned();
    let again = raw(
        &d,
        PROJECT_A_KEY,
        PROJECT_A,
        json!({"call": "raw", "method": "POST",
        "path": format!("{records}/{id}/stop"), "headers": {"X-Retry": "1"}}),
    );
    assert_eq!(raw_reply(&again).1["error_code"], "WKS.0409");

    // The SDK shows and lists it with every field.
    let lines = huawei(
        &url,
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([
            {"call": "show", "id": id},
            {"call": "list", "params": {"desktop_id": guest.uuid}},
            {"call": "list", "params": {"desktop_names": format!("{},other", guest.name), "type": "FULL", "status": "REC_COMPLETED"}},
            {"call": "list", "params": {"type": "INTERVAL"}},
            {"call": "list", "params": {"end_time": "2020-01-01 00:00:00"}},
        ]),
    );
    let shown = &lines[0]["body"];
    assert_eq!(shown["video_file_sha256"], video_sha.as_str(), "{shown}");
    assert_eq!(shown["event_file_sha256"], events_sha.as_str());
    assert_eq!(shown["desktop_name"], guest.name);
    assert!(shown["update_time"].as_str().unwrap().ends_with('Z'));
    for (i, total) in [(1, 1), (2, 1), (3, 0), (4, 0)] {
        assert_eq!(lines[i]["body"]["total_count"], total, "{}", lines[i]);
    }
    assert_eq!(lines[1]["body"]["screen_records"][0]["id"], id);

    // Downloads, whole and in ranges, byte for byte against the files.
    let files = dir.join("recordings");
    let video_name = shown["video_filename"].as_str().unwrap();
    let on_disk = find_file(&files, video_name);
    assert_eq!(sha256_hex(&on_disk), video_sha, "the file is its digest");
    let len = on_disk.len();
    let get = |file: &str, range: Option<String>, method: &str| {
        let mut headers = serde_json::Map::new();
        if let Some(r) = range {
            headers.insert("Range".into(), r.into());
        }
        raw(
            &d,
            PROJECT_A_KEY,
            PROJECT_A,
            json!({"call": "raw", "method": method,
            "path": format!("{records}/{id}/{file}"), "headers": headers}),
        )
    };
    let whole = get("video", None, "GET");
    assert_eq!(whole["status_code"], 200);
    assert_eq!(raw_body(&whole), on_disk);
    assert_eq!(raw_header(&whole, "accept-ranges"), Some("bytes"));
    assert_eq!(
        raw_header(&whole, "x-vmshot-sha256"),
        Some(video_sha.as_str())
    );
    assert_eq!(raw_header(&whole, "content-type"), Some("video/mp4"));
    let head = get("video", Some("bytes=0-99".into()), "GET");
    assert_eq!(head["status_code"], 206);
    assert_eq!(raw_body(&head), on_disk[..100]);
    assert_eq!(
        raw_header(&head, "content-range"),
        Some(format!("bytes 0-99/{len}").as_str())
    );
    let tail = get("video", Some("bytes=-10".into()), "GET");
    assert_eq!(raw_body(&tail), on_disk[len - 10..]);
    let middle = get("video", Some(format!("bytes={}-", len / 2)), "GET");
    assert_eq!(raw_body(&middle), on_disk[len / 2..]);
    let outside = get("video", Some(format!("bytes={len}-")), "GET");
    assert_eq!(outside["status_code"], 416);
    assert_eq!(
        raw_header(&outside, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let only_head = get("video", None, "HEAD");
    assert_eq!(only_head["status_code"], 200);
    assert_eq!(
        raw_header(&only_head, "content-length"),
        Some(len.to_string().as_str())
    );
    assert!(raw_body(&only_head).is_empty());
    let events = get("events", None, "GET");
    let events_on_disk = find_file(&files, shown["event_filename"].as_str().unwrap());
    assert_eq!(raw_body(&events), events_on_disk);
    assert_eq!(sha256_hex(&events_on_disk), events_sha);
    let b_download = raw(
        &d,
        PROJECT_B_KEY,
        PROJECT_B,
        json!({"call": "raw", "method": "GET",
        "path": format!("{records}/{id}/video")}),
    );
    assert_eq!(raw_reply(&b_download).0, 404);

    // BatchDelete: a job id, then nothing left, files included.
    let lines = huawei(
        &url,
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([
            {"call": "delete", "ids": [id]},
            {"call": "show", "id": id},
        ]),
    );
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert!(!lines[0]["body"]["job_id"].as_str().unwrap().is_empty());
    assert_eq!(refused(&lines[1]).1, "WKS.0202");
    assert!(!files.join(video_name).exists());
}

/// A recording's file, wherever under `dir` the service keeps it.
fn find_file(dir: &Path, name: &str) -> Vec<u8> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                return std::fs::read(path).unwrap();
            }
        }
    }
    panic!("no {name} under {}", dir.display());
}

/// Starts a recording of `desktop` of `kind`; its id.
fn start(d: &Daemon, desktop: &str, kind: &str) -> String {
    let line = raw(
        d,
        PROJECT_A_KEY,
        PROJECT_A,
        json!({"call": "raw", "method": "POST", "path": "/v2/{project}/screen-records",
               "body": {"desktop_id": desktop, "type": kind, "interval_seconds": 1}}),
    );
    let (status, body) = raw_reply(&line);
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn stop(d: &Daemon, id: &str) {
    let line = raw(
        d,
        PROJECT_A_KEY,
        PROJECT_A,
        json!({"call": "raw", "method": "POST", "path": format!("/v2/{{project}}/screen-records/{id}/stop")}),
    );
    let (status, body) = raw_reply(&line);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("REC_COMPLETED")),
        "{body}"
    );
}

#[test]
fn the_list_filters_pages_and_sorts_and_starts_are_refused_in_workspaces_words() {
    let _lock = common::host::LibvirtdLock::shared();
    common::host::ensure_libvirtd();
    common::fixtures::up();
    let dir = tempdir();
    let pid = std::process::id();
    let one = common::owned::Owned::running(&format!("vmshot-hw-one-{pid}"), PROJECT_A);
    let two = common::owned::Owned::running(&format!("vmshot-hw-two-{pid}"), PROJECT_A);
    let extra = sections(&dir).replace("[recordings]\n", "[recordings]\nmax_concurrent = 2\n");
    let d = Daemon::start("", &extra);
    let url = endpoint(&d);

    let first = start(&d, &one.uuid, "FULL");
    let second = start(&d, &two.name, "INTERVAL");
    // Past the budget (two at once), and what cannot be recorded.
    let records = "/v2/{project}/screen-records";
    let refusals = huawei(
        &url,
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([
            {"call": "raw", "method": "POST", "path": records, "body": {"desktop_id": one.uuid, "type": "SESSION"}},
            {"call": "raw", "method": "POST", "path": records, "body": {"desktop_id": "no-such-desktop"}},
            {"call": "raw", "method": "POST", "path": records, "body": {"desktop_id": one.uuid, "fps": 100}},
            {"call": "raw", "method": "POST", "path": records, "body": "{not json"},
        ]),
    );
    let codes: Vec<(u64, String)> = refusals
        .iter()
        .map(raw_reply)
        .map(|(s, b)| (s, b["error_code"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        codes,
        [
            (429, "WKS.0429"),
            (404, "WKS.0202"),
            (400, "WKS.0001"),
            (400, "WKS.0001")
        ]
        .map(|(s, c)| (s, c.to_owned()))
    );
    // A shut-off desktop (the admin sees the unowned fixture).
    let off = raw(
        &d,
        ADMIN_KEY,
        PROJECT_B,
        json!({"call": "raw", "method": "POST", "path": records,
        "body": {"desktop_id": common::fixtures::SHUT_OFF}}),
    );
    let (status, body) = raw_reply(&off);
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("WKS.0410")),
        "{body}"
    );
    // A running recording cannot be deleted.
    let running = huawei(
        &url,
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([{"call": "delete", "ids": [first]}]),
    );
    let (status, code, _) = refused(&running[0]);
    assert_eq!((status, code.as_str()), (409, "WKS.0409"));
    stop(&d, &first);
    stop(&d, &second);

    let lines = huawei(
        &url,
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([
            {"call": "list", "params": {"sort_field": "start_time", "sort_type": "asc"}},
            {"call": "list", "params": {"sort_field": "start_time", "sort_type": "desc"}},
            {"call": "list", "params": {"limit": 1, "offset": 1, "sort_type": "asc"}},
            {"call": "list", "params": {"type": "INTERVAL"}},
            {"call": "list", "params": {"desktop_names": one.name}},
            {"call": "list", "params": {"desktop_id": two.uuid}},
            {"call": "list", "params": {"status": "RECORDING"}},
            {"call": "list", "params": {"limit": 0}},
            {"call": "list", "params": {"start_time": "2020-01-01 00:00:00", "end_time": "2020-01-02 00:00:00"}},
        ]),
    );
    let ids = |i: usize| -> Vec<String> {
        lines[i]["body"]["screen_records"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", lines[i]))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let total = |i: usize| lines[i]["body"]["total_count"].as_u64().unwrap();
    assert_eq!(ids(0), [first.clone(), second.clone()], "oldest first");
    assert_eq!(ids(1), [second.clone(), first.clone()], "newest first");
    assert_eq!(
        (ids(2), total(2)),
        (vec![second.clone()], 2),
        "a page of one"
    );
    assert_eq!(ids(3), [second.as_str()]);
    assert_eq!(ids(4), [first.as_str()]);
    assert_eq!(ids(5), [second.as_str()]);
    assert_eq!(total(6), 0);
    assert_eq!((ids(7).len(), total(7)), (0, 2), "limit 0 counts");
    assert_eq!(total(8), 0, "outside the window");
    let detail = &lines[0]["body"]["screen_records"][1];
    assert_eq!(detail["type"], "INTERVAL");
    assert_eq!(detail["desktop_name"], two.name);
    assert_eq!(detail["username"], "5e7f9a1b-0000-4000-8000-00000000aaaa");
}

#[test]
fn a_signature_seen_before_a_kill_9_is_refused_after_it() {
    let dir = tempdir();
    // The same port and store across the restart: the replayed request is
    // the same bytes, signed host included.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[store]\npath = \"{}\"\n\n{}",
        dir.join("vmshot.db").display(),
        sections(&dir)
    );
    let call = json!({"call": "raw", "method": "GET", "path": "/v2/{project}/screen-records",
                      "date": sdk_date(0), "query": {"limit": 7}});
    let mut d = Daemon::start("", &extra);
    assert_eq!(
        raw_reply(&raw(&d, PROJECT_A_KEY, PROJECT_A, call.clone())).0,
        200
    );
    d.kill_9();
    let d = Daemon::start("", &extra);
    let (status, body) = raw_reply(&raw(&d, PROJECT_A_KEY, PROJECT_A, call));
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIGW.0301")),
        "{body}"
    );
    assert!(
        body["error_msg"].as_str().unwrap().contains("replay"),
        "{body}"
    );
}

#[test]
fn a_key_past_its_share_of_remembered_signatures_is_throttled_alone() {
    let dir = tempdir();
    // Five keys in the test key file: one signature each.
    let extra = sections(&dir).replace("[huawei]\n", "[huawei]\nmax_nonces = 5\n");
    let d = Daemon::start("", &extra);
    let lines = huawei(
        &endpoint(&d),
        PROJECT_A_KEY,
        Some(PROJECT_A),
        &json!([{"call": "list", "params": {"limit": 1}}, {"call": "list", "params": {"limit": 2}}]),
    );
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    // The SDK's session treats a 429 as retryable (urllib3's Retry with
    // retry_times = 0): it raises before reading the body, so the status is
    // all it reports. The body says why.
    assert_eq!(
        (&lines[1]["exception"], &lines[1]["status_code"]),
        (&json!("ClientRequestException"), &json!(429)),
        "{}",
        lines[1]
    );
    let (status, body) = raw_reply(&raw(
        &d,
        PROJECT_A_KEY,
        PROJECT_A,
        json!({"call": "raw", "method": "GET", "path": "/v2/{project}/screen-records"}),
    ));
    assert_eq!(
        (status, body["error_code"].as_str()),
        (429, Some("APIGW.0308")),
        "{body}"
    );
    let other = huawei(
        &endpoint(&d),
        PROJECT_B_KEY,
        Some(PROJECT_B),
        &json!([{"call": "list"}]),
    );
    assert_eq!(
        other[0]["ok"], true,
        "another key is unaffected: {}",
        other[0]
    );
}
