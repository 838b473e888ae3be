//! The canonical document: what every parser produces and every later stage (policy, chunking, indexing) reads.
//!
//! A document is an ordered list of [`Block`]s (headings with levels, paragraphs, list items, tables as rows of
//! cells, code) plus pages, stats and a record of everything the parser had to leave out ([`DroppedContent`]), so
//! nothing is lost silently.
//!
//! **The document text.** [`CanonicalDocument::text`] is the blocks' texts joined by [`BLOCK_SEPARATOR`]; a
//! table's text is its rows, cells joined by `" | "`, rows by `"\n"`. Every offset in this module (`Block::start`,
//! `Block::end`, [`PageSpan`]) counts **characters** (Unicode scalar values, not bytes) into that text, half-open:
//! `char_slice(&doc.text(), block.start, block.end) == block.text()`. The offsets are derived, never chosen by a
//! parser: [`DocumentBuilder`] computes them as blocks are appended, and [`CanonicalDocument::try_edit_text`]
//! recomputes them when the policy stage rewrites text.
//!
//! **Idempotency.** Parsing is keyed by [`parse_idempotency_key`]: the raw bytes' sha256, the parser's name and
//! version, and the version of the configuration that shaped the parse. Same key, same document.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What separates two consecutive blocks in the document text.
pub const BLOCK_SEPARATOR: &str = "\n\n";
/// What separates two cells of a table row in the document text.
pub const CELL_SEPARATOR: &str = " | ";
/// What separates two rows of a table in the document text.
pub const ROW_SEPARATOR: &str = "\n";

/// Which parser produced a document. `version` changes whenever the parser's output for the same bytes may change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParserInfo {
    pub name: String,
    pub version: String,
}

impl ParserInfo {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        ParserInfo { name: name.into(), version: version.into() }
    }

    /// `name@version`: what goes into [`parse_idempotency_key`].
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

impl fmt::Display for ParserInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// The key a parse result is stored and deduplicated under: lowercase hex sha256 over a domain tag, the raw
/// content's sha256 (normalised to lowercase), the parser id (see [`ParserInfo::id`]) and the config version,
/// each terminated by a newline. Re-running a parse with the same three inputs must give the same document, so
/// a redelivered job can find and reuse its earlier output.
pub fn parse_idempotency_key(raw_sha256: &str, parser_version: &str, config_version: impl fmt::Display) -> String {
    let mut h = Sha256::new();
    h.update(b"frostbyte.parse.v1\n");
    h.update(raw_sha256.trim().to_ascii_lowercase().as_bytes());
    h.update(b"\n");
    h.update(parser_version.as_bytes());
    h.update(b"\n");
    h.update(config_version.to_string().as_bytes());
    h.update(b"\n");
    hex::encode(h.finalize())
}

/// A parsed document in the one shape every later stage reads. Build it with [`DocumentBuilder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalDocument {
    pub doc_id: String,
    /// Lowercase hex sha256 of the raw bytes the document was parsed from.
    pub source_sha256: String,
    pub parser: ParserInfo,
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub blocks: Vec<Block>,
    /// Page spans in document order; empty for formats without pages.
    #[serde(default)]
    pub pages: Vec<PageSpan>,
    pub stats: DocStats,
    /// What the parser could not or would not keep (images, embedded objects, unreadable text...).
    #[serde(default)]
    pub dropped: Vec<DroppedContent>,
}

/// One structural unit of a document, with its character range in the document text and, for paged formats,
/// the page it starts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    #[serde(flatten)]
    pub content: BlockContent,
    /// Character offset of the block's first character in [`CanonicalDocument::text`].
    pub start: usize,
    /// Character offset just past the block's last character.
    pub end: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

/// What a block holds. Serialised with a `type` tag: `{"type": "heading", "level": 1, "text": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockContent {
    /// A heading; level 1 is the outermost.
    Heading {
        level: u8,
        text: String,
    },
    Paragraph {
        text: String,
    },
    /// A list item; depth 0 is the outermost list.
    ListItem {
        depth: u8,
        text: String,
    },
    /// A table: rows of cells. With `header`, the first row is the header row.
    Table {
        rows: Vec<Vec<String>>,
        header: bool,
    },
    Code {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
        text: String,
    },
}

