//! `documents.sync`: incremental ingest from a local directory or an S3 prefix.
//!
//! **Where it may read.** A run's `source` is an absolute directory path or `s3://bucket/prefix`, and must be one
//! of the operator's `[pipelines] sync_roots` or lie inside one (`{tenant}` in a root stands for the run's
//! tenant). Paths with `..` are refused, a directory is checked before and after resolving symbolic links, and
//! the walk never follows links, so a tenant parameter cannot make Frostbyte read arbitrary server files. The
//! check runs when the run is created (400, naming `parameters.source`) and again when it executes.
//!
//! **What it does.** It lists the source (name, size, and modification time or ETag) and compares the listing with the
//! sync state of earlier runs ([`SyncStore`](frostbyte_core::pipelines::sync::SyncStore)): a file whose size and stamp
//! match, and whose document still holds the bytes recorded, is `unchanged` without being read. Any other file is read
//! and hashed: the same bytes only refresh the state; new bytes go through intake like an upload
//! ([`crate::intake::Intake`]: scan, type, schema, quotas, then the document pipeline) and are `added`, or, when the
//! file had a live document, replace it in place under the same doc id (`updated`, the `PUT …/documents/{doc_id}`
//! use-case). A file intake refuses is `rejected` with its reason (`UNSUPPORTED_FORMAT`, `QUOTA_EXCEEDED`,
//! `SIZE_EXCEEDED`, ...) and the run goes on. Files no longer at the source have their documents erased (`deleted`,
//! with erasure receipts) unless `delete_missing` is false. The counts are the run's outcome; the cancel token is
//! checked between files and progress is recorded as it goes.
//!
//! The same code lists and reads every object store: an `s3://` source gets an S3 client from the environment
//! (`frostbyte_adapters::resolve::s3_bucket`), unless [`SyncSettings::with_bucket`] wired another store for the
//! bucket (an S3-compatible store configured in code, or an in-memory one in tests).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use frostbyte_core::TenantId;
use frostbyte_core::pipelines::{SyncedFile, SyncedFileState};
use frostbyte_core::service::lifecycle::NewContent;
use frostbyte_core::service::tenants::{Actor, ServiceError};
use frostbyte_core::tenant::TenantConfig;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::DocumentPlane;
use super::processors::{Outcome, ProcessorError, RunContext};
use crate::corpus;
use crate::intake::{IntakeError, Upload, max_upload_bytes};

/// The processor's registry name.
pub const PROCESSOR: &str = "documents.sync";
/// Files between two progress records.
const PROGRESS_EVERY: usize = 200;
/// Erasure receipts listed in a run's counts (every erasure is audited whatever the number).
const RECEIPTS_LISTED: usize = 100;

/// Where `documents.sync` may read (`[pipelines] sync_roots`), and object stores wired for buckets in code.
#[derive(Clone, Default)]
pub struct SyncSettings {
    /// Absolute directories and `s3://bucket[/prefix]` URLs; `{tenant}` is the run's tenant id.
    pub roots: Vec<String>,
    buckets: BTreeMap<String, Arc<dyn ObjectStore>>,
}

impl std::fmt::Debug for SyncSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSettings").field("roots", &self.roots).field("buckets", &self.buckets.keys()).finish()
    }
}

impl SyncSettings {
    pub fn new(roots: Vec<String>) -> Self {
        SyncSettings { roots, buckets: BTreeMap::new() }
    }

    /// Serves `s3://{bucket}/…` sources from `store` instead of an S3 client built from the environment. The
    /// allowlist still applies.
    pub fn with_bucket(mut self, bucket: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        self.buckets.insert(bucket.into(), store);
        self
    }
}

/// A source or root, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Dir(PathBuf),
    /// `prefix` without leading or trailing `/`; empty for a whole bucket.
    Bucket {
        bucket: String,
        prefix: String,
    },
}

