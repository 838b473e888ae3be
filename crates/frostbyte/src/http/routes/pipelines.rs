//! Pipelines and their runs: the definitions available, starting a run (202 at once; the engine's workers
//! execute it), a run's status, history and cancellation. Tenant scope `admin`, or the platform admin key. Thin
//! handlers over [`crate::engine::Engine`].

use axum::extract::State;
use axum::response::Response;
use frostbyte_core::TenantId;
use frostbyte_core::auth::Scope;
use frostbyte_core::pipelines::{Delivery, ParamSpec, PipelineRun, RunFilter, RunStatus, Schedule};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::engine::EngineError;
use crate::engine::schedules::ScheduleRequest;
use crate::http::auth::Principal;
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::{Json, Path, Query};

const TAG: &str = "pipelines";

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => ApiError::not_found(what),
            EngineError::TenantNotActive(tenant, state) => {
                let mut e = ApiError::tenant_suspended(&tenant);
                e.message = format!("tenant {tenant} is {state}, not ACTIVE: runs cannot start");
                e
            }
            EngineError::Validation(details) => {
                let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
                let message = format!("the run request has {} problem(s); fix: {}", details.len(), fields.join(", "));
                ApiError::validation(message, details)
            }
            EngineError::QuotaExceeded { message, retry_after_secs } => {
                ApiError::quota_exceeded(message, retry_after_secs)
            }
            EngineError::Store(e) => e.into(),
        }
    }
}

async fn authorize(ctx: &ApiContext, principal: &Principal, tenant: &TenantId) -> Result<(), ApiError> {
    principal.authorize(tenant, Scope::Admin)?;
    if matches!(principal, Principal::Admin) && ctx.store.get_tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(())
}

/// A definition as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineSummary {
    pub name: String,
    pub domain: String,
    pub display_name: String,
    pub processor: String,
    pub parameters: Vec<ParamSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The default cron schedule, if the definition has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub timeout_secs: u64,
}

#[utoipa::path(
    get, path = "/api/v1/pipelines", tag = TAG,
    summary = "List the pipeline definitions available",
    responses(
        (status = 200, description = "OK", body = Envelope<Vec<PipelineSummary>>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_pipelines(State(ctx): State<ApiContext>, principal: Principal) -> Result<Response, ApiError> {
    if let Principal::Tenant(cred) = &principal {
        principal.authorize(&cred.tenant.tenant_id, Scope::Admin)?;
    }
    let defs = ctx.engine.definitions();
    let list: Vec<PipelineSummary> = defs
        .all()
        .map(|d| PipelineSummary {
            name: d.name.clone(),
            domain: d.domain.clone(),
            display_name: d.display_name.clone(),
            processor: d.processor.clone(),
            parameters: d.parameters.clone(),
            description: d.description.clone(),
            schedule: d.schedule.clone(),
            timeout_secs: d.timeout_secs,
        })
        .collect();
    Ok(envelope::ok(list))
}

/// A run request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Parameter values by name; declared defaults fill in the rest.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

/// A run just accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    pub run_id: Uuid,
    pub status: RunStatus,
}

#[utoipa::path(
    post, path = "/api/v1/pipelines/{tenant_id}/run/{domain}/{pipeline}", tag = TAG,
    summary = "Start a pipeline run (validated now, executed by the engine's workers)",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Pipeline domain"),
        ("pipeline" = String, Path, description = "Pipeline name"),
    ),
    request_body = RunRequest,
    responses(
        (status = 202, description = "Accepted: the run is pending", body = Envelope<RunAccepted>),
        (status = 400, description = "VALIDATION_ERROR: a parameter is missing, unknown or of the wrong type", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND: no such tenant or pipeline", body = ErrorEnvelope),
        (status = 429, description = "QUOTA_EXCEEDED: quotas.runs_per_day is spent (Retry-After)", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn start_run(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, domain, pipeline)): Path<(TenantId, String, String)>,
    Json(body): Json<RunRequest>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let parameters = body.parameters;
    let run = ctx.engine.create_run(&tenant_id, &domain, &pipeline, parameters, &principal.actor().to_string()).await?;
    Ok(envelope::accepted(RunAccepted { run_id: run.run_id, status: run.status }))
}

#[utoipa::path(
    get, path = "/api/v1/pipelines/{tenant_id}/runs/{run_id}", tag = TAG,
    summary = "A run's status, progress, counts, error and times",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("run_id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "OK", body = Envelope<PipelineRun>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_run(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, run_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    Ok(envelope::ok(ctx.engine.get_run(&tenant_id, run_id).await?))
}

/// History filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// `domain/name` or `name`.
    pub pipeline: Option<String>,
    /// pending, validating, running, completed, failed or cancelled.
    pub status: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/v1/pipelines/{tenant_id}/runs", tag = TAG,
    summary = "Run history, newest first",
    params(("tenant_id" = String, Path, description = "Tenant id"), RunsQuery),
    responses(
        (status = 200, description = "OK", body = Envelope<Vec<PipelineRun>>),
        (status = 400, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_runs(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::invalid_field("status", s, "one of pending, validating, running, completed, failed, cancelled")
        })?),
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field("limit", limit, "between 1 and 100"));
    }
    let filter = RunFilter { pipeline: q.pipeline, status, limit };
    Ok(envelope::ok(ctx.engine.list_runs(&tenant_id, &filter).await?))
}

