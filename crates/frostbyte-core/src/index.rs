//! The chunk index port: indexed chunks (text, provenance, vector) and the keyword and vector searches over them,
//! plus reciprocal rank fusion ([`rrf_fuse`]) to combine the two.
//!
//! The index lives in the system of record (DESIGN.md §2.2): chunk rows, their vectors (as bytes) and their
//! keyword entries are written in one transaction, so replacing or erasing a document is atomic and idempotent.
//! The exact vector search here is also the oracle an approximate index is checked against.
//!
//! Contracts every implementation keeps (held to `frostbyte-adapters/tests/index_contract.rs`):
//! - every method is scoped by the tenant passed first; another tenant's chunk ids are simply absent;
//! - searches never return quarantined chunks;
//! - a [`SearchFilter`] is applied inside the search, before ranking is cut to `top_k`, so a filtered search
//!   returns `top_k` hits whenever at least that many chunks match;
//! - user query text never reaches a query language unsanitised (see [`keyword_terms`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreResult;
use crate::ids::TenantId;

/// At most this many distinct terms of a keyword query are searched for.
pub const MAX_KEYWORD_TERMS: usize = 32;
/// Terms longer than this many characters are cut to it.
pub const MAX_KEYWORD_TERM_CHARS: usize = 64;

/// One chunk as the index stores it: the chunk, its policy outcome, its vector and its document's provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedChunk {
    pub chunk_id: String,
    pub doc_id: String,
    /// 0-based position in the document.
    pub position: u32,
    pub text: String,
    /// Character range in the document text.
    pub start: u32,
    pub end: u32,
    pub page_start: Option<u32>,
    pub page_end: Option<u32>,
    pub heading_path: Vec<String>,
    /// The chunk kind as its stable name (`text`, `table`, ...).
    pub kind: String,
    /// Lowercase hex sha256 of `text`.
    pub text_hash: String,
    pub classification: Option<String>,
    pub collection: Option<String>,
    /// Caller-supplied document metadata (a JSON object); filterable by exact match on top-level keys.
    pub metadata: serde_json::Value,
    /// Held back by policy: stored (so erasure and re-policy find it) but never returned by a search.
    pub quarantined: bool,
    /// The model id of `vector` (`hash-v1-384`).
    pub embed_model: String,
    pub vector: Vec<f32>,
    pub source_sha256: String,
    pub original_filename: String,
    pub ingested_at: DateTime<Utc>,
}

/// Restricts a search. Every present field must match (AND); `None` means no restriction. An empty list
/// matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchFilter {
    pub doc_ids: Option<Vec<String>>,
    /// Any of these classifications.
    pub classification: Option<Vec<String>>,
    pub collection: Option<String>,
    /// Inclusive bounds on the document's ingestion time.
    pub ingested_from: Option<DateTime<Utc>>,
    pub ingested_to: Option<DateTime<Utc>>,
    /// Each key must be present at the top level of the chunk's metadata with exactly this value.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One search result. Scores are higher-is-better and comparable only within one result list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub chunk_id: String,
    pub doc_id: String,
    pub score: f64,
}

/// What [`ChunkIndex::delete_document`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRemoval {
    pub chunks: u64,
    pub vectors: u64,
    pub keyword: u64,
}

/// How much a tenant has indexed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCounts {
    pub documents: u64,
    pub chunks: u64,
}

/// The chunk index, implemented by both SQL stores.
#[async_trait]
pub trait ChunkIndex: Send + Sync + 'static {
    /// Replaces every chunk of `doc_id` with `chunks` in one transaction: the old chunks, vectors and keyword
    /// entries go, the new ones arrive, and no reader sees a mix. Re-running with the same chunks leaves the same
    /// state. Every chunk must carry `doc_id` (else `Internal`: a caller bug); `NotFound` for an unknown tenant.
    async fn replace_document_chunks(
        &self,
        tenant: &TenantId,
        doc_id: &str,
        chunks: &[IndexedChunk],
    ) -> StoreResult<()>;
    /// Removes every chunk of the document with its vector and keyword entries (erasure); returns the counts.
    /// Deleting an absent document removes nothing and succeeds.
    async fn delete_document(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<IndexRemoval>;
    /// [`ChunkIndex::replace_document_chunks`], committed only while a live document `doc_id` is at `generation`
    /// (checked inside the index transaction, holding the document row): `NotFound` when the document was erased
    /// (or never existed), `Conflict` when a replacement moved it on. The pipeline's guard against resurrecting an
    /// erased document or overwriting a newer version (see `crate::lifecycle`).
    async fn replace_document_chunks_at(
        &self,
        tenant: &TenantId,
        doc_id: &str,
        generation: u64,
        chunks: &[IndexedChunk],
    ) -> StoreResult<()>;
    /// Full-text search (BM25 on SQLite, `ts_rank_cd` on PostgreSQL) for chunks containing any term of `query`
    /// (see [`keyword_terms`]), best first. A query without terms finds nothing.
    async fn keyword_search(
        &self,
        tenant: &TenantId,
        query: &str,
        filter: &SearchFilter,
        top_k: usize,
    ) -> StoreResult<Vec<Hit>>;
    /// Exact cosine search over the tenant's matching vectors of the query's dimension, best first (ties by
    /// chunk id). Vectors of another dimension are skipped.
    async fn vector_search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        filter: &SearchFilter,
        top_k: usize,
    ) -> StoreResult<Vec<Hit>>;
    /// One chunk, quarantined or not (callers that show text must check `quarantined`).
    async fn get_chunk(&self, tenant: &TenantId, chunk_id: &str) -> StoreResult<Option<IndexedChunk>>;
    /// The chunks among `chunk_ids` that exist, quarantined ones included, in any order: one read for a page of
    /// search hits instead of one per hit.
    async fn get_chunks(&self, tenant: &TenantId, chunk_ids: &[String]) -> StoreResult<Vec<IndexedChunk>>;
    /// A document's chunks by position, quarantined ones included.
    async fn document_chunks(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<Vec<IndexedChunk>>;
    async fn count(&self, tenant: &TenantId) -> StoreResult<ChunkCounts>;
}

