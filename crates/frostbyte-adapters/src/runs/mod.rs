//! Pipeline runs ([`RunStore`](frostbyte_core::pipelines::RunStore)) on both SQL stores: the `pipeline_runs`
//! table (`migrations/*/0011_pipeline_runs.sql`, chaining columns in `0012_pipeline_flow.sql`). A run, its job and
//! its audit event commit together; every status change is a compare-and-set checked by
//! [`RunStatus::can_transition_to`]. A terminal transition also writes the follow-up runs and webhook deliveries
//! (`pipeline_webhook_deliveries`, `pipeline_webhook_attempts`) and releases runs waiting for it, in the same
//! transaction. Beside them: schedules, and the `documents.sync` state
//! ([`SyncStore`](frostbyte_core::pipelines::SyncStore), `sync_files`, `0013_document_sync.sql`).

pub(crate) mod postgres;
mod schedule_postgres;
mod schedule_sqlite;
pub(crate) mod sqlite;
mod sync_postgres;
mod sync_sqlite;

use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{DeliveryStatus, PipelineRun, RunStatus, WebhookEvent};
use frostbyte_core::{StoreError, StoreResult};
use serde_json::json;

use crate::codec::corrupt;

/// The columns, in the order every statement uses.
macro_rules! run_columns {
    () => {
        "run_id, domain, pipeline, status, parameters, triggered_by, progress, records_processed, error_message, \
         job_id, cancel_requested, created_at, started_at, completed_at, updated_at, tenant_id, parent_run_id, \
         chain_depth, waits_for_run_id, counts"
    };
}
pub(crate) use run_columns;

/// The delivery columns, in the order every statement uses.
macro_rules! delivery_columns {
    () => {
        "tenant_id, delivery_id, run_id, url, event, secret_env, status, attempts, next_attempt_at, last_status_code, \
         last_error, created_at, updated_at, delivered_at"
    };
}
pub(crate) use delivery_columns;

pub(crate) fn decode_event(stored: &str) -> StoreResult<WebhookEvent> {
    WebhookEvent::parse(stored).ok_or_else(|| corrupt("pipeline_webhook_deliveries.event"))
}

pub(crate) fn decode_delivery_status(stored: &str) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::parse(stored).ok_or_else(|| corrupt("pipeline_webhook_deliveries.status"))
}

pub(crate) fn decode_opt_uuid(stored: Option<String>, what: &'static str) -> StoreResult<Option<uuid::Uuid>> {
    stored.map(|s| crate::codec::decode_uuid(&s, what)).transpose()
}

/// When a held job (a run waiting for another) becomes due: effectively never, until released.
pub(crate) fn held_until(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    now + chrono::Duration::days(365 * frostbyte_core::pipelines::run::HELD_FOR_YEARS)
}

pub(crate) fn decode_status(stored: &str) -> StoreResult<RunStatus> {
    RunStatus::parse(stored).ok_or_else(|| corrupt("pipeline_runs.status"))
}

pub(crate) fn illegal(from: RunStatus, to: RunStatus) -> StoreError {
    StoreError::Conflict(format!("run is {from}; it cannot become {to}"))
}

/// The audit event of a cancel request on `run` as it was before the request.
pub(crate) fn cancel_event(run: &PipelineRun, actor: &str, immediate: bool) -> NewAuditEvent {
    let event_type = if immediate { "PIPELINE_RUN_CANCELLED" } else { "PIPELINE_RUN_CANCEL_REQUESTED" };
    NewAuditEvent::new(
        event_type,
        actor,
        "pipeline_run",
        run.run_id.to_string(),
        json!({"component": "pipeline", "status": if immediate { "cancelled" } else { run.status.as_str() },
               "run_id": run.run_id.to_string(), "pipeline": format!("{}/{}", run.domain, run.pipeline)}),
    )
}
