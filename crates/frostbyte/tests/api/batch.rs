//! Batch intake, the malware-scan port, intake quotas and the tenant metadata schema, through the API.
//!
//! The clamd adapter is exercised against a small in-test server that speaks clamd's INSTREAM protocol and flags
//! the EICAR test string (no ClamAV signature database is available offline).

use std::sync::Arc;
use std::time::Duration;

use frostbyte::pipeline::Pipeline;
use frostbyte_adapters::scan::ClamdScanner;
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::batch::BatchStore;
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus};
use frostbyte_core::queue::{NewJob, RunOnce, Stage};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{ADMIN_KEY, Part, TestApp, TestConfig, batch_body, spawn_app, spawn_app_with};

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A clamd stand-in on a free TCP port: answers INSTREAM with `FOUND` for anything containing EICAR.
async fn fake_clamd() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut cmd = [0u8; 10];
                if sock.read_exact(&mut cmd).await.is_err() || &cmd != b"zINSTREAM\0" {
                    let _ = sock.write_all(b"UNKNOWN COMMAND\0").await;
                    return;
                }
                let mut data = Vec::new();
                loop {
                    let mut len = [0u8; 4];
                    if sock.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let n = u32::from_be_bytes(len) as usize;
                    if n == 0 {
                        break;
                    }
                    let mut chunk = vec![0u8; n];
                    if sock.read_exact(&mut chunk).await.is_err() {
                        return;
                    }
                    data.extend_from_slice(&chunk);
                }
                let infected = data.windows(EICAR.len()).any(|w| w == EICAR);
                let reply: &[u8] = if infected { b"stream: Eicar-Test-Signature FOUND\0" } else { b"stream: OK\0" };
                let _ = sock.write_all(reply).await;
            });
        }
    });
    format!("clamd://{addr}")
}

async fn app_with_clamd(url: &str) -> TestApp {
    let scanner = ClamdScanner::from_url(url, Duration::from_secs(5)).unwrap();
    spawn_app_with(TestConfig { scanner: Some(Arc::new(scanner)), ..TestConfig::default() }).await
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn entry(file_id: &str, filename: &str, mime: &str, bytes: &[u8]) -> Value {
    json!({"file_id": file_id, "filename": filename, "mime_type": mime, "size_bytes": bytes.len(), "sha256": sha(bytes)})
}

fn manifest(batch_id: &str, tenant: &str, files: Vec<Value>) -> String {
    json!({"batch_id": batch_id, "tenant_id": tenant, "file_count": files.len(), "collection": "handbook",
           "submitter": "ops", "files": files})
    .to_string()
}

fn part<'a>(content_type: &'a str, bytes: &'a [u8]) -> Part<'a> {
    Part { filename: None, content_type, bytes }
}

async fn raw_keys(app: &TestApp, tenant: &str) -> Vec<String> {
    app.blobs.list(&TenantId::parse(tenant).unwrap(), "raw/").await.unwrap()
}

async fn event_types(app: &TestApp, token: &str, tenant: &str) -> Vec<String> {
    let r = app.audit_events(token, tenant, "?limit=100").await;
    r.expect(200);
    r.data().as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap().to_owned()).collect()
}

async fn drain(app: &TestApp) {
    let p = Pipeline::new(
        app.store.clone(),
        app.queue.clone(),
        app.documents.clone(),
        app.blobs.clone(),
        "batch-test-worker",
    );
    let mut ran = 0;
    while let RunOnce::Ran(_) = p.try_run_one().await.expect("run one") {
        ran += 1;
        assert!(ran < 200, "the pipeline never went idle");
    }
}

const GOOD_MD: &[u8] = b"# Leave policy\n\nStaff take leave after telling their manager two weeks ahead.\n";
const GOOD_CSV: &[u8] = b"name,days\nannual,25\nsick,10\n";

