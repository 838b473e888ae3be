//! [`ShadowIndex`] for [`SqliteStore`], over `chunk_vectors_shadow` (`migrations/sqlite/0014`). Writes run in
//! `BEGIN IMMEDIATE` transactions, so the swap's completeness check, the chunk update, the config
//! compare-and-set and the audit appends see and change one state.

use async_trait::async_trait;
use frostbyte_core::reindex::{ReindexCandidate, ReindexTarget, ShadowIndex, ShadowSwap, ShadowVector, SwapOutcome};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::encode_vector;
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::sqlite::SqliteStore;

fn err(e: sqlx::Error) -> StoreError {
    db_error::map(Dialect::Sqlite, "chunk", e)
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The chunks of the target without a shadow vector of the run's model for their current text.
const MISSING: &str = "FROM chunks c WHERE c.tenant_id = ?1 AND (?2 IS NULL OR c.collection = ?2) AND NOT EXISTS \
                       (SELECT 1 FROM chunk_vectors_shadow s WHERE s.tenant_id = c.tenant_id AND s.run_id = ?3 AND \
                       s.chunk_id = c.chunk_id AND s.text_hash = c.text_hash AND s.embed_model = ?4)";

async fn missing(conn: &mut SqliteConnection, tenant: &TenantId, target: &ReindexTarget) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) {MISSING}")))
        .bind(tenant.as_str())
        .bind(target.collection.as_deref())
        .bind(target.run_id.to_string())
        .bind(&target.embed_model)
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
    Ok(count(n))
}

#[async_trait]
impl ShadowIndex for SqliteStore {
    async fn reindex_scope(&self, tenant: &TenantId, target: &ReindexTarget) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM chunks WHERE tenant_id = ?1 AND (?2 IS NULL OR collection = ?2)")
                .bind(tenant.as_str())
                .bind(target.collection.as_deref())
                .fetch_one(self.pool())
                .await
                .map_err(err)?;
        Ok(count(n))
    }

    async fn reindex_pending(
        &self,
        tenant: &TenantId,
        target: &ReindexTarget,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ReindexCandidate>> {
        let sql = format!(
            "SELECT c.chunk_id, c.doc_id, c.text, c.text_hash {MISSING} AND c.chunk_id > ?5 ORDER BY c.chunk_id LIMIT ?6"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(target.collection.as_deref())
            .bind(target.run_id.to_string())
            .bind(&target.embed_model)
            .bind(after.unwrap_or(""))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(err)?
            .iter()
            .map(|row| {
                Ok(ReindexCandidate {
                    chunk_id: column(row, "chunk_id")?,
                    doc_id: column(row, "doc_id")?,
                    text: column(row, "text")?,
                    text_hash: column(row, "text_hash")?,
                })
            })
            .collect()
    }

    async fn put_shadow_vectors(
        &self,
        tenant: &TenantId,
        target: &ReindexTarget,
        vectors: &[ShadowVector],
    ) -> StoreResult<u64> {
        let now = codec::encode_timestamp(&frostbyte_core::now());
        let run = target.run_id.to_string();
        let mut tx = self.begin_write().await?;
        let mut stored = 0;
        for v in vectors {
            // Only for a chunk that still exists with the text the vector was embedded from.
            stored += sqlx::query(
                "INSERT INTO chunk_vectors_shadow (tenant_id, run_id, chunk_id, text_hash, embed_model, dimension, \
                 vector, created_at) SELECT c.tenant_id, ?, c.chunk_id, c.text_hash, ?, ?, ?, ? FROM chunks c WHERE \
                 c.tenant_id = ? AND c.chunk_id = ? AND c.text_hash = ? ON CONFLICT (tenant_id, run_id, chunk_id) DO \
                 UPDATE SET text_hash = excluded.text_hash, embed_model = excluded.embed_model, dimension = \
                 excluded.dimension, vector = excluded.vector, created_at = excluded.created_at",
            )
            .bind(&run)
            .bind(&target.embed_model)
            .bind(i64::try_from(v.vector.len()).unwrap_or(i64::MAX))
            .bind(encode_vector(&v.vector))
            .bind(&now)
            .bind(tenant.as_str())
            .bind(&v.chunk_id)
            .bind(&v.text_hash)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
        }
        tx.commit().await.map_err(err)?;
        Ok(stored)
    }

    async fn shadow_count(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chunk_vectors_shadow WHERE tenant_id = ? AND run_id = ?")
            .bind(tenant.as_str())
            .bind(run_id.to_string())
            .fetch_one(self.pool())
            .await
            .map_err(err)?;
        Ok(count(n))
    }

    async fn swap_shadow(
        &self,
        tenant: &TenantId,
        target: &ReindexTarget,
        swap: ShadowSwap,
    ) -> StoreResult<SwapOutcome> {
        let now = frostbyte_core::now();
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        let left = missing(&mut tx, tenant, target).await?;
        if left > 0 {
            return Ok(SwapOutcome::Incomplete { missing: left });
        }
        let run = target.run_id.to_string();
        let chunks = sqlx::query(
            "UPDATE chunks SET embed_model = s.embed_model, dimension = s.dimension, vector = s.vector FROM \
             chunk_vectors_shadow s WHERE s.tenant_id = chunks.tenant_id AND s.chunk_id = chunks.chunk_id AND \
             s.run_id = ?1 AND s.text_hash = chunks.text_hash AND s.embed_model = ?2 AND chunks.tenant_id = ?3 AND \
             (?4 IS NULL OR chunks.collection = ?4)",
        )
        .bind(&run)
        .bind(&target.embed_model)
        .bind(tenant.as_str())
        .bind(target.collection.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected();
        sqlx::query("DELETE FROM chunk_vectors_shadow WHERE tenant_id = ? AND run_id = ?")
            .bind(tenant.as_str())
            .bind(&run)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        if let Some((expected, config)) = &swap.config {
            let changed = sqlx::query(
                "UPDATE tenants SET config = ?, config_version = config_version + 1, updated_at = ? WHERE tenant_id \
                 = ? AND config_version = ?",
            )
            .bind(codec::encode_config(config)?)
            .bind(codec::encode_timestamp(&now))
            .bind(tenant.as_str())
            .bind(expected)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
            if changed != 1 {
                return Err(StoreError::Conflict(format!("config_version moved on from {expected}")));
            }
        }
        for event in swap.audit {
            crate::sqlite::append_in_tx(&mut tx, tenant, event, now).await?;
        }
        tx.commit().await.map_err(err)?;
        Ok(SwapOutcome::Swapped { chunks })
    }

    async fn discard_shadow(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM chunk_vectors_shadow WHERE tenant_id = ? AND run_id = ?")
            .bind(tenant.as_str())
            .bind(run_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
        tx.commit().await.map_err(err)?;
        Ok(n)
    }

    async fn discard_stale_shadows(&self, tenant: &TenantId, keep: Uuid) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "DELETE FROM chunk_vectors_shadow WHERE tenant_id = ?1 AND run_id <> ?2 AND run_id NOT IN (SELECT run_id \
             FROM pipeline_runs WHERE tenant_id = ?1 AND status IN ('pending', 'validating', 'running'))",
        )
        .bind(tenant.as_str())
        .bind(keep.to_string())
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected();
        tx.commit().await.map_err(err)?;
        Ok(n)
    }
}
