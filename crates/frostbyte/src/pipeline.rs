//! The document pipeline's workers: claim a batch of jobs (one tenant, one stage), mark their stages `running`,
//! run them side by side while heartbeating the leases, record every outcome on its document in one transaction,
//! publish every transition on the event bus.
//!
//! - `parse`: raw bytes (`raw/{sha256}`, checked against the recorded sha256) → [`parse`] on a CPU thread
//!   ([`on_cpu`]) → canonical JSON at `canonical/{doc_id}.json` → `DOCUMENT_PARSED`, stage done + the `policy`
//!   job, in one transaction.
//! - `policy`: a [`Screener`](frostbyte_core::policy::Screener) handles PII in every block's text
//!   ([`CanonicalDocument::try_edit_text`]) and classifies the document as a whole; the policed document is
//!   saved at `policed/{doc_id}.json`. Found PII is recorded as `PII_DETECTED` (types and counts only). PII
//!   under `block` fails the gate (`POLICY_GATE_FAILED`, document quarantined, embed and index skipped);
//!   otherwise `POLICY_GATE_PASSED`, stage done + the `index` job. Injection is scored per chunk in the `index`
//!   stage, where its verdict applies.
//! - `index`: chunk the policed document → [`assess_chunk`] per chunk (injection quarantine) → embed with the
//!   tenant's embedder (its `embedding_model`, looked up in the [`EmbedderRegistry`]) → every vector checked
//!   ([`check_vectors`]) → the chunks (rows, vectors, keyword entries), `DOCUMENT_EMBEDDED`, `INDEX_WRITTEN`,
//!   embed and index done and the document `indexed`, in one transaction.
//!
//! **Hash chain.** Each stage's audit event carries `input_hash` and `output_hash`, and each stage's input is the
//! previous stage's output: raw sha256 → canonical hash (sha256 of the canonical JSON as stored) → policed hash
//! (the policed JSON as stored) → chunk-set hash ([`chunk_set_hash`]: model, chunk ids, text hashes, vectors) →
//! index hash ([`index_hash`]: the rows as written). Stages hash the bytes they read, so a blob changed between
//! stages shows as a broken link.
//!
//! **Chains.** A parse job does not stop at parsing: [`Pipeline::parse_onward`] runs policy on the canonical
//! document it holds, then the index stage on the policed document, and commits all three stages as one write
//! ([`StageWrite::then`]): their transitions, each stage's `DOCUMENT_STAGE_STARTED` and closing events in order,
//! the chunks and the job's completion. Both JSON blobs are still written, so the hash chain and exports are
//! those of separate stages. A chained stage that fails ends the chain without being recorded: the stages before
//! it commit with its job queued, and that job runs it again, with its own retries and dead-lettering. With
//! [`Pipeline::chain`] off every stage waits for its own job.
//!
//! **Batches.** [`Pipeline::try_run_one`] claims up to [`Pipeline::batch`] jobs with [`JobQueue::claim_batch`]:
//! one tenant's, of one stage. The jobs are admitted with one read of their documents (each live at its job's
//! generation and not quarantined), the admitted ones are marked `running` (`DOCUMENT_STAGE_STARTED`) in one
//! write, their stage work runs concurrently (parsing, JSON, policy, chunking and local embedding on a pool of
//! one thread per core shared across the process: [`on_cpu`]), and their outcomes commit in one
//! [`DocumentStore::apply_stage_writes`] transaction per [`FLUSH_BYTES`] of chunks and blobs, where one refused
//! write (a lost lease, a superseded generation) costs only its own document. While a batch runs, every job's
//! lease is extended every [`Pipeline::heartbeat_interval`], so a slow stage is never taken over by a second
//! worker; a worker that dies stops heartbeating and its jobs are reclaimed when their leases run out. A failed
//! document is recorded on its own ([`Pipeline::fail_stage`]) and never holds up the rest of its batch.
//!
//! **Failures** are [`JobError`]s with stable codes and messages made of ids and counts, never document text:
//! - retryable (a store, blob or embedding endpoint unavailable): the stage goes back to `pending`
//!   (`DOCUMENT_STAGE_RETRYING`) and the queue retries on its backoff schedule; the last attempt fails the
//!   document and dead-letters the job;
//! - fixable by an operator (unknown `embedding_model`, a dimension mismatch): the document fails and the job goes
//!   to the dead-letter list at once, to be retried from there after the fix;
//! - permanent (a corrupt file): the document fails with the code and the job completes.
//!
//! A failed embedding never becomes a zero vector, and nothing of the document is indexed. Every stage is
//! idempotent (fixed blob keys, deterministic chunk ids, dedupe keys on the next job), so a job delivered twice
//! converges.
//!
//! **Generations.** A job works for one document generation (`frostbyte_core::lifecycle`): its blobs are keyed by
//! it and its writes commit only while the document is still at it, so erased documents are never resurrected and
//! a replaced document's old jobs never overwrite the new version.
//!
//! **One commit per stage.** A stage's closing transition (stage status, lineage, next job, audit events, and
//! for the index stage the chunks) also completes its job ([`StageUpdate::completes_job`]) in the same
//! transaction. A worker whose lease passed to another worker therefore commits nothing for that document
//! (`LEASE_LOST`): the stage's outcome is recorded exactly once. Blobs (canonical and policed JSON) are written
//! under fixed keys, so a replay rewrites the same bytes: the blobs of every write in a commit together, just
//! before it, and durable before it ([`BlobStore::write_all`], which on local files syncs each directory once
//! for the lot rather than once per blob).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use frostbyte_adapters::parse::{ParseLimits, parse};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::chunk::{ChunkConfig, chunk_document};
use frostbyte_core::document::CanonicalDocument;
use frostbyte_core::documents::{
    DocumentRecord, DocumentStatus, DocumentStore, PipelineStage, StageStatus, StageUpdate, StageWrite, raw_blob_key,
};
use frostbyte_core::embed::{EmbedError, Embedder, EmbedderRegistry, check_vectors};
use frostbyte_core::index::IndexedChunk;
use frostbyte_core::lifecycle::{canonical_key, job_generation, policed_key, stage_job};
use frostbyte_core::policy::{POLICY_VERSION, PolicyEngine, ScreenSummary, assess_chunk};
use frostbyte_core::ports::{BlobStore, BlobWrite, MetadataStore};
use frostbyte_core::queue::{ClaimOptions, Job, JobError, JobQueue, RetryPolicy, RunOnce, Stage, StageRetry};
use frostbyte_core::tenant::TenantConfig;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::events::{Event, EventBus, Level};
use crate::http::AppState;

/// The actor of pipeline audit events.
const ACTOR: &str = "system:pipeline";

/// The cores this process may use, read once: `available_parallelism` reads the cgroup CPU quota files on every
/// call, and every batch asks.
fn cores() -> usize {
    static CORES: LazyLock<usize> = LazyLock::new(|| std::thread::available_parallelism().map_or(2, usize::from));
    *CORES
}

/// A piece of CPU-bound stage work, queued for [`CPU_POOL`].
type CpuWork = Box<dyn FnOnce() + Send>;

/// CPU-bound stage work (parsing, JSON, policy, chunking, local embedding) runs on one thread per core, shared by
/// all of this process's workers; pieces wait their turn in order. More at once would not finish sooner; it
/// would only hold more parsed documents (and a PDF parser's object graph) in memory. Blob reads and writes wait
/// outside it, so one document's I/O overlaps another's CPU work. Long-lived threads keep what they warm up: the
/// policy patterns' lazily built automata and the allocator's thread caches, which the blocking pool's
/// short-lived threads each had to build again.
static CPU_POOL: LazyLock<std::sync::mpsc::Sender<CpuWork>> = LazyLock::new(|| {
    let (queue, work) = std::sync::mpsc::channel::<CpuWork>();
    let work = Arc::new(std::sync::Mutex::new(work));
    for n in 0..cores() {
        let work = Arc::clone(&work);
        std::thread::Builder::new()
            .name(format!("frostbyte-cpu-{n}"))
            .spawn(move || {
                loop {
                    // The lock is held only while waiting for the next piece, never while running one.
                    let next = work.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    match next {
                        Ok(piece) => piece(),
                        Err(_) => return,
                    }
                }
            })
            .expect("the operating system starts a CPU worker thread");
    }
    queue
});

