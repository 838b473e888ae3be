//! The scale-out metadata store: PostgreSQL through sqlx, shared by every API and worker process.
//!
//! Concurrency: compare-and-set updates (`UPDATE ... WHERE state = $from RETURNING ...`) decide races between
//! writers of one tenant row. Audit appends serialise per tenant on a row lock of the tenant's chain head
//! (`SELECT ... FOR UPDATE` on `audit_heads`), so two appends never link to the same predecessor while other
//! tenants append in parallel. Every transaction takes locks in the same order (the changed row first, the
//! chain head last), so the two kinds of lock cannot deadlock each other.
//!
//! Append-only audit rows are enforced by the triggers `audit_events_no_update`, `audit_events_no_delete` and
//! `audit_events_no_truncate` (see `migrations/postgres/0001_init.sql`); tests drop them by name to simulate
//! tampering.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::{AuditEvent, AuditFilter, GENESIS_HASH, NewAuditEvent};
use frostbyte_core::auth::ApiKeyRecord;
use frostbyte_core::page::{Page, PageRequest};
use frostbyte_core::ports::MetadataStore;
use frostbyte_core::tenant::{Tenant, TenantConfig, TenantState};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Arguments, AssertSqlSafe, Postgres};
use uuid::Uuid;

use crate::codec::{self, column};
use crate::db_error::{self, Dialect};

/// How long a caller waits for a pooled connection (and a new connection for its handshake).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

macro_rules! tenant_columns {
    () => {
        "tenant_id, tenant_name, contact_email, tier, state, state_reason, config, config_version, created_at, \
         updated_at"
    };
}

/// Key columns as selected: UUIDs come back as text (the workspace builds sqlx without its `uuid` feature).
macro_rules! key_columns {
    () => {
        "key_id::text AS key_id, tenant_id, name, prefix, key_hash, scopes, created_at, expires_at, revoked_at"
    };
}

macro_rules! audit_columns {
    () => {
        "tenant_id, seq, event_id::text AS event_id, event_type, \"timestamp\", actor, resource_type, resource_id, \
         details, prev_hash, hash"
    };
}

/// The PostgreSQL [`MetadataStore`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Postgres, resource, e)
}

impl PostgresStore {
    /// Connects to a `postgres://` or `postgresql://` URL with at most `max_connections` pooled connections.
    /// Does not run migrations; call [`MetadataStore::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        // The parse error can quote the URL, password included: keep it out of the message.
        let options =
            PgConnectOptions::from_str(url).map_err(|_| StoreError::Internal("invalid postgres url".into()))?;
        Self::connect_with(options, max_connections).await
    }

    /// Connects with explicit options (tests use this to give each run its own `search_path`).
    pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(err("database"))?;
        Ok(PostgresStore { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        PostgresStore { pool }
    }

    /// The underlying pool. Public for tests and operator tooling that must reach past the port (for example
    /// to simulate tampering by dropping the append-only triggers); application code goes through the trait.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(err("transaction"))
    }
}

// --- row mapping -----------------------------------------------------------------------------------------------

fn tenant_from_row(row: &PgRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "tenants.tenant_id")?,
        tenant_name: column(row, "tenant_name")?,
        contact_email: column(row, "contact_email")?,
        tier: codec::decode_tier(&column::<_, String>(row, "tier")?)?,
        state: codec::decode_state(&column::<_, String>(row, "state")?)?,
        state_reason: column(row, "state_reason")?,
        config: codec::decode_config(&column::<_, String>(row, "config")?)?,
        config_version: column(row, "config_version")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

fn key_from_row(row: &PgRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        key_id: codec::decode_uuid(&column::<_, String>(row, "key_id")?, "api_keys.key_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "api_keys.tenant_id")?,
        name: column(row, "name")?,
        prefix: column(row, "prefix")?,
        key_hash: column(row, "key_hash")?,
        scopes: codec::decode_scopes(&column::<_, String>(row, "scopes")?)?,
        created_at: column(row, "created_at")?,
        expires_at: column(row, "expires_at")?,
        revoked_at: column(row, "revoked_at")?,
    })
}

fn audit_from_row(row: &PgRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        event_id: codec::decode_uuid(&column::<_, String>(row, "event_id")?, "audit_events.event_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "audit_events.tenant_id")?,
        seq: column(row, "seq")?,
        event_type: column(row, "event_type")?,
        timestamp: column(row, "timestamp")?,
        actor: column(row, "actor")?,
        resource_type: column(row, "resource_type")?,
        resource_id: column(row, "resource_id")?,
        details: codec::decode_details(&column::<_, String>(row, "details")?)?,
        prev_hash: column(row, "prev_hash")?,
        hash: column(row, "hash")?,
    })
}

// --- writes inside a transaction -------------------------------------------------------------------------------

