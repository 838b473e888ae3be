//! Content sniffing: which parser bytes should get, whatever the client declared.
//!
//! Binary formats are decided by content alone (a PDF declared as DOCX is a PDF): `%PDF-`, zip archives by the
//! part that makes them DOCX, XLSX or PPTX, and anything else `infer` recognises is unsupported. Text is then
//! decided by the declared type or the file extension when it is specific (Markdown can only be told this
//! way), and otherwise by content: JSON that parses, HTML markers, CSV or TSV with a consistent delimiter
//! count, and plain text.

use std::io::Cursor;

use super::encoding::{decode, looks_like_text};
use super::{delimited, json, mime, split_mime, zipguard};

/// How far into the file `%PDF-` may start (some producers put junk before it; readers accept 1 KiB).
const PDF_MAGIC_WINDOW: usize = 1024;
/// How much text the content heuristics look at.
const SNIFF_TEXT_BYTES: usize = 64 * 1024;
/// Directory entries the sniffer accepts before it declines to look inside a zip archive.
const SNIFF_MAX_ZIP_ENTRIES: u64 = 100_000;

/// The canonical MIME type (one of [`mime::ALL`]) to parse `bytes` as, or `None` when no parser handles them
/// (an image, an archive, an executable, a legacy Office file, binary junk).
///
/// `declared_mime` is what the client said (parameters allowed); `filename` is used for its extension only.
pub fn sniff(bytes: &[u8], declared_mime: Option<&str>, filename: Option<&str>) -> Option<&'static str> {
    if bytes.len() >= 5 && bytes[..bytes.len().min(PDF_MAGIC_WINDOW)].windows(5).any(|w| w == b"%PDF-") {
        return Some(mime::PDF);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return sniff_zip(bytes);
    }
    if bytes.starts_with(zipguard::CFB_MAGIC) {
        return None;
    }
    let (declared, charset) = declared_mime.map(split_mime).unwrap_or_default();
    let head = &bytes[..bytes.len().min(SNIFF_TEXT_BYTES)];
    let decoded = decode(head, charset.as_deref());
    if !looks_like_text(&decoded.text) {
        return None;
    }
    if let Some(kind) = infer::get(head)
        && kind.matcher_type() != infer::MatcherType::Text
        && std::str::from_utf8(head).is_err()
    {
        return None;
    }
    let hint = text_hint(&declared).or_else(|| filename.and_then(extension_hint));
    let text = decoded.text.as_ref();
    let trimmed = text.trim_start();
    match hint {
        Some(mime::JSON) if trimmed.starts_with(['{', '[']) => return Some(mime::JSON),
        Some(mime::HTML) if trimmed.contains('<') => return Some(mime::HTML),
        Some(m @ (mime::CSV | mime::TSV | mime::MARKDOWN)) => return Some(m),
        _ => {}
    }
    if trimmed.starts_with(['{', '[']) && json::looks_like_json(bytes) {
        return Some(mime::JSON);
    }
    if looks_like_html(trimmed) {
        return Some(mime::HTML);
    }
    if let Some((delimiter, _)) = delimited::detect_delimiter(text) {
        return Some(if delimiter == b'\t' { mime::TSV } else { mime::CSV });
    }
    Some(mime::TEXT)
}

/// A zip archive is DOCX, XLSX or PPTX by its main part; any other archive is unsupported.
fn sniff_zip(bytes: &[u8]) -> Option<&'static str> {
    if zipguard::declared_entry_count(bytes).is_some_and(|n| n > SNIFF_MAX_ZIP_ENTRIES) {
        return None;
    }
    let archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    [("word/document.xml", mime::DOCX), ("xl/workbook.xml", mime::XLSX), ("ppt/presentation.xml", mime::PPTX)]
        .into_iter()
        .find(|(part, _)| archive.index_for_name(part).is_some())
        .map(|(_, m)| m)
}

/// The text format a declared MIME type names, when it names one specifically (`text/plain` and
/// `application/octet-stream` do not: browsers send them for anything).
fn text_hint(declared: &str) -> Option<&'static str> {
    Some(match declared {
        mime::MARKDOWN | "text/x-markdown" | "text/md" => mime::MARKDOWN,
        mime::HTML | "application/xhtml+xml" => mime::HTML,
        mime::CSV | "application/csv" | "text/x-csv" | "text/comma-separated-values" => mime::CSV,
        mime::TSV | "text/tsv" => mime::TSV,
        mime::JSON | "text/json" | "application/x-json" => mime::JSON,
        d if d.starts_with("application/") && d.ends_with("+json") => mime::JSON,
        _ => return None,
    })
}

fn extension_hint(filename: &str) -> Option<&'static str> {
    let (_, ext) = filename.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "md" | "markdown" | "mdown" | "mkd" | "mkdn" => mime::MARKDOWN,
        "html" | "htm" | "xhtml" => mime::HTML,
        "csv" => mime::CSV,
        "tsv" | "tab" => mime::TSV,
        "json" => mime::JSON,
        "txt" | "text" | "log" => mime::TEXT,
        _ => return None,
    })
}

/// An HTML document starts with a doctype or an `<html>` tag, or has `<head>` or `<body>` near the top.
fn looks_like_html(trimmed: &str) -> bool {
    let head: String = trimmed.chars().take(4096).collect::<String>().to_ascii_lowercase();
    head.starts_with("<!doctype html")
        || head.starts_with("<html")
        || (head.starts_with('<') && (head.contains("<head") || head.contains("<body")))
}
