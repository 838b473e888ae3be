//! Re-embedding a tenant's chunks with another model: the shadow-vector port ([`ShadowIndex`]) behind the
//! `documents.reindex` pipeline processor.
//!
//! A reindex run writes the new vectors beside the live ones, in shadow rows keyed by (tenant, run, chunk) and
//! tagged with the chunk's `text_hash` at the time it was embedded. Searches keep answering from the live
//! vectors until [`ShadowIndex::swap_shadow`] moves every chunk of the scope to the new model in one
//! transaction. Contracts every implementation keeps (held to `frostbyte-adapters/tests/reindex_contract.rs`):
//!
//! - every method is scoped by the tenant passed first; another tenant's chunks are never read or changed;
//! - a shadow row belongs to its chunk: when the chunk goes (erasure, replacement, purge) its shadow rows go in
//!   the same transaction, so nothing derived from an erased document survives in the shadow table, and a shadow
//!   vector is only stored for a chunk that exists with the same `text_hash`;
//! - the swap is all or nothing: it commits only when every chunk of the scope has a shadow vector of the run's
//!   model for its current text ([`SwapOutcome::Incomplete`] otherwise, with nothing changed); it then updates the
//!   chunk rows (so the change feed of `migrations/*/0007` tells every in-memory index), removes the run's shadow
//!   rows, applies the optional tenant config update as a compare-and-set on `config_version` (`Conflict` when it
//!   moved), and appends the audit events, all in that one transaction;
//! - shadow rows are resumable: writing a chunk's vector again replaces it, and [`ShadowIndex::reindex_pending`]
//!   lists only the chunks still lacking one, so a resumed run embeds only what is left.

use async_trait::async_trait;
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::tenant::TenantConfig;

/// What a reindex run covers and produces: the run (which owns the shadow rows), the model id of the new
/// vectors, and the collection (`None`: every chunk of the tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexTarget {
    pub run_id: Uuid,
    /// The new vectors' model id (`hash-v1-256`), what the chunks' `embed_model` becomes at the swap.
    pub embed_model: String,
    pub collection: Option<String>,
}

/// A chunk that still needs a shadow vector: what to embed, and the text hash it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexCandidate {
    pub chunk_id: String,
    pub doc_id: String,
    /// The chunk's stored (policy-processed) text: the same text the pipeline embedded.
    pub text: String,
    pub text_hash: String,
}

/// A new vector for one chunk, embedded from the text with `text_hash`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowVector {
    pub chunk_id: String,
    pub text_hash: String,
    pub vector: Vec<f32>,
}

/// The swap: the target's chunks move to the shadow vectors, and optionally the tenant's config changes.
#[derive(Debug, Clone)]
pub struct ShadowSwap {
    /// `(expected config_version, new config)`: applied as a compare-and-set in the swap's transaction.
    pub config: Option<(i64, TenantConfig)>,
    /// Appended to the tenant's audit chain in the swap's transaction, in order.
    pub audit: Vec<NewAuditEvent>,
}

/// How a swap ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOutcome {
    /// Every chunk of the scope now carries its shadow vector; the run's shadow rows are gone.
    Swapped { chunks: u64 },
    /// `missing` chunks of the scope have no shadow vector for their current text (written or replaced since they
    /// were embedded): nothing was changed. Embed them ([`ShadowIndex::reindex_pending`]) and swap again.
    Incomplete { missing: u64 },
}

/// Shadow vectors for re-embedding, implemented by both SQL stores. See the module documentation.
#[async_trait]
pub trait ShadowIndex: Send + Sync + 'static {
    /// How many chunks the target covers (quarantined ones included: they move with the rest).
    async fn reindex_scope(&self, tenant: &TenantId, target: &ReindexTarget) -> StoreResult<u64>;
    /// Up to `limit` chunks of the target, ordered by chunk id after `after`, that have no shadow vector of the
    /// run's model for their current text.
    async fn reindex_pending(
        &self,
        tenant: &TenantId,
        target: &ReindexTarget,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ReindexCandidate>>;
    /// Stores (or replaces) the run's shadow vectors; a vector whose chunk is gone or whose text changed since it
    /// was read is skipped. Returns how many were stored.
    async fn put_shadow_vectors(
        &self,
        tenant: &TenantId,
        target: &ReindexTarget,
        vectors: &[ShadowVector],
    ) -> StoreResult<u64>;
    /// How many shadow rows the run has.
    async fn shadow_count(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<u64>;
    /// The atomic swap; see the module documentation. `NotFound` for an unknown tenant, `Conflict` when the config
    /// compare-and-set fails (nothing changed).
    async fn swap_shadow(
        &self,
        tenant: &TenantId,
        target: &ReindexTarget,
        swap: ShadowSwap,
    ) -> StoreResult<SwapOutcome>;
    /// Removes the run's shadow rows (a cancelled or failed run); returns how many.
    async fn discard_shadow(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<u64>;
    /// Removes the tenant's shadow rows of every run other than `keep` that is no longer pending, validating or
    /// running (left behind by a process that died); returns how many.
    async fn discard_stale_shadows(&self, tenant: &TenantId, keep: Uuid) -> StoreResult<u64>;
}
