//! Embeddings: the [`Embedder`] port, its errors, vector helpers, and the built-in [`HashEmbedder`].
//!
//! The hash embedder is Frostbyte's default: deterministic, offline, and lexical. It maps text to a fixed-size
//! vector by signed feature hashing of three feature groups, each into its own region of the vector. Within a
//! group every feature weighs `1 + ln tf` (sublinear term frequency); each region is L2-normalised, scaled by its
//! group's weight, and the whole vector is normalised again:
//!
//! | group | features | share of dimensions | weight |
//! |---|---|---|---|
//! | words | lowercased words (UAX #29 word boundaries, split further at `_` and `.`, apostrophes dropped, plural endings stemmed); stop words count a tenth | 1/2 | 1.0 |
//! | word bigrams | adjacent words, stop words skipped | 1/8 | 0.5 |
//! | character n-grams | 3- to 5-grams of each non-stop word padded as `<word>` | 3/8 | 1.0 |
//!
//! So the cosine of two hash embeddings is, up to hashing noise, a weighted mean of their word, phrase and
//! sub-word similarities: exact terms count most, shared phrases add, and inflections, compounds and typos still
//! match through their n-grams. No corpus statistics are used (no IDF), so an embedding depends on its text
//! alone and can be cached by text hash. More dimensions mean fewer hash collisions and better ranking; 384 is the
//! default to match common sentence-transformer sizes.
//!
//! **Stability.** Features are hashed with FNV-1a (64-bit) and a fixed finaliser, never a seeded hasher, and
//! summed in a fixed order, so the same text gives the same vector in every process and on every platform. Any
//! change to tokenisation, features or weights changes vectors and must bump [`HASH_EMBEDDER_VERSION`], which is
//! part of the model id (`hash-v1-384`): stored vectors are keyed by model id, so old and new never mix.
//!
//! **Fail closed.** Text without a single letter or digit is an [`EmbedError::Empty`], never a zero vector, and no
//! embedding this module returns has a zero norm.
//!
//! **Which embedder.** [`EmbedderRegistry`] maps the names a tenant's `embedding_model` may hold (`hash`, `openai`,
//! or an embedder's model id such as `hash-v1-384`) to the configured embedders; the pipeline embeds a tenant's
//! documents with the one its config names, and [`check_vectors`] holds every batch to the embedder's contract
//! before anything is written.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use unicode_segmentation::UnicodeSegmentation;

/// Turns texts into vectors. Implementations: [`HashEmbedder`] here; OpenAI-compatible endpoints and local
/// models in `frostbyte-adapters`.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Identifies the model and everything that shapes its vectors (`hash-v1-384`, `openai/text-embedding-3-small`).
    /// Stored vectors and the embedding cache are keyed by it.
    fn model_id(&self) -> &str;
    /// Length of every vector this embedder returns.
    fn dimension(&self) -> usize;
    /// One vector per input, in order. An empty slice gives an empty result. Fails as a whole: a batch never
    /// comes back partly embedded.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// True when `embed` does all its work on the calling thread (CPU-bound, never waiting on I/O): callers on an
    /// async runtime should move such calls to a blocking thread. Remote embedders answer false.
    fn compute_bound(&self) -> bool {
        false
    }
}

/// Why texts could not be embedded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbedError {
    /// An input has nothing to embed (no letters or digits). Not retryable: the text will not change.
    #[error("input {index} has nothing to embed")]
    Empty { index: usize },
    /// An input exceeds what the model accepts.
    #[error("input {index} is too long for the model ({len} > {limit})")]
    TooLong { index: usize, len: usize, limit: usize },
    /// The backend could not be reached, timed out, or refused (`retryable: false` for refusals that will not
    /// change on their own, such as bad credentials).
    #[error("embedding backend unavailable: {message}")]
    Unavailable { message: String, retryable: bool },
    /// The backend asked us to slow down.
    #[error("embedding backend rate-limited")]
    RateLimited { retry_after: Option<Duration> },
    /// The backend answered with something that is not a valid embedding batch (wrong count or dimension,
    /// non-finite values, malformed body).
    #[error("invalid embedding response: {0}")]
    InvalidResponse(String),
    /// The embedder is misconfigured (unknown model, impossible dimension).
    #[error("embedder misconfigured: {0}")]
    Config(String),
    /// The backend's vectors do not have the dimension the embedder is configured with (a model swapped behind
    /// the endpoint, or a wrong `dimensions` setting). Nothing is written.
    #[error("embedding dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch { expected: usize, got: usize },
}

impl EmbedError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            EmbedError::Unavailable { retryable, .. } => *retryable,
            EmbedError::RateLimited { .. } => true,
            _ => false,
        }
    }

    /// A stable, content-free code for job records and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            EmbedError::Empty { .. } => "embed_empty_input",
            EmbedError::TooLong { .. } => "embed_input_too_long",
            EmbedError::Unavailable { .. } => "embed_unavailable",
            EmbedError::RateLimited { .. } => "embed_rate_limited",
            EmbedError::InvalidResponse(_) => "embed_invalid_response",
            EmbedError::Config(_) => "embed_config",
            EmbedError::DimensionMismatch { .. } => "embed_dimension_mismatch",
        }
    }
}

