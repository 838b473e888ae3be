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
    update_stage_moves_on_with_its_job,
    other_tenants_documents_are_invisible,
    find_by_filename_returns_the_newest_document_within_the_tenant,
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

async fn find_by_filename_returns_the_newest_document_within_the_tenant(h: &Harness) {
    let t = tenant(h, "content").await;
    let other = tenant(h, "content-other").await;
    let older = record();
    h.store.create_document(&t, &older, parse_job(&older), event("DOCUMENT_INGESTED", "a")).await.unwrap();
    let mut newer = record();
    newer.raw_sha256 = "cd".repeat(32);
    newer.created_at = older.created_at + chrono::Duration::seconds(1);
    h.store.create_document(&t, &newer, parse_job(&newer), event("DOCUMENT_INGESTED", "b")).await.unwrap();
    let found = h.store.find_by_filename(&t, "notes.md").await.unwrap().expect("found");
    assert_eq!((found.doc_id, found.raw_sha256.as_str()), (newer.doc_id, newer.raw_sha256.as_str()));
    assert_eq!(h.store.find_by_filename(&t, "renamed.md").await.unwrap(), None, "name matters");
    assert_eq!(h.store.find_by_filename(&other, "notes.md").await.unwrap(), None, "tenant matters");
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
