//! The document lifecycle: erasure (`DELETE /api/v1/tenants/{tenant_id}/documents/{doc_id}`, scope `ingest`),
//! replacement in place (`PUT` on the same path, scope `ingest`, multipart like the single upload) and export
//! (`GET …/documents/{doc_id}/export`, scope `query`). The rules live in
//! `frostbyte_core::service::lifecycle`; these handlers read the request, call it and shape the answer.
//!
//! Unknown documents, another tenant's documents and erased documents all answer the same 404.

use axum::extract::multipart::Multipart;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::documents::{DocumentStages, DocumentStatus, raw_blob_key};
use frostbyte_core::service::lifecycle::{DocumentExport, DocumentLifecycle, ErasureReceipt, NewContent};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::documents::{authorize, read_upload_form};
use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::Path;
use crate::intake::max_upload_bytes;

const TAG: &str = "documents";
/// Raw bytes up to this size are exported inline (base64); larger ones are exported as sha256 and size only.
pub const EXPORT_INLINE_RAW_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The lifecycle routes. The default body limit is lifted for the replacement, whose handler enforces the
/// tenant's `max_file_size_mb` while streaming, after authentication (as the upload route does).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(replace_document, erase_document))
        .layer(DefaultBodyLimit::disable())
        .routes(routes!(export_document))
}

fn lifecycle(ctx: &ApiContext) -> DocumentLifecycle {
    DocumentLifecycle::new(ctx.store.clone(), ctx.documents.clone(), ctx.index.clone(), ctx.blobs.clone())
}

/// `200` answer to an erasure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureAnswer {
    pub erasure_receipt: ErasureReceipt,
}

#[utoipa::path(
    delete, path = "/api/v1/tenants/{tenant_id}/documents/{doc_id}", tag = TAG,
    summary = "Erase a document from every store (GDPR right to erasure) and return a verified erasure receipt",
    description = "Removes the raw bytes (unless another live document of the tenant has identical content: \
                   `raw_retained`), the canonical and policed JSON of every version, the chunks with their vectors \
                   and keyword entries, and the document's jobs; re-reads every store to verify; keeps a tombstone \
                   (id, generation, time) and the audit trail (`DOCUMENT_ERASED`, `DOCUMENT_ERASURE_VERIFIED`: \
                   counts and hashes, no content). Afterwards the document answers 404 everywhere.",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("doc_id" = Uuid, Path, description = "Document id"),
    ),
    responses(
        (status = 200, description = "Erased and verified", body = Envelope<ErasureAnswer>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND: unknown, another tenant's, or already erased", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn erase_document(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, doc_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    let receipt = lifecycle(&ctx).erase(&tenant_id, doc_id, &principal.actor()).await?;
    tracing::info!(
        tenant = %tenant_id, doc_id = %doc_id, chunks = receipt.removed.chunks, raw = receipt.removed.raw,
        raw_retained = receipt.raw_retained, "document erased"
    );
    Ok(envelope::ok(ErasureAnswer { erasure_receipt: receipt }))
}

/// `202` answer to a replacement: the new receipt.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplaceReceipt {
    pub receipt_id: Uuid,
    /// Unchanged.
    pub doc_id: Uuid,
    /// The document's generation: 1 at upload, one more per replacement.
    pub generation: u64,
    /// `processing` until the new version is indexed; the previous chunks stay searchable until then.
    pub status: DocumentStatus,
    pub stages: DocumentStages,
    pub sha256: String,
    /// `skipped`: no malware scanner is configured.
    pub scan_result: String,
    pub original_filename: String,
    /// The sniffed type.
    pub mime_type: String,
    pub size_bytes: u64,
    pub storage_path: String,
}

