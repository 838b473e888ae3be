//! Pipeline-engine benchmarks behind `frostbyte bench engine` and `frostbyte bench records`, on the embedded
//! default (SQLite and local files in a scratch directory, removed afterwards), through the same [`Engine`] the
//! API and the workers use:
//!
//! - **engine**: scheduler and engine overhead. Starts `runs` trivial runs (`records/copy` of a one-row CSV) with
//!   [`Engine::create_run`] (validation, quota count, the run, its job and its audit event in one transaction),
//!   then executes them with `workers` concurrent engine workers until the queue is empty. Reports runs started
//!   per second, runs completed per second, and the creation-to-completion latency of the runs.
//! - **records**: `records.copy` throughput. Generates `rows` CSV rows (five columns: integer, string, float,
//!   boolean, date), copies them with a typed mapping to Parquet (or JSON Lines, CSV, or a SQLite table) in one
//!   run, and reports rows per second for the whole run, reading and writing the blobs included.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use frostbyte_core::TenantId;
use frostbyte_core::pipelines::RunStatus;
use frostbyte_core::queue::RunOnce;
use frostbyte_core::service::{Actor, CreateTenant, TenantService};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::records::{Connection, Connections};
use super::{Engine, EngineSettings};
use crate::events::EventBus;

const TENANT: &str = "bench";

/// A scratch embedded deployment: SQLite metadata, local-file blobs, one ACTIVE tenant with room for many runs.
struct Scratch {
    engine: Arc<Engine>,
    tenant: TenantId,
    _dir: tempfile::TempDir,
}

async fn scratch(settings: EngineSettings) -> anyhow::Result<Scratch> {
    let dir = tempfile::tempdir().context("cannot create a scratch directory")?;
    let url = format!("sqlite://{}", dir.path().join("frostbyte.db").display());
    let ports = frostbyte_adapters::resolve::metadata_ports(&url, 8).await?;
    ports.store.migrate().await?;
    let blobs = frostbyte_adapters::resolve::blob_store(&format!("file://{}", dir.path().join("blobs").display()))?;
    let tenants = TenantService::new(ports.store.clone(), blobs.clone(), ports.documents.clone());
    let create = CreateTenant {
        tenant_id: TENANT.into(),
        tenant_name: "Benchmark".into(),
        contact_email: "bench@example.com".into(),
        tier: None,
        config: Some(json!({"quotas": {"runs_per_day": 1_000_000}})),
    };
    let tenant = tenants.create(create, &Actor::Cli).await.map_err(|e| anyhow::anyhow!("{e}"))?.tenant_id;
    let engine = Engine::new(ports.runs, ports.store, ports.queue, blobs, Arc::new(EventBus::default()), settings);
    Ok(Scratch { engine: Arc::new(engine), tenant, _dir: dir })
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What `bench engine` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    pub runs: usize,
    pub workers: usize,
    pub start_secs: f64,
    pub started_per_sec: f64,
    pub complete_secs: f64,
    pub completed_per_sec: f64,
    /// From creation to completion, while all runs were queued at once.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub cpus: usize,
}

