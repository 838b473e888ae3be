//! The one error type of the parse stage, with the three stable codes the pipeline records.
//!
//! **No document text in messages.** Every message is written here or in a parser from fixed words and numbers
//! (sizes, counts, line numbers, limits). Errors from third-party parsers are never formatted into a message,
//! because theirs may quote the input (a tag name, a dictionary key, a field). Messages reach the dead-letter
//! list, the acceptance report and logs, none of which may hold document content.

use std::time::Duration;

/// Why a document could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not a valid instance of the format they claim to be (truncated, garbage, bad structure).
    #[error("{0}")]
    Corrupted(String),
    /// A format (or a variant of one: encrypted, legacy binary Office) that no parser handles.
    #[error("{0}")]
    Unsupported(String),
    /// The document is larger or deeper than a parse limit allows (input size, zip entries, decompressed size,
    /// compression ratio, JSON nesting).
    #[error("{0}")]
    LimitExceeded(String),
    /// The parse ran past its time limit.
    #[error("timed out after {}", format_duration(*.after))]
    TimedOut { after: Duration },
    /// A bug: a parser panicked or broke an invariant of the canonical document.
    #[error("{0}")]
    Internal(String),
}

impl ParseError {
    pub(crate) fn corrupted(message: impl Into<String>) -> Self {
        ParseError::Corrupted(message.into())
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        ParseError::Unsupported(message.into())
    }

    pub(crate) fn limit(message: impl Into<String>) -> Self {
        ParseError::LimitExceeded(message.into())
    }

    /// The stable code recorded with the failure: `FILE_CORRUPTED`, `UNSUPPORTED_FORMAT` or `PARSER_ERROR`.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Corrupted(_) => "FILE_CORRUPTED",
            ParseError::Unsupported(_) => "UNSUPPORTED_FORMAT",
            ParseError::LimitExceeded(_) | ParseError::TimedOut { .. } | ParseError::Internal(_) => "PARSER_ERROR",
        }
    }

    /// Whether a later attempt may succeed. Only a timeout may (the machine may have been busy); the same bytes
    /// under the same limits give the same result otherwise.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ParseError::TimedOut { .. })
    }
}

fn format_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) && d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}