/// The CPU work of [`on_cpu`] panicked; the panic itself went to the panic hook (and the log).
#[derive(Debug)]
struct CpuPanicked;

/// Runs `work` on [`CPU_POOL`] once a core is free. `Err` if it panicked.
async fn on_cpu<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, CpuPanicked> {
    let (done, result) = tokio::sync::oneshot::channel();
    let piece: CpuWork = Box::new(move || {
        // A receiver that gave up (its worker shut down) just drops the result.
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    });
    // Sending fails only if every pool thread is gone, which `result` then reports as a panic.
    let _ = CPU_POOL.send(piece);
    result.await.map_err(|_| CpuPanicked)?.map_err(|_| CpuPanicked)
}

/// Wakes this process's idle workers when it has queued work for them (intake, a committed stage), so that they
/// do not sleep out their poll interval first. Jobs queued by other processes are found by polling, as before.
static QUEUED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Tells this process's idle workers that jobs were queued (see [`QUEUED`]).
pub fn wake_workers() {
    QUEUED.notify_waiters();
}

/// Documents of one batch whose stage runs at once: twice the cores, so that while one document waits for its
/// blobs another keeps the core busy.
fn in_flight() -> usize {
    2 * cores()
}

/// A batch's finished outcomes are committed as soon as they hold this many bytes (chunk text and vectors, and
/// the JSON blobs they carry to their commit), so a batch of large documents never holds all of them at once;
/// small documents still commit by the dozen.
const FLUSH_BYTES: usize = 8 << 20;

/// The stages these workers take.
pub const STAGES: [Stage; 3] = [Stage::Parse, Stage::Policy, Stage::Index];

/// The ports and settings a worker needs.
#[derive(Clone)]
pub struct Pipeline {
    pub store: Arc<dyn MetadataStore>,
    pub queue: Arc<dyn JobQueue>,
    pub documents: Arc<dyn DocumentStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// The tenant's `embedding_model` picks its embedder here.
    pub embedders: Arc<EmbedderRegistry>,
    /// Every stage transition is published here.
    pub events: Arc<EventBus>,
    pub claim: ClaimOptions,
    pub retry: RetryPolicy,
    pub parse_limits: ParseLimits,
    pub chunking: ChunkConfig,
    /// How often a running job's lease is extended; `None`: a third of the lease.
    pub heartbeat: Option<Duration>,
    /// The most jobs claimed and run together (one tenant, one stage; their writes commit together).
    pub batch: usize,
    /// Whether a parse job takes its document on through policy and index in the same run (see the module
    /// docs' chains). Off, every stage waits for its own job.
    pub chain: bool,
}

/// How a failed stage should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// May succeed on a later attempt: back to the queue with backoff.
    Retry,
    /// Will not succeed until an operator changes something: dead-letter now, so it can be retried from there.
    DeadLetter,
    /// The input itself is the problem: the document fails and the job completes.
    Permanent,
    /// The job's lease passed to another worker before this one could commit: nothing was written, and the other
    /// worker's outcome is the one that counts.
    LeaseLost,
}

/// How a stage that did not fail ended.
enum Finished {
    /// Its last transition completed the job in the same transaction.
    Completed,
    /// It wrote nothing that completes the job (a skipped job): the job still has to be completed.
    NeedsCompletion,
}

/// A stage failure: the job error and how to recover.
#[derive(Clone)]
struct StageError {
    error: JobError,
    recovery: Recovery,
}

impl StageError {
    fn permanent(code: &str, message: impl Into<String>) -> Self {
        StageError { error: JobError::new(code, message), recovery: Recovery::Permanent }
    }
    fn retryable(code: &str, message: impl Into<String>) -> Self {
        StageError { error: JobError::new(code, message), recovery: Recovery::Retry }
    }
    fn dead_letter(code: &str, message: impl Into<String>) -> Self {
        StageError { error: JobError::new(code, message), recovery: Recovery::DeadLetter }
    }
}

fn store_err(e: frostbyte_core::StoreError) -> StageError {
    StageError::retryable("STORE_ERROR", e.to_string())
}

fn blob_err(e: frostbyte_core::ports::BlobError) -> StageError {
    StageError::retryable("BLOB_ERROR", e.to_string())
}

/// An embedding failure as a job error: transient ones retry, configuration ones (dimension mismatch, a
/// malformed answer, a refused key) dead-letter, content ones (an input with nothing to embed) fail the document.
fn embed_err(e: EmbedError, model: &str) -> StageError {
    let code = e.code().to_ascii_uppercase();
    let message = format!("embedding with {model} failed: {e}");
    match e {
        e if e.is_retryable() => StageError::retryable(&code, message),
        EmbedError::Empty { .. } | EmbedError::TooLong { .. } => StageError::permanent(&code, message),
        _ => StageError::dead_letter(&code, message),
    }
}

/// The document stage a job's stage starts with.
fn first_stage_of(stage: Stage) -> PipelineStage {
    match stage {
        Stage::Parse => PipelineStage::Parse,
        Stage::Policy => PipelineStage::Policy,
        // The index job chunks, embeds and indexes: it starts with `embed`.
        _ => PipelineStage::Embed,
    }
}

fn status_name(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Pending => "pending",
        StageStatus::Running => "running",
        StageStatus::Done => "done",
        StageStatus::Failed => "failed",
        StageStatus::Skipped => "skipped",
    }
}

