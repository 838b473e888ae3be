//! Embedders end to end: `POST /v1/embeddings` served from the hash embedder, the `openai` adapter pointed at a
//! second Frostbyte, its failure modes (dimension mismatch, endpoint down, unknown model), the tenant's
//! `embedding_model` choice, and the `running` stage with lease heartbeats.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use frostbyte_adapters::embed::{OpenAiConfig, OpenAiEmbedder};
use frostbyte_core::TenantId;
use frostbyte_core::embed::{EmbedError, Embedder, EmbedderRegistry, HashEmbedder};
use frostbyte_core::queue::RunOnce;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, TestApp, TestConfig, drain, spawn_app, spawn_app_with};

/// Distinct paragraphs, enough for several chunks.
fn long_markdown() -> Vec<u8> {
    let mut s = String::from("# Field notes\n\n");
    for i in 0..40 {
        s.push_str(&format!(
            "Paragraph {i} records how the northern relay station {i} was inspected, which valves were replaced, \
             and why the maintenance crew scheduled a follow-up visit for week {}.\n\n",
            i + 2
        ));
    }
    s.into_bytes()
}

/// An app whose registry also has `openai`, pointed at `base_url`.
async fn app_with_openai(config: OpenAiConfig) -> TestApp {
    let mut registry = EmbedderRegistry::default();
    registry.register("openai", Arc::new(OpenAiEmbedder::new(config).unwrap())).unwrap();
    spawn_app_with(TestConfig { embedders: Some(registry), ..TestConfig::default() }).await
}

fn openai_config(base_url: String, dimensions: usize, api_key: Option<String>) -> OpenAiConfig {
    let mut c = OpenAiConfig::new(base_url, "hash", dimensions);
    c.api_key = api_key.map(SecretString::from);
    c.batch_size = 3;
    c.max_retries = 1;
    c.retry_backoff = Duration::from_millis(5);
    c.timeout = Duration::from_secs(5);
    c
}

/// A tenant on `app` that embeds with `model`, and its all-scopes key.
async fn tenant_using(app: &TestApp, id: &str, model: &str) -> String {
    let t = app.tenant(id).await;
    app.patch_tenant(id, &json!({"config": {"embedding_model": model}})).await.expect(200);
    t.key
}

async fn upload_doc(app: &TestApp, key: &str, tenant: &str) -> String {
    let r = app.upload(key, tenant, "notes.md", "text/markdown", &long_markdown()).await;
    r.expect(202);
    r.data()["doc_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn embeddings_endpoint_answers_openai_style_with_hash_vectors() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    let (query_key, _) = app.key("acme", &["query"]).await;
    let r =
        app.embeddings(Some(&query_key), &json!({"input": ["pumps and valves", "hello world"], "model": "hash"})).await;
    r.expect(200);
    assert_eq!(r.body["object"], "list", "{}", r.text);
    assert_eq!(r.body["model"], "hash-v1-384");
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let hash = HashEmbedder::default();
    for (i, text) in ["pumps and valves", "hello world"].iter().enumerate() {
        assert_eq!(data[i]["object"], "embedding");
        assert_eq!(data[i]["index"], i);
        let got: Vec<f32> = serde_json::from_value(data[i]["embedding"].clone()).unwrap();
        assert_eq!(got, hash.embed_text(text).unwrap(), "input {i} round-trips exactly");
    }
    assert_eq!(r.body["usage"]["prompt_tokens"], 5);
    assert_eq!(r.body["usage"]["total_tokens"], 5);

    // A single string, the default model (no `model`), the model id as the model, and the admin key all work.
    let one = app.embeddings(Some(ADMIN_KEY), &json!({"input": "hello world"})).await;
    one.expect(200);
    assert_eq!(one.body["data"][0]["embedding"], data[1]["embedding"]);
    app.embeddings(Some(&query_key), &json!({"input": "x1", "model": "hash-v1-384", "encoding_format": "float"}))
        .await
        .expect(200);
}

#[tokio::test]
async fn embeddings_endpoint_refuses_bad_requests_and_credentials() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    let (query_key, _) = app.key("acme", &["query"]).await;
    let (ingest_key, _) = app.key("acme", &["ingest"]).await;
    let ok = json!({"input": "hello"});
    app.embeddings(None, &ok).await.expect_error(401, "AUTHENTICATION_REQUIRED");
    app.embeddings(Some(&ingest_key), &ok).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    let r = app.embeddings(Some(&query_key), &json!({"input": "hello", "model": "text-embedding-3-small"})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.text.contains("hash-v1-384"), "lists what is available: {}", r.text);
    for bad in [
        json!({"input": []}),
        json!({"input": ["fine", "  "]}),
        json!({"input": "!!!"}),
        json!({"input": "hello", "encoding_format": "base64"}),
        json!({"input": "hello", "dimensions": 12}),
        json!({"input": [1, 2, 3]}),
        json!({"input": "hello", "stream": true}),
    ] {
        app.embeddings(Some(&query_key), &bad).await.expect_error(400, "VALIDATION_ERROR");
    }
    app.suspend("acme").await.expect(200);
    app.embeddings(Some(&query_key), &ok).await.expect_error(403, "TENANT_SUSPENDED");
}

