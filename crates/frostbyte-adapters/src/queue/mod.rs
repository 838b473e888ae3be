//! The durable job queue ([`JobQueue`](frostbyte_core::queue::JobQueue)) on both SQL stores: `jobs` and
//! `job_tenants` (see `migrations/*/0002_jobs.sql`), beside the rows that cause jobs.
//!
//! The scheduling rule is the one in `frostbyte_core::queue`'s module docs; each dialect applies it in SQL:
//! rank the eligible tenants (fewest live leases, least recently served, oldest claimable job), then take the
//! first tenant's oldest claimable job. SQLite does both under its single write lock (`BEGIN IMMEDIATE`);
//! PostgreSQL ranks without locks, then per tenant locks its `job_tenants` row, re-checks state and cap, and
//! takes a job with `FOR UPDATE SKIP LOCKED`, one short transaction per tenant tried.
//!
//! `enqueue_in_tx` and `complete_in_tx` in each dialect let later code write a job (or finish one) in the same
//! transaction as the row that causes it or the stage output it records (DESIGN.md §2.3).

/// A job's stage as a number, later pipeline stages higher: a claim takes a tenant's most advanced stage first, so
/// documents already under way finish before new ones start. The same SQL in both dialects.
macro_rules! stage_rank {
    () => {
        "CASE stage WHEN 'parse' THEN 0 WHEN 'policy' THEN 1 WHEN 'chunk' THEN 2 WHEN 'embed' THEN 3 \
         WHEN 'index' THEN 4 ELSE 5 END"
    };
}

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::queue::{Job, JobError, JobStatus, RetryPolicy, Stage, StatusCounts};
use frostbyte_core::{StoreError, StoreResult};
use serde_json::json;

use crate::codec::corrupt;

/// At most this many tenants are ranked per claim (the rest wait for the next claim).
const RANKED_TENANTS: i64 = 16;
/// At most this many lease-expired jobs with spent attempts are dead-lettered per tenant per claim.
const REAP_BATCH: i64 = 16;
/// The message recorded when a lease expires.
const LEASE_EXPIRED_MESSAGE: &str = "the worker's lease expired before the attempt finished";

/// The actor of queue-initiated audit events.
const SYSTEM_ACTOR: &str = "system";

pub(crate) fn decode_stage(stored: &str) -> StoreResult<Stage> {
    Stage::parse(stored).ok_or_else(|| corrupt("jobs.stage"))
}

pub(crate) fn decode_status(stored: &str) -> StoreResult<JobStatus> {
    JobStatus::parse(stored).ok_or_else(|| corrupt("jobs.status"))
}

pub(crate) fn decode_count(stored: i64, column: &'static str) -> StoreResult<u32> {
    u32::try_from(stored).map_err(|_| corrupt(column))
}

pub(crate) fn decode_error(code: Option<String>, message: Option<String>) -> Option<JobError> {
    code.map(|code| JobError { code, message: message.unwrap_or_default() })
}

/// `now + d`, saturating far in the future rather than overflowing.
pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365 * 100));
    frostbyte_core::truncate_micros(now.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

/// The attempt limit a job gets when enqueued (shown until its first failure, which applies the worker's policy).
pub(crate) fn default_max_attempts(stage: Stage) -> i64 {
    i64::from(RetryPolicy::default().for_stage(stage).max_attempts)
}

/// What `fail` decided, before it is written.
pub(crate) struct FailPlan {
    pub dead: bool,
    pub max_attempts: i64,
    pub run_after: DateTime<Utc>,
}

pub(crate) fn plan_failure(stage: Stage, attempts: u32, policy: &RetryPolicy, now: DateTime<Utc>) -> FailPlan {
    let retry = policy.for_stage(stage);
    FailPlan {
        dead: attempts >= retry.max_attempts,
        max_attempts: i64::from(retry.max_attempts),
        run_after: after(now, retry.backoff_after(attempts)),
    }
}

/// The `JOB_DEAD_LETTERED` event: ids, counts and the error code (never the message).
pub(crate) fn dead_lettered_event(job: &Job, worker_id: Option<&str>) -> NewAuditEvent {
    let mut details = json!({
        "component": "queue",
        "status": "dead",
        "job_id": job.job_id.to_string(),
        "stage": job.stage.as_str(),
        "attempts": job.attempts,
        "error_code": job.last_error.as_ref().map(|e| e.code.as_str()),
    });
    if let Some(worker) = worker_id {
        details["worker_id"] = json!(worker);
    }
    NewAuditEvent::new("JOB_DEAD_LETTERED", SYSTEM_ACTOR, job.stage.resource_type(), job.resource_id.clone(), details)
}

/// `DLQ_RETRIED` / `DLQ_ABANDONED`.
pub(crate) fn dlq_event(event_type: &str, job: &Job, actor: &str) -> NewAuditEvent {
    NewAuditEvent::new(
        event_type,
        actor,
        job.stage.resource_type(),
        job.resource_id.clone(),
        json!({
            "component": "queue",
            "status": job.status.as_str(),
            "job_id": job.job_id.to_string(),
            "stage": job.stage.as_str(),
        }),
    )
}

/// Why a worker-side call on a job that exists was refused.
pub(crate) fn not_owned(status: JobStatus) -> StoreError {
    StoreError::Conflict(format!("job is {status} and no longer leased to this worker"))
}

/// Why a DLQ action on a job that exists was refused.
pub(crate) fn not_dead(status: JobStatus) -> StoreError {
    StoreError::Conflict(format!("job is {status}, not dead"))
}

/// The `stages` filter as a JSON array of names (SQLite's `json_each`) or a list (PostgreSQL's `ANY`).
pub(crate) fn stage_names(stages: &Option<Vec<Stage>>) -> Option<Vec<String>> {
    stages.as_ref().map(|s| s.iter().map(|st| st.as_str().to_owned()).collect())
}

pub(crate) fn add_count(counts: &mut StatusCounts, status: &str, n: i64) -> StoreResult<()> {
    counts.add(decode_status(status)?, u64::try_from(n).unwrap_or(0));
    Ok(())
}
