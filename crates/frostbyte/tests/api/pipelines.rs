//! The pipeline engine through the API: definitions listed, runs started (202, pending), executed by the engine
//! on the durable queue, audited and published, cancelled, refused when invalid or over quota, and isolated per
//! tenant. Runs are executed in-process with `drive_runs()` (the same code the workers run).

use bytes::Bytes;
use frostbyte_core::TenantId;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{ADMIN_KEY, TestApp, spawn_app};

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

async fn audit_types_for(app: &TestApp, token: &str, tenant: &str, run_id: &str) -> Vec<String> {
    let r = app.audit_chain(token, tenant, run_id).await;
    r.expect(200);
    r.data()["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn pipelines_are_listed_with_typed_parameters_to_admins_only() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let r = app.list_pipelines(&acme.key).await;
    r.expect(200);
    let list = r.data().as_array().unwrap();
    let export = list.iter().find(|p| p["domain"] == "audit" && p["name"] == "export").expect("audit/export");
    assert_eq!(export["processor"], "audit.export");
    assert_eq!(export["display_name"], "Audit log export");
    let params = export["parameters"].as_array().unwrap();
    assert!(params.iter().any(|p| p["name"] == "start_date" && p["type"] == "date"));
    let copy = list.iter().find(|p| p["domain"] == "records" && p["name"] == "copy").expect("records/copy");
    assert!(copy["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "source" && p["required"] == true));
    app.list_pipelines(ADMIN_KEY).await.expect(200);

    let (query_only, _) = app.key("acme", &["query"]).await;
    app.list_pipelines(&query_only).await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.get("/api/v1/pipelines", None).await.expect_error(401, "AUTHENTICATION_REQUIRED");
}

#[tokio::test]
async fn audit_export_runs_end_to_end_with_jsonl_manifest_audit_and_events() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let mut sub = app.state.events.subscribe(None);
    let day = today();
    let r = app.start_run(&acme.key, "acme", "audit/export", &json!({"start_date": day, "end_date": day})).await;
    r.expect(202);
    assert_eq!(r.data()["status"], "pending");
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    let pending = app.get_run(&acme.key, "acme", &run_id).await;
    pending.expect(200);
    assert_eq!(pending.data()["status"], "pending");
    assert!(pending.data()["started_at"].is_null());

    assert_eq!(app.drive_runs().await, 1);
    let done = app.get_run(&acme.key, "acme", &run_id).await;
    done.expect(200);
    let run = done.data();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["progress"], json!(1.0));
    assert!(run["started_at"].is_string() && run["completed_at"].is_string());
    assert_eq!(run["parameters"]["start_date"], json!(day));
    assert!(run["triggered_by"].as_str().unwrap().starts_with("key:"), "{run}");
    let records = run["records_processed"].as_u64().unwrap();
    assert!(records >= 2, "tenant creation and key creation at least: {run}");

    let tenant = TenantId::parse("acme").unwrap();
    let target = format!("exports/audit/{day}_{day}/{run_id}.jsonl");
    let body = app.blobs.get(&tenant, &target).await.expect("export written");
    let lines: Vec<Value> =
        std::str::from_utf8(&body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, records);
    assert!(lines.iter().all(|e| e["tenant_id"] == "acme" && e["hash"].is_string()));
    let manifest: Value =
        serde_json::from_slice(&app.blobs.get(&tenant, &format!("{target}.manifest.json")).await.unwrap()).unwrap();
    assert_eq!(manifest["event_count"], json!(records));
    assert_eq!(manifest["file_sha256"], json!(hex::encode(Sha256::digest(&body))));

    let types = audit_types_for(&app, &acme.key, "acme", &run_id).await;
    assert_eq!(
        types,
        ["PIPELINE_RUN_CREATED", "PIPELINE_RUN_VALIDATING", "PIPELINE_RUN_STARTED", "PIPELINE_RUN_COMPLETED"],
        "every transition audited, in order"
    );
    app.audit_verify(&acme.key, "acme").await.expect(200);

    let published: Vec<(String, String)> = sub
        .replay
        .drain(..)
        .chain(std::iter::from_fn(|| sub.live.try_recv().ok()))
        .filter(|p| p.event.run_id.map(|id| id.to_string()) == Some(run_id.clone()))
        .map(|p| (p.event.status.clone().unwrap_or_default(), p.event.stage.clone()))
        .collect();
    let statuses: Vec<&str> = published.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["pending", "validating", "running", "completed"]);
    assert!(published.iter().all(|(_, stage)| stage == "audit/export"));
}

