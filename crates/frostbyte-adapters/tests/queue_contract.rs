//! The `JobQueue` contract, one suite run against every adapter: SQLite always (a fresh database file per test),
//! PostgreSQL when `FROSTBYTE_TEST_POSTGRES_URL` is set (a fresh schema per test, dropped afterwards).
//!
//! Time is passed explicitly (`claim(opts, now)`), so lease expiry and backoff are tested without sleeping.
//!
//! ```sh
//! createdb -h 127.0.0.1 -U postgres fb_queue
//! FROSTBYTE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/fb_queue \
//!     cargo test -p frostbyte-adapters --test queue_contract
//! ```

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use frostbyte_core::audit::{AuditEvent, ChainVerifier, NewAuditEvent};
use frostbyte_core::page::PageRequest;
use frostbyte_core::queue::{
    ClaimOptions, DlqEntry, FailOutcome, Job, JobError, JobStatus, NewJob, RetryPolicy, RunOnce, Stage, StageRetry,
    try_run_one, try_run_one_at,
};
use frostbyte_core::tenant::TenantState;
use frostbyte_core::{StoreError, TenantId};
use serde_json::json;
use uuid::Uuid;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    enqueue_claim_complete,
    enqueue_for_an_unknown_tenant_is_not_found,
    dedupe_key_makes_enqueue_idempotent,
    concurrent_enqueues_of_one_key_make_one_job,
    claim_filters_by_stage,
    expired_leases_are_reclaimed_by_another_worker,
    heartbeat_extends_the_lease_for_its_owner_only,
    failures_back_off_per_stage_then_dead_letter,
    policy_stage_dead_letters_after_two_retries,
    compressed_backoff_for_tests,
    stored_error_messages_are_truncated,
    crashed_job_with_spent_attempts_is_dead_lettered_on_reclaim,
    dead_letters_can_be_retried_or_abandoned,
    dead_letter_list_pages_newest_first,
    another_tenants_job_is_not_found,
    suspended_tenants_jobs_are_not_claimed,
    per_tenant_cap_is_respected,
    batch_claims_take_one_tenants_most_advanced_stage_within_its_cap,
    per_tenant_cap_holds_under_concurrent_claimers,
    busy_tenant_cannot_starve_a_small_one,
    idle_workers_serve_tenants_round_robin,
    concurrent_claimers_process_each_job_exactly_once,
    try_run_one_runs_or_idles,
    queue_events_keep_the_audit_chain_valid,
    queue_stats_count_by_status_and_stage,
);

// --- helpers ---------------------------------------------------------------------------------------------------

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `t + n` seconds.
fn at(t: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    t + chrono::Duration::seconds(n)
}

/// A time after every job enqueued so far and in the next minute (enqueue stamps `run_after` with the real
/// clock).
fn later() -> DateTime<Utc> {
    frostbyte_core::now() + chrono::Duration::seconds(60)
}

fn event(event_type: &str, resource_id: &str) -> NewAuditEvent {
    NewAuditEvent::new(event_type, "test", "tenant", resource_id, json!({"component": "test", "status": "ok"}))
}

fn parse_job(n: usize) -> NewJob {
    NewJob::new(Stage::Parse, format!("doc-{n}"), json!({"n": n, "sha256": "ab12"}))
}

async fn enqueue_n(h: &Harness, tenant: &TenantId, n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for i in 0..n {
        jobs.push(h.store.enqueue(tenant, parse_job(i)).await.expect("enqueue"));
    }
    jobs
}

fn opts(worker: &str) -> ClaimOptions {
    ClaimOptions::new(worker, secs(30), 100)
}

async fn claim(h: &Harness, o: &ClaimOptions, now: DateTime<Utc>) -> Option<Job> {
    h.store.claim(o, now).await.expect("claim")
}

async fn job(h: &Harness, tenant: &TenantId, id: Uuid) -> Job {
    h.store.get_job(tenant, id).await.expect("get_job").expect("job exists")
}

async fn events_of(h: &Harness, tenant: &TenantId, event_type: &str) -> Vec<AuditEvent> {
    let all = h.store.audit_after(tenant, 0, 10_000).await.expect("audit_after");
    all.into_iter().filter(|e| e.event_type == event_type).collect()
}

fn assert_kind<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: &str) {
    let kind = match &result {
        Err(StoreError::NotFound { .. }) => "not_found",
        Err(StoreError::AlreadyExists { .. }) => "already_exists",
        Err(StoreError::Conflict(_)) => "conflict",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Internal(_)) => "internal",
        Ok(_) => "ok",
    };
    assert_eq!(kind, expected, "{result:?}");
}

