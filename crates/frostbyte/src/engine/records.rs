//! `records.copy`: rows from a source to a target through the `columns` mapping (`from[:to[:type]]`, types
//! `string`, `integer`, `float`, `boolean`, `date`; see [`frostbyte_core::pipelines::records`]). A row that
//! cannot be read or coerced goes to the reject file (option `reject_target`) as `{row, field, reason}` and not
//! to the target.
//!
//! Sources and targets:
//! - a key in the tenant's blob space, by extension: `.csv` (with a header row), `.jsonl` / `.ndjson`, and
//!   `.parquet` (feature `parquet`; typed columns from the mapping, untyped ones as strings). A target blob is
//!   stored with one put after the last row, so the key appears only complete (the blob store writes through a
//!   temporary object); a failed or cancelled run leaves it as it was.
//! - `sql://CONNECTION/table` (or `schema.table`): CONNECTION names an entry of `[pipelines.connections]` that
//!   lists this tenant, so a run can reach only the databases the operator gave the tenant. A target table is
//!   created when missing (columns typed from the mapping) and filled inside one transaction, committed after
//!   the reject file is stored; a source table is read with `SELECT` of the mapped columns. Names are checked
//!   identifiers and quoted; values are bound ([`frostbyte_adapters::records::sql`]).
//!
//! Rows stream from source to target; only a blob source's bytes and a blob target's encoded output are held in
//! memory. Without a mapping, JSON Lines targets receive the rows as they are; other targets take the source's
//! columns (a JSON Lines source is read twice to collect them) and store every value as text.

use std::collections::BTreeMap;

use bytes::Bytes;
use frostbyte_adapters::records::RecordsError;
use frostbyte_adapters::records::sql::{SqlConnection, SqlRows, SqlWriter, TableName, table_name};
use frostbyte_core::pipelines::records::{Column, Field, as_text, coerce, fields_of, parse_columns};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::processors::{Outcome, ProcessorError, RunContext};

/// A configured SQL database (`[pipelines.connections.NAME]`) and the tenants allowed to use it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub url: SecretString,
    pub tenants: Vec<String>,
}

/// Connections by name.
pub type Connections = BTreeMap<String, Connection>;

impl From<RecordsError> for ProcessorError {
    fn from(e: RecordsError) -> Self {
        ProcessorError::Failed { retryable: e.is_retryable(), message: e.to_string() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
    Parquet,
}

/// Where rows come from or go to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Blob { key: String, format: Format },
    Sql { connection: String, table: TableName },
}

#[cfg(not(feature = "parquet"))]
const PARQUET_MISSING: &str = "Parquet is not in this build (Frostbyte was compiled without the `parquet` feature)";

fn endpoint(s: &str) -> Result<Endpoint, ProcessorError> {
    if let Some(rest) = s.strip_prefix("sql://") {
        let (connection, table) = rest
            .split_once('/')
            .filter(|(c, t)| !c.is_empty() && !t.is_empty())
            .ok_or_else(|| ProcessorError::permanent(format!("{s:?} is not sql://CONNECTION/table")))?;
        return Ok(Endpoint::Sql { connection: connection.to_owned(), table: table_name(table)? });
    }
    let lower = s.to_ascii_lowercase();
    let format = if lower.ends_with(".csv") {
        Format::Csv
    } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        Format::JsonLines
    } else if lower.ends_with(".parquet") {
        Format::Parquet
    } else {
        return Err(ProcessorError::permanent(format!(
            "{s:?}: records.copy reads and writes .csv, .jsonl, .ndjson and .parquet blobs and sql://CONNECTION/table"
        )));
    };
    Ok(Endpoint::Blob { key: s.to_owned(), format })
}

