//! Single-document intake and the document view: `POST /api/v1/ingest/{tenant_id}/documents` (scope `ingest`),
//! `GET /api/v1/ingest/{tenant_id}/receipt/{receipt_id}` (scope `ingest`) and
//! `GET /api/v1/query/{tenant_id}/document/{doc_id}` (scope `query`).
//!
//! The upload is streamed: the `file` part is hashed and counted as it arrives and refused with 413 the moment it
//! passes the tenant's `max_file_size_mb` (the router's default body limit is lifted for this route only, see
//! [`upload_routes`]). Everything after the bytes are in is `crate::intake`.

use axum::extract::multipart::{Field, Multipart, MultipartError};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus, PipelineStage, raw_blob_key};
use frostbyte_core::index::IndexedChunk;
use frostbyte_core::tenant::{FieldViolation, Tenant};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorEnvelope};
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

/// The tenant, checked: the caller may act on it with `scope`, and it exists.
pub(crate) async fn authorize(
    ctx: &ApiContext,
    principal: &Principal,
    tenant: &TenantId,
    scope: Scope,
) -> Result<Tenant, ApiError> {
    principal.authorize(tenant, scope)?;
    if let Principal::Tenant(cred) = principal {
        return Ok(cred.tenant.clone());
    }
    let t = ctx.store.get_tenant(tenant).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    crate::http::auth::check_tenant_usable(&t)?;
    Ok(t)
}

/// `202` answer to an upload: the receipt.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestReceipt {
    pub receipt_id: Uuid,
    pub doc_id: Uuid,
    /// `processing` until the pipeline finishes.
    pub status: DocumentStatus,
    pub sha256: String,
    /// `skipped`: no malware scanner is configured.
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
    /// Always `null` for single uploads.
    pub batch_id: Option<String>,
    pub file_id: Option<String>,
    pub doc_id: Uuid,
    pub original_filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub scan_result: String,
    pub received_at: DateTime<Utc>,
    pub storage_path: String,
    pub status: DocumentStatus,
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

#[utoipa::path(
    post, path = "/api/v1/ingest/{tenant_id}/documents", tag = TAG,
    summary = "Upload one document (multipart: `file`, optional `metadata` JSON object and `collection`)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body(content_type = "multipart/form-data", description = "`file` (required), `metadata` (JSON object), `collection`"),
    responses(
        (status = 202, description = "Accepted: the receipt; processing continues in the background", body = Envelope<IngestReceipt>),
        (status = 400, description = "VALIDATION_ERROR (details carry `UNSUPPORTED_FORMAT` for refused types)", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: over the tenant's max_file_size_mb", body = ErrorEnvelope),
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
    let mut file: Option<(UploadBuffer, String, Option<String>)> = None;
    let mut metadata = Value::Object(serde_json::Map::new());
    let mut collection = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") if file.is_none() => {
                let filename: String = field.file_name().unwrap_or("upload").chars().take(MAX_FILENAME_CHARS).collect();
                let declared = field.content_type().map(str::to_owned);
                let buf = read_limited(field, UploadBuffer::new(max_upload_bytes(&tenant.config))).await?;
                file = Some((buf, filename, declared));
            }
            Some("metadata") => {
                let buf = read_limited(field, UploadBuffer::new(MAX_METADATA_BYTES as u64)).await?;
                let (bytes, _) = buf.finish();
                metadata = match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => return Err(ApiError::invalid_field("metadata", Value::Null, "a JSON object")),
                };
            }
            Some("collection") => {
                let buf = read_limited(field, UploadBuffer::new(256)).await?;
                let (bytes, _) = buf.finish();
                let c = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::invalid_field("collection", Value::Null, "UTF-8 text"))?;
                collection = Some(c.trim().to_owned()).filter(|c| !c.is_empty());
            }
            // Unknown parts are drained and ignored.
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
    let intake = Intake { documents: ctx.documents.clone(), blobs: ctx.blobs.clone() };
    let upload = Upload { bytes, sha256, filename, declared_mime, metadata, collection };
    let doc =
        intake.accept(&tenant_id, &tenant.config, &principal.actor().to_string(), upload).await.map_err(
            |e| match e {
                IntakeError::UnsupportedFormat { sniffed } => ApiError::validation(
                    "the file's type is not accepted for this tenant (UNSUPPORTED_FORMAT)",
                    vec![FieldViolation::new(
                        "file",
                        sniffed.map_or(Value::Null, Value::from),
                        "UNSUPPORTED_FORMAT: a type in the tenant's mime_allowlist that has a parser",
                    )],
                ),
                IntakeError::Store(e) => e.into(),
                IntakeError::Blob(e) => e.into(),
            },
        )?;
    Ok(envelope::accepted(IngestReceipt {
        receipt_id: doc.receipt_id,
        doc_id: doc.doc_id,
        status: doc.status,
        sha256: doc.raw_sha256,
        scan_result: "skipped".into(),
        original_filename: doc.original_filename,
        mime_type: doc.mime_type,
        size_bytes: doc.size_bytes,
    }))
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
    let doc =
        ctx.documents.get_by_receipt(&tenant_id, receipt_id).await?.ok_or_else(|| ApiError::not_found("receipt"))?;
    Ok(envelope::ok(receipt_view(doc)))
}

fn receipt_view(doc: DocumentRecord) -> ReceiptView {
    ReceiptView {
        receipt_id: doc.receipt_id,
        batch_id: None,
        file_id: None,
        doc_id: doc.doc_id,
        storage_path: raw_blob_key(&doc.raw_sha256),
        original_filename: doc.original_filename,
        mime_type: doc.mime_type,
        size_bytes: doc.size_bytes,
        sha256: doc.raw_sha256,
        scan_result: "skipped".into(),
        received_at: doc.created_at,
        status: doc.status,
        stages: doc.stages,
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
