//! Signals: feature-set definitions (`PUT`/`GET /api/v1/signals/{tenant_id}/feature-sets/{name}`, scopes
//! `ingest` / `query`), event ingest (`POST /api/v1/signals/{tenant_id}/events`, scope `ingest`) and an
//! entity's latest features (`GET /api/v1/signals/{tenant_id}/features/{name}/{entity_id}`, scope `query`).
//!
//! The events body is a JSON array or NDJSON (`application/x-ndjson`, or any body not starting with `[`). It is
//! read as a stream and refused with 413 the moment it passes `[signals] max_body_bytes` (the router's default
//! limit is lifted for this route only); each event that cannot be used is reported with its index (array
//! position or line number, from 0) and a reason, and the rest are ingested. Everything after decoding is
//! `frostbyte_core::signals::service`.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::signals::definition::FeatureSetDef;
use frostbyte_core::signals::event::{Event, EventError};
use frostbyte_core::signals::service::{FeatureView, IngestReport, SignalError};
use frostbyte_core::signals::store::FeatureSetVersion;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorCode, ErrorEnvelope};
use crate::http::extract::{Path, Query};

const TAG: &str = "signals";

/// Every signals route; the events route streams its own body under `[signals] max_body_bytes`.
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(put_feature_set, get_feature_set))
        .routes(routes!(get_features))
        .merge(OpenApiRouter::new().routes(routes!(post_events)).layer(DefaultBodyLimit::disable()))
}

impl From<SignalError> for ApiError {
    fn from(e: SignalError) -> Self {
        match e {
            SignalError::Invalid(details) => ApiError::validation("the request is invalid; see details", details),
            SignalError::NotFound(what) => ApiError::not_found(what),
            SignalError::Store(e) => e.into(),
        }
    }
}

async fn authorize(ctx: &ApiContext, principal: &Principal, tenant: &TenantId, scope: Scope) -> Result<(), ApiError> {
    crate::http::auth::authorize_tenant(ctx, principal, tenant, scope).await.map(|_| ())
}

/// A stored feature-set version.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureSetView {
    pub name: String,
    pub version: i32,
    /// `true` when this request stored a new version (`201`), `false` when the definition was unchanged (`200`).
    pub created: bool,
    /// The definition as stored (durations normalised, e.g. `90s` → `1m30s`).
    #[schema(value_type = Object)]
    pub definition: Value,
    pub created_at: DateTime<Utc>,
}

impl FeatureSetView {
    fn new(v: FeatureSetVersion, created: bool) -> Self {
        FeatureSetView {
            name: v.name,
            version: v.version,
            created,
            definition: serde_json::to_value(&v.definition).unwrap_or(Value::Null),
            created_at: v.created_at,
        }
    }
}

fn is_yaml(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.contains("yaml"))
}

#[utoipa::path(
    put, path = "/api/v1/signals/{tenant_id}/feature-sets/{name}", tag = TAG,
    summary = "Define a feature set (JSON, or YAML with a yaml content type); a changed definition is a new version",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("name" = String, Path, description = "Feature-set name: [a-z][a-z0-9_-]{0,63}"),
    ),
    request_body(content = Object, description = "`{allowed_lateness, late_policy?, correction_horizon?, filters?, windows[]}`"),
    responses(
        (status = 201, description = "A new version was stored", body = Envelope<FeatureSetView>),
        (status = 200, description = "Unchanged: the latest version already has this definition", body = Envelope<FeatureSetView>),
        (status = 400, description = "VALIDATION_ERROR, with every problem in details", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_feature_set(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, name)): Path<(TenantId, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    let definition = if is_yaml(&headers) {
        let text =
            std::str::from_utf8(&body).map_err(|_| ApiError::invalid_field("body", Value::Null, "UTF-8 YAML"))?;
        FeatureSetDef::yaml_to_json(text).map_err(|d| ApiError::validation("the definition is not valid YAML", d))?
    } else {
        serde_json::from_slice(&body).map_err(|_| ApiError::invalid_field("body", Value::Null, "a JSON object"))?
    };
    let (version, created) =
        ctx.signals.service.put_feature_set(&tenant_id, &name, definition, &principal.actor().to_string()).await?;
    tracing::info!(tenant = %tenant_id, feature_set = %version.name, version = version.version, created, "feature set stored");
    let view = FeatureSetView::new(version, created);
    Ok(if created { envelope::created(view) } else { envelope::ok(view) })
}

/// Which version to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A version number [default: the latest].
    pub version: Option<i32>,
}

