//! Tenant-scoped blob storage over `object_store`: local files, memory, or S3 (and S3-compatible servers).
//!
//! Layout: a tenant's key `raw/ab12…` is stored at `tenants/{tenant}/raw/ab12…`. The tenant prefix is added here
//! and nowhere else, and keys are validated before they become paths, so no key can name another tenant's
//! objects or escape the store's root.
//!
//! Key grammar: 1 to 1024 bytes of `A-Z a-z 0-9 . _ - = + @ ,` in `/`-separated segments; no leading `/`, no
//! empty segments (`a//b`, a trailing `/`), no `..` anywhere, no backslashes. The grammar is deliberately
//! narrow: every such key means the same object on a file system, in memory and on S3.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use frostbyte_core::TenantId;
use frostbyte_core::ports::{BlobError, BlobStore, BlobWrite, delete_listed, write_each};
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Which kind of storage backs an [`ObjectBlobStore`]; reported by [`BlobStore::scheme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobScheme {
    File,
    Memory,
    S3,
}

impl BlobScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobScheme::File => "file",
            BlobScheme::Memory => "memory",
            BlobScheme::S3 => "s3",
        }
    }
}

/// A [`BlobStore`] over any `object_store` backend.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    scheme: BlobScheme,
    /// `store` itself when it is local files: [`BlobStore::write_all`] writes them directly, to sync each
    /// directory once for many files.
    local: Option<Arc<LocalFileSystem>>,
}

impl ObjectBlobStore {
    /// Wraps a configured `object_store` backend. Everything is stored under `tenants/` in it.
    pub fn new(store: Arc<dyn ObjectStore>, scheme: BlobScheme) -> Self {
        ObjectBlobStore { store, scheme, local: None }
    }

    /// Files under `dir`, which is created if missing. Writes are fsynced (file and directory) before they
    /// return, matching the durability an object store promises, and directories emptied by deletes are removed.
    pub fn local(dir: &FsPath) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BlobError::Unavailable(format!("cannot create blob directory {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| BlobError::Unavailable(format!("cannot open blob directory {}: {e}", dir.display())))?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        let fs = Arc::new(fs);
        Ok(ObjectBlobStore { store: fs.clone(), scheme: BlobScheme::File, local: Some(fs) })
    }

    /// A process-local in-memory store, for tests and throwaway runs.
    pub fn memory() -> Self {
        Self::new(Arc::new(InMemory::new()), BlobScheme::Memory)
    }

    /// The backend, for tests and tooling that must look past the tenant prefix.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}

/// Checks `key` against the key grammar (see the module docs).
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    let invalid = |reason: &'static str| Err(BlobError::InvalidKey { key: key.to_owned(), reason });
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return invalid("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return invalid("absolute (starts with '/')");
    }
    if key.contains('\\') {
        return invalid("contains a backslash");
    }
    if key.contains("..") {
        return invalid("contains '..'");
    }
    if key.split('/').any(str::is_empty) {
        return invalid("has an empty path segment");
    }
    if key.split('/').any(|s| s == ".") {
        return invalid("has a '.' path segment");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=' | '+' | '@' | ',' | '/');
    if !key.chars().all(allowed) {
        return invalid("contains a character outside A-Z a-z 0-9 . _ - = + @ , /");
    }
    Ok(())
}

/// `tenants/{tenant}`: everything a tenant stores lives below it.
fn tenant_root(tenant: &TenantId) -> Path {
    Path::from_iter(["tenants", tenant.as_str()])
}

fn location(tenant: &TenantId, key: &str) -> Result<Path, BlobError> {
    validate_key(key)?;
    Path::parse(format!("tenants/{tenant}/{key}"))
        .map_err(|_| BlobError::InvalidKey { key: key.to_owned(), reason: "not a valid object path" })
}

fn map_err(key: &str, e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound(key.to_owned()),
        object_store::Error::InvalidPath { .. } => {
            BlobError::InvalidKey { key: key.to_owned(), reason: "not a valid object path" }
        }
        other => BlobError::Unavailable(other.to_string()),
    }
}

impl ObjectBlobStore {
    /// Every object of the tenant, as full locations.
    async fn list_locations(
        &self,
        tenant: &TenantId,
        under: &Path,
    ) -> Result<Vec<object_store::ObjectMeta>, BlobError> {
        let root = format!("{}/", tenant_root(tenant));
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(under)).try_collect().await.map_err(|e| map_err("", e))?;
        // Defensive: a backend whose prefix matching is not segment-based must still not leak a neighbour's keys.
        Ok(metas.into_iter().filter(|m| m.location.as_ref().starts_with(&root)).collect())
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    fn scheme(&self) -> &'static str {
        self.scheme.as_str()
    }

    async fn put(&self, tenant: &TenantId, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let loc = location(tenant, key)?;
        self.store.put(&loc, PutPayload::from(bytes)).await.map_err(|e| map_err(key, e))?;
        Ok(())
    }

    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Bytes, BlobError> {
        let loc = location(tenant, key)?;
        let result = self.store.get(&loc).await.map_err(|e| map_err(key, e))?;
        result.bytes().await.map_err(|e| map_err(key, e))
    }

    /// A hard link on local files (renamed into place, the directory synced), a server-side copy on S3.
    async fn copy(&self, tenant: &TenantId, from: &str, to: &str) -> Result<(), BlobError> {
        let (source, target) = (location(tenant, from)?, location(tenant, to)?);
        self.store.copy(&source, &target).await.map_err(|e| map_err(from, e))
    }

    async fn exists(&self, tenant: &TenantId, key: &str) -> Result<bool, BlobError> {
        let loc = location(tenant, key)?;
        match self.store.head(&loc).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(map_err(key, e)),
        }
    }

    /// Idempotent: deleting a key that does not exist succeeds (S3 cannot tell the difference anyway).
    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<(), BlobError> {
        let loc = location(tenant, key)?;
        match self.store.delete(&loc).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(key, e)),
        }
    }

    /// Local files: each put is written to a staging file beside its key's file and synced, each copy is a hard
    /// link, and each is renamed into place, as [`BlobStore::put`] and [`BlobStore::copy`] do; then every
    /// directory that gained an entry is synced, once, where those sync it per blob. Other stores put and copy.
    async fn write_all(&self, tenant: &TenantId, writes: Vec<BlobWrite>) -> Result<(), BlobError> {
        let Some(fs) = &self.local else { return write_each(self, tenant, writes).await };
        let path = |key: &str| {
            let loc = location(tenant, key)?;
            fs.path_to_filesystem(&loc).map_err(|e| map_err(key, e))
        };
        let mut planned = Vec::with_capacity(writes.len());
        for write in writes {
            let target = path(write.key())?;
            let source = match &write {
                BlobWrite::Copy { from, .. } => Some(path(from)?),
                BlobWrite::Put { .. } | BlobWrite::PutIfAbsent { .. } => None,
            };
            planned.push(LocalWrite { write, target, source });
        }
        tokio::task::spawn_blocking(move || write_local(planned))
            .await
            .map_err(|_| BlobError::Unavailable("the blob writing task panicked".into()))?
    }

    /// `prefix` is a plain string prefix of the relative key (`raw/` lists `raw/…`; `raw/ab` lists `raw/ab12…`);
    /// empty lists everything the tenant stores.
    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<String>, BlobError> {
        if !prefix.is_empty() {
            validate_key(prefix.strip_suffix('/').unwrap_or(prefix))
                .map_err(|_| BlobError::InvalidKey { key: prefix.to_owned(), reason: "not a valid key prefix" })?;
        }
        // List below the last complete segment of the prefix, then filter by the rest.
        let under = match prefix.rfind('/') {
            Some(i) => location(tenant, &prefix[..i])?,
            None => tenant_root(tenant),
        };
        let root = format!("{}/", tenant_root(tenant));
        let mut keys: Vec<String> = self
            .list_locations(tenant, &under)
            .await?
            .into_iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&root).map(str::to_owned))
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Local files: one pass over the prefix's directory removes the files of its keys and the staging files
    /// (`key#N`) that interrupted writes to them left.
    async fn delete_prefix(&self, tenant: &TenantId, prefix: &str) -> Result<u64, BlobError> {
        let Some(fs) = &self.local else { return delete_listed(self, tenant, prefix).await };
        if !prefix.is_empty() {
            validate_key(prefix.strip_suffix('/').unwrap_or(prefix))
                .map_err(|_| BlobError::InvalidKey { key: prefix.to_owned(), reason: "not a valid key prefix" })?;
        }
        let (under, name) = match prefix.rfind('/') {
            Some(i) => (location(tenant, &prefix[..i])?, prefix[i + 1..].to_owned()),
            None => (tenant_root(tenant), prefix.to_owned()),
        };
        let dir = fs.path_to_filesystem(&under).map_err(|e| map_err(prefix, e))?;
        let removed = tokio::task::spawn_blocking(move || remove_matching(&dir, &name))
            .await
            .map_err(|_| BlobError::Unavailable("the blob deleting task panicked".into()))?;
        removed.map_err(|e| BlobError::Unavailable(format!("cannot delete the blobs under {prefix}: {e}")))
    }

    async fn delete_all(&self, tenant: &TenantId) -> Result<u64, BlobError> {
        // List first, then delete: deleting while a file-system walk is in progress can disturb the walk.
        let locations: Vec<Path> =
            self.list_locations(tenant, &tenant_root(tenant)).await?.into_iter().map(|m| m.location).collect();
        let stream = futures::stream::iter(locations.into_iter().map(Ok)).boxed();
        let mut results = self.store.delete_stream(stream);
        let mut deleted = 0u64;
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => deleted += 1,
                // Removed by someone else in the meantime: the goal is reached all the same.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_err("", e)),
            }
        }
        // What listing cannot see: staging files of interrupted writes, and the directories they kept.
        if let Some(fs) = &self.local {
            let root = fs.path_to_filesystem(&tenant_root(tenant)).map_err(|e| map_err("", e))?;
            let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&root) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            });
            removed
                .await
                .map_err(|_| BlobError::Unavailable("the blob deleting task panicked".into()))?
                .map_err(|e| BlobError::Unavailable(format!("cannot remove the tenant's blob directory: {e}")))?;
        }
        Ok(deleted)
    }

    async fn usage_bytes(&self, tenant: &TenantId) -> Result<u64, BlobError> {
        Ok(self.list_locations(tenant, &tenant_root(tenant)).await?.iter().map(|m| m.size).sum())
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.store.list_with_delimiter(Some(&Path::from("tenants"))).await.map_err(|e| map_err("", e))?;
        Ok(())
    }
}

