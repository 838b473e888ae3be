//! The document lifecycle on SQLite (`migrations/sqlite/0006_document_lifecycle.sql`): generations, replacement,
//! erasure with a tombstone, and the purge of a tenant. Every write runs in a `BEGIN IMMEDIATE` transaction, so it
//! is serialised with every other writer, the pipeline's guarded writes included.

use frostbyte_core::documents::DocumentStages;
use frostbyte_core::lifecycle::{
    DocumentErasure, DocumentResidue, DocumentTombstone, ErasureAudit, PurgeAudit, ReplacementContent,
    TenantDocumentRows,
};
use frostbyte_core::queue::NewJob;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::encode_stages;
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::sqlite::{SqliteStore, append_in_tx};

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Runs a statement whose one parameter is the tenant id; returns the rows it changed.
async fn exec(conn: &mut SqliteConnection, tenant: &TenantId, sql: &'static str) -> StoreResult<u64> {
    Ok(sqlx::query(sql).bind(tenant.as_str()).execute(&mut *conn).await.map_err(err("document"))?.rows_affected())
}

pub(crate) fn generation_from(stored: i64) -> StoreResult<u64> {
    u64::try_from(stored).map_err(|_| codec::corrupt("documents.generation"))
}

/// The live document's generation and raw sha256.
pub(crate) async fn current(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    doc_id: &str,
) -> StoreResult<Option<(u64, String)>> {
    let row = sqlx::query("SELECT generation, raw_sha256 FROM documents WHERE tenant_id = ? AND doc_id = ?")
        .bind(tenant.as_str())
        .bind(doc_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("document"))?;
    row.map(|r| Ok((generation_from(column(&r, "generation")?)?, column(&r, "raw_sha256")?))).transpose()
}

/// `Ok` when a live document `doc_id` is at `generation`; `NotFound` when there is none, `Conflict` when it is at
/// another generation. Callers hold the write transaction.
pub(crate) async fn check_generation(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    doc_id: &str,
    generation: u64,
) -> StoreResult<()> {
    match current(conn, tenant, doc_id).await? {
        None => Err(StoreError::NotFound { resource: "document" }),
        Some((g, _)) if g != generation => {
            Err(StoreError::Conflict(format!("document is at generation {g}, not {generation}")))
        }
        Some(_) => Ok(()),
    }
}

pub(crate) async fn document_generation(
    store: &SqliteStore,
    tenant: &TenantId,
    doc_id: Uuid,
) -> StoreResult<Option<u64>> {
    let mut conn = store.pool().acquire().await.map_err(err("database"))?;
    Ok(current(&mut conn, tenant, &doc_id.to_string()).await?.map(|(g, _)| g))
}

pub(crate) async fn replace_content(
    store: &SqliteStore,
    tenant: &TenantId,
    doc_id: Uuid,
    expected_generation: u64,
    content: &ReplacementContent,
    first_job: NewJob,
    audit: frostbyte_core::audit::NewAuditEvent,
) -> StoreResult<()> {
    let now = frostbyte_core::now();
    let id = doc_id.to_string();
    let mut tx = store.begin_write().await?;
    check_generation(&mut tx, tenant, &id, expected_generation).await?;
    let next =
        i64::try_from(expected_generation + 1).map_err(|_| StoreError::Internal("generation overflow".into()))?;
    sqlx::query(
        "UPDATE documents SET receipt_id = ?, original_filename = ?, mime_type = ?, size_bytes = ?, raw_sha256 = ?, \
         metadata = ?, collection = ?, status = 'processing', stages = ?, lineage = '{}', error_code = NULL, \
         updated_at = ?, generation = ? WHERE tenant_id = ? AND doc_id = ?",
    )
    .bind(content.receipt_id.to_string())
    .bind(&content.original_filename)
    .bind(&content.mime_type)
    .bind(i64::try_from(content.size_bytes).map_err(|_| StoreError::Internal("document too large".into()))?)
    .bind(&content.raw_sha256)
    .bind(content.metadata.to_string())
    .bind(content.collection.as_deref())
    .bind(encode_stages(&DocumentStages::received()).to_string())
    .bind(codec::encode_timestamp(&now))
    .bind(next)
    .bind(tenant.as_str())
    .bind(&id)
    .execute(&mut *tx)
    .await
    .map_err(err("document"))?;
    crate::queue::sqlite::enqueue_in_tx(&mut tx, tenant, first_job).await?;
    append_in_tx(&mut tx, tenant, audit, now).await?;
    tx.commit().await.map_err(err("transaction"))
}

