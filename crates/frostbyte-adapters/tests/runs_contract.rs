//! The `RunStore` contract (pipeline runs), one suite run against every adapter: SQLite always, PostgreSQL when
//! `FROSTBYTE_TEST_POSTGRES_URL` is set.

use std::time::Duration;

use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{
    AttemptRecord, DeliveryAttempt, DeliveryStatus, FollowUp, NewDelivery, NewRun, RunFilter, RunStatus, RunTransition,
    WebhookEvent,
};
use frostbyte_core::queue::{ClaimOptions, JobStatus, NewJob, Stage};
use frostbyte_core::{StoreError, TenantId};
use serde_json::json;
use uuid::Uuid;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    create_writes_run_job_and_audit_together,
    transitions_are_compare_and_set_with_timestamps,
    finishing_completes_the_job_in_the_same_transaction,
    cancel_is_immediate_when_pending_and_requested_when_running,
    history_filters_counts_and_tenant_isolation,
    schedules_are_stored_updated_and_fire_exactly_once,
    a_terminal_transition_writes_follow_ups_deliveries_and_notes_once,
    a_waiting_run_is_held_until_the_run_it_waits_for_ends,
    deliveries_are_leased_once_and_record_every_attempt,
    skipped_occurrences_are_claimed_once_and_audited,
);

fn event(kind: &str, run: Uuid) -> NewAuditEvent {
    NewAuditEvent::new(kind, "test", "pipeline_run", run.to_string(), json!({"component": "pipeline", "status": "ok"}))
}

async fn create(h: &Harness, t: &TenantId, pipeline: &str) -> frostbyte_core::pipelines::PipelineRun {
    let run_id = frostbyte_core::ids::new_id();
    let new = NewRun::new(run_id, "audit", pipeline, json!({"limit": 3}).as_object().unwrap().clone(), "test");
    let job =
        NewJob::new(Stage::Pipeline, run_id.to_string(), json!({"run_id": run_id})).dedupe_key(format!("run:{run_id}"));
    h.runs().create_run(t, new, job, event("PIPELINE_RUN_CREATED", run_id)).await.expect("create run")
}

async fn event_types(h: &Harness, t: &TenantId) -> Vec<String> {
    h.store.audit_after(t, 0, 10_000).await.unwrap().into_iter().map(|e| e.event_type).collect()
}