impl BlockContent {
    /// The block's text as it appears in the document text.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            BlockContent::Heading { text, .. }
            | BlockContent::Paragraph { text }
            | BlockContent::ListItem { text, .. }
            | BlockContent::Code { text, .. } => Cow::Borrowed(text),
            BlockContent::Table { rows, .. } => Cow::Owned(render_table(rows)),
        }
    }

    pub fn is_table(&self) -> bool {
        matches!(self, BlockContent::Table { .. })
    }

    /// The heading level, for headings.
    pub fn heading_level(&self) -> Option<u8> {
        match self {
            BlockContent::Heading { level, .. } => Some(*level),
            _ => None,
        }
    }

    /// The block with the pieces of text `f` changes (each table cell on its own) replaced, or `None` when `f`
    /// keeps every one of them (returns `None` for it).
    fn try_edit<E>(&self, f: &mut impl FnMut(&str) -> Result<Option<String>, E>) -> Result<Option<BlockContent>, E> {
        Ok(match self {
            BlockContent::Heading { level, text } => f(text)?.map(|text| BlockContent::Heading { level: *level, text }),
            BlockContent::Paragraph { text } => f(text)?.map(|text| BlockContent::Paragraph { text }),
            BlockContent::ListItem { depth, text } => {
                f(text)?.map(|text| BlockContent::ListItem { depth: *depth, text })
            }
            BlockContent::Code { lang, text } => f(text)?.map(|text| BlockContent::Code { lang: lang.clone(), text }),
            BlockContent::Table { rows, header } => {
                let edits = rows
                    .iter()
                    .map(|row| row.iter().map(|cell| f(cell)).collect::<Result<Vec<_>, E>>())
                    .collect::<Result<Vec<_>, E>>()?;
                if edits.iter().flatten().all(Option::is_none) {
                    None
                } else {
                    let rows = rows
                        .iter()
                        .zip(edits)
                        .map(|(row, edits)| {
                            row.iter().zip(edits).map(|(cell, edit)| edit.unwrap_or_else(|| cell.clone())).collect()
                        })
                        .collect();
                    Some(BlockContent::Table { rows, header: *header })
                }
            }
        })
    }
}

impl Block {
    /// The block's text as it appears in the document text.
    pub fn text(&self) -> Cow<'_, str> {
        self.content.text()
    }
}

/// The character range of one page in the document text. A page without text has `start == end`, placed where
/// the next page's text starts (or at the end of the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageSpan {
    /// The page number as the source counts it (1-based for PDFs).
    pub number: u32,
    pub start: usize,
    pub end: usize,
}

/// Counts over the document text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocStats {
    /// Characters (Unicode scalar values) in the document text.
    pub chars: usize,
    /// Words (Unicode word boundaries, UAX #29) in the document text.
    pub words: usize,
    pub blocks: usize,
    pub tables: usize,
    pub pages: usize,
}

/// Something the parser left out, recorded instead of lost silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedContent {
    pub kind: DroppedKind,
    /// Where in the source: `page 3`, `sheet Q1`, `word/media/image1.png`...
    pub location: String,
    /// Why, in words an operator can act on.
    pub reason: String,
    /// Size of what was dropped, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl DroppedContent {
    pub fn new(kind: DroppedKind, location: impl Into<String>, reason: impl Into<String>) -> Self {
        DroppedContent { kind, location: location.into(), reason: reason.into(), bytes: None }
    }

    pub fn with_bytes(mut self, bytes: u64) -> Self {
        self.bytes = Some(bytes);
        self
    }
}

/// The kinds of content a parser may drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DroppedKind {
    /// A picture or figure (no OCR in the text path).
    Image,
    /// An embedded object or attachment (OLE object, file attachment, nested archive member).
    Embedded,
    /// Active content: scripts, macros, event handlers.
    Script,
    /// Comments, annotations, form fields.
    Annotation,
    /// Audio or video.
    Media,
    /// Text the parser could not decode (a font without a usable encoding, an undecodable byte range).
    Unreadable,
    /// Content past a parse limit (pages, bytes, time, nesting depth).
    Truncated,
    /// A construct the parser does not support.
    Unsupported,
    Other,
}

