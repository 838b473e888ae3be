//! Document parsers: raw bytes of a supported format in, one [`CanonicalDocument`] out.
//!
//! The parse stage calls [`parse`] (from a thread that may block) with the MIME type intake sniffed and normalised
//! with [`sniff()`]. Every format produces the same shape: headings with levels, paragraphs, list items with
//! depth, code, tables as rows of cells, pages for paged formats (PDF pages, PPTX slides), offsets and stats
//! (computed by [`DocumentBuilder`](frostbyte_core::document::DocumentBuilder)), and a [`DroppedContent`](frostbyte_core::document::DroppedContent) record
//! for everything left out: images, scripts, macros, embedded objects, undecodable bytes, text past a limit.
//!
//! | MIME type | parser | how |
//! |---|---|---|
//! | `text/plain` | `text` | BOM / UTF-8 / charset / `chardetng`; paragraphs at blank lines |
//! | `text/markdown` | `markdown` | `pulldown-cmark` (CommonMark + tables) |
//! | `text/html` | `html` | `html5ever` (the WHATWG parsing algorithm); scripts, styles, navigation and hidden elements dropped |
//! | `text/csv`, `text/tab-separated-values` | `csv` | `csv`; delimiter and header detection; row groups |
//! | `application/json` | `json` | depth checked before parsing; key paths, arrays of records as tables |
//! | `application/pdf` | `pdf` | `lopdf` text layer, one page span per page |
//! | DOCX | `docx` | `zip` + `quick-xml`: heading styles, numbering, tables |
//! | XLSX | `xlsx` | `calamine` cell streaming: a section per sheet, rows in row groups |
//! | PPTX | `pptx` | `zip` + `quick-xml`: a page per slide, the title placeholder as heading |
//!
//! **Failures** are [`ParseError`]s with three codes: `FILE_CORRUPTED`, `UNSUPPORTED_FORMAT`, `PARSER_ERROR`
//! (limits, timeouts, bugs). Messages never contain document text. A panic anywhere in a parser is caught:
//! inside a third-party PDF or spreadsheet parser it means malformed input (`FILE_CORRUPTED`), elsewhere a bug
//! (`PARSER_ERROR`).
//!
//! **Limits** ([`ParseLimits`]): input size, zip-bomb checks before decompressing, PDF stream size, JSON depth
//! and the deadline reject; output characters and pages truncate, with a record (see [`ParseLimits`]).
//!
//! **Idempotency.** [`parser_for`] names the parser (and its version) a MIME type gets before any parsing, so
//! the stage can compute [`parse_idempotency_key`](frostbyte_core::document::parse_idempotency_key) up front.
//! Parsing is deterministic: the same bytes, MIME type and limits give the same document. Bump a parser's
//! `VERSION` whenever its output for the same bytes may change, dependency upgrades included.

mod delimited;
mod docx;
mod encoding;
mod error;
mod html;
mod json;
mod limits;
mod markdown;
mod ooxml;
mod pdf;
mod pptx;
mod sink;
mod sniff;
mod text;
mod xlsx;
mod zipguard;

use std::panic::{AssertUnwindSafe, catch_unwind};

use frostbyte_core::document::{CanonicalDocument, ParserInfo};

pub use error::ParseError;
pub use limits::{Deadline, MAX_JSON_DEPTH, ParseLimits};
pub use sink::{TABLE_GROUP_CHARS, TABLE_GROUP_ROWS};
pub use sniff::sniff;

use sink::Sink;

/// The canonical MIME types [`sniff()`] returns and [`parse`] accepts.
pub mod mime {
    pub const TEXT: &str = "text/plain";
    pub const MARKDOWN: &str = "text/markdown";
    pub const HTML: &str = "text/html";
    pub const CSV: &str = "text/csv";
    pub const TSV: &str = "text/tab-separated-values";
    pub const JSON: &str = "application/json";
    pub const PDF: &str = "application/pdf";
    pub const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    pub const PPTX: &str = "application/vnd.openxmlformats-officedocument.presentationml.presentation";

    /// Every MIME type with a parser.
    pub const ALL: &[&str] = &[TEXT, MARKDOWN, HTML, CSV, TSV, JSON, PDF, DOCX, XLSX, PPTX];
}

/// The formats, one per parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Markdown,
    Html,
    Csv,
    Json,
    Pdf,
    Docx,
    Xlsx,
    Pptx,
}

impl Format {
    /// The format for a MIME type (parameters and case ignored; common aliases accepted).
    fn for_mime(essence: &str) -> Option<Format> {
        Some(match essence {
            mime::TEXT => Format::Text,
            mime::MARKDOWN | "text/x-markdown" => Format::Markdown,
            mime::HTML | "application/xhtml+xml" => Format::Html,
            mime::CSV | mime::TSV | "application/csv" | "text/x-csv" => Format::Csv,
            mime::JSON | "text/json" => Format::Json,
            mime::PDF => Format::Pdf,
            mime::DOCX => Format::Docx,
            mime::XLSX => Format::Xlsx,
            mime::PPTX => Format::Pptx,
            _ => return None,
        })
    }

    fn parser(self) -> ParserInfo {
        let (name, version) = match self {
            Format::Text => ("text", text::VERSION),
            Format::Markdown => ("markdown", markdown::VERSION),
            Format::Html => ("html", html::VERSION),
            Format::Csv => ("csv", delimited::VERSION),
            Format::Json => ("json", json::VERSION),
            Format::Pdf => ("pdf", pdf::VERSION),
            Format::Docx => ("docx", docx::VERSION),
            Format::Xlsx => ("xlsx", xlsx::VERSION),
            Format::Pptx => ("pptx", pptx::VERSION),
        };
        ParserInfo::new(name, version)
    }
}

