//! Batch intake: the manifest a client sends with `POST /api/v1/ingest/{tenant}/batch`, its validation, the
//! per-file outcomes intake decides, the persisted batch record that `GET …/batch/{batch_id}` reads (so status
//! survives restarts), and the tenant's metadata schema with its merge rule.
//!
//! Whole-batch problems (a bad manifest, a count that does not add up, a repeated `file_id`, too many files)
//! reject the request before anything is stored; per-file problems ([`RejectReason`]) reject only that file.
//! [`BatchStore::create_batch`] then writes the batch, its per-file rows, every accepted document with its parse
//! job, and every audit event in one transaction.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::documents::DocumentRecord;
use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::queue::NewJob;
use crate::tenant::FieldViolation;

/// Longest client-chosen id (`batch_id`, `file_id`).
pub const MAX_CLIENT_ID_CHARS: usize = 128;
/// Longest filename kept.
pub const MAX_FILENAME_CHARS: usize = 255;
/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// One file as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManifestFile {
    pub file_id: String,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// The batch manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    pub batch_id: String,
    pub tenant_id: String,
    pub file_count: u64,
    #[serde(default)]
    pub collection: Option<String>,
    #[serde(default)]
    pub submitter: Option<String>,
    pub files: Vec<ManifestFile>,
}

/// Why a whole batch was refused. Nothing is stored for any of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// `MANIFEST_INVALID`: unparsable JSON, missing or invalid fields, the wrong tenant, or file parts that match
    /// no manifest entry.
    #[error("the manifest is invalid")]
    Invalid(Vec<FieldViolation>),
    /// `MANIFEST_FILE_COUNT_MISMATCH`: `file_count`, `files[]` and the parts received disagree.
    #[error("file_count is {declared}, but the manifest lists {listed} file(s) and {received} file part(s) arrived")]
    FileCountMismatch { declared: u64, listed: u64, received: u64 },
    /// `DUPLICATE_FILE_ID`.
    #[error("file_id {0:?} appears more than once in the manifest")]
    DuplicateFileId(String),
    /// More files than the tenant's `max_batch_size` (`MANIFEST_INVALID`).
    #[error("the batch has {count} files; this tenant accepts at most {max} per batch")]
    TooManyFiles { count: u64, max: u32 },
}

fn is_client_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= MAX_CLIENT_ID_CHARS
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses and checks a manifest against the path's tenant and the tenant's `max_batch_size`. Every field problem
/// is reported at once. The parts received are checked later ([`check_part_count`]).
pub fn parse_manifest(raw: &[u8], path_tenant: &TenantId, max_batch_size: u32) -> Result<Manifest, ManifestError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        ManifestError::Invalid(vec![FieldViolation::new("manifest", Value::Null, format!("a JSON object ({e})"))])
    })?;
    let mut manifest: Manifest = serde_json::from_value(value).map_err(|e| {
        // serde's message names the field and the expected type, never a value.
        ManifestError::Invalid(vec![FieldViolation::new("manifest", Value::Null, e.to_string())])
    })?;
    let mut problems = Vec::new();
    if !is_client_id(&manifest.batch_id) {
        problems.push(FieldViolation::new(
            "batch_id",
            Value::from(manifest.batch_id.chars().take(MAX_CLIENT_ID_CHARS).collect::<String>()),
            "1 to 128 characters from A-Z a-z 0-9 - _ . :",
        ));
    }
    if manifest.tenant_id != path_tenant.as_str() {
        problems.push(FieldViolation::new("tenant_id", Value::Null, "the tenant id in the request path"));
    }
    if let Some(c) = &manifest.collection
        && (c.trim().is_empty() || c.chars().count() > 256)
    {
        problems.push(FieldViolation::new("collection", Value::Null, "1 to 256 characters when present"));
    }
    if manifest.submitter.as_ref().is_some_and(|s| s.chars().count() > 256) {
        problems.push(FieldViolation::new("submitter", Value::Null, "at most 256 characters"));
    }
    for (i, f) in manifest.files.iter_mut().enumerate() {
        if !is_client_id(&f.file_id) {
            problems.push(FieldViolation::new(
                format!("files[{i}].file_id"),
                Value::from(f.file_id.chars().take(MAX_CLIENT_ID_CHARS).collect::<String>()),
                "1 to 128 characters from A-Z a-z 0-9 - _ . :",
            ));
        }
        if f.filename.trim().is_empty() || f.filename.chars().count() > MAX_FILENAME_CHARS {
            problems.push(FieldViolation::new(format!("files[{i}].filename"), Value::Null, "1 to 255 characters"));
        }
        if !f.mime_type.contains('/') || f.mime_type.len() > 255 {
            problems.push(FieldViolation::new(
                format!("files[{i}].mime_type"),
                Value::from(f.mime_type.chars().take(64).collect::<String>()),
                "a MIME type such as text/plain",
            ));
        }
        if is_sha256(&f.sha256) {
            f.sha256.make_ascii_lowercase();
        } else {
            problems.push(FieldViolation::new(format!("files[{i}].sha256"), Value::Null, "64 hexadecimal characters"));
        }
        if f.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            problems.push(FieldViolation::new(format!("files[{i}].metadata"), Value::Null, "a JSON object"));
        }
    }
    if !problems.is_empty() {
        return Err(ManifestError::Invalid(problems));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = manifest.files.iter().find(|f| !seen.insert(f.file_id.as_str())) {
        return Err(ManifestError::DuplicateFileId(dup.file_id.clone()));
    }
    let listed = manifest.files.len() as u64;
    if manifest.file_count != listed {
        return Err(ManifestError::FileCountMismatch { declared: manifest.file_count, listed, received: 0 });
    }
    if listed == 0 {
        return Err(ManifestError::Invalid(vec![FieldViolation::new("files", Value::Null, "at least one file")]));
    }
    if listed > u64::from(max_batch_size) {
        return Err(ManifestError::TooManyFiles { count: listed, max: max_batch_size });
    }
    Ok(manifest)
}

