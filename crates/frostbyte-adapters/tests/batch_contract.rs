//! The `BatchStore` contract (batches, their files, intake usage, the tenant metadata schema), one suite run
//! against every adapter: SQLite always, PostgreSQL when `FROSTBYTE_TEST_POSTGRES_URL` is set.

use frostbyte_core::audit::{ChainVerifier, NewAuditEvent};
use frostbyte_core::batch::{BatchFileRecord, BatchRecord, FileOutcome, NewBatch, RejectReason};
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus};
use frostbyte_core::queue::{NewJob, Stage};
use frostbyte_core::{StoreError, TenantId};
use serde_json::{Map, json};
use uuid::Uuid;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    a_batch_is_written_whole_with_documents_jobs_and_audit,
    a_reused_batch_id_is_rejected_and_writes_nothing,
    batches_are_invisible_to_other_tenants,
    intake_usage_counts_distinct_raw_bytes_and_todays_documents,
    the_metadata_schema_is_versioned_with_compare_and_set,
);

// --- fixtures --------------------------------------------------------------------------------------------------

fn doc(sha: &str, size: u64) -> DocumentRecord {
    let now = frostbyte_core::now();
    DocumentRecord {
        doc_id: frostbyte_core::ids::new_id(),
        receipt_id: frostbyte_core::ids::new_id(),
        original_filename: "notes.md".into(),
        mime_type: "text/markdown".into(),
        size_bytes: size,
        raw_sha256: sha.into(),
        metadata: json!({}),
        collection: Some("handbook".into()),
        status: DocumentStatus::Processing,
        stages: DocumentStages::received(),
        lineage: Map::new(),
        error_code: None,
        created_at: now,
        updated_at: now,
    }
}

fn file(id: &str, position: u32, outcome: FileOutcome, doc: Option<&DocumentRecord>) -> BatchFileRecord {
    BatchFileRecord {
        file_id: id.into(),
        position,
        filename: format!("{id}.md"),
        declared_mime: "text/markdown".into(),
        size_bytes: 10,
        sha256: "ab".repeat(32),
        outcome,
        reason: (outcome == FileOutcome::Rejected).then_some(RejectReason::ChecksumMismatch),
        message: (outcome == FileOutcome::Rejected).then(|| "sha256 differs".into()),
        doc_id: doc.map(|d| d.doc_id),
        receipt_id: doc.map_or_else(frostbyte_core::ids::new_id, |d| d.receipt_id),
        scan_result: Some("skipped".into()),
        signature: None,
    }
}

fn new_batch(batch_id: &str) -> (NewBatch, DocumentRecord) {
    let accepted = doc(&"ab".repeat(32), 10);
    let job = NewJob::new(Stage::Parse, accepted.doc_id.to_string(), json!({"doc_id": accepted.doc_id}))
        .dedupe_key(format!("parse:{}", accepted.doc_id));
    let batch = NewBatch {
        batch: BatchRecord {
            batch_id: batch_id.into(),
            file_count: 2,
            collection: Some("handbook".into()),
            submitter: Some("ops".into()),
            accepted: 1,
            rejected: 1,
            quarantined: 0,
            created_at: frostbyte_core::now(),
        },
        files: vec![file("a", 0, FileOutcome::Accepted, Some(&accepted)), file("b", 1, FileOutcome::Rejected, None)],
        documents: vec![(accepted.clone(), job)],
        audit: vec![
            NewAuditEvent::new("BATCH_RECEIVED", "test", "batch", batch_id, json!({"component": "test"})),
            NewAuditEvent::new("DOCUMENT_INGESTED", "test", "document", accepted.doc_id.to_string(), json!({})),
            NewAuditEvent::new("DOCUMENT_REJECTED", "test", "batch_file", format!("{batch_id}/b"), json!({})),
        ],
    };
    (batch, accepted)
}

async fn audit_count(h: &Harness, t: &TenantId) -> u64 {
    let mut v = ChainVerifier::default();
    for e in &h.store.audit_after(t, 0, 1000).await.expect("audit") {
        v.push(e);
    }
    assert!(v.first_break().is_none(), "the chain stays valid");
    v.events_checked()
}

// --- the contract ----------------------------------------------------------------------------------------------

