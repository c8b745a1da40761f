//! `vmshot serve` with a certificate: HTTPS only, through rustls.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::daemon::Daemon;

/// A GET over TLS to `addr`, trusting only `cert_der`; the raw reply.
fn https_get(addr: std::net::SocketAddr, cert_der: &[u8], path: &str) -> std::io::Result<String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.to_vec().into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr)?);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn with_a_certificate_it_speaks_https_on_any_address() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = common::fixtures::tempdir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // 0.0.0.0 is allowed because TLS is configured.
    let server = format!(
        "[server]\nlisten = \"0.0.0.0:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let d = Daemon::start("", &server);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.addr.port()));
    let reply = https_get(addr, cert.cert.der(), "/healthz").unwrap();
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
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err((code, stderr)) = Daemon::try_start("", &server, 0o600) else {
        panic!("started with a world-readable TLS key");
    };
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("key.pem") && stderr.contains("accessible to other users"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
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
