//! [`SyncStore`] for [`PostgresStore`] (`sync_files`, `0013_document_sync.sql`).

use async_trait::async_trait;
use frostbyte_core::pipelines::{SyncStore, SyncedFile, SyncedFileState};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use sqlx::postgres::PgRow;

use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::postgres::PostgresStore;

fn err(e: sqlx::Error) -> StoreError {
    db_error::map(Dialect::Postgres, "sync state", e)
}

fn from_row(row: &PgRow) -> StoreResult<SyncedFileState> {
    let size: i64 = column(row, "size_bytes")?;
    Ok(SyncedFileState {
        file: SyncedFile {
            source: column(row, "source")?,
            path: column(row, "path")?,
            size_bytes: u64::try_from(size).map_err(|_| codec::corrupt("sync_files.size_bytes"))?,
            version: column(row, "version")?,
            sha256: column(row, "sha256")?,
            doc_id: codec::decode_uuid(&column::<_, String>(row, "doc_id")?, "sync_files.doc_id")?,
            synced_at: column(row, "synced_at")?,
        },
        document_sha256: column(row, "document_sha256")?,
    })
}

#[async_trait]
impl SyncStore for PostgresStore {
    async fn sync_files(&self, tenant: &TenantId, source: &str) -> StoreResult<Vec<SyncedFileState>> {
        let rows = sqlx::query(
            "SELECT s.source, s.path, s.size_bytes, s.version, s.sha256, s.doc_id, s.synced_at, \
             d.raw_sha256 AS document_sha256 FROM sync_files s \
             LEFT JOIN documents d ON d.tenant_id = s.tenant_id AND d.doc_id = s.doc_id \
             WHERE s.tenant_id = $1 AND s.source = $2 ORDER BY s.path COLLATE \"C\"",
        )
        .bind(tenant.as_str())
        .bind(source)
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        rows.iter().map(from_row).collect()
    }

    async fn put_sync_file(&self, tenant: &TenantId, file: &SyncedFile) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sync_files (tenant_id, source, path, size_bytes, version, sha256, doc_id, synced_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, source, path) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, \
             version = EXCLUDED.version, sha256 = EXCLUDED.sha256, doc_id = EXCLUDED.doc_id, \
             synced_at = EXCLUDED.synced_at",
        )
        .bind(tenant.as_str())
        .bind(&file.source)
        .bind(&file.path)
        .bind(i64::try_from(file.size_bytes).unwrap_or(i64::MAX))
        .bind(&file.version)
        .bind(&file.sha256)
        .bind(file.doc_id.to_string())
        .bind(file.synced_at)
        .execute(self.pool())
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn delete_sync_file(&self, tenant: &TenantId, source: &str, path: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM sync_files WHERE tenant_id = $1 AND source = $2 AND path = $3")
            .bind(tenant.as_str())
            .bind(source)
            .bind(path)
            .execute(self.pool())
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }
}
