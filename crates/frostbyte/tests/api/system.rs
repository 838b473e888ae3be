//! Health, readiness, metrics, the OpenAPI document and the docs page.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use frostbyte_core::TenantId;
use frostbyte_core::ports::{BlobError, BlobStore};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, TestConfig, spawn_app, spawn_app_with};

/// The operations of API.md this issue implements: every one must be in the generated document.
const IMPLEMENTED: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("post", "/api/v1/admin/tenants"),
    ("get", "/api/v1/admin/tenants"),
    ("get", "/api/v1/admin/tenants/{tenant_id}"),
    ("patch", "/api/v1/admin/tenants/{tenant_id}"),
    ("post", "/api/v1/admin/tenants/{tenant_id}/suspend"),
    ("post", "/api/v1/admin/tenants/{tenant_id}/resume"),
    ("post", "/api/v1/admin/tenants/{tenant_id}/deprovision"),
    ("post", "/api/v1/admin/tenants/{tenant_id}/keys"),
    ("get", "/api/v1/admin/tenants/{tenant_id}/keys"),
    ("delete", "/api/v1/admin/tenants/{tenant_id}/keys/{key_id}"),
    ("post", "/api/v1/auth/token"),
    ("get", "/api/v1/audit/{tenant_id}/events"),
    ("get", "/api/v1/audit/{tenant_id}/events/{event_id}"),
    ("get", "/api/v1/audit/{tenant_id}/chain/{resource_id}"),
    ("get", "/api/v1/audit/{tenant_id}/verify"),
    ("post", "/api/v1/audit/{tenant_id}/export"),
    ("get", "/api/v1/tenants/{tenant_id}/dlq"),
    ("post", "/api/v1/tenants/{tenant_id}/dlq/{dlq_entry_id}/retry"),
    ("post", "/api/v1/tenants/{tenant_id}/dlq/{dlq_entry_id}/abandon"),
    ("get", "/api/v1/pipelines"),
    ("post", "/api/v1/pipelines/{tenant_id}/run/{domain}/{pipeline}"),
    ("get", "/api/v1/pipelines/{tenant_id}/runs/{run_id}"),
    ("get", "/api/v1/pipelines/{tenant_id}/runs"),
    ("post", "/api/v1/pipelines/{tenant_id}/runs/{run_id}/cancel"),
    ("get", "/api/v1/pipelines/{tenant_id}/runs/{run_id}/deliveries"),
    ("get", "/api/v1/pipelines/{tenant_id}/schedules"),
    ("post", "/api/v1/pipelines/{tenant_id}/schedules"),
    ("put", "/api/v1/pipelines/{tenant_id}/schedules/{schedule_id}"),
    ("delete", "/api/v1/pipelines/{tenant_id}/schedules/{schedule_id}"),
    ("post", "/api/v1/ingest/{tenant_id}/documents"),
    ("get", "/api/v1/ingest/{tenant_id}/receipt/{receipt_id}"),
    ("get", "/api/v1/query/{tenant_id}/document/{doc_id}"),
    ("put", "/api/v1/signals/{tenant_id}/feature-sets/{name}"),
    ("get", "/api/v1/signals/{tenant_id}/feature-sets/{name}"),
    ("post", "/api/v1/signals/{tenant_id}/events"),
    ("get", "/api/v1/signals/{tenant_id}/features/{name}/{entity_id}"),
    ("post", "/api/v1/query/{tenant_id}/search"),
    ("get", "/api/v1/query/{tenant_id}/chunk/{chunk_id}"),
    ("get", "/api/v1/tenants/{tenant_id}/documents"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test]
async fn health_has_no_envelope() {
    let app = spawn_app().await;
    let r = app.health().await;
    r.expect(200);
    assert_eq!(r.body["status"], json!("healthy"));
    assert!(chrono::DateTime::parse_from_rfc3339(r.body["timestamp"].as_str().unwrap()).is_ok());
    assert!(r.body.get("success").is_none());
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn ready_when_every_store_answers() {
    let app = spawn_app().await;
    let r = app.ready().await;
    r.expect(200);
    assert_eq!(r.body["status"], json!("ready"));
    assert_eq!(r.body["checks"], json!({"metadata": "ok", "blobs": "ok"}));
}

/// A blob store whose backend is unreachable.
struct DownBlobs;

#[async_trait]
impl BlobStore for DownBlobs {
    fn scheme(&self) -> &'static str {
        "memory"
    }
    async fn put(&self, _: &TenantId, _: &str, _: Bytes) -> Result<(), BlobError> {
        Err(down())
    }
    async fn get(&self, _: &TenantId, _: &str) -> Result<Bytes, BlobError> {
        Err(down())
    }
    async fn exists(&self, _: &TenantId, _: &str) -> Result<bool, BlobError> {
        Err(down())
    }
    async fn delete(&self, _: &TenantId, _: &str) -> Result<(), BlobError> {
        Err(down())
    }
    async fn list(&self, _: &TenantId, _: &str) -> Result<Vec<String>, BlobError> {
        Err(down())
    }
    async fn delete_all(&self, _: &TenantId) -> Result<u64, BlobError> {
        Err(down())
    }
    async fn usage_bytes(&self, _: &TenantId) -> Result<u64, BlobError> {
        Err(down())
    }
    async fn ping(&self) -> Result<(), BlobError> {
        Err(down())
    }
}

