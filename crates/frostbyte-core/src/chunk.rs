//! Structure-aware chunking: turns a [`CanonicalDocument`] into the passages that are embedded and indexed.
//!
//! The rules, in order of precedence:
//! - **A table is one chunk, whole**, even when it is longer than `max_chars`; nothing else shares its chunk.
//! - **Headings start chunks.** A heading closes the current chunk, unless that chunk is still shorter than
//!   `min_chars` and the heading stays within the section the chunk started in (a subsection, or a section at
//!   the same level): a short introduction stays with its first subsection, and a run of short sections (a
//!   changelog's releases, an API reference's one-line entries) is packed together instead of each becoming a
//!   chunk of a heading and a line. A heading above the chunk's own level always closes it. Every chunk carries
//!   the heading path in effect where it starts, its own heading included.
//! - **Blocks are packed** (paragraphs, list items, code, headings) in order while the chunk stays within
//!   `target_chars`; a chunk still shorter than `min_chars`, or holding only headings, may grow to `max_chars`.
//! - **Oversized blocks are split** at sentence boundaries (UAX #29; lines for code), then at whitespace, then
//!   between grapheme clusters, never inside a character.
//! - **Overlap**: a chunk closed for size hands its last words (at most `overlap_chars`, starting at a word
//!   boundary, never all of it) to the next chunk. There is no overlap across a heading or a table.
//!
//! **Offsets.** A chunk is a contiguous range of the document text ([`CanonicalDocument::text`]):
//! `char_slice(&doc.text(), chunk.start, chunk.end) == chunk.text`, exactly, overlap included. `overlap` is how
//! many of its leading characters the previous chunk also holds. Ranges count characters, like every offset in
//! the canonical document. A text chunk starts and ends with non-whitespace; a table chunk is exactly its block
//! (an empty edge cell leaves an edge space). Every non-whitespace character of the text lies in at least one
//! chunk, each table's block range is exactly one chunk's range, and chunks come in document order (`start` and
//! `end` both strictly increase).
//!
//! **Identity.** `text_hash` is the lowercase hex sha256 of the chunk text (with the embedding model id, the key
//! of the embedding cache). `chunk_id` is a UUID version 8 made of the first 16 bytes of
//! `sha256("frostbyte.chunk.v1\n" ‖ doc_id ‖ "\n" ‖ position ‖ "\n" ‖ text_hash ‖ "\n")` (position in decimal), so
//! re-chunking the same document with the same config gives the same ids and index upserts are idempotent.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use unicode_segmentation::UnicodeSegmentation;
use uuid::Uuid;

use crate::document::{BLOCK_SEPARATOR, BlockContent, CanonicalDocument};
use crate::tenant::FieldViolation;

/// Chunk sizes, in characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkConfig {
    /// The size chunks are packed up to.
    pub target_chars: usize,
    /// The hard limit for every chunk except a whole table.
    pub max_chars: usize,
    /// How much of a chunk closed for size is repeated at the start of the next.
    pub overlap_chars: usize,
    /// Below this a chunk keeps growing (up to `max_chars`) rather than close, and absorbs a following
    /// subsection.
    pub min_chars: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig { target_chars: 1_000, max_chars: 1_500, overlap_chars: 150, min_chars: 200 }
    }
}

/// The largest `max_chars` accepted.
pub const MAX_CHUNK_CHARS: usize = 1_000_000;

/// A chunk config that breaks a rule; every broken rule is listed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid chunk config: {}", describe(.0))]
pub struct InvalidChunkConfig(pub Vec<FieldViolation>);

fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(|v| format!("{} = {} ({})", v.field, v.value, v.constraint)).collect::<Vec<_>>().join("; ")
}

