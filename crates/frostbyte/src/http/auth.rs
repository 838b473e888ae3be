//! Authentication and authorisation: who is calling ([`Principal`]) and whether they may touch a tenant's path.
//!
//! A bearer token is one of: the platform admin key (compared in constant time), a tenant API key (`fbk_…`,
//! looked up by its SHA-256), or a JWT issued by `POST /api/v1/auth/token` (HS256). Nothing is cached: every
//! request re-reads the key record and the tenant, so revocation and suspension take effect on the very next
//! request. That costs two indexed store lookups per tenant request, which is cheap next to the work any
//! tenant endpoint does.
//!
//! Outcomes, in order: a missing or garbled credential is 401 `AUTHENTICATION_REQUIRED`; a revoked key (or a JWT
//! whose key was revoked) is 401 `TOKEN_REVOKED`; an expired one 401 `TOKEN_EXPIRED`; a credential of a tenant
//! that is being or has been deprovisioned is 401 `TOKEN_REVOKED` (its credentials are gone with it); a tenant
//! credential over its request rate is 429. Then [`Principal::authorize`]: another tenant's path is 404 (never a
//! hint that it exists); a SUSPENDED tenant (or one not yet ACTIVE) is 403 `TENANT_SUSPENDED`; a missing scope
//! is 403 `INSUFFICIENT_PERMISSIONS`. Admin-only endpoints answer a tenant credential with 403.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::auth::{ApiKeyRecord, KeyUnusable, Scope, hash_api_key, looks_like_api_key};
use frostbyte_core::service::Actor;
use frostbyte_core::tenant::{Tenant, TenantState};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::context::ApiContext;
use super::error::ApiError;
use super::rate_limit::retry_after_secs;

/// How a tenant credential was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey,
    Jwt,
}

/// A tenant credential, with the tenant as it was loaded for this request.
#[derive(Debug, Clone)]
pub struct TenantCredential {
    pub tenant: Tenant,
    pub key_id: Uuid,
    pub scopes: Vec<Scope>,
    pub kind: CredentialKind,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The platform admin key: every tenant, every scope, no rate limit.
    Admin,
    Tenant(Box<TenantCredential>),
}

impl Principal {
    /// Checks that the caller may act on `tenant` with `scope`.
    pub fn authorize(&self, tenant: &TenantId, scope: Scope) -> Result<(), ApiError> {
        let Principal::Tenant(cred) = self else { return Ok(()) };
        if cred.tenant.tenant_id != *tenant {
            return Err(ApiError::not_found("resource"));
        }
        check_tenant_usable(&cred.tenant)?;
        if !cred.scopes.contains(&scope) {
            return Err(ApiError::forbidden(format!(
                "this operation needs a credential with the `{}` scope",
                scope.as_str()
            )));
        }
        Ok(())
    }

    /// Checks that the caller is the platform admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(ApiError::forbidden("this operation needs the platform admin key")),
        }
    }

    /// Who to record in the audit log.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Admin => Actor::Admin,
            Principal::Tenant(cred) => Actor::Key(cred.key_id),
        }
    }
}

/// Suspended (or not yet active) tenants are refused; deprovisioned ones were refused at authentication.
pub(crate) fn check_tenant_usable(tenant: &Tenant) -> Result<(), ApiError> {
    match tenant.state {
        TenantState::Active => Ok(()),
        TenantState::Suspended => Err(ApiError::tenant_suspended(&tenant.tenant_id)),
        TenantState::Deprovisioning | TenantState::Deprovisioned => Err(ApiError::token_revoked()),
        other => {
            let mut e = ApiError::tenant_suspended(&tenant.tenant_id);
            e.message = format!("tenant {} is {other}, not ACTIVE", tenant.tenant_id);
            Err(e)
        }
    }
}

impl FromRequestParts<ApiContext> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, Self::Rejection> {
        authenticate(ctx, &parts.headers).await
    }
}

