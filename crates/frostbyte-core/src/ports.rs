//! Ports: the traits adapters implement. Every tenant-scoped method takes the tenant first; keys, partitions and
//! row filters are derived inside the adapter, so a caller cannot reach another tenant's data by passing the
//! wrong id in a body.
//!
//! Contract: any method that changes state takes the [`NewAuditEvent`] that records it and appends it to the
//! tenant's hash chain in the same transaction, so a change and its audit record commit or fail together.

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditFilter, NewAuditEvent};
use crate::auth::ApiKeyRecord;
use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::tenant::{Tenant, TenantConfig, TenantState};

/// The system of record: tenants, credentials and the audit log (and, as the product grows, documents, jobs,
/// runs and checkpoints). Implemented for SQLite and PostgreSQL, both held to one contract test suite.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations. Idempotent.
    async fn migrate(&self) -> StoreResult<()>;
    /// Answers when the store is reachable and usable.
    async fn ping(&self) -> StoreResult<()>;

    // --- tenants -------------------------------------------------------------------------------------------
    /// Inserts a new tenant. `AlreadyExists` if the id is taken (including by a deprovisioned tombstone).
    async fn create_tenant(&self, tenant: &Tenant, audit: NewAuditEvent) -> StoreResult<()>;
    async fn get_tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self, state: Option<TenantState>, page: PageRequest) -> StoreResult<Page<Tenant>>;
    /// Replaces the config if the stored version is still `expected_version`, bumping it by one. `Conflict`
    /// otherwise, `NotFound` if there is no such tenant.
    async fn update_tenant_config(
        &self,
        tenant: &TenantId,
        expected_version: i64,
        config: &TenantConfig,
        audit: NewAuditEvent,
    ) -> StoreResult<Tenant>;
    /// Moves the tenant from `from` to `to` if it is still in `from` (compare-and-set). `Conflict` if the state
    /// changed underneath; callers check legality with the state machine first.
    async fn transition_tenant(
        &self,
        tenant: &TenantId,
        from: TenantState,
        to: TenantState,
        reason: Option<&str>,
        audit: NewAuditEvent,
    ) -> StoreResult<Tenant>;

    // --- API keys ------------------------------------------------------------------------------------------
    async fn create_api_key(&self, tenant: &TenantId, key: &ApiKeyRecord, audit: NewAuditEvent) -> StoreResult<()>;
    async fn list_api_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn get_api_key(&self, tenant: &TenantId, key_id: Uuid) -> StoreResult<Option<ApiKeyRecord>>;
    /// Looks a key up by its hash. This is the one lookup not scoped by tenant: it is how a credential
    /// establishes its tenant in the first place.
    async fn find_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>>;
    /// Marks a key revoked (idempotent: revoking twice keeps the first time). `NotFound` if absent.
    async fn revoke_api_key(&self, tenant: &TenantId, key_id: Uuid, audit: NewAuditEvent) -> StoreResult<ApiKeyRecord>;
    /// Revokes every live key of a tenant; returns how many were revoked.
    async fn revoke_all_api_keys(&self, tenant: &TenantId, audit: NewAuditEvent) -> StoreResult<u64>;

    // --- audit ---------------------------------------------------------------------------------------------
    /// Appends an event that records something other than a metadata change (an export, a retrieval).
    async fn append_audit(&self, tenant: &TenantId, event: NewAuditEvent) -> StoreResult<AuditEvent>;
    /// Newest first.
    async fn list_audit(
        &self,
        tenant: &TenantId,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;
    async fn get_audit(&self, tenant: &TenantId, event_id: Uuid) -> StoreResult<Option<AuditEvent>>;
    /// Events with `seq > after_seq`, oldest first, at most `limit`: for verification and export in batches.
    async fn audit_after(&self, tenant: &TenantId, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>>;
    /// Every tenant id that has audit events (including deprovisioned tenants), for whole-store verification.
    async fn audit_tenants(&self) -> StoreResult<Vec<TenantId>>;
}

/// Blob storage scoped by tenant. Keys are relative (`raw/ab12…`); the adapter prefixes them with the tenant, so
/// no key can escape it.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// `file`, `memory` or `s3`.
    fn scheme(&self) -> &'static str;
    async fn put(&self, tenant: &TenantId, key: &str, bytes: Bytes) -> Result<(), BlobError>;
    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Bytes, BlobError>;
    async fn exists(&self, tenant: &TenantId, key: &str) -> Result<bool, BlobError>;
    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<(), BlobError>;
    /// Stores the bytes at `from` also at `to` (both relative to the tenant), replacing what `to` held; `NotFound`
    /// if `from` is missing. Adapters that can copy without reading (a hard link on local files, a server-side
    /// copy on S3) override this reading and writing.
    async fn copy(&self, tenant: &TenantId, from: &str, to: &str) -> Result<(), BlobError> {
        let bytes = self.get(tenant, from).await?;
        self.put(tenant, to, bytes).await
    }
    /// Applies `writes` in order (a copy may read what a put before it wrote), each as [`BlobStore::put`] or
    /// [`BlobStore::copy`] would, and returns once all of them are durable. For the blobs that one metadata
    /// commit will refer to: local files sync each written file but each directory only once for the lot, where
    /// a put or copy each syncs its directory. On an error any of the writes may have been applied, each whole
    /// or not at all. The default applies them one by one.
    async fn write_all(&self, tenant: &TenantId, writes: Vec<BlobWrite>) -> Result<(), BlobError> {
        write_each(self, tenant, writes).await
    }
    /// Keys under `prefix` (relative to the tenant), sorted.
    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<String>, BlobError>;
    /// Deletes every blob whose key starts with `prefix` (a plain string prefix, as for [`BlobStore::list`]) and
    /// whatever an interrupted write to such a key left behind (a local staging file, which no listing shows);
    /// returns how many blobs were removed. What erasure uses, so that a crash during a write cannot leave a copy
    /// of erased content. The default lists and deletes.
    async fn delete_prefix(&self, tenant: &TenantId, prefix: &str) -> Result<u64, BlobError> {
        delete_listed(self, tenant, prefix).await
    }
    /// Deletes everything the tenant stores, interrupted writes included; returns how many objects were removed.
    async fn delete_all(&self, tenant: &TenantId) -> Result<u64, BlobError>;
    /// Total bytes the tenant stores.
    async fn usage_bytes(&self, tenant: &TenantId) -> Result<u64, BlobError>;
    /// Answers when the store is reachable.
    async fn ping(&self) -> Result<(), BlobError>;
}

