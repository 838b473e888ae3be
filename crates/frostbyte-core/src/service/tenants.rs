//! Tenant and credential use-cases: creation and provisioning, config updates, the lifecycle, and API keys.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::auth::{ApiKeyRecord, generate_api_key, parse_scopes};
use crate::documents::DocumentStore;
use crate::error::StoreError;
use crate::ids::TenantId;
use crate::lifecycle::TenantDocumentRows;
use crate::page::{Page, PageRequest};
use crate::ports::{BlobError, BlobStore, MetadataStore};
use crate::tenant::{
    ConfigChange, FieldViolation, InvalidTransition, Tenant, TenantConfig, TenantState, Tier, check_transition,
};

/// Who did it, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The platform admin key.
    Admin,
    /// A tenant API key (or a JWT issued for one).
    Key(Uuid),
    /// The command-line interface, run by an operator with direct store access.
    Cli,
    /// Frostbyte itself (provisioning, recovery).
    System,
    /// A pipeline run acting on the tenant's data (`retention.sweep`, `documents.reindex`).
    Pipeline(Uuid),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::Key(id) => write!(f, "key:{id}"),
            Actor::Cli => f.write_str("cli"),
            Actor::System => f.write_str("system"),
            Actor::Pipeline(run_id) => write!(f, "pipeline:{run_id}"),
        }
    }
}

/// A use-case failure; the HTTP layer maps each kind to a status and stable code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    #[error("invalid request: {} problem(s)", .0.len())]
    Validation(Vec<FieldViolation>),
    #[error("confirm_tenant_id does not match the tenant being deprovisioned")]
    ConfirmationMismatch,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { resource } => ServiceError::NotFound(resource),
            StoreError::AlreadyExists { resource } => ServiceError::AlreadyExists(resource),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            other => ServiceError::Store(other),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Input for creating a tenant, as a client sends it (validated here, all problems at once).
#[derive(Debug, Clone, Default)]
pub struct CreateTenant {
    pub tenant_id: String,
    pub tenant_name: String,
    pub contact_email: String,
    pub tier: Option<String>,
    pub config: Option<Value>,
}

/// Input for creating an API key.
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as created: the record and the plaintext, which is shown once and never stored.
pub struct CreatedKey {
    pub record: ApiKeyRecord,
    pub api_key: String,
}

/// Tenants and keys.
#[derive(Clone)]
pub struct TenantService {
    store: Arc<dyn MetadataStore>,
    blobs: Arc<dyn BlobStore>,
    /// Deprovisioning erases the tenant's documents, chunks and jobs through it.
    documents: Arc<dyn DocumentStore>,
}

fn parse_tenant_id(raw: &str, violations: &mut Vec<FieldViolation>) -> Option<TenantId> {
    match TenantId::parse(raw) {
        Ok(id) => Some(id),
        Err(_) => {
            violations.push(FieldViolation::new("tenant_id", raw, TenantId::PATTERN));
            None
        }
    }
}

fn check_text(field: &str, value: &str, max: usize, violations: &mut Vec<FieldViolation>) {
    if value.trim().is_empty() || value.chars().count() > max {
        violations.push(FieldViolation::new(field, value, format!("1 to {max} characters")));
    }
}

fn plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
        && s.len() <= 254
}

