//! Markdown (CommonMark with GitHub tables, strikethrough, task lists and footnotes) through `pulldown-cmark`'s
//! event stream: headings with levels, paragraphs, list items with depth (a parent item comes before its
//! children), fenced and indented code with its language, tables with their header row, YAML front matter as
//! code. Raw HTML blocks are dropped with a record (they may hold scripts); images keep their alt text and are
//! recorded. The first level-1 heading is the title.

use frostbyte_core::document::{DroppedContent, DroppedKind};
use pulldown_cmark::{CodeBlockKind, Event, MetadataBlockKind, Options, Parser, Tag, TagEnd};

use super::encoding::decode;
use super::{ParseError, Sink};

pub const VERSION: &str = "1.0.0";

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
    header: bool,
}

#[derive(Default)]
struct State {
    /// Open headings: the level and text.
    heading: Option<(u8, String)>,
    paragraph: Option<String>,
    /// Open list items, outermost first; each holds text not yet written.
    items: Vec<String>,
    /// Open lists.
    lists: usize,
    code: Option<(Option<String>, String)>,
    table: Option<Table>,
    html_blocks: usize,
    html_bytes: u64,
    in_html_block: bool,
    /// Inside inline `<script>` or `<style>` tags, whose content CommonMark reads as ordinary text.
    in_inline_script: bool,
    inline_scripts: usize,
    images: usize,
    title: Option<String>,
}

impl State {
    /// Where inline text goes now.
    fn target(&mut self) -> Option<&mut String> {
        if let Some((_, text)) = &mut self.code {
            return Some(text);
        }
        if let Some(table) = &mut self.table {
            return Some(&mut table.cell);
        }
        if let Some((_, text)) = &mut self.heading {
            return Some(text);
        }
        if let Some(item) = self.items.last_mut() {
            return Some(item);
        }
        self.paragraph.as_mut()
    }

    fn push_text(&mut self, text: &str) {
        if let Some(target) = self.target() {
            target.push_str(text);
        }
    }

    /// Writes the innermost open item's pending text (before a nested list or a code block inside it).
    fn flush_item(&mut self, sink: &mut Sink) {
        let depth = self.lists.saturating_sub(1);
        if let Some(item) = self.items.last_mut()
            && !item.trim().is_empty()
        {
            sink.list_item(depth, item);
            item.clear();
        }
    }
}

pub(crate) fn parse(bytes: &[u8], charset: Option<&str>, sink: &mut Sink) -> Result<(), ParseError> {
    let decoded = decode(bytes, charset);
    sink.check()?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut s = State::default();
    for event in Parser::new_ext(&decoded.text, options) {
        sink.tick()?;
        if sink.is_full() {
            break;
        }
        match event {
            Event::Start(tag) => start(&mut s, tag, sink),
            Event::End(tag) => end(&mut s, tag, sink),
            Event::Text(_) | Event::Code(_) if s.in_inline_script => {}
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => s.push_text(&t),
            Event::SoftBreak | Event::HardBreak => {
                let br = if s.code.is_some() { "\n" } else { " " };
                s.push_text(br);
            }
            Event::Html(html) if s.in_html_block => s.html_bytes += html.len() as u64,
            Event::InlineHtml(tag) => {
                let tag = tag.trim_start().to_ascii_lowercase();
                if tag.starts_with("<script") || tag.starts_with("<style") {
                    s.in_inline_script = true;
                    s.inline_scripts += 1;
                } else if tag.starts_with("</script") || tag.starts_with("</style") {
                    s.in_inline_script = false;
                }
            }
            Event::Html(_) | Event::FootnoteReference(_) | Event::Rule => {}
            Event::TaskListMarker(done) => s.push_text(if done { "[x] " } else { "[ ] " }),
        }
    }
    if let Some(title) = &s.title {
        sink.title(title);
    }
    if s.html_blocks > 0 {
        sink.dropped(
            DroppedContent::new(
                DroppedKind::Unsupported,
                "markdown",
                format!("{} raw HTML blocks were not included (they may hold scripts)", s.html_blocks),
            )
            .with_bytes(s.html_bytes),
        );
    }
    if s.inline_scripts > 0 {
        sink.dropped(DroppedContent::new(
            DroppedKind::Script,
            "markdown",
            format!("{} inline script or style elements were not included", s.inline_scripts),
        ));
    }
    if s.images > 0 {
        sink.dropped(DroppedContent::new(
            DroppedKind::Image,
            "markdown",
            format!("{} images were not extracted (their alt text is kept)", s.images),
        ));
    }
    if let Some(dropped) = decoded.dropped() {
        sink.dropped(dropped);
    }
    Ok(())
}