#[tokio::test]
async fn a_mixed_batch_accepts_the_good_files_and_gives_every_other_file_its_reason() {
    let clamd = fake_clamd().await;
    let app = app_with_clamd(&clamd).await;
    let t = app.tenant("acme").await;
    app.patch_tenant("acme", &json!({"config": {"max_file_size_mb": 1}})).await.expect(200);
    app.put_schema(&t.key, "acme", &json!({"type": "object", "properties": {"team": {"type": "string"}}}))
        .await
        .expect(200);
    let pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n";
    let big = vec![b'a'; 1024 * 1024 + 1];
    let tampered = b"the bytes that arrived".to_vec();
    let mut bad_meta = entry("f-meta", "meta.md", "text/markdown", GOOD_MD);
    bad_meta["metadata"] = json!({"team": 7});
    let mut good = entry("f-md", "leave.md", "text/markdown", GOOD_MD);
    good["metadata"] = json!({"team": "people"});
    let files = vec![
        good,
        entry("f-csv", "days.csv", "text/plain", GOOD_CSV),
        entry("f-sum", "sum.txt", "text/plain", b"the bytes that were declared"),
        entry("f-pdf", "claims-text.txt", "text/plain", pdf),
        entry("f-big", "big.txt", "text/plain", &big),
        entry("f-virus", "eicar.txt", "text/plain", EICAR),
        bad_meta,
    ];
    let body = batch_body(
        &manifest("b-mixed", "acme", files),
        &[
            part("text/markdown", GOOD_MD),
            part("text/csv", GOOD_CSV),
            part("text/plain", &tampered),
            part("text/plain", pdf),
            part("text/plain", &big),
            part("text/plain", EICAR),
            part("text/markdown", GOOD_MD),
        ],
    );
    let r = app.submit_batch(&t.key, "acme", body).await;
    r.expect(202);
    let d = r.data();
    assert_eq!((d["batch_id"].as_str(), d["file_count"].as_u64()), (Some("b-mixed"), Some(7)));
    assert_eq!(
        (d["accepted"].as_u64(), d["rejected"].as_u64(), d["quarantined"].as_u64()),
        (Some(2), Some(4), Some(1))
    );
    let reasons: Vec<(&str, &str)> = d["rejected_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["file_id"].as_str().unwrap(), f["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("f-sum", "CHECKSUM_MISMATCH"),
            ("f-pdf", "UNSUPPORTED_FORMAT"),
            ("f-big", "SIZE_EXCEEDED"),
            ("f-meta", "SCHEMA_VIOLATION"),
        ]
    );
    assert!(d["rejected_files"][3]["message"].as_str().unwrap().contains("metadata/team"), "{}", r.text);
    let q = &d["quarantined_files"][0];
    assert_eq!((q["file_id"].as_str(), q["reason"].as_str()), (Some("f-virus"), Some("MALWARE_DETECTED")));
    assert_eq!(q["signature"], json!("Eicar-Test-Signature"));
    assert_eq!(d["receipts"].as_array().unwrap().len(), 7);

    // Only the accepted files' bytes are stored, once each; the infected file never is.
    let mut keys = raw_keys(&app, "acme").await;
    keys.sort();
    let mut want = vec![format!("raw/{}", sha(GOOD_MD)), format!("raw/{}", sha(GOOD_CSV))];
    want.sort();
    assert_eq!(keys, want);

    // Receipts carry the batch, the file and the scan result.
    let accepted = &d["receipts"][0];
    let rc = app.receipt(&t.key, "acme", accepted["receipt_id"].as_str().unwrap()).await;
    rc.expect(200);
    assert_eq!(rc.data()["batch_id"], json!("b-mixed"));
    assert_eq!(rc.data()["file_id"], json!("f-md"));
    assert_eq!(rc.data()["scan_result"], json!("clean"));
    assert_eq!(rc.data()["original_filename"], json!("leave.md"));
    let virus = d["receipts"].as_array().unwrap().iter().find(|x| x["file_id"] == json!("f-virus")).unwrap();
    assert_eq!(virus["status"], json!("quarantined"));
    let rc = app.receipt(&t.key, "acme", virus["receipt_id"].as_str().unwrap()).await;
    rc.expect(200);
    assert_eq!(rc.data()["scan_result"], json!("quarantined"));
    assert_eq!(rc.data()["storage_path"], Value::Null);
    assert_eq!(rc.data()["reason"], json!("MALWARE_DETECTED"));

    // Audited with ids, reasons and hashes only.
    let types = event_types(&app, &t.key, "acme").await;
    let n = |ty: &str| types.iter().filter(|t| *t == ty).count();
    assert_eq!(
        (n("BATCH_RECEIVED"), n("DOCUMENT_INGESTED"), n("DOCUMENT_REJECTED"), n("DOCUMENT_QUARANTINED")),
        (1, 2, 4, 1)
    );
    let audit = app.audit_events(&t.key, "acme", "?limit=100").await.text;
    assert!(audit.contains("Eicar-Test-Signature") && audit.contains(&sha(EICAR)));
    assert!(!audit.contains("EICAR-STANDARD") && !audit.contains("Leave policy") && !audit.contains("people"));
}

