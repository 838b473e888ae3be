//! JSON: nesting depth is checked by a byte scan **before** parsing (so 100,000 nested brackets are an error,
//! not a stack overflow), then `serde_json` reads the value keeping object keys in source order.
//!
//! Rendering: a top-level object gives one section per key (a heading with the key, unless the value is a
//! scalar, which gives a `key: value` paragraph); an array of flat objects (records) gives a table whose columns
//! are the keys in first-seen order, in row groups; everything else gives one paragraph per leaf, written as
//! its key path: `a.b[0].c: value`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::encoding::decode;
use super::sink::TableWriter;
use super::{MAX_JSON_DEPTH, ParseError, ParseLimits, Sink};

pub const VERSION: &str = "1.0.0";

/// Most columns a table of records may have; records with more distinct keys are rendered as key paths.
const MAX_RECORD_COLUMNS: usize = 64;

/// A JSON value with object keys in source order (`serde_json`'s own `Value` sorts them unless a crate-wide
/// feature is switched on, which would change every other user of `serde_json` in the binary).
enum Node {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn is_scalar(&self) -> bool {
        !matches!(self, Node::Array(_) | Node::Object(_))
    }

    fn scalar_text(&self) -> String {
        match self {
            Node::Null => "null".to_owned(),
            Node::Bool(b) => b.to_string(),
            Node::Number(n) => n.clone(),
            Node::String(s) => s.clone(),
            Node::Array(a) if a.is_empty() => "[]".to_owned(),
            Node::Object(o) if o.is_empty() => "{}".to_owned(),
            Node::Array(_) | Node::Object(_) => String::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Object(entries))
    }
}

pub(crate) fn parse(bytes: &[u8], limits: &ParseLimits, sink: &mut Sink) -> Result<(), ParseError> {
    let max_depth = limits.max_json_depth.min(MAX_JSON_DEPTH);
    if depth_exceeds(bytes, max_depth) {
        return Err(ParseError::limit(format!("JSON nesting depth exceeds {max_depth}")));
    }
    // RFC 8259 JSON is UTF-8; a BOM (UTF-8 or UTF-16) is tolerated.
    let decoded = decode(bytes, Some("utf-8"));
    if decoded.replaced > 0 {
        return Err(ParseError::corrupted("invalid JSON: the text is not valid UTF-8"));
    }
    let root: Node = serde_json::from_str(&decoded.text)
        .map_err(|e| ParseError::corrupted(format!("invalid JSON at line {} column {}", e.line(), e.column())))?;
    sink.check()?;
    match &root {
        Node::Object(entries) => {
            for (key, value) in entries {
                if sink.is_full() {
                    break;
                }
                if value.is_scalar() {
                    sink.paragraph(&format!("{}: {}", path_key("", key), value.scalar_text()));
                } else {
                    sink.heading(1, key);
                    render(value, &path_key("", key), sink)?;
                }
            }
        }
        other => render(other, "", sink)?,
    }
    Ok(())
}

/// Renders a value under `path`: records as a table, anything else as one paragraph per leaf. Iterative, so
/// the depth of the value never becomes the depth of the stack.
fn render(value: &Node, path: &str, sink: &mut Sink) -> Result<(), ParseError> {
    let mut stack: Vec<(String, &Node)> = vec![(path.to_owned(), value)];
    while let Some((path, node)) = stack.pop() {
        sink.tick()?;
        if sink.is_full() {
            break;
        }
        if let Some(columns) = record_columns(node) {
            let Node::Array(items) = node else { unreachable!("records are arrays") };
            if !path.is_empty() && path.contains(['.', '[']) {
                sink.paragraph(&format!("{path}:"));
            }
            let mut writer = TableWriter::new(Some(columns.iter().map(|c| (*c).to_owned()).collect()));
            for item in items {
                let Node::Object(entries) = item else { continue };
                let row = columns
                    .iter()
                    .map(|c| entries.iter().find(|(k, _)| k == c).map(|(_, v)| v.scalar_text()).unwrap_or_default())
                    .collect();
                writer.row(sink, row);
            }
            writer.finish(sink);
            continue;
        }
        match node {
            Node::Array(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push((format!("{path}[{i}]"), item));
                }
            }
            Node::Object(entries) if !entries.is_empty() => {
                for (key, item) in entries.iter().rev() {
                    stack.push((path_key(&path, key), item));
                }
            }
            leaf if path.is_empty() => sink.paragraph(&leaf.scalar_text()),
            leaf => sink.paragraph(&format!("{path}: {}", leaf.scalar_text())),
        }
    }
    Ok(())
}

/// The columns of an array of records: non-empty, every item an object of scalars, at most
/// [`MAX_RECORD_COLUMNS`] distinct keys (in first-seen order).
fn record_columns(node: &Node) -> Option<Vec<&str>> {
    let Node::Array(items) = node else { return None };
    if items.is_empty() {
        return None;
    }
    let mut columns: Vec<&str> = Vec::new();
    for item in items {
        let Node::Object(entries) = item else { return None };
        for (key, value) in entries {
            if !value.is_scalar() {
                return None;
            }
            if !columns.contains(&key.as_str()) {
                if columns.len() == MAX_RECORD_COLUMNS {
                    return None;
                }
                columns.push(key);
            }
        }
    }
    (!columns.is_empty()).then_some(columns)
}

/// `parent.key`, or `parent["key"]` when the key would be ambiguous in a path.
fn path_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && !key.contains(['.', '[', ']', '"', ':']) && !key.chars().any(char::is_whitespace);
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", serde_json::to_string(key).unwrap_or_default()),
    }
}

/// Whether bracket nesting goes deeper than `max` (strings and escapes skipped). Linear, no recursion.
pub(crate) fn depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether `bytes` are one JSON value (for sniffing): valid, or too deep to parse but bracket-shaped.
pub(crate) fn looks_like_json(bytes: &[u8]) -> bool {
    if depth_exceeds(bytes, MAX_JSON_DEPTH) {
        return true;
    }
    serde_json::from_slice::<de::IgnoredAny>(bytes).is_ok()
}
