//! The durable job queue: what a job is, how failures are retried and dead-lettered, and the [`JobQueue`] port
//! the metadata stores implement (a `jobs` table beside the rows that cause the jobs, so a job and its cause
//! commit together; see DESIGN.md §2.3).
//!
//! Life of a job: `queued` → (claimed with a lease) `running` → `succeeded`; or, on failure, back to `queued`
//! after the stage's backoff, until its attempts are spent and it becomes `dead` (the dead-letter list). An
//! operator then retries a dead job (back to `queued` with its attempts reset) or abandons it (`abandoned`,
//! terminal). A `running` job whose lease expires (its worker died or hung) is claimable again: delivery is
//! at-least-once, and every stage is idempotent.
//!
//! Scheduling rule (both adapters): among tenants that are `ACTIVE`, have a claimable job, and hold fewer than
//! [`ClaimOptions::per_tenant_cap`] live leases, take the tenant with the fewest live leases; break ties by the
//! tenant served least recently (never-served first), then by the tenant's oldest claimable job; then take that
//! tenant's claimable job of its most advanced stage (index before embed, chunk, policy and parse) with the
//! earliest `run_after` (then the oldest id). So a tenant with a deep backlog cannot starve one with a single job,
//! whether workers are busy (fewest live leases) or idle (least recently served), no tenant ever holds more than
//! its cap, and a tenant's documents already under way finish before its new ones start (instead of a whole
//! backlog being parsed before anything is indexed).
//!
//! Error messages stored with a job (and shown on the dead-letter list) are truncated to
//! [`JobError::MAX_MESSAGE_CHARS`]. They must never contain document text, PII or secrets: that is the
//! caller's responsibility (describe what failed, with ids and counts, not what the document said).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};

/// A pipeline stage a job belongs to. A closed set: workers subscribe by stage, retry policies are per stage,
/// and an unknown stored value is a corrupt row rather than a job nobody will ever take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Parse,
    Policy,
    Chunk,
    Embed,
    Index,
    /// A pipeline-engine run (DESIGN.md §4).
    Pipeline,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::Parse, Stage::Policy, Stage::Chunk, Stage::Embed, Stage::Index, Stage::Pipeline];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Policy => "policy",
            Stage::Chunk => "chunk",
            Stage::Embed => "embed",
            Stage::Index => "index",
            Stage::Pipeline => "pipeline",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The `resource_type` of audit events about this stage's jobs: what `resource_id` names.
    pub fn resource_type(self) -> &'static str {
        match self {
            Stage::Pipeline => "pipeline_run",
            _ => "document",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    /// Attempts spent: on the dead-letter list, waiting for an operator to retry or abandon it.
    Dead,
    /// Given up on by an operator. Terminal.
    Abandoned,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] =
        [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded, JobStatus::Dead, JobStatus::Abandoned];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed: a stable code (`PARSE_TIMEOUT`, `EMBED_UNAVAILABLE`, ...) and a short message.
