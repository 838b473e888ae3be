//! The `DocumentStore` contract, one suite run against every adapter: SQLite always (a fresh database file per
//! test), PostgreSQL when `FROSTBYTE_TEST_POSTGRES_URL` is set (a fresh schema per test, dropped afterwards).

use frostbyte_core::audit::{ChainVerifier, NewAuditEvent};
use frostbyte_core::documents::{
    DocumentRecord, DocumentStages, DocumentStatus, PipelineStage, StageStatus, StageUpdate,
};
use frostbyte_core::queue::{ClaimOptions, JobStatus, NewJob, Stage};
use frostbyte_core::{StoreError, TenantId};
use serde_json::json;
use uuid::Uuid;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    create_writes_document_job_and_audit_together,
    unknown_tenant_writes_nothing,
    duplicate_ids_are_rejected_atomically,
    several_documents_are_created_all_or_none,
    update_stage_moves_on_with_its_job,
    other_tenants_documents_are_invisible,
    newest_by_filename_finds_each_names_newest_document_within_the_tenant,
    update_stage_completes_its_job_in_the_same_transaction,
);

// --- fixtures --------------------------------------------------------------------------------------------------

fn event(kind: &str, resource: &str) -> NewAuditEvent {
    NewAuditEvent::new(kind, "test", "document", resource, json!({"component": "test", "status": "ok"}))
}

fn record() -> DocumentRecord {
    let now = frostbyte_core::now();
    DocumentRecord {
        doc_id: frostbyte_core::ids::new_id(),
        receipt_id: frostbyte_core::ids::new_id(),
        original_filename: "notes.md".into(),
        mime_type: "text/markdown".into(),
        size_bytes: 42,
        raw_sha256: "ab".repeat(32),
        metadata: json!({"team": "ops"}),
        collection: Some("handbook".into()),
        status: DocumentStatus::Processing,
        stages: DocumentStages::received(),
        lineage: serde_json::Map::new(),
        error_code: None,
        created_at: now,
        updated_at: now,
    }
}

fn parse_job(doc: &DocumentRecord) -> NewJob {
    NewJob::new(Stage::Parse, doc.doc_id.to_string(), json!({"doc_id": doc.doc_id}))
        .dedupe_key(format!("parse:{}", doc.doc_id))
}

async fn claim(h: &Harness) -> Option<frostbyte_core::queue::Job> {
    let opts = ClaimOptions::new("w1", std::time::Duration::from_secs(60), 4);
    h.store.claim(&opts, frostbyte_core::now()).await.expect("claim")
}

async fn audit_count(h: &Harness, t: &TenantId) -> u64 {
    let mut v = ChainVerifier::default();
    let events = h.store.audit_after(t, 0, 1000).await.expect("audit");
    for e in &events {
        v.push(e);
    }
    assert!(v.first_break().is_none(), "the chain stays valid");
    v.events_checked()
}

// --- the contract ----------------------------------------------------------------------------------------------

