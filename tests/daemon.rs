//! `vmshot serve` as a process: health, metrics, configuration checks, hostile
//! requests, authentication failures, and SIGTERM during a capture.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, KEY_ID, LIMITED_KEY_ID, LIMITED_SECRET, LIMITED_TO, SECRET};
use common::fixtures::{self, STALL};
use common::host::{qemu_pid, stall_guard, virsh, wait_until, Frozen, LibvirtdLock};
use common::http::send;
use common::signing::{screenshot_query, signed_query};

fn get(d: &Daemon, target: &str) -> common::http::Reply {
    send(d.addr, "GET", target, &[], b"")
}

/// Asserts an Alibaba error reply: status, code, and a RequestId.
fn assert_error(reply: &common::http::Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["Code"], code, "{body}");
    assert!(
        body["RequestId"].as_str().is_some_and(|id| id.len() == 36),
        "{body}"
    );
    assert!(
        body["Message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["HostId"], "vmshot");
}

/// `RUST_LOG` for a daemon whose libvirt calls a test waits for.
const LIBVIRT_CALLS: &str =
    "info,vmshot::hypervisor::blocking=debug,vmshot::hypervisor::inventory=debug";
/// The log line of a lookup the inventory answered, with no libvirt call.
const INVENTORY_ANSWERED: &str = "\"answered by the inventory\"";
/// The log line of a libvirt call as it starts (not `libvirt call returned`).
const CALL_STARTS: &str = "\"libvirt call\"";

/// Reads the daemon's log until, for each goal `(needles, count)`, `count`
/// more lines have held every one of its needles.
fn wait_for_log_lines(d: &Daemon, goals: &[(&[&str], usize)], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut found = vec![0; goals.len()];
    while goals.iter().zip(&found).any(|((_, count), n)| n < count) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(line) = d.wait_for_log("", left) else {
            panic!(
                "found {found:?} of the log lines {goals:?} within {limit:?}:\n{}",
                d.logs()
            );
        };
        for ((needles, _), n) in goals.iter().zip(&mut found) {
            if needles.iter().all(|needle| line.contains(needle)) {
                *n += 1;
            }
        }
    }
}

/// The log line of a capture entering libvirt's screenshot call.
const SCREENSHOT_CALL: &[&str] = &[CALL_STARTS, "screenshot of domain"];

/// Waits until a capture is inside libvirt's screenshot call: with its QEMU
/// frozen, it stays there, holding its place under the cap.
fn wait_for_screenshot_call(d: &Daemon) {
    wait_for_log_lines(d, &[(SCREENSHOT_CALL, 1)], Duration::from_secs(20));
}

