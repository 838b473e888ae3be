//! The built-in processors, chosen by name from an explicit registry ([`lookup`]): no plugins.
//!
//! - `audit.export`: the tenant's audit events from `start_date` to `end_date` (inclusive, UTC days; optionally
//!   only the comma-separated `event_types`) as JSON Lines at the run's `target` blob key, with a manifest
//!   (`{target}.manifest.json`: event count, file sha256) beside it. Reuses [`export_jsonl`].
//! - `documents.sync`: incremental ingest from a directory or S3 prefix ([`super::sync`]).
//! - `records.copy`: rows from the `source` blob (CSV with a header row, or JSON Lines) to the `target` blob (CSV
//!   or JSON Lines, by extension), through the `columns` mapping (`from:to:type`, types `string`, `integer`,
//!   `float`, `boolean`, `date`). A row that cannot be coerced is written to the reject file (option
//!   `reject_target`) as `{row, field, reason, record}` and not to the target.
//!
//! Every path is a key in the tenant's own blob space, so a definition can never reach another tenant's data or
//! the server's files. Processors check the run's [`CancelToken`] between rows and report progress; they return
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
pub const NAMES: &[&str] =
    &["audit.export", "documents.sync", "records.copy", "retention.sweep", "documents.reindex"];

/// A processor: an async function of the run's context.
pub type ProcessorFn = fn(RunContext) -> BoxFuture<'static, Result<Outcome, ProcessorError>>;

/// The processor registered under `name`.
pub fn lookup(name: &str) -> Option<ProcessorFn> {
    match name {
        "audit.export" => Some(|ctx| Box::pin(audit_export(ctx))),
        "documents.sync" => Some(|ctx| Box::pin(super::sync::documents_sync(ctx))),
        "records.copy" => Some(|ctx| Box::pin(records_copy(ctx))),
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

// --- records.copy ----------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

fn format_of(key: &str) -> Result<Format, ProcessorError> {
    let lower = key.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        Ok(Format::Csv)
    } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        Ok(Format::JsonLines)
    } else {
        Err(ProcessorError::permanent(format!("{key:?}: records.copy reads and writes .csv, .jsonl and .ndjson only")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    String,
    Integer,
    Float,
    Boolean,
    Date,
}

#[derive(Debug, Clone, PartialEq)]
struct Column {
    from: String,
    to: String,
    ty: Option<ColumnType>,
}

/// `from[:to[:type]]` items separated by commas.
fn parse_columns(spec: &str) -> Result<Vec<Column>, ProcessorError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let mut parts = item.split(':').map(str::trim);
            let from = parts.next().unwrap_or_default().to_owned();
            let to = parts.next().filter(|s| !s.is_empty()).unwrap_or(&from).to_owned();
            let ty = match parts.next() {
                None | Some("") => None,
                Some("string") => Some(ColumnType::String),
                Some("integer") => Some(ColumnType::Integer),
                Some("float") => Some(ColumnType::Float),
                Some("boolean") => Some(ColumnType::Boolean),
                Some("date") => Some(ColumnType::Date),
                Some(other) => {
                    return Err(ProcessorError::permanent(format!(
                        "column {from:?}: unknown type {other:?} (string, integer, float, boolean, date)"
                    )));
                }
            };
            if from.is_empty() || parts.next().is_some() {
                return Err(ProcessorError::permanent(format!("column mapping {item:?} is not from:to:type")));
            }
            Ok(Column { from, to, ty })
        })
        .collect()
}

/// Coerces one value; `Err` says why not.
fn coerce(value: &Value, ty: ColumnType) -> Result<Value, String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Null => return Ok(Value::Null),
        other => other.to_string(),
    };
    match ty {
        ColumnType::String => Ok(match value {
            Value::String(s) => Value::String(s.clone()),
            _ => Value::String(text),
        }),
        ColumnType::Integer => text.parse::<i64>().map(Value::from).map_err(|_| format!("{text:?} is not an integer")),
        ColumnType::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(|| format!("{text:?} is not a number")),
        ColumnType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("{text:?} is not a boolean")),
        },
        ColumnType::Date => chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(|d| Value::from(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD)")),
    }
}

/// Reads every row as a JSON object (CSV values as strings; an empty CSV cell as null).
/// One input row: the record, or why it could not be read.
type Row = Result<Map<String, Value>, String>;

fn read_rows(bytes: &[u8], format: Format) -> Result<Vec<Row>, ProcessorError> {
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
            let headers = reader
                .headers()
                .map_err(|e| ProcessorError::permanent(format!("cannot read the CSV header: {e}")))?
                .clone();
            Ok(reader
                .records()
                .map(|r| {
                    r.map_err(|e| format!("malformed CSV row: {e}")).map(|rec| {
                        headers
                            .iter()
                            .zip(rec.iter())
                            .map(|(h, v)| {
                                (h.to_owned(), if v.is_empty() { Value::Null } else { Value::String(v.to_owned()) })
                            })
                            .collect()
                    })
                })
                .collect())
        }
        Format::JsonLines => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ProcessorError::permanent("the JSON Lines input is not UTF-8"))?;
            Ok(text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| match serde_json::from_str::<Value>(line) {
                    Ok(Value::Object(m)) => Ok(m),
                    Ok(_) => Err("the line is not a JSON object".to_owned()),
                    Err(e) => Err(format!("malformed JSON: {e}")),
                })
                .collect())
        }
    }
}

