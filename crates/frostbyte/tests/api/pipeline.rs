//! The first end-to-end document path: upload through the API, drive the pipeline with `try_run_one` until the
//! queue is idle, then check the document's stages, its chunks in the index and the redaction.

use frostbyte::pipeline::Pipeline;
use frostbyte_core::TenantId;
use frostbyte_core::queue::RunOnce;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Resp, TestApp, spawn_app};

const BOUNDARY: &str = "frostbyte-test-boundary";

/// A multipart body with a `file` part (and optional `metadata`).
fn multipart(filename: &str, content_type: &str, bytes: &[u8], metadata: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(m) = metadata {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{m}\r\n").as_bytes(),
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

async fn upload(app: &TestApp, token: &str, tenant: &str, filename: &str, ct: &str, bytes: &[u8]) -> Resp {
    app.send_raw(
        Method::POST,
        &format!("/api/v1/ingest/{tenant}/documents"),
        Some(token),
        Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
        multipart(filename, ct, bytes, Some(r#"{"team":"ops"}"#)),
    )
    .await
}

fn pipeline(app: &TestApp) -> Pipeline {
    Pipeline::new(app.store.clone(), app.queue.clone(), app.documents.clone(), app.blobs.clone(), "test-worker")
}

async fn drain(p: &Pipeline) -> usize {
    let mut ran = 0;
    while let RunOnce::Ran(_) = p.try_run_one().await.expect("run one") {
        ran += 1;
        assert!(ran < 100, "the pipeline never went idle");
    }
    ran
}

const SSN: &str = "078-05-1120";

fn markdown() -> Vec<u8> {
    format!(
        "# Onboarding\n\nWelcome to the operations team. Payroll needs your details before the first run.\n\n\
         ## Records\n\nEmployee SSN {SSN} is on file with human resources.\n\n- badge issued\n- laptop issued\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn markdown_upload_is_parsed_policed_and_indexed_without_the_ssn() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let r = upload(&app, &t.key, "acme", "onboarding.md", "text/markdown", &markdown()).await;
    r.expect(202);
    let doc_id = r.data()["doc_id"].as_str().unwrap().to_owned();
    let receipt_id = r.data()["receipt_id"].as_str().unwrap().to_owned();
    assert_eq!(r.data()["scan_result"], json!("skipped"));
    assert_eq!(r.data()["mime_type"], json!("text/markdown"));

    let receipt = app.get(&format!("/api/v1/ingest/acme/receipt/{receipt_id}"), Some(&t.key)).await;
    receipt.expect(200);
    assert_eq!(receipt.data()["stages"]["intake"], json!("done"));
    assert_eq!(receipt.data()["stages"]["parse"], json!("pending"));

    assert_eq!(drain(&pipeline(&app)).await, 1, "one job: parse, then policy and index on what it parsed");

    let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
    d.expect(200);
    assert_eq!(d.data()["status"], json!("indexed"), "{}", d.text);
    for stage in ["intake", "parse", "policy", "embed", "index"] {
        assert_eq!(d.data()["stages"][stage], json!("done"), "{stage}: {}", d.text);
    }
    assert!(d.data()["lineage"]["parser_version"].as_str().is_some(), "{}", d.text);
    assert!(!d.data()["chunks"].as_array().unwrap().is_empty());

    let tenant = TenantId::parse("acme").unwrap();
    let chunks = app.index.document_chunks(&tenant, &doc_id).await.unwrap();
    assert!(!chunks.is_empty());
    let usage = app.get_tenant("acme").await;
    assert_eq!(usage.data()["usage"]["documents_count"], json!(1), "{}", usage.text);
    assert_eq!(usage.data()["usage"]["chunks_count"], json!(chunks.len()), "{}", usage.text);
    assert!(usage.data()["usage"]["storage_bytes"].as_u64().unwrap() > 0);
    // The category the policy stage found is on every chunk (what search filters by).
    let category = d.data()["lineage"]["classification"].as_str().expect("classified").to_owned();
    assert!(chunks.iter().all(|c| c.classification.as_deref() == Some(category.as_str())), "{chunks:?}");
    let all: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert!(!all.contains(SSN), "the SSN reached the index");
    assert!(all.contains("[REDACTED:SSN]"), "{all}");
    let hits =
        app.index.keyword_search(&tenant, "payroll", &frostbyte_core::index::SearchFilter::default(), 5).await.unwrap();
    assert!(hits.iter().any(|h| h.doc_id == doc_id));
    // No audit event carries the SSN.
    let events = app.audit_events(&t.key, "acme", "?limit=500").await;
    events.expect(200);
    assert!(!events.text.contains(SSN));
}

/// A chunk without a letter or digit (here a table of symbols, which is always a chunk of its own) gives a search
/// nothing to match: it is counted, and the rest of the document is indexed, rather than the whole document
/// failing because the hash embedder has no feature to take from it.
#[tokio::test]
async fn chunks_without_a_letter_or_digit_are_counted_not_indexed() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let text = "# Arrows\n\nThe arrows below point where the operators send their results.\n\n\
                | → | ← |\n|---|---|\n| ≠ | ≤ |\n\nEach arrow reads from left to right.\n";
    let r = upload(&app, &t.key, "acme", "arrows.md", "text/markdown", text.as_bytes()).await;
    r.expect(202);
    let doc_id = r.data()["doc_id"].as_str().unwrap().to_owned();
    drain(&pipeline(&app)).await;

    let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
    assert_eq!(d.data()["status"], json!("indexed"), "{}", d.text);
    assert_eq!(d.data()["lineage"]["wordless_chunks"], json!(1), "{}", d.text);
    let tenant = TenantId::parse("acme").unwrap();
    let chunks = app.index.document_chunks(&tenant, &doc_id).await.unwrap();
    assert_eq!(d.data()["lineage"]["chunks"], json!(chunks.len()), "{}", d.text);
    assert!(!chunks.is_empty() && chunks.iter().all(|c| c.text.chars().any(char::is_alphanumeric)), "{chunks:?}");
    assert!(chunks.iter().all(|c| !c.text.contains('→')), "the symbols' chunk is not indexed: {chunks:?}");
    let hits =
        app.index.keyword_search(&tenant, "arrow", &frostbyte_core::index::SearchFilter::default(), 5).await.unwrap();
    assert!(hits.iter().any(|h| h.doc_id == doc_id));
    let events = app.audit_events(&t.key, "acme", "?limit=500").await;
    let embedded = events
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == json!("DOCUMENT_EMBEDDED"))
        .cloned()
        .expect("an embedding event");
    assert_eq!(embedded["details"]["wordless_chunks"], json!(1), "{embedded}");
}

/// Stage by stage (each stage its own job) the chunks carry the same classification as when one job chains them.
#[tokio::test]
async fn chunks_carry_the_classification_whether_or_not_the_stages_are_chained() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = TenantId::parse("acme").unwrap();
    let mut categories = Vec::new();
    for chain in [true, false] {
        let name = format!("onboarding-{chain}.md");
        let r = upload(&app, &t.key, "acme", &name, "text/markdown", &markdown()).await;
        let doc_id = r.data()["doc_id"].as_str().unwrap().to_owned();
        let p = Pipeline { chain, ..pipeline(&app) };
        assert_eq!(drain(&p).await, if chain { 1 } else { 3 });
        let chunks = app.index.document_chunks(&tenant, &doc_id).await.unwrap();
        assert!(!chunks.is_empty());
        let found: std::collections::BTreeSet<Option<String>> =
            chunks.iter().map(|c| c.classification.clone()).collect();
        categories.push(found);
    }
    assert_eq!(categories[0], categories[1]);
    assert!(categories[0].iter().all(Option::is_some), "{categories:?}");
}

/// A document the policy changes nothing in is stored again as the policed document byte for byte (its canonical
/// JSON copied, not encoded a second time); one it redacts is stored redacted. Either way the lineage's hashes are the
/// stored blobs', chained or stage by stage.
#[tokio::test]
async fn the_policed_document_is_the_canonical_one_unless_the_policy_changed_it() {
    use sha2::{Digest, Sha256};
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = TenantId::parse("acme").unwrap();
    let clean = "# Release notes\n\nThe scheduler now retries failed jobs with backoff.\n";
    let personal = "# Contacts\n\nWrite to jane.roe@example.com about the schedule.\n";
    for chain in [true, false] {
        for (name, text, redacted) in [("clean", clean, false), ("personal", personal, true)] {
            let r = upload(&app, &t.key, "acme", &format!("{name}-{chain}.md"), "text/markdown", text.as_bytes()).await;
            let doc_id = r.data()["doc_id"].as_str().unwrap().to_owned();
            drain(&Pipeline { chain, ..pipeline(&app) }).await;
            let uuid = doc_id.parse().unwrap();
            let canonical = app.blobs.get(&tenant, &frostbyte_core::lifecycle::canonical_key(&uuid, 1)).await.unwrap();
            let policed = app.blobs.get(&tenant, &frostbyte_core::lifecycle::policed_key(&uuid, 1)).await.unwrap();
            assert_eq!(canonical != policed, redacted, "{name}, chain {chain}");
            assert_eq!(String::from_utf8_lossy(&policed).contains("[REDACTED:EMAIL]"), redacted);
            let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
            assert_eq!(d.data()["status"], json!("indexed"), "{}", d.text);
            let lineage = &d.data()["lineage"];
            assert_eq!(lineage["canonical_sha256"], json!(hex::encode(Sha256::digest(&canonical))), "{}", d.text);
            assert_eq!(lineage["policed_sha256"], json!(hex::encode(Sha256::digest(&policed))), "{}", d.text);
        }
    }
}

/// A stage that reads a stored document whose offsets or stats disagree with its blocks fails it as corrupt,
/// instead of carrying the disagreement into the policed document and the chunks.
#[tokio::test]
async fn a_stored_document_that_does_not_add_up_fails_as_corrupt() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = TenantId::parse("acme").unwrap();
    let r = upload(&app, &t.key, "acme", "onboarding.md", "text/markdown", &markdown()).await;
    let doc_id = r.data()["doc_id"].as_str().unwrap().to_owned();
    let p = Pipeline { chain: false, ..pipeline(&app) };
    assert!(matches!(p.try_run_one().await.unwrap(), RunOnce::Ran(_)), "the parse job");

    let key = frostbyte_core::lifecycle::canonical_key(&doc_id.parse().unwrap(), 1);
    let mut canonical: serde_json::Value =
        serde_json::from_slice(&app.blobs.get(&tenant, &key).await.unwrap()).unwrap();
    canonical["stats"]["words"] = json!(canonical["stats"]["words"].as_u64().unwrap() + 1);
    app.blobs.put(&tenant, &key, serde_json::to_vec(&canonical).unwrap().into()).await.unwrap();
    drain(&p).await;

    let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
    assert_eq!(d.data()["status"], json!("failed"), "{}", d.text);
    assert_eq!(d.data()["error_code"], "CANONICAL_CORRUPT", "{}", d.text);
    assert!(app.index.document_chunks(&tenant, &doc_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn disallowed_types_are_rejected() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
    let r = upload(&app, &t.key, "acme", "pixel.png", "image/png", png).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.text.contains("UNSUPPORTED_FORMAT"), "{}", r.text);
    assert!(app.blobs.list(&TenantId::parse("acme").unwrap(), "raw/").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_refusal_says_which_type_check_failed() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let message = |r: &Resp| r.body["error"]["message"].as_str().unwrap_or_default().to_owned();

    // A PDF sent as text: the types disagree.
    let r = upload(&app, &t.key, "acme", "report.txt", "text/plain", b"%PDF-1.4\n%%EOF\n").await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(message(&r).contains("declared as text/plain, but the content is application/pdf"), "{}", r.text);

    // A type Frostbyte parses but the tenant does not accept.
    let patch = json!({"config": {"mime_allowlist": ["text/plain"]}});
    app.patch_tenant("acme", &patch).await.expect(200);
    let r = upload(&app, &t.key, "acme", "notes.md", "text/markdown", &markdown()).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(message(&r).contains("the content is text/markdown, which this tenant does not accept"), "{}", r.text);

    // Bytes of no known format.
    let r = upload(&app, &t.key, "acme", "blob.bin", "application/octet-stream", &[0u8, 1, 2, 3, 0, 0xff, 7]).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(message(&r).contains("not a format Frostbyte can parse"), "{}", r.text);
    assert!(app.blobs.list(&TenantId::parse("acme").unwrap(), "raw/").await.unwrap().is_empty());
}

#[tokio::test]
async fn another_tenants_document_is_not_found() {
    let app = spawn_app().await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("bravo").await;
    let r = upload(&app, &a.key, "alpha", "notes.md", "text/markdown", &markdown()).await;
    r.expect(202);
    let doc_id = r.data()["doc_id"].as_str().unwrap();
    app.get(&format!("/api/v1/query/bravo/document/{doc_id}"), Some(&b.key))
        .await
        .expect_error(404, "RESOURCE_NOT_FOUND");
    app.get(&format!("/api/v1/query/alpha/document/{doc_id}"), Some(&b.key))
        .await
        .expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn identical_bytes_are_stored_once() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let first = upload(&app, &t.key, "acme", "a.md", "text/markdown", &markdown()).await;
    first.expect(202);
    let second = upload(&app, &t.key, "acme", "b.md", "text/markdown", &markdown()).await;
    second.expect(202);
    assert_ne!(first.data()["doc_id"], second.data()["doc_id"]);
    assert_eq!(first.data()["sha256"], second.data()["sha256"]);
    let raw = app.blobs.list(&TenantId::parse("acme").unwrap(), "raw/").await.unwrap();
    assert_eq!(raw.len(), 1, "{raw:?}");
}

#[tokio::test]
async fn uploads_over_the_tenant_limit_are_refused() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.patch_tenant("acme", &json!({"config": {"max_file_size_mb": 1}})).await.expect(200);
    let big = vec![b'a'; 1024 * 1024 + 10];
    let r = upload(&app, &t.key, "acme", "big.txt", "text/plain", &big).await;
    r.expect_error(413, "PAYLOAD_TOO_LARGE");
}

/// What one document ended as: its status, error code, its chunks' text hashes (chunk ids also hash the doc id,
/// which differs between apps), and its audit events' types in order.
type Ending = (String, Option<String>, Vec<String>, Vec<String>);

/// Uploads `files` to a fresh app, drains the pipeline with batches of `batch`, and reports each file's ending
/// and how many claims it took. The tenant's audit chain must verify.
async fn ingest_with_batches(files: &[(String, &str, Vec<u8>)], batch: usize) -> (Vec<(String, Ending)>, usize) {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let mut docs = Vec::new();
    for (name, ct, bytes) in files {
        let r = upload(&app, &t.key, "acme", name, ct, bytes).await;
        r.expect(202);
        docs.push((name.clone(), uuid::Uuid::parse_str(r.data()["doc_id"].as_str().unwrap()).unwrap()));
    }
    let mut p = pipeline(&app);
    p.batch = batch;
    p.claim.per_tenant_cap = 8;
    let claims = drain(&p).await;
    let tenant = TenantId::parse("acme").unwrap();
    let mut endings = Vec::new();
    for (name, doc_id) in docs {
        let doc = app.documents.get_document(&tenant, doc_id).await.unwrap().expect("document");
        let chunks = app.index.document_chunks(&tenant, &doc_id.to_string()).await.unwrap();
        let chain = app.audit_chain(&t.key, "acme", &doc_id.to_string()).await;
        chain.expect(200);
        let types = chain.data()["events"].as_array().unwrap().iter().map(|e| e["event_type"].to_string()).collect();
        let ids = chunks.into_iter().map(|c| format!("{}:{}", c.position, c.text_hash)).collect();
        endings.push((name, (doc.status.to_string(), doc.error_code, ids, types)));
    }
    let verified = app.audit_verify(&t.key, "acme").await;
    verified.expect(200);
    assert_eq!(verified.data()["valid"], json!(true), "{}", verified.text);
    (endings, claims)
}

#[tokio::test]
async fn a_batched_worker_ends_where_one_job_at_a_time_ends() {
    let mut files = vec![("onboarding.md".to_owned(), "text/markdown", markdown())];
    for i in 0..5 {
        let text = format!(
            "Release notes {i}\n\nVersion {i} adds faster ingest for tenant {i}.\n\nUpgrade notes: restart the workers \
             after the migration finishes; contact ops-{i}@example.com with questions.\n"
        );
        files.push((format!("notes-{i}.txt"), "text/plain", text.into_bytes()));
    }
    files.push(("broken.pdf".to_owned(), "application/pdf", b"%PDF-1.4\n%%EOF\n".to_vec()));

    let (one_by_one, single_claims) = ingest_with_batches(&files, 1).await;
    let (batched, batch_claims) = ingest_with_batches(&files, 4).await;
    assert_eq!(batched, one_by_one, "same statuses, chunks and audit trail per document");
    let indexed = one_by_one.iter().filter(|(_, e)| e.0 == "indexed").count();
    assert_eq!(indexed, 6, "{one_by_one:?}");
    let (_, broken) = one_by_one.iter().find(|(n, _)| n == "broken.pdf").unwrap();
    assert_eq!(broken.0, "failed");
    assert!(batch_claims * 2 < single_claims, "{batch_claims} batched claims vs {single_claims} single ones");
}

/// The document's category is that of its text as a whole: a paragraph that would be `financial` on its own does
/// not make a long document about something else `financial`.
#[tokio::test]
async fn a_document_is_classified_as_a_whole_not_by_one_paragraph() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let finance = "Revenue, profit and the dividend rose; the balance sheet and cash flow improved.";
    let walk = "We walked along the river and had lunch in the park before the rain came.\n\n".repeat(300);
    let mut categories = Vec::new();
    for (name, text) in [("finance.txt", finance.to_owned()), ("walks.txt", format!("{walk}{finance}\n"))] {
        let r = upload(&app, &t.key, "acme", name, "text/plain", text.as_bytes()).await;
        r.expect(202);
        let doc_id = r.data()["doc_id"].as_str().unwrap().to_owned();
        drain(&pipeline(&app)).await;
        let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
        d.expect(200);
        assert_eq!(d.data()["status"], json!("indexed"), "{}", d.text);
        categories.push(d.data()["lineage"]["classification"].clone());
    }
    assert_eq!(categories, [json!("financial"), json!("general")]);
}
