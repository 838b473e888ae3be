//! [`JobQueue`] for [`SqliteStore`]. Every state change runs in a `BEGIN IMMEDIATE` transaction, so claims are
//! serialised by SQLite's single write lock: ranking the tenants and taking a job see one consistent state, and
//! two claimers can never take the same job or push a tenant past its cap.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::page::{Page, PageRequest};
use frostbyte_core::queue::{
    ClaimOptions, FailOutcome, Job, JobError, JobQueue, JobStatus, NewJob, QueueStats, RetryPolicy,
};
use frostbyte_core::{StoreError, StoreResult, TenantId, truncate_micros};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use uuid::Uuid;

use super::{
    LEASE_EXPIRED_MESSAGE, RANKED_TENANTS, REAP_BATCH, add_count, dead_lettered_event, decode_count, decode_error,
    decode_stage, decode_status, default_max_attempts, dlq_event, not_dead, not_owned, plan_failure, stage_names,
};
use crate::codec::{self, column, corrupt};
use crate::db_error::{self, Dialect};
use crate::sqlite::{SqliteStore, append_in_tx};

macro_rules! job_columns {
    () => {
        "job_id, tenant_id, stage, resource_id, payload, dedupe_key, status, attempts, max_attempts, lease_owner, \
         lease_expires_at, run_after, last_error_code, last_error_message, created_at, updated_at, \
         first_attempt_at, last_attempt_at, finished_at"
    };
}

/// A claimable job of tenant `?1` at time `?2` (with the stage filter, a JSON array or NULL, in `?3`): queued
/// and due, or running under an expired lease with attempts left.
macro_rules! claimable {
    () => {
        "tenant_id = ?1 AND ((status = 'queued' AND run_after <= ?2) OR (status = 'running' AND \
         lease_expires_at <= ?2 AND attempts < max_attempts)) AND (?3 IS NULL OR stage IN (SELECT value FROM \
         json_each(?3)))"
    };
}

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

fn ts(t: &DateTime<Utc>) -> String {
    codec::encode_timestamp(&truncate_micros(*t))
}

fn job_from_row(row: &SqliteRow) -> StoreResult<Job> {
    let opt_ts = |name: &'static str| -> StoreResult<Option<DateTime<Utc>>> {
        codec::decode_opt_timestamp(column(row, name)?, name)
    };
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
        lease_expires_at: opt_ts("lease_expires_at")?,
        run_after: codec::decode_timestamp(&column::<_, String>(row, "run_after")?, "jobs.run_after")?,
        last_error: decode_error(column(row, "last_error_code")?, column(row, "last_error_message")?),
        created_at: codec::decode_timestamp(&column::<_, String>(row, "created_at")?, "jobs.created_at")?,
        updated_at: codec::decode_timestamp(&column::<_, String>(row, "updated_at")?, "jobs.updated_at")?,
        first_attempt_at: opt_ts("first_attempt_at")?,
        last_attempt_at: opt_ts("last_attempt_at")?,
        finished_at: opt_ts("finished_at")?,
    })
}

async fn find_job(conn: &mut SqliteConnection, tenant: Option<&TenantId>, job_id: Uuid) -> StoreResult<Option<Job>> {
    sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE job_id = ?1 AND (?2 IS NULL OR tenant_id = ?2)"))
        .bind(job_id.to_string())
        .bind(tenant.map(TenantId::as_str))
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("job"))?
        .as_ref()
        .map(job_from_row)
        .transpose()
}

/// Inserts a job inside the caller's write transaction (or returns the tenant's existing job with the same
/// `dedupe_key`), so that a job commits or rolls back with the row that causes it.
pub(crate) async fn enqueue_in_tx(conn: &mut SqliteConnection, tenant: &TenantId, job: NewJob) -> StoreResult<Job> {
    ready_for_jobs_in_tx(conn, tenant).await?;
    insert_job_in_tx(conn, tenant, job).await
}

/// Checks the tenant exists (`NotFound` before anything is written) and gives it its fairness row: what
/// [`insert_job_in_tx`] needs, done once for any number of jobs in one transaction.
pub(crate) async fn ready_for_jobs_in_tx(conn: &mut SqliteConnection, tenant: &TenantId) -> StoreResult<()> {
    let exists = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = ?")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("tenant"))?;
    if exists.is_none() {
        return Err(StoreError::NotFound { resource: "tenant" });
    }
    sqlx::query("INSERT INTO job_tenants (tenant_id) VALUES (?) ON CONFLICT DO NOTHING")
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await
        .map_err(err("job"))?;
    Ok(())
}

