//! Intake: the checks and writes behind `POST /api/v1/ingest/{tenant_id}/documents` (one file) and
//! `POST /api/v1/ingest/{tenant_id}/batch` (a manifest and its files), kept out of the handlers so the HTTP
//! layer only streams bytes in and maps errors out.
//!
//! Per file, in order: the bytes were already size-limited and hashed while they streamed ([`UploadBuffer`]);
//! a batch file's size and sha256 must equal the manifest's; the malware scanner sees the bytes (infected files
//! are quarantined and never stored; an unreachable scanner fails the whole request, nothing is accepted as
//! clean); the type is sniffed from the bytes and must be on the tenant's allowlist, have a parser, and agree
//! with the declared type ([`declared_type_agrees`]); the metadata must satisfy the tenant's schema. Then the
//! tenant's quotas (`storage_quota_gb`, `quotas.documents_per_day`) are checked for everything accepted, the
//! raw bytes are stored content-addressed at `raw/{sha256}` (once: identical uploads share the object), and the
//! rows, parse jobs and audit events commit in one transaction.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use frostbyte_adapters::parse::{mime, parser_for, sniff};
use frostbyte_core::StoreError;
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::batch::{
    BatchFileRecord, BatchRecord, BatchStore, FileOutcome, Manifest, ManifestFile, NewBatch, RejectReason,
};
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus, DocumentStore, raw_blob_key};
use frostbyte_core::ports::{BlobError, BlobStore, BlobWrite, MetadataStore};
use frostbyte_core::queue::{NewJob, Stage};
use frostbyte_core::scan::{ScanError, ScanOutcome, ScanResult, Scanner};
use frostbyte_core::tenant::{FieldViolation, TenantConfig};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::metadata_schema::{self, CompiledSchema};

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

/// The essence of a MIME type: lowercase, parameters dropped.
fn essence(mime_type: &str) -> String {
    mime_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether a declared type agrees with the type sniffed from the bytes. Equal types agree, as do the known
/// equivalences: every text format (CSV, TSV, Markdown, HTML, JSON) may be declared as `text/plain`; common
/// aliases (`text/x-markdown`, `application/csv`, `text/json`, ...) name their format; OOXML files (DOCX, XLSX,
/// PPTX) may be declared as `application/zip`. A PDF declared as text, or text declared as PDF, does not agree.
pub fn declared_type_agrees(declared: &str, sniffed: &str) -> bool {
    let declared = essence(declared);
    if declared == sniffed {
        return true;
    }
    let text_formats = [mime::TEXT, mime::MARKDOWN, mime::HTML, mime::CSV, mime::TSV, mime::JSON];
    let ooxml = [mime::DOCX, mime::XLSX, mime::PPTX];
    match declared.as_str() {
        "text/plain" => text_formats.contains(&sniffed),
        "text/x-markdown" | "text/md" => sniffed == mime::MARKDOWN,
        "application/csv" | "text/x-csv" | "text/comma-separated-values" => sniffed == mime::CSV,
        "text/tsv" => sniffed == mime::TSV,
        "text/json" | "application/x-json" => sniffed == mime::JSON,
        d if d.starts_with("application/") && d.ends_with("+json") => sniffed == mime::JSON,
        "application/xhtml+xml" => sniffed == mime::HTML,
        "application/zip" | "application/x-zip-compressed" => ooxml.contains(&sniffed),
        _ => false,
    }
}

/// The tenant allows the type and we have a parser for it.
fn allowed(config: &TenantConfig, mime: &str) -> bool {
    config.mime_allowlist.iter().any(|m| m.eq_ignore_ascii_case(mime)) && parser_for(mime).is_some()
}

/// A quota intake would pass: the request is refused whole (429 `QUOTA_EXCEEDED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub message: String,
    pub retry_after_secs: u64,
}

/// How long to wait for the storage quota: freeing space takes an operator or an erasure, so an hour.
const STORAGE_QUOTA_RETRY_SECS: u64 = 3600;

