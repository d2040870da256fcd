//! OCI error codes, and how a store error becomes one.

use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::{mirror, store, upstream};

/// An error response: status, OCI code, message, and any headers the client
/// needs to recover (such as `Range` after an out-of-order chunk).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<Value>,
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }

    pub fn body(&self) -> Vec<u8> {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(detail) = &self.detail {
            error["detail"] = detail.clone();
        }
        serde_json::to_vec(&json!({ "errors": [error] })).expect("JSON values serialize")
    }

    pub fn name_invalid(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        )
        .with_detail(json!({ "name": name }))
    }

    pub fn digest_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    pub fn tag_invalid(tag: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "TAG_INVALID", "invalid tag")
            .with_detail(json!({ "tag": tag }))
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }

    pub fn unsupported() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the operation is unsupported",
        )
    }

    pub fn pagination_invalid() -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "PAGINATION_NUMBER_INVALID",
            "invalid number of results requested",
        )
    }

    pub fn upload_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
    }

    /// A chunk that does not continue the upload: 416 with the committed range.
    pub fn range_mismatch(offset: u64) -> ApiError {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("the upload holds {offset} bytes; a chunk must start there"),
        )
        .with_header("range", &upload_range(offset))
    }
}

/// The `Range` header value reporting an upload's committed bytes.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl From<mirror::Error> for ApiError {
    fn from(e: mirror::Error) -> ApiError {
        match e {
            mirror::Error::Store(e) => e.into(),
            mirror::Error::Upstream(e) => {
                let status = match e {
                    upstream::Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                ApiError::new(status, "UNAVAILABLE", e.to_string())
            }
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> ApiError {
        use store::Error as E;
        let message = e.to_string();
        match e {
            E::BlobUnknown => ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", message),
            E::UploadUnknown | E::UploadLost => {
                ApiError::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", message)
            }
            E::RangeMismatch { offset } | E::UploadBusy { offset } => ApiError {
                message,
                ..ApiError::range_mismatch(offset)
            },
            E::SizeMismatch { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", message)
            }
            E::BodyFailed(_) => ApiError::upload_invalid(message),
            E::DigestMismatch { .. } => ApiError::digest_invalid(message),
            E::ManifestUnknown => ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message),
            E::ManifestInvalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
            }
            E::ManifestBlobUnknown(digest) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", message)
                    .with_detail(json!({ "digest": digest.as_str() }))
            }
            E::NameUnknown => ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", message),
            E::TooManyUploads(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            }
            _ if e.is_storage_full() => {
                log::error!("{message}");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "UNKNOWN",
                    "the registry's storage is full",
                )
            }
            E::Metadata(_) | E::Objects(_) | E::Conflict => {
                log::error!("{message}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
            }
            E::Unsupported(_) => {
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
            }
            E::Io(_) | E::Db(_) | E::Corrupt(_) | E::InUse(_) | E::Internal(_) => {
                log::error!("{message}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", message)
            }
        }
    }
}
