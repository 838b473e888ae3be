//! Tenants and their API keys (platform admin key only): create, list, inspect, reconfigure, suspend, resume,
//! deprovision; create, list and revoke keys.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::auth::{ApiKeyRecord, Scope};
use frostbyte_core::service::tenants::{CreateKey, CreateTenant};
use frostbyte_core::tenant::{ConfigChange, Tenant, TenantConfig, TenantState, TenantUsage, Tier};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope, ListEnvelope};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};

const TAG: &str = "tenants";

/// A tenant with its configuration, lifecycle state and usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub tenant_id: String,
    pub tenant_name: String,
    pub contact_email: String,
    pub tier: Tier,
    pub state: TenantState,
    pub state_reason: Option<String>,
    pub config: TenantConfig,
    pub config_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `null` only in the response to a change, when the blob store could not be asked (the change happened).
    pub usage: Option<TenantUsage>,
}

impl TenantView {
    fn new(t: Tenant, usage: Option<TenantUsage>) -> Self {
        TenantView {
            tenant_id: t.tenant_id.to_string(),
            tenant_name: t.tenant_name,
            contact_email: t.contact_email,
            tier: t.tier,
            state: t.state,
            state_reason: t.state_reason,
            config: t.config,
            config_version: t.config_version,
            created_at: t.created_at,
            updated_at: t.updated_at,
            usage,
        }
    }
}

/// Usage: blob bytes from the blob store, indexed documents and chunks from the index. A deprovisioned tenant
/// stores nothing.
async fn usage(ctx: &ApiContext, tenant: &Tenant) -> Result<TenantUsage, ApiError> {
    if tenant.state == TenantState::Deprovisioned {
        return Ok(TenantUsage::default());
    }
    let storage_bytes = ctx.blobs.usage_bytes(&tenant.tenant_id).await?;
    // Counted from the index: documents that have chunks there, and those chunks.
    let counts = ctx.index.count(&tenant.tenant_id).await?;
    Ok(TenantUsage { documents_count: counts.documents, chunks_count: counts.chunks, storage_bytes })
}

async fn view(ctx: &ApiContext, tenant: Tenant) -> Result<TenantView, ApiError> {
    let usage = usage(ctx, &tenant).await?;
    Ok(TenantView::new(tenant, Some(usage)))
}

/// The view returned after a change: the change has happened, so a blob store that cannot report usage must
/// not turn the response into an error (a client would retry a change that succeeded).
async fn changed_view(ctx: &ApiContext, tenant: Tenant) -> TenantView {
    let usage = match usage(ctx, &tenant).await {
        Ok(u) => Some(u),
        Err(error) => {
            tracing::warn!(%error, tenant = %tenant.tenant_id, "usage unavailable for a change response");
            None
        }
    };
    TenantView::new(tenant, usage)
}

/// `POST /api/v1/admin/tenants` body. Missing text fields are reported together with every other problem.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// `^[a-z][a-z0-9-]{2,31}$`
    #[serde(default)]
    #[schema(required = true, example = "acme")]
    pub tenant_id: String,
    #[serde(default)]
    #[schema(required = true, example = "Acme Corp")]
    pub tenant_name: String,
    #[serde(default)]
    #[schema(required = true, example = "ops@acme.example")]
    pub contact_email: String,
    /// `free`, `standard` (default) or `enterprise`.
    pub tier: Option<String>,
    /// Partial config over the defaults.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