#[tokio::test]
async fn records_copy_maps_coerces_and_rejects_rows_with_reasons() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let tenant = TenantId::parse("acme").unwrap();
    let csv = "id,name,joined,extra\n1,Ada,2026-01-05,x\ntwo,Bob,2026-01-06,y\n3,Cy,2026-13-01,z\n4,Di,2026-02-01,w\n";
    app.blobs.put(&tenant, "in/users.csv", Bytes::from(csv)).await.unwrap();
    let params = json!({"source": "in/users.csv", "target": "out/users.jsonl",
                        "columns": "id:user_id:integer, name, joined::date"});
    let r = app.start_run(&acme.key, "acme", "records/copy", &params).await;
    r.expect(202);
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    app.drive_runs().await;
    let run = app.get_run(&acme.key, "acme", &run_id).await;
    assert_eq!(run.data()["status"], "completed", "{}", run.text);
    assert_eq!(run.data()["records_processed"], 2);

    let out = app.blobs.get(&tenant, "out/users.jsonl").await.unwrap();
    let rows: Vec<Value> =
        std::str::from_utf8(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        rows,
        [
            json!({"user_id": 1, "name": "Ada", "joined": "2026-01-05"}),
            json!({"user_id": 4, "name": "Di", "joined": "2026-02-01"})
        ]
    );
    let rejects = app.blobs.get(&tenant, "out/users.jsonl.rejects.jsonl").await.unwrap();
    let rejects: Vec<Value> =
        std::str::from_utf8(&rejects).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!((rejects[0]["row"].clone(), rejects[0]["field"].clone()), (json!(2), json!("id")));
    assert!(rejects[0]["reason"].as_str().unwrap().contains("not an integer"));
    assert_eq!((rejects[1]["row"].clone(), rejects[1]["field"].clone()), (json!(3), json!("joined")));

    // And back: JSON Lines to CSV, every column as it is (JSON object keys come sorted).
    let back = json!({"source": "out/users.jsonl", "target": "out/users.csv"});
    app.start_run(&acme.key, "acme", "records/copy", &back).await.expect(202);
    app.drive_runs().await;
    let csv_out = app.blobs.get(&tenant, "out/users.csv").await.unwrap();
    assert_eq!(std::str::from_utf8(&csv_out).unwrap(), "joined,name,user_id\n2026-01-05,Ada,1\n2026-02-01,Di,4\n");

    // A missing source fails the run with a clear message rather than retrying.
    let missing = json!({"source": "in/nope.csv", "target": "out/x.jsonl"});
    let r = app.start_run(&acme.key, "acme", "records/copy", &missing).await;
    let id = r.data()["run_id"].as_str().unwrap().to_owned();
    app.drive_runs().await;
    let failed = app.get_run(&acme.key, "acme", &id).await;
    assert_eq!(failed.data()["status"], "failed");
    assert_eq!(failed.data()["error_message"], "source \"in/nope.csv\" does not exist");
}

#[tokio::test]
async fn invalid_runs_are_refused_and_other_tenants_runs_are_invisible() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let r = app.start_run(&acme.key, "acme", "records/copy", &json!({"target": "x.csv"})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["field"], "parameters.source", "{}", r.text);
    let r = app.start_run(&acme.key, "acme", "audit/export", &json!({"start_date": 5})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.body["error"]["details"][0]["constraint"].as_str().unwrap().contains("not a date"), "{}", r.text);
    app.start_run(&acme.key, "acme", "audit/export", &json!({"surprise": true}))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    app.start_run(&acme.key, "acme", "audit/nope", &json!({})).await.expect_error(404, "RESOURCE_NOT_FOUND");

    let r = app.start_run(&acme.key, "acme", "audit/export", &json!({})).await;
    r.expect(202);
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    // Another tenant's credential, on its own path or on acme's, never sees the run.
    app.get_run(&globex.key, "globex", &run_id).await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.get_run(&globex.key, "acme", &run_id).await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.cancel_run(&globex.key, "globex", &run_id).await.expect_error(404, "RESOURCE_NOT_FOUND");
    assert_eq!(app.list_runs(&globex.key, "globex", "").await.data().as_array().unwrap().len(), 0);
    app.get_run(ADMIN_KEY, "acme", &run_id).await.expect(200);

    app.suspend("acme").await.expect(200);
    app.start_run(ADMIN_KEY, "acme", "audit/export", &json!({})).await.expect_error(403, "TENANT_SUSPENDED");
}

