//! Who may use the live page and the native API, decided once for both.
//!
//! - `loopback` (the default): callers on a loopback address, whose `Host`
//!   names a loopback host (a DNS-rebinding page cannot pass for one), act as
//!   the host's operator and see every domain. No log-in, no cookie.
//! - `users`: users from a credentials file (Argon2id hashes, Oracle's file
//!   format) log in at `/ui/login` and get a session cookie (`__Host-`,
//!   `Secure`, `HttpOnly`, `SameSite=Strict`); the core's scope check holds
//!   (a user bound to a project sees only its domains). HTTPS only.
//!
//! Every state-changing call (POST) must carry `X-Vmshot-Csrf`, a token the
//! page embeds, derived from the session (or, on loopback, from a key drawn
//! at start): another site can neither read it nor, without a CORS preflight
//! we never grant, send a custom header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{header, Method};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

use super::error::WebError;
use crate::api::oracle_credentials::{User, Users};
use crate::api::session::{self, CookieKey, CookieSpec, Policy, Session};
use crate::service::Principal;

/// The page's session cookie: `__Host-` binds it to this origin, path `/`.
pub const UI_COOKIE: CookieSpec = CookieSpec {
    name: "__Host-vmshot-ui",
    context: b"vmshot-ui-session\0",
    same_site_strict: true,
};
pub const CSRF_HEADER: &str = "x-vmshot-csrf";
const DIALECT: &str = "ui";

/// A caller let in, and the token its page must send back on POSTs.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub csrf: String,
    /// The user's name; `None` on loopback.
    pub user: Option<String>,
}

pub enum Mode {
    Loopback,
    Users {
        users: Arc<Users>,
        key: CookieKey,
        policy: Policy,
    },
}

pub struct Access {
    mode: Mode,
    /// Signs CSRF tokens; drawn at start (tokens die with the process, as
    /// the page does).
    csrf_key: [u8; 32],
}

impl Access {
    pub fn new(mode: Mode) -> Self {
        let mut csrf_key = [0; 32];
        OsRng.fill_bytes(&mut csrf_key);
        Self { mode, csrf_key }
    }

    pub fn logs_in(&self) -> bool {
        matches!(self.mode, Mode::Users { .. })
    }

    /// The caller, or why not.
    pub fn caller(&self, head: &Parts) -> Result<Caller, WebError> {
        match &self.mode {
            Mode::Loopback => {
                let peer = head
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0);
                let host = head.headers.get(header::HOST).and_then(|v| v.to_str().ok());
                if !peer.is_some_and(|p| p.ip().is_loopback()) || !host.is_some_and(loopback_host) {
                    return Err(WebError::forbidden(
                        "the live page answers on loopback only ([ui] access = \"loopback\")",
                    ));
                }
                Ok(Caller {
                    principal: Principal::unlimited(DIALECT, "loopback"),
                    csrf: self.token(b"loopback"),
                    user: None,
                })
            }
            Mode::Users { users, key, .. } => {
                let cookies = head
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                let denied =
                    |e: session::SessionError| WebError::unauthorized(format!("{e}: log in again"));
                let value = session::from_cookie_headers(&UI_COOKIE, cookies).map_err(denied)?;
                let session = Session::open(key, value, unix_now()).map_err(denied)?;
                let user = users
                    .get(&session.user)
                    .ok_or_else(|| denied(session::SessionError::Revoked))?;
                session.check_grant(&user.grant_digest()).map_err(denied)?;
                Ok(Caller {
                    principal: principal(user),
                    csrf: self.token(value.as_bytes()),
                    user: Some(user.name.clone()),
                })
            }
        }
    }

    /// A POST's CSRF token, and the browser's word on where it came from.
    pub fn check_post(&self, head: &Parts, caller: &Caller) -> Result<(), WebError> {
        if head.method != Method::POST {
            return Ok(());
        }
        let site = head
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s != "same-origin" && s != "none") {
            return Err(WebError::forbidden("cross-site requests are refused"));
        }
        let sent = head
            .headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(sent, caller.csrf.as_bytes()) {
            return Err(WebError::forbidden(format!(
                "missing or wrong {CSRF_HEADER} header"
            )));
        }
        Ok(())
    }

    /// Checks `user`'s password (off the async threads: Argon2 costs tens of
    /// ms) and answers the `Set-Cookie` of a new session.
    pub async fn log_in(
        &self,
        user: &str,
        password: &str,
        secure: bool,
    ) -> Result<String, WebError> {
        let Mode::Users { users, key, policy } = &self.mode else {
            return Err(WebError::bad_request("this host's page needs no log-in"));
        };
        let refused = || WebError::unauthorized("wrong user name or password");
        if user.len() > crate::api::oracle_credentials::MAX_USER
            || password.len() > crate::api::oracle_credentials::MAX_PASSWORD
        {
            return Err(refused());
        }
        let (users, name, password) = (users.clone(), user.to_owned(), password.to_owned());
        let found = tokio::task::spawn_blocking(move || users.verify(&name, &password).cloned())
            .await
            .map_err(WebError::internal)?
            .ok_or_else(refused)?;
        let now = unix_now();
        let session = Session::begin(&found.name, found.grant_digest(), now, *policy);
        Ok(session::set_cookie(
            &UI_COOKIE,
            &session.seal(key),
            session.max_age(now),
            secure,
        ))
    }

    /// A `Set-Cookie` that ends the session in the browser.
    pub fn log_out(&self) -> String {
        session::set_cookie(&UI_COOKIE, "", 0, true)
    }

    fn token(&self, about: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.csrf_key).expect("any key length");
        mac.update(b"vmshot-ui-csrf\0");
        mac.update(about);
        hex::encode(mac.finalize().into_bytes())
    }
}

fn principal(user: &User) -> Principal {
    Principal {
        dialect: DIALECT,
        id: user.name.clone(),
        project: user.project.clone(),
        roles: user.roles.clone(),
        allow: user.instances.clone(),
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in [
            "localhost",
            "127.0.0.1:8480",
            "[::1]:80",
            "LOCALHOST:1",
            "127.1.2.3",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8480",
            "10.0.0.1",
            "[::2]:80",
            "",
            "localhost.evil.com",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