#[utoipa::path(
    put, path = "/api/v1/tenants/{tenant_id}/documents/{doc_id}", tag = TAG,
    summary = "Replace a document's content in place (multipart: `file`, optional `metadata` and `collection`)",
    description = "The new content goes through the whole pipeline under the same doc id; the previous chunks \
                   stay searchable until the new ones are indexed and are then swapped out in one transaction. \
                   `metadata` and `collection` replace the stored values when sent and are kept otherwise. Jobs of \
                   a superseded version never overwrite a newer one; if the document is erased concurrently the \
                   erasure wins and this answers 404.",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("doc_id" = Uuid, Path, description = "Document id"),
    ),
    request_body(content_type = "multipart/form-data", description = "`file` (required), `metadata` (JSON object), `collection`"),
    responses(
        (status = 202, description = "Accepted: the new version is being processed", body = Envelope<ReplaceReceipt>),
        (status = 400, description = "VALIDATION_ERROR (details carry `UNSUPPORTED_FORMAT` for refused types)", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND: unknown, another tenant's, or erased", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT: replaced concurrently too often; retry", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: over the tenant's max_file_size_mb", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn replace_document(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, doc_id)): Path<(TenantId, Uuid)>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let tenant = authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    // Unknown and foreign ids answer 404 before any bytes are read or stored.
    let current =
        ctx.documents.get_document(&tenant_id, doc_id).await?.ok_or_else(|| ApiError::not_found("document"))?;
    let form = read_upload_form(&mut multipart, max_upload_bytes(&tenant.config)).await?;
    let (metadata, collection) = (form.metadata, form.collection);
    // The same checks as an upload (scan, type, schema, quotas); metadata left out keeps the current metadata,
    // which is what the schema is checked against then.
    let upload = crate::intake::Upload {
        bytes: form.bytes,
        sha256: form.sha256,
        filename: form.filename,
        declared_mime: form.declared_mime,
        metadata: metadata.clone().unwrap_or(current.metadata),
        collection: None,
    };
    let checked = crate::intake::Intake::from_state(&ctx)
        .check(&tenant_id, &tenant.config, &principal.actor().to_string(), &upload)
        .await
        .map_err(crate::http::routes::documents::intake_error)?;
    let crate::intake::Upload { bytes, sha256, filename, .. } = upload;
    let mime = checked.mime;
    let scan_result = checked.scan.result;
    let content =
        NewContent { bytes, sha256, original_filename: filename, mime_type: mime.to_owned(), metadata, collection };
    let lifecycle = lifecycle(&ctx);
    let (doc, generation) = lifecycle.replace(&tenant_id, doc_id, content, &principal.actor()).await?;
    tracing::info!(tenant = %tenant_id, doc_id = %doc_id, generation, mime = %doc.mime_type, "document replaced");
    Ok(envelope::accepted(ReplaceReceipt {
        receipt_id: doc.receipt_id,
        doc_id: doc.doc_id,
        generation,
        status: doc.status,
        stages: doc.stages,
        storage_path: raw_blob_key(&doc.raw_sha256),
        sha256: doc.raw_sha256,
        scan_result: scan_result.as_str().into(),
        original_filename: doc.original_filename,
        mime_type: doc.mime_type,
        size_bytes: doc.size_bytes,
    }))
}

/// The raw bytes in an export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedRaw {
    pub sha256: String,
    pub size_bytes: u64,
    /// Whether `content_base64` holds the bytes (they are exported inline up to 16 MiB).
    pub included: bool,
    /// Standard base64 with padding.
    pub content_base64: Option<String>,
}

/// The intake receipt in an export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedReceipt {
    pub receipt_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub storage_path: String,
    pub scan_result: String,
}

/// What the tenant supplied.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedSupplied {
    pub original_filename: String,
    /// The sniffed type.
    pub mime_type: String,
    pub size_bytes: u64,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub collection: Option<String>,
    pub raw: ExportedRaw,
    pub receipt: ExportedReceipt,
}

