//! The `SyncStore` contract (`documents.sync` state), one suite run against every adapter: SQLite always,
//! PostgreSQL when `FROSTBYTE_TEST_POSTGRES_URL` is set. Also: a run's processor counts are stored with it.

use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus};
use frostbyte_core::pipelines::{NewRun, RunStatus, RunTransition, SyncedFile};
use frostbyte_core::queue::{NewJob, Stage};
use serde_json::json;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    files_are_recorded_replaced_and_forgotten_per_tenant_and_source,
    each_file_reports_its_documents_current_state,
    purging_a_tenant_removes_its_sync_state,
    completed_runs_keep_their_counts,
);

fn file(source: &str, path: &str, sha: &str) -> SyncedFile {
    SyncedFile {
        source: source.into(),
        path: path.into(),
        size_bytes: 12,
        version: "1700000000000000000".into(),
        sha256: sha.into(),
        doc_id: frostbyte_core::ids::new_id(),
        synced_at: frostbyte_core::now(),
    }
}

fn document(sha: &str) -> DocumentRecord {
    let now = frostbyte_core::now();
    DocumentRecord {
        doc_id: frostbyte_core::ids::new_id(),
        receipt_id: frostbyte_core::ids::new_id(),
        original_filename: "a.md".into(),
        mime_type: "text/markdown".into(),
        size_bytes: 12,
        raw_sha256: sha.into(),
        metadata: json!({}),
        collection: None,
        status: DocumentStatus::Processing,
        stages: DocumentStages::received(),
        lineage: serde_json::Map::new(),
        error_code: None,
        created_at: now,
        updated_at: now,
    }
}

fn event(kind: &str, resource: &str) -> NewAuditEvent {
    NewAuditEvent::new(kind, "test", "document", resource, json!({"component": "test", "status": "ok"}))
}

async fn files_are_recorded_replaced_and_forgotten_per_tenant_and_source(h: &Harness) {
    let t = tenant(h, "sync").await;
    let other = tenant(h, "other").await;
    let sync = h.sync();
    let src = "/srv/corpus";
    let b = file(src, "b/z.md", &"bb".repeat(32));
    let a = file(src, "a.md", &"aa".repeat(32));
    sync.put_sync_file(&t, &b).await.unwrap();
    sync.put_sync_file(&t, &a).await.unwrap();
    sync.put_sync_file(&t, &file("s3://bucket/x", "a.md", &"cc".repeat(32))).await.unwrap();
    let listed = sync.sync_files(&t, src).await.unwrap();
    let files: Vec<&SyncedFile> = listed.iter().map(|s| &s.file).collect();
    assert_eq!(files, [&a, &b], "ordered by path, only this source");
    assert!(sync.sync_files(&other, src).await.unwrap().is_empty(), "another tenant sees nothing");

    // A second record of the same path replaces the first.
    let changed = SyncedFile { size_bytes: 99, version: "etag-2".into(), sha256: "dd".repeat(32), ..a.clone() };
    sync.put_sync_file(&t, &changed).await.unwrap();
    let listed = sync.sync_files(&t, src).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].file, changed);

    assert!(!sync.delete_sync_file(&other, src, "a.md").await.unwrap(), "not another tenant's");
    assert!(sync.delete_sync_file(&t, src, "a.md").await.unwrap());
    assert!(!sync.delete_sync_file(&t, src, "a.md").await.unwrap());
    let left: Vec<String> = sync.sync_files(&t, src).await.unwrap().into_iter().map(|s| s.file.path).collect();
    assert_eq!(left, ["b/z.md"]);
    assert_eq!(sync.sync_files(&t, "s3://bucket/x").await.unwrap().len(), 1);
}

async fn each_file_reports_its_documents_current_state(h: &Harness) {
    let t = tenant(h, "sync").await;
    let sync = h.sync();
    let doc = document(&"ee".repeat(32));
    let job = NewJob::new(Stage::Parse, doc.doc_id.to_string(), json!({"doc_id": doc.doc_id}));
    h.store.create_document(&t, &doc, job, event("DOCUMENT_INGESTED", &doc.doc_id.to_string())).await.unwrap();
    let live = SyncedFile { doc_id: doc.doc_id, ..file("/c", "live.md", &doc.raw_sha256) };
    let gone = file("/c", "gone.md", &"ff".repeat(32));
    sync.put_sync_file(&t, &live).await.unwrap();
    sync.put_sync_file(&t, &gone).await.unwrap();
    let listed = sync.sync_files(&t, "/c").await.unwrap();
    assert_eq!(listed[0].file.path, "gone.md");
    assert_eq!(listed[0].document_sha256, None, "its document does not exist");
    assert_eq!(listed[1].document_sha256.as_deref(), Some(doc.raw_sha256.as_str()));

    // The same document id under another tenant is not this tenant's document.
    let other = tenant(h, "other").await;
    sync.put_sync_file(&other, &live).await.unwrap();
    assert_eq!(sync.sync_files(&other, "/c").await.unwrap()[0].document_sha256, None);
}

async fn purging_a_tenant_removes_its_sync_state(h: &Harness) {
    let t = tenant(h, "sync").await;
    let keep = tenant(h, "keep").await;
    let sync = h.sync();
    sync.put_sync_file(&t, &file("/c", "a.md", &"aa".repeat(32))).await.unwrap();
    sync.put_sync_file(&keep, &file("/c", "a.md", &"aa".repeat(32))).await.unwrap();
    let audit: frostbyte_core::lifecycle::PurgeAudit = Box::new(|_| {
        NewAuditEvent::new("TENANT_DATA_ERASED", "test", "tenant", "t", json!({"component": "test", "status": "ok"}))
    });
    h.store.purge_tenant(&t, audit).await.unwrap();
    assert!(sync.sync_files(&t, "/c").await.unwrap().is_empty());
    assert_eq!(sync.sync_files(&keep, "/c").await.unwrap().len(), 1);
}

async fn completed_runs_keep_their_counts(h: &Harness) {
    let t = tenant(h, "runs").await;
    let runs = h.runs();
    let run_id = frostbyte_core::ids::new_id();
    let new = NewRun::new(run_id, "documents", "sync", Default::default(), "test");
    let job = NewJob::new(Stage::Pipeline, run_id.to_string(), json!({}));
    let ev = |kind: &str| {
        NewAuditEvent::new(kind, "test", "pipeline_run", run_id.to_string(), json!({"component": "pipeline"}))
    };
    let run = runs.create_run(&t, new, job, ev("PIPELINE_RUN_CREATED")).await.unwrap();
    assert!(run.counts.is_empty());
    for to in [RunStatus::Validating, RunStatus::Running] {
        runs.transition_run(&t, run_id, RunTransition::to(to), ev("E")).await.unwrap();
    }
    let counts = json!({"added": 3, "unchanged": 7}).as_object().unwrap().clone();
    let done = runs
        .transition_run(&t, run_id, RunTransition::to(RunStatus::Completed).counts(counts.clone()), ev("C"))
        .await
        .unwrap();
    assert_eq!(done.counts, counts);
    assert_eq!(runs.get_run(&t, run_id).await.unwrap().unwrap().counts, counts);
}
