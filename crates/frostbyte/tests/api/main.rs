//! HTTP API tests: one binary (one link) with a module per area, all through `helpers::spawn_app()`.

mod audit;
mod auth;
mod dlq;
mod envelope;
mod helpers;
mod pipeline;
mod search;
mod system;
mod tenants;