/// The end-to-end test of the `openai` adapter: app B embeds through app A's `/v1/embeddings`, authenticated with
/// a tenant key of A, and gets exactly the hash embedder's vectors.
#[tokio::test]
async fn a_document_embedded_through_another_frostbyte_gets_the_hash_vectors() {
    let a = spawn_app().await;
    a.tenant("embedsvc").await;
    let (a_key, _) = a.key("embedsvc", &["query"]).await;
    let b = app_with_openai(openai_config(format!("{}/v1", a.base), 384, Some(a_key))).await;
    let key = tenant_using(&b, "acme", "openai").await;
    let doc_id = upload_doc(&b, &key, "acme").await;
    assert_eq!(drain(&b.pipeline("w1")).await, 1, "one job: parse, policy, index");

    let d = b.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&key)).await;
    d.expect(200);
    assert_eq!(d.data()["status"], "indexed", "{}", d.text);
    assert_eq!(d.data()["lineage"]["embed_model"], "openai/hash");
    let chunks = b.index.document_chunks(&TenantId::parse("acme").unwrap(), &doc_id).await.unwrap();
    assert!(chunks.len() > 3, "several batches of 3: {} chunks", chunks.len());
    let hash = HashEmbedder::default();
    for c in &chunks {
        assert_eq!(c.embed_model, "openai/hash", "the model id is recorded on every vector");
        assert_eq!(c.vector, hash.embed_text(&c.text).unwrap(), "chunk {} differs from the hash embedder", c.position);
    }
    // The same tenant on the hash embedder would have stored the same vectors under another model id.
    let direct = spawn_app().await;
    let direct_key = direct.tenant("acme").await.key;
    let direct_doc = upload_doc(&direct, &direct_key, "acme").await;
    drain(&direct.pipeline("w1")).await;
    let direct_chunks = direct.index.document_chunks(&TenantId::parse("acme").unwrap(), &direct_doc).await.unwrap();
    assert_eq!(direct_chunks.len(), chunks.len());
    assert!(direct_chunks.iter().zip(&chunks).all(|(x, y)| x.vector == y.vector && x.embed_model == "hash-v1-384"));
}

async fn dead_letters(app: &TestApp, key: &str) -> Vec<Value> {
    let r = app.dlq(key, "acme").await;
    r.expect(200);
    r.data().as_array().unwrap().clone()
}

