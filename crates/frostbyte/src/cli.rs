//! The command line: `frostbyte serve`, operator commands that work directly on the configured stores
//! (tenants, keys, audit), and configuration checks.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Frostbyte: multi-tenant, auditable ETL that turns documents and event streams into governed, searchable data.
///
/// Every command reads the same layered configuration: the compiled-in defaults, then `--config FILE`, then
/// `FROSTBYTE_*` environment variables, then flags. `frostbyte check-config` shows the result.
#[derive(Debug, Parser)]
#[command(name = "frostbyte", version, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A TOML config file layered over the defaults.
    #[arg(long, short = 'c', global = true, env = "FROSTBYTE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded default [default: ./frostbyte-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API (and, as they land, workers and the scheduler) in one process.
    Serve(ServeArgs),
    /// Create or upgrade the metadata store's schema, then exit.
    Migrate,
    /// Load the configuration, report every problem at once, and print the effective settings (secrets hidden).
    CheckConfig,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage tenant API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Verify and export the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Take in files and directories for a tenant through the intake path, then process them (shows progress).
    Ingest(IngestArgs),
    /// Run pipeline workers only (no HTTP): the scale-out shape, many per PostgreSQL + object store.
    Worker,
    /// Signals: replay stored events into features, measure the engine.
    #[command(subcommand)]
    Signals(SignalsCommand),
    /// Search a tenant's chunks and print the ranked hits with their provenance.
    Search(SearchArgs),
    /// Measure retrieval quality on a labelled set, or search latency on synthetic chunks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Pipeline definitions and runs: list, run, status, history, cancel.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Pipeline schedules: list, create, enable, disable, delete.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and directories to ingest (directories are walked; hidden entries are skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The tenant that owns the documents.
    #[arg(long)]
    pub tenant: String,
    /// Collection the documents belong to.
    #[arg(long)]
    pub collection: Option<String>,
    /// Custom metadata for every document, as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Return once files are accepted; running workers process them.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to search for.
    pub query: String,
    #[arg(long)]
    pub tenant: String,
    /// hybrid, vector or keyword.
    #[arg(long, default_value = "hybrid")]
    pub mode: String,
    /// How many hits [default: the tenant's retrieval_top_k_default].
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Only chunks of documents in this collection.
    #[arg(long)]
    pub collection: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest a labelled set (BEIR layout) through intake and the pipeline in a scratch store, run every query in
    /// each mode, and report nDCG@10 and recall@10.
    Retrieval {
        /// The set's directory (corpus.jsonl, queries.jsonl, qrels/test.tsv) [default: the bundled python-faq].
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Write synthetic chunks into a scratch store (SQLite, the embedded default), then report search latency
    /// (p50/p99) per mode and queries/s with concurrent clients.
    Search {
        /// How many chunks to index.
        #[arg(long, default_value_t = 10_000)]
        chunks: usize,
        /// Sequential queries timed per mode.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Concurrent clients for the throughput run.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Where the sentences come from [default: the bundled python-faq].
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Generate a corpus of small text files in a scratch directory, take it in with one `documents.sync` run,
    /// then time further runs over the unchanged corpus (listing and comparison only: nothing is read).
    Sync {
        /// How many files the corpus has.
        #[arg(long, default_value_t = 10_000)]
        files: usize,
        /// Timed runs over the unchanged corpus.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Pipeline-engine overhead on the embedded default: start RUNS trivial runs (a one-row records/copy), execute
    /// them with WORKERS engine workers, and report runs started and completed per second.
    Engine {
        #[arg(long, default_value_t = 2_000)]
        runs: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// The document pipeline's own work, step by step, on one core and without a store: every file under PATHS is
    /// sniffed, parsed, policed, chunked, scored, embedded and hashed ROUNDS times; reports MB/s per step.
    Stages {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// records.copy throughput: generate ROWS CSV rows and copy them with a typed mapping in one run; report rows/s.
    Records {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// The target: parquet, jsonl, csv or sqlite (a table through a configured connection).
        #[arg(long, default_value = "parquet")]
        to: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on [default: 8000].
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create and provision a tenant.
    Create {
        /// Tenant id: 3 to 32 characters, a lowercase letter then lowercase letters, digits or '-'.
        tenant_id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Contact email of the tenant's owner.
        #[arg(long)]
        email: String,
        /// free, standard or enterprise.
        #[arg(long, default_value = "standard")]
        tier: String,
        /// Initial config as a JSON object, e.g. '{"pii_policy":"block"}'.
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
    },
    /// List tenants.
    List {
        /// Only tenants in this state (ACTIVE, SUSPENDED, ...).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one tenant with its config.
    Get { tenant_id: String },
    /// Suspend a tenant: its requests get 403 and its jobs are not taken.
    Suspend {
        tenant_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended tenant.
    Resume {
        tenant_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; the key is printed once and only its hash is stored.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// Comma-separated scopes from ingest, query, audit, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Expiry as RFC 3339, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List a tenant's keys (no secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every hash and link of the chain; exits 1 and names the first broken event if any.
    Verify {
        /// Only this tenant [default: every tenant with audit events].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Write a tenant's events as JSON Lines plus a manifest with the file's SHA-256.
    Export {
        #[arg(long)]
        tenant: String,
        /// Start (RFC 3339 or YYYY-MM-DD, inclusive) [default: the beginning].
        #[arg(long)]
        from: Option<String>,
        /// End (RFC 3339 or YYYY-MM-DD, inclusive of that whole day) [default: now].
        #[arg(long)]
        to: Option<String>,
        /// Only these event types (comma-separated).
        #[arg(long, value_delimiter = ',')]
        event_types: Option<Vec<String>>,
        /// Output file; the manifest is written next to it as FILE.manifest.json.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SignalsCommand {
    /// Replay a tenant's stored events through the latest version of a feature set (the streaming engine, so the
    /// same rows) and upsert the rows into the online store.
    Backfill {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        feature_set: String,
        /// Start of event time (RFC 3339 or YYYY-MM-DD, inclusive).
        #[arg(long)]
        from: String,
        /// End of event time (RFC 3339, exclusive; or YYYY-MM-DD, through that whole day).
        #[arg(long)]
        to: String,
        /// Workers sharing the replay; each owns the entities of one consistent-hash partition.
        #[arg(long, default_value_t = 1)]
        workers: u32,
    },
    /// Measure the in-process engine: events per second through a tumbling + sliding + EWMA feature set, and
    /// memory per active entity. Touches no store.
    Bench {
        /// Events to process.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Distinct entities.
        #[arg(long, default_value_t = 10_000)]
        entities: u64,
        /// Threads (entities are split between them by consistent hash).
        #[arg(long, default_value_t = 1)]
        threads: u32,
    },
    /// End to end over HTTP: start `frostbyte serve` on the embedded default in a scratch directory, then
    /// several clients POST NDJSON batches concurrently; events per second until the last batch committed.
    BenchHttp {
        /// Events to send.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Distinct entities.
        #[arg(long, default_value_t = 1_000)]
        entities: u64,
        /// Concurrent clients (each sends the entities of one partition, in time order).
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// Events per request.
        #[arg(long, default_value_t = 5_000)]
        batch: u64,
    },
    /// End to end from NATS JetStream: start `frostbyte serve` with its consumer on a fresh stream, publish the
    /// events as NDJSON messages, and measure until the server has committed all of them.
    BenchNats {
        /// NATS server URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        url: String,
        /// Events to publish.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Distinct entities.
        #[arg(long, default_value_t = 1_000)]
        entities: u64,
        /// Events per message.
        #[arg(long, default_value_t = 100)]
        per_message: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// List the pipeline definitions (and the definition files that were refused, with file and field).
    List,
    /// Start a run of DOMAIN/NAME for a tenant; with --wait, execute it here and report how it ended.
    Run {
        /// The pipeline, as domain/name (for example audit/export).
        pipeline: String,
        #[arg(long)]
        tenant: String,
        /// A parameter as NAME=VALUE (VALUE is read as JSON when it parses, else as a string); repeatable.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Execute the run in this process until it finishes; exits 1 unless it completed.
        #[arg(long)]
        wait: bool,
    },
    /// Show one run.
    Status {
        run_id: String,
        #[arg(long)]
        tenant: String,
    },
    /// List a tenant's runs, newest first.
    History {
        #[arg(long)]
        tenant: String,
        /// domain/name or name.
        #[arg(long)]
        pipeline: Option<String>,
        /// pending, validating, running, completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Cancel a run (at once when pending; the executing worker stops it promptly otherwise).
    Cancel {
        run_id: String,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List a tenant's schedules with their next and last firing.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Create a schedule that runs DOMAIN/NAME on a cron expression.
    Create {
        #[arg(long)]
        tenant: String,
        /// The pipeline, as domain/name (for example audit/export).
        #[arg(long)]
        pipeline: String,
        /// Five fields: minute hour day-of-month month day-of-week (quote it).
        #[arg(long)]
        cron: String,
        /// UTC (default), a fixed offset such as +02:00, or an IANA zone such as Europe/Berlin.
        #[arg(long)]
        timezone: Option<String>,
        /// skip (default) or queue: what an occurrence does while the previous run is unfinished.
        #[arg(long)]
        overlap: Option<String>,
        /// A parameter as NAME=VALUE (VALUE is read as JSON when it parses, else as a string); repeatable.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Enable a schedule (its next firing is computed from now).
    Enable {
        schedule_id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Disable a schedule (it keeps its settings; nothing fires until it is enabled).
    Disable {
        schedule_id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Delete a schedule (the runs it created are kept).
    Delete {
        schedule_id: String,
        #[arg(long)]
        tenant: String,
    },
}