#[tokio::test]
async fn the_daily_run_quota_answers_429_with_retry_after() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    app.patch_tenant("acme", &json!({"config": {"quotas": {"runs_per_day": 1}}})).await.expect(200);
    app.start_run(&acme.key, "acme", "audit/export", &json!({})).await.expect(202);
    let r = app.start_run(&acme.key, "acme", "audit/export", &json!({})).await;
    r.expect_error(429, "QUOTA_EXCEEDED");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("runs_per_day limit of 1"), "{}", r.text);
    let retry_after: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=86_400).contains(&retry_after));
}

#[tokio::test]
async fn cancelling_a_pending_run_is_immediate_and_history_filters() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let first = app.start_run(&acme.key, "acme", "audit/export", &json!({})).await;
    let first = first.data()["run_id"].as_str().unwrap().to_owned();
    let second = app.start_run(&acme.key, "acme", "audit/export", &json!({})).await;
    let second = second.data()["run_id"].as_str().unwrap().to_owned();

    let c = app.cancel_run(&acme.key, "acme", &first).await;
    c.expect(200);
    assert_eq!(c.data()["status"], "cancelled");
    assert_eq!(app.drive_runs().await, 1, "only the second run's job is left");
    assert_eq!(app.get_run(&acme.key, "acme", &first).await.data()["status"], "cancelled");
    assert_eq!(app.get_run(&acme.key, "acme", &second).await.data()["status"], "completed");
    // Cancelling a finished run changes nothing.
    assert_eq!(app.cancel_run(&acme.key, "acme", &second).await.data()["status"], "completed");

    let all = app.list_runs(&acme.key, "acme", "pipeline=audit/export&limit=10").await;
    let ids: Vec<&str> = all.data().as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    let cancelled = app.list_runs(&acme.key, "acme", "status=cancelled").await;
    assert_eq!(cancelled.data().as_array().unwrap().len(), 1);
    assert_eq!(app.list_runs(&acme.key, "acme", "limit=1").await.data().as_array().unwrap().len(), 1);
    app.list_runs(&acme.key, "acme", "status=sleeping").await.expect_error(400, "VALIDATION_ERROR");
    app.list_runs(&acme.key, "acme", "limit=0").await.expect_error(400, "VALIDATION_ERROR");
    let types = audit_types_for(&app, &acme.key, "acme", &first).await;
    assert_eq!(types, ["PIPELINE_RUN_CREATED", "PIPELINE_RUN_CANCELLED"]);
}