async fn create_writes_run_job_and_audit_together(h: &Harness) {
    let t = tenant(h, "runs").await;
    let run = create(h, &t, "export").await;
    assert_eq!(run.status, RunStatus::Pending);
    let stored = h.runs().get_run(&t, run.run_id).await.unwrap().expect("stored");
    assert_eq!(stored, run);
    assert_eq!(stored.parameters["limit"], json!(3));
    let job = h.queue().get_job(&t, run.job_id).await.unwrap().expect("job");
    assert_eq!((job.stage, job.status), (Stage::Pipeline, JobStatus::Queued));
    assert_eq!(job.resource_id, run.run_id.to_string());
    assert!(event_types(h, &t).await.contains(&"PIPELINE_RUN_CREATED".to_owned()));

    // An unknown tenant writes nothing.
    let ghost = tid("ghost");
    let run_id = frostbyte_core::ids::new_id();
    let new = NewRun::new(run_id, "a", "b", Default::default(), "t");
    let err = h
        .runs()
        .create_run(&ghost, new, NewJob::new(Stage::Pipeline, run_id.to_string(), json!({})), event("X", run_id))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

async fn transitions_are_compare_and_set_with_timestamps(h: &Harness) {
    let t = tenant(h, "runs").await;
    let run = create(h, &t, "export").await;
    let runs = h.runs();
    let illegal = runs
        .transition_run(
            &t,
            run.run_id,
            RunTransition::to(RunStatus::Completed),
            event("PIPELINE_RUN_COMPLETED", run.run_id),
        )
        .await
        .unwrap_err();
    assert!(matches!(illegal, StoreError::Conflict(_)), "{illegal:?}");
    let v = runs
        .transition_run(
            &t,
            run.run_id,
            RunTransition::to(RunStatus::Validating),
            event("PIPELINE_RUN_VALIDATING", run.run_id),
        )
        .await
        .unwrap();
    assert_eq!(v.status, RunStatus::Validating);
    assert!(v.started_at.is_none());
    let r = runs
        .transition_run(
            &t,
            run.run_id,
            RunTransition::to(RunStatus::Running),
            event("PIPELINE_RUN_STARTED", run.run_id),
        )
        .await
        .unwrap();
    assert!(r.started_at.is_some());
    runs.record_progress(&t, run.run_id, 0.5, 7).await.unwrap();
    let mid = runs.get_run(&t, run.run_id).await.unwrap().unwrap();
    assert_eq!((mid.progress, mid.records_processed), (0.5, 7));
    let f = runs
        .transition_run(
            &t,
            run.run_id,
            RunTransition::to(RunStatus::Failed).error("timed out after 5 s").records(9),
            event("PIPELINE_RUN_FAILED", run.run_id),
        )
        .await
        .unwrap();
    assert_eq!(f.error_message.as_deref(), Some("timed out after 5 s"));
    assert_eq!(f.records_processed, 9);
    assert!(f.completed_at.is_some());
    let again = runs
        .transition_run(
            &t,
            run.run_id,
            RunTransition::to(RunStatus::Running),
            event("PIPELINE_RUN_STARTED", run.run_id),
        )
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)));
    let stored = runs.get_run(&t, run.run_id).await.unwrap().unwrap();
    assert_eq!(stored, f, "a refused transition changes nothing");
    let types = event_types(h, &t).await;
    for ty in ["PIPELINE_RUN_VALIDATING", "PIPELINE_RUN_STARTED", "PIPELINE_RUN_FAILED"] {
        assert_eq!(types.iter().filter(|x| *x == ty).count(), 1, "{ty} once: {types:?}");
    }
}

