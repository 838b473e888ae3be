//! The dead-letter endpoints over a real queue: a job that spends its retries shows up with its error code,
//! can be retried or abandoned, and stays invisible to other tenants.

use frostbyte_core::TenantId;
use frostbyte_core::queue::{ClaimOptions, FailOutcome, JobError, NewJob, RetryPolicy, Stage, StageRetry};
use serde_json::json;

use crate::helpers::{ADMIN_KEY, TestApp, spawn_app};

/// Enqueues a parse job for `tenant` and fails it once under a one-attempt policy, so it is dead-lettered.
async fn dead_job(app: &TestApp, tenant: &str, resource: &str) -> String {
    let tenant = TenantId::parse(tenant).unwrap();
    let job = app.queue.enqueue(&tenant, NewJob::new(Stage::Parse, resource, json!({}))).await.unwrap();
    let opts = ClaimOptions::new("test-worker", std::time::Duration::from_secs(60), 8);
    let claimed = app.queue.claim(&opts, frostbyte_core::now()).await.unwrap().expect("a job to claim");
    assert_eq!(claimed.job_id, job.job_id);
    let once = RetryPolicy::uniform(StageRetry::new(1, vec![]));
    let error = JobError::new("FILE_CORRUPTED", "invalid PDF xref table");
    let outcome = app.queue.fail(job.job_id, "test-worker", error, &once, frostbyte_core::now()).await.unwrap();
    assert_eq!(outcome, FailOutcome::DeadLettered);
    job.job_id.to_string()
}

#[tokio::test]
async fn dead_letters_are_listed_retried_and_abandoned() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let first = dead_job(&app, "acme", "doc-1").await;
    let second = dead_job(&app, "acme", "doc-2").await;

    let listed = app.dlq(&acme.key, "acme").await;
    listed.expect(200);
    assert_eq!(listed.body["meta"]["total"], json!(2));
    let entry = listed.data().as_array().unwrap().iter().find(|e| e["dlq_entry_id"] == json!(first)).unwrap();
    assert_eq!(entry["stage"], json!("parse"));
    assert_eq!(entry["resource_id"], json!("doc-1"));
    assert_eq!(entry["status"], json!("dead"));
    assert_eq!(entry["error"], json!({"code": "FILE_CORRUPTED", "message": "invalid PDF xref table"}));
    assert!(entry["first_attempt_at"].is_string() && entry["last_attempt_at"].is_string());

    let retried = app.dlq_action(&acme.key, "acme", &first, "retry").await;
    retried.expect(200);
    assert_eq!(retried.data()["status"], json!("queued"));
    app.dlq_action(&acme.key, "acme", &first, "retry").await.expect_error(409, "CONFLICT");

    let abandoned = app.dlq_action(ADMIN_KEY, "acme", &second, "abandon").await;
    abandoned.expect(200);
    assert_eq!(abandoned.data()["status"], json!("abandoned"));

    let listed = app.dlq(&acme.key, "acme").await;
    assert_eq!(listed.body["meta"]["total"], json!(1), "the retried job left the list; the abandoned one stays");

    let events = app.audit_events(ADMIN_KEY, "acme", "?event_type=DLQ_RETRIED").await;
    assert_eq!(events.body["meta"]["total"], json!(1));
}

#[tokio::test]
async fn dead_letters_are_tenant_scoped_and_need_the_admin_scope() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let entry = dead_job(&app, "acme", "doc-1").await;

    app.dlq(&other.key, "acme").await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.dlq_action(&other.key, "acme", &entry, "retry").await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.dlq_action(&other.key, "globex", &entry, "abandon").await.expect_error(404, "RESOURCE_NOT_FOUND");
    let globex = app.dlq(&other.key, "globex").await;
    globex.expect(200);
    assert_eq!(globex.body["meta"]["total"], json!(0));

    let (query_only, _) = app.key("acme", &["query"]).await;
    app.dlq(&query_only, "acme").await.expect_error(403, "INSUFFICIENT_PERMISSIONS");
    app.dlq(ADMIN_KEY, "nobody").await.expect_error(404, "RESOURCE_NOT_FOUND");
    app.dlq_action(ADMIN_KEY, "acme", "not-a-uuid", "retry").await.expect_error(404, "RESOURCE_NOT_FOUND");
}
