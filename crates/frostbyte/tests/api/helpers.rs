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
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig { metrics_public: true, blobs: None }
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
    let (store, queue, documents, index) = (ports.store, ports.queue, ports.documents, ports.index);
    store.migrate().await.expect("migrations");
    let blobs = match config.blobs {
        Some(b) => b,
        None => frostbyte_adapters::resolve::blob_store("memory://").expect("memory blob store"),
    };
    let state = AppState {
        store: Arc::clone(&store),
        blobs: Arc::clone(&blobs),
        queue: Arc::clone(&queue),
        documents: Arc::clone(&documents),
        index: Arc::clone(&index),
        embedder: Arc::new(frostbyte_core::embed::HashEmbedder::default()),
        tenants: TenantService::new(Arc::clone(&store), Arc::clone(&blobs)),
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
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = router(Arc::new(state));
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
            self.index.clone(),
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
