//! HTML through `html5ever`, the WHATWG parsing algorithm browsers use (so tag soup becomes the tree a browser
//! would build), walked iteratively (deep nesting never deepens the stack).
//!
//! Kept: `h1`–`h6` as headings, paragraphs and other block containers as paragraphs, `li` as list items with
//! their list depth, `pre` as code (language from a `language-*` class), tables as rows of cells (header from
//! `thead` or an all-`th` first row; a table nested in a cell is flattened into the cell), `<title>` as the
//! title. Dropped, with one record per kind and count: scripts, styles, `noscript`, templates, navigation,
//! frames and embedded objects, media, images, SVG and canvas, form controls, comments, and elements hidden
//! with `hidden` or an inline `display:none` / `visibility:hidden` (hidden text is a known prompt-injection
//! carrier and invisible to readers).

use std::collections::BTreeMap;

use frostbyte_core::document::{DroppedContent, DroppedKind};
use html5ever::tendril::{StrTendril, TendrilSink};
use html5ever::{ParseOpts, parse_document};
use markup5ever_rcdom::{Handle, NodeData, RcDom};

use super::encoding::decode;
use super::{ParseError, Sink};

pub const VERSION: &str = "1.0.0";

/// How much input the HTML parser gets between deadline checks.
const FEED_BYTES: usize = 16 * 1024;

/// What an element does to the output, decided when the walk enters it; undone when it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Nothing,
    /// A block boundary on both sides.
    Boundary,
    Heading,
    Item,
    List,
    Code,
    Table,
    NestedTable,
    Row,
    Cell,
    Head,
    Title,
}

#[derive(Debug)]
enum Frame {
    /// Text outside any block frame: written as a paragraph at the next block boundary.
    Root(String),
    Heading(u8, String),
    Item(usize, String),
    Code(Option<String>, String),
    Cell(String),
}