impl ChunkConfig {
    /// Checks every rule and reports all that fail.
    pub fn validate(&self) -> Result<(), InvalidChunkConfig> {
        let mut out = Vec::new();
        if self.target_chars == 0 {
            out.push(FieldViolation::new("target_chars", self.target_chars, "must be at least 1"));
        }
        if self.max_chars < self.target_chars || self.max_chars > MAX_CHUNK_CHARS {
            out.push(FieldViolation::new(
                "max_chars",
                self.max_chars,
                format!("must be at least target_chars ({}) and at most {MAX_CHUNK_CHARS}", self.target_chars),
            ));
        }
        if self.overlap_chars >= self.target_chars.max(1) {
            out.push(FieldViolation::new(
                "overlap_chars",
                self.overlap_chars,
                format!("must be less than target_chars ({})", self.target_chars),
            ));
        }
        if self.min_chars > self.target_chars {
            out.push(FieldViolation::new(
                "min_chars",
                self.min_chars,
                format!("must be at most target_chars ({})", self.target_chars),
            ));
        }
        if out.is_empty() { Ok(()) } else { Err(InvalidChunkConfig(out)) }
    }
}

/// Whether a chunk is running text or a whole table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkKind {
    Text,
    Table,
}

impl fmt::Display for ChunkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkKind::Text => "text",
            ChunkKind::Table => "table",
        })
    }
}

/// One passage of a document: the unit of embedding, indexing and retrieval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Deterministic: see the module documentation.
    pub chunk_id: Uuid,
    pub doc_id: String,
    /// 0-based position in the document.
    pub position: u32,
    pub text: String,
    /// Character range in the document text.
    pub start: usize,
    pub end: usize,
    /// Leading characters shared with the previous chunk.
    pub overlap: usize,
    /// First and last page the chunk touches, for paged documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
    /// Headings from the outermost down to the one in effect where the chunk starts.
    pub heading_path: Vec<String>,
    pub kind: ChunkKind,
    /// Lowercase hex sha256 of `text`.
    pub text_hash: String,
}

/// Lowercase hex sha256 of a chunk's text.
pub fn text_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The deterministic chunk id; see the module documentation for the exact construction.
pub fn chunk_id(doc_id: &str, position: u32, text_hash: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"frostbyte.chunk.v1\n");
    h.update(doc_id.as_bytes());
    h.update(b"\n");
    h.update(position.to_string().as_bytes());
    h.update(b"\n");
    h.update(text_hash.as_bytes());
    h.update(b"\n");
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Splits a document into chunks by the rules in the module documentation. Pure and deterministic; it reads the
/// block structure and ignores the stored offsets, so it is correct even for a document that fails
/// [`CanonicalDocument::validate`]. Takes time linear in the document's length: run it on a blocking thread.
pub fn chunk_document(doc: &CanonicalDocument, config: &ChunkConfig) -> Result<Vec<Chunk>, InvalidChunkConfig> {
    config.validate()?;
    let text = doc.text();
    let layout = layout_blocks(doc);
    let mut packer = Packer::new(&text, config);
    let mut cursor = CharCursor::default();
    for (block, span) in doc.blocks.iter().zip(&layout) {
        let body = &text[span.b0..span.b1];
        match &block.content {
            BlockContent::Table { .. } => packer.table(*span),
            BlockContent::Heading { level, text: heading } => {
                packer.heading(*level, heading);
                for unit in units(body, span.b0, config.target_chars, Mode::Prose) {
                    packer.text(cursor.locate(&text, unit), true);
                }
            }
            BlockContent::Code { .. } => {
                for unit in units(body, span.b0, config.target_chars, Mode::Lines) {
                    packer.text(cursor.locate(&text, unit), false);
                }
            }
            BlockContent::Paragraph { .. } | BlockContent::ListItem { .. } => {
                for unit in units(body, span.b0, config.target_chars, Mode::Prose) {
                    packer.text(cursor.locate(&text, unit), false);
                }
            }
        }
    }
    let ranges = packer.finish();

    let pages: Vec<(usize, usize, Option<u32>)> =
        doc.blocks.iter().zip(&layout).map(|(b, s)| (s.c0, s.c1, b.page)).collect();
    let mut chunks = Vec::with_capacity(ranges.len());
    for (position, r) in ranges.into_iter().enumerate() {
        let position = u32::try_from(position).expect("fewer than 2^32 chunks");
        let chunk_text = text[r.span.b0..r.span.b1].to_owned();
        let hash = text_hash(&chunk_text);
        let (page_start, page_end) = page_range(&pages, r.span.c0, r.span.c1);
        chunks.push(Chunk {
            chunk_id: chunk_id(&doc.doc_id, position, &hash),
            doc_id: doc.doc_id.clone(),
            position,
            text: chunk_text,
            start: r.span.c0,
            end: r.span.c1,
            overlap: r.overlap,
            page_start,
            page_end,
            heading_path: r.heading_path,
            kind: r.kind,
            text_hash: hash,
        });
    }
    Ok(chunks)
}

