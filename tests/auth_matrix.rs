//! The auth matrix (issue 12, point 4): every scheme of every dialect asked,
//! over HTTP, by a valid caller, a wrong secret, an unknown key, an expired
//! or skewed credential, a replay, another tenant's guest, and a credential
//! without the role or grant the call needs, against the real daemon, the
//! real libvirtd and real guests. Each test writes its scheme's row
//! (`target/reliability/auth-<scheme>.md`, which `scripts/reliability.sh`
//! puts into docs/RELIABILITY.md) before it asserts that every cell is what
//! the dialect documents.
//!
//! "Other tenant" is a guest of project B (shut off where that is enough:
//! scope is decided before state) asked for by project A: it must be
//! answered exactly as a guest that does not exist, while B itself gets
//! another answer. "Missing role" is Oracle's `Compute_Operations`; where no
//! call needs a role, an access key's own limit to named instances
//! (`instances = […]`) on a guest outside it, or Huawei's key bound to no
//! project; tokens and native users have none to miss (`n/a`, and a caller
//! without a role is seen served).

mod common;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::daemon::{
    Daemon, KEY_ID, LIMITED_KEY_ID, LIMITED_SECRET, PROJECT_A, PROJECT_A_KEY, PROJECT_B,
    PROJECT_B_KEY, SECRET,
};
use common::fixtures::{self, shows_pattern, tempdir, PATTERN};
use common::host::{ensure_libvirtd, LibvirtdLock};
use common::http::{base64_bytes, send, Reply};
use common::image_check::decode_rgb;
use common::matrix::AuthRow;
use common::nova::{self, Token};
use common::oracle;
use common::owned::Owned;
use common::signing::{
    acs3_headers_at, alibaba_date, canonical_query, huawei_headers, signed_query, SigV4,
};
use common::tls::Cert;
use common::users::{users_file, ALICE_PASSWORD, BOB_PASSWORD};

const KEY: (&str, &str) = (KEY_ID, SECRET);
const LIMITED_KEY: (&str, &str) = (LIMITED_KEY_ID, LIMITED_SECRET);
/// Beyond the skew Alibaba and Huawei allow (15 min); SigV4's rows use an
/// hour, which a presigned URL good for a minute is past too.
const SKEW: i64 = 16 * 60;

/// An answer as a caller could compare two: status, the dialect's code and
/// message, and how the table shows it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    code: String,
    message: String,
}

impl Answer {
    fn new(status: u16, code: &Value, message: &Value) -> Self {
        Self {
            status,
            code: code.as_str().unwrap_or("-").to_owned(),
            message: message.as_str().unwrap_or("-").to_owned(),
        }
    }

    /// The same, with the instance asked for written as ID.
    fn about(mut self, id: &str) -> Self {
        self.message = self.message.replace(id, "ID");
        self
    }
}

/// Status and code; dialects that give many refusals one code (Huawei's
/// gateway, Oracle with none) show the message too.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code.as_str() {
            "APIGW.0301" => {
                let why = self.message.split(": ").nth(1).unwrap_or(&self.message);
                write!(f, "{} {} ({why})", self.status, self.code)
            }
            "" => write!(f, "{} \"{}\"", self.status, self.message),
            code => write!(f, "{} {code}", self.status),
        }
    }
}

/// Each dialect's refusal, read as an `Answer`.
mod answer {
    use serde_json::{json, Value};

    use super::Answer;
    use crate::common::http::Reply;

    pub(super) fn alibaba(reply: &Reply) -> Answer {
        let body = reply.json();
        Answer::new(reply.status, &body["Code"], &body["Message"])
    }

    /// The text of `<name>` in an XML body.
    pub(super) fn element(text: &str, name: &str) -> Value {
        let open = format!("<{name}>");
        text.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
            .map_or(Value::Null, |(inner, _)| Value::from(inner))
    }

    pub(super) fn aws(reply: &Reply) -> Answer {
        let text = reply.text();
        Answer::new(
            reply.status,
            &element(&text, "Code"),
            &element(&text, "Message"),
        )
    }

    pub(super) fn huawei(reply: &Reply) -> Answer {
        let body = reply.json();
        Answer::new(reply.status, &body["error_code"], &body["error_msg"])
    }

    pub(super) fn oracle(reply: &Reply) -> Answer {
        Answer::new(reply.status, &json!(""), &reply.json()["message"])
    }

    /// Nova's fault, `{"<name>": {"code", "message"}}`, or keystonemiddleware's
    /// refusal before it, `{"error": {"code", "title", "message"}}`.
    pub(super) fn nova(reply: &Reply) -> Answer {
        let body = reply.json();
        let (name, fault) = body
            .as_object()
            .and_then(|o| o.iter().next())
            .map_or(("-".to_owned(), Value::Null), |(n, f)| {
                (n.clone(), f.clone())
            });
        let code = match name.as_str() {
            "error" => fault["title"].clone(),
            _ => Value::from(name),
        };
        Answer::new(reply.status, &code, &fault["message"])
    }

    pub(super) fn market(reply: &Reply) -> Answer {
        let body = reply.json();
        Answer::new(reply.status, &body["errorCode"], &body["errorMessage"])
    }