/// Enqueues a job for a tenant made [`ready_for_jobs_in_tx`] in the same transaction; with a dedupe key already
/// taken, returns the existing job.
pub(crate) async fn insert_job_in_tx(conn: &mut SqliteConnection, tenant: &TenantId, job: NewJob) -> StoreResult<Job> {
    let now = frostbyte_core::now();
    let payload = serde_json::to_string(&job.payload)
        .map_err(|_| StoreError::Internal("job payload could not be encoded".into()))?;
    let inserted = sqlx::query(concat!(
        "INSERT INTO jobs (",
        job_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, NULL, NULL, ?, NULL, NULL, ?, ?, NULL, NULL, NULL) ",
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
    .bind(ts(&job.run_after.unwrap_or(now)))
    .bind(ts(&now))
    .bind(ts(&now))
    .fetch_optional(&mut *conn)
    .await
    .map_err(err("job"))?;
    if let Some(row) = inserted {
        return job_from_row(&row);
    }
    let Some(key) = job.dedupe_key.as_deref() else {
        return Err(StoreError::Internal("job insert was ignored without a dedupe key".into()));
    };
    sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = ? AND dedupe_key = ?"))
        .bind(tenant.as_str())
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .map_err(err("job"))
        .and_then(|row| job_from_row(&row))
}

/// Marks a job `succeeded` inside the caller's write transaction, so a stage's output and its job transition
/// commit together. `Conflict` if the job is no longer leased to `worker_id`, `NotFound` if it does not exist.
pub(crate) async fn complete_in_tx(
    conn: &mut SqliteConnection,
    job_id: Uuid,
    worker_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<Job> {
    let row = sqlx::query(concat!(
        "UPDATE jobs SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = ?3, ",
        "updated_at = ?3 WHERE job_id = ?1 AND status = 'running' AND lease_owner = ?2 RETURNING ",
        job_columns!()
    ))
    .bind(job_id.to_string())
    .bind(worker_id)
    .bind(ts(&now))
    .fetch_optional(&mut *conn)
    .await
    .map_err(err("job"))?;
    match row {
        Some(row) => job_from_row(&row),
        None => match find_job(conn, None, job_id).await? {
            Some(job) => Err(not_owned(job.status)),
            None => Err(StoreError::NotFound { resource: "job" }),
        },
    }
}

/// Enqueues several jobs for a tenant made [`ready_for_jobs_in_tx`] in the same transaction, in one multi-row
/// insert; a job whose dedupe key is taken is skipped, as [`insert_job_in_tx`] would (which returns the existing
/// one instead).
pub(crate) async fn insert_jobs_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    jobs: Vec<NewJob>,
) -> StoreResult<()> {
    /// Rows per statement: 11 parameters each, far below SQLite's bound-parameter limit.
    const ROWS: usize = 500;
    let now = ts(&frostbyte_core::now());
    let mut encoded = Vec::with_capacity(jobs.len());
    for job in jobs {
        let payload = serde_json::to_string(&job.payload)
            .map_err(|_| StoreError::Internal("job payload could not be encoded".into()))?;
        let run_after = job.run_after.as_ref().map_or_else(|| now.clone(), ts);
        encoded.push((job, payload, run_after));
    }
    for rows in encoded.chunks(ROWS) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!("INSERT INTO jobs (", job_columns!(), ") "));
        insert.push_values(rows, |mut b, (job, payload, run_after)| {
            b.push_bind(frostbyte_core::ids::new_id().to_string())
                .push_bind(tenant.as_str().to_owned())
                .push_bind(job.stage.as_str())
                .push_bind(job.resource_id.clone())
                .push_bind(payload.clone())
                .push_bind(job.dedupe_key.clone())
                .push("'queued', 0")
                .push_bind(default_max_attempts(job.stage))
                .push("NULL, NULL")
                .push_bind(run_after.clone())
                .push("NULL, NULL")
                .push_bind(now.clone())
                .push_bind(now.clone())
                .push("NULL, NULL, NULL");
        });
        insert.push(" ON CONFLICT DO NOTHING");
        // One statement per row count: not kept prepared (see `index::sqlite::swap_chunks_in_tx`).
        insert.build().persistent(false).execute(&mut *conn).await.map_err(err("job"))?;
    }
    Ok(())
}

