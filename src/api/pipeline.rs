//! One request's way through vmshot, the same for every dialect:
//!
//! ```text
//!   request ─► request id ─► framing check ─► body (bounded) ─► dialect.serve ─┬─► response
//!                                                 under the deadline, panics caught │
//!   one access log line ◄── X-Vmshot-Sha256, request id header ◄── dialect.render ◄┘ (errors)
//! ```
//!
//! A dialect only parses, authenticates, calls the core and renders; what
//! every request needs is here, answered in the dialect's own terms through
//! `Dialect::refuse` and `Dialect::render`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use futures_util::FutureExt;

use super::{AmbiguousLength, Answered};
use crate::service::{Outcome, Shot};

/// vmshot's extension on every response that carries a screen: the SHA-256 of
/// the image's bytes (before any base64), in hex.
pub const SHA256_HEADER: &str = "x-vmshot-sha256";

/// What a dialect is to the pipeline.
pub trait Dialect: Send + Sync + 'static {
    /// Its name in logs, metrics and the 404 text.
    const NAME: &'static str;
    /// The response header that carries the request id.
    const REQUEST_ID_HEADER: &'static str;
    /// What rendering needs to know of the request (e.g. JSON or XML),
    /// first from its head, then as `serve` learns more.
    type Context: Send;
    type Error: WireError + Send;

    /// The request id as this dialect spells it.
    fn request_id(&self, id: uuid::Uuid) -> String;
    fn context(&self, head: &Parts) -> Self::Context;
    fn serve(
        &self,
        request: Incoming<'_>,
        cx: &mut Self::Context,
        record: &mut Record,
    ) -> impl Future<Output = Result<Response, Self::Error>> + Send;
    /// The pipeline's own refusals, as this dialect words them.
    fn refuse(&self, why: Refusal) -> Self::Error;
    fn render(&self, error: &Self::Error, cx: &Self::Context, request_id: &str) -> Response;
}

/// A dialect's error, as the pipeline logs and counts it.
pub trait WireError {
    /// The code on the wire, for the log.
    fn code(&self) -> &'static str;
    /// Decided by the core's error where one caused it.
    fn outcome(&self) -> Outcome;
    /// What the log needs beyond the wire's words (libvirt's own message).
    fn detail(&self) -> Option<&str>;
}

/// A request whose head passed and whose body has been read.
pub struct Incoming<'a> {
    pub head: &'a Parts,
    pub body: Bytes,
    pub request_id: &'a str,
}

/// Why the pipeline answered instead of the dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding` (see `server::framing`).
    AmbiguousLength,
    TooLarge {
        limit: usize,
    },
    TimedOut {
        after: Duration,
    },
    /// The dialect panicked: a bug, answered as the dialect's internal error.
    Panicked,
}

impl Refusal {
    /// Why an ambiguous length is refused, in words every dialect can send.
    pub const AMBIGUOUS_LENGTH: &'static str =
        "A request may not give its length both as Content-Length and as Transfer-Encoding.";

    /// Why a request past its deadline is refused, in the same plain words.
    pub fn timed_out(after: Duration) -> String {
        format!(
            "The service is unavailable: no answer within {} s.",
            after.as_secs()
        )
    }
}

/// What the log line and the metrics say of a request besides its outcome,
/// filled in by the dialect as it learns it.
#[derive(Debug, Default)]
pub struct Record {
    /// The action, once known to be one of the dialect's (callers do not
    /// choose metric labels).
    pub action: Option<&'static str>,
    pub principal: Option<String>,
    pub instance: Option<String>,
    pub domain: Option<String>,
    pub shot: Option<Shot>,
}

/// Limits every request of a dialect is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
    pub deadline: Duration,
}

/// A dialect behind the pipeline: the state of its axum routes.
pub struct Pipeline<D> {
    dialect: D,
    limits: Limits,
}

impl<D: Dialect> Pipeline<D> {
    pub fn new(dialect: D, limits: Limits) -> Arc<Self> {
        Arc::new(Self { dialect, limits })
    }
}

/// The axum handler for every route of a dialect.
pub async fn handle<D: Dialect>(
    State(pipeline): State<Arc<Pipeline<D>>>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let dialect = &pipeline.dialect;
    let request_id = dialect.request_id(uuid::Uuid::new_v4());
    let (head, body) = request.into_parts();
    let mut cx = dialect.context(&head);
    let mut record = Record::default();
    let result = pipeline
        .run(&head, body, &request_id, &mut cx, &mut record)
        .await;
    let (mut response, code, outcome, detail) = match result {
        Ok(response) => (response, "OK", Outcome::Ok, None),
        Err(e) => (
            dialect.render(&e, &cx, &request_id),
            e.code(),
            e.outcome(),
            e.detail().map(str::to_owned),
        ),
    };
    let sha256 = record.shot.as_ref().map(Shot::sha256_hex);
    tracing::info!(
        request_id,
        dialect = D::NAME,
        action = record.action.unwrap_or("-"),
        principal = record.principal.as_deref().unwrap_or("-"),
        instance = record.instance.as_deref().unwrap_or("-"),
        domain = record.domain.as_deref().unwrap_or("-"),
        outcome = outcome.as_str(),
        code,
        detail,
        sha256,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static(D::REQUEST_ID_HEADER), id);
    }
    if let Some(hex) = sha256 {
        headers.insert(SHA256_HEADER, HeaderValue::from_str(&hex).expect("hex"));
    }
    response.extensions_mut().insert(Answered {
        dialect: D::NAME,
        action: record.action.unwrap_or("unknown"),
        outcome,
        shot: record.shot,
    });
    response
}

