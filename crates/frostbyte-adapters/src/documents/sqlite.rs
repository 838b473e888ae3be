//! [`DocumentStore`] for [`SqliteStore`]: every write in a `BEGIN IMMEDIATE` transaction, which also serialises
//! the audit append and the job insert that go with it.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::documents::{DocumentRecord, DocumentStatus, DocumentStore, StageUpdate, StageWrite};
use frostbyte_core::index::IndexedChunk;
use frostbyte_core::lifecycle::{
    DocumentErasure, DocumentResidue, DocumentTombstone, ErasureAudit, PurgeAudit, ReplacementContent,
    TenantDocumentRows,
};
use frostbyte_core::page::{Page, PageRequest};
use frostbyte_core::queue::NewJob;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use uuid::Uuid;

use super::sqlite_lifecycle as lifecycle;
use super::{decode_object, decode_stages, decode_status, document_columns, encode_stages};
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::sqlite::{SqliteStore, append_all_in_tx, append_in_tx};

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

fn json_column(row: &SqliteRow, name: &'static str, what: &'static str) -> StoreResult<Value> {
    serde_json::from_str(&column::<_, String>(row, name)?).map_err(|_| codec::corrupt(what))
}

pub(super) fn document_from_row(row: &SqliteRow) -> StoreResult<DocumentRecord> {
    Ok(DocumentRecord {
        doc_id: codec::decode_uuid(&column::<_, String>(row, "doc_id")?, "documents.doc_id")?,
        receipt_id: codec::decode_uuid(&column::<_, String>(row, "receipt_id")?, "documents.receipt_id")?,
        original_filename: column(row, "original_filename")?,
        mime_type: column(row, "mime_type")?,
        size_bytes: u64::try_from(column::<_, i64>(row, "size_bytes")?)
            .map_err(|_| codec::corrupt("documents.size_bytes"))?,
        raw_sha256: column(row, "raw_sha256")?,
        metadata: json_column(row, "metadata", "documents.metadata")?,
        collection: column(row, "collection")?,
        status: decode_status(&column::<_, String>(row, "status")?)?,
        stages: decode_stages(json_column(row, "stages", "documents.stages")?)?,
        lineage: decode_object(json_column(row, "lineage", "documents.lineage")?, "documents.lineage")?,
        error_code: column(row, "error_code")?,
        created_at: codec::decode_timestamp(&column::<_, String>(row, "created_at")?, "documents.created_at")?,
        updated_at: codec::decode_timestamp(&column::<_, String>(row, "updated_at")?, "documents.updated_at")?,
    })
}

