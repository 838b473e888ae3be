//! Opening zip-based documents (DOCX, XLSX, PPTX) without trusting them: zip-bomb limits are enforced from the
//! central directory **before anything is decompressed**, and every read is capped again by what the directory
//! declared, because a local stream can lie about its size.
//!
//! Checks, in order: the entry count in the end-of-central-directory record (before the directory is even
//! loaded), the loaded entry count, encrypted entries, each entry's compression ratio, the declared total
//! uncompressed size and the archive's overall ratio. Reads then go through `Read::take(declared + 1)` and a
//! running budget of `max_zip_uncompressed_bytes`. (The `zip` crate also stops a stream at its declared size,
//! which is what bounds `calamine`, which opens the archive itself after these checks have passed.)

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use frostbyte_core::document::{DroppedContent, DroppedKind};
use zip::ZipArchive;
use zip::result::ZipError;

use super::{ParseError, ParseLimits};

/// Entries smaller than this are not ratio-checked: tiny highly repetitive parts (a 2 KiB styles file that
/// compresses 300:1) are normal and harmless.
const RATIO_CHECK_MIN_BYTES: u64 = 1024 * 1024;

const ZIP_LOCAL_MAGIC: &[u8] = b"PK\x03\x04";
const ZIP_EMPTY_MAGIC: &[u8] = b"PK\x05\x06";
/// OLE compound files: legacy binary Office documents, and password-protected OOXML (which is wrapped in one).
pub(crate) const CFB_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

pub(crate) struct ZipDoc<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    /// Entry names and declared uncompressed sizes, in archive order.
    entries: Vec<(String, u64)>,
    /// Uncompressed bytes still allowed to be read.
    budget: u64,
}