/// Removes the files in `dir` whose names start with `name`, and everything below its directories whose names
/// do (all of it under the prefix); returns how many were blobs rather than staging files. A missing directory
/// holds nothing.
fn remove_matching(dir: &FsPath, name: &str) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        // Every key and staging name is UTF-8: anything else is not the store's.
        let Some(file_name) = file_name.to_str().filter(|n| n.starts_with(name)) else { continue };
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            removed += remove_matching(&path, "")?;
            // Left if a writer added to it meanwhile; an empty directory holds no blob.
            let _ = std::fs::remove_dir(&path);
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += u64::from(!is_staging_name(file_name)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Whether a file name is a staging name (`key#N`, `N` digits): see [`reserve`].
fn is_staging_name(file_name: &str) -> bool {
    file_name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A write of [`BlobStore::write_all`] with its file paths.
struct LocalWrite {
    write: BlobWrite,
    target: PathBuf,
    /// A copy's source file.
    source: Option<PathBuf>,
}

/// Carries out [`ObjectBlobStore`]'s `write_all` on local files (blocking), [`OPEN_FILES`] writes at a time:
/// each blob written (or linked) under a staging name beside its file, the written files synced (several at once,
/// so that their waits for the disk overlap), and each renamed into place, in order; finally every directory that
/// gained an entry is synced. A failure removes the staging files not yet in place.
fn write_local(writes: Vec<LocalWrite>) -> Result<(), BlobError> {
    let mut touched = BTreeSet::new();
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        place_all(writes.by_ref().take(OPEN_FILES), &mut touched)?;
    }
    for dir in touched {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BlobError::Unavailable(format!("cannot sync blob directory {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// How many staged files [`write_local`] holds open at once.
const OPEN_FILES: usize = 64;

/// Stages, syncs and renames into place a few writes (see [`write_local`]), adding the directories that gained
/// entries to `touched`.
fn place_all(writes: impl Iterator<Item = LocalWrite>, touched: &mut BTreeSet<PathBuf>) -> Result<(), BlobError> {
    let mut staged: Vec<Staged> = Vec::with_capacity(OPEN_FILES);
    let unstage = |staged: &[Staged]| staged.iter().for_each(|s| drop(std::fs::remove_file(&s.path)));
    for LocalWrite { write, target, source } in writes {
        if matches!(write, BlobWrite::PutIfAbsent { .. }) && target.is_file() {
            // Its directory is synced all the same: another writer may have just renamed the file into place and
            // not synced the directory yet.
            touched.extend(target.parent().map(FsPath::to_owned));
            continue;
        }
        // A copy of a blob staged before it links the staged file: its key has no file yet.
        let source = source.map(|source| match staged.iter().rev().find(|s| s.target == source) {
            Some(earlier) => earlier.path.clone(),
            None => source,
        });
        match stage(&write, source.as_deref(), &target, touched) {
            Ok(s) => staged.push(s),
            Err(e) => {
                unstage(&staged);
                return Err(write_error(&write, e));
            }
        }
    }
    if let Err(e) = sync_all_files(&staged) {
        unstage(&staged);
        return Err(e);
    }
    for (i, s) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(&s.path, &s.target) {
            unstage(&staged[i..]);
            return Err(BlobError::Unavailable(format!("cannot write blob {}: {e}", s.key)));
        }
        touched.extend(s.target.parent().map(FsPath::to_owned));
    }
    Ok(())
}

/// How many threads sync one `write_all`'s files.
const SYNC_THREADS: usize = 4;

/// Syncs the staged files, up to [`SYNC_THREADS`] at a time (this thread one of them).
fn sync_all_files(staged: &[Staged]) -> Result<(), BlobError> {
    let sync = |part: &[Staged]| {
        part.iter().try_for_each(|s| match &s.file {
            Some(file) => {
                file.sync_all().map_err(|e| BlobError::Unavailable(format!("cannot write blob {}: {e}", s.key)))
            }
            None => Ok(()),
        })
    };
    let mut parts = staged.chunks(staged.len().div_ceil(SYNC_THREADS).max(1));
    let Some(first) = parts.next() else { return Ok(()) };
    std::thread::scope(|scope| {
        let others: Vec<_> = parts.map(|part| scope.spawn(move || sync(part))).collect();
        let mut synced = sync(first);
        for other in others {
            let done = other.join().unwrap_or_else(|_| Err(BlobError::Unavailable("a sync thread panicked".into())));
            synced = synced.and(done);
        }
        synced
    })
}

/// A blob under its staging name, waiting to be renamed into place.
struct Staged {
    key: String,
    path: PathBuf,
    target: PathBuf,
    /// The written file, to be synced (none for a link to a blob already stored).
    file: Option<std::fs::File>,
}

/// Writes a put's bytes or links a copy's source under a staging name beside `target`, creating its directory
/// (and adding the parents of the directories created to `touched`).
fn stage(
    write: &BlobWrite,
    source: Option<&FsPath>,
    target: &FsPath,
    touched: &mut BTreeSet<PathBuf>,
) -> std::io::Result<Staged> {
    let dir = target.parent().ok_or_else(|| std::io::Error::other("a blob path without a directory"))?;
    create_dirs(dir, touched)?;
    let (file, path) = reserve(target, |path| match source {
        Some(source) => std::fs::hard_link(source, path).map(|()| None),
        None => std::fs::OpenOptions::new().write(true).create_new(true).open(path).map(Some),
    })?;
    if let (Some(mut f), BlobWrite::Put { bytes, .. } | BlobWrite::PutIfAbsent { bytes, .. }) = (file.as_ref(), write)
        && let Err(e) = f.write_all(bytes)
    {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Staged { key: write.key().to_owned(), path, target: target.to_owned(), file })
}

/// The error of a write that could not be staged: a copy whose source is missing is `NotFound`.
fn write_error(write: &BlobWrite, e: std::io::Error) -> BlobError {
    match write {
        BlobWrite::Copy { from, .. } if e.kind() == std::io::ErrorKind::NotFound => BlobError::NotFound(from.clone()),
        _ => BlobError::Unavailable(format!("cannot write blob {}: {e}", write.key())),
    }
}

/// The first free `target#N`, taken by `create` (which fails with `AlreadyExists` when the name is taken), and
/// what `create` returned. `object_store` names its staged uploads so, its listing skips them, and no valid key
/// names one.
fn reserve<T>(target: &FsPath, mut create: impl FnMut(&FsPath) -> std::io::Result<T>) -> std::io::Result<(T, PathBuf)> {
    for n in 1u32.. {
        let mut staged = target.as_os_str().to_owned();
        staged.push(format!("#{n}"));
        let staged = PathBuf::from(staged);
        match create(&staged) {
            Ok(made) => return Ok((made, staged)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free staging name"))
}

/// Creates `dir` and its missing ancestors, adding the parent of each one created to `touched`: the directories
/// whose new entries must be synced.
fn create_dirs(dir: &FsPath, touched: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let (mut missing, mut at) = (vec![dir], dir);
    while let Some(parent) = at.parent().filter(|p| !p.is_dir()) {
        missing.push(parent);
        at = parent;
    }
    std::fs::create_dir_all(dir)?;
    touched.extend(missing.iter().filter_map(|d| d.parent()).map(FsPath::to_owned));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_grammar() {
        for ok in ["raw/ab12", "a", "canonical/doc-1.json", "x/y/z=1,2+3@4_5"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a/../b", "..", "a\\b", "a//b", "a/", "./a", "a b", "é", "a?b"] {
            assert!(matches!(validate_key(bad), Err(BlobError::InvalidKey { .. })), "{bad:?}");
        }
        assert!(validate_key(&"a".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn keys_live_under_the_tenant() {
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(location(&t, "raw/x").unwrap().as_ref(), "tenants/acme/raw/x");
    }
}
