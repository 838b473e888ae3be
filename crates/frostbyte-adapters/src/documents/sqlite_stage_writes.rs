//! [`DocumentStore::apply_stage_writes`](frostbyte_core::documents::DocumentStore::apply_stage_writes) for
//! [`SqliteStore`]: a worker's batch of stage writes in one transaction, with a handful of set-based statements
//! per batch instead of a dozen per document.
//!
//! The writes are taken in runs in which no document and no job repeats (a batch from one claim is one run).
//! Each run: one read of its documents with their generations; the refusals by document (none, or at another
//! generation) decided from it; one statement completing the jobs of the rest, whose refusals (a job no longer
//! leased to the worker) it reports; then, for the writes still standing, their chunks (`swap_chunks_in_tx`),
//! one update of their rows and one insert of their next jobs. A refused write is simply left out of those
//! statements, so it writes nothing, exactly as if it had been applied on its own and rolled back. The applied
//! writes' audit events are appended together at the end, in write order.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::documents::{DocumentRecord, StageWrite};
use frostbyte_core::index::IndexedChunk;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::sqlite::document_from_row;
use super::sqlite_lifecycle::generation_from;
use super::{document_columns, encode_stages};
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::sqlite::{SqliteStore, append_all_in_tx};

/// Document rows per `UPDATE … FROM (VALUES …)`: six parameters each, far below SQLite's bound-parameter limit.
const UPDATE_ROWS: usize = 500;

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

/// See the module documentation.
pub(crate) async fn apply_stage_writes(
    store: &SqliteStore,
    tenant: &TenantId,
    writes: Vec<StageWrite>,
) -> StoreResult<Vec<StoreResult<DocumentRecord>>> {
    let now = frostbyte_core::now();
    let mut tx = store.begin_write().await?;
    // Once for the batch, not per document: the tenant exists and can take jobs.
    match crate::queue::sqlite::ready_for_jobs_in_tx(&mut tx, tenant).await {
        Ok(()) => {}
        // No tenant: every write is refused, as each would have been on its own.
        Err(StoreError::NotFound { resource }) => {
            return Ok(writes.iter().map(|_| Err(StoreError::NotFound { resource })).collect());
        }
        Err(e) => return Err(e),
    }
    let mut results = Vec::with_capacity(writes.len());
    // The applied writes' events, in write order: appended together, so the chain advances once per batch.
    let mut audit = Vec::new();
    let mut writes = writes.into_iter().peekable();
    loop {
        let run = next_run(&mut writes);
        if run.is_empty() {
            break;
        }
        for (result, events) in apply_run(&mut tx, tenant, run, now).await? {
            if result.is_ok() {
                audit.extend(events);
            }
            results.push(result);
        }
    }
    append_all_in_tx(&mut tx, tenant, audit, now).await?;
    tx.commit().await.map_err(err("transaction"))?;
    Ok(results)
}

/// The longest run of the next writes in which no document and no job to complete repeats.
fn next_run(writes: &mut std::iter::Peekable<std::vec::IntoIter<StageWrite>>) -> Vec<StageWrite> {
    let (mut docs, mut jobs) = (HashSet::new(), HashSet::new());
    let mut run = Vec::new();
    while let Some(w) = writes.next_if(|w| {
        !docs.contains(&w.doc_id) && w.update.completes_job.as_ref().is_none_or(|(job, _)| !jobs.contains(job))
    }) {
        docs.insert(w.doc_id);
        jobs.extend(w.update.completes_job.as_ref().map(|(job, _)| *job));
        run.push(w);
    }
    run
}

