//! Document lifecycle use-cases: erasure with a verified receipt (GDPR right to erasure), replacement of a
//! document's content under the same id, export of everything supplied and derived (portability), and the check
//! that keeps pipeline jobs from leaving anything of an erased or superseded document ([`settle_job`]; workers
//! admit a batch's jobs by [`crate::lifecycle::job_generation`] against `DocumentStore::documents_at`). The
//! domain rules (generations, keys) are in [`crate::lifecycle`].
//!
//! Concurrency, as defined here and tested through the API:
//! - erasure wins over everything: a replacement that commits first is erased with the rest; one that comes
//!   second finds no document (`NotFound`, and the bytes it uploaded are removed again when nothing else uses
//!   them); a pipeline job of the erased document ends without writing (its guarded writes answer `NotFound`,
//!   and [`settle_job`] removes any blob it wrote before noticing);
//! - concurrent replacements serialise on the generation (compare-and-set); the last to commit is the version
//!   that gets indexed, and the jobs of every earlier one end without writing.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::documents::{DocumentRecord, DocumentStore, raw_blob_key};
use crate::error::StoreError;
use crate::ids::TenantId;
use crate::index::{ChunkIndex, IndexedChunk};
use crate::lifecycle::{
    DocumentErasure, DocumentResidue, ReplacementContent, canonical_key, derived_prefixes, policed_key, stage_job,
};
use crate::ports::{BlobError, BlobStore, MetadataStore};
use crate::queue::Stage;
use crate::service::tenants::{Actor, ServiceError, ServiceResult};

/// How many times the blob sweep and its verification run before an erasure is reported as unverified (a
/// pipeline job that was mid-write when the erasure committed can leave a blob between two sweeps).
const SWEEP_ROUNDS: usize = 3;
/// How many times a replacement retries when another replacement moved the generation on first.
const REPLACE_ATTEMPTS: usize = 3;

/// What an erasure removed, per store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErasureRemoved {
    /// Raw blobs removed (0 when another live document of the tenant shares the bytes; see `raw_retained`).
    pub raw: u64,
    /// Canonical JSON blobs removed (every generation).
    pub canonical: u64,
    /// Policed (redacted) JSON blobs removed (every generation).
    pub policed: u64,
    pub chunks: u64,
    pub vectors: u64,
    pub keyword: u64,
    /// Jobs of the document removed from the queue (queued, finished and dead-lettered ones).
    pub jobs: u64,
}

/// What the verification sweep found after the erasure: every count zero, no document row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErasureVerification {
    pub document_row: bool,
    pub chunks: u64,
    pub pending_jobs: u64,
    /// Derived blobs (canonical, policed) of any generation still present.
    pub derived_blobs: u64,
    /// Whether the raw blob is still present although no live document references it.
    pub raw_blob: bool,
}

impl ErasureVerification {
    fn clean(&self) -> bool {
        !self.document_row && self.chunks == 0 && self.pending_jobs == 0 && self.derived_blobs == 0 && !self.raw_blob
    }
}

/// The erasure receipt (`DELETE /api/v1/tenants/{tenant_id}/documents/{doc_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErasureReceipt {
    pub doc_id: Uuid,
    /// The generation that was live when the document was erased.
    pub generation: u64,
    pub erased_at: DateTime<Utc>,
    pub removed: ErasureRemoved,
    /// The sha256 of the raw bytes (a hash, not content).
    pub raw_sha256: String,
    /// `true` when the raw bytes were kept because another live document of the tenant has identical content
    /// (raw bytes are stored once per tenant and content); they go with the last document that uses them.
    pub raw_retained: bool,
    /// `true`: every store was re-read after the erasure and holds nothing of the document.
    pub verified: bool,
    pub verification: ErasureVerification,
    /// `true` when the document had been erased by an earlier request: this one only swept and verified the
    /// blobs again (finishing an erasure the blob store interrupted), and `removed` counts what it found.
    pub already_erased: bool,
    /// The `DOCUMENT_ERASED` audit event (ids, counts and hashes only).
    pub audit_event_type: String,
}

/// New content for a document, as the HTTP layer read and checked it.
#[derive(Debug, Clone)]
pub struct NewContent {
    pub bytes: Bytes,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256: String,
    pub original_filename: String,
    /// The sniffed type, already checked against the tenant's allowlist.
    pub mime_type: String,
    /// `Some` replaces the stored metadata; `None` keeps it.
    pub metadata: Option<Value>,
    /// `Some` replaces the stored collection (`Some(None)` clears it); `None` keeps it.
    pub collection: Option<Option<String>>,
}

