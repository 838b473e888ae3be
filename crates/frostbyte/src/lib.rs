//! Frostbyte as a library: the pieces the `frostbyte` binary composes, exposed so integration tests can drive them.

pub mod app;
pub mod batch_status;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod corpus;
pub mod engine;
pub mod events;
pub mod http;
pub mod ingest_command;
pub mod intake;
pub mod metadata_schema;
#[cfg(feature = "nats")]
pub mod nats;
pub mod pipeline;
pub mod search_cli;
pub mod signals;
pub mod signals_bench;
pub mod stages_bench;
