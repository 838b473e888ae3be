//! The document-plane pipelines through the API: `retention/sweep` (erases only the tenant's documents older than
//! its `retention_days`, with receipts and counts, and nothing without retention) and `documents/reindex`
//! (re-embeds into shadow vectors while searches answer from the old ones, then swaps atomically; cancel leaves
//! everything as it was; an unknown model fails clearly; another tenant is never touched).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use frostbyte_core::TenantId;
use frostbyte_core::embed::{EmbedError, Embedder, EmbedderRegistry, HashEmbedder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::helpers::{TestApp, TestConfig, drain, spawn_app, spawn_app_with};

fn markdown(topic: &str, paragraphs: usize) -> Vec<u8> {
    let mut s = format!("# Notes on {topic}\n\n");
    for i in 0..paragraphs {
        s.push_str(&format!(
            "Paragraph {i} about {topic}: the northern relay station {i} was inspected, its valves replaced, and the \
             crew scheduled a follow-up visit for week {}.\n\n",
            i + 2
        ));
    }
    s.into_bytes()
}

async fn upload(app: &TestApp, key: &str, tenant: &str, name: &str, topic: &str, paragraphs: usize) -> String {
    let r = app.upload(key, tenant, name, "text/markdown", &markdown(topic, paragraphs)).await;
    r.expect(202);
    r.data()["doc_id"].as_str().unwrap().to_owned()
}

async fn run_to_end(app: &TestApp, key: &str, tenant: &str, pipeline: &str, params: &Value) -> Value {
    let r = app.start_run(key, tenant, pipeline, params).await;
    r.expect(202);
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    app.drive_runs().await;
    app.get_run(key, tenant, &run_id).await.data().clone()
}

/// The `counts` of the run's `PIPELINE_RUN_COMPLETED` audit event.
async fn completed_counts(app: &TestApp, key: &str, tenant: &str, run_id: &str) -> Value {
    let chain = app.audit_chain(key, tenant, run_id).await;
    let events = chain.data()["events"].as_array().unwrap().clone();
    let done = events.iter().find(|e| e["event_type"] == "PIPELINE_RUN_COMPLETED").expect("completed event");
    done["details"]["counts"].clone()
}

async fn backdate(app: &TestApp, doc_ids: &[&str], days: i64) {
    let store =
        frostbyte_adapters::SqliteStore::connect(&format!("sqlite://{}", app.db_path.display()), 1).await.unwrap();
    let then = frostbyte_core::format_timestamp(&(chrono::Utc::now() - chrono::Duration::days(days)));
    for id in doc_ids {
        let done = sqlx::query("UPDATE documents SET created_at = ? WHERE doc_id = ?")
            .bind(&then)
            .bind(*id)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
}

fn jsonl(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn retention_sweep_erases_only_the_tenants_old_documents_with_receipts() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let old1 = upload(&app, &acme.key, "acme", "old1.md", "pumps", 3).await;
    let old2 = upload(&app, &acme.key, "acme", "old2.md", "valves", 3).await;
    let young = upload(&app, &acme.key, "acme", "young.md", "relays", 3).await;
    let theirs = upload(&app, &globex.key, "globex", "theirs.md", "pumps", 3).await;
    drain(&app.pipeline("w")).await;
    for t in ["acme", "globex"] {
        app.patch_tenant(t, &json!({"config": {"retention_days": 30}})).await.expect(200);
    }
    backdate(&app, &[&old1, &old2, &theirs], 40).await;

    let r = app.start_run(&acme.key, "acme", "retention/sweep", &json!({})).await;
    r.expect(202);
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    app.drive_runs().await;
    let run = app.get_run(&acme.key, "acme", &run_id).await.data().clone();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["records_processed"], 2);
    let counts = completed_counts(&app, &acme.key, "acme", &run_id).await;
    assert_eq!(
        (counts["erased"].clone(), counts["kept"].clone(), counts["failed"].clone()),
        (json!(2), json!(1), json!(0))
    );

    // The old documents are gone the way DELETE erases them; the young one and the other tenant's stay.
    for id in [&old1, &old2] {
        app.get(&format!("/api/v1/query/acme/document/{id}"), Some(&acme.key))
            .await
            .expect_error(404, "RESOURCE_NOT_FOUND");
        let chain = app.audit_chain(&acme.key, "acme", id).await;
        let events = chain.data()["events"].as_array().unwrap().clone();
        let erased = events.iter().find(|e| e["event_type"] == "DOCUMENT_ERASED").expect("erasure audited");
        assert_eq!(erased["actor"], json!(format!("pipeline:{run_id}")));
        assert!(events.iter().any(|e| e["event_type"] == "DOCUMENT_ERASURE_VERIFIED"));
    }
    app.get(&format!("/api/v1/query/acme/document/{young}"), Some(&acme.key)).await.expect(200);
    app.get(&format!("/api/v1/query/globex/document/{theirs}"), Some(&globex.key)).await.expect(200);
    let hits = app.search(&globex.key, "globex", &json!({"query_text": "pumps", "mode": "keyword"})).await;
    assert!(!hits.data()["chunks"].as_array().unwrap().is_empty(), "globex still searchable: {}", hits.text);

    // The receipts, one verified receipt per erased document, and the manifest with the counts.
    let tenant = TenantId::parse("acme").unwrap();
    let target = format!("retention/{}/{run_id}.receipts.jsonl", chrono::Utc::now().format("%Y-%m-%d"));
    let body = app.blobs.get(&tenant, &target).await.expect("receipts written");
    let receipts = jsonl(&body);
    let mut ids: Vec<&str> = receipts.iter().map(|r| r["doc_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = [old1.as_str(), old2.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(
        receipts.iter().all(|r| r["verified"] == true
            && r["run_id"] == json!(run_id)
            && r["removed"]["chunks"].as_u64().unwrap() > 0),
        "{receipts:?}"
    );
    let manifest: Value =
        serde_json::from_slice(&app.blobs.get(&tenant, &format!("{target}.manifest.json")).await.unwrap()).unwrap();
    assert_eq!((manifest["erased"].clone(), manifest["kept"].clone()), (json!(2), json!(1)));
    assert_eq!(manifest["retention_days"], 30);
    assert_eq!(manifest["file_sha256"], json!(hex::encode(Sha256::digest(&body))));
    app.audit_verify(&acme.key, "acme").await.expect(200);

    // Again: nothing left to erase.
    let again = run_to_end(&app, &acme.key, "acme", "retention/sweep", &json!({})).await;
    assert_eq!((again["status"].clone(), again["records_processed"].clone()), (json!("completed"), json!(0)));

    // Without retention, nothing is erased and the run says so.
    backdate(&app, &[&young], 400).await;
    app.patch_tenant("acme", &json!({"config": {"retention_days": null}})).await.expect(200);
    let r = app.start_run(&acme.key, "acme", "retention/sweep", &json!({})).await;
    let none_id = r.data()["run_id"].as_str().unwrap().to_owned();
    app.drive_runs().await;
    let none = app.get_run(&acme.key, "acme", &none_id).await.data().clone();
    assert_eq!((none["status"].clone(), none["records_processed"].clone()), (json!("completed"), json!(0)));
    let counts = completed_counts(&app, &acme.key, "acme", &none_id).await;
    assert!(counts["message"].as_str().unwrap().contains("no retention_days"), "{counts}");
    app.get(&format!("/api/v1/query/acme/document/{young}"), Some(&acme.key)).await.expect(200);
}

/// The hash embedder at another dimension, which waits for a permit before each batch: lets a test look at the
/// index while a reindex is half done.
struct Gated {
    inner: HashEmbedder,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Embedder for Gated {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.embed_batch(texts)
    }
}

const NEW_MODEL: &str = "hash-v1-256";

/// An app whose registry has `small` (the gated 256-dimension hash embedder) beside the default, with two
/// tenants' documents indexed by the default.
async fn reindex_app(gate: Arc<Semaphore>) -> (TestApp, String, String) {
    let mut registry = EmbedderRegistry::default();
    registry.register("small", Arc::new(Gated { inner: HashEmbedder::new(256).unwrap(), gate })).unwrap();
    let app = spawn_app_with(TestConfig { embedders: Some(registry), ..TestConfig::default() }).await;
    let acme = app.tenant("acme").await.key;
    let globex = app.tenant("globex").await.key;
    upload(&app, &acme, "acme", "pumps.md", "pumps", 8).await;
    upload(&app, &acme, "acme", "valves.md", "valves", 8).await;
    upload(&app, &globex, "globex", "pumps.md", "pumps", 4).await;
    drain(&app.pipeline("w")).await;
    (app, acme, globex)
}

/// `(embed models of the hits, model_version_match)` of a vector search.
async fn search_models(app: &TestApp, key: &str, tenant: &str) -> (Vec<String>, bool) {
    let r =
        app.search(key, tenant, &json!({"query_text": "relay station valves", "mode": "vector", "top_k": 10})).await;
    r.expect(200);
    let chunks = r.data()["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty(), "{}", r.text);
    let models = chunks.iter().map(|c| c["embed_model"].as_str().unwrap().to_owned()).collect();
    (models, r.data()["model_version_match"] == true)
}

async fn shadow_rows(app: &TestApp) -> i64 {
    let store =
        frostbyte_adapters::SqliteStore::connect(&format!("sqlite://{}", app.db_path.display()), 1).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM chunk_vectors_shadow").fetch_one(store.pool()).await.unwrap()
}

async fn wait_for_shadow_rows(app: &TestApp) {
    for _ in 0..200 {
        if shadow_rows(app).await > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the reindex never wrote a shadow vector");
}

async fn tenant_config(app: &TestApp, tenant: &str) -> Value {
    app.get_tenant(tenant).await.data().clone()
}

#[tokio::test]
async fn reindex_serves_old_vectors_until_one_atomic_swap_then_the_new_model() {
    let gate = Arc::new(Semaphore::new(1));
    let (app, acme, globex) = reindex_app(gate.clone()).await;
    let (models, matched) = search_models(&app, &acme, "acme").await;
    assert!(matched && models.iter().all(|m| m == "hash-v1-384"), "{models:?}");
    let before = tenant_config(&app, "acme").await;

    let r =
        app.start_run(&acme, "acme", "documents/reindex", &json!({"embedding_model": "small", "batch_size": 2})).await;
    r.expect(202);
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    let engine = app.state.engine.clone();
    let worker = tokio::spawn(async move { engine.try_run_one("reindexer").await.unwrap() });

    // Half done: shadow vectors exist, searches still answer from the old vectors, all of one model.
    wait_for_shadow_rows(&app).await;
    let (models, matched) = search_models(&app, &acme, "acme").await;
    assert!(matched && models.iter().all(|m| m == "hash-v1-384"), "during: {models:?}");
    assert_eq!(app.get_run(&acme, "acme", &run_id).await.data()["status"], "running");

    gate.add_permits(10_000);
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("run finished").unwrap();
    let run = app.get_run(&acme, "acme", &run_id).await.data().clone();
    assert_eq!(run["status"], "completed", "{run}");
    let chunks = run["records_processed"].as_u64().unwrap();
    assert!(chunks >= 4, "{run}");
    let counts = completed_counts(&app, &acme, "acme", &run_id).await;
    assert_eq!((counts["chunks"].as_u64(), counts["embed_model"].clone()), (Some(chunks), json!(NEW_MODEL)));

    // After: every hit carries the new model, queries embed with it, and the config change is versioned.
    let (models, matched) = search_models(&app, &acme, "acme").await;
    assert!(matched && models.iter().all(|m| m == NEW_MODEL), "after: {models:?}");
    let after = tenant_config(&app, "acme").await;
    assert_eq!(after["config"]["embedding_model"], "small");
    assert_eq!(after["config_version"].as_i64().unwrap(), before["config_version"].as_i64().unwrap() + 1);
    let chain = app.audit_chain(&acme, "acme", &run_id).await;
    let types: Vec<&str> =
        chain.data()["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert!(types.contains(&"DOCUMENTS_REINDEXED"), "{types:?}");
    let docs = app.get("/api/v1/tenants/acme/documents", Some(&acme)).await;
    for d in docs.data().as_array().unwrap() {
        let id = d["doc_id"].as_str().unwrap();
        let view = app.get(&format!("/api/v1/query/acme/document/{id}"), Some(&acme)).await;
        let listed = view.data()["chunks"].as_array().unwrap();
        assert!(!listed.is_empty());
        for c in listed {
            let chunk = app.chunk(&acme, "acme", c["chunk_id"].as_str().unwrap()).await;
            assert_eq!(chunk.data()["lineage"]["embed_model"], NEW_MODEL, "{}", chunk.text);
        }
    }
    assert_eq!(shadow_rows(&app).await, 0, "the swap removed the shadow rows");

    // Another tenant is untouched: its vectors, its config.
    let (models, matched) = search_models(&app, &globex, "globex").await;
    assert!(matched && models.iter().all(|m| m == "hash-v1-384"), "globex: {models:?}");
    assert_eq!(tenant_config(&app, "globex").await["config"]["embedding_model"], "hash");
    app.audit_verify(&acme, "acme").await.expect(200);
}

#[tokio::test]
async fn cancelling_a_reindex_before_the_swap_leaves_everything_as_it_was() {
    let gate = Arc::new(Semaphore::new(1));
    let (app, acme, _) = reindex_app(gate.clone()).await;
    let before = tenant_config(&app, "acme").await;
    let r =
        app.start_run(&acme, "acme", "documents/reindex", &json!({"embedding_model": "small", "batch_size": 2})).await;
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    let engine = app.state.engine.clone();
    let worker = tokio::spawn(async move { engine.try_run_one("reindexer").await.unwrap() });
    wait_for_shadow_rows(&app).await;

    app.cancel_run(&acme, "acme", &run_id).await.expect(200);
    tokio::time::timeout(Duration::from_secs(10), worker).await.expect("stopped promptly").unwrap();
    let run = app.get_run(&acme, "acme", &run_id).await.data().clone();
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(shadow_rows(&app).await, 0, "the shadow rows were cleaned up");
    let (models, matched) = search_models(&app, &acme, "acme").await;
    assert!(matched && models.iter().all(|m| m == "hash-v1-384"), "{models:?}");
    let after = tenant_config(&app, "acme").await;
    assert_eq!(after["config_version"], before["config_version"]);
    assert_eq!(after["config"]["embedding_model"], "hash");
}

#[tokio::test]
async fn reindex_with_an_unknown_model_fails_clearly_and_changes_nothing() {
    let (app, acme, _) = reindex_app(Arc::new(Semaphore::new(10_000))).await;
    let r = app.start_run(&acme, "acme", "documents/reindex", &json!({})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["field"], "parameters.embedding_model", "{}", r.text);

    let run = run_to_end(&app, &acme, "acme", "documents/reindex", &json!({"embedding_model": "nope"})).await;
    assert_eq!(run["status"], "failed", "{run}");
    let message = run["error_message"].as_str().unwrap();
    assert!(message.contains("\"nope\" is not configured") && message.contains("small"), "{message}");
    let (models, matched) = search_models(&app, &acme, "acme").await;
    assert!(matched && models.iter().all(|m| m == "hash-v1-384"), "{models:?}");
    assert_eq!(tenant_config(&app, "acme").await["config"]["embedding_model"], "hash");

    // A collection with no chunks swaps nothing but still records the tenant's model.
    let run = run_to_end(
        &app,
        &acme,
        "acme",
        "documents/reindex",
        &json!({"embedding_model": "small", "collection": "none"}),
    )
    .await;
    assert_eq!((run["status"].clone(), run["records_processed"].clone()), (json!("completed"), json!(0)));
}

/// A sweep attempt that crashed after erasing a document but before flushing its receipt: the resumed attempt
/// keeps the receipt lines it wrote, recovers the missing receipt from its own `DOCUMENT_ERASED` event, and
/// erases each document once.
#[tokio::test]
async fn a_resumed_retention_sweep_neither_loses_nor_duplicates_receipts() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let flushed = upload(&app, &acme.key, "acme", "a.md", "pumps", 2).await;
    let unflushed = upload(&app, &acme.key, "acme", "b.md", "valves", 2).await;
    let left = upload(&app, &acme.key, "acme", "c.md", "relays", 2).await;
    drain(&app.pipeline("w")).await;
    app.patch_tenant("acme", &json!({"config": {"retention_days": 30}})).await.expect(200);
    backdate(&app, &[&flushed, &unflushed, &left], 40).await;

    let r = app.start_run(&acme.key, "acme", "retention/sweep", &json!({})).await;
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    let run_uuid = uuid::Uuid::parse_str(&run_id).unwrap();
    // What the first attempt did: erased two documents, flushed the receipt of one, then the process died.
    let tenant = TenantId::parse("acme").unwrap();
    let plane = app.state.engine.documents.clone().expect("document plane");
    let actor = frostbyte_core::service::tenants::Actor::Pipeline(run_uuid);
    let first = plane.lifecycle().erase(&tenant, flushed.parse().unwrap(), &actor).await.unwrap();
    plane.lifecycle().erase(&tenant, unflushed.parse().unwrap(), &actor).await.unwrap();
    let target = format!("retention/{}/{run_id}.receipts.jsonl", chrono::Utc::now().format("%Y-%m-%d"));
    let mut line = serde_json::to_value(&first).unwrap();
    line["run_id"] = json!(run_id);
    let foreign = json!({"run_id": "another-run", "doc_id": left});
    app.blobs.put(&tenant, &target, bytes::Bytes::from(format!("{line}\n{foreign}\n"))).await.unwrap();

    app.drive_runs().await;
    let run = app.get_run(&acme.key, "acme", &run_id).await.data().clone();
    assert_eq!((run["status"].clone(), run["records_processed"].clone()), (json!("completed"), json!(3)), "{run}");
    let receipts = jsonl(&app.blobs.get(&tenant, &target).await.unwrap());
    let mut ids: Vec<&str> = receipts.iter().map(|r| r["doc_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = [flushed.as_str(), unflushed.as_str(), left.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "each erased document once, the other run's line dropped");
    let recovered = receipts.iter().find(|r| r["doc_id"] == json!(unflushed)).unwrap();
    assert_eq!((recovered["already_erased"].clone(), recovered["verified"].clone()), (json!(true), json!(true)));
    let fresh = receipts.iter().find(|r| r["doc_id"] == json!(left)).unwrap();
    assert_eq!(fresh["already_erased"], json!(false));
    for id in [&flushed, &unflushed, &left] {
        let chain = app.audit_chain(&acme.key, "acme", id).await;
        let erased =
            chain.data()["events"].as_array().unwrap().iter().filter(|e| e["event_type"] == "DOCUMENT_ERASED").count();
        assert_eq!(erased, 1, "{id} erased exactly once");
    }
}

/// The 256-dimension hash embedder, counting the texts it embeds.
struct Counting {
    inner: HashEmbedder,
    texts: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl Embedder for Counting {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.texts.fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
        self.inner.embed_batch(texts)
    }
}

/// A reindex resumed after a crash (its shadow rows already hold some vectors) embeds only the chunks left, and
/// the shadow rows a dead run left behind are removed.
#[tokio::test]
async fn a_resumed_reindex_embeds_only_what_is_left_and_clears_dead_runs_rows() {
    use frostbyte_core::reindex::{ReindexTarget, ShadowVector};
    let texts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut registry = EmbedderRegistry::default();
    let counting = Counting { inner: HashEmbedder::new(256).unwrap(), texts: texts.clone() };
    registry.register("small", Arc::new(counting)).unwrap();
    let app = spawn_app_with(TestConfig { embedders: Some(registry), ..TestConfig::default() }).await;
    let acme = app.tenant("acme").await.key;
    upload(&app, &acme, "acme", "pumps.md", "pumps", 8).await;
    upload(&app, &acme, "acme", "valves.md", "valves", 8).await;
    drain(&app.pipeline("w")).await;

    let r =
        app.start_run(&acme, "acme", "documents/reindex", &json!({"embedding_model": "small", "batch_size": 2})).await;
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    let tenant = TenantId::parse("acme").unwrap();
    let shadow = app.state.engine.documents.clone().expect("document plane").shadow.clone();
    let hash = HashEmbedder::new(256).unwrap();
    let vectors = |cands: &[frostbyte_core::reindex::ReindexCandidate]| -> Vec<ShadowVector> {
        cands
            .iter()
            .map(|c| ShadowVector {
                chunk_id: c.chunk_id.clone(),
                text_hash: c.text_hash.clone(),
                vector: hash.embed_text(&c.text).unwrap(),
            })
            .collect()
    };
    // The interrupted first attempt of this run embedded three chunks; a run that died left rows for all.
    let this = ReindexTarget { run_id: run_id.parse().unwrap(), embed_model: NEW_MODEL.into(), collection: None };
    let scope = shadow.reindex_scope(&tenant, &this).await.unwrap() as usize;
    assert!(scope > 3);
    let done = shadow.reindex_pending(&tenant, &this, None, 3).await.unwrap();
    shadow.put_shadow_vectors(&tenant, &this, &vectors(&done)).await.unwrap();
    let dead = ReindexTarget { run_id: frostbyte_core::ids::new_id(), ..this.clone() };
    let all = shadow.reindex_pending(&tenant, &dead, None, 1_000).await.unwrap();
    shadow.put_shadow_vectors(&tenant, &dead, &vectors(&all)).await.unwrap();
    assert_eq!(shadow_rows(&app).await as usize, 3 + scope);

    app.drive_runs().await;
    let run = app.get_run(&acme, "acme", &run_id).await.data().clone();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["records_processed"].as_u64().unwrap() as usize, scope);
    assert_eq!(texts.load(std::sync::atomic::Ordering::SeqCst), scope - 3, "only what was left was embedded");
    assert_eq!(shadow_rows(&app).await, 0, "the dead run's rows are gone too");
    let (models, matched) = search_models(&app, &acme, "acme").await;
    assert!(matched && models.iter().all(|m| m == NEW_MODEL), "{models:?}");
}
