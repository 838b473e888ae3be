//! Plain text: decoded (see `encoding`), split into paragraphs at blank lines. Line breaks inside a paragraph
//! become spaces (the canonical document normalises inline whitespace).

use super::encoding::decode;
use super::{ParseError, Sink};

pub const VERSION: &str = "1.0.0";

pub(crate) fn parse(bytes: &[u8], charset: Option<&str>, sink: &mut Sink) -> Result<(), ParseError> {
    let decoded = decode(bytes, charset);
    sink.check()?;
    let mut paragraph = String::new();
    for line in decoded.text.lines() {
        sink.tick()?;
        if line.trim().is_empty() {
            flush(sink, &mut paragraph);
            if sink.is_full() {
                break;
            }
        } else {
            if !paragraph.is_empty() {
                paragraph.push('\n');
            }
            paragraph.push_str(line);
        }
    }
    flush(sink, &mut paragraph);
    if let Some(dropped) = decoded.dropped() {
        sink.dropped(dropped);
    }
    Ok(())
}

fn flush(sink: &mut Sink, paragraph: &mut String) {
    if !paragraph.is_empty() {
        sink.paragraph(paragraph);
        paragraph.clear();
    }
}
