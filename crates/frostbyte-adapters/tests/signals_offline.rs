//! The Parquet offline feature store: files land in `{tenant}/signals/{feature_set}/date=YYYY-MM-DD/`, appear
//! whole (no temporary file is left behind) and read back with the `parquet` crate's own reader.
#![cfg(feature = "parquet")]

use std::fs::File;

use arrow_array::{Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use frostbyte_adapters::signals::offline::ParquetOfflineStore;
use frostbyte_core::TenantId;
use frostbyte_core::signals::FeatureRow;
use frostbyte_core::signals::store::OfflineSink;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;

const DAY: i64 = 86_400_000_000;
const T0: i64 = 1_770_000_000_000_000 - 1_770_000_000_000_000 % DAY; // a midnight

fn row(entity: &str, end: i64, values: serde_json::Value) -> FeatureRow {
    FeatureRow {
        feature_set: "device".into(),
        version: 3,
        entity_id: entity.into(),
        window_end: end,
        revision: 0,
        values,
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

#[tokio::test]
async fn rows_are_partitioned_by_date_and_read_back_by_a_parquet_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = ParquetOfflineStore::new(dir.path());
    let tenant = TenantId::parse("acme").unwrap();
    let rows = vec![
        row("dev-1", T0 + 60_000_000, json!({"m1": {"n": 3, "mean": 2.5}, "e": {"value": 1.25}})),
        row("dev-2", T0 + 60_000_000, json!({"m1": {"n": 1, "mean": null}})),
        row("dev-1", T0 + DAY + 60_000_000, json!({"m1": {"n": 7, "mean": 4.0}})),
    ];
    assert_eq!(store.append(&tenant, &rows).await.unwrap(), 2, "one file per day");
    let files = files_under(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let day0 = chrono::DateTime::from_timestamp_micros(T0).unwrap().date_naive();
    let first = &files[0];
    assert!(first.starts_with(dir.path().join("acme/signals/device").join(format!("date={day0}"))), "{first:?}");
    assert!(first.file_name().unwrap().to_string_lossy().starts_with("v3-"));
    assert!(files.iter().all(|f| f.extension().unwrap() == "parquet"), "no temporary file is left: {files:?}");

    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(first).unwrap()).unwrap().build().unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let b = &batches[0];
    let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["entity_id", "window_end", "feature_set", "version", "revision", "e.value", "m1.mean", "m1.n"]);
    let entity = b.column_by_name("entity_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(entity.value(1), "dev-2");
    let end = b.column_by_name("window_end").unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
    assert_eq!(end.value(0), T0 + 60_000_000);
    let mean = b.column_by_name("m1.mean").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(mean.value(0), 2.5);
    assert!(mean.is_null(1), "a missing value is null, not zero");
    let ewma = b.column_by_name("e.value").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(ewma.is_null(1));
    let rev = b.column_by_name("revision").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(rev.value(0), 0);

    // A second append adds a file beside the first; nothing is rewritten.
    store.append(&tenant, &rows[..1]).await.unwrap();
    assert_eq!(files_under(dir.path()).len(), 3);
}
