//! `X-Auth-Token` validation, two backends behind one trait: static tokens
//! from a TOML file, or Keystone's `GET /v3/auth/tokens` (with the service's
//! own token in `X-Auth-Token` and the caller's in `X-Subject-Token`), its
//! answers cached until the token expires or `max_ttl`, whichever is first.
//!
//! Keystone's answer (captured from keystone 30.0.0 on this machine):
//! 200 `{"token": {"user": {"id"…}, "project": {"id"…}, "roles": [{"id",
//! "name"}…], "expires_at": "2026-11-30T07:14:24.000000Z", …}}`; an unknown
//! token 404 `{"error": {"code": 404, "message": "Could not recognize Fernet
//! token", "title": "Not Found"}}`; a bad service token 401.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::auth::{self, StaticTokens, TokenRules};
use crate::service::Principal;

/// The dialect's name on principals it vouches for.
const DIALECT: &str = "nova";
/// Keystone token ids are ~180 bytes (Fernet); refuse anything absurd unread.
pub const MAX_TOKEN: usize = 8192;
/// Keystone's answer without the catalog is under 2 KB.
const MAX_ANSWER: usize = 256 * 1024;

/// A caller, as a token names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub project_id: String,
    pub roles: BTreeSet<String>,
    pub expires_at: Option<OffsetDateTime>,
}

impl Caller {
    /// Admins see every instance; others their project's (service::scope).
    pub fn principal(&self) -> Principal {
        Principal {
            dialect: DIALECT,
            id: self.user_id.clone(),
            project: Some(self.project_id.clone()),
            roles: self.roles.clone(),
            allow: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.principal().is_admin()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no X-Auth-Token")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    /// Keystone could not answer (or refused our own service token): not the
    /// caller's fault, a 503.
    #[error("keystone: {0}")]
    Unavailable(String),
}

/// What validates a token.
pub trait Validate: Send + Sync {
    fn validate(&self, token: &str) -> impl Future<Output = Result<Caller, TokenError>> + Send;
}

/// The two backends, as the dialect holds them.
pub enum Tokens {
    Static(StaticTokens),
    Keystone(Keystone),
}

impl Validate for Tokens {
    async fn validate(&self, token: &str) -> Result<Caller, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Invalid);
        }
        match self {
            Self::Static(s) => s.validate(token).await,
            Self::Keystone(k) => k.validate(token).await,
        }
    }
}

/// Keystone's cache is keyed by SHA-256, so neither memory nor a lookup's
/// timing holds a usable token.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn expired(expires_at: Option<OffsetDateTime>) -> bool {
    expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc())
}

// ------------------------------------------------------------------- static

/// Nova's static token file (`auth::StaticTokens`): every token names its
/// project and carries Keystone's default roles only.
pub const STATIC_RULES: TokenRules = TokenRules {
    max_len: MAX_TOKEN,
    project_required: true,
    roles: Some(&["admin", "member", "reader"]),
};

impl From<auth::TokenError> for TokenError {
    fn from(e: auth::TokenError) -> Self {
        match e {
            auth::TokenError::Invalid => Self::Invalid,
            auth::TokenError::Expired => Self::Expired,
        }
    }
}

impl Validate for StaticTokens {
    async fn validate(&self, token: &str) -> Result<Caller, TokenError> {
        let holder = self.holder(token)?;
        Ok(Caller {
            user_id: holder.user_id.clone(),
            // Present: STATIC_RULES requires it.
            project_id: holder.project_id.clone().unwrap_or_default(),
            roles: holder.roles.clone(),
            expires_at: holder.expires_at,
        })
    }
}

// ----------------------------------------------------------------- keystone

/// How vmshot reaches Keystone.
#[derive(Debug, Clone)]
pub struct KeystoneConfig {
    /// e.g. `http://keystone:5000` (the `/v3` is added); plain HTTP only for
    /// now.
    pub url: String,
    /// vmshot's own token, allowed to validate others' (Keystone's
    /// `identity:validate_token`: service or admin).
    pub service_token: String,
    /// Connect, send and read, all in one.
    pub timeout: Duration,
    /// A revoked token is still taken until its entry is this old
    /// (keystonemiddleware's `token_cache_time` is 300 s).
    pub max_ttl: Duration,
    /// Entries in all.
    pub capacity: usize,
    /// Entries one user may hold, so one caller minting tokens cannot push
    /// everyone else's out.
    pub per_user: usize,
}