    /// The log-in form again, with its error.
    pub(super) fn login_form(reply: &Reply) -> Answer {
        let text = reply.text();
        let error = text
            .split_once("<p class=\"error\">")
            .and_then(|(_, rest)| rest.split_once("</p>"))
            .map_or("-", |(error, _)| error);
        Answer::new(reply.status, &json!(""), &json!(error))
    }

    pub(super) fn native(reply: &Reply) -> Answer {
        let body = reply.json();
        Answer::new(
            reply.status,
            &body["error"]["code"],
            &body["error"]["message"],
        )
    }
}

/// The valid cell of a screenshot: a 200 whose JPEG is the pattern guest's
/// screen, its digest in `X-Vmshot-Sha256`.
fn screen(row: &mut AuthRow, reply: &Reply, jpeg: Option<Vec<u8>>) {
    let digest = reply.header("x-vmshot-sha256");
    let ok = reply.status == 200
        && jpeg.is_some_and(|jpeg| {
            jpeg.starts_with(&[0xff, 0xd8, 0xff])
                && digest == Some(hex::encode(Sha256::digest(&jpeg)).as_str())
                && shows_pattern(&decode_rgb(&jpeg), 6.0)
        });
    valid_cell(row, reply, ok, "200, the guest's JPEG");
}

/// The valid cell, judged by the test (`ok`): what was expected, or what came.
fn valid_cell(row: &mut AuthRow, reply: &Reply, ok: bool, expected: &str) {
    let observed = if ok {
        expected.to_owned()
    } else {
        format!("{} {}", reply.status, clip(&reply.text()))
    };
    row.verdict("valid", observed, ok, expected);
}

fn clip(text: &str) -> String {
    text.chars().take(120).collect()
}

/// A cell whose call must be refused exactly as a guest that does not
/// exist (`absent`), as `expected`; `exists` says the test saw the guest
/// there for a caller allowed to see it.
fn hidden(
    row: &mut AuthRow,
    column: &'static str,
    (theirs, absent): (&Answer, &Answer),
    exists: bool,
    expected: &str,
) {
    let mut observed = if theirs == absent {
        format!("{theirs} (= missing)")
    } else {
        format!("{theirs} (missing: {absent}, {})", absent.message)
    };
    if !exists {
        observed += ", but its owner did not see it either";
    }
    let met = theirs == absent && theirs.to_string() == expected && exists;
    let expected = format!("{expected} (= missing)");
    row.verdict(column, observed, met, &expected);
}

/// A cell of two asks, both of which must get `expected`: `(first, then)`,
/// `both` saying what the two were.
fn twice(
    row: &mut AuthRow,
    column: &'static str,
    (first, then): (Answer, Answer),
    expected: &str,
    both: &str,
) {
    let (first, then) = (first.to_string(), then.to_string());
    let observed = if first == then {
        format!("{first} ({both})")
    } else {
        format!("{first}; then {then} ({both})")
    };
    let met = first == expected && then == expected;
    row.verdict(column, observed, met, &format!("{expected} ({both})"));
}

/// The expired/skewed cell of a signature: one dated `secs` in the past and
/// one dated as far ahead are both refused as `expected`.
fn skewed(row: &mut AuthRow, dated: impl Fn(i64) -> Answer, secs: i64, expected: &str) {
    let pair = (dated(-secs), dated(secs));
    twice(row, "expired/skewed", pair, expected, "behind and ahead");
}

/// Whether `done` holds within 30 s, polled: the inventory follows
/// libvirt's events, a capture and its upload run on their own (each takes
/// a second or two, more on a loaded host).
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Another tenant's guest: defined for one test, shut off, owned by project
/// B; and the name of one that does not exist.
fn theirs(scheme: &str) -> (Owned, String) {
    ensure_libvirtd();
    let pid = std::process::id();
    let guest = Owned::define(&format!("vmshot-am-{scheme}-{pid}"), PROJECT_B, None);
    (guest, format!("vmshot-am-missing-{pid}"))
}

/// A signer's headers as `send` takes them, but `Host`: `send` names the
/// host itself, as the signers signed it.
fn borrowed(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
        .collect()
}

/// What a signature scheme answers to each kind of caller, as its dialect
/// documents it.
struct Refusals {
    wrong_secret: &'static str,
    unknown_key: &'static str,
    /// Dated `skew_secs` behind the host's clock, or as far ahead.
    expired: &'static str,
    skew_secs: i64,
    /// A guest one may not see, as a missing one.
    not_found: &'static str,
    /// The code its owner gets for the other tenant's guest (shut off).
    owner_sees: &'static str,
}

