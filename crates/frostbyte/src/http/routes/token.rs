//! `POST /api/v1/auth/token`: exchanges a usable API key of an ACTIVE tenant for a short-lived JWT.

use axum::extract::State;
use axum::response::Response;
use frostbyte_core::auth::Scope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::auth::{self, check_tenant_usable, enforce_rate_limit};
use crate::http::context::ApiContext;
use crate::http::envelope::{self, Envelope};
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::Json;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A tenant API key (`fbk_…`).
    pub api_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires (never after the key does).
    pub expires_in: u64,
    pub tenant_id: String,
    pub scopes: Vec<Scope>,
}

#[utoipa::path(
    post, path = "/api/v1/auth/token", tag = "auth",
    summary = "Exchange an API key for a JWT",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "OK", body = Envelope<TokenResponse>),
        (status = 400, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 429, description = "RATE_LIMIT_EXCEEDED (with Retry-After)", body = ErrorEnvelope),
    )
)]
pub(crate) async fn issue_token(
    State(ctx): State<ApiContext>,
    Json(body): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    let (key, tenant) = auth::verify_api_key(&ctx, &body.api_key).await?;
    enforce_rate_limit(&ctx, &tenant)?;
    check_tenant_usable(&tenant)?;
    let issued = auth::issue_token(&ctx, &key)?;
    tracing::info!(tenant = %tenant.tenant_id, key_id = %key.key_id, "access token issued");
    Ok(envelope::ok(TokenResponse {
        access_token: issued.token,
        token_type: "bearer",
        expires_in: issued.expires_in,
        tenant_id: tenant.tenant_id.to_string(),
        scopes: key.scopes,
    }))
}