/// The MIME type without parameters, trimmed and lowercased, and its `charset` parameter if any.
fn split_mime(mime_type: &str) -> (String, Option<String>) {
    let mut parts = mime_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches('"').to_owned())
    });
    (essence, charset)
}

/// The parser (name and version) that [`parse`] uses for `mime_type`, or `None` when there is none.
pub fn parser_for(mime_type: &str) -> Option<ParserInfo> {
    Format::for_mime(&split_mime(mime_type).0).map(Format::parser)
}

/// Parses `bytes` as `mime_type` into a canonical document with id `doc_id`.
///
/// `mime_type` is the type intake sniffed ([`sniff()`]); a `charset` parameter is honoured for text formats. The
/// document's `mime_type` is the canonical type without parameters.
pub fn parse(
    bytes: &[u8],
    mime_type: &str,
    doc_id: &str,
    limits: &ParseLimits,
) -> Result<CanonicalDocument, ParseError> {
    let (essence, charset) = split_mime(mime_type);
    let Some(format) = Format::for_mime(&essence) else {
        return Err(ParseError::unsupported(format!("no parser for MIME type {}", printable_mime(&essence))));
    };
    if bytes.len() > limits.max_bytes {
        return Err(ParseError::limit(format!(
            "input of {} bytes exceeds the limit of {} bytes",
            bytes.len(),
            limits.max_bytes
        )));
    }
    let canonical = match format {
        Format::Markdown => mime::MARKDOWN,
        Format::Html => mime::HTML,
        Format::Csv if essence == mime::TSV => mime::TSV,
        Format::Csv => mime::CSV,
        Format::Json => mime::JSON,
        Format::Text | Format::Pdf | Format::Docx | Format::Xlsx | Format::Pptx => {
            mime::ALL.iter().find(|m| **m == essence).copied().unwrap_or(mime::TEXT)
        }
    };
    let run = || -> Result<CanonicalDocument, ParseError> {
        let mut sink = Sink::new(bytes, doc_id, format.parser(), canonical, limits);
        let charset = charset.as_deref();
        match format {
            Format::Text => text::parse(bytes, charset, &mut sink)?,
            Format::Markdown => markdown::parse(bytes, charset, &mut sink)?,
            Format::Html => html::parse(bytes, charset, &mut sink)?,
            Format::Csv => delimited::parse(bytes, charset, canonical == mime::TSV, &mut sink)?,
            Format::Json => json::parse(bytes, limits, &mut sink)?,
            Format::Pdf => pdf::parse(bytes, limits, &mut sink)?,
            Format::Docx => docx::parse(bytes, limits, &mut sink)?,
            Format::Xlsx => xlsx::parse(bytes, limits, &mut sink)?,
            Format::Pptx => pptx::parse(bytes, limits, &mut sink)?,
        }
        Ok(sink.finish())
    };
    let doc = catch_unwind(AssertUnwindSafe(run))
        .map_err(|_| ParseError::Internal(format!("the {} parser panicked", format.parser().name)))??;
    if cfg!(debug_assertions) {
        doc.validate().map_err(|_| ParseError::Internal("the parser built an inconsistent document".into()))?;
    }
    Ok(doc)
}

/// A MIME type as it may appear in a message: caller-supplied metadata, not document text, but still bounded and
/// restricted to the characters a MIME type may contain.
fn printable_mime(essence: &str) -> String {
    let cleaned: String =
        essence.chars().filter(|c| c.is_ascii_alphanumeric() || "/.+-_".contains(*c)).take(100).collect();
    if cleaned.is_empty() { "(empty)".to_owned() } else { cleaned }
}

/// Runs a call into a third-party parser that may panic on malformed input; a panic becomes `FILE_CORRUPTED`.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, ParseError>) -> Result<T, ParseError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(ParseError::corrupted(format!("the {what} is malformed (its parser gave up)"))))
}

/// The entry point for a `cargo fuzz` target: sniffs and parses arbitrary bytes as every format under small
/// limits, and panics only if a parser panics past its guard or builds an inconsistent document.
///
/// ```ignore
/// // fuzz/fuzz_targets/parse.rs
/// #![no_main]
/// libfuzzer_sys::fuzz_target!(|data: &[u8]| frostbyte_adapters::parse::fuzz_parse(data));
/// ```
pub fn fuzz_parse(bytes: &[u8]) {
    let limits = ParseLimits {
        max_bytes: 1024 * 1024,
        max_chars: 100_000,
        max_pages: 50,
        max_zip_entries: 200,
        max_zip_uncompressed_bytes: 8 * 1024 * 1024,
        max_pdf_stream_bytes: 4 * 1024 * 1024,
        timeout: std::time::Duration::from_secs(5),
        ..ParseLimits::default()
    };
    let sniffed = sniff(bytes, None, None);
    for mime in mime::ALL.iter().copied().chain(sniffed) {
        match parse(bytes, mime, "fuzz", &limits) {
            Ok(doc) => doc.validate().expect("a parsed document is consistent"),
            Err(ParseError::Internal(message)) => panic!("{message}"),
            Err(_) => {}
        }
    }
}