/// The cells a signature scheme shares with the others: wrong secret,
/// unknown key, expired/skewed, other tenant and missing role (a key
/// limited to other instances). `ask` signs a screenshot of an instance
/// with a key, dated some seconds from now, and sends it; `read` reads the
/// dialect's refusal.
fn signature_cells(
    row: &mut AuthRow,
    ask: impl Fn((&str, &str), &str, i64) -> Reply,
    read: fn(&Reply) -> Answer,
    expect: &Refusals,
    (guest, missing): (&Owned, &str),
) {
    let pattern = PATTERN.domain();
    let wrong = read(&ask((KEY_ID, "not-the-secret"), &pattern, 0));
    row.check("wrong secret", wrong, expect.wrong_secret);
    let unknown = read(&ask(("vmshot-no-such-key", SECRET), &pattern, 0));
    row.check("unknown key", unknown, expect.unknown_key);
    let dated = |secs| read(&ask(KEY, &pattern, secs));
    skewed(row, dated, expect.skew_secs, expect.expired);

    let seen = |key, instance: &str| read(&ask(key, instance, 0)).about(instance);
    let exists = eventually(|| seen(PROJECT_B_KEY, &guest.name).code == expect.owner_sees);
    let pair = (
        &seen(PROJECT_A_KEY, &guest.name),
        &seen(PROJECT_A_KEY, missing),
    );
    hidden(row, "other tenant", pair, exists, expect.not_found);
    let pair = (&seen(LIMITED_KEY, &pattern), &seen(LIMITED_KEY, missing));
    hidden(row, "missing role", pair, true, expect.not_found);
}

/// How an Alibaba test signs: signature 1.0 in the query, or ACS3 in the
/// headers as the Tea SDK signs them (a fresh nonce each).
#[derive(Clone, Copy)]
enum Alibaba {
    V1,
    Acs3,
}

/// One Alibaba scheme's row: the same cells for both signatures.
fn alibaba_row(scheme: Alibaba) {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let name = match scheme {
        Alibaba::V1 => "alibaba-v1",
        Alibaba::Acs3 => "alibaba-acs3",
    };
    let (guest, missing) = theirs(name);
    let d = Daemon::start("", "");
    let host = d.addr.to_string();
    let pattern = PATTERN.domain();
    let ask = |key: (&str, &str), instance: &str, skew: i64| match scheme {
        Alibaba::V1 => {
            let params = [
                ("Action", "GetInstanceScreenshot"),
                ("RegionId", "cn-test"),
                ("InstanceId", instance),
                ("Timestamp", &alibaba_date(skew)),
            ];
            let query = signed_query("GET", key.0, key.1, &params);
            (format!("/?{query}"), Vec::new())
        }
        Alibaba::Acs3 => {
            let query =
                format!("Action=GetInstanceScreenshot&InstanceId={instance}&RegionId=cn-test");
            let headers = acs3_headers_at(skew, "GET", &query, &host, b"", key);
            (format!("/?{query}"), headers)
        }
    };
    let call = |(target, headers): &(String, Vec<(String, String)>)| {
        send(d.addr, "GET", target, &borrowed(headers), b"")
    };
    let mut row = AuthRow::new(name);

    let valid = ask(KEY, &pattern, 0);
    let reply = call(&valid);
    screen(&mut row, &reply, base64_bytes(&reply.json()["Screenshot"]));
    let again = answer::alibaba(&call(&valid));
    row.check("replayed", again, "400 SignatureNonceUsed");
    let expect = Refusals {
        wrong_secret: "400 SignatureDoesNotMatch",
        unknown_key: "404 InvalidAccessKeyId.NotFound",
        expired: "400 InvalidTimeStamp.Expired",
        skew_secs: SKEW,
        not_found: "404 InvalidParameter",
        owner_sees: "IncorrectInstanceStatus",
    };
    let ask = |key: (&str, &str), instance: &str, skew| call(&ask(key, instance, skew));
    signature_cells(&mut row, ask, answer::alibaba, &expect, (&guest, &missing));
    row.finish();
}

#[test]
fn alibaba_signature_1_0() {
    alibaba_row(Alibaba::V1);
}

#[test]
fn alibaba_acs3() {
    alibaba_row(Alibaba::Acs3);
}

/// How an AWS test signs: in the `Authorization` header or presigned.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Header,
    Presigned,
}

