//! The document lifecycle through the API: erasure with a verified receipt, erasure racing the pipeline,
//! replacement in place with an atomic chunk swap, replacement racing erasure, export, 404s without existence
//! leaks, and tenant deprovisioning that leaves nothing but the tombstone and the audit chain.

use std::time::Duration;

use base64::Engine;
use frostbyte::pipeline::Pipeline;
use frostbyte_core::TenantId;
use frostbyte_core::index::SearchFilter;
use frostbyte_core::queue::{ClaimOptions, NewJob, RetryPolicy, RunOnce, Stage, StageRetry};
use frostbyte_core::service::{Actor, TenantService};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{ADMIN_KEY, Resp, TestApp, spawn_app};

const BOUNDARY: &str = "frostbyte-lifecycle-boundary";
const SSN: &str = "078-05-1120";

/// A multipart body with a `file` part and optional `metadata` and `collection` parts.
pub fn multipart_body(filename: &str, content_type: &str, bytes: &[u8], metadata: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(m) = metadata {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{m}\r\n").as_bytes(),
        );
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"collection\"\r\n\r\nhandbook\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

async fn upload(app: &TestApp, token: &str, tenant: &str, filename: &str, bytes: &[u8]) -> String {
    let r = app
        .send_raw(
            Method::POST,
            &format!("/api/v1/ingest/{tenant}/documents"),
            Some(token),
            Some(&multipart_type()),
            multipart_body(filename, "text/markdown", bytes, Some(r#"{"team":"ops","owner":"Jane Roe"}"#)),
        )
        .await;
    r.expect(202);
    r.data()["doc_id"].as_str().unwrap().to_owned()
}

fn pipeline(app: &TestApp) -> Pipeline {
    Pipeline::new(app.store.clone(), app.queue.clone(), app.documents.clone(), app.blobs.clone(), "lifecycle-worker")
}

/// A pipeline whose parse jobs stop after parsing, so that a test can act between stages.
fn stepwise(app: &TestApp) -> Pipeline {
    Pipeline { chain: false, ..pipeline(app) }
}

async fn drain(p: &Pipeline) -> usize {
    let mut ran = 0;
    while let RunOnce::Ran(_) = p.try_run_one().await.expect("run one") {
        ran += 1;
        assert!(ran < 200, "the pipeline never went idle");
    }
    ran
}

async fn run_jobs(p: &Pipeline, n: usize) {
    for _ in 0..n {
        assert!(matches!(p.try_run_one().await.expect("run one"), RunOnce::Ran(_)), "a job was expected");
    }
}

fn onboarding() -> Vec<u8> {
    format!(
        "# Onboarding\n\nWelcome to the operations team. Payroll needs your details before the first run.\n\n\
         ## Records\n\nEmployee SSN {SSN} is on file with human resources.\n\n- badge issued\n- laptop issued\n"
    )
    .into_bytes()
}

fn inventory() -> Vec<u8> {
    b"# Warehouse\n\nThe giraffe enclosure inventory lists zebra feed, hay bales and water troughs.\n".to_vec()
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

async fn keyword_docs(app: &TestApp, tenant: &str, query: &str) -> Vec<String> {
    let hits = app.index.keyword_search(&tid(tenant), query, &SearchFilter::default(), 50).await.unwrap();
    hits.into_iter().map(|h| h.doc_id).collect()
}

async fn jobs_of(app: &TestApp, doc_id: &str) -> i64 {
    let store = frostbyte_adapters::SqliteStore::open(&app.db_path, 1).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE resource_id = ? AND status <> 'succeeded'")
        .bind(doc_id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Every row of `tenant` in every table that has a `tenant_id` column, by table (zero counts left out).
async fn rows_of_tenant(app: &TestApp, tenant: &str) -> Vec<(String, i64)> {
    let store = frostbyte_adapters::SqliteStore::open(&app.db_path, 1).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT m.name FROM sqlite_master m WHERE m.type = 'table' AND EXISTS \
         (SELECT 1 FROM pragma_table_info(m.name) p WHERE p.name = 'tenant_id') ORDER BY m.name",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(tables.len() >= 8, "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{table}\" WHERE tenant_id = ?")))
                .bind(tenant)
                .fetch_one(store.pool())
                .await
                .unwrap();
        if n > 0 {
            out.push((table, n));
        }
    }
    out
}

/// Nothing of `tenant` is left but its tombstone row, its audit chain and its revoked key records.
async fn assert_only_tombstone_and_audit_remain(app: &TestApp, tenant: &str) {
    let rows = rows_of_tenant(app, tenant).await;
    for (table, n) in &rows {
        match table.as_str() {
            "tenants" => assert_eq!(*n, 1, "the tenant tombstone"),
            "audit_events" | "audit_heads" => {}
            "api_keys" => {
                let keys = app.store.list_api_keys(&tid(tenant)).await.unwrap();
                assert!(keys.iter().all(|k| k.revoked_at.is_some()), "every key record is revoked");
            }
            other => panic!("{n} rows of {tenant} remain in {other}: {rows:?}"),
        }
    }
    assert!(app.blobs.list(&tid(tenant), "").await.unwrap().is_empty(), "no blob remains under the prefix");
    let t = app.store.get_tenant(&tid(tenant)).await.unwrap().unwrap();
    assert_eq!(t.state.as_str(), "DEPROVISIONED");
}

async fn audit_total(app: &TestApp, tenant: &str, event_type: &str) -> u64 {
    let r = app.audit_events(ADMIN_KEY, tenant, &format!("?event_type={event_type}&limit=500")).await;
    r.expect(200);
    r.body["meta"]["total"].as_u64().unwrap()
}

// --- erasure ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn erasure_removes_every_store_and_answers_a_verified_receipt() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = tid("acme");
    let doc_id = upload(&app, &t.key, "acme", "jane-roe-onboarding.md", &onboarding()).await;
    assert_eq!(drain(&pipeline(&app)).await, 1, "one job takes the document through every stage");
    let chunks = app.index.document_chunks(&tenant, &doc_id).await.unwrap();
    assert!(!chunks.is_empty());
    assert_eq!(keyword_docs(&app, "acme", "payroll").await, std::slice::from_ref(&doc_id));
    assert_eq!(app.blobs.list(&tenant, "").await.unwrap().len(), 3, "raw, canonical and policed");

    let r = app.erase_document(&t.key, "acme", &doc_id).await;
    r.expect(200);
    let receipt = &r.data()["erasure_receipt"];
    assert_eq!(receipt["doc_id"], json!(doc_id));
    assert_eq!(receipt["verified"], json!(true), "{}", r.text);
    let n = json!(chunks.len());
    assert_eq!(receipt["removed"]["chunks"], n, "{}", r.text);
    assert_eq!(receipt["removed"]["vectors"], n, "{}", r.text);
    assert_eq!(receipt["removed"]["keyword"], n, "{}", r.text);
    assert_eq!(receipt["removed"]["raw"], json!(1), "{}", r.text);
    assert_eq!(receipt["removed"]["canonical"], json!(1), "{}", r.text);
    assert_eq!(receipt["removed"]["policed"], json!(1), "{}", r.text);
    assert_eq!(receipt["raw_retained"], json!(false));
    assert_eq!(receipt["verification"]["derived_blobs"], json!(0));
    assert!(!r.text.contains("jane-roe") && !r.text.contains("Payroll"), "the receipt carries no content");

    // Every store, re-read.
    assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty());
    assert!(app.index.document_chunks(&tenant, &doc_id).await.unwrap().is_empty());
    assert!(keyword_docs(&app, "acme", "payroll").await.is_empty());
    assert_eq!(jobs_of(&app, &doc_id).await, 0);
    for path in
        [format!("/api/v1/query/acme/document/{doc_id}"), format!("/api/v1/tenants/acme/documents/{doc_id}/export")]
    {
        app.get(&path, Some(&t.key)).await.expect_error(404, "RESOURCE_NOT_FOUND");
    }
    // Erasing again is idempotent: it sweeps and verifies again, and finds nothing.
    let again = app.erase_document(&t.key, "acme", &doc_id).await;
    again.expect(200);
    assert_eq!(again.data()["erasure_receipt"]["already_erased"], json!(true));
    assert_eq!(again.data()["erasure_receipt"]["verified"], json!(true));
    for (what, n) in again.data()["erasure_receipt"]["removed"].as_object().unwrap() {
        assert_eq!(n, &json!(0), "{what}");
    }
    let uuid = Uuid::parse_str(&doc_id).unwrap();
    let tomb = app.documents.get_tombstone(&tenant, uuid).await.unwrap().expect("a tombstone");
    assert_eq!(tomb.generation, 1);
    let usage = app.get_tenant("acme").await;
    assert_eq!(usage.data()["usage"], json!({"documents_count": 0, "chunks_count": 0, "storage_bytes": 0}));

    // The audit trail keeps the erasure, with counts and hashes but no content, and the chain stays valid.
    assert_eq!(audit_total(&app, "acme", "DOCUMENT_ERASED").await, 1);
    assert_eq!(audit_total(&app, "acme", "DOCUMENT_ERASURE_VERIFIED").await, 2);
    let events = app.audit_events(&t.key, "acme", "?event_type=DOCUMENT_ERASED").await;
    let details = &events.data()[0]["details"];
    assert_eq!(details["chunks"], n);
    assert_eq!(details["input_hash"], json!(hex::encode(Sha256::digest(onboarding()))));
    let all = app.audit_events(&t.key, "acme", "?limit=500").await;
    for secret in [SSN, "jane-roe", "Jane Roe", "Payroll"] {
        assert!(!all.text.contains(secret), "the audit log carries {secret}");
    }
    assert_eq!(app.audit_verify(&t.key, "acme").await.data()["valid"], json!(true));
}