/// A document whose stored offsets, pages or stats disagree with its blocks (a corrupt or hand-edited row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid canonical document: {0}")]
pub struct InvalidDocument(pub String);

impl CanonicalDocument {
    /// The document text: block texts joined by [`BLOCK_SEPARATOR`]. All offsets point into this string.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.blocks.iter().map(|b| b.text().len() + 2).sum());
        for (i, block) in self.blocks.iter().enumerate() {
            if i > 0 {
                out.push_str(BLOCK_SEPARATOR);
            }
            out.push_str(&block.text());
        }
        out
    }

    /// The key this document is stored under for the given config version; see [`parse_idempotency_key`].
    pub fn idempotency_key(&self, config_version: impl fmt::Display) -> String {
        parse_idempotency_key(&self.source_sha256, &self.parser.id(), config_version)
    }

    /// Edits the document's texts (title, block texts, each table cell on its own): `f` returns a text's
    /// replacement, or `None` to keep it; the first error stops it. This is how the policy stage applies
    /// redactions. `None` when `f` kept every text (a policy pass that redacted nothing, the common case): nothing
    /// is copied, and the caller keeps the document it has. Otherwise a new document with offsets, pages and stats
    /// recomputed; text is normalised as by [`DocumentBuilder`], and a block whose new text is empty disappears (its
    /// page, if any, remains).
    pub fn try_edit_text<E>(
        &self,
        mut f: impl FnMut(&str) -> Result<Option<String>, E>,
    ) -> Result<Option<CanonicalDocument>, E> {
        let title = match self.title.as_deref() {
            Some(title) => f(title)?,
            None => None,
        };
        let contents = self.blocks.iter().map(|block| block.content.try_edit(&mut f)).collect::<Result<Vec<_>, E>>()?;
        if title.is_none() && contents.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut b = DocumentBuilder::new(
            self.doc_id.clone(),
            self.source_sha256.clone(),
            self.parser.clone(),
            self.mime_type.clone(),
        );
        if let Some(title) = title.or_else(|| self.title.clone()) {
            b.title(title);
        }
        // Replay pages in order: a block's page is begun (with any empty pages before it) just before the block.
        let mut next_page = 0;
        for (block, content) in self.blocks.iter().zip(contents) {
            if let Some(page) = block.page
                && let Some(offset) = self.pages[next_page..].iter().position(|p| p.number == page)
            {
                for p in &self.pages[next_page..=next_page + offset] {
                    b.begin_page(p.number);
                }
                next_page += offset + 1;
            }
            b.push(content.unwrap_or_else(|| block.content.clone()));
        }
        for p in &self.pages[next_page..] {
            b.begin_page(p.number);
        }
        for d in &self.dropped {
            b.dropped(d.clone());
        }
        Ok(Some(b.build()))
    }

    /// Checks that offsets, pages and stats agree with the blocks: use it on documents read back from storage.
    pub fn validate(&self) -> Result<(), InvalidDocument> {
        let mut pos = 0usize;
        for (i, block) in self.blocks.iter().enumerate() {
            if i > 0 {
                pos += BLOCK_SEPARATOR.len();
            }
            let len = block.text().chars().count();
            if block.start != pos || block.end != pos + len {
                return Err(InvalidDocument(format!(
                    "block {i} claims {}..{} but its text is at {pos}..{}",
                    block.start,
                    block.end,
                    pos + len
                )));
            }
            pos += len;
        }
        let mut last_end = 0;
        for p in &self.pages {
            if p.start > p.end || p.end > pos || p.start < last_end {
                return Err(InvalidDocument(format!("page {} has an invalid span {}..{}", p.number, p.start, p.end)));
            }
            last_end = p.end;
        }
        let expected = DocStats {
            chars: pos,
            words: count_words_in_blocks(&self.blocks),
            blocks: self.blocks.len(),
            tables: self.blocks.iter().filter(|b| b.content.is_table()).count(),
            pages: self.pages.len(),
        };
        if self.stats != expected {
            return Err(InvalidDocument(format!("stats {:?} do not match the blocks ({expected:?})", self.stats)));
        }
        Ok(())
    }
}