pub struct Keystone {
    config: KeystoneConfig,
    authority: String,
    path: String,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

struct Cached {
    caller: Caller,
    until: Instant,
}

impl Keystone {
    pub fn new(config: KeystoneConfig) -> Result<Self, String> {
        let uri: Uri = config
            .url
            .parse()
            .map_err(|e| format!("keystone url: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("keystone url: only http:// is supported".into());
        }
        let authority = uri.authority().ok_or("keystone url: no host")?.to_string();
        let path = format!(
            "{}/v3/auth/tokens?nocatalog",
            uri.path().trim_end_matches('/')
        );
        Ok(Self {
            config,
            authority,
            path,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Caller> {
        let mut cache = self.cache.lock().expect("cache lock");
        match cache.get(key) {
            Some(c) if c.until > Instant::now() && !expired(c.caller.expires_at) => {
                Some(c.caller.clone())
            }
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: [u8; 32], caller: &Caller) {
        let now = Instant::now();
        let mut until = now + self.config.max_ttl;
        if let Some(expires) = caller.expires_at {
            let left = expires - OffsetDateTime::now_utc();
            until = until.min(now + left.try_into().unwrap_or(Duration::ZERO));
        }
        let mut cache = self.cache.lock().expect("cache lock");
        cache.retain(|_, c| c.until > now);
        let mine: Vec<[u8; 32]> = cache
            .iter()
            .filter(|(_, c)| c.caller.user_id == caller.user_id)
            .map(|(k, _)| *k)
            .collect();
        if mine.len() >= self.config.per_user {
            // The user's own oldest-expiring entry makes room.
            if let Some(k) = mine.iter().min_by_key(|k| cache[*k].until) {
                cache.remove(k);
            }
        }
        if cache.len() >= self.config.capacity {
            if let Some(k) = cache.iter().min_by_key(|(_, c)| c.until).map(|(k, _)| *k) {
                cache.remove(&k);
            }
        }
        if self.config.capacity > 0 && self.config.per_user > 0 {
            cache.insert(
                key,
                Cached {
                    caller: caller.clone(),
                    until,
                },
            );
        }
    }

    #[cfg(test)]
    pub fn cache_len(&self) -> usize {
        self.cache.lock().expect("cache lock").len()
    }

    async fn ask(&self, token: &str) -> Result<Caller, TokenError> {
        let unavailable = |e: &dyn std::fmt::Display| TokenError::Unavailable(e.to_string());
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unavailable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(&e))?;
        let driver = tokio::spawn(connection);
        let request = Request::get(&self.path)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json")
            .header("x-auth-token", &self.config.service_token)
            .header("x-subject-token", token)
            .body(axum::body::Body::empty())
            .map_err(|_| TokenError::Invalid)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unavailable(&e));
        let result = match response {
            Ok(response) => {
                let status = response.status();
                let body =
                    axum::body::to_bytes(axum::body::Body::new(response.into_body()), MAX_ANSWER)
                        .await
                        .map_err(|e| unavailable(&e))?;
                match status {
                    StatusCode::OK => parse_validation(&body),
                    StatusCode::NOT_FOUND => Err(TokenError::Invalid),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        Err(TokenError::Unavailable(format!(
                            "keystone refused vmshot's service token ({status})"
                        )))
                    }
                    other => Err(TokenError::Unavailable(format!(
                        "keystone answered {other}"
                    ))),
                }
            }
            Err(e) => Err(e),
        };
        driver.abort();
        result
    }
}

impl Validate for Keystone {
    async fn validate(&self, token: &str) -> Result<Caller, TokenError> {
        let key = digest(token);
        if let Some(caller) = self.cached(&key) {
            return Ok(caller);
        }
        let caller = tokio::time::timeout(self.config.timeout, self.ask(token))
            .await
            .map_err(|_| {
                TokenError::Unavailable(format!("no answer in {:?}", self.config.timeout))
            })??;
        if expired(caller.expires_at) {
            return Err(TokenError::Expired);
        }
        self.remember(key, &caller);
        Ok(caller)
    }
}

#[derive(Deserialize)]
struct Validation {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    user: Named,
    /// Absent for unscoped and domain-scoped tokens, which Nova refuses too.
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Role>,
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
}

#[derive(Deserialize)]
struct Role {
    name: String,
}

/// Keystone's 200 body into a caller; a token without a project is refused.
pub fn parse_validation(body: &[u8]) -> Result<Caller, TokenError> {
    let v: Validation = serde_json::from_slice(body)
        .map_err(|e| TokenError::Unavailable(format!("unreadable answer: {e}")))?;
    let project = v.token.project.ok_or(TokenError::Invalid)?;
    let expires_at = v
        .token
        .expires_at
        .map(|e| {
            OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339)
                .map_err(|_| TokenError::Unavailable(format!("unreadable expires_at '{e}'")))
        })
        .transpose()?;
    Ok(Caller {
        user_id: v.token.user.id,
        project_id: project.id,
        roles: v.token.roles.into_iter().map(|r| r.name).collect(),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const FILE: &str = r#"
        [[token]]
        id = "0123456789abcdef-admin"
        user_id = "u-admin"
        project_id = "p1"
        roles = ["admin", "member"]

        [[token]]
        id = "0123456789abcdef-member"
        user_id = "u-member"
        project_id = "p2"
        roles = ["member"]
        expires = "2099-01-01T00:00:00Z"

        [[token]]
        id = "0123456789abcdef-old"
        user_id = "u-old"
        project_id = "p2"
        roles = ["reader"]
        expires = "2001-01-01T00:00:00Z"
    "#;

    #[tokio::test]
    async fn static_tokens() {
        let tokens = Tokens::Static(StaticTokens::parse(FILE, STATIC_RULES).unwrap());
        let admin = tokens.validate("0123456789abcdef-admin").await.unwrap();
        assert!(admin.is_admin());
        let p = admin.principal();
        assert_eq!(
            (p.dialect, p.id.as_str(), p.project.as_deref()),
            ("nova", "u-admin", Some("p1"))
        );
        assert!(p.is_admin());
        let member = tokens.validate("0123456789abcdef-member").await.unwrap();
        assert!(!member.principal().is_admin());
        assert_eq!(
            tokens.validate("0123456789abcdef-old").await,
            Err(TokenError::Expired)
        );
        assert_eq!(tokens.validate("nope").await, Err(TokenError::Invalid));
        assert_eq!(tokens.validate("").await, Err(TokenError::Missing));
        assert_eq!(
            tokens.validate(&"x".repeat(MAX_TOKEN + 1)).await,
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn static_tokens_need_a_project_and_known_roles() {
        let bad = |s: &str| StaticTokens::parse(s, STATIC_RULES).unwrap_err();
        let one =
            |rest: &str| format!("[[token]]\nid = \"0123456789abcdefg\"\nuser_id = \"u\"\n{rest}");
        assert!(bad(&one("project_id = \"p\"\nroles = [\"root\"]")).contains("root"));
        assert!(bad(&one("roles = []")).contains("project_id"));
    }

    /// Keystone's answer as keystone 30.0.0 gave it on this machine.
    fn keystone_body(expires_at: &str) -> String {
        format!(
            r#"{{"token": {{"methods": ["password"], "user": {{"domain": {{"id": "default", "name": "Default"}}, "id": "2a36387c00754dfbb57b3cb0a63ecf5b", "name": "admin", "password_expires_at": null}}, "audit_ids": ["euaT4OiYQl-tG1rXM2NMwQ"], "expires_at": "{expires_at}", "issued_at": "2026-11-30T06:14:24.000000Z", "project": {{"domain": {{"id": "default", "name": "Default"}}, "id": "d5fd0b5973cd4d959c2530ad17364af4", "name": "admin"}}, "is_domain": false, "roles": [{{"id": "53610ecb003c4df4a52ec4923a7d21d0", "name": "member"}}, {{"id": "7d0a314325fc4aa0a285f011d887b04d", "name": "reader"}}, {{"id": "b6a5794749094a90bc85a11f274f4df9", "name": "admin"}}]}}}}"#
        )
    }

    /// A Keystone of a few lines: the service token is `svc`, the one valid
    /// subject `good`; counts the validations it answers.
    async fn fake_keystone() -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                // One task a connection, so a slow answer holds up no other.
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = stream.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, body) = if !head.starts_with("get /v3/auth/tokens?nocatalog ") {
                        (
                            "404 NOT FOUND",
                            r#"{"error":{"code":404,"message":"path","title":"Not Found"}}"#
                                .to_owned(),
                        )
                    } else if !head.contains("x-auth-token: svc\r\n") {
                        ("401 UNAUTHORIZED", r#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#.to_owned())
                    } else if head.contains("x-subject-token: good\r\n") {
                        ("200 OK", keystone_body("2099-11-30T07:14:24.000000Z"))
                    } else if head.contains("x-subject-token: stale\r\n") {
                        ("200 OK", keystone_body("2001-11-30T07:14:24.000000Z"))
                    } else if head.contains("x-subject-token: slow\r\n") {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    } else {
                        ("404 NOT FOUND", r#"{"error":{"code":404,"message":"Could not recognize Fernet token","title":"Not Found"}}"#.to_owned())
                    };
                    let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                    stream.write_all(answer.as_bytes()).await.unwrap();
                });
            }
        });
        (url, hits, task)
    }

