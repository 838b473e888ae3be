//! [`DocumentStore`] for [`PostgresStore`]: `update_stage` locks the document row (`FOR UPDATE`) so concurrent
//! stage updates of one document apply one after the other.

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
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use super::postgres_lifecycle as lifecycle;
use super::{decode_object, decode_stages, decode_status, document_columns, encode_stages};
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::postgres::{PostgresStore, append_all_in_tx};

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Postgres, resource, e)
}

fn document_from_row(row: &PgRow) -> StoreResult<DocumentRecord> {
    Ok(DocumentRecord {
        doc_id: codec::decode_uuid(&column::<_, String>(row, "doc_id")?, "documents.doc_id")?,
        receipt_id: codec::decode_uuid(&column::<_, String>(row, "receipt_id")?, "documents.receipt_id")?,
        original_filename: column(row, "original_filename")?,
        mime_type: column(row, "mime_type")?,
        size_bytes: u64::try_from(column::<_, i64>(row, "size_bytes")?)
            .map_err(|_| codec::corrupt("documents.size_bytes"))?,
        raw_sha256: column(row, "raw_sha256")?,
        metadata: column(row, "metadata")?,
        collection: column(row, "collection")?,
        status: decode_status(&column::<_, String>(row, "status")?)?,
        stages: decode_stages(column(row, "stages")?)?,
        lineage: decode_object(column(row, "lineage")?, "documents.lineage")?,
        error_code: column(row, "error_code")?,
        created_at: column::<_, DateTime<Utc>>(row, "created_at")?,
        updated_at: column::<_, DateTime<Utc>>(row, "updated_at")?,
    })
}

