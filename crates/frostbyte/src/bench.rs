//! Benchmarks behind `frostbyte bench`:
//!
//! - **retrieval** — ingests a labelled set in BEIR layout (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`),
//!   one document per corpus entry, through the normal path ([`crate::intake::Intake`] then
//!   [`crate::pipeline::Pipeline`] until the queue is idle) in a scratch store, runs every query in each mode and
//!   scores the ranked document ids: nDCG@10 and recall@10. Nothing here or in the product is tuned to a set.
//! - **search** — writes synthetic chunks (sentences of the bundled corpus, hash-embedded) through the real chunk
//!   index of a scratch SQLite store, then times the search use-case per mode (p50, p99) and measures queries/s
//!   with concurrent clients.
//! - **sync** — generates a corpus of small text files in a scratch directory, takes it in with one
//!   `documents.sync` run through the real engine (intake only; the document pipeline is not run), then times
//!   runs over the unchanged corpus end to end (run created → completed), which is listing and comparing with
//!   the sync state.
//! - **stages** — the document work of each pipeline stage on one core, without a store
//!   ([`crate::stages_bench`]).
//! - **engine** and **records** — the pipeline engine's overhead and `records.copy` throughput
//!   ([`crate::engine::bench`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use frostbyte_core::TenantId;
use frostbyte_core::embed::{Embedder, HashEmbedder};
use frostbyte_core::index::{IndexedChunk, SearchFilter};
use frostbyte_core::queue::RunOnce;
use frostbyte_core::service::search::{FusionSettings, SearchMode, SearchQuery, SearchService};
use frostbyte_core::service::{Actor, CreateTenant, TenantService};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cli::BenchCommand;
use crate::config::Config;
use crate::intake::{Intake, Upload};
use crate::pipeline::Pipeline;

/// The labelled set bundled with the repository.
pub fn bundled_data() -> PathBuf {
    // Cargo sets the variable when it runs tests and `cargo run`: a binary reused from a build cache made in
    // another checkout then still reads this checkout's files.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures/python-faq")
}

const MODES: [SearchMode; 3] = [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid];
/// Chunks asked for per query, so that ten distinct documents remain after collapsing chunks to documents.
const RETRIEVAL_DEPTH: usize = 50;
const BENCH_TENANT: &str = "bench";

/// A scratch embedded store (SQLite and in-memory blobs) with one ACTIVE tenant; removed when dropped.
struct Scratch {
    ports: frostbyte_adapters::resolve::MetadataPorts,
    blobs: Arc<dyn frostbyte_core::ports::BlobStore>,
    tenant: TenantId,
    _dir: tempfile::TempDir,
}

async fn scratch(config: Option<Value>) -> anyhow::Result<Scratch> {
    let dir = tempfile::tempdir().context("cannot create a scratch directory")?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let ports = frostbyte_adapters::resolve::metadata_ports(&url, 8).await?;
    ports.store.migrate().await?;
    let blobs = frostbyte_adapters::resolve::blob_store("memory://")?;
    let tenants = TenantService::new(ports.store.clone(), blobs.clone(), ports.documents.clone());
    let create = CreateTenant {
        tenant_id: BENCH_TENANT.into(),
        tenant_name: "Benchmark".into(),
        contact_email: "bench@example.com".into(),
        tier: None,
        config,
    };
    let tenant = tenants.create(create, &Actor::Cli).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Scratch { ports, blobs, tenant: tenant.tenant_id, _dir: dir })
}

/// A labelled set in BEIR layout.
pub struct LabelledSet {
    /// `(id, text)`.
    pub corpus: Vec<(String, String)>,
    /// `(id, text)`.
    pub queries: Vec<(String, String)>,
    /// Query id → relevant corpus ids.
    pub qrels: HashMap<String, HashSet<String>>,
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
            match (v["_id"].as_str(), v["text"].as_str()) {
                (Some(id), Some(text)) => Ok((id.to_owned(), text.to_owned())),
                _ => bail!("{}:{}: expected _id and text", path.display(), n + 1),
            }
        })
        .collect()
}