/// Checks a batch against the embedder's contract before anything is written: one vector per input, each of
/// `dimension` finite values with a non-zero norm. A zero vector is refused here, whoever produced it.
pub fn check_vectors(vectors: &[Vec<f32>], inputs: usize, dimension: usize) -> Result<(), EmbedError> {
    if vectors.len() != inputs {
        return Err(EmbedError::InvalidResponse(format!("{} vectors for {inputs} inputs", vectors.len())));
    }
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != dimension {
            return Err(EmbedError::DimensionMismatch { expected: dimension, got: v.len() });
        }
        if !v.iter().all(|x| x.is_finite()) {
            return Err(EmbedError::InvalidResponse(format!("vector {i} has a non-finite value")));
        }
        if l2_norm(v) == 0.0 {
            return Err(EmbedError::InvalidResponse(format!("vector {i} is a zero vector")));
        }
    }
    Ok(())
}

/// The configured embedders, by name. Each embedder is registered under a name (`hash`, `openai`) and also
/// under its model id (`hash-v1-384`, `openai/text-embedding-3-small`), so a tenant's `embedding_model` may hold
/// either; one of them is the default (what a request that names no model gets). Built once at start-up and
/// shared (`Arc`) by the pipeline, `POST /v1/embeddings` and search.
#[derive(Clone)]
pub struct EmbedderRegistry {
    by_name: BTreeMap<String, Arc<dyn Embedder>>,
    /// Registered names (not model-id aliases), in registration order.
    names: Vec<String>,
    default: String,
}

impl fmt::Debug for EmbedderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let models: BTreeMap<&str, &str> =
            self.names.iter().map(|n| (n.as_str(), self.by_name[n].model_id())).collect();
        f.debug_struct("EmbedderRegistry").field("embedders", &models).field("default", &self.default).finish()
    }
}

impl Default for EmbedderRegistry {
    /// Just the default hash embedder, under `hash`.
    fn default() -> Self {
        EmbedderRegistry::new("hash", Arc::new(HashEmbedder::default()))
    }
}

impl EmbedderRegistry {
    /// A registry holding one embedder under `name`, which is the default.
    pub fn new(name: &str, embedder: Arc<dyn Embedder>) -> Self {
        let mut r = EmbedderRegistry { by_name: BTreeMap::new(), names: Vec::new(), default: name.to_owned() };
        r.insert(name, embedder);
        r
    }

    fn insert(&mut self, name: &str, embedder: Arc<dyn Embedder>) {
        let model_id = embedder.model_id().to_owned();
        self.names.push(name.to_owned());
        if model_id != name {
            self.by_name.entry(model_id).or_insert_with(|| embedder.clone());
        }
        self.by_name.insert(name.to_owned(), embedder);
    }

    /// Adds an embedder under `name` (and its model id, unless another embedder already has that id). A name that
    /// is already registered is a configuration error.
    pub fn register(&mut self, name: &str, embedder: Arc<dyn Embedder>) -> Result<(), EmbedError> {
        if name.trim().is_empty() || self.names.iter().any(|n| n == name) {
            return Err(EmbedError::Config(format!("embedder name {name:?} is empty or already registered")));
        }
        // A name may shadow another embedder's model-id alias: names win.
        self.insert(name, embedder);
        Ok(())
    }

    /// Makes a registered name (or model id) the default.
    pub fn set_default(&mut self, name: &str) -> Result<(), EmbedError> {
        if !self.by_name.contains_key(name) {
            return Err(EmbedError::Config(format!(
                "the default embedder {name:?} is not configured (configured: {})",
                self.names().join(", ")
            )));
        }
        name.clone_into(&mut self.default);
        Ok(())
    }

    /// The embedder registered under `name` (a name or a model id).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Embedder>> {
        self.by_name.get(name).cloned()
    }

    /// Whether `name` selects an embedder.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The default embedder.
    pub fn default_embedder(&self) -> Arc<dyn Embedder> {
        self.by_name[&self.default].clone()
    }

    /// The default's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Registered names, in registration order (model-id aliases not included).
    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Every name and model id that selects an embedder, sorted.
    pub fn selectors(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

/// The embedding cache key: lowercase hex sha256 over the model id and the chunk's text hash
/// ([`crate::chunk::text_hash`]). Re-embedding the same text with the same model is a cache hit.
pub fn embedding_cache_key(model_id: &str, text_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"frostbyte.embed.v1\n");
    h.update(model_id.as_bytes());
    h.update(b"\n");
    h.update(text_hash.as_bytes());
    h.update(b"\n");
    hex::encode(h.finalize())
}

/// Dot product. The slices must have the same length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "vectors of different dimensions");
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm.
pub fn l2_norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Scales `v` to unit length in place; returns false (and leaves it alone) if its norm is zero or not finite.
pub fn l2_normalize(v: &mut [f32]) -> bool {
    let norm = l2_norm(v);
    if norm == 0.0 || !norm.is_finite() {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// Cosine similarity in `[-1, 1]`; 0 when either vector is zero. The slices must have the same length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let denom = l2_norm(a) * l2_norm(b);
    if denom == 0.0 { 0.0 } else { (dot(a, b) / denom).clamp(-1.0, 1.0) }
}

/// Bumped whenever the hash embedder's output for some text changes.
pub const HASH_EMBEDDER_VERSION: u32 = 1;

/// The deterministic lexical embedder; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashEmbedder {
    dim: usize,
    model_id: String,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        HashEmbedder::new(HashEmbedder::DEFAULT_DIMENSION).expect("the default dimension is valid")
    }
}

const WORD_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.5;
const CHAR_WEIGHT: f32 = 1.0;
const STOP_WORD_WEIGHT: f32 = 0.1;
const NGRAM_MIN: usize = 3;
const NGRAM_MAX: usize = 5;

