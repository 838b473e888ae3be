//! Single-document intake and the document view: `POST /api/v1/ingest/{tenant_id}/documents` (scope `ingest`),
//! `GET /api/v1/ingest/{tenant_id}/receipt/{receipt_id}` (scope `ingest`, for single uploads and every batch
//! file, accepted or not) and `GET /api/v1/query/{tenant_id}/document/{doc_id}` (scope `query`).
//!
//! The upload is streamed: the `file` part is hashed and counted as it arrives and refused with 413 the moment it
//! passes the tenant's `max_file_size_mb` (the router's default body limit is lifted for this route only, see
//! [`upload_routes`]). Everything after the bytes are in is `crate::intake`: malware scan (503 when the scanner
//! cannot answer), type, metadata schema (422 `SCHEMA_VIOLATION`), quotas (429 `QUOTA_EXCEEDED`).

use axum::extract::multipart::{Field, Multipart, MultipartError};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::batch::BatchFileRecord;
use frostbyte_core::documents::{
    DocumentRecord, DocumentStages, DocumentStatus, PipelineStage, StageStatus, raw_blob_key,
};
use frostbyte_core::index::IndexedChunk;
use frostbyte_core::tenant::FieldViolation;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorCode, ErrorEnvelope};
use crate::http::extract::Path;
use crate::intake::{Intake, IntakeError, Upload, UploadBuffer, max_upload_bytes};

const TAG: &str = "documents";
/// The largest `metadata` part accepted.
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The longest filename kept (longer ones are cut).
const MAX_FILENAME_CHARS: usize = 255;

/// The upload route, with the default body limit lifted: the handler enforces the tenant's own limit while
/// streaming, after authentication.
pub(crate) fn upload_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(upload_document)).layer(DefaultBodyLimit::disable())
}

pub(crate) use crate::http::auth::authorize_tenant as authorize;

/// `202` answer to an upload: the receipt.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestReceipt {
    pub receipt_id: Uuid,
    pub doc_id: Uuid,
    /// `processing` until the pipeline finishes.
    pub status: DocumentStatus,
    pub sha256: String,
    /// `clean`, or `skipped` when no malware scanner is configured (`[scan] scanner = "none"`).
    pub scan_result: String,
    pub original_filename: String,
    /// The sniffed type.
    pub mime_type: String,
    pub size_bytes: u64,
}

/// `GET …/receipt/{receipt_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    pub receipt_id: Uuid,
    /// `null` for single uploads.
    pub batch_id: Option<String>,
    pub file_id: Option<String>,
    /// `null` for batch files intake did not accept.
    pub doc_id: Option<Uuid>,
    pub original_filename: String,
    /// The sniffed type for accepted files, the declared one otherwise.
    pub mime_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// `clean`, `quarantined` or `skipped`; `null` for a file rejected before it was scanned.
    pub scan_result: Option<String>,
    pub received_at: DateTime<Utc>,
    /// `raw/{sha256}`; `null` when nothing was stored (rejected or quarantined).
    pub storage_path: Option<String>,
    /// A document status (`processing`, `indexed`, `quarantined`, `failed`), or `rejected` / `quarantined` for a
    /// batch file intake refused.
    pub status: String,
    /// Why intake refused the file (`CHECKSUM_MISMATCH`, `MALWARE_DETECTED`, ...).
    pub reason: Option<String>,
    pub stages: DocumentStages,
}

/// One chunk in the document view (no text: fetch the chunk for that).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkSummary {
    pub chunk_id: String,
    pub position: u32,
    pub start_char: u32,
    pub end_char: u32,
    pub page: Option<u32>,
    pub quarantined: bool,
    pub classification: Option<String>,
}