/// [`complete_in_tx`] for several jobs `(job_id, worker_id)` in one statement: the result for each, in order.
/// A job that is not running under that worker's lease is refused (`Conflict`, or `NotFound`) and left as it is.
pub(crate) async fn complete_all_in_tx(
    conn: &mut SqliteConnection,
    jobs: &[(Uuid, &str)],
    now: DateTime<Utc>,
) -> StoreResult<Vec<StoreResult<()>>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let pairs = serde_json::to_string(&jobs.iter().map(|(id, worker)| (id.to_string(), worker)).collect::<Vec<_>>())
        .map_err(|_| StoreError::Internal("job ids could not be encoded".into()))?;
    let done: std::collections::HashSet<String> = sqlx::query_scalar(
        "UPDATE jobs SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = ?2, \
         updated_at = ?2 WHERE job_id IN (SELECT value ->> 0 FROM json_each(?1)) AND status = 'running' \
         AND (job_id, lease_owner) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1)) RETURNING job_id",
    )
    .bind(&pairs)
    .bind(ts(&now))
    .fetch_all(&mut *conn)
    .await
    .map_err(err("job"))?
    .into_iter()
    .collect();
    let mut results = Vec::with_capacity(jobs.len());
    for (job_id, _) in jobs {
        results.push(if done.contains(&job_id.to_string()) {
            Ok(())
        } else {
            match find_job(conn, None, *job_id).await? {
                Some(job) => Err(not_owned(job.status)),
                None => Err(StoreError::NotFound { resource: "job" }),
            }
        });
    }
    Ok(results)
}