#[test]
fn health_readiness_and_metrics() {
    let _lock = LibvirtdLock::shared();
    let d = Daemon::start("", "");
    assert_eq!(get(&d, "/healthz").status, 200);
    let ready = get(&d, "/readyz");
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    get(&d, "/?Action=GetInstanceScreenshot");
    get(&d, "/?Action=AnythingAtAll");
    let metrics = get(&d, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    assert!(
        text.contains("vmshot_requests_total{dialect=\"alibaba\",action=\"GetInstanceScreenshot\",outcome=\"client_error\"} 1"),
        "{text}"
    );
    // A caller does not choose metric labels: other actions are "unknown".
    assert!(
        text.contains("vmshot_requests_total{dialect=\"alibaba\",action=\"unknown\",outcome=\"client_error\"} 1"),
        "{text}"
    );
    assert!(!text.contains("AnythingAtAll"), "{text}");
    assert!(text.contains("vmshot_libvirt_reconnects_total 0"), "{text}");
    // The domain inventory follows libvirt's events, and holds every domain.
    let domains = virsh(&["list", "--all", "--uuid"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    wait_until("the inventory is live", Duration::from_secs(10), || {
        let text = get(&d, "/metrics").text();
        text.contains("vmshot_inventory_live 1")
            && text.contains(&format!("vmshot_inventory_domains {domains}"))
    });
    let missing = get(&d, "/no/such/path");
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (
            404,
            "no such resource; this host serves Alibaba ECS (GET or POST /), AWS EC2 (GET or POST /ec2)\n"
        )
    );
}

#[test]
fn readiness_fails_while_libvirt_is_unreachable() {
    let nowhere = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
    let d = Daemon::start("", &format!("[libvirt]\nuri = \"{nowhere}\"\n"));
    assert_eq!(get(&d, "/healthz").status, 200, "alive all the same");
    // The reason names neither the URI nor a path (a URI may carry user
    // names and key files): those go to the log.
    let ready = get(&d, "/readyz");
    assert_eq!(
        (ready.status, ready.text().as_str()),
        (503, "not ready: libvirt does not answer\n")
    );
    let query = screenshot_query(KEY_ID, SECRET, "i-anything");
    let reply = get(&d, &format!("/?{query}"));
    assert_error(&reply, 503, "ServiceUnavailable");
    assert!(
        !reply.text().contains("nonexistent") && !reply.text().contains("qemu+unix"),
        "{}",
        reply.text()
    );
    let logged = d.wait_for_log("/nonexistent/libvirt-sock", Duration::from_secs(5));
    assert!(logged.is_some(), "the detail is logged: {}", d.logs());
}

#[test]
fn metrics_and_readiness_can_be_switched_off() {
    let d = Daemon::start("", "[metrics]\naccess = \"off\"\nreadyz_access = \"off\"\n");
    // Hidden, they look exactly like a path that does not exist.
    let missing = get(&d, "/no/such/path");
    for path in ["/metrics", "/readyz"] {
        let hidden = get(&d, path);
        assert_eq!(
            (hidden.status, hidden.text()),
            (404, missing.text()),
            "{path}"
        );
    }
    assert_eq!(get(&d, "/healthz").status, 200);
}

#[test]
fn a_world_readable_key_file_stops_the_start() {
    let Err((code, stderr)) = Daemon::try_start("", "", 0o644) else {
        panic!("started with a world-readable key file");
    };
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("accessible to other users") && stderr.contains("chmod o-rwx"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_config_key_stops_the_start() {
    let Err((code, stderr)) = Daemon::try_start("", "[server]\nlisten_port = 1\n", 0o600) else {
        panic!("started with an unknown key");
    };
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("listen_port"), "{stderr}");
}

#[test]
fn hostile_requests_get_clean_errors() {
    let d = Daemon::start("", "");
    let json = [("Accept", "application/json")];
    let reply = send(
        d.addr,
        "GET",
        "/?Action=Get%zzInstance&Format=JSON",
        &json,
        b"",
    );
    assert_error(&reply, 400, "InvalidParameter");
    // Without a readable Format or an Accept header: XML, Alibaba's default.
    let xml = get(&d, "/?Action=Get%zzInstance");
    assert_eq!(xml.status, 400);
    assert!(
        xml.text().contains("<Code>InvalidParameter</Code>"),
        "{}",
        xml.text()
    );
    let dup = send(
        d.addr,
        "GET",
        "/?InstanceId=a&InstanceId=b",
        &[("Accept", "application/json")],
        b"",
    );
    assert_error(&dup, 400, "InvalidParameter");
    assert!(dup.json()["Message"]
        .as_str()
        .unwrap()
        .contains("InstanceId"));
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let reply = send(
        d.addr,
        "POST",
        "/",
        &[("Accept", "application/json")],
        &binary,
    );
    assert_error(&reply, 400, "InvalidParameter");
    let big_body = vec![b'a'; 200 * 1024];
    let reply = send(
        d.addr,
        "POST",
        "/",
        &[("Accept", "application/json")],
        &big_body,
    );
    assert_error(&reply, 413, "RequestEntityTooLarge");
    // A 1 MB query never reaches the dialect: hyper refuses the header block.
    let huge = format!("/?Action=GetInstanceScreenshot&Pad={}", "x".repeat(1 << 20));
    let reply = get(&d, &huge);
    assert!(
        (400..500).contains(&reply.status),
        "status {}",
        reply.status
    );
    // And the daemon is fine afterwards.
    assert_eq!(get(&d, "/healthz").status, 200);
}

#[test]
fn every_authentication_failure_has_its_code() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let mapping = format!(
        "\n[alibaba.instances]\n\"{LIMITED_TO}\" = \"{}\"\n",
        fixtures::PATTERN.domain()
    );
    let d = Daemon::start(&mapping, "");
    let instance = fixtures::PATTERN.domain();

    let unknown = screenshot_query("nobody", SECRET, &instance);
    assert_error(
        &get(&d, &format!("/?{unknown}")),
        404,
        "InvalidAccessKeyId.NotFound",
    );

    let wrong = screenshot_query(KEY_ID, "not-the-secret", &instance);
    assert_error(
        &get(&d, &format!("/?{wrong}")),
        400,
        "SignatureDoesNotMatch",
    );

    let tampered = screenshot_query(KEY_ID, SECRET, &instance).replace("cn-test", "cn-else");
    assert_error(
        &get(&d, &format!("/?{tampered}")),
        400,
        "SignatureDoesNotMatch",
    );

    let old = signed_query(
        "GET",
        KEY_ID,
        SECRET,
        &[
            ("Action", "GetInstanceScreenshot"),
            ("RegionId", "cn-test"),
            ("InstanceId", &instance),
            ("Timestamp", "2020-01-01T00:00:00Z"),
        ],
    );
    assert_error(
        &get(&d, &format!("/?{old}")),
        400,
        "InvalidTimeStamp.Expired",
    );

    let query = screenshot_query(KEY_ID, SECRET, "vmshot-fx-no-such-domain");
    assert_error(&get(&d, &format!("/?{query}")), 404, "InvalidParameter");
    assert_error(&get(&d, &format!("/?{query}")), 400, "SignatureNonceUsed");

    // A key limited to other instances gets exactly what a nonexistent
    // instance gets: nothing tells it the domain exists.
    let limited = screenshot_query(LIMITED_KEY_ID, LIMITED_SECRET, &instance);
    let reply = get(&d, &format!("/?{limited}"));
    assert_error(&reply, 404, "InvalidParameter");
    let absent = screenshot_query(LIMITED_KEY_ID, LIMITED_SECRET, "vmshot-fx-absent");
    let absent = get(&d, &format!("/?{absent}")).json();
    assert_eq!(
        reply.json()["Message"]
            .as_str()
            .unwrap()
            .replace(&instance, "X"),
        absent["Message"]
            .as_str()
            .unwrap()
            .replace("vmshot-fx-absent", "X")
    );
    // The limited key does see its own instance, mapped to the pattern guest.
    let own = screenshot_query(LIMITED_KEY_ID, LIMITED_SECRET, LIMITED_TO);
    let reply = get(&d, &format!("/?{own}"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["InstanceId"], LIMITED_TO);

    let unsigned = "/?Action=GetInstanceScreenshot&AccessKeyId=vmshot-test-key&Format=JSON";
    assert_error(&get(&d, unsigned), 400, "MissingParameter");

    let action = signed_query(
        "GET",
        KEY_ID,
        SECRET,
        &[("Action", "RebootInstance"), ("RegionId", "cn-test")],
    );
    assert_error(
        &get(&d, &format!("/?{action}")),
        404,
        "InvalidAction.NotFound",
    );
}

#[test]
fn sigterm_during_a_capture_lets_it_finish() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let _stall = stall_guard();
    let mut d = Daemon::start_logging("", "", LIBVIRT_CALLS);
    let frozen = Frozen::new(qemu_pid(STALL));
    let addr = d.addr;
    let query = screenshot_query(KEY_ID, SECRET, STALL);
    let request = std::thread::spawn(move || send(addr, "GET", &format!("/?{query}"), &[], b""));
    // The capture is in flight, stuck on the frozen QEMU.
    wait_for_screenshot_call(&d);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status();
    assert!(d
        .wait_for_log("shutting down", Duration::from_secs(5))
        .is_some());
    // Shutting down: the listener is closed...
    wait_until("the daemon stops accepting", Duration::from_secs(5), || {
        TcpStream::connect(addr).is_err()
    });
    // ...and the capture is still waited for, not dropped.
    assert!(d.running(), "the daemon exited with a request in flight");
    assert!(
        !request.is_finished(),
        "the request ended before QEMU answered"
    );
    drop(frozen);
    let reply = request.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["Screenshot"]
        .as_str()
        .is_some_and(|s| s.len() > 1000));
    assert_eq!(d.wait_exit(), 0, "a clean exit after draining");
}

#[test]
fn a_hung_guest_costs_one_request_a_timely_error() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let _stall = stall_guard();
    let server = "[server]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_secs = 2\n";
    let d = Daemon::start(
        "",
        &format!(
            "{server}\n[libvirt]\nuri = \"{}\"\ncall_timeout_secs = 30\n",
            common::host::uri()
        ),
    );
    let _frozen = Frozen::new(qemu_pid(STALL));
    let started = std::time::Instant::now();
    let reply = get(
        &d,
        &format!("/?{}", screenshot_query(KEY_ID, SECRET, STALL)),
    );
    assert_error(&reply, 503, "ServiceUnavailable");
    assert!(
        reply.json()["Message"]
            .as_str()
            .unwrap()
            .contains("within 2 s"),
        "{}",
        reply.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    // Other guests are not affected.
    let reply = get(
        &d,
        &format!(
            "/?{}",
            screenshot_query(KEY_ID, SECRET, &fixtures::PATTERN.domain())
        ),
    );
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), d.logs());
}

