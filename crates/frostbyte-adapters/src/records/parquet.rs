//! Records as Parquet (arrow-rs): [`ParquetRecordWriter`] encodes mapped rows with one Arrow type per column
//! type (`string` Utf8, `integer` Int64, `float` Float64, `boolean` Boolean, `date` Date32; untyped columns
//! Utf8), every column nullable, in record batches of [`BATCH_ROWS`]; [`ParquetRecordReader`] reads any Parquet
//! file whose columns are strings, integers, floats, booleans, dates or timestamps back into JSON rows.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use frostbyte_core::pipelines::records::{ColumnType, Field, as_text, date_of, fits};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};

use super::{RecordsError, RowResult};

/// Rows per record batch, written and read.
pub const BATCH_ROWS: usize = 8192;

fn invalid(what: &str) -> impl Fn(parquet::errors::ParquetError) -> RecordsError + '_ {
    move |e| RecordsError::Invalid(format!("{what}: {e}"))
}

/// The Arrow type a column type is stored as.
pub fn arrow_type(ty: Option<ColumnType>) -> DataType {
    match ty {
        Some(ColumnType::Integer) => DataType::Int64,
        Some(ColumnType::Float) => DataType::Float64,
        Some(ColumnType::Boolean) => DataType::Boolean,
        Some(ColumnType::Date) => DataType::Date32,
        Some(ColumnType::String) | None => DataType::Utf8,
    }
}

enum Builder {
    Text(StringBuilder),
    Integer(Int64Builder),
    Float(Float64Builder),
    Boolean(BooleanBuilder),
    Date(Date32Builder),
}

const EPOCH: chrono::NaiveDate = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

impl Builder {
    fn new(ty: Option<ColumnType>) -> Self {
        match ty {
            Some(ColumnType::Integer) => Builder::Integer(Int64Builder::with_capacity(BATCH_ROWS)),
            Some(ColumnType::Float) => Builder::Float(Float64Builder::with_capacity(BATCH_ROWS)),
            Some(ColumnType::Boolean) => Builder::Boolean(BooleanBuilder::with_capacity(BATCH_ROWS)),
            Some(ColumnType::Date) => Builder::Date(Date32Builder::with_capacity(BATCH_ROWS)),
            Some(ColumnType::String) | None => Builder::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16)),
        }
    }

    /// Appends a value that [`fits`] the column (checked by the caller for the whole row first, so that a refused
    /// row leaves every column as it was).
    fn append(&mut self, v: &Value) {
        match self {
            Builder::Text(b) => b.append_option(as_text(v)),
            Builder::Integer(b) => b.append_option(v.as_i64()),
            Builder::Float(b) => b.append_option(v.as_f64()),
            Builder::Boolean(b) => b.append_option(v.as_bool()),
            Builder::Date(b) => b
                .append_option(date_of(v).map(|d| {
                    i32::try_from((d - EPOCH).num_days()).expect("chrono dates lie within 2^31 days of 1970")
                })),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Integer(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
        }
    }
}

/// Encodes rows into one Parquet file in memory.
pub struct ParquetRecordWriter {
    fields: Vec<Field>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    pending: usize,
    writer: ArrowWriter<Vec<u8>>,
}

impl ParquetRecordWriter {
    pub fn new(fields: &[Field]) -> Result<Self, RecordsError> {
        if fields.is_empty() {
            return Err(RecordsError::Invalid("a Parquet file needs at least one column".into()));
        }
        let schema: SchemaRef = Arc::new(Schema::new(
            fields.iter().map(|f| ArrowField::new(f.name.clone(), arrow_type(f.ty), true)).collect::<Vec<_>>(),
        ));
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), None).map_err(invalid("cannot start Parquet"))?;
        Ok(ParquetRecordWriter {
            fields: fields.to_vec(),
            schema,
            builders: fields.iter().map(|f| Builder::new(f.ty)).collect(),
            pending: 0,
            writer,
        })
    }

    /// Appends one row: one coerced value per field, in field order.
    pub fn push(&mut self, row: &[Value]) -> Result<(), RecordsError> {
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
        for (b, v) in self.builders.iter_mut().zip(row) {
            b.append(v);
        }
        self.pending += 1;
        if self.pending >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RecordsError> {
        if self.pending == 0 {
            return Ok(());
        }
        let columns = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| RecordsError::Invalid(format!("cannot build a record batch: {e}")))?;
        self.writer.write(&batch).map_err(invalid("cannot write Parquet"))?;
        self.pending = 0;
        Ok(())
    }

    /// The whole file.
    pub fn finish(mut self) -> Result<Vec<u8>, RecordsError> {
        self.flush()?;
        self.writer.into_inner().map_err(invalid("cannot finish Parquet"))
    }
}

/// How one column is read back as JSON.
fn supported(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Null
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    )
}

/// Reads a Parquet file back as JSON rows (see the module docs for the column types it reads).
pub struct ParquetRecordReader {
    reader: ParquetRecordBatchReader,
    columns: Vec<String>,
    rows: u64,
    batch: Option<RecordBatch>,
    next_row: usize,
}

