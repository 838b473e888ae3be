//! Turning the bytes of a text-based document into a `String`: byte-order marks, UTF-8, a declared charset,
//! UTF-16 without a BOM, and otherwise a guess by `chardetng` (the detector Firefox uses), decoded by
//! `encoding_rs`. Undecodable sequences become U+FFFD and are counted, so the parser can record them.

use std::borrow::Cow;

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};
use frostbyte_core::document::{DroppedContent, DroppedKind};

/// How much of the input the detector reads: enough for a confident guess, bounded for huge files.
const DETECT_BYTES: usize = 1024 * 1024;

pub(crate) struct Decoded<'a> {
    pub text: Cow<'a, str>,
    pub encoding: &'static Encoding,
    /// Undecodable byte sequences replaced with U+FFFD.
    pub replaced: usize,
}

impl Decoded<'_> {
    /// The dropped-content record for replaced sequences, if there were any.
    pub(crate) fn dropped(&self) -> Option<DroppedContent> {
        (self.replaced > 0).then(|| {
            DroppedContent::new(
                DroppedKind::Unreadable,
                "text",
                format!(
                    "{} byte sequences invalid in {} were replaced with U+FFFD",
                    self.replaced,
                    self.encoding.name()
                ),
            )
        })
    }
}

/// Decodes `bytes`: a BOM wins, then a valid `charset` label, then valid UTF-8, then UTF-16 recognised by its
/// zero bytes, then mostly-UTF-8 (more valid multi-byte sequences than broken ones, decoded with replacement),
/// then `chardetng`'s guess.
pub(crate) fn decode<'a>(bytes: &'a [u8], charset: Option<&str>) -> Decoded<'a> {
    if let Some((encoding, bom_len)) = Encoding::for_bom(bytes) {
        return decode_with(encoding, &bytes[bom_len..]);
    }
    if let Some(encoding) = charset.and_then(|c| Encoding::for_label(c.trim().as_bytes())) {
        // A label of UTF-16 on bytes without a BOM is honoured too; "replacement" and the like are not useful.
        if encoding != encoding_rs::REPLACEMENT && encoding != encoding_rs::X_USER_DEFINED {
            return decode_with(encoding, bytes);
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Decoded { text: Cow::Borrowed(text), encoding: UTF_8, replaced: 0 };
    }
    if let Some(encoding) = utf16_without_bom(bytes) {
        return decode_with(encoding, bytes);
    }
    if mostly_utf8(bytes) {
        return decode_with(UTF_8, bytes);
    }
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(&bytes[..bytes.len().min(DETECT_BYTES)], true);
    let encoding = detector.guess(None, Utf8Detection::Allow);
    decode_with(encoding, bytes)
}

fn decode_with<'a>(encoding: &'static Encoding, bytes: &'a [u8]) -> Decoded<'a> {
    if encoding == UTF_8 {
        return match std::str::from_utf8(bytes) {
            Ok(text) => Decoded { text: Cow::Borrowed(text), encoding, replaced: 0 },
            Err(_) => {
                let replaced = bytes.utf8_chunks().filter(|c| !c.invalid().is_empty()).count();
                Decoded { text: Cow::Owned(String::from_utf8_lossy(bytes).into_owned()), encoding, replaced }
            }
        };
    }
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    let replaced = if had_errors {
        let before = count_replacement_chars_in_source(encoding, bytes);
        text.chars().filter(|c| *c == '\u{FFFD}').count().saturating_sub(before)
    } else {
        0
    };
    Decoded { text, encoding, replaced }
}

/// U+FFFD characters the source itself encodes (so they are not counted as decoding errors). Only UTF-16 can
/// carry one; single-byte encodings cannot.
fn count_replacement_chars_in_source(encoding: &'static Encoding, bytes: &[u8]) -> usize {
    let pattern: [u8; 2] = if encoding == UTF_16LE {
        [0xFD, 0xFF]
    } else if encoding == UTF_16BE {
        [0xFF, 0xFD]
    } else {
        return 0;
    };
    bytes.chunks_exact(2).filter(|c| *c == pattern).count()
}

/// UTF-16 without a BOM: most code units of the first 4 KiB have a zero high byte (ASCII-heavy text).
fn utf16_without_bom(bytes: &[u8]) -> Option<&'static Encoding> {
    let sample = &bytes[..bytes.len().min(4096) & !1];
    if sample.len() < 4 {
        return None;
    }
    let units = sample.len() / 2;
    let zero_even = sample.iter().step_by(2).filter(|b| **b == 0).count();
    let zero_odd = sample.iter().skip(1).step_by(2).filter(|b| **b == 0).count();
    if zero_odd * 10 >= units * 7 && zero_even * 10 <= units {
        Some(UTF_16LE)
    } else if zero_even * 10 >= units * 7 && zero_odd * 10 <= units {
        Some(UTF_16BE)
    } else {
        None
    }
}

/// More valid multi-byte UTF-8 characters than invalid sequences: UTF-8 with some damage, not a legacy encoding.
fn mostly_utf8(bytes: &[u8]) -> bool {
    let mut multibyte = 0usize;
    let mut invalid = 0usize;
    for chunk in bytes.utf8_chunks() {
        multibyte += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        invalid += usize::from(!chunk.invalid().is_empty());
    }
    multibyte > invalid
}

/// Whether decoded text looks like text rather than binary: no NUL, and almost no other control characters.
pub(crate) fn looks_like_text(text: &str) -> bool {
    let mut total = 0usize;
    let mut control = 0usize;
    for c in text.chars().take(64 * 1024) {
        total += 1;
        if c == '\0' {
            return false;
        }
        if c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{0c}') || c == '\u{FFFD}' {
            control += 1;
        }
    }
    control * 100 <= total
}
