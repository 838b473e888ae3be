//! Where parsers put blocks: a [`DocumentBuilder`] that also enforces the output-size limit, splits long tables
//! into row groups, and carries the parse deadline.
//!
//! **Output limit.** Once the text would pass `max_chars`, the block that crosses it is cut (tables lose whole
//! rows), one [`DroppedKind::Truncated`] record says where, and every later block is ignored; parsers check
//! [`Sink::is_full`] to stop early.
//!
//! **Row groups.** The chunker keeps every table whole in one chunk, so a 100,000-row spreadsheet must not be one
//! table. A table with more than [`TABLE_GROUP_ROWS`] body rows or about [`TABLE_GROUP_CHARS`] characters becomes
//! consecutive table blocks of at most that size, each starting with the header row again (when there is one), so
//! every chunk of a table is readable on its own.

use frostbyte_core::document::{
    BlockContent, CELL_SEPARATOR, CanonicalDocument, DocumentBuilder, DroppedContent, DroppedKind, ParserInfo,
    normalize_inline,
};
use sha2::{Digest, Sha256};

use super::{Deadline, ParseError, ParseLimits};

/// Most body rows in one table block.
pub const TABLE_GROUP_ROWS: usize = 50;
/// About the most characters in one table block (a single longer row still gets a block of its own). Matches the
/// chunker's default hard limit, so a table group is about one chunk.
pub const TABLE_GROUP_CHARS: usize = 1_500;
/// Longest title kept (titles are metadata, outside the document text and its limit).
const MAX_TITLE_CHARS: usize = 1_000;

pub(crate) struct Sink {
    builder: DocumentBuilder,
    max_chars: usize,
    full: bool,
    titled: bool,
    deadline: Deadline,
}

impl Sink {
    pub(crate) fn new(bytes: &[u8], doc_id: &str, parser: ParserInfo, mime: &str, limits: &ParseLimits) -> Self {
        let sha = hex::encode(Sha256::digest(bytes));
        Sink {
            builder: DocumentBuilder::new(doc_id, sha, parser, mime),
            max_chars: limits.max_chars,
            full: false,
            titled: false,
            deadline: Deadline::start(limits.timeout),
        }
    }

    /// Whether the output limit has been reached: later blocks are ignored.
    pub(crate) fn is_full(&self) -> bool {
        self.full
    }

    pub(crate) fn check(&self) -> Result<(), ParseError> {
        self.deadline.check()
    }

    pub(crate) fn tick(&mut self) -> Result<(), ParseError> {
        self.deadline.tick()
    }

    pub(crate) fn title(&mut self, title: &str) {
        let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
        self.titled = !normalize_inline(&title).is_empty();
        self.builder.title(title);
    }

    pub(crate) fn has_title(&self) -> bool {
        self.titled
    }

    pub(crate) fn begin_page(&mut self, number: u32) {
        self.builder.begin_page(number);
    }

    pub(crate) fn dropped(&mut self, dropped: DroppedContent) {
        self.builder.dropped(dropped);
    }

    pub(crate) fn heading(&mut self, level: u8, text: &str) {
        self.push(BlockContent::Heading { level: level.clamp(1, 9), text: text.to_owned() });
    }

    pub(crate) fn paragraph(&mut self, text: &str) {
        self.push(BlockContent::Paragraph { text: text.to_owned() });
    }

    pub(crate) fn list_item(&mut self, depth: usize, text: &str) {
        self.push(BlockContent::ListItem { depth: u8::try_from(depth).unwrap_or(u8::MAX), text: text.to_owned() });
    }

    pub(crate) fn code(&mut self, lang: Option<&str>, text: &str) {
        self.push(BlockContent::Code { lang: lang.map(str::to_owned), text: text.to_owned() });
    }

    /// A whole table, split into row groups when long (see the module docs).
    pub(crate) fn table(&mut self, mut rows: Vec<Vec<String>>, header: bool) {
        let header = (header && !rows.is_empty()).then(|| rows.remove(0));
        let mut writer = TableWriter::new(header);
        for row in rows {
            writer.row(self, row);
        }
        writer.finish(self);
    }

    pub(crate) fn finish(self) -> CanonicalDocument {
        self.builder.build()
    }