/// Checks that exactly one part arrived per manifest entry.
pub fn check_part_count(manifest: &Manifest, received: u64) -> Result<(), ManifestError> {
    let listed = manifest.files.len() as u64;
    if received != listed {
        return Err(ManifestError::FileCountMismatch { declared: manifest.file_count, listed, received });
    }
    Ok(())
}

/// Which manifest entry a file part belongs to: the entry whose `file_id` is the part's filename, or else the
/// entry at the part's position (the n-th file part belongs to `files[n]`). `taken` marks entries that already
/// have their part. `None`: the part matches no entry (its entry already has a part, or it is past the end).
pub fn match_part(manifest: &Manifest, taken: &[bool], position: usize, part_filename: Option<&str>) -> Option<usize> {
    if let Some(name) = part_filename
        && let Some(i) = manifest.files.iter().position(|f| f.file_id == name)
    {
        return (!taken[i]).then_some(i);
    }
    (position < manifest.files.len() && !taken[position]).then_some(position)
}

/// Why one file of a batch was not accepted (the other files still are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    ChecksumMismatch,
    SizeExceeded,
    UnsupportedFormat,
    MalwareDetected,
    SchemaViolation,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::ChecksumMismatch,
        RejectReason::SizeExceeded,
        RejectReason::UnsupportedFormat,
        RejectReason::MalwareDetected,
        RejectReason::SchemaViolation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::ChecksumMismatch => "CHECKSUM_MISMATCH",
            RejectReason::SizeExceeded => "SIZE_EXCEEDED",
            RejectReason::UnsupportedFormat => "UNSUPPORTED_FORMAT",
            RejectReason::MalwareDetected => "MALWARE_DETECTED",
            RejectReason::SchemaViolation => "SCHEMA_VIOLATION",
        }
    }

    pub fn parse(s: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What the submitter can do about it.
    pub fn remediation(self) -> &'static str {
        match self {
            RejectReason::ChecksumMismatch => {
                "recompute the file's sha256 and size_bytes from the exact bytes you upload and resubmit; the file \
                 may have been altered or truncated in transit"
            }
            RejectReason::SizeExceeded => {
                "split or compress the file to fit the tenant's max_file_size_mb, or ask an administrator to raise it"
            }
            RejectReason::UnsupportedFormat => {
                "declare the type the content really has (mime_type must agree with the bytes) and use a format on \
                 the tenant's mime_allowlist: PDF, DOCX, XLSX, PPTX, plain text, Markdown, HTML, CSV or JSON"
            }
            RejectReason::MalwareDetected => {
                "the file matched a malware signature and was quarantined, not stored; clean the source and \
                 resubmit, or contact your security team if you believe this is a false positive"
            }
            RejectReason::SchemaViolation => {
                "fix the file's metadata to satisfy the tenant's metadata schema (GET /api/v1/tenants/{tenant_id}/schema) \
                 and resubmit"
            }
        }
    }
}

/// Whether the pipeline may use a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileOutcome {
    Accepted,
    Rejected,
    Quarantined,
}

