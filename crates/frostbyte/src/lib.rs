//! Frostbyte as a library: the pieces the `frostbyte` binary composes, exposed so integration tests can drive them.

pub mod app;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod http;
pub mod intake;
pub mod pipeline;
pub mod search_cli;
