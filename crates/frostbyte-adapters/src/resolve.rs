//! The one place where configuration becomes implementations: a URL in, a port out.
//!
//! | port | URL | implementation |
//! |---|---|---|
//! | metadata | `sqlite://path/to/db`, `sqlite:///abs/path`, `sqlite::memory:` | [`SqliteStore`] |
//! | metadata | `postgres://…`, `postgresql://…` | [`PostgresStore`] |
//! | blobs | `file:///abs/dir`, `file:relative/dir` | [`ObjectBlobStore::local`] |
//! | blobs | `memory://` | [`ObjectBlobStore::memory`] |
//! | blobs | `s3://bucket[/prefix]` (feature `s3`) | `object_store`'s S3 client, configured from `AWS_*` |
//! | sync sources | `s3://bucket/prefix` (feature `s3`) | [`s3_bucket`]: the same client, for `documents.sync` |
//! | scan | `none`, `clamd://host:port`, `clamd+unix:///path` | [`NoScanner`], [`crate::scan::ClamdScanner`] |
//!
//! An unknown scheme, or one compiled out of this build, fails with a message naming what is supported. URLs in
//! error messages have their password removed.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use frostbyte_core::StoreError;
use frostbyte_core::batch::BatchStore;
use frostbyte_core::documents::DocumentStore;
use frostbyte_core::index::ChunkIndex;
use frostbyte_core::ports::{BlobStore, MetadataStore};
use frostbyte_core::queue::JobQueue;
use frostbyte_core::scan::{NoScanner, Scanner};
use frostbyte_core::signals::store::SignalStore;

use crate::blob::ObjectBlobStore;
use crate::postgres::PostgresStore;
use crate::search::MemoryIndex;
use crate::sqlite::SqliteStore;

const METADATA_SCHEMES: &str = "sqlite:// (or sqlite::memory:), postgres://, postgresql://";
const BLOB_SCHEMES: &str = "file://, memory://, s3://";
const SCANNER_SCHEMES: &str = "none, clamd://host:port, clamd+unix:///path";