impl FileOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            FileOutcome::Accepted => "accepted",
            FileOutcome::Rejected => "rejected",
            FileOutcome::Quarantined => "quarantined",
        }
    }

    pub fn parse(s: &str) -> Option<FileOutcome> {
        [FileOutcome::Accepted, FileOutcome::Rejected, FileOutcome::Quarantined].into_iter().find(|o| o.as_str() == s)
    }
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchRecord {
    pub batch_id: String,
    pub file_count: u64,
    pub collection: Option<String>,
    pub submitter: Option<String>,
    pub accepted: u64,
    pub rejected: u64,
    pub quarantined: u64,
    pub created_at: DateTime<Utc>,
}

/// One file of a batch as stored: what the manifest declared and what intake decided. No content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchFileRecord {
    pub file_id: String,
    /// Index in the manifest's `files[]`.
    pub position: u32,
    pub filename: String,
    pub declared_mime: String,
    pub size_bytes: u64,
    /// The declared sha256 (the received bytes' hash equals it unless the reason is `CHECKSUM_MISMATCH`).
    pub sha256: String,
    pub outcome: FileOutcome,
    pub reason: Option<RejectReason>,
    /// What went wrong, in words (no content).
    pub message: Option<String>,
    /// Set for accepted files.
    pub doc_id: Option<Uuid>,
    pub receipt_id: Uuid,
    /// `clean`, `quarantined` or `skipped` (`crate::scan::ScanResult`); `null` when the file was never scanned.
    pub scan_result: Option<String>,
    /// The malware signature, for quarantined files.
    pub signature: Option<String>,
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub batch: BatchRecord,
    pub files: Vec<BatchFileRecord>,
    /// Accepted documents, each with its parse job.
    pub documents: Vec<(DocumentRecord, NewJob)>,
    /// `BATCH_RECEIVED`, then one `DOCUMENT_INGESTED` / `DOCUMENT_REJECTED` / `DOCUMENT_QUARANTINED` per file.
    pub audit: Vec<NewAuditEvent>,
}

/// A tenant's JSON Schema for custom document metadata, versioned from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetadataSchema {
    pub version: i64,
    #[schema(value_type = Object)]
    pub schema: Value,
    pub updated_at: DateTime<Utc>,
}

