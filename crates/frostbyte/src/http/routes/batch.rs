//! Batch intake and batch status: `POST /api/v1/ingest/{tenant_id}/batch` and
//! `GET /api/v1/ingest/{tenant_id}/batch/{batch_id}` (scope `ingest`).
//!
//! The body is multipart: a `manifest` part (JSON, first) and one `files` part per manifest entry, matched by
//! `file_id` as the part's filename or else by order. Parts stream: each file is hashed and counted as it
//! arrives, and a file past the tenant's `max_file_size_mb` is drained without being buffered (its outcome is
//! `SIZE_EXCEEDED`; the other files are unaffected). Whole-batch problems answer 400 before anything is stored;
//! a reused `batch_id` answers 409 `CONFLICT`. Everything after the bytes are in is `crate::intake`.

use std::collections::HashMap;

use axum::extract::multipart::{Field, Multipart};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::batch::{self, FileOutcome, MAX_MANIFEST_BYTES, Manifest, ManifestError, RejectReason};
use frostbyte_core::tenant::FieldViolation;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::documents::{authorize, intake_error, multipart_error};
use crate::batch_status::{self, BatchStatusView};
use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorCode, ErrorEnvelope};
use crate::http::extract::Path;
use crate::intake::{ReceivedFile, UploadBuffer, max_upload_bytes};

const TAG: &str = "documents";

/// The batch upload route, with the default body limit lifted: each file is limited while it streams.
pub(crate) fn batch_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(submit_batch)).layer(DefaultBodyLimit::disable())
}

/// One entry of `receipts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchReceipt {
    pub receipt_id: Uuid,
    pub file_id: String,
    /// `accepted`, `rejected` or `quarantined`.
    pub status: FileOutcome,
    /// Set for accepted files.
    pub doc_id: Option<Uuid>,
}

/// One entry of `rejected_files` or `quarantined_files`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefusedFile {
    pub file_id: String,
    pub reason: RejectReason,
    pub message: String,
    /// The malware signature, for quarantined files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `202` answer to a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    pub batch_id: String,
    pub file_count: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub quarantined: u64,
    pub receipts: Vec<BatchReceipt>,
    pub rejected_files: Vec<RefusedFile>,
    pub quarantined_files: Vec<RefusedFile>,
}

fn manifest_invalid(message: impl Into<String>, details: Vec<FieldViolation>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid, message).with_details(details)
}

fn manifest_error(e: ManifestError) -> ApiError {
    match e {
        ManifestError::Invalid(details) => {
            let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
            let message = format!("the manifest is invalid; fix: {}", fields.join(", "));
            manifest_invalid(message, details)
        }
        ManifestError::FileCountMismatch { declared, listed, received } => {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ManifestFileCountMismatch, e.to_string()).with_details(
                vec![FieldViolation::new(
                    "file_count",
                    Value::from(declared),
                    format!("equal to the number of files[] entries ({listed}) and of file parts sent ({received})"),
                )],
            )
        }
        ManifestError::DuplicateFileId(id) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::DuplicateFileId,
            format!("file_id {id:?} appears more than once in the manifest"),
        )
        .with_details(vec![FieldViolation::new("files[].file_id", Value::from(id), "unique within the batch")]),
        ManifestError::TooManyFiles { count, max } => manifest_invalid(
            format!("the batch has {count} files; this tenant accepts at most {max} (max_batch_size)"),
            vec![FieldViolation::new("files", Value::from(count), format!("at most {max} files (max_batch_size)"))],
        ),
    }
}

/// Reads a file part under `limit`; past it, the rest is drained unbuffered.
async fn read_file_part(mut field: Field<'_>, limit: u64) -> Result<ReceivedFile, ApiError> {
    let mut buf = UploadBuffer::new(limit);
    let mut too_large = false;
    while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
        if !too_large && buf.push(&piece).is_err() {
            too_large = true;
        }
    }
    if too_large {
        return Ok(ReceivedFile::TooLarge { limit });
    }
    let (bytes, sha256) = buf.finish();
    Ok(ReceivedFile::Bytes { bytes, sha256 })
}

async fn read_manifest(mut field: Field<'_>) -> Result<Vec<u8>, ApiError> {
    let mut buf = UploadBuffer::new(MAX_MANIFEST_BYTES);
    while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
        if buf.push(&piece).is_err() {
            return Err(manifest_invalid(
                "the manifest is too large",
                vec![FieldViolation::new("manifest", Value::Null, format!("at most {MAX_MANIFEST_BYTES} bytes"))],
            ));
        }
    }
    Ok(buf.finish().0.to_vec())
}

async fn drain(mut field: Field<'_>) -> Result<(), ApiError> {
    while field.chunk().await.map_err(multipart_error)?.is_some() {}
    Ok(())
}