/// Why a URL could not be turned into a store.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("unsupported {port} URL scheme {scheme:?}; supported: {supported}")]
    UnsupportedScheme { port: &'static str, scheme: String, supported: &'static str },
    #[error("invalid {port} URL {url:?}: {reason}")]
    InvalidUrl { port: &'static str, url: String, reason: String },
    #[error("{what} is not compiled into this build: rebuild with --features {feature}")]
    FeatureDisabled { what: &'static str, feature: &'static str },
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the metadata store at {url:?}: {source}")]
    Metadata {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot open the blob store at {url:?}: {message}")]
    Blob { url: String, message: String },
}

/// Removes the password from a URL for messages. A URL that still contains `@` without a parsable password
/// (it may be malformed credentials) is reduced to its scheme.
fn redact(url: &str) -> String {
    if let Ok(mut u) = url::Url::parse(url)
        && u.password().is_some()
        && u.set_password(Some("***")).is_ok()
    {
        return u.to_string();
    }
    match url.split_once(':') {
        Some((scheme, _)) if url.contains('@') => format!("{scheme}:…"),
        _ => url.to_owned(),
    }
}

fn scheme_of(url: &str) -> Option<&str> {
    url.split_once(':').map(|(scheme, _)| scheme).filter(|s| !s.is_empty())
}

/// The ports one metadata database serves: the system of record, and beside it the job queue, the document
/// records and the chunk index (one connection pool, so they can share transactions). The chunk index answers
/// searches from memory ([`MemoryIndex`]), following the store's change generations.
#[derive(Clone)]
pub struct MetadataPorts {
    pub store: Arc<dyn MetadataStore>,
    pub queue: Arc<dyn JobQueue>,
    pub documents: Arc<dyn DocumentStore>,
    pub index: Arc<dyn ChunkIndex>,
    /// Batches, their files and the tenant metadata schema.
    pub batches: Arc<dyn BatchStore>,
    pub signals: Arc<dyn SignalStore>,
    /// Pipeline runs.
    pub runs: Arc<dyn frostbyte_core::pipelines::RunStore>,
    /// Pipeline schedules.
    pub schedules: Arc<dyn frostbyte_core::pipelines::ScheduleStore>,
    /// Shadow vectors of reindex runs and their swap onto the chunk index.
    pub shadow: Arc<dyn frostbyte_core::reindex::ShadowIndex>,
    /// What `documents.sync` took in, per source file.
    pub sync: Arc<dyn frostbyte_core::pipelines::SyncStore>,
}

/// Opens the metadata store a URL names, with at most `max_connections` pooled connections. Does not run
/// migrations: the caller decides when (`store.migrate().await`). For SQLite, the database file and its parent
/// directory are created if missing.
pub async fn metadata_store(url: &str, max_connections: u32) -> Result<Arc<dyn MetadataStore>, ResolveError> {
    Ok(metadata_ports(url, max_connections).await?.store)
}

/// Like [`metadata_store`], and also returns the job queue, document records and chunk index on the same
/// database (one connection pool).
pub async fn metadata_ports(url: &str, max_connections: u32) -> Result<MetadataPorts, ResolveError> {
    let open_err = |source| ResolveError::Metadata { url: redact(url), source };
    match scheme_of(url) {
        Some("sqlite") => {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if !in_memory {
                let options =
                    sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|_| ResolveError::InvalidUrl {
                        port: "metadata",
                        url: redact(url),
                        reason: "expected sqlite://path/to/file.db".into(),
                    })?;
                let file = options.get_filename();
                if file.as_os_str().is_empty() {
                    return Err(ResolveError::InvalidUrl {
                        port: "metadata",
                        url: redact(url),
                        reason: "no database file named; expected sqlite://path/to/file.db".into(),
                    });
                }
                if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|source| ResolveError::CreateDir { path: parent.to_path_buf(), source })?;
                }
            }
            let store = Arc::new(SqliteStore::connect(url, max_connections).await.map_err(open_err)?);
            let index = Arc::new(MemoryIndex::new(store.clone(), store.clone()));
            Ok(MetadataPorts {
                store: store.clone(),
                queue: store.clone(),
                documents: store.clone(),
                batches: store.clone(),
                signals: store.clone(),
                runs: store.clone(),
                schedules: store.clone(),
                shadow: store.clone(),
                sync: store,
                index,
            })
        }
        Some("postgres" | "postgresql") => {
            let store = Arc::new(PostgresStore::connect(url, max_connections).await.map_err(open_err)?);
            let index = Arc::new(MemoryIndex::new(store.clone(), store.clone()));
            Ok(MetadataPorts {
                store: store.clone(),
                queue: store.clone(),
                documents: store.clone(),
                batches: store.clone(),
                signals: store.clone(),
                runs: store.clone(),
                schedules: store.clone(),
                shadow: store.clone(),
                sync: store,
                index,
            })
        }
        Some(other) => Err(ResolveError::UnsupportedScheme {
            port: "metadata",
            scheme: other.to_owned(),
            supported: METADATA_SCHEMES,
        }),
        None => Err(ResolveError::InvalidUrl {
            port: "metadata",
            url: redact(url),
            reason: format!("not a URL; supported: {METADATA_SCHEMES}"),
        }),
    }
}

/// Opens the blob store a URL names. For `file://`, the directory is created if missing.
pub fn blob_store(url: &str) -> Result<Arc<dyn BlobStore>, ResolveError> {
    match scheme_of(url) {
        Some("file") => {
            let dir = file_path(url)?;
            std::fs::create_dir_all(&dir).map_err(|source| ResolveError::CreateDir { path: dir.clone(), source })?;
            let store = ObjectBlobStore::local(&dir)
                .map_err(|e| ResolveError::Blob { url: redact(url), message: e.to_string() })?;
            Ok(Arc::new(store))
        }
        Some("memory") => Ok(Arc::new(ObjectBlobStore::memory())),
        Some("s3") => s3(url),
        Some(other) => {
            Err(ResolveError::UnsupportedScheme { port: "blob", scheme: other.to_owned(), supported: BLOB_SCHEMES })
        }
        None => Err(ResolveError::InvalidUrl {
            port: "blob",
            url: redact(url),
            reason: format!("not a URL; supported: {BLOB_SCHEMES}"),
        }),
    }
}