#[tokio::test]
async fn erasure_removes_what_interrupted_writes_left_in_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = frostbyte_adapters::ObjectBlobStore::local(&dir.path().join("blobs")).unwrap();
    let app = crate::helpers::spawn_app_with(crate::helpers::TestConfig {
        blobs: Some(std::sync::Arc::new(blobs)),
        ..crate::helpers::TestConfig::default()
    })
    .await;
    let t = app.tenant("acme").await;
    let doc_id = upload(&app, &t.key, "acme", "jane-roe-onboarding.md", &onboarding()).await;
    drain(&pipeline(&app)).await;

    // A process killed between writing a blob's staging file and renaming it into place leaves the content under
    // no key: no listing shows it, but erasure must still remove it.
    let tenant_dir = dir.path().join("blobs/tenants/acme");
    let sha256 = hex::encode(Sha256::digest(onboarding()));
    let leftovers = [
        tenant_dir.join(format!("canonical/{doc_id}.json#1")),
        tenant_dir.join(format!("policed/{doc_id}.json#2")),
        tenant_dir.join(format!("raw/{sha256}#1")),
    ];
    for path in &leftovers {
        std::fs::write(path, onboarding()).unwrap();
    }
    app.erase_document(&t.key, "acme", &doc_id).await.expect(200);
    for path in &leftovers {
        assert!(!path.exists(), "{} survived the erasure", path.display());
    }
    let mut left = vec![tenant_dir];
    while let Some(path) = left.pop() {
        if path.is_dir() {
            left.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.exists() {
            panic!("{} survived the erasure", path.display());
        }
    }
}

