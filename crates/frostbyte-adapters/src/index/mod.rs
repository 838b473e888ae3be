//! The chunk index ([`ChunkIndex`](frostbyte_core::index::ChunkIndex)) on both SQL stores: the `chunks` table of
//! `migrations/*/0003_chunks.sql`, with SQLite FTS5 or a PostgreSQL tsvector column for keywords.
//!
//! Both dialects share the encoding of vectors (little-endian f32 bytes) and heading paths (JSON text), the
//! keyword terms of a query ([`keyword_terms`](frostbyte_core::index::keyword_terms)) and the exact vector search:
//! filtered rows of the query's dimension are read in keyset-paged batches and scored in Rust, keeping the best
//! `top_k` in a heap. Filters are SQL predicates, so they apply before any cut to `top_k`.
//!
//! `shadow_{sqlite,postgres}.rs` implement [`ShadowIndex`](frostbyte_core::reindex::ShadowIndex), the shadow
//! vectors of a reindex run and their atomic swap onto `chunks` (`migrations/*/0014_chunk_vectors_shadow.sql`).

pub(crate) mod postgres;
mod shadow_postgres;
mod shadow_sqlite;
pub(crate) mod sqlite;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use frostbyte_core::index::{Hit, IndexedChunk, sort_hits};
use frostbyte_core::{StoreError, StoreResult};

use crate::codec::corrupt;

/// Rows read per batch by the exact vector search.
const VECTOR_BATCH: i64 = 512;

pub(crate) fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn decode_vector(bytes: &[u8]) -> StoreResult<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(corrupt("chunks.vector"));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

pub(crate) fn encode_headings(path: &[String]) -> StoreResult<String> {
    serde_json::to_string(path).map_err(|_| StoreError::Internal("heading path could not be encoded".into()))
}

pub(crate) fn decode_headings(stored: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(stored).map_err(|_| corrupt("chunks.heading_path"))
}

pub(crate) fn decode_u32(stored: i64, column: &'static str) -> StoreResult<u32> {
    u32::try_from(stored).map_err(|_| corrupt(column))
}

pub(crate) fn decode_opt_u32(stored: Option<i64>, column: &'static str) -> StoreResult<Option<u32>> {
    stored.map(|v| decode_u32(v, column)).transpose()
}

/// Every chunk must belong to the document being replaced, and its metadata must be an object (the metadata
/// filter matches top-level keys).
pub(crate) fn check_chunks(doc_id: &str, chunks: &[IndexedChunk]) -> StoreResult<()> {
    for chunk in chunks {
        if chunk.doc_id != doc_id {
            return Err(StoreError::Internal("a chunk's doc_id differs from the document being replaced".into()));
        }
        if !chunk.metadata.is_object() {
            return Err(StoreError::Internal("chunk metadata must be a JSON object".into()));
        }
    }
    Ok(())
}

/// A candidate in the top-k heap, ordered so that the heap's top is the worst kept hit.
struct Candidate(Hit);

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// "Greater" is worse: lower score, then later chunk id.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.score.total_cmp(&self.0.score).then_with(|| self.0.chunk_id.cmp(&other.0.chunk_id))
    }
}

/// Keeps the best `k` hits offered to it (by score, ties by chunk id).
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::with_capacity(k.min(4096) + 1) }
    }

    pub(crate) fn offer(&mut self, hit: Hit) {
        if self.k == 0 {
            return;
        }
        self.heap.push(Candidate(hit));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The score of the worst kept hit once `k` are kept (what a newcomer must reach).
    pub(crate) fn worst_if_full(&self) -> Option<f64> {
        if self.k == 0 || self.heap.len() < self.k {
            return None;
        }
        self.heap.peek().map(|c| c.0.score)
    }

    pub(crate) fn into_sorted(self) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self.heap.into_iter().map(|c| c.0).collect();
        sort_hits(&mut hits);
        hits
    }
}

/// Cosine of the query (with its norm precomputed) and a stored vector; `None` for a zero or non-finite vector.
pub(crate) fn score(query: &[f32], query_norm: f32, stored: &[f32]) -> Option<f64> {
    let norm = frostbyte_core::embed::l2_norm(stored);
    if norm == 0.0 || !norm.is_finite() || query_norm == 0.0 {
        return None;
    }
    let cos = frostbyte_core::embed::dot(query, stored) / (norm * query_norm);
    cos.is_finite().then_some(f64::from(cos.clamp(-1.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f64) -> Hit {
        Hit { chunk_id: id.into(), doc_id: "d".into(), score }
    }

    #[test]
    fn vectors_round_trip_and_reject_torn_bytes() {
        let v = vec![1.5, -0.25, f32::MIN_POSITIVE, 0.0];
        assert_eq!(decode_vector(&encode_vector(&v)).unwrap(), v);
        assert!(decode_vector(&[0, 1, 2]).is_err());
    }

    #[test]
    fn top_k_keeps_the_best_with_ties_by_id() {
        let mut top = TopK::new(3);
        for (id, s) in [("e", 0.1), ("b", 0.9), ("a", 0.5), ("d", 0.9), ("c", 0.5)] {
            top.offer(hit(id, s));
        }
        let ids: Vec<String> = top.into_sorted().into_iter().map(|h| h.chunk_id).collect();
        assert_eq!(ids, ["b", "d", "a"]);
        let mut none = TopK::new(0);
        none.offer(hit("a", 1.0));
        assert!(none.into_sorted().is_empty());
    }
}