async fn finishing_completes_the_job_in_the_same_transaction(h: &Harness) {
    let t = tenant(h, "runs").await;
    let run = create(h, &t, "export").await;
    let runs = h.runs();
    let opts = ClaimOptions::new("w1", Duration::from_secs(60), 4).stages([Stage::Pipeline]);
    let job = h.queue().claim(&opts, frostbyte_core::now()).await.unwrap().expect("claim");
    assert_eq!(job.job_id, run.job_id);
    for to in [RunStatus::Validating, RunStatus::Running] {
        runs.transition_run(&t, run.run_id, RunTransition::to(to), event("E", run.run_id)).await.unwrap();
    }
    // A worker that does not hold the lease commits nothing.
    let wrong = RunTransition::to(RunStatus::Completed).completes_job(run.job_id, "w2");
    let e = runs.transition_run(&t, run.run_id, wrong, event("PIPELINE_RUN_COMPLETED", run.run_id)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert_eq!(runs.get_run(&t, run.run_id).await.unwrap().unwrap().status, RunStatus::Running);
    let right = RunTransition::to(RunStatus::Completed).records(3).completes_job(run.job_id, "w1");
    let done = runs.transition_run(&t, run.run_id, right, event("PIPELINE_RUN_COMPLETED", run.run_id)).await.unwrap();
    assert_eq!((done.status, done.progress, done.records_processed), (RunStatus::Completed, 1.0, 3));
    let job = h.queue().get_job(&t, run.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
}

async fn cancel_is_immediate_when_pending_and_requested_when_running(h: &Harness) {
    let t = tenant(h, "runs").await;
    let runs = h.runs();
    let pending = create(h, &t, "export").await;
    let c = runs.request_cancel(&t, pending.run_id, "admin", Vec::new()).await.unwrap();
    assert_eq!(c.status, RunStatus::Cancelled);
    assert!(c.completed_at.is_some());
    let job = h.queue().get_job(&t, pending.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "the queued job has nothing left to do");

    let running = create(h, &t, "export").await;
    for to in [RunStatus::Validating, RunStatus::Running] {
        runs.transition_run(&t, running.run_id, RunTransition::to(to), event("E", running.run_id)).await.unwrap();
    }
    let r = runs.request_cancel(&t, running.run_id, "admin", Vec::new()).await.unwrap();
    assert_eq!(r.status, RunStatus::Running);
    assert!(r.cancel_requested);
    // Asking twice, or cancelling a finished run, changes nothing and audits nothing more.
    let before = event_types(h, &t).await.len();
    runs.request_cancel(&t, running.run_id, "admin", Vec::new()).await.unwrap();
    runs.request_cancel(&t, pending.run_id, "admin", Vec::new()).await.unwrap();
    assert_eq!(event_types(h, &t).await.len(), before);
    let types = event_types(h, &t).await;
    assert!(types.contains(&"PIPELINE_RUN_CANCELLED".to_owned()));
    assert!(types.contains(&"PIPELINE_RUN_CANCEL_REQUESTED".to_owned()));
}

async fn history_filters_counts_and_tenant_isolation(h: &Harness) {
    let t = tenant(h, "runs").await;
    let other = tenant(h, "other").await;
    let runs = h.runs();
    let since = frostbyte_core::now();
    let a = create(h, &t, "export").await;
    let b = create(h, &t, "copy").await;
    let foreign = create(h, &other, "export").await;
    runs.request_cancel(&t, b.run_id, "admin", Vec::new()).await.unwrap();

    let all = runs.list_runs(&t, &RunFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|r| r.run_id).collect::<Vec<_>>(), vec![b.run_id, a.run_id], "newest first");
    let by_name = RunFilter { pipeline: Some("audit/export".into()), limit: 10, ..Default::default() };
    assert_eq!(runs.list_runs(&t, &by_name).await.unwrap().len(), 1);
    let by_bare_name = RunFilter { pipeline: Some("copy".into()), limit: 10, ..Default::default() };
    assert_eq!(runs.list_runs(&t, &by_bare_name).await.unwrap()[0].run_id, b.run_id);
    let by_status = RunFilter { status: Some(RunStatus::Cancelled), limit: 10, ..Default::default() };
    assert_eq!(runs.list_runs(&t, &by_status).await.unwrap()[0].run_id, b.run_id);
    assert_eq!(runs.list_runs(&t, &RunFilter { limit: 1, ..Default::default() }).await.unwrap().len(), 1);

    assert_eq!(runs.count_runs_since(&t, since).await.unwrap(), 2);
    assert!(runs.get_run(&t, foreign.run_id).await.unwrap().is_none(), "another tenant's run is invisible");
    let e = runs.request_cancel(&t, foreign.run_id, "admin", Vec::new()).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }));

    let unfinished: Vec<Uuid> = runs.unfinished_runs().await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert!(unfinished.contains(&a.run_id) && unfinished.contains(&foreign.run_id));
    assert!(!unfinished.contains(&b.run_id));
}

