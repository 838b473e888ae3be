//! Keys, tokens, scopes, expiry, revocation, tenant isolation, suspension and rate limits.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::auth::{ApiKeyRecord, Scope, generate_api_key};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, JWT_SECRET, spawn_app};

#[tokio::test]
async fn keys_are_shown_once_and_listed_without_secrets() {
    let app = spawn_app().await;
    app.create_tenant(&crate::helpers::tenant_body("acme")).await.expect(201);
    let r = app.create_key("acme", &json!({"name": "bot", "scopes": ["query", "ingest", "query"]})).await;
    r.expect(201);
    let d = r.data();
    let api_key = d["api_key"].as_str().unwrap();
    assert!(api_key.starts_with("fbk_"));
    assert!(api_key.starts_with(d["prefix"].as_str().unwrap()));
    assert_eq!(d["scopes"], json!(["ingest", "query"]));
    for field in ["key_id", "name", "created_at", "expires_at"] {
        assert!(d.get(field).is_some(), "{field}");
    }

    let r = app.list_keys("acme").await;
    r.expect(200);
    assert!(!r.text.contains(api_key), "the secret is never listed");
    let k = &r.data()[0];
    assert!(k.get("api_key").is_none() && k.get("key_hash").is_none(), "{}", r.text);
    assert_eq!(k["status"], json!("active"));

    let r = app.create_key("acme", &json!({"name": "", "scopes": ["root"]})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"].as_array().unwrap().len(), 2, "{}", r.text);
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let r = app.create_key("acme", &json!({"name": "late", "scopes": ["query"], "expires_at": past})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    app.create_key("nobody", &json!({"name": "x", "scopes": ["query"]})).await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn a_missing_scope_is_403_and_admin_endpoints_refuse_tenant_credentials() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let (query_only, _) = app.key("acme", &["query"]).await;
    app.audit_verify(&query_only, "acme").await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.audit_verify(&t.key, "acme").await.expect(200);

    // Even a key with the `admin` scope is not the platform admin.
    for (method, path) in [
        (Method::GET, "/api/v1/admin/tenants"),
        (Method::GET, "/api/v1/admin/tenants/acme"),
        (Method::GET, "/api/v1/admin/tenants/acme/keys"),
    ] {
        app.send(method, path, Some(&t.key), None).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    }
    let body = crate::helpers::tenant_body("sneaky");
    app.send(Method::POST, "/api/v1/admin/tenants", Some(&t.key), Some(&body))
        .await
        .expect_error(403, "INSUFFICIENT_PERMISSIONS");
}

#[tokio::test]
async fn expired_keys_and_tokens_are_401_token_expired() {
    let app = spawn_app().await;
    app.create_tenant(&crate::helpers::tenant_body("acme")).await.expect(201);
    let tenant = TenantId::parse("acme").unwrap();
    let generated = generate_api_key();
    let now = frostbyte_core::now();
    let record = ApiKeyRecord {
        key_id: uuid::Uuid::now_v7(),
        tenant_id: tenant.clone(),
        name: "expired".into(),
        prefix: generated.prefix.clone(),
        key_hash: generated.hash.clone(),
        scopes: vec![Scope::Audit],
        created_at: now - chrono::Duration::hours(2),
        expires_at: Some(now - chrono::Duration::seconds(1)),
        revoked_at: None,
    };
    let audit = NewAuditEvent::new(
        "API_KEY_CREATED",
        "test",
        "api_key",
        record.key_id.to_string(),
        json!({"component": "test", "status": "ok"}),
    );
    app.store.create_api_key(&tenant, &record, audit).await.unwrap();

    app.audit_verify(&generated.plaintext, "acme").await.expect_error(401, "TOKEN_EXPIRED");
    app.token(&generated.plaintext).await.expect_error(401, "TOKEN_EXPIRED");
    let r = app.list_keys("acme").await;
    assert_eq!(r.data()[0]["status"], json!("expired"));

    // A JWT past its exp, correctly signed for a live key.
    let (_, key_id) = app.key("acme", &["audit"]).await;
    let claims = json!({
        "sub": key_id, "tenant": "acme", "scopes": ["audit"],
        "iat": now.timestamp() - 120, "exp": now.timestamp() - 60, "jti": "x"
    });
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    app.audit_verify(&jwt, "acme").await.expect_error(401, "TOKEN_EXPIRED");
}

#[tokio::test]
async fn tokens_work_until_tampered_and_never_outlive_their_key() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let r = app.token(&t.key).await;
    r.expect(200);
    assert_eq!(r.data()["token_type"], json!("bearer"));
    let expires_in = r.data()["expires_in"].as_u64().unwrap();
    assert!(expires_in > 0 && expires_in <= 900, "{expires_in}");
    let jwt = r.data()["access_token"].as_str().unwrap().to_owned();
    app.audit_verify(&jwt, "acme").await.expect(200);

    // Same signature, different payload (a wider tenant claim).
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["tenant"] = json!("other");
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    app.audit_verify(&forged, "other").await.expect_error(401, "AUTHENTICATION_REQUIRED");
    // Signed with the wrong secret.
    let wrong = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not the secret"),
    )
    .unwrap();
    app.audit_verify(&wrong, "acme").await.expect_error(401, "AUTHENTICATION_REQUIRED");

    app.token("fbk_not-a-real-key").await.expect_error(401, "AUTHENTICATION_REQUIRED");
    app.token(&format!("fbk_{}", "A".repeat(43))).await.expect_error(401, "AUTHENTICATION_REQUIRED");
    app.send(Method::POST, "/api/v1/auth/token", None, Some(&json!({"key": "x"})))
        .await
        .expect_error(400, "VALIDATION_ERROR");

    let soon = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let r = app.create_key("acme", &json!({"name": "short", "scopes": ["audit"], "expires_at": soon})).await;
    let short = r.data()["api_key"].as_str().unwrap().to_owned();
    let r = app.token(&short).await;
    r.expect(200);
    assert!(r.data()["expires_in"].as_u64().unwrap() <= 60, "{}", r.text);
}

