//! The `ShadowIndex` contract (shadow vectors of reindex runs and their atomic swap), one suite run against every
//! adapter: SQLite always, PostgreSQL when `FROSTBYTE_TEST_POSTGRES_URL` is set.

use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::embed::HashEmbedder;
use frostbyte_core::index::{IndexedChunk, SearchFilter};
use frostbyte_core::pipelines::NewRun;
use frostbyte_core::queue::{NewJob, Stage};
use frostbyte_core::reindex::{ReindexTarget, ShadowSwap, ShadowVector, SwapOutcome};
use frostbyte_core::{StoreError, TenantId};
use serde_json::json;
use uuid::Uuid;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    shadow_vectors_stay_invisible_until_one_swap_moves_every_chunk,
    a_collection_swap_moves_only_its_chunks_and_never_another_tenants,
    shadow_rows_follow_their_chunks_and_stale_text_is_skipped,
    a_moved_config_version_aborts_the_whole_swap,
    discarding_removes_a_runs_rows_and_the_rows_of_finished_runs,
);

const OLD: usize = 64;
const NEW: usize = 32;

fn vector(dim: usize, text: &str) -> Vec<f32> {
    HashEmbedder::new(dim).unwrap().embed_text(text).unwrap()
}

fn chunk(doc_id: &str, position: u32, text: &str, collection: &str) -> IndexedChunk {
    let text_hash = frostbyte_core::chunk::text_hash(text);
    IndexedChunk {
        chunk_id: frostbyte_core::chunk::chunk_id(doc_id, position, &text_hash).to_string(),
        doc_id: doc_id.into(),
        position,
        text: text.into(),
        start: 0,
        end: u32::try_from(text.len()).unwrap(),
        page_start: None,
        page_end: None,
        heading_path: Vec::new(),
        kind: "text".into(),
        text_hash,
        classification: None,
        collection: Some(collection.into()),
        metadata: json!({}),
        quarantined: false,
        embed_model: format!("hash-v1-{OLD}"),
        vector: vector(OLD, text),
        source_sha256: "cd".repeat(32),
        original_filename: format!("{doc_id}.md"),
        ingested_at: frostbyte_core::now(),
    }
}

/// Two documents in `handbook` (three chunks) and one in `notes`.
async fn corpus(h: &Harness, t: &TenantId) -> Vec<IndexedChunk> {
    let a = vec![chunk("doc-a", 0, "pumps and valves", "handbook"), chunk("doc-a", 1, "relay inspection", "handbook")];
    let b = vec![chunk("doc-b", 0, "maintenance crew schedule", "handbook")];
    let c = vec![chunk("doc-c", 0, "meeting notes about valves", "notes")];
    for (id, chunks) in [("doc-a", &a), ("doc-b", &b), ("doc-c", &c)] {
        h.index().replace_document_chunks(t, id, chunks).await.unwrap();
    }
    [a, b, c].concat()
}

fn target(collection: Option<&str>) -> ReindexTarget {
    ReindexTarget {
        run_id: frostbyte_core::ids::new_id(),
        embed_model: format!("hash-v1-{NEW}"),
        collection: collection.map(str::to_owned),
    }
}

fn shadow_of(c: &IndexedChunk) -> ShadowVector {
    ShadowVector { chunk_id: c.chunk_id.clone(), text_hash: c.text_hash.clone(), vector: vector(NEW, &c.text) }
}

fn swap_event(run: Uuid) -> NewAuditEvent {
    NewAuditEvent::new("INDEX_REINDEXED", "test", "pipeline_run", run.to_string(), json!({"component": "test"}))
}

async fn models(h: &Harness, t: &TenantId, doc: &str) -> Vec<(String, usize)> {
    h.index().document_chunks(t, doc).await.unwrap().into_iter().map(|c| (c.embed_model, c.vector.len())).collect()
}

