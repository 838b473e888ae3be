//! [`SignalStore`](frostbyte_core::signals::store::SignalStore) for [`PostgresStore`](crate::PostgresStore):
//! concurrent batches meet on the events' primary key and the checkpoints' revision, never both succeeding.

super::signal_store!(crate::PostgresStore, crate::db_error::Dialect::Postgres, begin, crate::postgres::append_in_tx);
