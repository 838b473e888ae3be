//! The audit plane (scope `audit`): list and read events, follow one resource's events, verify the tenant's hash
//! chain, and export a signed-off range as JSON Lines.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::{AuditEvent, AuditFilter, ChainBreak, verify_each};
use frostbyte_core::auth::Scope;
use frostbyte_core::page::PageRequest;
use frostbyte_core::service::audit::{ExportManifest, VerifyReport, export_jsonl, verify_chain};
use frostbyte_core::{TenantId, parse_date_bound};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope, ListEnvelope};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};

const TAG: &str = "audit";
const DATE_CONSTRAINT: &str = "an RFC 3339 timestamp or a YYYY-MM-DD date";

/// Authorises the caller for the tenant's audit plane. For the admin key the tenant must exist (a tenant
/// credential's tenant was loaded when it authenticated).
async fn authorize(ctx: &ApiContext, principal: &Principal, tenant: &TenantId) -> Result<(), ApiError> {
    principal.authorize(tenant, Scope::Audit)?;
    if matches!(principal, Principal::Admin) && ctx.store.get_tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(())
}

fn date_bound(field: &str, value: Option<&str>, end_of_day: bool) -> Result<Option<DateTime<Utc>>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(s) => {
            parse_date_bound(s, end_of_day).map(Some).ok_or_else(|| ApiError::invalid_field(field, s, DATE_CONSTRAINT))
        }
    }
}

fn check_order(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(ApiError::invalid_field("end_date", e.to_rfc3339(), "not before start_date"));
    }
    Ok(())
}