#[tokio::test]
async fn shared_raw_bytes_stay_until_the_last_document_using_them_is_erased() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = tid("acme");
    let first = upload(&app, &t.key, "acme", "a.md", &onboarding()).await;
    let second = upload(&app, &t.key, "acme", "b.md", &onboarding()).await;
    drain(&pipeline(&app)).await;
    assert_eq!(app.blobs.list(&tenant, "raw/").await.unwrap().len(), 1, "stored once");

    let r = app.erase_document(&t.key, "acme", &first).await;
    r.expect(200);
    assert_eq!(r.data()["erasure_receipt"]["raw_retained"], json!(true), "{}", r.text);
    assert_eq!(r.data()["erasure_receipt"]["removed"]["raw"], json!(0), "{}", r.text);
    assert_eq!(app.blobs.list(&tenant, "raw/").await.unwrap().len(), 1, "still used by the second document");
    app.get(&format!("/api/v1/query/acme/document/{second}"), Some(&t.key)).await.expect(200);
    assert_eq!(keyword_docs(&app, "acme", "payroll").await, std::slice::from_ref(&second));

    let r = app.erase_document(&t.key, "acme", &second).await;
    r.expect(200);
    assert_eq!(r.data()["erasure_receipt"]["raw_retained"], json!(false));
    assert_eq!(r.data()["erasure_receipt"]["removed"]["raw"], json!(1));
    assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn erasure_mid_pipeline_is_not_resurrected_by_its_jobs() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = tid("acme");
    let p = stepwise(&app);

    // Erased after parse: its queued policy job goes with it.
    let parsed = upload(&app, &t.key, "acme", "parsed.md", &onboarding()).await;
    run_jobs(&p, 1).await;
    assert_eq!(app.blobs.list(&tenant, "canonical/").await.unwrap().len(), 1);
    app.erase_document(&t.key, "acme", &parsed).await.expect(200);

    // Erased while its index job is held by a worker that then died: the job is reclaimed after its lease and
    // ends without writing.
    let held = upload(&app, &t.key, "acme", "held.md", &inventory()).await;
    run_jobs(&p, 2).await;
    let dead_worker = ClaimOptions::new("crashed-worker", Duration::from_millis(1), 4);
    let job = app.queue.claim(&dead_worker, frostbyte_core::now()).await.unwrap().expect("the index job");
    assert_eq!((job.stage, job.resource_id.as_str()), (Stage::Index, held.as_str()));
    app.erase_document(&t.key, "acme", &held).await.expect(200);
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert!(drain(&p).await >= 1, "the orphaned job ran");
    for doc in [&parsed, &held] {
        assert!(app.index.document_chunks(&tenant, doc).await.unwrap().is_empty());
        app.get(&format!("/api/v1/query/acme/document/{doc}"), Some(&t.key))
            .await
            .expect_error(404, "RESOURCE_NOT_FOUND");
    }
    assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty(), "{:?}", app.blobs.list(&tenant, "").await);
    assert_eq!(app.index.count(&tenant).await.unwrap().chunks, 0);

    // And the guarded writes themselves refuse an erased document, whatever a job had read before.
    let uuid = Uuid::parse_str(&held).unwrap();
    let err = app.index.replace_document_chunks_at(&tenant, &held, 1, &[]).await.unwrap_err();
    assert!(matches!(err, frostbyte_core::StoreError::NotFound { .. }), "{err:?}");
    let update = frostbyte_core::documents::StageUpdate::new(
        frostbyte_core::documents::PipelineStage::Index,
        frostbyte_core::documents::StageStatus::Done,
    );
    let audit = frostbyte_core::audit::NewAuditEvent::new("X", "test", "document", &held, json!({}));
    let err = app.documents.update_stage_at(&tenant, uuid, 1, update, None, audit).await.unwrap_err();
    assert!(matches!(err, frostbyte_core::StoreError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn erasing_while_workers_run_leaves_nothing_behind() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = tid("acme");
    let mut docs = Vec::new();
    for i in 0..6 {
        let body = format!("# Note {i}\n\nPayroll run {i} needs the ledger and the badge list for site {i}.\n");
        docs.push(upload(&app, &t.key, "acme", &format!("n{i}.md"), body.as_bytes()).await);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..3)
        .map(|n| {
            let mut p = pipeline(&app);
            p.claim.worker_id = format!("w{n}");
            tokio::spawn(frostbyte::pipeline::run_worker(p, Duration::from_millis(1), stop_rx.clone()))
        })
        .collect();
    for (i, doc) in docs.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
        app.erase_document(&t.key, "acme", doc).await.expect(200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_tx.send(true).unwrap();
    for w in workers {
        w.await.unwrap();
    }
    drain(&pipeline(&app)).await;
    assert_eq!(app.index.count(&tenant).await.unwrap().chunks, 0);
    assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty(), "{:?}", app.blobs.list(&tenant, "").await);
    let residue = app.documents.tenant_residue(&tenant).await.unwrap();
    assert_eq!((residue.documents, residue.chunks, residue.tombstones), (0, 0, 6), "{residue:?}");
    for doc in &docs {
        assert_eq!(jobs_of(&app, doc).await, 0);
    }
}

// --- replace in place ------------------------------------------------------------------------------------------

#[tokio::test]
async fn replace_keeps_the_id_and_swaps_chunks_when_the_new_version_is_indexed() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = tid("acme");
    let p = stepwise(&app);
    let doc_id = upload(&app, &t.key, "acme", "v1.md", &onboarding()).await;
    drain(&p).await;
    let old_raw = app.blobs.list(&tenant, "raw/").await.unwrap();

    let r = app.replace_document(&t.key, "acme", &doc_id, "v2.md", &inventory(), None).await;
    r.expect(202);
    assert_eq!(r.data()["doc_id"], json!(doc_id));
    assert_eq!(r.data()["generation"], json!(2));
    assert_eq!(r.data()["status"], json!("processing"));
    assert_eq!(r.data()["sha256"], json!(hex::encode(Sha256::digest(inventory()))));

    // Until the new version is indexed, the old chunks answer searches.
    assert_eq!(keyword_docs(&app, "acme", "payroll").await, std::slice::from_ref(&doc_id));
    assert!(keyword_docs(&app, "acme", "giraffe").await.is_empty());
    run_jobs(&p, 2).await; // parse and policy of the new version
    assert_eq!(keyword_docs(&app, "acme", "payroll").await, std::slice::from_ref(&doc_id));
    assert!(keyword_docs(&app, "acme", "giraffe").await.is_empty());
    run_jobs(&p, 1).await; // index: the swap
    assert_eq!(drain(&p).await, 0);
    assert_eq!(keyword_docs(&app, "acme", "giraffe").await, std::slice::from_ref(&doc_id));
    assert!(keyword_docs(&app, "acme", "payroll").await.is_empty());

    let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
    d.expect(200);
    assert_eq!(d.data()["status"], json!("indexed"), "{}", d.text);
    assert_eq!(d.data()["original_filename"], json!("v2.md"));
    assert_eq!(d.data()["metadata"]["team"], json!("ops"), "metadata is kept when no part replaces it");
    let chunks = app.index.document_chunks(&tenant, &doc_id).await.unwrap();
    assert!(!chunks.is_empty());
    assert!(chunks.iter().all(|c| c.original_filename == "v2.md" && !c.text.contains("Payroll")), "{chunks:?}");
    // Only the new version's blobs remain.
    let raw = app.blobs.list(&tenant, "raw/").await.unwrap();
    assert_eq!(raw.len(), 1);
    assert_ne!(raw, old_raw);
    let uuid = Uuid::parse_str(&doc_id).unwrap();
    let derived = [
        app.blobs.list(&tenant, &format!("canonical/{doc_id}.")).await.unwrap(),
        app.blobs.list(&tenant, &format!("policed/{doc_id}.")).await.unwrap(),
    ];
    assert_eq!(
        derived,
        [
            vec![frostbyte_core::lifecycle::canonical_key(&uuid, 2)],
            vec![frostbyte_core::lifecycle::policed_key(&uuid, 2)]
        ]
    );
    assert_eq!(audit_total(&app, "acme", "DOCUMENT_REPLACED").await, 1);

    // Erasing a replaced document removes every version.
    let r = app.erase_document(&t.key, "acme", &doc_id).await;
    r.expect(200);
    assert_eq!(r.data()["erasure_receipt"]["generation"], json!(2));
    assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_superseded_versions_jobs_never_overwrite_the_newer_one() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = tid("acme");
    let p = stepwise(&app);
    let doc_id = upload(&app, &t.key, "acme", "v1.md", &onboarding()).await;
    run_jobs(&p, 1).await; // v1 parsed; its policy job waits
    app.replace_document(&t.key, "acme", &doc_id, "v2.md", &inventory(), None).await.expect(202);
    // A third version overtakes the second before either is processed.
    let v3 = b"# Orchard\n\nThe apple harvest and pear pruning schedule for the orchard crew.\n";
    app.replace_document(&t.key, "acme", &doc_id, "v3.md", v3, Some(r#"{"team":"farm"}"#)).await.expect(202);
    drain(&p).await;

    assert_eq!(keyword_docs(&app, "acme", "orchard").await, std::slice::from_ref(&doc_id));
    assert!(keyword_docs(&app, "acme", "payroll").await.is_empty(), "v1 never indexed over v3");
    assert!(keyword_docs(&app, "acme", "giraffe").await.is_empty(), "v2 never indexed over v3");
    let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
    assert_eq!(d.data()["status"], json!("indexed"), "{}", d.text);
    assert_eq!(d.data()["metadata"], json!({"team": "farm"}));
    let uuid = Uuid::parse_str(&doc_id).unwrap();
    assert_eq!(app.documents.document_generation(&tenant, uuid).await.unwrap(), Some(3));
    let mut keys = app.blobs.list(&tenant, "").await.unwrap();
    keys.retain(|k| !k.starts_with("raw/"));
    assert_eq!(
        keys,
        [frostbyte_core::lifecycle::canonical_key(&uuid, 3), frostbyte_core::lifecycle::policed_key(&uuid, 3)]
    );
    assert_eq!(app.blobs.list(&tenant, "raw/").await.unwrap().len(), 1);
    // A late write for an older generation is refused inside the index transaction.
    let err = app.index.replace_document_chunks_at(&tenant, &doc_id, 2, &[]).await.unwrap_err();
    assert!(matches!(err, frostbyte_core::StoreError::Conflict(_)), "{err:?}");
    assert!(!app.index.document_chunks(&tenant, &doc_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn replace_racing_erasure_ends_with_the_document_erased() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = tid("acme");
    let p = pipeline(&app);

    // Erasure first: the replacement answers 404 and stores nothing.
    let doc_id = upload(&app, &t.key, "acme", "first.md", &onboarding()).await;
    drain(&p).await;
    app.erase_document(&t.key, "acme", &doc_id).await.expect(200);
    app.replace_document(&t.key, "acme", &doc_id, "v2.md", &inventory(), None)
        .await
        .expect_error(404, "RESOURCE_NOT_FOUND");
    assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty());

    // Both at once, several times: whatever the interleaving, the erasure wins and nothing remains.
    for round in 0..6 {
        let doc_id = upload(&app, &t.key, "acme", &format!("r{round}.md"), &onboarding()).await;
        drain(&p).await;
        let body = format!("# Round {round}\n\nA replacement body for round {round} about giraffes.\n");
        let (replaced, erased) = tokio::join!(
            app.replace_document(&t.key, "acme", &doc_id, "v2.md", body.as_bytes(), None),
            app.erase_document(&t.key, "acme", &doc_id),
        );
        erased.expect(200);
        assert!([202, 404].contains(&replaced.status.as_u16()), "{}", replaced.text);
        drain(&p).await;
        app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key))
            .await
            .expect_error(404, "RESOURCE_NOT_FOUND");
        assert!(app.index.document_chunks(&tenant, &doc_id).await.unwrap().is_empty());
        assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty(), "round {round}");
        assert_eq!(jobs_of(&app, &doc_id).await, 0);
    }
}