/// Claims and fails a job until it is dead-lettered, under a one-attempt policy.
async fn dead_job(h: &Harness, tenant: &TenantId, n: usize, now: DateTime<Utc>) -> Job {
    let enqueued = h.store.enqueue(tenant, parse_job(n)).await.unwrap();
    let once = RetryPolicy::uniform(StageRetry::new(1, vec![]));
    let o = opts("w").stages([Stage::Parse]);
    let claimed = claim(h, &o, now).await.expect("a job to claim");
    assert_eq!(claimed.job_id, enqueued.job_id);
    let outcome = h.store.fail(claimed.job_id, "w", JobError::new("PARSE_FAILED", "bad xref table"), &once, now).await;
    assert_eq!(outcome.unwrap(), FailOutcome::DeadLettered);
    job(h, tenant, claimed.job_id).await
}

// --- the contract ----------------------------------------------------------------------------------------------

async fn enqueue_claim_complete(h: &Harness) {
    let t = tenant(h, "basic").await;
    let enqueued = h.store.enqueue(&t, parse_job(1)).await.unwrap();
    assert_eq!(enqueued.status, JobStatus::Queued);
    assert_eq!((enqueued.attempts, enqueued.max_attempts), (0, 4));
    assert_eq!(enqueued.tenant_id, t);
    assert_eq!(enqueued.payload, json!({"n": 1, "sha256": "ab12"}));
    assert_eq!(job(h, &t, enqueued.job_id).await, enqueued, "a job round-trips exactly");

    let now = later();
    let claimed = claim(h, &opts("w1"), now).await.expect("the job is claimable");
    assert_eq!(claimed.job_id, enqueued.job_id);
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.lease_owner.as_deref(), Some("w1"));
    assert_eq!(claimed.lease_expires_at, Some(at(now, 30)));
    assert_eq!((claimed.first_attempt_at, claimed.last_attempt_at), (Some(now), Some(now)));
    assert_eq!(job(h, &t, claimed.job_id).await, claimed);
    assert!(claim(h, &opts("w2"), now).await.is_none(), "a leased job is not claimed twice");

    assert_kind(h.store.complete(claimed.job_id, "w2").await, "conflict");
    h.store.complete(claimed.job_id, "w1").await.unwrap();
    let done = job(h, &t, claimed.job_id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!((done.lease_owner, done.lease_expires_at), (None, None));
    assert!(done.finished_at.is_some());
    assert_kind(h.store.complete(claimed.job_id, "w1").await, "conflict");
    assert_kind(h.store.complete(Uuid::now_v7(), "w1").await, "not_found");
    assert!(claim(h, &opts("w1"), at(now, 3600)).await.is_none(), "a succeeded job is never claimed again");

    // A job scheduled for later waits for its time.
    let delayed = h.store.enqueue(&t, parse_job(2).run_after(at(now, 100))).await.unwrap();
    assert!(claim(h, &opts("w1"), at(now, 99)).await.is_none());
    assert_eq!(claim(h, &opts("w1"), at(now, 100)).await.unwrap().job_id, delayed.job_id);
}

async fn enqueue_for_an_unknown_tenant_is_not_found(h: &Harness) {
    assert_kind(h.store.enqueue(&tid("absent"), parse_job(1)).await, "not_found");
}

async fn dedupe_key_makes_enqueue_idempotent(h: &Harness) {
    let t = tenant(h, "dedupe").await;
    let other = tenant(h, "dedupe").await;
    let first = h.store.enqueue(&t, parse_job(1).dedupe_key("parse:ab12:v1")).await.unwrap();
    let again = h.store.enqueue(&t, parse_job(2).dedupe_key("parse:ab12:v1")).await.unwrap();
    assert_eq!(again, first, "the same key returns the existing job unchanged");
    let elsewhere = h.store.enqueue(&other, parse_job(1).dedupe_key("parse:ab12:v1")).await.unwrap();
    assert_ne!(elsewhere.job_id, first.job_id, "keys are unique per tenant");
    let unkeyed = h.store.enqueue(&t, parse_job(1)).await.unwrap();
    assert_ne!(unkeyed.job_id, first.job_id, "jobs without a key never collide");

    // Still a no-op once the job has run.
    while let Some(claimed) = claim(h, &opts("w"), later()).await {
        h.store.complete(claimed.job_id, "w").await.unwrap();
    }
    let after = h.store.enqueue(&t, parse_job(3).dedupe_key("parse:ab12:v1")).await.unwrap();
    assert_eq!((after.job_id, after.status), (first.job_id, JobStatus::Succeeded));
    assert_eq!(h.store.queue_stats().await.unwrap().total.queued, 0, "a duplicate key adds no job");
}

