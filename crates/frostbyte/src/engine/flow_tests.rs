//! Chaining, webhooks and the schedule overlap policy, driven through the engine on a real SQLite store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use frostbyte_core::TenantId;
use frostbyte_core::pipelines::{DeliveryStatus, Overlap, PipelineRun, RunStatus, WebhookRetry};
use frostbyte_core::queue::RunOnce;
use serde_json::{Map, Value, json};

use super::processors::{Outcome, ProcessorError, ProcessorFn};
use super::schedules::ScheduleRequest;
use super::{Engine, EngineSettings};
use crate::events::EventBus;

struct Fixture {
    engine: Arc<Engine>,
    ports: frostbyte_adapters::resolve::MetadataPorts,
    blobs: Arc<dyn frostbyte_core::ports::BlobStore>,
    tenant: TenantId,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(settings: EngineSettings, defs: &[(&str, &str)]) -> Fixture {
        let (ports, blobs, dir) = crate::engine::scratch_acme().await;
        let root = dir.path().join("pipelines");
        for (rel, text) in defs {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let settings = EngineSettings { dir: Some(root), ..settings };
        let f = Fixture {
            engine: Arc::new(Fixture::engine_on(&ports, &blobs, settings)),
            ports,
            blobs,
            tenant: TenantId::parse("acme").unwrap(),
            dir,
        };
        assert!(f.engine.definitions().errors.is_empty(), "{:?}", f.engine.definitions().errors);
        f
    }

    /// Another engine (another process, in effect) on the same store.
    fn engine_on(
        ports: &frostbyte_adapters::resolve::MetadataPorts,
        blobs: &Arc<dyn frostbyte_core::ports::BlobStore>,
        settings: EngineSettings,
    ) -> Engine {
        Engine::new(
            ports.runs.clone(),
            ports.store.clone(),
            ports.queue.clone(),
            blobs.clone(),
            Arc::new(EventBus::default()),
            settings,
        )
        .with_schedules(ports.schedules.clone())
    }

    fn twin(&self) -> Engine {
        let settings = EngineSettings { dir: Some(self.dir.path().join("pipelines")), ..self.engine.settings.clone() };
        Fixture::engine_on(&self.ports, &self.blobs, settings)
    }

    /// Claims the next job and executes it with `processor`; `None` when nothing is claimable at `at`.
    async fn execute_next(&self, processor: ProcessorFn, at: chrono::DateTime<chrono::Utc>) -> Option<PipelineRun> {
        let job = self.engine.queue.claim(&self.engine.claim_options("w"), at).await.unwrap()?;
        let run_id = uuid::Uuid::parse_str(&job.resource_id).unwrap();
        self.engine.execute(job, "w", Some(processor)).await.unwrap();
        Some(self.engine.get_run(&self.tenant, run_id).await.unwrap())
    }

    async fn audit_types(&self, resource_id: &str) -> Vec<String> {
        let events = self.engine.store.audit_after(&self.tenant, 0, 10_000).await.unwrap();
        events.into_iter().filter(|e| e.resource_id == resource_id).map(|e| e.event_type).collect()
    }
}

fn three_records() -> ProcessorFn {
    |_| Box::pin(async { Ok(Outcome { records: 3, counts: Map::new() }) })
}

fn broken() -> ProcessorFn {
    |_| Box::pin(async { Err(ProcessorError::Failed { message: "source is unreadable".into(), retryable: false }) })
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

const FIRST: &str = "name: first\ndomain: ops\nprocessor: records.copy\nparameters:\n  - {name: source, type: string, required: true}\n\
on_success:\n  - pipeline: ops/second\n    parameters: {note: \"{{parent.status}}:{{parent.records_processed}}:{{params.source}}\", from: \"{{parent.run_id}}\"}\n\
on_failure:\n  - pipeline: ops/second\n    parameters: {note: \"{{parent.status}} after {{parent.pipeline}}\", from: \"{{run_id}}\"}\n";
const SECOND: &str = "name: second\ndomain: ops\nprocessor: records.copy\nparameters:\n  - {name: note, type: string, required: true}\n  - {name: from, type: string}\n";

#[tokio::test]
async fn a_finished_run_starts_its_follow_ups_with_its_values() {
    let f = Fixture::new(EngineSettings::default(), &[("ops/first.yml", FIRST), ("ops/second.yml", SECOND)]).await;
    let parent =
        f.engine.create_run(&f.tenant, "ops", "first", params(json!({"source": "in.csv"})), "test").await.unwrap();
    let done = f.execute_next(three_records(), frostbyte_core::now()).await.unwrap();
    assert_eq!((done.run_id, done.status), (parent.run_id, RunStatus::Completed));

    let children = f.engine.runs.follow_ups(&f.tenant, parent.run_id).await.unwrap();
    assert_eq!(children.len(), 1);
    let child = &children[0];
    assert_eq!(child.triggered_by, format!("chain:{}", parent.run_id));
    assert_eq!((child.parent_run_id, child.chain_depth, child.status), (Some(parent.run_id), 1, RunStatus::Pending));
    assert_eq!(child.parameters["note"], json!("completed:3:in.csv"));
    assert_eq!(child.parameters["from"], json!(parent.run_id.to_string()));
    let created = f.audit_types(&child.run_id.to_string()).await;
    assert_eq!(created, ["PIPELINE_RUN_CREATED"]);

    // The follow-up runs like any run; a failure starts the on_failure list instead.
    let ran = f.execute_next(broken(), frostbyte_core::now()).await.unwrap();
    assert_eq!((ran.run_id, ran.status), (child.run_id, RunStatus::Failed));
    assert!(f.engine.runs.follow_ups(&f.tenant, child.run_id).await.unwrap().is_empty(), "second declares none");

    let failing = f.engine.create_run(&f.tenant, "ops", "first", params(json!({"source": "x"})), "test").await.unwrap();
    let failed = f.execute_next(broken(), frostbyte_core::now()).await.unwrap();
    assert_eq!((failed.run_id, failed.status), (failing.run_id, RunStatus::Failed));
    let on_failure = f.engine.runs.follow_ups(&f.tenant, failing.run_id).await.unwrap();
    assert_eq!(on_failure.len(), 1);
    assert_eq!(on_failure[0].parameters["note"], json!("failed after ops/first"));
    assert_eq!(on_failure[0].parameters["from"], json!(failing.run_id.to_string()));

    // A cancelled run starts nothing.
    let cancelled =
        f.engine.create_run(&f.tenant, "ops", "first", params(json!({"source": "x"})), "test").await.unwrap();
    f.engine.cancel(&f.tenant, cancelled.run_id, "admin").await.unwrap();
    assert!(f.engine.runs.follow_ups(&f.tenant, cancelled.run_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_cycle_stops_at_the_chain_depth_limit_with_an_audited_refusal() {
    let looped = "name: again\ndomain: ops\nprocessor: records.copy\non_success:\n  - pipeline: ops/again\n";
    let settings = EngineSettings { max_chain_depth: 2, ..EngineSettings::default() };
    let f = Fixture::new(settings, &[("ops/again.yml", looped)]).await;
    let root = f.engine.create_run(&f.tenant, "ops", "again", Map::new(), "test").await.unwrap();
    let mut ran = Vec::new();
    while let Some(run) = f.execute_next(three_records(), frostbyte_core::now()).await {
        assert_eq!(run.status, RunStatus::Completed);
        ran.push(run);
        assert!(ran.len() < 10, "the chain must stop");
    }
    assert_eq!(ran.iter().map(|r| r.chain_depth).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(ran[0].run_id, root.run_id);
    assert_eq!(ran[2].parent_run_id, Some(ran[1].run_id));
    let last = ran[2].run_id.to_string();
    let types = f.audit_types(&last).await;
    assert!(types.contains(&"PIPELINE_CHAIN_REFUSED".to_owned()), "{types:?}");
    let events = f.engine.store.audit_after(&f.tenant, 0, 10_000).await.unwrap();
    let refusal = events.iter().find(|e| e.event_type == "PIPELINE_CHAIN_REFUSED").unwrap();
    let reason = refusal.details["reason"].as_str().unwrap();
    assert!(reason.contains("chain depth limit") && reason.contains("max_chain_depth is 2"), "{reason}");
    assert_eq!(events.iter().filter(|e| e.event_type == "PIPELINE_CHAIN_REFUSED").count(), 1);
}

/// What the in-test endpoint received.
#[derive(Default)]
struct Received {
    calls: AtomicUsize,
    requests: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

/// An endpoint that answers 500 to the first `fail_first` requests, then 204.
async fn endpoint(fail_first: usize) -> (String, Arc<Received>) {
    let received = Arc::new(Received::default());
    let state = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let n = state.calls.fetch_add(1, Ordering::SeqCst);
                state.requests.lock().unwrap().push((headers, body.to_vec()));
                if n < fail_first { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received)
}

const SECRET: &str = "whsec-0123456789abcdef";

fn hook_settings() -> EngineSettings {
    EngineSettings {
        webhook_retry: WebhookRetry { max_attempts: 3, backoff: vec![Duration::from_secs(1)] },
        webhook_timeout: Duration::from_secs(5),
        webhook_secrets: [("ACME_HOOK".to_owned(), secrecy::SecretString::from(SECRET))].into(),
        ..EngineSettings::default()
    }
}

fn hooked(url: &str, events: &str, secret: &str) -> String {
    format!(
        "name: hooked\ndomain: ops\nprocessor: records.copy\nparameters:\n  - {{name: source, type: string}}\n\
         webhooks:\n  - {{url: \"{url}\", events: [{events}], secret_env: {secret}}}\n"
    )
}

#[tokio::test]
async fn a_webhook_is_signed_retried_until_delivered_and_recorded() {
    let (url, received) = endpoint(1).await;
    let def = hooked(&url, "completed, failed", "ACME_HOOK");
    let f = Fixture::new(hook_settings(), &[("ops/hooked.yml", &def)]).await;
    let run = f
        .engine
        .create_run(&f.tenant, "ops", "hooked", params(json!({"source": "secret-path.csv"})), "test")
        .await
        .unwrap();
    let done = f.execute_next(three_records(), frostbyte_core::now()).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed);

    let pending = f.engine.list_deliveries(&f.tenant, run.run_id).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].status, pending[0].attempts), (DeliveryStatus::Pending, 0));

    // First attempt: the endpoint answers 500; the delivery waits for its backoff.
    let now = frostbyte_core::now();
    assert_eq!(f.engine.deliver_due(now).await.unwrap(), 1);
    let after_one = &f.engine.list_deliveries(&f.tenant, run.run_id).await.unwrap()[0];
    assert_eq!(
        (after_one.status, after_one.attempts, after_one.last_status_code),
        (DeliveryStatus::Pending, 1, Some(500))
    );
    assert_eq!(after_one.last_error.as_deref(), Some("the endpoint answered 500"));
    assert_eq!(f.engine.deliver_due(frostbyte_core::now()).await.unwrap(), 0, "not due before its backoff");
    // A second process looking at the same moment does not send it twice.
    let twin = f.twin();
    let later = frostbyte_core::now() + chrono::Duration::seconds(2);
    let (a, b) = tokio::join!(f.engine.deliver_due(later), twin.deliver_due(later));
    assert_eq!(a.unwrap() + b.unwrap(), 1);

    let d = &f.engine.list_deliveries(&f.tenant, run.run_id).await.unwrap()[0];
    assert_eq!((d.status, d.attempts, d.next_attempt_at), (DeliveryStatus::Delivered, 2, None));
    let log: Vec<(u32, Option<u16>, bool)> =
        d.attempt_log.iter().map(|a| (a.attempt, a.status_code, a.delivered)).collect();
    assert_eq!(log, [(1, Some(500), false), (2, Some(204), true)]);
    assert_eq!(received.calls.load(Ordering::SeqCst), 2);

    // The body names the run, never its parameters' values; the signature is the HMAC of the exact body.
    let requests = received.requests.lock().unwrap().clone();
    for (headers, body) in requests.iter() {
        let sig = headers.get(super::webhooks::SIGNATURE_HEADER).unwrap().to_str().unwrap();
        assert_eq!(sig, super::webhooks::signature(SECRET.as_bytes(), body));
        assert!(headers.get(super::webhooks::TIMESTAMP_HEADER).unwrap().to_str().unwrap().parse::<i64>().is_ok());
        assert_eq!(headers.get("x-frostbyte-event").unwrap(), "completed");
        let json: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["run_id"], json!(run.run_id.to_string()));
        assert_eq!((json["tenant_id"].as_str(), json["status"].as_str()), (Some("acme"), Some("completed")));
        assert_eq!((json["pipeline"].as_str(), json["records_processed"].as_u64()), (Some("ops/hooked"), Some(3)));
        assert!(!String::from_utf8_lossy(body).contains("secret-path"), "no parameter values");
    }
    assert_eq!(requests[0].1, requests[1].1, "the same body on every attempt");

    let types = f.audit_types(&d.delivery_id.to_string()).await;
    assert_eq!(types, ["PIPELINE_WEBHOOK_ATTEMPT_FAILED", "PIPELINE_WEBHOOK_DELIVERED"]);
    let events = f.engine.store.audit_after(&f.tenant, 0, 10_000).await.unwrap();
    let text = serde_json::to_string(&events.iter().map(|e| &e.details).collect::<Vec<_>>()).unwrap();
    let host = url.trim_start_matches("http://").trim_end_matches("/hook");
    assert!(!text.contains(SECRET) && !text.contains(&url), "audit names the host only, never the secret");
    assert!(text.contains(host), "{text}");
    assert_eq!(f.engine.get_run(&f.tenant, run.run_id).await.unwrap().status, RunStatus::Completed);
}

#[tokio::test]
async fn a_webhook_that_stays_down_fails_without_touching_the_run() {
    // Nothing listens on this port once the listener is dropped.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let def = hooked(&format!("http://{addr}/hook"), "failed", "ACME_HOOK");
    let f = Fixture::new(hook_settings(), &[("ops/hooked.yml", &def)]).await;
    let run = f.engine.create_run(&f.tenant, "ops", "hooked", Map::new(), "test").await.unwrap();
    assert_eq!(f.execute_next(broken(), frostbyte_core::now()).await.unwrap().status, RunStatus::Failed);
    let mut at = frostbyte_core::now();
    for _ in 0..3 {
        assert_eq!(f.engine.deliver_due(at).await.unwrap(), 1);
        at += chrono::Duration::seconds(2);
    }
    assert_eq!(f.engine.deliver_due(at + chrono::Duration::days(1)).await.unwrap(), 0, "attempts are spent");
    let d = &f.engine.list_deliveries(&f.tenant, run.run_id).await.unwrap()[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 3));
    assert!(d.attempt_log.iter().all(|a| a.status_code.is_none() && a.error.is_some()));
    let types = f.audit_types(&d.delivery_id.to_string()).await;
    assert_eq!(types.last().map(String::as_str), Some("PIPELINE_WEBHOOK_FAILED"));
    let after = f.engine.get_run(&f.tenant, run.run_id).await.unwrap();
    assert_eq!((after.status, after.error_message.as_deref()), (RunStatus::Failed, Some("source is unreadable")));

    // A completed run does not match `events: [failed]`; a secret configured nowhere fails at once, unsent.
    let f2 = Fixture::new(
        hook_settings(),
        &[("ops/hooked.yml", &hooked(&format!("http://{addr}/hook"), "completed", "NOT_CONFIGURED_ANYWHERE"))],
    )
    .await;
    let run = f2.engine.create_run(&f2.tenant, "ops", "hooked", Map::new(), "test").await.unwrap();
    f2.execute_next(three_records(), frostbyte_core::now()).await.unwrap();
    assert_eq!(f2.engine.deliver_due(frostbyte_core::now()).await.unwrap(), 1);
    let d = &f2.engine.list_deliveries(&f2.tenant, run.run_id).await.unwrap()[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 1));
    assert!(d.last_error.as_deref().unwrap().contains("NOT_CONFIGURED_ANYWHERE is not configured"));
}

