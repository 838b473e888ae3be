//! [`SignalStore`](frostbyte_core::signals::store::SignalStore) for [`SqliteStore`](crate::SqliteStore): writes
//! in `BEGIN IMMEDIATE` transactions, which serialise batches and the audit append.

super::signal_store!(crate::SqliteStore, crate::db_error::Dialect::Sqlite, begin_write, crate::sqlite::append_in_tx);
