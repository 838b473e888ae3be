//! [`RunStore`] for [`PostgresStore`]: writes lock the run row (`FOR UPDATE`), so concurrent transitions of one run
//! apply one after the other and the compare-and-set on its status holds.

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
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use super::{
    cancel_event, decode_delivery_status, decode_event, decode_opt_uuid, decode_status, delivery_columns, held_until,
    illegal, run_columns,
};
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
        parent_run_id: decode_opt_uuid(column(row, "parent_run_id")?, "pipeline_runs.parent_run_id")?,
        chain_depth: u32::try_from(column::<_, i32>(row, "chain_depth")?)
            .map_err(|_| codec::corrupt("pipeline_runs.chain_depth"))?,
        waits_for_run_id: decode_opt_uuid(column(row, "waits_for_run_id")?, "pipeline_runs.waits_for_run_id")?,
    })
}

fn delivery_from_row(row: &PgRow) -> StoreResult<Delivery> {
    let code: Option<i32> = column(row, "last_status_code")?;
    Ok(Delivery {
        delivery_id: codec::decode_uuid(&column::<_, String>(row, "delivery_id")?, "deliveries.delivery_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "deliveries.tenant_id")?,
        run_id: codec::decode_uuid(&column::<_, String>(row, "run_id")?, "deliveries.run_id")?,
        url: column(row, "url")?,
        event: decode_event(&column::<_, String>(row, "event")?)?,
        secret_env: column(row, "secret_env")?,
        status: decode_delivery_status(&column::<_, String>(row, "status")?)?,
        attempts: u32::try_from(column::<_, i32>(row, "attempts")?)
            .map_err(|_| codec::corrupt("deliveries.attempts"))?,
        next_attempt_at: column(row, "next_attempt_at")?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: column(row, "last_error")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
        delivered_at: column(row, "delivered_at")?,
        attempt_log: Vec::new(),
    })
}

async fn select_delivery(conn: &mut PgConnection, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Delivery>> {
    sqlx::query(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM pipeline_webhook_deliveries WHERE tenant_id = $1 AND delivery_id = $2 FOR UPDATE"
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
/// until that run ends; the waited-for row is locked, so its terminal transition either committed before (and
/// the job is not held) or runs after this commits (and releases it).
async fn insert_run(
    conn: &mut PgConnection,
    tenant: &TenantId,
    run: NewRun,
    mut job: NewJob,
    audit: NewAuditEvent,
    now: DateTime<Utc>,
) -> StoreResult<PipelineRun> {
    if let Some(waited) = run.waits_for
        && select_run(conn, tenant, waited, true).await?.is_some_and(|r| !r.status.is_terminal())
    {
        job = job.run_after(held_until(now));
    }
    let job = crate::queue::postgres::enqueue_in_tx(conn, tenant, job).await?;
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
        ", chain_index) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, NULL, $7, FALSE, $8, NULL, NULL, $9, $10, $11, $12, $13, '{}'::jsonb, $14)"
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
    .bind(stored.parent_run_id.map(|u| u.to_string()))
    .bind(i32::try_from(stored.chain_depth).unwrap_or(i32::MAX))
    .bind(stored.waits_for_run_id.map(|u| u.to_string()))
    .bind(run.chain_index.map(|i| i32::try_from(i).unwrap_or(i32::MAX)))
    .execute(&mut *conn)
    .await
    .map_err(err("pipeline run"))?;
    append_in_tx(conn, tenant, audit, now).await?;
    Ok(stored)
}

/// What a run's ending starts, in the transaction of its terminal transition: follow-ups, deliveries, notes,
/// and the release of runs waiting for it.
async fn on_terminal(
    conn: &mut PgConnection,
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
            ") VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, NULL, NULL, $7, $7, NULL)"
        ))
        .bind(tenant.as_str())
        .bind(d.delivery_id.to_string())
        .bind(run.run_id.to_string())
        .bind(&d.url)
        .bind(d.event.as_str())
        .bind(d.secret_env.as_deref())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(err("webhook delivery"))?;
    }
    for note in notes {
        append_in_tx(conn, tenant, note, now).await?;
    }
    sqlx::query(
        "UPDATE jobs SET run_after = $1, updated_at = $1 WHERE status = 'queued' AND job_id IN \
         (SELECT job_id::uuid FROM pipeline_runs WHERE tenant_id = $2 AND waits_for_run_id = $3 AND status = 'pending')",
    )
    .bind(now)
    .bind(tenant.as_str())
    .bind(run.run_id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(err("job"))?;
    Ok(())
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
        let stored = insert_run(&mut tx, tenant, run, job, audit, now).await?;
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
        if run.status.is_terminal() {
            on_terminal(&mut tx, &run, change.follow_ups, change.deliveries, change.notes, now).await?;
        }
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

    async fn request_cancel(
        &self,
        tenant: &TenantId,
        run_id: Uuid,
        actor: &str,
        deliveries: Vec<NewDelivery>,
    ) -> StoreResult<PipelineRun> {
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
        if immediate {
            on_terminal(&mut tx, &run, Vec::new(), deliveries, Vec::new(), now).await?;
        }
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

    async fn follow_ups(&self, tenant: &TenantId, parent: Uuid) -> StoreResult<Vec<PipelineRun>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM pipeline_runs WHERE tenant_id = $1 AND parent_run_id = $2 ORDER BY chain_index"
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
            " FROM pipeline_webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
              ORDER BY next_attempt_at LIMIT $2"
        ))
        .bind(now)
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
            "UPDATE pipeline_webhook_deliveries SET next_attempt_at = $1 WHERE tenant_id = $2 AND delivery_id = $3 \
             AND status = 'pending' AND next_attempt_at = $4",
        )
        .bind(lease_until)
        .bind(tenant.as_str())
        .bind(delivery_id.to_string())
        .bind(expected)
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
        let mut tx = self.begin().await?;
        let current = select_delivery(&mut tx, tenant, delivery_id)
            .await?
            .ok_or(StoreError::NotFound { resource: "webhook delivery" })?;
        if current.status != DeliveryStatus::Pending {
            return Err(StoreError::Conflict(format!("delivery is already {}", current.status.as_str())));
        }
        let a = &record.attempt;
        sqlx::query(
            "INSERT INTO pipeline_webhook_attempts (tenant_id, delivery_id, attempt, attempted_at, status_code, error, \
             delivered) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.as_str())
        .bind(delivery_id.to_string())
        .bind(i32::try_from(a.attempt).unwrap_or(i32::MAX))
        .bind(a.attempted_at)
        .bind(a.status_code.map(i32::from))
        .bind(a.error.as_deref())
        .bind(a.delivered)
        .execute(&mut *tx)
        .await
        .map_err(err("webhook delivery"))?;
        sqlx::query(
            "UPDATE pipeline_webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, \
             last_status_code = $4, last_error = $5, updated_at = $6, delivered_at = $7 \
             WHERE tenant_id = $8 AND delivery_id = $9",
        )
        .bind(record.status.as_str())
        .bind(i32::try_from(a.attempt).unwrap_or(i32::MAX))
        .bind(record.next_attempt_at)
        .bind(a.status_code.map(i32::from))
        .bind(a.error.as_deref())
        .bind(now)
        .bind(a.delivered.then_some(a.attempted_at))
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
            " FROM pipeline_webhook_deliveries WHERE tenant_id = $1 AND run_id = $2 ORDER BY created_at, delivery_id"
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
                 WHERE tenant_id = $1 AND delivery_id = $2 ORDER BY attempt",
            )
            .bind(tenant.as_str())
            .bind(d.delivery_id.to_string())
            .fetch_all(self.pool())
            .await
            .map_err(err("webhook delivery"))?;
            for row in &attempts {
                let code: Option<i32> = column(row, "status_code")?;
                d.attempt_log.push(DeliveryAttempt {
                    attempt: u32::try_from(column::<_, i32>(row, "attempt")?)
                        .map_err(|_| codec::corrupt("webhook_attempts.attempt"))?,
                    attempted_at: column(row, "attempted_at")?,
                    status_code: code.and_then(|c| u16::try_from(c).ok()),
                    error: column(row, "error")?,
                    delivered: column(row, "delivered")?,
                });
            }
        }
        Ok(out)
    }
}