async fn concurrent_enqueues_of_one_key_make_one_job(h: &Harness) {
    let t = tenant(h, "dedupe-race").await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = h.store.clone();
            let t = t.clone();
            tokio::spawn(async move { store.enqueue(&t, parse_job(i).dedupe_key("same")).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().expect("enqueue").job_id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(h.store.queue_stats().await.unwrap().total.queued, 1);
}

async fn claim_filters_by_stage(h: &Harness) {
    let t = tenant(h, "stages").await;
    let parse = h.store.enqueue(&t, parse_job(1)).await.unwrap();
    let embed = h.store.enqueue(&t, NewJob::new(Stage::Embed, "doc-1", json!({"chunks": 3}))).await.unwrap();
    let now = later();
    let embedder = opts("e").stages([Stage::Embed, Stage::Index]);
    assert_eq!(claim(h, &embedder, now).await.unwrap().job_id, embed.job_id);
    assert!(claim(h, &embedder, now).await.is_none(), "parse jobs are not the embedder's");
    assert_eq!(claim(h, &opts("any"), now).await.unwrap().job_id, parse.job_id);
}

async fn expired_leases_are_reclaimed_by_another_worker(h: &Harness) {
    let t = tenant(h, "lease").await;
    let enqueued = h.store.enqueue(&t, parse_job(1)).await.unwrap();
    let t0 = later();
    let first = claim(h, &opts("crashed"), t0).await.unwrap();
    assert!(claim(h, &opts("other"), at(t0, 29)).await.is_none(), "the lease still holds");

    let second = claim(h, &opts("other"), at(t0, 30)).await.expect("an expired lease is reclaimed");
    assert_eq!(second.job_id, enqueued.job_id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.lease_owner.as_deref(), Some("other"));
    assert_eq!(second.lease_expires_at, Some(at(t0, 60)));
    assert_eq!(second.first_attempt_at, first.first_attempt_at);
    assert_eq!(second.last_attempt_at, Some(at(t0, 30)));
    assert_eq!(second.last_error.as_ref().map(|e| e.code.as_str()), Some(JobError::LEASE_EXPIRED));

    // The worker that lost its lease can no longer touch the job.
    assert!(!h.store.heartbeat(first.job_id, "crashed", secs(30), at(t0, 31)).await.unwrap());
    assert_kind(h.store.complete(first.job_id, "crashed").await, "conflict");
    assert_kind(
        h.store.fail(first.job_id, "crashed", JobError::new("X", "late"), &RetryPolicy::default(), at(t0, 31)).await,
        "conflict",
    );
    h.store.complete(second.job_id, "other").await.unwrap();
    assert_eq!(job(h, &t, second.job_id).await.status, JobStatus::Succeeded);
}

async fn heartbeat_extends_the_lease_for_its_owner_only(h: &Harness) {
    let t = tenant(h, "heartbeat").await;
    h.store.enqueue(&t, parse_job(1)).await.unwrap();
    let t0 = later();
    let claimed = claim(h, &opts("w"), t0).await.unwrap();
    assert!(h.store.heartbeat(claimed.job_id, "w", secs(30), at(t0, 20)).await.unwrap());
    assert_eq!(job(h, &t, claimed.job_id).await.lease_expires_at, Some(at(t0, 50)));
    assert!(claim(h, &opts("x"), at(t0, 40)).await.is_none(), "the extended lease still holds at t0+40");
    assert!(!h.store.heartbeat(claimed.job_id, "x", secs(300), at(t0, 41)).await.unwrap(), "not the owner");
    assert_eq!(job(h, &t, claimed.job_id).await.lease_expires_at, Some(at(t0, 50)));
    assert!(!h.store.heartbeat(Uuid::now_v7(), "w", secs(30), t0).await.unwrap(), "no such job");
    h.store.complete(claimed.job_id, "w").await.unwrap();
    assert!(!h.store.heartbeat(claimed.job_id, "w", secs(30), at(t0, 42)).await.unwrap(), "finished");
}

async fn failures_back_off_per_stage_then_dead_letter(h: &Harness) {
    let t = tenant(h, "backoff").await;
    let enqueued = h.store.enqueue(&t, parse_job(7)).await.unwrap();
    let policy = RetryPolicy::default(); // parse: 3 retries after 10 s / 60 s / 300 s
    let o = opts("w");
    let t0 = later();

    let c1 = claim(h, &o, t0).await.unwrap();
    let r1 = h.store.fail(c1.job_id, "w", JobError::new("PARSE_TIMEOUT", "timed out after 30 s"), &policy, at(t0, 1));
    assert_eq!(r1.await.unwrap(), FailOutcome::Retrying { run_after: at(t0, 11) });
    let j = job(h, &t, enqueued.job_id).await;
    assert_eq!((j.status, j.attempts, j.lease_owner.as_deref()), (JobStatus::Queued, 1, None));
    assert_eq!(j.last_error, Some(JobError::new("PARSE_TIMEOUT", "timed out after 30 s")));
    assert!(claim(h, &o, at(t0, 10)).await.is_none(), "backing off");

    let c2 = claim(h, &o, at(t0, 11)).await.unwrap();
    assert_eq!(c2.attempts, 2);
    let r2 = h.store.fail(c2.job_id, "w", JobError::new("PARSE_TIMEOUT", "again"), &policy, at(t0, 12));
    assert_eq!(r2.await.unwrap(), FailOutcome::Retrying { run_after: at(t0, 72) });
    assert!(claim(h, &o, at(t0, 71)).await.is_none());

    let c3 = claim(h, &o, at(t0, 72)).await.unwrap();
    assert_eq!(c3.attempts, 3);
    let r3 = h.store.fail(c3.job_id, "w", JobError::new("PARSE_TIMEOUT", "and again"), &policy, at(t0, 73));
    assert_eq!(r3.await.unwrap(), FailOutcome::Retrying { run_after: at(t0, 373) });
    assert!(claim(h, &o, at(t0, 372)).await.is_none());

    let c4 = claim(h, &o, at(t0, 373)).await.unwrap();
    assert_eq!(c4.attempts, 4);
    let r4 = h.store.fail(c4.job_id, "w", JobError::new("PARSE_CORRUPT", "xref table missing"), &policy, at(t0, 374));
    assert_eq!(r4.await.unwrap(), FailOutcome::DeadLettered);
    assert!(claim(h, &o, at(t0, 100_000)).await.is_none(), "dead jobs are never claimed");

    let dead = job(h, &t, enqueued.job_id).await;
    assert_eq!((dead.status, dead.attempts, dead.max_attempts), (JobStatus::Dead, 4, 4));
    assert_eq!(dead.last_error, Some(JobError::new("PARSE_CORRUPT", "xref table missing")));
    assert_eq!(dead.finished_at, Some(at(t0, 374)));
    assert_eq!((dead.first_attempt_at, dead.last_attempt_at), (Some(t0), Some(at(t0, 373))));

    let listed = h.store.list_dead(&t, PageRequest::new(1, 20)).await.unwrap();
    assert_eq!(listed.total, 1);
    let entry = DlqEntry::from(&listed.items[0]);
    assert_eq!(
        serde_json::to_value(&entry).unwrap(),
        json!({
            "dlq_entry_id": enqueued.job_id.to_string(),
            "stage": "parse",
            "resource_id": "doc-7",
            "retry_count": 4,
            "error": {"code": "PARSE_CORRUPT", "message": "xref table missing"},
            "first_attempt_at": serde_json::to_value(t0).unwrap(),
            "last_attempt_at": serde_json::to_value(at(t0, 373)).unwrap(),
            "status": "dead",
        })
    );

    let audited = events_of(h, &t, "JOB_DEAD_LETTERED").await;
    assert_eq!(audited.len(), 1);
    let e = &audited[0];
    assert_eq!((e.resource_type.as_str(), e.resource_id.as_str()), ("document", "doc-7"));
    assert_eq!(e.details["job_id"], json!(enqueued.job_id.to_string()));
    assert_eq!(e.details["error_code"], json!("PARSE_CORRUPT"));
    assert_eq!(e.details["attempts"], json!(4));
    assert!(!e.details.to_string().contains("xref"), "audit events carry the code, never the message");
}

async fn policy_stage_dead_letters_after_two_retries(h: &Harness) {
    let t = tenant(h, "policy").await;
    let enqueued = h.store.enqueue(&t, NewJob::new(Stage::Policy, "doc-1", json!({}))).await.unwrap();
    let policy = RetryPolicy::default();
    let t0 = later();
    let c1 = claim(h, &opts("w"), t0).await.unwrap();
    let r1 = h.store.fail(c1.job_id, "w", JobError::new("DETECTOR_MISSING", "no model"), &policy, t0).await;
    assert_eq!(r1.unwrap(), FailOutcome::Retrying { run_after: at(t0, 30) });
    let c2 = claim(h, &opts("w"), at(t0, 30)).await.unwrap();
    let r2 = h.store.fail(c2.job_id, "w", JobError::new("DETECTOR_MISSING", "no model"), &policy, at(t0, 30)).await;
    assert_eq!(r2.unwrap(), FailOutcome::Retrying { run_after: at(t0, 60) });
    let c3 = claim(h, &opts("w"), at(t0, 60)).await.unwrap();
    let r3 = h.store.fail(c3.job_id, "w", JobError::new("DETECTOR_MISSING", "no model"), &policy, at(t0, 60)).await;
    assert_eq!(r3.unwrap(), FailOutcome::DeadLettered);
    let dead = job(h, &t, enqueued.job_id).await;
    assert_eq!((dead.status, dead.attempts, dead.max_attempts), (JobStatus::Dead, 3, 3));
}

async fn compressed_backoff_for_tests(h: &Harness) {
    let t = tenant(h, "scaled").await;
    h.store.enqueue(&t, NewJob::new(Stage::Embed, "doc-1", json!({}))).await.unwrap();
    let policy = RetryPolicy::default().scaled(0.001);
    let t0 = later();
    let c = claim(h, &opts("w"), t0).await.unwrap();
    let outcome = h.store.fail(c.job_id, "w", JobError::new("EMBED_UNAVAILABLE", "503"), &policy, t0).await.unwrap();
    assert_eq!(outcome, FailOutcome::Retrying { run_after: t0 + chrono::Duration::milliseconds(10) });
}

async fn stored_error_messages_are_truncated(h: &Harness) {
    let t = tenant(h, "truncate").await;
    h.store.enqueue(&t, parse_job(1)).await.unwrap();
    let c = claim(h, &opts("w"), later()).await.unwrap();
    // Built by hand, past the constructor's truncation: the store truncates whatever it is given.
    let long = JobError { code: "C".repeat(200), message: "x".repeat(5_000) };
    h.store.fail(c.job_id, "w", long, &RetryPolicy::default(), later()).await.unwrap();
    let stored = job(h, &t, c.job_id).await.last_error.unwrap();
    assert_eq!(stored.message.chars().count(), JobError::MAX_MESSAGE_CHARS);
    assert_eq!(stored.code.chars().count(), JobError::MAX_CODE_CHARS);
}

async fn crashed_job_with_spent_attempts_is_dead_lettered_on_reclaim(h: &Harness) {
    let t = tenant(h, "poison").await;
    let enqueued = h.store.enqueue(&t, parse_job(1)).await.unwrap(); // 4 attempts
    let t0 = later();
    for i in 0..4 {
        let c = claim(h, &opts("w"), at(t0, 100 * i)).await.expect("reclaimed while attempts remain");
        assert_eq!(c.attempts, u32::try_from(i + 1).unwrap());
    }
    assert!(claim(h, &opts("w"), at(t0, 400)).await.is_none(), "a job that keeps killing its worker stops");
    let dead = job(h, &t, enqueued.job_id).await;
    assert_eq!((dead.status, dead.attempts), (JobStatus::Dead, 4));
    assert_eq!(dead.last_error.map(|e| e.code), Some(JobError::LEASE_EXPIRED.to_owned()));
    assert_eq!(dead.lease_owner, None);
    let audited = events_of(h, &t, "JOB_DEAD_LETTERED").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].details["error_code"], json!(JobError::LEASE_EXPIRED));
}