/// The terms of a keyword query: maximal runs of letters and digits, lowercased, deduplicated in order of first
/// appearance, at most [`MAX_KEYWORD_TERMS`] of them, each cut to [`MAX_KEYWORD_TERM_CHARS`] characters.
///
/// Terms contain only alphanumeric characters, so no query-language syntax (quotes, `*`, `-`, `:`, parentheses)
/// survives; operators such as `NEAR` or `OR` become plain terms once each term is quoted by the adapter.
pub fn keyword_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let term: String = word.to_lowercase().chars().take(MAX_KEYWORD_TERM_CHARS).collect();
        if !terms.contains(&term) {
            terms.push(term);
            if terms.len() == MAX_KEYWORD_TERMS {
                break;
            }
        }
    }
    terms
}

/// Reciprocal rank fusion: each list adds `weight / (k + rank)` (rank from 1) to the score of every hit in it;
/// hits are identified by chunk id. Returns the best `top_k` by fused score (ties by chunk id). `k` is
/// conventionally 60.
pub fn rrf_fuse(lists: &[(&[Hit], f64)], k: f64, top_k: usize) -> Vec<Hit> {
    let mut fused: HashMap<&str, Hit> = HashMap::new();
    for (hits, weight) in lists {
        for (i, hit) in hits.iter().enumerate() {
            let add = weight / (k + (i + 1) as f64);
            fused.entry(hit.chunk_id.as_str()).and_modify(|h| h.score += add).or_insert_with(|| Hit {
                chunk_id: hit.chunk_id.clone(),
                doc_id: hit.doc_id.clone(),
                score: add,
            });
        }
    }
    let mut out: Vec<Hit> = fused.into_values().collect();
    sort_hits(&mut out);
    out.truncate(top_k);
    out
}

/// Sorts hits best first, ties by chunk id, so results are deterministic.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk_id.cmp(&b.chunk_id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f64) -> Hit {
        Hit { chunk_id: id.into(), doc_id: format!("doc-{id}"), score }
    }

    #[test]
    fn terms_drop_syntax_and_dedupe() {
        assert_eq!(keyword_terms("\"Hello\" *world* NEAR(a:b) -x hello"), ["hello", "world", "near", "a", "b", "x"]);
        assert!(keyword_terms("").is_empty());
        assert!(keyword_terms("\" * : - ( ) 🦀🦀").is_empty());
        assert_eq!(keyword_terms("Café naïve"), ["café", "naïve"]);
    }

    #[test]
    fn terms_are_bounded() {
        let long: String = (0..5_000).map(|i| format!("w{i} ")).collect();
        let terms = keyword_terms(&long);
        assert_eq!(terms.len(), MAX_KEYWORD_TERMS);
        assert_eq!(keyword_terms(&"a".repeat(10_000))[0].chars().count(), MAX_KEYWORD_TERM_CHARS);
    }

    #[test]
    fn rrf_rewards_agreement_and_respects_weights() {
        let keyword = [hit("a", 9.0), hit("b", 5.0), hit("c", 1.0)];
        let vector = [hit("c", 0.9), hit("b", 0.8), hit("d", 0.1)];
        let fused = rrf_fuse(&[(&keyword, 1.0), (&vector, 1.0)], 60.0, 10);
        let ids: Vec<&str> = fused.iter().map(|h| h.chunk_id.as_str()).collect();
        // c is 3rd and 1st (1/63 + 1/61), b 2nd in both (2/62), a only 1st once (1/61), d only 3rd once.
        assert_eq!(ids, ["c", "b", "a", "d"]);
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert!((fused[1].score - 2.0 / 62.0).abs() < 1e-12);
        assert_eq!(fused[1].doc_id, "doc-b");

        let vector_only = rrf_fuse(&[(&keyword, 0.0), (&vector, 1.0)], 60.0, 2);
        let ids: Vec<&str> = vector_only.iter().map(|h| h.chunk_id.as_str()).collect();
        assert_eq!(ids, ["c", "b"]);
    }

    #[test]
    fn rrf_of_nothing_is_empty_and_ties_break_by_id() {
        assert!(rrf_fuse(&[], 60.0, 5).is_empty());
        let one = [hit("z", 1.0)];
        let two = [hit("y", 1.0)];
        let fused = rrf_fuse(&[(&one, 1.0), (&two, 1.0)], 60.0, 5);
        assert_eq!(fused.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(), ["y", "z"]);
    }
}