/// Everything the tenant supplied for a document and everything derived from it.
#[derive(Debug, Clone)]
pub struct DocumentExport {
    pub record: DocumentRecord,
    pub generation: u64,
    /// The raw bytes, when they were at most the caller's inline limit (else only hash and size are exported).
    pub raw: Option<Bytes>,
    /// The canonical and policed documents of the live generation, when the pipeline has produced them.
    pub canonical: Option<Value>,
    pub policed: Option<Value>,
    /// The indexed chunks (text, offsets, policy outcome, embed model, vector), by position. During a
    /// replacement these are still the previous version's, until the new ones are swapped in.
    pub chunks: Vec<IndexedChunk>,
}

/// Erasure, replacement and export of documents.
#[derive(Clone)]
pub struct DocumentLifecycle {
    store: Arc<dyn MetadataStore>,
    documents: Arc<dyn DocumentStore>,
    index: Arc<dyn ChunkIndex>,
    blobs: Arc<dyn BlobStore>,
}

fn doc_event(kind: &str, actor: &str, doc_id: Uuid, details: Value) -> NewAuditEvent {
    NewAuditEvent::new(kind, actor, "document", doc_id.to_string(), details)
}

impl DocumentLifecycle {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        documents: Arc<dyn DocumentStore>,
        index: Arc<dyn ChunkIndex>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        DocumentLifecycle { store, documents, index, blobs }
    }

    /// Erases a document from every store and verifies it: the metadata transaction (chunks, vectors, keyword
    /// entries, jobs, the row → tombstone, `DOCUMENT_ERASED`), then the blobs (every generation's canonical and
    /// policed JSON; the raw bytes unless another live document shares them), then a sweep that re-reads every
    /// store, then `DOCUMENT_ERASURE_VERIFIED`. `NotFound` for an unknown, foreign or already erased document.
    pub async fn erase(&self, tenant: &TenantId, doc_id: Uuid, actor: &Actor) -> ServiceResult<ErasureReceipt> {
        let actor_name = actor.to_string();
        let audit_actor = actor_name.clone();
        let audit: crate::lifecycle::ErasureAudit = Box::new(move |e: &DocumentErasure| {
            doc_event(
                "DOCUMENT_ERASED",
                &audit_actor,
                e.doc_id,
                json!({
                    "component": "lifecycle",
                    "status": "erased",
                    "generation": e.generation,
                    "input_hash": e.raw_sha256,
                    "chunks": e.index.chunks,
                    "vectors": e.index.vectors,
                    "keyword": e.index.keyword,
                    "jobs": e.jobs,
                }),
            )
        });
        let (erasure, already_erased) = match self.documents.erase_document(tenant, doc_id, audit).await? {
            Some(erasure) => (erasure, false),
            // Erased before: a repeated DELETE finishes (and verifies again) the blob sweep that an outage of the
            // blob store may have interrupted. Only the tenant that erased the document has its tombstone.
            None => {
                let tomb =
                    self.documents.get_tombstone(tenant, doc_id).await?.ok_or(ServiceError::NotFound("document"))?;
                let erasure = DocumentErasure {
                    doc_id,
                    generation: tomb.generation,
                    raw_sha256: tomb.raw_sha256,
                    index: crate::index::IndexRemoval::default(),
                    jobs: 0,
                    erased_at: tomb.erased_at,
                };
                (erasure, true)
            }
        };
        let mut removed = ErasureRemoved {
            chunks: erasure.index.chunks,
            vectors: erasure.index.vectors,
            keyword: erasure.index.keyword,
            jobs: erasure.jobs,
            ..ErasureRemoved::default()
        };
        let mut verification = ErasureVerification::default();
        let mut raw_retained = false;
        for _ in 0..SWEEP_ROUNDS {
            let (canonical, policed) = self.sweep_derived(tenant, &doc_id, None).await?;
            removed.canonical += canonical;
            removed.policed += policed;
            raw_retained = self.documents.raw_references(tenant, &erasure.raw_sha256).await? > 0;
            // No raw key extends another (`raw/` and 64 hex digits), so the key is a prefix of itself alone (and of
            // the staging files an interrupted write to it left).
            if !raw_retained {
                removed.raw += self.blobs.delete_prefix(tenant, &raw_blob_key(&erasure.raw_sha256)).await?;
            }
            verification = self.verify(tenant, &doc_id, &erasure.raw_sha256, raw_retained).await?;
            if verification.clean() {
                break;
            }
        }
        if !verification.clean() {
            return Err(ServiceError::Store(StoreError::Internal(format!(
                "erasure of document {doc_id} could not be verified: {verification:?}"
            ))));
        }
        self.store
            .append_audit(
                tenant,
                doc_event(
                    "DOCUMENT_ERASURE_VERIFIED",
                    &actor_name,
                    doc_id,
                    json!({
                        "component": "lifecycle",
                        "status": "verified",
                        "generation": erasure.generation,
                        "input_hash": erasure.raw_sha256,
                        "raw_removed": removed.raw,
                        "raw_retained": raw_retained,
                        "canonical_removed": removed.canonical,
                        "policed_removed": removed.policed,
                        "verified": true,
                        "repeated": already_erased,
                    }),
                ),
            )
            .await?;
        Ok(ErasureReceipt {
            doc_id,
            generation: erasure.generation,
            erased_at: erasure.erased_at,
            removed,
            raw_sha256: erasure.raw_sha256,
            raw_retained,
            verified: true,
            verification,
            already_erased,
            audit_event_type: "DOCUMENT_ERASED".into(),
        })
    }

    /// Re-reads every store for what is left of an erased document.
    async fn verify(
        &self,
        tenant: &TenantId,
        doc_id: &Uuid,
        raw_sha256: &str,
        raw_retained: bool,
    ) -> ServiceResult<ErasureVerification> {
        let DocumentResidue { row, chunks, pending_jobs } = self.documents.document_residue(tenant, *doc_id).await?;
        // The index port, read separately from the row counts: what a search or a document view would see.
        let indexed = self.index.document_chunks(tenant, &doc_id.to_string()).await?.len() as u64;
        let mut derived_blobs = 0;
        for prefix in derived_prefixes(doc_id) {
            derived_blobs += self.blobs.list(tenant, &prefix).await?.len() as u64;
        }
        let raw_blob = !raw_retained && self.blobs.exists(tenant, &raw_blob_key(raw_sha256)).await?;
        Ok(ErasureVerification {
            document_row: row || self.documents.get_document(tenant, *doc_id).await?.is_some(),
            chunks: chunks.max(indexed),
            pending_jobs,
            derived_blobs,
            raw_blob,
        })
    }

    /// Deletes a document's derived blobs: of one generation, or of every generation when `generation` is
    /// `None`. Returns how many canonical and policed blobs went.
    async fn sweep_derived(
        &self,
        tenant: &TenantId,
        doc_id: &Uuid,
        generation: Option<u64>,
    ) -> ServiceResult<(u64, u64)> {
        let (mut canonical, mut policed) = (0, 0);
        for prefix in derived_blob_prefixes(doc_id, generation) {
            let removed = self.blobs.delete_prefix(tenant, &prefix).await?;
            if prefix.starts_with("canonical/") {
                canonical += removed;
            } else {
                policed += removed;
            }
        }
        Ok((canonical, policed))
    }

    /// Replaces a live document's content under the same id: stores the new raw bytes, moves the document to
    /// the next generation with a parse job for it (`DOCUMENT_REPLACED` in the same transaction), then removes
    /// what only the previous version used (its canonical and policed JSON; its raw bytes unless another live
    /// document shares them). The previous chunks stay searchable until the new version's index stage swaps them
    /// out in one transaction. Returns the record and its new generation. `NotFound` for an unknown, foreign or
    /// erased document.
    pub async fn replace(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        content: NewContent,
        actor: &Actor,
    ) -> ServiceResult<(DocumentRecord, u64)> {
        let raw_key = raw_blob_key(&content.sha256);
        for _ in 0..REPLACE_ATTEMPTS {
            // Generation first: if another replacement commits before the record is read, the compare-and-set
            // below fails and this one retries, so the metadata it keeps is never an older version's.
            let generation =
                self.documents.document_generation(tenant, doc_id).await?.ok_or(ServiceError::NotFound("document"))?;
            let current =
                self.documents.get_document(tenant, doc_id).await?.ok_or(ServiceError::NotFound("document"))?;
            if !self.blobs.exists(tenant, &raw_key).await? {
                self.blobs.put(tenant, &raw_key, content.bytes.clone()).await?;
            }
            let next = generation + 1;
            let replacement = ReplacementContent {
                receipt_id: crate::ids::new_id(),
                original_filename: content.original_filename.clone(),
                mime_type: content.mime_type.clone(),
                size_bytes: content.bytes.len() as u64,
                raw_sha256: content.sha256.clone(),
                metadata: content.metadata.clone().unwrap_or_else(|| current.metadata.clone()),
                collection: content.collection.clone().unwrap_or_else(|| current.collection.clone()),
            };
            let audit = doc_event(
                "DOCUMENT_REPLACED",
                &actor.to_string(),
                doc_id,
                json!({
                    "component": "lifecycle",
                    "status": "accepted",
                    "generation": next,
                    "previous_generation": generation,
                    "receipt_id": replacement.receipt_id.to_string(),
                    "input_hash": replacement.raw_sha256,
                    "previous_hash": current.raw_sha256,
                    "mime_type": replacement.mime_type,
                    "size_bytes": replacement.size_bytes,
                    "scan_result": "skipped",
                }),
            );
            let job = stage_job(Stage::Parse, doc_id, next);
            match self.documents.replace_content(tenant, doc_id, generation, &replacement, job, audit).await {
                Ok(record) => {
                    self.sweep_derived(tenant, &doc_id, Some(generation)).await?;
                    if current.raw_sha256 != content.sha256 {
                        self.remove_unreferenced_raw(tenant, &current.raw_sha256).await?;
                    }
                    return Ok((record, next));
                }
                // Another replacement committed first: try again on top of it.
                Err(StoreError::Conflict(_)) => continue,
                Err(StoreError::NotFound { .. }) => {
                    // Erased meanwhile: erasure wins, and the bytes just stored must not outlive it.
                    self.remove_unreferenced_raw(tenant, &content.sha256).await?;
                    return Err(ServiceError::NotFound("document"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict("the document is being replaced concurrently; retry".into()))
    }

    async fn remove_unreferenced_raw(&self, tenant: &TenantId, sha256: &str) -> ServiceResult<()> {
        if self.documents.raw_references(tenant, sha256).await? == 0 {
            self.blobs.delete_prefix(tenant, &raw_blob_key(sha256)).await?;
        }
        Ok(())
    }

    /// Everything the tenant supplied for a live document and everything derived from it; the raw bytes are
    /// included when they are at most `inline_raw_limit` bytes. Audited as `DOCUMENT_EXPORTED` (ids and
    /// counts). `NotFound` for an unknown, foreign or erased document.
    pub async fn export(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        inline_raw_limit: u64,
        actor: &Actor,
    ) -> ServiceResult<DocumentExport> {
        let record = self.documents.get_document(tenant, doc_id).await?.ok_or(ServiceError::NotFound("document"))?;
        let generation =
            self.documents.document_generation(tenant, doc_id).await?.ok_or(ServiceError::NotFound("document"))?;
        let raw = if record.size_bytes <= inline_raw_limit {
            self.optional_blob(tenant, &raw_blob_key(&record.raw_sha256)).await?
        } else {
            None
        };
        let canonical = self.optional_json(tenant, &canonical_key(&doc_id, generation)).await?;
        let policed = self.optional_json(tenant, &policed_key(&doc_id, generation)).await?;
        let chunks = self.index.document_chunks(tenant, &doc_id.to_string()).await?;
        self.store
            .append_audit(
                tenant,
                doc_event(
                    "DOCUMENT_EXPORTED",
                    &actor.to_string(),
                    doc_id,
                    json!({
                        "component": "lifecycle",
                        "status": "ok",
                        "generation": generation,
                        "input_hash": record.raw_sha256,
                        "raw_included": raw.is_some(),
                        "chunks": chunks.len(),
                    }),
                ),
            )
            .await?;
        Ok(DocumentExport { record, generation, raw, canonical, policed, chunks })
    }

    async fn optional_blob(&self, tenant: &TenantId, key: &str) -> ServiceResult<Option<Bytes>> {
        match self.blobs.get(tenant, key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(BlobError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn optional_json(&self, tenant: &TenantId, key: &str) -> ServiceResult<Option<Value>> {
        let Some(bytes) = self.optional_blob(tenant, key).await? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| ServiceError::Store(StoreError::Internal(format!("{key} is not valid JSON"))))
    }
}

/// Runs after a document job: if the document was erased or superseded while the job ran, removes the derived
/// blobs the job may have written (every generation's for an erased document; the job's generation's for a
/// superseded one) and answers `true`: the job is over and nothing it did survives. `false` when the document is
/// still at the job's generation.
pub async fn settle_job(
    documents: &dyn DocumentStore,
    blobs: &dyn BlobStore,
    tenant: &TenantId,
    doc_id: Uuid,
    generation: u64,
) -> Result<bool, ServiceError> {
    let generation = match documents.document_generation(tenant, doc_id).await? {
        Some(current) if current == generation => return Ok(false),
        Some(_) => Some(generation),
        None => None,
    };
    for prefix in derived_blob_prefixes(&doc_id, generation) {
        blobs.delete_prefix(tenant, &prefix).await?;
    }
    Ok(true)
}

/// The prefixes ([`BlobStore::delete_prefix`]) of a document's derived blobs: one generation's canonical and
/// policed keys, or every generation's ([`derived_prefixes`]). A generation's key is a prefix of no other key
/// (`canonical/{id}.json`, `canonical/{id}.g{n}.json`), so it stands for itself and its interrupted writes.
fn derived_blob_prefixes(doc_id: &Uuid, generation: Option<u64>) -> Vec<String> {
    match generation {
        Some(g) => vec![canonical_key(doc_id, g), policed_key(doc_id, g)],
        None => derived_prefixes(doc_id).to_vec(),
    }
}
