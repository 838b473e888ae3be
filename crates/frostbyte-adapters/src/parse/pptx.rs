//! PPTX (PresentationML) with `zip` (bounded, see `zipguard`) and `quick-xml` events: one page per slide, in
//! presentation order (`p:sldIdLst`, falling back to slide file numbers).
//!
//! On a slide, the title placeholder (`title`, `ctrTitle`) is a level-1 heading, body placeholders give list
//! items at their paragraph level (`a:pPr lvl`), other text (subtitles, text boxes) gives paragraphs, and
//! `a:tbl` gives a table (header when `firstRow` is set). Shapes come in document (z-) order. Speaker notes,
//! pictures, media, charts, embedded objects and macros are recorded as dropped.

use std::collections::BTreeMap;

use frostbyte_core::document::{DroppedContent, DroppedKind};
use quick_xml::events::{BytesStart, Event};

use super::ooxml::{
    attr, core_title, has_text_runs, local, malformed, prefixed_attr, reader, relationships, resolve_ref,
};
use super::zipguard::ZipDoc;
use super::{ParseError, ParseLimits, Sink};

pub const VERSION: &str = "1.0.0";

pub(crate) fn parse(bytes: &[u8], limits: &ParseLimits, sink: &mut Sink) -> Result<(), ParseError> {
    let mut zip = ZipDoc::open(bytes, limits)?;
    let presentation = zip.read_required("ppt/presentation.xml", "ppt/presentation.xml")?;
    let slides = slide_order(&mut zip, &presentation)?;
    if let Some(title) = core_title(&mut zip)? {
        sink.title(&title);
    }
    let total = slides.len();
    for (i, part) in slides.iter().take(limits.max_pages).enumerate() {
        sink.check()?;
        if sink.is_full() {
            break;
        }
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        sink.begin_page(number);
        let Some(xml) = zip.read(part)? else {
            sink.dropped(DroppedContent::new(
                DroppedKind::Unreadable,
                format!("slide {number}"),
                "the slide part is missing",
            ));
            continue;
        };
        read_slide(&xml, sink)?;
    }
    if total > limits.max_pages && !sink.is_full() {
        sink.dropped(DroppedContent::new(
            DroppedKind::Truncated,
            format!("slides {}-{total}", limits.max_pages + 1),
            format!("the presentation has {total} slides; only the first {} were parsed", limits.max_pages),
        ));
    }
    let notes: Vec<String> = zip
        .entries()
        .iter()
        .filter(|(n, _)| n.starts_with("ppt/notesSlides/") && n.ends_with(".xml"))
        .map(|(n, _)| n.clone())
        .collect();
    let mut notes_with_text = 0;
    for name in notes {
        if zip.read(&name)?.is_some_and(|xml| has_text_runs(&xml)) {
            notes_with_text += 1;
        }
    }
    if notes_with_text > 0 {
        sink.dropped(DroppedContent::new(
            DroppedKind::Annotation,
            "ppt/notesSlides/",
            format!("speaker notes of {notes_with_text} slides were not extracted"),
        ));
    }
    for dropped in zip.dropped_parts("ppt") {
        sink.dropped(dropped);
    }
    Ok(())
}