/// Dead-letters the tenant's running jobs whose lease expired with no attempts left, auditing each.
async fn reap_expired(conn: &mut SqliteConnection, tenant: &str, now: &str) -> StoreResult<()> {
    let rows = sqlx::query(concat!(
        "UPDATE jobs SET status = 'dead', lease_owner = NULL, lease_expires_at = NULL, finished_at = ?2, ",
        "updated_at = ?2, last_error_code = ?3, last_error_message = ?4 WHERE job_id IN (SELECT job_id FROM jobs ",
        "WHERE tenant_id = ?1 AND status = 'running' AND lease_expires_at <= ?2 AND attempts >= max_attempts ",
        "LIMIT ?5) RETURNING ",
        job_columns!()
    ))
    .bind(tenant)
    .bind(now)
    .bind(JobError::LEASE_EXPIRED)
    .bind(LEASE_EXPIRED_MESSAGE)
    .bind(REAP_BATCH)
    .fetch_all(&mut *conn)
    .await
    .map_err(err("job"))?;
    for row in &rows {
        let job = job_from_row(row)?;
        let tenant_id = job.tenant_id.clone();
        append_in_tx(conn, &tenant_id, dead_lettered_event(&job, None), frostbyte_core::now()).await?;
    }
    Ok(())
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, tenant: &TenantId, job: NewJob) -> StoreResult<Job> {
        let mut tx = self.begin_write().await?;
        let job = enqueue_in_tx(&mut tx, tenant, job).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(job)
    }

    async fn claim_batch(&self, opts: &ClaimOptions, now: DateTime<Utc>, max: usize) -> StoreResult<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now_s = ts(&now);
        let lease_until = ts(&super::after(now, opts.lease));
        let stages =
            stage_names(&opts.stages).map(|names| serde_json::to_string(&names).expect("a list of strings serialises"));
        let cap = i64::from(opts.per_tenant_cap.max(1));
        let mut tx = self.begin_write().await?;
        let ranked: Vec<(String, i64)> = sqlx::query_as(
            "SELECT tenant_id, live FROM ( \
               SELECT q.tenant_id, q.last_claimed_at, \
                 (SELECT COUNT(*) FROM jobs l WHERE l.tenant_id = q.tenant_id AND l.status = 'running' \
                    AND l.lease_expires_at > ?1) AS live, \
                 (SELECT MIN(j.run_after) FROM jobs j WHERE j.tenant_id = q.tenant_id \
                    AND ((j.status = 'queued' AND j.run_after <= ?1) \
                      OR (j.status = 'running' AND j.lease_expires_at <= ?1)) \
                    AND (?2 IS NULL OR j.stage IN (SELECT value FROM json_each(?2)))) AS oldest \
               FROM job_tenants q JOIN tenants t ON t.tenant_id = q.tenant_id \
               WHERE t.state = 'ACTIVE') \
             WHERE oldest IS NOT NULL AND live < ?3 \
             ORDER BY live, last_claimed_at IS NOT NULL, last_claimed_at, oldest, tenant_id \
             LIMIT ?4",
        )
        .bind(&now_s)
        .bind(stages.as_deref())
        .bind(cap)
        .bind(RANKED_TENANTS)
        .fetch_all(&mut *tx)
        .await
        .map_err(err("job"))?;

        for (tenant, live) in &ranked {
            reap_expired(&mut tx, tenant, &now_s).await?;
            let room = usize::try_from(cap - live).unwrap_or(0).min(max);
            let rows = sqlx::query(concat!(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?4, ",
                "lease_expires_at = ?5, first_attempt_at = COALESCE(first_attempt_at, ?2), last_attempt_at = ?2, ",
                "updated_at = ?2, ",
                "last_error_code = CASE WHEN status = 'running' THEN ?6 ELSE last_error_code END, ",
                "last_error_message = CASE WHEN status = 'running' THEN ?7 ELSE last_error_message END ",
                "WHERE job_id IN (SELECT job_id FROM jobs WHERE ",
                claimable!(),
                " AND stage = (SELECT stage FROM jobs WHERE ",
                claimable!(),
                " ORDER BY ",
                stage_rank!(),
                " DESC, run_after, job_id LIMIT 1) ORDER BY run_after, job_id LIMIT ?8) RETURNING ",
                job_columns!()
            ))
            .bind(tenant)
            .bind(&now_s)
            .bind(stages.as_deref())
            .bind(&opts.worker_id)
            .bind(&lease_until)
            .bind(JobError::LEASE_EXPIRED)
            .bind(LEASE_EXPIRED_MESSAGE)
            .bind(i64::try_from(room).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(err("job"))?;
            if !rows.is_empty() {
                let mut jobs = rows.iter().map(job_from_row).collect::<StoreResult<Vec<_>>>()?;
                jobs.sort_by_key(|j| (j.run_after, j.job_id));
                sqlx::query("UPDATE job_tenants SET last_claimed_at = ? WHERE tenant_id = ?")
                    .bind(&now_s)
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await
                    .map_err(err("job"))?;
                tx.commit().await.map_err(err("transaction"))?;
                return Ok(jobs);
            }
        }
        // Keep whatever was dead-lettered on the way.
        tx.commit().await.map_err(err("transaction"))?;
        Ok(Vec::new())
    }

    async fn heartbeat(&self, job_id: Uuid, worker_id: &str, lease: Duration, now: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?3, updated_at = ?4 \
             WHERE job_id = ?1 AND status = 'running' AND lease_owner = ?2",
        )
        .bind(job_id.to_string())
        .bind(worker_id)
        .bind(ts(&super::after(now, lease)))
        .bind(ts(&now))
        .execute(self.pool())
        .await
        .map_err(err("job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete(&self, job_id: Uuid, worker_id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
        let Some(job) = find_job(&mut tx, None, job_id).await? else {
            return Err(StoreError::NotFound { resource: "job" });
        };
        if job.status != JobStatus::Running || job.lease_owner.as_deref() != Some(worker_id) {
            return Err(not_owned(job.status));
        }
        let plan = plan_failure(job.stage, job.attempts, policy, now);
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = ?2, max_attempts = ?3, run_after = CASE WHEN ?4 THEN run_after ELSE ?5 END, ",
            "finished_at = CASE WHEN ?4 THEN ?6 ELSE NULL END, lease_owner = NULL, lease_expires_at = NULL, ",
            "last_error_code = ?7, last_error_message = ?8, updated_at = ?6 WHERE job_id = ?1 RETURNING ",
            job_columns!()
        ))
        .bind(job_id.to_string())
        .bind(if plan.dead { JobStatus::Dead.as_str() } else { JobStatus::Queued.as_str() })
        .bind(plan.max_attempts)
        .bind(plan.dead)
        .bind(ts(&plan.run_after))
        .bind(ts(&now))
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
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE tenant_id = ? AND status IN ('dead', 'abandoned')")
                .bind(tenant.as_str())
                .fetch_one(self.pool())
                .await
                .map_err(err("job"))?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE tenant_id = ? AND status IN ('dead', 'abandoned') ",
            "ORDER BY last_attempt_at DESC, job_id DESC LIMIT ? OFFSET ?"
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_after = ?3, lease_owner = NULL, ",
            "lease_expires_at = NULL, first_attempt_at = NULL, finished_at = NULL, updated_at = ?3 ",
            "WHERE tenant_id = ?1 AND job_id = ?2 AND status = 'dead' RETURNING ",
            job_columns!()
        ))
        .bind(tenant.as_str())
        .bind(job_id.to_string())
        .bind(ts(&now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("job"))?;
        let Some(row) = row else {
            return match find_job(&mut tx, Some(tenant), job_id).await? {
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE jobs SET status = 'abandoned', finished_at = ?3, updated_at = ?3 ",
            "WHERE tenant_id = ?1 AND job_id = ?2 AND status = 'dead' RETURNING ",
            job_columns!()
        ))
        .bind(tenant.as_str())
        .bind(job_id.to_string())
        .bind(ts(&now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("job"))?;
        let Some(row) = row else {
            return match find_job(&mut tx, Some(tenant), job_id).await? {
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
        find_job(&mut conn, Some(tenant), job_id).await
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

#[cfg(test)]
mod tests {
    use frostbyte_core::audit::NewAuditEvent;
    use frostbyte_core::ports::MetadataStore;
    use frostbyte_core::queue::Stage;
    use frostbyte_core::tenant::{Tenant, TenantConfig, TenantState, Tier};
    use serde_json::json;

    use super::*;

    async fn store_with_tenant() -> (SqliteStore, TenantId) {
        let store = SqliteStore::in_memory().await.unwrap();
        store.migrate().await.unwrap();
        let id = TenantId::parse("acme").unwrap();
        let now = frostbyte_core::now();
        let tenant = Tenant {
            tenant_id: id.clone(),
            tenant_name: "Acme".into(),
            contact_email: "ops@example.com".into(),
            tier: Tier::Standard,
            state: TenantState::Active,
            state_reason: None,
            config: TenantConfig::default(),
            config_version: 1,
            created_at: now,
            updated_at: now,
        };
        let event = NewAuditEvent::new("TENANT_CREATED", "test", "tenant", "acme", json!({}));
        store.create_tenant(&tenant, event).await.unwrap();
        (store, id)
    }

    #[tokio::test]
    async fn a_job_commits_or_rolls_back_with_its_transaction() {
        let (store, tenant) = store_with_tenant().await;
        let mut tx = store.begin_write().await.unwrap();
        let job = enqueue_in_tx(&mut tx, &tenant, NewJob::new(Stage::Parse, "doc-1", json!({}))).await.unwrap();
        tx.rollback().await.unwrap();
        assert!(store.get_job(&tenant, job.job_id).await.unwrap().is_none(), "rolled back with its cause");

        let mut tx = store.begin_write().await.unwrap();
        let job = enqueue_in_tx(&mut tx, &tenant, NewJob::new(Stage::Parse, "doc-1", json!({}))).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.get_job(&tenant, job.job_id).await.unwrap(), Some(job));
    }

    #[tokio::test]
    async fn completion_rolls_back_with_the_stage_output() {
        let (store, tenant) = store_with_tenant().await;
        store.enqueue(&tenant, NewJob::new(Stage::Parse, "doc-1", json!({}))).await.unwrap();
        let opts = ClaimOptions::new("w", Duration::from_secs(30), 1);
        let claimed = store.claim(&opts, frostbyte_core::now() + chrono::Duration::seconds(1)).await.unwrap().unwrap();
        let mut tx = store.begin_write().await.unwrap();
        complete_in_tx(&mut tx, claimed.job_id, "w", frostbyte_core::now()).await.unwrap();
        tx.rollback().await.unwrap();
        let job = store.get_job(&tenant, claimed.job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Running, "still leased: the worker may retry the commit");
    }
}
