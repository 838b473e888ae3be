//! The resolver: URLs in, ports out, with helpful errors for everything else.

use frostbyte_adapters::resolve::{self, ResolveError};
use frostbyte_adapters::sqlite::SqliteStore;
use frostbyte_core::TenantId;
use frostbyte_core::ports::MetadataStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};

#[tokio::test]
async fn sqlite_url_creates_the_directory_and_does_not_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/deeper/frostbyte.db");
    let store = resolve::metadata_store(&format!("sqlite://{}", db.display()), 4).await.expect("resolve sqlite");
    assert_eq!(store.backend(), "sqlite");
    assert!(db.exists(), "database file created");
    store.ping().await.unwrap();
    let id = TenantId::parse("acme").unwrap();
    assert!(store.get_tenant(&id).await.is_err(), "no tables before the caller migrates");
    store.migrate().await.unwrap();
    assert!(store.get_tenant(&id).await.unwrap().is_none());
}

/// The page size a database file was created with, from its header (bytes 16–17, big-endian).
fn page_size_of(path: &std::path::Path) -> u32 {
    let header = std::fs::read(path).unwrap();
    u32::from(u16::from_be_bytes([header[16], header[17]]))
}

#[tokio::test]
async fn new_sqlite_databases_get_large_pages_and_old_ones_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    let store = SqliteStore::open(&fresh, 2).await.unwrap();
    store.migrate().await.unwrap();
    store.pool().close().await;
    assert_eq!(page_size_of(&fresh), frostbyte_adapters::sqlite::PAGE_SIZE);

    // A database written with SQLite's default 4 KiB pages, in WAL mode, opens and migrates as it is.
    let old = dir.path().join("old.db");
    let options =
        SqliteConnectOptions::new().filename(&old).create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
    let mut conn = options.connect().await.unwrap();
    sqlx::query("CREATE TABLE before_upgrade (x INTEGER)").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(page_size_of(&old), 4096);
    let store = SqliteStore::open(&old, 2).await.unwrap();
    store.migrate().await.unwrap();
    let id = TenantId::parse("acme").unwrap();
    assert!(store.get_tenant(&id).await.unwrap().is_none());
    store.pool().close().await;
    assert_eq!(page_size_of(&old), 4096);
}

#[tokio::test]
async fn sqlite_keeps_statement_journals_and_sorts_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("f.db"), 2).await.unwrap();
    // Every pooled connection: 2 is MEMORY.
    let (a, b) = (store.pool().acquire().await.unwrap(), store.pool().acquire().await.unwrap());
    for mut conn in [a, b] {
        let mode: i64 = sqlx::query_scalar("PRAGMA temp_store").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(mode, 2);
    }
}

#[tokio::test]
async fn sqlite_memory_works() {
    let store = resolve::metadata_store("sqlite::memory:", 4).await.expect("resolve sqlite::memory:");
    store.migrate().await.unwrap();
    assert!(store.audit_tenants().await.unwrap().is_empty());
}

#[tokio::test]
async fn postgres_url_resolves_when_configured() {
    let Ok(url) = std::env::var("FROSTBYTE_TEST_POSTGRES_URL") else {
        eprintln!("FROSTBYTE_TEST_POSTGRES_URL is not set: skipping");
        return;
    };
    let store = resolve::metadata_store(&url, 2).await.expect("resolve postgres");
    assert_eq!(store.backend(), "postgres");
    store.ping().await.unwrap();
}

#[tokio::test]
async fn unreachable_postgres_is_an_error_without_the_password() {
    let err = match resolve::metadata_store("postgres://fb:hunter2@127.0.0.1:1/none?connect_timeout=1", 1).await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e,
    };
    assert!(matches!(err, ResolveError::Metadata { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn unknown_metadata_scheme_names_the_supported_ones() {
    let err = match resolve::metadata_store("mysql://localhost/db", 1).await {
        Ok(_) => panic!("mysql is not supported"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("mysql") && msg.contains("sqlite://") && msg.contains("postgres://"), "{msg}");
    assert!(resolve::metadata_store("just-a-path.db", 1).await.is_err());
}

#[tokio::test]
async fn file_url_creates_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("a/b/blobs");
    let store = resolve::blob_store(&format!("file://{}", blobs.display())).expect("resolve file");
    assert_eq!(store.scheme(), "file");
    assert!(blobs.is_dir());
    let t = TenantId::parse("acme").unwrap();
    store.put(&t, "raw/x", bytes::Bytes::from_static(b"x")).await.unwrap();
    assert!(blobs.join("tenants/acme/raw/x").is_file(), "layout: tenants/{{tenant}}/{{key}}");
}

#[test]
fn memory_url_and_unknown_schemes() {
    assert_eq!(resolve::blob_store("memory://").unwrap().scheme(), "memory");
    let msg = resolve::blob_store("gs://bucket").err().expect("gs is not supported").to_string();
    assert!(msg.contains("gs") && msg.contains("file://") && msg.contains("s3://"), "{msg}");
    assert!(resolve::blob_store("file://relative/dir").is_err(), "file:// needs an absolute path");
}

#[cfg(feature = "s3")]
#[test]
fn s3_url_builds_a_client() {
    let store: std::sync::Arc<dyn frostbyte_core::ports::BlobStore> =
        resolve::blob_store("s3://bucket/some/prefix").expect("resolve s3");
    assert_eq!(store.scheme(), "s3");
    assert!(resolve::blob_store("s3:///no-bucket").is_err());
}

#[cfg(not(feature = "s3"))]
#[test]
fn s3_without_the_feature_says_how_to_get_it() {
    let msg = resolve::blob_store("s3://bucket").err().expect("compiled out").to_string();
    assert!(msg.contains("rebuild with --features s3"), "{msg}");
}
