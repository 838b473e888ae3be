//! CSV and TSV: decoded like text, the delimiter detected (`,` `\t` `;` `|`, by a consistent count per record),
//! the header row detected, and the rows written as table blocks of at most [`TABLE_GROUP_ROWS`] rows, each
//! repeating the header: the chunker never splits a table, so one block per file would make one giant chunk.
//!
//! [`TABLE_GROUP_ROWS`]: super::TABLE_GROUP_ROWS

use csv::{ReaderBuilder, StringRecord};

use super::encoding::decode;
use super::sink::TableWriter;
use super::{ParseError, Sink};

pub const VERSION: &str = "1.0.0";

/// Records the delimiter detection looks at.
const DETECT_RECORDS: usize = 20;
const CANDIDATES: [u8; 4] = [b',', b'\t', b';', b'|'];

pub(crate) fn parse(bytes: &[u8], charset: Option<&str>, tsv: bool, sink: &mut Sink) -> Result<(), ParseError> {
    let decoded = decode(bytes, charset);
    sink.check()?;
    let text = decoded.text.as_ref();
    let delimiter = match detect_delimiter(text) {
        Some((d, _)) => d,
        None if tsv => b'\t',
        None => b',',
    };
    let mut reader =
        ReaderBuilder::new().delimiter(delimiter).has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut record = StringRecord::new();
    let mut read = |record: &mut StringRecord| -> Result<Option<Vec<String>>, ParseError> {
        match reader.read_record(record) {
            Ok(true) => Ok(Some(record.iter().map(str::to_owned).collect())),
            Ok(false) => Ok(None),
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                Err(ParseError::corrupted(format!("malformed CSV record at line {line}")))
            }
        }
    };
    let Some(first) = read(&mut record)? else {
        if let Some(dropped) = decoded.dropped() {
            sink.dropped(dropped);
        }
        return Ok(());
    };
    let second = read(&mut record)?;
    let header = looks_like_header(&first, second.as_deref());
    let mut writer = TableWriter::new(header.then(|| first.clone()));
    if !header {
        writer.row(sink, first);
    }
    if let Some(second) = second {
        writer.row(sink, second);
    }
    while !sink.is_full() {
        sink.tick()?;
        match read(&mut record)? {
            Some(row) => writer.row(sink, row),
            None => break,
        }
    }
    writer.finish(sink);
    if let Some(dropped) = decoded.dropped() {
        sink.dropped(dropped);
    }
    Ok(())
}

/// The delimiter whose count is the same, and at least one, in each of the first records (quotes respected),
/// with the number of records seen. At least three records, or two with at least two delimiters each.
pub(crate) fn detect_delimiter(text: &str) -> Option<(u8, usize)> {
    let records = first_records(text);
    if records.len() < 2 {
        return None;
    }
    CANDIDATES
        .iter()
        .filter_map(|&d| {
            let counts: Vec<usize> = records.iter().map(|r| count_unquoted(r, d)).collect();
            let n = counts[0];
            let consistent = n >= 1 && counts.iter().all(|&c| c == n) && (records.len() >= 3 || n >= 2);
            consistent.then_some((d, n))
        })
        .max_by_key(|&(d, n)| (n, std::cmp::Reverse(CANDIDATES.iter().position(|c| *c == d))))
        .map(|(d, _)| (d, records.len()))
}

/// The first records of `text`: lines, except that a newline inside double quotes continues the record. The
/// last line is left out when the sample may have cut it short.
fn first_records(text: &str) -> Vec<&str> {
    let mut records = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                let record = text[start..i].trim_end_matches('\r');
                if !record.trim().is_empty() {
                    records.push(record);
                }
                start = i + 1;
                if records.len() == DETECT_RECORDS {
                    return records;
                }
            }
            _ => {}
        }
    }
    let last = text[start..].trim_end_matches('\r');
    if !last.trim().is_empty() && !quoted {
        records.push(last);
    }
    records
}

fn count_unquoted(record: &str, delimiter: u8) -> usize {
    let mut quoted = false;
    let mut n = 0;
    for b in record.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            n += 1;
        }
    }
    n
}

/// A first row is a header when it has at least two cells, all non-empty, distinct and none a number, and a
/// second row follows. (A false positive repeats a data row at the top of each row group; a false negative loses
/// the column names of every group but the first, which is worse for retrieval.)
pub(crate) fn looks_like_header(first: &[String], second: Option<&[String]>) -> bool {
    if second.is_none() || first.len() < 2 || first.iter().any(|c| c.trim().is_empty() || is_number(c)) {
        return false;
    }
    let mut distinct: Vec<&str> = first.iter().map(|c| c.trim()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct.len() == first.len()
}

fn is_number(cell: &str) -> bool {
    let c = cell.trim().trim_start_matches(['$', '€', '£']).trim_end_matches('%').replace([',', '_'], "");
    !c.is_empty() && c.parse::<f64>().is_ok()
}
