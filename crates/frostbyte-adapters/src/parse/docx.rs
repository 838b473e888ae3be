//! DOCX (WordprocessingML) with `zip` (bounded, see `zipguard`) and `quick-xml` events.
//!
//! Paragraph styles give structure: `Title` and `heading 1`–`heading 9` (by style name, so localised style ids
//! work, following `basedOn`) and outline levels become headings; paragraphs with numbering (`w:numPr`, on the
//! paragraph or its style) become list items at their `w:ilvl` depth; `w:tbl` becomes a table (header when the
//! first row repeats as a header, `w:tblHeader`; nested tables are flattened into their cell). Text boxes are
//! read once (the `mc:Fallback` copy is skipped); deleted revisions and field instructions are not text.
//! Headers, footers, footnotes, endnotes and comments are not read, and are recorded when they hold text;
//! pictures, embedded objects and macros are recorded from the package's parts.

use std::collections::HashMap;

use frostbyte_core::document::{DroppedContent, DroppedKind};
use quick_xml::events::{BytesStart, Event};

use super::ooxml::{attr, core_title, has_text_runs, local, malformed, on_off, reader, resolve_ref};
use super::zipguard::ZipDoc;
use super::{ParseError, ParseLimits, Sink};

pub const VERSION: &str = "1.0.0";

const MAIN_PART: &str = "word/document.xml";

pub(crate) fn parse(bytes: &[u8], limits: &ParseLimits, sink: &mut Sink) -> Result<(), ParseError> {
    let mut zip = ZipDoc::open(bytes, limits)?;
    let document = zip.read_required(MAIN_PART, MAIN_PART)?;
    let styles = match zip.read("word/styles.xml")? {
        Some(xml) => Styles::parse(&xml)?,
        None => Styles::default(),
    };
    if let Some(title) = core_title(&mut zip)? {
        sink.title(&title);
    }
    sink.check()?;
    let mut walker = Walker { styles: &styles, sink, paras: Vec::new(), tables: Vec::new(), title: None, deleted: 0 };
    walker.walk(&document)?;
    let (title, deleted) = (walker.title.take(), walker.deleted);
    if let Some(title) = title
        && !sink.has_title()
    {
        sink.title(&title);
    }
    if deleted > 0 {
        sink.dropped(DroppedContent::new(
            DroppedKind::Other,
            MAIN_PART,
            format!("{deleted} deleted tracked-change runs were not included"),
        ));
    }
    let names: Vec<String> = zip.entries().iter().map(|(n, _)| n.clone()).collect();
    let mut side_parts: Vec<(DroppedKind, &str)> = Vec::new();
    for name in &names {
        let Some(part) = name.strip_prefix("word/") else { continue };
        let kind = if part == "comments.xml" {
            (DroppedKind::Annotation, "comments were not extracted")
        } else if part == "footnotes.xml" || part == "endnotes.xml" {
            (DroppedKind::Other, "footnotes and endnotes were not extracted")
        } else if (part.starts_with("header") || part.starts_with("footer")) && part.ends_with(".xml") {
            (DroppedKind::Other, "page headers and footers were not extracted")
        } else {
            continue;
        };
        if side_parts.contains(&kind) {
            continue;
        }
        if zip.read(name)?.is_some_and(|xml| has_text_runs(&xml)) {
            side_parts.push(kind);
        }
    }
    for (kind, reason) in side_parts {
        sink.dropped(DroppedContent::new(kind, "word/", reason));
    }
    for dropped in zip.dropped_parts("word") {
        sink.dropped(dropped);
    }
    Ok(())
}

/// What a paragraph style says about structure.
#[derive(Debug, Default, Clone)]
struct Style {
    name: String,
    based_on: Option<String>,
    outline: Option<u8>,
    numbered: Option<bool>,
}

#[derive(Debug, Default)]
struct Styles {
    by_id: HashMap<String, Style>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Title,
    Heading(u8),
}