/// A range of the document text in bytes (`b0..b1`, for slicing) and characters (`c0..c1`, for offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    b0: usize,
    b1: usize,
    c0: usize,
    c1: usize,
}

impl Span {
    fn chars(&self) -> usize {
        self.c1 - self.c0
    }
}

/// Where each block lies in the document text, from the block structure alone.
fn layout_blocks(doc: &CanonicalDocument) -> Vec<Span> {
    let sep_chars = BLOCK_SEPARATOR.chars().count();
    let (mut b, mut c) = (0, 0);
    let mut out = Vec::with_capacity(doc.blocks.len());
    for (i, block) in doc.blocks.iter().enumerate() {
        if i > 0 {
            b += BLOCK_SEPARATOR.len();
            c += sep_chars;
        }
        let t = block.text();
        let span = Span { b0: b, b1: b + t.len(), c0: c, c1: c + t.chars().count() };
        (b, c) = (span.b1, span.c1);
        out.push(span);
    }
    out
}

/// First and last page among the blocks that intersect `c0..c1`.
fn page_range(blocks: &[(usize, usize, Option<u32>)], c0: usize, c1: usize) -> (Option<u32>, Option<u32>) {
    let first = blocks.partition_point(|(_, end, _)| *end <= c0);
    let mut pages = blocks[first..].iter().take_while(|(start, _, _)| *start < c1).filter_map(|(_, _, p)| *p);
    let Some(p) = pages.next() else {
        return (None, None);
    };
    let (lo, hi) = pages.fold((p, p), |(lo, hi), p| (lo.min(p), hi.max(p)));
    (Some(lo), Some(hi))
}

/// Converts increasing byte offsets into character offsets in one pass over the text.
#[derive(Default)]
struct CharCursor {
    b: usize,
    c: usize,
}

impl CharCursor {
    fn advance(&mut self, text: &str, byte: usize) -> usize {
        debug_assert!(byte >= self.b);
        self.c += text[self.b..byte].chars().count();
        self.b = byte;
        self.c
    }

    /// The span of the byte range `b0..b1`; ranges must come in increasing order.
    fn locate(&mut self, text: &str, (b0, b1): (usize, usize)) -> Span {
        let c0 = self.advance(text, b0);
        let c1 = self.advance(text, b1);
        Span { b0, b1, c0, c1 }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    /// Sentences, then words.
    Prose,
    /// Lines, then words.
    Lines,
}

/// Splits a block's text (at byte `base` of the document text) into trimmed, non-empty byte ranges of at most
/// `limit` characters each: the whole block when it fits, otherwise sentences (or lines), then words, then
/// grapheme clusters.
fn units(body: &str, base: usize, limit: usize, mode: Mode) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if body.chars().count() <= limit {
        push_trimmed(&mut out, body, 0, base);
        return out;
    }
    let pieces: Vec<(usize, &str)> = match mode {
        Mode::Prose => body.split_sentence_bound_indices().collect(),
        Mode::Lines => body
            .split_inclusive('\n')
            .scan(0, |at, line| Some((std::mem::replace(at, *at + line.len()), line)))
            .collect(),
    };
    for (offset, piece) in pieces {
        if piece.chars().count() <= limit {
            push_trimmed(&mut out, piece, offset, base);
            continue;
        }
        for (word_offset, word) in words(piece) {
            let at = offset + word_offset;
            if word.chars().count() <= limit {
                out.push((base + at, base + at + word.len()));
            } else {
                split_graphemes(&mut out, word, base + at, limit);
            }
        }
    }
    out
}