impl ParquetRecordReader {
    pub fn open(bytes: Bytes) -> Result<Self, RecordsError> {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(invalid("not a readable Parquet file"))?;
        let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let schema = builder.schema().clone();
        let unsupported: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| !supported(f.data_type()))
            .map(|f| format!("{} ({})", f.name(), f.data_type()))
            .collect();
        if !unsupported.is_empty() {
            return Err(RecordsError::Invalid(format!(
                "Parquet columns of these types cannot be copied: {}",
                unsupported.join(", ")
            )));
        }
        let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(invalid("cannot read Parquet"))?;
        let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(ParquetRecordReader { reader, columns, rows, batch: None, next_row: 0 })
    }

    /// The file's column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// How many rows the file says it holds.
    pub fn row_count(&self) -> u64 {
        self.rows
    }
}

fn float(f: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(f).map(Value::Number).ok_or_else(|| format!("{f} is not a finite number"))
}

fn timestamp(micros: Option<i64>, unit: &str) -> Result<Value, String> {
    micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
        .ok_or_else(|| format!("the {unit} timestamp is out of range"))
}

/// One cell as JSON; `Err` says why the row cannot be read.
fn cell(array: &dyn Array, i: usize) -> Result<Value, String> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(i).to_owned()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(i)),
        DataType::Float16 => float(f64::from(array.as_primitive::<Float16Type>().value(i)))?,
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(i)))?,
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(i))?,
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(i);
            let date = EPOCH.checked_add_signed(chrono::Duration::days(i64::from(days))).ok_or("date out of range")?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(i);
            let t = chrono::DateTime::from_timestamp_millis(ms).ok_or("date out of range")?;
            Value::String(t.date_naive().format("%Y-%m-%d").to_string())
        }
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => {
                timestamp(array.as_primitive::<TimestampSecondType>().value(i).checked_mul(1_000_000), "second")?
            }
            TimeUnit::Millisecond => {
                timestamp(array.as_primitive::<TimestampMillisecondType>().value(i).checked_mul(1_000), "millisecond")?
            }
            TimeUnit::Microsecond => {
                timestamp(Some(array.as_primitive::<TimestampMicrosecondType>().value(i)), "microsecond")?
            }
            TimeUnit::Nanosecond => {
                timestamp(Some(array.as_primitive::<TimestampNanosecondType>().value(i) / 1_000), "nanosecond")?
            }
        },
        other => return Err(format!("type {other} cannot be copied")),
    })
}

impl Iterator for ParquetRecordReader {
    /// A file-level failure, or one row.
    type Item = Result<RowResult, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = &self.batch
                && self.next_row < batch.num_rows()
            {
                let i = self.next_row;
                self.next_row += 1;
                let mut row = Map::new();
                for (name, array) in self.columns.iter().zip(batch.columns()) {
                    match cell(array.as_ref(), i) {
                        Ok(v) => {
                            row.insert(name.clone(), v);
                        }
                        Err(reason) => return Some(Ok(Err(format!("column {name:?}: {reason}")))),
                    }
                }
                return Some(Ok(Ok(row)));
            }
            match self.reader.next()? {
                Ok(batch) => {
                    self.batch = Some(batch);
                    self.next_row = 0;
                }
                Err(e) => return Some(Err(RecordsError::Invalid(format!("cannot read Parquet: {e}")))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_rows_round_trip() {
        let fields = vec![
            Field::new("id", Some(ColumnType::Integer)),
            Field::new("name", None),
            Field::new("score", Some(ColumnType::Float)),
            Field::new("ok", Some(ColumnType::Boolean)),
            Field::new("day", Some(ColumnType::Date)),
        ];
        let mut w = ParquetRecordWriter::new(&fields).unwrap();
        let n = BATCH_ROWS + 3;
        for i in 0..n {
            let name = if i == 1 { Value::Null } else { json!(format!("n{i}")) };
            w.push(&[json!(i), name, json!(i as f64 / 2.0), json!(i % 2 == 0), json!("2026-03-01")]).unwrap();
        }
        assert!(w.push(&[json!("x"), Value::Null, Value::Null, Value::Null, Value::Null]).is_err());
        let bytes = Bytes::from(w.finish().unwrap());
        let r = ParquetRecordReader::open(bytes).unwrap();
        assert_eq!(r.columns(), ["id", "name", "score", "ok", "day"]);
        assert_eq!(r.row_count(), n as u64);
        let rows: Vec<_> = r.map(|x| x.unwrap().unwrap()).collect();
        assert_eq!(rows.len(), n);
        assert_eq!(
            Value::Object(rows[1].clone()),
            json!({"id": 1, "name": null, "score": 0.5, "ok": false, "day": "2026-03-01"})
        );
        assert_eq!(rows[n - 1]["id"], json!(n - 1));
    }

    #[test]
    fn garbage_is_refused() {
        let e = ParquetRecordReader::open(Bytes::from_static(b"id,name\n1,a\n")).err().unwrap();
        assert!(e.to_string().contains("not a readable Parquet file"), "{e}");
    }
}
