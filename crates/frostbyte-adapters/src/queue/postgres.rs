//! [`JobQueue`] for [`PostgresStore`], shared by any number of worker processes.
//!
//! A claim ranks tenants without taking locks, then tries them in order, one short transaction each: lock the
//! tenant's `job_tenants` row (`FOR UPDATE`, so claims of one tenant serialise and its cap holds), re-check that
//! the tenant is `ACTIVE` and under its cap, and take its claimable jobs (the most advanced stage's, oldest first)
//! with `UPDATE … WHERE job_id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)`. Claims of different tenants run in
//! parallel. Lock order everywhere is `job_tenants` → `jobs` → `audit_heads`, so queue transactions cannot
//! deadlock with each other or with audit appends.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::page::{Page, PageRequest};
use frostbyte_core::queue::{
    ClaimOptions, FailOutcome, Job, JobError, JobQueue, JobStatus, NewJob, QueueStats, RetryPolicy,
};
use frostbyte_core::tenant::TenantState;
use frostbyte_core::{StoreError, StoreResult, TenantId, truncate_micros};
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use super::{
    LEASE_EXPIRED_MESSAGE, RANKED_TENANTS, REAP_BATCH, add_count, dead_lettered_event, decode_count, decode_error,
    decode_stage, decode_status, default_max_attempts, dlq_event, not_dead, not_owned, plan_failure, stage_names,
};
use crate::codec::{self, column, corrupt};
use crate::db_error::{self, Dialect};
use crate::postgres::{PostgresStore, append_in_tx};

/// Job columns as selected: the UUID and the JSON payload come back as text.
macro_rules! job_columns {
    () => {
        "job_id::text AS job_id, tenant_id, stage, resource_id, payload::text AS payload, dedupe_key, status, \
         attempts, max_attempts, lease_owner, lease_expires_at, run_after, last_error_code, last_error_message, \
         created_at, updated_at, first_attempt_at, last_attempt_at, finished_at"
    };
}

/// A claimable job of tenant `$1` at time `$2` (with the stage filter, a text array or NULL, in `$3`): queued
/// and due, or running under an expired lease with attempts left.
macro_rules! claimable {
    () => {
        "tenant_id = $1 AND ((status = 'queued' AND run_after <= $2) OR (status = 'running' AND \
         lease_expires_at <= $2 AND attempts < max_attempts)) AND ($3::text[] IS NULL OR stage = ANY($3))"
    };
}

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Postgres, resource, e)
}

fn job_from_row(row: &PgRow) -> StoreResult<Job> {
    Ok(Job {
        job_id: codec::decode_uuid(&column::<_, String>(row, "job_id")?, "jobs.job_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "jobs.tenant_id")?,
        stage: decode_stage(&column::<_, String>(row, "stage")?)?,
        resource_id: column(row, "resource_id")?,
        payload: serde_json::from_str(&column::<_, String>(row, "payload")?).map_err(|_| corrupt("jobs.payload"))?,
        dedupe_key: column(row, "dedupe_key")?,
        status: decode_status(&column::<_, String>(row, "status")?)?,
        attempts: decode_count(column(row, "attempts")?, "jobs.attempts")?,
        max_attempts: decode_count(column(row, "max_attempts")?, "jobs.max_attempts")?,
        lease_owner: column(row, "lease_owner")?,
        lease_expires_at: column(row, "lease_expires_at")?,
        run_after: column(row, "run_after")?,
        last_error: decode_error(column(row, "last_error_code")?, column(row, "last_error_message")?),
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
        first_attempt_at: column(row, "first_attempt_at")?,
        last_attempt_at: column(row, "last_attempt_at")?,
        finished_at: column(row, "finished_at")?,
    })
}

/// Reads a job (locking it with `FOR UPDATE` when `lock`), optionally only within `tenant`.
async fn find_job(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
    job_id: Uuid,
    lock: bool,
) -> StoreResult<Option<Job>> {
    let sql = if lock {
        concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE job_id = $1::uuid AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE job_id = $1::uuid AND ($2::text IS NULL OR tenant_id = $2)"
        )
    };
    sqlx::query(sql)
        .bind(job_id.to_string())
        .bind(tenant.map(TenantId::as_str))
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("job"))?
        .as_ref()
        .map(job_from_row)
        .transpose()
}

