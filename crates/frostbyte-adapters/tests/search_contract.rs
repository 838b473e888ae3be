//! The `IndexFeed` contract and the in-memory search index (`MemoryIndex`) held against the store's exact search
//! (the oracle), on SQLite always and on PostgreSQL when `FROSTBYTE_TEST_POSTGRES_URL` is set.
//!
//! ```sh
//! createdb -h 127.0.0.1 -U postgres fb_search
//! FROSTBYTE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/fb_search \
//!     cargo test -p frostbyte-adapters --test search_contract
//! ```

use frostbyte_adapters::search::MemoryIndex;
use frostbyte_core::embed::HashEmbedder;
use frostbyte_core::index::{ChunkIndex, Hit, IndexedChunk, SearchFilter};
use serde_json::json;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    generations_grow_with_every_chunk_write_and_name_the_document,
    feed_entries_page_by_chunk_id_and_stay_in_their_tenant,
    memory_vector_search_equals_the_exact_oracle,
    memory_index_follows_writes_that_bypass_it,
    memory_keyword_search_ranks_by_bm25_with_filters_inside,
);

const WORDS: [&str; 24] = [
    "river", "stone", "engine", "garden", "signal", "winter", "copper", "lantern", "harbor", "meadow", "cipher",
    "orchard", "glacier", "thunder", "canvas", "beacon", "saddle", "quarry", "violet", "falcon", "ember", "marble",
    "tundra", "willow",
];