// --- export ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn export_returns_everything_supplied_and_derived() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let doc_id = upload(&app, &t.key, "acme", "jane-roe-onboarding.md", &onboarding()).await;
    drain(&pipeline(&app)).await;
    let (query_key, _) = app.key("acme", &["query"]).await;

    let r = app.export_document(&query_key, "acme", &doc_id).await;
    r.expect(200);
    let e = r.data();
    assert_eq!(e["doc_id"], json!(doc_id));
    assert_eq!(e["generation"], json!(1));
    let s = &e["supplied"];
    assert_eq!(s["original_filename"], json!("jane-roe-onboarding.md"));
    assert_eq!(s["metadata"], json!({"team": "ops", "owner": "Jane Roe"}));
    assert_eq!(s["collection"], json!("handbook"));
    assert_eq!(s["mime_type"], json!("text/markdown"));
    assert_eq!(s["raw"]["sha256"], json!(hex::encode(Sha256::digest(onboarding()))));
    let raw = base64::engine::general_purpose::STANDARD.decode(s["raw"]["content_base64"].as_str().unwrap()).unwrap();
    assert_eq!(raw, onboarding());
    assert!(s["receipt"]["receipt_id"].is_string());
    let d = &e["derived"];
    assert_eq!(d["status"], json!("indexed"));
    assert!(d["lineage"]["parser_version"].is_string());
    assert!(d["canonical"]["blocks"].as_array().is_some_and(|b| !b.is_empty()), "{}", d["canonical"]);
    assert!(d["canonical"].to_string().contains(SSN), "the canonical document is what was supplied, parsed");
    assert!(!d["policed"].to_string().contains(SSN), "the policed document is redacted");
    let chunks = d["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    for c in chunks {
        assert!(c["text"].is_string() && c["start_char"].is_u64() && c["end_char"].is_u64(), "{c}");
        assert_eq!(c["embed_model"], json!("hash-v1-384"));
        assert!(c["quarantined"].is_boolean());
    }
    assert_eq!(audit_total(&app, "acme", "DOCUMENT_EXPORTED").await, 1);

    // Exporting needs `query`; erasing and replacing need `ingest`.
    app.erase_document(&query_key, "acme", &doc_id).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.replace_document(&query_key, "acme", &doc_id, "x.md", &inventory(), None)
        .await
        .expect_error(403, "INSUFFICIENT_PERMISSIONS");
    let (ingest_key, _) = app.key("acme", &["ingest"]).await;
    app.export_document(&ingest_key, "acme", &doc_id).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
}