/// Inserts a job inside the caller's transaction (or returns the tenant's existing job with the same
/// `dedupe_key`), so that a job commits or rolls back with the row that causes it. A concurrent enqueue of the
/// same key waits for this transaction and then returns this job.
pub(crate) async fn enqueue_in_tx(conn: &mut PgConnection, tenant: &TenantId, job: NewJob) -> StoreResult<Job> {
    let now = frostbyte_core::now();
    // Share-lock the tenant row: it cannot disappear or change its key underneath.
    let exists = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR KEY SHARE")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("tenant"))?;
    if exists.is_none() {
        return Err(StoreError::NotFound { resource: "tenant" });
    }
    sqlx::query("INSERT INTO job_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await
        .map_err(err("job"))?;
    let payload = serde_json::to_string(&job.payload)
        .map_err(|_| StoreError::Internal("job payload could not be encoded".into()))?;
    let inserted = sqlx::query(concat!(
        "INSERT INTO jobs (job_id, tenant_id, stage, resource_id, payload, dedupe_key, status, attempts, ",
        "max_attempts, run_after, created_at, updated_at) ",
        "VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6, 'queued', 0, $7, $8, $9, $9) ",
        "ON CONFLICT DO NOTHING RETURNING ",
        job_columns!()
    ))
    .bind(frostbyte_core::ids::new_id().to_string())
    .bind(tenant.as_str())
    .bind(job.stage.as_str())
    .bind(&job.resource_id)
    .bind(payload)
    .bind(job.dedupe_key.as_deref())
    .bind(default_max_attempts(job.stage))
    .bind(truncate_micros(job.run_after.unwrap_or(now)))
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
    .map_err(err("job"))?;
    if let Some(row) = inserted {
        return job_from_row(&row);
    }
    let Some(key) = job.dedupe_key.as_deref() else {
        return Err(StoreError::Internal("job insert was ignored without a dedupe key".into()));
    };
    sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 AND dedupe_key = $2"))
        .bind(tenant.as_str())
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .map_err(err("job"))
        .and_then(|row| job_from_row(&row))
}

/// Marks a job `succeeded` inside the caller's transaction, so a stage's output and its job transition commit
/// together. `Conflict` if the job is no longer leased to `worker_id`, `NotFound` if it does not exist.
pub(crate) async fn complete_in_tx(
    conn: &mut PgConnection,
    job_id: Uuid,
    worker_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<Job> {
    let row = sqlx::query(concat!(
        "UPDATE jobs SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = $3, ",
        "updated_at = $3 WHERE job_id = $1::uuid AND status = 'running' AND lease_owner = $2 RETURNING ",
        job_columns!()
    ))
    .bind(job_id.to_string())
    .bind(worker_id)
    .bind(truncate_micros(now))
    .fetch_optional(&mut *conn)
    .await
    .map_err(err("job"))?;
    match row {
        Some(row) => job_from_row(&row),
        None => match find_job(conn, None, job_id, false).await? {
            Some(job) => Err(not_owned(job.status)),
            None => Err(StoreError::NotFound { resource: "job" }),
        },
    }
}

/// Dead-letters the tenant's running jobs whose lease expired with no attempts left, auditing each.
async fn reap_expired(conn: &mut PgConnection, tenant: &TenantId, now: DateTime<Utc>) -> StoreResult<()> {
    let rows = sqlx::query(concat!(
        "UPDATE jobs SET status = 'dead', lease_owner = NULL, lease_expires_at = NULL, finished_at = $2, ",
        "updated_at = $2, last_error_code = $3, last_error_message = $4 WHERE job_id IN (SELECT job_id FROM jobs ",
        "WHERE tenant_id = $1 AND status = 'running' AND lease_expires_at <= $2 AND attempts >= max_attempts ",
        "ORDER BY job_id FOR UPDATE SKIP LOCKED LIMIT $5) RETURNING ",
        job_columns!()
    ))
    .bind(tenant.as_str())
    .bind(now)
    .bind(JobError::LEASE_EXPIRED)
    .bind(LEASE_EXPIRED_MESSAGE)
    .bind(REAP_BATCH)
    .fetch_all(&mut *conn)
    .await
    .map_err(err("job"))?;
    for row in &rows {
        let job = job_from_row(row)?;
        append_in_tx(conn, tenant, dead_lettered_event(&job, None), frostbyte_core::now()).await?;
    }
    Ok(())
}

impl PostgresStore {
    /// Tries to claim one job of `tenant` in its own transaction (see the module docs).
    async fn claim_from(
        &self,
        tenant: &TenantId,
        opts: &ClaimOptions,
        stages: Option<&[String]>,
        now: DateTime<Utc>,
        max: usize,
    ) -> StoreResult<Vec<Job>> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT 1 FROM job_tenants WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(err("job"))?;
        // Under the lock, every earlier claim of this tenant has committed: the count is exact.
        let row = sqlx::query(
            "SELECT t.state, (SELECT COUNT(*) FROM jobs l WHERE l.tenant_id = t.tenant_id AND l.status = 'running' \
             AND l.lease_expires_at > $2) AS live FROM tenants t WHERE t.tenant_id = $1",
        )
        .bind(tenant.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("job"))?;
        let Some(row) = row else { return Ok(Vec::new()) };
        let state = codec::decode_state(&column::<_, String>(&row, "state")?)?;
        let live: i64 = column(&row, "live")?;
        let cap = i64::from(opts.per_tenant_cap.max(1));
        if state != TenantState::Active || live >= cap {
            return Ok(Vec::new());
        }
        let room = usize::try_from(cap - live).unwrap_or(0).min(max);
        reap_expired(&mut tx, tenant, now).await?;
        let rows = sqlx::query(concat!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $4, lease_expires_at = $5, ",
            "first_attempt_at = COALESCE(first_attempt_at, $2), last_attempt_at = $2, updated_at = $2, ",
            "last_error_code = CASE WHEN status = 'running' THEN $6 ELSE last_error_code END, ",
            "last_error_message = CASE WHEN status = 'running' THEN $7 ELSE last_error_message END ",
            "WHERE job_id IN (SELECT job_id FROM jobs WHERE ",
            claimable!(),
            " AND stage = (SELECT stage FROM jobs WHERE ",
            claimable!(),
            " ORDER BY ",
            stage_rank!(),
            " DESC, run_after, job_id LIMIT 1) ORDER BY run_after, job_id FOR UPDATE SKIP LOCKED LIMIT $8) RETURNING ",
            job_columns!()
        ))
        .bind(tenant.as_str())
        .bind(now)
        .bind(stages)
        .bind(&opts.worker_id)
        .bind(super::after(now, opts.lease))
        .bind(JobError::LEASE_EXPIRED)
        .bind(LEASE_EXPIRED_MESSAGE)
        .bind(i64::try_from(room).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(err("job"))?;
        let mut jobs = rows.iter().map(job_from_row).collect::<StoreResult<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.run_after, j.job_id));
        if !jobs.is_empty() {
            sqlx::query("UPDATE job_tenants SET last_claimed_at = $2 WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err("job"))?;
        }
        // Commit even without a job: keep whatever was dead-lettered on the way.
        tx.commit().await.map_err(err("transaction"))?;
        Ok(jobs)
    }
}

