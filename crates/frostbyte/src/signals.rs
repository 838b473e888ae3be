//! Signals in the binary: the runtime the API handlers share (the use-cases and the ingest limits), the metrics
//! every ingest path records, and the `frostbyte signals …` commands (backfill, bench).
//!
//! Metrics (Prometheus, at `/metrics`):
//! - `frostbyte_signals_events_total{outcome}`: `accepted`, `duplicate`, `rejected`;
//! - `frostbyte_signals_late_events_total{feature_set, policy}`: late events by what their policy did
//!   (`drop`, `hold`, `correct`);
//! - `frostbyte_signals_rows_emitted_total{feature_set}`: feature rows written to the online store;
//! - `frostbyte_signals_watermark_lag_seconds{feature_set}`: now − the lowest watermark a batch touched.

use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::signals::service::{IngestReport, IngestSettings, SignalError, SignalService};
use frostbyte_core::signals::store::SignalStore;
use serde_json::json;

use crate::cli::SignalsCommand;
use crate::config::Config;

/// Ingest limits taken from `[signals]`.
#[derive(Debug, Clone, Copy)]
pub struct SignalsSettings {
    pub max_body_bytes: usize,
    pub max_events: usize,
    pub ingest: IngestSettings,
}

impl Default for SignalsSettings {
    fn default() -> Self {
        let c = crate::config::SignalsConfig::default();
        SignalsSettings {
            max_body_bytes: c.max_body_bytes,
            max_events: c.max_events_per_request,
            ingest: IngestSettings {
                future_horizon_micros: i64::try_from(c.future_horizon_secs).unwrap_or(i64::MAX / 1_000_000) * 1_000_000,
            },
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct SignalsRuntime {
    pub service: SignalService,
    pub settings: SignalsSettings,
}

impl SignalsRuntime {
    pub fn new(store: Arc<dyn SignalStore>, settings: SignalsSettings) -> Self {
        SignalsRuntime { service: SignalService::new(store), settings }
    }

    pub fn from_config(store: Arc<dyn SignalStore>, config: &Config) -> Self {
        let c = &config.signals;
        let settings = SignalsSettings {
            max_body_bytes: c.max_body_bytes,
            max_events: c.max_events_per_request,
            ingest: IngestSettings {
                future_horizon_micros: i64::try_from(c.future_horizon_secs.saturating_mul(1_000_000))
                    .unwrap_or(i64::MAX),
            },
        };
        let mut runtime = SignalsRuntime::new(store, settings);
        if let Some(offline) = offline_store(config) {
            runtime.service = runtime.service.with_offline(offline);
        }
        runtime
    }
}

/// The offline (Parquet) store `[signals] offline_dir` names, unless it is `off` or compiled out.
pub fn offline_store(config: &Config) -> Option<Arc<dyn frostbyte_core::signals::store::OfflineSink>> {
    let dir = config.signals.offline_dir.trim();
    if dir == "off" {
        return None;
    }
    #[cfg(feature = "parquet")]
    {
        let root = if dir.is_empty() { config.storage.data_dir.join("offline") } else { std::path::PathBuf::from(dir) };
        Some(Arc::new(frostbyte_adapters::signals::offline::ParquetOfflineStore::new(root)))
    }
    #[cfg(not(feature = "parquet"))]
    {
        tracing::warn!("this build has no Parquet support (feature `parquet`): the offline feature store is off");
        None
    }
}

/// Records an ingest's counts (and logs a failed offline append).
pub fn record_ingest(report: &IngestReport, now: DateTime<Utc>) {
    if let Some(error) = &report.offline_error {
        tracing::warn!(%error, rows = report.rows_emitted, "offline feature append failed; a backfill rewrites it");
        metrics::counter!("frostbyte_signals_offline_failures_total").increment(1);
    }
    metrics::counter!("frostbyte_signals_events_total", "outcome" => "accepted").increment(report.accepted);
    metrics::counter!("frostbyte_signals_events_total", "outcome" => "duplicate").increment(report.duplicates);
    metrics::counter!("frostbyte_signals_events_total", "outcome" => "rejected").increment(report.rejected);
    for fs in &report.feature_sets {
        let name = fs.feature_set.clone();
        for (policy, n) in [("drop", fs.late_dropped), ("hold", fs.late_held), ("correct", fs.late_corrected)] {
            if n > 0 {
                metrics::counter!("frostbyte_signals_late_events_total", "feature_set" => name.clone(), "policy" => policy)
                    .increment(n);
            }
        }
        metrics::counter!("frostbyte_signals_rows_emitted_total", "feature_set" => name.clone())
            .increment(fs.rows_emitted);
        if let Some(wm) = fs.min_watermark {
            let lag = (now.timestamp_micros().saturating_sub(wm)) as f64 / 1e6;
            metrics::gauge!("frostbyte_signals_watermark_lag_seconds", "feature_set" => name).set(lag);
        }
    }
}

fn explain(e: SignalError) -> anyhow::Error {
    match e {
        SignalError::Invalid(problems) => {
            let lines: Vec<String> = problems.iter().map(|p| format!("  - {}: {}", p.field, p.constraint)).collect();
            anyhow::anyhow!("invalid input:\n{}", lines.join("\n"))
        }
        other => anyhow::Error::new(other),
    }
}

fn print(json_out: bool, value: serde_json::Value, human: String) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(&value).expect("json serialises"));
    } else {
        print!("{human}");
    }
}