#[tokio::test]
async fn batch_status_follows_the_pipeline_and_reports_every_problem_with_remediation() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let files = vec![
        entry("a", "leave.md", "text/markdown", GOOD_MD),
        entry("b", "days.csv", "text/csv", GOOD_CSV),
        entry("c", "photo.png", "image/png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
    ];
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let body = batch_body(
        &manifest("b-status", "acme", files),
        &[part("text/markdown", GOOD_MD), part("text/csv", GOOD_CSV), part("image/png", png)],
    );
    app.submit_batch(&t.key, "acme", body).await.expect(202);

    let r = app.batch_status(&t.key, "acme", "b-status").await;
    r.expect(200);
    assert_eq!(r.data()["status"], json!("processing"));
    assert_eq!(
        r.data()["summary"],
        json!({"total_files": 3, "completed": 0, "processing": 0, "queued": 2, "failed": 1})
    );
    assert_eq!(r.data()["files"][0]["current_stage"], json!("parse"));
    assert_eq!(r.data()["files"][0]["stages"]["intake"], json!("done"));

    drain(&app).await;
    let r = app.batch_status(&t.key, "acme", "b-status").await;
    r.expect(200);
    let d = r.data();
    assert_eq!(d["status"], json!("partial"), "{}", r.text);
    assert_eq!(d["summary"], json!({"total_files": 3, "completed": 2, "processing": 0, "queued": 0, "failed": 1}));
    assert_eq!(d["files"][0]["stages"]["index"], json!("done"));
    assert_eq!(d["files"][0]["current_stage"], Value::Null);
    assert!(d["files"][0]["doc_id"].is_string());
    assert_eq!(d["files"][2]["doc_id"], Value::Null);
    assert_eq!(d["files"][2]["error"]["code"], json!("UNSUPPORTED_FORMAT"));
    let problems = d["acceptance_report"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["file_id"], json!("c"));
    assert!(problems[0]["remediation"].as_str().unwrap().contains("mime_allowlist"));

    // Persisted: a fresh connection to the same database (as after a restart) sees the batch and its files.
    let reopened =
        frostbyte_adapters::SqliteStore::connect(&format!("sqlite://{}", app.db_path.display()), 1).await.unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let batch = reopened.get_batch(&tenant, "b-status").await.unwrap().expect("batch persisted");
    assert_eq!((batch.accepted, batch.rejected, batch.quarantined), (2, 1, 0));
    assert_eq!(reopened.batch_files(&tenant, "b-status").await.unwrap().len(), 3);

    // Another tenant's batch ids answer 404.
    let other = app.tenant("globex").await;
    app.batch_status(&other.key, "globex", "b-status").await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.batch_status(&other.key, "acme", "b-status").await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn whole_batch_rejections_store_nothing() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.patch_tenant("acme", &json!({"config": {"max_batch_size": 2}})).await.expect(200);
    let one = vec![entry("a", "a.md", "text/markdown", GOOD_MD)];
    let md = || part("text/markdown", GOOD_MD);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("broken json", batch_body("{not json", &[md()]), "MANIFEST_INVALID"),
        ("missing fields", batch_body(r#"{"batch_id":"x","tenant_id":"acme"}"#, &[md()]), "MANIFEST_INVALID"),
        ("other tenant", batch_body(&manifest("x", "globex", one.clone()), &[md()]), "MANIFEST_INVALID"),
        (
            "bad sha256",
            batch_body(
                &json!({"batch_id": "x", "tenant_id": "acme", "file_count": 1,
                        "files": [{"file_id": "a", "filename": "a.md", "mime_type": "text/markdown",
                                   "size_bytes": 3, "sha256": "nope"}]})
                .to_string(),
                &[md()],
            ),
            "MANIFEST_INVALID",
        ),
        (
            "file_count vs files",
            batch_body(
                &json!({"batch_id": "x", "tenant_id": "acme", "file_count": 2, "files": one.clone()}).to_string(),
                &[md()],
            ),
            "MANIFEST_FILE_COUNT_MISMATCH",
        ),
        ("too few parts", batch_body(&manifest("x", "acme", one.clone()), &[]), "MANIFEST_FILE_COUNT_MISMATCH"),
        (
            "too many parts",
            batch_body(&manifest("x", "acme", one.clone()), &[md(), md()]),
            "MANIFEST_FILE_COUNT_MISMATCH",
        ),
        (
            "duplicate file id",
            batch_body(&manifest("x", "acme", vec![one[0].clone(), one[0].clone()]), &[md(), md()]),
            "DUPLICATE_FILE_ID",
        ),
        (
            "part matching no entry",
            batch_body(
                &manifest("x", "acme", vec![one[0].clone(), entry("b", "b.csv", "text/csv", GOOD_CSV)]),
                &[
                    Part { filename: Some("b"), content_type: "text/csv", bytes: GOOD_CSV },
                    Part { filename: Some("b"), content_type: "text/csv", bytes: GOOD_CSV },
                ],
            ),
            "MANIFEST_INVALID",
        ),
        (
            "over max_batch_size",
            batch_body(
                &manifest(
                    "x",
                    "acme",
                    vec![
                        entry("a", "a.md", "text/markdown", GOOD_MD),
                        entry("b", "b.md", "text/markdown", GOOD_MD),
                        entry("c", "c.md", "text/markdown", GOOD_MD),
                    ],
                ),
                &[md(), md(), md()],
            ),
            "MANIFEST_INVALID",
        ),
    ];
    for (what, body, code) in cases {
        let r = app.submit_batch(&t.key, "acme", body).await;
        assert_eq!(r.status.as_u16(), 400, "{what}: {}", r.text);
        assert_eq!(r.code(), code, "{what}: {}", r.text);
        r.expect_error(400, code);
    }
    // Files before the manifest.
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a\"\r\n\r\nhello\r\n--{b}--\r\n",
            b = crate::helpers::BATCH_BOUNDARY
        )
        .as_bytes(),
    );
    app.submit_batch(&t.key, "acme", body).await.expect_error(400, "MANIFEST_INVALID");

    assert!(raw_keys(&app, "acme").await.is_empty(), "nothing stored");
    app.batch_status(&t.key, "acme", "x").await.expect_error(404, "RESOURCE_NOT_FOUND");
    let types = event_types(&app, &t.key, "acme").await;
    assert!(!types.iter().any(|t| t.starts_with("BATCH_") || t.starts_with("DOCUMENT_")), "{types:?}");
}

