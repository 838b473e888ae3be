//! Records in SQL tables, SQLite or PostgreSQL (sqlx).
//!
//! Table and column names are identifiers, never SQL: [`table_name`] and [`identifier`] accept only
//! `[A-Za-z_][A-Za-z0-9_]*` (at most 63 characters; a table may be `schema.table`), and every name is double-quoted
//! in the statements built here, so no input reaches the SQL text except as a checked, quoted name. Values are
//! always bound.
//!
//! - Reading ([`SqlConnection::read`]) selects the named columns (or all of them) and streams the rows through a
//!   bounded channel: integers as JSON integers, floats as numbers, booleans, dates as `YYYY-MM-DD`, anything
//!   else as text (PostgreSQL casts it with `::text`). SQLite values are read by their storage class; a `BLOB` is
//!   refused for its row.
//! - Writing ([`SqlConnection::writer`]) opens one transaction, creates the table when it is missing with one
//!   column per field typed from the mapping, checks that an existing table has every field as a column, and
//!   inserts multi-row `INSERT`s of up to [`MAX_BATCH_ROWS`] rows. Nothing is visible until
//!   [`SqlWriter::commit`]; dropping the writer rolls everything back.

use std::str::FromStr;
use std::time::Duration;

use frostbyte_core::pipelines::records::{ColumnType, Field, as_text, date_of, fits};
use futures::StreamExt;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row, Sqlite, SqlitePool, Transaction, TypeInfo, ValueRef};

use super::{RecordsError, RowResult};

/// The most rows one `INSERT` carries (fewer when a row has many columns: at most 30,000 bound values).
pub const MAX_BATCH_ROWS: usize = 1000;
const MAX_BOUND_VALUES: usize = 30_000;
const MAX_IDENTIFIER: usize = 63;

fn unavailable(what: &str) -> impl Fn(sqlx::Error) -> RecordsError + '_ {
    move |e| match e {
        sqlx::Error::Database(db) => RecordsError::Invalid(format!("{what}: {}", db.message())),
        e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. }) => {
            RecordsError::Invalid(format!("{what}: {e}"))
        }
        e => RecordsError::Unavailable(format!("{what}: {e}")),
    }
}

/// Checks one identifier and returns it double-quoted.
pub fn identifier(name: &str) -> Result<String, RecordsError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || name.len() > MAX_IDENTIFIER || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(RecordsError::Invalid(format!(
            "{name:?} is not a valid SQL name (letters, digits and _, not starting with a digit, at most \
             {MAX_IDENTIFIER} characters)"
        )));
    }
    Ok(format!("\"{name}\""))
}

/// A checked `table` or `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    /// The quoted name for SQL text.
    fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}\"", self.table),
            None => format!("\"{}\"", self.table),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// Parses and checks `table` or `schema.table`.
pub fn table_name(name: &str) -> Result<TableName, RecordsError> {
    let parts: Vec<&str> = name.split('.').collect();
    let (schema, table) = match parts[..] {
        [table] => (None, table),
        [schema, table] => (Some(schema), table),
        _ => return Err(RecordsError::Invalid(format!("{name:?} is not a table name (table or schema.table)"))),
    };
    if let Some(s) = schema {
        identifier(s)?;
    }
    identifier(table)?;
    Ok(TableName { schema: schema.map(str::to_owned), table: table.to_owned() })
}

/// The column type a field is created with.
fn sql_type(ty: Option<ColumnType>, postgres: bool) -> &'static str {
    match (ty, postgres) {
        (Some(ColumnType::Integer), true) => "BIGINT",
        (Some(ColumnType::Integer), false) => "INTEGER",
        (Some(ColumnType::Float), true) => "DOUBLE PRECISION",
        (Some(ColumnType::Float), false) => "REAL",
        (Some(ColumnType::Boolean), _) => "BOOLEAN",
        (Some(ColumnType::Date), _) => "DATE",
        (Some(ColumnType::String) | None, _) => "TEXT",
    }
}

/// How a PostgreSQL column is selected and decoded.
#[derive(Debug, Clone, Copy)]
enum PgKind {
    Integer,
    Float,
    Boolean,
    Date,
    Text,
}

