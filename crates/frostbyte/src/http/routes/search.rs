//! Search and the read side of documents (scope `query`): `POST /api/v1/query/{tenant_id}/search`,
//! `GET /api/v1/query/{tenant_id}/chunk/{chunk_id}` and `GET /api/v1/tenants/{tenant_id}/documents`.
//!
//! The handlers are thin: the request is validated and run by
//! [`SearchService`](frostbyte_core::service::search::SearchService), which audits `RETRIEVAL_EXECUTED`.
//! Another tenant's chunk or document is a plain 404.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus, PipelineStage};
use frostbyte_core::service::search::{SearchError, SearchHit, SearchMode, SearchService, parse_request};
use frostbyte_core::tenant::FieldViolation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope, ListEnvelope};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};

const TAG: &str = "search";
/// Characters of a chunk id or collection name accepted in a path or query (longer ones name nothing).
const MAX_ID_CHARS: usize = 256;

use crate::http::auth::authorize_tenant as authorize;

/// `POST …/search` body. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body; the handler validates the JSON itself to report every problem
pub struct SearchBody {
    /// 1 to 10,000 characters.
    pub query_text: String,
    /// Default and maximum from the tenant's config (`retrieval_top_k_default`, `retrieval_top_k_max`).
    pub top_k: Option<u32>,
    /// `hybrid` (default), `vector` or `keyword`.
    pub mode: Option<SearchMode>,
    /// Only chunks of documents in this collection.
    pub collection: Option<String>,
    pub filters: Option<SearchFilters>,
}

/// Search filters; every present one must match.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SearchFilters {
    /// One classification or a list (any of them).
    #[schema(value_type = Vec<String>)]
    pub classification: Option<Value>,
    pub doc_ids: Option<Vec<String>>,
    /// Ingestion time, inclusive: RFC 3339 timestamps or `YYYY-MM-DD` dates (an end date covers its whole day).
    pub date_range: Option<DateRange>,
    /// Top-level keys of the document metadata, each equal to this value.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// The same as the body's `collection`.
    pub collection: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct DateRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// One hit with its provenance.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchChunk {
    pub chunk_id: String,
    pub doc_id: String,
    pub original_filename: String,
    pub text: String,
    /// The first page the chunk is on, for paged formats.
    pub page: Option<u32>,
    pub page_end: Option<u32>,
    /// Character range in the document's text.
    pub start_char: u32,
    pub end_char: u32,
    /// Higher is better; cosine for `vector`, BM25 for `keyword`, fused RRF score for `hybrid`.
    pub score: f64,
    pub classification: Option<String>,
    pub collection: Option<String>,
    pub heading_path: Vec<String>,
    pub embed_model: String,
    pub source_sha256: String,
    pub ingested_at: DateTime<Utc>,
}

/// `POST …/search` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub query_id: Uuid,
    pub mode: SearchMode,
    pub chunks: Vec<SearchChunk>,
    /// False when a returned chunk was embedded by another model than the query embedder (`query_embed_model`).
    pub model_version_match: bool,
    pub query_embed_model: String,
}

fn search_chunk(hit: SearchHit) -> SearchChunk {
    let c = hit.chunk;
    SearchChunk {
        chunk_id: c.chunk_id,
        doc_id: c.doc_id,
        original_filename: c.original_filename,
        text: c.text,
        page: c.page_start,
        page_end: c.page_end,
        start_char: c.start,
        end_char: c.end,
        score: hit.score,
        classification: c.classification,
        collection: c.collection,
        heading_path: c.heading_path,
        embed_model: c.embed_model,
        source_sha256: c.source_sha256,
        ingested_at: c.ingested_at,
    }
}

/// The search use-case over this process's ports, embedding queries with the tenant's `embedding_model` (the
/// embedder its documents were indexed with; an unconfigured one falls back to the default, and
/// `model_version_match` then says the vectors are not comparable).
pub fn search_service(ctx: &ApiContext, config: &frostbyte_core::tenant::TenantConfig) -> SearchService {
    SearchService {
        index: ctx.index.clone(),
        store: ctx.store.clone(),
        embedder: ctx.embedders.get(&config.embedding_model).unwrap_or_else(|| ctx.embedders.default_embedder()),
        fusion: ctx.settings.fusion,
    }
}

#[utoipa::path(
    post, path = "/api/v1/query/{tenant_id}/search", tag = TAG,
    summary = "Search the tenant's chunks: hybrid (default), vector or keyword, with filters applied inside the search",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = SearchBody,
    responses(
        (status = 200, description = "Ranked chunks with provenance (none for an empty tenant)", body = Envelope<SearchResult>),
        (status = 400, description = "VALIDATION_ERROR: query_text, top_k over the tenant's max, mode or filters", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let tenant = authorize(&ctx, &principal, &tenant_id, Scope::Query).await?;
    let query = parse_request(&body, &tenant.config)
        .map_err(|details| ApiError::validation("the search request is invalid", details))?;
    let outcome = search_service(&ctx, &tenant.config)
        .search(&tenant_id, &query, &principal.actor().to_string())
        .await
        .map_err(|e| match e {
            SearchError::Store(e) => ApiError::from(e),
            SearchError::Embed(e) if e.is_retryable() => ApiError::unavailable("the query embedder is unavailable"),
            SearchError::Embed(e) => ApiError::internal(&e),
        })?;
    tracing::info!(
        tenant = %tenant_id, query_id = %outcome.query_id, mode = outcome.mode.as_str(), top_k = query.top_k,
        results = outcome.hits.len(), "search executed"
    );
    Ok(envelope::ok(SearchResult {
        query_id: outcome.query_id,
        mode: outcome.mode,
        model_version_match: outcome.model_version_match,
        query_embed_model: outcome.query_model,
        chunks: outcome.hits.into_iter().map(search_chunk).collect(),
    }))
}

/// `GET …/chunk/{chunk_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkView {
    pub chunk_id: String,
    pub doc_id: String,
    pub position: u32,
    /// `null` when the chunk is quarantined: held back by policy, it is shown to no one.
    pub text: Option<String>,
    pub kind: String,
    pub page: Option<u32>,
    pub page_end: Option<u32>,
    pub start_char: u32,
    pub end_char: u32,
    pub heading_path: Vec<String>,
    pub text_hash: String,
    pub collection: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// `{quarantined, classification, policy_version}`.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// `{raw_sha256, original_filename, parser_version, policy_version, embed_model, ingested_at}`.
    #[schema(value_type = Object)]
    pub lineage: Value,
}