/// Locks the tenant's chain head (creating a seq-0 placeholder for a tenant's first event) and returns it.
async fn lock_head(conn: &mut PgConnection, tenant: &TenantId) -> StoreResult<(i64, String)> {
    for _ in 0..2 {
        let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(err("audit head"))?;
        if let Some(row) = head {
            return Ok((column(&row, "seq")?, column(&row, "hash")?));
        }
        // A concurrent first append makes this wait for it to commit, then do nothing; the next SELECT then
        // finds (and waits for) its row.
        sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING")
            .bind(tenant.as_str())
            .bind(GENESIS_HASH)
            .execute(&mut *conn)
            .await
            .map_err(err("audit head"))?;
    }
    Err(StoreError::Internal("audit chain head could not be created".into()))
}

/// Seals `event` onto the tenant's chain and advances the head, inside the caller's transaction.
pub(crate) async fn append_in_tx(
    conn: &mut PgConnection,
    tenant: &TenantId,
    event: NewAuditEvent,
    now: DateTime<Utc>,
) -> StoreResult<AuditEvent> {
    let (seq, prev_hash) = lock_head(conn, tenant).await?;
    let sealed = event.seal(tenant, seq + 1, &prev_hash, now);
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, seq, event_id, event_type, \"timestamp\", actor, resource_type, \
         resource_id, details, prev_hash, hash) VALUES ($1, $2, $3::uuid, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(sealed.tenant_id.as_str())
    .bind(sealed.seq)
    .bind(sealed.event_id.to_string())
    .bind(&sealed.event_type)
    .bind(sealed.timestamp)
    .bind(&sealed.actor)
    .bind(&sealed.resource_type)
    .bind(&sealed.resource_id)
    .bind(codec::encode_details(&sealed.details))
    .bind(&sealed.prev_hash)
    .bind(&sealed.hash)
    .execute(&mut *conn)
    .await
    .map_err(err("audit event"))?;
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .bind(sealed.seq)
        .bind(&sealed.hash)
        .execute(&mut *conn)
        .await
        .map_err(err("audit head"))?;
    Ok(sealed)
}

/// Events per multi-row INSERT of [`append_all_in_tx`]: 11 parameters each, far below PostgreSQL's limit.
const AUDIT_INSERT_ROWS: usize = 64;

/// Seals `events`, in order, onto the tenant's chain and advances the head once (migration 0017): one locked read
/// of the head, one INSERT per [`AUDIT_INSERT_ROWS`] events and one write of the head.
pub(crate) async fn append_all_in_tx(
    conn: &mut PgConnection,
    tenant: &TenantId,
    events: Vec<NewAuditEvent>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<AuditEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let (seq, prev_hash) = lock_head(conn, tenant).await?;
    let sealed = NewAuditEvent::seal_all(events, tenant, seq, &prev_hash, now);
    let Some(head) = sealed.last() else { return Ok(sealed) };
    let (seq, prev_hash) = (head.seq, head.hash.clone());
    for rows in sealed.chunks(AUDIT_INSERT_ROWS) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO audit_events (tenant_id, seq, event_id, event_type, \"timestamp\", actor, resource_type, \
             resource_id, details, prev_hash, hash) ",
        );
        insert.push_values(rows, |mut b, e| {
            b.push_bind(e.tenant_id.as_str().to_owned())
                .push_bind(e.seq)
                .push_bind(e.event_id.to_string())
                .push_unseparated("::uuid")
                .push_bind(e.event_type.clone())
                .push_bind(e.timestamp)
                .push_bind(e.actor.clone())
                .push_bind(e.resource_type.clone())
                .push_bind(e.resource_id.clone())
                .push_bind(codec::encode_details(&e.details))
                .push_bind(e.prev_hash.clone())
                .push_bind(e.hash.clone());
        });
        insert.build().persistent(false).execute(&mut *conn).await.map_err(err("audit event"))?;
    }
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut *conn)
        .await
        .map_err(err("audit head"))?;
    Ok(sealed)
}

/// Whether the tenant exists, taking a share lock on its row so it cannot change state underneath.
async fn tenant_exists(conn: &mut PgConnection, tenant: &TenantId) -> StoreResult<bool> {
    let row = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR KEY SHARE")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("tenant"))?;
    Ok(row.is_some())
}

