//! The Marketplace's bodies: an upload request's status
//! (`MachineImageUploadRequest`, one `DataCenterImageUploadRequest` per
//! storage target) and the error body. Times as its example writes them,
//! `2018-06-12T04:28:50.001Z`.

use axum::http::StatusCode;
use serde::Serialize;
use time::OffsetDateTime;

use super::super::pipeline::WireError;
use crate::service::uploads::{UploadState, UploadStatus};
use crate::service::{Error as CoreError, Outcome};

/// The status words the Marketplace shows.
pub fn status_name(state: UploadState) -> &'static str {
    match state {
        UploadState::Pending => "Pending",
        UploadState::Uploading => "In Progress",
        UploadState::Completed => "Completed",
        UploadState::Failed => "Failed",
    }
}

pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineImageUploadRequest {
    pub upload_request_id: i64,
    pub file_name: String,
    pub image_file_path: String,
    pub check_sum: String,
    pub status_name: &'static str,
    pub uploaded_chunks: u64,
    pub pending_chunks: u64,
    pub created_by: String,
    pub created_date: String,
    pub last_modified_by: String,
    pub last_modified_date: String,
    pub overwrite_storage_file: bool,
    pub data_center_image_upload_requests: Vec<DataCenterImageUploadRequest>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataCenterImageUploadRequest {
    pub data_center_name: String,
    pub status_name: &'static str,
    pub upload_progress: String,
    pub region: String,
    pub last_updated_date: String,
    pub copy_upload: bool,
    pub overwrite_upload: bool,
    pub replica_data_center: bool,
    /// Ours, beside the Marketplace's fields: where the object is, and why
    /// a target failed.
    pub uploaded_chunks: u64,
    pub pending_chunks: u64,
    pub image_uri: Option<String>,
    pub bucket_name: Option<String>,
    pub error_message: Option<String>,
}

impl MachineImageUploadRequest {
    pub fn from_status(s: &UploadStatus) -> Self {
        let (done, total) = s.chunks();
        let last = s
            .targets
            .iter()
            .map(|t| t.updated_at)
            .max()
            .unwrap_or(s.created);
        let file_name = s
            .file_name
            .rsplit_once('/')
            .map_or(s.file_name.as_str(), |(_, f)| f)
            .to_owned();
        Self {
            upload_request_id: s.id.0,
            file_name,
            image_file_path: s.file_name.clone(),
            check_sum: s.sha256.clone(),
            status_name: status_name(s.state),
            uploaded_chunks: done,
            pending_chunks: total - done.min(total),
            created_by: s.owner.principal.clone(),
            created_date: format_time(s.created),
            last_modified_by: "vmshot".into(),
            last_modified_date: format_time(last),
            overwrite_storage_file: false,
            data_center_image_upload_requests: s
                .targets
                .iter()
                .map(|t| {
                    let percent = match t.state {
                        UploadState::Completed => 100,
                        _ if s.bytes == 0 => 0,
                        // Below 100 until the object is read back and checked.
                        _ => (t.bytes_done * 100 / s.bytes).min(99),
                    };
                    DataCenterImageUploadRequest {
                        data_center_name: t.target.clone(),
                        status_name: status_name(t.state),
                        upload_progress: format!("{percent}%"),
                        region: t.target.clone(),
                        last_updated_date: format_time(t.updated_at),
                        copy_upload: false,
                        overwrite_upload: false,
                        replica_data_center: false,
                        uploaded_chunks: t.uploaded_chunks,
                        pending_chunks: t.total_chunks - t.uploaded_chunks.min(t.total_chunks),
                        image_uri: t.uri.clone(),
                        bucket_name: t.bucket.clone(),
                        error_message: t.error.clone(),
                    }
                })
                .collect(),
        }
    }
}

/// An error as the Marketplace answers it: the status and
/// `{"errorCode": …, "errorMessage": …}`.
#[derive(Debug)]
pub struct MarketError {
    pub status: StatusCode,
    pub message: String,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    error_code: &'static str,
    error_message: &'a str,
}

impl MarketError {
    fn new(status: u16, outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            outcome,
            detail: None,
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(400, Outcome::ClientError, message)
    }

    pub fn not_authorized() -> Self {
        Self::new(
            401,
            Outcome::AuthError,
            "Not Authorized: a valid bearer token is required.",
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, Outcome::NotFound, what)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            Outcome::ClientError,
            "Only GET and HEAD are allowed here.",
        )
    }

    pub fn system_error(message: impl Into<String>) -> Self {
        Self::new(500, Outcome::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, Outcome::Unavailable, message)
    }

    /// The core's error: an upload not found (or not the caller's) is a
    /// 404, the rest a system error whose detail stays in the log.
    pub fn from_core(err: &CoreError) -> Self {
        match err {
            CoreError::NoSuchUpload { id } => {
                Self::not_found(format!("Entity Not Found: no upload request {id}."))
            }
            CoreError::Timeout(_)
            | CoreError::Unavailable { .. }
            | CoreError::StorageFull { .. } => Self {
                detail: err.detail().map(str::to_owned),
                ..Self::unavailable("System Error: the service is unavailable.")
            },
            _ => Self {
                detail: Some(format!("{err} {}", err.detail().unwrap_or_default())),
                ..Self::system_error(format!("System Error: {err}."))
            },
        }
    }

    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error_code: self.code(),
            error_message: &self.message,
        })
        .expect("an error serializes")
    }
}

impl WireError for MarketError {
    fn code(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "InvalidParameter",
            401 => "NotAuthorized",
            404 => "EntityNotFound",
            405 => "MethodNotAllowed",
            413 => "RequestTooLarge",
            503 => "ServiceUnavailable",
            _ => "SystemError",
        }
    }

    fn outcome(&self) -> Outcome {
        self.outcome
    }

    fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_as_the_example_writes_them() {
        let t = time::macros::datetime!(2018-06-12 04:28:50.001 UTC);
        assert_eq!(format_time(t), "2018-06-12T04:28:50.001Z");
    }
}