async fn schedules_are_stored_updated_and_fire_exactly_once(h: &Harness) {
    use frostbyte_core::pipelines::{Schedule, ScheduleChange};
    let t = tenant(h, "sched").await;
    let other = tenant(h, "other").await;
    let store = h.schedules();
    let now = frostbyte_core::now();
    let due_at = now - chrono::Duration::minutes(5);
    let s = Schedule {
        schedule_id: frostbyte_core::ids::new_id(),
        tenant_id: t.clone(),
        pipeline: "audit/export".into(),
        cron_expression: "0 2 * * *".into(),
        timezone: "UTC".into(),
        parameters: json!({"event_types": "X"}).as_object().unwrap().clone(),
        is_enabled: true,
        last_run_at: None,
        last_run_id: None,
        next_run_at: Some(due_at),
        overlap: frostbyte_core::pipelines::Overlap::Skip,
        last_skipped_at: None,
        skipped_count: 0,
        created_at: now,
        updated_at: now,
    };
    store.create_schedule(&s, event("PIPELINE_SCHEDULE_CREATED", s.schedule_id)).await.unwrap();
    assert_eq!(store.get_schedule(&t, s.schedule_id).await.unwrap().unwrap(), s);
    assert_eq!(store.list_schedules(&t).await.unwrap().len(), 1);
    assert!(store.get_schedule(&other, s.schedule_id).await.unwrap().is_none());
    assert!(store.list_schedules(&other).await.unwrap().is_empty());

    let due = store.due_schedules(now, 10).await.unwrap();
    assert_eq!(due.iter().filter(|d| d.schedule_id == s.schedule_id).count(), 1);
    // Two schedulers race for the same occurrence: exactly one wins.
    let next = due_at + chrono::Duration::days(1);
    let (a, b) = tokio::join!(
        store.claim_fire(&t, s.schedule_id, due_at, next, now),
        store.claim_fire(&t, s.schedule_id, due_at, next, now)
    );
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|w| **w).count(), 1, "one winner");
    let fired = store.get_schedule(&t, s.schedule_id).await.unwrap().unwrap();
    assert_eq!((fired.next_run_at, fired.last_run_at), (Some(next), Some(now)));
    assert!(store.due_schedules(now, 10).await.unwrap().iter().all(|d| d.schedule_id != s.schedule_id));
    let run = frostbyte_core::ids::new_id();
    store.record_fired_run(&t, s.schedule_id, run).await.unwrap();
    assert_eq!(store.get_schedule(&t, s.schedule_id).await.unwrap().unwrap().last_run_id, Some(run));

    let off = ScheduleChange { is_enabled: Some(false), next_run_at: Some(None), ..Default::default() };
    let updated =
        store.update_schedule(&t, s.schedule_id, off, event("PIPELINE_SCHEDULE_UPDATED", s.schedule_id)).await.unwrap();
    assert!(!updated.is_enabled && updated.next_run_at.is_none());
    assert!(!store.claim_fire(&t, s.schedule_id, next, next, now).await.unwrap(), "a disabled schedule never fires");
    let e = store
        .update_schedule(&other, s.schedule_id, ScheduleChange::default(), event("X", s.schedule_id))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }));
    let e = store.delete_schedule(&other, s.schedule_id, event("X", s.schedule_id)).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }));
    store.delete_schedule(&t, s.schedule_id, event("PIPELINE_SCHEDULE_DELETED", s.schedule_id)).await.unwrap();
    assert!(store.get_schedule(&t, s.schedule_id).await.unwrap().is_none());
    let types = event_types(h, &t).await;
    for ty in ["PIPELINE_SCHEDULE_CREATED", "PIPELINE_SCHEDULE_UPDATED", "PIPELINE_SCHEDULE_DELETED"] {
        assert!(types.contains(&ty.to_owned()), "{ty}");
    }
}

fn follow_up(t: &TenantId, parent: Uuid, index: u32) -> FollowUp {
    let run_id = frostbyte_core::ids::new_id();
    let mut run = NewRun::new(run_id, "records", "copy", Default::default(), format!("chain:{parent}"));
    run.parent_run_id = Some(parent);
    run.chain_index = Some(index);
    run.chain_depth = 1;
    let _ = t;
    let job = NewJob::new(Stage::Pipeline, run_id.to_string(), json!({})).dedupe_key(format!("run:{run_id}"));
    FollowUp { run, job, audit: event("PIPELINE_RUN_CREATED", run_id) }
}

