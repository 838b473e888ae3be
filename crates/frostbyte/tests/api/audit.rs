//! The audit plane: listing, reading, per-resource chains, verification, export, and tamper detection.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{ADMIN_KEY, spawn_app};

fn types(r: &Value) -> Vec<String> {
    r.as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn events_are_listed_newest_first_filtered_and_paged() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;

    let r = app.audit_events(&t.key, "acme", "").await;
    r.expect(200);
    assert_eq!(types(r.data()), ["API_KEY_CREATED", "TENANT_ACTIVATED", "TENANT_PROVISIONING", "TENANT_CREATED"]);
    assert_eq!(r.body["meta"], json!({"total": 4, "page": 1, "limit": 50, "pages": 1}));
    let e = &r.data()[0];
    for field in [
        "event_id",
        "tenant_id",
        "event_type",
        "timestamp",
        "actor",
        "resource_type",
        "resource_id",
        "details",
        "prev_hash",
        "hash",
    ] {
        assert!(e.get(field).is_some(), "{field}: {e}");
    }
    assert_eq!(e["actor"], json!("admin"));

    let r = app.audit_events(&t.key, "acme", "?event_type=TENANT_CREATED").await;
    assert_eq!(types(r.data()), ["TENANT_CREATED"]);
    let r = app.audit_events(&t.key, "acme", "?resource_id=acme&limit=2&page=2").await;
    assert_eq!(r.body["meta"], json!({"total": 3, "page": 2, "limit": 2, "pages": 2}));
    assert_eq!(types(r.data()), ["TENANT_CREATED"]);

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    let r = app.audit_events(&t.key, "acme", &format!("?start_date={today}&end_date={today}")).await;
    assert_eq!(r.body["meta"]["total"], json!(4), "a bare end date covers the whole day: {}", r.text);
    let r = app.audit_events(&t.key, "acme", &format!("?start_date={tomorrow}")).await;
    assert_eq!(r.body["meta"]["total"], json!(0));
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = app.audit_events(&t.key, "acme", &format!("?start_date={since}")).await;
    assert_eq!(r.body["meta"]["total"], json!(4), "{}", r.text);

    app.audit_events(&t.key, "acme", "?start_date=last-week").await.expect_error(400, "VALIDATION_ERROR");
    app.audit_events(&t.key, "acme", &format!("?start_date={tomorrow}&end_date={today}"))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    app.audit_events(&t.key, "acme", "?limit=501").await.expect_error(400, "VALIDATION_ERROR");
    app.audit_events(&t.key, "acme", "?limit=500").await.expect(200);
}