fn push_trimmed(out: &mut Vec<(usize, usize)>, piece: &str, offset: usize, base: usize) {
    let trimmed = piece.trim();
    if !trimmed.is_empty() {
        let lead = piece.len() - piece.trim_start().len();
        out.push((base + offset + lead, base + offset + lead + trimmed.len()));
    }
}

/// Maximal runs of non-whitespace, with their byte offsets.
fn words(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = s.char_indices().peekable();
    std::iter::from_fn(move || {
        while rest.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some((i, c)) = rest.next_if(|(_, c)| !c.is_whitespace()) {
            end = i + c.len_utf8();
        }
        Some((start, &s[start..end]))
    })
}

/// Packs grapheme clusters into pieces of at most `limit` characters (a cluster longer than that is cut between
/// characters).
fn split_graphemes(out: &mut Vec<(usize, usize)>, word: &str, base: usize, limit: usize) {
    let (mut start, mut end, mut chars) = (0, 0, 0);
    for (i, g) in word.grapheme_indices(true) {
        let n = g.chars().count();
        if chars > 0 && chars + n > limit {
            out.push((base + start, base + end));
            (start, chars) = (i, 0);
        }
        if n > limit {
            for (j, c) in g.char_indices() {
                if chars == limit {
                    out.push((base + start, base + i + j));
                    (start, chars) = (i + j, 0);
                }
                chars += 1;
                end = i + j + c.len_utf8();
            }
            continue;
        }
        chars += n;
        end = i + g.len();
    }
    if chars > 0 {
        out.push((base + start, base + end));
    }
}

/// A chunk range before ids and pages are attached.
struct RawChunk {
    span: Span,
    overlap: usize,
    heading_path: Vec<String>,
    kind: ChunkKind,
}

struct Open {
    span: Span,
    overlap: usize,
    heading_path: Vec<String>,
    /// Level of the innermost heading in effect where the chunk starts; 0 before any heading.
    start_level: u8,
    only_headings: bool,
}

struct Packer<'a> {
    text: &'a str,
    config: &'a ChunkConfig,
    headings: Vec<(u8, String)>,
    open: Option<Open>,
    /// The last chunk, when it was closed for size and may lend its tail to the next one.
    overlap_source: Option<Span>,
    out: Vec<RawChunk>,
}

impl<'a> Packer<'a> {
    fn new(text: &'a str, config: &'a ChunkConfig) -> Self {
        Packer { text, config, headings: Vec::new(), open: None, overlap_source: None, out: Vec::new() }
    }

    fn level(&self) -> u8 {
        self.headings.last().map_or(0, |(level, _)| *level)
    }

    fn heading(&mut self, level: u8, text: &str) {
        let keep = self.open.as_ref().is_some_and(|o| o.span.chars() < self.config.min_chars && level >= o.start_level);
        if !keep {
            self.close(false);
        }
        while self.headings.last().is_some_and(|(l, _)| *l >= level) {
            self.headings.pop();
        }
        self.headings.push((level, text.to_owned()));
    }

    fn text(&mut self, unit: Span, is_heading: bool) {
        if let Some(open) = &mut self.open {
            let combined = unit.c1 - open.span.c0;
            let small = open.only_headings || open.span.chars() < self.config.min_chars;
            if combined <= self.config.target_chars || (small && combined <= self.config.max_chars) {
                open.span.b1 = unit.b1;
                open.span.c1 = unit.c1;
                open.only_headings &= is_heading;
                return;
            }
            let lend = !open.only_headings;
            self.close(lend);
        }
        let (span, overlap) = self.with_overlap(unit);
        self.open = Some(Open {
            span,
            overlap,
            heading_path: self.headings.iter().map(|(_, t)| t.clone()).collect(),
            start_level: self.level(),
            only_headings: is_heading,
        });
    }

