//! `frostbyte ingest PATH… --tenant T`: walks files and directories and takes each file in through the same
//! checks as `POST /api/v1/ingest/{tenant}/documents`, the files read meanwhile together in one transaction
//! ([`Intake::accept_all`]), then (unless `--no-wait`) runs
//! the pipeline workers in this process until every accepted document has finished, and prints what happened to
//! each file with the throughput.
//!
//! Re-runs are cheap: a file whose name and bytes the tenant already has
//! ([`frostbyte_core::documents::DocumentStore::newest_by_filename`], one query per group of files) is reported
//! as unchanged and not taken in again. A file's name is its path relative to the directory argument's
//! parent (`docs/guide/intro.md` for `frostbyte ingest docs`), or its file name for a file argument, so the same
//! tree ingested from the same place is recognised.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use frostbyte_core::TenantId;
use frostbyte_core::documents::{DocumentRecord, DocumentStatus};
use frostbyte_core::scan::ScanResult;
use frostbyte_core::tenant::TenantState;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use uuid::Uuid;

use crate::config::Config;
use crate::events::Published;
use crate::http::AppState;
use crate::intake::{Intake, IntakeError, Upload, max_upload_bytes};

/// What `frostbyte ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub paths: Vec<PathBuf>,
    pub tenant: String,
    pub collection: Option<String>,
    /// A JSON object attached to every document.
    pub metadata: Option<String>,
    /// Return once the files are accepted, leaving processing to running workers.
    pub no_wait: bool,
}

/// A file found by the walk.
#[derive(Debug, Clone)]
struct Found {
    path: PathBuf,
    name: String,
    size: u64,
}

/// What happened to one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub name: String,
    /// `accepted`, `unchanged` or `rejected`, then (when waiting) the document's final status.
    pub status: String,
    pub doc_id: Option<Uuid>,
    pub mime_type: Option<String>,
    pub size_bytes: u64,
    /// The reason code of a rejection or the error code of a failed document.
    pub reason: Option<String>,
    /// Pages the parser found (formats with pages, once parsed).
    pub pages: u64,
}

/// The run's totals, also printed as JSON with `--json`.
#[derive(Debug, Serialize)]
pub struct IngestSummary {
    pub files: usize,
    pub accepted: usize,
    pub unchanged: usize,
    pub rejected: usize,
    pub indexed: usize,
    pub quarantined: usize,
    pub failed: usize,
    /// Documents still processing (only with `--no-wait`).
    pub processing: usize,
    pub bytes: u64,
    /// Pages parsed (PDF, PPTX).
    pub pages: u64,
    pub elapsed_secs: f64,
    pub mb_per_sec: f64,
    pub docs_per_sec: f64,
    pub pages_per_sec: f64,
    /// Peak resident memory of this process, where the platform reports it.
    pub peak_rss_mb: Option<f64>,
    /// `{mime_type: {files, bytes}}` over the accepted files.
    pub by_format: BTreeMap<String, FormatTotals>,
    pub outcomes: Vec<FileOutcome>,
}

#[derive(Debug, Default, Serialize)]
pub struct FormatTotals {
    pub files: usize,
    pub bytes: u64,
}

