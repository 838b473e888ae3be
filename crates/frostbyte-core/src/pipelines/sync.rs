//! Sync state for the `documents.sync` processor: per (tenant, source, path), what Frostbyte last took in from a
//! file (size, modification stamp or ETag, sha256, the document it became). A later sync compares a listing with
//! these rows, so an unchanged corpus is recognised from metadata alone, without reading a byte of it.
//!
//! The rows are bookkeeping beside the documents, not documents: every document change a sync makes (intake,
//! replacement, erasure) is audited by the use-case that makes it. A row whose document was erased or replaced
//! by someone else is reported as such ([`SyncedFileState::document_sha256`]) so the next sync repairs it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::StoreResult;
use crate::ids::TenantId;

/// What one sync recorded for one file of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedFile {
    /// The source as the run named it after normalisation (`/srv/corpus`, `s3://bucket/prefix`).
    pub source: String,
    /// The file's path inside the source, `/`-separated.
    pub path: String,
    pub size_bytes: u64,
    /// The modification time (local files, nanoseconds since the epoch) or the ETag (object stores) seen when
    /// the file was read.
    pub version: String,
    /// Lowercase hex sha256 of the bytes taken in.
    pub sha256: String,
    pub doc_id: Uuid,
    pub synced_at: DateTime<Utc>,
}

/// A recorded file with its document as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedFileState {
    pub file: SyncedFile,
    /// The live document's raw sha256; `None` when the document is gone (erased, purged).
    pub document_sha256: Option<String>,
}

/// The sync state, implemented by both metadata stores. Tenant first; rows of another tenant are never seen.
#[async_trait]
pub trait SyncStore: Send + Sync {
    /// Every file recorded for `source`, ordered by path, each with its document's current state.
    async fn sync_files(&self, tenant: &TenantId, source: &str) -> StoreResult<Vec<SyncedFileState>>;
    /// Records what was taken in from one file, replacing an earlier record of the same (source, path).
    async fn put_sync_file(&self, tenant: &TenantId, file: &SyncedFile) -> StoreResult<()>;
    /// Forgets one file; true when there was a record.
    async fn delete_sync_file(&self, tenant: &TenantId, source: &str, path: &str) -> StoreResult<bool>;
}