/// Establishes the principal from the `Authorization` header.
pub(crate) async fn authenticate(ctx: &ApiContext, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = bearer_token(headers)?;
    if is_admin_key(ctx, token) {
        return Ok(Principal::Admin);
    }
    let cred = if looks_like_api_key(token) {
        authenticate_api_key(ctx, token).await?
    } else if token.split('.').count() == 3 {
        authenticate_jwt(ctx, token).await?
    } else {
        return Err(ApiError::unauthenticated("the bearer token is not a valid credential"));
    };
    enforce_rate_limit(ctx, &cred.tenant)?;
    Ok(Principal::Tenant(Box::new(cred)))
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || ApiError::unauthenticated("send a credential as Authorization: Bearer <token>");
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// Constant-time comparison of digests, so neither the content nor the length of the admin key leaks. An empty
/// configured key never matches.
fn is_admin_key(ctx: &ApiContext, token: &str) -> bool {
    let admin = ctx.admin_key.expose_secret();
    if admin.is_empty() {
        return false;
    }
    let a = Sha256::digest(admin.as_bytes());
    let b = Sha256::digest(token.as_bytes());
    a.ct_eq(&b).into()
}

fn key_unusable(reason: KeyUnusable) -> ApiError {
    match reason {
        KeyUnusable::Revoked => ApiError::token_revoked(),
        KeyUnusable::Expired => ApiError::token_expired(),
    }
}

/// Checks a presented API key and loads its tenant. Also used by `POST /api/v1/auth/token`.
pub(crate) async fn verify_api_key(ctx: &ApiContext, api_key: &str) -> Result<(ApiKeyRecord, Tenant), ApiError> {
    let invalid = || ApiError::unauthenticated("the API key is not valid");
    if !looks_like_api_key(api_key) {
        return Err(invalid());
    }
    let record = ctx.store.find_api_key_by_hash(&hash_api_key(api_key)).await?.ok_or_else(invalid)?;
    record.check_usable(frostbyte_core::now()).map_err(key_unusable)?;
    let tenant = load_tenant(ctx, &record.tenant_id).await?;
    Ok((record, tenant))
}

async fn load_tenant(ctx: &ApiContext, tenant: &TenantId) -> Result<Tenant, ApiError> {
    let tenant = ctx.store.get_tenant(tenant).await?.ok_or_else(ApiError::token_revoked)?;
    if matches!(tenant.state, TenantState::Deprovisioning | TenantState::Deprovisioned) {
        return Err(ApiError::token_revoked());
    }
    Ok(tenant)
}

async fn authenticate_api_key(ctx: &ApiContext, token: &str) -> Result<TenantCredential, ApiError> {
    let (record, tenant) = verify_api_key(ctx, token).await?;
    Ok(TenantCredential { tenant, key_id: record.key_id, scopes: record.scopes, kind: CredentialKind::ApiKey })
}

pub(crate) fn enforce_rate_limit(ctx: &ApiContext, tenant: &Tenant) -> Result<(), ApiError> {
    ctx.limits.check(&tenant.tenant_id, &tenant.config.quotas).map_err(|wait| {
        tracing::debug!(tenant = %tenant.tenant_id, "rate limit exceeded");
        ApiError::rate_limited(retry_after_secs(wait))
    })
}

/// The claims of a Frostbyte access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The key the token was issued for.
    pub sub: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    v
}

async fn authenticate_jwt(ctx: &ApiContext, token: &str) -> Result<TenantCredential, ApiError> {
    let invalid = || ApiError::unauthenticated("the bearer token is not a valid credential");
    let key = DecodingKey::from_secret(ctx.jwt_secret.expose_secret().as_bytes());
    let claims = match jsonwebtoken::decode::<Claims>(token, &key, &validation()) {
        Ok(data) => data.claims,
        Err(e) if matches!(e.kind(), JwtErrorKind::ExpiredSignature) => return Err(ApiError::token_expired()),
        Err(e) => {
            tracing::debug!(error = %e, "jwt rejected");
            return Err(invalid());
        }
    };
    let tenant_id = TenantId::parse(&claims.tenant).map_err(|_| invalid())?;
    let key_id: Uuid = claims.sub.parse().map_err(|_| invalid())?;
    // Re-check the issuing key on every use, so that revoking it cuts its tokens off at once.
    let record = ctx.store.get_api_key(&tenant_id, key_id).await?.ok_or_else(ApiError::token_revoked)?;
    record.check_usable(frostbyte_core::now()).map_err(key_unusable)?;
    let tenant = load_tenant(ctx, &tenant_id).await?;
    let scopes = record.scopes.iter().copied().filter(|s| claims.scopes.iter().any(|c| c == s.as_str())).collect();
    Ok(TenantCredential { tenant, key_id, scopes, kind: CredentialKind::Jwt })
}

/// An issued access token.
pub(crate) struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

/// Issues a JWT for a usable key. It never outlives the key.
pub(crate) fn issue_token(ctx: &ApiContext, key: &ApiKeyRecord) -> Result<IssuedToken, ApiError> {
    let now: DateTime<Utc> = Utc::now();
    let ttl = chrono::Duration::from_std(ctx.settings.jwt_ttl).unwrap_or(chrono::Duration::hours(1));
    let mut exp = now + ttl;
    if let Some(key_exp) = key.expires_at {
        exp = exp.min(key_exp);
    }
    let claims = Claims {
        sub: key.key_id.to_string(),
        tenant: key.tenant_id.to_string(),
        scopes: key.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        iat: now.timestamp(),
        exp: exp.timestamp(),
        jti: frostbyte_core::ids::new_id().to_string(),
    };
    let key_material = EncodingKey::from_secret(ctx.jwt_secret.expose_secret().as_bytes());
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key_material)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(IssuedToken { token, expires_in: u64::try_from(claims.exp - claims.iat).unwrap_or(0) })
}

/// The tenant a tenant-scoped handler acts on, checked: the caller may act on it with `scope` (another tenant's
/// path answers 404), it exists, and it is usable (ACTIVE). A tenant credential's tenant was loaded when it
/// authenticated; the admin key's is read here.
pub(crate) async fn authorize_tenant(
    ctx: &ApiContext,
    principal: &Principal,
    tenant: &TenantId,
    scope: Scope,
) -> Result<Tenant, ApiError> {
    principal.authorize(tenant, scope)?;
    if let Principal::Tenant(cred) = principal {
        return Ok(cred.tenant.clone());
    }
    let t = ctx.store.get_tenant(tenant).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    check_tenant_usable(&t)?;
    Ok(t)
}