/// One indexed chunk in an export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedChunk {
    pub chunk_id: String,
    pub position: u32,
    pub text: String,
    pub start_char: u32,
    pub end_char: u32,
    pub page_start: Option<u32>,
    pub page_end: Option<u32>,
    pub heading_path: Vec<String>,
    pub kind: String,
    pub text_hash: String,
    /// Policy results: the document's classification and whether the chunk was held back (injection score).
    pub classification: Option<String>,
    pub quarantined: bool,
    pub embed_model: String,
    pub vector_dimension: usize,
    pub source_sha256: String,
}

/// What Frostbyte derived.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedDerived {
    pub status: DocumentStatus,
    pub stages: DocumentStages,
    pub error_code: Option<String>,
    /// `{parser_version, policy_version, classification, embed_model, chunks, ...}`.
    #[schema(value_type = Object)]
    pub lineage: Value,
    /// The canonical document (blocks, pages, offsets, stats) of the live version, once parsed.
    #[schema(value_type = Object)]
    pub canonical: Option<Value>,
    /// The document after policy (redacted text), once policed.
    #[schema(value_type = Object)]
    pub policed: Option<Value>,
    pub chunks: Vec<ExportedChunk>,
}

/// `GET …/documents/{doc_id}/export`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentExportView {
    pub doc_id: Uuid,
    pub generation: u64,
    pub exported_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub supplied: ExportedSupplied,
    pub derived: ExportedDerived,
}

fn export_view(export: DocumentExport) -> DocumentExportView {
    let DocumentExport { record, generation, raw, canonical, policed, chunks } = export;
    DocumentExportView {
        doc_id: record.doc_id,
        generation,
        exported_at: frostbyte_core::now(),
        created_at: record.created_at,
        updated_at: record.updated_at,
        supplied: ExportedSupplied {
            original_filename: record.original_filename,
            mime_type: record.mime_type,
            size_bytes: record.size_bytes,
            metadata: record.metadata,
            collection: record.collection,
            raw: ExportedRaw {
                sha256: record.raw_sha256.clone(),
                size_bytes: record.size_bytes,
                included: raw.is_some(),
                content_base64: raw.map(|b| base64::engine::general_purpose::STANDARD.encode(&b)),
            },
            receipt: ExportedReceipt {
                receipt_id: record.receipt_id,
                received_at: record.created_at,
                storage_path: raw_blob_key(&record.raw_sha256),
                scan_result: "skipped".into(),
            },
        },
        derived: ExportedDerived {
            status: record.status,
            stages: record.stages,
            error_code: record.error_code,
            lineage: Value::Object(record.lineage),
            canonical,
            policed,
            chunks: chunks
                .into_iter()
                .map(|c| ExportedChunk {
                    vector_dimension: c.vector.len(),
                    chunk_id: c.chunk_id,
                    position: c.position,
                    text: c.text,
                    start_char: c.start,
                    end_char: c.end,
                    page_start: c.page_start,
                    page_end: c.page_end,
                    heading_path: c.heading_path,
                    kind: c.kind,
                    text_hash: c.text_hash,
                    classification: c.classification,
                    quarantined: c.quarantined,
                    embed_model: c.embed_model,
                    source_sha256: c.source_sha256,
                })
                .collect(),
        },
    }
}

#[utoipa::path(
    get, path = "/api/v1/tenants/{tenant_id}/documents/{doc_id}/export", tag = TAG,
    summary = "Export everything the tenant supplied for a document and everything derived from it",
    description = "Supplied: filename, type, size, metadata, collection, the raw bytes (base64, up to 16 MiB; \
                   above that sha256 and size only) and the intake receipt. Derived: status, stages, lineage, the \
                   canonical and policed documents, and the chunks with text, offsets, policy results and embed \
                   model. Audited as `DOCUMENT_EXPORTED` (ids and counts).",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("doc_id" = Uuid, Path, description = "Document id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<DocumentExportView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND: unknown, another tenant's, or erased", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn export_document(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, doc_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Query).await?;
    let export = lifecycle(&ctx).export(&tenant_id, doc_id, EXPORT_INLINE_RAW_MAX_BYTES, &principal.actor()).await?;
    Ok(envelope::ok(export_view(export)))
}