// Feature-group tags, hashed in front of the feature so that groups do not share buckets systematically.
const TAG_WORD: u8 = b'w';
const TAG_BIGRAM: u8 = b'b';
const TAG_CHAR: u8 = b'c';

impl HashEmbedder {
    pub const DEFAULT_DIMENSION: usize = 384;
    pub const MIN_DIMENSION: usize = 8;
    pub const MAX_DIMENSION: usize = 65_536;

    /// A hash embedder producing `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Result<Self, EmbedError> {
        if !(Self::MIN_DIMENSION..=Self::MAX_DIMENSION).contains(&dim) {
            return Err(EmbedError::Config(format!(
                "hash embedder dimension must be between {} and {}, not {dim}",
                Self::MIN_DIMENSION,
                Self::MAX_DIMENSION
            )));
        }
        Ok(HashEmbedder { dim, model_id: format!("hash-v{HASH_EMBEDDER_VERSION}-{dim}") })
    }

    /// Embeds one text, synchronously: the entry point for benchmarks and for callers already on a blocking
    /// thread. Linear in the text's length.
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed_one(text).ok_or(EmbedError::Empty { index: 0 })
    }

    /// Embeds a batch synchronously; [`Embedder::embed`] calls this.
    pub fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        texts.iter().enumerate().map(|(index, t)| self.embed_one(t).ok_or(EmbedError::Empty { index })).collect()
    }

    fn embed_one(&self, text: &str) -> Option<Vec<f32>> {
        let features = Features::extract(text)?;
        let mut v = self.project(&features, true);
        if !l2_normalize(&mut v) {
            // Signed hashing cancelled everything out (possible only for a handful of features): project
            // without signs, which cannot cancel.
            v = self.project(&features, false);
            l2_normalize(&mut v);
        }
        Some(v)
    }

    /// Hashes each feature group into its own region of the vector (so groups never collide with each other),
    /// normalises each region and scales it by its group weight.
    fn project(&self, features: &Features, signed: bool) -> Vec<f32> {
        let mut out = vec![0.0f32; self.dim];
        let words = self.dim / 2;
        let bigrams = self.dim / 8;
        let regions = [
            (&features.words, WORD_WEIGHT, 0..words),
            (&features.bigrams, BIGRAM_WEIGHT, words..words + bigrams),
            (&features.chars, CHAR_WEIGHT, words + bigrams..self.dim),
        ];
        for (group, weight, range) in regions {
            let region = &mut out[range];
            accumulate(group, region, signed);
            if l2_normalize(region) {
                region.iter_mut().for_each(|x| *x *= weight);
            }
        }
        out
    }
}

/// Adds each distinct feature of `occurrences` (hash, weight, times) to `region[hash % len]`, signed by the hash's
/// top bit when `signed`, weighing it `w × (1 + ln tf)` with `tf` its occurrences (the sum of its `times`) and `w`
/// its smallest weight.
///
/// Each slot's sum runs over its features in ascending hash order, which is what makes the result the same on
/// every run and platform. The features are visited in ascending hash order overall, which gives every slot its
/// features in that order: the occurrences are bucketed by their hashes' top bits (a counting sort, linear; the
/// hashes are finalised, so they spread evenly and a bucket holds two to four), each bucket sorted on its own,
/// and the buckets walked in order. Grouping by slot and sorting each slot's ten or so features instead cost about
/// a tenth more time in embedding, mostly in mispredicted branches.
fn accumulate(occurrences: &[Occurrence], region: &mut [f32], signed: bool) {
    if occurrences.is_empty() {
        return;
    }
    let modulo = FastMod::new(region.len() as u64);
    // A bucket per two to four occurrences (at most 2^12): `bucket` is the hash's top `bits` bits.
    let bits = occurrences.len().next_power_of_two().trailing_zeros().saturating_sub(2).clamp(1, 12);
    let bucket = |hash: u64| (hash >> (64 - bits)) as usize;
    let mut starts = vec![0u32; (1 << bits) + 1];
    for o in occurrences {
        starts[bucket(o.hash) + 1] += 1;
    }
    for i in 0..1 << bits {
        starts[i + 1] += starts[i];
    }
    let mut sorted = vec![Occurrence { hash: 0, weight: 0.0, times: 0 }; occurrences.len()];
    let mut next = starts.clone();
    for &o in occurrences {
        let at = &mut next[bucket(o.hash)];
        sorted[*at as usize] = o;
        *at += 1;
    }
    for b in 0..1 << bits {
        let features = &mut sorted[starts[b] as usize..starts[b + 1] as usize];
        if features.len() > 1 {
            features.sort_unstable_by_key(|o| o.hash);
        }
    }
    let mut i = 0;
    while i < sorted.len() {
        let Occurrence { hash, mut weight, times } = sorted[i];
        let mut tf = times as usize;
        i += 1;
        while i < sorted.len() && sorted[i].hash == hash {
            weight = weight.min(sorted[i].weight);
            tf += sorted[i].times as usize;
            i += 1;
        }
        let sign = if signed && hash >> 63 == 1 { -1.0 } else { 1.0 };
        region[modulo.rem(hash) as usize] += sign * weight * sublinear_tf(tf);
    }
}

/// `1 + ln tf`, computed in f64 and rounded once, so a last-bit difference between platforms' `ln` cannot show.
/// Small counts (nearly all of them) come from a table of the same values.
fn sublinear_tf(tf: usize) -> f32 {
    static SMALL: LazyLock<[f32; 64]> = LazyLock::new(|| std::array::from_fn(sublinear_tf_exact));
    SMALL.get(tf).copied().unwrap_or_else(|| sublinear_tf_exact(tf))
}

