//! PDF text layer through `lopdf` (pure Rust, maintained, hardened against decompression bombs and deep
//! nesting): one page span per page, the page text split into paragraphs at blank lines.
//!
//! Loading is bounded by `max_pdf_stream_bytes` per stream; encrypted files open when the user password is
//! empty (most "protected" PDFs only restrict printing) and are `UNSUPPORTED_FORMAT` otherwise. Text is read
//! from each page's content stream with the page's font encodings (ToUnicode maps included): `Tj`, `TJ`, `'`
//! and `"` show text; a large negative `TJ` adjustment is a space; a move to another line (`Td`/`TD` with a
//! vertical offset, `T*`, `Tm` to a new baseline, `ET`) is a line break. Text inside form XObjects and images
//! is not read (no OCR): pages with images, annotations or unreadable text get a record, and so do documents
//! with JavaScript or attached files. A panic inside `lopdf` is caught and reported as `FILE_CORRUPTED`.

use std::collections::BTreeMap;

use frostbyte_core::document::{DroppedContent, DroppedKind};
use lopdf::content::Content;
use lopdf::{Dictionary, Document, Encoding, LoadOptions, Object, ObjectId};

use super::{ParseError, ParseLimits, Sink, guarded};

pub const VERSION: &str = "1.0.0";

/// `TJ` adjustments below this (thousandths of an em, negative = move right) are word gaps.
const TJ_SPACE: f32 = -200.0;

pub(crate) fn parse(bytes: &[u8], limits: &ParseLimits, sink: &mut Sink) -> Result<(), ParseError> {
    if !bytes[..bytes.len().min(1024)].windows(5).any(|w| w == b"%PDF-") {
        return Err(ParseError::corrupted("not a PDF (no %PDF- header)"));
    }
    let options = LoadOptions { max_decompressed_size: Some(limits.max_pdf_stream_bytes), ..LoadOptions::default() };
    let doc = guarded("PDF", || Document::load_mem_with_options(bytes, options).map_err(|e| load_error(&e, limits)))?;
    if doc.is_encrypted() {
        return Err(ParseError::unsupported("the PDF is encrypted and needs a password"));
    }
    sink.check()?;
    let pages = guarded("PDF", || Ok(doc.get_pages()))?;
    if pages.is_empty() {
        return Err(ParseError::corrupted("the PDF has no readable pages"));
    }
    if let Some(title) = guarded("PDF", || Ok(info_title(&doc)))? {
        sink.title(&title);
    }
    let total = pages.len();
    let (mut read, mut failed) = (0usize, 0usize);
    for (&number, &page_id) in pages.iter().take(limits.max_pages) {
        sink.check()?;
        if sink.is_full() {
            break;
        }
        sink.begin_page(number);
        let page = guarded("PDF", || Ok(read_page(&doc, page_id, limits, sink)))??;
        read += 1;
        failed += usize::from(page.content_error.is_some() && page.text.trim().is_empty());
        let mut paragraph = String::new();
        for line in page.text.lines() {
            if line.trim().is_empty() {
                if !paragraph.is_empty() {
                    sink.paragraph(&paragraph);
                    paragraph.clear();
                }
            } else {
                paragraph.push_str(line);
                paragraph.push('\n');
            }
        }
        if !paragraph.is_empty() {
            sink.paragraph(&paragraph);
        }
        page.record(number, sink);
    }
    if read > 0 && failed == read {
        return Err(ParseError::corrupted("no page content of the PDF could be read (a truncated or damaged file?)"));
    }
    if total > limits.max_pages && !sink.is_full() {
        sink.dropped(DroppedContent::new(
            DroppedKind::Truncated,
            format!("pages {}-{total}", limits.max_pages + 1),
            format!("the document has {total} pages; only the first {} were parsed", limits.max_pages),
        ));
    }
    let (scripts, attachments) = guarded("PDF", || Ok(active_content(&doc)))?;
    if scripts > 0 {
        sink.dropped(DroppedContent::new(
            DroppedKind::Script,
            "document",
            format!("{scripts} JavaScript actions were not run or extracted"),
        ));
    }
    if attachments > 0 {
        sink.dropped(DroppedContent::new(
            DroppedKind::Embedded,
            "document",
            format!("{attachments} attached files were not extracted"),
        ));
    }
    Ok(())
}