/// Deterministic text of `n` words chosen by `seed`.
fn text(seed: usize, n: usize) -> String {
    (0..n).map(|i| WORDS[(seed * 7 + i * 13 + seed / 3) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

fn chunk(doc_id: &str, position: u32, text: &str, meta: serde_json::Value) -> IndexedChunk {
    let text_hash = frostbyte_core::chunk::text_hash(text);
    IndexedChunk {
        chunk_id: frostbyte_core::chunk::chunk_id(doc_id, position, &text_hash).to_string(),
        doc_id: doc_id.into(),
        position,
        text: text.into(),
        start: 0,
        end: u32::try_from(text.chars().count()).unwrap(),
        page_start: None,
        page_end: None,
        heading_path: vec![],
        kind: "text".into(),
        text_hash,
        classification: Some("internal".into()),
        collection: Some("c".into()),
        metadata: meta,
        quarantined: false,
        embed_model: "hash-v1-96".into(),
        vector: HashEmbedder::new(96).unwrap().embed_text(text).unwrap(),
        source_sha256: "ab".repeat(32),
        original_filename: format!("{doc_id}.txt"),
        ingested_at: frostbyte_core::now(),
    }
}

fn memory(h: &Harness) -> MemoryIndex {
    MemoryIndex::new(h.shared_index(), h.feed())
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk_id.as_str()).collect()
}

async fn generations_grow_with_every_chunk_write_and_name_the_document(h: &Harness) {
    let t = tenant(h, "gen").await;
    let feed = h.feed();
    assert_eq!(feed.generation(&t).await.unwrap(), 0);
    h.index().replace_document_chunks(&t, "d1", &[chunk("d1", 0, "river stone", json!({}))]).await.unwrap();
    let g1 = feed.generation(&t).await.unwrap();
    assert!(g1 > 0);
    h.index().replace_document_chunks(&t, "d2", &[chunk("d2", 0, "engine", json!({}))]).await.unwrap();
    let g2 = feed.generation(&t).await.unwrap();
    assert!(g2 > g1);
    let changed = feed.changed_documents(&t, g1).await.unwrap();
    assert_eq!(changed.iter().map(|c| c.doc_id.as_str()).collect::<Vec<_>>(), ["d2"]);
    assert_eq!(changed[0].generation, g2);
    h.index().delete_document(&t, "d1").await.unwrap();
    let g3 = feed.generation(&t).await.unwrap();
    assert!(g3 > g2);
    let changed = feed.changed_documents(&t, g2).await.unwrap();
    assert_eq!(changed.iter().map(|c| c.doc_id.as_str()).collect::<Vec<_>>(), ["d1"]);
    assert!(feed.document_entries(&t, &["d1".into()]).await.unwrap().is_empty(), "erased");
    // New chunks for a document whose change row already holds the current generation (a reader synced at g3
    // has seen it erased) move the generation again and name it.
    h.index().replace_document_chunks(&t, "d1", &[chunk("d1", 0, "copper", json!({}))]).await.unwrap();
    let g4 = feed.generation(&t).await.unwrap();
    assert!(g4 > g3);
    let changed = feed.changed_documents(&t, g3).await.unwrap();
    assert_eq!(changed.iter().map(|c| (c.doc_id.as_str(), c.generation)).collect::<Vec<_>>(), [("d1", g4)]);
    assert_eq!(feed.document_entries(&t, &["d1".into()]).await.unwrap().len(), 1);
    // Replacing chunks that exist (delete and insert in one write) moves it too.
    h.index().replace_document_chunks(&t, "d2", &[chunk("d2", 0, "ember", json!({}))]).await.unwrap();
    let g5 = feed.generation(&t).await.unwrap();
    assert!(g5 > g4);
    let changed = feed.changed_documents(&t, g4).await.unwrap();
    assert_eq!(changed.iter().map(|c| (c.doc_id.as_str(), c.generation)).collect::<Vec<_>>(), [("d2", g5)]);
    // Another tenant's writes move only its own generation.
    let other = tenant(h, "gen").await;
    h.index().replace_document_chunks(&other, "d9", &[chunk("d9", 0, "garden", json!({}))]).await.unwrap();
    assert_eq!(feed.generation(&t).await.unwrap(), g5);
    assert!(feed.changed_documents(&t, g5).await.unwrap().is_empty());
}

async fn feed_entries_page_by_chunk_id_and_stay_in_their_tenant(h: &Harness) {
    let t = tenant(h, "feed").await;
    let other = tenant(h, "feed").await;
    for d in 0..5 {
        let doc = format!("d{d}");
        let chunks: Vec<IndexedChunk> =
            (0..3).map(|p| chunk(&doc, p, &text(d * 3 + p as usize, 5), json!({"d": d}))).collect();
        h.index().replace_document_chunks(&t, &doc, &chunks).await.unwrap();
    }
    h.index().replace_document_chunks(&other, "x", &[chunk("x", 0, "winter", json!({}))]).await.unwrap();
    let feed = h.feed();
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = feed.entries(&t, after.as_deref(), 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.chunk_id.clone());
        all.extend(page);
    }
    assert_eq!(all.len(), 15);
    assert!(all.windows(2).all(|w| w[0].chunk_id < w[1].chunk_id));
    assert!(all.iter().all(|e| e.doc_id != "x" && e.vector.len() == 96 && e.metadata.is_object()));
    let some = feed.document_entries(&t, &["d1".into(), "d3".into(), "x".into()]).await.unwrap();
    assert_eq!(some.len(), 6);
}

async fn memory_vector_search_equals_the_exact_oracle(h: &Harness) {
    let t = tenant(h, "oracle").await;
    for d in 0..60 {
        let doc = format!("doc{d:02}");
        let team = if d % 3 == 0 { "ops" } else { "dev" };
        let chunks: Vec<IndexedChunk> =
            (0..4).map(|p| chunk(&doc, p, &text(d * 4 + p as usize, 6), json!({"team": team}))).collect();
        h.index().replace_document_chunks(&t, &doc, &chunks).await.unwrap();
    }
    let mem = memory(h);
    let embedder = HashEmbedder::new(96).unwrap();
    let ops =
        SearchFilter { metadata: Some(json!({"team": "ops"}).as_object().unwrap().clone()), ..Default::default() };
    let docs = SearchFilter { doc_ids: Some(vec!["doc07".into(), "doc33".into()]), ..Default::default() };
    for q in 0..15 {
        let v = embedder.embed_text(&text(q * 5 + 1, 3)).unwrap();
        for filter in [SearchFilter::default(), ops.clone(), docs.clone()] {
            for k in [1, 5, 20] {
                let exact = h.index().vector_search(&t, &v, &filter, k).await.unwrap();
                let fast = mem.vector_search(&t, &v, &filter, k).await.unwrap();
                assert_eq!(ids(&fast), ids(&exact), "query {q}, k {k}, filter {filter:?}");
                for (a, b) in fast.iter().zip(&exact) {
                    assert!((a.score - b.score).abs() < 1e-5, "{} vs {}", a.score, b.score);
                }
            }
        }
    }
}

async fn memory_index_follows_writes_that_bypass_it(h: &Harness) {
    let t = tenant(h, "follow").await;
    let mem = memory(h);
    let any = SearchFilter::default();
    assert!(mem.keyword_search(&t, "lantern", &any, 5).await.unwrap().is_empty());
    let first = chunk("d1", 0, "lantern harbor", json!({}));
    h.index().replace_document_chunks(&t, "d1", std::slice::from_ref(&first)).await.unwrap();
    assert_eq!(ids(&mem.keyword_search(&t, "lantern", &any, 5).await.unwrap()), [first.chunk_id.as_str()]);
    // Replaced by a writer that is not the decorator: the old chunk goes, the new one arrives.
    let second = chunk("d1", 0, "falcon ember", json!({}));
    h.index().replace_document_chunks(&t, "d1", std::slice::from_ref(&second)).await.unwrap();
    assert!(mem.keyword_search(&t, "lantern", &any, 5).await.unwrap().is_empty());
    let v = HashEmbedder::new(96).unwrap().embed_text("falcon ember").unwrap();
    assert_eq!(ids(&mem.vector_search(&t, &v, &any, 5).await.unwrap()), [second.chunk_id.as_str()]);
    // Writes through the decorator are seen too; erasure removes the vectors.
    mem.delete_document(&t, "d1").await.unwrap();
    assert!(mem.vector_search(&t, &v, &any, 5).await.unwrap().is_empty());
    assert!(mem.keyword_search(&t, "falcon", &any, 5).await.unwrap().is_empty());
    // A quarantined chunk is held but never returned.
    let mut held = chunk("d2", 0, "falcon", json!({}));
    held.quarantined = true;
    mem.replace_document_chunks(&t, "d2", &[held]).await.unwrap();
    assert!(mem.keyword_search(&t, "falcon", &any, 5).await.unwrap().is_empty());
}

async fn memory_keyword_search_ranks_by_bm25_with_filters_inside(h: &Harness) {
    let t = tenant(h, "bm25").await;
    let mem = memory(h);
    let docs = [
        ("a", "copper copper copper wire", "ops"),
        ("b", "copper pipe and a long list of many other unrelated plumbing words here", "dev"),
        ("c", "marble statue", "ops"),
    ];
    for (d, body, team) in docs {
        h.index().replace_document_chunks(&t, d, &[chunk(d, 0, body, json!({"team": team}))]).await.unwrap();
    }
    let hits = mem.keyword_search(&t, "Copper!", &SearchFilter::default(), 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.doc_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(hits[0].score > hits[1].score && hits[1].score > 0.0);
    let dev =
        SearchFilter { metadata: Some(json!({"team": "dev"}).as_object().unwrap().clone()), ..Default::default() };
    let hits = mem.keyword_search(&t, "copper", &dev, 1).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.doc_id.as_str()).collect::<Vec<_>>(), ["b"]);
    assert!(mem.keyword_search(&t, "\" OR * NEAR(", &SearchFilter::default(), 10).await.unwrap().is_empty());
}