/// `GET /api/v1/query/{tenant_id}/document/{doc_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentView {
    pub doc_id: Uuid,
    pub receipt_id: Uuid,
    pub original_filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub collection: Option<String>,
    pub status: DocumentStatus,
    pub stages: DocumentStages,
    pub current_stage: Option<PipelineStage>,
    pub error_code: Option<String>,
    /// `{raw_sha256, parser_version, policy_version, embed_model, ...}`.
    #[schema(value_type = Object)]
    pub lineage: Value,
    /// `{chunks, quarantined_chunks}`.
    #[schema(value_type = Object)]
    pub stats: Value,
    pub chunks: Vec<ChunkSummary>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, crate::http::ErrorCode::PayloadTooLarge, e.body_text());
    }
    ApiError::invalid_field("body", Value::Null, "a valid multipart/form-data body")
}

pub(crate) async fn read_limited(mut field: Field<'_>, mut buf: UploadBuffer) -> Result<UploadBuffer, ApiError> {
    while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
        buf.push(&piece).map_err(|e| ApiError::payload_too_large(usize::try_from(e.limit).unwrap_or(usize::MAX)))?;
    }
    Ok(buf)
}

/// A single-file multipart form, as the upload and replace endpoints take it: `file` (required, non-empty, at most
/// `max_file_bytes`, hashed while it streams), an optional `metadata` JSON object and an optional `collection`
/// (`Some(None)` when sent empty). Unknown parts are drained and ignored.
pub(crate) struct UploadForm {
    pub bytes: bytes::Bytes,
    pub sha256: String,
    pub filename: String,
    pub declared_mime: Option<String>,
    pub metadata: Option<Value>,
    pub collection: Option<Option<String>>,
}

pub(crate) async fn read_upload_form(multipart: &mut Multipart, max_file_bytes: u64) -> Result<UploadForm, ApiError> {
    let mut file: Option<(UploadBuffer, String, Option<String>)> = None;
    let mut metadata = None;
    let mut collection = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") if file.is_none() => {
                let filename: String = field.file_name().unwrap_or("upload").chars().take(MAX_FILENAME_CHARS).collect();
                let declared = field.content_type().map(str::to_owned);
                let buf = read_limited(field, UploadBuffer::new(max_file_bytes)).await?;
                file = Some((buf, filename, declared));
            }
            Some("metadata") => {
                let (bytes, _) = read_limited(field, UploadBuffer::new(MAX_METADATA_BYTES as u64)).await?.finish();
                metadata = match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v @ Value::Object(_)) => Some(v),
                    _ => return Err(ApiError::invalid_field("metadata", Value::Null, "a JSON object")),
                };
            }
            Some("collection") => {
                let (bytes, _) = read_limited(field, UploadBuffer::new(256)).await?.finish();
                let c = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::invalid_field("collection", Value::Null, "UTF-8 text"))?;
                collection = Some(Some(c.trim().to_owned()).filter(|c| !c.is_empty()));
            }
            _ => {}
        }
    }
    let Some((buf, filename, declared_mime)) = file else {
        return Err(ApiError::invalid_field("file", Value::Null, "a multipart part named `file`"));
    };
    let (bytes, sha256) = buf.finish();
    if bytes.is_empty() {
        return Err(ApiError::invalid_field("file", Value::Null, "a non-empty file"));
    }
    Ok(UploadForm { bytes, sha256, filename, declared_mime, metadata, collection })
}

