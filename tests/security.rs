//! What a black-box review of `vmshot serve` found, each closed and checked
//! here against the real daemon: nonces that exhausted memory, one guest with
//! many throttles (and mirrors) through aliases, loosely checked ACS3
//! signatures, and a body framed two ways.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, KEY_COUNT, KEY_ID, LIMITED_KEY_ID, LIMITED_SECRET, SECRET};
use common::fixtures::{self, NO_BOOT_DEVICE, PATTERN};
use common::host::{virsh, LibvirtdLock};
use common::http::{send, Reply};
use common::sdk::{get_instance_screenshot, Sdk};
use common::signing::{acs3_headers, signed_query};

fn get(d: &Daemon, target: &str) -> Reply {
    send(d.addr, "GET", target, &[], b"")
}

fn code(reply: &Reply) -> (u16, String) {
    let body = reply.json();
    (
        reply.status,
        body["Code"].as_str().unwrap_or("-").to_owned(),
    )
}

fn signed(key: &str, secret: &str, params: &[(&str, &str)]) -> String {
    format!("/?{}", signed_query("GET", key, secret, params))
}

/// A screenshot request for `instance`, with `extra` parameters.
fn screenshot(d: &Daemon, instance: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut params = vec![
        ("Action", "GetInstanceScreenshot"),
        ("RegionId", "cn-test"),
        ("InstanceId", instance),
    ];
    params.extend_from_slice(extra);
    let reply = get(d, &signed(KEY_ID, SECRET, &params));
    if reply.status == 200 {
        (200, "OK".into())
    } else {
        code(&reply)
    }
}

/// The daemon's private memory (heap and stacks), where kept nonces would
/// live. VmRSS also counts the binary's code pages, which the first request
/// faults in: megabytes in a debug build, and nothing to do with nonces.
fn anon_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A signed request with no action (authenticated, then refused: no capture)
/// and `nonce`, in a form body: a 60 KB nonce would not fit in the request line.
fn no_action(d: &Daemon, key: &str, secret: &str, nonce: &str) -> Reply {
    let form = signed_query(
        "POST",
        key,
        secret,
        &[("Action", "NoSuchAction"), ("SignatureNonce", nonce)],
    );
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    send(d.addr, "POST", "/", &headers, form.as_bytes())
}

#[test]
fn long_nonces_are_refused() {
    let d = Daemon::start("", "");
    for nonce in ["n".repeat(65), "n".repeat(60_000)] {
        let reply = no_action(&d, KEY_ID, SECRET, &nonce);
        assert_eq!(
            code(&reply),
            (400, "InvalidParameter".into()),
            "{}",
            reply.text()
        );
    }
    let at_limit = "n".repeat(64);
    let reply = no_action(&d, KEY_ID, SECRET, &at_limit);
    assert_eq!(code(&reply), (404, "InvalidAction.NotFound".into()));
}

#[test]
fn each_key_has_its_own_share_of_nonces() {
    // Two live nonces for each key of the test key file: the limited key
    // fills its share alone.
    let d = Daemon::start(&format!("max_nonces = {}\n", 2 * KEY_COUNT), "");
    for nonce in ["l1", "l2"] {
        let reply = no_action(&d, LIMITED_KEY_ID, LIMITED_SECRET, nonce);
        assert_eq!(code(&reply).1, "InvalidAction.NotFound");
    }
    let reply = no_action(&d, LIMITED_KEY_ID, LIMITED_SECRET, "l3");
    assert_eq!(code(&reply), (503, "ServiceUnavailable".into()));
    // The other key still has its own share.
    let reply = no_action(&d, KEY_ID, SECRET, "k1");
    assert_eq!(code(&reply).1, "InvalidAction.NotFound");
}

#[test]
fn four_thousand_of_the_longest_nonces_cost_little_memory() {
    let d = Daemon::start("", "");
    let signed_post = |nonce: &str| {
        let query = signed_query(
            "POST",
            KEY_ID,
            SECRET,
            &[("Action", "NoSuchAction"), ("SignatureNonce", nonce)],
        );
        send(d.addr, "POST", &format!("/?{query}"), &[], b"")
    };
    // One request first, so the pages every request needs are counted before.
    assert_eq!(signed_post("warm-up").status, 404);
    let before = anon_rss_kib(d.pid());
    let started = Instant::now();
    for i in 0..4_000 {
        let reply = signed_post(&format!("{i:064}"));
        assert_eq!(reply.status, 404, "{}", reply.text());
    }
    let after = anon_rss_kib(d.pid());
    eprintln!(
        "4000 signed POSTs with 64-character nonces in {:.1} s: RssAnon {} KiB -> {} KiB",
        started.elapsed().as_secs_f64(),
        before,
        after
    );
    // About 1.7 MiB measured here (debug build); 4 MiB leaves headroom.
    assert!(
        after < before + 4 * 1024,
        "RssAnon {before} KiB -> {after} KiB"
    );
}

