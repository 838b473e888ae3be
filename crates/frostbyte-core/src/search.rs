//! The feed a derived search index follows: the [`IndexFeed`] port, which both SQL stores implement.
//!
//! The chunk index in the system of record ([`crate::index`]) is the truth; a faster index held in memory is
//! derived from it and must notice every write, whichever process made it. The stores keep, per tenant, a
//! generation counter that every chunk write bumps in its own transaction, and per document the generation of its
//! last change. A derived index remembers the generation it reflects, compares it with [`IndexFeed::generation`]
//! before answering, and reloads only the documents [`IndexFeed::changed_documents`] names.
//!
//! Contracts (held to `frostbyte-adapters/tests/search_contract.rs`):
//! - generations only grow, and a write that is visible is reflected in the generation read after it;
//! - a document whose chunks changed at generation `g` is listed by `changed_documents(t, s)` for every `s < g`;
//! - the tenant is the first argument; another tenant's rows are never returned.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreResult;
use crate::ids::TenantId;

/// What a derived index needs of one chunk: ids, text (for keyword statistics), the filterable attributes and
/// the vector. Provenance for display is read from [`crate::index::ChunkIndex::get_chunk`] when a hit is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub chunk_id: String,
    pub doc_id: String,
    pub text: String,
    pub quarantined: bool,
    pub classification: Option<String>,
    pub collection: Option<String>,
    /// The document's caller-supplied metadata (a JSON object).
    pub metadata: serde_json::Value,
    pub ingested_at: DateTime<Utc>,
    pub embed_model: String,
    pub vector: Vec<f32>,
}

/// A document whose chunks changed, and the generation of its latest change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentChange {
    pub doc_id: String,
    pub generation: u64,
}

/// Change tracking over the chunk index, implemented by both SQL stores.
#[async_trait]
pub trait IndexFeed: Send + Sync + 'static {
    /// The tenant's current chunk generation (0 before its first chunk write).
    async fn generation(&self, tenant: &TenantId) -> StoreResult<u64>;
    /// Documents whose chunks changed after generation `since`, with the generation of each one's last change.
    async fn changed_documents(&self, tenant: &TenantId, since: u64) -> StoreResult<Vec<DocumentChange>>;
    /// Up to `limit` of the tenant's chunks ordered by chunk id, starting after `after` (keyset paging).
    async fn entries(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> StoreResult<Vec<IndexEntry>>;
    /// Every chunk of these documents (none for an erased document).
    async fn document_entries(&self, tenant: &TenantId, doc_ids: &[String]) -> StoreResult<Vec<IndexEntry>>;
}