#[utoipa::path(
    post, path = "/api/v1/admin/tenants", tag = TAG,
    summary = "Create and provision a tenant",
    request_body = CreateTenantRequest,
    responses(
        (status = 201, description = "Created, ACTIVE, config_version 1", body = Envelope<TenantView>),
        (status = 400, description = "VALIDATION_ERROR, every problem listed", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 409, description = "TENANT_ALREADY_EXISTS", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_tenant(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Json(body): Json<CreateTenantRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    super::embeddings::check_embedding_model(&ctx, body.config.as_ref())?;
    let req = CreateTenant {
        tenant_id: body.tenant_id,
        tenant_name: body.tenant_name,
        contact_email: body.contact_email,
        tier: body.tier,
        config: body.config,
    };
    let tenant = ctx.tenants.create(req, &principal.actor()).await?;
    tracing::info!(tenant = %tenant.tenant_id, "tenant created");
    Ok(envelope::created(changed_view(&ctx, tenant).await))
}

/// Filters and paging for the tenant list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// Only tenants in this state (`ACTIVE`, `SUSPENDED`, ...).
    pub state: Option<String>,
    /// From 1 (default 1).
    pub page: Option<u32>,
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/v1/admin/tenants", tag = TAG,
    summary = "List tenants with usage",
    params(TenantListQuery),
    responses(
        (status = 200, description = "OK", body = ListEnvelope<TenantView>),
        (status = 400, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_tenants(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Query(q): Query<TenantListQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TenantState::parse(s).ok_or_else(|| {
            let names: Vec<&str> = TenantState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid_field("state", s, format!("one of {}", names.join(", ")))
        })?),
    };
    let page_req = envelope::page_request(q.page, q.limit, 20, 100)?;
    let page = ctx.tenants.list(state, page_req).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for t in page.items {
        items.push(view(&ctx, t).await?);
    }
    Ok(envelope::list(frostbyte_core::page::Page { items, total: page.total }, page_req))
}

#[utoipa::path(
    get, path = "/api/v1/admin/tenants/{tenant_id}", tag = TAG,
    summary = "Get a tenant: config, state and usage",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "OK", body = Envelope<TenantView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_tenant(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let tenant = ctx.tenants.get(&tenant_id).await?;
    Ok(envelope::ok(view(&ctx, tenant).await?))
}

/// `PATCH /api/v1/admin/tenants/{tenant_id}` body: a partial config, merged over the current one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantRequest {
    #[schema(value_type = Object)]
    pub config: Value,
}

/// The result of a config update.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatchTenantResponse {
    pub tenant: TenantView,
    pub config_version: i64,
    /// Every changed leaf; empty (and the version unchanged) when nothing changed.
    pub changes: Vec<ConfigChange>,
}

#[utoipa::path(
    patch, path = "/api/v1/admin/tenants/{tenant_id}", tag = TAG,
    summary = "Update a tenant's config (partial merge)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = PatchTenantRequest,
    responses(
        (status = 200, description = "OK", body = Envelope<PatchTenantResponse>),
        (status = 400, description = "VALIDATION_ERROR, every problem listed", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn patch_tenant(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<PatchTenantRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    super::embeddings::check_embedding_model(&ctx, Some(&body.config))?;
    let (tenant, changes) =
        ctx.tenants.update_config(&tenant_id, &body.config, &principal.actor()).await.map_err(|e| {
            let mut e = ApiError::from(e);
            // Field names are relative to the config; the client sent them under `config`.
            for d in &mut e.details {
                if !d.field.starts_with("config") {
                    d.field = format!("config.{}", d.field);
                }
            }
            e
        })?;
    tracing::info!(
        tenant = %tenant_id,
        version = tenant.config_version,
        changed = changes.len(),
        "tenant config updated"
    );
    let config_version = tenant.config_version;
    Ok(envelope::ok(PatchTenantResponse { tenant: changed_view(&ctx, tenant).await, config_version, changes }))
}

/// Why a tenant is being suspended or resumed (recorded in the audit log).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: Option<String>,
}

#[utoipa::path(
    post, path = "/api/v1/admin/tenants/{tenant_id}/suspend", tag = TAG,
    summary = "Suspend a tenant: its credentials get 403 TENANT_SUSPENDED from the next request on",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "OK", body = Envelope<TenantView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "INVALID_STATE_TRANSITION", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn suspend_tenant(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<ReasonRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let tenant = ctx.tenants.suspend(&tenant_id, body.reason.as_deref(), &principal.actor()).await?;
    tracing::info!(tenant = %tenant_id, "tenant suspended");
    Ok(envelope::ok(changed_view(&ctx, tenant).await))
}

#[utoipa::path(
    post, path = "/api/v1/admin/tenants/{tenant_id}/resume", tag = TAG,
    summary = "Resume a suspended tenant",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "OK", body = Envelope<TenantView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "INVALID_STATE_TRANSITION", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume_tenant(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<ReasonRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let tenant = ctx.tenants.resume(&tenant_id, body.reason.as_deref(), &principal.actor()).await?;
    tracing::info!(tenant = %tenant_id, "tenant resumed");
    Ok(envelope::ok(changed_view(&ctx, tenant).await))
}

/// `POST .../deprovision` body: the confirmation guards against erasing the wrong tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprovisionRequest {
    pub reason: Option<String>,
    /// Must be `true`.
    #[serde(default)]
    #[schema(required = true)]
    pub confirm: bool,
    /// Must equal the tenant id in the path.
    #[serde(default)]
    #[schema(required = true)]
    pub confirm_tenant_id: String,
}