/// Never document text, PII or secrets (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobError {
    /// The longest message stored, in characters; longer ones are cut (with a trailing `…`).
    pub const MAX_MESSAGE_CHARS: usize = 500;
    /// The longest code stored, in characters.
    pub const MAX_CODE_CHARS: usize = 64;
    /// The code recorded when a worker's lease expired before it finished.
    pub const LEASE_EXPIRED: &'static str = "LEASE_EXPIRED";

    /// Builds an error, truncating the code and message to their limits.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        JobError {
            code: truncate_chars(code.into(), Self::MAX_CODE_CHARS),
            message: truncate_chars(message.into(), Self::MAX_MESSAGE_CHARS),
        }
    }

    /// This error with both fields cut to their limits (stores apply it to whatever they are given).
    pub fn truncated(self) -> Self {
        JobError::new(self.code, self.message)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

fn truncate_chars(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub stage: Stage,
    /// What the job works on (a document id, a run id): shown on the dead-letter list and used as the audit
    /// `resource_id`.
    pub resource_id: String,
    /// Stage input: ids, hashes, versions. Never document text (it is stored and shown to operators).
    pub payload: Value,
    /// Unique per tenant: enqueueing a job whose key is already taken (in any status) is a no-op that returns
    /// the existing job. Build it from what makes the work unique (`parse:{sha256}:{parser_version}`).
    pub dedupe_key: Option<String>,
    /// Not before this time; `None` means now.
    pub run_after: Option<DateTime<Utc>>,
}

impl NewJob {
    pub fn new(stage: Stage, resource_id: impl Into<String>, payload: Value) -> Self {
        NewJob { stage, resource_id: resource_id.into(), payload, dedupe_key: None, run_after: None }
    }

    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn run_after(mut self, at: DateTime<Utc>) -> Self {
        self.run_after = Some(at);
        self
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub job_id: Uuid,
    pub tenant_id: TenantId,
    pub stage: Stage,
    pub resource_id: String,
    pub payload: Value,
    pub dedupe_key: Option<String>,
    pub status: JobStatus,
    /// Claims so far in this cycle (reset by a dead-letter retry).
    pub attempts: u32,
    /// The limit in force at the job's last failure (the default policy's before any).
    pub max_attempts: u32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub run_after: DateTime<Utc>,
    pub last_error: Option<JobError>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When it last reached `succeeded`, `dead` or `abandoned`.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A dead-letter entry as the API shows it (`GET /api/v1/tenants/{tenant_id}/dlq`). The entry id is the job id.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DlqEntry {
    pub dlq_entry_id: Uuid,
    pub stage: Stage,
    pub resource_id: String,
    /// Attempts made in the cycle that ended on the list.
    pub retry_count: u32,
    pub error: Option<JobError>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub status: JobStatus,
}

impl From<&Job> for DlqEntry {
    fn from(job: &Job) -> Self {
        DlqEntry {
            dlq_entry_id: job.job_id,
            stage: job.stage,
            resource_id: job.resource_id.clone(),
            retry_count: job.attempts,
            error: job.last_error.clone(),
            first_attempt_at: job.first_attempt_at,
            last_attempt_at: job.last_attempt_at,
            status: job.status,
        }
    }
}

/// How one stage retries: at most `max_attempts` claims; after the n-th failed attempt the job waits
/// `backoff[n-1]` (the last entry once the list runs out) before it is claimable again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRetry {
    pub max_attempts: u32,
    pub backoff: Vec<Duration>,
}

impl StageRetry {
    pub fn new(max_attempts: u32, backoff: Vec<Duration>) -> Self {
        StageRetry { max_attempts: max_attempts.max(1), backoff }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let i = usize::try_from(attempt.max(1) - 1).unwrap_or(usize::MAX);
        self.backoff.get(i).or(self.backoff.last()).copied().unwrap_or(Duration::ZERO)
    }
}

/// Per-stage retry schedules. Defaults: parse, chunk, embed, index and pipeline retry 3 times, waiting 10 s, 60 s
/// and 300 s (so 4 attempts in all); policy retries twice, 30 s apart (3 attempts). Each listed backoff is one
/// retry, so the whole schedule is used before a job is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    stages: BTreeMap<Stage, StageRetry>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let standard = StageRetry::new(4, vec![secs(10), secs(60), secs(300)]);
        let stages = Stage::ALL
            .into_iter()
            .map(|s| match s {
                Stage::Policy => (s, StageRetry::new(3, vec![secs(30), secs(30)])),
                _ => (s, standard.clone()),
            })
            .collect();
        RetryPolicy { stages }
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl RetryPolicy {
    /// The same schedule for every stage.
    pub fn uniform(retry: StageRetry) -> Self {
        RetryPolicy { stages: Stage::ALL.into_iter().map(|s| (s, retry.clone())).collect() }
    }

    /// Replaces one stage's schedule (for configuration).
    pub fn with_stage(mut self, stage: Stage, retry: StageRetry) -> Self {
        self.stages.insert(stage, retry);
        self
    }

    /// Every backoff multiplied by `factor` (tests compress the schedule: `scaled(0.001)` turns 10 s into
    /// 10 ms). Attempt counts are unchanged.
    pub fn scaled(mut self, factor: f64) -> Self {
        let factor = if factor.is_finite() && factor >= 0.0 { factor } else { 1.0 };
        for retry in self.stages.values_mut() {
            for d in &mut retry.backoff {
                *d = d.mul_f64(factor);
            }
        }
        self
    }

    pub fn for_stage(&self, stage: Stage) -> &StageRetry {
        // Every constructor fills every stage.
        &self.stages[&stage]
    }
}

/// What a claimer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOptions {
    /// Recorded as the lease owner; heartbeat, complete and fail must present it.
    pub worker_id: String,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
    /// The most live leases one tenant may hold (values below 1 count as 1).
    pub per_tenant_cap: u32,
    /// Only these stages; `None` for any.
    pub stages: Option<Vec<Stage>>,
}

impl ClaimOptions {
    pub fn new(worker_id: impl Into<String>, lease: Duration, per_tenant_cap: u32) -> Self {
        ClaimOptions { worker_id: worker_id.into(), lease, per_tenant_cap, stages: None }
    }

    pub fn stages(mut self, stages: impl IntoIterator<Item = Stage>) -> Self {
        self.stages = Some(stages.into_iter().collect());
        self
    }
}

/// What [`JobQueue::fail`] did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `queued`, claimable from `run_after`.
    Retrying { run_after: DateTime<Utc> },
    /// Attempts spent: the job is on the dead-letter list.
    DeadLettered,
}

