//! A file served whole or one `Range` span of it, streamed in chunks: a
//! recording may be a gigabyte, and no request holds more than a chunk.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::error::WebError;
use crate::api::pipeline::SHA256_HEADER;
use crate::api::range::Span;

const CHUNK: u64 = 64 * 1024;

pub async fn serve(
    mut file: tokio::fs::File,
    len: u64,
    content_type: &'static str,
    sha256: Option<&str>,
    range: Option<&str>,
) -> Result<Response, WebError> {
    let span = Span::of(range, len);
    let content_range = span.content_range(len);
    let (status, first, count) = match span {
        Span::Whole => (StatusCode::OK, 0, len),
        Span::Bytes(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Span::Unsatisfiable => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Some(v) = content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
    };
    file.seek(std::io::SeekFrom::Start(first))
        .await
        .map_err(WebError::internal)?;
    let stream = futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0; CHUNK.min(left) as usize];
        match file.read(&mut buf).await {
            // A file cut short (a recording trimmed): the body ends early.
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, Infallible>(Bytes::from(buf)),
                    (file, left - n as u64),
                ))
            }
        }
    });
    let mut response = (status, Body::from_stream(stream)).into_response();
    let headers = response.headers_mut();
    let mut put = |name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put(header::CONTENT_TYPE, content_type.into());
    put(header::CONTENT_LENGTH, count.to_string());
    put(header::ACCEPT_RANGES, "bytes".into());
    if let Some(sha) = sha256 {
        put(header::ETAG, format!("\"{sha}\""));
        put(
            header::HeaderName::from_static(SHA256_HEADER),
            sha.to_owned(),
        );
    }
    if let Some(r) = content_range {
        put(header::CONTENT_RANGE, r);
    }
    Ok(response)
}