impl<D: Dialect> Pipeline<D> {
    async fn run(
        &self,
        head: &Parts,
        body: axum::body::Body,
        request_id: &str,
        cx: &mut D::Context,
        record: &mut Record,
    ) -> Result<Response, D::Error> {
        let refuse = |why| Err(self.dialect.refuse(why));
        if head.extensions.get::<AmbiguousLength>().is_some() {
            return refuse(Refusal::AmbiguousLength);
        }
        let limit = self.limits.max_body;
        let Ok(body) = axum::body::to_bytes(body, limit).await else {
            return refuse(Refusal::TooLarge { limit });
        };
        let incoming = Incoming {
            head,
            body,
            request_id,
        };
        let deadline = self.limits.deadline;
        // A panic in one request must cost that request, answered in its
        // dialect's words, and never the connection or the daemon.
        let served = AssertUnwindSafe(self.dialect.serve(incoming, cx, record)).catch_unwind();
        match tokio::time::timeout(deadline, served).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                tracing::error!(request_id, dialect = D::NAME, "the dialect panicked");
                refuse(Refusal::Panicked)
            }
            Err(_) => refuse(Refusal::TimedOut { after: deadline }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    /// A dialect whose body says what to do: `panic`, `sleep`, or echo.
    struct Probe;

    struct ProbeError(Refusal);

    impl WireError for ProbeError {
        fn code(&self) -> &'static str {
            "Probe"
        }
        fn outcome(&self) -> Outcome {
            match self.0 {
                Refusal::TimedOut { .. } => Outcome::Unavailable,
                Refusal::Panicked => Outcome::Internal,
                _ => Outcome::ClientError,
            }
        }
        fn detail(&self) -> Option<&str> {
            None
        }
    }

    impl Dialect for Probe {
        const NAME: &'static str = "probe";
        const REQUEST_ID_HEADER: &'static str = "x-probe-request-id";
        type Context = &'static str;
        type Error = ProbeError;

        fn request_id(&self, id: uuid::Uuid) -> String {
            format!("probe-{id}")
        }
        fn context(&self, _: &Parts) -> &'static str {
            "head"
        }
        async fn serve(
            &self,
            request: Incoming<'_>,
            cx: &mut &'static str,
            record: &mut Record,
        ) -> Result<Response, ProbeError> {
            *cx = "served";
            record.action = Some("Probe");
            match &request.body[..] {
                b"panic" => panic!("probe asked to panic"),
                b"sleep" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    unreachable!()
                }
                body => Ok(String::from_utf8_lossy(body).into_owned().into_response()),
            }
        }
        fn refuse(&self, why: Refusal) -> ProbeError {
            ProbeError(why)
        }
        fn render(&self, error: &ProbeError, cx: &&'static str, id: &str) -> Response {
            let status = match error.0 {
                Refusal::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
                Refusal::TimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, format!("{:?} {cx} {id}", error.0)).into_response()
        }
    }

    async fn call(body: &'static str) -> (Response, String) {
        let pipeline = Pipeline::new(
            Probe,
            Limits {
                max_body: 16,
                deadline: Duration::from_millis(200),
            },
        );
        let request = Request::builder().uri("/").body(Body::from(body)).unwrap();
        let mut response = handle(State(pipeline), request).await;
        let answered = response.extensions_mut().remove::<Answered>().unwrap();
        assert_eq!(answered.dialect, "probe");
        let text = axum::body::to_bytes(std::mem::take(response.body_mut()), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(text.to_vec()).unwrap();
        (response, format!("{} {text}", answered.outcome.as_str()))
    }

    #[tokio::test]
    async fn each_refusal_is_answered_in_the_dialects_words() {
        let (ok, text) = call("hello").await;
        assert_eq!((ok.status(), text.as_str()), (StatusCode::OK, "ok hello"));
        let id = ok.headers()["x-probe-request-id"].to_str().unwrap();
        assert!(id.starts_with("probe-"), "{id}");

        let (panicked, text) = call("panic").await;
        assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            text.starts_with("internal Panicked served probe-"),
            "{text}"
        );

        let (late, text) = call("sleep").await;
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text.starts_with("unavailable TimedOut { after: 200ms }"),
            "{text}"
        );

        let (large, text) = call("seventeen bytes!!").await;
        assert_eq!(large.status(), StatusCode::BAD_REQUEST);
        assert!(
            text.starts_with("client_error TooLarge { limit: 16 } head"),
            "{text}"
        );
    }
}