fn sublinear_tf_exact(tf: usize) -> f32 {
    if tf <= 1 { 1.0 } else { (1.0 + (tf as f64).ln()) as f32 }
}

/// `x % d` for a fixed `d` by two multiplications instead of a division (Lemire, Kaser and Kurz, "Faster
/// remainder by direct computation", 2019; exact for every 64-bit `x` and `d`): the hash embedder takes one
/// remainder per feature occurrence.
#[derive(Debug, Clone, Copy)]
struct FastMod {
    m: u128,
    d: u64,
}

impl FastMod {
    fn new(d: u64) -> Self {
        assert!(d > 0, "remainder by zero");
        FastMod { m: (u128::MAX / u128::from(d)).wrapping_add(1), d }
    }

    fn rem(self, x: u64) -> u64 {
        // The high 64 bits of the 192-bit product (m·x mod 2^128)·d.
        let low = self.m.wrapping_mul(u128::from(x));
        let (high, low) = ((low >> 64) as u64, low as u64);
        ((u128::from(high) * u128::from(self.d) + ((u128::from(low) * u128::from(self.d)) >> 64)) >> 64) as u64
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dim
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_batch(texts)
    }

    fn compute_bound(&self) -> bool {
        true
    }
}

/// `times` occurrences of a feature with this hash and weight.
#[derive(Debug, Clone, Copy)]
struct Occurrence {
    hash: u64,
    weight: f32,
    times: u32,
}

/// The feature occurrences of one text, per group, in no particular order.
struct Features {
    words: Vec<Occurrence>,
    bigrams: Vec<Occurrence>,
    chars: Vec<Occurrence>,
}

impl Features {
    /// `None` when the text has no words.
    ///
    /// A chunk repeats many of its words, so word and character n-gram features are taken once per distinct
    /// token, with its count as `times`: the sums [`accumulate`] makes are the same as for one occurrence each
    /// (a test checks this against the occurrence-by-occurrence extraction). Bigrams follow the text's order.
    fn extract(text: &str) -> Option<Features> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return None;
        }
        let mut distinct: foldhash::HashMap<(&str, bool), u32> =
            foldhash::HashMap::with_capacity_and_hasher(tokens.len(), Default::default());
        let mut bigrams = Vec::with_capacity(tokens.len());
        let mut previous: Option<&str> = None;
        for token in &tokens {
            *distinct.entry((token.text.as_str(), token.stop)).or_insert(0) += 1;
            if token.stop {
                continue;
            }
            if let Some(prev) = previous {
                let hash = feature_hash(TAG_BIGRAM, &[prev.as_bytes(), b" ", token.text.as_bytes()]);
                bigrams.push(Occurrence { hash, weight: 1.0, times: 1 });
            }
            previous = Some(&token.text);
        }
        let mut words = Vec::with_capacity(distinct.len());
        let mut chars = Vec::with_capacity(distinct.len() * 12);
        let mut padded = Vec::new();
        let mut bounds = Vec::new();
        for (&(word, stop), &times) in &distinct {
            let weight = if stop { STOP_WORD_WEIGHT } else { 1.0 };
            words.push(Occurrence { hash: feature_hash(TAG_WORD, &[word.as_bytes()]), weight, times });
            if stop {
                continue;
            }
            padded.clear();
            padded.push(b'<');
            padded.extend_from_slice(word.as_bytes());
            padded.push(b'>');
            bounds.clear();
            bounds.push(0);
            bounds.extend(word.char_indices().map(|(i, _)| i + 1));
            bounds.extend([padded.len() - 1, padded.len()]);
            // The n-grams starting at one character share their prefix: hash it once and emit the 3-, 4- and
            // 5-grams as it grows (FNV-1a is sequential, so this equals hashing each n-gram on its own).
            let len = bounds.len() - 1;
            for start in 0..len.saturating_sub(NGRAM_MIN - 1) {
                let mut h = fnv_start(TAG_CHAR);
                for n in 1..=NGRAM_MAX.min(len - start) {
                    h = fnv_extend(h, &padded[bounds[start + n - 1]..bounds[start + n]]);
                    if n >= NGRAM_MIN {
                        chars.push(Occurrence { hash: fnv_finish(h), weight: 1.0, times });
                    }
                }
            }
        }
        Some(Features { words, bigrams, chars })
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv_start(tag: u8) -> u64 {
    (FNV_OFFSET ^ u64::from(tag)).wrapping_mul(FNV_PRIME)
}

fn fnv_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    h
}

/// The murmur3 64-bit finaliser, so that every output bit (the sign bit included) depends on every input bit.
fn fnv_finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// FNV-1a over a tag and byte strings, then the murmur3 64-bit finaliser ([`fnv_finish`]).
fn feature_hash(tag: u8, parts: &[&[u8]]) -> u64 {
    fnv_finish(parts.iter().fold(fnv_start(tag), |h, part| fnv_extend(h, part)))
}

struct Token {
    /// Lowercased and stemmed.
    text: String,
    /// Whether the word (before stemming) is a stop word.
    stop: bool,
}