/// Why an upload (or a whole batch) was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The sniffed type (or `None` when it could not be recognised) is not accepted, or disagrees with the
    /// declared one; `reason` says which, naming the types (never the content).
    #[error("unsupported format: {reason}")]
    UnsupportedFormat { sniffed: Option<&'static str>, declared: Option<String>, reason: String },
    /// The metadata violates the tenant's schema.
    #[error("metadata violates the tenant's schema")]
    SchemaViolation(Vec<FieldViolation>),
    /// The scanner found malware; the file was quarantined (audited, not stored).
    #[error("malware detected")]
    MalwareDetected { signature: String },
    /// The scanner could not give a verdict; nothing was accepted.
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("quota exceeded: {}", .0.message)]
    Quota(QuotaExceeded),
    /// The tenant's stored metadata schema no longer compiles (it was checked when stored, so this is a bug).
    #[error("the tenant's metadata schema cannot be used")]
    BrokenSchema,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
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

/// One file part of a batch as it arrived.
#[derive(Debug, Clone)]
pub enum ReceivedFile {
    Bytes {
        bytes: Bytes,
        sha256: String,
    },
    /// The part passed the tenant's limit and was drained without buffering.
    TooLarge {
        limit: u64,
    },
}

/// One file's decision in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDecision {
    pub file_id: String,
    pub receipt_id: uuid::Uuid,
    pub outcome: FileOutcome,
    pub reason: Option<RejectReason>,
    pub message: Option<String>,
    pub doc_id: Option<uuid::Uuid>,
    pub signature: Option<String>,
}

/// What a batch decided, file by file, in manifest order.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub batch_id: String,
    pub file_count: u64,
    pub files: Vec<FileDecision>,
}

impl BatchOutcome {
    pub fn count(&self, outcome: FileOutcome) -> u64 {
        self.files.iter().filter(|f| f.outcome == outcome).count() as u64
    }
}

/// The ports intake writes to.
#[derive(Clone)]
pub struct Intake {
    pub store: Arc<dyn MetadataStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub batches: Arc<dyn BatchStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub scanner: Arc<dyn Scanner>,
}

/// An upload that passed every check: its sniffed type and the scan's outcome.
pub struct Checked {
    pub mime: &'static str,
    pub scan: ScanOutcome,
}

/// A file that passed every check.
struct Vetted {
    mime: &'static str,
    scan: ScanOutcome,
}

/// Why one file did not pass.
enum Problem {
    Reject(RejectReason, String),
    Infected(String),
}

/// The start of the current UTC day, and the seconds until the next one.
fn utc_day(now: DateTime<Utc>) -> (DateTime<Utc>, u64) {
    let start = now.date_naive().and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let next = start + chrono::Duration::days(1);
    (start, u64::try_from((next - now).num_seconds()).unwrap_or(1).max(1))
}

impl Intake {
    /// Intake over the application's ports.
    pub fn from_state(state: &crate::http::AppState) -> Self {
        Intake {
            store: state.store.clone(),
            documents: state.documents.clone(),
            batches: state.batches.clone(),
            blobs: state.blobs.clone(),
            scanner: state.scanner.clone(),
        }
    }

    /// The tenant's compiled metadata schema, if it has one.
    pub async fn schema(&self, tenant: &TenantId) -> Result<Option<CompiledSchema>, IntakeError> {
        let Some(stored) = self.batches.get_metadata_schema(tenant).await? else { return Ok(None) };
        CompiledSchema::compile(&stored.schema, stored.version).map(Some).map_err(|problems| {
            tracing::error!(tenant = %tenant, version = stored.version, problems = problems.len(), "stored metadata schema does not compile");
            IntakeError::BrokenSchema
        })
    }

