//! `vmshot serve` with a certificate: HTTPS only, through rustls.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;

use common::daemon::Daemon;
use common::tls::Cert;

#[test]
fn with_a_certificate_it_speaks_https_on_any_address() {
    let cert = Cert::new();
    // 0.0.0.0 is allowed because TLS is configured.
    let server = cert.server_section("0.0.0.0:0", "");
    let d = Daemon::start("", &server);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.addr.port()));
    let reply = cert.get(addr, "/healthz").unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok\n"), "{reply}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(!raw.starts_with(b"HTTP/1.1 200"), "plaintext was served");
    drop(d);

    // A world-readable private key stops the start.
    std::fs::set_permissions(&cert.key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err((code, stderr)) = Daemon::try_start("", &server, 0o600) else {
        panic!("started with a world-readable TLS key");
    };
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("key.pem") && stderr.contains("accessible to other users"),
        "{stderr}"
    );
}

#[test]
fn without_a_certificate_it_refuses_a_non_loopback_address() {
    let Err((code, stderr)) = Daemon::try_start("", "[server]\nlisten = \"0.0.0.0:0\"\n", 0o600)
    else {
        panic!("served plain HTTP on 0.0.0.0");
    };
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("tls_cert") && stderr.contains("allow_plaintext_remote"),
        "{stderr}"
    );
}