pub(crate) async fn erase_document(
    store: &SqliteStore,
    tenant: &TenantId,
    doc_id: Uuid,
    audit: ErasureAudit,
) -> StoreResult<Option<DocumentErasure>> {
    let now = frostbyte_core::now();
    let id = doc_id.to_string();
    let mut tx = store.begin_write().await?;
    let Some((generation, raw_sha256)) = current(&mut tx, tenant, &id).await? else {
        return Ok(None);
    };
    let index = crate::index::sqlite::delete_document_in_tx(&mut tx, tenant, &id).await?;
    // Running jobs finish on their own and write nothing (their guarded writes find no document).
    let jobs = sqlx::query(
        "DELETE FROM jobs WHERE tenant_id = ? AND resource_id = ? AND stage <> 'pipeline' AND status <> 'running'",
    )
    .bind(tenant.as_str())
    .bind(&id)
    .execute(&mut *tx)
    .await
    .map_err(err("job"))?
    .rows_affected();
    sqlx::query("DELETE FROM documents WHERE tenant_id = ? AND doc_id = ?")
        .bind(tenant.as_str())
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(err("document"))?;
    // A batch keeps its file's row (the batch's report still counts it) without the filename, which may be
    // personal data.
    sqlx::query("UPDATE batch_files SET filename = '', message = NULL WHERE tenant_id = ? AND doc_id = ?")
        .bind(tenant.as_str())
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(err("batch"))?;
    sqlx::query(
        "INSERT INTO document_tombstones (tenant_id, doc_id, generation, raw_sha256, erased_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = excluded.generation, raw_sha256 = \
         excluded.raw_sha256, erased_at = excluded.erased_at",
    )
    .bind(tenant.as_str())
    .bind(&id)
    .bind(i64::try_from(generation).unwrap_or(i64::MAX))
    .bind(&raw_sha256)
    .bind(codec::encode_timestamp(&now))
    .execute(&mut *tx)
    .await
    .map_err(err("document"))?;
    let erasure = DocumentErasure { doc_id, generation, raw_sha256, index, jobs, erased_at: now };
    append_in_tx(&mut tx, tenant, audit(&erasure), now).await?;
    tx.commit().await.map_err(err("transaction"))?;
    Ok(Some(erasure))
}

pub(crate) async fn get_tombstone(
    store: &SqliteStore,
    tenant: &TenantId,
    doc_id: Uuid,
) -> StoreResult<Option<DocumentTombstone>> {
    let row = sqlx::query(
        "SELECT generation, raw_sha256, erased_at FROM document_tombstones WHERE tenant_id = ? AND doc_id = ?",
    )
    .bind(tenant.as_str())
    .bind(doc_id.to_string())
    .fetch_optional(store.pool())
    .await
    .map_err(err("document"))?;
    row.map(|r| {
        Ok(DocumentTombstone {
            doc_id,
            generation: generation_from(column(&r, "generation")?)?,
            raw_sha256: column(&r, "raw_sha256")?,
            erased_at: codec::decode_timestamp(
                &column::<_, String>(&r, "erased_at")?,
                "document_tombstones.erased_at",
            )?,
        })
    })
    .transpose()
}

pub(crate) async fn raw_references(store: &SqliteStore, tenant: &TenantId, sha256: &str) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE tenant_id = ? AND raw_sha256 = ?")
        .bind(tenant.as_str())
        .bind(sha256)
        .fetch_one(store.pool())
        .await
        .map_err(err("document"))?;
    Ok(count(n))
}

