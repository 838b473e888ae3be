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

/// An ASCII word character: a letter, digit or `_` (`\w` within ASCII; these also join into one UAX #29 word).
pub(crate) fn is_ascii_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A word character as regular expressions' Unicode `\w` (and so `\b`) sees it: letters, marks, digits and
/// connector punctuation.
pub(crate) fn is_word_char(c: char) -> bool {
    if c.is_ascii() { is_ascii_word_byte(c as u8) } else { regex_syntax::is_word_character(c) }
}

/// The ASCII characters `char::is_whitespace` accepts (`u8::is_ascii_whitespace` leaves out the vertical tab).
pub(crate) fn is_ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

impl<'a> Iterator for AsciiWords<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.pos + bytes[self.pos..].iter().position(|&b| is_ascii_word_byte(b))?;
        let mut end = start + 1;
        while let Some(&b) = bytes.get(end) {
            if is_ascii_word_byte(b) {
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

/// How many UAX #29 words of `text` hold a letter or digit: `text.unicode_words().count()`, faster for the
/// ASCII stretches of the text ([`Pieces`]).
pub fn count_words(text: &str) -> usize {
    Pieces::new(text)
        .map(|piece| match piece {
            Piece::Ascii(ascii) => {
                AsciiWords::new(ascii).filter(|w| w.bytes().any(|b| b.is_ascii_alphanumeric())).count()
            }
            Piece::Other(other) => other.unicode_words().count(),
        })
        .sum()
}

/// A stretch of a text, for word segmentation: all ASCII, or holding other characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Ascii(&'a str),
    Other(&'a str),
}

/// A text cut into [`Piece`]s whose UAX #29 words, taken piece by piece, are the text's words: one accented word
/// no longer sends a whole text through the general segmenter. Cuts fall only between an ASCII whitespace
/// character and an ASCII character that is not whitespace. The word-boundary rules break there (no rule joins
/// anything to whitespace except more whitespace, newlines break on both sides, and an ASCII character is never a
/// mark that attaches to what precedes it), and none of the rules deciding a break on either side looks past
/// such a whitespace character, so the segmentation of each piece is the text's.
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Pieces<'a> {
    pub fn new(text: &'a str) -> Self {
        Pieces { text, pos: 0 }
    }
}

/// The text may be cut at `at`: after ASCII whitespace, before an ASCII character that is not.
fn cut_at(bytes: &[u8], at: usize) -> bool {
    is_ascii_space(bytes[at - 1]) && bytes[at].is_ascii() && !is_ascii_space(bytes[at])
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let (text, start) = (self.text, self.pos);
        let bytes = text.as_bytes();
        if start == bytes.len() {
            return None;
        }
        // `is_ascii` checks a word at a time: the common case, an all-ASCII rest, in one pass.
        let other = match text[start..].is_ascii() {
            true => None,
            false => bytes[start..].iter().position(|b| !b.is_ascii()).map(|n| start + n),
        };
        let Some(other) = other else {
            self.pos = bytes.len();
            return Some(Piece::Ascii(&text[start..]));
        };
        // The ASCII stretch before the first other character ends at the last cut before it; the other piece
        // runs to the first cut after it.
        let from = (start + 1..other).rev().find(|&at| cut_at(bytes, at)).unwrap_or(start);
        if from > start {
            self.pos = from;
            return Some(Piece::Ascii(&text[start..from]));
        }
        self.pos = (other + 1..bytes.len()).find(|&at| cut_at(bytes, at)).unwrap_or(bytes.len());
        Some(Piece::Other(&text[start..self.pos]))
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
        text.split_word_bounds().filter(|w| w.bytes().next().is_some_and(is_ascii_word_byte)).collect()
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

    #[test]
    fn pieces_cut_only_after_ascii_whitespace() {
        let pieces: Vec<Piece<'_>> = Pieces::new("the café opens\tat nine; naïve\u{301} x").collect();
        assert_eq!(
            pieces,
            [
                Piece::Ascii("the "),
                Piece::Other("café "),
                Piece::Ascii("opens\tat nine; "),
                Piece::Other("naïve\u{301} "),
                Piece::Ascii("x")
            ]
        );
        assert_eq!(Pieces::new("").count(), 0);
        assert_eq!(Pieces::new("é").collect::<Vec<_>>(), [Piece::Other("é")]);
    }

    /// Text that mixes ASCII words with accents, combining marks, non-ASCII spaces and punctuation, emoji with
    /// joiners and regional indicators, next to every kind of ASCII whitespace.
    fn mixed_text() -> impl Strategy<Value = String> {
        let piece = proptest::sample::select(vec![
            "a",
            "b1",
            "don't",
            "x.y",
            "_",
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\x0b",
            ".",
            ",",
            "'",
            "-",
            "é",
            "\u{301}",
            "\u{200d}",
            "\u{a0}",
            "\u{3000}",
            "\u{2019}",
            "\u{201c}",
            "\u{4e2d}\u{6587}",
            "\u{1f469}",
            "\u{1f1eb}",
            "\u{1f1f7}",
            "\u{ff0e}",
            "\u{5d0}",
            "\u{30a2}",
            "\u{660}",
        ]);
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn pieces_segment_as_the_whole_text(text in mixed_text()) {
            let pieces: Vec<Piece<'_>> = Pieces::new(&text).collect();
            let joined: String = pieces.iter().map(|p| match p { Piece::Ascii(s) | Piece::Other(s) => *s }).collect();
            prop_assert_eq!(&joined, &text);
            let by_piece: Vec<&str> = pieces
                .iter()
                .flat_map(|p| match p { Piece::Ascii(s) | Piece::Other(s) => s.split_word_bounds() })
                .collect();
            prop_assert_eq!(by_piece, text.split_word_bounds().collect::<Vec<_>>());
            let kinds_hold = pieces.iter().all(|p| match p {
                Piece::Ascii(s) => s.is_ascii(),
                Piece::Other(s) => !s.is_ascii(),
            });
            prop_assert!(kinds_hold);
            prop_assert_eq!(count_words(&text), text.unicode_words().count());
        }

        #[test]
        fn ascii_words_are_the_segmenters_words(text in "[a-e0-3A_:.,;' \t\r\n\"/()?!@#=+-]{0,60}") {
            prop_assert_eq!(words(&text), segmenter_words(&text));
            prop_assert_eq!(count_words(&text), text.unicode_words().count());
        }
    }
}