/// [`BlobStore::write_all`] one write at a time, by [`BlobStore::put`] and [`BlobStore::copy`]: the default, and
/// what adapters that have nothing better fall back to.
pub async fn write_each<S: BlobStore + ?Sized>(
    store: &S,
    tenant: &TenantId,
    writes: Vec<BlobWrite>,
) -> Result<(), BlobError> {
    for write in writes {
        match write {
            BlobWrite::Put { key, bytes } => store.put(tenant, &key, bytes).await?,
            BlobWrite::PutIfAbsent { key, bytes } => {
                if !store.exists(tenant, &key).await? {
                    store.put(tenant, &key, bytes).await?;
                }
            }
            BlobWrite::Copy { from, to } => store.copy(tenant, &from, &to).await?,
        }
    }
    Ok(())
}

/// [`BlobStore::delete_prefix`] by [`BlobStore::list`] and [`BlobStore::delete`]: the default, and what adapters
/// that have nothing better fall back to.
pub async fn delete_listed<S: BlobStore + ?Sized>(
    store: &S,
    tenant: &TenantId,
    prefix: &str,
) -> Result<u64, BlobError> {
    let keys = store.list(tenant, prefix).await?;
    for key in &keys {
        store.delete(tenant, key).await?;
    }
    Ok(keys.len() as u64)
}

/// One write of [`BlobStore::write_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobWrite {
    /// Store `bytes` under `key`, replacing what it held.
    Put { key: String, bytes: Bytes },
    /// Store `bytes` under `key` unless it holds a blob already: for content-addressed keys (`raw/{sha256}`),
    /// whose blob cannot differ from the bytes.
    PutIfAbsent { key: String, bytes: Bytes },
    /// Store the bytes at `from` also at `to`, as [`BlobStore::copy`].
    Copy { from: String, to: String },
}

impl BlobWrite {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            BlobWrite::Put { key, .. } | BlobWrite::PutIfAbsent { key, .. } => key,
            BlobWrite::Copy { to, .. } => to,
        }
    }

    /// How many bytes this write holds in memory (none for a copy).
    pub fn held_bytes(&self) -> usize {
        match self {
            BlobWrite::Put { bytes, .. } | BlobWrite::PutIfAbsent { bytes, .. } => bytes.len(),
            BlobWrite::Copy { .. } => 0,
        }
    }
}

/// A blob-store failure.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob not found: {0}")]
    NotFound(String),
    #[error("invalid blob key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
}