#[tokio::test]
async fn schedules_are_managed_and_fire_exactly_once_with_one_catch_up_run() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let bad = app
        .create_schedule(&acme.key, "acme", &json!({"pipeline": "audit/export", "cron_expression": "every day"}))
        .await;
    bad.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(bad.body["error"]["details"][0]["field"], "cron_expression");
    for zone in ["Mars/Base", "Europe/Berlinn", "+2"] {
        let bad_tz = json!({"pipeline": "audit/export", "cron_expression": "0 2 * * *", "timezone": zone});
        let r = app.create_schedule(&acme.key, "acme", &bad_tz).await;
        r.expect_error(400, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"][0]["field"], "timezone", "{zone}");
    }
    let bad_overlap = json!({"pipeline": "audit/export", "cron_expression": "0 2 * * *", "overlap": "pile-up"});
    app.create_schedule(&acme.key, "acme", &bad_overlap).await.expect_error(400, "VALIDATION_ERROR");
    let berlin = json!({"pipeline": "audit/export", "cron_expression": "0 9 * * *", "timezone": "Europe/Berlin",
                        "overlap": "queue"});
    let r = app.create_schedule(&acme.key, "acme", &berlin).await;
    r.expect(201);
    assert_eq!((r.data()["timezone"].as_str(), r.data()["overlap"].as_str()), (Some("Europe/Berlin"), Some("queue")));
    let berlin_next: chrono::DateTime<chrono::Utc> = r.data()["next_run_at"].as_str().unwrap().parse().unwrap();
    let local = berlin_next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(local.format("%H:%M").to_string(), "09:00", "09:00 Berlin time, summer or winter");
    app.delete_schedule(&acme.key, "acme", r.data()["schedule_id"].as_str().unwrap()).await.expect(200);
    let bad_params = json!({"pipeline": "records/copy", "cron_expression": "0 2 * * *"});
    let r = app.create_schedule(&acme.key, "acme", &bad_params).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"][0]["field"], "parameters.source");

    let body = json!({"pipeline": "audit/export", "cron_expression": "0 2 * * *", "timezone": "+02:00",
                      "parameters": {"event_types": "TENANT_CREATED"}});
    let created = app.create_schedule(&acme.key, "acme", &body).await;
    created.expect(201);
    let s = created.data().clone();
    let id = s["schedule_id"].as_str().unwrap().to_owned();
    assert_eq!(s["is_enabled"], true);
    assert_eq!((s["overlap"].as_str(), s["skipped_count"].as_u64()), (Some("skip"), Some(0)));
    let next: chrono::DateTime<chrono::Utc> = s["next_run_at"].as_str().unwrap().parse().unwrap();
    assert!(next > chrono::Utc::now());
    assert_eq!(next.format("%H:%M").to_string(), "00:00", "02:00 at +02:00 is midnight UTC");
    assert_eq!(app.list_schedules(&acme.key, "acme").await.data().as_array().unwrap().len(), 1);
    assert_eq!(app.list_schedules(&globex.key, "globex").await.data().as_array().unwrap().len(), 0);
    app.update_schedule(&globex.key, "globex", &id, &json!({"is_enabled": false}))
        .await
        .expect_error(404, "RESOURCE_NOT_FOUND");

    // Nothing is due yet; at the next occurrence it fires once, however often the schedulers look.
    assert!(app.state.engine.fire_due(frostbyte_core::now()).await.unwrap().is_empty());
    let at = next + chrono::Duration::seconds(1);
    let fired = app.state.engine.fire_due(at).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(app.state.engine.fire_due(at).await.unwrap().is_empty(), "exactly once");
    let run = app.get_run(&acme.key, "acme", &fired[0].to_string()).await;
    assert_eq!(run.data()["triggered_by"], format!("schedule:{id}"));
    assert_eq!(run.data()["parameters"]["event_types"], "TENANT_CREATED");
    let listed = app.list_schedules(&acme.key, "acme").await;
    assert_eq!(listed.data()[0]["last_run_id"], json!(fired[0].to_string()));

    // Ten days of downtime: one catch-up run, and the next firing is in the future of that moment. (The first
    // run is cancelled first: with the default `skip` overlap an unfinished run would skip the catch-up.)
    app.cancel_run(&acme.key, "acme", &fired[0].to_string()).await.expect(200);
    let later = next + chrono::Duration::days(10);
    assert_eq!(app.state.engine.fire_due(later).await.unwrap().len(), 1);
    let after: chrono::DateTime<chrono::Utc> =
        app.list_schedules(&acme.key, "acme").await.data()[0]["next_run_at"].as_str().unwrap().parse().unwrap();
    assert!(after > later);

    let off = app.update_schedule(&acme.key, "acme", &id, &json!({"is_enabled": false})).await;
    off.expect(200);
    assert!(off.data()["next_run_at"].is_null());
    assert!(app.state.engine.fire_due(later + chrono::Duration::days(30)).await.unwrap().is_empty());
    let on = app
        .update_schedule(&acme.key, "acme", &id, &json!({"is_enabled": true, "cron_expression": "*/5 * * * *"}))
        .await;
    on.expect(200);
    assert!(on.data()["next_run_at"].is_string());
    assert_eq!(on.data()["cron_expression"], "*/5 * * * *");

    app.delete_schedule(&acme.key, "acme", &id).await.expect(200);
    app.delete_schedule(&acme.key, "acme", &id).await.expect_error(404, "RESOURCE_NOT_FOUND");
    let types = audit_types_for(&app, &acme.key, "acme", &id).await;
    assert_eq!(
        types,
        [
            "PIPELINE_SCHEDULE_CREATED",
            "PIPELINE_SCHEDULE_UPDATED",
            "PIPELINE_SCHEDULE_UPDATED",
            "PIPELINE_SCHEDULE_DELETED"
        ]
    );
}

#[tokio::test]
async fn a_runs_webhook_deliveries_are_listed_to_its_tenant_only() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let start = app.start_run(&acme.key, "acme", "audit/export", &json!({})).await;
    start.expect(202);
    let run_id = start.data()["run_id"].as_str().unwrap().to_owned();
    app.drive_runs().await;
    let run = app.get_run(&acme.key, "acme", &run_id).await;
    assert_eq!(run.data()["chain_depth"], 0);
    assert!(run.data()["parent_run_id"].is_null());
    let listed = app.list_deliveries(&acme.key, "acme", &run_id).await;
    listed.expect(200);
    assert_eq!(listed.data().as_array().unwrap().len(), 0, "audit/export declares no webhooks");
    app.list_deliveries(&globex.key, "globex", &run_id).await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.list_deliveries(&globex.key, "acme", &run_id).await.expect_error(404, "RESOURCE_NOT_FOUND");
}