impl Styles {
    fn parse(xml: &[u8]) -> Result<Self, ParseError> {
        let mut reader = reader(xml);
        let mut buf = Vec::new();
        let mut by_id = HashMap::new();
        let mut current: Option<(String, Style)> = None;
        loop {
            let event = reader.read_event_into(&mut buf).map_err(|_| malformed("word/styles.xml"))?;
            match event {
                Event::Start(e) | Event::Empty(e) => {
                    let name = e.name();
                    match (local(name.as_ref()), current.as_mut()) {
                        ("style", _) => current = attr(&e, "styleId").map(|id| (id, Style::default())),
                        ("name", Some((_, s))) => s.name = attr(&e, "val").unwrap_or_default(),
                        ("basedOn", Some((_, s))) => s.based_on = attr(&e, "val"),
                        ("outlineLvl", Some((_, s))) => s.outline = outline_level(&e),
                        ("numId", Some((_, s))) => s.numbered = Some(attr(&e, "val").as_deref() != Some("0")),
                        _ => {}
                    }
                }
                Event::End(e) if local(e.name().as_ref()) == "style" => {
                    if let Some((id, style)) = current.take() {
                        by_id.insert(id, style);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        Ok(Styles { by_id })
    }

    /// The heading kind of a style, following `basedOn` (at most 16 steps: chains can be cyclic).
    fn kind(&self, id: &str) -> Option<Kind> {
        let mut id = id.to_owned();
        for _ in 0..16 {
            let Some(style) = self.by_id.get(&id) else {
                return kind_from_name(&id);
            };
            if let Some(kind) = kind_from_name(&style.name) {
                return Some(kind);
            }
            if let Some(level) = style.outline {
                return Some(Kind::Heading(level));
            }
            id = style.based_on.clone()?;
        }
        None
    }

    /// Whether a style carries list numbering, following `basedOn`.
    fn numbered(&self, id: &str) -> bool {
        let mut id = id;
        for _ in 0..16 {
            let Some(style) = self.by_id.get(id) else { return false };
            if let Some(n) = style.numbered {
                return n;
            }
            match &style.based_on {
                Some(parent) => id = parent,
                None => return false,
            }
        }
        false
    }
}

/// `Title`, `heading 3` (built-in names are stable across languages) or a style id like `Heading3`.
fn kind_from_name(name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    if lower == "title" {
        return Some(Kind::Title);
    }
    let rest = lower.strip_prefix("heading")?.trim();
    let level: u8 = rest.parse().ok()?;
    (1..=9).contains(&level).then_some(Kind::Heading(level))
}

fn outline_level(e: &BytesStart<'_>) -> Option<u8> {
    let level: u8 = attr(e, "val")?.parse().ok()?;
    (level < 9).then_some(level + 1)
}

#[derive(Default)]
struct Para {
    text: String,
    style: Option<String>,
    ilvl: Option<u8>,
    numbered: Option<bool>,
    outline: Option<u8>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: Option<String>,
    header: bool,
}

struct Walker<'a, 's> {
    styles: &'a Styles,
    sink: &'s mut Sink,
    /// Open paragraphs (more than one inside a text box).
    paras: Vec<Para>,
    tables: Vec<Table>,
    title: Option<String>,
    deleted: usize,
}

impl Walker<'_, '_> {
    fn walk(&mut self, xml: &[u8]) -> Result<(), ParseError> {
        let mut reader = reader(xml);
        let mut buf = Vec::new();
        let mut depth = 0usize;
        // While skipping a subtree: the depth its root opened at.
        let mut skip_from: Option<usize> = None;
        let mut in_text = false;
        let mut in_ppr = false;
        loop {
            self.sink.tick()?;
            if self.sink.is_full() {
                return Ok(());
            }
            let event = reader.read_event_into(&mut buf).map_err(|_| malformed(MAIN_PART))?;
            match event {
                Event::Start(e) => {
                    depth += 1;
                    if skip_from.is_some() {
                        buf.clear();
                        continue;
                    }
                    let name = e.name();
                    match local(name.as_ref()) {
                        "Fallback" | "instrText" => skip_from = Some(depth),
                        "delText" => {
                            self.deleted += 1;
                            skip_from = Some(depth);
                        }
                        "p" => self.paras.push(Para::default()),
                        "pPr" => in_ppr = true,
                        "t" => in_text = true,
                        "tbl" => self.tables.push(Table::default()),
                        "tr" => {
                            if let Some(t) = self.tables.last_mut() {
                                t.row.clear();
                            }
                        }
                        "tc" => {
                            if let Some(t) = self.tables.last_mut() {
                                t.cell = Some(String::new());
                            }
                        }
                        other => self.element(other, &e, in_ppr),
                    }
                }
                Event::Empty(e) if skip_from.is_none() => {
                    let name = e.name();
                    self.element(local(name.as_ref()), &e, in_ppr);
                }
                Event::Text(t) if in_text && skip_from.is_none() => self.push_text(&t),
                Event::GeneralRef(r) if in_text && skip_from.is_none() => {
                    if let Some(c) = resolve_ref(&r) {
                        self.push_text(c.encode_utf8(&mut [0; 4]));
                    }
                }
                Event::End(e) => {
                    if let Some(from) = skip_from {
                        if from == depth {
                            skip_from = None;
                        }
                        depth = depth.saturating_sub(1);
                        buf.clear();
                        continue;
                    }
                    depth = depth.saturating_sub(1);
                    let name = e.name();
                    match local(name.as_ref()) {
                        "t" => in_text = false,
                        "pPr" => in_ppr = false,
                        "p" => self.end_paragraph(),
                        "tc" => {
                            if let Some(t) = self.tables.last_mut() {
                                let cell = t.cell.take().unwrap_or_default();
                                t.row.push(cell);
                            }
                        }
                        "tr" => {
                            if let Some(t) = self.tables.last_mut() {
                                let row = std::mem::take(&mut t.row);
                                t.rows.push(row);
                            }
                        }
                        "tbl" => self.end_table(),
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        Ok(())
    }

    /// Elements that only carry attributes (and may be written empty or not).
    fn element(&mut self, name: &str, e: &BytesStart<'_>, in_ppr: bool) {
        match name {
            "pStyle" if in_ppr => {
                if let Some(p) = self.paras.last_mut() {
                    p.style = attr(e, "val");
                }
            }
            "ilvl" if in_ppr => {
                if let Some(p) = self.paras.last_mut() {
                    p.ilvl = attr(e, "val").and_then(|v| v.parse().ok());
                }
            }
            "numId" if in_ppr => {
                if let Some(p) = self.paras.last_mut() {
                    p.numbered = Some(attr(e, "val").as_deref() != Some("0"));
                }
            }
            "outlineLvl" if in_ppr => {
                if let Some(p) = self.paras.last_mut() {
                    p.outline = outline_level(e);
                }
            }
            "tab" | "ptab" if !in_ppr => self.push_text("\t"),
            "br" | "cr" => self.push_text("\n"),
            "noBreakHyphen" => self.push_text("-"),
            "tblHeader" if on_off(e) => {
                if let Some(t) = self.tables.last_mut()
                    && t.rows.is_empty()
                {
                    t.header = true;
                }
            }
            _ => {}
        }
    }

    fn push_text(&mut self, text: &str) {
        if let Some(p) = self.paras.last_mut() {
            p.text.push_str(text);
        }
    }

    fn end_paragraph(&mut self) {
        let Some(para) = self.paras.pop() else { return };
        // A paragraph in a table cell (and not in a text box inside one) is cell text.
        if self.paras.is_empty()
            && let Some(cell) = self.tables.last_mut().and_then(|t| t.cell.as_mut())
        {
            if !cell.is_empty() && !para.text.trim().is_empty() {
                cell.push('\n');
            }
            cell.push_str(&para.text);
            return;
        }
        let kind = para.outline.map(Kind::Heading).or_else(|| para.style.as_deref().and_then(|s| self.styles.kind(s)));
        match kind {
            Some(Kind::Title) => {
                if self.title.is_none() && !para.text.trim().is_empty() {
                    self.title = Some(para.text.clone());
                }
                self.sink.heading(1, &para.text);
            }
            Some(Kind::Heading(level)) => self.sink.heading(level, &para.text),
            None => {
                let numbered =
                    para.numbered.unwrap_or_else(|| para.style.as_deref().is_some_and(|s| self.styles.numbered(s)));
                if numbered {
                    self.sink.list_item(usize::from(para.ilvl.unwrap_or(0)), &para.text);
                } else {
                    self.sink.paragraph(&para.text);
                }
            }
        }
    }

    fn end_table(&mut self) {
        let Some(table) = self.tables.pop() else { return };
        // A table inside a cell is flattened into that cell's text.
        if let Some(cell) = self.tables.last_mut().and_then(|t| t.cell.as_mut()) {
            for row in table.rows {
                cell.push('\n');
                cell.push_str(&row.join(" "));
            }
            return;
        }
        self.sink.table(table.rows, table.header);
    }
}