fn uuid_of(domain: &str) -> String {
    virsh(&["domuuid", domain]).trim().to_owned()
}

#[test]
fn one_guest_has_one_throttle_whatever_it_is_called() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let pattern = PATTERN.domain();
    let table =
        format!("\n[alibaba.instances]\n\"i-one\" = \"{pattern}\"\n\"i-two\" = \"{pattern}\"\n");
    let d = Daemon::start(&table, "");
    let throttled = (400, "Throttling".to_owned());
    let not_found = (404, "InvalidParameter".to_owned());

    assert_eq!(screenshot(&d, "i-one", &[]), (200, "OK".into()));
    assert_eq!(screenshot(&d, "i-two", &[("Fresh", "true")]), throttled);
    // A guest with an instance id answers to that id alone.
    let uuid = uuid_of(&pattern);
    for alias in [pattern.clone(), uuid.clone(), uuid.to_uppercase()] {
        assert_eq!(screenshot(&d, &alias, &[]), not_found, "{alias}");
    }

    // A guest without one answers to its name and UUID, under one throttle.
    let other = NO_BOOT_DEVICE.domain();
    let uuid = uuid_of(&other);
    assert_eq!(screenshot(&d, &other, &[]), (200, "OK".into()));
    for alias in [
        uuid.clone(),
        uuid.to_uppercase(),
        uuid.replace('-', ""),
        uuid.to_uppercase().replace('-', ""),
    ] {
        for extra in [&[][..], &[("Fresh", "true")], &[("WakeUp", "true")]] {
            assert_eq!(
                screenshot(&d, &alias, extra),
                throttled,
                "{alias} {extra:?}"
            );
        }
    }
}

#[test]
fn aliases_of_one_guest_share_one_vnc_mirror() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = Daemon::start("throttle_interval_secs = 0\n", "");
    let name = NO_BOOT_DEVICE.domain();
    let uuid = uuid_of(&name);
    assert_eq!(screenshot(&d, &name, &[]), (200, "OK".into()));
    assert!(
        d.wait_for_log("VNC mirror synced", Duration::from_secs(30))
            .is_some(),
        "{}",
        d.logs()
    );
    for alias in [
        name.clone(),
        uuid.clone(),
        uuid.to_uppercase(),
        uuid.replace('-', ""),
        uuid.to_uppercase().replace('-', ""),
    ] {
        assert_eq!(screenshot(&d, &alias, &[]), (200, "OK".into()), "{alias}");
    }
    // Another mirror would sync within a second or two (the first did).
    let second = d.wait_for_log("VNC mirror synced", Duration::from_secs(8));
    assert!(second.is_none(), "a second mirror of one guest: {second:?}");
    let metrics = get(&d, "/metrics").text();
    assert!(metrics.contains("vmshot_vnc_mirrors 1\n"), "{metrics}");
}

/// An ACS3-signed GET of `query` with `headers` (host and the rest as the Tea
/// SDK signs them); `tamper` may change the headers after signing.
fn acs3_get(
    d: &Daemon,
    query: &str,
    host: &str,
    tamper: impl FnOnce(&mut Vec<(String, String)>),
) -> Reply {
    let mut headers = acs3_headers("GET", query, host, b"", KEY_ID, SECRET);
    tamper(&mut headers);
    raw(d, &format!("GET /?{query} HTTP/1.1"), &headers, b"")
}