async fn dead_letters_can_be_retried_or_abandoned(h: &Harness) {
    let t = tenant(h, "dlq").await;
    let t0 = later();
    let first = dead_job(h, &t, 1, t0).await;
    let second = dead_job(h, &t, 2, t0).await;
    assert_eq!(h.store.list_dead(&t, PageRequest::new(1, 20)).await.unwrap().total, 2);

    let retried = h.store.retry_dead(&t, first.job_id, "key:ops").await.unwrap();
    assert_eq!((retried.status, retried.attempts), (JobStatus::Queued, 0));
    assert_eq!((retried.lease_owner, retried.finished_at, retried.first_attempt_at), (None, None, None));
    assert_eq!(retried.last_error, first.last_error, "the last error is kept for the record");
    assert_kind(h.store.retry_dead(&t, first.job_id, "key:ops").await, "conflict");
    assert_kind(h.store.abandon_dead(&t, first.job_id, "key:ops").await, "conflict");
    let reclaimed = claim(h, &opts("w"), later()).await.expect("a retried job is claimable at once");
    assert_eq!((reclaimed.job_id, reclaimed.attempts), (first.job_id, 1));
    h.store.complete(reclaimed.job_id, "w").await.unwrap();

    let abandoned = h.store.abandon_dead(&t, second.job_id, "admin").await.unwrap();
    assert_eq!(abandoned.status, JobStatus::Abandoned);
    let again = h.store.abandon_dead(&t, second.job_id, "admin").await.unwrap();
    assert_eq!(again, abandoned, "abandoning twice changes nothing");
    assert_kind(h.store.retry_dead(&t, second.job_id, "admin").await, "conflict");
    assert!(claim(h, &opts("w"), at(later(), 100_000)).await.is_none(), "abandoned jobs are never claimed");

    let listed = h.store.list_dead(&t, PageRequest::new(1, 20)).await.unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!((listed.items[0].job_id, listed.items[0].status), (second.job_id, JobStatus::Abandoned));

    let retried_events = events_of(h, &t, "DLQ_RETRIED").await;
    assert_eq!(retried_events.len(), 1);
    assert_eq!(retried_events[0].actor, "key:ops");
    assert_eq!(retried_events[0].details["job_id"], json!(first.job_id.to_string()));
    let abandoned_events = events_of(h, &t, "DLQ_ABANDONED").await;
    assert_eq!(abandoned_events.len(), 1, "audited once");
    assert_eq!(abandoned_events[0].resource_id, "doc-2");
    assert_eq!(events_of(h, &t, "JOB_DEAD_LETTERED").await.len(), 2);

    assert_kind(h.store.retry_dead(&t, Uuid::now_v7(), "admin").await, "not_found");
    assert_kind(h.store.abandon_dead(&t, Uuid::now_v7(), "admin").await, "not_found");
}

