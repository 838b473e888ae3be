//! Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document and its HTML rendering.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use frostbyte_core::tenant::FieldViolation;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::auth::authenticate;
use crate::http::context::ApiContext;
use crate::http::error::{ApiError, ErrorEnvelope};

const TAG: &str = "system";

/// Liveness: the process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `healthy`.
    pub status: &'static str,
    pub timestamp: DateTime<Utc>,
}

#[utoipa::path(
    get, path = "/health", tag = TAG,
    summary = "Liveness (no envelope)",
    responses((status = 200, description = "OK", body = Health))
)]
pub(crate) async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "healthy", timestamp: frostbyte_core::now() })
}

/// Readiness: every configured store answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: &'static str,
    /// `{"metadata": "ok", "blobs": "ok"}`.
    #[schema(value_type = Object)]
    pub checks: serde_json::Value,
}

#[utoipa::path(
    get, path = "/ready", tag = TAG,
    summary = "Readiness: 200 when every store answers, else 503 listing which do not",
    responses(
        (status = 200, description = "OK", body = Ready),
        (status = 503, description = "SERVICE_UNAVAILABLE; details name each failed store", body = ErrorEnvelope),
    )
)]
pub(crate) async fn ready(State(ctx): State<ApiContext>) -> Response {
    let (metadata, blobs) = tokio::join!(ctx.store.ping(), ctx.blobs.ping());
    let mut failed = Vec::new();
    if let Err(error) = metadata {
        tracing::warn!(%error, "readiness: metadata store does not answer");
        failed.push(FieldViolation::new("metadata", "unavailable", format!("{} store answers", ctx.store.backend())));
    }
    if let Err(error) = blobs {
        tracing::warn!(%error, "readiness: blob store does not answer");
        failed.push(FieldViolation::new("blobs", "unavailable", format!("{} blob store answers", ctx.blobs.scheme())));
    }
    if failed.is_empty() {
        let checks = serde_json::json!({"metadata": "ok", "blobs": "ok"});
        return axum::Json(Ready { status: "ready", checks }).into_response();
    }
    let names: Vec<&str> = failed.iter().map(|f| f.field.as_str()).collect();
    let message = format!("not ready: {} unavailable", names.join(", "));
    ApiError::unavailable(message).with_details(failed).into_response()
}

#[utoipa::path(
    get, path = "/metrics", tag = TAG,
    summary = "Prometheus metrics (requires the admin key unless metrics are public)",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn metrics(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !ctx.settings.metrics_public {
        authenticate(&ctx, &headers).await?.require_admin()?;
    }
    metrics::gauge!("frostbyte_uptime_seconds").set(ctx.started_at.elapsed().as_secs_f64());
    ctx.metrics.run_upkeep();
    let body = ctx.metrics.render();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        body,
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/openapi.json", tag = TAG,
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json(State(ctx): State<ApiContext>) -> Response {
    axum::Json(ctx.spec.as_ref()).into_response()
}

#[utoipa::path(
    get, path = "/docs", tag = TAG,
    summary = "Browsable API reference (server-rendered HTML)",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String))
)]
pub(crate) async fn docs(State(ctx): State<ApiContext>) -> Html<String> {
    Html(ctx.docs_html.to_string())
}
