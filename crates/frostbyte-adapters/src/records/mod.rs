//! Formats `records.copy` reads and writes beyond CSV and JSON Lines: Parquet files ([`parquet`], feature
//! `parquet`) and SQL tables in SQLite or PostgreSQL ([`sql`]). Both speak the record model of
//! [`frostbyte_core::pipelines::records`]: rows are read as JSON objects and written as one coerced value per
//! output [`Field`](frostbyte_core::pipelines::records::Field).
//!
//! Writers are all-or-nothing: a Parquet file is built in memory and handed back whole (the caller stores it with
//! one blob put), and a SQL writer inserts inside one transaction that only [`sql::SqlWriter::commit`] makes
//! visible.

#[cfg(feature = "parquet")]
pub mod parquet;
pub mod sql;

/// Why reading or writing records failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordsError {
    /// The input, the table or the request is wrong; trying again will not help.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be reached or failed; another attempt may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl RecordsError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, RecordsError::Unavailable(_))
    }
}

/// One row read: the record, or why this row (and only this row) could not be read.
pub type RowResult = Result<serde_json::Map<String, serde_json::Value>, String>;