async fn to_running(h: &Harness, t: &TenantId, run: Uuid) {
    for s in [RunStatus::Validating, RunStatus::Running] {
        h.runs().transition_run(t, run, RunTransition::to(s), event("X", run)).await.unwrap();
    }
}

async fn a_terminal_transition_writes_follow_ups_deliveries_and_notes_once(h: &Harness) {
    let t = tenant(h, "chain").await;
    let other = tenant(h, "other").await;
    let runs = h.runs();
    let parent = create(h, &t, "export").await;
    to_running(h, &t, parent.run_id).await;
    let mut done = RunTransition::to(RunStatus::Completed).records(4);
    done.follow_ups = vec![follow_up(&t, parent.run_id, 0), follow_up(&t, parent.run_id, 1)];
    done.deliveries = vec![NewDelivery {
        delivery_id: frostbyte_core::ids::new_id(),
        url: "https://hooks.example.com/x".into(),
        event: WebhookEvent::Completed,
        secret_env: Some("HOOK".into()),
    }];
    done.notes = vec![event("PIPELINE_CHAIN_REFUSED", parent.run_id)];
    let retry = done.clone();
    runs.transition_run(&t, parent.run_id, done, event("PIPELINE_RUN_COMPLETED", parent.run_id)).await.unwrap();
    // A second terminal transition (a duplicate worker) is refused and writes nothing more.
    let again = runs.transition_run(&t, parent.run_id, retry, event("X", parent.run_id)).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");

    let children = runs.follow_ups(&t, parent.run_id).await.unwrap();
    assert_eq!(children.len(), 2);
    for c in &children {
        assert_eq!((c.status, c.parent_run_id, c.chain_depth), (RunStatus::Pending, Some(parent.run_id), 1));
        assert_eq!(c.triggered_by, format!("chain:{}", parent.run_id));
        let job = h.queue().get_job(&t, c.job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Queued);
    }
    assert!(runs.follow_ups(&other, parent.run_id).await.unwrap().is_empty());
    let deliveries = runs.list_deliveries(&t, parent.run_id).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!((deliveries[0].status, deliveries[0].attempts), (DeliveryStatus::Pending, 0));
    assert!(runs.list_deliveries(&other, parent.run_id).await.unwrap().is_empty());
    let types = event_types(h, &t).await;
    assert_eq!(types.iter().filter(|t| *t == "PIPELINE_CHAIN_REFUSED").count(), 1);

    // A pending run cancelled at once gets its deliveries in the same transaction.
    let p = create(h, &t, "export").await;
    let d = NewDelivery {
        delivery_id: frostbyte_core::ids::new_id(),
        url: "https://hooks.example.com/y".into(),
        event: WebhookEvent::Cancelled,
        secret_env: None,
    };
    runs.request_cancel(&t, p.run_id, "admin", vec![d]).await.unwrap();
    let ds = runs.list_deliveries(&t, p.run_id).await.unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].event, WebhookEvent::Cancelled);
}

