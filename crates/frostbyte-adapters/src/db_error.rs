//! Maps `sqlx` errors to [`StoreError`] kinds: unique violations become `AlreadyExists`, anything that may
//! succeed on retry (connection loss, pool timeouts, lock contention, serialisation failures) becomes
//! `Unavailable`, and the rest `Internal`.
//!
//! Messages carry error codes, constraint and column names only. Database messages can quote row values (e.g.
//! PostgreSQL's `invalid input syntax for type uuid: "..."`), so they are logged at debug level, never returned.

use frostbyte_core::StoreError;
use sqlx::error::ErrorKind;

/// Which database produced an error: their error codes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// Converts an error from a statement about `resource` (used for `AlreadyExists` and `NotFound`).
pub(crate) fn map(dialect: Dialect, resource: &'static str, error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Database(db) => {
            tracing::debug!(error = %db, "database error");
            if db.kind() == ErrorKind::UniqueViolation {
                return StoreError::AlreadyExists { resource };
            }
            let code = db.code().map(|c| c.into_owned()).unwrap_or_else(|| "unknown".into());
            if is_transient(dialect, &code) {
                return StoreError::Unavailable(format!("database busy or unavailable (code {code})"));
            }
            match db.constraint() {
                Some(constraint) => {
                    StoreError::Internal(format!("database error (code {code}, constraint {constraint})"))
                }
                None => StoreError::Internal(format!("database error (code {code})")),
            }
        }
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("database i/o error: {}", e.kind())),
        sqlx::Error::Tls(_) => StoreError::Unavailable("database tls error".into()),
        e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::RowNotFound => StoreError::NotFound { resource },
        sqlx::Error::ColumnNotFound(column) => StoreError::Internal(format!("column {column} not found")),
        sqlx::Error::ColumnDecode { index, .. } => StoreError::Internal(format!("column {index} could not be decoded")),
        sqlx::Error::Migrate(e) => StoreError::Internal(format!("migration failed: {e}")),
        other => {
            tracing::debug!(error = %other, "database error");
            StoreError::Internal(format!("database error ({})", variant_name(&other)))
        }
    }
}

/// Whether a database error code means "try again later" rather than "this will never work".
fn is_transient(dialect: Dialect, code: &str) -> bool {
    match dialect {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), including their extended codes (low byte is the primary code).
        Dialect::Sqlite => code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
        // Connection exceptions, serialisation failure, deadlock, insufficient resources, lock not available,
        // operator intervention (shutdown, cannot connect now).
        Dialect::Postgres => {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03")
        }
    }
}

fn variant_name(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Configuration(_) => "configuration",
        sqlx::Error::InvalidArgument(_) => "invalid argument",
        sqlx::Error::Protocol(_) => "protocol",
        sqlx::Error::TypeNotFound { .. } => "type not found",
        sqlx::Error::ColumnIndexOutOfBounds { .. } => "column index out of bounds",
        sqlx::Error::Encode(_) => "encode",
        sqlx::Error::Decode(_) => "decode",
        sqlx::Error::BeginFailed => "begin failed",
        _ => "other",
    }
}

/// Converts a migration failure.
pub(crate) fn map_migrate(dialect: Dialect, error: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    let (inner, version) = match error {
        MigrateError::Execute(e) => (e, None),
        MigrateError::ExecuteMigration(e, version) => (e, Some(version)),
        other => return StoreError::Internal(format!("migration failed: {other}")),
    };
    match (map(dialect, "migration", inner), version) {
        (StoreError::Internal(m), Some(v)) => StoreError::Internal(format!("migration {v} failed: {m}")),
        (StoreError::Internal(m), None) => StoreError::Internal(format!("migration failed: {m}")),
        (other, _) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_locked_are_transient_on_sqlite() {
        assert!(is_transient(Dialect::Sqlite, "5"));
        assert!(is_transient(Dialect::Sqlite, "517")); // SQLITE_BUSY_SNAPSHOT
        assert!(is_transient(Dialect::Sqlite, "6"));
        assert!(!is_transient(Dialect::Sqlite, "1811")); // SQLITE_CONSTRAINT_TRIGGER
    }

    #[test]
    fn connection_and_serialisation_failures_are_transient_on_postgres() {
        for code in ["08006", "40001", "40P01", "57P01", "53300"] {
            assert!(is_transient(Dialect::Postgres, code), "{code}");
        }
        for code in ["23505", "P0001", "42P01"] {
            assert!(!is_transient(Dialect::Postgres, code), "{code}");
        }
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        assert!(map(Dialect::Sqlite, "x", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(matches!(map(Dialect::Postgres, "tenant", sqlx::Error::RowNotFound), StoreError::NotFound { .. }));
    }
}