async fn schedule(f: &Fixture, overlap: Overlap) -> frostbyte_core::pipelines::Schedule {
    let req = ScheduleRequest {
        pipeline: Some("ops/second".into()),
        cron_expression: Some("* * * * *".into()),
        timezone: Some("Europe/Berlin".into()),
        overlap: Some(overlap),
        parameters: Some(params(json!({"note": "tick"}))),
        is_enabled: Some(true),
    };
    f.engine.create_schedule(&f.tenant, req, "test").await.unwrap()
}

async fn due_moment(f: &Fixture, id: uuid::Uuid) -> chrono::DateTime<chrono::Utc> {
    let s = f.engine.schedules.as_ref().unwrap().get_schedule(&f.tenant, id).await.unwrap().unwrap();
    s.next_run_at.unwrap() + chrono::Duration::seconds(1)
}

#[tokio::test]
async fn skip_records_an_occurrence_while_the_previous_run_is_unfinished_once_across_engines() {
    let f = Fixture::new(EngineSettings::default(), &[("ops/second.yml", SECOND)]).await;
    let twin = f.twin();
    let s = schedule(&f, Overlap::Skip).await;
    assert_eq!(s.overlap, Overlap::Skip);
    let first = f.engine.fire_due(due_moment(&f, s.schedule_id).await).await.unwrap();
    assert_eq!(first.len(), 1);

    // The first run is still pending: two engines see the next occurrence at once; it is skipped, once.
    let at = due_moment(&f, s.schedule_id).await;
    let (a, b) = tokio::join!(f.engine.fire_due(at), twin.fire_due(at));
    assert!(a.unwrap().is_empty() && b.unwrap().is_empty());
    let after = f.engine.schedules.as_ref().unwrap().get_schedule(&f.tenant, s.schedule_id).await.unwrap().unwrap();
    assert_eq!(after.last_skipped_at, Some(at));
    assert_eq!(after.skipped_count, 1);
    assert!(after.next_run_at.unwrap() > at, "the next occurrence moved on");
    assert_eq!(after.last_run_id, Some(first[0]));
    let types = f.audit_types(&s.schedule_id.to_string()).await;
    assert_eq!(types.iter().filter(|t| *t == "PIPELINE_SCHEDULE_SKIPPED").count(), 1);
    assert_eq!(
        f.engine
            .runs
            .list_runs(&f.tenant, &frostbyte_core::pipelines::RunFilter { limit: 10, ..Default::default() })
            .await
            .unwrap()
            .len(),
        1
    );

    // Once it has ended, the next occurrence starts a run again.
    let done = f.execute_next(three_records(), frostbyte_core::now()).await.unwrap();
    assert_eq!((done.run_id, done.status), (first[0], RunStatus::Completed));
    assert_eq!(f.engine.fire_due(due_moment(&f, s.schedule_id).await).await.unwrap().len(), 1);
}

