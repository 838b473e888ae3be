//! [`IndexFeed`] for [`SqliteStore`]: reads `chunk_generations`, `chunk_changes` (kept by triggers on `chunks`)
//! and the chunk rows a derived index needs.

use async_trait::async_trait;
use frostbyte_core::search::{DocumentChange, IndexEntry, IndexFeed};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use sqlx::sqlite::SqliteRow;

use crate::codec::{self, column, corrupt};
use crate::db_error::{self, Dialect};
use crate::index::decode_vector;
use crate::sqlite::SqliteStore;

macro_rules! entry_columns {
    () => {
        "chunk_id, doc_id, text, quarantined, classification, collection, metadata, ingested_at, embed_model, vector"
    };
}

fn err(e: sqlx::Error) -> StoreError {
    db_error::map(Dialect::Sqlite, "chunk", e)
}

fn entry_from_row(row: &SqliteRow) -> StoreResult<IndexEntry> {
    Ok(IndexEntry {
        chunk_id: column(row, "chunk_id")?,
        doc_id: column(row, "doc_id")?,
        text: column(row, "text")?,
        quarantined: column(row, "quarantined")?,
        classification: column(row, "classification")?,
        collection: column(row, "collection")?,
        metadata: serde_json::from_str(&column::<_, String>(row, "metadata")?)
            .map_err(|_| corrupt("chunks.metadata"))?,
        ingested_at: codec::decode_timestamp(&column::<_, String>(row, "ingested_at")?, "chunks.ingested_at")?,
        embed_model: column(row, "embed_model")?,
        vector: decode_vector(&column::<_, Vec<u8>>(row, "vector")?)?,
    })
}

fn generation(stored: i64) -> StoreResult<u64> {
    u64::try_from(stored).map_err(|_| corrupt("chunk_generations.generation"))
}

#[async_trait]
impl IndexFeed for SqliteStore {
    async fn generation(&self, tenant: &TenantId) -> StoreResult<u64> {
        let g: Option<i64> = sqlx::query_scalar("SELECT generation FROM chunk_generations WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(err)?;
        g.map_or(Ok(0), generation)
    }

    async fn changed_documents(&self, tenant: &TenantId, since: u64) -> StoreResult<Vec<DocumentChange>> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let rows = sqlx::query("SELECT doc_id, generation FROM chunk_changes WHERE tenant_id = ? AND generation > ?")
            .bind(tenant.as_str())
            .bind(since)
            .fetch_all(self.pool())
            .await
            .map_err(err)?;
        rows.iter()
            .map(|row| {
                Ok(DocumentChange {
                    doc_id: column(row, "doc_id")?,
                    generation: generation(column(row, "generation")?)?,
                })
            })
            .collect()
    }

    async fn entries(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> StoreResult<Vec<IndexEntry>> {
        sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM chunks WHERE tenant_id = ? AND chunk_id > ? ORDER BY chunk_id LIMIT ?"
        ))
        .bind(tenant.as_str())
        .bind(after.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(err)?
        .iter()
        .map(entry_from_row)
        .collect()
    }

    async fn document_entries(&self, tenant: &TenantId, doc_ids: &[String]) -> StoreResult<Vec<IndexEntry>> {
        if doc_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids =
            serde_json::to_string(doc_ids).map_err(|_| StoreError::Internal("ids could not be encoded".into()))?;
        sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM chunks WHERE tenant_id = ? AND doc_id IN (SELECT value FROM json_each(?)) ORDER BY doc_id, position"
        ))
        .bind(tenant.as_str())
        .bind(ids)
        .fetch_all(self.pool())
        .await
        .map_err(err)?
        .iter()
        .map(entry_from_row)
        .collect()
    }
}