#[tokio::test]
async fn a_dimension_mismatch_fails_before_anything_is_written() {
    let a = spawn_app().await;
    // A serves 384 dimensions; B expects 256.
    let b = app_with_openai(openai_config(format!("{}/v1", a.base), 256, Some(ADMIN_KEY.to_owned()))).await;
    let key = tenant_using(&b, "acme", "openai").await;
    let doc_id = upload_doc(&b, &key, "acme").await;
    // The parse job's chain stops at the index stage and leaves it to its own job, which fails once for good.
    assert_eq!(drain(&b.pipeline("w1")).await, 2, "parse and policy, then one index attempt: no retries");

    let tenant = TenantId::parse("acme").unwrap();
    assert!(b.index.document_chunks(&tenant, &doc_id).await.unwrap().is_empty(), "nothing was indexed");
    let d = b.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&key)).await;
    assert_eq!(d.data()["status"], "failed", "{}", d.text);
    assert_eq!(d.data()["error_code"], "EMBED_DIMENSION_MISMATCH");
    assert_eq!(d.data()["stages"]["embed"], "failed");
    let dlq = dead_letters(&b, &key).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["stage"], "index");
    assert_eq!(dlq[0]["resource_id"], doc_id.as_str());
    assert_eq!(dlq[0]["error"]["code"], "EMBED_DIMENSION_MISMATCH");
    assert_eq!(dlq[0]["retry_count"], 1);
    let events = b.audit_events(&key, "acme", "?event_type=DOCUMENT_EMBEDDED").await;
    assert_eq!(events.body["meta"]["total"], 0, "{}", events.text);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_then_dead_lettered_without_zero_vectors() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b = app_with_openai(openai_config(format!("http://127.0.0.1:{port}/v1"), 384, None)).await;
    let key = tenant_using(&b, "acme", "openai").await;
    let doc_id = upload_doc(&b, &key, "acme").await;
    assert_eq!(drain(&b.pipeline("w1")).await, 1 + 4, "parse and policy, then four index attempts");

    let tenant = TenantId::parse("acme").unwrap();
    assert!(b.index.document_chunks(&tenant, &doc_id).await.unwrap().is_empty(), "no chunk, no zero vector");
    let dlq = dead_letters(&b, &key).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["error"]["code"], "EMBED_UNAVAILABLE");
    assert_eq!(dlq[0]["retry_count"], 4);
    assert_eq!(dlq[0]["status"], "dead");
    let d = b.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&key)).await;
    assert_eq!(d.data()["status"], "failed");
    assert_eq!(d.data()["error_code"], "EMBED_UNAVAILABLE");
    let retries = b.audit_events(&key, "acme", "?event_type=DOCUMENT_STAGE_RETRYING").await;
    assert_eq!(retries.body["meta"]["total"], 3, "{}", retries.text);
    let dead = b.audit_events(&key, "acme", "?event_type=JOB_DEAD_LETTERED").await;
    assert_eq!(dead.body["meta"]["total"], 1);
}

#[tokio::test]
async fn an_unknown_embedding_model_is_refused_on_config_and_fails_jobs_with_a_clear_code() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    let r = app.patch_tenant("acme", &json!({"config": {"embedding_model": "openai"}})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["field"], "config.embedding_model", "{}", r.text);
    let mut body = crate::helpers::tenant_body("bravo");
    body["config"] = json!({"embedding_model": "nope"});
    app.create_tenant(&body).await.expect_error(400, "VALIDATION_ERROR");
    app.patch_tenant("acme", &json!({"config": {"embedding_model": "hash-v1-384"}})).await.expect(200);

    // A deployment whose config lost the tenant's embedder: the job dead-letters with a code saying so.
    let b = app_with_openai(openai_config("http://127.0.0.1:9/v1".into(), 384, None)).await;
    let key = tenant_using(&b, "acme", "openai").await;
    let doc_id = upload_doc(&b, &key, "acme").await;
    let mut hash_only = b.pipeline("w1");
    hash_only.embedders = Arc::new(EmbedderRegistry::default());
    assert_eq!(drain(&hash_only).await, 2, "parse and policy, then the index job");
    let dlq = dead_letters(&b, &key).await;
    assert_eq!(dlq[0]["error"]["code"], "EMBED_MODEL_UNKNOWN", "{dlq:?}");
    assert!(dlq[0]["error"]["message"].as_str().unwrap().contains("\"openai\""));
    let d = b.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&key)).await;
    assert_eq!(d.data()["error_code"], "EMBED_MODEL_UNKNOWN");
}

