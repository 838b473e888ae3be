//! [`BatchStore`] for [`SqliteStore`]: batches, their per-file rows and the tenant metadata schema
//! (`migrations/sqlite/0005_batches.sql`). `create_batch` writes everything a batch decides in one
//! `BEGIN IMMEDIATE` transaction, which also serialises the audit appends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::batch::{
    BatchFileRecord, BatchRecord, BatchStore, FileOutcome, IntakeUsage, MetadataSchema, NewBatch, RejectReason,
};
use frostbyte_core::documents::DocumentRecord;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use uuid::Uuid;

use super::{batch_file_columns, document_columns, encode_stages};
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::sqlite::{SqliteStore, append_in_tx};

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

fn to_i64(v: u64, what: &'static str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Internal(format!("{what} out of range")))
}

fn to_u64(v: i64, what: &'static str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| codec::corrupt(what))
}

fn batch_from_row(row: &SqliteRow) -> StoreResult<BatchRecord> {
    Ok(BatchRecord {
        batch_id: column(row, "batch_id")?,
        file_count: to_u64(column(row, "file_count")?, "batches.file_count")?,
        collection: column(row, "collection")?,
        submitter: column(row, "submitter")?,
        accepted: to_u64(column(row, "accepted")?, "batches.accepted")?,
        rejected: to_u64(column(row, "rejected")?, "batches.rejected")?,
        quarantined: to_u64(column(row, "quarantined")?, "batches.quarantined")?,
        created_at: codec::decode_timestamp(&column::<_, String>(row, "created_at")?, "batches.created_at")?,
    })
}

fn file_from_row(row: &SqliteRow) -> StoreResult<BatchFileRecord> {
    let reason: Option<String> = column(row, "reason")?;
    let doc_id: Option<String> = column(row, "doc_id")?;
    Ok(BatchFileRecord {
        file_id: column(row, "file_id")?,
        position: u32::try_from(column::<_, i64>(row, "position")?)
            .map_err(|_| codec::corrupt("batch_files.position"))?,
        filename: column(row, "filename")?,
        declared_mime: column(row, "declared_mime")?,
        size_bytes: to_u64(column(row, "size_bytes")?, "batch_files.size_bytes")?,
        sha256: column(row, "sha256")?,
        outcome: FileOutcome::parse(&column::<_, String>(row, "outcome")?)
            .ok_or_else(|| codec::corrupt("batch_files.outcome"))?,
        reason: reason
            .map(|r| RejectReason::parse(&r).ok_or_else(|| codec::corrupt("batch_files.reason")))
            .transpose()?,
        message: column(row, "message")?,
        doc_id: doc_id.map(|d| codec::decode_uuid(&d, "batch_files.doc_id")).transpose()?,
        receipt_id: codec::decode_uuid(&column::<_, String>(row, "receipt_id")?, "batch_files.receipt_id")?,
        scan_result: column(row, "scan_result")?,
        signature: column(row, "signature")?,
    })
}

/// Document rows per INSERT statement: 15 parameters each, well inside the limit on bound parameters.
const DOCUMENT_INSERT_ROWS: usize = 64;

/// Inserts the documents' rows, one statement per [`DOCUMENT_INSERT_ROWS`] of them.
pub(super) async fn insert_documents(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    docs: &[DocumentRecord],
) -> StoreResult<()> {
    for rows in docs.chunks(DOCUMENT_INSERT_ROWS) {
        let sizes = rows.iter().map(|doc| to_i64(doc.size_bytes, "size_bytes")).collect::<StoreResult<Vec<_>>>()?;
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!(
            "INSERT INTO documents (tenant_id, ",
            document_columns!(),
            ") "
        ));
        insert.push_values(rows.iter().zip(sizes), |mut b, (doc, size)| {
            b.push_bind(tenant.as_str().to_owned())
                .push_bind(doc.doc_id.to_string())
                .push_bind(doc.receipt_id.to_string())
                .push_bind(doc.original_filename.clone())
                .push_bind(doc.mime_type.clone())
                .push_bind(size)
                .push_bind(doc.raw_sha256.clone())
                .push_bind(doc.metadata.to_string())
                .push_bind(doc.collection.clone())
                .push_bind(doc.status.as_str())
                .push_bind(encode_stages(&doc.stages).to_string())
                .push_bind(Value::Object(doc.lineage.clone()).to_string())
                .push_bind(doc.error_code.clone())
                .push_bind(codec::encode_timestamp(&doc.created_at))
                .push_bind(codec::encode_timestamp(&doc.updated_at));
        });
        // One statement per row count: not kept prepared.
        insert.build().persistent(false).execute(&mut *conn).await.map_err(err("document"))?;
    }
    Ok(())
}

async fn tenant_exists(conn: &mut SqliteConnection, tenant: &TenantId) -> StoreResult<bool> {
    Ok(sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = ?")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("tenant"))?
        .is_some())
}

