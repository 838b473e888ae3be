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

use chrono::{DateTime, Utc};
use frostbyte_core::signals::service::{IngestReport, IngestSettings, SignalService};
use frostbyte_core::signals::store::SignalStore;

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
        SignalsRuntime::new(store, settings)
    }
}

/// Records an ingest's counts.
pub fn record_ingest(report: &IngestReport, now: DateTime<Utc>) {
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
