//! `spawn_app()`: a real server on a free port, backed by a real SQLite store in a temp dir and an in-memory blob
//! store, with one method per endpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use frostbyte::http::{AppState, HttpSettings, install_metrics_recorder, router};
use frostbyte_core::documents::DocumentStore;
use frostbyte_core::index::ChunkIndex;
use frostbyte_core::ports::{BlobStore, MetadataStore};
use frostbyte_core::queue::JobQueue;
use frostbyte_core::service::TenantService;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
pub const MAX_BODY: usize = 16 * 1024;

/// Knobs for [`spawn_app_with`].
pub struct TestConfig {
    pub metrics_public: bool,
    /// Replaces the `memory://` blob store (for example with one that is down).
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// Replaces the default embedders (the hash embedder alone).
    pub embedders: Option<frostbyte_core::embed::EmbedderRegistry>,
    /// Replaces the `none` malware scanner.
    pub scanner: Option<Arc<dyn frostbyte_core::scan::Scanner>>,
    /// Where `documents.sync` may read (none by default).
    pub sync: frostbyte::engine::sync::SyncSettings,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig { metrics_public: true, blobs: None, embedders: None, scanner: None, sync: Default::default() }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub documents: Arc<dyn DocumentStore>,
    pub index: Arc<dyn ChunkIndex>,
    pub db_path: PathBuf,
    /// The state the server runs on (embedders, event bus, ...).
    pub state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The stable error code, if this is an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts an error envelope with this status and code, whose request id equals the header.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.body["success"], json!(false), "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
        let header = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(self.body["error"]["request_id"].as_str(), Some(header), "{}", self.text);
        assert!(self.body["error"]["details"].is_array(), "{}", self.text);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.text);
        self
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestConfig::default()).await
}

pub async fn spawn_app_with(config: TestConfig) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("frostbyte.db");
    let ports = frostbyte_adapters::resolve::metadata_ports(&format!("sqlite://{}", db_path.display()), 4)
        .await
        .expect("sqlite store");
    let batches = ports.batches.clone();
    let (store, queue, documents, index) = (ports.store, ports.queue, ports.documents, ports.index);
    store.migrate().await.expect("migrations");
    let blobs = match config.blobs {
        Some(b) => b,
        None => frostbyte_adapters::resolve::blob_store("memory://").expect("memory blob store"),
    };
    let events = Arc::new(frostbyte::events::EventBus::default());
    let embedders = Arc::new(config.embedders.unwrap_or_default());
    let scanner = config.scanner.unwrap_or_else(|| Arc::new(frostbyte_core::scan::NoScanner));
    let plane = frostbyte::engine::DocumentPlane {
        intake: Arc::new(frostbyte::intake::Intake {
            store: Arc::clone(&store),
            documents: Arc::clone(&documents),
            batches: batches.clone(),
            blobs: Arc::clone(&blobs),
            scanner: scanner.clone(),
        }),
        index: Arc::clone(&index),
        embedders: embedders.clone(),
        shadow: ports.shadow.clone(),
        sync_state: ports.sync.clone(),
        sync_settings: config.sync,
    };
    let engine = frostbyte::engine::Engine::new(
        ports.runs.clone(),
        Arc::clone(&store),
        Arc::clone(&queue),
        Arc::clone(&blobs),
        events.clone(),
        frostbyte::engine::EngineSettings { cancel_poll: Duration::from_millis(50), ..Default::default() },
    )
    .with_schedules(ports.schedules.clone())
    .with_documents(plane);
    let state = AppState {
        store: Arc::clone(&store),
        blobs: Arc::clone(&blobs),
        queue: Arc::clone(&queue),
        documents: Arc::clone(&documents),
        index: Arc::clone(&index),
        tenants: TenantService::new(Arc::clone(&store), Arc::clone(&blobs), Arc::clone(&documents)),
        admin_key: SecretString::from(ADMIN_KEY),
        jwt_secret: SecretString::from(JWT_SECRET),
        settings: HttpSettings {
            max_body_bytes: MAX_BODY,
            metrics_public: config.metrics_public,
            jwt_ttl: Duration::from_secs(900),
            fusion: Default::default(),
        },
        started_at: Instant::now(),
        metrics: install_metrics_recorder(),
        embedders,
        events,
        batches,
        scanner,
        signals: frostbyte::signals::SignalsRuntime::new(ports.signals, signal_settings()),
        engine: Arc::new(engine),
    };
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = router(state.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("server");
    });
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
        store,
        blobs,
        queue,
        documents,
        index,
        db_path,
        state,
        _dir: dir,
    }
}