/// Opens the named connection if this tenant may use it. An unknown name and a name the tenant may not use
/// answer the same, so a tenant learns nothing about other tenants' connections.
async fn connect(ctx: &RunContext, name: &str) -> Result<SqlConnection, ProcessorError> {
    let conn =
        ctx.connections.get(name).filter(|c| c.tenants.iter().any(|t| t == ctx.tenant.as_str())).ok_or_else(|| {
            ProcessorError::permanent(format!("no SQL connection named {name:?} is configured for this tenant"))
        })?;
    SqlConnection::connect(conn.url.expose_secret()).await.map_err(|e| {
        let message = format!("SQL connection {name:?}: {e}");
        ProcessorError::Failed { retryable: e.is_retryable(), message }
    })
}

/// A row source.
enum Source {
    Csv {
        reader: csv::Reader<std::io::Cursor<Bytes>>,
        record: csv::StringRecord,
        headers: Vec<String>,
        len: usize,
    },
    JsonLines {
        data: Bytes,
        pos: usize,
    },
    #[cfg(feature = "parquet")]
    Parquet {
        reader: frostbyte_adapters::records::parquet::ParquetRecordReader,
        read: u64,
    },
    Sql(SqlRows),
}

/// One item of a source: a fatal failure, or a row (read, or refused with a reason).
type Item = Result<Result<Map<String, Value>, String>, ProcessorError>;

impl Source {
    async fn open(ctx: &RunContext, from: &Endpoint, columns: &[Column]) -> Result<Source, ProcessorError> {
        match from {
            Endpoint::Sql { connection, table } => {
                let conn = connect(ctx, connection).await?;
                let mut wanted: Vec<String> = Vec::new();
                for c in columns {
                    if !wanted.contains(&c.from) {
                        wanted.push(c.from.clone());
                    }
                }
                let rows = conn.read(table, (!wanted.is_empty()).then_some(&wanted[..])).await?;
                Ok(Source::Sql(rows))
            }
            Endpoint::Blob { key, format } => {
                let bytes = ctx.blobs.get(&ctx.tenant, key).await.map_err(|e| match e {
                    frostbyte_core::ports::BlobError::NotFound(_) => {
                        ProcessorError::permanent(format!("source {key:?} does not exist"))
                    }
                    e => e.into(),
                })?;
                match format {
                    Format::Csv => {
                        let len = bytes.len();
                        let mut reader =
                            csv::ReaderBuilder::new().flexible(false).from_reader(std::io::Cursor::new(bytes));
                        let headers = reader
                            .headers()
                            .map_err(|e| ProcessorError::permanent(format!("cannot read the CSV header: {e}")))?
                            .iter()
                            .map(str::to_owned)
                            .collect();
                        Ok(Source::Csv { reader, record: csv::StringRecord::new(), headers, len })
                    }
                    Format::JsonLines => Ok(Source::JsonLines { data: bytes, pos: 0 }),
                    #[cfg(feature = "parquet")]
                    Format::Parquet => Ok(Source::Parquet {
                        reader: frostbyte_adapters::records::parquet::ParquetRecordReader::open(bytes)?,
                        read: 0,
                    }),
                    #[cfg(not(feature = "parquet"))]
                    Format::Parquet => Err(ProcessorError::permanent(PARQUET_MISSING)),
                }
            }
        }
    }

    /// The source's columns when it declares them (CSV header, Parquet schema, table); JSON Lines collects the
    /// keys of every object, in order of first appearance.
    fn columns(&self) -> Vec<String> {
        match self {
            Source::Csv { headers, .. } => headers.clone(),
            Source::JsonLines { data, .. } => {
                let mut keys: Vec<String> = Vec::new();
                for line in data.split(|b| *b == b'\n') {
                    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(line) {
                        for k in m.keys() {
                            if !keys.contains(k) {
                                keys.push(k.clone());
                            }
                        }
                    }
                }
                keys
            }
            #[cfg(feature = "parquet")]
            Source::Parquet { reader, .. } => reader.columns().to_vec(),
            Source::Sql(rows) => rows.columns().to_vec(),
        }
    }

