//! A self-signed certificate for `localhost` and a TLS client that trusts
//! only it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Cert {
    pub dir: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: Vec<u8>,
}

impl Cert {
    /// A fresh certificate and key (0600) in a temp dir.
    pub fn new() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = super::fixtures::tempdir();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            dir,
            cert_path,
            key_path,
            der: cert.cert.der().to_vec(),
        }
    }

    /// A `[server]` section listening on `listen` with this certificate, plus `extra` keys.
    pub fn server_section(&self, listen: &str, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"{listen}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}\n",
            self.cert_path.display(),
            self.key_path.display()
        )
    }

    /// A client connection to `addr` offering `alpn`, handshake not yet done.
    pub fn client(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone().into()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
        rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap())
    }

    /// One HTTPS request to `addr`, as a browser at https://localhost sends it.
    pub fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> super::http::Reply {
        let mut tls = self.client(addr, &[]);
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        head += &format!("Content-Length: {}\r\n\r\n", body.len());
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body).unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw);
        super::http::parse(&raw)
    }

    /// A GET over TLS to `addr`; the raw reply.
    pub fn get(&self, addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut tls = self.client(addr, &[]);
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply)?;
        Ok(reply)
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