#[async_trait]
impl JobQueue for PostgresStore {
    async fn enqueue(&self, tenant: &TenantId, job: NewJob) -> StoreResult<Job> {
        let mut tx = self.begin().await?;
        let job = enqueue_in_tx(&mut tx, tenant, job).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(job)
    }

    async fn claim_batch(&self, opts: &ClaimOptions, now: DateTime<Utc>, max: usize) -> StoreResult<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = truncate_micros(now);
        let stages = stage_names(&opts.stages);
        let ranked: Vec<String> = sqlx::query_scalar(
            "SELECT tenant_id FROM ( \
               SELECT q.tenant_id, q.last_claimed_at, \
                 (SELECT COUNT(*) FROM jobs l WHERE l.tenant_id = q.tenant_id AND l.status = 'running' \
                    AND l.lease_expires_at > $1) AS live, \
                 (SELECT MIN(j.run_after) FROM jobs j WHERE j.tenant_id = q.tenant_id \
                    AND ((j.status = 'queued' AND j.run_after <= $1) \
                      OR (j.status = 'running' AND j.lease_expires_at <= $1)) \
                    AND ($2::text[] IS NULL OR j.stage = ANY($2))) AS oldest \
               FROM job_tenants q JOIN tenants t ON t.tenant_id = q.tenant_id \
               WHERE t.state = 'ACTIVE') ranked \
             WHERE oldest IS NOT NULL AND live < $3 \
             ORDER BY live, last_claimed_at NULLS FIRST, oldest, tenant_id \
             LIMIT $4",
        )
        .bind(now)
        .bind(stages.as_deref())
        .bind(i64::from(opts.per_tenant_cap.max(1)))
        .bind(RANKED_TENANTS)
        .fetch_all(self.pool())
        .await
        .map_err(err("job"))?;
        for tenant in &ranked {
            let tenant = codec::decode_tenant_id(tenant, "job_tenants.tenant_id")?;
            let jobs = self.claim_from(&tenant, opts, stages.as_deref(), now, max).await?;
            if !jobs.is_empty() {
                return Ok(jobs);
            }
        }
        Ok(Vec::new())
    }

    async fn heartbeat(&self, job_id: Uuid, worker_id: &str, lease: Duration, now: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $3, updated_at = $4 \
             WHERE job_id = $1::uuid AND status = 'running' AND lease_owner = $2",
        )
        .bind(job_id.to_string())
        .bind(worker_id)
        .bind(super::after(now, lease))
        .bind(truncate_micros(now))
        .execute(self.pool())
        .await
        .map_err(err("job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete(&self, job_id: Uuid, worker_id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        complete_in_tx(&mut tx, job_id, worker_id, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: JobError,
        policy: &RetryPolicy,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome> {
        let error = error.truncated();
        let now = truncate_micros(now);
        let mut tx = self.begin().await?;
        let Some(job) = find_job(&mut tx, None, job_id, true).await? else {
            return Err(StoreError::NotFound { resource: "job" });
        };
        if job.status != JobStatus::Running || job.lease_owner.as_deref() != Some(worker_id) {
            return Err(not_owned(job.status));
        }
        let plan = plan_failure(job.stage, job.attempts, policy, now);
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = $2, max_attempts = $3, ",
            "run_after = CASE WHEN $4::boolean THEN run_after ELSE $5::timestamptz END, ",
            "finished_at = CASE WHEN $4::boolean THEN $6::timestamptz ELSE NULL END, lease_owner = NULL, ",
            "lease_expires_at = NULL, last_error_code = $7, last_error_message = $8, updated_at = $6 ",
            "WHERE job_id = $1::uuid RETURNING ",
            job_columns!()
        ))
        .bind(job_id.to_string())
        .bind(if plan.dead { JobStatus::Dead.as_str() } else { JobStatus::Queued.as_str() })
        .bind(plan.max_attempts)
        .bind(plan.dead)
        .bind(plan.run_after)
        .bind(now)
        .bind(&error.code)
        .bind(&error.message)
        .fetch_one(&mut *tx)
        .await
        .map_err(err("job"))?;
        let updated = job_from_row(&row)?;
        if plan.dead {
            let tenant = updated.tenant_id.clone();
            append_in_tx(&mut tx, &tenant, dead_lettered_event(&updated, Some(worker_id)), frostbyte_core::now())
                .await?;
        }
        tx.commit().await.map_err(err("transaction"))?;
        Ok(if plan.dead { FailOutcome::DeadLettered } else { FailOutcome::Retrying { run_after: updated.run_after } })
    }

    async fn list_dead(&self, tenant: &TenantId, page: PageRequest) -> StoreResult<Page<Job>> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND status IN ('dead', 'abandoned')")
                .bind(tenant.as_str())
                .fetch_one(self.pool())
                .await
                .map_err(err("job"))?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE tenant_id = $1 AND status IN ('dead', 'abandoned') ",
            "ORDER BY last_attempt_at DESC NULLS LAST, job_id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(tenant.as_str())
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(self.pool())
        .await
        .map_err(err("job"))?;
        let items = rows.iter().map(job_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items, total: u64::try_from(total).unwrap_or(0) })
    }

    async fn retry_dead(&self, tenant: &TenantId, job_id: Uuid, actor: &str) -> StoreResult<Job> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_after = $3, lease_owner = NULL, ",
            "lease_expires_at = NULL, first_attempt_at = NULL, finished_at = NULL, updated_at = $3 ",
            "WHERE tenant_id = $1 AND job_id = $2::uuid AND status = 'dead' RETURNING ",
            job_columns!()
        ))
        .bind(tenant.as_str())
        .bind(job_id.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("job"))?;
        let Some(row) = row else {
            return match find_job(&mut tx, Some(tenant), job_id, false).await? {
                Some(job) => Err(not_dead(job.status)),
                None => Err(StoreError::NotFound { resource: "job" }),
            };
        };
        let job = job_from_row(&row)?;
        append_in_tx(&mut tx, tenant, dlq_event("DLQ_RETRIED", &job, actor), now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(job)
    }

    async fn abandon_dead(&self, tenant: &TenantId, job_id: Uuid, actor: &str) -> StoreResult<Job> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = 'abandoned', finished_at = $3, updated_at = $3 ",
            "WHERE tenant_id = $1 AND job_id = $2::uuid AND status = 'dead' RETURNING ",
            job_columns!()
        ))
        .bind(tenant.as_str())
        .bind(job_id.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("job"))?;
        let Some(row) = row else {
            return match find_job(&mut tx, Some(tenant), job_id, false).await? {
                Some(job) if job.status == JobStatus::Abandoned => Ok(job),
                Some(job) => Err(not_dead(job.status)),
                None => Err(StoreError::NotFound { resource: "job" }),
            };
        };
        let job = job_from_row(&row)?;
        append_in_tx(&mut tx, tenant, dlq_event("DLQ_ABANDONED", &job, actor), now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(job)
    }

    async fn get_job(&self, tenant: &TenantId, job_id: Uuid) -> StoreResult<Option<Job>> {
        let mut conn = self.pool().acquire().await.map_err(err("job"))?;
        find_job(&mut conn, Some(tenant), job_id, false).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT stage, status, COUNT(*) FROM jobs GROUP BY stage, status")
                .fetch_all(self.pool())
                .await
                .map_err(err("job"))?;
        let mut stats = QueueStats::default();
        for (stage, status, n) in rows {
            add_count(&mut stats.total, &status, n)?;
            add_count(stats.by_stage.entry(decode_stage(&stage)?).or_default(), &status, n)?;
        }
        Ok(stats)
    }
}
