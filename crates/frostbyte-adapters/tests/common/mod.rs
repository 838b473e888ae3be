//! The harness every store contract suite shares: one real store per test, SQLite in a temp dir always, and
//! PostgreSQL in a fresh schema (dropped afterwards) when `FROSTBYTE_TEST_POSTGRES_URL` is set, so tests run in
//! parallel against one database. With `FROSTBYTE_TEST_REQUIRE_POSTGRES` set (CI), a missing URL is a failure,
//! not a skip.
#![allow(dead_code)] // each suite uses a different part of the harness

use std::str::FromStr;
use std::sync::Arc;

use frostbyte_adapters::{PostgresStore, SqliteStore};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::documents::DocumentStore;
use frostbyte_core::index::ChunkIndex;
use frostbyte_core::ports::MetadataStore;
use frostbyte_core::queue::JobQueue;
use frostbyte_core::tenant::{Tenant, TenantConfig, TenantState, Tier};
use serde_json::json;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

/// Every port one metadata database serves.
pub trait Store: MetadataStore + JobQueue + ChunkIndex + DocumentStore {}
impl<T: MetadataStore + JobQueue + ChunkIndex + DocumentStore> Store for T {}

enum Backend {
    Sqlite { store: SqliteStore, _dir: tempfile::TempDir },
    Postgres { store: PostgresStore, admin: sqlx::PgPool, schema: String },
}

pub struct Harness {
    pub store: Arc<dyn Store>,
    backend: Backend,
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("frostbyte.db").display());
        let store = SqliteStore::connect(&url, 8).await.expect("open sqlite");
        store.migrate().await.expect("migrate sqlite");
        Harness { store: Arc::new(store.clone()), backend: Backend::Sqlite { store, _dir: dir } }
    }

    pub async fn postgres() -> Option<Harness> {
        let Ok(url) = std::env::var("FROSTBYTE_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("FROSTBYTE_TEST_REQUIRE_POSTGRES").is_none(),
                "FROSTBYTE_TEST_REQUIRE_POSTGRES is set but FROSTBYTE_TEST_POSTGRES_URL is not"
            );
            eprintln!("FROSTBYTE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL variant");
            return None;
        };
        let admin = sqlx::PgPool::connect(&url).await.expect("connect to FROSTBYTE_TEST_POSTGRES_URL");
        let schema = format!("fbt_{}", unique());
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.expect("create schema");
        let options =
            sqlx::postgres::PgConnectOptions::from_str(&url).expect("postgres url").options([("search_path", &schema)]);
        let store = PostgresStore::connect_with(options, 8).await.expect("open postgres");
        store.migrate().await.expect("migrate postgres");
        Some(Harness { store: Arc::new(store.clone()), backend: Backend::Postgres { store, admin, schema } })
    }

    pub async fn cleanup(self) {
        if let Backend::Postgres { store, admin, schema } = self.backend {
            store.pool().close().await;
            sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .expect("drop schema");
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    pub fn queue(&self) -> &dyn JobQueue {
        &*self.store
    }

    pub fn index(&self) -> &dyn ChunkIndex {
        &*self.store
    }

    /// Runs raw SQL past the ports, as an attacker with database access would.
    pub async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        match &self.backend {
            Backend::Sqlite { store, .. } => sqlx::raw_sql(sql).execute(store.pool()).await.map(|r| r.rows_affected()),
            Backend::Postgres { store, .. } => {
                sqlx::raw_sql(sql).execute(store.pool()).await.map(|r| r.rows_affected())
            }
        }
    }
}

/// Declares each listed `async fn name(h: &Harness)` as a test on SQLite and on PostgreSQL.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let h = $crate::common::Harness::sqlite().await;
                    super::$name(&h).await;
                    h.cleanup().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(h) = $crate::common::Harness::postgres().await else { return };
                    super::$name(&h).await;
                    h.cleanup().await;
                }
            )*
        }
    };
}

/// 12 random hex digits (the random tail of a v7 UUID), so tests sharing one database never collide.
pub fn unique() -> String {
    Uuid::now_v7().simple().to_string()[20..].to_owned()
}

/// A fresh tenant id starting with `prefix`.
pub fn tid(prefix: &str) -> TenantId {
    TenantId::parse(&format!("{prefix}-{}", unique())).expect("valid tenant id")
}

/// A tenant record in `state`, not yet stored.
pub fn tenant_record(id: &TenantId, state: TenantState) -> Tenant {
    let now = frostbyte_core::now();
    Tenant {
        tenant_id: id.clone(),
        tenant_name: format!("Tenant {id}"),
        contact_email: "ops@example.com".into(),
        tier: Tier::Standard,
        state,
        state_reason: None,
        config: TenantConfig::default(),
        config_version: 1,
        created_at: now,
        updated_at: now,
    }
}

/// Creates an ACTIVE tenant whose id starts with `prefix`.
pub async fn active_tenant(h: &Harness, prefix: &str) -> TenantId {
    let id = tid(prefix);
    let event = NewAuditEvent::new("TENANT_CREATED", "test", "tenant", id.as_str(), json!({"component": "test"}));
    h.store.create_tenant(&tenant_record(&id, TenantState::Active), event).await.expect("create tenant");
    id
}

impl Harness {
    /// The batch store ([`frostbyte_core::batch::BatchStore`]) on the same database.
    pub fn batches(&self) -> Arc<dyn frostbyte_core::batch::BatchStore> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }

    /// The store's change feed for derived search indexes.
    pub fn feed(&self) -> Arc<dyn frostbyte_core::search::IndexFeed> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }

    /// The same database as a signal store.
    pub fn signals(&self) -> &dyn frostbyte_core::signals::store::SignalStore {
        match &self.backend {
            Backend::Sqlite { store, .. } => store,
            Backend::Postgres { store, .. } => store,
        }
    }

    /// The same database as a shareable signal store (for the signal use-cases).
    pub fn signals_arc(&self) -> Arc<dyn frostbyte_core::signals::store::SignalStore> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }

    /// The store as a chunk index that can be shared.
    pub fn shared_index(&self) -> Arc<dyn ChunkIndex> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }
}

impl Harness {
    /// The pipeline-run store ([`frostbyte_core::pipelines::RunStore`]) on the same database.
    pub fn runs(&self) -> Arc<dyn frostbyte_core::pipelines::RunStore> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }

    /// The pipeline-schedule store on the same database.
    pub fn schedules(&self) -> Arc<dyn frostbyte_core::pipelines::ScheduleStore> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }
}

impl Harness {
    /// The shadow-vector store of reindex runs ([`frostbyte_core::reindex::ShadowIndex`]) on the same database.
    pub fn shadow(&self) -> Arc<dyn frostbyte_core::reindex::ShadowIndex> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }

    /// The `documents.sync` state store on the same database.
    pub fn sync(&self) -> Arc<dyn frostbyte_core::pipelines::SyncStore> {
        match &self.backend {
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
            Backend::Postgres { store, .. } => Arc::new(store.clone()),
        }
    }
}