#[tokio::test]
async fn revocation_is_immediate_for_the_key_and_its_tokens() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let jwt = app.token(&t.key).await.data()["access_token"].as_str().unwrap().to_owned();
    app.audit_verify(&t.key, "acme").await.expect(200);
    app.audit_verify(&jwt, "acme").await.expect(200);

    let r = app.revoke_key("acme", &t.key_id).await;
    r.expect(200);
    assert_eq!(r.data()["status"], json!("revoked"));
    assert!(r.data()["revoked_at"].is_string());

    app.audit_verify(&t.key, "acme").await.expect_error(401, "TOKEN_REVOKED");
    app.audit_verify(&jwt, "acme").await.expect_error(401, "TOKEN_REVOKED");
    app.token(&t.key).await.expect_error(401, "TOKEN_REVOKED");
    app.revoke_key("acme", &t.key_id).await.expect(200);
    app.revoke_key("acme", &uuid::Uuid::now_v7().to_string()).await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn another_tenants_paths_are_404_for_every_route_family() {
    let app = spawn_app().await;
    let a = app.tenant("alpha").await;
    app.tenant("bravo").await;
    let b_event = app.audit_events(ADMIN_KEY, "bravo", "").await.data()[0]["event_id"].as_str().unwrap().to_owned();
    let a_jwt = app.token(&a.key).await.data()["access_token"].as_str().unwrap().to_owned();
    let export = json!({"start_date": "2000-01-01", "end_date": "2100-01-01"});
    for victim in ["bravo", "ghost"] {
        for cred in [a.key.as_str(), a_jwt.as_str()] {
            app.audit_events(cred, victim, "").await.expect_error(404, "RESOURCE_NOT_FOUND");
            app.audit_event(cred, victim, &b_event).await.expect_error(404, "RESOURCE_NOT_FOUND");
            app.audit_chain(cred, victim, victim).await.expect_error(404, "RESOURCE_NOT_FOUND");
            app.audit_verify(cred, victim).await.expect_error(404, "RESOURCE_NOT_FOUND");
            app.audit_export(cred, victim, &export).await.expect_error(404, "RESOURCE_NOT_FOUND");
        }
    }
    // Through its own path, another tenant's event id is just as unknown.
    app.audit_event(&a.key, "alpha", &b_event).await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.audit_event(ADMIN_KEY, "alpha", &b_event).await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn suspension_cuts_a_tenant_off_on_the_next_request_and_resume_restores_it() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let jwt = app.token(&t.key).await.data()["access_token"].as_str().unwrap().to_owned();
    app.audit_verify(&t.key, "acme").await.expect(200);

    app.suspend("acme").await.expect(200);
    app.audit_verify(&t.key, "acme").await.expect_error(403, "TENANT_SUSPENDED");
    app.audit_verify(&jwt, "acme").await.expect_error(403, "TENANT_SUSPENDED");
    app.token(&t.key).await.expect_error(403, "TENANT_SUSPENDED");
    app.audit_verify(ADMIN_KEY, "acme").await.expect(200);

    app.resume("acme").await.expect(200);
    app.audit_verify(&t.key, "acme").await.expect(200);
    app.audit_verify(&jwt, "acme").await.expect(200);
}

#[tokio::test]
async fn tenant_rate_limits_answer_429_with_retry_after_and_spare_the_admin() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.audit_verify(&t.key, "acme").await.expect(200);
    let r = app.patch_tenant("acme", &json!({"config": {"quotas": {"requests_per_second": 1, "burst": 2}}})).await;
    r.expect(200);

    app.audit_verify(&t.key, "acme").await.expect(200);
    app.audit_verify(&t.key, "acme").await.expect(200);
    let r = app.audit_verify(&t.key, "acme").await;
    r.expect_error(429, "RATE_LIMIT_EXCEEDED");
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "{retry}");

    for _ in 0..10 {
        app.audit_verify(ADMIN_KEY, "acme").await.expect(200);
    }
    // Raising the quota takes effect on the next request.
    app.patch_tenant("acme", &json!({"config": {"quotas": {"requests_per_second": 1000, "burst": 1000}}}))
        .await
        .expect(200);
    app.audit_verify(&t.key, "acme").await.expect(200);
}