async fn shadow_vectors_stay_invisible_until_one_swap_moves_every_chunk(h: &Harness) {
    let t = tenant(h, "shadow").await;
    let chunks = corpus(h, &t).await;
    let s = h.shadow();
    let all = target(None);
    assert_eq!(s.reindex_scope(&t, &all).await.unwrap(), 4);
    let pending = s.reindex_pending(&t, &all, None, 100).await.unwrap();
    assert_eq!(pending.len(), 4);
    assert!(pending.windows(2).all(|w| w[0].chunk_id < w[1].chunk_id), "ordered by chunk id");
    let paged = s.reindex_pending(&t, &all, Some(&pending[1].chunk_id), 100).await.unwrap();
    assert_eq!(paged, pending[2..]);

    // Three of four embedded: the swap refuses and changes nothing.
    let three: Vec<ShadowVector> = chunks[..3].iter().map(shadow_of).collect();
    assert_eq!(s.put_shadow_vectors(&t, &all, &three).await.unwrap(), 3);
    assert_eq!(s.put_shadow_vectors(&t, &all, &three).await.unwrap(), 3, "writing again replaces");
    assert_eq!(s.shadow_count(&t, all.run_id).await.unwrap(), 3);
    let left = s.reindex_pending(&t, &all, None, 100).await.unwrap();
    assert_eq!(left.iter().map(|c| c.chunk_id.as_str()).collect::<Vec<_>>(), [chunks[3].chunk_id.as_str()]);
    assert_eq!(left[0].text, chunks[3].text);
    let generation = h.feed().generation(&t).await.unwrap();
    let before = h.store.get_tenant(&t).await.unwrap().unwrap();
    let swap = ShadowSwap { config: None, audit: vec![swap_event(all.run_id)] };
    assert_eq!(s.swap_shadow(&t, &all, swap.clone()).await.unwrap(), SwapOutcome::Incomplete { missing: 1 });
    assert_eq!(models(h, &t, "doc-a").await, [(format!("hash-v1-{OLD}"), OLD), (format!("hash-v1-{OLD}"), OLD)]);
    assert_eq!(h.feed().generation(&t).await.unwrap(), generation, "no chunk row was touched");
    let hits =
        h.index().vector_search(&t, &vector(OLD, "pumps and valves"), &SearchFilter::default(), 1).await.unwrap();
    assert_eq!(hits[0].chunk_id, chunks[0].chunk_id, "searches answer from the old vectors");

    // All embedded: one swap moves every chunk, updates the config and audits, all together.
    s.put_shadow_vectors(&t, &all, &[shadow_of(&chunks[3])]).await.unwrap();
    let mut config = before.config.clone();
    config.embedding_model = format!("hash-v1-{NEW}");
    let swap = ShadowSwap { config: Some((before.config_version, config)), audit: vec![swap_event(all.run_id)] };
    assert_eq!(s.swap_shadow(&t, &all, swap).await.unwrap(), SwapOutcome::Swapped { chunks: 4 });
    for doc in ["doc-a", "doc-b", "doc-c"] {
        assert!(models(h, &t, doc).await.iter().all(|m| *m == (format!("hash-v1-{NEW}"), NEW)), "{doc}");
    }
    let swapped = h.index().get_chunk(&t, &chunks[1].chunk_id).await.unwrap().unwrap();
    assert_eq!(swapped.vector, vector(NEW, "relay inspection"));
    assert_eq!(swapped.text, chunks[1].text, "text and keyword entries stay");
    assert_eq!(h.index().keyword_search(&t, "relay", &SearchFilter::default(), 5).await.unwrap().len(), 1);
    let hits =
        h.index().vector_search(&t, &vector(NEW, "pumps and valves"), &SearchFilter::default(), 1).await.unwrap();
    assert_eq!(hits[0].chunk_id, chunks[0].chunk_id);
    assert!(h.index().vector_search(&t, &vector(OLD, "pumps"), &SearchFilter::default(), 1).await.unwrap().is_empty());
    assert_eq!(s.shadow_count(&t, all.run_id).await.unwrap(), 0, "the run's shadow rows are gone");
    let after = h.store.get_tenant(&t).await.unwrap().unwrap();
    assert_eq!(after.config_version, before.config_version + 1);
    assert_eq!(after.config.embedding_model, format!("hash-v1-{NEW}"));
    let last = h.store.audit_after(&t, 0, 10_000).await.unwrap().pop().unwrap();
    assert_eq!(last.event_type, "INDEX_REINDEXED");
    // The change feed saw every document, so in-memory indexes reload them.
    let changed = h.feed().changed_documents(&t, generation).await.unwrap();
    let mut docs: Vec<String> = changed.into_iter().map(|c| c.doc_id).collect();
    docs.sort();
    assert_eq!(docs, ["doc-a", "doc-b", "doc-c"]);
}