#[utoipa::path(
    post, path = "/api/v1/pipelines/{tenant_id}/runs/{run_id}/cancel", tag = TAG,
    summary = "Cancel a run: at once when pending, promptly (cooperatively) when executing",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("run_id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run after the request", body = Envelope<PipelineRun>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_run(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, run_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let run = ctx.engine.cancel(&tenant_id, run_id, &principal.actor().to_string()).await?;
    tracing::info!(tenant = %tenant_id, run_id = %run_id, status = run.status.as_str(), "pipeline run cancel requested");
    Ok(envelope::ok(run))
}

#[utoipa::path(
    get, path = "/api/v1/pipelines/{tenant_id}/runs/{run_id}/deliveries", tag = TAG,
    summary = "A run's webhook deliveries, each with every attempt's outcome (status code or error, time)",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("run_id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "OK", body = Envelope<Vec<Delivery>>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_deliveries(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, run_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    Ok(envelope::ok(ctx.engine.list_deliveries(&tenant_id, run_id).await?))
}

#[utoipa::path(
    get, path = "/api/v1/pipelines/{tenant_id}/schedules", tag = TAG,
    summary = "The tenant's schedules with their next and last firing",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "OK", body = Envelope<Vec<Schedule>>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_schedules(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    Ok(envelope::ok(ctx.engine.list_schedules(&tenant_id).await?))
}

#[utoipa::path(
    post, path = "/api/v1/pipelines/{tenant_id}/schedules", tag = TAG,
    summary = "Create a schedule: {pipeline, cron_expression, timezone?, overlap?, parameters?, is_enabled?}",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = ScheduleRequest,
    responses(
        (status = 201, description = "Created, with next_run_at", body = Envelope<Schedule>),
        (status = 400, description = "VALIDATION_ERROR: pipeline, cron_expression, timezone or parameters", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_schedule(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<ScheduleRequest>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let s = ctx.engine.create_schedule(&tenant_id, body, &principal.actor().to_string()).await?;
    Ok(envelope::created(s))
}

#[utoipa::path(
    put, path = "/api/v1/pipelines/{tenant_id}/schedules/{schedule_id}", tag = TAG,
    summary = "Change a schedule's cron, time zone, overlap, parameters or enabled flag (next_run_at recomputed)",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("schedule_id" = Uuid, Path, description = "Schedule id")),
    request_body = ScheduleRequest,
    responses(
        (status = 200, description = "OK", body = Envelope<Schedule>),
        (status = 400, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_schedule(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, schedule_id)): Path<(TenantId, Uuid)>,
    Json(body): Json<ScheduleRequest>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    let s = ctx.engine.update_schedule(&tenant_id, schedule_id, body, &principal.actor().to_string()).await?;
    Ok(envelope::ok(s))
}

/// A deleted schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleDeleted {
    pub schedule_id: Uuid,
    pub deleted: bool,
}

#[utoipa::path(
    delete, path = "/api/v1/pipelines/{tenant_id}/schedules/{schedule_id}", tag = TAG,
    summary = "Delete a schedule (runs it created are kept)",
    params(("tenant_id" = String, Path, description = "Tenant id"), ("schedule_id" = Uuid, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "Deleted", body = Envelope<ScheduleDeleted>),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 404, description = "RESOURCE_NOT_FOUND", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_schedule(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Path((tenant_id, schedule_id)): Path<(TenantId, Uuid)>,
) -> Result<Response, ApiError> {
    authorize(&ctx, &principal, &tenant_id).await?;
    ctx.engine.delete_schedule(&tenant_id, schedule_id, &principal.actor().to_string()).await?;
    Ok(envelope::ok(ScheduleDeleted { schedule_id, deleted: true }))
}