/// The capture cap bounds screens being decoded and encoded, not libvirt
/// calls: a capture stuck on a frozen QEMU holds no place, and the others
/// go on; callers beyond the cap and its queue, all processing screens at
/// once, are told "busy".
#[test]
fn a_stuck_capture_holds_no_place_and_beyond_the_cap_callers_are_told_busy() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let _stall = stall_guard();
    let d = Daemon::start_logging(
        "throttle_interval_secs = 0\n",
        "[capture]\nmax_concurrent = 1\nmax_queued = 0\nfast_path = \"off\"\n",
        LIBVIRT_CALLS,
    );
    let frozen = Frozen::new(qemu_pid(STALL));
    let addr = d.addr;
    let query = screenshot_query(KEY_ID, SECRET, STALL);
    let first = std::thread::spawn(move || send(addr, "GET", &format!("/?{query}"), &[], b""));
    wait_for_screenshot_call(&d);
    // The only place is free: the frozen guest's call waits outside it.
    let reply = get(
        &d,
        &format!(
            "/?{}",
            screenshot_query(KEY_ID, SECRET, &fixtures::PATTERN.domain())
        ),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(frozen);
    assert_eq!(
        first.join().unwrap().status,
        200,
        "the first capture completes once QEMU answers"
    );

    // Four guests' screens at once, each decoded and encoded under a cap of
    // one with no queue: the rounds go on until one caller is turned away.
    // (pattern-1080's name is longer than an InstanceId may be.)
    let domains = [
        fixtures::PATTERN.domain(),
        fixtures::KERNEL_PANIC.domain(),
        fixtures::NO_BOOT_DEVICE.domain(),
        fixtures::BLANK.to_owned(),
    ];
    let mut busy = None;
    for _ in 0..30 {
        let callers: Vec<_> = domains
            .iter()
            .map(|domain| {
                let query = screenshot_query(KEY_ID, SECRET, domain);
                std::thread::spawn(move || send(addr, "GET", &format!("/?{query}"), &[], b""))
            })
            .collect();
        let replies: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        for r in &replies {
            assert!(
                r.status == 200 || r.status == 503,
                "{} {}",
                r.status,
                r.text()
            );
        }
        if let Some(r) = replies.into_iter().find(|r| r.status == 503) {
            busy = Some(r);
            break;
        }
    }
    let reply = busy.expect("no caller was ever told busy");
    assert_error(&reply, 503, "ServiceUnavailable");
    assert!(
        reply.json()["Message"]
            .as_str()
            .unwrap()
            .contains("too many screenshots"),
        "{}",
        reply.text()
    );
}