/// One SigV4 scheme's row: the same cells for both forms, but the replay,
/// which each form explains its own way.
fn aws_row(form: Form) {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let scheme = match form {
        Form::Header => "aws-sigv4-header",
        Form::Presigned => "aws-sigv4-presigned",
    };
    let (guest, missing) = theirs(scheme);
    let d = Daemon::start("", "");
    let host = d.addr.to_string();
    let pattern = PATTERN.domain();
    let ask = |key: (&str, &str), instance: &str, skew_secs: i64| {
        let signer = SigV4 {
            key,
            region: "us-east-1",
            host: &host,
            skew_secs,
        };
        let params = [
            ("Action", "GetConsoleScreenshot"),
            ("InstanceId", instance),
            ("Version", "2016-11-15"),
        ];
        match form {
            Form::Header => {
                let query = canonical_query(&params);
                (format!("/ec2?{query}"), signer.headers("/ec2", &query))
            }
            // Good for a minute.
            Form::Presigned => (
                format!("/ec2?{}", signer.presigned("/ec2", &params, 60)),
                Vec::new(),
            ),
        }
    };
    let call = |(target, headers): &(String, Vec<(String, String)>)| {
        send(d.addr, "GET", target, &borrowed(headers), b"")
    };
    let mut row = AuthRow::new(scheme);

    let valid = ask(KEY, &pattern, 0);
    let reply = call(&valid);
    let jpeg = base64_bytes(&answer::element(&reply.text(), "imageData"));
    screen(&mut row, &reply, jpeg);
    // SigV4 has no nonce: the repeat passes, and meets the guest's interval.
    let again = answer::aws(&call(&valid));
    let reason = match form {
        Form::Header => {
            "SigV4 has no nonce: a repeat within the ±5 min skew is served, as EC2 does"
        }
        Form::Presigned => "a presigned URL may be used until its X-Amz-Expires, as on AWS",
    };
    let seen = format!("{reason} (seen: {again}, the interval)");
    let holds = again.to_string() == "503 RequestLimitExceeded";
    row.not_applicable("replayed", &seen, holds);
    // One signed an hour ago (or ahead) is past the ±5 min skew, and past
    // a presigned URL's minute.
    let expect = Refusals {
        wrong_secret: "403 SignatureDoesNotMatch",
        unknown_key: "401 AuthFailure",
        expired: "400 RequestExpired",
        skew_secs: 3600,
        not_found: "400 InvalidInstanceID.NotFound",
        owner_sees: "IncorrectInstanceState",
    };
    let ask = |key: (&str, &str), instance: &str, skew| call(&ask(key, instance, skew));
    signature_cells(&mut row, ask, answer::aws, &expect, (&guest, &missing));
    row.finish();
}

#[test]
fn aws_sigv4_header() {
    aws_row(Form::Header);
}

#[test]
fn aws_sigv4_presigned() {
    aws_row(Form::Presigned);
}

/// `[oracle]` with the test users and the pattern guest, in `dir`.
fn oracle_section(dir: &Path, session_secs: u64) -> String {
    format!(
        "[oracle]\ncredentials_file = \"{}\"\nidentity_domain = \"acme\"\nsession_secs = {session_secs}\n\n\
         [oracle.instances]\n\"pattern\" = \"{}\"\n",
        users_file(dir).display(),
        PATTERN.domain()
    )
}

/// `/Compute-acme/{user}`'s cookie, or the refusal.
fn nimbula(d: &Daemon, user: &str, password: &str) -> Result<String, Reply> {
    oracle::authenticate(d, &format!("/Compute-acme/{user}"), password)
}

/// A capture of `/Compute-acme/{user}/{instance}` asked for.
fn oracle_capture(d: &Daemon, cookie: &str, user: &str, instance: &str) -> Reply {
    oracle::create(d, cookie, &format!("/Compute-acme/{user}/{instance}"))
}

/// Polls a capture to its end; its JPEG (with the daemon's digest header
/// checked by `screen`) if it completed.
fn oracle_media(d: &Daemon, cookie: &str, created: &Reply) -> Reply {
    let name = created.json()["name"].as_str().unwrap_or("").to_owned();
    let path = format!("/console/screencapture{name}");
    let mut state = Value::Null;
    eventually(|| {
        state = oracle::call(d, Some(cookie), "GET", &path, None).json()["state"].clone();
        state == "complete" || state == "error"
    });
    let media = format!("/console/screencapture/media{name}");
    oracle::call(d, Some(cookie), "GET", &media, None)
}

#[test]
fn oracle_nimbula_cookie() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let (guest, missing) = theirs("oracle");
    let dir = tempdir();
    let d = Daemon::start("", &oracle_section(&dir, 1800));
    let mut row = AuthRow::new("oracle-nimbula");

    let alice = nimbula(&d, "alice", ALICE_PASSWORD).expect("alice authenticates");
    let created = oracle_capture(&d, &alice, "alice", "pattern");
    let media = oracle_media(&d, &alice, &created);
    let jpeg = (created.status == 201).then(|| media.body.clone());
    screen(&mut row, &media, jpeg);
    let refused = |user, password| answer::oracle(&nimbula(&d, user, password).unwrap_err());
    let expected = "401 \"Incorrect username or password\"";
    row.check(
        "wrong secret",
        refused("alice", "not-her-password"),
        expected,
    );
    row.check("unknown key", refused("nobody", ALICE_PASSWORD), expected);

    // A daemon whose sessions last a second: the cookie is refused once past.
    let brief = Daemon::start("", &oracle_section(&dir, 1));
    let cookie = nimbula(&brief, "alice", ALICE_PASSWORD).expect("alice authenticates");
    let list = "/console/screencapture/Compute-acme/alice/";
    let mut late = None;
    eventually(|| {
        let reply = oracle::call(&brief, Some(&cookie), "GET", list, None);
        late = Some(reply);
        late.as_ref().is_some_and(|r| r.status != 200)
    });
    // Nor can `GET /refresh/` bring it back.
    let late = answer::oracle(&late.unwrap());
    let refreshed = answer::oracle(&oracle::call(
        &brief,
        Some(&cookie),
        "GET",
        "/refresh/",
        None,
    ));
    let expected = "401 \"The session has expired: authenticate again.\"";
    twice(
        &mut row,
        "expired/skewed",
        (late, refreshed),
        expected,
        "refresh too",
    );
    let again = (0..2).all(|_| oracle::call(&d, Some(&alice), "GET", list, None).status == 200);
    row.not_applicable(
        "replayed",
        "the nimbula cookie is a bearer session, presented again until it expires (30 min)",
        again,
    );

    let carol = nimbula(&d, "carol", ALICE_PASSWORD).expect("carol authenticates");
    let bob = nimbula(&d, "bob", BOB_PASSWORD).expect("bob authenticates");
    let exists = eventually(|| oracle_capture(&d, &bob, "bob", &guest.name).status != 404);
    let ask = |instance: &str| {
        answer::oracle(&oracle_capture(&d, &carol, "carol", instance)).about(instance)
    };
    let pair = (&ask(&guest.name), &ask(&missing));
    let expected = "404 \"/Compute-acme/carol/ID does not exist\"";
    hidden(&mut row, "other tenant", pair, exists, expected);
    let dave = nimbula(&d, "dave", ALICE_PASSWORD).expect("dave authenticates");
    let roleless = answer::oracle(&oracle_capture(&d, &dave, "dave", "pattern"));
    let expected = "403 \"The Compute_Operations role is required for this request.\"";
    row.check("missing role", roleless, expected);
    // The test's own files go too (each daemon removes its directory).
    let _ = std::fs::remove_dir_all(&dir);
    row.finish();
}

