//! The built-in processors, chosen by name from an explicit registry ([`lookup`]): no plugins.
//!
//! - `audit.export`: the tenant's audit events from `start_date` to `end_date` (inclusive, UTC days; optionally
//!   only the comma-separated `event_types`) as JSON Lines at the run's `target` blob key, with a manifest
//!   (`{target}.manifest.json`: event count, file sha256) beside it. Reuses [`export_jsonl`].
//! - `documents.sync`: incremental ingest from a directory or S3 prefix ([`super::sync`]).
//! - `records.copy` ([`super::records`]): rows between CSV, JSON Lines and Parquet blobs and SQL tables, through
//!   a column mapping with type coercion; rows that cannot be coerced go to a reject file with the reason.
//!
//! Every path is a key in the tenant's own blob space, and a SQL table is reached only through a configured
//! connection that lists the tenant, so a definition can never reach another tenant's data or the server's files. Processors check the run's [`CancelToken`] between rows and report progress; they return
//! counts, never record contents.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use frostbyte_core::TenantId;
use frostbyte_core::pipelines::{PipelineDefinition, RunStore};
use frostbyte_core::ports::{BlobStore, MetadataStore};
use frostbyte_core::service::audit::export_jsonl;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

/// The names the registry knows.
pub const NAMES: &[&str] = &["audit.export", "documents.sync", "records.copy", "retention.sweep", "documents.reindex"];

/// A processor: an async function of the run's context.
pub type ProcessorFn = fn(RunContext) -> BoxFuture<'static, Result<Outcome, ProcessorError>>;

/// The processor registered under `name`.
pub fn lookup(name: &str) -> Option<ProcessorFn> {
    match name {
        "audit.export" => Some(|ctx| Box::pin(audit_export(ctx))),
        "documents.sync" => Some(|ctx| Box::pin(super::sync::documents_sync(ctx))),
        "records.copy" => Some(|ctx| Box::pin(super::records::records_copy(ctx))),
        "retention.sweep" => Some(|ctx| Box::pin(super::retention::retention_sweep(ctx))),
        "documents.reindex" => Some(|ctx| Box::pin(super::reindex::documents_reindex(ctx))),
        _ => None,
    }
}

/// Cooperative cancellation, shared by the executor and the processor.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<(AtomicBool, Notify)>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    /// Resolves once [`Self::cancel`] has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Everything a processor sees: the run with its templates resolved, and the tenant's stores.
#[derive(Clone)]
pub struct RunContext {
    pub tenant: TenantId,
    pub run_id: Uuid,
    pub definition: Arc<PipelineDefinition>,
    /// Bound parameters (defaults applied).
    pub parameters: Map<String, Value>,
    pub source: Option<String>,
    pub target: Option<String>,
    /// The definition's options, resolved.
    pub options: Map<String, Value>,
    pub store: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub runs: Arc<dyn RunStore>,
    /// The document plane, when the engine has one ([`super::Engine::with_documents`]).
    pub documents: Option<Arc<super::DocumentPlane>>,
    /// The configured SQL connections (`[pipelines.connections]`), for `records.copy`.
    pub connections: Arc<super::records::Connections>,
    pub cancel: CancelToken,
}

impl RunContext {
    pub(crate) fn param_str(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).and_then(Value::as_str)
    }

    pub(crate) fn check_cancelled(&self) -> Result<(), ProcessorError> {
        if self.cancel.is_cancelled() { Err(ProcessorError::Cancelled) } else { Ok(()) }
    }

    /// Records progress (best effort: a failure to record it does not fail the run).
    pub(crate) async fn progress(&self, progress: f64, records: u64) {
        if let Err(error) = self.runs.record_progress(&self.tenant, self.run_id, progress, records).await {
            tracing::warn!(%error, run_id = %self.run_id, "cannot record run progress");
        }
    }

    pub(crate) fn required(&self, value: &Option<String>, what: &str) -> Result<String, ProcessorError> {
        value
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProcessorError::permanent(format!("{} needs a {what}", self.definition.processor)))
    }
}

/// What a finished processor reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub records: u64,
    /// Counts for the audit event and the API (`rows_rejected`, ...).
    pub counts: Map<String, Value>,
}

/// Why a processor stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProcessorError {
    #[error("cancelled")]
    Cancelled,
    /// `retryable`: a store or blob store was unavailable; another attempt may succeed.
    #[error("{message}")]
    Failed { message: String, retryable: bool },
}

impl ProcessorError {
    pub fn permanent(message: impl Into<String>) -> Self {
        ProcessorError::Failed { message: message.into(), retryable: false }
    }
}

impl From<frostbyte_core::StoreError> for ProcessorError {
    fn from(e: frostbyte_core::StoreError) -> Self {
        ProcessorError::Failed { retryable: e.is_retryable(), message: e.to_string() }
    }
}

impl From<frostbyte_core::ports::BlobError> for ProcessorError {
    fn from(e: frostbyte_core::ports::BlobError) -> Self {
        use frostbyte_core::ports::BlobError;
        let retryable = matches!(e, BlobError::Unavailable(_));
        ProcessorError::Failed { retryable, message: e.to_string() }
    }
}

// --- audit.export ----------------------------------------------------------------------------------------------

async fn audit_export(ctx: RunContext) -> Result<Outcome, ProcessorError> {
    let target = ctx.required(&ctx.target, "target")?;
    let day = |name: &str, end: bool| {
        ctx.param_str(name)
            .and_then(|s| frostbyte_core::parse_date_bound(s, end))
            .ok_or_else(|| ProcessorError::permanent(format!("parameter {name} must be a date (YYYY-MM-DD)")))
    };
    let (start, end) = (day("start_date", false)?, day("end_date", true)?);
    if end < start {
        return Err(ProcessorError::permanent("end_date is before start_date"));
    }
    let types: Option<Vec<String>> = ctx
        .param_str("event_types")
        .map(|s| s.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect());
    ctx.check_cancelled()?;
    let actor = format!("pipeline:{}", ctx.run_id);
    let (lines, manifest) = export_jsonl(&*ctx.store, &ctx.tenant, start, end, types.as_deref(), &actor).await?;
    ctx.check_cancelled()?;
    ctx.blobs.put(&ctx.tenant, &target, Bytes::from(lines)).await?;
    let manifest_json = serde_json::to_vec_pretty(&json!({
        "file": target,
        "event_count": manifest.event_count,
        "file_sha256": manifest.file_sha256,
        "start_date": manifest.start_date,
        "end_date": manifest.end_date,
        "event_types": manifest.event_types,
        "generated_at": manifest.generated_at,
        "run_id": ctx.run_id,
    }))
    .map_err(|e| ProcessorError::permanent(format!("cannot encode the manifest: {e}")))?;
    ctx.blobs.put(&ctx.tenant, &format!("{target}.manifest.json"), Bytes::from(manifest_json)).await?;
    let mut counts = Map::new();
    counts.insert("event_count".into(), json!(manifest.event_count));
    Ok(Outcome { records: manifest.event_count, counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_is_registered() {
        for name in NAMES {
            assert!(lookup(name).is_some(), "{name}");
        }
        assert!(lookup("nope").is_none());
    }

    #[tokio::test]
    async fn cancel_token_wakes_waiters() {
        let t = CancelToken::default();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.cancelled().await }
        });
        tokio::task::yield_now().await;
        t.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert!(t.is_cancelled());
    }
}