async fn select_one(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    key_column: &'static str,
    key: Uuid,
) -> StoreResult<Option<DocumentRecord>> {
    let sql = match key_column {
        "receipt_id" => {
            concat!("SELECT ", document_columns!(), " FROM documents WHERE tenant_id = ? AND receipt_id = ?")
        }
        _ => concat!("SELECT ", document_columns!(), " FROM documents WHERE tenant_id = ? AND doc_id = ?"),
    };
    sqlx::query(sql)
        .bind(tenant.as_str())
        .bind(key.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("document"))?
        .as_ref()
        .map(document_from_row)
        .transpose()
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn create_documents(
        &self,
        tenant: &TenantId,
        documents: Vec<(DocumentRecord, NewJob, NewAuditEvent)>,
    ) -> StoreResult<()> {
        if documents.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        // The tenant exists (NotFound) before anything is written.
        crate::queue::sqlite::ready_for_jobs_in_tx(&mut tx, tenant).await?;
        let n = documents.len();
        let (mut docs, mut jobs, mut audit) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for (doc, job, event) in documents {
            docs.push(doc);
            jobs.push(job);
            audit.push(event);
        }
        super::batch_sqlite::insert_documents(&mut tx, tenant, &docs).await?;
        crate::queue::sqlite::insert_jobs_in_tx(&mut tx, tenant, jobs).await?;
        append_all_in_tx(&mut tx, tenant, audit, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn get_document(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<DocumentRecord>> {
        let mut conn = self.pool().acquire().await.map_err(err("database"))?;
        select_one(&mut conn, tenant, "doc_id", doc_id).await
    }

    async fn get_by_receipt(&self, tenant: &TenantId, receipt_id: Uuid) -> StoreResult<Option<DocumentRecord>> {
        let mut conn = self.pool().acquire().await.map_err(err("database"))?;
        select_one(&mut conn, tenant, "receipt_id", receipt_id).await
    }

    async fn update_stage(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        update: StageUpdate,
        next_job: Option<NewJob>,
        audit: NewAuditEvent,
    ) -> StoreResult<DocumentRecord> {
        update_stage_checked(self, tenant, doc_id, None, update, next_job, audit).await
    }

    // --- lifecycle (documents/sqlite_lifecycle.rs) --------------------------------------------------------------

    async fn document_generation(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<u64>> {
        lifecycle::document_generation(self, tenant, doc_id).await
    }

    async fn documents_at(&self, tenant: &TenantId, doc_ids: &[Uuid]) -> StoreResult<Vec<(DocumentRecord, u64)>> {
        let mut conn = self.pool().acquire().await.map_err(err("database"))?;
        let found = super::sqlite_stage_writes::documents_at(&mut conn, tenant, doc_ids.iter().copied()).await?;
        Ok(found.into_values().collect())
    }

    async fn update_stage_at(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        generation: u64,
        update: StageUpdate,
        next_job: Option<NewJob>,
        audit: NewAuditEvent,
    ) -> StoreResult<DocumentRecord> {
        update_stage_checked(self, tenant, doc_id, Some(generation), update, next_job, audit).await
    }

    async fn apply_stage_writes(
        &self,
        tenant: &TenantId,
        writes: Vec<StageWrite>,
    ) -> StoreResult<Vec<StoreResult<DocumentRecord>>> {
        super::sqlite_stage_writes::apply_stage_writes(self, tenant, writes).await
    }

    async fn replace_content(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        expected_generation: u64,
        content: &ReplacementContent,
        first_job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<DocumentRecord> {
        lifecycle::replace_content(self, tenant, doc_id, expected_generation, content, first_job, audit).await?;
        self.get_document(tenant, doc_id).await?.ok_or(StoreError::NotFound { resource: "document" })
    }

    async fn erase_document(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        audit: ErasureAudit,
    ) -> StoreResult<Option<DocumentErasure>> {
        lifecycle::erase_document(self, tenant, doc_id, audit).await
    }

    async fn get_tombstone(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<DocumentTombstone>> {
        lifecycle::get_tombstone(self, tenant, doc_id).await
    }

    async fn raw_references(&self, tenant: &TenantId, sha256: &str) -> StoreResult<u64> {
        lifecycle::raw_references(self, tenant, sha256).await
    }

    async fn document_residue(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<DocumentResidue> {
        lifecycle::document_residue(self, tenant, doc_id).await
    }

    async fn purge_tenant(&self, tenant: &TenantId, audit: PurgeAudit) -> StoreResult<TenantDocumentRows> {
        lifecycle::purge_tenant(self, tenant, audit).await
    }

    async fn tenant_residue(&self, tenant: &TenantId) -> StoreResult<TenantDocumentRows> {
        lifecycle::tenant_residue(self, tenant).await
    }

    async fn newest_by_filename(
        &self,
        tenant: &TenantId,
        filenames: &[String],
    ) -> StoreResult<HashMap<String, DocumentRecord>> {
        if filenames.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents WHERE tenant_id = ? AND original_filename IN (SELECT value FROM json_each(?)) \
             ORDER BY created_at, doc_id"
        ))
        .bind(tenant.as_str())
        .bind(Value::from(filenames).to_string())
        .fetch_all(self.pool())
        .await
        .map_err(err("document"))?;
        // Oldest first, so each name ends with its newest document.
        rows.iter().map(document_from_row).map(|doc| doc.map(|d| (d.original_filename.clone(), d))).collect()
    }

    async fn list_documents(
        &self,
        tenant: &TenantId,
        status: Option<DocumentStatus>,
        collection: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<DocumentRecord>> {
        const WHERE: &str = " FROM documents WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR \
                             collection = ?3)";
        let status = status.map(|s| s.as_str());
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*){WHERE}")))
            .bind(tenant.as_str())
            .bind(status)
            .bind(collection)
            .fetch_one(self.pool())
            .await
            .map_err(err("document"))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {}{WHERE} ORDER BY created_at DESC, doc_id DESC LIMIT ?4 OFFSET ?5",
            document_columns!()
        )))
        .bind(tenant.as_str())
        .bind(status)
        .bind(collection)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(self.pool())
        .await
        .map_err(err("document"))?;
        let items = rows.iter().map(document_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items, total: u64::try_from(total).unwrap_or(0) })
    }
}

/// [`DocumentStore::update_stage`], and with `generation` set [`DocumentStore::update_stage_at`]: the document
/// must still be at that generation inside the transaction.
async fn update_stage_checked(
    store: &SqliteStore,
    tenant: &TenantId,
    doc_id: Uuid,
    generation: Option<u64>,
    update: StageUpdate,
    next_job: Option<NewJob>,
    audit: NewAuditEvent,
) -> StoreResult<DocumentRecord> {
    let now = frostbyte_core::now();
    let mut tx = store.begin_write().await?;
    crate::queue::sqlite::ready_for_jobs_in_tx(&mut tx, tenant).await?;
    let doc = apply_in_tx(&mut tx, tenant, doc_id, generation, update, next_job, None, now).await?;
    append_in_tx(&mut tx, tenant, audit, now).await?;
    tx.commit().await.map_err(err("transaction"))?;
    Ok(doc)
}

/// One document's stage transition inside the caller's write transaction: the generation guard, the chunks (if
/// any), the row, the next job and the job completion. The caller has checked the tenant
/// ([`crate::queue::sqlite::ready_for_jobs_in_tx`]) and appends the audit events.
#[allow(clippy::too_many_arguments)]
async fn apply_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    doc_id: Uuid,
    generation: Option<u64>,
    update: StageUpdate,
    next_job: Option<NewJob>,
    chunks: Option<&[IndexedChunk]>,
    now: DateTime<Utc>,
) -> StoreResult<DocumentRecord> {
    let mut doc =
        select_one(conn, tenant, "doc_id", doc_id).await?.ok_or(StoreError::NotFound { resource: "document" })?;
    if let Some(generation) = generation {
        lifecycle::check_generation(conn, tenant, &doc_id.to_string(), generation).await?;
    }
    if let Some(chunks) = chunks {
        crate::index::sqlite::swap_document_chunks_in_tx(conn, tenant, &doc_id.to_string(), chunks).await?;
    }
    update.apply_to(&mut doc, now);
    sqlx::query(
        "UPDATE documents SET status = ?, stages = ?, lineage = ?, error_code = ?, updated_at = ? \
         WHERE tenant_id = ? AND doc_id = ?",
    )
    .bind(doc.status.as_str())
    .bind(encode_stages(&doc.stages).to_string())
    .bind(Value::Object(doc.lineage.clone()).to_string())
    .bind(doc.error_code.as_deref())
    .bind(codec::encode_timestamp(&doc.updated_at))
    .bind(tenant.as_str())
    .bind(doc_id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(err("document"))?;
    if let Some(job) = next_job {
        crate::queue::sqlite::insert_job_in_tx(conn, tenant, job).await?;
    }
    if let Some((job_id, worker)) = &update.completes_job {
        crate::queue::sqlite::complete_in_tx(conn, *job_id, worker, now).await?;
    }
    Ok(doc)
}