pub(crate) async fn document_residue(
    store: &SqliteStore,
    tenant: &TenantId,
    doc_id: Uuid,
) -> StoreResult<DocumentResidue> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM documents WHERE tenant_id = ?1 AND doc_id = ?2) AS row_count, \
         (SELECT COUNT(*) FROM chunks WHERE tenant_id = ?1 AND doc_id = ?2) AS chunks, \
         (SELECT COUNT(*) FROM jobs WHERE tenant_id = ?1 AND resource_id = ?2 AND stage <> 'pipeline' \
          AND status IN ('queued', 'dead')) AS pending_jobs",
    )
    .bind(tenant.as_str())
    .bind(doc_id.to_string())
    .fetch_one(store.pool())
    .await
    .map_err(err("document"))?;
    Ok(DocumentResidue {
        row: column::<_, i64>(&row, "row_count")? > 0,
        chunks: count(column(&row, "chunks")?),
        pending_jobs: count(column(&row, "pending_jobs")?),
    })
}

pub(crate) async fn purge_tenant(
    store: &SqliteStore,
    tenant: &TenantId,
    audit: PurgeAudit,
) -> StoreResult<TenantDocumentRows> {
    let now = frostbyte_core::now();
    let mut tx = store.begin_write().await?;
    let documents = exec(&mut tx, tenant, "DELETE FROM documents WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM tenant_raw_usage WHERE tenant_id = ?").await?;
    let tombstones = exec(&mut tx, tenant, "DELETE FROM document_tombstones WHERE tenant_id = ?").await?;
    // Keyword entries first: the FTS5 'delete' command needs the text of the rows it removes.
    exec(
        &mut tx,
        tenant,
        "INSERT INTO chunks_fts (chunks_fts, rowid, text) SELECT 'delete', id, text FROM chunks WHERE tenant_id = ?",
    )
    .await?;
    let chunks = exec(&mut tx, tenant, "DELETE FROM chunks WHERE tenant_id = ?").await?;
    let jobs = exec(&mut tx, tenant, "DELETE FROM jobs WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM job_tenants WHERE tenant_id = ?").await?;
    // The search change feed (ids and counters only; the chunk deletes above just wrote to it). An in-memory index
    // that sees the counter go backwards reloads from nothing.
    exec(&mut tx, tenant, "DELETE FROM chunk_changes WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM chunk_generations WHERE tenant_id = ?").await?;
    // Batch receipts carry filenames and hashes; the metadata schema, signals and pipeline runs are the tenant's
    // own too.
    exec(&mut tx, tenant, "DELETE FROM batch_files WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM batches WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM metadata_schemas WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM signal_features WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM signal_states WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM signal_events WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM signal_feature_sets WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM pipeline_webhook_attempts WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM pipeline_webhook_deliveries WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM pipeline_schedules WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM pipeline_runs WHERE tenant_id = ?").await?;
    exec(&mut tx, tenant, "DELETE FROM sync_files WHERE tenant_id = ?").await?;
    let removed = TenantDocumentRows { documents, tombstones, chunks, jobs };
    append_in_tx(&mut tx, tenant, audit(&removed), now).await?;
    tx.commit().await.map_err(err("transaction"))?;
    Ok(removed)
}

pub(crate) async fn tenant_residue(store: &SqliteStore, tenant: &TenantId) -> StoreResult<TenantDocumentRows> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM documents WHERE tenant_id = ?1) AS documents, \
         (SELECT COUNT(*) FROM document_tombstones WHERE tenant_id = ?1) AS tombstones, \
         (SELECT COUNT(*) FROM chunks WHERE tenant_id = ?1) AS chunks, \
         (SELECT COUNT(*) FROM jobs WHERE tenant_id = ?1) AS jobs",
    )
    .bind(tenant.as_str())
    .fetch_one(store.pool())
    .await
    .map_err(err("document"))?;
    Ok(TenantDocumentRows {
        documents: count(column(&row, "documents")?),
        tombstones: count(column(&row, "tombstones")?),
        chunks: count(column(&row, "chunks")?),
        jobs: count(column(&row, "jobs")?),
    })
}