async fn create_writes_document_job_and_audit_together(h: &Harness) {
    let t = tenant(h, "docs").await;
    let doc = record();
    let before = audit_count(h, &t).await;
    h.store
        .create_document(&t, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", &doc.doc_id.to_string()))
        .await
        .unwrap();
    let got = h.store.get_document(&t, doc.doc_id).await.unwrap().expect("stored");
    assert_eq!(got, doc);
    assert_eq!(h.store.get_by_receipt(&t, doc.receipt_id).await.unwrap(), Some(doc.clone()));
    assert_eq!(audit_count(h, &t).await, before + 1);
    let job = claim(h).await.expect("the parse job was enqueued");
    assert_eq!((job.stage, job.resource_id.as_str()), (Stage::Parse, doc.doc_id.to_string().as_str()));
}

async fn unknown_tenant_writes_nothing(h: &Harness) {
    let t = TenantId::parse("nobody-here").unwrap();
    let doc = record();
    let e = h.store.create_document(&t, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", "x")).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    assert!(claim(h).await.is_none());
}

async fn duplicate_ids_are_rejected_atomically(h: &Harness) {
    let t = tenant(h, "dup").await;
    let doc = record();
    h.store.create_document(&t, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", "a")).await.unwrap();
    let before = audit_count(h, &t).await;
    let mut again = record();
    again.doc_id = doc.doc_id;
    let e = h.store.create_document(&t, &again, parse_job(&again), event("DOCUMENT_INGESTED", "b")).await.unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e:?}");
    assert_eq!(audit_count(h, &t).await, before, "no audit event for a write that did not happen");
    assert_eq!(h.store.get_by_receipt(&t, again.receipt_id).await.unwrap(), None);
}

async fn several_documents_are_created_all_or_none(h: &Harness) {
    let t = tenant(h, "group").await;
    let before = audit_count(h, &t).await;
    // More than one INSERT statement's worth of rows, with the optional fields both set and not.
    let n = 130;
    let docs: Vec<DocumentRecord> = (0..n)
        .map(|i| {
            let mut doc = record();
            doc.size_bytes = i as u64 * 1000;
            doc.original_filename = format!("notes-{i}.md");
            if i % 2 == 1 {
                doc.collection = None;
                doc.metadata = json!({});
            }
            doc
        })
        .collect();
    let group = |docs: &[DocumentRecord]| -> Vec<_> {
        docs.iter().map(|d| (d.clone(), parse_job(d), event("DOCUMENT_INGESTED", &d.doc_id.to_string()))).collect()
    };
    h.store.create_documents(&t, group(&docs)).await.unwrap();
    for doc in &docs {
        assert_eq!(h.store.get_document(&t, doc.doc_id).await.unwrap().as_ref(), Some(doc));
    }
    assert_eq!(audit_count(h, &t).await, before + n as u64, "one event per document, chained in order");
    let events = h.store.audit_after(&t, i64::try_from(before).unwrap(), 1000).await.unwrap();
    let resources: Vec<String> = events.iter().map(|e| e.resource_id.clone()).collect();
    assert_eq!(resources, docs.iter().map(|d| d.doc_id.to_string()).collect::<Vec<_>>());
    let mut claimed = Vec::new();
    while let Some(job) = claim(h).await {
        // Completed, so that the tenant's concurrency cap does not stop the count.
        h.store.complete(job.job_id, "w1").await.unwrap();
        claimed.push(job.resource_id);
    }
    claimed.sort();
    let mut expected: Vec<String> = docs.iter().map(|d| d.doc_id.to_string()).collect();
    expected.sort();
    assert_eq!(claimed, expected, "one parse job per document");

    // One taken id refuses the whole group, even after a statement's worth of fresh documents: the fresh
    // documents, their jobs and their events are not written either.
    let mut refused: Vec<DocumentRecord> = (0..70).map(|_| record()).collect();
    let mut taken = record();
    taken.doc_id = docs[1].doc_id;
    refused.push(taken);
    let e = h.store.create_documents(&t, group(&refused)).await.unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e:?}");
    assert_eq!(h.store.get_document(&t, refused[0].doc_id).await.unwrap(), None);
    assert_eq!(h.store.get_document(&t, refused[69].doc_id).await.unwrap(), None);
    assert_eq!(audit_count(h, &t).await, before + n as u64);
    assert!(claim(h).await.is_none(), "no job for a document that was not written");
    h.store.create_documents(&t, Vec::new()).await.expect("an empty group writes nothing");
    assert_eq!(audit_count(h, &t).await, before + n as u64);
}

async fn update_stage_moves_on_with_its_job(h: &Harness) {
    let t = tenant(h, "stage").await;
    let doc = record();
    h.store.create_document(&t, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", "a")).await.unwrap();
    let parse = claim(h).await.unwrap();
    h.store.complete(parse.job_id, "w1").await.unwrap();
    let next =
        NewJob::new(Stage::Policy, doc.doc_id.to_string(), json!({})).dedupe_key(format!("policy:{}", doc.doc_id));
    let updated = h
        .store
        .update_stage(
            &t,
            doc.doc_id,
            StageUpdate::new(PipelineStage::Parse, StageStatus::Done).lineage("parser_version", "markdown@1"),
            Some(next),
            event("DOCUMENT_PARSED", "a"),
        )
        .await
        .unwrap();
    assert_eq!(updated.stages.parse, StageStatus::Done);
    assert_eq!(updated.stages.current(), Some(PipelineStage::Policy));
    assert_eq!(updated.lineage["parser_version"], json!("markdown@1"));
    assert_eq!(h.store.get_document(&t, doc.doc_id).await.unwrap(), Some(updated));
    assert_eq!(claim(h).await.unwrap().stage, Stage::Policy);

    let done = h
        .store
        .update_stage(
            &t,
            doc.doc_id,
            StageUpdate::new(PipelineStage::Policy, StageStatus::Done)
                .also(PipelineStage::Embed, StageStatus::Skipped)
                .also(PipelineStage::Index, StageStatus::Skipped)
                .document_status(DocumentStatus::Quarantined),
            None,
            event("DOCUMENT_QUARANTINED", "a"),
        )
        .await
        .unwrap();
    assert_eq!(done.status, DocumentStatus::Quarantined);
    assert_eq!(done.stages.current(), None);
    let missing = h
        .store
        .update_stage(
            &t,
            Uuid::now_v7(),
            StageUpdate::new(PipelineStage::Parse, StageStatus::Done),
            None,
            event("X", "b"),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }));
}