/// Runs `frostbyte signals …`.
pub async fn command(config: &Config, cmd: SignalsCommand, json_out: bool) -> anyhow::Result<i32> {
    match cmd {
        SignalsCommand::Backfill { tenant, feature_set, from, to, workers } => {
            let tenant = TenantId::parse(&tenant).with_context(|| format!("invalid tenant id {tenant:?}"))?;
            let start = frostbyte_core::parse_date_bound(&from, false)
                .with_context(|| format!("--from {from:?} is not RFC 3339 or YYYY-MM-DD"))?;
            let end = match chrono::NaiveDate::parse_from_str(&to, "%Y-%m-%d") {
                Ok(day) => (day + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
                Err(_) => frostbyte_core::parse_date_bound(&to, false)
                    .with_context(|| format!("--to {to:?} is not RFC 3339 or YYYY-MM-DD"))?,
            };
            if !(1..=64).contains(&workers) {
                bail!("--workers must be between 1 and 64");
            }
            let stores = crate::app::open_stores(config).await?;
            let mut service = SignalService::new(stores.signals);
            if let Some(offline) = offline_store(config) {
                service = service.with_offline(offline);
            }
            let mut tasks = Vec::new();
            for i in 0..workers {
                let service = service.clone();
                let (tenant, name) = (tenant.clone(), feature_set.clone());
                let partition = (workers > 1).then_some((i, workers));
                tasks.push(tokio::spawn(async move {
                    service.backfill(&tenant, &name, start, end, partition, false).await
                }));
            }
            let mut reports = Vec::new();
            for t in tasks {
                reports.push(t.await.context("backfill worker panicked")?.map_err(explain)?.0);
            }
            let rows: u64 = reports.iter().map(|r| r.rows_written).sum();
            let replayed: u64 = reports.iter().map(|r| r.events_replayed).sum();
            let entities: u64 = reports.iter().map(|r| r.entities).sum();
            metrics::counter!("frostbyte_signals_rows_emitted_total", "feature_set" => feature_set.clone())
                .increment(rows);
            tracing::info!(tenant = %tenant, feature_set, replayed, rows, workers, "signal backfill finished");
            let version = reports.first().map(|r| r.version).unwrap_or_default();
            print(
                json_out,
                json!({"feature_set": feature_set, "version": version, "events_replayed": replayed,
                       "entities": entities, "rows_written": rows, "workers": reports}),
                format!(
                    "replayed {replayed} events of {entities} entities through {feature_set} v{version}: {rows} rows written\n"
                ),
            );
            Ok(0)
        }
        SignalsCommand::Bench { events, entities, threads } => {
            if events == 0 || entities == 0 || !(1..=64).contains(&threads) {
                bail!("--events and --entities must be positive and --threads between 1 and 64");
            }
            let report =
                tokio::task::spawn_blocking(move || frostbyte_core::signals::bench::run(events, entities, threads))
                    .await?;
            print(
                json_out,
                serde_json::to_value(&report)?,
                format!(
                    "{} events, {} entities, {} thread(s): {:.0} events/s ({:.0} per thread), {} rows, \
                     {:.0} bytes of state per active entity ({:.0} bytes as a checkpoint)\n",
                    report.events,
                    report.entities,
                    report.threads,
                    report.events_per_sec,
                    report.events_per_sec / f64::from(report.threads),
                    report.rows_emitted,
                    report.state_bytes_per_entity,
                    report.checkpoint_bytes_per_entity,
                ),
            );
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_runs_and_emits_rows() {
        let r = frostbyte_core::signals::bench::run(20_000, 10, 2);
        assert_eq!(r.events, 20_000);
        assert!(r.rows_emitted > 0);
        assert!(r.state_bytes_per_entity > 0.0);
    }
}
