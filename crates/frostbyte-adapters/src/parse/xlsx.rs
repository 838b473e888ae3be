//! XLSX with `calamine`, after the zip-bomb checks of `zipguard` have passed on the same bytes.
//!
//! Each worksheet becomes a section: a level-1 heading with the sheet name, then its rows as table blocks in
//! row groups (see `sink`), the first row as header when it looks like one. Cells are **streamed**
//! (`worksheet_cells_reader`), never loaded as a dense range: calamine sizes a range by its extreme cells, so
//! two cells at `A1` and `XFD1048576` would ask for 17 billion cells. Rows are at most [`MAX_COLUMNS`] wide;
//! cached formula results are used; dates are written as ISO 8601. Chart sheets, pictures, charts, comments
//! and macros are recorded as dropped. A panic inside calamine is caught and reported as `FILE_CORRUPTED`.

use std::io::Cursor;

use calamine::{DataRef, Reader, SheetType, Xlsx};
use frostbyte_core::document::{DroppedContent, DroppedKind};

use super::delimited::looks_like_header;
use super::sink::TableWriter;
use super::zipguard::ZipDoc;
use super::{ParseError, ParseLimits, Sink, guarded};

pub const VERSION: &str = "1.0.0";

/// Widest row kept; cells further right are dropped (and recorded).
pub const MAX_COLUMNS: usize = 512;

pub(crate) fn parse(bytes: &[u8], limits: &ParseLimits, sink: &mut Sink) -> Result<(), ParseError> {
    let (dropped, has_comments) = {
        let zip = ZipDoc::open(bytes, limits)?;
        if !zip.contains("xl/workbook.xml") {
            return Err(ParseError::corrupted("the xl/workbook.xml part is missing"));
        }
        let comments =
            zip.entries().iter().any(|(n, _)| n.starts_with("xl/comments") || n.starts_with("xl/threadedComments"));
        (zip.dropped_parts("xl"), comments)
    };
    sink.check()?;
    guarded("spreadsheet", || read_workbook(bytes, sink))?;
    if has_comments {
        sink.dropped(DroppedContent::new(DroppedKind::Annotation, "xl/", "cell comments were not extracted"));
    }
    for d in dropped {
        sink.dropped(d);
    }
    Ok(())
}

fn read_workbook(bytes: &[u8], sink: &mut Sink) -> Result<(), ParseError> {
    let mut workbook: Xlsx<_> =
        Xlsx::new(Cursor::new(bytes)).map_err(|_| ParseError::corrupted("invalid XLSX workbook"))?;
    let sheets: Vec<(String, SheetType)> = workbook.sheets_metadata().iter().map(|s| (s.name.clone(), s.typ)).collect();
    for (name, typ) in sheets {
        sink.check()?;
        if sink.is_full() {
            break;
        }
        if typ != SheetType::WorkSheet {
            sink.dropped(DroppedContent::new(
                DroppedKind::Unsupported,
                format!("sheet {name}"),
                "chart, dialog and macro sheets are not extracted",
            ));
            continue;
        }
        let mut cells = workbook
            .worksheet_cells_reader(&name)
            .map_err(|_| ParseError::corrupted("a worksheet could not be read"))?;
        let first_col = cells.dimensions().start.1;
        let mut rows = RowAssembler::default();
        let mut out = SheetOut { name: &name, first: None, writer: None };
        let mut wide = false;
        loop {
            sink.tick()?;
            if sink.is_full() {
                break;
            }
            let cell = cells.next_cell().map_err(|_| ParseError::corrupted("a worksheet holds malformed cells"))?;
            let Some(cell) = cell else { break };
            let (row, col) = cell.get_position();
            let col = col.saturating_sub(first_col) as usize;
            if col >= MAX_COLUMNS {
                wide = true;
                continue;
            }
            if let Some(done) = rows.put(row, col, cell_text(cell.get_value())) {
                out.row(sink, done);
            }
        }
        if let Some(done) = rows.finish() {
            out.row(sink, done);
        }
        out.finish(sink);
        if wide {
            sink.dropped(DroppedContent::new(
                DroppedKind::Truncated,
                format!("sheet {name}"),
                format!("cells right of column {MAX_COLUMNS} were not extracted"),
            ));
        }
    }
    Ok(())
}

/// One sheet's section: the heading is written with the first row (empty sheets get none), and the header is
/// decided once the second row is known.
struct SheetOut<'n> {
    name: &'n str,
    first: Option<Vec<String>>,
    writer: Option<TableWriter>,
}

impl SheetOut<'_> {
    fn row(&mut self, sink: &mut Sink, row: Vec<String>) {
        if let Some(writer) = &mut self.writer {
            writer.row(sink, row);
            return;
        }
        let Some(first) = self.first.take() else {
            self.first = Some(row);
            return;
        };
        sink.heading(1, self.name);
        let header = looks_like_header(&first, Some(&row));
        let mut writer = TableWriter::new(header.then(|| first.clone()));
        if !header {
            writer.row(sink, first);
        }
        writer.row(sink, row);
        self.writer = Some(writer);
    }

    fn finish(self, sink: &mut Sink) {
        match (self.writer, self.first) {
            (Some(writer), _) => writer.finish(sink),
            (None, Some(only)) => {
                sink.heading(1, self.name);
                sink.table(vec![only], false);
            }
            (None, None) => {}
        }
    }
}

/// Collects streamed cells into rows: a row is done when a cell of another row arrives.
#[derive(Default)]
struct RowAssembler {
    row: Option<u32>,
    cells: Vec<String>,
}

impl RowAssembler {
    fn put(&mut self, row: u32, col: usize, text: String) -> Option<Vec<String>> {
        let done = match self.row {
            Some(r) if r != row => self.finish(),
            _ => None,
        };
        self.row = Some(row);
        if text.is_empty() {
            return done;
        }
        if self.cells.len() <= col {
            self.cells.resize(col + 1, String::new());
        }
        self.cells[col] = text;
        done
    }

    /// The row in progress, if it has any non-empty cell.
    fn finish(&mut self) -> Option<Vec<String>> {
        self.row = None;
        let cells = std::mem::take(&mut self.cells);
        (!cells.is_empty()).then_some(cells)
    }
}

fn cell_text(value: &DataRef<'_>) -> String {
    match value {
        DataRef::Empty => String::new(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_owned(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        DataRef::Error(e) => e.to_string(),
        DataRef::DateTime(dt) => {
            if dt.is_duration() {
                dt.as_duration().map_or_else(|| dt.as_f64().to_string(), |d| format_duration(d.num_seconds()))
            } else {
                match dt.as_datetime() {
                    Some(t) if t.time() == chrono::NaiveTime::MIN => t.format("%Y-%m-%d").to_string(),
                    Some(t) => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
                    None => dt.as_f64().to_string(),
                }
            }
        }
    }
}

fn format_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    format!("{sign}{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}
