//! Signals: append-only events from devices and services become windowed features that models read online and
//! train on offline, through one engine shared by streaming ingest and backfills.
//!
//! - [`event`]: the event type, its validation and its `content_hash` (the dedupe key) over a canonical form.
//! - [`definition`]: feature-set definitions (JSON or YAML), validated with every problem listed at once.
//! - [`engine`]: event-time windowing with per-entity watermarks (`max event time − allowed_lateness`), late
//!   policies `drop | hold | correct`, and entity state that can be checkpointed and restored.
//! - [`partition`]: the consistent hash that routes entities to workers.
//! - [`store`]: the [`SignalStore`](store::SignalStore) port the metadata stores implement.
//! - [`service`]: the ingest and backfill use-cases the HTTP API, the CLI and the stream consumer share.
//!
//! Everything here is pure: no I/O, no clock (callers pass `now`).

pub mod bench;
pub mod definition;
pub mod duration;
pub mod engine;
pub mod event;
pub mod partition;
pub mod service;
pub mod store;

pub use definition::{FeatureSetDef, LatePolicy};
pub use engine::{CompiledFeatureSet, Engine, EntityState, FeatureRow, Outcome};
pub use event::{Event, EventError};

#[cfg(test)]
mod engine_tests;
