//! Embedders that need I/O, and the one place where embedding settings become an
//! [`EmbedderRegistry`](frostbyte_core::embed::EmbedderRegistry).
//!
//! - `hash` ([`HashEmbedder`](frostbyte_core::embed::HashEmbedder), in core) is always there.
//! - `openai` ([`OpenAiEmbedder`]) is any OpenAI-compatible `POST {base_url}/embeddings` endpoint, Frostbyte's
//!   own `/v1/embeddings` included; present when its `base_url` is set.

mod openai;

use std::sync::Arc;

use frostbyte_core::embed::{EmbedError, EmbedderRegistry, HashEmbedder};

pub use openai::{OpenAiConfig, OpenAiEmbedder};

/// The name the built-in hash embedder is registered under.
pub const HASH: &str = "hash";
/// The name the OpenAI-compatible embedder is registered under.
pub const OPENAI: &str = "openai";

/// What the registry is built from (the binary's `[embedding]` config section, typed).
#[derive(Debug, Clone)]
pub struct EmbeddingSettings {
    /// The default embedder: a registered name (`hash`, `openai`) or model id.
    pub default: String,
    /// The hash embedder's dimension (its model id is `hash-v1-{dimension}`).
    pub hash_dimension: usize,
    /// The OpenAI-compatible endpoint, if one is configured.
    pub openai: Option<OpenAiConfig>,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        EmbeddingSettings { default: HASH.to_owned(), hash_dimension: HashEmbedder::DEFAULT_DIMENSION, openai: None }
    }
}

/// Builds the registry: `hash` always, `openai` when configured, then the default. Fails on an impossible
/// dimension, an invalid endpoint or an unknown default, with a message that says which setting to fix.
pub fn registry(settings: &EmbeddingSettings) -> Result<EmbedderRegistry, EmbedError> {
    let mut registry = EmbedderRegistry::new(HASH, Arc::new(HashEmbedder::new(settings.hash_dimension)?));
    if let Some(openai) = &settings.openai {
        registry.register(OPENAI, Arc::new(OpenAiEmbedder::new(openai.clone())?))?;
    }
    registry.set_default(&settings.default)?;
    Ok(registry)
}