impl Frame {
    fn text(&mut self) -> &mut String {
        match self {
            Frame::Root(t) | Frame::Heading(_, t) | Frame::Item(_, t) | Frame::Code(_, t) | Frame::Cell(t) => t,
        }
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    /// Whether every cell of the current row is a `th`.
    row_all_th: bool,
    in_thead: bool,
    header: bool,
}

struct Walker<'s> {
    sink: &'s mut Sink,
    frames: Vec<Frame>,
    lists: usize,
    tables: Vec<Table>,
    nested_tables: usize,
    in_head: bool,
    title: Option<String>,
    /// Dropped things by (kind, what): count.
    dropped: BTreeMap<(u8, &'static str), usize>,
}

pub(crate) fn parse(bytes: &[u8], charset: Option<&str>, sink: &mut Sink) -> Result<(), ParseError> {
    let meta = charset.map(str::to_owned).or_else(|| meta_charset(bytes));
    let decoded = decode(bytes, meta.as_deref());
    // Fed in slices with the deadline checked between them: the tree builder's scope checks are quadratic in
    // nesting depth, so 100,000 nested elements take minutes, and only the deadline bounds that.
    let mut parser = parse_document(RcDom::default(), ParseOpts::default());
    let mut rest: &str = &decoded.text;
    while !rest.is_empty() {
        let mut end = rest.len().min(FEED_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        parser.process(StrTendril::from_slice(&rest[..end]));
        rest = &rest[end..];
        sink.check()?;
    }
    let dom = parser.finish();
    sink.check()?;
    let mut w = Walker {
        sink,
        frames: vec![Frame::Root(String::new())],
        lists: 0,
        tables: Vec::new(),
        nested_tables: 0,
        in_head: false,
        title: None,
        dropped: BTreeMap::new(),
    };
    // `dom` must outlive the walk: dropping the last handle to a node empties its whole subtree, even nodes
    // that other handles still point at.
    w.walk(dom.document.clone())?;
    w.boundary();
    if let Some(title) = w.title.take() {
        w.sink.title(&title);
    }
    for ((rank, what), count) in std::mem::take(&mut w.dropped) {
        let kind = match rank {
            0 => DroppedKind::Script,
            1 => DroppedKind::Embedded,
            2 => DroppedKind::Media,
            3 => DroppedKind::Image,
            4 => DroppedKind::Annotation,
            _ => DroppedKind::Other,
        };
        w.sink.dropped(DroppedContent::new(kind, "html", format!("{count} {what} removed")));
    }
    if let Some(dropped) = decoded.dropped() {
        w.sink.dropped(dropped);
    }
    Ok(())
}

impl Walker<'_> {
    fn walk(&mut self, root: Handle) -> Result<(), ParseError> {
        enum Step {
            Enter(Handle),
            Leave(Exit),
        }
        let mut stack = vec![Step::Enter(root)];
        while let Some(step) = stack.pop() {
            self.sink.tick()?;
            if self.sink.is_full() {
                return Ok(());
            }
            let node = match step {
                Step::Leave(exit) => {
                    self.leave(exit);
                    continue;
                }
                Step::Enter(node) => node,
            };
            let exit = match &node.data {
                NodeData::Text { contents } => {
                    let text = contents.borrow();
                    self.frames.last_mut().expect("the root frame stays").text().push_str(&text);
                    continue;
                }
                NodeData::Comment { .. } => {
                    self.drop_thing(4, "HTML comments");
                    continue;
                }
                NodeData::Element { name, attrs, .. } => {
                    let attrs = attrs.borrow();
                    let attr = |n: &str| attrs.iter().find(|a| &*a.name.local == n).map(|a| a.value.to_string());
                    match self.enter(name.local.as_ref(), &attr) {
                        Some(exit) => exit,
                        None => continue,
                    }
                }
                NodeData::Document => Exit::Nothing,
                NodeData::Doctype { .. } | NodeData::ProcessingInstruction { .. } => continue,
            };
            stack.push(Step::Leave(exit));
            for child in node.children.borrow().iter().rev() {
                stack.push(Step::Enter(child.clone()));
            }
        }
        Ok(())
    }

    /// Handles entering an element; `None` skips it and its subtree.
    fn enter(&mut self, tag: &str, attr: &dyn Fn(&str) -> Option<String>) -> Option<Exit> {
        if let Some((rank, what)) = skipped(tag) {
            self.drop_thing(rank, what);
            return None;
        }
        if attr("hidden").is_some() || attr("style").is_some_and(|s| hides(&s)) {
            self.drop_thing(5, "hidden elements");
            return None;
        }
        if self.in_head && tag != "title" {
            return Some(Exit::Nothing);
        }
        let top_is_root = matches!(self.frames.last(), Some(Frame::Root(_)));
        let top_is_item = matches!(self.frames.last(), Some(Frame::Item(..)));
        Some(match tag {
            "head" => {
                self.in_head = true;
                Exit::Head
            }
            "title" => {
                // The title's text must not land in the body: collect it in a frame of its own.
                self.frames.push(Frame::Cell(String::new()));
                Exit::Title
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" if top_is_root => {
                self.boundary();
                let level = tag[1..].parse().unwrap_or(1);
                self.frames.push(Frame::Heading(level, String::new()));
                Exit::Heading
            }
            "ul" | "ol" | "menu" | "dir" => {
                if top_is_item {
                    self.flush_item();
                } else {
                    self.boundary();
                }
                self.lists += 1;
                Exit::List
            }
            "li" if top_is_root || top_is_item => {
                if top_is_item {
                    self.flush_item();
                } else {
                    self.boundary();
                }
                self.frames.push(Frame::Item(self.lists.saturating_sub(1), String::new()));
                Exit::Item
            }
            "pre" | "listing" | "xmp" | "plaintext" if top_is_root || top_is_item => {
                if top_is_item {
                    self.flush_item();
                } else {
                    self.boundary();
                }
                let lang = attr("class").and_then(|c| language_from_class(&c));
                self.frames.push(Frame::Code(lang, String::new()));
                Exit::Code
            }
            "code" => {
                if let (Some(Frame::Code(lang @ None, _)), Some(class)) = (self.frames.last_mut(), attr("class")) {
                    *lang = language_from_class(&class);
                }
                Exit::Nothing
            }
            "table" if self.nested_tables == 0 && !matches!(self.frames.last(), Some(Frame::Cell(_))) => {
                if top_is_item {
                    self.flush_item();
                } else {
                    self.boundary();
                }
                self.tables.push(Table::default());
                Exit::Table
            }
            "table" => {
                self.nested_tables += 1;
                self.space();
                Exit::NestedTable
            }
            "thead" if self.nested_tables == 0 => {
                if let Some(t) = self.tables.last_mut() {
                    t.in_thead = true;
                }
                Exit::Nothing
            }
            "tbody" | "tfoot" if self.nested_tables == 0 => {
                if let Some(t) = self.tables.last_mut() {
                    t.in_thead = false;
                }
                Exit::Nothing
            }
            "tr" if self.nested_tables == 0 && !self.tables.is_empty() => {
                if let Some(t) = self.tables.last_mut() {
                    t.row.clear();
                    t.row_all_th = true;
                }
                Exit::Row
            }
            "td" | "th" if self.nested_tables == 0 && !self.tables.is_empty() => {
                if let Some(t) = self.tables.last_mut() {
                    t.row_all_th &= tag == "th";
                }
                self.frames.push(Frame::Cell(String::new()));
                Exit::Cell
            }
            "br" => {
                let br = if matches!(self.frames.last(), Some(Frame::Code(..))) { "\n" } else { " " };
                self.frames.last_mut().expect("the root frame stays").text().push_str(br);
                Exit::Nothing
            }
            "img" | "picture" => {
                self.drop_thing(3, "images");
                return None;
            }
            t if is_block(t) => {
                self.boundary();
                Exit::Boundary
            }
            _ => Exit::Nothing,
        })
    }

    fn leave(&mut self, exit: Exit) {
        match exit {
            Exit::Nothing => {}
            Exit::List => {
                self.lists = self.lists.saturating_sub(1);
                self.boundary();
            }
            Exit::Boundary => self.boundary(),
            Exit::Head => self.in_head = false,
            Exit::Heading => {
                if let Some(Frame::Heading(level, text)) = self.frames.pop() {
                    self.sink.heading(level, &text);
                }
            }
            Exit::Item => {
                if let Some(Frame::Item(depth, text)) = self.frames.pop() {
                    self.sink.list_item(depth, &text);
                }
            }
            Exit::Code => {
                if let Some(Frame::Code(lang, text)) = self.frames.pop() {
                    self.sink.code(lang.as_deref(), &text);
                }
            }
            Exit::Title => {
                if let Some(Frame::Cell(text)) = self.frames.pop()
                    && self.title.is_none()
                {
                    self.title = Some(text);
                }
            }
            Exit::Cell => {
                if let Some(Frame::Cell(text)) = self.frames.pop()
                    && let Some(t) = self.tables.last_mut()
                {
                    t.row.push(text);
                }
            }
            Exit::Row => {
                if let Some(t) = self.tables.last_mut() {
                    let row = std::mem::take(&mut t.row);
                    if t.rows.is_empty() && !row.is_empty() && (t.in_thead || t.row_all_th) {
                        t.header = true;
                    }
                    t.rows.push(row);
                }
            }
            Exit::Table => {
                if let Some(t) = self.tables.pop() {
                    self.boundary();
                    self.sink.table(t.rows, t.header);
                }
            }
            Exit::NestedTable => {
                self.nested_tables -= 1;
                self.space();
            }
        }
    }

    /// A block boundary: pending root text becomes a paragraph; inside a block frame, a space.
    fn boundary(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Root(text)) => {
                if !text.trim().is_empty() {
                    self.sink.paragraph(text);
                }
                text.clear();
            }
            Some(frame) => frame.text().push(' '),
            None => {}
        }
    }

    fn space(&mut self) {
        self.frames.last_mut().expect("the root frame stays").text().push(' ');
    }

    /// Writes the open list item's text so far (before a nested list, table or code block inside it).
    fn flush_item(&mut self) {
        if let Some(Frame::Item(depth, text)) = self.frames.last_mut() {
            if !text.trim().is_empty() {
                self.sink.list_item(*depth, text);
            }
            text.clear();
        }
    }

    fn drop_thing(&mut self, rank: u8, what: &'static str) {
        *self.dropped.entry((rank, what)).or_default() += 1;
    }
}