async fn a_batch_is_written_whole_with_documents_jobs_and_audit(h: &Harness) {
    let t = tenant(h, "batch").await;
    let b = h.batches();
    let before = audit_count(h, &t).await;
    let (batch, accepted) = new_batch("b-1");
    b.create_batch(&t, batch.clone()).await.expect("create");
    assert_eq!(audit_count(h, &t).await, before + 3);
    let stored = b.get_batch(&t, "b-1").await.unwrap().expect("batch");
    assert_eq!(stored.batch_id, "b-1");
    assert_eq!((stored.accepted, stored.rejected, stored.quarantined, stored.file_count), (1, 1, 0, 2));
    assert_eq!(stored.created_at, batch.batch.created_at, "timestamps round-trip exactly");
    let files = b.batch_files(&t, "b-1").await.unwrap();
    assert_eq!(files, batch.files, "files round-trip in manifest order");
    let doc = h.store.get_document(&t, accepted.doc_id).await.unwrap().expect("document written");
    assert_eq!(doc, accepted);
    let (batch_id, by_receipt) = b.batch_file_by_receipt(&t, files[1].receipt_id).await.unwrap().expect("receipt");
    assert_eq!((batch_id.as_str(), by_receipt.file_id.as_str()), ("b-1", "b"));
    assert_eq!(by_receipt.reason, Some(RejectReason::ChecksumMismatch));
    assert!(b.batch_file_by_receipt(&t, Uuid::now_v7()).await.unwrap().is_none());
    let opts = frostbyte_core::queue::ClaimOptions::new("w1", std::time::Duration::from_secs(60), 4);
    let job = h.store.claim(&opts, frostbyte_core::now()).await.unwrap().expect("the parse job was enqueued");
    assert_eq!(job.resource_id, accepted.doc_id.to_string());
}

async fn a_reused_batch_id_is_rejected_and_writes_nothing(h: &Harness) {
    let t = tenant(h, "batch").await;
    let b = h.batches();
    b.create_batch(&t, new_batch("b-1").0).await.expect("create");
    let before = audit_count(h, &t).await;
    let (again, doc) = new_batch("b-1");
    let e = b.create_batch(&t, again).await.expect_err("the batch id is taken");
    assert!(matches!(e, StoreError::AlreadyExists { resource: "batch" }), "{e:?}");
    assert_eq!(audit_count(h, &t).await, before, "no audit event");
    assert!(h.store.get_document(&t, doc.doc_id).await.unwrap().is_none(), "no document");
    let unknown = TenantId::parse("nobody-here").unwrap();
    assert!(matches!(b.create_batch(&unknown, new_batch("b-2").0).await, Err(StoreError::NotFound { .. })));
}

async fn batches_are_invisible_to_other_tenants(h: &Harness) {
    let t = tenant(h, "batch").await;
    let other = tenant(h, "other").await;
    let b = h.batches();
    let (batch, _) = new_batch("shared-id");
    let receipt = batch.files[1].receipt_id;
    b.create_batch(&t, batch).await.expect("create");
    assert!(b.get_batch(&other, "shared-id").await.unwrap().is_none());
    assert!(b.batch_files(&other, "shared-id").await.unwrap().is_empty());
    assert!(b.batch_file_by_receipt(&other, receipt).await.unwrap().is_none());
    // The same id is free for another tenant.
    b.create_batch(&other, new_batch("shared-id").0).await.expect("another tenant's batch");
}

async fn intake_usage_counts_distinct_raw_bytes_and_todays_documents(h: &Harness) {
    let t = tenant(h, "usage").await;
    let b = h.batches();
    let day = frostbyte_core::now() - chrono::Duration::hours(1);
    assert_eq!(b.intake_usage(&t, day).await.unwrap(), Default::default());
    for (sha, size) in [("aa", 100u64), ("aa", 100), ("bb", 50)] {
        let d = doc(&sha.repeat(32), size);
        let job = NewJob::new(Stage::Parse, d.doc_id.to_string(), json!({}));
        let ev = NewAuditEvent::new("DOCUMENT_INGESTED", "test", "document", d.doc_id.to_string(), json!({}));
        h.store.create_document(&t, &d, job, ev).await.unwrap();
    }
    let usage = b.intake_usage(&t, day).await.unwrap();
    assert_eq!(usage.raw_bytes, 150, "identical bytes count once");
    assert_eq!(usage.documents_today, 3);
    let later = frostbyte_core::now() + chrono::Duration::hours(1);
    assert_eq!(b.intake_usage(&t, later).await.unwrap().documents_today, 0);
}

async fn the_metadata_schema_is_versioned_with_compare_and_set(h: &Harness) {
    let t = tenant(h, "schema").await;
    let b = h.batches();
    assert!(b.get_metadata_schema(&t).await.unwrap().is_none());
    let ev = || NewAuditEvent::new("SCHEMA_UPDATED", "test", "metadata_schema", "x", json!({}));
    let before = audit_count(h, &t).await;
    let v1 = b.put_metadata_schema(&t, &json!({"type": "object"}), None, ev()).await.unwrap();
    assert_eq!(v1.version, 1);
    let v2 = b.put_metadata_schema(&t, &json!({"type": "object", "required": ["team"]}), Some(1), ev()).await.unwrap();
    assert_eq!(v2.version, 2);
    let stale = b.put_metadata_schema(&t, &json!({}), Some(1), ev()).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let stale = b.put_metadata_schema(&t, &json!({}), None, ev()).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let got = b.get_metadata_schema(&t).await.unwrap().unwrap();
    assert_eq!((got.version, got.schema), (2, json!({"type": "object", "required": ["team"]})));
    assert_eq!(audit_count(h, &t).await, before + 2, "one event per change, none for refused ones");
    let other = tenant(h, "other").await;
    assert!(b.get_metadata_schema(&other).await.unwrap().is_none());
}