/// Lowercased words: UAX #29 words that hold a letter or digit, split further at `_` and `.` (identifiers,
/// dotted names, host names); apostrophes are dropped (`don't` → `dont`, `python's` → `python`); then plural
/// endings are stemmed. ASCII stretches of the text ([`crate::words::Pieces`], most chunks whole) take
/// [`crate::words::AsciiWords`], which finds the same words without the general segmenter's per-character table
/// lookups.
fn tokenize(text: &str) -> Vec<Token> {
    use crate::words::{AsciiWords, Piece, Pieces};
    let mut out = Vec::new();
    for piece in Pieces::new(text) {
        match piece {
            Piece::Ascii(ascii) => AsciiWords::new(ascii).for_each(|word| push_ascii_word(word.as_bytes(), &mut out)),
            Piece::Other(other) => other.split_word_bounds().for_each(|word| push_word(word, &mut out)),
        }
    }
    out
}

/// Adds the tokens of one UAX #29 word (nothing for a segment without a letter or digit).
fn push_word(word: &str, out: &mut Vec<Token>) {
    if !word.chars().any(char::is_alphanumeric) {
        return;
    }
    for part in word.split(['_', '.', '\u{ff0e}']) {
        let mut token = String::with_capacity(part.len());
        for c in part.chars() {
            if c.is_alphanumeric() || is_mark(c) {
                token.extend(c.to_lowercase());
            } else if is_apostrophe(c) {
                token.push('\'');
            }
        }
        push_token(token, out);
    }
}

/// [`push_word`] for an ASCII word, byte by byte: no character decoding or Unicode case tables (the
/// apostrophes, marks and full-width stop that only the general path handles are not ASCII).
fn push_ascii_word(word: &[u8], out: &mut Vec<Token>) {
    if !word.iter().any(u8::is_ascii_alphanumeric) {
        return;
    }
    for part in word.split(|&b| b == b'_' || b == b'.') {
        let mut token = String::with_capacity(part.len());
        for &b in part {
            if b.is_ascii_alphanumeric() {
                token.push(char::from(b.to_ascii_lowercase()));
            } else if b == b'\'' {
                token.push('\'');
            }
        }
        push_token(token, out);
    }
}

/// Adds one part of a word, lowercased with its apostrophes marked `'`: a possessive `'s` goes (unless it is all
/// there is), the other apostrophes go, and a part left without a letter or digit adds nothing.
fn push_token(mut token: String, out: &mut Vec<Token>) {
    if let Some(base) = token.strip_suffix("'s").filter(|b| b.chars().any(char::is_alphanumeric)) {
        token.truncate(base.len());
    }
    token.retain(|c| c != '\'');
    if token.chars().any(char::is_alphanumeric) {
        let stop = is_stop_word(&token);
        out.push(Token { text: stem(token), stop });
    }
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}')
}

/// Combining marks in the common blocks, so that decomposed accents stay inside their word.
fn is_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036f}'
            | '\u{1ab0}'..='\u{1aff}'
            | '\u{1dc0}'..='\u{1dff}'
            | '\u{20d0}'..='\u{20ff}'
            | '\u{fe20}'..='\u{fe2f}'
    )
}

/// Plural endings only (a variant of Harman's "S" stemmer with Porter's `sses`), so it rarely conflates words
/// with different meanings: `libraries` → `library`, `classes` → `class`, `matches` → `match`, `files` → `file`;
/// `status`, `analysis` and `class` stay.
fn stem(mut word: String) -> String {
    if word.len() <= 3 || !word.is_ascii() {
        return word;
    }
    let drop = if word.ends_with("sses") || word.ends_with("xes") || word.ends_with("ches") || word.ends_with("shes") {
        2
    } else if word.ends_with("ies") && word.len() > 4 && !word.ends_with("eies") && !word.ends_with("aies") {
        word.truncate(word.len() - 3);
        word.push('y');
        0
    } else if word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") && !word.ends_with("is") {
        1
    } else {
        0
    };
    word.truncate(word.len() - drop);
    word
}

/// Common English function words (matched before stemming). They still count, at a tenth, so a text made only
/// of them embeds.
fn is_stop_word(word: &str) -> bool {
    static SET: LazyLock<foldhash::HashSet<&str>> = LazyLock::new(|| STOP_WORDS.iter().copied().collect());
    word.len() <= STOP_WORD_MAX_LEN && SET.contains(word)
}

/// The longest stop word's length: longer words are not looked up.
const STOP_WORD_MAX_LEN: usize = 10;

