//! The document records ([`DocumentStore`](frostbyte_core::documents::DocumentStore)) on both SQL stores: the
//! `documents` table (`migrations/*/0004_documents.sql`). Each write commits the document row, the job that
//! continues the pipeline (`queue::*::enqueue_in_tx`) and the audit event (`append_in_tx`) in one transaction.

mod batch_postgres;
mod batch_sqlite;
pub(crate) mod postgres;
pub(crate) mod postgres_lifecycle;
pub(crate) mod sqlite;
pub(crate) mod sqlite_lifecycle;
mod sqlite_stage_writes;

use frostbyte_core::StoreResult;
use frostbyte_core::documents::{DocumentStages, DocumentStatus};
use serde_json::{Map, Value};

use crate::codec::corrupt;

/// The columns, in the order every statement uses.
macro_rules! document_columns {
    () => {
        "doc_id, receipt_id, original_filename, mime_type, size_bytes, raw_sha256, metadata, collection, status, \
         stages, lineage, error_code, created_at, updated_at"
    };
}
pub(crate) use document_columns;

/// The `batch_files` columns (`migrations/*/0005_batches.sql`) the batch stores read.
macro_rules! batch_file_columns {
    () => {
        "file_id, position, filename, declared_mime, size_bytes, sha256, outcome, reason, message, doc_id, \
         receipt_id, scan_result, signature"
    };
}
pub(crate) use batch_file_columns;

pub(crate) fn decode_status(stored: &str) -> StoreResult<DocumentStatus> {
    DocumentStatus::parse(stored).ok_or_else(|| corrupt("documents.status"))
}

pub(crate) fn decode_stages(stored: Value) -> StoreResult<DocumentStages> {
    serde_json::from_value(stored).map_err(|_| corrupt("documents.stages"))
}

pub(crate) fn decode_object(stored: Value, column: &'static str) -> StoreResult<Map<String, Value>> {
    match stored {
        Value::Object(m) => Ok(m),
        _ => Err(corrupt(column)),
    }
}

pub(crate) fn encode_stages(stages: &DocumentStages) -> Value {
    serde_json::to_value(stages).expect("stages serialise")
}

/// Whether a store error refuses one write (missing row, taken id, moved generation, lost lease) rather than
/// failing the store: in a batch, a refused write is skipped and the others commit.
pub(crate) fn is_refusal(e: &frostbyte_core::StoreError) -> bool {
    use frostbyte_core::StoreError;
    matches!(e, StoreError::NotFound { .. } | StoreError::AlreadyExists { .. } | StoreError::Conflict(_))
}