/// Builds a [`CanonicalDocument`] block by block, keeping the text, offsets, pages and stats as it goes.
///
/// Text is normalised on the way in so that every parser's output looks alike: control characters are removed;
/// in headings, paragraphs, list items and table cells every run of whitespace becomes one space and the ends
/// are trimmed; code keeps its lines and indentation (only trailing whitespace and blank edge lines go). Blocks
/// whose text is empty after that are skipped, and so are table rows whose cells are all empty.
#[derive(Debug, Clone)]
pub struct DocumentBuilder {
    doc: CanonicalDocument,
    /// Characters in the text so far.
    chars: usize,
    current_page: Option<u32>,
    /// Whether the last page span has a block yet (its start is then fixed).
    page_has_block: bool,
}

impl DocumentBuilder {
    pub fn new(
        doc_id: impl Into<String>,
        source_sha256: impl Into<String>,
        parser: ParserInfo,
        mime_type: impl Into<String>,
    ) -> Self {
        DocumentBuilder {
            doc: CanonicalDocument {
                doc_id: doc_id.into(),
                source_sha256: source_sha256.into().to_ascii_lowercase(),
                parser,
                mime_type: mime_type.into(),
                title: None,
                blocks: Vec::new(),
                pages: Vec::new(),
                stats: DocStats::default(),
                dropped: Vec::new(),
            },
            chars: 0,
            current_page: None,
            page_has_block: false,
        }
    }

    /// Sets the title (normalised like a heading; an empty title clears it). The title is metadata, not part
    /// of the document text.
    pub fn title(&mut self, title: impl AsRef<str>) -> &mut Self {
        let title = normalize_inline(title.as_ref());
        self.doc.title = (!title.is_empty()).then_some(title);
        self
    }

    /// Starts a page: blocks appended from now on belong to it. Beginning the current page again does nothing.
    pub fn begin_page(&mut self, number: u32) -> &mut Self {
        if self.current_page == Some(number) {
            return self;
        }
        let at = self.next_block_start();
        self.doc.pages.push(PageSpan { number, start: at, end: at });
        self.current_page = Some(number);
        self.page_has_block = false;
        self
    }

    pub fn heading(&mut self, level: u8, text: &str) -> &mut Self {
        self.push(BlockContent::Heading { level, text: text.to_owned() })
    }

    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.push(BlockContent::Paragraph { text: text.to_owned() })
    }

    pub fn list_item(&mut self, depth: u8, text: &str) -> &mut Self {
        self.push(BlockContent::ListItem { depth, text: text.to_owned() })
    }

    pub fn table(&mut self, rows: Vec<Vec<String>>, header: bool) -> &mut Self {
        self.push(BlockContent::Table { rows, header })
    }

    pub fn code(&mut self, lang: Option<&str>, text: &str) -> &mut Self {
        self.push(BlockContent::Code { lang: lang.map(str::to_owned), text: text.to_owned() })
    }

    /// Appends a block (normalised; skipped if empty) on the current page.
    pub fn push(&mut self, content: BlockContent) -> &mut Self {
        let Some(content) = normalize_block(content) else {
            return self;
        };
        let start = self.next_block_start();
        let end = start + content.text().chars().count();
        if self.current_page.is_some() {
            let span = self.doc.pages.last_mut().expect("a current page has a span");
            if !self.page_has_block {
                span.start = start;
                self.page_has_block = true;
            }
            span.end = end;
        }
        self.doc.blocks.push(Block { content, start, end, page: self.current_page });
        self.chars = end;
        self
    }

    /// Records content the parser left out.
    pub fn dropped(&mut self, dropped: DroppedContent) -> &mut Self {
        self.doc.dropped.push(dropped);
        self
    }

    /// Characters in the document text so far: parsers use it to enforce size limits as they go.
    pub fn char_len(&self) -> usize {
        self.chars
    }

    pub fn block_count(&self) -> usize {
        self.doc.blocks.len()
    }

    pub fn build(mut self) -> CanonicalDocument {
        // Empty pages after the last block sit at the end of the text.
        for page in &mut self.doc.pages {
            page.start = page.start.min(self.chars);
            page.end = page.end.min(self.chars);
        }
        self.doc.stats = DocStats {
            chars: self.chars,
            words: count_words_in_blocks(&self.doc.blocks),
            blocks: self.doc.blocks.len(),
            tables: self.doc.blocks.iter().filter(|b| b.content.is_table()).count(),
            pages: self.doc.pages.len(),
        };
        self.doc
    }

    fn next_block_start(&self) -> usize {
        if self.doc.blocks.is_empty() { 0 } else { self.chars + BLOCK_SEPARATOR.chars().count() }
    }
}