#[utoipa::path(
    post, path = "/api/v1/ingest/{tenant_id}/documents", tag = TAG,
    summary = "Upload one document (multipart: `file`, optional `metadata` JSON object and `collection`)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body(content_type = "multipart/form-data", description = "`file` (required), `metadata` (JSON object), `collection`"),
    responses(
        (status = 202, description = "Accepted: the receipt; processing continues in the background", body = Envelope<IngestReceipt>),
        (status = 400, description = "VALIDATION_ERROR (details carry `UNSUPPORTED_FORMAT` for refused or mismatched types, `MALWARE_DETECTED` for quarantined files)", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: over the tenant's max_file_size_mb", body = ErrorEnvelope),
        (status = 422, description = "SCHEMA_VIOLATION: the metadata violates the tenant's metadata schema", body = ErrorEnvelope),
        (status = 429, description = "QUOTA_EXCEEDED (storage_quota_gb or quotas.documents_per_day), with Retry-After", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the malware scanner could not be reached; nothing accepted", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn upload_document(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let tenant = authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    let form = read_upload_form(&mut multipart, max_upload_bytes(&tenant.config)).await?;
    let upload = Upload {
        bytes: form.bytes,
        sha256: form.sha256,
        filename: form.filename,
        declared_mime: form.declared_mime,
        metadata: form.metadata.unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        collection: form.collection.flatten(),
    };
    let (doc, scan) = Intake::from_state(&ctx)
        .accept(&tenant_id, &tenant.config, &principal.actor().to_string(), upload)
        .await
        .map_err(intake_error)?;
    Ok(envelope::accepted(IngestReceipt {
        receipt_id: doc.receipt_id,
        doc_id: doc.doc_id,
        status: doc.status,
        sha256: doc.raw_sha256,
        scan_result: scan.as_str().to_owned(),
        original_filename: doc.original_filename,
        mime_type: doc.mime_type,
        size_bytes: doc.size_bytes,
    }))
}

/// Maps an intake failure to its API error.
pub(crate) fn intake_error(e: IntakeError) -> ApiError {
    match e {
        IntakeError::UnsupportedFormat { sniffed, declared, reason } => {
            let constraint = match (sniffed, declared) {
                (Some(found), Some(declared)) if parser_has(found) => format!(
                    "UNSUPPORTED_FORMAT: the declared type ({declared}) must agree with the content ({found}), and \
                     the type must be on the tenant's mime_allowlist"
                ),
                _ => "UNSUPPORTED_FORMAT: a type in the tenant's mime_allowlist that has a parser".to_owned(),
            };
            ApiError::validation(
                format!("the file's type is not accepted (UNSUPPORTED_FORMAT): {reason}"),
                vec![FieldViolation::new("file", sniffed.map_or(Value::Null, Value::from), constraint)],
            )
        }
        IntakeError::SchemaViolation(details) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::SchemaViolation,
            format!(
                "the metadata violates this tenant's metadata schema in {} place(s); see details and \
                 GET /api/v1/tenants/{{tenant_id}}/schema",
                details.len()
            ),
        )
        .with_details(details),
        IntakeError::MalwareDetected { signature } => ApiError::validation(
            "the file matched a malware signature (MALWARE_DETECTED); it was quarantined and not stored",
            vec![FieldViolation::new("file", Value::from(signature), "MALWARE_DETECTED: a file free of malware")],
        ),
        IntakeError::Scan(e) => {
            tracing::warn!(error = %e, "malware scan failed; refusing the upload");
            ApiError::unavailable(
                "the malware scanner could not check the upload, so nothing was accepted; retry later",
            )
        }
        IntakeError::Quota(q) => ApiError::quota_exceeded(q.message, q.retry_after_secs),
        IntakeError::BrokenSchema => ApiError::internal(&"stored metadata schema does not compile"),
        IntakeError::Store(e) => e.into(),
        IntakeError::Blob(e) => e.into(),
    }
}

fn parser_has(mime: &str) -> bool {
    frostbyte_adapters::parse::parser_for(mime).is_some()
}

#[utoipa::path(
    get, path = "/api/v1/ingest/{tenant_id}/receipt/{receipt_id}", tag = TAG,
    summary = "An intake receipt, with the document's stage statuses",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("receipt_id" = Uuid, Path, description = "Receipt id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<ReceiptView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_receipt(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, receipt_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    if let Some(doc) = ctx.documents.get_by_receipt(&tenant_id, receipt_id).await? {
        return Ok(envelope::ok(receipt_view(doc)));
    }
    let (batch_id, file) = ctx
        .batches
        .batch_file_by_receipt(&tenant_id, receipt_id)
        .await?
        .ok_or_else(|| ApiError::not_found("receipt"))?;
    let batch = ctx.batches.get_batch(&tenant_id, &batch_id).await?.ok_or_else(|| ApiError::not_found("receipt"))?;
    Ok(envelope::ok(refused_receipt_view(batch_id, file, batch.created_at)))
}

