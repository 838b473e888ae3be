//! The offline feature store as Parquet files: `{root}/{tenant}/signals/{feature_set}/date=YYYY-MM-DD/
//! v{version}-{uuid}.parquet`, one file per feature set, version and day of `window_end` per append.
//!
//! Each file is written to a hidden temporary name in its final directory, synced, and renamed into place, so a
//! reader (Spark, DuckDB, pandas, the `parquet` crate) never sees half a file. Columns: `entity_id` (string),
//! `window_end` (timestamp µs, UTC), `feature_set` (string), `version` (int32), `revision` (int64), then one
//! nullable float64 column per `window.aggregate` value found in the rows (`m1.n`, `t_ewma.value`, ...), sorted
//! by name. Files are uncompressed, keeping the build free of codec crates.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use frostbyte_core::signals::FeatureRow;
use frostbyte_core::signals::store::OfflineSink;
use frostbyte_core::{StoreError, StoreResult, TenantId};
use parquet::arrow::ArrowWriter;

/// Parquet files under a local directory.
#[derive(Debug, Clone)]
pub struct ParquetOfflineStore {
    root: PathBuf,
}

impl ParquetOfflineStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ParquetOfflineStore { root: root.into() }
    }

    /// The directory holding a feature set's files for one day.
    pub fn partition_dir(&self, tenant: &TenantId, feature_set: &str, date: chrono::NaiveDate) -> PathBuf {
        self.root.join(tenant.as_str()).join("signals").join(feature_set).join(format!("date={date}"))
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("offline store: {e}"))
}

/// The flattened value columns of `rows`: `window.aggregate` → one value per row.
fn value_columns(rows: &[&FeatureRow]) -> BTreeMap<String, Vec<Option<f64>>> {
    let mut names = BTreeSet::new();
    for r in rows {
        if let Some(windows) = r.values.as_object() {
            for (w, aggs) in windows {
                if let Some(aggs) = aggs.as_object() {
                    names.extend(aggs.keys().map(|a| format!("{w}.{a}")));
                }
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let (w, a) = name.split_once('.').expect("joined with a dot");
            let col = rows.iter().map(|r| r.values.get(w).and_then(|v| v.get(a)).and_then(|v| v.as_f64())).collect();
            (name, col)
        })
        .collect()
}

/// Encodes rows (all of one feature set and version) as one record batch.
pub fn record_batch(rows: &[&FeatureRow]) -> StoreResult<RecordBatch> {
    let mut fields = vec![
        Field::new("entity_id", DataType::Utf8, false),
        Field::new("window_end", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("feature_set", DataType::Utf8, false),
        Field::new("version", DataType::Int32, false),
        Field::new("revision", DataType::Int64, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.entity_id.as_str()))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.window_end)).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.feature_set.as_str()))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.version))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| i64::from(r.revision)))),
    ];
    for (name, values) in value_columns(rows) {
        fields.push(Field::new(name, DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(values)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| StoreError::Internal(format!("offline record batch: {e}")))
}

/// Writes `batch` to `dir/name` through a temporary file and a rename.
fn write_atomically(dir: &Path, name: &str, batch: &RecordBatch) -> StoreResult<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).map_err(io)?;
    writer.write(batch).map_err(io)?;
    let file = writer.into_inner().map_err(io)?;
    file.sync_all().map_err(io)?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

#[async_trait]
impl OfflineSink for ParquetOfflineStore {
    async fn append(&self, tenant: &TenantId, rows: &[FeatureRow]) -> StoreResult<usize> {
        let mut groups: BTreeMap<(String, i32, chrono::NaiveDate), Vec<FeatureRow>> = BTreeMap::new();
        for r in rows {
            let day = chrono::DateTime::from_timestamp_micros(r.window_end)
                .ok_or_else(|| StoreError::Internal("window_end out of range".into()))?
                .date_naive();
            groups.entry((r.feature_set.clone(), r.version, day)).or_default().push(r.clone());
        }
        let store = self.clone();
        let tenant = tenant.clone();
        tokio::task::spawn_blocking(move || {
            let mut written = 0;
            for ((feature_set, version, day), rows) in groups {
                let refs: Vec<&FeatureRow> = rows.iter().collect();
                let batch = record_batch(&refs)?;
                let name = format!("v{version}-{}.parquet", uuid::Uuid::now_v7().simple());
                write_atomically(&store.partition_dir(&tenant, &feature_set, day), &name, &batch)?;
                written += 1;
            }
            Ok(written)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("offline writer: {e}")))?
    }
}