/// Sorted.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use proptest::prelude::*;

    use super::*;

    fn embed(text: &str) -> Vec<f32> {
        HashEmbedder::default().embed_text(text).unwrap()
    }

    fn tokens(text: &str) -> Vec<String> {
        tokenize(text).into_iter().map(|t| t.text).collect()
    }

    /// The extraction as it was first written, one occurrence per token (`times` 1): the oracle for
    /// [`Features::extract`]'s per-distinct-token tally.
    fn features_one_by_one(text: &str) -> Option<Features> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return None;
        }
        let one = |hash, weight| Occurrence { hash, weight, times: 1 };
        let (mut words, mut bigrams, mut chars) = (Vec::new(), Vec::new(), Vec::new());
        let mut previous: Option<&str> = None;
        for token in &tokens {
            let weight = if token.stop { STOP_WORD_WEIGHT } else { 1.0 };
            words.push(one(feature_hash(TAG_WORD, &[token.text.as_bytes()]), weight));
            if token.stop {
                continue;
            }
            if let Some(prev) = previous {
                bigrams.push(one(feature_hash(TAG_BIGRAM, &[prev.as_bytes(), b" ", token.text.as_bytes()]), 1.0));
            }
            previous = Some(&token.text);
            let chars_of: Vec<char> = format!("<{}>", token.text).chars().collect();
            for start in 0..chars_of.len() {
                for n in NGRAM_MIN..=NGRAM_MAX {
                    if let Some(gram) = chars_of.get(start..start + n) {
                        let gram: String = gram.iter().collect();
                        chars.push(one(feature_hash(TAG_CHAR, &[gram.as_bytes()]), 1.0));
                    }
                }
            }
        }
        Some(Features { words, bigrams, chars })
    }

    /// [`accumulate`] as first written, the oracle for its bucketing: every occurrence sorted by hash and
    /// weight, then added to its slot in that order.
    fn accumulate_all_sorted(occurrences: &[Occurrence], region: &mut [f32], signed: bool) {
        let mut sorted = occurrences.to_vec();
        sorted.sort_by(|a, b| a.hash.cmp(&b.hash).then(a.weight.total_cmp(&b.weight)));
        let size = region.len() as u64;
        let mut i = 0;
        while i < sorted.len() {
            let Occurrence { hash, weight, .. } = sorted[i];
            let same = sorted[i..].iter().take_while(|o| o.hash == hash).count();
            let tf: usize = sorted[i..i + same].iter().map(|o| o.times as usize).sum();
            let sign = if signed && hash >> 63 == 1 { -1.0 } else { 1.0 };
            region[(hash % size) as usize] += sign * weight * sublinear_tf(tf);
            i += same;
        }
    }

    fn project_bits(features: &Features, dim: usize) -> Vec<u32> {
        let e = HashEmbedder::new(dim).unwrap();
        [true, false].iter().flat_map(|&signed| e.project(features, signed)).map(f32::to_bits).collect()
    }

    /// The hash embedder's future is ready at once, so polling it once is enough.
    fn ready<F: Future>(fut: F) -> F::Output {
        match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("the hash embedder never waits"),
        }
    }

    #[test]
    fn model_id_and_dimension() {
        let e = HashEmbedder::default();
        assert_eq!(e.model_id(), "hash-v1-384");
        assert_eq!(e.dimension(), 384);
        assert_eq!(HashEmbedder::new(1024).unwrap().model_id(), "hash-v1-1024");
        assert!(matches!(HashEmbedder::new(4), Err(EmbedError::Config(_))));
        assert!(HashEmbedder::new(100_000).is_err());
        assert_eq!(embed("some text").len(), 384);
    }

    #[test]
    fn deterministic_across_instances() {
        let text = "The quick brown fox jumps over the lazy dog; Python's __init__.py files.";
        let a = HashEmbedder::new(384).unwrap().embed_text(text).unwrap();
        let b = HashEmbedder::default().embed_text(text).unwrap();
        assert_eq!(a, b);
        let batch = HashEmbedder::default().embed_batch(&[text.to_owned(), text.to_owned()]).unwrap();
        assert_eq!(batch[0], a);
        assert_eq!(batch[1], a);
    }

    /// Pins the output, so that a change to tokenisation, hashing or weights cannot slip in without bumping
    /// `HASH_EMBEDDER_VERSION` (and re-pinning here).
    #[test]
    fn output_is_pinned() {
        assert_eq!(feature_hash(TAG_WORD, &[b"python"]), feature_hash(TAG_WORD, &[b"py", b"thon"]));
        assert_eq!(feature_hash(TAG_WORD, &[b"python"]), 0xada7_68a0_4e44_1976);
        let v = embed("Hello, world! Frostbyte embeds text.");
        let mut top: Vec<(usize, f32)> = v.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        let top: Vec<(usize, bool)> = top.iter().take(4).map(|(i, x)| (*i, *x > 0.0)).collect();
        assert_eq!(top, PINNED_TOP);
    }

    /// Every bit of the vectors for a varied set of texts, so that a faster implementation is held to exactly the
    /// same output (a changed last bit would need a new `HASH_EMBEDDER_VERSION`).
    #[test]
    fn output_bits_are_pinned() {
        let long = "The interpreter's garbage collector frees objects; does it free cycles? Doe, does and doe's \
            records: 3.14, e.g. x_y.z https://example.com/a?b=c. "
            .repeat(40);
        let texts = [
            "Hello, world! Frostbyte embeds text.",
            "Ünïcödé façade naïve, ﬁle ＦＵＬＬ width, 漢字とかな, emoji 🎉 and Ελληνικά.",
            "the the the of and a an is",
            "classes matches libraries files status analysis class buses",
            long.as_str(),
        ];
        let mut h = Sha256::new();
        for dim in [8, 384, 1000] {
            let e = HashEmbedder::new(dim).unwrap();
            for t in texts {
                for x in e.embed_text(t).unwrap() {
                    h.update(x.to_bits().to_le_bytes());
                }
            }
        }
        assert_eq!(hex::encode(h.finalize()), "dbd14d6752c4695e7ac0548039beda5cd13dae98f43005579df4f378a5e27e44");
    }

    const PINNED_TOP: [(usize, bool); 4] = [(76, false), (112, true), (130, true), (140, false)];

    #[test]
    fn vectors_are_unit_length() {
        for text in ["a", "x y z", "Ünïcödé façade naïve", "漢字とかな", "1234", &"lorem ipsum ".repeat(500)]
        {
            let v = embed(text);
            assert!((l2_norm(&v) - 1.0).abs() < 1e-5, "{text}");
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let q = embed("How do I install packages with pip?");
        let close = embed("Installing a package: run pip install followed by the package name.");
        let far = embed("The central bank raised interest rates to curb inflation.");
        assert!(cosine(&q, &close) > cosine(&q, &far) + 0.1, "{} vs {}", cosine(&q, &close), cosine(&q, &far));
        // Inflections and typos still match through character n-grams.
        let a = embed("configuring the scheduler");
        let b = embed("configure schedulers");
        let c = embed("weather forecast tomorrow");
        assert!(cosine(&a, &b) > 0.3 && cosine(&a, &c) < 0.15, "{} {}", cosine(&a, &b), cosine(&a, &c));
        assert!((cosine(&q, &q) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn empty_input_is_an_error_never_a_zero_vector() {
        let e = HashEmbedder::default();
        for text in ["", "   \n\t", "!!! ... ---", "🙂🙂"] {
            assert_eq!(e.embed_text(text), Err(EmbedError::Empty { index: 0 }), "{text:?}");
        }
        let batch = ["fine".to_owned(), "also fine".to_owned(), " ".to_owned()];
        assert_eq!(e.embed_batch(&batch), Err(EmbedError::Empty { index: 2 }));
        assert!(e.embed_batch(&[]).unwrap().is_empty());
        // Only stop words, or only a possessive: still words, still a vector.
        assert!(e.embed_text("to be or not to be").is_ok());
        assert!(e.embed_text("'s").is_ok());
    }

    #[test]
    fn embedder_trait_object() {
        let e: Box<dyn Embedder> = Box::new(HashEmbedder::default());
        let out = ready(e.embed(&["one".to_owned(), "two".to_owned()])).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], embed("one"));
        assert_eq!(ready(e.embed(&[String::new()])), Err(EmbedError::Empty { index: 0 }));
    }

    #[test]
    fn tokenizer() {
        assert_eq!(
            tokens("Don't use sys.path_hooks; Python's __init__ files, O’Reilly’s IDEs."),
            ["dont", "use", "sys", "path", "hook", "python", "init", "file", "oreilly", "ide"]
        );
        assert_eq!(tokens("Café RÉSUMÉ e\u{301}tude 3.14 x++"), ["café", "résumé", "e\u{301}tude", "3", "14", "x"]);
        assert_eq!(tokens("漢字"), ["漢", "字"]);
        assert!(tokenize("The cat").first().unwrap().stop);
    }

    #[test]
    fn stemmer() {
        for (word, stem_) in [
            ("libraries", "library"),
            ("classes", "class"),
            ("matches", "match"),
            ("boxes", "box"),
            ("files", "file"),
            ("status", "status"),
            ("analysis", "analysis"),
            ("class", "class"),
            ("gas", "gas"),
            ("ties", "tie"),
        ] {
            assert_eq!(stem(word.to_owned()), stem_, "{word}");
        }
    }

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn helpers() {
        assert_eq!(dot(&[1.0, 2.0], &[3.0, 4.0]), 11.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
        let mut zero = [0.0f32; 3];
        assert!(!l2_normalize(&mut zero));
        let k = embedding_cache_key("hash-v1-384", &"ab".repeat(32));
        assert_eq!(k.len(), 64);
        assert_ne!(k, embedding_cache_key("hash-v1-768", &"ab".repeat(32)));
        assert!(EmbedError::RateLimited { retry_after: None }.is_retryable());
        assert!(EmbedError::Unavailable { message: "timeout".into(), retryable: true }.is_retryable());
        assert!(!EmbedError::Unavailable { message: "401".into(), retryable: false }.is_retryable());
        assert!(!EmbedError::Empty { index: 0 }.is_retryable());
        assert_eq!(EmbedError::InvalidResponse("x".into()).code(), "embed_invalid_response");
    }

    #[test]
    fn registry_resolves_names_and_model_ids() {
        let mut r = EmbedderRegistry::default();
        assert_eq!(r.default_name(), "hash");
        assert_eq!(r.get("hash").unwrap().model_id(), "hash-v1-384");
        assert_eq!(r.get("hash-v1-384").unwrap().model_id(), "hash-v1-384");
        assert!(r.get("openai").is_none());
        r.register("wide", Arc::new(HashEmbedder::new(1024).unwrap())).unwrap();
        assert_eq!(r.get("hash-v1-1024").unwrap().dimension(), 1024);
        assert!(matches!(r.register("wide", Arc::new(HashEmbedder::default())), Err(EmbedError::Config(_))));
        assert!(matches!(r.set_default("nope"), Err(EmbedError::Config(m)) if m.contains("hash, wide")));
        r.set_default("wide").unwrap();
        assert_eq!(r.default_embedder().dimension(), 1024);
        assert_eq!(r.names(), ["hash", "wide"]);
        assert_eq!(r.selectors(), ["hash", "hash-v1-1024", "hash-v1-384", "wide"]);
        assert!(format!("{r:?}").contains("hash-v1-1024"));
    }

    #[test]
    fn vectors_are_checked_before_use() {
        let good = vec![embed("one"), embed("two")];
        check_vectors(&good, 2, 384).unwrap();
        assert!(matches!(check_vectors(&good, 3, 384), Err(EmbedError::InvalidResponse(_))));
        assert_eq!(check_vectors(&good, 2, 512), Err(EmbedError::DimensionMismatch { expected: 512, got: 384 }));
        assert!(
            matches!(check_vectors(&[vec![0.0; 4]], 1, 4), Err(EmbedError::InvalidResponse(m)) if m.contains("zero"))
        );
        assert!(check_vectors(&[vec![f32::NAN, 1.0]], 1, 2).is_err());
        assert!(HashEmbedder::default().compute_bound());
        assert_eq!(EmbedError::DimensionMismatch { expected: 1, got: 2 }.code(), "embed_dimension_mismatch");
        assert!(!EmbedError::DimensionMismatch { expected: 1, got: 2 }.is_retryable());
    }

    /// What [`tokenize`] gives when every text takes the general UAX #29 segmenter.
    fn tokenize_by_segmenter(text: &str) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        text.split_word_bounds().for_each(|word| push_word(word, &mut out));
        out.into_iter().map(|t| (t.text, t.stop)).collect()
    }

    fn tokens_with_stops(text: &str) -> Vec<(String, bool)> {
        tokenize(text).into_iter().map(|t| (t.text, t.stop)).collect()
    }

    #[test]
    fn the_ascii_path_tokenizes_like_the_segmenter_on_prose() {
        for text in [
            "The interpreter's garbage collector; does it free cycles? x_y.z https://example.com/a?b=c.",
            "PEP 8: 4 spaces, 79 chars; v3.11.2 (2023-02-08) __init__.py can't won't O'Neil's",
        ] {
            assert_eq!(tokens_with_stops(text), tokenize_by_segmenter(text), "{text}");
        }
    }

    #[test]
    fn the_stop_word_set_holds_exactly_the_list() {
        assert!(STOP_WORDS.iter().all(|w| is_stop_word(w) && w.len() <= STOP_WORD_MAX_LEN));
        for word in ["python", "thee", "", "themselvess", "ab", "A", "The"] {
            assert!(!is_stop_word(word), "{word}");
        }
    }

    #[test]
    fn fast_remainders_equal_division() {
        for d in [1u64, 2, 3, 7, 8, 48, 144, 192, 1000, 65_536, u64::MAX] {
            let m = FastMod::new(d);
            for x in [0u64, 1, d - 1, d, d.wrapping_add(1), u64::MAX, u64::MAX - 1, 0x8000_0000_0000_0000] {
                assert_eq!(m.rem(x), x % d, "{x} % {d}");
            }
        }
        assert_eq!((1..64).map(sublinear_tf).collect::<Vec<_>>(), (1..64).map(sublinear_tf_exact).collect::<Vec<_>>());
        assert_eq!(sublinear_tf(1000), sublinear_tf_exact(1000));
    }

    proptest! {
        /// Hashes from a small pool, so that slots hold many features and a hash recurs with other weights.
        #[test]
        fn bucketing_by_hash_sums_as_sorting_everything(
            occurrences in proptest::collection::vec(
                (0usize..40, proptest::sample::select(vec![0.1f32, 0.5, 1.0]), 1u32..70), 0..400),
            size in proptest::sample::select(vec![1usize, 2, 3, 8, 48, 144]),
            signed: bool,
        ) {
            let pool: Vec<u64> = (0..40u64).map(|i| fnv_finish(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
            let occurrences: Vec<Occurrence> =
                occurrences.iter().map(|&(h, weight, times)| Occurrence { hash: pool[h], weight, times }).collect();
            let (mut grouped, mut sorted) = (vec![0.0f32; size], vec![0.0f32; size]);
            accumulate(&occurrences, &mut grouped, signed);
            accumulate_all_sorted(&occurrences, &mut sorted, signed);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&grouped), bits(&sorted));
        }

        #[test]
        fn the_ascii_path_tokenizes_like_the_segmenter(text in "[a-eA-EsS0-3_:.,;' \t\r\n\"/()?!@#=+-]{0,60}") {
            prop_assert_eq!(tokens_with_stops(&text), tokenize_by_segmenter(&text));
        }

        #[test]
        fn mixed_text_tokenizes_like_the_segmenter(
            text in "[a-eA-EsS0-3_:.,;' \t\r\n\"/?-\u{e9}\u{c9}\u{301}\u{a0}\u{2019}\u{200d}\u{4e2d}\u{ff0e}\u{1f469}]{0,60}",
        ) {
            prop_assert_eq!(tokens_with_stops(&text), tokenize_by_segmenter(&text));
        }

        #[test]
        fn tallying_distinct_tokens_projects_like_one_occurrence_each(
            words in proptest::collection::vec(
                "(the|does|doe|Doe's|of|files|file|naïve|x_y|3\\.14|漢字|[a-c]{1,7})", 1..80),
            dim in prop_oneof![Just(8usize), Just(384), 9usize..200],
        ) {
            let text = words.join(" ");
            let (tallied, one_by_one) = (Features::extract(&text).unwrap(), features_one_by_one(&text).unwrap());
            prop_assert_eq!(project_bits(&tallied, dim), project_bits(&one_by_one, dim));
        }

        #[test]
        fn fast_remainders_equal_division_everywhere(x in any::<u64>(), d in 1u64..=65_536) {
            prop_assert_eq!(FastMod::new(d).rem(x), x % d);
        }

        #[test]
        fn any_text_with_a_letter_or_digit_embeds_to_a_unit_vector(text in "\\PC{0,40}", dim in 8usize..64) {
            let e = HashEmbedder::new(dim).unwrap();
            match e.embed_text(&text) {
                Ok(v) => {
                    prop_assert!(text.chars().any(char::is_alphanumeric));
                    prop_assert_eq!(v.len(), dim);
                    prop_assert!((l2_norm(&v) - 1.0).abs() < 1e-4);
                }
                Err(err) => {
                    prop_assert_eq!(err, EmbedError::Empty { index: 0 });
                    prop_assert!(!text.chars().any(char::is_alphanumeric), "{:?} has a letter or digit", text);
                }
            }
        }
    }
}
