//! Word segmentation (Unicode Standard Annex #29) with a fast path for ASCII text, which is most of what the
//! pipeline sees: the general segmenter looks every character up in the word-break tables, while within ASCII the
//! rules reduce to a handful of byte tests ([`AsciiWords`]). Property tests hold the fast path to the general one.

use unicode_segmentation::UnicodeSegmentation;

/// The UAX #29 words of ASCII text that start with a letter, digit or `_` (every other segment is a single
/// character or a run of spaces, which hold no letter or digit). Within ASCII the word-boundary rules come down
/// to: letters, digits and `_` join (WB5, WB8–WB10, WB13a/b); `:`, `.` and `'` join two letters (WB6/WB7); `,`,
/// `;`, `.` and `'` join two digits (WB11/WB12); everything else breaks.
pub struct AsciiWords<'a> {
    /// ASCII only, so every byte offset is a character boundary.
    text: &'a str,
    pos: usize,
}

impl<'a> AsciiWords<'a> {
    /// The words of `text`, which must be ASCII (checked in debug builds; other text gives wrong words, never a
    /// panic).
    pub fn new(text: &'a str) -> Self {
        debug_assert!(text.is_ascii());
        AsciiWords { text, pos: 0 }
    }
}

fn joins(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Iterator for AsciiWords<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.pos + bytes[self.pos..].iter().position(|&b| joins(b))?;
        let mut end = start + 1;
        while let Some(&b) = bytes.get(end) {
            if joins(b) {
                end += 1;
                continue;
            }
            let (before, after) = (bytes[end - 1], bytes.get(end + 1).copied().unwrap_or(0));
            let letters =
                before.is_ascii_alphabetic() && after.is_ascii_alphabetic() && matches!(b, b':' | b'.' | b'\'');
            let digits = before.is_ascii_digit() && after.is_ascii_digit() && matches!(b, b',' | b';' | b'.' | b'\'');
            if !(letters || digits) {
                break;
            }
            end += 2;
        }
        self.pos = end;
        self.text.get(start..end)
    }
}

/// How many UAX #29 words of `text` hold a letter or digit: `text.unicode_words().count()`, faster for ASCII.
pub fn count_words(text: &str) -> usize {
    if text.is_ascii() {
        AsciiWords::new(text).filter(|w| w.bytes().any(|b| b.is_ascii_alphanumeric())).count()
    } else {
        text.unicode_words().count()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn words(text: &str) -> Vec<&str> {
        AsciiWords::new(text).collect()
    }

    /// The general segmenter's segments that [`AsciiWords`] is meant to yield.
    fn segmenter_words(text: &str) -> Vec<&str> {
        text.split_word_bounds().filter(|w| w.bytes().next().is_some_and(joins)).collect()
    }

    #[test]
    fn ascii_words_follow_the_word_boundary_rules() {
        assert_eq!(
            words("don't a:b 3.14 1,000;2 x_y.z e.g. --a..b 1.a a1.2"),
            ["don't", "a:b", "3.14", "1,000;2", "x_y.z", "e.g", "a", "b", "1", "a", "a1.2"]
        );
        assert_eq!(words("a: b 1, 2 _:x 'a' a'"), ["a", "b", "1", "2", "_", "x", "a", "a"]);
        assert!(words("  .,;:'!? \n").is_empty());
        let prose = "PEP 8: 4 spaces, 79 chars; v3.11.2 (2023-02-08) __init__.py can't O'Neil's e.g. a.b.c";
        assert_eq!(words(prose), segmenter_words(prose));
        assert_eq!(count_words(prose), prose.unicode_words().count());
        assert_eq!(count_words("naïve café, 漢字"), "naïve café, 漢字".unicode_words().count());
        assert_eq!(count_words("__ -- a_"), 1, "a run of underscores holds no letter or digit");
    }

    proptest! {
        #[test]
        fn ascii_words_are_the_segmenters_words(text in "[a-e0-3A_:.,;' \t\r\n\"/()?!@#=+-]{0,60}") {
            prop_assert_eq!(words(&text), segmenter_words(&text));
            prop_assert_eq!(count_words(&text), text.unicode_words().count());
        }
    }
}