#[tokio::test]
async fn queue_starts_one_waiting_run_after_the_previous_ends_once_across_engines() {
    let f = Fixture::new(EngineSettings::default(), &[("ops/second.yml", SECOND)]).await;
    let twin = f.twin();
    let s = schedule(&f, Overlap::Queue).await;
    let first = f.engine.fire_due(due_moment(&f, s.schedule_id).await).await.unwrap()[0];
    // Start the first run so that it is executing, then let its job sit leased (as if a worker were on it).
    let job = f.engine.queue.claim(&f.engine.claim_options("busy"), frostbyte_core::now()).await.unwrap().unwrap();
    assert_eq!(job.resource_id, first.to_string());

    let at = due_moment(&f, s.schedule_id).await;
    let (a, b) = tokio::join!(f.engine.fire_due(at), twin.fire_due(at));
    let queued: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(queued.len(), 1, "exactly one queued run");
    let waiting = f.engine.get_run(&f.tenant, queued[0]).await.unwrap();
    assert_eq!((waiting.status, waiting.waits_for_run_id), (RunStatus::Pending, Some(first)));
    // A third occurrence while one already waits: skipped.
    assert!(f.engine.fire_due(due_moment(&f, s.schedule_id).await).await.unwrap().is_empty());
    let sched = f.engine.schedules.as_ref().unwrap().get_schedule(&f.tenant, s.schedule_id).await.unwrap().unwrap();
    assert_eq!(sched.skipped_count, 1);
    // The waiting run cannot be claimed while the first one runs (its job is held, not merely delayed).
    let far = frostbyte_core::now() + chrono::Duration::seconds(30);
    assert!(f.engine.queue.claim(&f.engine.claim_options("w2"), far).await.unwrap().is_none());

    // The first run ends; the waiting one is released and runs after it.
    f.engine.execute(job, "busy", Some(three_records())).await.unwrap();
    let first_done = f.engine.get_run(&f.tenant, first).await.unwrap();
    assert_eq!(first_done.status, RunStatus::Completed);
    let second = f.execute_next(three_records(), frostbyte_core::now()).await.expect("released");
    assert_eq!((second.run_id, second.status), (waiting.run_id, RunStatus::Completed));
    assert!(second.started_at.unwrap() >= first_done.completed_at.unwrap());
    assert_eq!(f.engine.try_run_one("w").await.unwrap(), RunOnce::Idle);
}

#[tokio::test]
async fn cancelling_a_pending_run_notifies_cancelled_webhooks() {
    let (url, received) = endpoint(0).await;
    let def = hooked(&url, "cancelled", "ACME_HOOK");
    let f = Fixture::new(hook_settings(), &[("ops/hooked.yml", &def)]).await;
    let run = f.engine.create_run(&f.tenant, "ops", "hooked", Map::new(), "test").await.unwrap();
    f.engine.cancel(&f.tenant, run.run_id, "admin").await.unwrap();
    assert_eq!(f.engine.deliver_due(frostbyte_core::now()).await.unwrap(), 1);
    let d = &f.engine.list_deliveries(&f.tenant, run.run_id).await.unwrap()[0];
    assert_eq!((d.status, d.attempts, d.last_status_code), (DeliveryStatus::Delivered, 1, Some(204)));
    let requests = received.requests.lock().unwrap().clone();
    let body: Value = serde_json::from_slice(&requests[0].1).unwrap();
    assert_eq!((body["event"].as_str(), body["status"].as_str()), (Some("cancelled"), Some("cancelled")));
}