/// Applies one run (no repeated document or job); each write's result and audit events, in order.
async fn apply_run(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    run: Vec<StageWrite>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<(StoreResult<DocumentRecord>, Vec<NewAuditEvent>)>> {
    let mut current = documents_at(conn, tenant, run.iter().map(|w| w.doc_id)).await?;
    let mut verdicts: Vec<StoreResult<()>> = run
        .iter()
        .map(|w| match current.get(&w.doc_id) {
            None => Err(StoreError::NotFound { resource: "document" }),
            Some((_, g)) if *g != w.generation => {
                Err(StoreError::Conflict(format!("document is at generation {g}, not {}", w.generation)))
            }
            Some(_) => Ok(()),
        })
        .collect();

    // The jobs of the writes still standing, completed in one statement; one no longer leased is refused.
    let completing: Vec<(usize, (Uuid, &str))> = run
        .iter()
        .enumerate()
        .filter(|(i, _)| verdicts[*i].is_ok())
        .filter_map(|(i, w)| w.update.completes_job.as_ref().map(|(job, worker)| (i, (*job, worker.as_str()))))
        .collect();
    let pairs: Vec<(Uuid, &str)> = completing.iter().map(|(_, pair)| *pair).collect();
    let completed = crate::queue::sqlite::complete_all_in_tx(conn, &pairs, now).await?;
    for ((i, _), result) in completing.iter().zip(completed) {
        if let Err(e) = result {
            verdicts[*i] = Err(e);
        }
    }

    let chunks: Vec<(String, &[IndexedChunk])> = run
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_ok())
        .filter_map(|(w, _)| w.chunks.as_deref().map(|c| (w.doc_id.to_string(), c)))
        .collect();
    let chunks: Vec<(&str, &[IndexedChunk])> = chunks.iter().map(|(id, c)| (id.as_str(), *c)).collect();
    crate::index::sqlite::swap_chunks_in_tx(conn, tenant, &chunks).await?;

    let mut out = Vec::with_capacity(run.len());
    let (mut rows, mut next_jobs) = (Vec::new(), Vec::new());
    for (w, verdict) in run.into_iter().zip(verdicts) {
        let result = verdict.and_then(|()| {
            let (mut doc, _) =
                current.remove(&w.doc_id).ok_or(StoreError::Internal("a run repeated a document".into()))?;
            w.update.apply_to(&mut doc, now);
            next_jobs.extend(w.next_job);
            rows.push(doc.clone());
            Ok(doc)
        });
        out.push((result, w.audit));
    }
    update_rows(conn, tenant, &rows).await?;
    crate::queue::sqlite::insert_jobs_in_tx(conn, tenant, next_jobs).await?;
    Ok(out)
}

/// The tenant's documents among `ids`, with their generations, in one read.
pub(super) async fn documents_at(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    ids: impl Iterator<Item = Uuid>,
) -> StoreResult<HashMap<Uuid, (DocumentRecord, u64)>> {
    let ids = serde_json::to_string(&ids.map(|id| id.to_string()).collect::<Vec<_>>())
        .map_err(|_| StoreError::Internal("document ids could not be encoded".into()))?;
    let rows = sqlx::query(concat!(
        "SELECT generation, ",
        document_columns!(),
        " FROM documents WHERE tenant_id = ? AND doc_id IN (SELECT value FROM json_each(?))"
    ))
    .bind(tenant.as_str())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(err("document"))?;
    rows.iter()
        .map(|row| {
            let doc = document_from_row(row)?;
            Ok((doc.doc_id, (doc, generation_from(column(row, "generation")?)?)))
        })
        .collect()
}

/// Writes the updated columns of several document rows (status, stages, lineage, error, time) in one statement
/// per [`UPDATE_ROWS`].
async fn update_rows(conn: &mut SqliteConnection, tenant: &TenantId, docs: &[DocumentRecord]) -> StoreResult<()> {
    for docs in docs.chunks(UPDATE_ROWS) {
        let mut update = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "UPDATE documents SET status = v.column2, stages = v.column3, lineage = v.column4, \
             error_code = v.column5, updated_at = v.column6 FROM (",
        );
        update.push_values(docs, |mut b, doc| {
            b.push_bind(doc.doc_id.to_string())
                .push_bind(doc.status.as_str())
                .push_bind(encode_stages(&doc.stages).to_string())
                .push_bind(Value::Object(doc.lineage.clone()).to_string())
                .push_bind(doc.error_code.clone())
                .push_bind(codec::encode_timestamp(&doc.updated_at));
        });
        update.push(") AS v WHERE documents.tenant_id = ").push_bind(tenant.as_str().to_owned());
        update.push(" AND documents.doc_id = v.column1");
        // One statement per row count: not kept prepared (see `index::sqlite::swap_chunks_in_tx`).
        update.build().persistent(false).execute(&mut *conn).await.map_err(err("document"))?;
    }
    Ok(())
}