fn start(s: &mut State, tag: Tag<'_>, sink: &mut Sink) {
    match tag {
        Tag::Heading { level, .. } => {
            if s.items.is_empty() && s.table.is_none() {
                s.heading = Some((level as u8, String::new()));
            }
        }
        Tag::Paragraph => {
            if s.items.is_empty() && s.table.is_none() && s.heading.is_none() {
                s.paragraph = Some(String::new());
            } else {
                s.push_text(" ");
            }
        }
        Tag::List(_) => {
            s.flush_item(sink);
            s.lists += 1;
        }
        Tag::Item => s.items.push(String::new()),
        Tag::CodeBlock(kind) => {
            s.flush_item(sink);
            let lang = match kind {
                CodeBlockKind::Fenced(info) => info.split_whitespace().next().map(str::to_owned),
                CodeBlockKind::Indented => None,
            };
            s.code = Some((lang, String::new()));
        }
        Tag::MetadataBlock(kind) => {
            let lang = match kind {
                MetadataBlockKind::YamlStyle => "yaml",
                MetadataBlockKind::PlusesStyle => "toml",
            };
            s.code = Some((Some(lang.to_owned()), String::new()));
        }
        Tag::Table(_) => {
            s.flush_item(sink);
            s.table = Some(Table::default());
        }
        Tag::TableHead => {
            if let Some(t) = &mut s.table {
                t.header = true;
            }
        }
        Tag::TableCell => {
            if let Some(t) = &mut s.table {
                t.cell.clear();
            }
        }
        Tag::TableRow => {}
        Tag::HtmlBlock => {
            s.html_blocks += 1;
            s.in_html_block = true;
        }
        Tag::Image { .. } => s.images += 1,
        Tag::BlockQuote(_)
        | Tag::FootnoteDefinition(_)
        | Tag::DefinitionList
        | Tag::DefinitionListTitle
        | Tag::DefinitionListDefinition
        | Tag::Emphasis
        | Tag::Strong
        | Tag::Strikethrough
        | Tag::Superscript
        | Tag::Subscript
        | Tag::Link { .. } => {}
    }
}

fn end(s: &mut State, tag: TagEnd, sink: &mut Sink) {
    match tag {
        TagEnd::Heading(_) => {
            if let Some((level, text)) = s.heading.take() {
                if level == 1 && s.title.is_none() {
                    s.title = Some(text.clone());
                }
                sink.heading(level, &text);
            } else {
                s.push_text(" ");
            }
        }
        TagEnd::Paragraph => match s.paragraph.take() {
            Some(text) => sink.paragraph(&text),
            None => s.push_text(" "),
        },
        TagEnd::List(_) => s.lists = s.lists.saturating_sub(1),
        TagEnd::Item => {
            s.flush_item(sink);
            s.items.pop();
        }
        TagEnd::CodeBlock | TagEnd::MetadataBlock(_) => {
            if let Some((lang, text)) = s.code.take() {
                sink.code(lang.as_deref(), &text);
            }
        }
        TagEnd::TableCell => {
            if let Some(t) = &mut s.table {
                let cell = std::mem::take(&mut t.cell);
                t.row.push(cell);
            }
        }
        TagEnd::TableHead | TagEnd::TableRow => {
            if let Some(t) = &mut s.table {
                let row = std::mem::take(&mut t.row);
                t.rows.push(row);
            }
        }
        TagEnd::Table => {
            if let Some(t) = s.table.take() {
                sink.table(t.rows, t.header);
            }
        }
        TagEnd::HtmlBlock => s.in_html_block = false,
        TagEnd::BlockQuote(_)
        | TagEnd::FootnoteDefinition
        | TagEnd::DefinitionList
        | TagEnd::DefinitionListTitle
        | TagEnd::DefinitionListDefinition
        | TagEnd::Emphasis
        | TagEnd::Strong
        | TagEnd::Strikethrough
        | TagEnd::Superscript
        | TagEnd::Subscript
        | TagEnd::Link
        | TagEnd::Image => {}
    }
}