/// Filters and paging for the event list (newest first).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// Only this event type (`TENANT_CREATED`, ...).
    pub event_type: Option<String>,
    /// Only events about this resource.
    pub resource_id: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD` (start of that day, UTC).
    pub start_date: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD` (the whole of that day, UTC).
    pub end_date: Option<String>,
    /// From 1 (default 1).
    pub page: Option<u32>,
    /// 1 to 500 (default 50).
    pub limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/v1/audit/{tenant_id}/events", tag = TAG,
    summary = "List audit events, newest first",
    params(("tenant_id" = String, Path, description = "Tenant id"), AuditListQuery),
    responses(
        (status = 200, description = "OK", body = ListEnvelope<AuditEvent>),
        (status = 400, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 429, description = "RATE_LIMIT_EXCEEDED (with Retry-After)", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_events(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Query(q): Query<AuditListQuery>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let start = date_bound("start_date", q.start_date.as_deref(), false)?;
    let end = date_bound("end_date", q.end_date.as_deref(), true)?;
    check_order(start, end)?;
    let page_req = envelope::page_request(q.page, q.limit, 50, 500)?;
    let filter = AuditFilter {
        event_type: q.event_type.filter(|s| !s.is_empty()),
        resource_id: q.resource_id.filter(|s| !s.is_empty()),
        start,
        end,
    };
    let page = ctx.store.list_audit(&tenant_id, &filter, page_req).await?;
    Ok(envelope::list(page, page_req))
}

#[utoipa::path(
    get, path = "/api/v1/audit/{tenant_id}/events/{event_id}", tag = TAG,
    summary = "Get one audit event with its prev_hash and hash",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("event_id" = Uuid, Path, description = "Event id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<AuditEvent>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_event(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, event_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let event = ctx.store.get_audit(&tenant_id, event_id).await?.ok_or_else(|| ApiError::not_found("audit event"))?;
    Ok(envelope::ok(event))
}

/// One resource's events, oldest first, and whether they (and the tenant chain they sit in) are intact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceChain {
    pub resource_id: String,
    pub events: Vec<AuditEvent>,
    /// True when each of the resource's events matches its hash and the tenant's whole chain links up (a deleted
    /// event of this resource shows up as a gap in the whole chain, not among the remaining events).
    pub hash_chain_valid: bool,
    /// Breaks among the resource's events, plus the first break of the tenant's chain if it is elsewhere, in
    /// chain order.
    pub breaks: Vec<ChainBreak>,
    /// Whether the tenant's whole chain verifies.
    pub tenant_chain_valid: bool,
}

#[utoipa::path(
    get, path = "/api/v1/audit/{tenant_id}/chain/{resource_id}", tag = TAG,
    summary = "A resource's events in order, with hash-chain verification",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("resource_id" = String, Path, description = "Resource id (a tenant id, key id, document id, ...)"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<ResourceChain>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resource_chain(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, resource_id)): Path<(TenantId, String)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let filter = AuditFilter { resource_id: Some(resource_id.clone()), ..AuditFilter::default() };
    let mut events = Vec::new();
    let mut page = 1;
    loop {
        let req = PageRequest::new(page, 500);
        let batch = ctx.store.list_audit(&tenant_id, &filter, req).await?;
        let done = batch.items.is_empty() || u64::from(page) * 500 >= batch.total;
        events.extend(batch.items);
        if done {
            break;
        }
        page += 1;
    }
    if events.is_empty() {
        return Err(ApiError::not_found("resource"));
    }
    events.sort_by_key(|e| e.seq);
    let whole = verify_chain(ctx.store.as_ref(), &tenant_id).await?;
    let mut breaks = verify_each(&events);
    if let Some(b) = whole.first_break
        && !breaks.iter().any(|x| x.seq == b.seq && x.kind == b.kind)
    {
        breaks.push(b);
    }
    breaks.sort_by_key(|b| b.seq);
    Ok(envelope::ok(ResourceChain {
        resource_id,
        events,
        hash_chain_valid: breaks.is_empty() && whole.valid,
        breaks,
        tenant_chain_valid: whole.valid,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/audit/{tenant_id}/verify", tag = TAG,
    summary = "Verify the tenant's whole audit hash chain",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "`valid`, `events_checked`, `first_break` when broken",
            body = Envelope<VerifyReport>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn verify(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let report = verify_chain(ctx.store.as_ref(), &tenant_id).await?;
    if !report.valid {
        tracing::warn!(tenant = %tenant_id, first_break = ?report.first_break, "audit chain verification failed");
    }
    Ok(envelope::ok(report))
}

/// `POST .../export` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// RFC 3339 or `YYYY-MM-DD` (inclusive).
    pub start_date: String,
    /// RFC 3339 or `YYYY-MM-DD` (inclusive: the whole day).
    pub end_date: String,
    /// Only these event types.
    pub event_types: Option<Vec<String>>,
}

/// The export: the JSON Lines file and its manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportResponse {
    pub manifest: ExportManifest,
    /// The file: one event per line; `manifest.file_sha256` is the SHA-256 of exactly these bytes.
    pub jsonl: String,
}

#[utoipa::path(
    post, path = "/api/v1/audit/{tenant_id}/export", tag = TAG,
    summary = "Export a date range as JSON Lines with a manifest",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = ExportRequest,
    responses(
        (status = 200, description = "OK", body = Envelope<ExportResponse>),
        (status = 400, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn export(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<ExportRequest>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let start = parse_date_bound(&body.start_date, false);
    let end = parse_date_bound(&body.end_date, true);
    let mut details = Vec::new();
    if start.is_none() {
        details.push(frostbyte_core::tenant::FieldViolation::new(
            "start_date",
            body.start_date.as_str(),
            DATE_CONSTRAINT,
        ));
    }
    if end.is_none() {
        details.push(frostbyte_core::tenant::FieldViolation::new("end_date", body.end_date.as_str(), DATE_CONSTRAINT));
    }
    let (Some(start), Some(end)) = (start, end) else {
        return Err(ApiError::validation(format!("start_date and end_date must be {DATE_CONSTRAINT}"), details));
    };
    check_order(Some(start), Some(end))?;
    let types = body.event_types.filter(|t| !t.is_empty());
    let actor = principal.actor().to_string();
    // Builds the file and records the export (AUDIT_EXPORTED) in the tenant's chain.
    let (jsonl, manifest) = export_jsonl(ctx.store.as_ref(), &tenant_id, start, end, types.as_deref(), &actor).await?;
    tracing::info!(tenant = %tenant_id, events = manifest.event_count, "audit exported");
    Ok(envelope::ok(ExportResponse { manifest, jsonl }))
}
