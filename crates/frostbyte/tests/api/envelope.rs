//! The envelope, request ids and how rejected requests are answered.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, MAX_BODY, spawn_app, tenant_body};

#[tokio::test]
async fn success_is_enveloped_with_a_request_id() {
    let app = spawn_app().await;
    let r = app.list_tenants("").await;
    r.expect(200);
    assert_eq!(r.body["success"], json!(true));
    assert!(r.data().is_array());
    for field in ["total", "page", "limit", "pages"] {
        assert!(r.body["meta"][field].is_u64(), "meta.{field}: {}", r.text);
    }
    let id = r.header("x-request-id").expect("x-request-id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "generated ids are UUIDs: {id}");
}

#[tokio::test]
async fn a_sane_client_request_id_is_echoed_and_an_insane_one_replaced() {
    let app = spawn_app().await;
    let send = |id: String| app.client.get(format!("{}/api/v1/nope", app.base)).header("x-request-id", id).send();
    let r = send("client-id-42".into()).await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-id-42");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], json!("client-id-42"));

    for insane in ["a".repeat(129), "has space".to_owned()] {
        let r = send(insane.clone()).await.unwrap();
        let echoed = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed, insane);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["request_id"], json!(echoed));
    }
}

#[tokio::test]
async fn missing_credentials_are_401_with_www_authenticate() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/admin/tenants", None).await;
    r.expect_error(401, "AUTHENTICATION_REQUIRED");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    for garbled in ["Basic abc", "Bearer", "Bearer not-a-credential", "Bearer a.b.c"] {
        let r = app
            .client
            .get(format!("{}/api/v1/admin/tenants", app.base))
            .header("authorization", garbled)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{garbled}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], json!("AUTHENTICATION_REQUIRED"), "{garbled}");
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_enveloped() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/does-not-exist", Some(ADMIN_KEY)).await;
    r.expect_error(404, "RESOURCE_NOT_FOUND");
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("no endpoint"));

    let r = app.send(Method::DELETE, "/health", None, None).await;
    r.expect_error(405, "METHOD_NOT_ALLOWED");
    let r = app.send(Method::PUT, "/api/v1/admin/tenants", Some(ADMIN_KEY), Some(&json!({}))).await;
    r.expect_error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn malformed_json_wrong_types_and_unknown_fields_are_400_saying_what_to_fix() {
    let app = spawn_app().await;
    let path = "/api/v1/admin/tenants";
    let r = app.send_raw(Method::POST, path, Some(ADMIN_KEY), Some("application/json"), b"{not json".to_vec()).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{}", r.text);

    let mut body = tenant_body("acme");
    body["surprise"] = json!(1);
    let r = app.create_tenant(&body).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("surprise"), "{}", r.text);

    let mut body = tenant_body("acme");
    body["tenant_name"] = json!(42);
    let r = app.create_tenant(&body).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("tenant_name"), "{}", r.text);

    let r = app
        .send_raw(Method::POST, path, Some(ADMIN_KEY), None, serde_json::to_vec(&tenant_body("acme")).unwrap())
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("Content-Type"), "{}", r.text);

    let r = app.list_tenants("?limit=abc").await;
    r.expect_error(400, "VALIDATION_ERROR");
    let r = app.list_tenants("?limit=101").await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["field"], json!("limit"));
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app().await;
    let mut body = tenant_body("acme");
    body["tenant_name"] = json!("x".repeat(MAX_BODY * 2));
    let r = app.create_tenant(&body).await;
    r.expect_error(413, "PAYLOAD_TOO_LARGE");
    // A body just under the limit is read (and then judged on its content).
    body["tenant_name"] = json!("x".repeat(MAX_BODY - 200));
    app.create_tenant(&body).await.expect_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn path_parameters_that_cannot_name_anything_are_404() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    for path in [
        "/api/v1/admin/tenants/Not_A_Tenant",
        "/api/v1/admin/tenants/ab",
        "/api/v1/admin/tenants/acme/keys/not-a-uuid",
        "/api/v1/audit/BAD/verify",
        "/api/v1/audit/acme/events/not-a-uuid",
    ] {
        let method = if path.contains("/keys/") { Method::DELETE } else { Method::GET };
        app.send(method.clone(), path, Some(ADMIN_KEY), None).await.expect_error(404, "RESOURCE_NOT_FOUND");
        app.send(method, path, Some(&t.key), None).await.expect_status_in(&[403, 404]);
    }
}

trait StatusIn {
    fn expect_status_in(&self, statuses: &[u16]);
}

impl StatusIn for crate::helpers::Resp {
    #[track_caller]
    fn expect_status_in(&self, statuses: &[u16]) {
        assert!(statuses.contains(&self.status.as_u16()), "status {}: {}", self.status, self.text);
    }
}
