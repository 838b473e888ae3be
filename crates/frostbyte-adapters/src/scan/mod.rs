//! Malware-scanner adapters for the [`Scanner`](frostbyte_core::scan::Scanner) port, chosen by
//! `[scan] scanner` ([`crate::resolve::scanner`]):
//!
//! | value | adapter |
//! |---|---|
//! | `none` | [`NoScanner`](frostbyte_core::scan::NoScanner): inspects nothing; receipts say `skipped` |
//! | `clamd://host:port` | [`ClamdScanner`] over TCP |
//! | `clamd+unix:///path/to/clamd.sock` | [`ClamdScanner`] over a Unix socket |

mod clamd;

pub use clamd::{ClamdAddress, ClamdScanner, parse_reply};