/// A token of `project` with `roles`, expiring at `expires` if given.
fn token<'a>(
    id: &'a str,
    project: &'a str,
    roles: &'a [&'a str],
    expires: Option<&'a str>,
) -> Token<'a> {
    Token {
        id,
        user: "auth-matrix-user",
        project,
        roles,
        expires,
    }
}

const TOKEN_A: &str = "auth-matrix-token-project-a-0001";
const TOKEN_B: &str = "auth-matrix-token-project-b-0001";
const TOKEN_B_ROLELESS: &str = "auth-matrix-token-b-no-roles-001";
const TOKEN_EXPIRED: &str = "auth-matrix-token-expired-000001";
const TOKEN_UNKNOWN: &str = "auth-matrix-token-never-issued-01";
const PAST: &str = "2020-01-01T00:00:00Z";

/// A valid token with its last character changed: the right shape, the
/// wrong secret.
fn tampered(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    format!("{head}{}", if last == "1" { "2" } else { "1" })
}

#[test]
fn nova_static_token() {
    let _lock = LibvirtdLock::shared();
    // Running: only a capture that runs is recorded as an action.
    let (guest, _) = theirs("nova");
    let guest = guest.start();
    let dir = tempdir();
    let tokens = [
        token(TOKEN_A, PROJECT_A, &["member"], None),
        token(TOKEN_B, PROJECT_B, &["member"], None),
        token(TOKEN_B_ROLELESS, PROJECT_B, &[], None),
        token(TOKEN_EXPIRED, PROJECT_B, &["member"], Some(PAST)),
    ];
    let d = Daemon::start("", &nova::section(&dir, &tokens));
    let actions = |token: &str, server: &str| {
        let path = format!("/compute/v2.1/servers/{server}/os-instance-actions");
        send(d.addr, "GET", &path, &[("X-Auth-Token", token)], b"")
    };
    let mut row = AuthRow::new("nova-token");

    // B takes a screenshot of its guest, recorded as an action of the
    // server, which its owner then lists.
    let asked = eventually(|| d.alibaba_screenshot(PROJECT_B_KEY, &guest.name).status == 200);
    let listed = |r: &Reply| {
        let body = serde_json::from_slice::<Value>(&r.body).unwrap_or_default();
        body["instanceActions"][0]["action"] == "vmshot_capture"
    };
    let mut reply = None;
    eventually(|| {
        reply = Some(actions(TOKEN_B, &guest.uuid));
        reply.as_ref().is_some_and(|r| r.status == 200 && listed(r))
    });
    let reply = reply.unwrap();
    let ok = asked && reply.status == 200 && listed(&reply);
    valid_cell(
        &mut row,
        &reply,
        ok,
        "200, the server's vmshot_capture action",
    );
    let refused = |token: &str| answer::nova(&actions(token, &guest.uuid));
    row.check(
        "wrong secret",
        refused(&tampered(TOKEN_B)),
        "401 Unauthorized",
    );
    row.check("unknown key", refused(TOKEN_UNKNOWN), "401 Unauthorized");
    row.check("expired/skewed", refused(TOKEN_EXPIRED), "401 Unauthorized");
    let again = actions(TOKEN_B, &guest.uuid).status == 200;
    row.not_applicable(
        "replayed",
        "X-Auth-Token is a bearer token, presented again until it expires, as Keystone's are",
        again,
    );

    // Hidden while the server exists, and once it is deleted (its actions
    // stay, under the project they were recorded for).
    let missing = uuid::Uuid::new_v4().to_string();
    let ask = |server: &str| answer::nova(&actions(TOKEN_A, server)).about(server);
    let live = ask(&guest.uuid);
    guest.remove();
    let deleted =
        eventually(|| ask(&guest.uuid) == live && actions(TOKEN_B, &guest.uuid).status == 200);
    let pair = (&live, &ask(&missing));
    hidden(&mut row, "other tenant", pair, deleted, "404 itemNotFound");
    let roleless = actions(TOKEN_B_ROLELESS, &guest.uuid).status;
    row.not_applicable(
        "missing role",
        &format!(
            "no call served needs a role: a project's token without one lists its \
             server's actions (seen: {roleless}); `admin` only widens scope"
        ),
        roleless == 200,
    );
    // The test's own files go too (each daemon removes its directory).
    let _ = std::fs::remove_dir_all(&dir);
    row.finish();
}

