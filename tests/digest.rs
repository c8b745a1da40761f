//! Every screenshot response carries the SHA-256 of the image it carries:
//! the `X-Vmshot-Sha256` header, the `ScreenshotSha256` field (JSON and XML),
//! and the request's log line, each checked against the decoded bytes.

mod common;

use std::time::Duration;

use base64::Engine;
use common::daemon::{Daemon, KEY_ID, SECRET};
use common::fixtures::{self, PATTERN};
use common::host::LibvirtdLock;
use common::http::send;
use common::signing::signed_query;
use sha2::{Digest, Sha256};

/// Text between `<tag>` and `</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> &'a str {
    let start = xml.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
    let end = xml.find(&format!("</{tag}>")).unwrap();
    &xml[start..end]
}

#[test]
fn the_digest_reaches_the_caller_and_the_log() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = Daemon::start("throttle_interval_secs = 0\n", "");
    let screenshot = |format: &str| {
        let query = signed_query(
            "GET",
            KEY_ID,
            SECRET,
            &[
                ("Action", "GetInstanceScreenshot"),
                ("RegionId", "cn-test"),
                ("InstanceId", &PATTERN.domain()),
                ("Format", format),
            ],
        );
        let reply = send(d.addr, "GET", &format!("/?{query}"), &[], b"");
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();

    let json = screenshot("JSON");
    let body = json.json();
    let jpeg = b64(body["Screenshot"].as_str().unwrap());
    let digest = format!("{:x}", Sha256::digest(&jpeg));
    assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]));
    assert_eq!(json.header("x-vmshot-sha256"), Some(digest.as_str()));
    assert_eq!(body["ScreenshotSha256"], digest.as_str());
    let logged = d
        .wait_for_log(&digest, Duration::from_secs(5))
        .expect("the log line names the digest");
    assert!(logged.contains("\"sha256\""), "{logged}");

    let xml = screenshot("XML");
    let text = xml.text();
    let jpeg = b64(element(&text, "Screenshot"));
    let digest = format!("{:x}", Sha256::digest(&jpeg));
    assert_eq!(xml.header("x-vmshot-sha256"), Some(digest.as_str()));
    assert_eq!(element(&text, "ScreenshotSha256"), digest);

    // Answers without a screen carry no digest.
    let refused = send(d.addr, "GET", "/?Action=GetInstanceScreenshot", &[], b"");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.header("x-vmshot-sha256"), None);
}