impl LabelledSet {
    pub fn load(dir: &Path) -> anyhow::Result<LabelledSet> {
        let corpus = read_jsonl(&dir.join("corpus.jsonl"))?;
        let queries = read_jsonl(&dir.join("queries.jsonl"))?;
        let qrels_path = dir.join("qrels/test.tsv");
        let qrels_text =
            std::fs::read_to_string(&qrels_path).with_context(|| format!("cannot read {}", qrels_path.display()))?;
        let mut qrels: HashMap<String, HashSet<String>> = HashMap::new();
        for line in qrels_text.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            if let [q, d, score] = cols[..]
                && score.trim().parse::<f64>().is_ok_and(|s| s > 0.0)
            {
                qrels.entry(q.to_owned()).or_default().insert(d.to_owned());
            }
        }
        Ok(LabelledSet { corpus, queries, qrels })
    }
}

/// nDCG@k with binary relevance.
pub fn ndcg_at(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, d)| relevant.contains(*d))
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(k)).map(|i| 1.0 / ((i + 2) as f64).log2()).sum();
    if ideal == 0.0 { 0.0 } else { dcg / ideal }
}

/// recall@k.
pub fn recall_at(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    ranked.iter().take(k).filter(|d| relevant.contains(*d)).count() as f64 / relevant.len() as f64
}

/// One mode's scores.
#[derive(Debug, Clone, Serialize)]
pub struct ModeScore {
    pub mode: SearchMode,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
}

/// What `bench retrieval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    pub documents: usize,
    pub chunks: u64,
    pub queries: usize,
    pub embed_model: String,
    pub ingest_secs: f64,
    pub modes: Vec<ModeScore>,
}

impl RetrievalReport {
    pub fn score(&self, mode: SearchMode) -> &ModeScore {
        self.modes.iter().find(|m| m.mode == mode).expect("every mode is measured")
    }
}

/// Runs the retrieval benchmark on the set in `dir`.
pub async fn retrieval(dir: &Path, fusion: FusionSettings) -> anyhow::Result<RetrievalReport> {
    let set = LabelledSet::load(dir)?;
    let s = scratch(None).await?;
    let started = Instant::now();
    let intake = Intake {
        store: s.ports.store.clone(),
        documents: s.ports.documents.clone(),
        batches: s.ports.batches.clone(),
        blobs: s.blobs.clone(),
        scanner: Arc::new(frostbyte_core::scan::NoScanner),
    };
    let config = s.ports.store.get_tenant(&s.tenant).await?.context("the bench tenant vanished")?.config;
    let mut doc_to_corpus: HashMap<String, String> = HashMap::new();
    for (id, text) in &set.corpus {
        let bytes = bytes::Bytes::from(text.clone().into_bytes());
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let upload = Upload {
            bytes,
            sha256,
            filename: format!("{id}.txt"),
            declared_mime: Some("text/plain".into()),
            metadata: json!({"corpus_id": id}),
            collection: None,
        };
        let (doc, _) =
            intake.accept(&s.tenant, &config, "cli", upload).await.map_err(|e| anyhow::anyhow!("intake: {e}"))?;
        doc_to_corpus.insert(doc.doc_id.to_string(), id.clone());
    }
    let pipeline = Pipeline::new(
        s.ports.store.clone(),
        s.ports.queue.clone(),
        s.ports.documents.clone(),
        s.blobs.clone(),
        "bench-worker",
    );
    while let RunOnce::Ran(_) = pipeline.try_run_one().await? {}
    let ingest_secs = started.elapsed().as_secs_f64();
    let chunks = s.ports.index.count(&s.tenant).await?.chunks;

    let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder::default());
    let service = SearchService {
        index: s.ports.index.clone(),
        store: s.ports.store.clone(),
        embedder: embedder.clone(),
        fusion,
    };
    let mut modes = Vec::new();
    for mode in MODES {
        let (mut ndcg, mut recall) = (0.0, 0.0);
        for (qid, text) in &set.queries {
            let query =
                SearchQuery { text: text.clone(), mode, top_k: RETRIEVAL_DEPTH, filter: SearchFilter::default() };
            let hits = service.rank(&s.tenant, &query).await?;
            let mut seen = HashSet::new();
            let ranked: Vec<String> = hits
                .iter()
                .filter_map(|h| doc_to_corpus.get(&h.doc_id))
                .filter(|d| seen.insert((*d).clone()))
                .cloned()
                .collect();
            let relevant = set.qrels.get(qid).cloned().unwrap_or_default();
            ndcg += ndcg_at(&ranked, &relevant, 10);
            recall += recall_at(&ranked, &relevant, 10);
        }
        let n = set.queries.len().max(1) as f64;
        modes.push(ModeScore { mode, ndcg_at_10: ndcg / n, recall_at_10: recall / n });
    }
    Ok(RetrievalReport {
        documents: set.corpus.len(),
        chunks,
        queries: set.queries.len(),
        embed_model: embedder.model_id().to_owned(),
        ingest_secs,
        modes,
    })
}

