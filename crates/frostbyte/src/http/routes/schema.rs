//! The tenant's metadata schema: `PUT / GET / PATCH /api/v1/tenants/{tenant_id}/schema`.
//!
//! A JSON Schema that every upload's custom metadata must satisfy (single uploads answer 422
//! `SCHEMA_VIOLATION`; batch files are rejected one by one). `PUT` replaces it, `PATCH` merges into it
//! (`properties` key by key, `required` unioned, other keywords replaced; sibling properties are kept). Each
//! change is checked first (a JSON object describing an object, valid against its meta-schema, compilable: 400
//! lists every problem), stored as the next version with a compare-and-set on the previous one, and audited as
//! `SCHEMA_UPDATED` in the same transaction. Changing it needs scope `admin` (or the platform admin key);
//! reading it, `admin` or `ingest`.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::auth::Scope;
use frostbyte_core::batch::{MetadataSchema, merge_schema};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::documents::authorize;
use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorCode, ErrorEnvelope};
use crate::http::extract::{Json, Path};
use crate::metadata_schema;

const TAG: &str = "tenants";

/// The stored schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaView {
    pub tenant_id: String,
    /// 1 for the first schema, +1 on every change.
    pub version: i64,
    #[schema(value_type = Object)]
    pub schema: Value,
    pub updated_at: DateTime<Utc>,
}

fn view(tenant: &TenantId, s: MetadataSchema) -> SchemaView {
    SchemaView { tenant_id: tenant.to_string(), version: s.version, schema: s.schema, updated_at: s.updated_at }
}

/// Reading: `admin` or `ingest` (uploaders need to see what their metadata must satisfy).
async fn authorize_read(ctx: &ApiContext, principal: &Principal, tenant: &TenantId) -> Result<(), ApiError> {
    match authorize(ctx, principal, tenant, Scope::Admin).await {
        Err(e) if e.code == ErrorCode::InsufficientPermissions => {
            authorize(ctx, principal, tenant, Scope::Ingest).await.map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

fn invalid_schema(problems: Vec<frostbyte_core::tenant::FieldViolation>) -> ApiError {
    ApiError::validation(
        format!("the schema is not a usable metadata schema: {} problem(s), see details", problems.len()),
        problems,
    )
}

/// Checks and stores `schema` as the version after `current`, audited.
async fn store(
    ctx: &ApiContext,
    principal: &Principal,
    tenant: &TenantId,
    schema: Value,
    current: Option<&MetadataSchema>,
    operation: &str,
) -> Result<Response, ApiError> {
    metadata_schema::check(&schema).map_err(invalid_schema)?;
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&schema).unwrap_or_default()));
    let count = |k: &str| schema.get(k).and_then(|v| v.as_object().map(|o| o.len()).or(v.as_array().map(Vec::len)));
    let audit = NewAuditEvent::new(
        "SCHEMA_UPDATED",
        principal.actor().to_string(),
        "metadata_schema",
        tenant.as_str(),
        json!({"component": "schema", "operation": operation, "previous_version": current.map(|c| c.version),
               "version": current.map_or(1, |c| c.version + 1), "schema_sha256": digest,
               "properties": count("properties").unwrap_or(0), "required": count("required").unwrap_or(0)}),
    );
    let stored = ctx.batches.put_metadata_schema(tenant, &schema, current.map(|c| c.version), audit).await?;
    tracing::info!(tenant = %tenant, version = stored.version, operation, "metadata schema updated");
    Ok(envelope::ok(view(tenant, stored)))
}

#[utoipa::path(
    put, path = "/api/v1/tenants/{tenant_id}/schema", tag = TAG,
    summary = "Replace the tenant's metadata JSON Schema (scope `admin`)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body(content = Object, description = "A JSON Schema describing the metadata object"),
    responses(
        (status = 200, description = "Stored as the next version", body = Envelope<SchemaView>),
        (status = 400, description = "VALIDATION_ERROR: every problem with the schema in details", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT: changed concurrently; re-read and retry", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_schema(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(schema): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Admin).await?;
    let current = ctx.batches.get_metadata_schema(&tenant_id).await?;
    store(&ctx, &principal, &tenant_id, schema, current.as_ref(), "put").await
}

#[utoipa::path(
    patch, path = "/api/v1/tenants/{tenant_id}/schema", tag = TAG,
    summary = "Merge into the tenant's metadata JSON Schema: properties key by key, required unioned (scope `admin`)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body(content = Object, description = "A partial JSON Schema"),
    responses(
        (status = 200, description = "The merged schema, stored as the next version", body = Envelope<SchemaView>),
        (status = 400, description = "VALIDATION_ERROR: the body is not an object, or the merged schema is unusable", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONFLICT: changed concurrently; re-read and retry", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn patch_schema(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(patch): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Admin).await?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::invalid_field("body", Value::Null, "a JSON object (a partial JSON Schema)"));
    };
    let current = ctx.batches.get_metadata_schema(&tenant_id).await?;
    let base = current.as_ref().map_or_else(|| json!({}), |c| c.schema.clone());
    let merged = merge_schema(&base, &patch);
    store(&ctx, &principal, &tenant_id, merged, current.as_ref(), "patch").await
}

#[utoipa::path(
    get, path = "/api/v1/tenants/{tenant_id}/schema", tag = TAG,
    summary = "The tenant's metadata JSON Schema (scope `admin` or `ingest`)",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "OK", body = Envelope<SchemaView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND: no schema yet", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_schema(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
) -> Result<Response, ApiError> {
    authorize_read(&ctx, &principal, &tenant_id).await?;
    let schema =
        ctx.batches.get_metadata_schema(&tenant_id).await?.ok_or_else(|| ApiError::not_found("metadata schema"))?;
    Ok(envelope::ok(view(&tenant_id, schema)))
}