/// The characters `start..end` of `text` (character offsets, as everywhere in the canonical document), or `None`
/// when the range is out of bounds or reversed.
pub fn char_slice(text: &str, start: usize, end: usize) -> Option<&str> {
    if start > end {
        return None;
    }
    let from = char_to_byte(text, start)?;
    let to = from + char_to_byte(&text[from..], end - start)?;
    Some(&text[from..to])
}

/// The byte offset of character `index` in `text` (`text.len()` for one past the end), or `None` beyond that.
pub fn char_to_byte(text: &str, index: usize) -> Option<usize> {
    if index == 0 {
        return Some(0);
    }
    match text.char_indices().nth(index) {
        Some((byte, _)) => Some(byte),
        None if text.chars().count() == index => Some(text.len()),
        None => None,
    }
}

fn count_words_in_blocks(blocks: &[Block]) -> usize {
    blocks.iter().map(|b| crate::words::count_words(&b.text())).sum()
}

fn render_table(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(ROW_SEPARATOR);
        }
        for (j, cell) in row.iter().enumerate() {
            if j > 0 {
                out.push_str(CELL_SEPARATOR);
            }
            out.push_str(cell);
        }
    }
    out
}

fn normalize_block(content: BlockContent) -> Option<BlockContent> {
    let content = match content {
        BlockContent::Heading { level, text } => {
            BlockContent::Heading { level: level.max(1), text: normalize_inline(&text) }
        }
        BlockContent::Paragraph { text } => BlockContent::Paragraph { text: normalize_inline(&text) },
        BlockContent::ListItem { depth, text } => BlockContent::ListItem { depth, text: normalize_inline(&text) },
        BlockContent::Code { lang, text } => BlockContent::Code {
            lang: lang.map(|l| normalize_inline(&l)).filter(|l| !l.is_empty()),
            text: normalize_code(&text),
        },
        BlockContent::Table { rows, header } => {
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|row| row.iter().map(|c| normalize_inline(c)).collect::<Vec<_>>())
                .filter(|row| row.iter().any(|c| !c.is_empty()))
                .collect();
            BlockContent::Table { rows, header }
        }
    };
    let empty = match &content {
        BlockContent::Table { rows, .. } => rows.is_empty(),
        other => other.text().is_empty(),
    };
    (!empty).then_some(content)
}

/// Removes control characters, collapses whitespace runs to one space and trims: what the builder does to inline
/// text (headings, paragraphs, list items, cells, titles), so parsers can measure text as it will be stored. Runs
/// of printable ASCII (most of most texts) are copied whole; every other character is looked at on its own.
pub fn normalize_inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let mut rest = s;
    while let Some(first) = rest.chars().next() {
        let printable = rest.bytes().position(|b| !b.is_ascii_graphic()).unwrap_or(rest.len());
        let (taken, c) = if printable > 0 { (printable, None) } else { (first.len_utf8(), Some(first)) };
        match c {
            Some(c) if c.is_whitespace() => pending_space = !out.is_empty(),
            Some(c) if c.is_control() => {}
            _ => {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.push_str(&rest[..taken]);
            }
        }
        rest = &rest[taken..];
    }
    out
}

