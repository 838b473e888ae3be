//! [`RunStore`] for [`SqliteStore`]: every write in a `BEGIN IMMEDIATE` transaction, which also serialises the
//! audit append and the job changes that go with it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{NewRun, PipelineRun, RunFilter, RunStatus, RunStore, RunTransition};
use frostbyte_core::queue::NewJob;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use uuid::Uuid;

use super::{cancel_event, decode_status, illegal, run_columns};
use crate::codec::{self, column};
use crate::db_error::{self, Dialect};
use crate::sqlite::{SqliteStore, append_in_tx};

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

fn ts(t: &DateTime<Utc>) -> String {
    codec::encode_timestamp(t)
}

fn run_from_row(row: &SqliteRow) -> StoreResult<PipelineRun> {
    let parameters = match serde_json::from_str(&column::<_, String>(row, "parameters")?) {
        Ok(Value::Object(m)) => m,
        _ => return Err(codec::corrupt("pipeline_runs.parameters")),
    };
    let counts = match serde_json::from_str(&column::<_, String>(row, "counts")?) {
        Ok(Value::Object(m)) => m,
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
        cancel_requested: column::<_, i64>(row, "cancel_requested")? != 0,
        created_at: codec::decode_timestamp(&column::<_, String>(row, "created_at")?, "pipeline_runs.created_at")?,
        started_at: codec::decode_opt_timestamp(column(row, "started_at")?, "pipeline_runs.started_at")?,
        completed_at: codec::decode_opt_timestamp(column(row, "completed_at")?, "pipeline_runs.completed_at")?,
        updated_at: codec::decode_timestamp(&column::<_, String>(row, "updated_at")?, "pipeline_runs.updated_at")?,
    })
}

async fn select_run(conn: &mut SqliteConnection, tenant: &TenantId, run_id: Uuid) -> StoreResult<Option<PipelineRun>> {
    sqlx::query(concat!("SELECT ", run_columns!(), " FROM pipeline_runs WHERE tenant_id = ? AND run_id = ?"))
        .bind(tenant.as_str())
        .bind(run_id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("pipeline run"))?
        .as_ref()
        .map(run_from_row)
        .transpose()
}

async fn write_run(conn: &mut SqliteConnection, run: &PipelineRun) -> StoreResult<()> {
    sqlx::query(
        "UPDATE pipeline_runs SET status = ?, progress = ?, records_processed = ?, counts = ?, error_message = ?, \
         cancel_requested = ?, started_at = ?, completed_at = ?, updated_at = ? WHERE tenant_id = ? AND run_id = ?",
    )
    .bind(run.status.as_str())
    .bind(run.progress)
    .bind(i64::try_from(run.records_processed).unwrap_or(i64::MAX))
    .bind(Value::Object(run.counts.clone()).to_string())
    .bind(run.error_message.as_deref())
    .bind(i64::from(run.cancel_requested))
    .bind(run.started_at.as_ref().map(ts))
    .bind(run.completed_at.as_ref().map(ts))
    .bind(ts(&run.updated_at))
    .bind(run.tenant_id.as_str())
    .bind(run.run_id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(err("pipeline run"))?;
    Ok(())
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(
        &self,
        tenant: &TenantId,
        run: NewRun,
        job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRun> {
        let now = frostbyte_core::now();
        let mut tx = self.begin_write().await?;
        let job = crate::queue::sqlite::enqueue_in_tx(&mut tx, tenant, job).await?;
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
            ") VALUES (?, ?, ?, ?, ?, ?, 0, 0, NULL, ?, 0, ?, NULL, NULL, ?, ?, '{}')"
        ))
        .bind(stored.run_id.to_string())
        .bind(&stored.domain)
        .bind(&stored.pipeline)
        .bind(stored.status.as_str())
        .bind(Value::Object(stored.parameters.clone()).to_string())
        .bind(&stored.triggered_by)
        .bind(stored.job_id.to_string())
        .bind(ts(&now))
        .bind(ts(&now))
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
        select_run(&mut conn, tenant, run_id).await
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
            " FROM pipeline_runs WHERE tenant_id = ?1 AND (?2 IS NULL OR domain = ?2) AND (?3 IS NULL OR pipeline = ?3) \
             AND (?4 IS NULL OR status = ?4) ORDER BY created_at DESC, run_id DESC LIMIT ?5"
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
        let mut tx = self.begin_write().await?;
        let mut run =
            select_run(&mut tx, tenant, run_id).await?.ok_or(StoreError::NotFound { resource: "pipeline run" })?;
        if !run.status.can_transition_to(change.to) {
            return Err(illegal(run.status, change.to));
        }
        change.apply_to(&mut run, now);
        write_run(&mut tx, &run).await?;
        if let Some((job_id, worker)) = &change.completes_job {
            crate::queue::sqlite::complete_in_tx(&mut tx, *job_id, worker, now).await?;
        }
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(run)
    }

    async fn record_progress(&self, tenant: &TenantId, run_id: Uuid, progress: f64, records: u64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE pipeline_runs SET progress = ?, records_processed = ?, updated_at = ? \
             WHERE tenant_id = ? AND run_id = ? AND status = 'running'",
        )
        .bind(progress.clamp(0.0, 1.0))
        .bind(i64::try_from(records).unwrap_or(i64::MAX))
        .bind(ts(&frostbyte_core::now()))
        .bind(tenant.as_str())
        .bind(run_id.to_string())
        .execute(self.pool())
        .await
        .map_err(err("pipeline run"))?;
        Ok(())
    }

    async fn request_cancel(&self, tenant: &TenantId, run_id: Uuid, actor: &str) -> StoreResult<PipelineRun> {
        let now = frostbyte_core::now();
        let mut tx = self.begin_write().await?;
        let mut run =
            select_run(&mut tx, tenant, run_id).await?.ok_or(StoreError::NotFound { resource: "pipeline run" })?;
        if run.status.is_terminal() || run.cancel_requested {
            return Ok(run);
        }
        let immediate = run.status == RunStatus::Pending;
        let audit = cancel_event(&run, actor, immediate);
        if immediate {
            RunTransition::to(RunStatus::Cancelled).error("cancelled before it started").apply_to(&mut run, now);
            // The queued job has nothing left to do.
            sqlx::query(
                "UPDATE jobs SET status = 'succeeded', finished_at = ?1, updated_at = ?1 \
                 WHERE job_id = ?2 AND status = 'queued'",
            )
            .bind(ts(&now))
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
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pipeline_runs WHERE tenant_id = ? AND created_at >= ?")
            .bind(tenant.as_str())
            .bind(ts(&since))
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