    fn config(url: &str, service_token: &str) -> KeystoneConfig {
        KeystoneConfig {
            url: url.to_owned(),
            service_token: service_token.to_owned(),
            timeout: Duration::from_millis(500),
            max_ttl: Duration::from_secs(300),
            capacity: 4,
            per_user: 2,
        }
    }

    #[tokio::test]
    async fn keystone_validates_and_caches() {
        let (url, hits, task) = fake_keystone().await;
        let keystone = Keystone::new(config(&url, "svc")).unwrap();
        let caller = keystone.validate("good").await.unwrap();
        assert_eq!(caller.user_id, "2a36387c00754dfbb57b3cb0a63ecf5b");
        assert_eq!(caller.project_id, "d5fd0b5973cd4d959c2530ad17364af4");
        assert!(caller.is_admin() && caller.roles.contains("reader"));
        assert_eq!(caller.expires_at.unwrap().year(), 2099);
        // The second time from the cache: Keystone is not asked again.
        assert_eq!(keystone.validate("good").await.unwrap(), caller);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

        assert_eq!(keystone.validate("bogus").await, Err(TokenError::Invalid));
        assert_eq!(keystone.validate("stale").await, Err(TokenError::Expired));
        assert!(matches!(
            keystone.validate("slow").await,
            Err(TokenError::Unavailable(_))
        ));
        assert_eq!(keystone.cache_len(), 1, "only what is valid is kept");

        let refused = Keystone::new(config(&url, "wrong")).unwrap();
        let err = refused.validate("good").await.unwrap_err();
        assert!(
            matches!(&err, TokenError::Unavailable(m) if m.contains("service token")),
            "{err}"
        );
        task.abort();

        let gone = Keystone::new(config(&url, "svc")).unwrap();
        assert!(matches!(
            gone.validate("good").await,
            Err(TokenError::Unavailable(_))
        ));
        assert!(Keystone::new(config("https://k:5000", "svc")).is_err());
    }

