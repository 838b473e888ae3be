//! Frostbyte's adapters: the implementations of the ports `frostbyte-core` defines.
//!
//! - [`sqlite::SqliteStore`] and [`postgres::PostgresStore`] implement
//!   [`MetadataStore`](frostbyte_core::ports::MetadataStore), each with its own embedded migrations and both held
//!   to one contract test suite (`tests/metadata_contract.rs`).
//! - Both stores also implement the durable job queue, [`JobQueue`](frostbyte_core::queue::JobQueue) (module
//!   `queue`, tables in `migrations/*/0002_jobs.sql`), held to `tests/queue_contract.rs`.
//! - Both stores also implement the chunk index, [`ChunkIndex`](frostbyte_core::index::ChunkIndex) (module
//!   `index`, tables in `migrations/*/0003_chunks.sql`: SQLite FTS5 / PostgreSQL tsvector for keywords, exact
//!   cosine over stored vectors), held to `tests/index_contract.rs`.
//! - [`blob::ObjectBlobStore`] implements [`BlobStore`](frostbyte_core::ports::BlobStore) over `object_store`
//!   (local files, memory, and S3 with the `s3` feature).
//! - [`embed`] holds the `openai` embedder and builds the embedder registry from settings.
//! - [`scan`] holds the malware-scanner adapters (`none`, `clamd`) for
//!   [`Scanner`](frostbyte_core::scan::Scanner); both stores also implement
//!   [`BatchStore`](frostbyte_core::batch::BatchStore) (batches and the tenant metadata schema, `0005_batches.sql`).
//! - Both stores also implement the signal store, [`SignalStore`](frostbyte_core::signals::store::SignalStore)
//!   (module `signals`, tables in `migrations/*/0009_signals.sql`), held to `tests/signals_contract.rs`.
//! - [`search::MemoryIndex`] decorates the chunk index with in-memory BM25 and exact vector search, kept in step
//!   with the store through [`IndexFeed`](frostbyte_core::search::IndexFeed) (change generations kept by triggers,
//!   `migrations/*/0007_search_generations.sql`).
//! - Both stores also implement [`RunStore`](frostbyte_core::pipelines::RunStore) (pipeline runs, module `runs`,
//!   `0011_pipeline_runs.sql`), held to `tests/runs_contract.rs`.
//! - [`records`] reads and writes the Parquet files and SQL tables of the `records.copy` processor.
//! - [`resolve`] is the one place where configuration (URLs) becomes implementations.
//!
//! The adapters own the storage layout: tenant prefixes for blobs, the append-only audit tables and their
//! triggers, the per-tenant chain heads. Callers only ever see the ports.

pub mod blob;
mod codec;
mod db_error;
mod documents;
pub mod embed;
mod index;
mod migrations;
pub mod parse;
pub mod postgres;
mod queue;
pub mod records;
pub mod resolve;
mod runs;
pub mod scan;
pub mod search;
pub mod signals;
pub mod sqlite;

pub use blob::{BlobScheme, ObjectBlobStore};
pub use postgres::PostgresStore;
pub use resolve::ResolveError;
pub use sqlite::SqliteStore;