/// A small deterministic generator (xorshift64*), so synthetic data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Sentences of the corpus: what synthetic chunks are made of.
fn sentences(set: &LabelledSet) -> Vec<String> {
    let mut out = Vec::new();
    for (_, text) in &set.corpus {
        for s in text.split(['.', '?', '!']) {
            let s = s.trim();
            if s.split_whitespace().count() >= 4 {
                out.push(format!("{s}."));
            }
        }
    }
    out
}

/// Latency of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeLatency {
    pub mode: SearchMode,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub queries_per_sec: f64,
}

/// What `bench search` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub chunks: usize,
    pub write_secs: f64,
    pub first_query_load_ms: f64,
    pub queries: usize,
    pub clients: usize,
    pub cpus: usize,
    pub modes: Vec<ModeLatency>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs the latency benchmark: `chunks` synthetic chunks, `queries` timed queries per mode, then `clients`
/// concurrent clients.
pub async fn latency(
    data: &Path,
    chunks: usize,
    queries: usize,
    clients: usize,
    fusion: FusionSettings,
) -> anyhow::Result<LatencyReport> {
    let set = LabelledSet::load(data)?;
    let pool = sentences(&set);
    if pool.is_empty() {
        bail!("no sentences in {}", data.display());
    }
    let s = scratch(None).await?;
    let embedder = Arc::new(HashEmbedder::default());
    let model = embedder.model_id().to_owned();
    let started = Instant::now();
    const PER_DOC: usize = 10;
    const BATCH_DOCS: usize = 200;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let now = frostbyte_core::now();
    let mut written = 0;
    while written < chunks {
        // A batch of documents: texts drawn here, embedded on every core, written one document at a time.
        let mut texts = Vec::new();
        let n = (chunks - written).min(PER_DOC * BATCH_DOCS);
        for _ in 0..n {
            let sentences = 2 + rng.below(5);
            let text: Vec<&str> = (0..sentences).map(|_| pool[rng.below(pool.len())].as_str()).collect();
            texts.push(text.join(" "));
        }
        let e = embedder.clone();
        let vectors = tokio::task::spawn_blocking(move || {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let part = texts.len().div_ceil(threads).max(1);
            let vectors: Vec<Vec<f32>> = std::thread::scope(|scope| {
                let handles: Vec<_> =
                    texts.chunks(part).map(|c| scope.spawn(|| e.embed_batch(c).expect("sentences embed"))).collect();
                handles.into_iter().flat_map(|h| h.join().expect("embed thread")).collect()
            });
            (texts, vectors)
        })
        .await?;
        let (texts, vectors) = vectors;
        for (d, (doc_texts, doc_vectors)) in texts.chunks(PER_DOC).zip(vectors.chunks(PER_DOC)).enumerate() {
            let doc_id = uuid::Uuid::now_v7().to_string();
            let sha = format!("{:064x}", written + d);
            let chunks: Vec<IndexedChunk> = doc_texts
                .iter()
                .zip(doc_vectors)
                .enumerate()
                .map(|(i, (text, vector))| IndexedChunk {
                    chunk_id: uuid::Uuid::now_v7().to_string(),
                    doc_id: doc_id.clone(),
                    position: i as u32,
                    start: (i * 400) as u32,
                    end: (i * 400 + text.chars().count()) as u32,
                    page_start: None,
                    page_end: None,
                    heading_path: Vec::new(),
                    kind: "text".into(),
                    text_hash: hex::encode(Sha256::digest(text.as_bytes())),
                    text: text.clone(),
                    classification: Some("internal".into()),
                    collection: None,
                    metadata: json!({}),
                    quarantined: false,
                    embed_model: model.clone(),
                    vector: vector.clone(),
                    source_sha256: sha.clone(),
                    original_filename: format!("synthetic-{}.txt", written + d),
                    ingested_at: now,
                })
                .collect();
            s.ports.index.replace_document_chunks(&s.tenant, &doc_id, &chunks).await?;
        }
        written += n;
    }
    let write_secs = started.elapsed().as_secs_f64();

    let service = SearchService { index: s.ports.index.clone(), store: s.ports.store.clone(), embedder, fusion };
    let query_texts: Vec<String> = set.queries.iter().map(|(_, t)| t.clone()).collect();
    let query = |i: usize, mode: SearchMode| SearchQuery {
        text: query_texts[i % query_texts.len()].clone(),
        mode,
        top_k: 10,
        filter: SearchFilter::default(),
    };
    let load = Instant::now();
    service.search(&s.tenant, &query(0, SearchMode::Hybrid), "cli").await?;
    let first_query_load_ms = load.elapsed().as_secs_f64() * 1e3;

    let mut modes = Vec::new();
    for mode in MODES {
        for i in 0..20 {
            service.search(&s.tenant, &query(i, mode), "cli").await?;
        }
        let mut times = Vec::with_capacity(queries);
        for i in 0..queries {
            let t = Instant::now();
            service.search(&s.tenant, &query(i, mode), "cli").await?;
            times.push(t.elapsed());
        }
        times.sort();
        let mean_ms = times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / times.len().max(1) as f64;
        let total = queries.max(clients);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let service = service.clone();
            let tenant = s.tenant.clone();
            let mine: Vec<SearchQuery> = (c..total).step_by(clients).map(|i| query(i, mode)).collect();
            tasks.push(tokio::spawn(async move {
                for q in mine {
                    service.search(&tenant, &q, "cli").await?;
                }
                Ok::<_, frostbyte_core::service::search::SearchError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let queries_per_sec = total as f64 / t.elapsed().as_secs_f64();
        modes.push(ModeLatency {
            mode,
            p50_ms: percentile(&times, 0.50),
            p99_ms: percentile(&times, 0.99),
            mean_ms,
            queries_per_sec,
        });
    }
    Ok(LatencyReport {
        chunks,
        write_secs,
        first_query_load_ms,
        queries,
        clients,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        modes,
    })
}

/// `frostbyte bench …`.
pub async fn bench(config: &Config, cmd: BenchCommand, json_out: bool) -> anyhow::Result<()> {
    let fusion = config.search.fusion();
    match cmd {
        BenchCommand::Retrieval { data } => {
            let dir = data.unwrap_or_else(bundled_data);
            let r = retrieval(&dir, fusion).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} documents ({} chunks, {}) ingested in {:.1} s; {} queries",
                    r.documents, r.chunks, r.embed_model, r.ingest_secs, r.queries
                );
                println!("{:<8} {:>9} {:>11}", "MODE", "nDCG@10", "recall@10");
                for m in &r.modes {
                    println!("{:<8} {:>9.3} {:>11.3}", m.mode.as_str(), m.ndcg_at_10, m.recall_at_10);
                }
            }
        }
        BenchCommand::Search { chunks, queries, clients, data } => {
            if chunks == 0 || queries == 0 || clients == 0 {
                bail!("--chunks, --queries and --clients must be at least 1");
            }
            let dir = data.unwrap_or_else(bundled_data);
            let r = latency(&dir, chunks, queries, clients.min(1024), fusion).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} chunks written in {:.1} s; first query (index load) {:.0} ms; {} CPUs",
                    r.chunks, r.write_secs, r.first_query_load_ms, r.cpus
                );
                println!(
                    "{:<8} {:>8} {:>8} {:>8} {:>14}",
                    "MODE",
                    "p50 ms",
                    "p99 ms",
                    "mean ms",
                    format!("qps@{}", r.clients)
                );
                for m in &r.modes {
                    println!(
                        "{:<8} {:>8.2} {:>8.2} {:>8.2} {:>14.0}",
                        m.mode.as_str(),
                        m.p50_ms,
                        m.p99_ms,
                        m.mean_ms,
                        m.queries_per_sec
                    );
                }
            }
        }
        BenchCommand::Sync { files, runs } => {
            if files == 0 || runs == 0 {
                bail!("--files and --runs must be at least 1");
            }
            let r = sync_unchanged(files, runs).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} files ({:.1} MB): first sync added {} in {:.2} s ({:.0} files/s, intake only)",
                    r.files,
                    r.corpus_bytes as f64 / 1_048_576.0,
                    r.initial_added,
                    r.initial_secs,
                    r.files as f64 / r.initial_secs.max(1e-9)
                );
                let shown: Vec<String> = r.unchanged_secs.iter().map(|s| format!("{s:.3}")).collect();
                println!(
                    "unchanged corpus, {} runs: median {:.3} s, best {:.3} s, worst {:.3} s (run created → completed: {} s)",
                    r.unchanged_secs.len(),
                    r.median_secs,
                    r.best_secs,
                    r.worst_secs,
                    shown.join(", ")
                );
            }
        }
        BenchCommand::Engine { runs, workers } => {
            let r = crate::engine::bench::engine_overhead(runs, workers).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} runs, {} workers, {} CPUs: started {:.0}/s ({:.2} s), completed {:.0}/s ({:.2} s); \
                     creation to completion p50 {:.0} ms, p99 {:.0} ms",
                    r.runs,
                    r.workers,
                    r.cpus,
                    r.started_per_sec,
                    r.start_secs,
                    r.completed_per_sec,
                    r.complete_secs,
                    r.latency_p50_ms,
                    r.latency_p99_ms
                );
            }
        }
        BenchCommand::Stages { paths, rounds } => {
            let r = tokio::task::spawn_blocking(move || crate::stages_bench::stages(&paths, rounds)).await??;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                crate::stages_bench::print(&r);
            }
        }
        BenchCommand::Records { rows, to } => {
            let r = crate::engine::bench::records_throughput(rows, &to).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let out = r.output_bytes.map_or_else(|| "a table".to_owned(), |b| format!("{b} bytes"));
                println!(
                    "records.copy CSV -> {}: {} rows ({} bytes -> {out}) in {:.2} s: {:.0} rows/s",
                    r.target, r.rows, r.input_bytes, r.secs, r.rows_per_sec
                );
            }
        }
    }
    Ok(())
}