#[utoipa::path(
    post, path = "/api/v1/ingest/{tenant_id}/batch", tag = TAG,
    summary = "Upload a batch: a `manifest` part (JSON) and one `files` part per manifest entry",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body(content_type = "multipart/form-data", description = "`manifest` (JSON `{batch_id, tenant_id, file_count, collection?, submitter?, files:[{file_id, filename, mime_type, size_bytes, sha256, metadata?}]}`, first), then `files` parts matched by `file_id` as the part's filename or by order"),
    responses(
        (status = 202, description = "Accepted: per-file receipts and reasons; accepted files continue in the background", body = Envelope<BatchAccepted>),
        (status = 400, description = "MANIFEST_INVALID, MANIFEST_FILE_COUNT_MISMATCH or DUPLICATE_FILE_ID: nothing stored", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT: this tenant already used the batch_id", body = ErrorEnvelope),
        (status = 429, description = "QUOTA_EXCEEDED (storage_quota_gb or quotas.documents_per_day), with Retry-After: nothing stored", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the malware scanner could not be reached; nothing stored", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn submit_batch(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let tenant = authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    let limit = max_upload_bytes(&tenant.config);
    let mut manifest: Option<Manifest> = None;
    let mut received: Vec<Option<ReceivedFile>> = Vec::new();
    let mut taken: Vec<bool> = Vec::new();
    let mut parts = 0usize;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("manifest") if manifest.is_none() => {
                let raw = read_manifest(field).await?;
                let m =
                    batch::parse_manifest(&raw, &tenant_id, tenant.config.max_batch_size).map_err(manifest_error)?;
                if ctx.batches.get_batch(&tenant_id, &m.batch_id).await?.is_some() {
                    return Err(batch_id_taken(&m.batch_id));
                }
                received = vec![None; m.files.len()];
                taken = vec![false; m.files.len()];
                manifest = Some(m);
            }
            Some("manifest") => {
                return Err(manifest_invalid(
                    "the request has more than one manifest part",
                    vec![FieldViolation::new("manifest", Value::Null, "exactly one manifest part")],
                ));
            }
            Some("files" | "file") => {
                let Some(m) = &manifest else {
                    return Err(manifest_invalid(
                        "the manifest part must come before the file parts",
                        vec![FieldViolation::new("manifest", Value::Null, "the first part of the body")],
                    ));
                };
                let position = parts;
                parts += 1;
                if position >= m.files.len() {
                    // Too many parts: reported as a count mismatch once all are counted.
                    drain(field).await?;
                    continue;
                }
                let name = field.file_name().map(str::to_owned);
                let Some(i) = batch::match_part(m, &taken, position, name.as_deref()) else {
                    let shown: String = name.unwrap_or_default().chars().take(128).collect();
                    return Err(manifest_invalid(
                        format!("file part {} matches no manifest entry", position + 1),
                        vec![FieldViolation::new(
                            format!("files[{position}]"),
                            Value::from(shown),
                            "a part whose filename is a manifest file_id not sent yet, or the part for the \
                             manifest entry at its position",
                        )],
                    ));
                };
                taken[i] = true;
                received[i] = Some(read_file_part(field, limit).await?);
            }
            // Unknown parts are drained and ignored.
            _ => drain(field).await?,
        }
    }
    let Some(manifest) = manifest else {
        return Err(manifest_invalid(
            "the request has no manifest part",
            vec![FieldViolation::new("manifest", Value::Null, "a multipart part named `manifest`")],
        ));
    };
    batch::check_part_count(&manifest, parts as u64).map_err(manifest_error)?;
    let files: Vec<ReceivedFile> = received.into_iter().map(|f| f.expect("every entry has its part")).collect();
    let batch_id = manifest.batch_id.clone();
    let outcome = crate::intake::Intake::from_state(&ctx)
        .accept_batch(&tenant_id, &tenant.config, &principal.actor().to_string(), manifest, files)
        .await
        .map_err(|e| match e {
            crate::intake::IntakeError::Store(frostbyte_core::StoreError::AlreadyExists { resource: "batch" }) => {
                batch_id_taken(&batch_id)
            }
            other => intake_error(other),
        })?;
    let refused = |o: FileOutcome| -> Vec<RefusedFile> {
        outcome
            .files
            .iter()
            .filter(|f| f.outcome == o)
            .map(|f| RefusedFile {
                file_id: f.file_id.clone(),
                reason: f.reason.unwrap_or(RejectReason::UnsupportedFormat),
                message: f.message.clone().unwrap_or_default(),
                signature: f.signature.clone(),
            })
            .collect()
    };
    Ok(envelope::accepted(BatchAccepted {
        batch_id: outcome.batch_id.clone(),
        file_count: outcome.file_count,
        accepted: outcome.count(FileOutcome::Accepted),
        rejected: outcome.count(FileOutcome::Rejected),
        quarantined: outcome.count(FileOutcome::Quarantined),
        receipts: outcome
            .files
            .iter()
            .map(|f| BatchReceipt {
                receipt_id: f.receipt_id,
                file_id: f.file_id.clone(),
                status: f.outcome,
                doc_id: f.doc_id,
            })
            .collect(),
        rejected_files: refused(FileOutcome::Rejected),
        quarantined_files: refused(FileOutcome::Quarantined),
    }))
}

/// 409: the tenant already used this batch id (whatever became of that batch).
fn batch_id_taken(batch_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        "this tenant already submitted a batch with this batch_id; choose a new batch_id",
    )
    .with_details(vec![FieldViolation::new(
        "batch_id",
        Value::from(batch_id.chars().take(128).collect::<String>()),
        "a batch_id this tenant has not used",
    )])
}

#[utoipa::path(
    get, path = "/api/v1/ingest/{tenant_id}/batch/{batch_id}", tag = TAG,
    summary = "A batch's status: per-file stages, a summary, and the acceptance report with remediation",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("batch_id" = String, Path, description = "The client-chosen batch id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<BatchStatusView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_batch(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, batch_id)): Path<(TenantId, String)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    let batch = ctx.batches.get_batch(&tenant_id, &batch_id).await?.ok_or_else(|| ApiError::not_found("batch"))?;
    let files = ctx.batches.batch_files(&tenant_id, &batch_id).await?;
    let mut docs = HashMap::new();
    for doc_id in files.iter().filter_map(|f| f.doc_id) {
        if let Some(doc) = ctx.documents.get_document(&tenant_id, doc_id).await? {
            docs.insert(doc_id, doc);
        }
    }
    Ok(envelope::ok(batch_status::build(batch, files, &docs)))
}