async fn other_tenants_documents_are_invisible(h: &Harness) {
    let a = tenant(h, "alpha").await;
    let b = tenant(h, "beta").await;
    let doc = record();
    h.store.create_document(&a, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", "a")).await.unwrap();
    assert_eq!(h.store.get_document(&b, doc.doc_id).await.unwrap(), None);
    assert_eq!(h.store.get_by_receipt(&b, doc.receipt_id).await.unwrap(), None);
    let e = h
        .store
        .update_stage(&b, doc.doc_id, StageUpdate::new(PipelineStage::Parse, StageStatus::Done), None, event("X", "a"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }));
}

async fn newest_by_filename_finds_each_names_newest_document_within_the_tenant(h: &Harness) {
    let t = tenant(h, "content").await;
    let other = tenant(h, "content-other").await;
    let older = record();
    h.store.create_document(&t, &older, parse_job(&older), event("DOCUMENT_INGESTED", "a")).await.unwrap();
    let mut newer = record();
    newer.raw_sha256 = "cd".repeat(32);
    newer.created_at = older.created_at + chrono::Duration::seconds(1);
    h.store.create_document(&t, &newer, parse_job(&newer), event("DOCUMENT_INGESTED", "b")).await.unwrap();
    let mut elsewhere = record();
    elsewhere.original_filename = "guide/intro.md".into();
    h.store.create_document(&t, &elsewhere, parse_job(&elsewhere), event("DOCUMENT_INGESTED", "c")).await.unwrap();
    let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<String>>();

    let found = h.store.newest_by_filename(&t, &names(&["notes.md", "guide/intro.md", "renamed.md"])).await.unwrap();
    assert_eq!(found.len(), 2, "only names that have a document: {:?}", found.keys());
    assert_eq!(
        (found["notes.md"].doc_id, found["notes.md"].raw_sha256.as_str()),
        (newer.doc_id, "cd".repeat(32).as_str())
    );
    assert_eq!(found["guide/intro.md"], elsewhere);
    let found = h.store.newest_by_filename(&t, &names(&["notes.md"])).await.unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["notes.md"], "only the names asked for");
    assert!(h.store.newest_by_filename(&t, &names(&["renamed.md"])).await.unwrap().is_empty(), "name matters");
    assert!(h.store.newest_by_filename(&t, &[]).await.unwrap().is_empty());
    assert!(h.store.newest_by_filename(&other, &names(&["notes.md"])).await.unwrap().is_empty(), "tenant matters");
    // Names are data, never SQL.
    let hostile = names(&["x' OR '1'='1", "notes.md\"); DROP TABLE documents; --"]);
    assert!(h.store.newest_by_filename(&t, &hostile).await.unwrap().is_empty());
}