#[async_trait]
impl BatchStore for SqliteStore {
    async fn create_batch(&self, tenant: &TenantId, batch: NewBatch) -> StoreResult<()> {
        let now = frostbyte_core::now();
        let mut tx = self.begin_write().await?;
        if !tenant_exists(&mut tx, tenant).await? {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        let b = &batch.batch;
        sqlx::query(
            "INSERT INTO batches (tenant_id, batch_id, file_count, collection, submitter, accepted, rejected, \
             quarantined, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(&b.batch_id)
        .bind(to_i64(b.file_count, "file_count")?)
        .bind(b.collection.as_deref())
        .bind(b.submitter.as_deref())
        .bind(to_i64(b.accepted, "accepted")?)
        .bind(to_i64(b.rejected, "rejected")?)
        .bind(to_i64(b.quarantined, "quarantined")?)
        .bind(codec::encode_timestamp(&b.created_at))
        .execute(&mut *tx)
        .await
        .map_err(err("batch"))?;
        for f in &batch.files {
            sqlx::query(
                "INSERT INTO batch_files (tenant_id, batch_id, file_id, position, filename, declared_mime, \
                 size_bytes, sha256, outcome, reason, message, doc_id, receipt_id, scan_result, signature) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(tenant.as_str())
            .bind(&b.batch_id)
            .bind(&f.file_id)
            .bind(i64::from(f.position))
            .bind(&f.filename)
            .bind(&f.declared_mime)
            .bind(to_i64(f.size_bytes, "size_bytes")?)
            .bind(&f.sha256)
            .bind(f.outcome.as_str())
            .bind(f.reason.map(RejectReason::as_str))
            .bind(f.message.as_deref())
            .bind(f.doc_id.map(|d| d.to_string()))
            .bind(f.receipt_id.to_string())
            .bind(f.scan_result.as_deref())
            .bind(f.signature.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(err("batch file"))?;
        }
        let mut documents = Vec::with_capacity(batch.documents.len());
        for (doc, job) in batch.documents {
            crate::queue::sqlite::enqueue_in_tx(&mut tx, tenant, job).await?;
            documents.push(doc);
        }
        insert_documents(&mut tx, tenant, &documents).await?;
        for event in batch.audit {
            append_in_tx(&mut tx, tenant, event, now).await?;
        }
        tx.commit().await.map_err(err("transaction"))
    }

    async fn get_batch(&self, tenant: &TenantId, batch_id: &str) -> StoreResult<Option<BatchRecord>> {
        sqlx::query(
            "SELECT batch_id, file_count, collection, submitter, accepted, rejected, quarantined, created_at \
             FROM batches WHERE tenant_id = ? AND batch_id = ?",
        )
        .bind(tenant.as_str())
        .bind(batch_id)
        .fetch_optional(self.pool())
        .await
        .map_err(err("batch"))?
        .as_ref()
        .map(batch_from_row)
        .transpose()
    }

    async fn batch_files(&self, tenant: &TenantId, batch_id: &str) -> StoreResult<Vec<BatchFileRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            batch_file_columns!(),
            " FROM batch_files WHERE tenant_id = ? AND batch_id = ? ORDER BY position"
        ))
        .bind(tenant.as_str())
        .bind(batch_id)
        .fetch_all(self.pool())
        .await
        .map_err(err("batch file"))?
        .iter()
        .map(file_from_row)
        .collect()
    }

    async fn batch_file_by_receipt(
        &self,
        tenant: &TenantId,
        receipt_id: Uuid,
    ) -> StoreResult<Option<(String, BatchFileRecord)>> {
        let row = sqlx::query(concat!(
            "SELECT batch_id, ",
            batch_file_columns!(),
            " FROM batch_files WHERE tenant_id = ? AND receipt_id = ?"
        ))
        .bind(tenant.as_str())
        .bind(receipt_id.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(err("batch file"))?;
        row.map(|r| Ok((column(&r, "batch_id")?, file_from_row(&r)?))).transpose()
    }

    async fn intake_usage(&self, tenant: &TenantId, since: DateTime<Utc>) -> StoreResult<IntakeUsage> {
        // Kept by triggers on `documents` (migration 0016), one row per tenant.
        let raw: i64 =
            sqlx::query_scalar("SELECT COALESCE((SELECT raw_bytes FROM tenant_raw_usage WHERE tenant_id = ?), 0)")
                .bind(tenant.as_str())
                .fetch_one(self.pool())
                .await
                .map_err(err("documents"))?;
        let today: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE tenant_id = ? AND created_at >= ?")
            .bind(tenant.as_str())
            .bind(codec::encode_timestamp(&since))
            .fetch_one(self.pool())
            .await
            .map_err(err("documents"))?;
        Ok(IntakeUsage {
            raw_bytes: to_u64(raw, "documents.size_bytes")?,
            documents_today: to_u64(today, "documents")?,
        })
    }

    async fn get_metadata_schema(&self, tenant: &TenantId) -> StoreResult<Option<MetadataSchema>> {
        let row = sqlx::query("SELECT version, schema, updated_at FROM metadata_schemas WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(err("metadata schema"))?;
        row.map(|r| {
            Ok(MetadataSchema {
                version: column(&r, "version")?,
                schema: serde_json::from_str(&column::<_, String>(&r, "schema")?)
                    .map_err(|_| codec::corrupt("metadata_schemas.schema"))?,
                updated_at: codec::decode_timestamp(
                    &column::<_, String>(&r, "updated_at")?,
                    "metadata_schemas.updated_at",
                )?,
            })
        })
        .transpose()
    }

    async fn put_metadata_schema(
        &self,
        tenant: &TenantId,
        schema: &Value,
        expected_version: Option<i64>,
        audit: NewAuditEvent,
    ) -> StoreResult<MetadataSchema> {
        let now = frostbyte_core::now();
        let mut tx = self.begin_write().await?;
        if !tenant_exists(&mut tx, tenant).await? {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        let current: Option<i64> = sqlx::query_scalar("SELECT version FROM metadata_schemas WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("metadata schema"))?;
        if current != expected_version {
            return Err(StoreError::Conflict(
                "the metadata schema was changed concurrently; re-read it and retry".into(),
            ));
        }
        let version = current.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO metadata_schemas (tenant_id, version, schema, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant_id) DO UPDATE SET version = excluded.version, schema = excluded.schema, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(version)
        .bind(schema.to_string())
        .bind(codec::encode_timestamp(&now))
        .execute(&mut *tx)
        .await
        .map_err(err("metadata schema"))?;
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(MetadataSchema { version, schema: schema.clone(), updated_at: now })
    }
}