#[utoipa::path(
    get, path = "/api/v1/signals/{tenant_id}/feature-sets/{name}", tag = TAG,
    summary = "Read a feature set (the latest version, or `?version=`)",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("name" = String, Path, description = "Feature-set name"),
        VersionQuery,
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<FeatureSetView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_feature_set(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, name)): Path<(TenantId, String)>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Query).await?;
    let version = ctx.signals.service.get_feature_set(&tenant_id, &name, q.version).await?;
    Ok(envelope::ok(FeatureSetView::new(version, false)))
}

/// Reads the body as a stream, refusing it as soon as it passes `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::invalid_field("body", Value::Null, "a complete request body"))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn too_many(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("a request may carry at most {max} events; split the batch"),
    )
}

/// Decodes a JSON array or NDJSON body (the same decoder as the NATS consumer's).
fn decode_events(body: &[u8], ndjson: bool, max: usize) -> Result<Vec<Result<Event, EventError>>, ApiError> {
    crate::signals::decode_events(body, ndjson, max).map_err(|e| match e {
        crate::signals::DecodeError::NotJson => {
            ApiError::invalid_field("body", Value::Null, "a JSON array of events, or NDJSON")
        }
        crate::signals::DecodeError::TooMany(max) => too_many(max),
    })
}

#[utoipa::path(
    post, path = "/api/v1/signals/{tenant_id}/events", tag = TAG,
    summary = "Ingest events (JSON array or NDJSON); duplicates change nothing, bad events are reported by index",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body(content = Object, description = "A JSON array, or NDJSON, of `{entity_id, event_time, sequence?, payload, source, trace_id?}`"),
    responses(
        (status = 200, description = "`{accepted, duplicates, late_dropped, late_held, late_corrected, rejected, errors[{index, reason, message}]}`", body = Envelope<IngestReport>),
        (status = 400, description = "VALIDATION_ERROR: the body is neither a JSON array nor NDJSON", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: over `[signals] max_body_bytes` or `max_events_per_request`", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn post_events(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Ingest).await?;
    let settings = ctx.signals.settings;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonlines") || ct.contains("jsonl"));
    let bytes = read_body(body, settings.max_body_bytes).await?;
    let items = decode_events(&bytes, ndjson, settings.max_events)?;
    let now = frostbyte_core::now();
    let report = ctx.signals.service.ingest(&tenant_id, items, settings.ingest, now).await?;
    crate::signals::record_ingest(&report, now);
    tracing::info!(
        tenant = %tenant_id,
        accepted = report.accepted,
        duplicates = report.duplicates,
        rejected = report.rejected,
        late_dropped = report.late_dropped,
        late_held = report.late_held,
        rows = report.rows_emitted,
        "signal events ingested"
    );
    Ok(envelope::ok(report).into_response())
}

#[utoipa::path(
    get, path = "/api/v1/signals/{tenant_id}/features/{name}/{entity_id}", tag = TAG,
    summary = "An entity's latest value of each window of a feature set, with its watermark",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("name" = String, Path, description = "Feature-set name"),
        ("entity_id" = String, Path, description = "Entity id"),
    ),
    responses(
        (status = 200, description = "OK", body = Envelope<FeatureView>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND: no such feature set, or no data for the entity", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_features(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, name, entity_id)): Path<(TenantId, String, String)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id, Scope::Query).await?;
    let view = ctx.signals.service.features(&tenant_id, &name, &entity_id).await?;
    Ok(envelope::ok(view))
}