/// Sends a request head and body exactly as given; the parsed reply.
fn raw(d: &Daemon, line: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(d.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{line}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    common::http::parse(&reply)
}

#[test]
fn acs3_signatures_are_checked_strictly_and_bound_to_this_host() {
    let d = Daemon::start("", "");
    let host = d.addr.to_string();
    let query = "Action=NoSuchAction&RegionId=cn-test";
    let ok = acs3_get(&d, query, &host, |_| {});
    assert_eq!(
        code(&ok),
        (404, "InvalidAction.NotFound".into()),
        "{}",
        ok.text()
    );

    // The signature as 64 lowercase hex digits, nothing looser.
    let upper = acs3_get(&d, query, &host, |h| {
        for (name, value) in h.iter_mut() {
            if name == "Authorization" {
                let (head, signature) = value.split_once("Signature=").unwrap();
                *value = format!("{head}Signature={}", signature.to_uppercase());
            }
        }
    });
    assert_eq!(
        code(&upper),
        (400, "InvalidParameter".into()),
        "{}",
        upper.text()
    );

    // The host must be signed, and be this host.
    let unsigned_host = acs3_headers("GET", query, "", b"", KEY_ID, SECRET);
    let mut with_host = unsigned_host.clone();
    with_host.push(("Host".into(), host.clone()));
    let reply = raw(&d, &format!("GET /?{query} HTTP/1.1"), &with_host, b"");
    assert_eq!(
        code(&reply),
        (400, "InvalidParameter".into()),
        "{}",
        reply.text()
    );
    let elsewhere = acs3_get(&d, query, "10.255.0.9:8480", |_| {});
    assert_eq!(
        code(&elsewhere),
        (400, "InvalidParameter".into()),
        "{}",
        elsewhere.text()
    );
    assert!(
        elsewhere.text().contains("10.255.0.9"),
        "{}",
        elsewhere.text()
    );

    // A header the signature covers may come only once.
    let repeated = acs3_get(&d, query, &host, |h| {
        let nonce = h
            .iter()
            .find(|(n, _)| n == "x-acs-signature-nonce")
            .unwrap()
            .clone();
        h.push((nonce.0, "another-nonce".into()));
    });
    assert_eq!(
        code(&repeated),
        (400, "InvalidParameter".into()),
        "{}",
        repeated.text()
    );
}

#[test]
fn a_body_framed_two_ways_is_refused() {
    let d = Daemon::start("", "");
    let query = signed_query("POST", KEY_ID, SECRET, &[("Action", "NoSuchAction")]);
    let line = format!("POST /?{query} HTTP/1.1");
    let head = |first: (&str, &str), second: (&str, &str)| {
        vec![
            ("Host".to_owned(), d.addr.to_string()),
            ("Accept".to_owned(), "application/json".to_owned()),
            (first.0.to_owned(), first.1.to_owned()),
            (second.0.to_owned(), second.1.to_owned()),
        ]
    };
    let (length, chunked) = (("Content-Length", "5"), ("transfer-encoding", "chunked"));
    for headers in [head(length, chunked), head(chunked, length)] {
        let reply = raw(&d, &line, &headers, b"0\r\n\r\n");
        assert_eq!(
            code(&reply),
            (400, "InvalidParameter".into()),
            "{}",
            reply.text()
        );
    }
    // Either alone is fine.
    let reply = raw(
        &d,
        &line,
        &head(chunked, ("User-Agent", "test")),
        b"0\r\n\r\n",
    );
    assert_eq!(code(&reply).1, "InvalidAction.NotFound", "{}", reply.text());
}

#[test]
fn the_tea_sdk_may_put_parameters_in_a_form_body() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = Daemon::start(
        &format!(
            "\n[alibaba.instances]\n\"i-in-body\" = \"{}\"\n",
            PATTERN.domain()
        ),
        "",
    );
    let reply = get_instance_screenshot(
        Sdk::Tea,
        &d.endpoint(),
        (KEY_ID, SECRET),
        "i-in-body",
        &["--in-body", "--wakeup", "false"],
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["instance_id"], "i-in-body");
}

#[test]
fn signature_1_0_can_be_turned_off() {
    let d = Daemon::start("signature_v1 = false\n", "");
    let v1 = get(&d, &signed(KEY_ID, SECRET, &[("Action", "NoSuchAction")]));
    assert_eq!(code(&v1), (400, "InvalidParameter".into()), "{}", v1.text());
    assert!(v1.text().contains("ACS3-HMAC-SHA256"), "{}", v1.text());
    let host = d.addr.to_string();
    let acs3 = acs3_get(&d, "Action=NoSuchAction&RegionId=cn-test", &host, |_| {});
    assert_eq!(code(&acs3), (404, "InvalidAction.NotFound".into()));
}