/// A tenant created through the API with one key holding every scope.
pub struct TestTenant {
    pub key: String,
    pub key_id: String,
}

impl TestApp {
    /// Sends a request with an optional bearer token and JSON body.
    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        read(req.send().await.expect("request")).await
    }

    /// Sends raw bytes as the body with the given content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token, None).await
    }

    // --- system ----------------------------------------------------------------------------------------------
    pub async fn health(&self) -> Resp {
        self.get("/health", None).await
    }
    pub async fn ready(&self) -> Resp {
        self.get("/ready", None).await
    }
    pub async fn metrics(&self, token: Option<&str>) -> Resp {
        self.get("/metrics", token).await
    }
    pub async fn openapi(&self) -> Resp {
        self.get("/openapi.json", None).await
    }
    pub async fn docs(&self) -> Resp {
        self.get("/docs", None).await
    }

    // --- tenants (admin key) ---------------------------------------------------------------------------------
    pub async fn create_tenant(&self, body: &Value) -> Resp {
        self.send(Method::POST, "/api/v1/admin/tenants", Some(ADMIN_KEY), Some(body)).await
    }
    pub async fn list_tenants(&self, query: &str) -> Resp {
        self.get(&format!("/api/v1/admin/tenants{query}"), Some(ADMIN_KEY)).await
    }
    pub async fn get_tenant(&self, id: &str) -> Resp {
        self.get(&format!("/api/v1/admin/tenants/{id}"), Some(ADMIN_KEY)).await
    }
    pub async fn patch_tenant(&self, id: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, &format!("/api/v1/admin/tenants/{id}"), Some(ADMIN_KEY), Some(body)).await
    }
    pub async fn suspend(&self, id: &str) -> Resp {
        let body = json!({"reason": "test"});
        self.send(Method::POST, &format!("/api/v1/admin/tenants/{id}/suspend"), Some(ADMIN_KEY), Some(&body)).await
    }
    pub async fn resume(&self, id: &str) -> Resp {
        let body = json!({"reason": "test"});
        self.send(Method::POST, &format!("/api/v1/admin/tenants/{id}/resume"), Some(ADMIN_KEY), Some(&body)).await
    }
    pub async fn deprovision(&self, id: &str, body: &Value) -> Resp {
        self.send(Method::POST, &format!("/api/v1/admin/tenants/{id}/deprovision"), Some(ADMIN_KEY), Some(body)).await
    }

    // --- keys and tokens -------------------------------------------------------------------------------------
    pub async fn create_key(&self, tenant: &str, body: &Value) -> Resp {
        self.send(Method::POST, &format!("/api/v1/admin/tenants/{tenant}/keys"), Some(ADMIN_KEY), Some(body)).await
    }
    pub async fn list_keys(&self, tenant: &str) -> Resp {
        self.get(&format!("/api/v1/admin/tenants/{tenant}/keys"), Some(ADMIN_KEY)).await
    }
    pub async fn revoke_key(&self, tenant: &str, key_id: &str) -> Resp {
        self.send(Method::DELETE, &format!("/api/v1/admin/tenants/{tenant}/keys/{key_id}"), Some(ADMIN_KEY), None).await
    }
    pub async fn token(&self, api_key: &str) -> Resp {
        self.send(Method::POST, "/api/v1/auth/token", None, Some(&json!({"api_key": api_key}))).await
    }

    // --- audit -----------------------------------------------------------------------------------------------
    pub async fn audit_events(&self, token: &str, tenant: &str, query: &str) -> Resp {
        self.get(&format!("/api/v1/audit/{tenant}/events{query}"), Some(token)).await
    }
    pub async fn audit_event(&self, token: &str, tenant: &str, event_id: &str) -> Resp {
        self.get(&format!("/api/v1/audit/{tenant}/events/{event_id}"), Some(token)).await
    }
    pub async fn audit_chain(&self, token: &str, tenant: &str, resource_id: &str) -> Resp {
        self.get(&format!("/api/v1/audit/{tenant}/chain/{resource_id}"), Some(token)).await
    }
    pub async fn audit_verify(&self, token: &str, tenant: &str) -> Resp {
        self.get(&format!("/api/v1/audit/{tenant}/verify"), Some(token)).await
    }
    pub async fn audit_export(&self, token: &str, tenant: &str, body: &Value) -> Resp {
        self.send(Method::POST, &format!("/api/v1/audit/{tenant}/export"), Some(token), Some(body)).await
    }

    // --- fixtures --------------------------------------------------------------------------------------------
    /// Creates an ACTIVE tenant and a key with every scope.
    pub async fn dlq(&self, token: &str, tenant: &str) -> Resp {
        self.get(&format!("/api/v1/tenants/{tenant}/dlq"), Some(token)).await
    }
    pub async fn dlq_action(&self, token: &str, tenant: &str, entry: &str, action: &str) -> Resp {
        self.send(Method::POST, &format!("/api/v1/tenants/{tenant}/dlq/{entry}/{action}"), Some(token), None).await
    }

    pub async fn tenant(&self, id: &str) -> TestTenant {
        self.create_tenant(&tenant_body(id)).await.expect(201);
        let key = self.key(id, &["ingest", "query", "audit", "admin"]).await;
        TestTenant { key: key.0, key_id: key.1 }
    }

    /// Creates a key with these scopes; returns `(api_key, key_id)`.
    pub async fn key(&self, tenant: &str, scopes: &[&str]) -> (String, String) {
        let r = self.create_key(tenant, &json!({"name": "test key", "scopes": scopes})).await;
        r.expect(201);
        (r.data()["api_key"].as_str().unwrap().to_owned(), r.data()["key_id"].as_str().unwrap().to_owned())
    }

    /// Polls the tenant until it reaches `state` (or panics after 10 s).
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Resp {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get_tenant(id).await;
            if r.data()["state"] == json!(state) || Instant::now() > deadline {
                assert_eq!(r.data()["state"], json!(state), "tenant never reached {state}: {}", r.text);
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn tenant_body(id: &str) -> Value {
    json!({
        "tenant_id": id,
        "tenant_name": format!("Tenant {id}"),
        "contact_email": "ops@example.com",
        "tier": "standard"
    })
}

async fn read(resp: reqwest::Response) -> Resp {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, text, body }
}

// --- pipeline, embeddings and the event stream ----------------------------------------------------------------
const UPLOAD_BOUNDARY: &str = "frostbyte-helper-boundary";

impl TestApp {
    /// `POST /v1/embeddings`.
    pub async fn embeddings(&self, token: Option<&str>, body: &Value) -> Resp {
        self.send(Method::POST, "/v1/embeddings", token, Some(body)).await
    }

    /// Uploads one file through `POST /api/v1/ingest/{tenant}/documents`.
    pub async fn upload(&self, token: &str, tenant: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Resp {
        let mut body = format!(
            "--{UPLOAD_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{UPLOAD_BOUNDARY}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={UPLOAD_BOUNDARY}");
        self.send_raw(Method::POST, &format!("/api/v1/ingest/{tenant}/documents"), Some(token), Some(&ct), body).await
    }

    /// A pipeline worker over this app's stores, embedders and event bus, with backoff compressed to nothing.
    pub fn pipeline(&self, worker_id: &str) -> frostbyte::pipeline::Pipeline {
        let mut p = frostbyte::pipeline::Pipeline::from_state(&self.state, worker_id);
        p.retry = frostbyte_core::queue::RetryPolicy::default().scaled(0.0);
        p
    }

    /// Opens `GET /api/v1/pipeline/stream`.
    pub async fn stream(&self, token: Option<&str>, last_event_id: Option<u64>) -> SseStream {
        let mut req = self.client.get(format!("{}/api/v1/pipeline/stream", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("stream request");
        SseStream { resp, buf: String::new(), raw: String::new() }
    }
}

/// Runs the pipeline until the queue is idle; returns how many jobs ran.
pub async fn drain(p: &frostbyte::pipeline::Pipeline) -> usize {
    let mut ran = 0;
    while let frostbyte_core::queue::RunOnce::Ran(_) = p.try_run_one().await.expect("run one") {
        ran += 1;
        assert!(ran < 100, "the pipeline never went idle");
    }
    ran
}

/// One Server-Sent Event: its `id:` (if any) and its `data:` as JSON.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<u64>,
    pub data: Value,
}

/// A Server-Sent Events response, read event by event.
pub struct SseStream {
    pub resp: reqwest::Response,
    buf: String,
    /// Everything read so far, verbatim.
    pub raw: String,
}

impl SseStream {
    pub fn status(&self) -> StatusCode {
        self.resp.status()
    }

    /// The next event, or `None` if none arrives within `wait` (or the stream ended).
    pub async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Sse { id, data: serde_json::from_str(&data).expect("event data is JSON") });
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?.expect("stream read")?;
            let text = String::from_utf8_lossy(&chunk);
            self.raw.push_str(&text);
            self.buf.push_str(&text.replace("\r\n", "\n"));
        }
    }

    /// Reads events until one satisfies `stop` (returned last); panics if none does within `wait`.
    pub async fn until(&mut self, wait: Duration, stop: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(e) = self.next(left).await else {
                panic!("the awaited event never came; saw {seen:#?}");
            };
            let done = stop(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

// --- batch intake and the metadata schema ----------------------------------------------------------------------
pub const BATCH_BOUNDARY: &str = "frostbyte-batch-boundary";

/// One `files` part of a batch body.
pub struct Part<'a> {
    /// The part's filename (a `file_id` to match by id, anything else to match by order), or none.
    pub filename: Option<&'a str>,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// A multipart batch body: the manifest (raw text, so tests can send broken JSON) and the file parts.
pub fn batch_body(manifest: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BATCH_BOUNDARY}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\
             Content-Type: application/json\r\n\r\n{manifest}\r\n"
        )
        .as_bytes(),
    );
    for p in parts {
        let filename = p.filename.map(|f| format!("; filename=\"{f}\"")).unwrap_or_default();
        body.extend_from_slice(
            format!(
                "--{BATCH_BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"{filename}\r\n\
                 Content-Type: {}\r\n\r\n",
                p.content_type
            )
            .as_bytes(),
        );
        body.extend_from_slice(p.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BATCH_BOUNDARY}--\r\n").as_bytes());
    body
}

impl TestApp {
    pub async fn submit_batch(&self, token: &str, tenant: &str, body: Vec<u8>) -> Resp {
        self.send_raw(
            Method::POST,
            &format!("/api/v1/ingest/{tenant}/batch"),
            Some(token),
            Some(&format!("multipart/form-data; boundary={BATCH_BOUNDARY}")),
            body,
        )
        .await
    }
    pub async fn batch_status(&self, token: &str, tenant: &str, batch_id: &str) -> Resp {
        self.get(&format!("/api/v1/ingest/{tenant}/batch/{batch_id}"), Some(token)).await
    }
    pub async fn receipt(&self, token: &str, tenant: &str, receipt_id: &str) -> Resp {
        self.get(&format!("/api/v1/ingest/{tenant}/receipt/{receipt_id}"), Some(token)).await
    }
    /// A single upload with a `file` part and optional `metadata` JSON.
    pub async fn upload_one(
        &self,
        token: &str,
        tenant: &str,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
        metadata: Option<&str>,
    ) -> Resp {
        let mut body = Vec::new();
        if let Some(m) = metadata {
            body.extend_from_slice(
                format!("--{BATCH_BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{m}\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{BATCH_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BATCH_BOUNDARY}--\r\n").as_bytes());
        self.send_raw(
            Method::POST,
            &format!("/api/v1/ingest/{tenant}/documents"),
            Some(token),
            Some(&format!("multipart/form-data; boundary={BATCH_BOUNDARY}")),
            body,
        )
        .await
    }
    pub async fn put_schema(&self, token: &str, tenant: &str, schema: &Value) -> Resp {
        self.send(Method::PUT, &format!("/api/v1/tenants/{tenant}/schema"), Some(token), Some(schema)).await
    }
    pub async fn patch_schema(&self, token: &str, tenant: &str, patch: &Value) -> Resp {
        self.send(Method::PATCH, &format!("/api/v1/tenants/{tenant}/schema"), Some(token), Some(patch)).await
    }
    pub async fn get_schema(&self, token: &str, tenant: &str) -> Resp {
        self.get(&format!("/api/v1/tenants/{tenant}/schema"), Some(token)).await
    }
}

// --- document lifecycle (erasure, replace, export) -------------------------------------------------------------
impl TestApp {
    pub async fn erase_document(&self, token: &str, tenant: &str, doc_id: &str) -> Resp {
        self.send(Method::DELETE, &format!("/api/v1/tenants/{tenant}/documents/{doc_id}"), Some(token), None).await
    }

    /// `PUT` with a multipart body: `file` (as `text/markdown`), and `metadata` plus `collection` when given.
    pub async fn replace_document(
        &self,
        token: &str,
        tenant: &str,
        doc_id: &str,
        filename: &str,
        bytes: &[u8],
        metadata: Option<&str>,
    ) -> Resp {
        self.send_raw(
            Method::PUT,
            &format!("/api/v1/tenants/{tenant}/documents/{doc_id}"),
            Some(token),
            Some(&crate::lifecycle::multipart_type()),
            crate::lifecycle::multipart_body(filename, "text/markdown", bytes, metadata),
        )
        .await
    }

    pub async fn export_document(&self, token: &str, tenant: &str, doc_id: &str) -> Resp {
        self.get(&format!("/api/v1/tenants/{tenant}/documents/{doc_id}/export"), Some(token)).await
    }
}

// --- signals ---------------------------------------------------------------------------------------------------

/// Signal limits for tests: small enough to reach.
pub const SIGNALS_MAX_BODY: usize = 256 * 1024;
pub const SIGNALS_MAX_EVENTS: usize = 2_000;

fn signal_settings() -> frostbyte::signals::SignalsSettings {
    frostbyte::signals::SignalsSettings {
        max_body_bytes: SIGNALS_MAX_BODY,
        max_events: SIGNALS_MAX_EVENTS,
        ingest: frostbyte_core::signals::service::IngestSettings { future_horizon_micros: 300_000_000 },
    }
}

impl TestApp {
    pub async fn put_feature_set(&self, token: &str, tenant: &str, name: &str, body: &Value) -> Resp {
        self.send(Method::PUT, &format!("/api/v1/signals/{tenant}/feature-sets/{name}"), Some(token), Some(body)).await
    }

    pub async fn put_feature_set_yaml(&self, token: &str, tenant: &str, name: &str, yaml: &str) -> Resp {
        let path = format!("/api/v1/signals/{tenant}/feature-sets/{name}");
        self.send_raw(Method::PUT, &path, Some(token), Some("application/yaml"), yaml.as_bytes().to_vec()).await
    }

    pub async fn get_feature_set(&self, token: &str, tenant: &str, name: &str, query: &str) -> Resp {
        self.get(&format!("/api/v1/signals/{tenant}/feature-sets/{name}{query}"), Some(token)).await
    }

    pub async fn post_events(&self, token: &str, tenant: &str, events: &Value) -> Resp {
        self.send(Method::POST, &format!("/api/v1/signals/{tenant}/events"), Some(token), Some(events)).await
    }

    pub async fn post_ndjson(&self, token: &str, tenant: &str, body: Vec<u8>) -> Resp {
        let path = format!("/api/v1/signals/{tenant}/events");
        self.send_raw(Method::POST, &path, Some(token), Some("application/x-ndjson"), body).await
    }

    pub async fn get_features(&self, token: &str, tenant: &str, name: &str, entity: &str) -> Resp {
        self.get(&format!("/api/v1/signals/{tenant}/features/{name}/{entity}"), Some(token)).await
    }
}

// --- search, chunks and the document list --------------------------------------------------------------------
const SEARCH_BOUNDARY: &str = "frostbyte-search-boundary";

impl TestApp {
    pub async fn search(&self, token: &str, tenant: &str, body: &Value) -> Resp {
        self.send(Method::POST, &format!("/api/v1/query/{tenant}/search"), Some(token), Some(body)).await
    }
    pub async fn chunk(&self, token: &str, tenant: &str, chunk_id: &str) -> Resp {
        self.get(&format!("/api/v1/query/{tenant}/chunk/{chunk_id}"), Some(token)).await
    }
    pub async fn list_documents(&self, token: &str, tenant: &str, query: &str) -> Resp {
        self.get(&format!("/api/v1/tenants/{tenant}/documents{query}"), Some(token)).await
    }

    /// Uploads a plain-text document with JSON `metadata` and an optional collection; expects 202 and returns
    /// the receipt's data.
    pub async fn upload_text(
        &self,
        token: &str,
        tenant: &str,
        filename: &str,
        text: &str,
        metadata: &Value,
        collection: Option<&str>,
    ) -> Value {
        let mut body = Vec::new();
        let part = |name: &str, value: &str| {
            format!("--{SEARCH_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
        };
        body.extend_from_slice(part("metadata", &metadata.to_string()).as_bytes());
        if let Some(c) = collection {
            body.extend_from_slice(part("collection", c).as_bytes());
        }
        body.extend_from_slice(
            format!(
                "--{SEARCH_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
                 Content-Type: text/plain\r\n\r\n{text}\r\n--{SEARCH_BOUNDARY}--\r\n"
            )
            .as_bytes(),
        );
        let r = self
            .send_raw(
                Method::POST,
                &format!("/api/v1/ingest/{tenant}/documents"),
                Some(token),
                Some(&format!("multipart/form-data; boundary={SEARCH_BOUNDARY}")),
                body,
            )
            .await;
        r.expect(202);
        r.data().clone()
    }

    /// Runs pipeline jobs until the queue is idle; returns how many ran.
    pub async fn drain_pipeline(&self) -> usize {
        let p = frostbyte::pipeline::Pipeline::new(
            self.store.clone(),
            self.queue.clone(),
            self.documents.clone(),
            self.blobs.clone(),
            "test-worker",
        );
        let mut ran = 0;
        while let frostbyte_core::queue::RunOnce::Ran(_) = p.try_run_one().await.expect("run one") {
            ran += 1;
            assert!(ran < 10_000, "the pipeline never went idle");
        }
        ran
    }
}

// --- pipeline engine -------------------------------------------------------------------------------------------
impl TestApp {
    pub async fn list_pipelines(&self, token: &str) -> Resp {
        self.get("/api/v1/pipelines", Some(token)).await
    }
    pub async fn start_run(&self, token: &str, tenant: &str, pipeline: &str, parameters: &Value) -> Resp {
        let body = json!({"parameters": parameters});
        self.send(Method::POST, &format!("/api/v1/pipelines/{tenant}/run/{pipeline}"), Some(token), Some(&body)).await
    }
    pub async fn get_run(&self, token: &str, tenant: &str, run_id: &str) -> Resp {
        self.get(&format!("/api/v1/pipelines/{tenant}/runs/{run_id}"), Some(token)).await
    }
    pub async fn list_runs(&self, token: &str, tenant: &str, query: &str) -> Resp {
        self.get(&format!("/api/v1/pipelines/{tenant}/runs?{query}"), Some(token)).await
    }
    pub async fn cancel_run(&self, token: &str, tenant: &str, run_id: &str) -> Resp {
        self.send(Method::POST, &format!("/api/v1/pipelines/{tenant}/runs/{run_id}/cancel"), Some(token), None).await
    }
    pub async fn list_deliveries(&self, token: &str, tenant: &str, run_id: &str) -> Resp {
        self.get(&format!("/api/v1/pipelines/{tenant}/runs/{run_id}/deliveries"), Some(token)).await
    }
    /// Executes queued pipeline runs in-process until none is left; returns how many jobs ran.
    pub async fn drive_runs(&self) -> usize {
        let mut ran = 0;
        while self.state.engine.try_run_one("test-engine").await.expect("engine worker")
            != frostbyte_core::queue::RunOnce::Idle
        {
            ran += 1;
        }
        ran
    }
}

// --- pipeline schedules ----------------------------------------------------------------------------------------
impl TestApp {
    pub async fn list_schedules(&self, token: &str, tenant: &str) -> Resp {
        self.get(&format!("/api/v1/pipelines/{tenant}/schedules"), Some(token)).await
    }
    pub async fn create_schedule(&self, token: &str, tenant: &str, body: &Value) -> Resp {
        self.send(Method::POST, &format!("/api/v1/pipelines/{tenant}/schedules"), Some(token), Some(body)).await
    }
    pub async fn update_schedule(&self, token: &str, tenant: &str, id: &str, body: &Value) -> Resp {
        self.send(Method::PUT, &format!("/api/v1/pipelines/{tenant}/schedules/{id}"), Some(token), Some(body)).await
    }
    pub async fn delete_schedule(&self, token: &str, tenant: &str, id: &str) -> Resp {
        self.send(Method::DELETE, &format!("/api/v1/pipelines/{tenant}/schedules/{id}"), Some(token), None).await
    }
}