async fn update_stage_completes_its_job_in_the_same_transaction(h: &Harness) {
    let t = tenant(h, "once").await;
    let doc = record();
    h.store.create_document(&t, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", "a")).await.unwrap();
    let parse = claim(h).await.unwrap();
    let before = audit_count(h, &t).await;
    let next = || NewJob::new(Stage::Policy, doc.doc_id.to_string(), json!({})).dedupe_key("policy:once");
    let done = || StageUpdate::new(PipelineStage::Parse, StageStatus::Done);

    // Another worker's lease: nothing is written, not the stage, not the next job, not the audit event.
    let stolen = h
        .store
        .update_stage(&t, doc.doc_id, done().completes_job(parse.job_id, "w2"), Some(next()), event("P", "a"))
        .await
        .unwrap_err();
    assert!(matches!(stolen, StoreError::Conflict(_)), "{stolen:?}");
    let unchanged = h.store.get_document(&t, doc.doc_id).await.unwrap().unwrap();
    assert_eq!(unchanged.stages.parse, StageStatus::Pending);
    assert_eq!(audit_count(h, &t).await, before);
    assert_eq!(h.store.get_job(&t, parse.job_id).await.unwrap().unwrap().status, JobStatus::Running);

    // The lease holder: stage, next job, audit event and completion commit together.
    let updated = h
        .store
        .update_stage(&t, doc.doc_id, done().completes_job(parse.job_id, "w1"), Some(next()), event("P", "a"))
        .await
        .unwrap();
    assert_eq!(updated.stages.parse, StageStatus::Done);
    assert_eq!(audit_count(h, &t).await, before + 1);
    assert_eq!(h.store.get_job(&t, parse.job_id).await.unwrap().unwrap().status, JobStatus::Succeeded);
    assert_eq!(claim(h).await.unwrap().stage, Stage::Policy);
    // Completing twice is refused (the job is no longer running).
    let again = h
        .store
        .update_stage(&t, doc.doc_id, done().completes_job(parse.job_id, "w1"), None, event("P", "a"))
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");
}

// --- the document lifecycle: replacement, erasure, tenant purge -------------------------------------------------

mod lifecycle {
    use frostbyte_core::index::IndexedChunk;
    use frostbyte_core::lifecycle::{DocumentErasure, ReplacementContent, TenantDocumentRows, stage_job};
    use frostbyte_core::queue::{ClaimOptions, JobError, RetryPolicy, Stage, StageRetry};

    use super::*;

    contract_tests!(
        erase_removes_row_chunks_and_jobs_in_one_transaction_and_keeps_a_tombstone,
        replace_content_is_a_compare_and_set_on_the_generation,
        guarded_writes_refuse_superseded_and_erased_generations,
        purge_removes_one_tenants_rows_only_and_is_idempotent,
        a_chunk_swap_racing_an_erasure_never_survives_it,
        batched_stage_writes_commit_together_and_a_refused_one_writes_nothing,
        documents_at_reads_the_tenants_live_documents_with_their_generations,
        raw_usage_follows_every_row_that_adds_replaces_or_removes_raw_bytes,
    );

    fn chunks(doc_id: &str, texts: &[&str]) -> Vec<IndexedChunk> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let position = u32::try_from(i).unwrap();
                let text_hash = frostbyte_core::chunk::text_hash(text);
                IndexedChunk {
                    chunk_id: frostbyte_core::chunk::chunk_id(doc_id, position, &text_hash).to_string(),
                    doc_id: doc_id.into(),
                    position,
                    text: (*text).into(),
                    start: 0,
                    end: 10,
                    page_start: None,
                    page_end: None,
                    heading_path: Vec::new(),
                    kind: "text".into(),
                    text_hash,
                    classification: None,
                    collection: None,
                    metadata: json!({}),
                    quarantined: false,
                    embed_model: "hash-v1-4".into(),
                    vector: vec![1.0, 0.0, 0.5, 0.25],
                    source_sha256: "ab".repeat(32),
                    original_filename: "notes.md".into(),
                    ingested_at: frostbyte_core::now(),
                }
            })
            .collect()
    }

    async fn batched_stage_writes_commit_together_and_a_refused_one_writes_nothing(h: &Harness) {
        use frostbyte_core::documents::StageWrite;
        let t = tenant(h, "batched").await;
        let docs = [record(), record(), record()];
        for d in &docs {
            h.store.create_document(&t, d, parse_job(d), event("DOCUMENT_INGESTED", "a")).await.unwrap();
        }
        let opts = ClaimOptions::new("w1", std::time::Duration::from_secs(60), 10);
        let jobs = h.store.claim_batch(&opts, frostbyte_core::now(), 10).await.unwrap();
        assert_eq!(jobs.len(), 3);
        let job_of = |d: &DocumentRecord| jobs.iter().find(|j| j.resource_id == d.doc_id.to_string()).unwrap().job_id;
        let generation = |d: &DocumentRecord| {
            let (store, t, id) = (h.store.clone(), t.clone(), d.doc_id);
            async move { store.document_generation(&t, id).await.unwrap().unwrap() }
        };
        let before = audit_count(h, &t).await;
        let [a, b, c] = &docs;
        let (ga, gb, gc) = (generation(a).await, generation(b).await, generation(c).await);
        let a_id = a.doc_id.to_string();
        let writes = vec![
            // Applied: chunks, the update, the next job, the completion and two events.
            StageWrite::new(
                a.doc_id,
                ga,
                stage(PipelineStage::Parse).completes_job(job_of(a), "w1"),
                event("DOCUMENT_PARSED", "a"),
            )
            .finding(event("PII_DETECTED", "a"))
            .next_job(Some(stage_job(Stage::Policy, a.doc_id, ga)))
            .chunks(chunks(&a_id, &["alpha batch", "bravo batch"])),
            // Refused: a generation the document is not at.
            StageWrite::new(
                b.doc_id,
                gb + 1,
                stage(PipelineStage::Parse).completes_job(job_of(b), "w1"),
                event("X", "b"),
            )
            .chunks(chunks(&b.doc_id.to_string(), &["never written"])),
            // Refused: the job is leased to another worker.
            StageWrite::new(c.doc_id, gc, stage(PipelineStage::Parse).completes_job(job_of(c), "w2"), event("X", "c"))
                .next_job(Some(stage_job(Stage::Policy, c.doc_id, gc))),
            // Refused: no such document.
            StageWrite::new(frostbyte_core::ids::new_id(), 1, stage(PipelineStage::Parse), event("X", "d")),
            // Applied after the refusals: its event is sealed onto the chain right after the first write's.
            StageWrite::new(a.doc_id, ga, stage(PipelineStage::Policy), event("POLICY_GATE_PASSED", "a")),
        ];
        let results = h.store.apply_stage_writes(&t, writes).await.unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(results[4].as_ref().expect("the last write applies").stages.policy, StageStatus::Done);
        let updated = results[0].as_ref().expect("the first write applies");
        assert_eq!(updated.stages.parse, StageStatus::Done);
        assert!(matches!(results[1], Err(StoreError::Conflict(_))), "{:?}", results[1]);
        assert!(matches!(results[2], Err(StoreError::Conflict(_))), "{:?}", results[2]);
        assert!(matches!(results[3], Err(StoreError::NotFound { .. })), "{:?}", results[3]);

        assert_eq!(audit_count(h, &t).await, before + 3, "only the applied writes' events, on a valid chain");
        let events = h.store.audit_after(&t, 0, 100).await.unwrap();
        let kinds: Vec<&str> = events.iter().rev().take(3).map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            kinds,
            ["POLICY_GATE_PASSED", "DOCUMENT_PARSED", "PII_DETECTED"],
            "newest first: the last write, then the first write's transition after its finding"
        );
        assert_eq!(h.index().document_chunks(&t, &a_id).await.unwrap().len(), 2);
        assert!(h.index().document_chunks(&t, &b.doc_id.to_string()).await.unwrap().is_empty());
        for (d, status) in [(a, JobStatus::Succeeded), (b, JobStatus::Running), (c, JobStatus::Running)] {
            assert_eq!(h.store.get_job(&t, job_of(d)).await.unwrap().unwrap().status, status);
            let stored = h.store.get_document(&t, d.doc_id).await.unwrap().unwrap();
            assert_eq!(stored.stages.parse == StageStatus::Done, status == JobStatus::Succeeded);
        }
        let next = h.store.claim_batch(&opts, frostbyte_core::now(), 10).await.unwrap();
        assert_eq!(next.len(), 1, "only the applied write's next job: {next:?}");
        assert_eq!((next[0].stage, next[0].resource_id.as_str()), (Stage::Policy, a_id.as_str()));
        let hits =
            h.index().keyword_search(&t, "bravo", &frostbyte_core::index::SearchFilter::default(), 5).await.unwrap();
        assert_eq!(hits.len(), 1, "keyword entries commit with the rows");
        let changed = h.feed().changed_documents(&t, 0).await.unwrap();
        assert_eq!(
            changed.iter().map(|c| c.doc_id.as_str()).collect::<Vec<_>>(),
            [a_id.as_str()],
            "search indexes are told of the applied write's chunks only"
        );
    }

    async fn documents_at_reads_the_tenants_live_documents_with_their_generations(h: &Harness) {
        let t = tenant(h, "at").await;
        let (kept, replaced, erased) = (indexed(h, &t).await, indexed(h, &t).await, indexed(h, &t).await);
        h.store
            .replace_content(
                &t,
                replaced.doc_id,
                1,
                &content(&"cd".repeat(32)),
                stage_job(Stage::Parse, replaced.doc_id, 2),
                event("R", "a"),
            )
            .await
            .unwrap();
        h.store.erase_document(&t, erased.doc_id, erasure_audit()).await.unwrap().expect("erased");
        let other = tenant(h, "at-other").await;
        let foreign = indexed(h, &other).await;
        let never = frostbyte_core::ids::new_id();

        let ids = [kept.doc_id, replaced.doc_id, erased.doc_id, foreign.doc_id, never];
        let mut found: Vec<(Uuid, u64, String)> = h
            .store
            .documents_at(&t, &ids)
            .await
            .unwrap()
            .into_iter()
            .map(|(d, g)| (d.doc_id, g, d.original_filename))
            .collect();
        found.sort();
        let mut expected =
            vec![(kept.doc_id, 1, kept.original_filename.clone()), (replaced.doc_id, 2, "v2.md".to_owned())];
        expected.sort();
        assert_eq!(found, expected, "erased, unknown and another tenant's ids are left out");
        assert!(h.store.documents_at(&t, &[]).await.unwrap().is_empty());
        let theirs: Vec<Uuid> =
            h.store.documents_at(&other, &ids).await.unwrap().into_iter().map(|(d, _)| d.doc_id).collect();
        assert_eq!(theirs, [foreign.doc_id]);
    }

    /// Intake's storage figure (each distinct raw object once) is kept up to date by the store on every path that
    /// changes which raw objects a tenant's documents hold; it always equals the sum over the live rows.
    async fn raw_usage_follows_every_row_that_adds_replaces_or_removes_raw_bytes(h: &Harness) {
        let t = tenant(h, "usage-paths").await;
        let other = tenant(h, "usage-other").await;
        let usage =
            |t: TenantId| async move { h.batches().intake_usage(&t, frostbyte_core::now()).await.unwrap().raw_bytes };
        let with = |sha: &str, size: u64| DocumentRecord { raw_sha256: sha.repeat(32), size_bytes: size, ..record() };
        let create = |t: TenantId, doc: DocumentRecord| async move {
            h.store.create_document(&t, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", "a")).await.unwrap();
            doc
        };
        let (a1, a2, b) = (with("aa", 100), with("aa", 100), with("bb", 50));
        for doc in [a1.clone(), a2.clone(), b.clone()] {
            create(t.clone(), doc).await;
        }
        create(other.clone(), with("aa", 100)).await;
        assert_eq!((usage(t.clone()).await, usage(other.clone()).await), (150, 100), "shared bytes count once");

        // Replacing one holder of `aa` keeps it; replacing the last holder of `bb` drops it.
        let replace = |doc: Uuid, sha: &str, size: u64| {
            let content = ReplacementContent { size_bytes: size, ..content(&sha.repeat(32)) };
            let (t, job) = (t.clone(), stage_job(Stage::Parse, doc, 2));
            async move { h.store.replace_content(&t, doc, 1, &content, job, event("R", "a")).await.unwrap() }
        };
        replace(a1.doc_id, "cc", 30).await;
        assert_eq!(usage(t.clone()).await, 180, "aa 100 + bb 50 + cc 30");
        replace(b.doc_id, "cc", 30).await;
        assert_eq!(usage(t.clone()).await, 130, "bb is gone; cc counts once");

        h.store.erase_document(&t, a2.doc_id, erasure_audit()).await.unwrap().expect("erased");
        assert_eq!(usage(t.clone()).await, 30, "the last holder of aa was erased");
        h.store.erase_document(&t, a1.doc_id, erasure_audit()).await.unwrap().expect("erased");
        assert_eq!(usage(t.clone()).await, 30, "b still holds cc");

        h.store.purge_tenant(&t, purge_audit()).await.unwrap();
        assert_eq!((usage(t.clone()).await, usage(other.clone()).await), (0, 100));
        create(t.clone(), with("dd", 9)).await;
        assert_eq!(usage(t).await, 9, "a purged tenant starts again from nothing");
    }

    fn erasure_audit() -> frostbyte_core::lifecycle::ErasureAudit {
        Box::new(|e: &DocumentErasure| {
            NewAuditEvent::new(
                "DOCUMENT_ERASED",
                "test",
                "document",
                e.doc_id.to_string(),
                json!({"component": "test", "chunks": e.index.chunks, "jobs": e.jobs}),
            )
        })
    }

    fn purge_audit() -> frostbyte_core::lifecycle::PurgeAudit {
        Box::new(|r: &TenantDocumentRows| {
            NewAuditEvent::new("TENANT_DATA_ERASED", "test", "tenant", "t", json!({"documents": r.documents}))
        })
    }

    fn content(sha: &str) -> ReplacementContent {
        ReplacementContent {
            receipt_id: frostbyte_core::ids::new_id(),
            original_filename: "v2.md".into(),
            mime_type: "text/plain".into(),
            size_bytes: 7,
            raw_sha256: sha.into(),
            metadata: json!({"team": "farm"}),
            collection: None,
        }
    }

    fn stage(kind: PipelineStage) -> StageUpdate {
        StageUpdate::new(kind, StageStatus::Done)
    }

    /// A stored document with two indexed chunks and its parse job.
    async fn indexed(h: &Harness, t: &TenantId) -> DocumentRecord {
        let doc = record();
        h.store.create_document(t, &doc, parse_job(&doc), event("DOCUMENT_INGESTED", "a")).await.unwrap();
        let id = doc.doc_id.to_string();
        h.index().replace_document_chunks(t, &id, &chunks(&id, &["alpha text", "bravo text"])).await.unwrap();
        doc
    }

    async fn erase_removes_row_chunks_and_jobs_in_one_transaction_and_keeps_a_tombstone(h: &Harness) {
        let t = tenant(h, "erase").await;
        let doc = indexed(h, &t).await;
        let keep = indexed(h, &t).await;
        let before = audit_count(h, &t).await;
        let erased = h.store.erase_document(&t, doc.doc_id, erasure_audit()).await.unwrap().expect("erased");
        assert_eq!((erased.index.chunks, erased.index.vectors, erased.index.keyword), (2, 2, 2));
        assert_eq!((erased.jobs, erased.generation), (1, 1));
        assert_eq!(erased.raw_sha256, doc.raw_sha256);
        assert_eq!(audit_count(h, &t).await, before + 1, "the audit event commits with the erasure");
        let last = h.store.audit_after(&t, i64::try_from(before).unwrap(), 10).await.unwrap();
        assert_eq!(last[0].event_type, "DOCUMENT_ERASED");
        assert_eq!(last[0].details["chunks"], json!(2));

        assert_eq!(h.store.get_document(&t, doc.doc_id).await.unwrap(), None);
        assert_eq!(h.store.get_by_receipt(&t, doc.receipt_id).await.unwrap(), None);
        assert_eq!(h.store.document_generation(&t, doc.doc_id).await.unwrap(), None);
        assert!(h.store.document_residue(&t, doc.doc_id).await.unwrap().is_empty());
        assert!(h.index().document_chunks(&t, &doc.doc_id.to_string()).await.unwrap().is_empty());
        assert!(h.index().keyword_search(&t, "alpha", &Default::default(), 10).await.unwrap().len() == 1);
        let tomb = h.store.get_tombstone(&t, doc.doc_id).await.unwrap().expect("tombstone");
        assert_eq!((tomb.doc_id, tomb.generation, tomb.raw_sha256.as_str()), (doc.doc_id, 1, doc.raw_sha256.as_str()));
        // The other document (same raw bytes) is untouched, and still references the blob.
        assert_eq!(h.store.raw_references(&t, &doc.raw_sha256).await.unwrap(), 1);
        assert_eq!(h.index().document_chunks(&t, &keep.doc_id.to_string()).await.unwrap().len(), 2);
        // A second erasure finds nothing and writes nothing.
        assert!(h.store.erase_document(&t, doc.doc_id, erasure_audit()).await.unwrap().is_none());
        assert_eq!(audit_count(h, &t).await, before + 1);
        // Another tenant cannot erase it.
        let other = tenant(h, "other").await;
        assert!(h.store.erase_document(&other, keep.doc_id, erasure_audit()).await.unwrap().is_none());
        assert_eq!(h.store.document_generation(&t, keep.doc_id).await.unwrap(), Some(1));
    }

    async fn replace_content_is_a_compare_and_set_on_the_generation(h: &Harness) {
        let t = tenant(h, "replace").await;
        let doc = indexed(h, &t).await;
        let sha = "cd".repeat(32);
        let replaced = h
            .store
            .replace_content(&t, doc.doc_id, 1, &content(&sha), stage_job(Stage::Parse, doc.doc_id, 2), event("R", "a"))
            .await
            .unwrap();
        assert_eq!(replaced.doc_id, doc.doc_id);
        assert_eq!((replaced.raw_sha256.as_str(), replaced.original_filename.as_str()), (sha.as_str(), "v2.md"));
        assert_eq!(replaced.status, DocumentStatus::Processing);
        assert_eq!(replaced.stages, DocumentStages::received());
        assert!(replaced.lineage.is_empty());
        assert_eq!(h.store.document_generation(&t, doc.doc_id).await.unwrap(), Some(2));
        // The old chunks stay until the new version's swap.
        assert_eq!(h.index().document_chunks(&t, &doc.doc_id.to_string()).await.unwrap().len(), 2);
        // The second generation's parse job does not collide with the first one's.
        let opts = ClaimOptions::new("w1", std::time::Duration::from_secs(60), 4);
        let jobs: Vec<_> = [
            h.store.claim(&opts, frostbyte_core::now()).await.unwrap().unwrap(),
            h.store.claim(&opts, frostbyte_core::now()).await.unwrap().unwrap(),
        ]
        .into_iter()
        .map(|j| frostbyte_core::lifecycle::job_generation(&j))
        .collect();
        assert_eq!(jobs, [1, 2]);

        let stale = h
            .store
            .replace_content(&t, doc.doc_id, 1, &content(&sha), stage_job(Stage::Parse, doc.doc_id, 2), event("R", "a"))
            .await
            .unwrap_err();
        assert!(matches!(stale, StoreError::Conflict(_)), "{stale:?}");
        let foreign = tenant(h, "foreign").await;
        let missing = h
            .store
            .replace_content(
                &foreign,
                doc.doc_id,
                2,
                &content(&sha),
                stage_job(Stage::Parse, doc.doc_id, 3),
                event("R", "a"),
            )
            .await
            .unwrap_err();
        assert!(matches!(missing, StoreError::NotFound { .. }), "{missing:?}");
        assert_eq!(h.store.raw_references(&t, &sha).await.unwrap(), 1);
        assert_eq!(h.store.raw_references(&t, &doc.raw_sha256).await.unwrap(), 0);
    }

    async fn guarded_writes_refuse_superseded_and_erased_generations(h: &Harness) {
        let t = tenant(h, "guard").await;
        let doc = indexed(h, &t).await;
        let id = doc.doc_id.to_string();
        h.store.update_stage_at(&t, doc.doc_id, 1, stage(PipelineStage::Parse), None, event("P", "a")).await.unwrap();
        h.store
            .replace_content(&t, doc.doc_id, 1, &content("ef"), stage_job(Stage::Parse, doc.doc_id, 2), event("R", "a"))
            .await
            .unwrap();
        let before = audit_count(h, &t).await;
        let stale = h
            .store
            .update_stage_at(
                &t,
                doc.doc_id,
                1,
                stage(PipelineStage::Policy),
                Some(stage_job(Stage::Index, doc.doc_id, 1)),
                event("P", "a"),
            )
            .await
            .unwrap_err();
        assert!(matches!(stale, StoreError::Conflict(_)), "{stale:?}");
        assert_eq!(audit_count(h, &t).await, before, "a refused update writes nothing");
        let err = h.index().replace_document_chunks_at(&t, &id, 1, &chunks(&id, &["old version"])).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(h.index().document_chunks(&t, &id).await.unwrap()[0].text, "alpha text");

        let current = h
            .store
            .update_stage_at(&t, doc.doc_id, 2, stage(PipelineStage::Parse), None, event("P", "a"))
            .await
            .unwrap();
        assert_eq!(current.stages.parse, StageStatus::Done);
        h.index().replace_document_chunks_at(&t, &id, 2, &chunks(&id, &["new version"])).await.unwrap();
        assert_eq!(h.index().document_chunks(&t, &id).await.unwrap()[0].text, "new version");

        h.store.erase_document(&t, doc.doc_id, erasure_audit()).await.unwrap().unwrap();
        let err = h.index().replace_document_chunks_at(&t, &id, 2, &chunks(&id, &["resurrected"])).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let err = h
            .store
            .update_stage_at(&t, doc.doc_id, 2, stage(PipelineStage::Index), None, event("P", "a"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(h.index().document_chunks(&t, &id).await.unwrap().is_empty());
        let never = Uuid::now_v7().to_string();
        let err = h.index().replace_document_chunks_at(&t, &never, 1, &chunks(&never, &["x"])).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }

    async fn purge_removes_one_tenants_rows_only_and_is_idempotent(h: &Harness) {
        let t = tenant(h, "purge").await;
        let other = tenant(h, "keep").await;
        let erased = indexed(h, &t).await;
        indexed(h, &t).await;
        h.store.erase_document(&t, erased.doc_id, erasure_audit()).await.unwrap().unwrap();
        // A dead-lettered job (the DLQ) of the tenant.
        let once = RetryPolicy::uniform(StageRetry::new(1, vec![]));
        let opts = ClaimOptions::new("w1", std::time::Duration::from_secs(60), 4);
        let job = h.store.claim(&opts, frostbyte_core::now()).await.unwrap().unwrap();
        h.store.fail(job.job_id, "w1", JobError::new("X", "failed"), &once, frostbyte_core::now()).await.unwrap();
        let kept = indexed(h, &other).await;
        let other_before = h.store.tenant_residue(&other).await.unwrap();

        let before = audit_count(h, &t).await;
        let removed = h.store.purge_tenant(&t, purge_audit()).await.unwrap();
        assert_eq!((removed.documents, removed.tombstones, removed.chunks), (1, 1, 2), "{removed:?}");
        assert_eq!(removed.jobs, 1, "the dead-lettered job: {removed:?}");
        assert!(h.store.tenant_residue(&t).await.unwrap().is_empty());
        assert_eq!(h.store.list_dead(&t, frostbyte_core::page::PageRequest::new(1, 10)).await.unwrap().total, 0);
        assert_eq!(h.index().count(&t).await.unwrap().chunks, 0);
        assert_eq!(audit_count(h, &t).await, before + 1);
        assert_eq!(h.store.tenant_residue(&other).await.unwrap(), other_before);
        assert_eq!(h.store.document_generation(&other, kept.doc_id).await.unwrap(), Some(1));
        assert!(h.store.purge_tenant(&t, purge_audit()).await.unwrap().is_empty(), "idempotent");
    }

    async fn a_chunk_swap_racing_an_erasure_never_survives_it(h: &Harness) {
        let t = tenant(h, "race").await;
        for round in 0..8 {
            let doc = indexed(h, &t).await;
            let id = doc.doc_id.to_string();
            let fresh = chunks(&id, &[&format!("round {round} new text")]);
            let (swap, erase) = tokio::join!(
                h.index().replace_document_chunks_at(&t, &id, 1, &fresh),
                h.store.erase_document(&t, doc.doc_id, erasure_audit()),
            );
            assert!(erase.unwrap().is_some(), "the erasure always happens");
            match swap {
                Ok(()) => {}
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
            assert!(h.index().document_chunks(&t, &id).await.unwrap().is_empty(), "round {round}");
            assert!(h.store.document_residue(&t, doc.doc_id).await.unwrap().is_empty());
        }
        assert_eq!(h.index().count(&t).await.unwrap().chunks, 0);
    }
}