/// The slide parts in presentation order.
fn slide_order(zip: &mut ZipDoc<'_>, presentation: &[u8]) -> Result<Vec<String>, ParseError> {
    let rels = match zip.read("ppt/_rels/presentation.xml.rels")? {
        Some(xml) => relationships(&xml, "ppt")?,
        None => BTreeMap::new(),
    };
    let mut reader = reader(presentation);
    let mut buf = Vec::new();
    let mut order = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|_| malformed("ppt/presentation.xml"))? {
            Event::Start(e) | Event::Empty(e) if local(e.name().as_ref()) == "sldId" => {
                if let Some(target) = prefixed_attr(&e, "id").and_then(|id| rels.get(&id))
                    && zip.contains(target)
                    && !order.contains(target)
                {
                    order.push(target.clone());
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if order.is_empty() {
        // No usable slide list: every slide part, by number.
        let mut numbered: Vec<(u32, String)> = zip
            .entries()
            .iter()
            .filter_map(|(name, _)| {
                let n = name.strip_prefix("ppt/slides/slide")?.strip_suffix(".xml")?.parse().ok()?;
                Some((n, name.clone()))
            })
            .collect();
        numbered.sort();
        order = numbered.into_iter().map(|(_, name)| name).collect();
    }
    Ok(order)
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: Option<String>,
    header: bool,
}

/// A placeholder's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Title,
    Body,
    Other,
}

fn role(e: &BytesStart<'_>) -> Role {
    match attr(e, "type").as_deref() {
        Some("title" | "ctrTitle") => Role::Title,
        // A placeholder without a type is a content ("obj") placeholder.
        None | Some("body" | "obj") => Role::Body,
        Some(_) => Role::Other,
    }
}

fn read_slide(xml: &[u8], sink: &mut Sink) -> Result<(), ParseError> {
    let mut reader = reader(xml);
    let mut buf = Vec::new();
    // Open shapes: their placeholder role, if any.
    let mut shapes: Vec<Option<Role>> = Vec::new();
    let mut para: Option<(String, usize)> = None;
    let mut table: Option<Table> = None;
    let mut in_text = false;
    let mut depth = 0usize;
    let mut skip_from: Option<usize> = None;
    loop {
        sink.tick()?;
        let event = reader.read_event_into(&mut buf).map_err(|_| malformed("slide"))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if skip_from.is_some() {
                    buf.clear();
                    continue;
                }
                let name = e.name();
                match local(name.as_ref()) {
                    "Fallback" => skip_from = Some(depth),
                    "sp" | "graphicFrame" | "cxnSp" => shapes.push(None),
                    "p" => para = Some((String::new(), 0)),
                    "t" => in_text = true,
                    "tbl" => table = Some(Table::default()),
                    "tr" => {
                        if let Some(t) = &mut table {
                            t.row.clear();
                        }
                    }
                    "tc" => {
                        if let Some(t) = &mut table {
                            t.cell = Some(String::new());
                        }
                    }
                    other => attributes(other, &e, &mut shapes, &mut para, &mut table),
                }
            }
            Event::Empty(e) if skip_from.is_none() => {
                let name = e.name();
                attributes(local(name.as_ref()), &e, &mut shapes, &mut para, &mut table);
            }
            Event::Text(t) if in_text && skip_from.is_none() => {
                if let Some((text, _)) = &mut para {
                    text.push_str(&t);
                }
            }
            Event::GeneralRef(r) if in_text && skip_from.is_none() => {
                if let (Some((text, _)), Some(c)) = (&mut para, resolve_ref(&r)) {
                    text.push(c);
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
                    "sp" | "graphicFrame" | "cxnSp" => {
                        shapes.pop();
                    }
                    "t" => in_text = false,
                    "p" => {
                        let Some((text, level)) = para.take() else { continue };
                        if let Some(cell) = table.as_mut().and_then(|t| t.cell.as_mut()) {
                            if !cell.is_empty() {
                                cell.push('\n');
                            }
                            cell.push_str(&text);
                            continue;
                        }
                        match shapes.last().copied().flatten() {
                            Some(Role::Title) => {
                                if !sink.has_title() && !text.trim().is_empty() {
                                    sink.title(&text);
                                }
                                sink.heading(1, &text);
                            }
                            Some(Role::Body) => sink.list_item(level, &text),
                            Some(Role::Other) | None => sink.paragraph(&text),
                        }
                    }
                    "tc" => {
                        if let Some(t) = &mut table {
                            let cell = t.cell.take().unwrap_or_default();
                            t.row.push(cell);
                        }
                    }
                    "tr" => {
                        if let Some(t) = &mut table {
                            let row = std::mem::take(&mut t.row);
                            t.rows.push(row);
                        }
                    }
                    "tbl" => {
                        if let Some(t) = table.take() {
                            sink.table(t.rows, t.header);
                        }
                    }
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

/// Elements that carry what the walk needs in attributes.
fn attributes(
    name: &str,
    e: &BytesStart<'_>,
    shapes: &mut [Option<Role>],
    para: &mut Option<(String, usize)>,
    table: &mut Option<Table>,
) {
    match name {
        "ph" => {
            if let Some(shape) = shapes.last_mut() {
                *shape = Some(role(e));
            }
        }
        "pPr" => {
            if let Some((_, level)) = para {
                *level = attr(e, "lvl").and_then(|l| l.parse().ok()).unwrap_or(0);
            }
        }
        "br" => {
            if let Some((text, _)) = para {
                text.push('\n');
            }
        }
        "tblPr" => {
            if let Some(t) = table {
                t.header = matches!(attr(e, "firstRow").as_deref(), Some("1" | "true"));
            }
        }
        _ => {}
    }
}