impl Location {
    fn parse(raw: &str) -> Result<Location, String> {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty() {
                return Err(format!("{raw:?} names no bucket (s3://bucket/prefix)"));
            }
            if prefix.split('/').any(|p| p == ".." || p == ".") || prefix.contains("//") {
                return Err(format!("{raw:?}: the prefix may not contain empty, . or .. segments"));
            }
            return Ok(Location::Bucket { bucket: bucket.to_owned(), prefix: prefix.to_owned() });
        }
        if raw.contains("://") {
            return Err(format!("{raw:?}: sources are absolute directory paths or s3://bucket/prefix"));
        }
        let path = Path::new(raw);
        if !path.is_absolute() {
            return Err(format!("{raw:?} is not an absolute path"));
        }
        if raw.split('/').any(|segment| segment == "." || segment == "..")
            || path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(format!("{raw:?}: the path may not contain . or .. segments"));
        }
        Ok(Location::Dir(path.components().collect()))
    }

    /// The source's name in the sync state.
    fn key(&self) -> String {
        match self {
            Location::Dir(p) => p.display().to_string(),
            Location::Bucket { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            Location::Bucket { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// Whether `self` is `root` or inside it (same kind; directories compared by whole components).
    fn within(&self, root: &Location) -> bool {
        match (self, root) {
            (Location::Dir(p), Location::Dir(r)) => p.starts_with(r),
            (Location::Bucket { bucket, prefix }, Location::Bucket { bucket: rb, prefix: rp }) => {
                bucket == rb
                    && (rp.is_empty()
                        || prefix == rp
                        || prefix.strip_prefix(rp.as_str()).is_some_and(|r| r.starts_with('/')))
            }
            _ => false,
        }
    }
}

/// Configuration problems of `[pipelines] sync_roots` (for `Config::validate`).
pub fn check_roots(roots: &[String]) -> Vec<String> {
    roots
        .iter()
        .filter_map(|r| {
            Location::parse(&r.replace("{tenant}", "tenant")).err().map(|e| format!("pipelines.sync_roots: {e}"))
        })
        .collect()
}

/// The source a run of `tenant` may read, with symbolic links of a directory resolved; `Err` says why not, in
/// words fit for the tenant (never which roots exist).
fn authorize(raw: &str, tenant: &TenantId, settings: &SyncSettings) -> Result<Location, String> {
    let location = Location::parse(raw)?;
    let outside = || format!("{:?} is outside the sources this deployment allows ([pipelines] sync_roots)", raw.trim());
    let roots: Vec<Location> =
        settings.roots.iter().filter_map(|r| Location::parse(&r.replace("{tenant}", tenant.as_str())).ok()).collect();
    match location {
        Location::Bucket { .. } => {
            if roots.iter().any(|r| location.within(r)) {
                Ok(location)
            } else {
                Err(outside())
            }
        }
        Location::Dir(ref path) => {
            // Both the path as given and its resolved form must be inside a root (itself resolved): a link inside
            // a root cannot point out of it, and nothing is said about paths outside every root.
            let resolved_roots: Vec<PathBuf> = roots
                .iter()
                .filter_map(|r| match r {
                    Location::Dir(d) => std::fs::canonicalize(d).ok(),
                    Location::Bucket { .. } => None,
                })
                .collect();
            let lexically =
                roots.iter().any(|r| location.within(r)) || resolved_roots.iter().any(|r| path.starts_with(r));
            if !lexically {
                return Err(outside());
            }
            let resolved = std::fs::canonicalize(path).map_err(|_| format!("{:?} does not exist", raw.trim()))?;
            if !resolved_roots.iter().any(|r| resolved.starts_with(r)) {
                return Err(outside());
            }
            if !resolved.is_dir() {
                return Err(format!("{:?} is not a directory", raw.trim()));
            }
            Ok(Location::Dir(resolved))
        }
    }
}

/// Run-creation check of a `documents.sync` source: `(field, problem)` when it may not be read.
pub(crate) fn check_source(source: Option<&str>, tenant: &TenantId, settings: &SyncSettings) -> Option<String> {
    match source.map(str::trim).filter(|s| !s.is_empty()) {
        None => Some("documents.sync needs a source".into()),
        Some(raw) => authorize(raw, tenant, settings).err(),
    }
}

/// One file of a listing.
#[derive(Debug, Clone)]
struct Listed {
    /// Inside the source, `/`-separated.
    path: String,
    size: u64,
    /// Modification time in nanoseconds, or the ETag; empty when the source reports neither (always hashed).
    version: String,
    at: Where,
}

#[derive(Debug, Clone)]
enum Where {
    File(PathBuf),
    Object(ObjectPath),
}

/// An opened source.
enum Source {
    Dir(PathBuf),
    Objects { store: Arc<dyn ObjectStore>, prefix: Option<ObjectPath> },
}

fn object_error(e: object_store::Error) -> ProcessorError {
    let retryable = !matches!(e, object_store::Error::NotFound { .. } | object_store::Error::NotImplemented { .. });
    ProcessorError::Failed { message: format!("the source cannot be read: {e}"), retryable }
}

impl Source {
    fn open(location: &Location, settings: &SyncSettings) -> Result<Source, ProcessorError> {
        Ok(match location {
            Location::Dir(p) => Source::Dir(p.clone()),
            Location::Bucket { bucket, prefix } => {
                let store = match settings.buckets.get(bucket) {
                    Some(s) => s.clone(),
                    None => frostbyte_adapters::resolve::s3_bucket(bucket)
                        .map_err(|e| ProcessorError::permanent(format!("cannot open s3://{bucket}: {e}")))?,
                };
                let prefix = (!prefix.is_empty())
                    .then(|| ObjectPath::parse(prefix))
                    .transpose()
                    .map_err(|e| ProcessorError::permanent(format!("invalid prefix {prefix:?}: {e}")))?;
                Source::Objects { store, prefix }
            }
        })
    }

    /// Every file, sorted by path; hidden entries (a segment starting with `.`) are left out.
    async fn list(&self) -> Result<Vec<Listed>, ProcessorError> {
        let mut listed: Vec<Listed> = match self {
            Source::Dir(root) => {
                let root = root.clone();
                let files = tokio::task::spawn_blocking(move || corpus::walk_dir(&root, &root))
                    .await
                    .map_err(|e| ProcessorError::permanent(format!("the directory walk failed: {e}")))?
                    .map_err(|e| ProcessorError::Failed {
                        message: format!("the source cannot be read: {e}"),
                        retryable: true,
                    })?;
                files
                    .into_iter()
                    .map(|f| Listed {
                        version: f
                            .modified
                            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                            .map(|d| d.as_nanos().to_string())
                            .unwrap_or_default(),
                        path: f.name,
                        size: f.size,
                        at: Where::File(f.path),
                    })
                    .collect()
            }
            Source::Objects { store, prefix } => {
                let metas: Vec<object_store::ObjectMeta> =
                    store.list(prefix.as_ref()).try_collect().await.map_err(object_error)?;
                metas
                    .into_iter()
                    .filter_map(|m| {
                        let parts: Vec<String> = match prefix {
                            Some(p) => m.location.prefix_match(p)?.map(|part| part.as_ref().to_owned()).collect(),
                            None => m.location.parts().map(|part| part.as_ref().to_owned()).collect(),
                        };
                        if parts.is_empty() || parts.iter().any(|p| p.starts_with('.')) {
                            return None;
                        }
                        let version = m.e_tag.clone().unwrap_or_else(|| {
                            m.last_modified.timestamp_nanos_opt().map(|n| n.to_string()).unwrap_or_default()
                        });
                        Some(Listed { path: parts.join("/"), size: m.size, version, at: Where::Object(m.location) })
                    })
                    .collect()
            }
        };
        listed.sort_by(|a: &Listed, b: &Listed| a.path.cmp(&b.path));
        Ok(listed)
    }

    /// The file's bytes; `Err` with a message when this one file cannot be read (gone, no permission).
    async fn read(&self, file: &Listed) -> Result<Result<Bytes, String>, ProcessorError> {
        match (self, &file.at) {
            (Source::Dir(_), Where::File(path)) => {
                Ok(tokio::fs::read(path).await.map(Bytes::from).map_err(|e| e.to_string()))
            }
            (Source::Objects { store, .. }, Where::Object(location)) => match store.get(location).await {
                Ok(got) => match got.bytes().await {
                    Ok(b) => Ok(Ok(b)),
                    Err(object_store::Error::NotFound { .. }) => Ok(Err("the object is gone".into())),
                    Err(e) => Err(object_error(e)),
                },
                Err(object_store::Error::NotFound { .. }) => Ok(Err("the object is gone".into())),
                Err(e) => Err(object_error(e)),
            },
            _ => Err(ProcessorError::permanent("a listed file does not belong to its source")),
        }
    }
}

/// The run's counts.
#[derive(Debug, Default)]
struct Tally {
    files: u64,
    added: u64,
    updated: u64,
    deleted: u64,
    unchanged: u64,
    rejected: u64,
    /// Files gone from the source whose documents were kept (`delete_missing: false`).
    missing: u64,
    reasons: BTreeMap<&'static str, u64>,
    receipts: Vec<Value>,
}

impl Tally {
    fn reject(&mut self, path: &str, reason: &'static str, message: &str) {
        self.rejected += 1;
        *self.reasons.entry(reason).or_default() += 1;
        tracing::info!(file = %path, reason, message, "sync: file rejected");
    }

    fn into_outcome(self) -> Outcome {
        let mut counts = Map::new();
        for (k, v) in [
            ("files", self.files),
            ("added", self.added),
            ("updated", self.updated),
            ("deleted", self.deleted),
            ("unchanged", self.unchanged),
            ("rejected", self.rejected),
            ("missing", self.missing),
        ] {
            counts.insert(k.into(), json!(v));
        }
        counts.insert("rejected_reasons".into(), json!(self.reasons));
        counts.insert("erasure_receipts".into(), Value::Array(self.receipts));
        Outcome { records: self.files, counts }
    }
}

/// How a replacement ended.
enum Replaced {
    Done,
    Refused(corpus::Refusal),
    /// The document was erased meanwhile: take the file in as new.
    Gone,
}

fn intake_failure(e: IntakeError) -> ProcessorError {
    match e {
        IntakeError::Store(e) => e.into(),
        IntakeError::Blob(e) => e.into(),
        IntakeError::Scan(e) => {
            ProcessorError::Failed { message: format!("the malware scanner gave no verdict: {e}"), retryable: true }
        }
        e => ProcessorError::permanent(e.to_string()),
    }
}

fn service_failure(e: ServiceError) -> ProcessorError {
    match e {
        ServiceError::Store(e) => e.into(),
        ServiceError::Blob(e) => e.into(),
        ServiceError::Conflict(m) => ProcessorError::Failed { message: m, retryable: true },
        e => ProcessorError::permanent(e.to_string()),
    }
}

/// One run's fixed inputs.
struct Syncer<'a> {
    ctx: &'a RunContext,
    plane: &'a DocumentPlane,
    config: TenantConfig,
    key: String,
    collection: Option<String>,
    metadata: Option<Value>,
    actor: String,
}

impl Syncer<'_> {
    fn record(&self, file: &Listed, size: u64, sha256: &str, doc_id: uuid::Uuid) -> SyncedFile {
        SyncedFile {
            source: self.key.clone(),
            path: file.path.clone(),
            size_bytes: size,
            version: file.version.clone(),
            sha256: sha256.to_owned(),
            doc_id,
            synced_at: frostbyte_core::now(),
        }
    }

    async fn remember(&self, file: SyncedFile) -> Result<(), ProcessorError> {
        Ok(self.plane.sync_state.put_sync_file(&self.ctx.tenant, &file).await?)
    }

    /// A file that is new, changed, or whose state does not match its document.
    async fn one(
        &self,
        source: &Source,
        file: &Listed,
        prior: Option<SyncedFileState>,
        tally: &mut Tally,
    ) -> Result<(), ProcessorError> {
        let limit = max_upload_bytes(&self.config);
        if file.size > limit {
            tally.reject(&file.path, "SIZE_EXCEEDED", "larger than the tenant's max_file_size_mb");
            return Ok(());
        }
        let bytes = match source.read(file).await? {
            Ok(b) => b,
            Err(message) => {
                tally.reject(&file.path, "UNREADABLE", &message);
                return Ok(());
            }
        };
        if bytes.len() as u64 > limit {
            tally.reject(&file.path, "SIZE_EXCEEDED", "larger than the tenant's max_file_size_mb");
            return Ok(());
        }
        if bytes.is_empty() {
            tally.reject(&file.path, "EMPTY_FILE", "the file is empty");
            return Ok(());
        }
        let size = bytes.len() as u64;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(prior) = prior
            && let Some(current) = &prior.document_sha256
        {
            if *current == sha256 {
                // Touched, not changed: only the stamp moves.
                tally.unchanged += 1;
                return self.remember(self.record(file, size, &sha256, prior.file.doc_id)).await;
            }
            match self.replace(prior.file.doc_id, file, bytes.clone(), &sha256).await? {
                Replaced::Done => {
                    tally.updated += 1;
                    return self.remember(self.record(file, size, &sha256, prior.file.doc_id)).await;
                }
                Replaced::Refused(r) => {
                    tally.reject(&file.path, r.reason, &r.message);
                    return Ok(());
                }
                Replaced::Gone => {}
            }
        }
        let tenant = &self.ctx.tenant;
        let intake = &self.plane.intake;
        let taken = corpus::already_taken_in(&*intake.documents, tenant, &[(&file.path, &sha256)]).await?;
        if let Some(doc) = taken.into_iter().flatten().next() {
            tally.unchanged += 1;
            return self.remember(self.record(file, size, &sha256, doc.doc_id)).await;
        }
        let upload = Upload {
            bytes,
            sha256: sha256.clone(),
            filename: file.path.clone(),
            declared_mime: None,
            metadata: self.metadata.clone().unwrap_or_else(|| Value::Object(Map::new())),
            collection: self.collection.clone(),
        };
        match intake.accept(tenant, &self.config, &self.actor, upload).await {
            Ok((doc, _)) => {
                tally.added += 1;
                self.remember(self.record(file, size, &sha256, doc.doc_id)).await
            }
            Err(e) => match corpus::refusal(&e) {
                Some(r) => {
                    tally.reject(&file.path, r.reason, &r.message);
                    Ok(())
                }
                None => Err(intake_failure(e)),
            },
        }
    }

    /// Replaces `doc_id`'s content with the file's: the same checks as an upload, then the replace use-case.
    async fn replace(
        &self,
        doc_id: uuid::Uuid,
        file: &Listed,
        bytes: Bytes,
        sha256: &str,
    ) -> Result<Replaced, ProcessorError> {
        let tenant = &self.ctx.tenant;
        let intake = &self.plane.intake;
        let Some(current) = intake.documents.get_document(tenant, doc_id).await? else { return Ok(Replaced::Gone) };
        let upload = Upload {
            bytes,
            sha256: sha256.to_owned(),
            filename: file.path.clone(),
            declared_mime: None,
            metadata: self.metadata.clone().unwrap_or(current.metadata),
            collection: None,
        };
        let checked = match intake.check(tenant, &self.config, &self.actor, &upload).await {
            Ok(c) => c,
            Err(e) => {
                return match corpus::refusal(&e) {
                    Some(r) => Ok(Replaced::Refused(r)),
                    None => Err(intake_failure(e)),
                };
            }
        };
        let content = NewContent {
            bytes: upload.bytes,
            sha256: upload.sha256,
            original_filename: upload.filename,
            mime_type: checked.mime.to_owned(),
            metadata: self.metadata.clone(),
            collection: self.collection.clone().map(Some),
        };
        match self.plane.lifecycle().replace(tenant, doc_id, content, &Actor::System).await {
            Ok(_) => Ok(Replaced::Done),
            Err(ServiceError::NotFound(_)) => Ok(Replaced::Gone),
            Err(e) => Err(service_failure(e)),
        }
    }
}

/// Whether the listing alone shows the file unchanged since it was recorded (and its document still holds it).
fn unchanged(prior: &SyncedFileState, file: &Listed) -> bool {
    !file.version.is_empty()
        && prior.file.version == file.version
        && prior.file.size_bytes == file.size
        && prior.document_sha256.as_deref() == Some(prior.file.sha256.as_str())
}

/// The processor. See the module docs.
pub(crate) async fn documents_sync(ctx: RunContext) -> Result<Outcome, ProcessorError> {
    let plane = ctx.documents.clone().ok_or_else(|| {
        ProcessorError::permanent("documents.sync needs the document plane, which this process was not started with")
    })?;
    let raw = ctx.required(&ctx.source, "source")?;
    let location = authorize(&raw, &ctx.tenant, &plane.sync_settings).map_err(ProcessorError::permanent)?;
    let tenant = ctx
        .store
        .get_tenant(&ctx.tenant)
        .await?
        .ok_or_else(|| ProcessorError::permanent("the tenant no longer exists"))?;
    let metadata = match ctx.param_str("metadata").map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => return Err(ProcessorError::permanent("parameter metadata must be a JSON object")),
        },
    };
    let collection = ctx.param_str("collection").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let delete_missing = ctx.parameters.get("delete_missing").and_then(Value::as_bool).unwrap_or(true);
    let source = Source::open(&location, &plane.sync_settings)?;
    let sync = Syncer {
        ctx: &ctx,
        plane: &plane,
        config: tenant.config,
        key: location.key(),
        collection,
        metadata,
        actor: format!("pipeline:{}", ctx.run_id),
    };

    let listing = source.list().await?;
    let mut known: HashMap<String, SyncedFileState> = plane
        .sync_state
        .sync_files(&ctx.tenant, &sync.key)
        .await?
        .into_iter()
        .map(|s| (s.file.path.clone(), s))
        .collect();
    let work = (listing.len() + 1) as f64;
    let mut tally = Tally { files: listing.len() as u64, ..Tally::default() };
    for (i, file) in listing.iter().enumerate() {
        ctx.check_cancelled()?;
        let prior = known.remove(&file.path);
        match prior {
            Some(p) if unchanged(&p, file) => tally.unchanged += 1,
            prior => sync.one(&source, file, prior, &mut tally).await?,
        }
        if (i + 1) % PROGRESS_EVERY == 0 {
            ctx.progress((i + 1) as f64 / work, (i + 1) as u64).await;
        }
    }

    // Files no longer at the source.
    let mut gone: Vec<SyncedFileState> = known.into_values().collect();
    gone.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    if delete_missing {
        let lifecycle = plane.lifecycle();
        for state in gone {
            ctx.check_cancelled()?;
            if state.document_sha256.is_some() {
                match lifecycle.erase(&ctx.tenant, state.file.doc_id, &Actor::System).await {
                    Ok(receipt) => {
                        tally.deleted += 1;
                        if tally.receipts.len() < RECEIPTS_LISTED {
                            tally.receipts.push(json!({
                                "doc_id": receipt.doc_id, "generation": receipt.generation,
                                "erased_at": receipt.erased_at, "verified": receipt.verified,
                                "raw_retained": receipt.raw_retained,
                            }));
                        }
                    }
                    Err(ServiceError::NotFound(_)) => {}
                    Err(e) => return Err(service_failure(e)),
                }
            }
            plane.sync_state.delete_sync_file(&ctx.tenant, &sync.key, &state.file.path).await?;
        }
    } else {
        tally.missing = gone.len() as u64;
    }
    ctx.progress(1.0, tally.files).await;
    tracing::info!(
        tenant = %ctx.tenant, run_id = %ctx.run_id, files = tally.files, added = tally.added, updated = tally.updated,
        deleted = tally.deleted, unchanged = tally.unchanged, rejected = tally.rejected, "sync finished"
    );
    Ok(tally.into_outcome())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    /// A processor context over a scratch SQLite store with tenant `acme`, syncing `root/acme/...`.
    async fn context(root: &Path, cancel: super::super::processors::CancelToken) -> (RunContext, tempfile::TempDir) {
        let (ports, blobs, dir) = crate::engine::scratch_acme().await;
        let plane = DocumentPlane {
            intake: Arc::new(crate::intake::Intake {
                store: ports.store.clone(),
                documents: ports.documents.clone(),
                batches: ports.batches.clone(),
                blobs: blobs.clone(),
                scanner: Arc::new(frostbyte_core::scan::NoScanner),
            }),
            index: ports.index.clone(),
            embedders: Arc::new(frostbyte_core::embed::EmbedderRegistry::default()),
            shadow: ports.shadow.clone(),
            sync_state: ports.sync.clone(),
            sync_settings: SyncSettings::new(vec![format!("{}/{{tenant}}", root.display())]),
        };
        let definition = super::super::definitions::Definitions::load(None).get("documents", "sync").unwrap();
        let source = root.join("acme").display().to_string();
        let mut parameters = Map::new();
        parameters.insert("source".into(), json!(source));
        let ctx = RunContext {
            tenant: tenant(),
            run_id: frostbyte_core::ids::new_id(),
            definition,
            parameters,
            source: Some(source),
            target: None,
            options: Map::new(),
            store: ports.store.clone(),
            blobs,
            runs: ports.runs.clone(),
            documents: Some(Arc::new(plane)),
            connections: Arc::default(),
            cancel,
        };
        (ctx, dir)
    }

    #[tokio::test]
    async fn a_cancelled_sync_stops_before_the_next_file_and_keeps_what_it_did() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir_all(root.path().join("acme")).unwrap();
            std::fs::write(root.path().join(format!("acme/{i}.txt")), format!("file number {i}")).unwrap();
        }
        let token = super::super::processors::CancelToken::default();
        token.cancel();
        let (ctx, _db) = context(root.path(), token).await;
        assert_eq!(documents_sync(ctx.clone()).await.unwrap_err(), ProcessorError::Cancelled);
        // The same tenant and store again, not cancelled: every file is still new, so none was taken in.
        let again = RunContext { cancel: super::super::processors::CancelToken::default(), ..ctx.clone() };
        let outcome = documents_sync(again).await.unwrap();
        assert_eq!((outcome.records, outcome.counts["added"].clone()), (5, json!(5)));
        let run = ctx.runs.get_run(&ctx.tenant, ctx.run_id).await.unwrap();
        assert!(run.is_none(), "a processor outside a stored run records progress best effort, without failing");
    }

    #[test]
    fn sources_are_absolute_paths_or_s3_prefixes_without_dot_segments() {
        assert!(Location::parse("relative/dir").is_err());
        assert!(Location::parse("/srv/../etc").is_err());
        assert!(Location::parse("/srv/./x").is_err());
        assert!(Location::parse("file:///srv").is_err());
        assert!(Location::parse("s3://").is_err());
        assert!(Location::parse("s3://b/a/../c").is_err());
        assert_eq!(
            Location::parse("s3://b/docs/").unwrap(),
            Location::Bucket { bucket: "b".into(), prefix: "docs".into() }
        );
        assert_eq!(Location::parse("s3://b/docs/").unwrap().key(), "s3://b/docs");
        assert_eq!(Location::parse("/srv/x/").unwrap().key(), "/srv/x");
        assert_eq!(check_roots(&["/srv/{tenant}".into(), "s3://b".into(), "nope".into()]).len(), 1);
    }

    #[test]
    fn s3_sources_must_lie_inside_an_allowed_prefix_by_whole_segments() {
        let settings = SyncSettings::new(vec!["s3://corp/teams/{tenant}".into()]);
        assert!(authorize("s3://corp/teams/acme", &tenant(), &settings).is_ok());
        assert!(authorize("s3://corp/teams/acme/handbook", &tenant(), &settings).is_ok());
        assert!(authorize("s3://corp/teams/acme-evil", &tenant(), &settings).is_err());
        assert!(authorize("s3://corp/teams/globex", &tenant(), &settings).is_err());
        assert!(authorize("s3://other/teams/acme", &tenant(), &settings).is_err());
        assert!(authorize("s3://corp/teams/acme", &tenant(), &SyncSettings::default()).is_err(), "no roots");
    }

    #[test]
    fn directories_must_resolve_inside_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acme");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(dir.path().join("secret")).unwrap();
        let settings = SyncSettings::new(vec![format!("{}/{{tenant}}", dir.path().display())]);
        let ok = authorize(&root.join("docs").display().to_string(), &tenant(), &settings).unwrap();
        assert_eq!(ok, Location::Dir(std::fs::canonicalize(root.join("docs")).unwrap()));
        let e = authorize(&dir.path().join("secret").display().to_string(), &tenant(), &settings).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = authorize("/etc", &tenant(), &settings).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = authorize(&root.join("missing").display().to_string(), &tenant(), &settings).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
            let e = authorize(&root.join("escape").display().to_string(), &tenant(), &settings).unwrap_err();
            assert!(e.contains("outside"), "a link out of the root is refused: {e}");
        }
    }
}
