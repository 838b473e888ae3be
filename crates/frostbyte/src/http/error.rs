//! The one error type of the HTTP layer: a status, a stable code from the API contract, a message that says what
//! to fix, and per-field details. Use-case and store errors map onto it here, once; internals are logged, never
//! sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use frostbyte_core::ports::BlobError;
use frostbyte_core::service::ServiceError;
use frostbyte_core::tenant::FieldViolation;
use frostbyte_core::{StoreError, TenantId};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::request_id;

/// How long a client should wait before retrying when a store is unavailable.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// The stable error codes of the API contract (plus `METHOD_NOT_ALLOWED`, which the contract does not name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    ConfirmationMismatch,
    AuthenticationRequired,
    TokenExpired,
    TokenRevoked,
    InsufficientPermissions,
    TenantSuspended,
    ResourceNotFound,
    MethodNotAllowed,
    TenantAlreadyExists,
    InvalidStateTransition,
    Conflict,
    PayloadTooLarge,
    RateLimitExceeded,
    InternalError,
    ServiceUnavailable,
    ManifestInvalid,
    ManifestFileCountMismatch,
    DuplicateFileId,
    SchemaViolation,
    QuotaExceeded,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::ConfirmationMismatch => "CONFIRMATION_MISMATCH",
            ErrorCode::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::TokenRevoked => "TOKEN_REVOKED",
            ErrorCode::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            ErrorCode::TenantSuspended => "TENANT_SUSPENDED",
            ErrorCode::ResourceNotFound => "RESOURCE_NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::TenantAlreadyExists => "TENANT_ALREADY_EXISTS",
            ErrorCode::InvalidStateTransition => "INVALID_STATE_TRANSITION",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestFileCountMismatch => "MANIFEST_FILE_COUNT_MISMATCH",
            ErrorCode::DuplicateFileId => "DUPLICATE_FILE_ID",
            ErrorCode::SchemaViolation => "SCHEMA_VIOLATION",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
        }
    }
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<FieldViolation>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

/// The error envelope: `{"success": false, "error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<FieldViolation>,
    /// Equal to the response's `x-request-id` header.
    pub request_id: String,
}

/// Marks a response whose body is already an error envelope, so the request-context middleware leaves it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvelopedError;

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: Vec::new(), retry_after: None }
    }

    pub fn with_details(mut self, details: Vec<FieldViolation>) -> Self {
        self.details = details;
        self
    }

    pub fn validation(message: impl Into<String>, details: Vec<FieldViolation>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ValidationError, message).with_details(details)
    }

    /// One invalid field.
    pub fn invalid_field(field: &str, value: impl Into<Value>, constraint: impl Into<String>) -> Self {
        let constraint = constraint.into();
        ApiError::validation(
            format!("{field} is invalid: it must be {constraint}"),
            vec![FieldViolation::new(field, value, constraint)],
        )
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ResourceNotFound, format!("{what} not found"))
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::AuthenticationRequired, message)
    }

    pub fn token_expired() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired, "the credential has expired")
    }

    pub fn token_revoked() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenRevoked, "the credential has been revoked")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::InsufficientPermissions, message)
    }

    pub fn tenant_suspended(tenant: &TenantId) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::TenantSuspended, format!("tenant {tenant} is suspended"))
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimitExceeded,
            format!("request rate limit exceeded; retry after {retry_after_secs} s"),
        );
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 429 `QUOTA_EXCEEDED` with `Retry-After`.
    pub fn quota_exceeded(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::QuotaExceeded, message);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, message);
        e.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECS);
        e
    }

    /// A 500 whose body says nothing about the cause; the cause is logged here.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError, "internal error")
    }

    /// The envelope body, with the current request id.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            success: false,
            error: ErrorBody {
                code: self.code,
                message: self.message.clone(),
                details: self.details.clone(),
                request_id: request_id::current().unwrap_or_default(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code.as_str(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.envelope();
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(EnvelopedError);
        response
    }
}

fn describe_violations(details: &[FieldViolation]) -> String {
    let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
    format!("the request has {} problem(s); fix: {}", details.len(), fields.join(", "))
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::AlreadyExists("tenant") => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::TenantAlreadyExists,
                "a tenant with this id already exists (ids of deprovisioned tenants are never reused)",
            ),
            ServiceError::AlreadyExists(what) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, format!("{what} already exists"))
            }
            ServiceError::InvalidTransition(t) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::InvalidStateTransition, t.to_string()).with_details(
                    vec![FieldViolation::new(
                        "state",
                        t.from.as_str(),
                        format!("a state from which {} can be reached", t.to),
                    )],
                )
            }
            ServiceError::Validation(details) => ApiError::validation(describe_violations(&details), details),
            ServiceError::ConfirmationMismatch => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ConfirmationMismatch,
                "set confirm to true and confirm_tenant_id to the id of the tenant being deprovisioned",
            ),
            ServiceError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, message),
            ServiceError::Store(e) => e.into(),
            ServiceError::Blob(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { resource } => ApiError::not_found(resource),
            StoreError::AlreadyExists { .. } | StoreError::Conflict(_) => ServiceError::from(e).into(),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "metadata store unavailable");
                ApiError::unavailable("the metadata store is unavailable; retry later")
            }
            StoreError::Internal(_) => ApiError::internal(&e),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Unavailable(_) => {
                tracing::warn!(error = %e, "blob store unavailable");
                ApiError::unavailable("the blob store is unavailable; retry later")
            }
            BlobError::NotFound(_) => ApiError::not_found("blob"),
            BlobError::InvalidKey { .. } => ApiError::internal(&e),
        }
    }
}

/// An error response for a status produced outside the handlers (a bare 404/405/413 from the router or a layer).
pub(crate) fn for_bare_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::not_found("resource"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            ErrorCode::MethodNotAllowed,
            "this method is not allowed on this path; see /openapi.json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(status, ErrorCode::PayloadTooLarge, "request body is larger than the limit")
        }
        StatusCode::UNAUTHORIZED => ApiError::unauthenticated("authentication required"),
        StatusCode::FORBIDDEN => ApiError::forbidden("not allowed"),
        StatusCode::TOO_MANY_REQUESTS => ApiError::rate_limited(1),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::unavailable("service unavailable; retry later"),
        s if s.is_client_error() => {
            ApiError::new(s, ErrorCode::ValidationError, s.canonical_reason().unwrap_or("invalid request").to_owned())
        }
        s => ApiError::new(s, ErrorCode::InternalError, "internal error"),
    }
}