async fn a_waiting_run_is_held_until_the_run_it_waits_for_ends(h: &Harness) {
    let t = tenant(h, "queue").await;
    let runs = h.runs();
    let first = create(h, &t, "export").await;
    let opts = ClaimOptions::new("w", Duration::from_secs(60), 10).stages([Stage::Pipeline]);
    let job = h.queue().claim(&opts, frostbyte_core::now()).await.unwrap().expect("first job");
    assert_eq!(job.job_id, first.job_id);
    to_running(h, &t, first.run_id).await;

    let run_id = frostbyte_core::ids::new_id();
    let mut new = NewRun::new(run_id, "audit", "export", Default::default(), "schedule:x");
    new.waits_for = Some(first.run_id);
    let job = NewJob::new(Stage::Pipeline, run_id.to_string(), json!({})).dedupe_key(format!("run:{run_id}"));
    let second = runs.create_run(&t, new, job, event("PIPELINE_RUN_CREATED", run_id)).await.unwrap();
    assert_eq!(second.waits_for_run_id, Some(first.run_id));
    // (Within the first job's lease, so only the held job could be claimed.)
    let later = frostbyte_core::now() + chrono::Duration::seconds(30);
    assert!(h.queue().claim(&opts, later).await.unwrap().is_none(), "held while the first runs");

    let done = RunTransition::to(RunStatus::Completed).completes_job(first.job_id, "w");
    runs.transition_run(&t, first.run_id, done, event("PIPELINE_RUN_COMPLETED", first.run_id)).await.unwrap();
    let claimed = h.queue().claim(&opts, frostbyte_core::now() + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(claimed.map(|j| j.job_id), Some(second.job_id), "released by the first run's ending");

    // Waiting for a run that has already ended holds nothing.
    let run_id = frostbyte_core::ids::new_id();
    let mut new = NewRun::new(run_id, "audit", "export", Default::default(), "schedule:x");
    new.waits_for = Some(first.run_id);
    let job = NewJob::new(Stage::Pipeline, run_id.to_string(), json!({})).dedupe_key(format!("run:{run_id}"));
    let third = runs.create_run(&t, new, job, event("PIPELINE_RUN_CREATED", run_id)).await.unwrap();
    let claimed = h.queue().claim(&opts, frostbyte_core::now() + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(claimed.map(|j| j.job_id), Some(third.job_id));
}

async fn deliveries_are_leased_once_and_record_every_attempt(h: &Harness) {
    let t = tenant(h, "hooks").await;
    let other = tenant(h, "other").await;
    let runs = h.runs();
    let run = create(h, &t, "export").await;
    let id = frostbyte_core::ids::new_id();
    let d = NewDelivery {
        delivery_id: id,
        url: "http://127.0.0.1:9/h".into(),
        event: WebhookEvent::Cancelled,
        secret_env: None,
    };
    runs.request_cancel(&t, run.run_id, "admin", vec![d]).await.unwrap();
    let now = frostbyte_core::now() + chrono::Duration::seconds(1);
    let due = runs.due_deliveries(now, 10).await.unwrap();
    let mine = due.iter().find(|d| d.delivery_id == id).expect("due");
    let expected = mine.next_attempt_at.unwrap();
    let lease = now + chrono::Duration::seconds(60);
    let (a, b) =
        tokio::join!(runs.claim_delivery(&t, id, expected, lease), runs.claim_delivery(&t, id, expected, lease));
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|w| **w).count(), 1, "one sender");
    assert!(!runs.claim_delivery(&other, id, lease, lease).await.unwrap(), "another tenant's id");
    assert!(runs.due_deliveries(now, 10).await.unwrap().iter().all(|d| d.delivery_id != id), "leased");

    let retry_at = now + chrono::Duration::seconds(5);
    let failed = AttemptRecord {
        attempt: DeliveryAttempt {
            attempt: 1,
            attempted_at: now,
            status_code: Some(503),
            error: Some("the endpoint answered 503".into()),
            delivered: false,
        },
        status: DeliveryStatus::Pending,
        next_attempt_at: Some(retry_at),
    };
    let after =
        runs.record_delivery_attempt(&t, id, failed, event("PIPELINE_WEBHOOK_ATTEMPT_FAILED", id)).await.unwrap();
    assert_eq!((after.status, after.attempts, after.last_status_code), (DeliveryStatus::Pending, 1, Some(503)));
    assert_eq!(after.next_attempt_at, Some(retry_at));
    let ok = AttemptRecord {
        attempt: DeliveryAttempt {
            attempt: 2,
            attempted_at: retry_at,
            status_code: Some(200),
            error: None,
            delivered: true,
        },
        status: DeliveryStatus::Delivered,
        next_attempt_at: None,
    };
    runs.record_delivery_attempt(&t, id, ok.clone(), event("PIPELINE_WEBHOOK_DELIVERED", id)).await.unwrap();
    let e = runs.record_delivery_attempt(&t, id, ok, event("X", id)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "a finished delivery takes no more attempts: {e:?}");
    let e = runs
        .record_delivery_attempt(
            &other,
            id,
            AttemptRecord {
                attempt: DeliveryAttempt {
                    attempt: 3,
                    attempted_at: now,
                    status_code: None,
                    error: None,
                    delivered: true,
                },
                status: DeliveryStatus::Delivered,
                next_attempt_at: None,
            },
            event("X", id),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }));

    let listed = runs.list_deliveries(&t, run.run_id).await.unwrap();
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!((d.status, d.attempts, d.next_attempt_at), (DeliveryStatus::Delivered, 2, None));
    assert_eq!(d.delivered_at, Some(retry_at));
    let log: Vec<(u32, Option<u16>, bool)> =
        d.attempt_log.iter().map(|a| (a.attempt, a.status_code, a.delivered)).collect();
    assert_eq!(log, [(1, Some(503), false), (2, Some(200), true)]);
    assert_eq!(d.attempt_log[0].error.as_deref(), Some("the endpoint answered 503"));
    let types = event_types(h, &t).await;
    assert!(types.contains(&"PIPELINE_WEBHOOK_DELIVERED".to_owned()));

    // Deprovisioning erases the tenant's deliveries and attempts with its runs.
    let audit: frostbyte_core::lifecycle::PurgeAudit =
        Box::new(|_| NewAuditEvent::new("TENANT_DATA_ERASED", "test", "tenant", "hooks", json!({"component": "test"})));
    h.store.purge_tenant(&t, audit).await.unwrap();
    assert!(runs.list_deliveries(&t, run.run_id).await.unwrap().is_empty());
    assert!(runs.get_run(&t, run.run_id).await.unwrap().is_none());
}