    /// Scan, then type, then schema. `Err` only when the scanner gives no verdict.
    async fn vet(
        &self,
        config: &TenantConfig,
        schema: Option<&CompiledSchema>,
        bytes: &[u8],
        declared_mime: Option<&str>,
        filename: &str,
        metadata: &Value,
    ) -> Result<Result<Vetted, Problem>, ScanError> {
        let scan = frostbyte_core::scan::check(self.scanner.as_ref(), bytes).await?;
        if let Some(signature) = scan.signature.clone() {
            return Ok(Err(Problem::Infected(signature)));
        }
        let sniffed = sniff(bytes, declared_mime, Some(filename));
        let Some(found) = sniffed else {
            return Ok(Err(Problem::Reject(
                RejectReason::UnsupportedFormat,
                "the content is not a format Frostbyte can parse".into(),
            )));
        };
        if !allowed(config, found) {
            return Ok(Err(Problem::Reject(
                RejectReason::UnsupportedFormat,
                format!("the content is {found}, which this tenant does not accept"),
            )));
        }
        if let Some(declared) = declared_mime
            && !declared_type_agrees(declared, found)
        {
            return Ok(Err(Problem::Reject(
                RejectReason::UnsupportedFormat,
                format!(
                    "declared as {}, but the content is {found}",
                    essence(declared).chars().take(100).collect::<String>()
                ),
            )));
        }
        if let Some(schema) = schema {
            let violations = schema.violations(metadata);
            if !violations.is_empty() {
                return Ok(Err(Problem::Reject(
                    RejectReason::SchemaViolation,
                    metadata_schema::summarise(&violations),
                )));
            }
        }
        Ok(Ok(Vetted { mime: found, scan }))
    }

    /// Refuses the request if accepting `new_documents` documents with these `(sha256, size)` raw objects would
    /// pass the tenant's storage quota or daily document quota. Objects already stored cost nothing.
    async fn check_quotas(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        new_documents: u64,
        raw: &[(&str, u64)],
    ) -> Result<(), IntakeError> {
        if new_documents == 0 {
            return Ok(());
        }
        let (day_start, until_tomorrow) = utc_day(frostbyte_core::now());
        let usage = self.batches.intake_usage(tenant, day_start).await?;
        let per_day = u64::from(config.quotas.documents_per_day);
        if usage.documents_today + new_documents > per_day {
            return Err(IntakeError::Quota(QuotaExceeded {
                message: format!(
                    "accepting {new_documents} more document(s) would pass this tenant's quota of {per_day} documents \
                     per day ({} accepted today); retry after the quota resets at 00:00 UTC",
                    usage.documents_today
                ),
                retry_after_secs: until_tomorrow,
            }));
        }
        let mut seen = HashSet::new();
        let mut new_bytes = 0u64;
        for (sha, size) in raw {
            if seen.insert(*sha) && !self.blobs.exists(tenant, &raw_blob_key(sha)).await? {
                new_bytes = new_bytes.saturating_add(*size);
            }
        }
        let quota = config.storage_quota_gb.saturating_mul(1024 * 1024 * 1024);
        if usage.raw_bytes.saturating_add(new_bytes) > quota {
            return Err(IntakeError::Quota(QuotaExceeded {
                message: format!(
                    "storing {new_bytes} more byte(s) would pass this tenant's storage quota of {} GB ({} bytes \
                     stored); erase documents or ask an administrator to raise storage_quota_gb",
                    config.storage_quota_gb, usage.raw_bytes
                ),
                retry_after_secs: STORAGE_QUOTA_RETRY_SECS,
            }));
        }
        Ok(())
    }

    /// Whether the tenant's intake quotas are already spent (before any new file): no document may be added today
    /// (`quotas.documents_per_day`, UTC day) or no byte may be stored (`storage_quota_gb`). What pipelines that
    /// take documents in check before they start.
    pub async fn quota_spent(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
    ) -> Result<Option<QuotaExceeded>, IntakeError> {
        let (day_start, until_tomorrow) = utc_day(frostbyte_core::now());
        let usage = self.batches.intake_usage(tenant, day_start).await?;
        let per_day = u64::from(config.quotas.documents_per_day);
        if usage.documents_today >= per_day {
            return Ok(Some(QuotaExceeded {
                message: format!(
                    "tenant {tenant} has taken in {} documents today, its quotas.documents_per_day limit of {per_day}; \
                     the count resets at 00:00 UTC",
                    usage.documents_today
                ),
                retry_after_secs: until_tomorrow,
            }));
        }
        let quota = config.storage_quota_gb.saturating_mul(1024 * 1024 * 1024);
        if usage.raw_bytes >= quota {
            return Ok(Some(QuotaExceeded {
                message: format!(
                    "tenant {tenant} stores {} bytes, its storage quota of {} GB; erase documents or ask an \
                     administrator to raise storage_quota_gb",
                    usage.raw_bytes, config.storage_quota_gb
                ),
                retry_after_secs: STORAGE_QUOTA_RETRY_SECS,
            }));
        }
        Ok(None)
    }