/// One row through the mapping: the output row, or the field at fault and why.
fn map_row(row: &Map<String, Value>, columns: &[Column]) -> Result<Map<String, Value>, (String, String)> {
    if columns.is_empty() {
        return Ok(row.clone());
    }
    let mut out = Map::new();
    for c in columns {
        let value = row.get(&c.from).ok_or_else(|| (c.from.clone(), "column is missing".to_owned()))?;
        let value = match c.ty {
            Some(ty) => coerce(value, ty).map_err(|reason| (c.from.clone(), reason))?,
            None => value.clone(),
        };
        out.insert(c.to.clone(), value);
    }
    Ok(out)
}

fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn records_copy(ctx: RunContext) -> Result<Outcome, ProcessorError> {
    let source = ctx.required(&ctx.source, "source")?;
    let target = ctx.required(&ctx.target, "target")?;
    let (in_format, out_format) = (format_of(&source)?, format_of(&target)?);
    let columns = parse_columns(ctx.param_str("columns").unwrap_or_default())?;
    let reject_target = ctx
        .options
        .get("reject_target")
        .and_then(Value::as_str)
        .map_or_else(|| format!("{target}.rejects.jsonl"), str::to_owned);
    if reject_target == target || source == target {
        return Err(ProcessorError::permanent("source, target and reject file must be different blobs"));
    }
    let input = ctx.blobs.get(&ctx.tenant, &source).await.map_err(|e| match e {
        frostbyte_core::ports::BlobError::NotFound(_) => {
            ProcessorError::permanent(format!("source {source:?} does not exist"))
        }
        e => e.into(),
    })?;
    let rows = read_rows(&input, in_format)?;
    let total = rows.len().max(1) as f64;
    let mut written: Vec<Map<String, Value>> = Vec::with_capacity(rows.len());
    let mut rejects = String::new();
    let mut rejected = 0u64;
    for (i, row) in rows.into_iter().enumerate() {
        let row_number = i + 1;
        let mapped =
            row.map_err(|reason| ("(row)".to_owned(), reason)).and_then(|r| map_row(&r, &columns).map(|m| (m, r)));
        match mapped {
            Ok((m, _)) => written.push(m),
            Err((field, reason)) => {
                rejected += 1;
                rejects.push_str(&json!({"row": row_number, "field": field, "reason": reason}).to_string());
                rejects.push('\n');
            }
        }
        if row_number % 1_000 == 0 {
            ctx.check_cancelled()?;
            ctx.progress(row_number as f64 / total * 0.9, written.len() as u64).await;
            tokio::task::yield_now().await;
        }
    }
    ctx.check_cancelled()?;
    let output = match out_format {
        Format::JsonLines => {
            let mut out = String::new();
            for r in &written {
                out.push_str(&Value::Object(r.clone()).to_string());
                out.push('\n');
            }
            out.into_bytes()
        }
        Format::Csv => {
            let mut header: Vec<String> = columns.iter().map(|c| c.to.clone()).collect();
            if header.is_empty() {
                for r in &written {
                    for k in r.keys() {
                        if !header.contains(k) {
                            header.push(k.clone());
                        }
                    }
                }
            }
            let mut w = csv::Writer::from_writer(Vec::new());
            let fail = |e: csv::Error| ProcessorError::permanent(format!("cannot write CSV: {e}"));
            w.write_record(&header).map_err(fail)?;
            for r in &written {
                w.write_record(header.iter().map(|h| r.get(h).map(csv_cell).unwrap_or_default())).map_err(fail)?;
            }
            w.into_inner().map_err(|e| ProcessorError::permanent(format!("cannot write CSV: {e}")))?
        }
    };
    ctx.blobs.put(&ctx.tenant, &target, Bytes::from(output)).await?;
    if rejected > 0 {
        ctx.blobs.put(&ctx.tenant, &reject_target, Bytes::from(rejects)).await?;
    }
    let mut counts = Map::new();
    counts.insert("rows_written".into(), json!(written.len()));
    counts.insert("rows_rejected".into(), json!(rejected));
    Ok(Outcome { records: written.len() as u64, counts })
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

    #[test]
    fn column_specs_and_coercion() {
        let cols = parse_columns("id:user_id:integer, name, joined::date").unwrap();
        assert_eq!(cols[0], Column { from: "id".into(), to: "user_id".into(), ty: Some(ColumnType::Integer) });
        assert_eq!(cols[1].to, "name");
        assert_eq!(cols[2].ty, Some(ColumnType::Date));
        assert!(parse_columns("a:b:money").is_err());
        let table = [
            (json!("42"), ColumnType::Integer, Ok(json!(42))),
            (json!("4.5"), ColumnType::Integer, Err(())),
            (json!("4.5"), ColumnType::Float, Ok(json!(4.5))),
            (json!("yes"), ColumnType::Boolean, Ok(json!(true))),
            (json!("maybe"), ColumnType::Boolean, Err(())),
            (json!("2026-02-30"), ColumnType::Date, Err(())),
            (json!(7), ColumnType::String, Ok(json!("7"))),
        ];
        for (v, ty, expected) in table {
            assert_eq!(coerce(&v, ty).map_err(|_| ()), expected, "{v} as {ty:?}");
        }
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
