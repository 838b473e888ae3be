//! Pipeline runs: their state machine and the [`RunStore`] port.
//!
//! A run moves `pending → validating → running → completed | failed | cancelled`. `pending` and `validating`
//! may also be cancelled or (validation) fail; `validating` and `running` may be re-entered by a worker that
//! resumes a run whose previous worker died (its job's lease expired). Terminal states never change.
//!
//! Every transition is a compare-and-set on the current status, appends its `PIPELINE_RUN_*` audit event in
//! the same transaction, and (when the worker finishes the run) completes the run's job in that transaction too.
//!
//! **What a run's end starts.** The terminal transition also writes, in its transaction, the chained follow-up
//! runs (with their jobs and audit events), the webhook deliveries, and releases the job of a run that was
//! queued behind this one (a schedule's `queue` overlap). The compare-and-set makes the terminal transition
//! happen once, so each of these is created exactly once, whatever crashes around it; follow-ups are also unique
//! on `(parent_run_id, chain_index)` in the table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::queue::NewJob;

use super::webhook::{AttemptRecord, Delivery, NewDelivery};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Validating,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Pending,
        RunStatus::Validating,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Validating => "validating",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }

    /// The only list of legal transitions (a self-transition of `validating` or `running` is a resume).
    pub fn can_transition_to(self, to: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, to),
            (Pending, Validating | Failed | Cancelled)
                | (Validating, Validating | Running | Failed | Cancelled)
                | (Running, Running | Completed | Failed | Cancelled)
        )
    }

    /// The audit event type recording a transition into this status.
    pub fn audit_event_type(self) -> &'static str {
        match self {
            RunStatus::Pending => "PIPELINE_RUN_CREATED",
            RunStatus::Validating => "PIPELINE_RUN_VALIDATING",
            RunStatus::Running => "PIPELINE_RUN_STARTED",
            RunStatus::Completed => "PIPELINE_RUN_COMPLETED",
            RunStatus::Failed => "PIPELINE_RUN_FAILED",
            RunStatus::Cancelled => "PIPELINE_RUN_CANCELLED",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PipelineRun {
    pub run_id: Uuid,
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub domain: String,
    pub pipeline: String,
    pub status: RunStatus,
    /// The bound parameters (defaults applied).
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// Who asked for it: `admin`, `key:{key_id}`, `cli`, `schedule:{id}`, `chain:{parent_run_id}`.
    pub triggered_by: String,
    /// The run whose ending started this one (a chained follow-up).
    pub parent_run_id: Option<Uuid>,
    /// 0 for a run started directly; a follow-up is one deeper than its parent.
    pub chain_depth: u32,
    /// The run this one waits for before it starts (a schedule's `queue` overlap).
    pub waits_for_run_id: Option<Uuid>,
    /// 0.0 to 1.0.
    pub progress: f64,
    pub records_processed: u64,
    /// What the processor reported when it completed (`added`, `unchanged`, `rows_rejected`, ...); empty until
    /// then.
    #[schema(value_type = Object)]
    pub counts: Map<String, Value>,
    pub error_message: Option<String>,
    /// The queue job that executes it.
    pub job_id: Uuid,
    /// Set by a cancel request while the run is executing; the worker stops cooperatively.
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A run to create (status `pending`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub run_id: Uuid,
    pub domain: String,
    pub pipeline: String,
    pub parameters: Map<String, Value>,
    pub triggered_by: String,
    pub parent_run_id: Option<Uuid>,
    /// The follow-up's position in its parent's list (unique per parent).
    pub chain_index: Option<u32>,
    pub chain_depth: u32,
    /// Hold the run's job until this run ends (released at once if it already has).
    pub waits_for: Option<Uuid>,
}

impl NewRun {
    pub fn new(
        run_id: Uuid,
        domain: impl Into<String>,
        pipeline: impl Into<String>,
        parameters: Map<String, Value>,
        triggered_by: impl Into<String>,
    ) -> Self {
        NewRun {
            run_id,
            domain: domain.into(),
            pipeline: pipeline.into(),
            parameters,
            triggered_by: triggered_by.into(),
            parent_run_id: None,
            chain_index: None,
            chain_depth: 0,
            waits_for: None,
        }
    }
}

/// A chained run created by its parent's terminal transition: the run, its job and its `PIPELINE_RUN_CREATED`.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUp {
    pub run: NewRun,
    pub job: NewJob,
    pub audit: NewAuditEvent,
}

/// A job held until another run ends: due this far in the future until released.
pub const HELD_FOR_YEARS: i64 = 100;

/// A status change, with what to record alongside it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTransition {
    pub to: RunStatus,
    pub error_message: Option<String>,
    pub records_processed: Option<u64>,
    pub progress: Option<f64>,
    /// The processor's counts, recorded with the run.
    pub counts: Option<Map<String, Value>>,
    /// Completes this job, leased to this worker, in the same transaction (`Conflict` if it no longer is).
    pub completes_job: Option<(Uuid, String)>,
    /// Chained runs to create with a terminal transition.
    pub follow_ups: Vec<FollowUp>,
    /// Webhook deliveries to create with a terminal transition.
    pub deliveries: Vec<NewDelivery>,
    /// Further audit events to append with it (a refused follow-up, for one).
    pub notes: Vec<NewAuditEvent>,
}

