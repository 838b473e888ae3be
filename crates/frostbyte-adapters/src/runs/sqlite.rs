//! [`RunStore`] for [`SqliteStore`]: every write in a `BEGIN IMMEDIATE` transaction, which also serialises the
//! audit append and the job changes that go with it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{
    AttemptRecord, Delivery, DeliveryAttempt, DeliveryStatus, FollowUp, NewDelivery, NewRun, PipelineRun, RunFilter,
    RunStatus, RunStore, RunTransition,
};
use frostbyte_core::queue::NewJob;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use uuid::Uuid;

use super::{
    cancel_event, decode_delivery_status, decode_event, decode_opt_uuid, decode_status, delivery_columns, held_until,
    illegal, run_columns,
};
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
        parent_run_id: decode_opt_uuid(column(row, "parent_run_id")?, "pipeline_runs.parent_run_id")?,
        chain_depth: u32::try_from(column::<_, i64>(row, "chain_depth")?)
            .map_err(|_| codec::corrupt("pipeline_runs.chain_depth"))?,
        waits_for_run_id: decode_opt_uuid(column(row, "waits_for_run_id")?, "pipeline_runs.waits_for_run_id")?,
    })
}

fn delivery_from_row(row: &SqliteRow) -> StoreResult<Delivery> {
    let code: Option<i64> = column(row, "last_status_code")?;
    Ok(Delivery {
        delivery_id: codec::decode_uuid(&column::<_, String>(row, "delivery_id")?, "deliveries.delivery_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "deliveries.tenant_id")?,
        run_id: codec::decode_uuid(&column::<_, String>(row, "run_id")?, "deliveries.run_id")?,
        url: column(row, "url")?,
        event: decode_event(&column::<_, String>(row, "event")?)?,
        secret_env: column(row, "secret_env")?,
        status: decode_delivery_status(&column::<_, String>(row, "status")?)?,
        attempts: u32::try_from(column::<_, i64>(row, "attempts")?)
            .map_err(|_| codec::corrupt("deliveries.attempts"))?,
        next_attempt_at: codec::decode_opt_timestamp(column(row, "next_attempt_at")?, "deliveries.next_attempt_at")?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: column(row, "last_error")?,
        created_at: codec::decode_timestamp(&column::<_, String>(row, "created_at")?, "deliveries.created_at")?,
        updated_at: codec::decode_timestamp(&column::<_, String>(row, "updated_at")?, "deliveries.updated_at")?,
        delivered_at: codec::decode_opt_timestamp(column(row, "delivered_at")?, "deliveries.delivered_at")?,
        attempt_log: Vec::new(),
    })
}

async fn select_delivery(conn: &mut SqliteConnection, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Delivery>> {
    sqlx::query(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM pipeline_webhook_deliveries WHERE tenant_id = ? AND delivery_id = ?"
    ))
    .bind(tenant.as_str())
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(err("webhook delivery"))?
    .as_ref()
    .map(delivery_from_row)
    .transpose()
}

/// Inserts a `pending` run with its job and audit event. A run that waits for an unfinished one has its job held
/// until that run ends (read in this transaction, which SQLite serialises with the terminal transition).
async fn insert_run(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    run: NewRun,
    mut job: NewJob,
    audit: NewAuditEvent,
    now: DateTime<Utc>,
) -> StoreResult<PipelineRun> {
    if let Some(waited) = run.waits_for
        && select_run(conn, tenant, waited).await?.is_some_and(|r| !r.status.is_terminal())
    {
        job = job.run_after(held_until(now));
    }
    let job = crate::queue::sqlite::enqueue_in_tx(conn, tenant, job).await?;
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
        parent_run_id: run.parent_run_id,
        chain_depth: run.chain_depth,
        waits_for_run_id: run.waits_for,
    };
    sqlx::query(concat!(
        "INSERT INTO pipeline_runs (",
        run_columns!(),
        ", chain_index) VALUES (?, ?, ?, ?, ?, ?, 0, 0, NULL, ?, 0, ?, NULL, NULL, ?, ?, ?, ?, ?, '{}', ?)"
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
    .bind(stored.parent_run_id.map(|u| u.to_string()))
    .bind(i64::from(stored.chain_depth))
    .bind(stored.waits_for_run_id.map(|u| u.to_string()))
    .bind(run.chain_index.map(i64::from))
    .execute(&mut *conn)
    .await
    .map_err(err("pipeline run"))?;
    append_in_tx(conn, tenant, audit, now).await?;
    Ok(stored)
}

/// What a run's ending starts, in the transaction of its terminal transition: follow-ups, deliveries, notes,
/// and the release of runs waiting for it.
async fn on_terminal(
    conn: &mut SqliteConnection,
    run: &PipelineRun,
    follow_ups: Vec<FollowUp>,
    deliveries: Vec<NewDelivery>,
    notes: Vec<NewAuditEvent>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let tenant = &run.tenant_id;
    for f in follow_ups {
        insert_run(conn, tenant, f.run, f.job, f.audit, now).await?;
    }
    for d in deliveries {
        sqlx::query(concat!(
            "INSERT INTO pipeline_webhook_deliveries (",
            delivery_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, NULL, NULL, ?7, ?7, NULL)"
        ))
        .bind(tenant.as_str())
        .bind(d.delivery_id.to_string())
        .bind(run.run_id.to_string())
        .bind(&d.url)
        .bind(d.event.as_str())
        .bind(d.secret_env.as_deref())
        .bind(ts(&now))
        .execute(&mut *conn)
        .await
        .map_err(err("webhook delivery"))?;
    }
    for note in notes {
        append_in_tx(conn, tenant, note, now).await?;
    }
    sqlx::query(
        "UPDATE jobs SET run_after = ?1, updated_at = ?1 WHERE status = 'queued' AND job_id IN \
         (SELECT job_id FROM pipeline_runs WHERE tenant_id = ?2 AND waits_for_run_id = ?3 AND status = 'pending')",
    )
    .bind(ts(&now))
    .bind(tenant.as_str())
    .bind(run.run_id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(err("job"))?;
    Ok(())
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
        let stored = insert_run(&mut tx, tenant, run, job, audit, now).await?;
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
        if run.status.is_terminal() {
            on_terminal(&mut tx, &run, change.follow_ups, change.deliveries, change.notes, now).await?;
        }
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

    async fn request_cancel(
        &self,
        tenant: &TenantId,
        run_id: Uuid,
        actor: &str,
        deliveries: Vec<NewDelivery>,
    ) -> StoreResult<PipelineRun> {
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
        if immediate {
            on_terminal(&mut tx, &run, Vec::new(), deliveries, Vec::new(), now).await?;
        }
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

    async fn follow_ups(&self, tenant: &TenantId, parent: Uuid) -> StoreResult<Vec<PipelineRun>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM pipeline_runs WHERE tenant_id = ? AND parent_run_id = ? ORDER BY chain_index"
        ))
        .bind(tenant.as_str())
        .bind(parent.to_string())
        .fetch_all(self.pool())
        .await
        .map_err(err("pipeline run"))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM pipeline_webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ? \
              ORDER BY next_attempt_at LIMIT ?"
        ))
        .bind(ts(&now))
        .bind(i64::from(limit.max(1)))
        .fetch_all(self.pool())
        .await
        .map_err(err("webhook delivery"))?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn claim_delivery(
        &self,
        tenant: &TenantId,
        delivery_id: Uuid,
        expected: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE pipeline_webhook_deliveries SET next_attempt_at = ?1 WHERE tenant_id = ?2 AND delivery_id = ?3 \
             AND status = 'pending' AND next_attempt_at = ?4",
        )
        .bind(ts(&lease_until))
        .bind(tenant.as_str())
        .bind(delivery_id.to_string())
        .bind(ts(&expected))
        .execute(self.pool())
        .await
        .map_err(err("webhook delivery"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_delivery_attempt(
        &self,
        tenant: &TenantId,
        delivery_id: Uuid,
        record: AttemptRecord,
        audit: NewAuditEvent,
    ) -> StoreResult<Delivery> {
        let now = frostbyte_core::now();
        let mut tx = self.begin_write().await?;
        let current = select_delivery(&mut tx, tenant, delivery_id)
            .await?
            .ok_or(StoreError::NotFound { resource: "webhook delivery" })?;
        if current.status != DeliveryStatus::Pending {
            return Err(StoreError::Conflict(format!("delivery is already {}", current.status.as_str())));
        }
        let a = &record.attempt;
        sqlx::query(
            "INSERT INTO pipeline_webhook_attempts (tenant_id, delivery_id, attempt, attempted_at, status_code, error, \
             delivered) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(delivery_id.to_string())
        .bind(i64::from(a.attempt))
        .bind(ts(&a.attempted_at))
        .bind(a.status_code.map(i64::from))
        .bind(a.error.as_deref())
        .bind(i64::from(a.delivered))
        .execute(&mut *tx)
        .await
        .map_err(err("webhook delivery"))?;
        sqlx::query(
            "UPDATE pipeline_webhook_deliveries SET status = ?1, attempts = ?2, next_attempt_at = ?3, \
             last_status_code = ?4, last_error = ?5, updated_at = ?6, delivered_at = ?7 \
             WHERE tenant_id = ?8 AND delivery_id = ?9",
        )
        .bind(record.status.as_str())
        .bind(i64::from(a.attempt))
        .bind(record.next_attempt_at.as_ref().map(ts))
        .bind(a.status_code.map(i64::from))
        .bind(a.error.as_deref())
        .bind(ts(&now))
        .bind(a.delivered.then(|| ts(&a.attempted_at)))
        .bind(tenant.as_str())
        .bind(delivery_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(err("webhook delivery"))?;
        append_in_tx(&mut tx, tenant, audit, now).await?;
        let updated = select_delivery(&mut tx, tenant, delivery_id)
            .await?
            .ok_or(StoreError::NotFound { resource: "webhook delivery" })?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(updated)
    }

    async fn list_deliveries(&self, tenant: &TenantId, run_id: Uuid) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM pipeline_webhook_deliveries WHERE tenant_id = ? AND run_id = ? ORDER BY created_at, delivery_id"
        ))
        .bind(tenant.as_str())
        .bind(run_id.to_string())
        .fetch_all(self.pool())
        .await
        .map_err(err("webhook delivery"))?;
        let mut out: Vec<Delivery> = rows.iter().map(delivery_from_row).collect::<StoreResult<_>>()?;
        for d in &mut out {
            let attempts = sqlx::query(
                "SELECT attempt, attempted_at, status_code, error, delivered FROM pipeline_webhook_attempts \
                 WHERE tenant_id = ? AND delivery_id = ? ORDER BY attempt",
            )
            .bind(tenant.as_str())
            .bind(d.delivery_id.to_string())
            .fetch_all(self.pool())
            .await
            .map_err(err("webhook delivery"))?;
            for row in &attempts {
                let code: Option<i64> = column(row, "status_code")?;
                d.attempt_log.push(DeliveryAttempt {
                    attempt: u32::try_from(column::<_, i64>(row, "attempt")?)
                        .map_err(|_| codec::corrupt("webhook_attempts.attempt"))?,
                    attempted_at: codec::decode_timestamp(
                        &column::<_, String>(row, "attempted_at")?,
                        "webhook_attempts.attempted_at",
                    )?,
                    status_code: code.and_then(|c| u16::try_from(c).ok()),
                    error: column(row, "error")?,
                    delivered: column::<_, i64>(row, "delivered")? != 0,
                });
            }
        }
        Ok(out)
    }
}