#[utoipa::path(
    post, path = "/api/v1/admin/tenants/{tenant_id}/deprovision", tag = TAG,
    summary = "Deprovision a tenant: erase its data and credentials, keep a tombstone and the audit chain",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = DeprovisionRequest,
    responses(
        (status = 202, description = "DEPROVISIONING; erasure continues in the background",
            body = Envelope<TenantView>),
        (status = 400, description = "CONFIRMATION_MISMATCH", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "INVALID_STATE_TRANSITION", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn deprovision_tenant(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<DeprovisionRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let tenant = ctx
        .tenants
        .begin_deprovision(
            &tenant_id,
            body.reason.as_deref(),
            body.confirm,
            &body.confirm_tenant_id,
            &principal.actor(),
        )
        .await?;
    tracing::info!(tenant = %tenant_id, "tenant deprovisioning started");
    let service = ctx.tenants.clone();
    let id = tenant_id.clone();
    tokio::spawn(async move {
        match service.complete_deprovision(&id).await {
            Ok(_) => tracing::info!(tenant = %id, "tenant deprovisioned"),
            Err(error) => tracing::error!(%error, tenant = %id, "tenant deprovisioning failed; re-run it"),
        }
    });
    Ok(envelope::accepted(changed_view(&ctx, tenant).await))
}

// --- keys --------------------------------------------------------------------------------------------------

/// A key as listed: never the secret or its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub key_id: Uuid,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        let status = match k.check_usable(frostbyte_core::now()) {
            Ok(()) => "active",
            Err(frostbyte_core::auth::KeyUnusable::Revoked) => "revoked",
            Err(frostbyte_core::auth::KeyUnusable::Expired) => "expired",
        };
        KeyView {
            key_id: k.key_id,
            tenant_id: k.tenant_id.to_string(),
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            status,
        }
    }
}

/// `POST .../keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[serde(default)]
    #[schema(required = true, example = "ingest-bot")]
    pub name: String,
    /// Any of `ingest`, `query`, `audit`, `admin`.
    #[serde(default)]
    #[schema(required = true, example = json!(["ingest", "query"]))]
    pub scopes: Vec<String>,
    /// Optional expiry (RFC 3339, in the future).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new key. `api_key` is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyView {
    pub key_id: Uuid,
    pub api_key: String,
    pub tenant_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post, path = "/api/v1/admin/tenants/{tenant_id}/keys", tag = TAG,
    summary = "Create an API key (the secret is shown once)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Created", body = Envelope<CreatedKeyView>),
        (status = 400, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_key(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let req = CreateKey { name: body.name, scopes: body.scopes, expires_at: body.expires_at };
    let created = ctx.tenants.create_key(&tenant_id, req, &principal.actor()).await?;
    let k = created.record;
    tracing::info!(tenant = %tenant_id, key_id = %k.key_id, "api key created");
    Ok(envelope::created(CreatedKeyView {
        key_id: k.key_id,
        api_key: created.api_key,
        tenant_id: k.tenant_id.to_string(),
        name: k.name,
        scopes: k.scopes,
        prefix: k.prefix,
        created_at: k.created_at,
        expires_at: k.expires_at,
    }))
}

#[utoipa::path(
    get, path = "/api/v1/admin/tenants/{tenant_id}/keys", tag = TAG,
    summary = "List a tenant's API keys (no secrets)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "OK", body = Envelope<Vec<KeyView>>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_keys(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let keys = ctx.tenants.list_keys(&tenant_id).await?;
    Ok(envelope::ok(keys.into_iter().map(KeyView::from).collect::<Vec<_>>()))
}

#[utoipa::path(
    delete, path = "/api/v1/admin/tenants/{tenant_id}/keys/{key_id}", tag = TAG,
    summary = "Revoke an API key (and every token issued from it), effective immediately",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("key_id" = Uuid, Path, description = "Key id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<KeyView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS: not the platform admin key", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke_key(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, key_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let record = ctx.tenants.revoke_key(&tenant_id, key_id, &principal.actor()).await?;
    tracing::info!(tenant = %tenant_id, %key_id, "api key revoked");
    Ok(envelope::ok(KeyView::from(record)))
}