/// Builds the `WHERE` clause for an audit listing from fixed fragments; every value is a bind parameter.
/// Returns the clause, its arguments and the number of parameters used.
fn audit_where(tenant: &TenantId, filter: &AuditFilter) -> StoreResult<(String, PgArguments, usize)> {
    let mut sql = String::from(" WHERE tenant_id = $1");
    let mut args = PgArguments::default();
    let bind_err = |_| StoreError::Internal("binding an audit filter failed".into());
    args.add(tenant.as_str().to_owned()).map_err(bind_err)?;
    let mut n = 1;
    if let Some(t) = &filter.event_type {
        n += 1;
        sql.push_str(&format!(" AND event_type = ${n}"));
        args.add(t.clone()).map_err(bind_err)?;
    }
    if let Some(r) = &filter.resource_id {
        n += 1;
        sql.push_str(&format!(" AND resource_id = ${n}"));
        args.add(r.clone()).map_err(bind_err)?;
    }
    if let Some(start) = filter.start {
        n += 1;
        sql.push_str(&format!(" AND \"timestamp\" >= ${n}"));
        args.add(frostbyte_core::truncate_micros(start)).map_err(bind_err)?;
    }
    if let Some(end) = filter.end {
        n += 1;
        sql.push_str(&format!(" AND \"timestamp\" <= ${n}"));
        args.add(frostbyte_core::truncate_micros(end)).map_err(bind_err)?;
    }
    Ok((sql, args, n))
}