/// Runs `frostbyte ingest`; the exit code is 1 when any file was rejected or failed.
pub async fn ingest(config: &Config, request: IngestRequest, json: bool) -> anyhow::Result<i32> {
    let started = Instant::now();
    let tenant_id =
        TenantId::parse(&request.tenant).with_context(|| format!("invalid tenant id {:?}", request.tenant))?;
    let metadata = match &request.metadata {
        None => Value::Object(serde_json::Map::new()),
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Object(_)) => v,
            _ => bail!("--metadata must be a JSON object, e.g. '{{\"team\": \"ops\"}}'"),
        },
    };
    let found = walk(&request.paths)?;
    let app = crate::app::build(config).await?;
    if let Some(key) = &app.generated_admin_key {
        eprintln!(
            "generated the platform admin key (stored in {}): {key}",
            config.storage.data_dir.join("admin.key").display()
        );
    }
    let state = app.state;
    let tenant = state
        .store
        .get_tenant(&tenant_id)
        .await?
        .with_context(|| format!("no tenant {tenant_id}; create it with `frostbyte tenant create`"))?;
    if tenant.state != TenantState::Active {
        bail!("tenant {tenant_id} is {:?}; only ACTIVE tenants take in documents", tenant.state);
    }

    let total_bytes: u64 = found.iter().map(|f| f.size).sum();
    let bar =
        progress(total_bytes, "intake", "{spinner} {prefix:>7} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}");
    let intake = Intake::from_state(&state);
    let limit = max_upload_bytes(&tenant.config);
    // Workers start with intake, so the first documents are processed while the rest are still taken in.
    let workers = (!request.no_wait).then(|| Workers::start(config, &state));
    // Files are read and hashed several at a time; whatever has been read while one group was taken in goes into
    // the next group, which costs one quota check and one transaction (`Intake::accept_all`).
    let budget = tokio::sync::Semaphore::new(INTAKE_READ_AHEAD_KIB as usize);
    let budget = &budget;
    let (read_tx, mut read_rx) = tokio::sync::mpsc::channel(INTAKE_GROUP);
    let (found, state, tenant_id, request, metadata) = (&found, &state, &tenant_id, &request, &metadata);
    let read_all = async move {
        let mut reads = futures::stream::iter(found)
            .map(|file| async move {
                // Read-ahead is bounded in bytes as well as in files: a group of large files waits for room.
                let kib = u32::try_from(file.size.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, INTAKE_READ_AHEAD_KIB);
                let room = budget.acquire_many(kib).await.context("intake stopped")?;
                read_in(limit, file, request, metadata).await.map(|read| (read, room))
            })
            .buffered(INTAKE_CONCURRENCY);
        while let Some(read) = reads.next().await {
            if read_tx.send(read).await.is_err() {
                break;
            }
        }
    };
    let take_all = async {
        let mut outcomes = Vec::with_capacity(found.len());
        let mut group = Vec::with_capacity(INTAKE_GROUP);
        while read_rx.recv_many(&mut group, INTAKE_GROUP).await > 0 {
            let first = outcomes.len();
            let (mut uploads, mut waiting) = (Vec::new(), Vec::new());
            let mut rooms = Vec::with_capacity(group.len());
            for read in group.drain(..) {
                let (read, room) = read?;
                rooms.push(room);
                match read {
                    Read::Decided(outcome) => outcomes.push(outcome),
                    Read::Upload(outcome, upload) => {
                        waiting.push(outcomes.len());
                        outcomes.push(outcome);
                        uploads.push(upload);
                    }
                }
            }
            // Files taken in before, unchanged, with one lookup for the group.
            let files: Vec<(&str, &str)> = uploads.iter().map(|u| (u.filename.as_str(), u.sha256.as_str())).collect();
            let taken = crate::corpus::already_taken_in(&*state.documents, tenant_id, &files).await?;
            let (mut fresh, mut fresh_at) = (Vec::with_capacity(uploads.len()), Vec::with_capacity(uploads.len()));
            for ((upload, i), existing) in uploads.into_iter().zip(waiting).zip(taken) {
                match existing {
                    Some(existing) => {
                        let outcome = &mut outcomes[i];
                        outcome.status = "unchanged".into();
                        outcome.doc_id = Some(existing.doc_id);
                        outcome.mime_type = Some(existing.mime_type);
                    }
                    None => {
                        fresh.push(upload);
                        fresh_at.push(i);
                    }
                }
            }
            let (uploads, waiting) = (fresh, fresh_at);
            if !uploads.is_empty() {
                let decided = intake.accept_all(tenant_id, &tenant.config, "cli", uploads).await?;
                for (i, decided) in waiting.into_iter().zip(decided) {
                    record_decision(&mut outcomes[i], decided)?;
                }
            }
            // The group's bytes are stored: room for the next files.
            drop(rooms);
            for outcome in &outcomes[first..] {
                bar.set_message(outcome.name.clone());
                bar.inc(outcome.size_bytes);
            }
        }
        Ok::<_, anyhow::Error>(outcomes)
    };
    let ((), taken) = tokio::join!(read_all, take_all);
    bar.finish_and_clear();
    let mut outcomes = match taken {
        Ok(outcomes) => outcomes,
        Err(e) => {
            // What was accepted stays queued for the next run or a server's workers.
            if let Some(workers) = workers {
                workers.stop().await;
            }
            return Err(e);
        }
    };

    let pending: Vec<usize> =
        outcomes.iter().enumerate().filter(|(_, o)| o.status == "accepted").map(|(i, _)| i).collect();
    if let Some(workers) = workers {
        let waited = wait_for_pipeline(&workers, state, tenant_id, &mut outcomes, pending).await;
        workers.stop().await;
        waited?;
    }

    let summary = summarise(outcomes, started.elapsed());
    let text = if json { serde_json::to_string_pretty(&summary)? + "\n" } else { render(&summary, request.no_wait) };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(i32::from(summary.rejected > 0 || summary.failed > 0))
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress(len: u64, prefix: &'static str, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_prefix(prefix);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Every regular file under `paths`, sorted, skipping hidden entries inside directories. A path that does not
/// exist is an error before anything is ingested.
fn walk(paths: &[PathBuf]) -> anyhow::Result<Vec<Found>> {
    if paths.is_empty() {
        bail!("give at least one file or directory to ingest");
    }
    let mut found = Vec::new();
    for root in paths {
        let meta = std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
        if meta.is_file() {
            let name = root.file_name().map_or_else(|| root.display().to_string(), |n| n.to_string_lossy().into());
            found.push(Found { path: root.clone(), name, size: meta.len() });
            continue;
        }
        let base = root.parent().unwrap_or(Path::new(""));
        let files = crate::corpus::walk_dir(root, base).with_context(|| format!("cannot walk {}", root.display()))?;
        found.extend(files.into_iter().map(|f| Found { path: f.path, name: f.name, size: f.size }));
    }
    Ok(found)
}

/// A file as read: decided already (too large, empty), or an upload for intake with its outcome so far.
enum Read {
    Decided(FileOutcome),
    Upload(FileOutcome, Upload),
}

/// Reads and hashes one file, unless its size already decides it.
async fn read_in(limit: u64, file: &Found, request: &IngestRequest, metadata: &Value) -> anyhow::Result<Read> {
    let mut outcome = FileOutcome {
        name: file.name.clone(),
        status: "rejected".into(),
        doc_id: None,
        mime_type: None,
        size_bytes: file.size,
        reason: None,
        pages: 0,
    };
    if file.size > limit {
        outcome.reason = Some("SIZE_EXCEEDED".into());
        return Ok(Read::Decided(outcome));
    }
    if file.size == 0 {
        outcome.reason = Some("EMPTY_FILE".into());
        return Ok(Read::Decided(outcome));
    }
    let bytes = tokio::fs::read(&file.path).await.with_context(|| format!("cannot read {}", file.path.display()))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let upload = Upload {
        bytes: Bytes::from(bytes),
        sha256,
        filename: file.name.clone(),
        declared_mime: None,
        metadata: metadata.clone(),
        collection: request.collection.clone(),
    };
    Ok(Read::Upload(outcome, upload))
}

/// Records what intake decided for one file; `Err` for an error that is not a refusal of the file.
fn record_decision(
    outcome: &mut FileOutcome,
    decided: Result<(DocumentRecord, ScanResult), IntakeError>,
) -> anyhow::Result<()> {
    match decided {
        Ok((doc, _scan)) => {
            outcome.status = "accepted".into();
            outcome.doc_id = Some(doc.doc_id);
            outcome.mime_type = Some(doc.mime_type);
        }
        Err(IntakeError::MalwareDetected { signature }) => {
            outcome.status = "quarantined".into();
            outcome.reason = Some(format!("MALWARE_DETECTED: {signature}"));
        }
        Err(e) => match crate::corpus::refusal(&e) {
            Some(refused) => {
                if matches!(e, IntakeError::Quota(_)) {
                    tracing::warn!(file = %outcome.name, message = %refused.message, "quota exceeded");
                }
                outcome.reason = Some(refused.reason.into());
                outcome.mime_type = refused.sniffed.map(str::to_owned);
            }
            None => return Err(anyhow::Error::new(e).context(format!("cannot take in {}", outcome.name))),
        },
    }
    Ok(())
}

/// How many files `frostbyte ingest` reads and hashes at once.
const INTAKE_CONCURRENCY: usize = 8;

/// The most files `frostbyte ingest` takes in with one transaction.
const INTAKE_GROUP: usize = 64;

/// The most bytes of files `frostbyte ingest` holds read but not yet stored, in KiB.
const INTAKE_READ_AHEAD_KIB: u32 = 16 * 1024;

/// Pipeline workers running in this process for the length of one `frostbyte ingest`.
struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    poll: Duration,
}

