//! [`ScheduleStore`] for [`PostgresStore`] (`pipeline_schedules`, `0011_pipeline_runs.sql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{Overlap, Schedule, ScheduleChange, ScheduleStore};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::postgres::{PostgresStore, append_in_tx};

const COLUMNS: &str = "tenant_id, schedule_id, pipeline, cron_expression, timezone, parameters, is_enabled, \
                       last_run_at, last_run_id, next_run_at, created_at, updated_at, overlap, last_skipped_at, \
                       skipped_count";

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Postgres, resource, e)
}

fn from_row(row: &PgRow) -> StoreResult<Schedule> {
    let parameters = match column::<_, Value>(row, "parameters")? {
        Value::Object(m) => m,
        _ => return Err(codec::corrupt("pipeline_schedules.parameters")),
    };
    let last_run_id: Option<String> = column(row, "last_run_id")?;
    Ok(Schedule {
        schedule_id: codec::decode_uuid(&column::<_, String>(row, "schedule_id")?, "pipeline_schedules.schedule_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "pipeline_schedules.tenant_id")?,
        pipeline: column(row, "pipeline")?,
        cron_expression: column(row, "cron_expression")?,
        timezone: column(row, "timezone")?,
        parameters,
        is_enabled: column(row, "is_enabled")?,
        last_run_at: column(row, "last_run_at")?,
        last_run_id: last_run_id.map(|s| codec::decode_uuid(&s, "pipeline_schedules.last_run_id")).transpose()?,
        next_run_at: column(row, "next_run_at")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
        overlap: Overlap::parse(&column::<_, String>(row, "overlap")?)
            .ok_or_else(|| codec::corrupt("pipeline_schedules.overlap"))?,
        last_skipped_at: column(row, "last_skipped_at")?,
        skipped_count: u64::try_from(column::<_, i64>(row, "skipped_count")?)
            .map_err(|_| codec::corrupt("pipeline_schedules.skipped_count"))?,
    })
}

async fn select(conn: &mut PgConnection, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Schedule>> {
    let sql = format!("SELECT {COLUMNS} FROM pipeline_schedules WHERE tenant_id = $1 AND schedule_id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("schedule"))?
        .as_ref()
        .map(from_row)
        .transpose()
}

async fn write(conn: &mut PgConnection, s: &Schedule, insert: bool) -> StoreResult<()> {
    let sql = if insert {
        format!(
            "INSERT INTO pipeline_schedules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )
    } else {
        "UPDATE pipeline_schedules SET pipeline = $3, cron_expression = $4, timezone = $5, parameters = $6, \
         is_enabled = $7, last_run_at = $8, last_run_id = $9, next_run_at = $10, created_at = $11, updated_at = $12, \
         overlap = $13, last_skipped_at = $14, skipped_count = $15 WHERE tenant_id = $1 AND schedule_id = $2"
            .to_owned()
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(s.tenant_id.as_str())
        .bind(s.schedule_id.to_string())
        .bind(&s.pipeline)
        .bind(&s.cron_expression)
        .bind(&s.timezone)
        .bind(Value::Object(s.parameters.clone()))
        .bind(s.is_enabled)
        .bind(s.last_run_at)
        .bind(s.last_run_id.map(|u| u.to_string()))
        .bind(s.next_run_at)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.overlap.as_str())
        .bind(s.last_skipped_at)
        .bind(i64::try_from(s.skipped_count).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await
        .map_err(err("schedule"))?;
    Ok(())
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    async fn create_schedule(&self, schedule: &Schedule, audit: NewAuditEvent) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        write(&mut tx, schedule, true).await?;
        append_in_tx(&mut tx, &schedule.tenant_id, audit, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn get_schedule(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Schedule>> {
        let mut conn = self.pool().acquire().await.map_err(err("database"))?;
        select(&mut conn, tenant, id).await
    }

    async fn list_schedules(&self, tenant: &TenantId) -> StoreResult<Vec<Schedule>> {
        let sql =
            format!("SELECT {COLUMNS} FROM pipeline_schedules WHERE tenant_id = $1 ORDER BY created_at, schedule_id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(err("schedule"))?;
        rows.iter().map(from_row).collect()
    }

    async fn update_schedule(
        &self,
        tenant: &TenantId,
        id: Uuid,
        change: ScheduleChange,
        audit: NewAuditEvent,
    ) -> StoreResult<Schedule> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let mut s = select(&mut tx, tenant, id).await?.ok_or(StoreError::NotFound { resource: "schedule" })?;
        super::schedule_sqlite::apply(&mut s, change, now);
        write(&mut tx, &s, false).await?;
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(s)
    }

    async fn delete_schedule(&self, tenant: &TenantId, id: Uuid, audit: NewAuditEvent) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let gone = sqlx::query("DELETE FROM pipeline_schedules WHERE tenant_id = $1 AND schedule_id = $2")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(err("schedule"))?;
        if gone.rows_affected() == 0 {
            return Err(StoreError::NotFound { resource: "schedule" });
        }
        append_in_tx(&mut tx, tenant, audit, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Schedule>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM pipeline_schedules WHERE is_enabled AND next_run_at IS NOT NULL \
             AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit.max(1)))
            .fetch_all(self.pool())
            .await
            .map_err(err("schedule"))?;
        rows.iter().map(from_row).collect()
    }

    async fn claim_fire(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE pipeline_schedules SET next_run_at = $1, last_run_at = $2, updated_at = $2 \
             WHERE tenant_id = $3 AND schedule_id = $4 AND next_run_at = $5 AND is_enabled",
        )
        .bind(next)
        .bind(now)
        .bind(tenant.as_str())
        .bind(id.to_string())
        .bind(expected)
        .execute(self.pool())
        .await
        .map_err(err("schedule"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_skip(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE pipeline_schedules SET next_run_at = $1, last_skipped_at = $2, skipped_count = skipped_count + 1, \
             updated_at = $2 WHERE tenant_id = $3 AND schedule_id = $4 AND next_run_at = $5 AND is_enabled",
        )
        .bind(next)
        .bind(now)
        .bind(tenant.as_str())
        .bind(id.to_string())
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(err("schedule"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(true)
    }

    async fn record_fired_run(&self, tenant: &TenantId, id: Uuid, run_id: Uuid) -> StoreResult<()> {
        sqlx::query("UPDATE pipeline_schedules SET last_run_id = $1 WHERE tenant_id = $2 AND schedule_id = $3")
            .bind(run_id.to_string())
            .bind(tenant.as_str())
            .bind(id.to_string())
            .execute(self.pool())
            .await
            .map_err(err("schedule"))?;
        Ok(())
    }
}