    #[test]
    fn the_cache_is_bounded_overall_and_per_user() {
        let keystone = Keystone::new(config("http://127.0.0.1:1", "svc")).unwrap();
        let caller = |user: &str| Caller {
            user_id: user.into(),
            project_id: "p".into(),
            roles: BTreeSet::new(),
            expires_at: None,
        };
        for i in 0..5u8 {
            keystone.remember([i; 32], &caller("greedy"));
        }
        assert_eq!(keystone.cache_len(), 2, "one user holds at most per_user");
        for (i, user) in ["a", "b", "c"].iter().enumerate() {
            keystone.remember([100 + i as u8; 32], &caller(user));
        }
        assert_eq!(keystone.cache_len(), 4, "capacity");
        assert!(keystone.cached(&[102; 32]).is_some(), "the newest is in");
    }

    #[test]
    fn tokens_without_a_project_are_refused() {
        let unscoped = br#"{"token": {"user": {"id": "u"}, "roles": [], "expires_at": "2099-01-01T00:00:00.000000Z"}}"#;
        assert_eq!(parse_validation(unscoped), Err(TokenError::Invalid));
        assert!(parse_validation(b"<html>").is_err());
    }

    #[test]
    fn the_documented_example_parses() {
        let tokens = StaticTokens::parse(
            include_str!("../../../systemd/nova-tokens.toml"),
            STATIC_RULES,
        )
        .unwrap();
        assert_eq!(tokens.len(), 1);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::api::fuzzing::strategies;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever Keystone (or something in its place) answers, reading it
        /// gives a caller or an error, never a panic.
        #[test]
        fn validations_never_panic(body in strategies::body(), user in strategies::json()) {
            let _ = parse_validation(&body);
            let shaped = serde_json::json!({"token": {"user": user, "project": {"id": "p"}, "roles": []}});
            let _ = parse_validation(shaped.to_string().as_bytes());
        }
    }
}