/// What one page gave: its text and what could not be read.
#[derive(Default)]
struct PageText {
    text: String,
    /// Text-showing operations whose font was missing or whose bytes did not decode.
    unreadable: usize,
    /// The content stream was missing, too large or malformed (text up to the fault is kept).
    content_error: Option<&'static str>,
    images: usize,
    annotations: usize,
}

impl PageText {
    fn record(&self, number: u32, sink: &mut Sink) {
        let at = format!("page {number}");
        if let Some(why) = self.content_error {
            sink.dropped(DroppedContent::new(DroppedKind::Unreadable, at.clone(), why));
        }
        if self.unreadable > 0 {
            sink.dropped(DroppedContent::new(
                DroppedKind::Unreadable,
                at.clone(),
                format!("{} text runs used a font without a usable encoding", self.unreadable),
            ));
        }
        if self.images > 0 {
            sink.dropped(DroppedContent::new(
                DroppedKind::Image,
                at.clone(),
                format!("{} images were not extracted (no OCR in the text path)", self.images),
            ));
        }
        if self.annotations > 0 {
            sink.dropped(DroppedContent::new(
                DroppedKind::Annotation,
                at,
                format!("{} annotations or form fields were not extracted", self.annotations),
            ));
        }
    }
}

fn read_page(doc: &Document, page_id: ObjectId, limits: &ParseLimits, sink: &mut Sink) -> Result<PageText, ParseError> {
    let mut page = PageText {
        images: count_images(doc, page_id),
        annotations: doc
            .get_page_annotations(page_id)
            .map(|a| {
                a.iter().filter(|d| !d.get(b"Subtype").and_then(Object::as_name).is_ok_and(|s| s == b"Link")).count()
            })
            .unwrap_or(0),
        ..PageText::default()
    };
    if contents_missing(doc, page_id) {
        page.content_error = Some("the page content stream is missing (a truncated or damaged file?)");
        return Ok(page);
    }
    let fonts = doc.get_page_fonts(page_id).unwrap_or_default();
    let encodings: BTreeMap<Vec<u8>, Encoding<'_>> = fonts
        .into_iter()
        .filter_map(|(name, font)| {
            font.get_font_encoding_with_limit(doc, limits.max_pdf_stream_bytes).ok().map(|e| (name, e))
        })
        .collect();
    let content = match doc.get_page_content_with_limit(page_id, limits.max_pdf_stream_bytes) {
        Ok(content) => content,
        Err(lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. })) => {
            page.content_error = Some("the page content decompresses past the stream size limit");
            return Ok(page);
        }
        Err(_) => {
            page.content_error = Some("the page content stream could not be read");
            return Ok(page);
        }
    };
    let mut font: Option<&Encoding<'_>> = None;
    let mut line_y: Option<f32> = None;
    let text = &mut page.text;
    for op in Content::decode_iter(&content) {
        sink.tick()?;
        let Ok(op) = op else {
            page.content_error = Some("the page content stream is malformed after this point");
            break;
        };
        let operands = &op.operands;
        match op.operator.as_str() {
            "Tf" => font = operands.first().and_then(|o| o.as_name().ok()).and_then(|n| encodings.get(n)),
            "Tj" | "'" | "\"" | "TJ" => {
                if matches!(op.operator.as_str(), "'" | "\"") {
                    newline(text);
                }
                let shown = if op.operator == "\"" { operands.get(2) } else { operands.first() };
                let Some(shown) = shown else { continue };
                let Some(encoding) = font else {
                    page.unreadable += 1;
                    continue;
                };
                if show(text, encoding, shown).is_err() {
                    page.unreadable += 1;
                }
            }
            "T*" | "ET" => newline(text),
            "Td" | "TD" => {
                let dy = operands.get(1).and_then(|o| o.as_float().ok()).unwrap_or(0.0);
                if dy.abs() > 0.01 { newline(text) } else { space(text) }
            }
            "Tm" => {
                let y = operands.get(5).and_then(|o| o.as_float().ok());
                match (line_y, y) {
                    (Some(prev), Some(y)) if (prev - y).abs() <= 0.01 => space(text),
                    _ => newline(text),
                }
                line_y = y;
            }
            _ => {}
        }
    }
    Ok(page)
}

