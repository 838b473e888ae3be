//! `retention.sweep`: erases every document of the tenant created before the run's cutoff (the run's creation time
//! minus the tenant's `retention_days`), each through [`DocumentLifecycle::erase`], the use-case behind `DELETE
//! /api/v1/tenants/{tenant}/documents/{doc_id}` (metadata transaction with the tombstone and `DOCUMENT_ERASED`,
//! blobs, verification sweep, `DOCUMENT_ERASURE_VERIFIED`), with the run as the audited actor
//! (`pipeline:{run_id}`).
//!
//! Output, in the tenant's blob space: the erasure receipts as JSON Lines at `target` (one receipt per line, with
//! the `run_id`), and `{target}.manifest.json` with the counts (`erased`, `kept`, `failed`, `unverified`), the
//! cutoff, the failures (doc id and reason) and the receipts' sha256. A tenant whose `retention_days` is `null`
//! erases nothing, and the manifest says so.
//!
//! **Crash safety.** Receipts are flushed every [`FLUSH_EVERY`] erasures. A resumed attempt of the same run keeps
//! the receipt lines already written for it, and finds the documents it erased after the last flush by their
//! `DOCUMENT_ERASED` events (actor `pipeline:{run_id}`): erasing those again returns their receipt
//! (`already_erased: true`) without removing anything twice. The cutoff is fixed by the run's creation time, so
//! every attempt sweeps the same documents. Cancellation is checked between documents; the receipts of what was
//! erased are flushed before the run stops.
//!
//! [`DocumentLifecycle::erase`]: frostbyte_core::service::lifecycle::DocumentLifecycle::erase

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::AuditFilter;
use frostbyte_core::page::PageRequest;
use frostbyte_core::ports::BlobError;
use frostbyte_core::service::tenants::{Actor, ServiceError};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::processors::{Outcome, ProcessorError, RunContext};

/// Receipts are written to the blob store after this many erasures (and at the end).
const FLUSH_EVERY: usize = 25;
/// Documents and audit events read per page.
const PAGE: u32 = 500;

/// The receipts gathered so far and where they go.
struct Receipts {
    key: String,
    lines: Vec<Value>,
    doc_ids: HashSet<Uuid>,
}

impl Receipts {
    /// The receipt lines an earlier attempt of this run wrote to `key` (a file of another run is replaced).
    async fn resume(ctx: &RunContext, key: String) -> Result<Receipts, ProcessorError> {
        let mut receipts = Receipts { key, lines: Vec::new(), doc_ids: HashSet::new() };
        let existing = match ctx.blobs.get(&ctx.tenant, &receipts.key).await {
            Ok(bytes) => bytes,
            Err(BlobError::NotFound(_)) => return Ok(receipts),
            Err(e) => return Err(e.into()),
        };
        let run = ctx.run_id.to_string();
        for line in String::from_utf8_lossy(&existing).lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && v["run_id"] == json!(run)
            {
                receipts.add(v);
            }
        }
        Ok(receipts)
    }

    fn add(&mut self, line: Value) {
        if let Some(id) = line["doc_id"].as_str().and_then(|s| Uuid::parse_str(s).ok())
            && self.doc_ids.insert(id)
        {
            self.lines.push(line);
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.to_string());
            out.push('\n');
        }
        out.into_bytes()
    }

    async fn flush(&self, ctx: &RunContext) -> Result<(), ProcessorError> {
        ctx.blobs.put(&ctx.tenant, &self.key, Bytes::from(self.bytes())).await?;
        Ok(())
    }
}

/// A receipt as one line of the receipts file.
fn receipt_line(run_id: Uuid, receipt: &frostbyte_core::service::lifecycle::ErasureReceipt) -> Value {
    let mut v = serde_json::to_value(receipt).unwrap_or_else(|_| json!({"doc_id": receipt.doc_id}));
    v["run_id"] = json!(run_id.to_string());
    v
}

/// Turns an erasure error into a failure of the run when it is worth retrying the whole run (a store or the blob
/// store unavailable); other errors are counted as the document's failure.
fn retryable(e: &ServiceError) -> bool {
    match e {
        ServiceError::Store(s) => s.is_retryable(),
        ServiceError::Blob(BlobError::Unavailable(_)) => true,
        _ => false,
    }
}

/// Documents this run erased (its `DOCUMENT_ERASED` events since the run was created).
async fn erased_by_run(ctx: &RunContext, since: DateTime<Utc>) -> Result<Vec<Uuid>, ProcessorError> {
    let actor = Actor::Pipeline(ctx.run_id).to_string();
    let filter = AuditFilter { event_type: Some("DOCUMENT_ERASED".into()), start: Some(since), ..Default::default() };
    let mut out = Vec::new();
    for page in 1.. {
        let events = ctx.store.list_audit(&ctx.tenant, &filter, PageRequest::new(page, PAGE)).await?;
        let n = events.items.len();
        out.extend(
            events.items.into_iter().filter(|e| e.actor == actor).filter_map(|e| Uuid::parse_str(&e.resource_id).ok()),
        );
        if n < PAGE as usize {
            break;
        }
    }
    Ok(out)
}

/// The tenant's documents created before `cutoff` (oldest last), and how many are kept.
async fn expired(ctx: &RunContext, cutoff: DateTime<Utc>) -> Result<(Vec<Uuid>, u64), ProcessorError> {
    let plane = super::reindex::plane(ctx)?;
    let (mut old, mut seen, mut kept) = (Vec::new(), HashSet::new(), 0u64);
    for page in 1.. {
        let docs = plane.intake.documents.list_documents(&ctx.tenant, None, None, PageRequest::new(page, PAGE)).await?;
        let n = docs.items.len();
        for d in docs.items {
            if !seen.insert(d.doc_id) {
                continue;
            }
            if d.created_at < cutoff { old.push(d.doc_id) } else { kept += 1 }
        }
        if n < PAGE as usize {
            break;
        }
    }
    Ok((old, kept))
}