fn lineage_str(doc: &DocumentRecord, key: &str) -> Option<String> {
    doc.lineage.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn receipt_view(doc: DocumentRecord) -> ReceiptView {
    ReceiptView {
        receipt_id: doc.receipt_id,
        batch_id: lineage_str(&doc, "batch_id"),
        file_id: lineage_str(&doc, "file_id"),
        doc_id: Some(doc.doc_id),
        storage_path: Some(raw_blob_key(&doc.raw_sha256)),
        // Documents accepted before scanning existed were never scanned.
        scan_result: Some(lineage_str(&doc, "scan_result").unwrap_or_else(|| "skipped".into())),
        original_filename: doc.original_filename,
        mime_type: doc.mime_type,
        size_bytes: doc.size_bytes,
        sha256: doc.raw_sha256,
        received_at: doc.created_at,
        status: doc.status.as_str().to_owned(),
        reason: None,
        stages: doc.stages,
    }
}

/// The receipt of a batch file intake refused: nothing stored, no document.
fn refused_receipt_view(batch_id: String, file: BatchFileRecord, received_at: DateTime<Utc>) -> ReceiptView {
    ReceiptView {
        receipt_id: file.receipt_id,
        batch_id: Some(batch_id),
        file_id: Some(file.file_id),
        doc_id: file.doc_id,
        original_filename: file.filename,
        mime_type: file.declared_mime,
        size_bytes: file.size_bytes,
        sha256: file.sha256,
        scan_result: file.scan_result,
        received_at,
        storage_path: None,
        status: file.outcome.as_str().to_owned(),
        reason: file.reason.map(|r| r.as_str().to_owned()),
        stages: DocumentStages {
            intake: StageStatus::Failed,
            parse: StageStatus::Skipped,
            policy: StageStatus::Skipped,
            embed: StageStatus::Skipped,
            index: StageStatus::Skipped,
        },
    }
}

#[utoipa::path(
    get, path = "/api/v1/query/{tenant_id}/document/{doc_id}", tag = TAG,
    summary = "A document: metadata, stage statuses, lineage, stats and its chunk list (no text)",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("doc_id" = Uuid, Path, description = "Document id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<DocumentView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_document(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, doc_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Query).await?;
    let doc = ctx.documents.get_document(&tenant_id, doc_id).await?.ok_or_else(|| ApiError::not_found("document"))?;
    let chunks = ctx.index.document_chunks(&tenant_id, &doc_id.to_string()).await?;
    Ok(envelope::ok(document_view(doc, &chunks)))
}

fn document_view(doc: DocumentRecord, chunks: &[IndexedChunk]) -> DocumentView {
    let mut lineage = doc.lineage;
    lineage.insert("raw_sha256".into(), Value::from(doc.raw_sha256));
    let quarantined = chunks.iter().filter(|c| c.quarantined).count();
    DocumentView {
        doc_id: doc.doc_id,
        receipt_id: doc.receipt_id,
        original_filename: doc.original_filename,
        mime_type: doc.mime_type,
        size_bytes: doc.size_bytes,
        metadata: doc.metadata,
        collection: doc.collection,
        status: doc.status,
        current_stage: doc.stages.current(),
        stages: doc.stages,
        error_code: doc.error_code,
        lineage: Value::Object(lineage),
        stats: serde_json::json!({"chunks": chunks.len(), "quarantined_chunks": quarantined}),
        chunks: chunks
            .iter()
            .map(|c| ChunkSummary {
                chunk_id: c.chunk_id.clone(),
                position: c.position,
                start_char: c.start,
                end_char: c.end,
                page: c.page_start,
                quarantined: c.quarantined,
                classification: c.classification.clone(),
            })
            .collect(),
        created_at: doc.created_at,
        updated_at: doc.updated_at,
    }
}
