//! The embedded metadata store: SQLite through sqlx, in WAL mode, for `frostbyte serve` on one machine.
//!
//! Concurrency: readers never block (WAL). Every write runs in a `BEGIN IMMEDIATE` transaction, which takes the
//! database's write lock up front, so writers queue instead of failing with `SQLITE_BUSY` when a read lock
//! cannot be upgraded. Within one process writers first queue, in order, on an async gate ([`WriteTx`]), so they
//! wait exactly as long as the writer before them; SQLite's own busy handler, which sleeps in growing steps of up
//! to 100 ms, is left for writers in other processes. That same lock is what serialises audit appends: the chain head is read
//! and advanced inside it, so two appends can never link to the same predecessor.
//!
//! Append-only audit rows are enforced by the triggers `audit_events_no_update` and `audit_events_no_delete`
//! (see `migrations/sqlite/0001_init.sql`); tests drop them by name to simulate tampering.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::audit::{AuditEvent, AuditFilter, GENESIS_HASH, NewAuditEvent};
use frostbyte_core::auth::ApiKeyRecord;
use frostbyte_core::page::{Page, PageRequest};
use frostbyte_core::ports::MetadataStore;
use frostbyte_core::tenant::{Tenant, TenantConfig, TenantState};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{Arguments, AssertSqlSafe, Sqlite};
use uuid::Uuid;

use crate::codec::{self, column};
use crate::db_error::{self, Dialect};

/// How long a writer waits for the write lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The page size of a new database file. A chunk row (text, a 384-float vector and its metadata) is about 2.6 KB,
/// so SQLite's default 4 KiB page held one row and left the rest empty: with 8 KiB pages an ingest writes about a
/// tenth fewer bytes and runs about a tenth faster (docs/benchmarks.md). A database created with another page size
/// keeps it (a WAL database cannot change it in place).
pub const PAGE_SIZE: u32 = 8192;

macro_rules! tenant_columns {
    () => {
        "tenant_id, tenant_name, contact_email, tier, state, state_reason, config, config_version, created_at, \
         updated_at"
    };
}

macro_rules! key_columns {
    () => {
        "key_id, tenant_id, name, prefix, key_hash, scopes, created_at, expires_at, revoked_at"
    };
}

macro_rules! audit_columns {
    () => {
        "tenant_id, seq, event_id, event_type, timestamp, actor, resource_type, resource_id, details, prev_hash, \
         hash"
    };
}

/// The SQLite [`MetadataStore`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held for the life of every write transaction this process opens.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction (`BEGIN IMMEDIATE`) that holds this process's write gate until it commits or is dropped.
/// Dereferences to the connection, like [`sqlx::Transaction`].
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    #[cfg(test)]
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by a `sqlite://path`, `sqlite:path` or `sqlite::memory:`
    /// URL, with at most `max_connections` pooled connections. Does not run migrations; call
    /// [`MetadataStore::migrate`]. The parent directory must exist (the resolver creates it).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options =
            SqliteConnectOptions::from_str(url).map_err(|_| StoreError::Internal("invalid sqlite url".into()))?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::connect_with(options, max_connections, in_memory).await
    }

    /// Opens (creating if missing) the database file at `path`.
    pub async fn open(path: &Path, max_connections: u32) -> StoreResult<Self> {
        Self::connect_with(SqliteConnectOptions::new().filename(path), max_connections, false).await
    }

    /// A private in-memory database (one connection, so every query sees the same data). For tests and
    /// throwaway runs.
    pub async fn in_memory() -> StoreResult<Self> {
        Self::connect("sqlite::memory:", 1).await
    }

    async fn connect_with(options: SqliteConnectOptions, max_connections: u32, in_memory: bool) -> StoreResult<Self> {
        let options = options
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            // Statement journals and sorts in memory: a multi-row chunk insert's journal outgrows SQLite's
            // 64 KiB spill threshold, and on disk each one was a temporary file created and unlinked.
            .pragma("temp_store", "MEMORY")
            .busy_timeout(BUSY_TIMEOUT);
        let pool_options = if in_memory {
            // An in-memory database lives as long as its last connection, and shared-cache connections report
            // table locks as errors rather than waiting; one connection that never closes avoids both.
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(max_connections.max(1))
        };
        let pool =
            pool_options.acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await.map_err(err("database"))?;
        Ok(SqliteStore { pool, write_gate: Arc::new(tokio::sync::Mutex::new(())) })
    }

    /// The underlying pool. Public for tests and operator tooling that must reach past the port (for example
    /// to simulate tampering by dropping the append-only triggers); application code goes through the trait.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Begins a write transaction holding the database's write lock from the start, after the writers of this
    /// process that asked before it.
    pub(crate) async fn begin_write(&self) -> StoreResult<WriteTx> {
        let gate = self.write_gate.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(err("transaction"))?;
        Ok(WriteTx { tx, _gate: gate })
    }
}