    fn table(&mut self, span: Span) {
        self.close(false);
        self.out.push(RawChunk {
            span,
            overlap: 0,
            heading_path: self.headings.iter().map(|(_, t)| t.clone()).collect(),
            kind: ChunkKind::Table,
        });
    }

    fn close(&mut self, lend_overlap: bool) {
        let Some(open) = self.open.take() else {
            self.overlap_source = None;
            return;
        };
        self.overlap_source = lend_overlap.then_some(open.span);
        self.out.push(RawChunk {
            span: open.span,
            overlap: open.overlap,
            heading_path: open.heading_path,
            kind: ChunkKind::Text,
        });
    }

    /// The span a new chunk starting with `unit` covers: `unit` preceded by the longest tail of the previous
    /// chunk that starts a word, is at most `overlap_chars` long, is not the whole previous chunk, and keeps the
    /// new chunk within `max_chars`.
    fn with_overlap(&mut self, unit: Span) -> (Span, usize) {
        let Some(prev) = self.overlap_source.take() else {
            return (unit, 0);
        };
        let budget = self.config.overlap_chars.min(self.config.max_chars.saturating_sub(unit.c1 - prev.c1));
        let tail = &self.text[prev.b0..prev.b1];
        let mut best: Option<(usize, usize)> = None; // (byte offset in tail, chars from there to the end)
        let mut chars = 0;
        let mut it = tail.char_indices().rev().peekable();
        while let Some((i, c)) = it.next() {
            chars += 1;
            if chars > budget || i == 0 {
                break;
            }
            let starts_word = !c.is_whitespace() && it.peek().is_some_and(|(_, p)| p.is_whitespace());
            if starts_word {
                best = Some((i, chars));
            }
        }
        match best {
            Some((i, n)) => (Span { b0: prev.b0 + i, b1: unit.b1, c0: prev.c1 - n, c1: unit.c1 }, n),
            None => (unit, 0),
        }
    }

