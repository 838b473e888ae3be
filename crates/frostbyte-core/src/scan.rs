//! The malware-scan port: intake hands every received file to a [`Scanner`] before anything is stored, and a
//! file it reports infected is quarantined (recorded with the signature, never stored raw, never indexed).
//!
//! Fail closed (DESIGN.md, principle 6): a scanner that cannot be reached, times out or answers something we do not
//! understand is a [`ScanError`], never "clean". The explicit `none` scanner inspects nothing; intake records
//! its files as [`ScanResult::Skipped`], so no receipt ever claims a file was checked when it was not.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a scanner found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanVerdict {
    Clean,
    /// The scanner's name for what it found (for example `Eicar-Signature`).
    Infected {
        signature: String,
    },
}

/// Why a scan produced no verdict. Every variant means "not known to be clean".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The scanner could not be reached or dropped the connection; retrying later may work.
    #[error("malware scanner unavailable: {0}")]
    Unavailable(String),
    /// The scanner did not answer within the configured timeout.
    #[error("malware scanner timed out after {0} s")]
    Timeout(u64),
    /// The scanner answered with an error (for example clamd's `INSTREAM size limit exceeded`).
    #[error("malware scanner refused the file: {0}")]
    Refused(String),
    /// The scanner's answer could not be understood.
    #[error("malware scanner protocol error: {0}")]
    Protocol(String),
    /// `scan` was called on a scanner that inspects nothing (`none`); callers check [`Scanner::inspects`].
    #[error("no malware scanner is configured")]
    NotConfigured,
}

/// A malware scanner. Adapters: `none` and `clamd` (`frostbyte_adapters::scan`).
#[async_trait]
pub trait Scanner: Send + Sync + 'static {
    /// `none` or `clamd`, for logs and `/ready`.
    fn name(&self) -> &'static str;
    /// Whether this scanner looks at bytes at all (`none` does not).
    fn inspects(&self) -> bool {
        true
    }
    /// Scans one file's bytes.
    async fn scan(&self, bytes: &[u8]) -> Result<ScanVerdict, ScanError>;
}

/// What intake records for a file (the receipt's `scan_result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScanResult {
    Clean,
    Quarantined,
    /// No scanner is configured (`[scan] scanner = "none"`).
    Skipped,
}

impl ScanResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScanResult::Clean => "clean",
            ScanResult::Quarantined => "quarantined",
            ScanResult::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<ScanResult> {
        [ScanResult::Clean, ScanResult::Quarantined, ScanResult::Skipped].into_iter().find(|r| r.as_str() == s)
    }
}

/// The outcome of checking one file: what to record, and the signature when it is infected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    pub result: ScanResult,
    pub signature: Option<String>,
}

/// Runs `scanner` over `bytes` the way intake must: a scanner that inspects nothing yields `Skipped`, a verdict
/// maps to `Clean` or `Quarantined`, and an error stays an error.
pub async fn check(scanner: &dyn Scanner, bytes: &[u8]) -> Result<ScanOutcome, ScanError> {
    if !scanner.inspects() {
        return Ok(ScanOutcome { result: ScanResult::Skipped, signature: None });
    }
    Ok(match scanner.scan(bytes).await? {
        ScanVerdict::Clean => ScanOutcome { result: ScanResult::Clean, signature: None },
        ScanVerdict::Infected { signature } => {
            ScanOutcome { result: ScanResult::Quarantined, signature: Some(signature) }
        }
    })
}

/// The `none` scanner: inspects nothing, so every file is recorded as `skipped` (never `clean`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoScanner;

#[async_trait]
impl Scanner for NoScanner {
    fn name(&self) -> &'static str {
        "none"
    }

    fn inspects(&self) -> bool {
        false
    }

    async fn scan(&self, _bytes: &[u8]) -> Result<ScanVerdict, ScanError> {
        Err(ScanError::NotConfigured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<ScanVerdict, ScanError>);

    #[async_trait]
    impl Scanner for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        async fn scan(&self, _bytes: &[u8]) -> Result<ScanVerdict, ScanError> {
            self.0.clone()
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The futures here never wait on I/O, so polling once with a no-op waker completes them.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("future did not complete"),
        }
    }

    #[test]
    fn none_is_skipped_never_clean() {
        let out = block_on(check(&NoScanner, b"anything")).unwrap();
        assert_eq!(out.result, ScanResult::Skipped);
        assert_eq!(block_on(NoScanner.scan(b"x")), Err(ScanError::NotConfigured));
    }

    #[test]
    fn verdicts_and_errors_map_through() {
        let infected = Fixed(Ok(ScanVerdict::Infected { signature: "Eicar-Signature".into() }));
        let out = block_on(check(&infected, b"x")).unwrap();
        assert_eq!(out, ScanOutcome { result: ScanResult::Quarantined, signature: Some("Eicar-Signature".into()) });
        assert_eq!(block_on(check(&Fixed(Ok(ScanVerdict::Clean)), b"x")).unwrap().result, ScanResult::Clean);
        let down = Fixed(Err(ScanError::Unavailable("refused".into())));
        assert!(block_on(check(&down, b"x")).is_err(), "an unreachable scanner is an error, not clean");
        assert_eq!(ScanResult::parse("skipped"), Some(ScanResult::Skipped));
    }
}