    /// How much of the source has been read, when that is known.
    fn fraction(&self) -> f64 {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        match self {
            Source::Csv { reader, len, .. } => ratio(reader.position().byte(), *len as u64),
            Source::JsonLines { data, pos } => ratio(*pos as u64, data.len() as u64),
            #[cfg(feature = "parquet")]
            Source::Parquet { reader, read } => ratio(*read, reader.row_count()),
            Source::Sql(_) => 0.0,
        }
    }

    async fn next(&mut self) -> Option<Item> {
        match self {
            Source::Csv { reader, record, headers, .. } => match reader.read_record(record) {
                Ok(false) => None,
                Ok(true) => Some(Ok(Ok(headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (h.clone(), if v.is_empty() { Value::Null } else { Value::String(v.to_owned()) }))
                    .collect()))),
                Err(e) => Some(Ok(Err(format!("malformed CSV row: {e}")))),
            },
            Source::JsonLines { data, pos } => loop {
                if *pos >= data.len() {
                    return None;
                }
                let rest = &data[*pos..];
                let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
                let line = &rest[..end];
                *pos += end + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(Ok(match serde_json::from_slice::<Value>(line) {
                    Ok(Value::Object(m)) => Ok(m),
                    Ok(_) => Err("the line is not a JSON object".to_owned()),
                    Err(e) => Err(format!("malformed JSON: {e}")),
                }));
            },
            #[cfg(feature = "parquet")]
            Source::Parquet { reader, read } => {
                *read += 1;
                reader.next().map(|r| r.map_err(ProcessorError::from))
            }
            Source::Sql(rows) => rows.next().await.map(|r| r.map_err(ProcessorError::from)),
        }
    }
}

/// A row target.
enum Sink {
    Csv(csv::Writer<Vec<u8>>),
    JsonLines(Vec<u8>),
    #[cfg(feature = "parquet")]
    Parquet(frostbyte_adapters::records::parquet::ParquetRecordWriter),
    Sql(SqlWriter),
}

fn csv_failed(e: impl std::fmt::Display) -> ProcessorError {
    ProcessorError::permanent(format!("cannot write CSV: {e}"))
}

impl Sink {
    /// `fields` is `None` only for a JSON Lines target without a mapping (rows pass as they are).
    async fn open(ctx: &RunContext, to: &Endpoint, fields: Option<&[Field]>) -> Result<Sink, ProcessorError> {
        let fields = fields.unwrap_or_default();
        match to {
            Endpoint::Sql { connection, table } => {
                Ok(Sink::Sql(connect(ctx, connection).await?.writer(table, fields).await?))
            }
            Endpoint::Blob { format: Format::JsonLines, .. } => Ok(Sink::JsonLines(Vec::new())),
            Endpoint::Blob { format: Format::Csv, .. } => {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(fields.iter().map(|f| f.name.as_str())).map_err(csv_failed)?;
                Ok(Sink::Csv(w))
            }
            #[cfg(feature = "parquet")]
            Endpoint::Blob { format: Format::Parquet, .. } => {
                Ok(Sink::Parquet(frostbyte_adapters::records::parquet::ParquetRecordWriter::new(fields)?))
            }
            #[cfg(not(feature = "parquet"))]
            Endpoint::Blob { format: Format::Parquet, .. } => Err(ProcessorError::permanent(PARQUET_MISSING)),
        }
    }