#[test]
fn concurrent_requests_share_one_capture_and_an_unchanged_screen_is_not_encoded_again() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let _stall = stall_guard();
    // Screenshots only: this is about the stable path (tests/fast_path.rs has
    // the VNC mirrors).
    let d = Daemon::start_logging(
        "throttle_interval_secs = 0\n",
        "[capture]\nfast_path = \"off\"\n",
        LIBVIRT_CALLS,
    );
    let metric = |how: &str| {
        let text = get(&d, "/metrics").text();
        let needle = format!("vmshot_captures_total{{how=\"{how}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle).map(|n| n.parse::<u64>().unwrap()))
            .unwrap_or(0)
    };

    // Lookups are answered by the inventory once it is live: count those.
    wait_for_log_lines(&d, &[(&["\"inventory live\""], 1)], Duration::from_secs(20));
    // Four callers while QEMU cannot answer: one capture, three joiners.
    let frozen = Frozen::new(qemu_pid(STALL));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, query) = (d.addr, screenshot_query(KEY_ID, SECRET, STALL));
            std::thread::spawn(move || send(addr, "GET", &format!("/?{query}"), &[], b""))
        })
        .collect();
    // All four have found the domain (the inventory answers without QEMU), and
    // one capture is inside the screenshot call: the other three join it,
    // which takes no libvirt call, and it cannot end before QEMU runs again.
    let lookup = format!("look up domain '{STALL}'");
    wait_for_log_lines(
        &d,
        &[(&[INVENTORY_ANSWERED, &lookup], 4), (SCREENSHOT_CALL, 1)],
        Duration::from_secs(20),
    );
    drop(frozen);
    let replies: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}\n{}", reply.text(), d.logs());
        assert_eq!(reply.json()["Screenshot"], replies[0].json()["Screenshot"]);
    }
    assert_eq!(
        (metric("encoded"), metric("shared")),
        (1, 3),
        "{}",
        d.logs()
    );

    // The pattern guest's screen is static: the second capture reuses the
    // first one's JPEG, byte for byte.
    let pattern = fixtures::PATTERN.domain();
    let first = get(
        &d,
        &format!("/?{}", screenshot_query(KEY_ID, SECRET, &pattern)),
    );
    let second = get(
        &d,
        &format!("/?{}", screenshot_query(KEY_ID, SECRET, &pattern)),
    );
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.json()["Screenshot"], second.json()["Screenshot"]);
    assert_eq!((metric("encoded"), metric("reused")), (2, 1));
}