impl Workers {
    fn start(config: &Config, state: &AppState) -> Self {
        let mut workers = config.workers.clone();
        workers.count = workers.count.max(1);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let handles = crate::app::spawn_workers(state, &workers, &stop_rx);
        Workers { stop, handles, poll: Duration::from_millis(workers.poll_interval_ms.clamp(50, 250)) }
    }

    /// Stops the workers after their current batch.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Waits until every accepted document is indexed, quarantined or failed.
async fn wait_for_pipeline(
    workers: &Workers,
    state: &AppState,
    tenant: &TenantId,
    outcomes: &mut [FileOutcome],
    mut pending: Vec<usize>,
) -> anyhow::Result<()> {
    let bar = progress(
        pending.len() as u64,
        "process",
        "{spinner} {prefix:>7} [{bar:30}] {pos}/{len} documents {per_sec} {msg}",
    );
    let poll = workers.poll;
    let mut live = state.events.subscribe(None).live;
    let result = async {
        // This process's workers name the documents they bring to rest (their events), and only those are read
        // again. Otherwise (documents that other processes finish, missed events) each document is looked at
        // only when the tenant's count of processing documents moved since the last look (or every
        // `SWEEP_EVERY` polls, in case other uploads kept the count level): a poll while nothing finished costs
        // one query, not one per pending document.
        const SWEEP_EVERY: u32 = 20;
        const LOOK_WINDOW: usize = 256;
        let (mut processing, mut quiet) = (None, 0);
        let mut ended: Vec<Uuid> = Vec::new();
        while !pending.is_empty() {
            if !ended.is_empty() {
                let named: std::collections::HashSet<Uuid> = ended.drain(..).collect();
                let (look, rest): (Vec<usize>, Vec<usize>) =
                    pending.into_iter().partition(|&i| outcomes[i].doc_id.is_some_and(|d| named.contains(&d)));
                pending = rest;
                for window in look.chunks(LOOK_WINDOW) {
                    pending.extend(look_at(state, tenant, outcomes, window, &bar).await?);
                }
            } else {
                let page = frostbyte_core::page::PageRequest::new(1, 1);
                let now =
                    state.documents.list_documents(tenant, Some(DocumentStatus::Processing), None, page).await?.total;
                if processing == Some(now) && quiet < SWEEP_EVERY {
                    quiet += 1;
                    ended = until_one_finishes(&mut live, tenant, poll).await;
                    continue;
                }
                (processing, quiet) = (Some(now), 0);
                // Documents finish about in the order they were taken in, so a look reads the oldest pending ones,
                // a window at a time, and stops at the first window in which most are still processing: with many
                // thousands queued, a poll reads what may have finished, not everything still waiting.
                let mut still = Vec::with_capacity(pending.len());
                let mut rest = pending.into_iter();
                loop {
                    let window: Vec<usize> = rest.by_ref().take(LOOK_WINDOW).collect();
                    if window.is_empty() {
                        break;
                    }
                    let waiting = look_at(state, tenant, outcomes, &window, &bar).await?;
                    let most_waiting = waiting.len() * 2 > window.len();
                    still.extend(waiting);
                    if most_waiting {
                        still.extend(rest);
                        break;
                    }
                }
                pending = still;
            }
            if !pending.is_empty() && ended.is_empty() {
                ended = until_one_finishes(&mut live, tenant, poll).await;
            }
        }
        anyhow::Ok(())
    }
    .await;
    bar.finish_and_clear();
    result
}

/// Reads the documents of `window` (indexes into `outcomes`) and records the final status of those at rest;
/// returns the indexes of those still processing.
async fn look_at(
    state: &AppState,
    tenant: &TenantId,
    outcomes: &mut [FileOutcome],
    window: &[usize],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<usize>> {
    let ids: Vec<Uuid> = window.iter().map(|&i| outcomes[i].doc_id.expect("accepted files have a document")).collect();
    let found: HashMap<Uuid, DocumentRecord> =
        state.documents.documents_at(tenant, &ids).await?.into_iter().map(|(d, _)| (d.doc_id, d)).collect();
    let mut still = Vec::new();
    for (&i, doc_id) in window.iter().zip(ids) {
        match found.get(&doc_id) {
            Some(d) if d.status == DocumentStatus::Processing => still.push(i),
            Some(d) => {
                outcomes[i].pages = d.lineage.get("pages").and_then(Value::as_u64).unwrap_or(0);
                outcomes[i].status = d.status.as_str().to_owned();
                outcomes[i].reason = d.error_code.clone();
                bar.inc(1);
            }
            None => {
                outcomes[i].status = "erased".into();
                bar.inc(1);
            }
        }
    }
    Ok(still)
}

/// Waits until this process's workers bring a document of `tenant` to rest ([`crate::pipeline::ends_document`]),
/// or `poll` passes: documents that other processes finish are found by polling. Returns the documents the
/// events say came to rest: the events of one committed batch arrive together, so those already published are
/// taken with the first. Empty when `poll` passed or events were missed, and the caller must look for itself.
async fn until_one_finishes(live: &mut Receiver<Arc<Published>>, tenant: &TenantId, poll: Duration) -> Vec<Uuid> {
    let ended = |e: &Published| {
        (e.event.tenant_id.as_ref() == Some(tenant) && crate::pipeline::ends_document(&e.event))
            .then_some(e.event.document_id)
            .flatten()
    };
    let deadline = tokio::time::Instant::now() + poll;
    let mut named = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(event)) => {
                if let Some(doc_id) = ended(&event) {
                    named.push(doc_id);
                    break;
                }
            }
            // Missed events may have finished documents: look now.
            Ok(Err(RecvError::Lagged(_))) => return Vec::new(),
            Ok(Err(RecvError::Closed)) => {
                tokio::time::sleep_until(deadline).await;
                return Vec::new();
            }
            Err(_elapsed) => return Vec::new(),
        }
    }
    loop {
        match live.try_recv() {
            Ok(event) => named.extend(ended(&event)),
            Err(TryRecvError::Lagged(_)) => return Vec::new(),
            Err(_) => return named,
        }
    }
}