impl RunTransition {
    pub fn to(status: RunStatus) -> Self {
        RunTransition {
            to: status,
            error_message: None,
            records_processed: None,
            progress: None,
            counts: None,
            completes_job: None,
            follow_ups: Vec::new(),
            deliveries: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn counts(mut self, counts: Map<String, Value>) -> Self {
        self.counts = Some(counts);
        self
    }

    pub fn error(mut self, message: impl Into<String>) -> Self {
        self.error_message = Some(crate::queue::JobError::new("", message).message);
        self
    }

    pub fn records(mut self, n: u64) -> Self {
        self.records_processed = Some(n);
        self
    }

    pub fn progress(mut self, p: f64) -> Self {
        self.progress = Some(p.clamp(0.0, 1.0));
        self
    }

    pub fn completes_job(mut self, job_id: Uuid, worker: impl Into<String>) -> Self {
        self.completes_job = Some((job_id, worker.into()));
        self
    }

    /// Applies the change to `run` at `now` (timestamps: `started_at` on the first `running`, `completed_at` on a
    /// terminal status).
    pub fn apply_to(&self, run: &mut PipelineRun, now: DateTime<Utc>) {
        run.status = self.to;
        if let Some(m) = &self.error_message {
            run.error_message = Some(m.clone());
        }
        if let Some(n) = self.records_processed {
            run.records_processed = n;
        }
        if let Some(p) = self.progress {
            run.progress = p;
        }
        if let Some(c) = &self.counts {
            run.counts = c.clone();
        }
        if self.to == RunStatus::Running && run.started_at.is_none() {
            run.started_at = Some(now);
        }
        if self.to.is_terminal() {
            run.completed_at = Some(now);
            if self.to == RunStatus::Completed {
                run.progress = 1.0;
            }
        }
        run.updated_at = now;
    }
}

/// History filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// `domain/name` or just `name`.
    pub pipeline: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: u32,
}

/// The runs, implemented by both metadata stores. Tenant first; another tenant's run id answers `NotFound` /
/// `None`.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates a `pending` run, enqueues `job` (its id becomes the run's `job_id`) and appends `audit`, in one
    /// transaction. `NotFound` for an unknown tenant.
    async fn create_run(
        &self,
        tenant: &TenantId,
        run: NewRun,
        job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRun>;
    async fn get_run(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<Option<PipelineRun>>;
    /// Newest first, at most `filter.limit`.
    async fn list_runs(&self, tenant: &TenantId, filter: &RunFilter) -> StoreResult<Vec<PipelineRun>>;
    /// Applies a legal transition (`Conflict` naming both statuses otherwise) with its audit event; a terminal one
    /// also creates `change.follow_ups` and `change.deliveries`, appends `change.notes`, and releases the jobs of
    /// pending runs waiting for this one, all in the same transaction.
    async fn transition_run(
        &self,
        tenant: &TenantId,
        run_id: Uuid,
        change: RunTransition,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRun>;
    /// Records progress of a running run (not audited: routine).
    async fn record_progress(&self, tenant: &TenantId, run_id: Uuid, progress: f64, records: u64) -> StoreResult<()>;
    /// Asks for cancellation: a `pending` run is cancelled at once (its job completed), a `validating` or
    /// `running` one gets `cancel_requested` for its worker to act on; a terminal run is returned unchanged.
    /// Audited (`PIPELINE_RUN_CANCEL_REQUESTED` or `PIPELINE_RUN_CANCELLED`). When the run is cancelled at once,
    /// `deliveries` are created and waiting runs released in the same transaction.
    async fn request_cancel(
        &self,
        tenant: &TenantId,
        run_id: Uuid,
        actor: &str,
        deliveries: Vec<NewDelivery>,
    ) -> StoreResult<PipelineRun>;
    /// Runs the tenant created at or after `since` (for the daily quota).
    async fn count_runs_since(&self, tenant: &TenantId, since: DateTime<Utc>) -> StoreResult<u64>;
    /// Every tenant's runs that are not terminal, oldest first: start-up recovery.
    async fn unfinished_runs(&self) -> StoreResult<Vec<PipelineRun>>;
    /// Runs chained from `parent`, in their list order.
    async fn follow_ups(&self, tenant: &TenantId, parent: Uuid) -> StoreResult<Vec<PipelineRun>>;

    /// Every tenant's `pending` deliveries due at `now`, oldest first, at most `limit` (no attempt log).
    async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Delivery>>;
    /// Leases a due delivery to the caller: moves `next_attempt_at` from `expected` to `lease_until` if it is
    /// still `expected` and the delivery pending. True for the one caller that won.
    async fn claim_delivery(
        &self,
        tenant: &TenantId,
        delivery_id: Uuid,
        expected: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records an attempt (its row, the delivery's new status and due time) with its audit event.
    async fn record_delivery_attempt(
        &self,
        tenant: &TenantId,
        delivery_id: Uuid,
        record: AttemptRecord,
        audit: NewAuditEvent,
    ) -> StoreResult<Delivery>;
    /// A run's deliveries with their attempts, oldest first.
    async fn list_deliveries(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<Vec<Delivery>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_transitions() {
        use RunStatus::*;
        assert!(Pending.can_transition_to(Validating));
        assert!(Pending.can_transition_to(Cancelled));
        assert!(!Pending.can_transition_to(Running));
        assert!(!Pending.can_transition_to(Completed));
        assert!(Running.can_transition_to(Running), "resume");
        for t in [Completed, Failed, Cancelled] {
            for to in RunStatus::ALL {
                assert!(!t.can_transition_to(to), "{t} is terminal");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
    }
}