// --- row mapping -----------------------------------------------------------------------------------------------

fn tenant_from_row(row: &SqliteRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "tenants.tenant_id")?,
        tenant_name: column(row, "tenant_name")?,
        contact_email: column(row, "contact_email")?,
        tier: codec::decode_tier(&column::<_, String>(row, "tier")?)?,
        state: codec::decode_state(&column::<_, String>(row, "state")?)?,
        state_reason: column(row, "state_reason")?,
        config: codec::decode_config(&column::<_, String>(row, "config")?)?,
        config_version: column(row, "config_version")?,
        created_at: codec::decode_timestamp(&column::<_, String>(row, "created_at")?, "tenants.created_at")?,
        updated_at: codec::decode_timestamp(&column::<_, String>(row, "updated_at")?, "tenants.updated_at")?,
    })
}

fn key_from_row(row: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        key_id: codec::decode_uuid(&column::<_, String>(row, "key_id")?, "api_keys.key_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "api_keys.tenant_id")?,
        name: column(row, "name")?,
        prefix: column(row, "prefix")?,
        key_hash: column(row, "key_hash")?,
        scopes: codec::decode_scopes(&column::<_, String>(row, "scopes")?)?,
        created_at: codec::decode_timestamp(&column::<_, String>(row, "created_at")?, "api_keys.created_at")?,
        expires_at: codec::decode_opt_timestamp(column(row, "expires_at")?, "api_keys.expires_at")?,
        revoked_at: codec::decode_opt_timestamp(column(row, "revoked_at")?, "api_keys.revoked_at")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        event_id: codec::decode_uuid(&column::<_, String>(row, "event_id")?, "audit_events.event_id")?,
        tenant_id: codec::decode_tenant_id(&column::<_, String>(row, "tenant_id")?, "audit_events.tenant_id")?,
        seq: column(row, "seq")?,
        event_type: column(row, "event_type")?,
        timestamp: codec::decode_timestamp(&column::<_, String>(row, "timestamp")?, "audit_events.timestamp")?,
        actor: column(row, "actor")?,
        resource_type: column(row, "resource_type")?,
        resource_id: column(row, "resource_id")?,
        details: codec::decode_details(&column::<_, String>(row, "details")?)?,
        prev_hash: column(row, "prev_hash")?,
        hash: column(row, "hash")?,
    })
}

// --- writes inside a transaction -------------------------------------------------------------------------------

/// Seals `event` onto the tenant's chain and advances the head. The caller holds the write lock
/// (`BEGIN IMMEDIATE`), which is what makes the read-then-advance safe.
pub(crate) async fn append_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    event: NewAuditEvent,
    now: DateTime<Utc>,
) -> StoreResult<AuditEvent> {
    let mut sealed = append_all_in_tx(conn, tenant, vec![event], now).await?;
    sealed.pop().ok_or_else(|| StoreError::Internal("an appended audit event went missing".into()))
}

/// Audit rows per INSERT statement: 11 parameters each, well inside SQLite's limit on bound parameters.
const AUDIT_INSERT_ROWS: usize = 64;