/// Appends the text of a `Tj` string or a `TJ` array.
fn show(text: &mut String, encoding: &Encoding<'_>, shown: &Object) -> Result<(), lopdf::Error> {
    match shown {
        Object::String(bytes, _) => text.push_str(&Document::decode_text(encoding, bytes)?),
        Object::Array(items) => {
            for item in items {
                match item {
                    Object::String(bytes, _) => text.push_str(&Document::decode_text(encoding, bytes)?),
                    Object::Integer(n) if (*n as f32) < TJ_SPACE => space(text),
                    Object::Real(n) if *n < TJ_SPACE => space(text),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn newline(text: &mut String) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
}

fn space(text: &mut String) {
    if !text.is_empty() && !text.ends_with([' ', '\n']) {
        text.push(' ');
    }
}

/// Whether the page names content streams that are not in the file.
fn contents_missing(doc: &Document, page_id: ObjectId) -> bool {
    let Ok(page) = doc.get_dictionary(page_id) else { return true };
    let missing = |o: &Object| o.as_reference().is_ok_and(|id| doc.get_object(id).is_err());
    match page.get(b"Contents") {
        Ok(Object::Array(items)) => items.iter().any(missing),
        Ok(other) => missing(other),
        Err(_) => false,
    }
}

/// Image XObjects in the page's resources.
fn count_images(doc: &Document, page_id: ObjectId) -> usize {
    let Ok((inline, ids)) = doc.get_page_resources(page_id) else { return 0 };
    let resources = inline.into_iter().chain(ids.into_iter().filter_map(|id| doc.get_dictionary(id).ok()));
    let mut images = 0;
    for dict in resources {
        let Ok(xobjects) = dict.get_deref(b"XObject", doc).and_then(Object::as_dict) else { continue };
        for (_, value) in xobjects.iter() {
            let stream_dict: Option<&Dictionary> = match value {
                Object::Reference(id) => doc.get_object(*id).ok().and_then(|o| o.as_stream().ok()).map(|s| &s.dict),
                Object::Stream(s) => Some(&s.dict),
                _ => None,
            };
            if stream_dict.is_some_and(|d| d.get(b"Subtype").and_then(Object::as_name).is_ok_and(|s| s == b"Image")) {
                images += 1;
            }
        }
    }
    images
}

/// JavaScript actions and embedded files anywhere in the document.
fn active_content(doc: &Document) -> (usize, usize) {
    let mut scripts = 0;
    let mut attachments = 0;
    for object in doc.objects.values() {
        let dict = match object {
            Object::Dictionary(d) => d,
            Object::Stream(s) => &s.dict,
            _ => continue,
        };
        let name_is = |key: &[u8], value: &[u8]| dict.get(key).and_then(Object::as_name).is_ok_and(|n| n == value);
        if name_is(b"S", b"JavaScript") {
            scripts += 1;
        }
        if name_is(b"Type", b"EmbeddedFile") {
            attachments += 1;
        }
    }
    (scripts, attachments)
}

/// The `/Title` of the document information dictionary.
fn info_title(doc: &Document) -> Option<String> {
    let info = doc.trailer.get_deref(b"Info", doc).and_then(Object::as_dict).ok()?;
    let title = info.get_deref(b"Title", doc).ok()?;
    lopdf::decode_text_string(title).ok().filter(|t| !t.trim().is_empty())
}

/// A load failure as a message with no document content (lopdf's own messages can quote names and keys).
fn load_error(e: &lopdf::Error, limits: &ParseLimits) -> ParseError {
    use lopdf::Error as E;
    match e {
        E::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. }) => ParseError::limit(format!(
            "a PDF stream decompresses past the limit of {} bytes",
            limits.max_pdf_stream_bytes
        )),
        E::InvalidPassword | E::Decryption(_) | E::UnsupportedSecurityHandler(_) | E::AlreadyEncrypted => {
            ParseError::unsupported("the PDF is encrypted and needs a password")
        }
        E::Unimplemented(_) => ParseError::unsupported("the PDF uses a feature the parser does not support"),
        E::Xref(_) | E::MissingXrefEntry | E::InvalidOffset(_) => ParseError::corrupted("invalid PDF xref"),
        E::Parse(_) | E::IndirectObject { .. } | E::ObjectIdMismatch | E::Syntax(_) => {
            ParseError::corrupted("invalid PDF syntax")
        }
        E::ReferenceCycle(_) | E::ReferenceLimit | E::RecursionLimit => {
            ParseError::corrupted("the PDF object graph is cyclic or too deep")
        }
        _ => ParseError::corrupted("invalid PDF structure"),
    }
}