    /// Stores raw bytes under their content address ([`raw_blob_key`]), durably and all at once
    /// ([`BlobStore::write_all`]); bytes already stored, or listed twice, are written once.
    async fn put_raws<'a>(
        &self,
        tenant: &TenantId,
        raws: impl IntoIterator<Item = (&'a str, &'a Bytes)>,
    ) -> Result<(), BlobError> {
        let mut seen = HashSet::new();
        let writes: Vec<BlobWrite> = raws
            .into_iter()
            .filter(|(sha256, _)| seen.insert(*sha256))
            .map(|(sha256, bytes)| BlobWrite::PutIfAbsent { key: raw_blob_key(sha256), bytes: bytes.clone() })
            .collect();
        self.blobs.write_all(tenant, writes).await
    }

    /// Every check an upload must pass before anything of it is stored: malware scan (an infected file is
    /// audited as `DOCUMENT_QUARANTINED`), sniffed type against the allowlist and the declared type, the tenant's
    /// metadata schema, and the intake quotas. Used by uploads and by replacing a document's content.
    pub async fn check(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        actor: &str,
        upload: &Upload,
    ) -> Result<Checked, IntakeError> {
        let schema = self.schema(tenant).await?;
        let checked = self.check_content(tenant, config, actor, schema.as_ref(), upload).await?;
        self.check_quotas(tenant, config, 1, &[(&upload.sha256, upload.bytes.len() as u64)]).await?;
        Ok(checked)
    }

    /// [`Intake::check`] but the quotas, against a schema already read.
    async fn check_content(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        actor: &str,
        schema: Option<&CompiledSchema>,
        upload: &Upload,
    ) -> Result<Checked, IntakeError> {
        // Browsers and HTTP clients send octet-stream for anything: it claims nothing.
        let declared =
            upload.declared_mime.as_deref().filter(|d| essence(d) != "application/octet-stream" && !d.is_empty());
        let vetted = match self.vet(config, schema, &upload.bytes, declared, &upload.filename, &upload.metadata).await?
        {
            Ok(v) => v,
            Err(Problem::Infected(signature)) => {
                let receipt_id = frostbyte_core::ids::new_id().to_string();
                let event = NewAuditEvent::new(
                    "DOCUMENT_QUARANTINED",
                    actor,
                    "upload",
                    &receipt_id,
                    json!({"component": "intake", "reason": "MALWARE_DETECTED", "signature": signature,
                               "input_hash": upload.sha256, "size_bytes": upload.bytes.len(),
                               "scanner": self.scanner.name()}),
                );
                self.store.append_audit(tenant, event).await?;
                tracing::warn!(tenant = %tenant, %signature, "upload quarantined: malware detected");
                return Err(IntakeError::MalwareDetected { signature });
            }
            Err(Problem::Reject(RejectReason::SchemaViolation, _)) => {
                let violations = schema.map(|s| s.violations(&upload.metadata)).unwrap_or_default();
                return Err(IntakeError::SchemaViolation(violations));
            }
            Err(Problem::Reject(_, reason)) => {
                let sniffed = sniff(&upload.bytes, declared, Some(&upload.filename));
                return Err(IntakeError::UnsupportedFormat { sniffed, declared: declared.map(essence), reason });
            }
        };
        Ok(Checked { mime: vetted.mime, scan: vetted.scan })
    }

    /// Checks one upload, stores its bytes and records the document with its parse job, in that order (a crash
    /// between the blob and the row leaves only an unreferenced, content-addressed blob). An infected file is
    /// audited as `DOCUMENT_QUARANTINED` and refused; nothing of it is stored.
    pub async fn accept(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        actor: &str,
        upload: Upload,
    ) -> Result<(DocumentRecord, ScanResult), IntakeError> {
        let checked = self.check(tenant, config, actor, &upload).await?;
        let mut stored = self.store_all(tenant, actor, vec![(upload, checked)]).await?;
        Ok(stored.pop().expect("one document per upload"))
    }

    /// [`Intake::accept`] for several uploads at once, with one quota check and one transaction for all that
    /// pass their checks: each upload's outcome, in order. `Err` when nothing could be decided (the store or
    /// the blob store failed). If the group together would pass a quota, its files are taken one at a time, so
    /// that exactly those that fit are accepted.
    pub async fn accept_all(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        actor: &str,
        uploads: Vec<Upload>,
    ) -> Result<Vec<Result<(DocumentRecord, ScanResult), IntakeError>>, IntakeError> {
        let schema = self.schema(tenant).await?;
        let checks = uploads.iter().map(|u| self.check_content(tenant, config, actor, schema.as_ref(), u));
        let checks = futures::future::join_all(checks).await;
        let mut outcomes: Vec<Option<Result<(DocumentRecord, ScanResult), IntakeError>>> =
            (0..uploads.len()).map(|_| None).collect();
        let mut passed = Vec::with_capacity(uploads.len());
        for ((i, upload), checked) in uploads.into_iter().enumerate().zip(checks) {
            match checked {
                Ok(checked) => passed.push((i, (upload, checked))),
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        let raw: Vec<(&str, u64)> =
            passed.iter().map(|(_, (u, _))| (u.sha256.as_str(), u.bytes.len() as u64)).collect();
        match self.check_quotas(tenant, config, passed.len() as u64, &raw).await {
            Ok(()) => {
                let (at, passed): (Vec<usize>, Vec<_>) = passed.into_iter().unzip();
                for (i, stored) in at.into_iter().zip(self.store_all(tenant, actor, passed).await?) {
                    outcomes[i] = Some(Ok(stored));
                }
            }
            Err(IntakeError::Quota(_)) => {
                for (i, (upload, checked)) in passed {
                    let size = upload.bytes.len() as u64;
                    outcomes[i] = Some(match self.check_quotas(tenant, config, 1, &[(&upload.sha256, size)]).await {
                        Ok(()) => {
                            let mut stored = self.store_all(tenant, actor, vec![(upload, checked)]).await?;
                            Ok(stored.pop().expect("one document per upload"))
                        }
                        Err(e) => Err(e),
                    });
                }
            }
            Err(e) => return Err(e),
        }
        Ok(outcomes.into_iter().map(|o| o.expect("every upload was decided")).collect())
    }

    /// Stores the raw bytes of checked uploads, then records their documents with their parse jobs and
    /// `DOCUMENT_INGESTED` events in one transaction.
    async fn store_all(
        &self,
        tenant: &TenantId,
        actor: &str,
        checked: Vec<(Upload, Checked)>,
    ) -> Result<Vec<(DocumentRecord, ScanResult)>, IntakeError> {
        self.put_raws(tenant, checked.iter().map(|(upload, _)| (upload.sha256.as_str(), &upload.bytes))).await?;
        let now = frostbyte_core::now();
        let mut rows = Vec::with_capacity(checked.len());
        let mut accepted = Vec::with_capacity(checked.len());
        for (upload, vetted) in checked {
            let mut lineage = Map::new();
            lineage.insert("scan_result".into(), Value::from(vetted.scan.result.as_str()));
            let doc = DocumentRecord {
                doc_id: frostbyte_core::ids::new_id(),
                receipt_id: frostbyte_core::ids::new_id(),
                original_filename: upload.filename,
                mime_type: vetted.mime.to_owned(),
                size_bytes: upload.bytes.len() as u64,
                raw_sha256: upload.sha256,
                metadata: upload.metadata,
                collection: upload.collection,
                status: DocumentStatus::Processing,
                stages: DocumentStages::received(),
                lineage,
                error_code: None,
                created_at: now,
                updated_at: now,
            };
            let job = parse_job(&doc);
            let audit = ingested_event(actor, &doc, vetted.scan.result.as_str(), None);
            rows.push((doc.clone(), job, audit));
            accepted.push((doc, vetted.scan.result));
        }
        self.documents.create_documents(tenant, rows).await?;
        crate::pipeline::wake_workers();
        for (doc, scan) in &accepted {
            crate::events::document_accepted(tenant, doc);
            tracing::info!(
                tenant = %tenant, doc_id = %doc.doc_id, mime = %doc.mime_type, size_bytes = doc.size_bytes,
                scan = scan.as_str(), "document accepted"
            );
        }
        Ok(accepted)
    }

    /// Decides every file of a validated batch, checks quotas, stores the accepted files' bytes, and records the
    /// batch, its files, the accepted documents with their parse jobs and every audit event in one transaction.
    /// `files[i]` is the part that arrived for `manifest.files[i]`.
    pub async fn accept_batch(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        actor: &str,
        manifest: Manifest,
        files: Vec<ReceivedFile>,
    ) -> Result<BatchOutcome, IntakeError> {
        assert_eq!(manifest.files.len(), files.len(), "one received part per manifest entry");
        let schema = self.schema(tenant).await?;
        let now = frostbyte_core::now();
        let mut records = Vec::with_capacity(files.len());
        let mut documents = Vec::new();
        let mut file_events = Vec::with_capacity(files.len());
        let mut to_store: Vec<(String, Bytes)> = Vec::new();
        for (position, (entry, received)) in manifest.files.iter().zip(files).enumerate() {
            let receipt_id = frostbyte_core::ids::new_id();
            let mut record = BatchFileRecord {
                file_id: entry.file_id.clone(),
                position: u32::try_from(position).unwrap_or(u32::MAX),
                filename: entry.filename.clone(),
                declared_mime: entry.mime_type.clone(),
                size_bytes: entry.size_bytes,
                sha256: entry.sha256.clone(),
                outcome: FileOutcome::Rejected,
                reason: None,
                message: None,
                doc_id: None,
                receipt_id,
                scan_result: None,
                signature: None,
            };
            let decision = self.decide(config, schema.as_ref(), entry, received).await?;
            match decision {
                Decision::Rejected(reason, message, received_sha) => {
                    file_events.push(NewAuditEvent::new(
                        "DOCUMENT_REJECTED",
                        actor,
                        "batch_file",
                        format!("{}/{}", manifest.batch_id, entry.file_id),
                        json!({"component": "intake", "batch_id": manifest.batch_id, "file_id": entry.file_id,
                               "receipt_id": receipt_id.to_string(), "reason": reason.as_str(),
                               "declared_sha256": entry.sha256, "received_sha256": received_sha,
                               "declared_size_bytes": entry.size_bytes}),
                    ));
                    record.reason = Some(reason);
                    record.message = Some(message);
                }
                Decision::Quarantined(signature) => {
                    file_events.push(NewAuditEvent::new(
                        "DOCUMENT_QUARANTINED",
                        actor,
                        "batch_file",
                        format!("{}/{}", manifest.batch_id, entry.file_id),
                        json!({"component": "intake", "batch_id": manifest.batch_id, "file_id": entry.file_id,
                               "receipt_id": receipt_id.to_string(), "reason": "MALWARE_DETECTED",
                               "signature": signature, "input_hash": entry.sha256,
                               "scanner": self.scanner.name()}),
                    ));
                    record.outcome = FileOutcome::Quarantined;
                    record.reason = Some(RejectReason::MalwareDetected);
                    record.message = Some(format!("malware detected: {signature}"));
                    record.scan_result = Some(ScanResult::Quarantined.as_str().into());
                    record.signature = Some(signature);
                }
                Decision::Accepted { bytes, mime, scan } => {
                    let mut lineage = Map::new();
                    lineage.insert("scan_result".into(), Value::from(scan.as_str()));
                    lineage.insert("batch_id".into(), Value::from(manifest.batch_id.clone()));
                    lineage.insert("file_id".into(), Value::from(entry.file_id.clone()));
                    let doc = DocumentRecord {
                        doc_id: frostbyte_core::ids::new_id(),
                        receipt_id,
                        original_filename: entry.filename.clone(),
                        mime_type: mime.to_owned(),
                        size_bytes: bytes.len() as u64,
                        raw_sha256: entry.sha256.clone(),
                        metadata: entry.metadata.clone().unwrap_or_else(|| Value::Object(Map::new())),
                        collection: manifest.collection.clone(),
                        status: DocumentStatus::Processing,
                        stages: DocumentStages::received(),
                        lineage,
                        error_code: None,
                        created_at: now,
                        updated_at: now,
                    };
                    file_events.push(ingested_event(
                        actor,
                        &doc,
                        scan.as_str(),
                        Some((manifest.batch_id.as_str(), entry)),
                    ));
                    record.outcome = FileOutcome::Accepted;
                    record.doc_id = Some(doc.doc_id);
                    record.scan_result = Some(scan.as_str().into());
                    to_store.push((entry.sha256.clone(), bytes));
                    let job = parse_job(&doc);
                    documents.push((doc, job));
                }
            }
            records.push(record);
        }
        let raw: Vec<(&str, u64)> = to_store.iter().map(|(sha, b)| (sha.as_str(), b.len() as u64)).collect();
        self.check_quotas(tenant, config, documents.len() as u64, &raw).await?;
        self.put_raws(tenant, to_store.iter().map(|(sha, bytes)| (sha.as_str(), bytes))).await?;
        let count = |o| records.iter().filter(|r: &&BatchFileRecord| r.outcome == o).count() as u64;
        let batch = BatchRecord {
            batch_id: manifest.batch_id.clone(),
            file_count: manifest.file_count,
            collection: manifest.collection.clone(),
            submitter: manifest.submitter.clone(),
            accepted: count(FileOutcome::Accepted),
            rejected: count(FileOutcome::Rejected),
            quarantined: count(FileOutcome::Quarantined),
            created_at: now,
        };
        let mut audit = Vec::with_capacity(file_events.len() + 1);
        audit.push(NewAuditEvent::new(
            "BATCH_RECEIVED",
            actor,
            "batch",
            &batch.batch_id,
            json!({"component": "intake", "batch_id": batch.batch_id, "file_count": batch.file_count,
                   "accepted": batch.accepted, "rejected": batch.rejected, "quarantined": batch.quarantined,
                   "scanner": self.scanner.name()}),
        ));
        audit.extend(file_events);
        let outcome = BatchOutcome {
            batch_id: batch.batch_id.clone(),
            file_count: batch.file_count,
            files: records
                .iter()
                .map(|r| FileDecision {
                    file_id: r.file_id.clone(),
                    receipt_id: r.receipt_id,
                    outcome: r.outcome,
                    reason: r.reason,
                    message: r.message.clone(),
                    doc_id: r.doc_id,
                    signature: r.signature.clone(),
                })
                .collect(),
        };
        let (accepted, rejected, quarantined) = (batch.accepted, batch.rejected, batch.quarantined);
        self.batches.create_batch(tenant, NewBatch { batch, files: records, documents, audit }).await?;
        crate::pipeline::wake_workers();
        tracing::info!(
            tenant = %tenant, batch_id = %outcome.batch_id, accepted, rejected, quarantined, "batch received"
        );
        Ok(outcome)
    }

    /// One batch file: size, checksum, then [`Intake::vet`].
    async fn decide(
        &self,
        config: &TenantConfig,
        schema: Option<&CompiledSchema>,
        entry: &ManifestFile,
        received: ReceivedFile,
    ) -> Result<Decision, ScanError> {
        let (bytes, sha256) = match received {
            ReceivedFile::TooLarge { limit } => {
                return Ok(Decision::Rejected(
                    RejectReason::SizeExceeded,
                    format!("the file is larger than this tenant's limit of {limit} bytes"),
                    None,
                ));
            }
            ReceivedFile::Bytes { bytes, sha256 } => (bytes, sha256),
        };
        if bytes.len() as u64 != entry.size_bytes {
            return Ok(Decision::Rejected(
                RejectReason::ChecksumMismatch,
                format!("received {} bytes; the manifest declares size_bytes {}", bytes.len(), entry.size_bytes),
                Some(sha256),
            ));
        }
        if sha256 != entry.sha256 {
            return Ok(Decision::Rejected(
                RejectReason::ChecksumMismatch,
                "the received bytes' sha256 differs from the manifest's".into(),
                Some(sha256),
            ));
        }
        if bytes.is_empty() {
            return Ok(Decision::Rejected(RejectReason::UnsupportedFormat, "the file is empty".into(), Some(sha256)));
        }
        let empty = Value::Object(Map::new());
        let metadata = entry.metadata.as_ref().unwrap_or(&empty);
        Ok(match self.vet(config, schema, &bytes, Some(&entry.mime_type), &entry.filename, metadata).await? {
            Ok(v) => Decision::Accepted { bytes, mime: v.mime, scan: v.scan.result },
            Err(Problem::Infected(signature)) => Decision::Quarantined(signature),
            Err(Problem::Reject(reason, message)) => Decision::Rejected(reason, message, Some(sha256)),
        })
    }
}

enum Decision {
    Accepted {
        bytes: Bytes,
        mime: &'static str,
        scan: ScanResult,
    },
    /// Reason, message, and the received bytes' sha256 when they were read whole.
    Rejected(RejectReason, String, Option<String>),
    Quarantined(String),
}

fn parse_job(doc: &DocumentRecord) -> NewJob {
    let doc_id = doc.doc_id.to_string();
    NewJob::new(Stage::Parse, &doc_id, json!({"doc_id": doc_id})).dedupe_key(format!("parse:{doc_id}"))
}

fn ingested_event(
    actor: &str,
    doc: &DocumentRecord,
    scan: &str,
    batch: Option<(&str, &ManifestFile)>,
) -> NewAuditEvent {
    let mut details = json!({
        "component": "intake",
        "status": "accepted",
        "receipt_id": doc.receipt_id.to_string(),
        "input_hash": doc.raw_sha256,
        "mime_type": doc.mime_type,
        "size_bytes": doc.size_bytes,
        "scan_result": scan,
    });
    if let Some((batch_id, entry)) = batch {
        details["batch_id"] = Value::from(batch_id);
        details["file_id"] = Value::from(entry.file_id.as_str());
    }
    NewAuditEvent::new("DOCUMENT_INGESTED", actor, "document", doc.doc_id.to_string(), details)
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

    #[test]
    fn declared_types_agree_with_known_equivalences_only() {
        assert!(declared_type_agrees("text/markdown; charset=utf-8", mime::MARKDOWN));
        assert!(declared_type_agrees("text/plain", mime::CSV), "CSV as text");
        assert!(declared_type_agrees("text/plain", mime::MARKDOWN), "Markdown as text");
        assert!(declared_type_agrees("application/zip", mime::DOCX), "OOXML as zip");
        assert!(declared_type_agrees("application/x-zip-compressed", mime::XLSX));
        assert!(declared_type_agrees("text/x-markdown", mime::MARKDOWN));
        assert!(!declared_type_agrees("text/plain", mime::PDF), "a PDF that claims to be text");
        assert!(!declared_type_agrees("application/pdf", mime::TEXT));
        assert!(!declared_type_agrees("application/zip", mime::PDF));
        assert!(!declared_type_agrees("image/png", mime::TEXT));
    }

    #[test]
    fn the_daily_quota_resets_at_utc_midnight() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-02-08T23:59:30Z").unwrap().with_timezone(&Utc);
        let (start, wait) = utc_day(now);
        assert_eq!(frostbyte_core::format_timestamp(&start), "2026-02-08T00:00:00.000000Z");
        assert_eq!(wait, 30);
    }
}