/// `frostbyte bench sync`.
#[derive(Debug, Serialize)]
pub struct SyncBench {
    pub files: usize,
    pub corpus_bytes: u64,
    pub initial_added: u64,
    pub initial_secs: f64,
    /// Each run over the unchanged corpus, from creating the run to its completion.
    pub unchanged_secs: Vec<f64>,
    pub median_secs: f64,
    pub best_secs: f64,
    pub worst_secs: f64,
    pub cpus: usize,
}

async fn sync_unchanged(files: usize, runs: usize) -> anyhow::Result<SyncBench> {
    let s = scratch(None).await?;
    let corpus = s._dir.path().join("corpus");
    let mut corpus_bytes = 0u64;
    for i in 0..files {
        let path = corpus.join(format!("d{:03}/note-{i:06}.txt", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(path.parent().expect("a parent"))?;
        }
        let text = format!("Note {i}: the quarterly figures for region {} were filed on day {}.\n", i % 37, i % 365);
        corpus_bytes += text.len() as u64;
        std::fs::write(&path, text)?;
    }
    let ports = &s.ports;
    let plane = crate::engine::DocumentPlane {
        intake: Arc::new(Intake {
            store: ports.store.clone(),
            documents: ports.documents.clone(),
            batches: ports.batches.clone(),
            blobs: s.blobs.clone(),
            scanner: Arc::new(frostbyte_core::scan::NoScanner),
        }),
        index: ports.index.clone(),
        embedders: Arc::new(frostbyte_core::embed::EmbedderRegistry::default()),
        shadow: ports.shadow.clone(),
        sync_state: ports.sync.clone(),
        sync_settings: crate::engine::sync::SyncSettings::new(vec![corpus.display().to_string()]),
    };
    let engine = crate::engine::Engine::new(
        ports.runs.clone(),
        ports.store.clone(),
        ports.queue.clone(),
        s.blobs.clone(),
        Arc::new(crate::events::EventBus::default()),
        crate::engine::EngineSettings::default(),
    )
    .with_documents(plane);
    let mut params = serde_json::Map::new();
    params.insert("source".into(), json!(corpus.display().to_string()));
    let once = |expect: &'static str| {
        let (engine, params, tenant) = (&engine, params.clone(), s.tenant.clone());
        async move {
            let started = Instant::now();
            let run = engine
                .create_run(&tenant, "documents", "sync", params, "bench")
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the sync: {e}"))?;
            let done = engine.drive_until_finished(&tenant, run.run_id, "bench").await?;
            let secs = started.elapsed().as_secs_f64();
            if done.status != frostbyte_core::pipelines::RunStatus::Completed {
                bail!("the sync ended {}: {}", done.status, done.error_message.unwrap_or_default());
            }
            let count = done.counts.get(expect).and_then(Value::as_u64).unwrap_or(0);
            anyhow::Ok((secs, count, done.counts))
        }
    };
    let (initial_secs, initial_added, counts) = once("added").await?;
    if initial_added != files as u64 {
        bail!("the first sync added {initial_added} of {files} files: {}", Value::Object(counts));
    }
    let mut unchanged_secs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (secs, unchanged, counts) = once("unchanged").await?;
        if unchanged != files as u64 {
            bail!("a sync of the unchanged corpus found {unchanged} of {files} unchanged: {}", Value::Object(counts));
        }
        unchanged_secs.push(secs);
    }
    let mut sorted = unchanged_secs.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(SyncBench {
        files,
        corpus_bytes,
        initial_added,
        initial_secs,
        median_secs: sorted[sorted.len() / 2],
        best_secs: sorted[0],
        worst_secs: sorted[sorted.len() - 1],
        unchanged_secs,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ranked(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ndcg_and_recall() {
        assert!((ndcg_at(&ranked(&["a", "b"]), &set(&["a"]), 10) - 1.0).abs() < 1e-12);
        assert!((ndcg_at(&ranked(&["x", "a"]), &set(&["a"]), 10) - 1.0 / 3f64.log2()).abs() < 1e-12);
        assert_eq!(ndcg_at(&ranked(&["x"]), &set(&["a"]), 10), 0.0);
        assert_eq!(recall_at(&ranked(&["a", "x", "b"]), &set(&["a", "b"]), 2), 0.5);
        let late: Vec<String> = (0..10).map(|i| format!("x{i}")).chain(["a".to_owned()]).collect();
        assert_eq!(recall_at(&late, &set(&["a"]), 10), 0.0);
    }

    #[tokio::test]
    async fn the_sync_benchmark_runs_and_checks_its_counts() {
        let r = sync_unchanged(30, 2).await.unwrap();
        assert_eq!((r.files, r.initial_added, r.unchanged_secs.len()), (30, 30, 2));
    }
}