/// The hash embedder, slowly: a stage that outlives several leases.
struct SlowEmbedder(HashEmbedder, Duration);

#[async_trait]
impl Embedder for SlowEmbedder {
    fn model_id(&self) -> &str {
        "slow-hash"
    }
    fn dimension(&self) -> usize {
        self.0.dimension()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        tokio::time::sleep(self.1).await;
        self.0.embed_batch(texts)
    }
}

async fn slow_app() -> TestApp {
    let mut registry = EmbedderRegistry::default();
    registry.register("slow", Arc::new(SlowEmbedder(HashEmbedder::default(), Duration::from_millis(2500)))).unwrap();
    spawn_app_with(TestConfig { embedders: Some(registry), ..TestConfig::default() }).await
}

fn worker(app: &TestApp, id: &str, heartbeat: Duration) -> frostbyte::pipeline::Pipeline {
    let mut p = app.pipeline(id);
    // Stage by stage, so that the slow index stage runs as a job of its own.
    p.chain = false;
    p.claim.lease = Duration::from_millis(1000);
    p.heartbeat = Some(heartbeat);
    p
}

/// Runs parse and policy, then starts the slow index job on `first` and, while it runs, lets `second` try to
/// claim every 100 ms. Returns what the second worker got, and the document's stages seen mid-run.
async fn race(
    app: &TestApp,
    key: &str,
    first: frostbyte::pipeline::Pipeline,
    second: &frostbyte::pipeline::Pipeline,
) -> (Vec<RunOnce>, Value, String) {
    let doc_id = upload_doc(app, key, "acme").await;
    assert!(matches!(first.try_run_one().await.unwrap(), RunOnce::Ran(_)));
    assert!(matches!(first.try_run_one().await.unwrap(), RunOnce::Ran(_)));
    let running = tokio::spawn(async move { first.try_run_one().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mid = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(key)).await;
    let mut seen = Vec::new();
    for _ in 0..18 {
        let r = second.try_run_one().await.unwrap();
        let took = matches!(r, RunOnce::Ran(_));
        seen.push(r);
        if took {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(running.await.unwrap(), RunOnce::Ran(_)));
    (seen, mid.data().clone(), doc_id)
}

#[tokio::test]
async fn a_running_stage_shows_running_and_its_heartbeat_keeps_a_second_worker_off() {
    let app = slow_app().await;
    let key = tenant_using(&app, "acme", "slow").await;
    let second = worker(&app, "w2", Duration::from_millis(100));

    let (seen, mid, _) = race(&app, &key, worker(&app, "w1", Duration::from_millis(100)), &second).await;
    assert_eq!(mid["stages"]["embed"], "running", "{mid}");
    assert_eq!(mid["current_stage"], "embed");
    assert_eq!(mid["stages"]["policy"], "done");
    assert_eq!(seen.len(), 18, "the second worker never got the job: {seen:?}");
    assert!(seen.iter().all(|r| *r == RunOnce::Idle));
    assert_eq!(drain(&second).await, 0);

    // The control: the same race with heartbeats far apart, and the second worker takes the job over after
    // the 1 s lease.
    let (seen, _, doc_id) = race(&app, &key, worker(&app, "w3", Duration::from_secs(30)), &second).await;
    assert!(matches!(seen.last(), Some(RunOnce::Ran(_))), "without heartbeats the job is reclaimed: {seen:?}");
    // Both workers embedded, but only the lease holder's outcome was committed, with its job's completion.
    let chain = app.audit_chain(&key, "acme", &doc_id).await;
    let count =
        |kind: &str| chain.data()["events"].as_array().unwrap().iter().filter(|e| e["event_type"] == kind).count();
    assert_eq!(count("INDEX_WRITTEN"), 1, "{}", chain.text);
    assert_eq!(count("DOCUMENT_STAGE_STARTED"), 4, "parse, policy, and the index job twice");
    let d = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&key)).await;
    assert_eq!(d.data()["status"], "indexed", "{}", d.text);
}