/// `[huawei]` on the test keys, with `tokens`, and the recordings it needs.
fn huawei_section(dir: &Path) -> String {
    let tokens = [
        token(TOKEN_A, PROJECT_A, &[], None),
        token(TOKEN_B, PROJECT_B, &[], None),
        token(TOKEN_EXPIRED, PROJECT_A, &[], Some(PAST)),
    ];
    format!(
        "[huawei]\ncredentials_file = \"@KEYS@\"\ntokens_file = \"{}\"\n\n\
         [recordings]\ndir = \"{}\"\n",
        nova::tokens_file(dir, "huawei-tokens.toml", &tokens).display(),
        dir.join("recordings").display()
    )
}

/// Huawei's credentials: an AK/SK pair, or a token.
#[derive(Clone, Copy)]
enum Workspace<'a> {
    Signed((&'a str, &'a str), i64),
    Token(&'a str),
}

/// A Workspace call in `project`, signed once and sent as often as asked:
/// `GET` the list, or `POST` a start of a recording of `desktop`.
struct Call {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Call {
    fn new(d: &Daemon, who: Workspace, project: &str, desktop: Option<&str>) -> Self {
        let path = format!("/v2/{project}/screen-records");
        let body = desktop.map_or(String::new(), |id| json!({"desktop_id": id}).to_string());
        let method = if desktop.is_some() { "POST" } else { "GET" };
        let host = d.addr.to_string();
        let mut signed = vec![("x-project-id", project), ("host", host.as_str())];
        if desktop.is_some() {
            signed.push(("content-type", "application/json"));
        }
        let mut headers = match who {
            Workspace::Signed(key, skew) => {
                huawei_headers(key, method, &path, "", &signed, body.as_bytes(), skew)
            }
            Workspace::Token(token) => vec![("X-Auth-Token".into(), token.into())],
        };
        headers.extend(signed.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        Self {
            method,
            path,
            headers,
            body,
        }
    }

    fn send(&self, d: &Daemon) -> Reply {
        let headers = borrowed(&self.headers);
        send(
            d.addr,
            self.method,
            &self.path,
            &headers,
            self.body.as_bytes(),
        )
    }
}

fn workspace(d: &Daemon, who: Workspace, project: &str, desktop: Option<&str>) -> Reply {
    Call::new(d, who, project, desktop).send(d)
}

/// The valid cell of a Workspace list: the empty project's list.
fn empty_list(row: &mut AuthRow, reply: &Reply) {
    let body = serde_json::from_slice::<Value>(&reply.body).unwrap_or_default();
    let ok = reply.status == 200 && body == json!({"screen_records": [], "total_count": 0});
    valid_cell(row, reply, ok, "200, the project's empty list");
}

/// Other tenant in Workspace: recording B's desktop from A is recording
/// one that does not exist, while B is told it is not running.
fn workspace_tenants(row: &mut AuthRow, d: &Daemon, a: Workspace, b: Workspace, guest: &Owned) {
    let missing = format!("{}-missing", guest.name);
    let exists = eventually(|| {
        answer::huawei(&workspace(d, b, PROJECT_B, Some(&guest.name))).code == "WKS.0410"
    });
    let ask =
        |desktop: &str| answer::huawei(&workspace(d, a, PROJECT_A, Some(desktop))).about(desktop);
    let pair = (&ask(&guest.name), &ask(&missing));
    hidden(row, "other tenant", pair, exists, "404 WKS.0202");
}

#[test]
fn huawei_ak_sk() {
    let _lock = LibvirtdLock::shared();
    let (guest, _) = theirs("hw-aksk");
    let dir = tempdir();
    let d = Daemon::start("", &huawei_section(&dir));
    let signed = |key, skew| Workspace::Signed(key, skew);
    let list = |who| workspace(&d, who, PROJECT_A, None);
    let mut row = AuthRow::new("huawei-sdk-hmac");

    let valid = signed(PROJECT_A_KEY, 0);
    let reply = list(valid);
    empty_list(&mut row, &reply);
    let wrong = answer::huawei(&list(signed((PROJECT_A_KEY.0, "not-the-secret"), 0)));
    row.check(
        "wrong secret",
        wrong,
        "401 APIGW.0301 (verify aksk signature fail)",
    );
    let unknown = answer::huawei(&list(signed(("vmshot-no-such-key", SECRET), 0)));
    row.check("unknown key", unknown, "401 APIGW.0301 (ak not exist)");
    let dated = |secs| answer::huawei(&list(signed(PROJECT_A_KEY, secs)));
    let expected = "401 APIGW.0301 (X-Sdk-Date is more than 15 min from this host's clock)";
    skewed(&mut row, dated, SKEW, expected);
    // One request sent twice, byte for byte: its date and signature too.
    // The first may already meet an identical one signed in the same second
    // (the valid list), so only the second is judged.
    let call = Call::new(&d, valid, PROJECT_A, None);
    call.send(&d);
    let again = answer::huawei(&call.send(&d));
    let expected = "401 APIGW.0301 (the request was already received (replay))";
    row.check("replayed", again, expected);

    let b = signed(PROJECT_B_KEY, 0);
    workspace_tenants(&mut row, &d, valid, b, &guest);
    let projectless = answer::huawei(&list(signed(KEY, 0)));
    let expected = "401 APIGW.0301 (the credentials are bound to no project)";
    row.check("missing role", projectless, expected);
    // The test's own files go too (each daemon removes its directory).
    let _ = std::fs::remove_dir_all(&dir);
    row.finish();
}

#[test]
fn huawei_token() {
    let _lock = LibvirtdLock::shared();
    let (guest, _) = theirs("hw-token");
    let dir = tempdir();
    let d = Daemon::start("", &huawei_section(&dir));
    let list = |token: &str| workspace(&d, Workspace::Token(token), PROJECT_A, None);
    let mut row = AuthRow::new("huawei-token");

    let reply = list(TOKEN_A);
    let roleless = reply.status == 200;
    empty_list(&mut row, &reply);
    let expected = "401 APIGW.0301 (the token is not valid)";
    row.check(
        "wrong secret",
        answer::huawei(&list(&tampered(TOKEN_A))),
        expected,
    );
    row.check(
        "unknown key",
        answer::huawei(&list(TOKEN_UNKNOWN)),
        expected,
    );
    let expected = "401 APIGW.0301 (the token has expired)";
    row.check(
        "expired/skewed",
        answer::huawei(&list(TOKEN_EXPIRED)),
        expected,
    );
    let again = list(TOKEN_A).status == 200;
    row.not_applicable(
        "replayed",
        "X-Auth-Token is a bearer token, presented again until it expires, as IAM's are",
        again,
    );
    let (a, b) = (Workspace::Token(TOKEN_A), Workspace::Token(TOKEN_B));
    workspace_tenants(&mut row, &d, a, b, &guest);
    // The tokens here carry no role, and the valid call was served.
    row.not_applicable(
        "missing role",
        "Workspace's calls need no role: a token acts in its project (one without is refused at start)",
        roleless,
    );
    // The test's own files go too (each daemon removes its directory).
    let _ = std::fs::remove_dir_all(&dir);
    row.finish();
}

const MACHINE_IMAGES: &str = "/appstore/publisher/v1/machineimages";

#[test]
fn marketplace_bearer() {
    let _lock = LibvirtdLock::shared();
    // B's guest, running: bob captures it, and its image is uploaded as B's.
    let (guest, _) = theirs("market");
    let guest = guest.start();
    let dir = tempdir();
    // Tokens of project A and B, with no role; an expired one of B's.
    let tokens = [
        token(TOKEN_A, PROJECT_A, &[], None),
        token(TOKEN_B, PROJECT_B, &[], None),
        token(TOKEN_EXPIRED, PROJECT_B, &[], Some(PAST)),
    ];
    let section = format!(
        "{}\n[marketplace]\ntokens_file = \"{}\"\n\n\
         [[uploads.targets]]\nname = \"local\"\nkind = \"dir\"\npath = \"{}\"\n",
        oracle_section(&dir, 1800),
        nova::tokens_file(&dir, "marketplace-tokens.toml", &tokens).display(),
        dir.join("uploads").display()
    );
    let d = Daemon::start("", &section);
    let status = |token: &str, id: i64| {
        let bearer = format!("Bearer {token}");
        let target = format!("{MACHINE_IMAGES}/{id}");
        send(d.addr, "GET", &target, &[("Authorization", &bearer)], b"")
    };
    let mut row = AuthRow::new("marketplace-bearer");

    let bob = nimbula(&d, "bob", BOB_PASSWORD).expect("bob authenticates");
    let mut created = None;
    eventually(|| {
        created = Some(oracle_capture(&d, &bob, "bob", &guest.name));
        created.as_ref().is_some_and(|r| r.status == 201)
    });
    let media = oracle_media(&d, &bob, &created.unwrap());
    let mut id = None;
    eventually(|| {
        id = d.logs().lines().find_map(|l| {
            let line: Value = serde_json::from_str(l).ok()?;
            (line["message"] == "upload queued").then(|| line["upload"].as_i64())?
        });
        id.is_some()
    });
    let id = id.expect("an upload queued");
    let mut reply = None;
    eventually(|| {
        reply = Some(status(TOKEN_B, id));
        reply
            .as_ref()
            .is_some_and(|r| r.text().contains("\"Completed\""))
    });
    let reply = reply.unwrap();
    let digest = hex::encode(Sha256::digest(&media.body));
    let body = serde_json::from_slice::<Value>(&reply.body).unwrap_or_default();
    let ok = media.status == 200
        && reply.status == 200
        && body["statusName"] == "Completed"
        && body["checkSum"] == digest;
    let expected = "200, Completed, the capture's SHA-256";
    valid_cell(&mut row, &reply, ok, expected);

    let refused = |token: &str| answer::market(&status(token, id));
    row.check(
        "wrong secret",
        refused(&tampered(TOKEN_B)),
        "401 NotAuthorized",
    );
    row.check("unknown key", refused(TOKEN_UNKNOWN), "401 NotAuthorized");
    row.check(
        "expired/skewed",
        refused(TOKEN_EXPIRED),
        "401 NotAuthorized",
    );
    let again = status(TOKEN_B, id).status == 200;
    row.not_applicable(
        "replayed",
        "a bearer token, presented again until it expires",
        again,
    );
    let ask = |upload: i64| answer::market(&status(TOKEN_A, upload)).about(&upload.to_string());
    let pair = (&ask(id), &ask(id + 1000));
    hidden(&mut row, "other tenant", pair, true, "404 EntityNotFound");
    // The tokens here carry no role, and the valid call was served.
    row.not_applicable(
        "missing role",
        "a token needs no role to read its project's uploads; `admin` only widens scope",
        ok,
    );
    // The test's own files go too (each daemon removes its directory).
    let _ = std::fs::remove_dir_all(&dir);
    row.finish();
}

/// `[ui]` with users, over HTTPS, sessions of `session_secs`.
fn ui_section(cert: &Cert, dir: &Path, session_secs: u64) -> String {
    format!(
        "{}[ui]\naccess = \"users\"\ncredentials_file = \"{}\"\nsession_secs = {session_secs}\n",
        cert.server_section("127.0.0.1:0", ""),
        users_file(dir).display()
    )
}

/// Logs in at `/ui/login`: the session cookie (`name=value`), or the refusal.
fn ui_login(cert: &Cert, d: &Daemon, user: &str, password: &str) -> Result<String, Reply> {
    let form = format!("user={user}&password={password}");
    let content = [("Content-Type", "application/x-www-form-urlencoded")];
    let reply = cert.request(d.addr, "POST", "/ui/login", &content, form.as_bytes());
    let cookie = reply
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    cookie
        .filter(|_| (300..400).contains(&reply.status))
        .ok_or(reply)
}

#[test]
fn native_session() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let (guest, missing) = theirs("native");
    let (cert, dir) = (Cert::new(), tempdir());
    let d = Daemon::start("", &ui_section(&cert, &dir, 1800));
    let get = |d: &Daemon, cookie: &str, path: &str| {
        cert.request(d.addr, "GET", path, &[("Cookie", cookie)], b"")
    };
    let mut row = AuthRow::new("native-session");