// --- unknown and foreign ids -----------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_and_foreign_documents_answer_the_same_404() {
    let app = spawn_app().await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("bravo").await;
    let doc_id = upload(&app, &a.key, "alpha", "notes.md", &onboarding()).await;
    drain(&pipeline(&app)).await;
    let unknown = Uuid::now_v7().to_string();

    let mut messages = Vec::new();
    for id in [doc_id.as_str(), unknown.as_str()] {
        // Bravo's own path with alpha's (or no one's) id, and alpha's path with bravo's key.
        for tenant in ["bravo", "alpha"] {
            let answers: [Resp; 3] = [
                app.erase_document(&b.key, tenant, id).await,
                app.replace_document(&b.key, tenant, id, "x.md", &inventory(), None).await,
                app.export_document(&b.key, tenant, id).await,
            ];
            for r in answers {
                r.expect_error(404, "RESOURCE_NOT_FOUND");
                messages.push((tenant, r.body["error"]["message"].clone()));
            }
        }
    }
    // Alpha's document and an id no one has read the same on bravo's path.
    let on_bravo: Vec<&Value> = messages.iter().filter(|(t, _)| *t == "bravo").map(|(_, m)| m).collect();
    assert_eq!(on_bravo[..3], on_bravo[3..], "{messages:?}");
    app.erase_document(&a.key, "alpha", "not-a-uuid").await.expect_error(404, "RESOURCE_NOT_FOUND");
    // Nothing happened to alpha's document.
    app.export_document(&a.key, "alpha", &doc_id).await.expect(200);
    assert_eq!(app.blobs.list(&tid("bravo"), "").await.unwrap().len(), 0, "no bytes stored for bravo");
    assert_eq!(audit_total(&app, "alpha", "DOCUMENT_REPLACED").await, 0);
}

