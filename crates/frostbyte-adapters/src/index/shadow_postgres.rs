//! [`ShadowIndex`] for [`PostgresStore`], over `chunk_vectors_shadow` (`migrations/postgres/0014`).
//!
//! The swap updates the chunk rows first and checks completeness second. The update's triggers
//! (`migrations/postgres/0007`, AFTER ROW, fired at the end of the statement) lock the tenant's
//! `chunk_generations` row until commit, the row every chunk writer locks too; so once the update has run, no
//! other chunk write of the tenant is uncommitted or can commit before the swap does, and the completeness check
//! (a new READ COMMITTED snapshot) sees every chunk the swap must have covered. A chunk found without its shadow
//! vector rolls the whole swap back. Taking that lock before the update instead would invert the order writers
//! take locks in (their chunk rows, then the generation row) and could deadlock with an erasure.

use async_trait::async_trait;
use frostbyte_core::reindex::{ReindexCandidate, ReindexTarget, ShadowIndex, ShadowSwap, ShadowVector, SwapOutcome};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::encode_vector;
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::postgres::PostgresStore;

fn err(e: sqlx::Error) -> StoreError {
    db_error::map(Dialect::Postgres, "chunk", e)
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The chunks of the target without a shadow vector of the run's model for their current text.
const MISSING: &str = "FROM chunks c WHERE c.tenant_id = $1 AND ($2::text IS NULL OR c.collection = $2) AND NOT \
                       EXISTS (SELECT 1 FROM chunk_vectors_shadow s WHERE s.tenant_id = c.tenant_id AND s.run_id = \
                       $3 AND s.chunk_id = c.chunk_id AND s.text_hash = c.text_hash AND s.embed_model = $4)";

async fn missing(conn: &mut PgConnection, tenant: &TenantId, target: &ReindexTarget) -> StoreResult<u64> {
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
impl ShadowIndex for PostgresStore {
    async fn reindex_scope(&self, tenant: &TenantId, target: &ReindexTarget) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM chunks WHERE tenant_id = $1 AND ($2::text IS NULL OR collection = $2)",
        )
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
            "SELECT c.chunk_id, c.doc_id, c.text, c.text_hash {MISSING} AND c.chunk_id > $5 ORDER BY c.chunk_id LIMIT $6"
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
        let now = frostbyte_core::now();
        let run = target.run_id.to_string();
        let mut tx = self.begin().await?;
        let mut stored = 0;
        for v in vectors {
            // Only for a chunk that still exists with the text the vector was embedded from.
            stored += sqlx::query(
                "INSERT INTO chunk_vectors_shadow (tenant_id, run_id, chunk_id, text_hash, embed_model, dimension, \
                 vector, created_at) SELECT c.tenant_id, $1, c.chunk_id, c.text_hash, $2, $3, $4, $5 FROM chunks c \
                 WHERE c.tenant_id = $6 AND c.chunk_id = $7 AND c.text_hash = $8 ON CONFLICT (tenant_id, run_id, \
                 chunk_id) DO UPDATE SET text_hash = EXCLUDED.text_hash, embed_model = EXCLUDED.embed_model, \
                 dimension = EXCLUDED.dimension, vector = EXCLUDED.vector, created_at = EXCLUDED.created_at",
            )
            .bind(&run)
            .bind(&target.embed_model)
            .bind(i32::try_from(v.vector.len()).unwrap_or(i32::MAX))
            .bind(encode_vector(&v.vector))
            .bind(now)
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
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM chunk_vectors_shadow WHERE tenant_id = $1 AND run_id = $2")
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
        let mut tx = self.begin().await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        let run = target.run_id.to_string();
        let chunks = sqlx::query(
            "UPDATE chunks c SET embed_model = s.embed_model, dimension = s.dimension, vector = s.vector FROM \
             chunk_vectors_shadow s WHERE s.tenant_id = c.tenant_id AND s.chunk_id = c.chunk_id AND s.run_id = $1 \
             AND s.text_hash = c.text_hash AND s.embed_model = $2 AND c.tenant_id = $3 AND ($4::text IS NULL OR \
             c.collection = $4)",
        )
        .bind(&run)
        .bind(&target.embed_model)
        .bind(tenant.as_str())
        .bind(target.collection.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected();
        // After the update (see the module documentation); dropping the transaction rolls the update back.
        let left = missing(&mut tx, tenant, target).await?;
        if left > 0 {
            return Ok(SwapOutcome::Incomplete { missing: left });
        }
        sqlx::query("DELETE FROM chunk_vectors_shadow WHERE tenant_id = $1 AND run_id = $2")
            .bind(tenant.as_str())
            .bind(&run)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        if let Some((expected, config)) = &swap.config {
            let changed = sqlx::query(
                "UPDATE tenants SET config = $1, config_version = config_version + 1, updated_at = $2 WHERE \
                 tenant_id = $3 AND config_version = $4",
            )
            .bind(codec::encode_config(config)?)
            .bind(now)
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
            crate::postgres::append_in_tx(&mut tx, tenant, event, now).await?;
        }
        tx.commit().await.map_err(err)?;
        Ok(SwapOutcome::Swapped { chunks })
    }

    async fn discard_shadow(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<u64> {
        let n = sqlx::query("DELETE FROM chunk_vectors_shadow WHERE tenant_id = $1 AND run_id = $2")
            .bind(tenant.as_str())
            .bind(run_id.to_string())
            .execute(self.pool())
            .await
            .map_err(err)?
            .rows_affected();
        Ok(n)
    }

    async fn discard_stale_shadows(&self, tenant: &TenantId, keep: Uuid) -> StoreResult<u64> {
        let n = sqlx::query(
            "DELETE FROM chunk_vectors_shadow WHERE tenant_id = $1 AND run_id <> $2 AND run_id NOT IN (SELECT run_id \
             FROM pipeline_runs WHERE tenant_id = $1 AND status IN ('pending', 'validating', 'running'))",
        )
        .bind(tenant.as_str())
        .bind(keep.to_string())
        .execute(self.pool())
        .await
        .map_err(err)?
        .rows_affected();
        Ok(n)
    }
}
