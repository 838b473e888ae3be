//! The `RunStore` contract (pipeline runs), one suite run against every adapter: SQLite always, PostgreSQL when
//! `FROSTBYTE_TEST_POSTGRES_URL` is set.

use std::time::Duration;

use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{NewRun, RunFilter, RunStatus, RunTransition};
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
);

fn event(kind: &str, run: Uuid) -> NewAuditEvent {
    NewAuditEvent::new(kind, "test", "pipeline_run", run.to_string(), json!({"component": "pipeline", "status": "ok"}))
}

async fn create(h: &Harness, t: &TenantId, pipeline: &str) -> frostbyte_core::pipelines::PipelineRun {
    let run_id = frostbyte_core::ids::new_id();
    let new = NewRun {
        run_id,
        domain: "audit".into(),
        pipeline: pipeline.into(),
        parameters: json!({"limit": 3}).as_object().unwrap().clone(),
        triggered_by: "test".into(),
    };
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
    let new = NewRun {
        run_id,
        domain: "a".into(),
        pipeline: "b".into(),
        parameters: Default::default(),
        triggered_by: "t".into(),
    };
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
    let c = runs.request_cancel(&t, pending.run_id, "admin").await.unwrap();
    assert_eq!(c.status, RunStatus::Cancelled);
    assert!(c.completed_at.is_some());
    let job = h.queue().get_job(&t, pending.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "the queued job has nothing left to do");

    let running = create(h, &t, "export").await;
    for to in [RunStatus::Validating, RunStatus::Running] {
        runs.transition_run(&t, running.run_id, RunTransition::to(to), event("E", running.run_id)).await.unwrap();
    }
    let r = runs.request_cancel(&t, running.run_id, "admin").await.unwrap();
    assert_eq!(r.status, RunStatus::Running);
    assert!(r.cancel_requested);
    // Asking twice, or cancelling a finished run, changes nothing and audits nothing more.
    let before = event_types(h, &t).await.len();
    runs.request_cancel(&t, running.run_id, "admin").await.unwrap();
    runs.request_cancel(&t, pending.run_id, "admin").await.unwrap();
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
    runs.request_cancel(&t, b.run_id, "admin").await.unwrap();

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
    let e = runs.request_cancel(&t, foreign.run_id, "admin").await.unwrap_err();
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
