//! The schema migrations of both SQL stores, embedded in the binary.
//!
//! The SQL lives in `migrations/{sqlite,postgres}/NNNN_description.sql` and is compiled in with `include_str!`.
//! (`sqlx::migrate!` would do the same but needs sqlx's `macros` feature, which the workspace does not enable;
//! the resulting `_sqlx_migrations` table and checksums are identical.) To add a migration, add the file and a
//! line below; a test checks that the two lists match the directories.

use std::sync::LazyLock;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// `(version, description, sql)` for SQLite, in order.
const SQLITE: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/sqlite/0001_init.sql")),
    (2, "jobs", include_str!("../migrations/sqlite/0002_jobs.sql")),
    (3, "chunks", include_str!("../migrations/sqlite/0003_chunks.sql")),
    (4, "documents", include_str!("../migrations/sqlite/0004_documents.sql")),
    (5, "batches", include_str!("../migrations/sqlite/0005_batches.sql")),
    (6, "document_lifecycle", include_str!("../migrations/sqlite/0006_document_lifecycle.sql")),
    (7, "search_generations", include_str!("../migrations/sqlite/0007_search_generations.sql")),
    (9, "signals", include_str!("../migrations/sqlite/0009_signals.sql")),
    (10, "documents_by_filename", include_str!("../migrations/sqlite/0010_documents_by_filename.sql")),
    (11, "pipeline_runs", include_str!("../migrations/sqlite/0011_pipeline_runs.sql")),
    (12, "pipeline_flow", include_str!("../migrations/sqlite/0012_pipeline_flow.sql")),
    (13, "document_sync", include_str!("../migrations/sqlite/0013_document_sync.sql")),
    (14, "chunk_vectors_shadow", include_str!("../migrations/sqlite/0014_chunk_vectors_shadow.sql")),
    (15, "audit_head_batches", include_str!("../migrations/sqlite/0015_audit_head_batches.sql")),
    (16, "raw_usage", include_str!("../migrations/sqlite/0016_raw_usage.sql")),
    (18, "one_raw_sha256_index", include_str!("../migrations/sqlite/0018_one_raw_sha256_index.sql")),
    (19, "chunk_insert_generations", include_str!("../migrations/sqlite/0019_chunk_insert_generations.sql")),
];

/// `(version, description, sql)` for PostgreSQL, in order.
const POSTGRES: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/postgres/0001_init.sql")),
    (2, "jobs", include_str!("../migrations/postgres/0002_jobs.sql")),
    (3, "chunks", include_str!("../migrations/postgres/0003_chunks.sql")),
    (4, "documents", include_str!("../migrations/postgres/0004_documents.sql")),
    (5, "batches", include_str!("../migrations/postgres/0005_batches.sql")),
    (6, "document_lifecycle", include_str!("../migrations/postgres/0006_document_lifecycle.sql")),
    (7, "search_generations", include_str!("../migrations/postgres/0007_search_generations.sql")),
    (9, "signals", include_str!("../migrations/postgres/0009_signals.sql")),
    (10, "documents_by_filename", include_str!("../migrations/postgres/0010_documents_by_filename.sql")),
    (11, "pipeline_runs", include_str!("../migrations/postgres/0011_pipeline_runs.sql")),
    (12, "pipeline_flow", include_str!("../migrations/postgres/0012_pipeline_flow.sql")),
    (13, "document_sync", include_str!("../migrations/postgres/0013_document_sync.sql")),
    (14, "chunk_vectors_shadow", include_str!("../migrations/postgres/0014_chunk_vectors_shadow.sql")),
    (16, "raw_usage", include_str!("../migrations/postgres/0016_raw_usage.sql")),
    (17, "audit_head_batches", include_str!("../migrations/postgres/0017_audit_head_batches.sql")),
    (18, "one_raw_sha256_index", include_str!("../migrations/postgres/0018_one_raw_sha256_index.sql")),
    (19, "chunk_statement_generations", include_str!("../migrations/postgres/0019_chunk_statement_generations.sql")),
    (20, "chunk_rows_inline", include_str!("../migrations/postgres/0020_chunk_rows_inline.sql")),
];

fn build(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

static SQLITE_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| build(SQLITE));
static POSTGRES_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| build(POSTGRES));

pub(crate) fn sqlite() -> &'static Migrator {
    &SQLITE_MIGRATOR
}

pub(crate) fn postgres() -> &'static Migrator {
    &POSTGRES_MIGRATOR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dialect: &str) -> Vec<String> {
        // The runtime variable (set by `cargo test`), so a test binary reused from another checkout's build reads
        // this checkout's files.
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
        let dir = std::path::Path::new(&root).join("migrations").join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    fn listed(list: &[(i64, &str, &str)]) -> Vec<String> {
        list.iter().map(|(v, d, _)| format!("{v:04}_{d}.sql")).collect()
    }

    #[test]
    fn every_migration_file_is_embedded() {
        assert_eq!(listed(SQLITE), files("sqlite"));
        assert_eq!(listed(POSTGRES), files("postgres"));
    }

    #[tokio::test]
    async fn documents_keep_one_index_on_their_raw_bytes_and_use_it() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        sqlite().run(&pool).await.unwrap();
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_index_list('documents')").fetch_all(&pool).await.unwrap();
        assert!(indexes.iter().any(|n| n == "documents_raw_sha256"), "{indexes:?}");
        assert!(!indexes.iter().any(|n| n == "documents_lifecycle_raw"), "{indexes:?}");
        // Intake's duplicate check and erasure's shared-blob lookup.
        let plan: Vec<String> =
            sqlx::query("EXPLAIN QUERY PLAN SELECT doc_id FROM documents WHERE tenant_id = 'a' AND raw_sha256 = 'b'")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
                .collect();
        assert!(plan.iter().any(|d| d.contains("documents_raw_sha256")), "{plan:?}");
    }
}