/// Merges a partial schema into `base` (PATCH): `properties` merged key by key (a patched property replaces
/// that property only), `required` unioned (order kept, no repeats), every other top-level keyword replaced.
/// Sibling properties the patch does not name are kept.
pub fn merge_schema(base: &Value, patch: &Map<String, Value>) -> Value {
    let mut out = base.as_object().cloned().unwrap_or_default();
    for (key, value) in patch {
        match (key.as_str(), out.get_mut(key), value) {
            ("properties", Some(Value::Object(existing)), Value::Object(new)) => {
                for (name, prop) in new {
                    existing.insert(name.clone(), prop.clone());
                }
            }
            ("required", Some(Value::Array(existing)), Value::Array(new)) => {
                for name in new {
                    if !existing.contains(name) {
                        existing.push(name.clone());
                    }
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

/// Usage figures intake checks quotas against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntakeUsage {
    /// Raw bytes stored for the tenant (each distinct sha256 once).
    pub raw_bytes: u64,
    /// Documents accepted since the start of the current UTC day.
    pub documents_today: u64,
}

/// Batches, their files and the tenant metadata schema, implemented by both metadata stores. Tenant first; another
/// tenant's batch is `None`.
#[async_trait]
pub trait BatchStore: Send + Sync + 'static {
    /// Writes the batch, its files, its accepted documents with their parse jobs and every audit event, in one
    /// transaction. `AlreadyExists` when the tenant already has a batch with this id; `NotFound` for an unknown
    /// tenant.
    async fn create_batch(&self, tenant: &TenantId, batch: NewBatch) -> StoreResult<()>;
    async fn get_batch(&self, tenant: &TenantId, batch_id: &str) -> StoreResult<Option<BatchRecord>>;
    /// The batch's files in manifest order.
    async fn batch_files(&self, tenant: &TenantId, batch_id: &str) -> StoreResult<Vec<BatchFileRecord>>;
    /// The batch file holding a receipt, with its batch id.
    async fn batch_file_by_receipt(
        &self,
        tenant: &TenantId,
        receipt_id: Uuid,
    ) -> StoreResult<Option<(String, BatchFileRecord)>>;
    /// Raw bytes stored and documents accepted today (`since` is the start of the UTC day).
    async fn intake_usage(&self, tenant: &TenantId, since: DateTime<Utc>) -> StoreResult<IntakeUsage>;
    async fn get_metadata_schema(&self, tenant: &TenantId) -> StoreResult<Option<MetadataSchema>>;
    /// Stores `schema` as the next version, if the current version is still `expected_version` (`None`: no schema
    /// yet), appending `audit` in the same transaction. `Conflict` when someone else changed it first.
    async fn put_metadata_schema(
        &self,
        tenant: &TenantId,
        schema: &Value,
        expected_version: Option<i64>,
        audit: NewAuditEvent,
    ) -> StoreResult<MetadataSchema>;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn manifest(files: Value) -> Vec<u8> {
        let n = files.as_array().map_or(0, Vec::len);
        serde_json::to_vec(&json!({"batch_id": "b-1", "tenant_id": "acme", "file_count": n, "files": files})).unwrap()
    }

    fn file(id: &str) -> Value {
        json!({"file_id": id, "filename": format!("{id}.txt"), "mime_type": "text/plain", "size_bytes": 3,
               "sha256": "A".repeat(64)})
    }

    #[test]
    fn a_good_manifest_parses_and_lowercases_hashes() {
        let m = parse_manifest(&manifest(json!([file("f1"), file("f2")])), &tenant(), 10).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[0].sha256, "a".repeat(64));
    }

    #[test]
    fn whole_batch_problems_are_typed() {
        let t = tenant();
        assert!(matches!(parse_manifest(b"{not json", &t, 10), Err(ManifestError::Invalid(_))));
        assert!(matches!(parse_manifest(br#"{"batch_id":"b"}"#, &t, 10), Err(ManifestError::Invalid(_))));
        let other = br#"{"batch_id":"b","tenant_id":"other","file_count":0,"files":[]}"#;
        let Err(ManifestError::Invalid(d)) = parse_manifest(other, &t, 10) else { panic!() };
        assert_eq!(d[0].field, "tenant_id");
        assert!(matches!(
            parse_manifest(&manifest(json!([file("f1"), file("f1")])), &t, 10),
            Err(ManifestError::DuplicateFileId(id)) if id == "f1"
        ));
        let mut v: Value = serde_json::from_slice(&manifest(json!([file("f1")]))).unwrap();
        v["file_count"] = json!(2);
        assert!(matches!(
            parse_manifest(&serde_json::to_vec(&v).unwrap(), &t, 10),
            Err(ManifestError::FileCountMismatch { declared: 2, listed: 1, .. })
        ));
        assert!(matches!(
            parse_manifest(&manifest(json!([file("f1"), file("f2")])), &t, 1),
            Err(ManifestError::TooManyFiles { count: 2, max: 1 })
        ));
        let mut bad = file("f1");
        bad["sha256"] = json!("xyz");
        let Err(ManifestError::Invalid(d)) = parse_manifest(&manifest(json!([bad])), &t, 10) else { panic!() };
        assert_eq!(d[0].field, "files[0].sha256");
    }

    #[test]
    fn parts_match_by_file_id_or_by_order() {
        let m = parse_manifest(&manifest(json!([file("f1"), file("f2")])), &tenant(), 10).unwrap();
        assert_eq!(match_part(&m, &[false, false], 0, Some("f2")), Some(1), "by file_id");
        assert_eq!(match_part(&m, &[false, true], 1, Some("f1.txt")), None, "order: entry 1 is taken");
        assert_eq!(match_part(&m, &[false, false], 0, Some("f1.txt")), Some(0), "by order");
        assert_eq!(match_part(&m, &[false, false], 1, None), Some(1));
        assert_eq!(match_part(&m, &[true, false], 1, Some("f1")), None, "its entry already has a part");
        assert_eq!(match_part(&m, &[false, false], 2, None), None, "past the end");
        assert!(check_part_count(&m, 1).is_err());
        assert!(check_part_count(&m, 2).is_ok());
    }

    #[test]
    fn patch_merges_properties_and_unions_required() {
        let base = json!({"type": "object", "properties": {"team": {"type": "string"}, "year": {"type": "integer"}},
                          "required": ["team"]});
        let patch = json!({"properties": {"year": {"type": "integer", "minimum": 2000}, "owner": {"type": "string"}},
                           "required": ["owner", "team"]});
        let merged = merge_schema(&base, patch.as_object().unwrap());
        assert_eq!(merged["properties"]["team"], json!({"type": "string"}), "sibling kept");
        assert_eq!(merged["properties"]["year"]["minimum"], json!(2000));
        assert_eq!(merged["properties"]["owner"], json!({"type": "string"}));
        assert_eq!(merged["required"], json!(["team", "owner"]));
        assert_eq!(merged["type"], json!("object"));
    }

    #[test]
    fn reasons_round_trip_and_carry_remediation() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::parse(r.as_str()), Some(r));
            assert!(!r.remediation().is_empty());
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
        }
    }
}