// --- tenant deprovisioning -------------------------------------------------------------------------------------

/// A tenant with indexed documents, a document mid-pipeline, an erased document and a dead-lettered job.
async fn populate(app: &TestApp, tenant: &str, key: &str) {
    let p = stepwise(app);
    upload(app, key, tenant, "a.md", &onboarding()).await;
    upload(app, key, tenant, "b.md", &inventory()).await;
    drain(&p).await;
    let erased = upload(app, key, tenant, "c.md", b"# Erased\n\nA short note that is erased again.\n").await;
    drain(&p).await;
    app.erase_document(key, tenant, &erased).await.expect(200);
    upload(app, key, tenant, "d.md", b"# Pending\n\nA note still waiting for the pipeline.\n").await;
    run_jobs(&p, 1).await;
    let t = tid(tenant);
    app.queue
        .enqueue(&t, NewJob::new(Stage::Parse, Uuid::now_v7().to_string(), json!({})).dedupe_key("dead-one"))
        .await
        .unwrap();
    let once = RetryPolicy::uniform(StageRetry::new(1, vec![]));
    let opts = ClaimOptions::new("dlq-maker", Duration::from_secs(60), 4).stages([Stage::Parse]);
    frostbyte_core::queue::try_run_one(&*app.queue, &opts, &once, |_| async {
        Err(frostbyte_core::queue::JobError::new("TEST_FAILURE", "made to fail"))
    })
    .await
    .unwrap();
    let dlq = app.dlq(key, tenant).await;
    assert_eq!(dlq.body["meta"]["total"], json!(1), "{}", dlq.text);
    let residue = app.documents.tenant_residue(&t).await.unwrap();
    assert!(residue.documents == 3 && residue.tombstones == 1 && residue.chunks > 0 && residue.jobs > 0, "{residue:?}");
}