    let alice = ui_login(&cert, &d, "alice", ALICE_PASSWORD).expect("alice logs in");
    let shot = format!("/v1/domains/{}/screenshot", PATTERN.domain());
    let reply = get(&d, &alice, &shot);
    screen(&mut row, &reply, Some(reply.body.clone()));
    let refused =
        |user, password| answer::login_form(&ui_login(&cert, &d, user, password).unwrap_err());
    let expected = "401 \"wrong user name or password\"";
    row.check(
        "wrong secret",
        refused("alice", "not-her-password"),
        expected,
    );
    row.check("unknown key", refused("nobody", ALICE_PASSWORD), expected);

    // A daemon whose sessions last a second: the cookie is refused once past.
    let brief = Daemon::start("", &ui_section(&cert, &dir, 1));
    let cookie = ui_login(&cert, &brief, "alice", ALICE_PASSWORD).expect("alice logs in");
    let mut late = None;
    eventually(|| {
        late = Some(get(&brief, &cookie, "/v1/domains"));
        late.as_ref().is_some_and(|r| r.status != 200)
    });
    let late = answer::native(&late.unwrap());
    row.check("expired/skewed", late, "401 unauthorized");
    let again = (0..2).all(|_| get(&d, &alice, "/v1/domains").status == 200);
    row.not_applicable(
        "replayed",
        "the session cookie is a bearer session, presented again until it expires (30 min)",
        again,
    );

    let carol = ui_login(&cert, &d, "carol", ALICE_PASSWORD).expect("carol logs in");
    let bob = ui_login(&cert, &d, "bob", BOB_PASSWORD).expect("bob logs in");
    let exists = eventually(|| get(&d, &bob, &format!("/v1/domains/{}", guest.name)).status == 200);
    let ask =
        |name: &str| answer::native(&get(&d, &carol, &format!("/v1/domains/{name}"))).about(name);
    let pair = (&ask(&guest.name), &ask(&missing));
    hidden(&mut row, "other tenant", pair, exists, "404 not_found");
    // dave has no role at all, and no project: he sees the guest's screen.
    let dave = ui_login(&cert, &d, "dave", ALICE_PASSWORD).expect("dave logs in");
    let roleless = get(&d, &dave, &shot).status;
    row.not_applicable(
        "missing role",
        &format!(
            "no /v1 call needs a role: a user with none is served (seen: {roleless}); \
             `admin` only widens scope"
        ),
        roleless == 200,
    );
    // The test's own files go too (each daemon removes its directory).
    let _ = std::fs::remove_dir_all(&dir);
    row.finish();
}