#[tokio::test]
async fn a_reused_batch_id_conflicts_and_parts_match_by_file_id_in_any_order() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let files =
        vec![entry("first", "leave.md", "text/markdown", GOOD_MD), entry("second", "days.csv", "text/csv", GOOD_CSV)];
    // Parts in reverse order, each named by its file_id.
    let body = batch_body(
        &manifest("b-1", "acme", files.clone()),
        &[
            Part { filename: Some("second"), content_type: "text/csv", bytes: GOOD_CSV },
            Part { filename: Some("first"), content_type: "text/markdown", bytes: GOOD_MD },
        ],
    );
    let r = app.submit_batch(&t.key, "acme", body).await;
    r.expect(202);
    assert_eq!(r.data()["accepted"], json!(2), "{}", r.text);
    for rc in r.data()["receipts"].as_array().unwrap() {
        let v = app.receipt(&t.key, "acme", rc["receipt_id"].as_str().unwrap()).await;
        let want = if rc["file_id"] == json!("first") { "leave.md" } else { "days.csv" };
        assert_eq!(v.data()["original_filename"], json!(want));
        assert_eq!(v.data()["scan_result"], json!("skipped"), "the none scanner never says clean");
    }

    let again = batch_body(
        &manifest("b-1", "acme", files.clone()),
        &[part("text/markdown", GOOD_MD), part("text/csv", GOOD_CSV)],
    );
    app.submit_batch(&t.key, "acme", again).await.expect_error(409, "CONFLICT");
    // Another tenant may use the same batch id.
    let g = app.tenant("globex").await;
    let theirs =
        batch_body(&manifest("b-1", "globex", files), &[part("text/markdown", GOOD_MD), part("text/csv", GOOD_CSV)]);
    app.submit_batch(&g.key, "globex", theirs).await.expect(202);
}

