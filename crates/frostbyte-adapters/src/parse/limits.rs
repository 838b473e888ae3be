//! Per-document resource limits (invariant 7) and the deadline parsers check as they go.

use std::time::{Duration, Instant};

use super::ParseError;

/// The bounds one parse works within. Part of the parse configuration: a change that can change the output
/// (`max_chars`, `max_pages`) must bump the config version that goes into the idempotency key.
///
/// What happens at each limit:
/// - `max_bytes`, the zip limits, `max_pdf_stream_bytes` and `max_json_depth` reject the document
///   ([`ParseError::LimitExceeded`], code `PARSER_ERROR`) before the expensive work starts.
/// - `max_chars` and `max_pages` **truncate**: the document keeps what came before the limit and records a
///   [`DroppedKind::Truncated`](frostbyte_core::document::DroppedKind::Truncated) entry saying where it stopped,
///   so a huge file still yields a searchable, honestly labelled prefix.
/// - `timeout` fails the parse ([`ParseError::TimedOut`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest input accepted, in bytes.
    pub max_bytes: usize,
    /// Largest document text produced, in characters; the rest is truncated (and recorded).
    pub max_chars: usize,
    /// Pages (PDF) or slides (PPTX) parsed; the rest are truncated (and recorded).
    pub max_pages: usize,
    /// Most entries a zip-based document (DOCX, XLSX, PPTX) may have.
    pub max_zip_entries: usize,
    /// Largest total uncompressed size of a zip-based document's entries, as declared and as read.
    pub max_zip_uncompressed_bytes: u64,
    /// Largest compression ratio (uncompressed / compressed) of a zip entry, and of the whole archive.
    /// Checked for entries above 1 MiB uncompressed, where a high ratio means a zip bomb rather than a tiny
    /// repetitive file.
    pub max_zip_ratio: u64,
    /// Largest size any one PDF stream may decompress to.
    pub max_pdf_stream_bytes: usize,
    /// Deepest JSON nesting accepted. Capped at [`MAX_JSON_DEPTH`] whatever is configured.
    pub max_json_depth: usize,
    /// Wall-clock budget for one parse, checked between pages, rows and elements.
    pub timeout: Duration,
}

/// The deepest JSON nesting any configuration can allow: `serde_json` refuses deeper input at 128 levels, and
/// the limit is checked before parsing, so the parser never recurses that far.
pub const MAX_JSON_DEPTH: usize = 100;

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_bytes: 100 * 1024 * 1024,
            max_chars: 20_000_000,
            max_pages: 5_000,
            max_zip_entries: 10_000,
            max_zip_uncompressed_bytes: 1024 * 1024 * 1024,
            max_zip_ratio: 200,
            max_pdf_stream_bytes: 64 * 1024 * 1024,
            max_json_depth: 64,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A point in time a parse must finish by. Parsers call [`Deadline::tick`] in their loops (cheap: the clock is
/// read every 64 calls) and [`Deadline::check`] between coarse steps (pages, sheets, slides).
///
/// The limit covers the work Frostbyte drives. A third-party call that cannot be interrupted (loading a PDF's
/// object table, building an HTML tree) is bounded by the input size limits instead; the caller runs the parse
/// on a thread of its own and may also put an outer timeout around it.
#[derive(Debug, Clone)]
pub struct Deadline {
    started: Instant,
    limit: Duration,
    ticks: u32,
}

impl Deadline {
    pub fn start(limit: Duration) -> Self {
        Deadline { started: Instant::now(), limit, ticks: 0 }
    }

    /// Fails with [`ParseError::TimedOut`] once the limit has passed.
    pub fn check(&self) -> Result<(), ParseError> {
        if self.started.elapsed() >= self.limit { Err(ParseError::TimedOut { after: self.limit }) } else { Ok(()) }
    }

    /// [`Deadline::check`], reading the clock only every 64th call.
    pub fn tick(&mut self) -> Result<(), ParseError> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(64) { self.check() } else { Ok(()) }
    }
}