    fn push(&mut self, content: BlockContent) {
        if self.full {
            return;
        }
        let separator = if self.builder.block_count() == 0 { 0 } else { 2 };
        let remaining = self.max_chars.saturating_sub(self.builder.char_len() + separator);
        match content {
            BlockContent::Table { rows, header } => self.push_table(rows, header, remaining),
            BlockContent::Code { lang, text } => {
                // Normalisation only ever shortens text, so the raw length is an upper bound.
                if text.chars().count() <= remaining {
                    self.builder.code(lang.as_deref(), &text);
                } else {
                    self.builder.code(lang.as_deref(), take_chars(&text, remaining));
                    self.mark_full();
                }
            }
            other => {
                if other.text().chars().count() <= remaining {
                    self.builder.push(other);
                    return;
                }
                let normalized = normalize_inline(&other.text());
                let fits = normalized.chars().count() <= remaining;
                let text = if fits { normalized.as_str() } else { take_chars(&normalized, remaining) }.to_owned();
                self.builder.push(with_text(other, text));
                if !fits {
                    self.mark_full();
                }
            }
        }
    }

    fn push_table(&mut self, rows: Vec<Vec<String>>, header: bool, remaining: usize) {
        let mut kept: Vec<Vec<String>> = Vec::with_capacity(rows.len());
        let mut used = 0usize;
        let mut cut = false;
        for row in rows {
            let row: Vec<String> = row.iter().map(|c| normalize_inline(c)).collect();
            if row.iter().all(String::is_empty) {
                continue;
            }
            let len = row_chars(&row) + usize::from(!kept.is_empty());
            if used + len > remaining {
                cut = true;
                break;
            }
            used += len;
            kept.push(row);
        }
        if !kept.is_empty() {
            self.builder.table(kept, header);
        }
        if cut {
            self.mark_full();
        }
    }

    fn mark_full(&mut self) {
        self.full = true;
        let at = self.builder.char_len();
        self.builder.dropped(DroppedContent::new(
            DroppedKind::Truncated,
            format!("character {at}"),
            format!("the document text reached the limit of {} characters; the rest was not parsed", self.max_chars),
        ));
    }
}

/// Streams table rows into row-group blocks of at most [`TABLE_GROUP_ROWS`] rows / about [`TABLE_GROUP_CHARS`]
/// characters, each repeating the header row.
pub(crate) struct TableWriter {
    header: Option<Vec<String>>,
    header_chars: usize,
    rows: Vec<Vec<String>>,
    chars: usize,
}

impl TableWriter {
    pub(crate) fn new(header: Option<Vec<String>>) -> Self {
        let header_chars = header.as_ref().map_or(0, |h| row_chars(h) + 1);
        TableWriter { header, header_chars, rows: Vec::new(), chars: 0 }
    }

    pub(crate) fn row(&mut self, sink: &mut Sink, row: Vec<String>) {
        let len = row_chars(&row) + 1;
        if !self.rows.is_empty()
            && (self.rows.len() >= TABLE_GROUP_ROWS || self.header_chars + self.chars + len > TABLE_GROUP_CHARS)
        {
            self.flush(sink);
        }
        self.chars += len;
        self.rows.push(row);
    }

    pub(crate) fn finish(mut self, sink: &mut Sink) {
        if !self.rows.is_empty() || self.header.is_some() {
            self.flush(sink);
        }
    }

    fn flush(&mut self, sink: &mut Sink) {
        let body = std::mem::take(&mut self.rows);
        self.chars = 0;
        let rows = match &self.header {
            Some(h) => std::iter::once(h.clone()).chain(body).collect(),
            None => body,
        };
        sink.push(BlockContent::Table { rows, header: self.header.is_some() });
    }
}

fn row_chars(row: &[String]) -> usize {
    row.iter().map(|c| c.chars().count()).sum::<usize>() + CELL_SEPARATOR.len() * row.len().saturating_sub(1)
}

fn with_text(content: BlockContent, text: String) -> BlockContent {
    match content {
        BlockContent::Heading { level, .. } => BlockContent::Heading { level, text },
        BlockContent::ListItem { depth, .. } => BlockContent::ListItem { depth, text },
        BlockContent::Code { lang, .. } => BlockContent::Code { lang, text },
        BlockContent::Paragraph { .. } | BlockContent::Table { .. } => BlockContent::Paragraph { text },
    }
}

/// The first `n` characters of `s`.
pub(crate) fn take_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