#[tokio::test]
async fn deprovisioning_erases_documents_chunks_blobs_jobs_and_dead_letters() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    populate(&app, "acme", &t.key).await;
    let kept = upload(&app, &other.key, "other", "kept.md", &onboarding()).await;
    drain(&pipeline(&app)).await;

    let r = app.deprovision("acme", &json!({"reason": "bye", "confirm": true, "confirm_tenant_id": "acme"})).await;
    r.expect(202);
    app.wait_for_state("acme", "DEPROVISIONED").await;
    assert_only_tombstone_and_audit_remain(&app, "acme").await;
    assert_eq!(audit_total(&app, "acme", "TENANT_DATA_ERASED").await, 1);
    let r = app.audit_events(ADMIN_KEY, "acme", "?event_type=TENANT_DEPROVISIONED").await;
    assert_eq!(r.data()[0]["details"]["documents_erased"], json!(3), "{}", r.text);
    assert_eq!(app.audit_verify(ADMIN_KEY, "acme").await.data()["valid"], json!(true));
    // The neighbour is untouched.
    app.export_document(&other.key, "other", &kept).await.expect(200);
    assert_eq!(keyword_docs(&app, "other", "payroll").await, [kept]);
}

#[tokio::test]
async fn interrupted_deprovisioning_is_finished_at_start() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    populate(&app, "acme", &t.key).await;
    let tenants = TenantService::new(app.store.clone(), app.blobs.clone(), app.documents.clone());
    // The process died right after the tenant went DEPROVISIONING, with half the blobs gone.
    tenants.begin_deprovision(&tid("acme"), Some("bye"), true, "acme", &Actor::Admin).await.unwrap();
    let raw = app.blobs.list(&tid("acme"), "raw/").await.unwrap();
    app.blobs.delete(&tid("acme"), &raw[0]).await.unwrap();
    assert!(!rows_of_tenant(&app, "acme").await.iter().all(|(t, _)| t == "tenants" || t.starts_with("audit")));

    frostbyte::app::recover_deprovisioning(&tenants).await;
    assert_only_tombstone_and_audit_remain(&app, "acme").await;
    // Running it again is harmless.
    frostbyte::app::recover_deprovisioning(&tenants).await;
    assert_only_tombstone_and_audit_remain(&app, "acme").await;
}