impl TenantService {
    pub fn new(store: Arc<dyn MetadataStore>, blobs: Arc<dyn BlobStore>, documents: Arc<dyn DocumentStore>) -> Self {
        TenantService { store, blobs, documents }
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// Creates a tenant and provisions it. The embedded default needs no external provisioning, so the tenant
    /// passes through PENDING and PROVISIONING to ACTIVE at once, each step audited.
    pub async fn create(&self, req: CreateTenant, actor: &Actor) -> ServiceResult<Tenant> {
        let mut violations = Vec::new();
        let id = parse_tenant_id(&req.tenant_id, &mut violations);
        check_text("tenant_name", &req.tenant_name, 200, &mut violations);
        if !plausible_email(&req.contact_email) {
            violations.push(FieldViolation::new("contact_email", req.contact_email.as_str(), "an email address"));
        }
        let tier = match req.tier.as_deref() {
            None => Tier::default(),
            Some(t) => Tier::parse(t).unwrap_or_else(|| {
                violations.push(FieldViolation::new("tier", t, "one of free, standard, enterprise"));
                Tier::default()
            }),
        };
        let config = match &req.config {
            None => TenantConfig::default(),
            Some(v) => TenantConfig::from_json(v).unwrap_or_else(|mut errs| {
                for e in &mut errs {
                    e.field = format!("config.{}", e.field);
                }
                violations.extend(errs);
                TenantConfig::default()
            }),
        };
        let (Some(id), true) = (id, violations.is_empty()) else {
            return Err(ServiceError::Validation(violations));
        };
        let now = crate::now();
        let tenant = Tenant {
            tenant_id: id.clone(),
            tenant_name: req.tenant_name.trim().to_owned(),
            contact_email: req.contact_email,
            tier,
            state: TenantState::Pending,
            state_reason: None,
            config,
            config_version: 1,
            created_at: now,
            updated_at: now,
        };
        let audit = NewAuditEvent::new(
            "TENANT_CREATED",
            actor.to_string(),
            "tenant",
            id.as_str(),
            json!({"component": "tenants", "status": "PENDING", "tier": tier.as_str(), "config_version": 1}),
        );
        self.store.create_tenant(&tenant, audit).await?;
        self.provision(&id).await
    }

    /// Runs provisioning for a PENDING or FAILED tenant.
    pub async fn provision(&self, id: &TenantId) -> ServiceResult<Tenant> {
        let tenant = self.get(id).await?;
        self.transition(&tenant, TenantState::Provisioning, None, &Actor::System, "TENANT_PROVISIONING").await?;
        let provisioning = self.get(id).await?;
        self.transition(&provisioning, TenantState::Active, None, &Actor::System, "TENANT_ACTIVATED").await
    }

    pub async fn get(&self, id: &TenantId) -> ServiceResult<Tenant> {
        self.store.get_tenant(id).await?.ok_or(ServiceError::NotFound("tenant"))
    }

    pub async fn list(&self, state: Option<TenantState>, page: PageRequest) -> ServiceResult<Page<Tenant>> {
        Ok(self.store.list_tenants(state, page).await?)
    }

    /// Applies a partial config update. Returns the tenant and the changed fields; `config_version` goes up by
    /// one when anything changed and stays put when nothing did.
    pub async fn update_config(
        &self,
        id: &TenantId,
        patch: &Value,
        actor: &Actor,
    ) -> ServiceResult<(Tenant, Vec<ConfigChange>)> {
        // Optimistic concurrency: retry a few times if another writer bumped the version in between.
        for _ in 0..5 {
            let tenant = self.get(id).await?;
            if matches!(tenant.state, TenantState::Deprovisioning | TenantState::Deprovisioned) {
                return Err(ServiceError::Conflict(format!("tenant is {}", tenant.state)));
            }
            let (config, changes) = tenant.config.apply_patch(patch).map_err(ServiceError::Validation)?;
            if changes.is_empty() {
                return Ok((tenant, changes));
            }
            let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
            let audit = NewAuditEvent::new(
                "TENANT_CONFIG_UPDATED",
                actor.to_string(),
                "tenant",
                id.as_str(),
                json!({
                    "component": "tenants",
                    "status": "ok",
                    "config_version": tenant.config_version + 1,
                    "fields": fields,
                }),
            );
            match self.store.update_tenant_config(id, tenant.config_version, &config, audit).await {
                Ok(updated) => return Ok((updated, changes)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict("tenant config is being changed concurrently; retry".into()))
    }

    pub async fn suspend(&self, id: &TenantId, reason: Option<&str>, actor: &Actor) -> ServiceResult<Tenant> {
        let tenant = self.get(id).await?;
        self.transition(&tenant, TenantState::Suspended, reason, actor, "TENANT_SUSPENDED").await
    }

    pub async fn resume(&self, id: &TenantId, reason: Option<&str>, actor: &Actor) -> ServiceResult<Tenant> {
        let tenant = self.get(id).await?;
        if tenant.state != TenantState::Suspended {
            return Err(InvalidTransition { from: tenant.state, to: TenantState::Active }.into());
        }
        self.transition(&tenant, TenantState::Active, reason, actor, "TENANT_RESUMED").await
    }

    /// Starts deprovisioning: checks the confirmation and moves the tenant to DEPROVISIONING. The caller then
    /// runs [`TenantService::complete_deprovision`] (in the background for the API).
    pub async fn begin_deprovision(
        &self,
        id: &TenantId,
        reason: Option<&str>,
        confirm: bool,
        confirm_tenant_id: &str,
        actor: &Actor,
    ) -> ServiceResult<Tenant> {
        if !confirm || confirm_tenant_id != id.as_str() {
            return Err(ServiceError::ConfirmationMismatch);
        }
        let tenant = self.get(id).await?;
        self.transition(&tenant, TenantState::Deprovisioning, reason, actor, "TENANT_DEPROVISIONING").await
    }

    /// Erases the tenant's data and credentials, then marks it DEPROVISIONED. The tenant row stays as a
    /// tombstone (its id cannot be reused) and its audit chain is kept; revoked key records stay too, so an old
    /// key answers `TOKEN_REVOKED`. Erasure runs the way a document's does: the metadata rows (documents,
    /// document tombstones, chunks with their vectors and keyword entries, jobs and dead letters) in one
    /// transaction with `TENANT_DATA_ERASED`, then every blob under the tenant's prefix, then a sweep that re-reads
    /// both. Every step is idempotent, so a crash anywhere is finished by running this again (`app::recover`
    /// does at start).
    pub async fn complete_deprovision(&self, id: &TenantId) -> ServiceResult<Tenant> {
        let tenant = self.get(id).await?;
        if tenant.state != TenantState::Deprovisioning {
            return Err(InvalidTransition { from: tenant.state, to: TenantState::Deprovisioned }.into());
        }
        let audit_id = id.clone();
        let rows = self
            .documents
            .purge_tenant(
                id,
                Box::new(move |removed: &TenantDocumentRows| {
                    NewAuditEvent::new(
                        "TENANT_DATA_ERASED",
                        Actor::System.to_string(),
                        "tenant",
                        audit_id.as_str(),
                        json!({
                            "component": "tenants",
                            "status": "erased",
                            "documents": removed.documents,
                            "tombstones": removed.tombstones,
                            "chunks": removed.chunks,
                            "jobs": removed.jobs,
                        }),
                    )
                }),
            )
            .await?;
        let mut blobs_removed = self.blobs.delete_all(id).await?;
        let keys_revoked = self
            .store
            .revoke_all_api_keys(
                id,
                NewAuditEvent::new(
                    "API_KEYS_REVOKED",
                    Actor::System.to_string(),
                    "tenant",
                    id.as_str(),
                    json!({"component": "tenants", "status": "ok", "reason": "deprovisioned"}),
                ),
            )
            .await?;
        // Verification sweep. A pipeline job that was mid-write when the purge committed may leave a blob behind
        // once; it is removed again here (and by the job itself, which finds its document gone).
        let mut remaining = self.blobs.list(id, "").await?;
        for _ in 0..2 {
            if remaining.is_empty() {
                break;
            }
            blobs_removed += self.blobs.delete_all(id).await?;
            remaining = self.blobs.list(id, "").await?;
        }
        if !remaining.is_empty() {
            return Err(ServiceError::Conflict(format!("{} objects remain after erasure", remaining.len())));
        }
        let residue = self.documents.tenant_residue(id).await?;
        if !residue.is_empty() {
            return Err(ServiceError::Conflict(format!("document rows remain after erasure: {residue:?}")));
        }
        let audit = NewAuditEvent::new(
            "TENANT_DEPROVISIONED",
            Actor::System.to_string(),
            "tenant",
            id.as_str(),
            json!({
                "component": "tenants",
                "status": "DEPROVISIONED",
                "blobs_removed": blobs_removed,
                "keys_revoked": keys_revoked,
                "documents_erased": rows.documents,
                "chunks_erased": rows.chunks,
                "jobs_erased": rows.jobs,
                "verified": true,
            }),
        );
        Ok(self
            .store
            .transition_tenant(id, TenantState::Deprovisioning, TenantState::Deprovisioned, None, audit)
            .await?)
    }

    async fn transition(
        &self,
        tenant: &Tenant,
        to: TenantState,
        reason: Option<&str>,
        actor: &Actor,
        event_type: &str,
    ) -> ServiceResult<Tenant> {
        check_transition(tenant.state, to)?;
        if let Some(r) = reason
            && r.chars().count() > 1000
        {
            return Err(ServiceError::Validation(vec![FieldViolation::new("reason", r, "at most 1000 characters")]));
        }
        let audit = NewAuditEvent::new(
            event_type,
            actor.to_string(),
            "tenant",
            tenant.tenant_id.as_str(),
            json!({"component": "tenants", "status": to.as_str(), "from": tenant.state.as_str()}),
        );
        match self.store.transition_tenant(&tenant.tenant_id, tenant.state, to, reason, audit).await {
            Ok(t) => Ok(t),
            // Someone else moved it first: report against the state it is in now.
            Err(StoreError::Conflict(_)) => {
                let now = self.get(&tenant.tenant_id).await?;
                Err(InvalidTransition { from: now.state, to }.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    // --- keys ----------------------------------------------------------------------------------------------

    pub async fn create_key(&self, id: &TenantId, req: CreateKey, actor: &Actor) -> ServiceResult<CreatedKey> {
        let tenant = self.get(id).await?;
        if matches!(tenant.state, TenantState::Deprovisioning | TenantState::Deprovisioned) {
            return Err(ServiceError::Conflict(format!("tenant is {}", tenant.state)));
        }
        let mut violations = Vec::new();
        check_text("name", &req.name, 100, &mut violations);
        let scopes = match parse_scopes(&req.scopes) {
            Ok(s) if s.is_empty() => {
                violations.push(FieldViolation::new(
                    "scopes",
                    json!([]),
                    "at least one of ingest, query, audit, admin",
                ));
                s
            }
            Ok(s) => s,
            Err(unknown) => {
                violations.push(FieldViolation::new(
                    "scopes",
                    json!(unknown),
                    "each one of ingest, query, audit, admin",
                ));
                Vec::new()
            }
        };
        let now = crate::now();
        if let Some(exp) = req.expires_at
            && exp <= now
        {
            violations.push(FieldViolation::new("expires_at", exp.to_rfc3339(), "a time in the future"));
        }
        if !violations.is_empty() {
            return Err(ServiceError::Validation(violations));
        }
        let generated = generate_api_key();
        let record = ApiKeyRecord {
            key_id: crate::ids::new_id(),
            tenant_id: id.clone(),
            name: req.name.trim().to_owned(),
            prefix: generated.prefix.clone(),
            key_hash: generated.hash.clone(),
            scopes: scopes.clone(),
            created_at: now,
            expires_at: req.expires_at.map(crate::truncate_micros),
            revoked_at: None,
        };
        let scope_names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let audit = NewAuditEvent::new(
            "API_KEY_CREATED",
            actor.to_string(),
            "api_key",
            record.key_id.to_string(),
            json!({"component": "auth", "status": "ok", "scopes": scope_names, "prefix": record.prefix}),
        );
        self.store.create_api_key(id, &record, audit).await?;
        Ok(CreatedKey { record, api_key: generated.plaintext })
    }

    pub async fn list_keys(&self, id: &TenantId) -> ServiceResult<Vec<ApiKeyRecord>> {
        self.get(id).await?;
        Ok(self.store.list_api_keys(id).await?)
    }

    pub async fn revoke_key(&self, id: &TenantId, key_id: Uuid, actor: &Actor) -> ServiceResult<ApiKeyRecord> {
        let audit = NewAuditEvent::new(
            "API_KEY_REVOKED",
            actor.to_string(),
            "api_key",
            key_id.to_string(),
            json!({"component": "auth", "status": "ok"}),
        );
        Ok(self.store.revoke_api_key(id, key_id, audit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_plausibility() {
        assert!(plausible_email("ops@acme.example"));
        for bad in ["", "acme", "@acme.com", "a@b", "a@.com", "a b@c.com", "a@c.com."] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }
}
