//! Session cookies: what a log-in issues (Oracle's `POST /authenticate/`,
//! the live page's `POST /ui/login`) and every later call presents. Each use
//! has its own `CookieSpec`: its cookie's name, attributes and the MAC's
//! context, so that one use's cookie is never taken by another. Stateless: the cookie carries who and until when, signed
//! with HMAC-SHA256 under the cookie key, so nothing is stored and any
//! daemon holding the key can check it.
//!
//! ```text
//!   value = "v1" . b64url(user) . b64url(grant digest) . issued_at . expires_at . b64url(mac)
//!   mac   = HMAC-SHA256(key, spec.context + everything before the last '.')
//!
//!   authenticate ──► expires = now + session_secs
//!   GET /refresh/ ─► expires = min(now + session_secs, issued_at + session_cap_secs)
//!   now ≥ expires, a changed grant, a bad mac, anything unparsable ──► 401
//! ```
//!
//! Oracle's own value is a JSON document (`{"identity": "{\"realm\": …,
//! \"value\": …, \"signature\": …}"}`) that clients pass back unread; ours is
//! opaque and uses only cookie-safe characters, so no client has to quote it.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

use crate::config::read_secret_file;

/// One use of session cookies.
#[derive(Debug)]
pub struct CookieSpec {
    /// The cookie's name.
    pub name: &'static str,
    /// Prefixed to what the MAC covers: a cookie of one spec fails another's check.
    pub context: &'static [u8],
    /// `SameSite=Strict`: a browser never sends it on a request another site
    /// started (the live page's CSRF defence, beside its token).
    pub same_site_strict: bool,
}

/// Oracle's: the name its clients look for.
pub const ORACLE: CookieSpec = CookieSpec {
    name: "nimbula",
    context: b"vmshot-oracle-session\0",
    same_site_strict: false,
};

const VERSION: &str = "v1";
/// Longest cookie value accepted: a user name of `MAX_USER` bytes encodes to
/// well under this.
pub const MAX_VALUE: usize = 512;
/// Key sizes: at least the MAC's own, and a file that is plainly not a key
/// (a whole certificate, say) is refused.
pub const MIN_KEY: usize = 32;
pub const MAX_KEY: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// The secret that signs cookies.
#[derive(Clone)]
pub struct CookieKey {
    bytes: Vec<u8>,
    spec: &'static CookieSpec,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(…)")
    }
}

impl CookieKey {
    /// A fresh key for this start only: cookies die with the process.
    pub fn random(spec: &'static CookieSpec) -> Self {
        let mut bytes = vec![0; MIN_KEY];
        OsRng.fill_bytes(&mut bytes);
        Self { bytes, spec }
    }

    pub fn from_bytes(spec: &'static CookieSpec, bytes: &[u8]) -> Result<Self, String> {
        if !(MIN_KEY..=MAX_KEY).contains(&bytes.len()) {
            return Err(format!(
                "a cookie key is {MIN_KEY} to {MAX_KEY} bytes, not {} \
                 (e.g. 'head -c 32 /dev/urandom > FILE')",
                bytes.len()
            ));
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            spec,
        })
    }

    /// The key in `path`, which other users may not read.
    pub fn load(spec: &'static CookieSpec, path: &Path) -> Result<Self, String> {
        let bytes = read_secret_file(path).map_err(|e| e.to_string())?;
        Self::from_bytes(spec, &bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn mac(&self) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.bytes).expect("HMAC takes any key length");
        mac.update(self.spec.context);
        mac
    }
}

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub lifetime: Duration,
    pub cap: Duration,
}

/// What a cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user's name (the `{user}` of the two-part name).
    pub user: String,
    /// `User::grant_digest` when the session began.
    pub grant: [u8; 32],
    /// Unix seconds of the first authentication.
    pub issued_at: u64,
    /// Unix seconds from which the cookie is refused.
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no session cookie")]
    Missing,
    #[error("the session cookie is malformed")]
    Malformed,
    #[error("the session cookie's signature does not match")]
    BadSignature,
    #[error("the session has expired")]
    Expired,
    #[error("the session's grant has changed since it began")]
    Revoked,
}