fn pg_kind(udt: &str) -> PgKind {
    match udt {
        "int2" | "int4" | "int8" => PgKind::Integer,
        "float4" | "float8" => PgKind::Float,
        "bool" => PgKind::Boolean,
        "date" => PgKind::Date,
        _ => PgKind::Text,
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open connection (a small pool) to one configured database.
#[derive(Clone)]
pub struct SqlConnection {
    pool: Pool,
}

/// A column of an existing table: its name and its declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    pub declared: String,
}

impl SqlConnection {
    /// Connects to `sqlite://…` or `postgres://…` (or `postgresql://…`).
    pub async fn connect(url: &str) -> Result<SqlConnection, RecordsError> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| RecordsError::Invalid(format!("not a SQLite URL: {e}")))?
                .busy_timeout(Duration::from_secs(10));
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(|e| RecordsError::Unavailable(format!("cannot open the database: {e}")))?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| RecordsError::Invalid(format!("not a PostgreSQL URL: {e}")))?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(|e| RecordsError::Unavailable(format!("cannot connect to the database: {e}")))?,
            )
        } else {
            return Err(RecordsError::Invalid("a SQL connection URL starts with sqlite:// or postgres://".into()));
        };
        Ok(SqlConnection { pool })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The table's columns in order, or `None` when there is no such table.
    pub async fn columns(&self, table: &TableName) -> Result<Option<Vec<TableColumn>>, RecordsError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                sqlite_columns(&mut *pool.acquire().await.map_err(unavailable("SQLite"))?, table).await
            }
            Pool::Postgres(pool) => {
                pg_columns(&mut *pool.acquire().await.map_err(unavailable("PostgreSQL"))?, table).await
            }
        }
    }

    /// Streams the rows of `table`: the named columns, or every column when `wanted` is `None`. Names that are not
    /// columns of the table are refused before anything is read.
    pub async fn read(&self, table: &TableName, wanted: Option<&[String]>) -> Result<SqlRows, RecordsError> {
        let existing =
            self.columns(table).await?.ok_or_else(|| RecordsError::Invalid(format!("table {table} does not exist")))?;
        let selected: Vec<TableColumn> = match wanted {
            None => existing,
            Some(names) => names
                .iter()
                .map(|n| {
                    identifier(n)?;
                    existing
                        .iter()
                        .find(|c| &c.name == n)
                        .cloned()
                        .ok_or_else(|| RecordsError::Invalid(format!("table {table} has no column {n:?}")))
                })
                .collect::<Result<_, _>>()?,
        };
        for c in &selected {
            identifier(&c.name)?;
        }
        let names: Vec<String> = selected.iter().map(|c| c.name.clone()).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        match &self.pool {
            Pool::Sqlite(pool) => {
                let list = names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
                let sql = format!("SELECT {list} FROM {}", table.quoted());
                let (pool, names) = (pool.clone(), names.clone());
                tokio::spawn(async move {
                    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&pool);
                    while let Some(r) = rows.next().await {
                        let item = r.map(|row| sqlite_row(&row, &names)).map_err(unavailable("cannot read the table"));
                        let stop = item.is_err();
                        if tx.send(item).await.is_err() || stop {
                            break;
                        }
                    }
                });
            }
            Pool::Postgres(pool) => {
                let kinds: Vec<PgKind> = selected.iter().map(|c| pg_kind(&c.declared)).collect();
                let list = names
                    .iter()
                    .zip(&kinds)
                    .map(|(n, k)| match k {
                        PgKind::Integer => format!("\"{n}\"::int8"),
                        PgKind::Float => format!("\"{n}\"::float8"),
                        PgKind::Boolean | PgKind::Date => format!("\"{n}\""),
                        PgKind::Text => format!("\"{n}\"::text"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("SELECT {list} FROM {}", table.quoted());
                let (pool, names) = (pool.clone(), names.clone());
                tokio::spawn(async move {
                    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&pool);
                    while let Some(r) = rows.next().await {
                        let item =
                            r.map(|row| pg_row(&row, &names, &kinds)).map_err(unavailable("cannot read the table"));
                        let stop = item.is_err();
                        if tx.send(item).await.is_err() || stop {
                            break;
                        }
                    }
                });
            }
        }
        Ok(SqlRows { rx, columns: names })
    }

    /// Opens a transaction writing `fields` into `table`, creating the table when it is missing.
    pub async fn writer(&self, table: &TableName, fields: &[Field]) -> Result<SqlWriter, RecordsError> {
        if fields.is_empty() {
            return Err(RecordsError::Invalid("a SQL table needs at least one column".into()));
        }
        let mut columns = Vec::with_capacity(fields.len());
        for f in fields {
            columns.push(identifier(&f.name)?);
        }
        let postgres = self.is_postgres();
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            table.quoted(),
            fields
                .iter()
                .zip(&columns)
                .map(|(f, q)| format!("{q} {}", sql_type(f.ty, postgres)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let check = |existing: Option<Vec<TableColumn>>| -> Result<(), RecordsError> {
            let existing = existing.unwrap_or_default();
            match fields.iter().find(|f| !existing.iter().any(|c| c.name == f.name)) {
                Some(f) => Err(RecordsError::Invalid(format!("table {table} has no column {:?}", f.name))),
                None => Ok(()),
            }
        };
        let tx = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(unavailable("SQLite"))?;
                sqlx::query(AssertSqlSafe(create.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable("cannot create the table"))?;
                check(sqlite_columns(&mut tx, table).await?)?;
                WriterTx::Sqlite(tx)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(unavailable("PostgreSQL"))?;
                sqlx::query(AssertSqlSafe(create.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable("cannot create the table"))?;
                check(pg_columns(&mut tx, table).await?)?;
                WriterTx::Postgres(tx)
            }
        };
        let batch_rows = (MAX_BOUND_VALUES / fields.len()).clamp(1, MAX_BATCH_ROWS);
        let insert = format!("INSERT INTO {} ({}) ", table.quoted(), columns.join(", "));
        Ok(SqlWriter { tx, insert, fields: fields.to_vec(), buffer: Vec::with_capacity(batch_rows), batch_rows })
    }
}

async fn sqlite_columns(
    conn: &mut sqlx::SqliteConnection,
    table: &TableName,
) -> Result<Option<Vec<TableColumn>>, RecordsError> {
    let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?1, ?2) ORDER BY cid")
        .bind(&table.table)
        .bind(table.schema.as_deref().unwrap_or("main"))
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable("cannot read the table's columns"))?;
    let columns: Vec<TableColumn> = rows
        .iter()
        .map(|r| TableColumn { name: r.get("name"), declared: r.get::<String, _>("type").to_ascii_lowercase() })
        .collect();
    Ok((!columns.is_empty()).then_some(columns))
}