pub(super) async fn retention_sweep(ctx: RunContext) -> Result<Outcome, ProcessorError> {
    let plane = super::reindex::plane(&ctx)?;
    let target = super::reindex::target(&ctx)?;
    let tenant = ctx
        .store
        .get_tenant(&ctx.tenant)
        .await?
        .ok_or_else(|| ProcessorError::permanent("the tenant no longer exists"))?;
    let run = ctx
        .runs
        .get_run(&ctx.tenant, ctx.run_id)
        .await?
        .ok_or_else(|| ProcessorError::permanent("the run no longer exists"))?;
    let manifest_key = format!("{target}.manifest.json");
    let mut receipts = Receipts::resume(&ctx, target.clone()).await?;

    let Some(days) = tenant.config.retention_days else {
        let message = "the tenant has no retention_days configured: nothing was erased";
        tracing::info!(tenant = %ctx.tenant, run_id = %ctx.run_id, "retention sweep: no retention configured");
        receipts.flush(&ctx).await?;
        let manifest = json!({"file": target, "run_id": ctx.run_id, "retention_days": null, "cutoff": null,
                              "erased": 0, "kept": 0, "failed": 0, "unverified": 0, "failures": [],
                              "file_sha256": hex::encode(Sha256::digest(receipts.bytes())), "message": message});
        put_json(&ctx, &manifest_key, &manifest).await?;
        let mut counts = counts(0, 0, 0, 0);
        counts.insert("message".into(), json!(message));
        return Ok(Outcome { records: 0, counts });
    };
    let cutoff = run.created_at - chrono::Duration::days(i64::from(days));
    let lifecycle = plane.lifecycle();
    let actor = Actor::Pipeline(ctx.run_id);

    // Erasures an earlier attempt committed after its last flush: erasing again returns their receipts.
    for doc_id in erased_by_run(&ctx, run.created_at).await? {
        if receipts.doc_ids.contains(&doc_id) {
            continue;
        }
        match lifecycle.erase(&ctx.tenant, doc_id, &actor).await {
            Ok(r) => receipts.add(receipt_line(ctx.run_id, &r)),
            Err(e) if retryable(&e) => return Err(ProcessorError::Failed { message: e.to_string(), retryable: true }),
            Err(error) => tracing::warn!(%error, doc_id = %doc_id, "cannot re-read the receipt of an earlier erasure"),
        }
    }

    let (old, kept) = expired(&ctx, cutoff).await?;
    let total = old.len().max(1) as f64;
    let (mut failures, mut since_flush) = (Vec::new(), 0usize);
    for (i, doc_id) in old.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            receipts.flush(&ctx).await?;
            return Err(ProcessorError::Cancelled);
        }
        if receipts.doc_ids.contains(doc_id) {
            continue;
        }
        match lifecycle.erase(&ctx.tenant, *doc_id, &actor).await {
            Ok(r) => {
                receipts.add(receipt_line(ctx.run_id, &r));
                since_flush += 1;
            }
            // Erased by someone else meanwhile: nothing left to do.
            Err(ServiceError::NotFound(_)) => {}
            Err(e) if retryable(&e) => {
                receipts.flush(&ctx).await?;
                return Err(ProcessorError::Failed { message: e.to_string(), retryable: true });
            }
            Err(error) => {
                tracing::warn!(%error, doc_id = %doc_id, run_id = %ctx.run_id, "retention sweep could not erase a document");
                failures.push(json!({"doc_id": doc_id, "reason": error.to_string()}));
            }
        }
        if since_flush >= FLUSH_EVERY {
            receipts.flush(&ctx).await?;
            since_flush = 0;
            super::reindex::progress(&ctx, (i + 1) as f64 / total * 0.95, receipts.lines.len() as u64).await;
        }
    }
    receipts.flush(&ctx).await?;
    let erased = receipts.lines.len() as u64;
    let unverified = receipts.lines.iter().filter(|l| l["verified"] != json!(true)).count() as u64;
    let failed = failures.len() as u64;
    let manifest = json!({
        "file": target,
        "run_id": ctx.run_id,
        "retention_days": days,
        "cutoff": frostbyte_core::format_timestamp(&cutoff),
        "erased": erased,
        "kept": kept,
        "failed": failed,
        "unverified": unverified,
        "failures": failures,
        "file_sha256": hex::encode(Sha256::digest(receipts.bytes())),
    });
    put_json(&ctx, &manifest_key, &manifest).await?;
    tracing::info!(tenant = %ctx.tenant, run_id = %ctx.run_id, erased, kept, failed, "retention sweep finished");
    Ok(Outcome { records: erased, counts: counts(erased, kept, failed, unverified) })
}

fn counts(erased: u64, kept: u64, failed: u64, unverified: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("erased".into(), json!(erased));
    m.insert("kept".into(), json!(kept));
    m.insert("failed".into(), json!(failed));
    m.insert("unverified".into(), json!(unverified));
    m
}

pub(super) async fn put_json(ctx: &RunContext, key: &str, value: &Value) -> Result<(), ProcessorError> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| ProcessorError::permanent(format!("cannot encode {key}: {e}")))?;
    ctx.blobs.put(&ctx.tenant, key, Bytes::from(bytes)).await?;
    Ok(())
}