/// Jobs per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub abandoned: u64,
}

impl StatusCounts {
    pub fn get(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Queued => self.queued,
            JobStatus::Running => self.running,
            JobStatus::Succeeded => self.succeeded,
            JobStatus::Dead => self.dead,
            JobStatus::Abandoned => self.abandoned,
        }
    }

    pub fn add(&mut self, status: JobStatus, n: u64) {
        let slot = match status {
            JobStatus::Queued => &mut self.queued,
            JobStatus::Running => &mut self.running,
            JobStatus::Succeeded => &mut self.succeeded,
            JobStatus::Dead => &mut self.dead,
            JobStatus::Abandoned => &mut self.abandoned,
        };
        *slot += n;
    }
}

/// Queue-wide counts, for metrics and test snapshots. Stages without jobs are absent from `by_stage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub total: StatusCounts,
    pub by_stage: BTreeMap<Stage, StatusCounts>,
}

/// The durable job queue, implemented by both metadata stores.
///
/// Worker-side methods (`claim`, `heartbeat`, `complete`, `fail`) identify a job by id and the claimer by its
/// `worker_id`; `complete` and `fail` answer `Conflict` when the job is no longer leased to that worker (it was
/// reclaimed after the lease expired), `NotFound` when there is no such job. Operator-side methods take the
/// tenant first, and another tenant's job id answers `NotFound`.
///
/// Audit: dead-lettering (`JOB_DEAD_LETTERED`), `retry_dead` (`DLQ_RETRIED`) and `abandon_dead`
/// (`DLQ_ABANDONED`) append an event to the tenant's chain in the same transaction. Claims, heartbeats,
/// completions and scheduled retries are routine and not audited; the stage that completes a job records its own
/// outcome.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueues a job (or returns the existing one with the same `dedupe_key`). `NotFound` for an unknown tenant.
    async fn enqueue(&self, tenant: &TenantId, job: NewJob) -> StoreResult<Job>;
    /// Claims one job by the scheduling rule in the module docs: a `queued` job with `run_after <= now`, or a
    /// `running` one whose lease expired before `now`. Increments `attempts` and leases the job to
    /// `opts.worker_id` until `now + opts.lease`. An expired job whose attempts are already spent is
    /// dead-lettered (`LEASE_EXPIRED`) instead: a job that kills its worker cannot loop forever.
    async fn claim(&self, opts: &ClaimOptions, now: DateTime<Utc>) -> StoreResult<Option<Job>> {
        Ok(self.claim_batch(opts, now, 1).await?.into_iter().next())
    }
    /// Claims up to `max` jobs at once, as [`JobQueue::claim`] would one by one, but of one tenant and one stage
    /// only (the first tenant the scheduling rule picks, and that tenant's most advanced stage with a claimable
    /// job), and never more than the tenant's cap allows next to its live leases. Every job gets the same lease.
    /// Ordered as they would have been claimed; empty when nothing is claimable.
    async fn claim_batch(&self, opts: &ClaimOptions, now: DateTime<Utc>, max: usize) -> StoreResult<Vec<Job>>;
    /// Extends the lease to `now + lease`. `false` if the job is no longer running under this worker.
    async fn heartbeat(&self, job_id: Uuid, worker_id: &str, lease: Duration, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Marks a running job `succeeded`.
    async fn complete(&self, job_id: Uuid, worker_id: &str) -> StoreResult<()>;
    /// Records a failed attempt: back to `queued` after the stage's backoff, or onto the dead-letter list when
    /// the attempts `policy` allows the stage are spent.
    async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: JobError,
        policy: &RetryPolicy,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome>;
    /// The tenant's dead-letter list: `dead` and `abandoned` jobs, most recently failed first.
    async fn list_dead(&self, tenant: &TenantId, page: PageRequest) -> StoreResult<Page<Job>>;
    /// Puts a `dead` job back in the queue with its attempts reset, claimable at once. `Conflict` if the job is
    /// not dead.
    async fn retry_dead(&self, tenant: &TenantId, job_id: Uuid, actor: &str) -> StoreResult<Job>;
    /// Marks a `dead` job `abandoned`. Idempotent: an abandoned job is returned unchanged (and audited once).
    /// `Conflict` for a job in any other status.
    async fn abandon_dead(&self, tenant: &TenantId, job_id: Uuid, actor: &str) -> StoreResult<Job>;
    async fn get_job(&self, tenant: &TenantId, job_id: Uuid) -> StoreResult<Option<Job>>;
    /// Counts by status and stage, across tenants.
    async fn queue_stats(&self) -> StoreResult<QueueStats>;
}

