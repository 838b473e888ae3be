//! Tenant administration: create, list, get, patch, the lifecycle and deprovisioning.

use axum::body::Bytes;
use frostbyte_core::TenantId;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, spawn_app, tenant_body};

#[tokio::test]
async fn create_provisions_to_active_and_duplicates_conflict() {
    let app = spawn_app().await;
    let r = app.create_tenant(&tenant_body("acme")).await;
    r.expect(201);
    let t = r.data();
    assert_eq!(t["tenant_id"], json!("acme"));
    assert_eq!(t["state"], json!("ACTIVE"));
    assert_eq!(t["config_version"], json!(1));
    assert_eq!(t["config"]["pii_policy"], json!("redact"));
    assert_eq!(t["usage"], json!({"documents_count": 0, "chunks_count": 0, "storage_bytes": 0}));

    app.create_tenant(&tenant_body("acme")).await.expect_error(409, "TENANT_ALREADY_EXISTS");
}

#[tokio::test]
async fn create_reports_every_problem_at_once() {
    let app = spawn_app().await;
    let body = json!({
        "tenant_id": "Bad_Id",
        "tenant_name": "",
        "contact_email": "nope",
        "tier": "platinum",
        "config": {"classification_threshold": "high"}
    });
    let r = app.create_tenant(&body).await;
    r.expect_error(400, "VALIDATION_ERROR");
    let fields: Vec<&str> =
        r.body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    for f in ["tenant_id", "tenant_name", "contact_email", "tier", "config.classification_threshold"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    // Missing fields are problems too, reported together.
    let r = app.create_tenant(&json!({})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["details"].as_array().unwrap().len() >= 3, "{}", r.text);
}

#[tokio::test]
async fn list_pages_filters_by_state_and_caps_limit() {
    let app = spawn_app().await;
    for id in ["alpha", "bravo", "charlie"] {
        app.create_tenant(&tenant_body(id)).await.expect(201);
    }
    app.suspend("bravo").await.expect(200);

    let r = app.list_tenants("?limit=2").await;
    r.expect(200);
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    assert_eq!(r.body["meta"], json!({"total": 3, "page": 1, "limit": 2, "pages": 2}));
    assert!(r.data()[0]["usage"]["storage_bytes"].is_u64());

    let r = app.list_tenants("?limit=2&page=2").await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);

    let r = app.list_tenants("?state=SUSPENDED").await;
    let ids: Vec<&str> = r.data().as_array().unwrap().iter().map(|t| t["tenant_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bravo"]);
    assert_eq!(r.body["meta"]["limit"], json!(20), "default limit");

    app.list_tenants("?state=SLEEPING").await.expect_error(400, "VALIDATION_ERROR");
    app.list_tenants("?page=0").await.expect_error(400, "VALIDATION_ERROR");
    app.list_tenants("?limit=100").await.expect(200);
}

