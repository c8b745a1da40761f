//! The native JSON API (`/v1/`) against a real daemon and real guests: the
//! OpenAPI document lists what the router serves, domains are listed with
//! their screens, screenshots and thumbnails carry their digests, POSTs need
//! the page's CSRF token, and only loopback callers with a loopback Host
//! get in.

mod common;

use common::http::send;
use common::page;
use sha2::{Digest, Sha256};

#[test]
fn the_api_serves_what_its_document_says() {
    page::up();
    let daemon = page::daemon();
    let addr = daemon.addr;
    let doc = send(addr, "GET", "/v1/openapi.json", &[], b"").json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{paths:?}");

    let domains = send(addr, "GET", "/v1/domains", &[], b"").json();
    let pattern = page::guest("pattern");
    let find = |name: &str| {
        domains
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {domains}"))
            .clone()
    };
    for guest in page::GUESTS {
        find(&page::guest(guest));
    }
    let d = find(&pattern);
    assert_eq!(
        (d["state"].as_str(), d["display"].as_bool()),
        (Some("running"), Some(true))
    );
    assert_eq!(find(&page::guest("shutoff"))["state"], "shut off");
    let uuid = d["uuid"].as_str().unwrap();

    // Every GET of the document, on this domain, reaches a handler: none
    // answers the router's "no_route".
    for (path, methods) in paths {
        if methods.get("get").is_none()
            || path.contains("{rid}")
            || path.contains("{job}")
            || path.ends_with("/events")
        {
            continue;
        }
        let concrete = path.replace("{id}", uuid);
        let reply = send(addr, "GET", &concrete, &[], b"");
        let code = if reply.status >= 400 {
            reply.json()["error"]["code"].clone()
        } else {
            serde_json::Value::Null
        };
        assert_ne!(code, "no_route", "{concrete}: {}", reply.text());
    }
    let missing = send(addr, "GET", "/v1/nothing-here", &[], b"");
    assert_eq!(
        (missing.status, missing.json()["error"]["code"].as_str()),
        (404, Some("no_route"))
    );

    // The screen, and its digest.
    let shot = send(
        addr,
        "GET",
        &format!("/v1/domains/{uuid}/screenshot"),
        &[],
        b"",
    );
    assert_eq!(shot.status, 200, "{}", shot.text());
    assert_eq!(shot.header("content-type"), Some("image/jpeg"));
    assert_eq!(
        shot.header("x-vmshot-sha256").unwrap(),
        hex::encode(Sha256::digest(&shot.body))
    );
    let img = image::load_from_memory(&shot.body).unwrap();
    assert_eq!((img.width(), img.height()), (1024, 768));

    // A thumbnail is small, scaled, and revalidates by its digest.
    let thumb = send(
        addr,
        "GET",
        &format!("/v1/domains/{uuid}/thumbnail?width=200"),
        &[],
        b"",
    );
    assert_eq!(thumb.status, 200, "{}", thumb.text());
    let small = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((small.width(), small.height()), (200, 150));
    assert!(thumb.body.len() < 20_000, "{} bytes", thumb.body.len());
    let etag = thumb.header("etag").unwrap().to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", hex::encode(Sha256::digest(&thumb.body)))
    );
    let again = send(
        addr,
        "GET",
        &format!("/v1/domains/{uuid}/thumbnail?width=200"),
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    for bad in ["width=9", "width=x", "width=1&width=2"] {
        let r = send(
            addr,
            "GET",
            &format!("/v1/domains/{uuid}/thumbnail?{bad}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 400, "{bad}");
    }
    let off = send(
        addr,
        "GET",
        &format!("/v1/domains/{}/thumbnail", page::guest("shutoff")),
        &[],
        b"",
    );
    assert_eq!(
        (off.status, off.json()["error"]["code"].as_str()),
        (409, Some("not_running"))
    );

    // The serial log, escapes removed.
    let blank = page::guest("blank");
    let console = send(
        addr,
        "GET",
        &format!("/v1/domains/{blank}/console"),
        &[],
        b"",
    );
    assert_eq!(console.status, 200, "{}", console.text());
    assert!(console.json()["output"]
        .as_str()
        .unwrap()
        .contains("vmshot-fixture: ready"));
    let none = send(
        addr,
        "GET",
        &format!("/v1/domains/{pattern}/console"),
        &[],
        b"",
    );
    assert_eq!(none.json()["error"]["code"], "no_console_log");

    // POSTs need the page's token.
    let keys = format!("/v1/domains/{blank}/keys");
    assert_eq!(send(addr, "POST", &keys, &[], b"").status, 403);
    assert_eq!(
        send(
            addr,
            "POST",
            &keys,
            &[("X-Vmshot-Csrf", &"0".repeat(64))],
            b""
        )
        .status,
        403
    );
    let token = page::csrf(&daemon);
    let pressed = send(addr, "POST", &keys, &[("X-Vmshot-Csrf", &token)], b"");
    assert_eq!(
        (pressed.status, pressed.json()["pressed"].as_bool()),
        (200, Some(true)),
        "{}",
        pressed.text()
    );
    let cross = send(
        addr,
        "POST",
        &keys,
        &[("X-Vmshot-Csrf", &token), ("Sec-Fetch-Site", "cross-site")],
        b"",
    );
    assert_eq!(cross.status, 403);

    // The diagnosis watcher's verdict reaches the list (its badge) and the
    // domain's own call; a domain without a console has none.
    let nobootdev = page::guest("nobootdev");
    let mut verdict = serde_json::Value::Null;
    common::host::wait_until(
        "a verdict for nobootdev",
        std::time::Duration::from_secs(90),
        || {
            let list = send(addr, "GET", "/v1/domains", &[], b"").json();
            verdict = list
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == nobootdev.as_str())
                .map(|d| d["diagnosis"]["verdict"].clone())
                .unwrap_or_default();
            verdict.is_string()
        },
    );
    let one = send(
        addr,
        "GET",
        &format!("/v1/domains/{nobootdev}/diagnosis"),
        &[],
        b"",
    );
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["verdict"], verdict);
    eprintln!("nobootdev: {verdict}");
    let off = send(
        addr,
        "GET",
        &format!("/v1/domains/{}/diagnosis", page::guest("shutoff")),
        &[],
        b"",
    );
    assert_eq!(off.status, 409, "{}", off.text());

    // A page of another site that resolves its name to 127.0.0.1 (DNS
    // rebinding) sends its own Host: refused.
    let rebound = raw(
        addr,
        "GET /v1/domains HTTP/1.1\r\nHost: evil.example:8480\r\nConnection: close\r\n\r\n",
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    // Hostile parameters are bounded.
    let long = format!("/v1/domains/{}", "a".repeat(300));
    assert_eq!(send(addr, "GET", &long, &[], b"").status, 404);
    assert_eq!(
        send(addr, "GET", "/v1/domains/%ff%fe", &[], b"").status,
        400
    );
}

/// A request written byte for byte, and the reply as text.
fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}
