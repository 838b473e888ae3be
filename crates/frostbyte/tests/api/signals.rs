//! Signals through the HTTP API: feature sets (versioned, validated, audited), event ingest (JSON array and
//! NDJSON, duplicates, bad events by index, late policies, limits) and the online features.

use serde_json::{Value, json};

use crate::helpers::*;

const T0: i64 = 1_770_000_000; // 2026-02-02T02:40:00Z, a whole minute

fn at(secs: i64) -> String {
    chrono::DateTime::from_timestamp(T0 + secs, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ev(entity: &str, secs: i64, payload: Value) -> Value {
    json!({"entity_id": entity, "event_time": at(secs), "payload": payload, "source": "sensor"})
}

fn fs(policy: &str) -> Value {
    json!({
        "allowed_lateness": "10s",
        "late_policy": policy,
        "windows": [
            {"name": "m1", "type": "tumbling", "size": "1m",
             "aggregates": [{"name": "n", "op": "count"}, {"name": "t_mean", "op": "mean", "field": "/t"}]},
            {"name": "t_ewma", "type": "ewma", "field": "/t", "half_life": "5m", "every": "1m"}
        ]
    })
}

#[tokio::test]
async fn feature_sets_are_versioned_validated_and_audited() {
    let app = spawn_app().await;
    let t = app.tenant("sig-defs").await;
    let r = app.put_feature_set(&t.key, "sig-defs", "device", &fs("drop")).await;
    r.expect(201);
    assert_eq!((r.data()["version"].clone(), r.data()["created"].clone()), (json!(1), json!(true)));
    let r = app.put_feature_set(&t.key, "sig-defs", "device", &fs("drop")).await;
    r.expect(200);
    assert_eq!((r.data()["version"].clone(), r.data()["created"].clone()), (json!(1), json!(false)));
    let yaml = "allowed_lateness: 30s\nlate_policy: hold\nwindows:\n  - {name: m5, type: tumbling, size: 5m, aggregates: [{name: n, op: count}]}\n";
    let r = app.put_feature_set_yaml(&t.key, "sig-defs", "device", yaml).await;
    r.expect(201);
    assert_eq!(r.data()["version"], json!(2));
    let latest = app.get_feature_set(&t.key, "sig-defs", "device", "").await;
    latest.expect(200);
    assert_eq!(latest.data()["definition"]["late_policy"], json!("hold"));
    let v1 = app.get_feature_set(&t.key, "sig-defs", "device", "?version=1").await;
    assert_eq!(v1.data()["definition"]["windows"][0]["name"], json!("m1"));
    app.get_feature_set(&t.key, "sig-defs", "nope", "").await.expect_error(404, "RESOURCE_NOT_FOUND");

    let bad = json!({"allowed_lateness": "1m", "windows": [
        {"name": "a", "type": "tumbling", "aggregates": [{"name": "x", "op": "mean"}]},
        {"name": "a", "type": "ewma", "field": "temp"}
    ]});
    let r = app.put_feature_set(&t.key, "sig-defs", "broken", &bad).await;
    r.expect_error(400, "VALIDATION_ERROR");
    let fields: Vec<&str> =
        r.body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    for want in
        ["windows[0].size", "windows[0].aggregates[0].field", "windows[1].name", "windows[1].field", "windows[1].every"]
    {
        assert!(fields.contains(&want), "{want} missing from {fields:?}");
    }
    app.put_feature_set(&t.key, "sig-defs", "Bad Name", &fs("drop")).await.expect_error(400, "VALIDATION_ERROR");

    let created = app.audit_events(&t.key, "sig-defs", "?event_type=FEATURE_SET_CREATED").await;
    assert_eq!(created.data().as_array().unwrap().len(), 1);
    let updated = app.audit_events(&t.key, "sig-defs", "?event_type=FEATURE_SET_UPDATED").await;
    let updated = &updated.data()[0];
    assert_eq!(updated["details"]["version"], json!(2));
    assert_eq!(updated["resource_id"], json!("device"));
    app.audit_verify(&t.key, "sig-defs").await.expect(200);
}

#[tokio::test]
async fn events_become_features_and_replays_change_nothing() {
    let app = spawn_app().await;
    let t = app.tenant("sig-flow").await;
    app.put_feature_set(&t.key, "sig-flow", "device", &fs("drop")).await.expect(201);
    let batch = json!([
        ev("dev-1", 5, json!({"t": 20.0})),
        ev("dev-1", 50, json!({"t": 22.0})),
        ev("dev-1", 45, json!({"t": 30.0})), // out of order, within the 10 s lateness
        ev("dev-1", 42, json!({"humidity": 3})), // no /t: counted, not averaged
        ev("dev-1", 75, json!({"t": 10.0})),
        ev("dev-2", 1, json!({"t": 1.0})),
    ]);
    let r = app.post_events(&t.key, "sig-flow", &batch).await;
    r.expect(200);
    assert_eq!(r.data()["accepted"], json!(6), "{}", r.text);
    assert_eq!(r.data()["duplicates"], json!(0));
    assert_eq!(r.data()["late_dropped"], json!(0));
    assert_eq!(r.data()["rows_emitted"], json!(1));

    let f = app.get_features(&t.key, "sig-flow", "device", "dev-1").await;
    f.expect(200);
    assert_eq!(f.data()["watermark"], json!(at(65)));
    assert_eq!(f.data()["version"], json!(1));
    let m1 = &f.data()["windows"][0];
    assert_eq!(m1["window"], json!("m1"));
    assert_eq!(m1["window_end"], json!(at(60)));
    assert_eq!(m1["values"], json!({"n": 4, "t_mean": 24.0}));
    assert_eq!(f.data()["windows"][1]["window"], json!("t_ewma"));

    // The same events again, as NDJSON: all duplicates, nothing changes.
    let ndjson: Vec<u8> = batch.as_array().unwrap().iter().flat_map(|e| format!("{e}\n").into_bytes()).collect();
    let r = app.post_ndjson(&t.key, "sig-flow", ndjson).await;
    r.expect(200);
    assert_eq!((r.data()["accepted"].clone(), r.data()["duplicates"].clone()), (json!(0), json!(6)), "{}", r.text);
    let again = app.get_features(&t.key, "sig-flow", "device", "dev-1").await;
    assert_eq!(again.data(), f.data());

    // The next minute closes when the watermark passes it.
    let r = app.post_events(&t.key, "sig-flow", &json!([ev("dev-1", 200, json!({"t": 0.0}))])).await;
    assert_eq!(r.data()["rows_emitted"], json!(1));
    let f = app.get_features(&t.key, "sig-flow", "device", "dev-1").await;
    assert_eq!(f.data()["windows"][0]["window_end"], json!(at(120)));
    assert_eq!(f.data()["windows"][0]["values"], json!({"n": 1, "t_mean": 10.0}));
    assert_eq!(f.data()["watermark"], json!(at(190)));
    app.get_features(&t.key, "sig-flow", "device", "ghost").await.expect_error(404, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn bad_events_are_reported_by_index_and_the_rest_ingested() {
    let app = spawn_app().await;
    let t = app.tenant("sig-bad").await;
    app.put_feature_set(&t.key, "sig-bad", "device", &fs("drop")).await.expect(201);
    let future = chrono::Utc::now() + chrono::Duration::hours(2);
    let lines = [
        ev("d", 1, json!({"t": 1})).to_string(),
        json!({"entity_id": "d", "payload": {}, "source": "s"}).to_string(),
        json!({"entity_id": "d", "event_time": "last tuesday", "payload": {}, "source": "s"}).to_string(),
        "{not json".to_string(),
        json!({"entity_id": "d", "event_time": future.to_rfc3339(), "payload": {}, "source": "s"}).to_string(),
        json!({"entity_id": "d", "event_time": at(2), "payload": [1], "source": "s"}).to_string(),
        ev("d", 3, json!({"t": 3})).to_string(),
    ];
    let r = app.post_ndjson(&t.key, "sig-bad", lines.join("\n").into_bytes()).await;
    r.expect(200);
    assert_eq!(r.data()["accepted"], json!(2), "{}", r.text);
    assert_eq!(r.data()["rejected"], json!(5));
    let errors: Vec<(u64, String)> = r.data()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, "MISSING_FIELD".into()),
            (2, "INVALID_TIME".into()),
            (3, "INVALID_JSON".into()),
            (4, "FUTURE_EVENT".into()),
            (5, "INVALID_FIELD".into()),
        ]
    );
    assert!(!r.text.contains("last tuesday"), "errors never echo event content");
    app.post_events(&t.key, "sig-bad", &json!({"not": "an array"})).await;
    app.send_raw(
        reqwest::Method::POST,
        "/api/v1/signals/sig-bad/events",
        Some(&t.key),
        Some("application/json"),
        b"[1, 2".to_vec(),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn late_events_follow_each_feature_sets_policy() {
    let app = spawn_app().await;
    let t = app.tenant("sig-late").await;
    app.put_feature_set(&t.key, "sig-late", "dropper", &fs("drop")).await.expect(201);
    app.put_feature_set(&t.key, "sig-late", "holder", &fs("hold")).await.expect(201);
    app.put_feature_set(&t.key, "sig-late", "fixer", &fs("correct")).await.expect(201);
    app.post_events(&t.key, "sig-late", &json!([ev("d", 10, json!({"t": 1})), ev("d", 90, json!({"t": 2}))]))
        .await
        .expect(200);
    let r = app.post_events(&t.key, "sig-late", &json!([ev("d", 20, json!({"t": 5}))])).await;
    r.expect(200);
    assert_eq!(r.data()["accepted"], json!(1));
    assert_eq!(r.data()["late_dropped"], json!(1), "{}", r.text);
    assert_eq!(r.data()["late_held"], json!(1));
    assert_eq!(r.data()["late_corrected"], json!(1));
    let fixed = app.get_features(&t.key, "sig-late", "fixer", "d").await;
    let m1 = &fixed.data()["windows"][0];
    assert_eq!((m1["revision"].clone(), m1["values"]["n"].clone()), (json!(1), json!(2)), "{}", fixed.text);
    let dropped = app.get_features(&t.key, "sig-late", "dropper", "d").await;
    assert_eq!(dropped.data()["windows"][0]["values"]["n"], json!(1));
    let metrics = app.metrics(None).await;
    assert!(metrics.text.contains("frostbyte_signals_late_events_total"), "{}", metrics.text);
    assert!(metrics.text.contains("frostbyte_signals_watermark_lag_seconds"));
}

#[tokio::test]
async fn limits_scopes_and_tenants() {
    let app = spawn_app().await;
    let t = app.tenant("sig-limits").await;
    let other = app.tenant("sig-other").await;
    app.put_feature_set(&t.key, "sig-limits", "device", &fs("drop")).await.expect(201);
    // Too many bytes: refused while streaming.
    let big = vec![b' '; SIGNALS_MAX_BODY + 1];
    app.post_ndjson(&t.key, "sig-limits", big).await.expect_error(413, "PAYLOAD_TOO_LARGE");
    // Too many events.
    let many: Vec<Value> = (0..=SIGNALS_MAX_EVENTS as i64)
        .map(|i| json!({"entity_id": "d", "event_time": at(i), "payload": {}, "source": "s"}))
        .collect();
    let many = serde_json::to_vec(&many).unwrap();
    assert!(many.len() < SIGNALS_MAX_BODY);
    app.send_raw(
        reqwest::Method::POST,
        "/api/v1/signals/sig-limits/events",
        Some(&t.key),
        Some("application/json"),
        many,
    )
    .await
    .expect_error(413, "PAYLOAD_TOO_LARGE");
    // Scopes.
    let (query_only, _) = app.key("sig-limits", &["query"]).await;
    app.put_feature_set(&query_only, "sig-limits", "device", &fs("hold"))
        .await
        .expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.post_events(&query_only, "sig-limits", &json!([])).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.get_feature_set(&query_only, "sig-limits", "device", "").await.expect(200);
    let (ingest_only, _) = app.key("sig-limits", &["ingest"]).await;
    app.get_feature_set(&ingest_only, "sig-limits", "device", "").await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    // Another tenant's credential: 404, never the data.
    app.get_feature_set(&other.key, "sig-limits", "device", "").await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.post_events(&other.key, "sig-limits", &json!([ev("d", 1, json!({}))]))
        .await
        .expect_error(404, "RESOURCE_NOT_FOUND");
    app.get_feature_set(&other.key, "sig-other", "device", "").await.expect_error(404, "RESOURCE_NOT_FOUND");
    // The admin key works on any tenant.
    app.get_feature_set(ADMIN_KEY, "sig-limits", "device", "").await.expect(200);
    app.get_feature_set(ADMIN_KEY, "sig-ghost", "device", "").await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.get("/api/v1/signals/sig-limits/feature-sets/device", None).await.expect_error(401, "AUTHENTICATION_REQUIRED");
}