/// Elements skipped with their subtree: the dropped-record rank (kind) and what to call them.
fn skipped(tag: &str) -> Option<(u8, &'static str)> {
    Some(match tag {
        "script" => (0, "scripts"),
        "iframe" | "frame" | "frameset" | "object" | "embed" | "applet" => (1, "frames and embedded objects"),
        "audio" | "video" => (2, "audio and video elements"),
        "svg" | "canvas" => (3, "SVG and canvas graphics"),
        "style" => (5, "style sheets"),
        "noscript" => (5, "noscript fallbacks"),
        "template" => (5, "templates"),
        "nav" => (5, "navigation blocks"),
        "select" | "datalist" | "button" | "input" | "textarea" => (5, "form controls"),
        _ => return None,
    })
}

/// Elements that start and end a block of text.
fn is_block(tag: &str) -> bool {
    matches!(
        tag,
        "p" | "div"
            | "section"
            | "article"
            | "main"
            | "header"
            | "footer"
            | "aside"
            | "blockquote"
            | "figure"
            | "figcaption"
            | "caption"
            | "address"
            | "details"
            | "summary"
            | "dl"
            | "dt"
            | "dd"
            | "hr"
            | "form"
            | "fieldset"
            | "legend"
            | "center"
            | "body"
            | "html"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "li"
            | "pre"
            | "tr"
            | "td"
            | "th"
            | "option"
    )
}

/// An inline style that hides the element.
fn hides(style: &str) -> bool {
    let s: String = style.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    s.contains("display:none") || s.contains("visibility:hidden")
}

fn language_from_class(class: &str) -> Option<String> {
    class.split_whitespace().find_map(|c| {
        c.strip_prefix("language-").or_else(|| c.strip_prefix("lang-")).filter(|l| !l.is_empty()).map(str::to_owned)
    })
}

/// The charset a `<meta charset>` or `<meta http-equiv content="...; charset=...">` declares in the first 1 KiB.
fn meta_charset(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    let at = head.find("charset=")? + "charset=".len();
    let value: String = head[at..]
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!value.is_empty()).then_some(value)
}