/// `file:///abs/dir` (percent-decoded) or `file:relative/dir`.
fn file_path(url: &str) -> Result<PathBuf, ResolveError> {
    let invalid = |reason: &str| ResolveError::InvalidUrl { port: "blob", url: redact(url), reason: reason.to_owned() };
    if let Some(rest) = url.strip_prefix("file://") {
        if !(rest.starts_with('/') || rest.starts_with("localhost/")) {
            return Err(invalid(
                "a file URL needs an absolute path (file:///abs/dir) or no slashes (file:relative/dir)",
            ));
        }
        let parsed = url::Url::parse(url).map_err(|_| invalid("not a valid file URL"))?;
        return parsed.to_file_path().map_err(|_| invalid("not a local absolute path"));
    }
    let rest = url.strip_prefix("file:").unwrap_or(url);
    if rest.is_empty() {
        return Err(invalid("no directory named"));
    }
    Ok(PathBuf::from(rest))
}

#[cfg(feature = "s3")]
fn s3(url: &str) -> Result<Arc<dyn BlobStore>, ResolveError> {
    use object_store::ObjectStore;
    use object_store::aws::AmazonS3Builder;
    use object_store::prefix::PrefixStore;

    use crate::blob::BlobScheme;

    let invalid = |reason: &str| ResolveError::InvalidUrl { port: "blob", url: redact(url), reason: reason.to_owned() };
    let parsed = url::Url::parse(url).map_err(|_| invalid("expected s3://bucket[/prefix]"))?;
    let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| invalid("no bucket named"))?;
    let prefix = parsed.path().trim_matches('/');
    // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP, ... as usual.
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| ResolveError::Blob { url: redact(url), message: e.to_string() })?;
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        let prefix = object_store::path::Path::parse(prefix).map_err(|_| invalid("the prefix is not a valid path"))?;
        Arc::new(PrefixStore::new(s3, prefix))
    };
    Ok(Arc::new(ObjectBlobStore::new(store, BlobScheme::S3)))
}

#[cfg(not(feature = "s3"))]
fn s3(_url: &str) -> Result<Arc<dyn BlobStore>, ResolveError> {
    Err(ResolveError::FeatureDisabled { what: "S3 blob storage", feature: "s3" })
}

/// An S3 client for one bucket, configured from the environment like the S3 blob store (`AWS_ACCESS_KEY_ID`,
/// `AWS_REGION`, `AWS_ENDPOINT`, ...): what `documents.sync` lists and reads an `s3://bucket/prefix` source with.
#[cfg(feature = "s3")]
pub fn s3_bucket(bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>, ResolveError> {
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| ResolveError::Blob { url: format!("s3://{bucket}"), message: e.to_string() })?;
    Ok(Arc::new(s3))
}

#[cfg(not(feature = "s3"))]
pub fn s3_bucket(_bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>, ResolveError> {
    Err(ResolveError::FeatureDisabled { what: "S3 sources", feature: "s3" })
}

/// The malware scanner `[scan] scanner` names: `none`, `clamd://host:port` or `clamd+unix:///path`, each scan
/// bounded by `timeout`. Nothing is contacted here; an unreachable clamd fails each scan (closed), not the start.
pub fn scanner(url: &str, timeout: std::time::Duration) -> Result<Arc<dyn Scanner>, ResolveError> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        _ if url == "none" => Ok(Arc::new(NoScanner)),
        Some("clamd" | "clamd+unix") => crate::scan::ClamdScanner::from_url(url, timeout)
            .map(|s| Arc::new(s) as Arc<dyn Scanner>)
            .map_err(|reason| ResolveError::InvalidUrl { port: "scan", url: redact(url), reason }),
        Some(other) => {
            Err(ResolveError::UnsupportedScheme { port: "scan", scheme: other.to_owned(), supported: SCANNER_SCHEMES })
        }
        None => Err(ResolveError::InvalidUrl {
            port: "scan",
            url: redact(url),
            reason: format!("supported: {SCANNER_SCHEMES}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@db/x"), "postgres://u:***@db/x");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
        assert!(!redact("weird:u:secret@").contains("secret"));
    }

    #[test]
    fn file_urls() {
        assert_eq!(file_path("file:///tmp/a%20b").unwrap(), PathBuf::from("/tmp/a b"));
        assert_eq!(file_path("file:data/blobs").unwrap(), PathBuf::from("data/blobs"));
        assert!(file_path("file://data/blobs").is_err());
        assert!(file_path("file:").is_err());
    }
}
