//! The dead-letter list: jobs that spent their retries, with the error code and message (never document text),
//! and the operator's two answers, retry (back to the queue with fresh attempts) and abandon. Tenant scope
//! `admin`, or the platform admin key.

use axum::extract::State;
use axum::response::Response;
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::queue::DlqEntry;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope, ListEnvelope};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Path, Query};

const TAG: &str = "dead letters";

async fn authorize(ctx: &ApiContext, principal: &Principal, tenant: &TenantId) -> Result<(), ApiError> {
    principal.authorize(tenant, Scope::Admin)?;
    if matches!(principal, Principal::Admin) && ctx.store.get_tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(())
}

/// Paging for the dead-letter list (most recently failed first).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// From 1 (default 1).
    pub page: Option<u32>,
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/v1/tenants/{tenant_id}/dlq", tag = TAG,
    summary = "List dead-lettered jobs (dead and abandoned), most recently failed first",
    params(("tenant_id" = String, Path, description = "Tenant id"), DlqQuery),
    responses(
        (status = 200, description = "OK", body = ListEnvelope<DlqEntry>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_dlq(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Query(q): Query<DlqQuery>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let page_req = envelope::page_request(q.page, q.limit, 20, 100)?;
    let page = ctx.queue.list_dead(&tenant_id, page_req).await?;
    Ok(envelope::list(page.map(|job| DlqEntry::from(&job)), page_req))
}

#[utoipa::path(
    post, path = "/api/v1/tenants/{tenant_id}/dlq/{dlq_entry_id}/retry", tag = TAG,
    summary = "Put a dead-lettered job back on the queue with fresh attempts",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("dlq_entry_id" = Uuid, Path, description = "Dead-letter entry id"),
    ),
    responses(
        (status = 200, description = "Queued again", body = Envelope<DlqEntry>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT: the job is not on the dead-letter list", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retry_dlq(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, entry_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let job = ctx.queue.retry_dead(&tenant_id, entry_id, &principal.actor().to_string()).await?;
    tracing::info!(tenant = %tenant_id, job = %job.job_id, stage = job.stage.as_str(), "dead-lettered job retried");
    Ok(envelope::ok(DlqEntry::from(&job)))
}

#[utoipa::path(
    post, path = "/api/v1/tenants/{tenant_id}/dlq/{dlq_entry_id}/abandon", tag = TAG,
    summary = "Give up on a dead-lettered job (kept on the list as abandoned)",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("dlq_entry_id" = Uuid, Path, description = "Dead-letter entry id"),
    ),
    responses(
        (status = 200, description = "Abandoned", body = Envelope<DlqEntry>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT: the job is not on the dead-letter list", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn abandon_dlq(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, entry_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let job = ctx.queue.abandon_dead(&tenant_id, entry_id, &principal.actor().to_string()).await?;
    tracing::info!(tenant = %tenant_id, job = %job.job_id, "dead-lettered job abandoned");
    Ok(envelope::ok(DlqEntry::from(&job)))
}