fn summarise(outcomes: Vec<FileOutcome>, elapsed: Duration) -> IngestSummary {
    let count = |s: &str| outcomes.iter().filter(|o| o.status == s).count();
    let mut by_format: BTreeMap<String, FormatTotals> = BTreeMap::new();
    let mut bytes = 0;
    let mut taken = 0;
    for o in outcomes.iter().filter(|o| !matches!(o.status.as_str(), "rejected" | "unchanged")) {
        let t = by_format.entry(o.mime_type.clone().unwrap_or_default()).or_default();
        t.files += 1;
        t.bytes += o.size_bytes;
        bytes += o.size_bytes;
        taken += 1;
    }
    let secs = elapsed.as_secs_f64().max(1e-6);
    let pages: u64 = outcomes.iter().map(|o| o.pages).sum();
    IngestSummary {
        files: outcomes.len(),
        accepted: taken,
        unchanged: count("unchanged"),
        rejected: count("rejected"),
        indexed: count("indexed"),
        quarantined: count("quarantined"),
        failed: count("failed"),
        processing: count("accepted"),
        bytes,
        pages,
        elapsed_secs: elapsed.as_secs_f64(),
        mb_per_sec: bytes as f64 / 1_048_576.0 / secs,
        docs_per_sec: taken as f64 / secs,
        pages_per_sec: pages as f64 / secs,
        peak_rss_mb: peak_rss_mb(),
        by_format,
        outcomes,
    }
}