impl Session {
    /// A session that begins `now` (Unix seconds).
    pub fn begin(user: &str, grant: [u8; 32], now: u64, policy: Policy) -> Self {
        let life = policy.lifetime.min(policy.cap).as_secs();
        Self {
            user: user.to_owned(),
            grant,
            issued_at: now,
            expires_at: now.saturating_add(life),
        }
    }

    /// The same session extended from `now`, never past the cap from its
    /// first authentication.
    pub fn refreshed(&self, now: u64, policy: Policy) -> Self {
        let cap = self.issued_at.saturating_add(policy.cap.as_secs());
        Self {
            expires_at: now.saturating_add(policy.lifetime.as_secs()).min(cap),
            ..self.clone()
        }
    }

    /// Seconds left at `now`, for `Max-Age`.
    pub fn max_age(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }

    /// The signed cookie value.
    pub fn seal(&self, key: &CookieKey) -> String {
        let body = format!(
            "{VERSION}.{}.{}.{}.{}",
            B64.encode(&self.user),
            B64.encode(self.grant),
            self.issued_at,
            self.expires_at
        );
        let mut mac = key.mac();
        mac.update(body.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{body}.{}", B64.encode(tag))
    }

    /// The session a cookie value carries, if it is ours, untampered and
    /// unexpired at `now`. The signature is checked before anything the
    /// value says is believed.
    pub fn open(key: &CookieKey, value: &str, now: u64) -> Result<Self, SessionError> {
        if value.len() > MAX_VALUE {
            return Err(SessionError::Malformed);
        }
        let (body, tag) = value.rsplit_once('.').ok_or(SessionError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| SessionError::Malformed)?;
        let mut mac = key.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| SessionError::BadSignature)?;
        let session = Self::parse_body(body).ok_or(SessionError::Malformed)?;
        if now >= session.expires_at {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }

    fn parse_body(body: &str) -> Option<Self> {
        let mut parts = body.split('.');
        if parts.next()? != VERSION {
            return None;
        }
        let user = String::from_utf8(B64.decode(parts.next()?).ok()?).ok()?;
        let grant = B64.decode(parts.next()?).ok()?.try_into().ok()?;
        let issued_at = parts.next()?.parse().ok()?;
        let expires_at = parts.next()?.parse().ok()?;
        if parts.next().is_some() || expires_at < issued_at {
            return None;
        }
        Some(Self {
            user,
            grant,
            issued_at,
            expires_at,
        })
    }

    /// Whether the user's grant today is the one the session began with.
    pub fn check_grant(&self, current: &[u8; 32]) -> Result<(), SessionError> {
        // Both digests are public to the holder; no need for constant time.
        if &self.grant == current {
            Ok(())
        } else {
            Err(SessionError::Revoked)
        }
    }
}

/// The `Set-Cookie` value: Oracle sends `Path=/` and `Max-Age`; `HttpOnly`
/// keeps the cookie from page scripts, and `Secure` is added over TLS.
pub fn set_cookie(spec: &CookieSpec, value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let strict = if spec.same_site_strict {
        "; SameSite=Strict"
    } else {
        ""
    };
    let name = spec.name;
    format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly{secure}{strict}")
}

/// The `nimbula` value among a request's `Cookie` headers. More than one is
/// refused: which one a client meant cannot be told.
pub fn from_cookie_headers<'a>(
    spec: &CookieSpec,
    headers: impl IntoIterator<Item = &'a str>,
) -> Result<&'a str, SessionError> {
    let mut found = None;
    for header in headers {
        for pair in header.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim() != spec.name {
                continue;
            }
            if found.is_some() {
                return Err(SessionError::Malformed);
            }
            // Curl users paste the value back quoted at times.
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            found = Some(value);
        }
    }
    found.ok_or(SessionError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        lifetime: Duration::from_secs(1800),
        cap: Duration::from_secs(10_800),
    };
    const T0: u64 = 1_700_000_000;

    fn key(b: u8) -> CookieKey {
        CookieKey::from_bytes(&ORACLE, &[b; 32]).unwrap()
    }

    fn session() -> Session {
        Session::begin("jack.jones@example.com", [7; 32], T0, POLICY)
    }

    #[test]
    fn round_trip() {
        let s = session();
        assert_eq!((s.issued_at, s.expires_at), (T0, T0 + 1800));
        let value = s.seal(&key(1));
        assert!(value.len() < MAX_VALUE);
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(Session::open(&key(1), &value, T0 + 1799), Ok(s.clone()));
        assert_eq!(s.max_age(T0 + 100), 1700);
        assert_eq!(s.check_grant(&[7; 32]), Ok(()));
        assert_eq!(s.check_grant(&[8; 32]), Err(SessionError::Revoked));
    }

    #[test]
    fn expiry() {
        let value = session().seal(&key(1));
        assert_eq!(
            Session::open(&key(1), &value, T0 + 1800),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn refresh_extends_up_to_the_cap() {
        let s = session();
        let r = s.refreshed(T0 + 1000, POLICY);
        assert_eq!((r.issued_at, r.expires_at), (T0, T0 + 2800));
        let late = s.refreshed(T0 + 10_000, POLICY);
        assert_eq!(late.expires_at, T0 + 10_800);
        let value = late.seal(&key(1));
        assert!(Session::open(&key(1), &value, T0 + 10_799).is_ok());
        assert_eq!(
            Session::open(&key(1), &value, T0 + 10_800),
            Err(SessionError::Expired)
        );
        // A lifetime longer than the cap is cut to the cap from the start.
        let long = Policy {
            lifetime: Duration::from_secs(20_000),
            ..POLICY
        };
        assert_eq!(
            Session::begin("a", [0; 32], T0, long).expires_at,
            T0 + 10_800
        );
    }

    #[test]
    fn tampering_with_any_field_is_caught() {
        let value = session().seal(&key(1));
        let parts: Vec<&str> = value.split('.').collect();
        assert_eq!(parts.len(), 6);
        let replacements = [
            "v2".to_owned(),
            B64.encode("admin"),
            B64.encode([8u8; 32]),
            (T0 + 5000).to_string(),
            (T0 + 99_999).to_string(),
            B64.encode([0u8; 32]),
        ];
        for (i, replacement) in replacements.iter().enumerate() {
            let mut forged = parts.clone();
            forged[i] = replacement;
            let forged = forged.join(".");
            assert_eq!(
                Session::open(&key(1), &forged, T0),
                Err(SessionError::BadSignature),
                "field {i}"
            );
        }
        // A flipped character anywhere.
        for i in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).unwrap();
            assert!(Session::open(&key(1), &forged, T0).is_err(), "byte {i}");
        }
    }

    #[test]
    fn another_key_is_refused() {
        let value = session().seal(&key(1));
        assert_eq!(
            Session::open(&key(2), &value, T0),
            Err(SessionError::BadSignature)
        );
        let random = CookieKey::random(&ORACLE);
        assert_eq!(
            Session::open(&random, &value, T0),
            Err(SessionError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_refused() {
        let long = "a.".repeat(400);
        for value in [
            "",
            ".",
            "a",
            "v1....",
            "%%%.%%%",
            "v1.a.b.c.d.!!!",
            long.as_str(),
        ] {
            assert!(Session::open(&key(1), value, T0).is_err(), "{value:?}");
        }
        // Correctly signed but not our layout: still refused.
        let mut mac = key(1).mac();
        mac.update(b"v1.x.y");
        let value = format!("v1.x.y.{}", B64.encode(mac.finalize().into_bytes()));
        assert_eq!(
            Session::open(&key(1), &value, T0),
            Err(SessionError::Malformed)
        );
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..5_000 {
            let len = (state % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b"v1.AZaz09-_=%"[(state % 13) as usize]
                })
                .collect();
            let value = String::from_utf8(bytes).unwrap();
            assert!(Session::open(&key(1), &value, T0).is_err());
        }
    }

    #[test]
    fn keys_have_bounds() {
        assert!(CookieKey::from_bytes(&ORACLE, &[0; 31]).is_err());
        assert!(CookieKey::from_bytes(&ORACLE, &[0; MAX_KEY + 1]).is_err());
        assert!(!format!("{:?}", key(1)).contains('1'));
    }

    #[test]
    fn set_cookie_and_cookie_headers() {
        assert_eq!(
            set_cookie(&ORACLE, "abc", 1800, false),
            "nimbula=abc; Path=/; Max-Age=1800; HttpOnly"
        );
        assert!(set_cookie(&ORACLE, "abc", 1, true).ends_with("; HttpOnly; Secure"));
        assert_eq!(
            from_cookie_headers(&ORACLE, ["a=b; nimbula=xyz; c=d"]),
            Ok("xyz")
        );
        assert_eq!(from_cookie_headers(&ORACLE, ["nimbula=\"xyz\""]), Ok("xyz"));
        assert_eq!(from_cookie_headers(&ORACLE, ["a=b", "nimbula=q"]), Ok("q"));
        assert_eq!(
            from_cookie_headers(&ORACLE, ["nimbula=a", "nimbula=b"]),
            Err(SessionError::Malformed)
        );
        assert_eq!(
            from_cookie_headers(&ORACLE, ["nimbulax=a"]),
            Err(SessionError::Missing)
        );
        assert_eq!(from_cookie_headers(&ORACLE, []), Err(SessionError::Missing));
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    const POLICY: Policy = Policy {
        lifetime: Duration::from_secs(1800),
        cap: Duration::from_secs(10_800),
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// A sealed session opens as itself until it expires, under its own
        /// key and use only; any one byte of the cookie changed, and it is
        /// refused.
        #[test]
        fn sealed_sessions_open_and_nothing_else_does(
            user in "[A-Za-z0-9._@+-]{1,64}",
            grant in any::<[u8; 32]>(),
            now in 0u64..4_102_444_800,
            later in 0u64..1800,
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let key = CookieKey::from_bytes(&ORACLE, &[3; 32]).unwrap();
            let session = Session::begin(&user, grant, now, POLICY);
            let value = session.seal(&key);
            prop_assert!(value.len() <= MAX_VALUE);
            prop_assert_eq!(Session::open(&key, &value, now + later), Ok(session.clone()));
            prop_assert_eq!(Session::open(&key, &value, now + 1800), Err(SessionError::Expired));
            let other = CookieKey::from_bytes(&ORACLE, &[4; 32]).unwrap();
            prop_assert_eq!(Session::open(&other, &value, now), Err(SessionError::BadSignature));

            let mut bytes = value.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != to);
            bytes[i] = to;
            let changed = String::from_utf8_lossy(&bytes);
            prop_assert!(Session::open(&key, &changed, now).is_err(), "{} opened", changed);
        }

        /// Whatever the `Cookie` headers and the value, reading them is an
        /// answer, never a panic.
        #[test]
        fn cookies_never_panic(
            headers in proptest::collection::vec("((nimbula|a|__Host-vmshot-ui)=\"?[ -~]{0,40}\"?;? ?){0,3}", 0..3),
            value in "(v1\\.)?[A-Za-z0-9_.-]{0,80}",
        ) {
            let key = CookieKey::from_bytes(&ORACLE, &[3; 32]).unwrap();
            if let Ok(found) = from_cookie_headers(&ORACLE, headers.iter().map(String::as_str)) {
                let _ = Session::open(&key, found, 0);
            }
            let _ = Session::open(&key, &value, 0);
        }
    }
}