fn down() -> BlobError {
    BlobError::Unavailable("connection refused to secret-host:9000".into())
}

#[tokio::test]
async fn not_ready_lists_what_is_down_and_unavailable_stores_are_503_without_internals() {
    let app = spawn_app_with(TestConfig { blobs: Some(Arc::new(DownBlobs)), ..TestConfig::default() }).await;
    let r = app.ready().await;
    r.expect_error(503, "SERVICE_UNAVAILABLE");
    assert!(r.header("retry-after").is_some());
    let failed: Vec<&str> =
        r.body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(failed, ["blobs"]);

    // A change that happened is reported as such, without the usage the blob store could not give.
    let r = app.create_tenant(&crate::helpers::tenant_body("acme")).await;
    r.expect(201);
    assert_eq!(r.data()["usage"], json!(null));
    // A tenant read needs blob usage: the store being down is a 503 with Retry-After, and says nothing internal.
    let r = app.get_tenant("acme").await;
    r.expect_error(503, "SERVICE_UNAVAILABLE");
    assert!(r.header("retry-after").is_some());
    assert!(!r.text.contains("secret-host"), "{}", r.text);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    app.get_tenant("acme").await.expect(200);
    app.get("/api/v1/nope", None).await;
    let r = app.metrics(None).await;
    r.expect(200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = &r.text;
    assert!(text.contains("frostbyte_http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/api/v1/admin/tenants/{tenant_id}""#), "{text}");
    assert!(!text.contains(r#"route="/api/v1/admin/tenants/acme""#), "never the raw path");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(text.contains("frostbyte_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("frostbyte_uptime_seconds"), "{text}");
    assert!(text.contains(r#"frostbyte_build_info{version=""#), "{text}");
}

#[tokio::test]
async fn private_metrics_need_the_admin_key() {
    let app = spawn_app_with(TestConfig { metrics_public: false, ..TestConfig::default() }).await;
    let t = app.tenant("acme").await;
    app.metrics(None).await.expect_error(401, "AUTHENTICATION_REQUIRED");
    app.metrics(Some(&t.key)).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.metrics(Some(ADMIN_KEY)).await.expect(200);
}

fn operations(spec: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.push((m.to_owned(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_openapi_document_covers_every_implemented_operation() {
    let app = spawn_app().await;
    let r = app.openapi().await;
    r.expect(200);
    let spec = &r.body;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let ops = operations(spec);
    for (m, p) in IMPLEMENTED {
        assert!(ops.contains(&(m.to_string(), p.to_string())), "{m} {p} missing from /openapi.json");
    }
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], json!("bearer"));
    assert!(spec["paths"]["/api/v1/admin/tenants"]["post"]["security"].is_array());
    assert!(spec["paths"]["/health"]["get"].get("security").is_none());
    assert!(spec["components"]["schemas"]["ErrorEnvelope"].is_object());
    // The served document is the one `openapi()` builds.
    assert_eq!(spec, &serde_json::to_value(frostbyte::http::openapi()).unwrap());
}

#[tokio::test]
async fn every_route_in_the_document_is_served() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let spec = app.openapi().await.body;
    for (m, p) in operations(&spec) {
        let path = p
            .replace("{tenant_id}", "acme")
            .replace("{key_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{event_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{dlq_entry_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{receipt_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{doc_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{batch_id}", "no-such-batch")
            .replace("{chunk_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{resource_id}", "acme")
            .replace("{name}", "device")
            .replace("{entity_id}", "dev-1")
            .replace("{domain}", "audit")
            .replace("{pipeline}", "export")
            .replace("{run_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{schedule_id}", &uuid::Uuid::now_v7().to_string());
        assert!(!path.contains('{'), "unhandled parameter in {p}");
        if spec["paths"][&p][&m]["responses"]["200"]["content"].get("text/event-stream").is_some() {
            // An event stream never ends: check that it opens.
            let r = app.client.get(format!("{}{path}", app.base)).bearer_auth(ADMIN_KEY).send().await.unwrap();
            assert_eq!(r.status(), 200, "{m} {p} is in the document but not served");
            continue;
        }
        let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let body = (m != "get" && m != "delete").then(|| json!({}));
        let r = app.send(method, &path, Some(ADMIN_KEY), body.as_ref()).await;
        let unknown_route =
            r.status == 404 && r.body["error"]["message"].as_str().is_some_and(|msg| msg.starts_with("no endpoint"));
        assert!(!unknown_route && r.status != 405, "{m} {p} is in the document but not served: {}", r.text);
    }
    drop(t);
}

#[tokio::test]
async fn docs_page_lists_every_operation_without_scripts() {
    let app = spawn_app().await;
    let r = app.docs().await;
    r.expect(200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let spec = app.openapi().await.body;
    for (m, p) in operations(&spec) {
        let escaped = p.replace('&', "&amp;");
        assert!(r.text.contains(&format!("<code>{escaped}</code>")), "{p} not on /docs");
        let summary = spec["paths"][&p][&m]["summary"].as_str().unwrap_or_default();
        assert!(!summary.is_empty(), "{m} {p} has no summary");
    }
    assert!(r.text.contains("tenant_id"), "parameters are listed");
    assert!(!r.text.contains("<script"), "no scripts: the page works offline");
    assert!(!r.text.contains("https://"), "no external assets");
}
