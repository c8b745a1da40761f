//! Which host a signed request was meant for. A signature that covers the
//! `Host` header binds the request to a host only if the receiver checks the
//! name: otherwise a request captured on its way to one host can be replayed
//! on any other that knows the same key.

use std::net::IpAddr;

use super::LocalAddr;

/// The names this host answers to: the configured ones, its own host name,
/// and the address each connection was made to.
#[derive(Debug, Clone)]
pub struct HostNames {
    names: Vec<String>,
}

impl HostNames {
    /// `configured` names (e.g. what a proxy in front forwards), plus this
    /// machine's host name.
    pub fn new(configured: &[String]) -> Self {
        let mut names: Vec<String> = configured.iter().map(|n| n.to_ascii_lowercase()).collect();
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(name.trim().to_ascii_lowercase());
        }
        names.retain(|n| !n.is_empty());
        Self { names }
    }

    /// Whether `host` (a `Host` header: a name or address, with or without a
    /// port) names this host, for a request that came to `local`.
    pub fn accepts(&self, host: &str, local: Option<LocalAddr>) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        if let Some(LocalAddr(local)) = local {
            let ip = name.trim_start_matches('[').trim_end_matches(']');
            if ip.parse::<IpAddr>().is_ok_and(|ip| ip == local.ip()) {
                return true;
            }
            if local.ip().is_loopback() && name == "localhost" {
                return true;
            }
        }
        self.names
            .iter()
            .any(|n| *n == name || strip_port(n) == name)
    }
}

/// `name:port` → `name`; `[v6]:port` → `[v6]`; a bare IPv6 address stays whole.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|_| host.find(']')) {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(addr: &str) -> Option<LocalAddr> {
        Some(LocalAddr(addr.parse().unwrap()))
    }

    #[test]
    fn the_address_dialled_and_the_names_configured_are_this_host() {
        let names = HostNames::new(&["vmshot.hv7.example".into()]);
        assert!(names.accepts("10.0.0.7:8443", local("10.0.0.7:8443")));
        assert!(names.accepts("10.0.0.7", local("10.0.0.7:443")));
        assert!(names.accepts("[::1]:8480", local("[::1]:8480")));
        assert!(names.accepts("localhost:8480", local("127.0.0.1:8480")));
        assert!(names.accepts("VMSHOT.hv7.example:8443", local("10.0.0.7:8443")));
        assert!(
            !names.accepts("10.0.0.8:8443", local("10.0.0.7:8443")),
            "another host"
        );
        assert!(!names.accepts("localhost", local("10.0.0.7:8443")));
        assert!(!names.accepts("vmshot.hv8.example", local("10.0.0.7:8443")));
        assert!(!names.accepts("10.0.0.7", None));
    }

    #[test]
    fn ports_are_stripped_carefully() {
        assert_eq!(strip_port("a.example:80"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a:b"), "a:b");
    }
}

#[cfg(test)]
mod props {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// A configured name is accepted with any port or none, in any case;
        /// any `Host` at all is an answer, never a panic.
        #[test]
        fn configured_names_are_accepted(
            name in "[a-z][a-z0-9.-]{0,20}",
            port in proptest::option::of(any::<u16>()),
            upper in any::<bool>(),
            junk in "\\[?[0-9a-f:.]{0,20}\\]?(:[0-9]{0,6})?|\\PC{0,30}",
        ) {
            let hosts = HostNames::new(std::slice::from_ref(&name));
            let mut host = if upper { name.to_ascii_uppercase() } else { name.clone() };
            if let Some(port) = port {
                host = format!("{host}:{port}");
            }
            prop_assert!(hosts.accepts(&host, None));
            let local = LocalAddr(SocketAddr::from(([127, 0, 0, 1], 8080)));
            let _ = hosts.accepts(&junk, Some(local));
        }
    }
}