impl<'a> ZipDoc<'a> {
    /// Opens `bytes` as a zip archive and applies every limit that can be checked without decompressing.
    pub(crate) fn open(bytes: &'a [u8], limits: &ParseLimits) -> Result<Self, ParseError> {
        check_magic(bytes)?;
        if let Some(declared) = declared_entry_count(bytes)
            && declared > limits.max_zip_entries as u64
        {
            return Err(too_many_entries(limits));
        }
        let archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| match e {
            ZipError::UnsupportedArchive(_) => ParseError::unsupported("the zip archive uses an unsupported feature"),
            _ => ParseError::corrupted("invalid zip archive (central directory unreadable)"),
        })?;
        if archive.len() > limits.max_zip_entries {
            return Err(too_many_entries(limits));
        }
        let mut entries = Vec::with_capacity(archive.len());
        let mut total: u128 = 0;
        for i in 0..archive.len() {
            let entry =
                archive.by_index_data(i).map_err(|_| ParseError::corrupted("invalid zip archive (bad entry)"))?;
            if entry.encrypted() {
                return Err(ParseError::unsupported("the document is encrypted (password-protected zip entries)"));
            }
            let size = entry.size();
            let compressed = entry.compressed_size();
            if size >= RATIO_CHECK_MIN_BYTES && size / compressed.max(1) > limits.max_zip_ratio {
                return Err(ParseError::limit(format!(
                    "zip entry compression ratio exceeds {} (a zip bomb?)",
                    limits.max_zip_ratio
                )));
            }
            total += u128::from(size);
            let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
            entries.push((name, size));
        }
        if total > u128::from(limits.max_zip_uncompressed_bytes) {
            return Err(ParseError::limit(format!(
                "zip uncompressed size exceeds the limit of {} bytes",
                limits.max_zip_uncompressed_bytes
            )));
        }
        if total >= u128::from(RATIO_CHECK_MIN_BYTES)
            && total / (bytes.len() as u128).max(1) > u128::from(limits.max_zip_ratio)
        {
            return Err(ParseError::limit(format!(
                "zip compression ratio exceeds {} (a zip bomb?)",
                limits.max_zip_ratio
            )));
        }
        Ok(ZipDoc { archive, entries, budget: limits.max_zip_uncompressed_bytes })
    }

    /// Entry names and declared uncompressed sizes.
    pub(crate) fn entries(&self) -> &[(String, u64)] {
        &self.entries
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// Reads one entry, or `None` when there is none by that name.
    pub(crate) fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, ParseError> {
        let Some(index) = self.archive.index_for_name(name) else {
            return Ok(None);
        };
        let file = self.archive.by_index(index).map_err(|e| match e {
            ZipError::UnsupportedArchive(_) => {
                ParseError::unsupported("a zip entry uses an unsupported compression method or encryption")
            }
            _ => ParseError::corrupted("a zip entry could not be opened"),
        })?;
        let declared = file.size();
        if declared > self.budget {
            return Err(ParseError::limit("zip uncompressed size exceeds the limit"));
        }
        let mut buf = Vec::with_capacity(usize::try_from(declared.min(64 * 1024 * 1024)).unwrap_or(0));
        file.take(declared + 1)
            .read_to_end(&mut buf)
            .map_err(|_| ParseError::corrupted("a zip entry could not be decompressed (damaged data)"))?;
        if buf.len() as u64 > declared {
            return Err(ParseError::corrupted("a zip entry is larger than its header declares"));
        }
        self.budget -= buf.len() as u64;
        Ok(Some(buf))
    }

    /// Reads an entry that must exist.
    pub(crate) fn read_required(&mut self, name: &str, what: &str) -> Result<Vec<u8>, ParseError> {
        self.read(name)?.ok_or_else(|| ParseError::corrupted(format!("the {what} part is missing")))
    }

    /// Dropped-content records for the parts a text parser never reads: pictures, audio and video, embedded
    /// objects, macros. One record per kind, with counts and sizes.
    pub(crate) fn dropped_parts(&self, root: &str) -> Vec<DroppedContent> {
        // (kind rank, location, what) -> (parts, bytes); ranks keep the records in a stable order.
        let mut tally: BTreeMap<(u8, String, &'static str), (usize, u64)> = BTreeMap::new();
        let media = format!("{root}/media/");
        let embeddings = format!("{root}/embeddings/");
        for (name, size) in &self.entries {
            let lower = name.to_ascii_lowercase();
            let key = if lower.ends_with("vbaproject.bin") {
                (0, name.clone(), "macro projects (VBA) were not run or extracted")
            } else if lower.starts_with(&embeddings) {
                (1, embeddings.clone(), "embedded objects were not extracted")
            } else if lower.contains("/activex/") {
                (1, format!("{root}/activeX/"), "ActiveX controls were not extracted")
            } else if lower.starts_with(&media) && is_audio_video(&lower) {
                (2, media.clone(), "audio and video files were not extracted")
            } else if lower.starts_with(&media) {
                (3, media.clone(), "images were not extracted (no OCR in the text path)")
            } else if lower.starts_with(&format!("{root}/charts/chart")) && lower.ends_with(".xml") {
                (4, format!("{root}/charts/"), "charts were not extracted")
            } else {
                continue;
            };
            let t = tally.entry(key).or_default();
            t.0 += 1;
            t.1 += size;
        }
        tally
            .into_iter()
            .map(|((rank, location, what), (count, bytes))| {
                let kind = match rank {
                    0 => DroppedKind::Script,
                    1 => DroppedKind::Embedded,
                    2 => DroppedKind::Media,
                    3 => DroppedKind::Image,
                    _ => DroppedKind::Other,
                };
                DroppedContent::new(kind, location, format!("{count} {what}")).with_bytes(bytes)
            })
            .collect()
    }
}

fn check_magic(bytes: &[u8]) -> Result<(), ParseError> {
    if bytes.starts_with(ZIP_LOCAL_MAGIC) || bytes.starts_with(ZIP_EMPTY_MAGIC) {
        Ok(())
    } else if bytes.starts_with(CFB_MAGIC) {
        Err(ParseError::unsupported(
            "an OLE compound file: a legacy binary Office document or a password-protected one",
        ))
    } else {
        Err(ParseError::corrupted("not a zip archive"))
    }
}

fn too_many_entries(limits: &ParseLimits) -> ParseError {
    ParseError::limit(format!("zip entry count exceeds {}", limits.max_zip_entries))
}

fn is_audio_video(name: &str) -> bool {
    const EXT: &[&str] =
        &[".mp3", ".wav", ".m4a", ".wma", ".aac", ".ogg", ".mp4", ".m4v", ".mov", ".avi", ".wmv", ".mpg", ".mpeg"];
    EXT.iter().any(|e| name.ends_with(e))
}

/// The entry count the end-of-central-directory record (or its ZIP64 counterpart) declares, read without
/// loading the directory, so a crafted archive cannot make the zip reader allocate millions of entries first.
pub(crate) fn declared_entry_count(bytes: &[u8]) -> Option<u64> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const EOCD_LEN: usize = 22;
    if bytes.len() < EOCD_LEN {
        return None;
    }
    let earliest = bytes.len().saturating_sub(EOCD_LEN + u16::MAX as usize);
    let at = (earliest..=bytes.len() - EOCD_LEN).rev().find(|&i| &bytes[i..i + 4] == EOCD)?;
    let total = u16::from_le_bytes([bytes[at + 10], bytes[at + 11]]);
    if total != u16::MAX {
        return Some(u64::from(total));
    }
    // ZIP64: the locator sits just before the EOCD record and points at the ZIP64 EOCD record.
    let locator = at.checked_sub(20)?;
    if &bytes[locator..locator + 4] != b"PK\x06\x07" {
        return Some(u64::from(total));
    }
    let offset = usize::try_from(u64::from_le_bytes(bytes[locator + 8..locator + 16].try_into().ok()?)).ok()?;
    let record = bytes.get(offset..offset.checked_add(40)?)?;
    if &record[..4] != b"PK\x06\x06" {
        return None;
    }
    Some(u64::from_le_bytes(record[32..40].try_into().ok()?))
}
