//! Intake for single uploads: the checks and writes behind `POST /api/v1/ingest/{tenant_id}/documents`, kept
//! out of the handler so the HTTP layer only streams bytes in and maps errors out.
//!
//! Order: the upload was already size-limited and hashed while it streamed ([`UploadBuffer`]); here its type is
//! sniffed from the bytes and checked against the tenant's allowlist and the parsers we have, the raw bytes are
//! stored content-addressed at `raw/{sha256}` (once: identical uploads share the object), and the document row,
//! its parse job and the `DOCUMENT_INGESTED` audit event commit in one transaction.

use std::sync::Arc;

use bytes::Bytes;
use frostbyte_adapters::parse::{parser_for, sniff};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus, DocumentStore, raw_blob_key};
use frostbyte_core::ports::{BlobError, BlobStore};
use frostbyte_core::queue::{NewJob, Stage};
use frostbyte_core::tenant::TenantConfig;
use frostbyte_core::{StoreError, StoreResult};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An upload being read: bytes so far, their running sha256, and the limit they may not pass.
pub struct UploadBuffer {
    bytes: Vec<u8>,
    hasher: Sha256,
    limit: u64,
}

/// The upload passed its limit; nothing more is buffered.
#[derive(Debug)]
pub struct TooLarge {
    pub limit: u64,
}

impl UploadBuffer {
    pub fn new(limit: u64) -> Self {
        UploadBuffer { bytes: Vec::new(), hasher: Sha256::new(), limit }
    }

    /// Appends a piece, refusing it (before buffering) if the total would pass the limit.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), TooLarge> {
        if self.bytes.len() as u64 + piece.len() as u64 > self.limit {
            return Err(TooLarge { limit: self.limit });
        }
        self.hasher.update(piece);
        self.bytes.extend_from_slice(piece);
        Ok(())
    }

    /// The bytes and their lowercase hex sha256.
    pub fn finish(self) -> (Bytes, String) {
        (Bytes::from(self.bytes), hex::encode(self.hasher.finalize()))
    }
}

/// The largest upload a tenant accepts, in bytes.
pub fn max_upload_bytes(config: &TenantConfig) -> u64 {
    config.max_file_size_mb.saturating_mul(1024 * 1024)
}

/// A received file, read whole and hashed.
pub struct Upload {
    pub bytes: Bytes,
    pub sha256: String,
    pub filename: String,
    pub declared_mime: Option<String>,
    pub metadata: Value,
    pub collection: Option<String>,
}

/// Why an upload was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The sniffed type (or `None` when it could not be recognised) is not accepted.
    #[error("unsupported format")]
    UnsupportedFormat { sniffed: Option<&'static str> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// The ports intake writes to.
#[derive(Clone)]
pub struct Intake {
    pub documents: Arc<dyn DocumentStore>,
    pub blobs: Arc<dyn BlobStore>,
}

impl Intake {
    /// Checks the upload's type, stores its bytes and records the document with its parse job, in that order
    /// (a crash between the blob and the row leaves only an unreferenced, content-addressed blob).
    pub async fn accept(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        actor: &str,
        upload: Upload,
    ) -> Result<DocumentRecord, IntakeError> {
        let sniffed = sniff(&upload.bytes, upload.declared_mime.as_deref(), Some(&upload.filename));
        let Some(mime) = sniffed.filter(|m| allowed(config, m)) else {
            return Err(IntakeError::UnsupportedFormat { sniffed });
        };
        let key = raw_blob_key(&upload.sha256);
        if !self.blobs.exists(tenant, &key).await? {
            self.blobs.put(tenant, &key, upload.bytes.clone()).await?;
        }
        let now = frostbyte_core::now();
        let doc = DocumentRecord {
            doc_id: frostbyte_core::ids::new_id(),
            receipt_id: frostbyte_core::ids::new_id(),
            original_filename: upload.filename,
            mime_type: mime.to_owned(),
            size_bytes: upload.bytes.len() as u64,
            raw_sha256: upload.sha256,
            metadata: upload.metadata,
            collection: upload.collection,
            status: DocumentStatus::Processing,
            stages: DocumentStages::received(),
            lineage: serde_json::Map::new(),
            error_code: None,
            created_at: now,
            updated_at: now,
        };
        let doc_id = doc.doc_id.to_string();
        let job = NewJob::new(Stage::Parse, &doc_id, json!({"doc_id": doc_id})).dedupe_key(format!("parse:{doc_id}"));
        let audit = NewAuditEvent::new(
            "DOCUMENT_INGESTED",
            actor,
            "document",
            &doc_id,
            json!({
                "component": "intake",
                "status": "accepted",
                "receipt_id": doc.receipt_id.to_string(),
                "input_hash": doc.raw_sha256,
                "mime_type": doc.mime_type,
                "size_bytes": doc.size_bytes,
                "scan_result": "skipped",
            }),
        );
        self.documents.create_document(tenant, &doc, job, audit).await?;
        tracing::info!(
            tenant = %tenant, doc_id = %doc.doc_id, mime = %doc.mime_type, size_bytes = doc.size_bytes,
            "document accepted"
        );
        Ok(doc)
    }

    pub async fn get(&self, tenant: &TenantId, doc_id: uuid::Uuid) -> StoreResult<Option<DocumentRecord>> {
        self.documents.get_document(tenant, doc_id).await
    }
}

/// The tenant allows the type and we have a parser for it.
pub(crate) fn allowed(config: &TenantConfig, mime: &str) -> bool {
    config.mime_allowlist.iter().any(|m| m.eq_ignore_ascii_case(mime)) && parser_for(mime).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_enforced_before_buffering() {
        let mut b = UploadBuffer::new(5);
        b.push(b"abc").unwrap();
        assert!(b.push(b"def").is_err());
        b.push(b"de").unwrap();
        let (bytes, sha) = b.finish();
        assert_eq!(&bytes[..], b"abcde");
        assert_eq!(sha, hex::encode(Sha256::digest(b"abcde")));
    }

    #[test]
    fn types_without_a_parser_are_refused_even_if_allowlisted() {
        let config = TenantConfig::default();
        assert!(allowed(&config, "text/markdown"));
        assert!(!allowed(&config, "image/png"));
        let narrow = TenantConfig { mime_allowlist: vec!["application/pdf".into()], ..TenantConfig::default() };
        assert!(!allowed(&narrow, "text/markdown"));
    }
}