#[tokio::test]
async fn the_same_bytes_are_stored_once() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let files = vec![entry("a", "one.md", "text/markdown", GOOD_MD), entry("b", "two.md", "text/markdown", GOOD_MD)];
    let body = batch_body(
        &manifest("b-dup", "acme", files),
        &[part("text/markdown", GOOD_MD), part("text/markdown", GOOD_MD)],
    );
    let r = app.submit_batch(&t.key, "acme", body).await;
    r.expect(202);
    assert_eq!(r.data()["accepted"], json!(2));
    app.upload_one(&t.key, "acme", "three.md", "text/markdown", GOOD_MD, None).await.expect(202);
    assert_eq!(raw_keys(&app, "acme").await, vec![format!("raw/{}", sha(GOOD_MD))]);
}

#[tokio::test]
async fn an_unreachable_scanner_fails_closed() {
    // A port nothing listens on: bind, read the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = app_with_clamd(&format!("clamd://127.0.0.1:{port}")).await;
    let t = app.tenant("acme").await;
    let body = batch_body(
        &manifest("b-1", "acme", vec![entry("a", "a.md", "text/markdown", GOOD_MD)]),
        &[part("text/markdown", GOOD_MD)],
    );
    let r = app.submit_batch(&t.key, "acme", body).await;
    r.expect_error(503, "SERVICE_UNAVAILABLE");
    assert!(r.header("retry-after").is_some());
    let r = app.upload_one(&t.key, "acme", "a.md", "text/markdown", GOOD_MD, None).await;
    r.expect_error(503, "SERVICE_UNAVAILABLE");
    assert!(r.header("retry-after").is_some());
    assert!(raw_keys(&app, "acme").await.is_empty());
    app.batch_status(&t.key, "acme", "b-1").await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn single_uploads_use_the_same_scanner() {
    let clamd = fake_clamd().await;
    let app = app_with_clamd(&clamd).await;
    let t = app.tenant("acme").await;
    let r = app.upload_one(&t.key, "acme", "leave.md", "text/markdown", GOOD_MD, None).await;
    r.expect(202);
    assert_eq!(r.data()["scan_result"], json!("clean"));
    let rc = app.receipt(&t.key, "acme", r.data()["receipt_id"].as_str().unwrap()).await;
    assert_eq!(rc.data()["scan_result"], json!("clean"));
    assert_eq!(rc.data()["batch_id"], Value::Null);

    let r = app.upload_one(&t.key, "acme", "eicar.txt", "text/plain", EICAR, None).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["details"][0]["constraint"].as_str().unwrap().starts_with("MALWARE_DETECTED"));
    assert!(!raw_keys(&app, "acme").await.contains(&format!("raw/{}", sha(EICAR))));
    assert!(event_types(&app, &t.key, "acme").await.contains(&"DOCUMENT_QUARANTINED".to_owned()));

    // A declared type that disagrees with the content is refused.
    let pdf = b"%PDF-1.4\n%%EOF\n";
    app.upload_one(&t.key, "acme", "x.txt", "text/plain", pdf, None).await.expect_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn intake_quotas_answer_429_with_retry_after() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.patch_tenant("acme", &json!({"config": {"quotas": {"documents_per_day": 2}}})).await.expect(200);
    app.upload_one(&t.key, "acme", "one.md", "text/markdown", GOOD_MD, None).await.expect(202);
    // Two more in a batch would make three today.
    let files = vec![entry("a", "a.csv", "text/csv", GOOD_CSV), entry("b", "b.md", "text/markdown", GOOD_MD)];
    let body =
        batch_body(&manifest("b-q", "acme", files), &[part("text/csv", GOOD_CSV), part("text/markdown", GOOD_MD)]);
    let r = app.submit_batch(&t.key, "acme", body).await;
    r.expect_error(429, "QUOTA_EXCEEDED");
    assert!(r.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| (1..=86_400).contains(&s)));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("documents per day"));
    app.batch_status(&t.key, "acme", "b-q").await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.upload_one(&t.key, "acme", "two.csv", "text/csv", GOOD_CSV, None).await.expect(202);
    app.upload_one(&t.key, "acme", "three.txt", "text/plain", b"three", None).await.expect_error(429, "QUOTA_EXCEEDED");

    // Storage: a tenant already holding its 1 GB quota of raw bytes cannot store one more byte.
    let g = app.tenant("globex").await;
    app.patch_tenant("globex", &json!({"config": {"storage_quota_gb": 1}})).await.expect(200);
    let tenant = TenantId::parse("globex").unwrap();
    let now = frostbyte_core::now();
    let doc = DocumentRecord {
        doc_id: uuid::Uuid::now_v7(),
        receipt_id: uuid::Uuid::now_v7(),
        original_filename: "huge.txt".into(),
        mime_type: "text/plain".into(),
        size_bytes: 1024 * 1024 * 1024,
        raw_sha256: "f".repeat(64),
        metadata: json!({}),
        collection: None,
        status: DocumentStatus::Processing,
        stages: DocumentStages::received(),
        lineage: serde_json::Map::new(),
        error_code: None,
        created_at: now,
        updated_at: now,
    };
    let job = NewJob::new(Stage::Parse, doc.doc_id.to_string(), json!({}));
    let event = NewAuditEvent::new("DOCUMENT_INGESTED", "test", "document", doc.doc_id.to_string(), json!({}));
    app.documents.create_document(&tenant, &doc, job, event).await.unwrap();
    let r = app.upload_one(&g.key, "globex", "one.md", "text/markdown", GOOD_MD, None).await;
    r.expect_error(429, "QUOTA_EXCEEDED");
    assert!(r.header("retry-after").is_some());
    assert!(r.body["error"]["message"].as_str().unwrap().contains("storage quota"));
    assert!(raw_keys(&app, "globex").await.is_empty());
}

