//! Identifiers. Tenant ids are client-chosen and validated against the grammar of the API contract; every other
//! id Frostbyte mints is a UUID v7, so ids sort by creation time.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated tenant id: `^[a-z][a-z0-9-]{2,31}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// Why a string is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant id must match ^[a-z][a-z0-9-]{{2,31}}$ (3 to 32 characters: a lowercase letter, then lowercase letters, digits or '-')"
)]
pub struct InvalidTenantId;

impl TenantId {
    pub const PATTERN: &'static str = "^[a-z][a-z0-9-]{2,31}$";

    pub fn parse(s: &str) -> Result<Self, InvalidTenantId> {
        let bytes = s.as_bytes();
        let valid_len = (3..=32).contains(&bytes.len());
        let valid_first = bytes.first().is_some_and(u8::is_ascii_lowercase);
        let valid_rest = bytes.iter().skip(1).all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if valid_len && valid_first && valid_rest { Ok(TenantId(s.to_owned())) } else { Err(InvalidTenantId) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidTenantId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::parse(s)
    }
}

/// A fresh time-ordered id.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in ["acme", "a-1", "abc", "a2345678901234567890123456789012"] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "ab",
            "1abc",
            "-abc",
            "Acme",
            "acme_corp",
            "acme corp",
            "acmé",
            "a23456789012345678901234567890123",
            "../etc",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_accepts_path_separators(s in ".*") {
            if let Ok(id) = TenantId::parse(&s) {
                proptest::prop_assert!(!id.as_str().contains('/') && !id.as_str().contains('.'));
            }
        }
    }
}
