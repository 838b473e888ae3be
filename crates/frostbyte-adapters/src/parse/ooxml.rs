//! XML helpers shared by the Office Open XML parsers (DOCX, PPTX): a streaming `quick-xml` reader (no DOM, no
//! recursion, no custom entity expansion, so no billion-laughs), attribute lookup by local name, entity
//! references, package relationships and the core-properties title.
//!
//! Elements are matched by local name (`p`, `t`, `tbl`), not by prefix: producers are free to choose prefixes.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use super::ParseError;
use super::zipguard::ZipDoc;

pub(crate) fn reader(bytes: &[u8]) -> Reader<&[u8]> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().expand_empty_elements = false;
    reader
}

/// The local part of a qualified name: `w:p` → `p`.
pub(crate) fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

/// The unescaped value of the first attribute whose local name is `name`.
pub(crate) fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| local(a.key.as_ref()) == name)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
}

/// The value of an attribute with a namespace prefix and local name `name` (`r:id`, as opposed to `id`).
pub(crate) fn prefixed_attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref().split_once(':').is_some_and(|(_, l)| l == name))
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
}

/// A boolean OOXML attribute (`w:val="0"`, `"false"`, `"off"` are false; absent means true).
pub(crate) fn on_off(e: &BytesStart<'_>) -> bool {
    !matches!(attr(e, "val").as_deref(), Some("0" | "false" | "off"))
}

/// The text an entity or character reference stands for (the five XML entities and `&#...;`); anything else,
/// which a DTD would have to define, is ignored.
pub(crate) fn resolve_ref(r: &BytesRef<'_>) -> Option<char> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return Some(c);
    }
    quick_xml::escape::resolve_predefined_entity(r).and_then(|s| s.chars().next())
}

pub(crate) fn malformed(part: &str) -> ParseError {
    ParseError::corrupted(format!("malformed XML in the {part} part"))
}

/// A package relationships part (`_rels/*.rels`): id → target, resolved against `base_dir` (`ppt`).
pub(crate) fn relationships(bytes: &[u8], base_dir: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut reader = reader(bytes);
    let mut buf = Vec::new();
    let mut out = BTreeMap::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|_| malformed("relationships"))? {
            Event::Start(e) | Event::Empty(e) if local(e.name().as_ref()) == "Relationship" => {
                if attr(&e, "TargetMode").as_deref() == Some("External") {
                    continue;
                }
                if let (Some(id), Some(target)) = (attr(&e, "Id"), attr(&e, "Target")) {
                    out.insert(id, resolve_target(base_dir, &target));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// A relationship target as a zip entry name: absolute targets drop their `/`, relative ones are joined to the
/// base directory, and `..` segments are applied.
pub(crate) fn resolve_target(base_dir: &str, target: &str) -> String {
    let joined = match target.strip_prefix('/') {
        Some(absolute) => absolute.to_owned(),
        None => format!("{base_dir}/{target}"),
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The `dc:title` of `docProps/core.xml`, if the package has one.
pub(crate) fn core_title(zip: &mut ZipDoc<'_>) -> Result<Option<String>, ParseError> {
    let Some(bytes) = zip.read("docProps/core.xml")? else {
        return Ok(None);
    };
    let mut reader = reader(&bytes);
    let mut buf = Vec::new();
    let mut in_title = false;
    let mut title = String::new();
    loop {
        // A damaged core-properties part costs the title, not the document.
        let Ok(event) = reader.read_event_into(&mut buf) else {
            return Ok(None);
        };
        match event {
            Event::Start(e) if local(e.name().as_ref()) == "title" => in_title = true,
            Event::End(e) if local(e.name().as_ref()) == "title" => break,
            Event::Text(t) if in_title => title.push_str(&t),
            Event::GeneralRef(r) if in_title => title.extend(resolve_ref(&r)),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let title = title.trim();
    Ok((!title.is_empty()).then(|| title.to_owned()))
}

/// Whether an XML part shows any text (a `t` element), for deciding whether leaving it out loses anything.
pub(crate) fn has_text_runs(bytes: &[u8]) -> bool {
    let mut reader = reader(bytes);
    let mut buf = Vec::new();
    let mut in_t = false;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => in_t = local(e.name().as_ref()) == "t",
            Ok(Event::Text(t)) if in_t && !t.trim().is_empty() => return true,
            Ok(Event::End(_)) => in_t = false,
            Ok(Event::Eof) | Err(_) => return false,
            _ => {}
        }
        buf.clear();
    }
}