#[utoipa::path(
    get, path = "/api/v1/query/{tenant_id}/chunk/{chunk_id}", tag = TAG,
    summary = "One chunk: text, page, offsets, policy results and lineage",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("chunk_id" = String, Path, description = "Chunk id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<ChunkView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_chunk(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, chunk_id)): Path<(TenantId, String)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Query).await?;
    if chunk_id.is_empty() || chunk_id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::not_found("chunk"));
    }
    let chunk = ctx.index.get_chunk(&tenant_id, &chunk_id).await?.ok_or_else(|| ApiError::not_found("chunk"))?;
    let doc = match Uuid::parse_str(&chunk.doc_id) {
        Ok(id) => ctx.documents.get_document(&tenant_id, id).await?,
        Err(_) => None,
    };
    let lineage_of = |key: &str| doc.as_ref().and_then(|d| d.lineage.get(key).cloned()).unwrap_or(Value::Null);
    Ok(envelope::ok(ChunkView {
        policy: json!({
            "quarantined": chunk.quarantined,
            "classification": chunk.classification,
            "policy_version": lineage_of("policy_version"),
        }),
        lineage: json!({
            "raw_sha256": chunk.source_sha256,
            "original_filename": chunk.original_filename,
            "parser_version": lineage_of("parser_version"),
            "policy_version": lineage_of("policy_version"),
            "embed_model": chunk.embed_model,
            "ingested_at": chunk.ingested_at,
        }),
        text: (!chunk.quarantined).then_some(chunk.text),
        chunk_id: chunk.chunk_id,
        doc_id: chunk.doc_id,
        position: chunk.position,
        kind: chunk.kind,
        page: chunk.page_start,
        page_end: chunk.page_end,
        start_char: chunk.start,
        end_char: chunk.end,
        heading_path: chunk.heading_path,
        text_hash: chunk.text_hash,
        collection: chunk.collection,
        metadata: chunk.metadata,
    }))
}

/// Filters and paging for the document list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DocumentListQuery {
    /// `processing`, `indexed`, `quarantined` or `failed`.
    pub status: Option<String>,
    pub collection: Option<String>,
    /// From 1 (default 1).
    pub page: Option<u32>,
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
}

/// One document in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentListItem {
    pub doc_id: Uuid,
    pub receipt_id: Uuid,
    pub original_filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub collection: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub status: DocumentStatus,
    pub stages: DocumentStages,
    pub current_stage: Option<PipelineStage>,
    pub error_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn list_item(d: DocumentRecord) -> DocumentListItem {
    DocumentListItem {
        doc_id: d.doc_id,
        receipt_id: d.receipt_id,
        original_filename: d.original_filename,
        mime_type: d.mime_type,
        size_bytes: d.size_bytes,
        sha256: d.raw_sha256,
        collection: d.collection,
        metadata: d.metadata,
        status: d.status,
        current_stage: d.stages.current(),
        stages: d.stages,
        error_code: d.error_code,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

#[utoipa::path(
    get, path = "/api/v1/tenants/{tenant_id}/documents", tag = TAG,
    summary = "List the tenant's documents, newest first, by status and collection",
    params(("tenant_id" = String, Path, description = "Tenant id"), DocumentListQuery),
    responses(
        (status = 200, description = "OK", body = ListEnvelope<DocumentListItem>),
        (status = 400, description = "VALIDATION_ERROR: unknown status, bad paging", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_documents(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Query(q): Query<DocumentListQuery>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Query).await?;
    let mut details = Vec::new();
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match DocumentStatus::parse(s) {
            Some(st) => Some(st),
            None => {
                details.push(FieldViolation::new("status", s, "one of processing, indexed, quarantined, failed"));
                None
            }
        },
    };
    let collection = q.collection.as_deref().filter(|c| !c.is_empty());
    if collection.is_some_and(|c| c.chars().count() > MAX_ID_CHARS) {
        details.push(FieldViolation::new("collection", Value::Null, "at most 256 characters"));
    }
    if !details.is_empty() {
        return Err(ApiError::validation("the document list query is invalid", details));
    }
    let page_req = envelope::page_request(q.page, q.limit, 20, 100)?;
    let page = ctx.documents.list_documents(&tenant_id, status, collection, page_req).await?;
    Ok(envelope::list(page.map(list_item), page_req))
}
