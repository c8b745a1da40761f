//! The live page and its JSON API with `[ui] access = "users"`: HTTPS only;
//! users of an Argon2id credentials file log in for a `__Host-` session
//! cookie (`Secure`, `HttpOnly`, `SameSite=Strict`); a user bound to a Nova
//! project sees that project's domains and no other (the core's scope
//! check, the same 404 as for a domain that does not exist); a POST needs
//! the page's CSRF token.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use common::daemon::{Daemon, PROJECT_A, PROJECT_B};
use common::fixtures::tempdir;
use common::host::LibvirtdLock;
use common::http::Reply;
use common::owned::Owned;
use common::tls::Cert;
// carol is bound to project A and bob to project B; alice has no project
// (she sees every domain).
use common::users::{ALICE_PASSWORD, BOB_PASSWORD, USERS};

/// One HTTPS request to the daemon, as a browser at https://localhost sends it.
fn https(
    cert: &Cert,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    cert.request(addr, method, target, headers, body)
}

/// Logs `user` in; the session cookie's `name=value`, after checking its
/// attributes.
fn log_in(cert: &Cert, addr: SocketAddr, user: &str, password: &str) -> String {
    let form = format!("user={user}&password={password}");
    let reply = https(
        cert,
        addr,
        "POST",
        "/ui/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert!(
        (300..400).contains(&reply.status),
        "{user}: {} {}",
        reply.status,
        reply.text()
    );
    assert_eq!(reply.header("location"), Some("/ui/"));
    let cookie = reply.header("set-cookie").expect("a session cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for wanted in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            attributes.iter().any(|a| a.eq_ignore_ascii_case(wanted)),
            "{wanted} missing from {cookie}"
        );
    }
    // __Host-: bound to this origin, no Domain attribute.
    assert!(attributes[0].starts_with("__Host-vmshot-ui="), "{cookie}");
    assert!(!attributes
        .iter()
        .any(|a| a.to_ascii_lowercase().starts_with("domain=")));
    attributes[0].to_owned()
}

/// The names `/v1/domains` lists for the session `cookie`, of `ours`.
fn visible(cert: &Cert, addr: SocketAddr, cookie: &str, ours: &[&str]) -> Vec<String> {
    let reply = https(cert, addr, "GET", "/v1/domains", &[("Cookie", cookie)], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = reply.json();
    let domains = list
        .as_array()
        .or_else(|| list["domains"].as_array())
        .unwrap_or_else(|| panic!("a list of domains: {list}"));
    domains
        .iter()
        .filter_map(|d| d["name"].as_str())
        .filter(|n| ours.contains(n))
        .map(str::to_owned)
        .collect()
}

#[test]
fn users_log_in_over_https_and_see_their_projects_domains_only() {
    let _lock = LibvirtdLock::shared();
    // Defined, never started: scope is decided on the domain, whatever its state.
    let a = Owned::define("vmshot-uu-a", PROJECT_A, None);
    let b = Owned::define("vmshot-uu-b", PROJECT_B, None);
    let ours = [a.name.as_str(), b.name.as_str()];

    let cert = Cert::new();
    let dir = tempdir();
    let users = dir.join("ui-users.toml");
    std::fs::write(&users, USERS).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ui = format!(
        "[ui]\naccess = \"users\"\ncredentials_file = \"{}\"\n",
        users.display()
    );

    // Without HTTPS the page with users does not start.
    let Err((_, stderr)) = Daemon::try_start("", &ui, 0o600) else {
        panic!("the page with users started without TLS");
    };
    assert!(stderr.to_lowercase().contains("tls"), "{stderr}");

    let d = Daemon::start(
        "",
        &format!("{}{ui}", cert.server_section("127.0.0.1:0", "")),
    );
    let addr = d.addr;

    // No session: the page sends the browser to the form, the API says 401.
    let reply = https(&cert, addr, "GET", "/ui/", &[], b"");
    assert!((300..400).contains(&reply.status), "{}", reply.status);
    assert_eq!(reply.header("location"), Some("/ui/login"));
    let reply = https(&cert, addr, "GET", "/v1/domains", &[], b"");
    assert_eq!(reply.status, 401, "{}", reply.text());
    // A wrong password: the form again, 401, and no cookie.
    let reply = https(
        &cert,
        addr,
        "POST",
        "/ui/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"user=carol&password=not-her-password",
    );
    assert_eq!(reply.status, 401);
    assert!(reply.header("set-cookie").is_none());
    // A forged cookie is no session.
    let forged = "__Host-vmshot-ui=AAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let reply = https(
        &cert,
        addr,
        "GET",
        "/v1/domains",
        &[("Cookie", forged)],
        b"",
    );
    assert_eq!(reply.status, 401, "{}", reply.text());

    // Each user sees its own project's domain, and the other one not at all.
    let carol = log_in(&cert, addr, "carol", ALICE_PASSWORD);
    assert_eq!(visible(&cert, addr, &carol, &ours), [a.name.as_str()]);
    let bob = log_in(&cert, addr, "bob", BOB_PASSWORD);
    assert_eq!(visible(&cert, addr, &bob, &ours), [b.name.as_str()]);
    let alice = log_in(&cert, addr, "alice", ALICE_PASSWORD);
    assert_eq!(visible(&cert, addr, &alice, &ours), ours);
    let theirs = format!("/v1/domains/{}", b.name);
    let missing = "/v1/domains/vmshot-uu-no-such-domain";
    let (hidden, absent) = (
        https(&cert, addr, "GET", &theirs, &[("Cookie", &carol)], b""),
        https(&cert, addr, "GET", missing, &[("Cookie", &carol)], b""),
    );
    assert_eq!((hidden.status, absent.status), (404, 404));
    assert_eq!(
        hidden.json()["error"]["code"],
        absent.json()["error"]["code"]
    );
    let reply = https(
        &cert,
        addr,
        "GET",
        &format!("/ui/domains/{}", b.uuid),
        &[("Cookie", &carol)],
        b"",
    );
    assert_eq!(reply.status, 404);

    // A POST without the page's CSRF token is refused; with it, it reaches
    // the core.
    let keys = format!("/v1/domains/{}/keys", a.name);
    let reply = https(&cert, addr, "POST", &keys, &[("Cookie", &carol)], b"");
    assert_eq!(reply.status, 403, "{}", reply.text());
    let page = https(&cert, addr, "GET", "/ui/", &[("Cookie", &carol)], b"").text();
    let marker = r#"name="vmshot-csrf" content=""#;
    let at = page.find(marker).expect("the page's CSRF token") + marker.len();
    let token = &page[at..at + 64];
    let reply = https(
        &cert,
        addr,
        "POST",
        &keys,
        &[("Cookie", &carol), ("X-Vmshot-Csrf", token)],
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Nothing to press on a guest that is shut off.
    assert_eq!(reply.json()["pressed"], false);
    // Another user's token does not pass for carol's.
    let bobs_page = https(&cert, addr, "GET", "/ui/", &[("Cookie", &bob)], b"").text();
    let at = bobs_page.find(marker).unwrap() + marker.len();
    let reply = https(
        &cert,
        addr,
        "POST",
        &keys,
        &[
            ("Cookie", &carol),
            ("X-Vmshot-Csrf", &bobs_page[at..at + 64]),
        ],
        b"",
    );
    assert_eq!(reply.status, 403, "{}", reply.text());
}