async fn pg_columns(
    conn: &mut sqlx::PgConnection,
    table: &TableName,
) -> Result<Option<Vec<TableColumn>>, RecordsError> {
    let rows = sqlx::query(
        "SELECT column_name::text AS name, udt_name::text AS udt FROM information_schema.columns \
         WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(table.schema.as_deref())
    .bind(&table.table)
    .fetch_all(&mut *conn)
    .await
    .map_err(unavailable("cannot read the table's columns"))?;
    let columns: Vec<TableColumn> =
        rows.iter().map(|r| TableColumn { name: r.get("name"), declared: r.get("udt") }).collect();
    Ok((!columns.is_empty()).then_some(columns))
}

fn finite(f: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(f).map(Value::Number).ok_or_else(|| format!("{f} is not a finite number"))
}

fn sqlite_row(row: &sqlx::sqlite::SqliteRow, names: &[String]) -> RowResult {
    let mut out = Map::new();
    for (i, name) in names.iter().enumerate() {
        let fail = |e: sqlx::Error| format!("column {name:?}: {e}");
        let class = {
            let raw = row.try_get_raw(i).map_err(fail)?;
            if raw.is_null() { None } else { Some(raw.type_info().name().to_owned()) }
        };
        let value = match class.as_deref() {
            None => Value::Null,
            Some("INTEGER") => Value::from(row.try_get::<i64, _>(i).map_err(fail)?),
            Some("REAL") => {
                finite(row.try_get::<f64, _>(i).map_err(fail)?).map_err(|e| format!("column {name:?}: {e}"))?
            }
            Some("TEXT") => Value::String(row.try_get::<String, _>(i).map_err(fail)?),
            Some(_) => return Err(format!("column {name:?}: binary values cannot be copied")),
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn pg_row(row: &sqlx::postgres::PgRow, names: &[String], kinds: &[PgKind]) -> RowResult {
    let mut out = Map::new();
    for (i, (name, kind)) in names.iter().zip(kinds).enumerate() {
        let fail = |e: sqlx::Error| format!("column {name:?}: {e}");
        let value = match kind {
            PgKind::Integer => row.try_get::<Option<i64>, _>(i).map_err(fail)?.map(Value::from),
            PgKind::Float => match row.try_get::<Option<f64>, _>(i).map_err(fail)? {
                Some(f) => Some(finite(f).map_err(|e| format!("column {name:?}: {e}"))?),
                None => None,
            },
            PgKind::Boolean => row.try_get::<Option<bool>, _>(i).map_err(fail)?.map(Value::Bool),
            PgKind::Date => row
                .try_get::<Option<chrono::NaiveDate>, _>(i)
                .map_err(fail)?
                .map(|d| Value::String(d.format("%Y-%m-%d").to_string())),
            PgKind::Text => row.try_get::<Option<String>, _>(i).map_err(fail)?.map(Value::String),
        };
        out.insert(name.clone(), value.unwrap_or(Value::Null));
    }
    Ok(out)
}

/// Rows streaming out of a table.
pub struct SqlRows {
    rx: tokio::sync::mpsc::Receiver<Result<RowResult, RecordsError>>,
    columns: Vec<String>,
}

impl SqlRows {
    /// The selected columns, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The next row; `None` at the end; `Some(Err)` when the read failed (no rows follow).
    pub async fn next(&mut self) -> Option<Result<RowResult, RecordsError>> {
        self.rx.recv().await
    }
}

enum WriterTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Inserts rows inside one transaction; see the module docs.
pub struct SqlWriter {
    tx: WriterTx,
    insert: String,
    fields: Vec<Field>,
    buffer: Vec<Vec<Value>>,
    batch_rows: usize,
}

macro_rules! push_rows {
    ($db:ty, $insert:expr, $rows:expr, $fields:expr) => {{
        let mut q = QueryBuilder::<$db>::new($insert.as_str());
        q.push_values($rows, |mut b, row| {
            for (v, f) in row.iter().zip($fields) {
                match f.ty {
                    Some(ColumnType::Integer) => b.push_bind(v.as_i64()),
                    Some(ColumnType::Float) => b.push_bind(v.as_f64()),
                    Some(ColumnType::Boolean) => b.push_bind(v.as_bool()),
                    Some(ColumnType::Date) => b.push_bind(date_of(v)),
                    Some(ColumnType::String) | None => b.push_bind(as_text(v)),
                };
            }
        });
        q
    }};
}

impl SqlWriter {
    /// Buffers one row (one coerced value per field) and inserts a batch when it is full.
    pub async fn push(&mut self, row: Vec<Value>) -> Result<(), RecordsError> {
        if row.len() != self.fields.len() {
            return Err(RecordsError::Invalid(format!(
                "a row has {} values for {} columns",
                row.len(),
                self.fields.len()
            )));
        }
        if let Some((v, f)) = row.iter().zip(&self.fields).find(|(v, f)| !fits(v, f.ty)) {
            return Err(RecordsError::Invalid(format!("column {:?}: {v} does not fit its type", f.name)));
        }
        self.buffer.push(row);
        if self.buffer.len() >= self.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), RecordsError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let failed = unavailable("cannot insert rows");
        match &mut self.tx {
            WriterTx::Sqlite(tx) => {
                let mut q = push_rows!(Sqlite, self.insert, &rows, &self.fields);
                q.build().execute(&mut **tx).await.map_err(failed)?;
            }
            WriterTx::Postgres(tx) => {
                let mut q = push_rows!(Postgres, self.insert, &rows, &self.fields);
                q.build().execute(&mut **tx).await.map_err(failed)?;
            }
        }
        self.buffer = rows;
        self.buffer.clear();
        Ok(())
    }

    /// Inserts what is buffered and commits: every row becomes visible at once.
    pub async fn commit(mut self) -> Result<(), RecordsError> {
        self.flush().await?;
        match self.tx {
            WriterTx::Sqlite(tx) => tx.commit().await.map_err(unavailable("cannot commit")),
            WriterTx::Postgres(tx) => tx.commit().await.map_err(unavailable("cannot commit")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_identifiers_or_nothing() {
        assert_eq!(identifier("user_id").unwrap(), "\"user_id\"");
        for bad in ["", "1a", "a-b", "a b", "a\"b", "x;drop table t", "é", &"a".repeat(64)] {
            assert!(identifier(bad).is_err(), "{bad:?}");
        }
        assert_eq!(table_name("sales.orders").unwrap().quoted(), "\"sales\".\"orders\"");
        assert_eq!(table_name("orders").unwrap().to_string(), "orders");
        assert!(table_name("a.b.c").is_err());
        assert!(table_name("a.").is_err());
        assert!(table_name("t\"; --").is_err());
    }
}