#[async_trait]
impl MetadataStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        crate::migrations::postgres().run(&self.pool).await.map_err(|e| db_error::map_migrate(Dialect::Postgres, e))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("database"))?;
        Ok(())
    }

    // --- tenants ---------------------------------------------------------------------------------------------

    async fn create_tenant(&self, tenant: &Tenant, audit: NewAuditEvent) -> StoreResult<()> {
        let config = codec::encode_config(&tenant.config)?;
        let mut tx = self.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO tenants (",
            tenant_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(tenant.tenant_id.as_str())
        .bind(&tenant.tenant_name)
        .bind(&tenant.contact_email)
        .bind(tenant.tier.as_str())
        .bind(tenant.state.as_str())
        .bind(tenant.state_reason.as_deref())
        .bind(config)
        .bind(tenant.config_version)
        .bind(frostbyte_core::truncate_micros(tenant.created_at))
        .bind(frostbyte_core::truncate_micros(tenant.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(err("tenant"))?;
        append_in_tx(&mut tx, &tenant.tenant_id, audit, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn get_tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
        sqlx::query(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE tenant_id = $1"))
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(err("tenant"))?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn list_tenants(&self, state: Option<TenantState>, page: PageRequest) -> StoreResult<Page<Tenant>> {
        let state = state.map(TenantState::as_str);
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE ($1::text IS NULL OR state = $1)")
            .bind(state)
            .fetch_one(&self.pool)
            .await
            .map_err(err("tenant"))?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM tenants WHERE ($1::text IS NULL OR state = $1) ORDER BY created_at, tenant_id LIMIT $2 OFFSET $3"
        ))
        .bind(state)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(err("tenant"))?;
        let items = rows.iter().map(tenant_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items, total: u64::try_from(total).unwrap_or(0) })
    }

    async fn update_tenant_config(
        &self,
        tenant: &TenantId,
        expected_version: i64,
        config: &TenantConfig,
        audit: NewAuditEvent,
    ) -> StoreResult<Tenant> {
        let encoded = codec::encode_config(config)?;
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE tenants SET config = $1, config_version = config_version + 1, updated_at = $2 ",
            "WHERE tenant_id = $3 AND config_version = $4 RETURNING ",
            tenant_columns!()
        ))
        .bind(encoded)
        .bind(now)
        .bind(tenant.as_str())
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("tenant"))?;
        let Some(row) = row else {
            let current: Option<i64> = sqlx::query_scalar("SELECT config_version FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(err("tenant"))?;
            return Err(match current {
                None => StoreError::NotFound { resource: "tenant" },
                Some(v) => StoreError::Conflict(format!("config_version is {v}, expected {expected_version}")),
            });
        };
        let updated = tenant_from_row(&row)?;
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(updated)
    }

    async fn transition_tenant(
        &self,
        tenant: &TenantId,
        from: TenantState,
        to: TenantState,
        reason: Option<&str>,
        audit: NewAuditEvent,
    ) -> StoreResult<Tenant> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE tenants SET state = $1, state_reason = $2, updated_at = $3 WHERE tenant_id = $4 AND state = $5 ",
            "RETURNING ",
            tenant_columns!()
        ))
        .bind(to.as_str())
        .bind(reason)
        .bind(now)
        .bind(tenant.as_str())
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("tenant"))?;
        let Some(row) = row else {
            let current: Option<String> = sqlx::query_scalar("SELECT state FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(err("tenant"))?;
            return Err(match current {
                None => StoreError::NotFound { resource: "tenant" },
                Some(s) => StoreError::Conflict(format!(
                    "tenant is {}, not {from}",
                    codec::decode_state(&s).map(TenantState::as_str).unwrap_or("in an unknown state")
                )),
            });
        };
        let updated = tenant_from_row(&row)?;
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(updated)
    }

    // --- API keys --------------------------------------------------------------------------------------------

    async fn create_api_key(&self, tenant: &TenantId, key: &ApiKeyRecord, audit: NewAuditEvent) -> StoreResult<()> {
        if &key.tenant_id != tenant {
            return Err(StoreError::Internal("api key record names a different tenant".into()));
        }
        let mut tx = self.begin().await?;
        if !tenant_exists(&mut tx, tenant).await? {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        sqlx::query(
            "INSERT INTO api_keys (key_id, tenant_id, name, prefix, key_hash, scopes, created_at, expires_at, \
             revoked_at) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(key.key_id.to_string())
        .bind(tenant.as_str())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(codec::encode_scopes(&key.scopes))
        .bind(frostbyte_core::truncate_micros(key.created_at))
        .bind(key.expires_at.map(frostbyte_core::truncate_micros))
        .bind(key.revoked_at.map(frostbyte_core::truncate_micros))
        .execute(&mut *tx)
        .await
        .map_err(err("api key"))?;
        append_in_tx(&mut tx, tenant, audit, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, key_id"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(err("api key"))?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn get_api_key(&self, tenant: &TenantId, key_id: Uuid) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE tenant_id = $1 AND key_id = $2::uuid"))
            .bind(tenant.as_str())
            .bind(key_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(err("api key"))?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn find_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE key_hash = $1"))
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("api key"))?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    /// Revoking an already revoked key returns it unchanged and appends nothing: the audit log records the
    /// revocation once, when it happened.
    async fn revoke_api_key(&self, tenant: &TenantId, key_id: Uuid, audit: NewAuditEvent) -> StoreResult<ApiKeyRecord> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND key_id = $3::uuid AND revoked_at IS NULL ",
            "RETURNING ",
            key_columns!()
        ))
        .bind(now)
        .bind(tenant.as_str())
        .bind(key_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("api key"))?;
        if let Some(row) = row {
            let revoked = key_from_row(&row)?;
            append_in_tx(&mut tx, tenant, audit, now).await?;
            tx.commit().await.map_err(err("transaction"))?;
            return Ok(revoked);
        }
        let existing = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE tenant_id = $1 AND key_id = $2::uuid"
        ))
        .bind(tenant.as_str())
        .bind(key_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("api key"))?;
        match existing {
            Some(row) => key_from_row(&row),
            None => Err(StoreError::NotFound { resource: "api key" }),
        }
    }

    /// Appends the event even when no key was live, so a deprovisioning run always records this step.
    async fn revoke_all_api_keys(&self, tenant: &TenantId, audit: NewAuditEvent) -> StoreResult<u64> {
        let now = frostbyte_core::now();
        let mut tx = self.begin().await?;
        if !tenant_exists(&mut tx, tenant).await? {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        let revoked = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(err("api key"))?
            .rows_affected();
        append_in_tx(&mut tx, tenant, audit, now).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(revoked)
    }

    // --- audit -----------------------------------------------------------------------------------------------

    async fn append_audit(&self, tenant: &TenantId, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        let mut tx = self.begin().await?;
        let sealed = append_in_tx(&mut tx, tenant, event, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(sealed)
    }

    async fn list_audit(
        &self,
        tenant: &TenantId,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        let (clause, args, _) = audit_where(tenant, filter)?;
        let total: i64 =
            sqlx::query_scalar_with(AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_events{clause}")), args)
                .fetch_one(&self.pool)
                .await
                .map_err(err("audit event"))?;

        let (clause, mut args, n) = audit_where(tenant, filter)?;
        let bind_err = |_| StoreError::Internal("binding audit paging failed".into());
        args.add(i64::from(page.limit)).map_err(bind_err)?;
        args.add(page.offset()).map_err(bind_err)?;
        let sql = format!(
            concat!("SELECT ", audit_columns!(), " FROM audit_events{} ORDER BY seq DESC LIMIT ${} OFFSET ${}"),
            clause,
            n + 1,
            n + 2
        );
        let rows =
            sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(&self.pool).await.map_err(err("audit event"))?;
        let items = rows.iter().map(audit_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items, total: u64::try_from(total).unwrap_or(0) })
    }

    async fn get_audit(&self, tenant: &TenantId, event_id: Uuid) -> StoreResult<Option<AuditEvent>> {
        sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_events WHERE tenant_id = $1 AND event_id = $2::uuid"
        ))
        .bind(tenant.as_str())
        .bind(event_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(err("audit event"))?
        .as_ref()
        .map(audit_from_row)
        .transpose()
    }

    async fn audit_after(&self, tenant: &TenantId, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err("audit event"))?
        .iter()
        .map(audit_from_row)
        .collect()
    }

    async fn audit_tenants(&self) -> StoreResult<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM audit_heads WHERE seq > 0 ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await
            .map_err(err("audit head"))?;
        ids.iter().map(|id| codec::decode_tenant_id(id, "audit_heads.tenant_id")).collect()
    }
}
