//! Parquet written by `records.copy` is plain Parquet: the `parquet` crate's own reader sees the typed columns
//! (Int64, Float64, Boolean, Date32, Utf8, all nullable) and the values.
#![cfg(feature = "parquet")]

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int64Type};
use arrow_schema::DataType;
use bytes::Bytes;
use frostbyte_adapters::records::parquet::{ParquetRecordReader, ParquetRecordWriter};
use frostbyte_core::pipelines::records::{ColumnType, Field};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

#[test]
fn a_written_file_reads_back_with_the_parquet_crate() {
    let fields = vec![
        Field::new("id", Some(ColumnType::Integer)),
        Field::new("score", Some(ColumnType::Float)),
        Field::new("ok", Some(ColumnType::Boolean)),
        Field::new("day", Some(ColumnType::Date)),
        Field::new("name", Some(ColumnType::String)),
        Field::new("raw", None),
    ];
    let mut w = ParquetRecordWriter::new(&fields).unwrap();
    w.push(&[json!(1), json!(2.5), json!(true), json!("1970-01-02"), json!("Ann"), json!(42)]).unwrap();
    w.push(&[Value::Null, Value::Null, Value::Null, Value::Null, Value::Null, Value::Null]).unwrap();
    let bytes = Bytes::from(w.finish().unwrap());

    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
    let types: Vec<(String, DataType, bool)> =
        builder.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
    assert_eq!(
        types,
        [
            ("id".into(), DataType::Int64, true),
            ("score".into(), DataType::Float64, true),
            ("ok".into(), DataType::Boolean, true),
            ("day".into(), DataType::Date32, true),
            ("name".into(), DataType::Utf8, true),
            ("raw".into(), DataType::Utf8, true),
        ]
    );
    let batches: Vec<_> = builder.build().unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 2.5);
    assert!(b.column(2).as_boolean().value(0));
    assert_eq!(b.column(3).as_primitive::<Date32Type>().value(0), 1);
    assert_eq!(b.column(4).as_string::<i32>().value(0), "Ann");
    assert_eq!(b.column(5).as_string::<i32>().value(0), "42", "an untyped value is stored as text");
    assert!((0..6).all(|c| b.column(c).is_null(1)), "nulls stay null");

    // And our own reader agrees.
    let rows: Vec<Value> =
        ParquetRecordReader::open(bytes).unwrap().map(|r| Value::Object(r.unwrap().unwrap())).collect();
    assert_eq!(rows[0], json!({"id": 1, "score": 2.5, "ok": true, "day": "1970-01-02", "name": "Ann", "raw": "42"}));
}