/// What one [`try_run_one`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOnce {
    /// Claimed and ran this job (it succeeded, was rescheduled or was dead-lettered).
    Ran(Uuid),
    /// Nothing was claimable.
    Idle,
}

/// Claims one job, runs `handler` on it, and completes or fails it. The building block of workers, and how
/// tests drive the queue without background tasks. The handler's lease is not heartbeated here: keep handlers
/// shorter than `opts.lease`, or heartbeat from inside them.
pub async fn try_run_one<F, Fut>(
    queue: &dyn JobQueue,
    opts: &ClaimOptions,
    policy: &RetryPolicy,
    handler: F,
) -> StoreResult<RunOnce>
where
    F: FnOnce(Job) -> Fut,
    Fut: Future<Output = Result<(), JobError>>,
{
    try_run_one_at(queue, opts, policy, crate::now(), handler).await
}

/// [`try_run_one`] at an explicit time (claim and failure bookkeeping use `now`).
pub async fn try_run_one_at<F, Fut>(
    queue: &dyn JobQueue,
    opts: &ClaimOptions,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    handler: F,
) -> StoreResult<RunOnce>
where
    F: FnOnce(Job) -> Fut,
    Fut: Future<Output = Result<(), JobError>>,
{
    let Some(job) = queue.claim(opts, now).await? else {
        return Ok(RunOnce::Idle);
    };
    let job_id = job.job_id;
    match handler(job).await {
        Ok(()) => queue.complete(job_id, &opts.worker_id).await?,
        Err(error) => {
            queue.fail(job_id, &opts.worker_id, error, policy, now).await?;
        }
    }
    Ok(RunOnce::Ran(job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_the_design() {
        let p = RetryPolicy::default();
        for stage in [Stage::Parse, Stage::Embed, Stage::Index] {
            let r = p.for_stage(stage);
            assert_eq!(r.max_attempts, 4, "one attempt and three retries");
            assert_eq!(r.backoff, [secs(10), secs(60), secs(300)]);
        }
        assert_eq!(p.for_stage(Stage::Policy), &StageRetry::new(3, vec![secs(30), secs(30)]));
    }

    #[test]
    fn backoff_uses_the_last_entry_once_the_list_runs_out() {
        let r = StageRetry::new(5, vec![secs(1), secs(2)]);
        assert_eq!([1, 2, 3, 4].map(|a| r.backoff_after(a)), [secs(1), secs(2), secs(2), secs(2)]);
        assert_eq!(StageRetry::new(2, vec![]).backoff_after(1), Duration::ZERO);
    }

    #[test]
    fn scaled_compresses_backoff_only() {
        let p = RetryPolicy::default().scaled(0.001);
        assert_eq!(p.for_stage(Stage::Parse).backoff, [Duration::from_millis(10), secs(60) / 1000, secs(300) / 1000]);
        assert_eq!(p.for_stage(Stage::Parse).max_attempts, 4);
    }

    #[test]
    fn error_messages_are_truncated_on_char_boundaries() {
        let e = JobError::new("X".repeat(100), "é".repeat(1_000));
        assert_eq!(e.code.chars().count(), JobError::MAX_CODE_CHARS);
        assert_eq!(e.message.chars().count(), JobError::MAX_MESSAGE_CHARS);
        assert!(e.message.ends_with('…'));
        assert_eq!(JobError::new("A", "short").message, "short");
    }

    #[test]
    fn names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
    }
}