async fn a_collection_swap_moves_only_its_chunks_and_never_another_tenants(h: &Harness) {
    let t = tenant(h, "shadow").await;
    let other = tenant(h, "other").await;
    let chunks = corpus(h, &t).await;
    let theirs = corpus(h, &other).await;
    let s = h.shadow();
    let handbook = target(Some("handbook"));
    assert_eq!(s.reindex_scope(&t, &handbook).await.unwrap(), 3);
    let pending = s.reindex_pending(&t, &handbook, None, 100).await.unwrap();
    assert_eq!(pending.len(), 3);
    assert!(pending.iter().all(|c| c.doc_id != "doc-c"));
    // Another tenant's shadow rows for the same run and chunk ids do not count for this one.
    let foreign: Vec<ShadowVector> = theirs.iter().map(shadow_of).collect();
    assert_eq!(s.put_shadow_vectors(&other, &handbook, &foreign).await.unwrap(), 4);
    assert_eq!(s.reindex_pending(&t, &handbook, None, 100).await.unwrap().len(), 3);
    let swap = ShadowSwap { config: None, audit: Vec::new() };
    assert_eq!(s.swap_shadow(&t, &handbook, swap).await.unwrap(), SwapOutcome::Incomplete { missing: 3 });
    let mine: Vec<ShadowVector> = chunks[..3].iter().map(shadow_of).collect();
    s.put_shadow_vectors(&t, &handbook, &mine).await.unwrap();
    let swap = ShadowSwap { config: None, audit: Vec::new() };
    assert_eq!(s.swap_shadow(&t, &handbook, swap).await.unwrap(), SwapOutcome::Swapped { chunks: 3 });
    assert!(models(h, &t, "doc-a").await.iter().all(|(m, _)| *m == format!("hash-v1-{NEW}")));
    assert_eq!(models(h, &t, "doc-c").await, [(format!("hash-v1-{OLD}"), OLD)], "outside the collection");
    for doc in ["doc-a", "doc-b", "doc-c"] {
        assert!(models(h, &other, doc).await.iter().all(|(m, _)| *m == format!("hash-v1-{OLD}")), "{doc}");
    }
    assert_eq!(s.reindex_scope(&other, &handbook).await.unwrap(), 3);
    assert_eq!(s.shadow_count(&other, handbook.run_id).await.unwrap(), 4, "the other tenant's rows are its own");
    let unknown = TenantId::parse("ghost-tenant").unwrap();
    let err = s.swap_shadow(&unknown, &handbook, ShadowSwap { config: None, audit: Vec::new() }).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

async fn shadow_rows_follow_their_chunks_and_stale_text_is_skipped(h: &Harness) {
    let t = tenant(h, "shadow").await;
    let chunks = corpus(h, &t).await;
    let s = h.shadow();
    let all = target(None);
    let mut stale = shadow_of(&chunks[0]);
    stale.text_hash = frostbyte_core::chunk::text_hash("an older text");
    let gone = ShadowVector { chunk_id: "no-such-chunk".into(), ..shadow_of(&chunks[1]) };
    assert_eq!(s.put_shadow_vectors(&t, &all, &[stale, gone]).await.unwrap(), 0);
    let every: Vec<ShadowVector> = chunks.iter().map(shadow_of).collect();
    assert_eq!(s.put_shadow_vectors(&t, &all, &every).await.unwrap(), 4);

    // Erasing doc-a takes its shadow rows with it; replacing doc-b with new text leaves its new chunk pending.
    h.index().delete_document(&t, "doc-a").await.unwrap();
    assert_eq!(s.shadow_count(&t, all.run_id).await.unwrap(), 2);
    let b2 = vec![chunk("doc-b", 0, "a revised crew schedule", "handbook")];
    h.index().replace_document_chunks(&t, "doc-b", &b2).await.unwrap();
    assert_eq!(s.shadow_count(&t, all.run_id).await.unwrap(), 1);
    let pending = s.reindex_pending(&t, &all, None, 100).await.unwrap();
    assert_eq!(pending.iter().map(|c| c.chunk_id.as_str()).collect::<Vec<_>>(), [b2[0].chunk_id.as_str()]);
    let swap = ShadowSwap { config: None, audit: Vec::new() };
    assert_eq!(s.swap_shadow(&t, &all, swap.clone()).await.unwrap(), SwapOutcome::Incomplete { missing: 1 });
    s.put_shadow_vectors(&t, &all, &[shadow_of(&b2[0])]).await.unwrap();
    assert_eq!(s.swap_shadow(&t, &all, swap).await.unwrap(), SwapOutcome::Swapped { chunks: 2 });
    assert_eq!(models(h, &t, "doc-b").await, [(format!("hash-v1-{NEW}"), NEW)]);
}

async fn a_moved_config_version_aborts_the_whole_swap(h: &Harness) {
    let t = tenant(h, "shadow").await;
    let chunks = corpus(h, &t).await;
    let s = h.shadow();
    let all = target(None);
    s.put_shadow_vectors(&t, &all, &chunks.iter().map(shadow_of).collect::<Vec<_>>()).await.unwrap();
    let tenant_row = h.store.get_tenant(&t).await.unwrap().unwrap();
    let audit_before = h.store.audit_after(&t, 0, 10_000).await.unwrap().len();
    let swap = ShadowSwap {
        config: Some((tenant_row.config_version - 1, tenant_row.config.clone())),
        audit: vec![swap_event(all.run_id)],
    };
    let err = s.swap_shadow(&t, &all, swap).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(models(h, &t, "doc-a").await[0], (format!("hash-v1-{OLD}"), OLD), "rolled back");
    assert_eq!(s.shadow_count(&t, all.run_id).await.unwrap(), 4, "the shadow rows stay for another attempt");
    assert_eq!(h.store.audit_after(&t, 0, 10_000).await.unwrap().len(), audit_before);
    assert_eq!(h.store.get_tenant(&t).await.unwrap().unwrap().config_version, tenant_row.config_version);
}

async fn discarding_removes_a_runs_rows_and_the_rows_of_finished_runs(h: &Harness) {
    let t = tenant(h, "shadow").await;
    let chunks = corpus(h, &t).await;
    let s = h.shadow();
    // A pending run (its rows are kept by the stale sweep) and a run that no longer exists (its rows go).
    let live_id = frostbyte_core::ids::new_id();
    let new = NewRun::new(live_id, "documents", "reindex", serde_json::Map::new(), "test");
    let job = NewJob::new(Stage::Pipeline, live_id.to_string(), json!({})).dedupe_key(format!("run:{live_id}"));
    let event = NewAuditEvent::new("PIPELINE_RUN_CREATED", "test", "pipeline_run", live_id.to_string(), json!({}));
    h.runs().create_run(&t, new, job, event).await.unwrap();
    let live = ReindexTarget { run_id: live_id, ..target(None) };
    let dead = target(None);
    let me = target(None);
    let every: Vec<ShadowVector> = chunks.iter().map(shadow_of).collect();
    for run in [&live, &dead, &me] {
        s.put_shadow_vectors(&t, run, &every).await.unwrap();
    }
    let other = tenant(h, "other").await;
    let theirs = corpus(h, &other).await;
    s.put_shadow_vectors(&other, &dead, &theirs.iter().map(shadow_of).collect::<Vec<_>>()).await.unwrap();

    assert_eq!(s.discard_stale_shadows(&t, me.run_id).await.unwrap(), 4, "only the dead run's rows");
    assert_eq!(s.shadow_count(&t, live.run_id).await.unwrap(), 4);
    assert_eq!(s.shadow_count(&t, me.run_id).await.unwrap(), 4);
    assert_eq!(s.shadow_count(&other, dead.run_id).await.unwrap(), 4, "another tenant's rows stay");
    assert_eq!(s.discard_shadow(&t, me.run_id).await.unwrap(), 4);
    assert_eq!(s.shadow_count(&t, me.run_id).await.unwrap(), 0);
    assert_eq!(s.discard_shadow(&t, me.run_id).await.unwrap(), 0, "idempotent");
}