    fn finish(mut self) -> Vec<RawChunk> {
        self.close(false);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::document::{DocumentBuilder, ParserInfo, char_slice};

    fn builder() -> DocumentBuilder {
        DocumentBuilder::new("doc-1", "00".repeat(32), ParserInfo::new("test", "1"), "text/plain")
    }

    fn cfg(target: usize, max: usize, overlap: usize, min: usize) -> ChunkConfig {
        ChunkConfig { target_chars: target, max_chars: max, overlap_chars: overlap, min_chars: min }
    }

    /// Every invariant the module documentation promises.
    fn check_invariants(doc: &CanonicalDocument, config: &ChunkConfig, chunks: &[Chunk]) -> Result<(), TestCaseError> {
        let text = doc.text();
        let chars: Vec<char> = text.chars().collect();
        let mut covered = vec![false; chars.len()];
        let mut ids = std::collections::HashSet::new();
        for (i, c) in chunks.iter().enumerate() {
            prop_assert_eq!(c.position as usize, i);
            prop_assert_eq!(char_slice(&text, c.start, c.end), Some(c.text.as_str()), "offsets slice to the text");
            prop_assert!(!c.text.trim().is_empty(), "never blank");
            if c.kind == ChunkKind::Text {
                prop_assert_eq!(c.text.trim(), c.text.as_str(), "text chunks are trimmed");
            }
            prop_assert_eq!(&c.text_hash, &text_hash(&c.text));
            prop_assert_eq!(c.chunk_id, chunk_id(&doc.doc_id, c.position, &c.text_hash));
            prop_assert!(ids.insert(c.chunk_id), "unique ids");
            if c.kind == ChunkKind::Text {
                prop_assert!(c.end - c.start <= config.max_chars, "chunk {} has {} chars", i, c.end - c.start);
            }
            if i > 0 {
                let prev = &chunks[i - 1];
                prop_assert!(c.start > prev.start && c.end > prev.end, "in order");
                let shared = prev.end.saturating_sub(c.start);
                prop_assert_eq!(c.overlap, shared);
                prop_assert!(c.overlap <= config.overlap_chars);
                if c.overlap > 0 {
                    prop_assert!(c.kind == ChunkKind::Text && prev.kind == ChunkKind::Text);
                    prop_assert!(chars[c.start - 1].is_whitespace(), "overlap starts at a word");
                }
            } else {
                prop_assert_eq!(c.overlap, 0);
            }
            for flag in &mut covered[c.start..c.end] {
                *flag = true;
            }
        }
        for (i, ch) in chars.iter().enumerate() {
            prop_assert!(covered[i] || ch.is_whitespace(), "character {} ({:?}) is in no chunk", i, ch);
        }
        for block in doc.blocks.iter().filter(|b| b.content.is_table()) {
            let n =
                chunks.iter().filter(|c| c.kind == ChunkKind::Table && c.start == block.start && c.end == block.end);
            prop_assert_eq!(n.count(), 1, "a table is exactly one chunk");
            prop_assert!(
                chunks.iter().all(|c| c.kind == ChunkKind::Table || c.end <= block.start || c.start >= block.end)
            );
        }
        Ok(())
    }

    #[test]
    fn headings_start_chunks_and_carry_their_path() {
        let mut b = builder();
        b.heading(1, "Guide")
            .paragraph(&"Alpha beta gamma. ".repeat(30))
            .heading(2, "Install")
            .paragraph(&"Run the installer. ".repeat(10))
            .heading(2, "Use")
            .paragraph("Call it.")
            .heading(1, "Appendix")
            .paragraph("The end.");
        let doc = b.build();
        let chunks = chunk_document(&doc, &cfg(400, 600, 50, 100)).unwrap();
        check_invariants(&doc, &cfg(400, 600, 50, 100), &chunks).unwrap();
        let summary: Vec<(Vec<String>, &str)> =
            chunks.iter().map(|c| (c.heading_path.clone(), c.text.split('\n').next().unwrap())).collect();
        assert_eq!(summary[0].0, vec!["Guide"]);
        assert!(summary[0].1 == "Guide");
        let paths: Vec<Vec<&str>> =
            chunks.iter().map(|c| c.heading_path.iter().map(String::as_str).collect()).collect();
        assert!(paths.contains(&vec!["Guide", "Install"]));
        // "Use" is short but a sibling of "Install", so it starts its own chunk; "Appendix" is a new top section.
        assert!(chunks.iter().any(|c| c.text == "Use\n\nCall it." && c.heading_path == ["Guide", "Use"]));
        assert!(chunks.iter().any(|c| c.text == "Appendix\n\nThe end." && c.heading_path == ["Appendix"]));
        assert!(chunks.iter().all(|c| c.overlap == 0 || !c.text.starts_with("Install")));
    }

    #[test]
    fn a_short_intro_stays_with_its_first_subsection() {
        let mut b = builder();
        b.heading(1, "Chapter").paragraph("Short intro.").heading(2, "Part").paragraph("Body text.");
        let doc = b.build();
        let chunks = chunk_document(&doc, &ChunkConfig::default()).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].heading_path, ["Chapter"]);
    }

    #[test]
    fn short_sections_at_one_level_are_packed_together() {
        let mut b = builder();
        b.heading(1, "Changelog");
        for minor in (0..12).rev() {
            b.heading(2, &format!("1.{minor}.0")).paragraph(&format!("Fixed issue {minor}."));
        }
        b.heading(1, "License").paragraph("MIT.");
        let doc = b.build();
        let config = cfg(100, 150, 20, 60);
        let chunks = chunk_document(&doc, &config).unwrap();
        check_invariants(&doc, &config, &chunks).unwrap();
        let summary: Vec<(Vec<&str>, &str)> =
            chunks.iter().map(|c| (c.heading_path.iter().map(String::as_str).collect(), c.text.as_str())).collect();
        // Each release is a heading and a line; they pack until a chunk reaches min_chars, and the chunk keeps the
        // path where it starts. A shallower heading ("License") still closes the run.
        assert_eq!(
            summary,
            [
                (
                    vec!["Changelog"],
                    "Changelog\n\n1.11.0\n\nFixed issue 11.\n\n1.10.0\n\nFixed issue 10.\n\n1.9.0\n\nFixed issue 9."
                ),
                (
                    vec!["Changelog", "1.8.0"],
                    "1.8.0\n\nFixed issue 8.\n\n1.7.0\n\nFixed issue 7.\n\n1.6.0\n\nFixed issue 6."
                ),
                (
                    vec!["Changelog", "1.5.0"],
                    "1.5.0\n\nFixed issue 5.\n\n1.4.0\n\nFixed issue 4.\n\n1.3.0\n\nFixed issue 3."
                ),
                (
                    vec!["Changelog", "1.2.0"],
                    "1.2.0\n\nFixed issue 2.\n\n1.1.0\n\nFixed issue 1.\n\n1.0.0\n\nFixed issue 0."
                ),
                (vec!["License"], "License\n\nMIT."),
            ]
        );
    }

    #[test]
    fn tables_are_whole_and_alone() {
        let rows: Vec<Vec<String>> = (0..40).map(|i| vec![format!("row {i}"), "x".repeat(20)]).collect();
        let mut b = builder();
        b.paragraph("Before the table.").table(rows, true).paragraph("After the table.");
        let doc = b.build();
        let config = cfg(100, 200, 20, 10);
        let chunks = chunk_document(&doc, &config).unwrap();
        check_invariants(&doc, &config, &chunks).unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].kind, ChunkKind::Table);
        assert!(chunks[1].text.len() > 200 && chunks[1].text.starts_with("row 0 | xxx"));
        assert_eq!(chunks[2].text, "After the table.");
        assert_eq!(chunks[2].overlap, 0);
    }

    #[test]
    fn long_paragraphs_split_at_sentences_with_overlap() {
        let sentence = "The quick brown fox jumps over the lazy dog again. ";
        let mut b = builder();
        b.paragraph(&sentence.repeat(40));
        let doc = b.build();
        let config = cfg(300, 400, 60, 50);
        let chunks = chunk_document(&doc, &config).unwrap();
        check_invariants(&doc, &config, &chunks).unwrap();
        assert!(chunks.len() > 5);
        for c in &chunks[1..] {
            assert!(c.overlap > 0 && c.overlap <= 60);
            // After the overlap, the chunk resumes at a sentence start.
            assert!(c.text[c.text.char_indices().nth(c.overlap).unwrap().0..].trim_start().starts_with("The quick"));
        }
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.text.ends_with("again."), "{:?}", c.text);
        }
    }

    #[test]
    fn unbroken_text_splits_between_graphemes() {
        let mut b = builder();
        b.paragraph(&"e\u{301}ß漢".repeat(200)).paragraph(&"word ".repeat(100));
        let doc = b.build();
        let config = cfg(50, 60, 10, 0);
        let chunks = chunk_document(&doc, &config).unwrap();
        check_invariants(&doc, &config, &chunks).unwrap();
        for c in &chunks {
            assert!(!c.text.starts_with('\u{301}'), "never splits a grapheme cluster");
        }
    }

    #[test]
    fn pages_are_kept() {
        let mut b = builder();
        b.begin_page(1).paragraph(&"one ".repeat(50)).begin_page(2).paragraph(&"two ".repeat(50));
        b.begin_page(3).paragraph(&"three ".repeat(10));
        let doc = b.build();
        let chunks = chunk_document(&doc, &cfg(270, 300, 0, 0)).unwrap();
        let pages: Vec<_> = chunks.iter().map(|c| (c.page_start, c.page_end)).collect();
        assert_eq!(pages, vec![(Some(1), Some(1)), (Some(2), Some(3))]);
        let unpaged = {
            let mut b = builder();
            b.paragraph("x");
            b.build()
        };
        assert_eq!(chunk_document(&unpaged, &ChunkConfig::default()).unwrap()[0].page_start, None);
    }

    #[test]
    fn ids_are_deterministic_and_documented() {
        let mut b = builder();
        b.paragraph("Hello.");
        let doc = b.build();
        let a = chunk_document(&doc, &ChunkConfig::default()).unwrap();
        let again = chunk_document(&doc.clone(), &ChunkConfig::default()).unwrap();
        assert_eq!(a, again);
        assert_eq!(a[0].chunk_id.get_version_num(), 8);
        assert_eq!(a[0].text_hash, "2d8bd7d9bb5f85ba643f0110d50cb506a1fe439e769a22503193ea6046bb87f7");
        // Pinned: changing the construction changes every stored id.
        assert_eq!(a[0].chunk_id.to_string(), chunk_id("doc-1", 0, &a[0].text_hash).to_string());
        assert_ne!(chunk_id("doc-2", 0, &a[0].text_hash), a[0].chunk_id);
    }

    #[test]
    fn config_validation_reports_every_problem() {
        assert!(ChunkConfig::default().validate().is_ok());
        let err = cfg(0, 0, 5, 10).validate().unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["target_chars", "overlap_chars", "min_chars"]);
        let err = cfg(100, 50, 100, 0).validate().unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert!(err.to_string().contains("max_chars = 50"));
        assert!(chunk_document(&builder().build(), &cfg(10, 5, 0, 0)).is_err());
        let parsed: ChunkConfig = serde_json::from_str(r#"{"target_chars": 500}"#).unwrap();
        assert_eq!(parsed.max_chars, 1_500);
        assert!(serde_json::from_str::<ChunkConfig>(r#"{"target": 500}"#).is_err());
    }

    #[test]
    fn empty_document_has_no_chunks() {
        assert!(chunk_document(&builder().build(), &ChunkConfig::default()).unwrap().is_empty());
    }

    fn arb_text() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            8 => "[a-z]{1,9}",
            1 => "[A-Z][a-z]{0,6}[.!?]",
            1 => "[0-9]{1,4}",
            1 => "(é|ß|漢字|e\u{301}|🙂|\u{200d}|x{25})",
        ];
        prop::collection::vec(
            (word, prop_oneof![6 => Just(" "), 1 => Just(". "), 1 => Just("\n"), 1 => Just("  ")]),
            0..80,
        )
        .prop_map(|ws| ws.into_iter().flat_map(|(w, s)| [w, s.to_owned()]).collect())
    }

    fn arb_block() -> impl Strategy<Value = BlockContent> {
        prop_oneof![
            2 => (1u8..4, "[A-Za-z ]{0,30}").prop_map(|(level, text)| BlockContent::Heading { level, text }),
            5 => arb_text().prop_map(|text| BlockContent::Paragraph { text }),
            2 => (0u8..3, arb_text()).prop_map(|(depth, text)| BlockContent::ListItem { depth, text }),
            1 => arb_text().prop_map(|text| BlockContent::Code { lang: None, text }),
            1 => (prop::collection::vec(prop::collection::vec("[a-z0-9 ]{0,12}", 1..4), 0..6), any::<bool>())
                .prop_map(|(rows, header)| BlockContent::Table { rows, header }),
        ]
    }

    fn arb_config() -> impl Strategy<Value = ChunkConfig> {
        (1usize..200, 0usize..100, 0usize..100, 0usize..200).prop_map(|(target, extra, overlap, min)| ChunkConfig {
            target_chars: target,
            max_chars: target + extra,
            overlap_chars: overlap.min(target - 1),
            min_chars: min.min(target),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn chunking_invariants(
            blocks in prop::collection::vec((arb_block(), prop::option::of(1u32..4)), 0..12),
            config in arb_config(),
        ) {
            let mut b = builder();
            for (content, page) in blocks {
                if let Some(page) = page {
                    b.begin_page(page);
                }
                b.push(content);
            }
            let doc = b.build();
            let chunks = chunk_document(&doc, &config).unwrap();
            check_invariants(&doc, &config, &chunks)?;
            prop_assert_eq!(chunk_document(&doc, &config).unwrap(), chunks, "deterministic");
        }
    }
}
