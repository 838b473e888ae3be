//! The in-memory search index: [`MemoryIndex`], a decorator around the [`ChunkIndex`] port that answers
//! `keyword_search` and `vector_search` from per-tenant in-memory structures ([`tenant::TenantIndex`]) and passes
//! every other call, writes included, to the store underneath.
//!
//! The store stays the system of record; the memory index is derived from it and never written directly. Before
//! each search it reads the tenant's chunk generation ([`IndexFeed::generation`], one indexed row), and when that
//! moved it reloads only the documents changed since ([`IndexFeed::changed_documents`]); the first search of a
//! tenant loads all of its chunks. The generation is bumped by triggers in the store on every chunk write, so
//! writes made by another process sharing the database, or by a transaction that bypasses this decorator
//! (`*_in_tx`), are seen just the same.
//!
//! This module also holds the [`IndexFeed`] implementations of both SQL stores (`sqlite.rs`, `postgres.rs`, over
//! the tables of `migrations/*/0007_search_generations.sql`).

mod postgres;
mod sqlite;
mod tenant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use frostbyte_core::index::{ChunkCounts, ChunkIndex, Hit, IndexRemoval, IndexedChunk, SearchFilter};
use frostbyte_core::search::IndexFeed;
use frostbyte_core::{StoreError, StoreResult, TenantId};

use tenant::TenantIndex;

/// Chunks read per page when a tenant's index is first built.
const LOAD_BATCH: usize = 2_048;
/// Documents reloaded per query of an incremental refresh.
const REFRESH_BATCH: usize = 256;
/// A refresh that touches at least this many documents, and more than half of those loaded, rebuilds the index.
const FULL_RELOAD_MIN: usize = 32;

/// One tenant's slot: the index (absent until first loaded) and a lock that lets one refresh run at a time.
#[derive(Default)]
struct TenantSlot {
    refresh: tokio::sync::Mutex<()>,
    index: RwLock<Option<TenantIndex>>,
}

impl TenantSlot {
    fn generation(&self) -> Option<u64> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|i| i.generation)
    }
}

/// The decorator; see the module documentation.
pub struct MemoryIndex {
    inner: Arc<dyn ChunkIndex>,
    feed: Arc<dyn IndexFeed>,
    tenants: Mutex<HashMap<TenantId, Arc<TenantSlot>>>,
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> StoreResult<T> {
    r.map_err(|_| StoreError::Internal("a search task panicked or was cancelled".into()))
}

impl MemoryIndex {
    /// Serves searches from memory over `inner`, following `feed` (normally the same store).
    pub fn new(inner: Arc<dyn ChunkIndex>, feed: Arc<dyn IndexFeed>) -> Self {
        MemoryIndex { inner, feed, tenants: Mutex::new(HashMap::new()) }
    }

    fn slot(&self, tenant: &TenantId) -> Arc<TenantSlot> {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(tenant.clone()).or_default().clone()
    }

    /// The tenant's index, brought up to the store's current generation.
    async fn fresh(&self, tenant: &TenantId) -> StoreResult<Arc<TenantSlot>> {
        let slot = self.slot(tenant);
        let current = self.feed.generation(tenant).await?;
        if slot.generation() == Some(current) {
            return Ok(slot);
        }
        {
            let _refreshing = slot.refresh.lock().await;
            match slot.generation() {
                Some(g) if g == current => {}
                Some(g) if g < current => self.refresh(tenant, &slot, g).await?,
                // Never loaded, or the store's counter went backwards: the tenant's rows were purged
                // (deprovisioning), so nothing cached may survive.
                _ => self.load(tenant, &slot).await?,
            }
        }
        Ok(slot)
    }

    /// Builds the tenant's index from all of its chunks.
    async fn load(&self, tenant: &TenantId, slot: &TenantSlot) -> StoreResult<()> {
        let started = std::time::Instant::now();
        // Read first: writes after this point are picked up by the next refresh.
        let generation = self.feed.generation(tenant).await?;
        let mut index = TenantIndex::new(generation);
        let mut after: Option<String> = None;
        loop {
            let batch = self.feed.entries(tenant, after.as_deref(), LOAD_BATCH).await?;
            let more = batch.len() == LOAD_BATCH;
            after = batch.last().map(|e| e.chunk_id.clone());
            index = joined(
                tokio::task::spawn_blocking(move || {
                    index.insert_all(batch);
                    index
                })
                .await,
            )?;
            if !more {
                break;
            }
        }
        tracing::info!(
            tenant = %tenant, chunks = index.len(), generation,
            duration_ms = started.elapsed().as_millis() as u64, "search index loaded"
        );
        *slot.index.write().unwrap_or_else(|e| e.into_inner()) = Some(index);
        Ok(())
    }

