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
use frostbyte_core::signals::event::{Event, EventError};
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

/// Why a body could not be decoded into events at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Neither a JSON array nor NDJSON (e.g. a truncated array).
    NotJson,
    /// More events than the limit allows.
    TooMany(usize),
}

impl DecodeError {
    /// A stable reason code.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::NotJson => "INVALID_JSON",
            DecodeError::TooMany(_) => "TOO_MANY_EVENTS",
        }
    }
}

/// Decodes a JSON array or NDJSON body into events (or why each is unusable), in order: the decoder of both
/// `POST /api/v1/signals/{tenant}/events` and the NATS consumer. NDJSON is used when `ndjson` is set or the body
/// does not start with `[`; indices of NDJSON items are line numbers (blank lines inside the body count).
pub fn decode_events(body: &[u8], ndjson: bool, max: usize) -> Result<Vec<Result<Event, EventError>>, DecodeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if !ndjson && first == Some(b'[') {
        let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|_| DecodeError::NotJson)?;
        if items.len() > max {
            return Err(DecodeError::TooMany(max));
        }
        return Ok(items.into_iter().map(Event::from_json).collect());
    }
    let mut out = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            // Blank lines keep their index so that reported indices are line numbers.
            out.push(Err(EventError::new("INVALID_JSON", "blank line")));
            continue;
        }
        if out.len() >= max {
            return Err(DecodeError::TooMany(max));
        }
        out.push(Event::from_slice(line));
    }
    // A trailing newline is not an event.
    while matches!(out.last(), Some(Err(e)) if e.message == "blank line") {
        out.pop();
    }
    Ok(out)
}

/// Decodes one stream message: a single event JSON object (pretty-printed or not), or NDJSON lines, or a JSON
/// array, with the same per-event validation as the HTTP route.
pub fn decode_message(body: &[u8], max: usize) -> Result<Vec<Result<Event, EventError>>, DecodeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'{')
        && let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_slice::<serde_json::Value>(body)
    {
        return Ok(vec![Event::from_json(value)]);
    }
    decode_events(body, false, max)
}

/// Starts the NATS JetStream consumer of signal events when `[signals.nats] url` is set (feature `nats`); it
/// stops, after acknowledging what it committed, when `shutdown` turns true.
pub fn spawn_consumer(
    state: &crate::http::AppState,
    config: &Config,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(feature = "nats")]
    {
        let settings = crate::nats::NatsSettings::from_config(&config.signals.nats)?;
        let consumer = crate::nats::SignalConsumer::new(
            settings,
            state.signals.service.clone(),
            state.signals.settings,
            std::sync::Arc::clone(&state.store),
        );
        let shutdown = shutdown.clone();
        Some(tokio::spawn(async move {
            if let Err(error) = consumer.run(shutdown).await {
                tracing::error!(error = %format!("{error:#}"), "the NATS signal consumer stopped");
            }
        }))
    }
    #[cfg(not(feature = "nats"))]
    {
        // `Config::validate` refuses a NATS URL in a build without the feature.
        let _ = (state, config, shutdown);
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
        SignalsCommand::BenchHttp { events, entities, clients, batch } => {
            if events == 0 || entities == 0 || batch == 0 || !(1..=256).contains(&clients) {
                bail!("--events, --entities and --batch must be positive and --clients between 1 and 256");
            }
            let report = crate::signals_bench::http(events, entities, clients, batch).await?;
            print_wire(json_out, &report)?;
            Ok(0)
        }
        SignalsCommand::BenchNats { url, events, entities, per_message } => {
            if events == 0 || entities == 0 || per_message == 0 {
                bail!("--events, --entities and --per-message must be positive");
            }
            #[cfg(feature = "nats")]
            {
                let report = crate::signals_bench::nats(&url, events, entities, per_message).await?;
                print_wire(json_out, &report)?;
                Ok(0)
            }
            #[cfg(not(feature = "nats"))]
            {
                let _ = url;
                bail!("this build has no NATS support (feature `nats`)")
            }
        }
    }
}

fn print_wire(json_out: bool, r: &crate::signals_bench::WireReport) -> anyhow::Result<()> {
    print(
        json_out,
        serde_json::to_value(r)?,
        format!(
            "{}: {} events ({} accepted), {} entities, {} client(s), {} events per message: {:.2} s, {:.0} events/s; \
             server RSS {}\n",
            r.source,
            r.events,
            r.accepted,
            r.entities,
            r.clients,
            r.events_per_message,
            r.seconds,
            r.events_per_sec,
            r.server_rss_bytes.map_or("unknown".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{DecodeError, decode_events, decode_message};

    #[test]
    fn ndjson_indices_are_line_numbers() {
        let body = b"{\"a\":1}\n\nnot json\n{\"entity_id\":\"d\",\"event_time\":\"2026-01-01T00:00:00Z\",\"payload\":{},\"source\":\"s\"}\n\n";
        let items = decode_events(body, false, 10).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_ref().unwrap_err().reason, "INVALID_FIELD");
        assert_eq!(items[1].as_ref().unwrap_err().reason, "INVALID_JSON");
        assert_eq!(items[2].as_ref().unwrap_err().reason, "INVALID_JSON");
        assert!(items[3].is_ok());
        assert_eq!(decode_events(b"[1, 2, 3]", false, 2).unwrap_err(), DecodeError::TooMany(2));
        assert_eq!(decode_events(b"[1, 2", false, 2).unwrap_err(), DecodeError::NotJson);
    }

    #[test]
    fn a_message_is_one_object_or_ndjson() {
        let one = b"{\n  \"entity_id\": \"d\",\n  \"event_time\": \"2026-01-01T00:00:00Z\",\n  \"payload\": {},\n  \"source\": \"s\"\n}";
        let items = decode_message(one, 10).unwrap();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok());
        let two = b"{\"entity_id\":\"d\",\"event_time\":\"2026-01-01T00:00:00Z\",\"payload\":{},\"source\":\"s\"}\n{\"entity_id\":\"e\",\"event_time\":\"2026-01-01T00:00:00Z\",\"payload\":{},\"source\":\"s\"}\n";
        let items = decode_message(two, 10).unwrap();
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(Result::is_ok));
        assert_eq!(decode_message(two, 1).unwrap_err(), DecodeError::TooMany(1));
        assert!(decode_message(b"{\"entity_id\":", 10).unwrap().iter().all(Result::is_err));
        assert_eq!(decode_message(b"[{", 10).unwrap_err(), DecodeError::NotJson);
    }
    #[test]
    fn bench_runs_and_emits_rows() {
        let r = frostbyte_core::signals::bench::run(20_000, 10, 2);
        assert_eq!(r.events, 20_000);
        assert!(r.rows_emitted > 0);
        assert!(r.state_bytes_per_entity > 0.0);
    }
}
