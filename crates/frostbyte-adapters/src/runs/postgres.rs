//! [`RunStore`] for [`PostgresStore`]: writes lock the run row (`FOR UPDATE`), so concurrent transitions of one run
//! apply one after the other and the compare-and-set on its status holds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{NewRun, PipelineRun, RunFilter, RunStatus, RunStore, RunTransition};
use frostbyte_core::queue::NewJob;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use super::{cancel_event, decode_status, illegal, run_columns};
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::postgres::{PostgresStore, append_in_tx};

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Postgres, resource, e)
}

fn run_from_row(row: &PgRow) -> StoreResult<PipelineRun> {
    let parameters = match column::<_, Value>(row, "parameters")? {
        Value::Object(m) => m,
        _ => return Err(codec::corrupt("pipeline_runs.parameters")),
    };
    let counts = match column::<_, Value>(row, "counts")? {
        Value::Object(m) => m,
        _ => return Err(codec::corrupt("pipeline_runs.counts")),
    };
    Ok(PipelineRun {
        run_id: codec::decode_uuid(&column::<_, String>(row, "run_id")?, "pipeline_runs.run_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "pipeline_runs.tenant_id")?,
        domain: column(row, "domain")?,
        pipeline: column(row, "pipeline")?,
        status: decode_status(&column::<_, String>(row, "status")?)?,
        parameters,
        triggered_by: column(row, "triggered_by")?,
        progress: column(row, "progress")?,
        records_processed: u64::try_from(column::<_, i64>(row, "records_processed")?)
            .map_err(|_| codec::corrupt("pipeline_runs.records_processed"))?,
        counts,
        error_message: column(row, "error_message")?,
        job_id: codec::decode_uuid(&column::<_, String>(row, "job_id")?, "pipeline_runs.job_id")?,
        cancel_requested: column(row, "cancel_requested")?,
        created_at: column(row, "created_at")?,
        started_at: column(row, "started_at")?,
        completed_at: column(row, "completed_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

async fn select_run(
    conn: &mut PgConnection,
    tenant: &TenantId,
    run_id: Uuid,
    lock: bool,
) -> StoreResult<Option<PipelineRun>> {
    let sql = if lock {
        concat!("SELECT ", run_columns!(), " FROM pipeline_runs WHERE tenant_id = $1 AND run_id = $2 FOR UPDATE")
    } else {
        concat!("SELECT ", run_columns!(), " FROM pipeline_runs WHERE tenant_id = $1 AND run_id = $2")
    };
    sqlx::query(sql)
        .bind(tenant.as_str())
        .bind(run_id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("pipeline run"))?
        .as_ref()
        .map(run_from_row)
        .transpose()
}

async fn write_run(conn: &mut PgConnection, run: &PipelineRun) -> StoreResult<()> {
    sqlx::query(
        "UPDATE pipeline_runs SET status = $1, progress = $2, records_processed = $3, error_message = $4, \
         cancel_requested = $5, started_at = $6, completed_at = $7, updated_at = $8, counts = $11 \
         WHERE tenant_id = $9 AND run_id = $10",
    )
    .bind(run.status.as_str())
    .bind(run.progress)
    .bind(i64::try_from(run.records_processed).unwrap_or(i64::MAX))
    .bind(run.error_message.as_deref())
    .bind(run.cancel_requested)
    .bind(run.started_at)
    .bind(run.completed_at)
    .bind(run.updated_at)
    .bind(run.tenant_id.as_str())
    .bind(run.run_id.to_string())
    .bind(Value::Object(run.counts.clone()))
    .execute(&mut *conn)
    .await
    .map_err(err("pipeline run"))?;
    Ok(())
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn create_run(
        &self,
        tenant: &TenantId,
        run: NewRun,
        job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRun> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let job = crate::queue::postgres::enqueue_in_tx(&mut tx, tenant, job).await?;
        let stored = PipelineRun {
            run_id: run.run_id,
            tenant_id: tenant.clone(),
            domain: run.domain,
            pipeline: run.pipeline,
            status: RunStatus::Pending,
            parameters: run.parameters,
            triggered_by: run.triggered_by,
            progress: 0.0,
            records_processed: 0,
            counts: serde_json::Map::new(),
            error_message: None,
            job_id: job.job_id,
            cancel_requested: false,
            created_at: now,
            started_at: None,
            completed_at: None,
            updated_at: now,
        };
        sqlx::query(concat!(
            "INSERT INTO pipeline_runs (",
            run_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, 0, 0, NULL, $7, FALSE, $8, NULL, NULL, $9, $10, '{}'::jsonb)"
        ))
        .bind(stored.run_id.to_string())
        .bind(&stored.domain)
        .bind(&stored.pipeline)
        .bind(stored.status.as_str())
        .bind(Value::Object(stored.parameters.clone()))
        .bind(&stored.triggered_by)
        .bind(stored.job_id.to_string())
        .bind(now)
        .bind(now)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await
        .map_err(err("pipeline run"))?;
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(stored)
    }

    async fn get_run(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<Option<PipelineRun>> {
        let mut conn = self.pool().acquire().await.map_err(err("database"))?;
        select_run(&mut conn, tenant, run_id, false).await
    }

    async fn list_runs(&self, tenant: &TenantId, filter: &RunFilter) -> StoreResult<Vec<PipelineRun>> {
        let (domain, name) = match filter.pipeline.as_deref().map(|p| p.split_once('/')) {
            Some(Some((d, n))) => (Some(d.to_owned()), Some(n.to_owned())),
            Some(None) => (None, filter.pipeline.clone()),
            None => (None, None),
        };
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM pipeline_runs WHERE tenant_id = $1 AND ($2::TEXT IS NULL OR domain = $2) \
             AND ($3::TEXT IS NULL OR pipeline = $3) AND ($4::TEXT IS NULL OR status = $4) \
             ORDER BY created_at DESC, run_id DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(domain)
        .bind(name)
        .bind(filter.status.map(RunStatus::as_str))
        .bind(i64::from(filter.limit.max(1)))
        .fetch_all(self.pool())
        .await
        .map_err(err("pipeline run"))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn transition_run(
        &self,
        tenant: &TenantId,
        run_id: Uuid,
        change: RunTransition,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRun> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let mut run = select_run(&mut tx, tenant, run_id, true)
            .await?
            .ok_or(StoreError::NotFound { resource: "pipeline run" })?;
        if !run.status.can_transition_to(change.to) {
            return Err(illegal(run.status, change.to));
        }
        change.apply_to(&mut run, now);
        write_run(&mut tx, &run).await?;
        if let Some((job_id, worker)) = &change.completes_job {
            crate::queue::postgres::complete_in_tx(&mut tx, *job_id, worker, now).await?;
        }
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(run)
    }

    async fn record_progress(&self, tenant: &TenantId, run_id: Uuid, progress: f64, records: u64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE pipeline_runs SET progress = $1, records_processed = $2, updated_at = $3 \
             WHERE tenant_id = $4 AND run_id = $5 AND status = 'running'",
        )
        .bind(progress.clamp(0.0, 1.0))
        .bind(i64::try_from(records).unwrap_or(i64::MAX))
        .bind(frostbyte_core::now())
        .bind(tenant.as_str())
        .bind(run_id.to_string())
        .execute(self.pool())
        .await
        .map_err(err("pipeline run"))?;
        Ok(())
    }

    async fn request_cancel(&self, tenant: &TenantId, run_id: Uuid, actor: &str) -> StoreResult<PipelineRun> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let mut run = select_run(&mut tx, tenant, run_id, true)
            .await?
            .ok_or(StoreError::NotFound { resource: "pipeline run" })?;
        if run.status.is_terminal() || run.cancel_requested {
            return Ok(run);
        }
        let immediate = run.status == RunStatus::Pending;
        let audit = cancel_event(&run, actor, immediate);
        if immediate {
            RunTransition::to(RunStatus::Cancelled).error("cancelled before it started").apply_to(&mut run, now);
            // The queued job has nothing left to do.
            sqlx::query(
                "UPDATE jobs SET status = 'succeeded', finished_at = $1, updated_at = $1 \
                 WHERE job_id = $2::uuid AND status = 'queued'",
            )
            .bind(now)
            .bind(run.job_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(err("job"))?;
        } else {
            run.updated_at = now;
        }
        run.cancel_requested = true;
        write_run(&mut tx, &run).await?;
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(run)
    }

    async fn count_runs_since(&self, tenant: &TenantId, since: DateTime<Utc>) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pipeline_runs WHERE tenant_id = $1 AND created_at >= $2")
            .bind(tenant.as_str())
            .bind(since)
            .fetch_one(self.pool())
            .await
            .map_err(err("pipeline run"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<PipelineRun>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM pipeline_runs WHERE status IN ('pending', 'validating', 'running') ORDER BY created_at"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(err("pipeline run"))?;
        rows.iter().map(run_from_row).collect()
    }
}