#[tokio::test]
async fn get_shows_config_state_and_storage_usage() {
    let app = spawn_app().await;
    app.create_tenant(&tenant_body("acme")).await.expect(201);
    let tenant = TenantId::parse("acme").unwrap();
    app.blobs.put(&tenant, "raw/abc", Bytes::from_static(b"hello world")).await.unwrap();

    let r = app.get_tenant("acme").await;
    r.expect(200);
    assert_eq!(r.data()["usage"]["storage_bytes"], json!(11));
    assert_eq!(r.data()["config"]["quotas"]["burst"], json!(100));
    assert_eq!(r.data()["state"], json!("ACTIVE"));

    app.get_tenant("nobody").await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn patch_merges_lists_changes_and_bumps_the_version() {
    let app = spawn_app().await;
    app.create_tenant(&tenant_body("acme")).await.expect(201);

    let r = app.patch_tenant("acme", &json!({"config": {"pii_policy": "block", "quotas": {"burst": 7}}})).await;
    r.expect(200);
    assert_eq!(r.data()["config_version"], json!(2));
    assert_eq!(r.data()["tenant"]["config_version"], json!(2));
    assert_eq!(r.data()["tenant"]["config"]["quotas"]["burst"], json!(7));
    assert_eq!(r.data()["tenant"]["config"]["quotas"]["runs_per_day"], json!(1000), "siblings kept");
    assert_eq!(
        r.data()["changes"],
        json!([
            {"field": "pii_policy", "old_value": "redact", "new_value": "block"},
            {"field": "quotas.burst", "old_value": 100, "new_value": 7},
        ])
    );

    // The same values again change nothing and keep the version.
    let r = app.patch_tenant("acme", &json!({"config": {"pii_policy": "block"}})).await;
    r.expect(200);
    assert_eq!(r.data()["config_version"], json!(2));
    assert_eq!(r.data()["changes"], json!([]));

    // Several problems at once, every one listed.
    let r = app
        .patch_tenant(
            "acme",
            &json!({"config": {"classification_threshold": 1.5, "retention_days": 0, "retrieval_top_k_default": 80}}),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    let fields: Vec<&str> =
        r.body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["config.classification_threshold", "config.retrieval_top_k_default", "config.retention_days"]);

    let r = app.patch_tenant("acme", &json!({"config": {"no_such_field": 1, "max_file_size_mb": "big"}})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"].as_array().unwrap().len(), 2, "{}", r.text);

    app.patch_tenant("acme", &json!({"pii_policy": "flag"})).await.expect_error(400, "VALIDATION_ERROR");
    app.patch_tenant("nobody", &json!({"config": {}})).await.expect_error(404, "RESOURCE_NOT_FOUND");
    assert_eq!(app.get_tenant("acme").await.data()["config_version"], json!(2));
}

#[tokio::test]
async fn suspend_resume_and_illegal_transitions() {
    let app = spawn_app().await;
    app.create_tenant(&tenant_body("acme")).await.expect(201);

    app.resume("acme").await.expect_error(409, "INVALID_STATE_TRANSITION");
    let r = app.suspend("acme").await;
    r.expect(200);
    assert_eq!(r.data()["state"], json!("SUSPENDED"));
    assert_eq!(r.data()["state_reason"], json!("test"));
    app.suspend("acme").await.expect_error(409, "INVALID_STATE_TRANSITION");
    let r = app.resume("acme").await;
    r.expect(200);
    assert_eq!(r.data()["state"], json!("ACTIVE"));
    app.suspend("nobody").await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn deprovision_needs_confirmation_then_erases_and_kills_credentials() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tenant = TenantId::parse("acme").unwrap();
    app.blobs.put(&tenant, "raw/abc", Bytes::from_static(b"data")).await.unwrap();
    app.audit_verify(&t.key, "acme").await.expect(200);

    let wrong = json!({"reason": "bye", "confirm": true, "confirm_tenant_id": "other"});
    app.deprovision("acme", &wrong).await.expect_error(400, "CONFIRMATION_MISMATCH");
    let unconfirmed = json!({"reason": "bye", "confirm": false, "confirm_tenant_id": "acme"});
    app.deprovision("acme", &unconfirmed).await.expect_error(400, "CONFIRMATION_MISMATCH");

    let r = app.deprovision("acme", &json!({"reason": "bye", "confirm": true, "confirm_tenant_id": "acme"})).await;
    r.expect(202);
    assert!(["DEPROVISIONING", "DEPROVISIONED"].contains(&r.data()["state"].as_str().unwrap()), "{}", r.text);

    let r = app.wait_for_state("acme", "DEPROVISIONED").await;
    assert_eq!(r.data()["usage"]["storage_bytes"], json!(0));
    assert!(app.blobs.list(&tenant, "").await.unwrap().is_empty(), "blobs erased");

    app.audit_verify(&t.key, "acme").await.expect_error(401, "TOKEN_REVOKED");
    app.token(&t.key).await.expect_error(401, "TOKEN_REVOKED");
    // The tombstone keeps the id, and the audit chain survives for the admin.
    app.create_tenant(&tenant_body("acme")).await.expect_error(409, "TENANT_ALREADY_EXISTS");
    let r = app.audit_events(ADMIN_KEY, "acme", "?event_type=TENANT_DEPROVISIONED").await;
    r.expect(200);
    assert_eq!(r.body["meta"]["total"], json!(1));
    let r = app.audit_verify(ADMIN_KEY, "acme").await;
    assert_eq!(r.data()["valid"], json!(true), "{}", r.text);
    // A deprovisioned tenant cannot be deprovisioned, resumed or reconfigured again.
    app.deprovision("acme", &json!({"confirm": true, "confirm_tenant_id": "acme"}))
        .await
        .expect_error(409, "INVALID_STATE_TRANSITION");
    app.patch_tenant("acme", &json!({"config": {"retention_days": 10}})).await.expect_error(409, "CONFLICT");
}
