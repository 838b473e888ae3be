//! Taking a corpus of files in incrementally, shared by `frostbyte ingest` and the `documents.sync` processor:
//! walking a directory the same way (sorted, hidden entries skipped, symbolic links not followed), recognising a
//! file the tenant already has under the same name and bytes ([`already_taken_in`]), and turning an intake
//! refusal into a per-file reason ([`refusal`]) so one bad file never stops the others.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use frostbyte_core::TenantId;
use frostbyte_core::documents::{DocumentRecord, DocumentStore};

use crate::intake::IntakeError;

/// A regular file found by [`walk_dir`].
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: PathBuf,
    /// The path relative to the walk's base, `/`-separated.
    pub name: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// Every regular file under `root`, sorted by name, skipping hidden entries (names starting with `.`) below it and
/// never following symbolic links (a link cannot lead a walk out of the directory it was given). Names are
/// relative to `base`.
pub fn walk_dir(root: &Path, base: &Path) -> std::io::Result<Vec<LocalFile>> {
    let mut found = Vec::new();
    let walker = walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name().into_iter();
    for entry in walker.filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')) {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(base).unwrap_or(entry.path());
        let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        let meta = entry.metadata().map_err(std::io::Error::other)?;
        found.push(LocalFile {
            path: entry.path().to_path_buf(),
            name,
            size: meta.len(),
            modified: meta.modified().ok(),
        });
    }
    Ok(found)
}

/// For each of `files` (name and sha256 of its bytes), the tenant's newest document of that name when its bytes
/// are exactly those: the file was taken in before (by an earlier run, or by one interrupted between intake and
/// its own bookkeeping). One query for them all.
pub async fn already_taken_in(
    documents: &dyn DocumentStore,
    tenant: &TenantId,
    files: &[(&str, &str)],
) -> frostbyte_core::StoreResult<Vec<Option<DocumentRecord>>> {
    let names: Vec<String> = files.iter().map(|(name, _)| (*name).to_owned()).collect();
    let newest = documents.newest_by_filename(tenant, &names).await?;
    Ok(files.iter().map(|(name, sha256)| newest.get(*name).filter(|d| d.raw_sha256 == *sha256).cloned()).collect())
}

/// Why intake refused one file: a stable reason code and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `UNSUPPORTED_FORMAT`, `SCHEMA_VIOLATION`, `QUOTA_EXCEEDED` or `MALWARE_DETECTED`.
    pub reason: &'static str,
    pub message: String,
    /// The sniffed type, when the refusal is about the type.
    pub sniffed: Option<&'static str>,
}

/// The per-file refusal an intake error stands for; `None` for failures of the stores or the scanner, which
/// stop the whole walk (nothing about the file is wrong).
pub fn refusal(e: &IntakeError) -> Option<Refusal> {
    let (reason, message, sniffed) = match e {
        IntakeError::UnsupportedFormat { sniffed, reason, .. } => ("UNSUPPORTED_FORMAT", reason.clone(), *sniffed),
        IntakeError::SchemaViolation(v) => {
            ("SCHEMA_VIOLATION", format!("the metadata violates the tenant's schema ({} problem(s))", v.len()), None)
        }
        IntakeError::Quota(q) => ("QUOTA_EXCEEDED", q.message.clone(), None),
        IntakeError::MalwareDetected { signature } => {
            ("MALWARE_DETECTED", format!("malware detected: {signature}"), None)
        }
        IntakeError::Scan(_) | IntakeError::BrokenSchema | IntakeError::Store(_) | IntakeError::Blob(_) => return None,
    };
    Some(Refusal { reason, message, sniffed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_skips_hidden_entries_and_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        std::fs::create_dir_all(root.join("guide")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("guide/intro.md"), "# Intro").unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join(".hidden"), "x").unwrap();
        std::fs::write(root.join(".git/config"), "x").unwrap();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, "not for the walk").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, root.join("link.txt")).unwrap();
        let found = walk_dir(&root, &root).unwrap();
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "guide/intro.md"]);
        assert_eq!(found[1].size, 7);
        assert!(found[1].modified.is_some());
        let named_from_parent = walk_dir(&root, dir.path()).unwrap();
        assert_eq!(named_from_parent[0].name, "docs/a.txt");
    }
}