    /// Reloads the documents changed after generation `since`; when most of the tenant's documents changed (a
    /// reindex swap moves every chunk to another model, possibly of another dimension), rebuilds the whole index
    /// instead, so the contiguous vector block takes the new dimension.
    async fn refresh(&self, tenant: &TenantId, slot: &Arc<TenantSlot>, since: u64) -> StoreResult<()> {
        let changes = self.feed.changed_documents(tenant, since).await?;
        let known = slot.index.read().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |i| i.document_count());
        if changes.len() >= FULL_RELOAD_MIN && changes.len() * 2 > known {
            return self.load(tenant, slot).await;
        }
        let Some(generation) = changes.iter().map(|c| c.generation).max() else { return Ok(()) };
        let doc_ids: Vec<String> = changes.into_iter().map(|c| c.doc_id).collect();
        let mut entries = Vec::new();
        for ids in doc_ids.chunks(REFRESH_BATCH) {
            entries.extend(self.feed.document_entries(tenant, ids).await?);
        }
        let count = doc_ids.len();
        let slot = slot.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let mut guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
                if let Some(index) = guard.as_mut() {
                    for id in &doc_ids {
                        index.remove_document(id);
                    }
                    index.insert_all(entries);
                    index.generation = index.generation.max(generation);
                    index.maybe_compact();
                }
            })
            .await,
        )?;
        tracing::debug!(tenant = %tenant, documents = count, generation, "search index refreshed");
        Ok(())
    }

    async fn search<F>(&self, tenant: &TenantId, run: F) -> StoreResult<Vec<Hit>>
    where
        F: FnOnce(&TenantIndex) -> Vec<Hit> + Send + 'static,
    {
        let slot = self.fresh(tenant).await?;
        joined(
            tokio::task::spawn_blocking(move || {
                slot.index.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(run).unwrap_or_default()
            })
            .await,
        )
    }
}

#[async_trait]
impl ChunkIndex for MemoryIndex {
    async fn replace_document_chunks(
        &self,
        tenant: &TenantId,
        doc_id: &str,
        chunks: &[IndexedChunk],
    ) -> StoreResult<()> {
        self.inner.replace_document_chunks(tenant, doc_id, chunks).await
    }

    async fn replace_document_chunks_at(
        &self,
        tenant: &TenantId,
        doc_id: &str,
        generation: u64,
        chunks: &[IndexedChunk],
    ) -> StoreResult<()> {
        self.inner.replace_document_chunks_at(tenant, doc_id, generation, chunks).await
    }

    async fn delete_document(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<IndexRemoval> {
        self.inner.delete_document(tenant, doc_id).await
    }

    async fn keyword_search(
        &self,
        tenant: &TenantId,
        query: &str,
        filter: &SearchFilter,
        top_k: usize,
    ) -> StoreResult<Vec<Hit>> {
        if top_k == 0 || frostbyte_core::index::keyword_terms(query).is_empty() {
            return Ok(Vec::new());
        }
        let (query, filter) = (query.to_owned(), filter.clone());
        self.search(tenant, move |index| index.keyword(&query, &filter, top_k)).await
    }

    async fn vector_search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        filter: &SearchFilter,
        top_k: usize,
    ) -> StoreResult<Vec<Hit>> {
        if top_k == 0 || query.is_empty() {
            return Ok(Vec::new());
        }
        let (query, filter) = (query.to_vec(), filter.clone());
        self.search(tenant, move |index| index.vector(&query, &filter, top_k)).await
    }

    async fn get_chunk(&self, tenant: &TenantId, chunk_id: &str) -> StoreResult<Option<IndexedChunk>> {
        self.inner.get_chunk(tenant, chunk_id).await
    }

    async fn get_chunks(&self, tenant: &TenantId, chunk_ids: &[String]) -> StoreResult<Vec<IndexedChunk>> {
        self.inner.get_chunks(tenant, chunk_ids).await
    }

    async fn document_chunks(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<Vec<IndexedChunk>> {
        self.inner.document_chunks(tenant, doc_id).await
    }

    async fn count(&self, tenant: &TenantId) -> StoreResult<ChunkCounts> {
        self.inner.count(tenant).await
    }
}