/// Seals `events`, in order, onto the tenant's chain and advances the head once: one read of the head, one
/// INSERT per [`AUDIT_INSERT_ROWS`] events and one write of the head, however many events there are. The caller
/// holds the write lock (`BEGIN IMMEDIATE`).
pub(crate) async fn append_all_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    events: Vec<NewAuditEvent>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<AuditEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("audit head"))?;
    let (seq, prev_hash) = match head {
        Some(row) => (column::<_, i64>(&row, "seq")?, column::<_, String>(&row, "hash")?),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let sealed = NewAuditEvent::seal_all(events, tenant, seq, &prev_hash, now);
    let Some(head) = sealed.last() else { return Ok(sealed) };
    let (seq, prev_hash) = (head.seq, head.hash.clone());
    for rows in sealed.chunks(AUDIT_INSERT_ROWS) {
        let mut insert =
            sqlx::QueryBuilder::<Sqlite>::new(concat!("INSERT INTO audit_events (", audit_columns!(), ") "));
        insert.push_values(rows, |mut b, e| {
            b.push_bind(e.tenant_id.as_str().to_owned())
                .push_bind(e.seq)
                .push_bind(e.event_id.to_string())
                .push_bind(e.event_type.clone())
                .push_bind(codec::encode_timestamp(&e.timestamp))
                .push_bind(e.actor.clone())
                .push_bind(e.resource_type.clone())
                .push_bind(e.resource_id.clone())
                .push_bind(codec::encode_details(&e.details))
                .push_bind(e.prev_hash.clone())
                .push_bind(e.hash.clone());
        });
        // One statement per row count: not kept prepared (see `index::sqlite::swap_chunks_in_tx`).
        insert.build().persistent(false).execute(&mut *conn).await.map_err(err("audit event"))?;
    }
    sqlx::query(
        "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?, ?, ?) \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(tenant.as_str())
    .bind(seq)
    .bind(&prev_hash)
    .execute(&mut *conn)
    .await
    .map_err(err("audit head"))?;
    Ok(sealed)
}

async fn tenant_exists(conn: &mut SqliteConnection, tenant: &TenantId) -> StoreResult<bool> {
    let row = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = ?")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("tenant"))?;
    Ok(row.is_some())
}

/// Builds the `WHERE` clause for an audit listing from fixed fragments; every value is a bind parameter.
fn audit_where(tenant: &TenantId, filter: &AuditFilter) -> StoreResult<(String, SqliteArguments)> {
    let mut sql = String::from(" WHERE tenant_id = ?");
    let mut args = SqliteArguments::default();
    let bind_err = |_| StoreError::Internal("binding an audit filter failed".into());
    args.add(tenant.as_str().to_owned()).map_err(bind_err)?;
    if let Some(t) = &filter.event_type {
        sql.push_str(" AND event_type = ?");
        args.add(t.clone()).map_err(bind_err)?;
    }
    if let Some(r) = &filter.resource_id {
        sql.push_str(" AND resource_id = ?");
        args.add(r.clone()).map_err(bind_err)?;
    }
    if let Some(start) = &filter.start {
        sql.push_str(" AND timestamp >= ?");
        args.add(codec::encode_timestamp(&frostbyte_core::truncate_micros(*start))).map_err(bind_err)?;
    }
    if let Some(end) = &filter.end {
        sql.push_str(" AND timestamp <= ?");
        args.add(codec::encode_timestamp(&frostbyte_core::truncate_micros(*end))).map_err(bind_err)?;
    }
    Ok((sql, args))
}

#[async_trait]
impl MetadataStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        crate::migrations::sqlite().run(&self.pool).await.map_err(|e| db_error::map_migrate(Dialect::Sqlite, e))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(err("database"))?;
        Ok(())
    }

    // --- tenants ---------------------------------------------------------------------------------------------

    async fn create_tenant(&self, tenant: &Tenant, audit: NewAuditEvent) -> StoreResult<()> {
        let config = codec::encode_config(&tenant.config)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(concat!("INSERT INTO tenants (", tenant_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(tenant.tenant_id.as_str())
            .bind(&tenant.tenant_name)
            .bind(&tenant.contact_email)
            .bind(tenant.tier.as_str())
            .bind(tenant.state.as_str())
            .bind(tenant.state_reason.as_deref())
            .bind(config)
            .bind(tenant.config_version)
            .bind(codec::encode_timestamp(&tenant.created_at))
            .bind(codec::encode_timestamp(&tenant.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(err("tenant"))?;
        append_in_tx(&mut tx, &tenant.tenant_id, audit, frostbyte_core::now()).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn get_tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
        sqlx::query(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE tenant_id = ?"))
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
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE (?1 IS NULL OR state = ?1)")
            .bind(state)
            .fetch_one(&self.pool)
            .await
            .map_err(err("tenant"))?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM tenants WHERE (?1 IS NULL OR state = ?1) ORDER BY created_at, tenant_id LIMIT ?2 OFFSET ?3"
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE tenants SET config = ?, config_version = config_version + 1, updated_at = ? ",
            "WHERE tenant_id = ? AND config_version = ? RETURNING ",
            tenant_columns!()
        ))
        .bind(encoded)
        .bind(codec::encode_timestamp(&now))
        .bind(tenant.as_str())
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("tenant"))?;
        let Some(row) = row else {
            let current: Option<i64> = sqlx::query_scalar("SELECT config_version FROM tenants WHERE tenant_id = ?")
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE tenants SET state = ?, state_reason = ?, updated_at = ? WHERE tenant_id = ? AND state = ? ",
            "RETURNING ",
            tenant_columns!()
        ))
        .bind(to.as_str())
        .bind(reason)
        .bind(codec::encode_timestamp(&now))
        .bind(tenant.as_str())
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("tenant"))?;
        let Some(row) = row else {
            let current: Option<String> = sqlx::query_scalar("SELECT state FROM tenants WHERE tenant_id = ?")
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
        let mut tx = self.begin_write().await?;
        if !tenant_exists(&mut tx, tenant).await? {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        sqlx::query(concat!("INSERT INTO api_keys (", key_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(key.key_id.to_string())
            .bind(tenant.as_str())
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.key_hash)
            .bind(codec::encode_scopes(&key.scopes))
            .bind(codec::encode_timestamp(&key.created_at))
            .bind(key.expires_at.as_ref().map(codec::encode_timestamp))
            .bind(key.revoked_at.as_ref().map(codec::encode_timestamp))
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
            " FROM api_keys WHERE tenant_id = ? ORDER BY created_at, key_id"
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
        sqlx::query(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE tenant_id = ? AND key_id = ?"))
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
        sqlx::query(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE key_hash = ?"))
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND key_id = ? AND revoked_at IS NULL RETURNING ",
            key_columns!()
        ))
        .bind(codec::encode_timestamp(&now))
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
        let existing =
            sqlx::query(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE tenant_id = ? AND key_id = ?"))
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
        let mut tx = self.begin_write().await?;
        if !tenant_exists(&mut tx, tenant).await? {
            return Err(StoreError::NotFound { resource: "tenant" });
        }
        let revoked = sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL")
            .bind(codec::encode_timestamp(&now))
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
        let mut tx = self.begin_write().await?;
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
        let (clause, args) = audit_where(tenant, filter)?;
        let count_sql = format!("SELECT COUNT(*) FROM audit_events{clause}");
        let total: i64 = sqlx::query_scalar_with(AssertSqlSafe(count_sql), args)
            .fetch_one(&self.pool)
            .await
            .map_err(err("audit event"))?;

        let (clause, mut args) = audit_where(tenant, filter)?;
        let bind_err = |_| StoreError::Internal("binding audit paging failed".into());
        args.add(i64::from(page.limit)).map_err(bind_err)?;
        args.add(page.offset()).map_err(bind_err)?;
        let list_sql = format!(
            concat!("SELECT ", audit_columns!(), " FROM audit_events{} ORDER BY seq DESC LIMIT ? OFFSET ?"),
            clause
        );
        let rows =
            sqlx::query_with(AssertSqlSafe(list_sql), args).fetch_all(&self.pool).await.map_err(err("audit event"))?;
        let items = rows.iter().map(audit_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page { items, total: u64::try_from(total).unwrap_or(0) })
    }

    async fn get_audit(&self, tenant: &TenantId, event_id: Uuid) -> StoreResult<Option<AuditEvent>> {
        sqlx::query(concat!("SELECT ", audit_columns!(), " FROM audit_events WHERE tenant_id = ? AND event_id = ?"))
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
            " FROM audit_events WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?"
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
        let ids: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM audit_heads ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await
            .map_err(err("audit head"))?;
        ids.iter().map(|id| codec::decode_tenant_id(id, "audit_heads.tenant_id")).collect()
    }
}