async fn select_one(
    conn: &mut PgConnection,
    tenant: &TenantId,
    by_receipt: bool,
    key: Uuid,
    lock: bool,
) -> StoreResult<Option<DocumentRecord>> {
    let sql = match (by_receipt, lock) {
        (true, _) => {
            concat!("SELECT ", document_columns!(), " FROM documents WHERE tenant_id = $1 AND receipt_id = $2")
        }
        (false, false) => {
            concat!("SELECT ", document_columns!(), " FROM documents WHERE tenant_id = $1 AND doc_id = $2")
        }
        (false, true) => {
            concat!("SELECT ", document_columns!(), " FROM documents WHERE tenant_id = $1 AND doc_id = $2 FOR UPDATE")
        }
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
impl DocumentStore for PostgresStore {
    async fn create_documents(
        &self,
        tenant: &TenantId,
        documents: Vec<(DocumentRecord, NewJob, NewAuditEvent)>,
    ) -> StoreResult<()> {
        if documents.is_empty() {
            return Ok(());
        }
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let (mut docs, mut audit) = (Vec::with_capacity(documents.len()), Vec::with_capacity(documents.len()));
        for (doc, job, event) in documents {
            // Checks (and share-locks) the tenant before anything of the document is written.
            crate::queue::postgres::enqueue_in_tx(&mut tx, tenant, job).await?;
            docs.push(doc);
            audit.push(event);
        }
        super::batch_postgres::insert_documents(&mut tx, tenant, &docs).await?;
        append_all_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn get_document(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<DocumentRecord>> {
        let mut conn = self.pool().acquire().await.map_err(err("database"))?;
        select_one(&mut conn, tenant, false, doc_id, false).await
    }

    async fn get_by_receipt(&self, tenant: &TenantId, receipt_id: Uuid) -> StoreResult<Option<DocumentRecord>> {
        let mut conn = self.pool().acquire().await.map_err(err("database"))?;
        select_one(&mut conn, tenant, true, receipt_id, false).await
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

    // --- lifecycle (documents/postgres_lifecycle.rs) --------------------------------------------------------------

    async fn document_generation(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<u64>> {
        lifecycle::document_generation(self, tenant, doc_id).await
    }

    async fn documents_at(&self, tenant: &TenantId, doc_ids: &[Uuid]) -> StoreResult<Vec<(DocumentRecord, u64)>> {
        let ids: Vec<String> = doc_ids.iter().map(Uuid::to_string).collect();
        let rows = sqlx::query(concat!(
            "SELECT generation, ",
            document_columns!(),
            " FROM documents WHERE tenant_id = $1 AND doc_id = ANY($2)"
        ))
        .bind(tenant.as_str())
        .bind(ids)
        .fetch_all(self.pool())
        .await
        .map_err(err("document"))?;
        rows.iter()
            .map(|row| Ok((document_from_row(row)?, lifecycle::generation_from(column(row, "generation")?)?)))
            .collect()
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
        apply_stage_writes(self, tenant, writes).await
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
            " FROM documents WHERE tenant_id = $1 AND original_filename = ANY($2) ORDER BY created_at, doc_id"
        ))
        .bind(tenant.as_str())
        .bind(filenames)
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
        const WHERE: &str = " FROM documents WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) AND \
                             ($3::text IS NULL OR collection = $3)";
        let status = status.map(|s| s.as_str());
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*){WHERE}")))
            .bind(tenant.as_str())
            .bind(status)
            .bind(collection)
            .fetch_one(self.pool())
            .await
            .map_err(err("document"))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {}{WHERE} ORDER BY created_at DESC, doc_id DESC LIMIT $4 OFFSET $5",
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
    store: &PostgresStore,
    tenant: &TenantId,
    doc_id: Uuid,
    generation: Option<u64>,
    update: StageUpdate,
    next_job: Option<NewJob>,
    audit: NewAuditEvent,
) -> StoreResult<DocumentRecord> {
    let now = frostbyte_core::now();
    let mut tx = store.begin().await?;
    let doc = apply_in_tx(&mut tx, tenant, doc_id, generation, update, next_job, vec![audit], None, now).await?;
    tx.commit().await.map_err(err("transaction"))?;
    Ok(doc)
}

/// A batch of stage writes in one transaction, each under its own savepoint (see
/// [`DocumentStore::apply_stage_writes`]). The applied writes' audit events are appended together at the end, in
/// write order, so the chain head moves once per batch; a refused write's events are never sealed.
async fn apply_stage_writes(
    store: &PostgresStore,
    tenant: &TenantId,
    writes: Vec<StageWrite>,
) -> StoreResult<Vec<StoreResult<DocumentRecord>>> {
    let now = frostbyte_core::now();
    let mut tx = store.begin().await?;
    let mut results = Vec::with_capacity(writes.len());
    let mut audit = Vec::new();
    for w in writes {
        sqlx::query("SAVEPOINT stage_write").execute(&mut *tx).await.map_err(err("transaction"))?;
        let applied = apply_in_tx(
            &mut tx,
            tenant,
            w.doc_id,
            Some(w.generation),
            w.update,
            w.next_job,
            Vec::new(),
            w.chunks.as_deref(),
            now,
        )
        .await;
        match applied {
            Err(e) if !super::is_refusal(&e) => return Err(e),
            Err(_) => {
                sqlx::query("ROLLBACK TO SAVEPOINT stage_write").execute(&mut *tx).await.map_err(err("transaction"))?;
            }
            Ok(_) => audit.extend(w.audit),
        }
        sqlx::query("RELEASE SAVEPOINT stage_write").execute(&mut *tx).await.map_err(err("transaction"))?;
        results.push(applied);
    }
    append_all_in_tx(&mut tx, tenant, audit, now).await?;
    tx.commit().await.map_err(err("transaction"))?;
    Ok(results)
}

/// One document's stage transition inside the caller's transaction: the row lock and generation guard, the
/// chunks (if any), the row, the next job, the job completion and the audit events.
#[allow(clippy::too_many_arguments)]
async fn apply_in_tx(
    conn: &mut PgConnection,
    tenant: &TenantId,
    doc_id: Uuid,
    generation: Option<u64>,
    update: StageUpdate,
    next_job: Option<NewJob>,
    audit: Vec<NewAuditEvent>,
    chunks: Option<&[IndexedChunk]>,
    now: DateTime<Utc>,
) -> StoreResult<DocumentRecord> {
    let mut doc =
        select_one(conn, tenant, false, doc_id, true).await?.ok_or(StoreError::NotFound { resource: "document" })?;
    if let Some(generation) = generation {
        lifecycle::check_generation(conn, tenant, &doc_id.to_string(), generation, lifecycle::RowLock::None).await?;
    }
    if let Some(chunks) = chunks {
        crate::index::postgres::replace_document_chunks_in_tx(conn, tenant, &doc_id.to_string(), chunks).await?;
    }
    update.apply_to(&mut doc, now);
    sqlx::query(
        "UPDATE documents SET status = $1, stages = $2, lineage = $3, error_code = $4, updated_at = $5 \
         WHERE tenant_id = $6 AND doc_id = $7",
    )
    .bind(doc.status.as_str())
    .bind(encode_stages(&doc.stages))
    .bind(Value::Object(doc.lineage.clone()))
    .bind(doc.error_code.as_deref())
    .bind(doc.updated_at)
    .bind(tenant.as_str())
    .bind(doc_id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(err("document"))?;
    if let Some(job) = next_job {
        crate::queue::postgres::enqueue_in_tx(conn, tenant, job).await?;
    }
    if let Some((job_id, worker)) = &update.completes_job {
        crate::queue::postgres::complete_in_tx(conn, *job_id, worker, now).await?;
    }
    append_all_in_tx(conn, tenant, audit, now).await?;
    Ok(doc)
}