    /// Writes one row: `values` in field order, or (JSON Lines without a mapping) the object as it was read.
    async fn push(
        &mut self,
        fields: Option<&[Field]>,
        values: Vec<Value>,
        object: Option<&Map<String, Value>>,
    ) -> Result<(), ProcessorError> {
        match self {
            Sink::JsonLines(out) => {
                let line = match (object, fields) {
                    (Some(o), _) => serde_json::to_vec(o),
                    (None, fields) => {
                        let m: Map<String, Value> =
                            fields.unwrap_or_default().iter().map(|f| f.name.clone()).zip(values).collect();
                        serde_json::to_vec(&m)
                    }
                }
                .map_err(|e| ProcessorError::permanent(format!("cannot write JSON: {e}")))?;
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
            Sink::Csv(w) => {
                w.write_record(values.iter().map(|v| as_text(v).unwrap_or_default())).map_err(csv_failed)?;
            }
            #[cfg(feature = "parquet")]
            Sink::Parquet(w) => w.push(&values)?,
            Sink::Sql(w) => w.push(values).await?,
        }
        Ok(())
    }

    /// Stores the output: one blob put, or the transaction's commit.
    async fn finish(self, ctx: &RunContext, to: &Endpoint) -> Result<(), ProcessorError> {
        let bytes = match self {
            Sink::Sql(w) => return Ok(w.commit().await?),
            Sink::JsonLines(out) => out,
            Sink::Csv(w) => w.into_inner().map_err(csv_failed)?,
            #[cfg(feature = "parquet")]
            Sink::Parquet(w) => w.finish()?,
        };
        let Endpoint::Blob { key, .. } = to else { unreachable!("blob sinks write blob endpoints") };
        ctx.blobs.put(&ctx.tenant, key, Bytes::from(bytes)).await?;
        Ok(())
    }
}

/// One row through the mapping: the values in field order, or the field at fault and why.
fn map_row(row: &Map<String, Value>, columns: &[Column]) -> Result<Vec<Value>, (String, String)> {
    columns
        .iter()
        .map(|c| {
            let value = row.get(&c.from).ok_or_else(|| (c.from.clone(), "column is missing".to_owned()))?;
            match c.ty {
                Some(ty) => coerce(value, ty).map_err(|reason| (c.from.clone(), reason)),
                None => Ok(value.clone()),
            }
        })
        .collect()
}

/// The blob key of the reject file: the `reject_target` option, default `{target}.rejects.jsonl`. A reject
/// target derived from a SQL target (`sql://c/t.rejects.jsonl`) becomes the blob key `sql/c/t.rejects.jsonl`.
fn reject_key(ctx: &RunContext, target: &str) -> String {
    let key = ctx
        .options
        .get("reject_target")
        .and_then(Value::as_str)
        .map_or_else(|| format!("{target}.rejects.jsonl"), str::to_owned);
    match key.strip_prefix("sql://") {
        Some(rest) => format!("sql/{rest}"),
        None => key,
    }
}

pub(super) async fn records_copy(ctx: RunContext) -> Result<Outcome, ProcessorError> {
    let source_text = ctx.required(&ctx.source, "source")?;
    let target_text = ctx.required(&ctx.target, "target")?;
    let (source, target) = (endpoint(&source_text)?, endpoint(&target_text)?);
    let columns = parse_columns(ctx.param_str("columns").unwrap_or_default()).map_err(ProcessorError::permanent)?;
    let rejects_at = reject_key(&ctx, &target_text);
    if source == target || rejects_at == source_text || rejects_at == target_text {
        return Err(ProcessorError::permanent("source, target and reject file must be different"));
    }
    let mut input = Source::open(&ctx, &source, &columns).await?;
    let passthrough = columns.is_empty() && matches!(target, Endpoint::Blob { format: Format::JsonLines, .. });
    let fields: Option<Vec<Field>> = if !columns.is_empty() {
        Some(fields_of(&columns))
    } else if passthrough {
        None
    } else {
        Some(input.columns().into_iter().map(|name| Field::new(name, None)).collect())
    };
    let mut output = Sink::open(&ctx, &target, fields.as_deref()).await?;

    let (mut written, mut rejected, mut row_number) = (0u64, 0u64, 0u64);
    let mut rejects = Vec::new();
    while let Some(item) = input.next().await {
        row_number += 1;
        let mapped = item?.map_err(|reason| ("(row)".to_owned(), reason)).and_then(|row| {
            if !columns.is_empty() {
                map_row(&row, &columns).map(|v| (v, None))
            } else if passthrough {
                Ok((Vec::new(), Some(row)))
            } else {
                let names = fields.as_deref().unwrap_or_default();
                Ok((names.iter().map(|f| row.get(&f.name).cloned().unwrap_or(Value::Null)).collect(), None))
            }
        });
        match mapped {
            Ok((values, object)) => {
                output.push(fields.as_deref(), values, object.as_ref()).await?;
                written += 1;
            }
            Err((field, reason)) => {
                rejected += 1;
                rejects.extend_from_slice(
                    json!({"row": row_number, "field": field, "reason": reason}).to_string().as_bytes(),
                );
                rejects.push(b'\n');
            }
        }
        if row_number % 1_000 == 0 {
            ctx.check_cancelled()?;
            ctx.progress(input.fraction() * 0.9, written).await;
            tokio::task::yield_now().await;
        }
    }
    ctx.check_cancelled()?;
    // The reject file first: a target committed before a failed reject write would be written twice on retry.
    if rejected > 0 {
        ctx.blobs.put(&ctx.tenant, &rejects_at, Bytes::from(rejects)).await?;
    }
    output.finish(&ctx, &target).await?;
    let mut counts = Map::new();
    counts.insert("rows_written".into(), json!(written));
    counts.insert("rows_rejected".into(), json!(rejected));
    Ok(Outcome { records: written, counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("in/a.CSV").unwrap(), Endpoint::Blob { key: "in/a.CSV".into(), format: Format::Csv });
        assert_eq!(endpoint("a.parquet").unwrap(), Endpoint::Blob { key: "a.parquet".into(), format: Format::Parquet });
        assert_eq!(
            endpoint("sql://warehouse/sales.orders").unwrap(),
            Endpoint::Sql { connection: "warehouse".into(), table: table_name("sales.orders").unwrap() }
        );
        for bad in ["a.txt", "sql://warehouse", "sql:///t", "sql://w/", "sql://w/t;drop table x", "sql://w/a.b.c"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mapping_a_row() {
        let row = json!({"id": "7", "name": "Ann"}).as_object().unwrap().clone();
        let cols = parse_columns("id:user_id:integer,name").unwrap();
        assert_eq!(map_row(&row, &cols).unwrap(), vec![json!(7), json!("Ann")]);
        let cols = parse_columns("id,joined::date").unwrap();
        assert_eq!(map_row(&row, &cols).unwrap_err(), ("joined".to_owned(), "column is missing".to_owned()));
    }
}

/// `records.copy` run end to end through the engine: definitions, a worker, the blob store and real databases.
#[cfg(test)]
mod engine_tests {
    use std::sync::Arc;

    use frostbyte_core::TenantId;
    use frostbyte_core::pipelines::{PipelineRun, RunStatus};
    use serde_json::{Map, Value, json};

    use super::{Connection, Connections};
    use crate::engine::{Engine, EngineSettings};
    use crate::events::EventBus;

    async fn engine(connections: Connections) -> (Engine, TenantId, tempfile::TempDir) {
        let (ports, blobs, dir) = crate::engine::scratch_acme().await;
        let settings = EngineSettings { connections: Arc::new(connections), ..Default::default() };
        let engine = Engine::new(ports.runs, ports.store, ports.queue, blobs, Arc::new(EventBus::default()), settings);
        (engine, TenantId::parse("acme").unwrap(), dir)
    }

    fn connection(url: &str, tenants: &[&str]) -> Connection {
        Connection { url: url.to_owned().into(), tenants: tenants.iter().map(|t| (*t).to_owned()).collect() }
    }

    async fn copy(engine: &Engine, tenant: &TenantId, params: Value) -> PipelineRun {
        let params: Map<String, Value> = params.as_object().unwrap().clone();
        let run = engine.create_run(tenant, "records", "copy", params, "test").await.unwrap();
        engine.drive_until_finished(tenant, run.run_id, "w").await.unwrap()
    }

    async fn put(engine: &Engine, tenant: &TenantId, key: &str, text: &str) {
        engine.blobs.put(tenant, key, bytes::Bytes::from(text.to_owned())).await.unwrap();
    }

    async fn text(engine: &Engine, tenant: &TenantId, key: &str) -> String {
        String::from_utf8(engine.blobs.get(tenant, key).await.unwrap().to_vec()).unwrap()
    }

    const PEOPLE: &str = "id,name,score,active,joined\n1,Ann,2.5,yes,2026-03-01\nx,Bob,1,no,2026-03-02\n\
                          3,,0.25,false,2026-03-03\n";
    const MAPPING: &str = "id::integer,name,score::float,active::boolean,joined::date";

    #[cfg(feature = "parquet")]
    #[tokio::test]
    async fn csv_to_parquet_and_back_keeps_the_types() {
        use frostbyte_adapters::records::parquet::ParquetRecordReader;
        let (engine, tenant, _dir) = engine(Connections::new()).await;
        put(&engine, &tenant, "in/people.csv", PEOPLE).await;
        let params = json!({"source": "in/people.csv", "target": "out/people.parquet", "columns": MAPPING});
        let run = copy(&engine, &tenant, params).await;
        assert_eq!((run.status, run.records_processed), (RunStatus::Completed, 2), "{run:?}");
        let rejects = text(&engine, &tenant, "out/people.parquet.rejects.jsonl").await;
        assert_eq!(rejects, "{\"field\":\"id\",\"reason\":\"\\\"x\\\" is not an integer\",\"row\":2}\n");

        let file = engine.blobs.get(&tenant, "out/people.parquet").await.unwrap();
        let rows: Vec<Value> =
            ParquetRecordReader::open(file).unwrap().map(|r| Value::Object(r.unwrap().unwrap())).collect();
        assert_eq!(
            rows,
            [
                json!({"id": 1, "name": "Ann", "score": 2.5, "active": true, "joined": "2026-03-01"}),
                json!({"id": 3, "name": null, "score": 0.25, "active": false, "joined": "2026-03-03"}),
            ]
        );

        // Parquet as a source: typed values come out typed, through a renaming mapping too.
        let back = json!({"source": "out/people.parquet", "target": "out/people.jsonl"});
        assert_eq!(copy(&engine, &tenant, back).await.status, RunStatus::Completed);
        let lines: Vec<Value> = text(&engine, &tenant, "out/people.jsonl")
            .await
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, rows);
        let renamed = json!({"source": "out/people.parquet", "target": "out/ids.csv", "columns": "id:person,active"});
        assert_eq!(copy(&engine, &tenant, renamed).await.status, RunStatus::Completed);
        assert_eq!(text(&engine, &tenant, "out/ids.csv").await, "person,active\n1,true\n3,false\n");

        // Without a mapping every column is copied as text.
        let plain = json!({"source": "in/people.csv", "target": "out/plain.parquet"});
        assert_eq!(copy(&engine, &tenant, plain).await.records_processed, 3);
        let file = engine.blobs.get(&tenant, "out/plain.parquet").await.unwrap();
        let first = ParquetRecordReader::open(file).unwrap().next().unwrap().unwrap().unwrap();
        assert_eq!(first["score"], json!("2.5"));

        // Garbage is refused with the reason, and the target is not written.
        put(&engine, &tenant, "in/fake.parquet", "id,name\n").await;
        let bad = copy(&engine, &tenant, json!({"source": "in/fake.parquet", "target": "out/fake.csv"})).await;
        assert_eq!(bad.status, RunStatus::Failed);
        assert!(bad.error_message.unwrap().contains("not a readable Parquet file"));
        assert!(!engine.blobs.exists(&tenant, "out/fake.csv").await.unwrap());
    }

    #[cfg(not(feature = "parquet"))]
    #[tokio::test]
    async fn parquet_says_it_is_not_in_this_build() {
        let (engine, tenant, _dir) = engine(Connections::new()).await;
        put(&engine, &tenant, "in/people.csv", PEOPLE).await;
        let run = copy(&engine, &tenant, json!({"source": "in/people.csv", "target": "out/p.parquet"})).await;
        assert_eq!(run.status, RunStatus::Failed);
        assert!(run.error_message.unwrap().contains("Parquet is not in this build"));
    }

    /// CSV into a table through a named connection, then the table back out, on the database at `url`.
    async fn sql_round_trip(url: &str, table: &str) {
        let conns = Connections::from([("wh".to_owned(), connection(url, &["acme"]))]);
        let (engine, tenant, _dir) = engine(conns).await;
        put(&engine, &tenant, "in/people.csv", PEOPLE).await;
        let target = format!("sql://wh/{table}");
        let run =
            copy(&engine, &tenant, json!({"source": "in/people.csv", "target": target, "columns": MAPPING})).await;
        assert_eq!((run.status, run.records_processed), (RunStatus::Completed, 2), "{run:?}");
        let rejects = text(&engine, &tenant, &format!("sql/wh/{table}.rejects.jsonl")).await;
        assert!(rejects.contains("\"row\":2"), "{rejects}");

        let back =
            json!({"source": target, "target": "out/back.jsonl", "columns": "id,name,score,active::boolean,joined"});
        let run = copy(&engine, &tenant, back).await;
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
        let mut lines: Vec<Value> =
            text(&engine, &tenant, "out/back.jsonl").await.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines.sort_by_key(|v| v["id"].as_i64());
        assert_eq!(
            lines,
            [
                json!({"id": 1, "name": "Ann", "score": 2.5, "active": true, "joined": "2026-03-01"}),
                json!({"id": 3, "name": null, "score": 0.25, "active": false, "joined": "2026-03-03"}),
            ]
        );
        // A second copy appends.
        let again = json!({"source": "in/people.csv", "target": format!("sql://wh/{table}"), "columns": MAPPING});
        assert_eq!(copy(&engine, &tenant, again).await.status, RunStatus::Completed);
        let all = copy(&engine, &tenant, json!({"source": target, "target": "out/all.csv"})).await;
        assert_eq!(all.records_processed, 4);
        assert!(text(&engine, &tenant, "out/all.csv").await.starts_with("id,name,score,active,joined\n"));
    }

    #[tokio::test]
    async fn sql_tables_on_sqlite() {
        let db = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", db.path().join("warehouse.db").display());
        sql_round_trip(&url, "people").await;
    }

    #[tokio::test]
    async fn sql_tables_on_postgres() {
        let Ok(url) = std::env::var("FROSTBYTE_TEST_POSTGRES_URL") else {
            eprintln!("FROSTBYTE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL variant");
            return;
        };
        let table = format!("people_{}", uuid::Uuid::now_v7().simple());
        sql_round_trip(&url, &table).await;
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE \"{table}\""))).execute(&pool).await.unwrap();
    }

    #[tokio::test]
    async fn a_tenant_reaches_only_its_connections_and_only_tables() {
        let db = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", db.path().join("warehouse.db").display());
        let conns = Connections::from([("theirs".to_owned(), connection(&url, &["globex"]))]);
        let (engine, tenant, _dir) = engine(conns).await;
        put(&engine, &tenant, "in/people.csv", PEOPLE).await;
        for (target, problem) in [
            ("sql://theirs/people", "no SQL connection named \"theirs\" is configured for this tenant"),
            ("sql://nowhere/people", "no SQL connection named \"nowhere\" is configured for this tenant"),
            ("sql://theirs/people;drop table people", "is not a valid SQL name"),
            ("sql://theirs", "is not sql://CONNECTION/table"),
        ] {
            let run = copy(&engine, &tenant, json!({"source": "in/people.csv", "target": target})).await;
            assert_eq!(run.status, RunStatus::Failed);
            let message = run.error_message.unwrap();
            assert!(message.contains(problem), "{target}: {message}");
        }
        assert!(!db.path().join("warehouse.db").exists(), "the database was never opened");
    }
}