async fn skipped_occurrences_are_claimed_once_and_audited(h: &Harness) {
    use frostbyte_core::pipelines::{Overlap, Schedule};
    let t = tenant(h, "skip").await;
    let store = h.schedules();
    let now = frostbyte_core::now();
    let due_at = now - chrono::Duration::minutes(1);
    let s = Schedule {
        schedule_id: frostbyte_core::ids::new_id(),
        tenant_id: t.clone(),
        pipeline: "audit/export".into(),
        cron_expression: "* * * * *".into(),
        timezone: "Europe/Berlin".into(),
        parameters: Default::default(),
        is_enabled: true,
        last_run_at: None,
        last_run_id: None,
        next_run_at: Some(due_at),
        overlap: Overlap::Queue,
        last_skipped_at: None,
        skipped_count: 0,
        created_at: now,
        updated_at: now,
    };
    store.create_schedule(&s, event("PIPELINE_SCHEDULE_CREATED", s.schedule_id)).await.unwrap();
    assert_eq!(store.get_schedule(&t, s.schedule_id).await.unwrap().unwrap().overlap, Overlap::Queue);
    let next = now + chrono::Duration::minutes(1);
    let (a, b) = tokio::join!(
        store.claim_skip(&t, s.schedule_id, due_at, next, now, event("PIPELINE_SCHEDULE_SKIPPED", s.schedule_id)),
        store.claim_skip(&t, s.schedule_id, due_at, next, now, event("PIPELINE_SCHEDULE_SKIPPED", s.schedule_id))
    );
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|w| **w).count(), 1, "one winner");
    let after = store.get_schedule(&t, s.schedule_id).await.unwrap().unwrap();
    assert_eq!((after.next_run_at, after.last_skipped_at, after.skipped_count), (Some(next), Some(now), 1));
    assert_eq!(after.last_run_at, None, "a skip is not a run");
    let types = event_types(h, &t).await;
    assert_eq!(types.iter().filter(|t| *t == "PIPELINE_SCHEDULE_SKIPPED").count(), 1);
}
