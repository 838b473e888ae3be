//! The document lifecycle after intake: replace in place, erasure, and the erasure of a whole tenant. This module
//! holds the domain side (generations, the blob keys and jobs they imply, what an erasure removed); the use-cases
//! live in [`crate::service::lifecycle`].
//!
//! **Generations.** Every document row carries a generation, 1 at intake and one more at each replacement. A
//! pipeline job carries the generation it works for (`payload.generation`, 1 when absent), and every write a
//! stage makes is either keyed by that generation (its blobs: [`canonical_key`], [`policed_key`]) or committed
//! only while the document is still at it ([`crate::documents::DocumentStore::update_stage_at`],
//! [`crate::index::ChunkIndex::replace_document_chunks_at`], both checked inside the store's transaction). So a job
//! of a superseded version can never overwrite the newer one, and a job of an erased document can never write a
//! chunk: the document row is gone, so the guarded writes answer `NotFound`.
//!
//! **Erasure** removes the document row (leaving a tombstone with the id, the generation and the time only:
//! filenames and metadata may be personal data), its chunks with their vectors and keyword entries, and its
//! queued jobs in one transaction with the `DOCUMENT_ERASED` audit event; then its blobs; then a verification
//! sweep re-reads every store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::documents::canonical_blob_key;
use crate::index::IndexRemoval;
use crate::queue::{Job, NewJob, Stage};

/// The generation of a freshly ingested document.
pub const FIRST_GENERATION: u64 = 1;

/// The blob key of a document's canonical JSON at `generation`. Generation 1 keeps the key intake-era code knows
/// (`canonical/{doc_id}.json`); later ones get their own (`canonical/{doc_id}.g{n}.json`), so a superseded job
/// writing late cannot clobber the newer version's input.
pub fn canonical_key(doc_id: &Uuid, generation: u64) -> String {
    if generation <= FIRST_GENERATION {
        canonical_blob_key(doc_id)
    } else {
        format!("canonical/{doc_id}.g{generation}.json")
    }
}

/// The blob key of a document's policed (redacted) JSON at `generation` (`policed/{doc_id}.json`, then
/// `policed/{doc_id}.g{n}.json`).
pub fn policed_key(doc_id: &Uuid, generation: u64) -> String {
    if generation <= FIRST_GENERATION {
        format!("policed/{doc_id}.json")
    } else {
        format!("policed/{doc_id}.g{generation}.json")
    }
}

/// The key prefixes under which every generation of a document's derived blobs lives (string prefixes, as
/// [`crate::ports::BlobStore::list`] takes them).
pub fn derived_prefixes(doc_id: &Uuid) -> [String; 2] {
    [format!("canonical/{doc_id}."), format!("policed/{doc_id}.")]
}

/// The generation a document job works for: `payload.generation`, or 1 for jobs written before replacements
/// existed.
pub fn job_generation(job: &Job) -> u64 {
    job.payload.get("generation").and_then(Value::as_u64).unwrap_or(FIRST_GENERATION)
}

/// The job that runs `stage` for `doc_id` at `generation`. The dedupe key is per generation (`policy:{doc_id}` for
/// the first, `policy:{doc_id}:g2` after one replacement), so a replacement's jobs never collide with the jobs of
/// the version it replaced, while a redelivered stage still enqueues its successor only once.
pub fn stage_job(stage: Stage, doc_id: Uuid, generation: u64) -> NewJob {
    let key = if generation <= FIRST_GENERATION {
        format!("{stage}:{doc_id}")
    } else {
        format!("{stage}:{doc_id}:g{generation}")
    };
    NewJob::new(stage, doc_id.to_string(), json!({"doc_id": doc_id, "generation": generation})).dedupe_key(key)
}

/// What a replacement sets on the document row (the new content, as intake checked it). `metadata` and
/// `collection` are the values to store: the caller decides whether absent parts keep the old ones.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplacementContent {
    pub receipt_id: Uuid,
    pub original_filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub raw_sha256: String,
    pub metadata: Value,
    pub collection: Option<String>,
}

/// What the erasure transaction removed from the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentErasure {
    pub doc_id: Uuid,
    /// The generation that was live when the document was erased.
    pub generation: u64,
    /// The raw blob's sha256 (the blob is removed afterwards, unless another live document shares it).
    pub raw_sha256: String,
    pub index: IndexRemoval,
    /// Jobs of the document that were not running (queued, finished or dead-lettered).
    pub jobs: u64,
    pub erased_at: DateTime<Utc>,
}

/// Builds the audit event of an erasure from what the transaction removed, inside that transaction.
pub type ErasureAudit = Box<dyn FnOnce(&DocumentErasure) -> NewAuditEvent + Send>;

/// What is left of an erased document: its id, last generation, raw hash and when it went. Nothing the tenant
/// supplied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentTombstone {
    pub doc_id: Uuid,
    pub generation: u64,
    /// The raw blob's sha256 (a hash, not content): a repeated erasure re-checks that blob.
    pub raw_sha256: String,
    pub erased_at: DateTime<Utc>,
}

/// What the metadata store still holds of one document (the verification sweep wants all zero / false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentResidue {
    /// A live document row exists.
    pub row: bool,
    pub chunks: u64,
    /// Jobs of the document still waiting to run (queued, or dead and retryable).
    pub pending_jobs: u64,
}

impl DocumentResidue {
    pub fn is_empty(&self) -> bool {
        !self.row && self.chunks == 0 && self.pending_jobs == 0
    }
}

/// Rows of one tenant in the metadata store's document tables: what a tenant purge removed, or what is left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDocumentRows {
    pub documents: u64,
    pub tombstones: u64,
    pub chunks: u64,
    /// Every job of the tenant, dead-lettered ones (the DLQ) included.
    pub jobs: u64,
}

impl TenantDocumentRows {
    pub fn is_empty(&self) -> bool {
        *self == TenantDocumentRows::default()
    }
}

/// Builds the audit event of a tenant purge from what it removed, inside the purge's transaction.
pub type PurgeAudit = Box<dyn FnOnce(&TenantDocumentRows) -> NewAuditEvent + Send>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_generation_keeps_the_intake_keys_and_later_ones_get_their_own() {
        let id = Uuid::nil();
        assert_eq!(canonical_key(&id, 1), canonical_blob_key(&id));
        assert_eq!(policed_key(&id, 1), format!("policed/{id}.json"));
        assert_eq!(canonical_key(&id, 3), format!("canonical/{id}.g3.json"));
        for prefix in derived_prefixes(&id) {
            let matching = [canonical_key(&id, 1), canonical_key(&id, 2), policed_key(&id, 1), policed_key(&id, 9)]
                .into_iter()
                .filter(|k| k.starts_with(&prefix))
                .count();
            assert_eq!(matching, 2, "{prefix}");
        }
        // Another document's keys never match the prefix, even when its id extends this one's text.
        assert!(!format!("canonical/{id}0.json").starts_with(&derived_prefixes(&id)[0]));
    }

    #[test]
    fn stage_jobs_carry_their_generation() {
        let id = Uuid::now_v7();
        let first = stage_job(Stage::Policy, id, 1);
        assert_eq!(first.dedupe_key.as_deref(), Some(format!("policy:{id}").as_str()));
        let later = stage_job(Stage::Policy, id, 2);
        assert_eq!(later.dedupe_key.as_deref(), Some(format!("policy:{id}:g2").as_str()));
        assert_eq!(later.payload["generation"], json!(2));
    }
}