fn event(kind: &str, doc_id: Uuid, details: Value) -> NewAuditEvent {
    NewAuditEvent::new(kind, ACTOR, "document", doc_id.to_string(), details)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A canonical (or policed) document as stored: its JSON bytes and their sha256.
fn encode_json(doc: &CanonicalDocument) -> Result<(Vec<u8>, String), StageError> {
    let bytes = serde_json::to_vec(doc)
        .map_err(|_| StageError::permanent("CANONICAL_ENCODE", "the canonical document could not be encoded"))?;
    let hash = sha256_hex(&bytes);
    Ok((bytes, hash))
}

/// The chunk-set hash: what embedding produced. sha256 over the model id, the dimension and, per chunk in
/// order, its id, text hash and vector (little-endian f32).
pub fn chunk_set_hash(model: &str, dimension: usize, chunks: &[(String, String, Vec<f32>)]) -> String {
    let mut h = Sha256::new();
    h.update(b"frostbyte.chunk-set.v1\n");
    h.update(model.as_bytes());
    h.update(format!("\n{dimension}\n{}\n", chunks.len()).as_bytes());
    for (chunk_id, text_hash, vector) in chunks {
        h.update(chunk_id.as_bytes());
        h.update(b"\n");
        h.update(text_hash.as_bytes());
        h.update(b"\n");
        for x in vector {
            h.update(x.to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// The index hash: what was written. sha256 over the chunk-set hash it was built from and, per row in order, the
/// fields search depends on (id, position, offsets, text hash, model, quarantine, classification, collection).
pub fn index_hash(chunk_set: &str, rows: &[IndexedChunk]) -> String {
    let mut h = Sha256::new();
    h.update(b"frostbyte.index.v1\n");
    h.update(chunk_set.as_bytes());
    for r in rows {
        let line = json!([
            r.chunk_id,
            r.position,
            r.start,
            r.end,
            r.text_hash,
            r.embed_model,
            r.quarantined,
            r.classification,
            r.collection
        ]);
        h.update(line.to_string().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Numbers (and counts of listed items) at the top level of audit details: what an event may show.
fn counts_of(details: &Value) -> Vec<(String, u64)> {
    let Some(map) = details.as_object() else { return Vec::new() };
    map.iter().filter(|(k, _)| !k.ends_with("_ms")).filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n))).collect()
}

impl Pipeline {
    /// A pipeline over these ports with default limits, the hash embedder only and a bus of its own, claiming as
    /// `worker_id`. Workers in a server use [`Pipeline::from_state`].
    pub fn new(
        store: Arc<dyn MetadataStore>,
        queue: Arc<dyn JobQueue>,
        documents: Arc<dyn DocumentStore>,
        blobs: Arc<dyn BlobStore>,
        worker_id: &str,
    ) -> Self {
        Pipeline {
            store,
            queue,
            documents,
            blobs,
            embedders: Arc::new(EmbedderRegistry::default()),
            events: Arc::new(EventBus::default()),
            claim: ClaimOptions::new(worker_id, Duration::from_secs(300), 2).stages(STAGES),
            retry: RetryPolicy::default(),
            parse_limits: ParseLimits::default(),
            chunking: ChunkConfig::default(),
            heartbeat: None,
            batch: 1,
            chain: true,
        }
    }

    /// A pipeline over the application's ports, embedders and event bus.
    pub fn from_state(state: &AppState, worker_id: &str) -> Self {
        let mut p = Pipeline::new(
            state.store.clone(),
            state.queue.clone(),
            state.documents.clone(),
            state.blobs.clone(),
            worker_id,
        );
        p.embedders = state.embedders.clone();
        p.events = state.events.clone();
        p
    }

    /// How often a running job's lease is extended.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.unwrap_or(self.claim.lease / 3).max(Duration::from_millis(10))
    }

    /// Claims up to [`Pipeline::batch`] jobs (one tenant, one stage) and runs them together, heartbeating their
    /// leases until they are done. `Ran` carries the first job's id.
    pub async fn try_run_one(&self) -> anyhow::Result<RunOnce> {
        let jobs = self.queue.claim_batch(&self.claim, frostbyte_core::now(), self.batch.max(1)).await?;
        let Some(first) = jobs.first().map(|j| j.job_id) else {
            return Ok(RunOnce::Idle);
        };
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.job_id).collect();
        let outcomes = self.with_heartbeat(&ids, self.run_batch(jobs)).await;
        for (job_id, outcome) in outcomes {
            self.finish_job(job_id, outcome).await?;
        }
        Ok(RunOnce::Ran(first))
    }

    /// Completes or fails a job by how its stage ended (a stage that committed its outcome completed it already).
    async fn finish_job(&self, job_id: Uuid, outcome: Outcome) -> anyhow::Result<()> {
        let worker = self.claim.worker_id.as_str();
        let finished = match outcome {
            Ok(Finished::Completed) => Ok(()),
            Ok(Finished::NeedsCompletion) => self.queue.complete(job_id, worker).await,
            Err((error, Recovery::LeaseLost)) => {
                tracing::warn!(job_id = %job_id, worker, code = %error.code, "lease lost before commit; nothing written");
                Ok(())
            }
            Err((error, Recovery::DeadLetter)) => {
                let now_dead = RetryPolicy::uniform(StageRetry::new(1, Vec::new()));
                self.queue.fail(job_id, worker, error, &now_dead, frostbyte_core::now()).await.map(|_| ())
            }
            Err((error, _)) => {
                self.queue.fail(job_id, worker, error, &self.retry, frostbyte_core::now()).await.map(|_| ())
            }
        };
        match finished {
            Ok(()) => Ok(()),
            // The lease ran out and another worker took the job: its result is the one that counts.
            Err(frostbyte_core::StoreError::Conflict(reason)) => {
                tracing::warn!(job_id = %job_id, worker, %reason, "job was taken over before it finished");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `work`, extending the leases of `jobs` every [`Self::heartbeat_interval`] until it finishes. A job
    /// whose lease is lost (another worker reclaimed it) is no longer heartbeated; completing it will be refused.
    async fn with_heartbeat<F: Future>(&self, jobs: &[Uuid], work: F) -> F::Output {
        let every = self.heartbeat_interval();
        let beat = async {
            let mut live = jobs.to_vec();
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            while !live.is_empty() {
                ticker.tick().await;
                let worker = &self.claim.worker_id;
                let mut kept = Vec::with_capacity(live.len());
                for job_id in live {
                    match self.queue.heartbeat(job_id, worker, self.claim.lease, frostbyte_core::now()).await {
                        Ok(true) => {
                            tracing::trace!(job_id = %job_id, "lease extended");
                            kept.push(job_id);
                        }
                        Ok(false) => {
                            tracing::warn!(job_id = %job_id, worker = %worker, "lease lost; heartbeat stopped")
                        }
                        Err(error) => {
                            tracing::warn!(job_id = %job_id, %error, "heartbeat failed; will retry");
                            kept.push(job_id);
                        }
                    }
                }
                live = kept;
            }
            std::future::pending::<()>().await;
        };
        let mut work = std::pin::pin!(work);
        tokio::select! {
            out = &mut work => out,
            () = beat => work.await,
        }
    }

    /// Runs a batch of claimed jobs (one tenant, one stage): admits each for the document generation it was
    /// queued for, marks the admitted ones `running` in one write while their stage runs, concurrently, and
    /// commits every stage outcome in one write once that write has. A job of an erased or replaced document
    /// ends without running; a failed stage is recorded on its own document (see [`Pipeline::fail_stage`]); a
    /// document erased or replaced while its job ran keeps nothing of it ([`Pipeline::settle`]).
    async fn run_batch(&self, jobs: Vec<Job>) -> Vec<(Uuid, Outcome)> {
        let mut outcomes = Vec::with_capacity(jobs.len());
        let Some((tenant, stage)) = jobs.first().map(|j| (j.tenant_id.clone(), j.stage)) else {
            return outcomes;
        };
        let (admitted, skipped) = self.admit_all(&tenant, jobs).await;
        outcomes.extend(skipped);
        if admitted.is_empty() {
            return outcomes;
        }
        let config = match stage {
            Stage::Parse if !self.chain => None,
            _ => match self.config(&tenant).await {
                Ok(config) => Some(config),
                Err(e) => {
                    for a in admitted {
                        outcomes.push(self.failed(&a, e.clone()).await);
                    }
                    return outcomes;
                }
            },
        };

        // Every admitted document's first stage `running`, in one write, while the stage's work starts: [`in_flight`]
        // documents at a time (their CPU-bound parts one per core, see [`on_cpu`]). Waiting for the write first
        // left the worker idle behind the other workers' commits. Nothing of a document commits before its
        // `running` write has; the work of a document whose write was refused is dropped, and the job fails with
        // the refusal, as before (settling it removes what the work may have left).
        let job_ids: Vec<Uuid> = admitted.iter().map(|a| a.job.job_id).collect();
        let running = self.write_batch(&tenant, admitted.iter().map(|a| self.running_write(a)).collect());
        let config = config.as_ref();
        let work: Vec<_> = admitted
            .into_iter()
            .map(|a| async move {
                let prepared = self.prepare(stage, &a, config).await;
                (a, prepared)
            })
            .collect();
        let mut work = futures::stream::iter(work).buffered(in_flight());
        let mut early = Vec::new();
        let mut refused: HashMap<Uuid, StageError> = {
            let mut running = std::pin::pin!(running);
            let written = loop {
                tokio::select! {
                    written = &mut running => break written,
                    Some(done) = work.next() => early.push(done),
                }
            };
            job_ids.into_iter().zip(written).filter_map(|(job, w)| w.err().map(|e| (job, e))).collect()
        };

        // The outcomes, with their jobs' completions, commit together, in one write per [`FLUSH_BYTES`] held.
        let mut work = futures::stream::iter(early).chain(work);
        let (mut ready, mut bytes) = (Vec::new(), 0);
        while let Some((a, prepared)) = work.next().await {
            let prepared = match refused.remove(&a.job.job_id) {
                Some(refusal) => Err(refusal),
                None => prepared,
            };
            match prepared {
                Ok(p) => {
                    bytes += p.weight();
                    ready.push((a, p));
                }
                Err(e) => outcomes.push(self.failed(&a, e).await),
            }
            if bytes >= FLUSH_BYTES {
                outcomes.extend(self.commit(&tenant, stage, std::mem::take(&mut ready)).await);
                bytes = 0;
            }
        }
        outcomes.extend(self.commit(&tenant, stage, ready).await);
        outcomes
    }

    /// Commits prepared stage outcomes in one write and settles each job by how its write went.
    async fn commit(&self, tenant: &TenantId, stage: Stage, ready: Vec<(Admitted, Prepared)>) -> Vec<(Uuid, Outcome)> {
        let mut outcomes = Vec::with_capacity(ready.len());
        if ready.is_empty() {
            return outcomes;
        }
        let (ready, prepared): (Vec<_>, Vec<_>) = ready.into_iter().unzip();
        let mut done = Vec::with_capacity(ready.len());
        for (a, written) in ready.iter().zip(self.write_batch(tenant, prepared).await) {
            match written {
                Ok(()) => {
                    tracing::debug!(tenant = %tenant, doc_id = %a.doc_id, stage = stage.as_str(), "stage done");
                    done.push(a);
                }
                Err(e) => outcomes.push(self.failed(a, e).await),
            }
        }
        outcomes.extend(self.settle_all(tenant, done).await);
        outcomes
    }

    /// [`Pipeline::settle`] for jobs whose stage committed, with one read for the batch: only a document no
    /// longer at its job's generation (erased or replaced while the job ran) is settled on its own.
    async fn settle_all(&self, tenant: &TenantId, done: Vec<&Admitted>) -> Vec<(Uuid, Outcome)> {
        let ids: Vec<Uuid> = done.iter().map(|a| a.doc_id).collect();
        // If the read fails, each job is settled on its own (which retries the read, and the job if it fails).
        let live: HashMap<Uuid, u64> = match self.documents.documents_at(tenant, &ids).await {
            Ok(found) => found.into_iter().map(|(doc, generation)| (doc.doc_id, generation)).collect(),
            Err(_) => HashMap::new(),
        };
        let mut outcomes = Vec::with_capacity(done.len());
        for a in done {
            let outcome = match live.get(&a.doc_id) {
                Some(g) if *g == a.generation => Ok(Finished::Completed),
                _ => self.settle(a, Ok(Finished::Completed)).await,
            };
            outcomes.push((a.job.job_id, outcome));
        }
        outcomes
    }

    /// Which jobs should run: their documents live at the jobs' generations and not quarantined, all read at
    /// once. The others end here: an invalid job is dead-lettered, one of an erased, replaced or quarantined
    /// document just completes, and if the read fails every job is retried.
    async fn admit_all(&self, tenant: &TenantId, jobs: Vec<Job>) -> (Vec<Admitted>, Vec<(Uuid, Outcome)>) {
        let mut outcomes = Vec::new();
        let mut wanted = Vec::with_capacity(jobs.len());
        for job in jobs {
            match Uuid::parse_str(&job.resource_id) {
                Ok(doc_id) => wanted.push((doc_id, job)),
                Err(_) => {
                    let e = JobError::new("INVALID_JOB", "the job's resource id is not a document id");
                    outcomes.push((job.job_id, Err((e, Recovery::DeadLetter))));
                }
            }
        }
        let ids: Vec<Uuid> = wanted.iter().map(|(doc_id, _)| *doc_id).collect();
        let live: HashMap<Uuid, (DocumentRecord, u64)> = match self.documents.documents_at(tenant, &ids).await {
            Ok(found) => found.into_iter().map(|(doc, generation)| (doc.doc_id, (doc, generation))).collect(),
            Err(e) => {
                let e = JobError::new("STORE_ERROR", e.to_string());
                outcomes.extend(wanted.into_iter().map(|(_, job)| (job.job_id, Err((e.clone(), Recovery::Retry)))));
                return (Vec::new(), outcomes);
            }
        };
        let mut admitted = Vec::with_capacity(wanted.len());
        for (doc_id, job) in wanted {
            let generation = job_generation(&job);
            let stage = job.stage.as_str();
            match live.get(&doc_id) {
                Some((doc, g)) if *g == generation && doc.status != DocumentStatus::Quarantined => {
                    admitted.push(Admitted { job, doc_id, generation, doc: doc.clone() });
                }
                Some((_, g)) if *g == generation => {
                    tracing::info!(tenant = %tenant, doc_id = %doc_id, stage, "document quarantined; job skipped");
                    outcomes.push((job.job_id, Ok(Finished::NeedsCompletion)));
                }
                _ => {
                    tracing::info!(tenant = %tenant, doc_id = %doc_id, stage,
                        "skipping a job of an erased or replaced document");
                    outcomes.push((job.job_id, Ok(Finished::NeedsCompletion)));
                }
            }
        }
        (admitted, outcomes)
    }

    /// Marks the job's first stage `running` (and the document `processing` again, for a job retried from the
    /// dead-letter list).
    fn running_write(&self, a: &Admitted) -> Prepared {
        let (update, audit) = self.started(a, first_stage_of(a.job.stage));
        let update = update.document_status(DocumentStatus::Processing);
        Prepared::new(&a.job.tenant_id, StageWrite::new(a.doc_id, a.generation, update, audit))
    }

    /// A stage of the job's document starting: its `running` transition and `DOCUMENT_STAGE_STARTED` event.
    fn started(&self, a: &Admitted, stage: PipelineStage) -> (StageUpdate, NewAuditEvent) {
        let update = StageUpdate::new(stage, StageStatus::Running);
        let audit = event(
            "DOCUMENT_STAGE_STARTED",
            a.doc_id,
            json!({"component": stage.as_str(), "status": "running", "attempt": a.job.attempts,
                   "job_id": a.job.job_id.to_string()}),
        );
        (update, audit)
    }

    /// Runs the stage of one admitted job, up to (not including) its commit; a parse job goes on as far as its
    /// chain reaches ([`Pipeline::parse_onward`]).
    async fn prepare(&self, stage: Stage, a: &Admitted, config: Option<&TenantConfig>) -> Result<Prepared, StageError> {
        let tenant = &a.job.tenant_id;
        match (stage, config) {
            (Stage::Parse, Some(config)) if self.chain => self.parse_onward(a, config).await,
            (Stage::Parse, _) => self.parse(a).await.map(|(prepared, _)| prepared),
            (Stage::Policy, Some(config)) => {
                let canonical = self.load_json(tenant, &canonical_key(&a.doc_id, a.generation)).await?;
                self.policy(a, config, canonical).await.map(|(prepared, _)| prepared)
            }
            (Stage::Index, Some(config)) => {
                let policed = self.load_json(tenant, &policed_key(&a.doc_id, a.generation)).await?;
                self.index(a, config, policed, classification_of(&a.doc.lineage)).await
            }
            (other, _) => Err(StageError::dead_letter("UNSUPPORTED_STAGE", format!("no worker for stage {other}"))),
        }
    }

    /// A parse job's chain: parse, then policy on the canonical document in memory, then index on the policed
    /// one, all committed as one write ([`StageWrite::then`]). A later stage that fails is not recorded here:
    /// the chain commits the stages before it, with the failing stage's job queued as usual, and that job runs
    /// it again under its own retry schedule, so a failure is handled exactly as without the chain.
    async fn parse_onward(&self, a: &Admitted, config: &TenantConfig) -> Result<Prepared, StageError> {
        let (parsed, canonical) = self.parse(a).await?;
        let (policed, passed) = match self.policy(a, config, canonical).await {
            Ok(done) => done,
            Err(e) => return Ok(self.chain_stops(a, Stage::Policy, &e, parsed)),
        };
        // The policy stage's category, which the admitted record cannot hold yet.
        let classification = classification_of(&policed.write.update.lineage);
        let chained = parsed.then(self.announced(a, PipelineStage::Policy, policed));
        let Some(passed) = passed else { return Ok(chained) };
        match self.index(a, config, passed, classification).await {
            Ok(indexed) => Ok(chained.then(self.announced(a, first_stage_of(Stage::Index), indexed))),
            Err(e) => Ok(self.chain_stops(a, Stage::Index, &e, chained)),
        }
    }

    /// `prepared` with the `DOCUMENT_STAGE_STARTED` of its stage before its own events.
    fn announced(&self, a: &Admitted, stage: PipelineStage, mut prepared: Prepared) -> Prepared {
        let (update, audit) = self.started(a, stage);
        prepared.events.insert(0, stage_event(&a.job.tenant_id, a.doc_id, &update, &audit));
        prepared.write.audit.insert(0, audit);
        prepared
    }

    /// A chain that ends before `stage` because it failed: what ran before commits, and `stage` is left to its own
    /// job, already queued by `done`.
    fn chain_stops(&self, a: &Admitted, stage: Stage, failure: &StageError, done: Prepared) -> Prepared {
        tracing::debug!(tenant = %a.job.tenant_id, doc_id = %a.doc_id, stage = stage.as_str(),
            code = %failure.error.code, "chained stage failed; left to its own job");
        debug_assert!(done.write.next_job.as_ref().is_some_and(|job| job.stage == stage));
        done
    }

    /// Applies a batch of prepared writes in one transaction, publishing each written one's events. A write the
    /// store refused fails on its own: `LEASE_LOST` when it would have completed a job leased to another worker.
    async fn write_batch(&self, tenant: &TenantId, mut prepared: Vec<Prepared>) -> Vec<Result<(), StageError>> {
        let n = prepared.len();
        let blobs: Vec<BlobWrite> = prepared.iter_mut().flat_map(|p| std::mem::take(&mut p.blobs)).collect();
        if !blobs.is_empty()
            && let Err(e) = self.blobs.write_all(tenant, blobs).await
        {
            let e = blob_err(e);
            return (0..n).map(|_| Err(e.clone())).collect();
        }
        let (writes, events): (Vec<_>, Vec<_>) = prepared.into_iter().map(|p| (p.write, p.events)).unzip();
        let completing: Vec<bool> = writes.iter().map(|w| w.update.completes_job.is_some()).collect();
        let queues = writes.iter().any(|w| w.next_job.is_some());
        let results = match self.documents.apply_stage_writes(tenant, writes).await {
            Ok(results) => {
                if queues {
                    wake_workers();
                }
                results
            }
            Err(e) => {
                let e = store_err(e);
                return (0..n).map(|_| Err(e.clone())).collect();
            }
        };
        results
            .into_iter()
            .zip(events)
            .zip(completing)
            .map(|((written, events), completing)| match written {
                Ok(_) => {
                    for e in events {
                        self.events.publish(e);
                    }
                    Ok(())
                }
                Err(frostbyte_core::StoreError::Conflict(_)) if completing => Err(StageError {
                    error: JobError::new(
                        "LEASE_LOST",
                        "the job was leased to another worker before this one committed",
                    ),
                    recovery: Recovery::LeaseLost,
                }),
                Err(e) => Err(store_err(e)),
            })
            .collect()
    }

    /// A failed stage, recorded and settled: the job's id and how it ends.
    async fn failed(&self, a: &Admitted, failure: StageError) -> (Uuid, Outcome) {
        let outcome = self.fail_stage(a, failure).await;
        (a.job.job_id, self.settle(a, outcome).await)
    }

    /// Records a failed stage on its document and decides how the job ends (see the module docs' failures).
    async fn fail_stage(&self, a: &Admitted, failure: StageError) -> Outcome {
        let (tenant, doc_id, job) = (&a.job.tenant_id, a.doc_id, &a.job);
        if failure.recovery == Recovery::LeaseLost {
            return Err((failure.error, Recovery::LeaseLost));
        }
        let last_attempt = job.attempts >= self.retry.for_stage(job.stage).max_attempts;
        tracing::warn!(
            tenant = %tenant, doc_id = %doc_id, stage = job.stage.as_str(), code = %failure.error.code,
            attempt = job.attempts, recovery = ?failure.recovery, "stage failed"
        );
        let gives_up = failure.recovery != Recovery::Retry || last_attempt;
        let recorded = self.record_failure(a, &failure, gives_up).await;
        match (failure.recovery, recorded) {
            // Recorded on the document, with the job completed in the same transaction; retrying the same input
            // cannot help.
            (Recovery::Permanent, Ok(true)) => Ok(Finished::Completed),
            (_, Err(e)) if e.recovery == Recovery::LeaseLost => Err((e.error, Recovery::LeaseLost)),
            (recovery, recorded) => {
                if let Err(e) = recorded {
                    tracing::error!(error = %e.error, doc_id = %doc_id, "cannot record a failed stage");
                }
                match recovery {
                    Recovery::Permanent => Ok(Finished::NeedsCompletion),
                    recovery => Err((failure.error, recovery)),
                }
            }
        }
    }

    /// After a job: if its document was erased or replaced while it ran, removes what the job may have left
    /// (see `frostbyte_core::service::lifecycle::settle_job`) and ends the job without a retry.
    async fn settle(&self, a: &Admitted, outcome: Outcome) -> Outcome {
        use frostbyte_core::service::lifecycle::settle_job;
        let tenant = &a.job.tenant_id;
        match settle_job(&*self.documents, &*self.blobs, tenant, a.doc_id, a.generation).await {
            Ok(false) => outcome,
            Ok(true) => {
                tracing::info!(tenant = %tenant, doc_id = %a.doc_id, generation = a.generation,
                    "document erased or replaced while its job ran");
                match outcome {
                    Ok(Finished::Completed) => Ok(Finished::Completed),
                    _ => Ok(Finished::NeedsCompletion),
                }
            }
            Err(e) => Err((JobError::new("STORE_ERROR", e.to_string()), Recovery::Retry)),
        }
    }

    /// Records a failure on the document: the stage back to `pending` while retries remain, else the stage and
    /// the document `failed` with the code. A permanent failure completes the job in the same transaction (true
    /// when it did).
    async fn record_failure(&self, a: &Admitted, failure: &StageError, gives_up: bool) -> Result<bool, StageError> {
        let (tenant, doc_id, job) = (&a.job.tenant_id, a.doc_id, &a.job);
        let doc = match self.documents.get_document(tenant, doc_id).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return Ok(false),
            Err(e) => return Err(store_err(e)),
        };
        let stage = doc.stages.current().unwrap_or(first_stage_of(job.stage));
        let code = failure.error.code.clone();
        let completes = failure.recovery == Recovery::Permanent;
        let (update, audit) = if gives_up {
            let mut update = StageUpdate::new(stage, StageStatus::Failed)
                .document_status(DocumentStatus::Failed)
                .error_code(code.clone());
            if completes {
                update = update.completes_job(job.job_id, self.claim.worker_id.clone());
            }
            let details = json!({"component": stage.as_str(), "status": "failed", "error_code": code,
                "attempt": job.attempts, "dead_lettered": failure.recovery != Recovery::Permanent});
            (update, event("DOCUMENT_FAILED", doc_id, details))
        } else {
            let update = StageUpdate::new(stage, StageStatus::Pending);
            let details = json!({"component": stage.as_str(), "status": "retrying", "error_code": code,
                "attempt": job.attempts, "max_attempts": self.retry.for_stage(job.stage).max_attempts});
            (update, event("DOCUMENT_STAGE_RETRYING", doc_id, details))
        };
        let write = Prepared::new(tenant, StageWrite::new(doc_id, a.generation, update, audit));
        let mut written = self.write_batch(tenant, vec![write]).await;
        written.pop().unwrap_or(Ok(()))?;
        Ok(completes && gives_up)
    }

    async fn config(&self, tenant: &TenantId) -> Result<TenantConfig, StageError> {
        let t = self.store.get_tenant(tenant).await.map_err(store_err)?;
        t.map(|t| t.config).ok_or_else(|| StageError::permanent("TENANT_NOT_FOUND", "the tenant does not exist"))
    }

    /// A stored canonical (or policed) document and the sha256 of its bytes as read. One whose offsets, pages or
    /// stats disagree with its blocks ([`CanonicalDocument::validate`]) is corrupt: later stages take them as
    /// they are.
    async fn load_json(&self, tenant: &TenantId, key: &str) -> Result<(CanonicalDocument, String), StageError> {
        let bytes = self.blobs.get(tenant, key).await.map_err(blob_err)?;
        let decoded = on_cpu(move || {
            serde_json::from_slice::<CanonicalDocument>(&bytes)
                .ok()
                .filter(|doc| doc.validate().is_ok())
                .map(|doc| (doc, sha256_hex(&bytes)))
        })
        .await
        .map_err(|_| StageError::retryable("CANONICAL_DECODE", "the decoding task panicked or was cancelled"))?;
        decoded.ok_or_else(|| StageError::permanent("CANONICAL_CORRUPT", format!("{key} is not a canonical document")))
    }

    /// Parses the raw bytes; the write and the canonical document with the sha256 of its JSON as stored.
    async fn parse(&self, a: &Admitted) -> Result<(Prepared, (CanonicalDocument, String)), StageError> {
        let started = std::time::Instant::now();
        let (tenant, doc_id, generation, doc) = (&a.job.tenant_id, a.doc_id, a.generation, &a.doc);
        let raw = self.blobs.get(tenant, &raw_blob_key(&doc.raw_sha256)).await.map_err(blob_err)?;
        let (mime, limits, id) = (doc.mime_type.clone(), self.parse_limits.clone(), doc_id.to_string());
        let expected = doc.raw_sha256.clone();
        let parsed = on_cpu(move || {
            if sha256_hex(&raw) != expected {
                return Err(StageError::dead_letter("RAW_CORRUPT", "the stored raw bytes do not match their sha256"));
            }
            let canonical = parse(&raw, &mime, &id, &limits).map_err(|e| StageError {
                error: JobError::new(e.code(), format!("parsing {mime} failed")),
                recovery: if e.is_retryable() { Recovery::Retry } else { Recovery::Permanent },
            })?;
            let (bytes, hash) = encode_json(&canonical)?;
            Ok((canonical, bytes, hash))
        })
        .await
        .map_err(|_| StageError::retryable("PARSER_ERROR", "the parser task panicked or was cancelled"))?;
        let (canonical, bytes, output_hash) = parsed?;
        let raw_hash = doc.raw_sha256.clone();
        let parser_version = format!("{}@{}", canonical.parser.name, canonical.parser.version);
        let next = stage_job(Stage::Policy, doc_id, generation);
        let audit = event(
            "DOCUMENT_PARSED",
            doc_id,
            json!({"component": "parse", "status": "done", "input_hash": raw_hash, "output_hash": output_hash,
                   "parser_version": parser_version, "blocks": canonical.blocks.len(),
                   "pages": canonical.pages.len(), "dropped": canonical.dropped.len(),
                   "duration_ms": started.elapsed().as_millis() as u64}),
        );
        let update = StageUpdate::new(PipelineStage::Parse, StageStatus::Done)
            .lineage("parser_version", parser_version)
            .lineage("canonical_sha256", output_hash.clone())
            .lineage("pages", canonical.pages.len())
            .completes_job(a.job.job_id, self.claim.worker_id.clone());
        let canonical_blob = BlobWrite::Put { key: canonical_key(&doc_id, generation), bytes: Bytes::from(bytes) };
        let prepared = Prepared::new(tenant, StageWrite::new(doc_id, generation, update, audit).next_job(Some(next)))
            .blob(canonical_blob);
        Ok((prepared, (canonical, output_hash)))
    }

    /// Screens the canonical document (stored at this generation's [`canonical_key`], with the sha256 of its
    /// JSON); the write and, when the document passed, the policed document with the sha256 of its JSON as stored.
    async fn policy(
        &self,
        a: &Admitted,
        config: &TenantConfig,
        (canonical, input_hash): (CanonicalDocument, String),
    ) -> Result<(Prepared, Option<(CanonicalDocument, String)>), StageError> {
        let started = std::time::Instant::now();
        let (tenant, doc_id, generation) = (&a.job.tenant_id, a.doc_id, a.generation);
        let owned = config.clone();
        let policed = on_cpu(move || {
            let policed = police(canonical, &owned)
                .map_err(|e| StageError::permanent(e.code(), "the policy checks refused the document"))?;
            // Encoded only for a document that passes and that redaction changed: a blocked one is never stored,
            // and one the policy changed nothing in is the canonical document itself ([`police`]), which would
            // encode to the canonical JSON it came from, so that blob is copied instead.
            let encoded = match (policed.blocked, policed.redacted_blocks) {
                (false, 1..) => Some(encode_json(&policed.document)?),
                (false, 0) | (true, _) => None,
            };
            Ok::<_, StageError>((policed, encoded))
        })
        .await
        .map_err(|_| StageError::retryable("POLICY_ERROR", "the policy task panicked or was cancelled"))?;
        let (Policed { document, blocked, redacted_blocks, pii, policy_version, classification }, encoded) = policed?;
        let pii_total: usize = pii.values().sum();
        let action = serde_json::to_value(config.pii_policy).unwrap_or(Value::Null);
        let update = StageUpdate::new(PipelineStage::Policy, StageStatus::Done)
            .lineage("policy_version", policy_version.clone())
            .lineage("classification", classification.clone())
            .completes_job(a.job.job_id, self.claim.worker_id.clone());
        let duration_ms = started.elapsed().as_millis() as u64;
        // A finding rather than a change of state: recorded as its own event, types and counts only.
        let finding = (pii_total > 0).then(|| {
            let details = json!({"component": "policy", "status": if blocked { "blocked" } else { "detected" },
                "action": action, "types": pii, "total": pii_total, "input_hash": input_hash});
            event("PII_DETECTED", doc_id, details)
        });
        let (write, next, passed, blob) = if blocked {
            let update = update
                .also(PipelineStage::Embed, StageStatus::Skipped)
                .also(PipelineStage::Index, StageStatus::Skipped)
                .document_status(DocumentStatus::Quarantined);
            let details = json!({"component": "policy", "status": "quarantined", "reason": "pii_blocked",
                "input_hash": input_hash, "policy_version": policy_version, "pii_detected": pii_total,
                "classification": classification, "duration_ms": duration_ms});
            tracing::info!(tenant = %tenant, doc_id = %doc_id, "document quarantined by policy");
            let write = StageWrite::new(doc_id, generation, update, event("POLICY_GATE_FAILED", doc_id, details));
            (write, None, None, None)
        } else {
            let key = policed_key(&doc_id, generation);
            let (blob, output_hash) = match encoded {
                Some((bytes, hash)) => (BlobWrite::Put { key, bytes: Bytes::from(bytes) }, hash),
                // Unchanged: a hard link or a server-side copy of the canonical blob, not written again.
                None => (BlobWrite::Copy { from: canonical_key(&doc_id, generation), to: key }, input_hash.clone()),
            };
            let details = json!({"component": "policy", "status": "done", "input_hash": input_hash,
                "output_hash": output_hash, "policy_version": policy_version, "pii_detected": pii_total,
                "redacted_blocks": redacted_blocks, "classification": classification,
                "duration_ms": duration_ms});
            let update = update.lineage("policed_sha256", output_hash.clone());
            let write = StageWrite::new(doc_id, generation, update, event("POLICY_GATE_PASSED", doc_id, details));
            (write, Some(stage_job(Stage::Index, doc_id, generation)), Some((document, output_hash)), Some(blob))
        };
        let write = match finding {
            Some(finding) => write.finding(finding),
            None => write,
        };
        let prepared = Prepared::new(tenant, write.next_job(next));
        Ok((blob.into_iter().fold(prepared, Prepared::blob), passed))
    }

    /// The tenant's embedder, by its `embedding_model`.
    fn embedder_for(&self, config: &TenantConfig) -> Result<Arc<dyn Embedder>, StageError> {
        self.embedders.get(&config.embedding_model).ok_or_else(|| {
            StageError::dead_letter(
                "EMBED_MODEL_UNKNOWN",
                format!(
                    "the tenant's embedding_model {:?} is not configured (configured: {})",
                    config.embedding_model,
                    self.embedders.selectors().join(", ")
                ),
            )
        })
    }

    /// Embeds on a CPU thread ([`on_cpu`]) when the embedder computes locally; checks the vectors either way.
    async fn embed(&self, embedder: Arc<dyn Embedder>, texts: Vec<String>) -> Result<Vec<Vec<f32>>, StageError> {
        let model = embedder.model_id().to_owned();
        let (dimension, n) = (embedder.dimension(), texts.len());
        let vectors = if embedder.compute_bound() {
            let handle = tokio::runtime::Handle::current();
            on_cpu(move || handle.block_on(embedder.embed(&texts)))
                .await
                .map_err(|_| StageError::retryable("EMBED_ERROR", "the embedding task panicked or was cancelled"))?
        } else {
            embedder.embed(&texts).await
        }
        .map_err(|e| embed_err(e, &model))?;
        check_vectors(&vectors, n, dimension).map_err(|e| embed_err(e, &model))?;
        Ok(vectors)
    }

    /// Chunks, embeds and indexes: the chunks (each with the document's `classification`), the
    /// `DOCUMENT_EMBEDDED` and `INDEX_WRITTEN` events and the document's `embed` and `index` stages commit in one
    /// write.
    async fn index(
        &self,
        a: &Admitted,
        config: &TenantConfig,
        (policed, input_hash): (CanonicalDocument, String),
        classification: Option<String>,
    ) -> Result<Prepared, StageError> {
        let started = std::time::Instant::now();
        let (tenant, doc_id, generation, doc) = (&a.job.tenant_id, a.doc_id, a.generation, &a.doc);
        let embedder = self.embedder_for(config)?;
        let (chunking, owned) = (self.chunking.clone(), config.clone());
        let assessed = on_cpu(move || {
            let chunks = chunk_document(&policed, &chunking)
                .map_err(|_| StageError::permanent("CHUNK_CONFIG_INVALID", "the chunking configuration is invalid"))?;
            // A chunk without a letter or digit (a rule, a row of symbols, an index page's symbol section) gives a
            // search nothing to match, by keyword or by a lexical vector: it is counted, not scored, embedded or
            // indexed.
            let all = chunks.len();
            let chunks: Vec<_> = chunks.into_iter().filter(|c| c.text.chars().any(char::is_alphanumeric)).collect();
            let wordless = all - chunks.len();
            let verdicts = chunks
                .iter()
                .map(|c| {
                    assess_chunk(&c.text, &owned)
                        .map(|v| v.quarantined)
                        .map_err(|e| StageError::permanent(e.code(), "the chunk policy checks failed"))
                })
                .collect::<Result<Vec<bool>, StageError>>()?;
            Ok::<_, StageError>((chunks, verdicts, wordless))
        })
        .await
        .map_err(|_| StageError::retryable("CHUNK_ERROR", "the chunking task panicked or was cancelled"))?;
        let (chunks, quarantine, wordless) = assessed?;
        let model = embedder.model_id().to_owned();
        let dimension = embedder.dimension();
        let vectors = self.embed(embedder, chunks.iter().map(|c| c.text.clone()).collect()).await?;
        let set: Vec<(String, String, Vec<f32>)> = chunks
            .iter()
            .zip(&vectors)
            .map(|(c, v)| (c.chunk_id.to_string(), c.text_hash.clone(), v.clone()))
            .collect();
        let chunk_set = chunk_set_hash(&model, dimension, &set);
        drop(set);
        let embedded_event = event(
            "DOCUMENT_EMBEDDED",
            doc_id,
            json!({"component": "embed", "status": "done", "input_hash": input_hash, "output_hash": chunk_set,
                   "embed_model": model, "dimension": dimension, "chunks": chunks.len(), "wordless_chunks": wordless,
                   "duration_ms": started.elapsed().as_millis() as u64}),
        );
        let embedded = StageUpdate::new(PipelineStage::Embed, StageStatus::Done);

        let offset =
            |n: usize| u32::try_from(n).map_err(|_| StageError::permanent("DOCUMENT_TOO_LARGE", "offsets exceed u32"));
        let mut indexed = Vec::with_capacity(chunks.len());
        for ((chunk, vector), quarantined) in chunks.into_iter().zip(vectors).zip(quarantine) {
            indexed.push(IndexedChunk {
                chunk_id: chunk.chunk_id.to_string(),
                doc_id: doc_id.to_string(),
                position: chunk.position,
                start: offset(chunk.start)?,
                end: offset(chunk.end)?,
                page_start: chunk.page_start,
                page_end: chunk.page_end,
                heading_path: chunk.heading_path,
                kind: chunk.kind.to_string(),
                text_hash: chunk.text_hash,
                text: chunk.text,
                classification: classification.clone(),
                collection: doc.collection.clone(),
                metadata: doc.metadata.clone(),
                quarantined,
                embed_model: model.clone(),
                vector,
                source_sha256: doc.raw_sha256.clone(),
                original_filename: doc.original_filename.clone(),
                ingested_at: doc.created_at,
            });
        }
        let quarantined = indexed.iter().filter(|c| c.quarantined).count();
        let output_hash = index_hash(&chunk_set, &indexed);
        let update = StageUpdate::new(PipelineStage::Index, StageStatus::Done)
            .also(PipelineStage::Embed, StageStatus::Done)
            .document_status(DocumentStatus::Indexed)
            .lineage("embed_model", model.clone())
            .lineage("chunk_set_sha256", chunk_set.clone())
            .lineage("chunks", indexed.len())
            .lineage("quarantined_chunks", quarantined)
            .lineage("wordless_chunks", wordless)
            .lineage("index_sha256", output_hash.clone())
            .completes_job(a.job.job_id, self.claim.worker_id.clone());
        let audit = event(
            "INDEX_WRITTEN",
            doc_id,
            json!({"component": "index", "status": "done", "input_hash": chunk_set, "output_hash": output_hash,
                   "embed_model": model, "chunks": indexed.len(), "quarantined_chunks": quarantined,
                   "duration_ms": started.elapsed().as_millis() as u64}),
        );
        let mut prepared = Prepared::new(tenant, StageWrite::new(doc_id, generation, update, audit).chunks(indexed));
        prepared.events.insert(0, stage_event(tenant, doc_id, &embedded, &embedded_event));
        prepared.write.audit.insert(0, embedded_event);
        Ok(prepared)
    }
}

/// The category the policy stage recorded in a document's lineage.
fn classification_of(lineage: &serde_json::Map<String, Value>) -> Option<String> {
    lineage.get("classification").and_then(Value::as_str).map(str::to_owned)
}

/// What the policy checks made of a canonical document.
pub(crate) struct Policed {
    pub(crate) document: CanonicalDocument,
    blocked: bool,
    /// Blocks whose text redaction changed; none: `document` is the canonical document as it was.
    pub(crate) redacted_blocks: usize,
    pii: std::collections::BTreeMap<&'static str, usize>,
    policy_version: String,
    /// The document's category; `None` for a document without text.
    classification: Option<String>,
}

/// Applies the tenant's policy to every block's text, and classifies the document as a whole. A document
/// redaction changed nothing in comes back as it went in, not copied.
pub(crate) fn police(
    canonical: CanonicalDocument,
    config: &TenantConfig,
) -> Result<Policed, frostbyte_core::policy::PolicyError> {
    let engine = PolicyEngine::default();
    let mut screener = engine.screener(config)?;
    let mut redacted_blocks = 0usize;
    let edited = canonical.try_edit_text(|text| {
        let redacted = screener.screen(text)?;
        redacted_blocks += usize::from(redacted.is_some());
        Ok::<_, frostbyte_core::policy::PolicyError>(redacted)
    })?;
    let ScreenSummary { pii, blocked, classification } = screener.finish();
    Ok(Policed {
        document: edited.unwrap_or(canonical),
        blocked,
        redacted_blocks,
        pii: pii.counts.into_iter().map(|(kind, n)| (kind.as_str(), n)).collect(),
        policy_version: POLICY_VERSION.to_owned(),
        classification: classification.map(|c| c.category),
    })
}

/// How a job ended, for [`Pipeline::finish_job`].
type Outcome = Result<Finished, (JobError, Recovery)>;

/// A claimed job whose document is live at the job's generation.
struct Admitted {
    job: Job,
    doc_id: Uuid,
    generation: u64,
    /// The document as it was when the job was admitted.
    doc: DocumentRecord,
}

/// A stage's outcome ready to commit: the blobs its write refers to (stored, all at once, before it commits),
/// the write, and the events to publish once it has.
struct Prepared {
    blobs: Vec<BlobWrite>,
    write: StageWrite,
    events: Vec<Event>,
}

impl Prepared {
    fn new(tenant: &TenantId, write: StageWrite) -> Self {
        let events = match write.audit.last() {
            Some(audit) => vec![stage_event(tenant, write.doc_id, &write.update, audit)],
            None => Vec::new(),
        };
        Prepared { blobs: Vec::new(), write, events }
    }

    /// The outcome with a blob its write refers to.
    fn blob(mut self, blob: BlobWrite) -> Self {
        self.blobs.push(blob);
        self
    }

    /// This stage's outcome followed by the next stage's, as one write ([`StageWrite::then`]).
    fn then(mut self, mut next: Prepared) -> Self {
        self.blobs.append(&mut next.blobs);
        self.write = self.write.then(next.write);
        self.events.append(&mut next.events);
        self
    }

    /// What holding it until its commit costs: its chunks ([`StageWrite::weight`]) and its blobs' bytes.
    fn weight(&self) -> usize {
        self.write.weight() + self.blobs.iter().map(BlobWrite::held_bytes).sum::<usize>()
    }
}

/// The event published for a stage transition: the stage, its status, the audit event's type, its counts and
/// any error code (never document text).
fn stage_event(tenant: &TenantId, doc_id: Uuid, update: &StageUpdate, audit: &NewAuditEvent) -> Event {
    let mut published = Event::new(update.stage.as_str(), tenant, stage_message(&audit.event_type))
        .document(doc_id)
        .status(status_name(update.status))
        .event_type(audit.event_type.clone());
    published.level = match update.status {
        StageStatus::Failed => Level::Error,
        _ if audit.event_type == "POLICY_GATE_FAILED" || audit.event_type == "DOCUMENT_STAGE_RETRYING" => Level::Warn,
        _ => Level::Info,
    };
    for (name, n) in counts_of(&audit.details) {
        published = published.count(name, n);
    }
    if let Some(code) = &update.error_code {
        published = published.error_code(code.clone());
    }
    published
}

/// Whether a published stage event ([`stage_event`]) leaves its document at rest: indexed, quarantined by the
/// policy gate, or failed.
pub fn ends_document(event: &Event) -> bool {
    matches!(event.event_type.as_deref(), Some("INDEX_WRITTEN" | "POLICY_GATE_FAILED" | "DOCUMENT_FAILED"))
}

/// The fixed message of a transition's event.
fn stage_message(event_type: &str) -> &'static str {
    match event_type {
        "DOCUMENT_STAGE_STARTED" => "stage started",
        "DOCUMENT_STAGE_RETRYING" => "stage failed; will retry",
        "DOCUMENT_FAILED" => "stage failed",
        "DOCUMENT_PARSED" => "document parsed",
        "POLICY_GATE_PASSED" => "policy gate passed",
        "POLICY_GATE_FAILED" => "policy gate failed; document quarantined",
        "DOCUMENT_EMBEDDED" => "document embedded",
        "INDEX_WRITTEN" => "document indexed",
        _ => "stage updated",
    }
}

/// Runs `pipeline` until `shutdown` turns true: a job at a time, sleeping `poll` when idle. A job in progress is
/// finished before the loop looks at `shutdown` again.
pub async fn run_worker(pipeline: Pipeline, poll: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let worker = pipeline.claim.worker_id.clone();
    tracing::info!(worker = %worker, "pipeline worker started");
    while !*shutdown.borrow() {
        // Listening before looking: jobs queued while this worker finds none still wake it.
        let queued = QUEUED.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let idle = match pipeline.try_run_one().await {
            Ok(RunOnce::Ran(_)) => false,
            Ok(RunOnce::Idle) => true,
            Err(error) => {
                tracing::error!(worker = %worker, %error, "pipeline worker could not run a job");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = queued => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    tracing::info!(worker = %worker, "pipeline worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cpu_work_runs_on_the_pool_one_piece_per_core_and_a_panic_fails_only_its_piece() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        assert!(on_cpu(|| panic!("a parser bug")).await.is_err());
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pieces = (0..4 * cores()).map(|n| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            on_cpu(move || {
                most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                (n, std::thread::current().name().map(str::to_owned))
            })
        });
        let done = futures::future::join_all(pieces).await;
        for (n, result) in done.into_iter().enumerate() {
            let (piece, thread) = result.expect("every piece after the panic still runs");
            assert_eq!(piece, n);
            assert!(thread.is_some_and(|t| t.starts_with("frostbyte-cpu-")), "ran on the pool");
        }
        assert!((1..=cores()).contains(&most.load(Ordering::SeqCst)), "never more pieces at once than cores");
    }

    #[test]
    fn chunk_set_and_index_hashes_change_with_what_they_cover() {
        let set = vec![("c1".to_owned(), "t1".to_owned(), vec![0.5f32, 0.5])];
        let a = chunk_set_hash("hash-v1-2", 2, &set);
        assert_eq!(a, chunk_set_hash("hash-v1-2", 2, &set), "deterministic");
        assert_ne!(a, chunk_set_hash("openai/x", 2, &set), "the model is covered");
        let moved = vec![("c1".to_owned(), "t1".to_owned(), vec![0.5f32, 0.25])];
        assert_ne!(a, chunk_set_hash("hash-v1-2", 2, &moved), "the vector is covered");
        assert_eq!(a.len(), 64);
        assert_ne!(index_hash(&a, &[]), index_hash(&chunk_set_hash("m", 2, &[]), &[]), "the chunk set is covered");
    }

    #[test]
    fn embed_errors_map_to_a_recovery() {
        let r = |e| embed_err(e, "m").recovery;
        assert_eq!(r(EmbedError::Unavailable { message: "down".into(), retryable: true }), Recovery::Retry);
        assert_eq!(r(EmbedError::RateLimited { retry_after: None }), Recovery::Retry);
        assert_eq!(r(EmbedError::DimensionMismatch { expected: 1, got: 2 }), Recovery::DeadLetter);
        assert_eq!(r(EmbedError::Unavailable { message: "401".into(), retryable: false }), Recovery::DeadLetter);
        assert_eq!(r(EmbedError::Empty { index: 0 }), Recovery::Permanent);
        let e = embed_err(EmbedError::DimensionMismatch { expected: 1, got: 2 }, "m").error;
        assert_eq!(e.code, "EMBED_DIMENSION_MISMATCH");
    }

    #[test]
    fn only_top_level_numbers_are_counted() {
        let counts = counts_of(&json!({"chunks": 3, "input_hash": "ab", "duration_ms": 5, "types": {"SSN": 1}}));
        assert_eq!(counts, [("chunks".to_owned(), 3)]);
    }
}