async fn dead_letter_list_pages_newest_first(h: &Harness) {
    let t = tenant(h, "dlq-pages").await;
    let t0 = later();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(dead_job(h, &t, i, at(t0, i64::try_from(i).unwrap())).await.job_id);
    }
    ids.reverse();
    let page1 = h.store.list_dead(&t, PageRequest::new(1, 2)).await.unwrap();
    let page3 = h.store.list_dead(&t, PageRequest::new(3, 2)).await.unwrap();
    assert_eq!((page1.total, page3.total), (5, 5));
    assert_eq!(page1.items.iter().map(|j| j.job_id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(page3.items.iter().map(|j| j.job_id).collect::<Vec<_>>(), ids[4..]);
}

async fn another_tenants_job_is_not_found(h: &Harness) {
    let owner = tenant(h, "owner").await;
    let intruder = tenant(h, "intruder").await;
    let dead = dead_job(h, &owner, 1, later()).await;
    assert!(h.store.get_job(&intruder, dead.job_id).await.unwrap().is_none());
    assert_kind(h.store.retry_dead(&intruder, dead.job_id, "admin").await, "not_found");
    assert_kind(h.store.abandon_dead(&intruder, dead.job_id, "admin").await, "not_found");
    assert_eq!(h.store.list_dead(&intruder, PageRequest::new(1, 20)).await.unwrap().total, 0);
    assert_eq!(job(h, &owner, dead.job_id).await.status, JobStatus::Dead, "untouched");
    assert!(events_of(h, &intruder, "DLQ_RETRIED").await.is_empty());
}

async fn suspended_tenants_jobs_are_not_claimed(h: &Harness) {
    let paused = tenant(h, "paused").await;
    let busy = tenant(h, "busy").await;
    let parked = h.store.enqueue(&paused, parse_job(1)).await.unwrap();
    let other = h.store.enqueue(&busy, parse_job(1)).await.unwrap();
    h.store
        .transition_tenant(&paused, TenantState::Active, TenantState::Suspended, Some("billing"), event("S", "x"))
        .await
        .unwrap();
    let now = later();
    assert_eq!(claim(h, &opts("w"), now).await.unwrap().job_id, other.job_id);
    assert!(claim(h, &opts("w"), now).await.is_none(), "the suspended tenant's job waits");

    h.store
        .transition_tenant(&paused, TenantState::Suspended, TenantState::Active, None, event("R", "x"))
        .await
        .unwrap();
    assert_eq!(claim(h, &opts("w"), now).await.unwrap().job_id, parked.job_id, "resumed: claimed");
}

async fn per_tenant_cap_is_respected(h: &Harness) {
    let t = tenant(h, "capped").await;
    enqueue_n(h, &t, 5).await;
    let capped = ClaimOptions::new("w", secs(30), 2);
    let t0 = later();
    let a = claim(h, &capped, t0).await.unwrap();
    claim(h, &capped, t0).await.unwrap();
    assert!(claim(h, &capped, t0).await.is_none(), "two live leases: at the cap");

    // Another tenant is not held back by this one's cap.
    let small = tenant(h, "uncapped").await;
    let theirs = h.store.enqueue(&small, parse_job(1)).await.unwrap();
    assert_eq!(claim(h, &capped, later()).await.unwrap().job_id, theirs.job_id);

    h.store.complete(a.job_id, "w").await.unwrap();
    assert!(claim(h, &capped, t0).await.is_some(), "a finished job frees a slot");
    assert!(claim(h, &capped, t0).await.is_none());
    // Expired leases do not count against the cap (their jobs are reclaimable).
    let c = claim(h, &capped, at(t0, 30)).await.expect("leases expired");
    assert!(c.attempts == 1 || c.attempts == 2);
}

async fn batch_claims_take_one_tenants_most_advanced_stage_within_its_cap(h: &Harness) {
    let t = tenant(h, "batched").await;
    let parse = enqueue_n(h, &t, 4).await;
    let mut policy = Vec::new();
    for n in 0..3 {
        let job = NewJob::new(Stage::Policy, format!("doc-{n}"), json!({"n": n}));
        policy.push(h.store.enqueue(&t, job).await.unwrap());
    }
    let other = tenant(h, "other-batched").await;
    enqueue_n(h, &other, 2).await;
    let t0 = later();
    let o = ClaimOptions::new("w", secs(30), 5).stages([Stage::Parse, Stage::Policy]);

    // The first tenant picked (never served, oldest job) gives its policy jobs first, oldest first, all leased.
    let first = h.store.claim_batch(&o, t0, 10).await.unwrap();
    assert!(first.iter().all(|j| j.tenant_id == first[0].tenant_id), "one tenant per batch: {first:?}");
    if first[0].tenant_id == t {
        let ids: Vec<Uuid> = first.iter().map(|j| j.job_id).collect();
        assert_eq!(ids, policy.iter().map(|j| j.job_id).collect::<Vec<_>>(), "policy before parse, in order");
        assert!(first.iter().all(|j| j.status == JobStatus::Running && j.lease_owner.as_deref() == Some("w")));
        assert!(first.iter().all(|j| j.lease_expires_at == Some(at(t0, 30)) && j.attempts == 1));
    }
    // Fewest live leases next: the other tenant, then what the cap of 5 leaves.
    let mut taken: Vec<Job> = first;
    for _ in 0..4 {
        taken.extend(h.store.claim_batch(&o, t0, 10).await.unwrap());
    }
    let mine: Vec<&Job> = taken.iter().filter(|j| j.tenant_id == t).collect();
    assert_eq!(mine.len(), 5, "the cap bounds a batch as it bounds single claims: {mine:?}");
    assert_eq!(mine.iter().filter(|j| j.stage == Stage::Policy).count(), 3);
    let parse_taken: Vec<Uuid> = mine.iter().filter(|j| j.stage == Stage::Parse).map(|j| j.job_id).collect();
    assert_eq!(parse_taken, parse[..2].iter().map(|j| j.job_id).collect::<Vec<_>>(), "oldest parse jobs");
    assert_eq!(taken.iter().filter(|j| j.tenant_id == other).count(), 2);
    let ids: HashSet<Uuid> = taken.iter().map(|j| j.job_id).collect();
    assert_eq!(ids.len(), taken.len(), "no job claimed twice");
    assert!(h.store.claim_batch(&o, t0, 0).await.unwrap().is_empty());
}

async fn per_tenant_cap_holds_under_concurrent_claimers(h: &Harness) {
    let t = tenant(h, "cap-race").await;
    enqueue_n(h, &t, 20).await;
    let now = later();
    let claimers: Vec<_> = (0..8)
        .map(|w| {
            let store = h.store.clone();
            tokio::spawn(async move {
                let o = ClaimOptions::new(format!("w{w}"), secs(30), 3);
                store.claim(&o, now).await.expect("claim").is_some()
            })
        })
        .collect();
    let mut claimed = 0;
    for c in claimers {
        claimed += usize::from(c.await.unwrap());
    }
    assert_eq!(claimed, 3, "exactly the cap, however the claims interleave");
}

async fn busy_tenant_cannot_starve_a_small_one(h: &Harness) {
    let big = tenant(h, "big").await;
    let small = tenant(h, "small").await;
    enqueue_n(h, &big, 100).await;
    let mine = h.store.enqueue(&small, parse_job(0)).await.unwrap();
    let now = later();
    let o = ClaimOptions::new("w", secs(60), 10);
    let first_two = [claim(h, &o, now).await.unwrap(), claim(h, &o, now).await.unwrap()];
    assert!(first_two.iter().any(|j| j.job_id == mine.job_id), "{first_two:?}");
}

async fn idle_workers_serve_tenants_round_robin(h: &Harness) {
    let a = tenant(h, "rr-a").await;
    let b = tenant(h, "rr-b").await;
    let c = tenant(h, "rr-c").await;
    enqueue_n(h, &a, 20).await;
    enqueue_n(h, &b, 1).await;
    enqueue_n(h, &c, 3).await;
    let o = opts("w");
    let policy = RetryPolicy::default();
    let t0 = later();
    let mut served = Vec::new();
    for i in 0..6 {
        // Each job finishes before the next claim, so live leases never tell the tenants apart.
        let mut tenant_of_job = None;
        let ran = try_run_one_at(h.queue(), &o, &policy, at(t0, i), |job| {
            tenant_of_job = Some(job.tenant_id.clone());
            async { Ok(()) }
        })
        .await
        .unwrap();
        assert!(matches!(ran, RunOnce::Ran(_)));
        served.push(tenant_of_job.unwrap());
    }
    assert_eq!(served, [a.clone(), b, c.clone(), a.clone(), c, a], "least recently served first");
}

async fn concurrent_claimers_process_each_job_exactly_once(h: &Harness) {
    let mut expected = HashSet::new();
    for _ in 0..4 {
        let t = tenant(h, "drain").await;
        expected.extend(enqueue_n(h, &t, 50).await.into_iter().map(|j| j.job_id));
    }
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let store = h.store.clone();
            tokio::spawn(async move {
                let o = ClaimOptions::new(format!("w{w}"), secs(300), 8);
                let mut seen = Vec::new();
                while let Some(job) = store.claim(&o, frostbyte_core::now()).await.expect("claim") {
                    seen.push(job.job_id);
                    store.complete(job.job_id, &o.worker_id).await.expect("complete");
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a job was processed twice");
    assert_eq!(distinct, expected, "every job was processed");
    let stats = h.store.queue_stats().await.unwrap();
    assert_eq!((stats.total.succeeded, stats.total.queued, stats.total.running), (200, 0, 0));
}

async fn try_run_one_runs_or_idles(h: &Harness) {
    let o = opts("runner");
    let policy = RetryPolicy::default();
    let idle = try_run_one(h.queue(), &o, &policy, |_| async { Ok(()) }).await.unwrap();
    assert_eq!(idle, RunOnce::Idle);

    let t = tenant(h, "runner").await;
    let ok = h.store.enqueue(&t, parse_job(1)).await.unwrap();
    let ran = try_run_one_at(h.queue(), &o, &policy, later(), |job| async move {
        assert_eq!(job.payload["n"], json!(1), "the handler gets the claimed job");
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(ran, RunOnce::Ran(ok.job_id));
    assert_eq!(job(h, &t, ok.job_id).await.status, JobStatus::Succeeded);

    let failing = h.store.enqueue(&t, parse_job(2)).await.unwrap();
    let now = later();
    let ran = try_run_one_at(h.queue(), &o, &policy, now, |_| async {
        Err(JobError::new("PARSE_TIMEOUT", "took longer than 30 s"))
    })
    .await
    .unwrap();
    assert_eq!(ran, RunOnce::Ran(failing.job_id));
    let j = job(h, &t, failing.job_id).await;
    assert_eq!((j.status, j.attempts, j.run_after), (JobStatus::Queued, 1, at(now, 10)));
    assert_eq!(j.last_error.unwrap().code, "PARSE_TIMEOUT");
    assert_eq!(try_run_one_at(h.queue(), &o, &policy, now, |_| async { Ok(()) }).await.unwrap(), RunOnce::Idle);
}

async fn queue_events_keep_the_audit_chain_valid(h: &Harness) {
    let t = tenant(h, "chain").await;
    let t0 = later();
    let a = dead_job(h, &t, 1, t0).await;
    let b = dead_job(h, &t, 2, t0).await;
    h.store.retry_dead(&t, a.job_id, "admin").await.unwrap();
    h.store.abandon_dead(&t, b.job_id, "admin").await.unwrap();
    let events = h.store.audit_after(&t, 0, 1_000).await.unwrap();
    let mut verifier = ChainVerifier::default();
    events.iter().for_each(|e| verifier.push(e));
    assert!(verifier.breaks().is_empty(), "{:?}", verifier.breaks());
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["TENANT_CREATED", "JOB_DEAD_LETTERED", "JOB_DEAD_LETTERED", "DLQ_RETRIED", "DLQ_ABANDONED"]);
}

async fn queue_stats_count_by_status_and_stage(h: &Harness) {
    let t = tenant(h, "stats").await;
    enqueue_n(h, &t, 3).await;
    h.store.enqueue(&t, NewJob::new(Stage::Index, "doc-9", json!({}))).await.unwrap();
    let now = later();
    let o = opts("w").stages([Stage::Parse]);
    let running = claim(h, &o, now).await.unwrap();
    let done = claim(h, &o, now).await.unwrap();
    h.store.complete(done.job_id, "w").await.unwrap();
    let stats = h.store.queue_stats().await.unwrap();
    assert_eq!((stats.total.queued, stats.total.running, stats.total.succeeded), (2, 1, 1));
    let parse = stats.by_stage[&Stage::Parse];
    assert_eq!((parse.queued, parse.running, parse.succeeded), (1, 1, 1));
    assert_eq!(stats.by_stage[&Stage::Index].queued, 1);
    assert!(!stats.by_stage.contains_key(&Stage::Embed));
    assert_eq!(running.status, JobStatus::Running);
}