fn render(s: &IngestSummary, no_wait: bool) -> String {
    let mut out = String::new();
    for o in s.outcomes.iter().filter(|o| o.reason.is_some() || o.status == "quarantined") {
        let reason = o.reason.as_deref().unwrap_or("-");
        out.push_str(&format!("  {:<12} {:<24} {}\n", o.status, reason, o.name));
    }
    out.push_str(&format!(
        "{} files: {} taken in, {} unchanged, {} rejected",
        s.files, s.accepted, s.unchanged, s.rejected
    ));
    if no_wait {
        out.push_str(&format!("; {} processing (workers of a running server finish them)\n", s.processing));
    } else {
        out.push_str(&format!("; {} indexed, {} quarantined, {} failed\n", s.indexed, s.quarantined, s.failed));
    }
    for (mime, t) in &s.by_format {
        out.push_str(&format!("  {:<72} {:>6} files {:>10.2} MB\n", mime, t.files, t.bytes as f64 / 1_048_576.0));
    }
    out.push_str(&format!(
        "{:.2} MB in {:.2} s: {:.2} MB/s, {:.1} documents/s",
        s.bytes as f64 / 1_048_576.0,
        s.elapsed_secs,
        s.mb_per_sec,
        s.docs_per_sec
    ));
    if s.pages > 0 {
        out.push_str(&format!(", {} pages ({:.1} pages/s)", s.pages, s.pages_per_sec));
    }
    if let Some(rss) = s.peak_rss_mb {
        out.push_str(&format!(", peak RSS {rss:.0} MB"));
    }
    out.push('\n');
    out
}

/// `VmHWM` from `/proc/self/status` (Linux), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_names_files_from_the_directory_argument_and_skips_hidden_entries() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(docs.join("guide")).unwrap();
        std::fs::create_dir_all(docs.join(".git")).unwrap();
        std::fs::write(docs.join("guide/intro.md"), "# Intro").unwrap();
        std::fs::write(docs.join("a.txt"), "a").unwrap();
        std::fs::write(docs.join(".hidden"), "x").unwrap();
        std::fs::write(docs.join(".git/config"), "x").unwrap();
        let single = dir.path().join("single.csv");
        std::fs::write(&single, "a,b\n1,2\n").unwrap();
        let found = walk(&[docs, single]).unwrap();
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["docs/a.txt", "docs/guide/intro.md", "single.csv"]);
        assert_eq!(found[1].size, 7);
    }

    #[test]
    fn a_missing_path_fails_before_anything_is_ingested() {
        let e = walk(&[PathBuf::from("/definitely/not/here")]).unwrap_err();
        assert!(e.to_string().contains("/definitely/not/here"), "{e}");
        assert!(walk(&[]).is_err());
    }
}
