//! HTTP API tests: one binary (one link) with a module per area, all through `helpers::spawn_app()`.

mod audit;
mod auth;
mod batch;
mod dlq;
mod embeddings;
mod envelope;
mod helpers;
mod lifecycle;
#[cfg(feature = "nats")]
mod nats;
mod pipeline;
mod pipelines;
mod reindex;
mod search;
mod signals;
mod stream;
mod sync;
mod system;
mod tenants;