/// Keeps lines and indentation; removes control characters other than tab, trailing whitespace on each line, and
/// blank lines at either end. Line endings become `\n`.
fn normalize_code(s: &str) -> String {
    let lines: Vec<String> = s
        .lines()
        .map(|line| line.chars().filter(|c| *c == '\t' || !c.is_control()).collect::<String>().trim_end().to_owned())
        .collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    match (first, last) {
        (Some(first), Some(last)) => lines[first..=last].join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn parser() -> ParserInfo {
        ParserInfo::new("test", "1.0.0")
    }

    /// [`normalize_inline`] as first written, character by character: the oracle for its ASCII runs.
    fn normalize_inline_by_char(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut pending_space = false;
        for c in s.chars() {
            if c.is_whitespace() {
                pending_space = !out.is_empty();
            } else if !c.is_control() {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.push(c);
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn inline_text_normalizes_as_char_by_char(
            s in "([ a-zA-Z0-9.,!~\\t\\n\\r\\x0b\\x0c\\x00-\\x1f\\x7f\\u{85}\\u{a0}\\u{2003}\\u{200b}é漢]|\\PC){0,40}"
        ) {
            proptest::prop_assert_eq!(normalize_inline(&s), normalize_inline_by_char(&s));
        }
    }

    fn sample() -> CanonicalDocument {
        sample_with("  A   Title ", "1")
    }

    /// [`sample`] with another title and first cell of the table's last row.
    fn sample_with(title: &str, cell: &str) -> CanonicalDocument {
        let mut b = DocumentBuilder::new("doc-1", "AB".repeat(32), parser(), "text/plain");
        b.title(title);
        b.begin_page(1)
            .heading(1, "Intro")
            .paragraph("Héllo  wörld,\n this is\tthe first page.")
            .begin_page(2)
            .begin_page(3)
            .list_item(0, "one")
            .list_item(1, "two")
            .table(vec![vec!["a".into(), "b".into()], vec![" ".into(), "".into()], vec![cell.into(), "2".into()]], true)
            .code(Some("rust"), "\n\nfn main() {\r\n    x();   \n}\n\n")
            .paragraph("   ")
            .begin_page(4);
        b.dropped(DroppedContent::new(DroppedKind::Image, "page 1", "images are not extracted").with_bytes(42));
        b.build()
    }

    #[test]
    fn builder_keeps_offsets_pages_and_stats() {
        let doc = sample();
        let text = doc.text();
        assert_eq!(
            text,
            "Intro\n\nHéllo wörld, this is the first page.\n\none\n\ntwo\n\na | b\n1 | 2\n\nfn main() {\n    x();\n}"
        );
        for block in &doc.blocks {
            assert_eq!(char_slice(&text, block.start, block.end).unwrap(), block.text());
        }
        assert_eq!(doc.title.as_deref(), Some("A Title"));
        assert_eq!(doc.source_sha256, "ab".repeat(32));
        assert_eq!(doc.blocks.len(), 6, "the whitespace-only paragraph is skipped");
        let pages: Vec<_> = doc.pages.iter().map(|p| (p.number, p.start, p.end)).collect();
        // Page 2 is empty: an empty span where the next block starts. Page 4 is empty, at the end.
        assert_eq!(pages, vec![(1, 0, 43), (2, 45, 45), (3, 45, 90), (4, 90, 90)]);
        assert_eq!(doc.blocks[1].page, Some(1));
        assert_eq!(doc.blocks[2].page, Some(3));
        assert_eq!(doc.stats, DocStats { chars: 90, words: 17, blocks: 6, tables: 1, pages: 4 });
        assert_eq!(doc.stats.chars, text.chars().count());
        doc.validate().unwrap();
    }

    #[test]
    fn serde_round_trip_and_shape() {
        let doc = sample();
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["blocks"][0],
            serde_json::json!({"type": "heading", "level": 1, "text": "Intro", "start": 0, "end": 5, "page": 1})
        );
        assert_eq!(json["blocks"][4]["type"], "table");
        assert_eq!(json["dropped"][0]["kind"], "image");
        let back: CanonicalDocument = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
    }

    /// The document with every text replaced by `f` of it, or the document itself when `f` changes none.
    fn map_text(doc: &CanonicalDocument, f: impl Fn(&str) -> String) -> CanonicalDocument {
        let edited = doc.try_edit_text(|s| Ok::<_, Infallible>(Some(f(s)).filter(|mapped| mapped != s)));
        edited.unwrap().unwrap_or_else(|| doc.clone())
    }

    #[test]
    fn editing_text_recomputes_offsets() {
        let doc = sample();
        let redacted = map_text(&doc, |s| s.replace("wörld", "[REDACTED]").replace('1', "one"));
        redacted.validate().unwrap();
        let text = redacted.text();
        assert!(text.contains("Héllo [REDACTED], this"));
        assert!(text.contains("a | b\none | 2"));
        assert_eq!(redacted.pages.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(redacted.blocks[2].start, doc.blocks[2].start + "[REDACTED]".len() - "wörld".chars().count());
        assert_eq!(redacted.dropped, doc.dropped);
        // A block that becomes empty disappears; its page stays.
        let gone = map_text(&doc, |s| if s == "Intro" { String::new() } else { s.to_owned() });
        gone.validate().unwrap();
        assert_eq!(gone.blocks.len(), 5);
        assert_eq!(gone.pages.len(), 4);
    }

    #[test]
    fn editing_text_keeps_what_it_does_not_change() {
        let doc = sample();
        let mut seen = Vec::new();
        let kept = doc.try_edit_text(|s| {
            seen.push(s.to_owned());
            Ok::<_, Infallible>(None)
        });
        assert_eq!(kept, Ok(None), "nothing edited: no document");
        // Every text is offered, title first, each table cell on its own.
        assert_eq!(seen.first().map(String::as_str), Some("A Title"));
        assert!(["a", "b", "1", "2", "Intro", "one", "two"].iter().all(|t| seen.iter().any(|s| s == t)), "{seen:?}");
        // Editing one table cell and the title gives the document built with those texts in the first place.
        let edited = doc
            .try_edit_text(|s| {
                Ok::<_, Infallible>(match s {
                    "1" => Some("one".to_owned()),
                    "A Title" => Some("Another Title".to_owned()),
                    _ => None,
                })
            })
            .unwrap()
            .expect("edited");
        edited.validate().unwrap();
        assert_eq!(edited, sample_with("Another Title", "one"));
        assert!(edited.text().contains("a | b\none | 2"));
        // Only the title: the blocks stay as they were.
        let retitled = doc.try_edit_text(|s| Ok::<_, Infallible>((s == "A Title").then(|| "T".to_owned())));
        let retitled = retitled.unwrap().expect("edited");
        assert_eq!((retitled.title.as_deref(), &retitled.blocks), (Some("T"), &doc.blocks));
    }

    #[test]
    fn editing_text_stops_at_the_first_error() {
        let doc = sample();
        let mut after = 0;
        let r = doc.try_edit_text(|s| {
            if s.contains("two") {
                return Err("blocked");
            }
            after += usize::from(s == "a");
            Ok(Some(format!("{s}!")))
        });
        assert_eq!(r.unwrap_err(), "blocked");
        assert_eq!(after, 0, "no text after the failing one is offered");
    }

    #[test]
    fn validate_catches_tampering() {
        let mut doc = sample();
        doc.blocks[1].end += 1;
        assert!(doc.validate().is_err());
        let mut doc = sample();
        doc.stats.words += 1;
        assert!(doc.validate().is_err());
    }

    #[test]
    fn idempotency_key_depends_on_every_input() {
        let sha = "ab".repeat(32);
        let k = parse_idempotency_key(&sha, "pdf@1.0.0", 3);
        assert_eq!(k.len(), 64);
        assert_eq!(k, parse_idempotency_key(&sha.to_uppercase(), "pdf@1.0.0", "3"));
        assert_ne!(k, parse_idempotency_key(&sha, "pdf@1.0.1", 3));
        assert_ne!(k, parse_idempotency_key(&sha, "pdf@1.0.0", 4));
        assert_ne!(k, parse_idempotency_key(&"cd".repeat(32), "pdf@1.0.0", 3));
        assert_eq!(sample().idempotency_key(7), parse_idempotency_key(&sha, "test@1.0.0", 7));
    }

    #[test]
    fn char_slice_counts_characters() {
        assert_eq!(char_slice("añb€c", 1, 4), Some("ñb€"));
        assert_eq!(char_slice("añb", 3, 3), Some(""));
        assert_eq!(char_slice("añb", 2, 4), None);
        assert_eq!(char_slice("añb", 2, 1), None);
        assert_eq!(char_to_byte("añb", 3), Some(4));
    }
}
