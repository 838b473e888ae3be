//! Credentials: tenant API keys and their scopes.
//!
//! A key is `fbk_` followed by 43 base62 characters (≈ 256 bits). Only its SHA-256 is stored: the key is
//! high-entropy, so a slow password hash would add latency to every request without adding safety.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ids::TenantId;

pub const API_KEY_PREFIX: &str = "fbk_";
const KEY_BODY_LEN: usize = 43;
/// How many leading characters of a key are kept in clear, so operators can tell keys apart.
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// What a tenant credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Ingest,
    Query,
    Audit,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Query, Scope::Audit, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Audit => "audit",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

/// A stored API key: never the key itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyRecord {
    pub key_id: Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a presented key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUnusable {
    Revoked,
    Expired,
}

impl ApiKeyRecord {
    pub fn check_usable(&self, now: DateTime<Utc>) -> Result<(), KeyUnusable> {
        if self.revoked_at.is_some() {
            return Err(KeyUnusable::Revoked);
        }
        if self.expires_at.is_some_and(|exp| exp <= now) {
            return Err(KeyUnusable::Expired);
        }
        Ok(())
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A freshly generated key: the plaintext (shown once) and what is stored.
pub struct GeneratedKey {
    pub plaintext: String,
    pub prefix: String,
    pub hash: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// A random secret: `prefix` followed by 43 base62 characters (≈ 256 bits). Used for API keys and for the
/// secrets the embedded default generates on first start.
pub fn random_secret(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..KEY_BODY_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{body}")
}

/// Generates a new random API key.
pub fn generate_api_key() -> GeneratedKey {
    let plaintext = random_secret(API_KEY_PREFIX);
    GeneratedKey { prefix: plaintext[..DISPLAY_PREFIX_LEN].to_owned(), hash: hash_api_key(&plaintext), plaintext }
}

/// The stored form of a key.
pub fn hash_api_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// Whether a bearer token looks like a tenant API key (as opposed to a JWT or the admin key).
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX) && token.len() == API_KEY_PREFIX.len() + KEY_BODY_LEN
}

/// Parses and de-duplicates a list of scope names; unknown names are returned as errors.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, Vec<String>> {
    let mut scopes = Vec::new();
    let mut unknown = Vec::new();
    for n in names {
        match Scope::parse(n) {
            Some(s) if !scopes.contains(&s) => scopes.push(s),
            Some(_) => {}
            None => unknown.push(n.clone()),
        }
    }
    scopes.sort();
    if unknown.is_empty() { Ok(scopes) } else { Err(unknown) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_hash_stably() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(looks_like_api_key(&a.plaintext));
        assert_eq!(hash_api_key(&a.plaintext), a.hash);
        assert!(a.plaintext.starts_with(&a.prefix));
        assert!(!a.hash.contains(&a.plaintext[4..]));
    }

    #[test]
    fn scopes_parse_and_reject_unknowns() {
        assert_eq!(
            parse_scopes(&["query".into(), "ingest".into(), "query".into()]),
            Ok(vec![Scope::Ingest, Scope::Query])
        );
        assert_eq!(parse_scopes(&["root".into()]), Err(vec!["root".to_string()]));
    }

    #[test]
    fn expiry_and_revocation() {
        let now = crate::now();
        let mut key = ApiKeyRecord {
            key_id: Uuid::now_v7(),
            tenant_id: TenantId::parse("acme").unwrap(),
            name: "k".into(),
            prefix: "fbk_x".into(),
            key_hash: "h".into(),
            scopes: vec![Scope::Query],
            created_at: now,
            expires_at: Some(now + chrono::Duration::seconds(10)),
            revoked_at: None,
        };
        assert_eq!(key.check_usable(now), Ok(()));
        assert_eq!(key.check_usable(now + chrono::Duration::seconds(10)), Err(KeyUnusable::Expired));
        key.revoked_at = Some(now);
        assert_eq!(key.check_usable(now), Err(KeyUnusable::Revoked));
    }
}