#[tokio::test]
async fn the_metadata_schema_is_versioned_merged_audited_and_enforced() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.get_schema(&t.key, "acme").await.expect_error(404, "RESOURCE_NOT_FOUND");

    // The schema itself is checked, and every problem listed.
    let r = app.put_schema(&t.key, "acme", &json!({"type": "array"})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    let r = app.put_schema(&t.key, "acme", &json!({"type": "object", "properties": {"n": {"type": "nonsense"}}})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["details"][0]["field"].as_str().unwrap().starts_with("schema"), "{}", r.text);

    let v1 = json!({"type": "object", "properties": {"team": {"type": "string"}, "year": {"type": "integer"}},
                    "required": ["team"]});
    let r = app.put_schema(&t.key, "acme", &v1).await;
    r.expect(200);
    assert_eq!(r.data()["version"], json!(1));
    let r = app
        .patch_schema(&t.key, "acme", &json!({"properties": {"owner": {"type": "string"}}, "required": ["owner"]}))
        .await;
    r.expect(200);
    assert_eq!(r.data()["version"], json!(2));
    let r = app.get_schema(ADMIN_KEY, "acme").await;
    r.expect(200);
    let s = &r.data()["schema"];
    assert_eq!(s["properties"]["team"], json!({"type": "string"}), "sibling kept");
    assert_eq!(s["properties"]["year"], json!({"type": "integer"}), "sibling kept");
    assert_eq!(s["properties"]["owner"], json!({"type": "string"}));
    assert_eq!(s["required"], json!(["team", "owner"]));
    let types = event_types(&app, &t.key, "acme").await;
    assert_eq!(types.iter().filter(|t| *t == "SCHEMA_UPDATED").count(), 2);

    // Scopes: admin (or the platform key) writes, ingest reads, others' tenants are invisible.
    let (ingest, _) = app.key("acme", &["ingest"]).await;
    app.get_schema(&ingest, "acme").await.expect(200);
    app.put_schema(&ingest, "acme", &v1).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.put_schema(ADMIN_KEY, "acme", &s.clone()).await.expect(200);
    let g = app.tenant("globex").await;
    app.get_schema(&g.key, "acme").await.expect_error(404, "RESOURCE_NOT_FOUND");

    // Single uploads: 422 with details; batch files: a per-file SCHEMA_VIOLATION.
    let r =
        app.upload_one(&t.key, "acme", "a.md", "text/markdown", GOOD_MD, Some(r#"{"team": "ops", "year": "x"}"#)).await;
    r.expect_error(422, "SCHEMA_VIOLATION");
    let fields: Vec<&str> =
        r.body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"metadata/year") && fields.contains(&"metadata"), "{fields:?}");
    assert!(!r.text.contains("\"x\""), "metadata values are not echoed: {}", r.text);
    app.upload_one(&t.key, "acme", "a.md", "text/markdown", GOOD_MD, Some(r#"{"team": "ops", "owner": "kim"}"#))
        .await
        .expect(202);
    let mut ok = entry("ok", "ok.md", "text/markdown", GOOD_MD);
    ok["metadata"] = json!({"team": "ops", "owner": "kim"});
    let body = batch_body(
        &manifest("b-s", "acme", vec![ok, entry("bare", "bare.csv", "text/csv", GOOD_CSV)]),
        &[part("text/markdown", GOOD_MD), part("text/csv", GOOD_CSV)],
    );
    let r = app.submit_batch(&t.key, "acme", body).await;
    r.expect(202);
    assert_eq!(r.data()["accepted"], json!(1));
    assert_eq!(r.data()["rejected_files"][0]["reason"], json!("SCHEMA_VIOLATION"));
}

#[test]
fn the_scanner_is_configured_and_checked_at_load() {
    use frostbyte::config::{Config, Overrides};
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let c = Config::load_from(None, env(&[]), &Overrides::default()).unwrap();
    assert_eq!((c.scan.scanner.as_str(), c.scan.timeout_secs), ("none", 30), "default: none");
    let c =
        Config::load_from(None, env(&[("FROSTBYTE_SCAN__SCANNER", "clamd://127.0.0.1:3310")]), &Overrides::default())
            .unwrap();
    assert_eq!(c.scan.scanner, "clamd://127.0.0.1:3310");
    let e = Config::load_from(
        None,
        env(&[("FROSTBYTE_SCAN__SCANNER", "icap://av:1344"), ("FROSTBYTE_SCAN__TIMEOUT_SECS", "0")]),
        &Overrides::default(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("scan.scanner") && text.contains("scan.timeout_secs"), "{text}");
}

/// `frostbyte ingest` takes files in by the group (`Intake::accept_all`): one transaction for the group, each
/// file's own refusal, and at the daily quota's edge exactly the files that fit.
#[tokio::test]
async fn a_group_of_uploads_is_decided_file_by_file_and_fills_the_quota_exactly() {
    use frostbyte::intake::{Intake, IntakeError, Upload};
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = TenantId::parse("acme").unwrap();
    let config = app.store.get_tenant(&tenant).await.unwrap().unwrap().config;
    let upload = |name: &str, bytes: &[u8]| Upload {
        bytes: bytes::Bytes::copy_from_slice(bytes),
        sha256: hex::encode(Sha256::digest(bytes)),
        filename: name.into(),
        declared_mime: None,
        metadata: json!({}),
        collection: Some("cli".into()),
    };
    let intake = Intake::from_state(&app.state);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let group = vec![upload("a.md", GOOD_MD), upload("image.png", png), upload("b.csv", GOOD_CSV)];
    let decided = intake.accept_all(&tenant, &config, "cli", group).await.unwrap();
    assert!(matches!(decided[1], Err(IntakeError::UnsupportedFormat { .. })), "{:?}", decided[1].as_ref().err());
    let accepted: Vec<_> = decided.iter().filter_map(|d| d.as_ref().ok()).map(|(doc, _)| doc.clone()).collect();
    assert_eq!(accepted.iter().map(|d| d.original_filename.as_str()).collect::<Vec<_>>(), ["a.md", "b.csv"]);
    for doc in &accepted {
        let stored = app.documents.get_document(&tenant, doc.doc_id).await.unwrap().expect("recorded");
        assert_eq!(stored.collection.as_deref(), Some("cli"));
        assert!(app.blobs.exists(&tenant, &format!("raw/{}", doc.raw_sha256)).await.unwrap());
    }
    let ingested = app.audit_events(&t.key, "acme", "?event_type=DOCUMENT_INGESTED").await;
    assert_eq!(ingested.body["meta"]["total"], 2, "{}", ingested.text);

    // Two accepted today, a quota of four: of three more files, the first two fit and the third is refused.
    app.patch_tenant("acme", &json!({"config": {"quotas": {"documents_per_day": 4}}})).await.expect(200);
    let config = app.store.get_tenant(&tenant).await.unwrap().unwrap().config;
    let group = vec![upload("c.txt", b"third"), upload("d.txt", b"fourth"), upload("e.txt", b"fifth")];
    let decided = intake.accept_all(&tenant, &config, "cli", group).await.unwrap();
    assert!(decided[0].is_ok() && decided[1].is_ok(), "{decided:?}");
    assert!(matches!(decided[2], Err(IntakeError::Quota(_))), "{:?}", decided[2].as_ref().err());
    let ingested = app.audit_events(&t.key, "acme", "?event_type=DOCUMENT_INGESTED").await;
    assert_eq!(ingested.body["meta"]["total"], 4, "{}", ingested.text);
}