#[tokio::test]
async fn one_event_with_its_hashes() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let list = app.audit_events(&t.key, "acme", "").await;
    let newest = &list.data()[0];
    let r = app.audit_event(&t.key, "acme", newest["event_id"].as_str().unwrap()).await;
    r.expect(200);
    assert_eq!(r.data(), newest);
    assert_eq!(r.data()["prev_hash"], list.data()[1]["hash"], "events link to their predecessor");
    assert_eq!(r.data()["hash"].as_str().unwrap().len(), 64);
    app.audit_event(&t.key, "acme", &uuid::Uuid::now_v7().to_string()).await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn a_resources_chain_in_order() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.suspend("acme").await.expect(200);
    app.resume("acme").await.expect(200);
    let r = app.audit_chain(&t.key, "acme", "acme").await;
    r.expect(200);
    assert_eq!(r.data()["resource_id"], json!("acme"));
    assert_eq!(
        types(&r.data()["events"]),
        ["TENANT_CREATED", "TENANT_PROVISIONING", "TENANT_ACTIVATED", "TENANT_SUSPENDED", "TENANT_RESUMED"]
    );
    assert_eq!(r.data()["hash_chain_valid"], json!(true));
    assert_eq!(r.data()["breaks"], json!([]));

    let r = app.audit_chain(&t.key, "acme", &t.key_id).await;
    assert_eq!(types(&r.data()["events"]), ["API_KEY_CREATED"]);
    app.audit_chain(&t.key, "acme", "nothing-here").await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn verify_walks_the_whole_chain() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    for _ in 0..3 {
        app.key("acme", &["query"]).await;
    }
    let r = app.audit_verify(&t.key, "acme").await;
    r.expect(200);
    assert_eq!(r.data()["valid"], json!(true));
    assert_eq!(r.data()["events_checked"], json!(7));
    assert!(r.data().get("first_break").is_none(), "{}", r.text);
    app.audit_verify(ADMIN_KEY, "ghost").await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn export_returns_jsonl_whose_hash_is_in_the_manifest_and_is_itself_audited() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let r = app.audit_export(&t.key, "acme", &json!({"start_date": today, "end_date": today})).await;
    r.expect(200);
    let manifest = &r.data()["manifest"];
    let jsonl = r.data()["jsonl"].as_str().unwrap();
    assert_eq!(manifest["tenant_id"], json!("acme"));
    assert_eq!(manifest["event_count"], json!(4));
    assert_eq!(manifest["file_sha256"], json!(hex::encode(Sha256::digest(jsonl.as_bytes()))));
    assert!(
        manifest["generated_at"].is_string() && manifest["start_date"].is_string() && manifest["end_date"].is_string()
    );
    let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["event_type"], json!("TENANT_CREATED"), "oldest first");
    assert!(jsonl.ends_with('\n'));

    let r = app.audit_events(&t.key, "acme", "?event_type=AUDIT_EXPORTED").await;
    assert_eq!(r.body["meta"]["total"], json!(1));
    assert_eq!(r.data()[0]["details"]["output_hash"], manifest["file_sha256"]);

    let r = app
        .audit_export(
            &t.key,
            "acme",
            &json!({"start_date": today, "end_date": today, "event_types": ["API_KEY_CREATED"]}),
        )
        .await;
    assert_eq!(r.data()["manifest"]["event_count"], json!(1));

    let r = app.audit_export(&t.key, "acme", &json!({"start_date": "soon", "end_date": "later"})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"].as_array().unwrap().len(), 2);
    app.audit_export(&t.key, "acme", &json!({"start_date": today})).await.expect_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn an_altered_row_is_found_by_verify_at_its_sequence_number() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.suspend("acme").await.expect(200);
    app.resume("acme").await.expect(200);

    // Tamper behind the store's back: drop the append-only trigger and rewrite one row's details.
    let tamper = frostbyte_adapters::SqliteStore::open(&app.db_path, 1).await.unwrap();
    sqlx::query("DROP TRIGGER audit_events_no_update").execute(tamper.pool()).await.unwrap();
    let changed = sqlx::query("UPDATE audit_events SET details = ? WHERE tenant_id = 'acme' AND seq = 3")
        .bind(r#"{"component":"tenants","status":"ACTIVE","from":"SUSPENDED"}"#)
        .execute(tamper.pool())
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    tamper.pool().close().await;

    let r = app.audit_verify(&t.key, "acme").await;
    r.expect(200);
    assert_eq!(r.data()["valid"], json!(false));
    assert_eq!(r.data()["events_checked"], json!(6));
    assert_eq!(r.data()["first_break"]["seq"], json!(3), "{}", r.text);
    assert_eq!(r.data()["first_break"]["kind"], json!("hash_mismatch"));

    let r = app.audit_chain(&t.key, "acme", "acme").await;
    assert_eq!(r.data()["hash_chain_valid"], json!(false));
    assert_eq!(r.data()["breaks"][0]["seq"], json!(3));
    // The key's own events are intact, but they sit in a broken chain.
    let r = app.audit_chain(&t.key, "acme", &t.key_id).await;
    assert_eq!(r.data()["tenant_chain_valid"], json!(false));
}