/// Runs the engine-overhead benchmark.
pub async fn engine_overhead(runs: usize, workers: usize) -> anyhow::Result<EngineReport> {
    if runs == 0 || workers == 0 {
        bail!("--runs and --workers must be at least 1");
    }
    let settings = EngineSettings { per_tenant_cap: u32::try_from(workers)?, ..Default::default() };
    let s = scratch(settings).await?;
    let (engine, tenant) = (s.engine.clone(), s.tenant.clone());
    engine.blobs.put(&tenant, "bench/one.csv", bytes::Bytes::from_static(b"id,name\n1,one\n")).await?;
    let p = params(json!({"source": "bench/one.csv", "target": "bench/one.jsonl"}));

    let started = Instant::now();
    let mut ids = Vec::with_capacity(runs);
    for _ in 0..runs {
        let run = engine.create_run(&tenant, "records", "copy", p.clone(), "bench").await;
        ids.push(run.map_err(|e| anyhow::anyhow!("{e}"))?.run_id);
    }
    let start_secs = started.elapsed().as_secs_f64();

    let executing = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|n| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let worker = format!("bench-{n}");
                while let RunOnce::Ran(_) = engine.try_run_one(&worker).await? {}
                anyhow::Ok(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    let complete_secs = executing.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(runs);
    for id in &ids {
        let r = engine.get_run(&tenant, *id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        match (r.status, r.completed_at) {
            (RunStatus::Completed, Some(done)) => {
                latencies.push((done - r.created_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            _ => bail!("run {} ended {}: {:?}", r.run_id, r.status.as_str(), r.error_message),
        }
    }
    latencies.sort_by(f64::total_cmp);
    drop(s);
    Ok(EngineReport {
        runs,
        workers,
        start_secs,
        started_per_sec: runs as f64 / start_secs,
        complete_secs,
        completed_per_sec: runs as f64 / complete_secs,
        latency_p50_ms: percentile_ms(&latencies, 0.5),
        latency_p99_ms: percentile_ms(&latencies, 0.99),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// What `bench records` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RecordsReport {
    pub rows: usize,
    pub target: String,
    pub input_bytes: usize,
    pub output_bytes: Option<usize>,
    pub secs: f64,
    pub rows_per_sec: f64,
}

/// `rows` generated CSV rows: `id,name,score,active,joined`.
pub fn generate_csv(rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 48 + 32);
    out.extend_from_slice(b"id,name,score,active,joined\n");
    let epoch = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date");
    let days: Vec<String> =
        (0..365).map(|d| (epoch + chrono::Duration::days(d)).format("%Y-%m-%d").to_string()).collect();
    for i in 0..rows {
        use std::io::Write;
        let _ = writeln!(
            out,
            "{i},customer-{},{}.{:02},{},{}",
            i % 10_007,
            i % 1000,
            i % 100,
            if i % 3 == 0 { "true" } else { "false" },
            days[i % 365]
        );
    }
    out
}

/// Runs the `records.copy` throughput benchmark; `to` is `parquet`, `jsonl`, `csv` or `sqlite`.
pub async fn records_throughput(rows: usize, to: &str) -> anyhow::Result<RecordsReport> {
    if rows == 0 {
        bail!("--rows must be at least 1");
    }
    let probe = tempfile::tempdir()?;
    let (target, connections) = match to {
        "parquet" | "jsonl" | "csv" => (format!("bench/out.{to}"), Connections::new()),
        "sqlite" => {
            let url = format!("sqlite://{}?mode=rwc", probe.path().join("warehouse.db").display());
            let conn = Connection { url: url.into(), tenants: vec![TENANT.to_owned()] };
            ("sql://warehouse/people".to_owned(), Connections::from([("warehouse".to_owned(), conn)]))
        }
        other => bail!("--to {other:?}: parquet, jsonl, csv or sqlite"),
    };
    let settings = EngineSettings { connections: Arc::new(connections), ..Default::default() };
    let s = scratch(settings).await?;
    let (engine, tenant) = (s.engine.clone(), s.tenant.clone());
    let csv = generate_csv(rows);
    let input_bytes = csv.len();
    engine.blobs.put(&tenant, "bench/in.csv", bytes::Bytes::from(csv)).await?;
    let p = params(json!({
        "source": "bench/in.csv",
        "target": target,
        "columns": "id::integer,name,score::float,active::boolean,joined::date",
    }));

    let started = Instant::now();
    let run = engine.create_run(&tenant, "records", "copy", p, "bench").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = engine.drive_until_finished(&tenant, run.run_id, "bench").await?;
    let secs = started.elapsed().as_secs_f64();
    if run.status != RunStatus::Completed || run.records_processed != rows as u64 {
        bail!("the copy ended {} with {} rows: {:?}", run.status.as_str(), run.records_processed, run.error_message);
    }
    let output_bytes = match to {
        "sqlite" => None,
        _ => Some(engine.blobs.get(&tenant, &target).await?.len()),
    };
    drop(s);
    Ok(RecordsReport { rows, target: to.to_owned(), input_bytes, output_bytes, secs, rows_per_sec: rows as f64 / secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_are_well_formed() {
        let csv = generate_csv(3);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "id,name,score,active,joined\n0,customer-0,0.00,true,2026-01-01\n1,customer-1,1.01,false,2026-01-02\n\
             2,customer-2,2.02,false,2026-01-03\n"
        );
    }

    #[tokio::test]
    async fn both_benchmarks_run_small() {
        let e = engine_overhead(20, 2).await.unwrap();
        assert_eq!(e.runs, 20);
        assert!(e.started_per_sec > 0.0 && e.completed_per_sec > 0.0);
        let r = records_throughput(2_000, "csv").await.unwrap();
        assert_eq!(r.rows, 2_000);
        assert!(r.output_bytes.unwrap() > 0);
    }
}