// --- faults ----------------------------------------------------------------------------------------------------

/// The memory blob store, with deletes that fail while `failing` is set.
struct FlakyDeletes {
    inner: std::sync::Arc<dyn frostbyte_core::ports::BlobStore>,
    failing: std::sync::atomic::AtomicBool,
}

impl FlakyDeletes {
    fn check(&self) -> Result<(), frostbyte_core::ports::BlobError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(frostbyte_core::ports::BlobError::Unavailable("deletes are failing".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl frostbyte_core::ports::BlobStore for FlakyDeletes {
    fn scheme(&self) -> &'static str {
        self.inner.scheme()
    }
    async fn put(&self, t: &TenantId, key: &str, bytes: bytes::Bytes) -> Result<(), frostbyte_core::ports::BlobError> {
        self.inner.put(t, key, bytes).await
    }
    async fn get(&self, t: &TenantId, key: &str) -> Result<bytes::Bytes, frostbyte_core::ports::BlobError> {
        self.inner.get(t, key).await
    }
    async fn exists(&self, t: &TenantId, key: &str) -> Result<bool, frostbyte_core::ports::BlobError> {
        self.inner.exists(t, key).await
    }
    async fn delete(&self, t: &TenantId, key: &str) -> Result<(), frostbyte_core::ports::BlobError> {
        self.check()?;
        self.inner.delete(t, key).await
    }
    async fn list(&self, t: &TenantId, prefix: &str) -> Result<Vec<String>, frostbyte_core::ports::BlobError> {
        self.inner.list(t, prefix).await
    }
    async fn delete_all(&self, t: &TenantId) -> Result<u64, frostbyte_core::ports::BlobError> {
        self.check()?;
        self.inner.delete_all(t).await
    }
    async fn usage_bytes(&self, t: &TenantId) -> Result<u64, frostbyte_core::ports::BlobError> {
        self.inner.usage_bytes(t).await
    }
    async fn ping(&self) -> Result<(), frostbyte_core::ports::BlobError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn an_erasure_the_blob_store_refused_can_be_retried() {
    let flaky = std::sync::Arc::new(FlakyDeletes {
        inner: frostbyte_adapters::resolve::blob_store("memory://").unwrap(),
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let app = crate::helpers::spawn_app_with(crate::helpers::TestConfig {
        blobs: Some(flaky.clone()),
        ..crate::helpers::TestConfig::default()
    })
    .await;
    let t = app.tenant("acme").await;
    let doc_id = upload(&app, &t.key, "acme", "notes.md", &onboarding()).await;
    drain(&pipeline(&app)).await;

    flaky.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    app.erase_document(&t.key, "acme", &doc_id).await.expect_error(503, "SERVICE_UNAVAILABLE");
    // The metadata side is erased (the document is gone for every reader), the blobs are not yet.
    app.export_document(&t.key, "acme", &doc_id).await.expect_error(404, "RESOURCE_NOT_FOUND");
    assert!(app.index.document_chunks(&tid("acme"), &doc_id).await.unwrap().is_empty());
    assert_eq!(app.blobs.list(&tid("acme"), "").await.unwrap().len(), 3);

    // Retrying the DELETE finishes the sweep and verifies it.
    flaky.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = app.erase_document(&t.key, "acme", &doc_id).await;
    r.expect(200);
    let receipt = &r.data()["erasure_receipt"];
    assert_eq!((&receipt["verified"], &receipt["already_erased"]), (&json!(true), &json!(true)), "{}", r.text);
    assert_eq!((&receipt["removed"]["raw"], &receipt["removed"]["canonical"]), (&json!(1), &json!(1)));
    assert!(app.blobs.list(&tid("acme"), "").await.unwrap().is_empty());
    // Another tenant cannot use the tombstone to learn anything.
    let other = app.tenant("other").await;
    app.erase_document(&other.key, "other", &doc_id).await.expect_error(404, "RESOURCE_NOT_FOUND");
}
