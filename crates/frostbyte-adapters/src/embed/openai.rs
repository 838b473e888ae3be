//! The `openai` embedder: any OpenAI-compatible `POST {base_url}/embeddings` endpoint (OpenAI, vLLM, Ollama, a
//! text-embeddings-inference server, or another Frostbyte's `/v1/embeddings`).
//!
//! Contract, in order:
//! - inputs go out in batches of at most `batch_size`; the batches of one call succeed or fail together;
//! - a batch that times out, cannot connect, or is answered 408, 429 or 5xx is retried up to `max_retries` times
//!   with exponential backoff (doubling from `retry_backoff`, capped at `max_backoff`; a 429's `Retry-After` is
//!   honoured up to the same cap); 401/403 and other 4xx are not retried;
//! - every answer is checked before it is returned: one embedding per input, indices `0..n` each once, every
//!   vector of the configured `dimensions` ([`EmbedError::DimensionMismatch`] otherwise), finite and non-zero
//!   ([`check_vectors`]), so nothing malformed can reach the index;
//! - errors carry status codes and counts, never the endpoint's body (it may echo the input) or the API key.
//!
//! The model id recorded on every vector is `openai/{model}`.

use std::time::Duration;

use async_trait::async_trait;
use frostbyte_core::embed::{EmbedError, Embedder, check_vectors};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest_013 as reqwest;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The largest response body read, per batch.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Settings of one OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including the API version, without `/embeddings`: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Sent as `model`: `text-embedding-3-small`, or `hash` for another Frostbyte.
    pub model: String,
    /// The dimension every returned vector must have.
    pub dimensions: usize,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<SecretString>,
    /// Inputs per request.
    pub batch_size: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of a failed batch (so at most `max_retries + 1` requests per batch).
    pub max_retries: u32,
    /// The wait before the first retry; doubled before each further one.
    pub retry_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
}

impl OpenAiConfig {
    /// Settings with the usual defaults for everything but the endpoint, model and dimension.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimensions: usize) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            dimensions,
            api_key: None,
            batch_size: 64,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// An OpenAI-compatible embeddings endpoint; see the module documentation.
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: String,
    model_id: String,
    config: OpenAiConfig,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder").field("url", &self.url).field("model_id", &self.model_id).finish()
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Checks the settings and builds the HTTP client.
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let base = config.base_url.trim_end_matches('/');
        let parsed = url::Url::parse(base)
            .map_err(|e| EmbedError::Config(format!("embedding.openai.base_url is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EmbedError::Config("embedding.openai.base_url must be http:// or https://".into()));
        }
        if config.model.trim().is_empty() {
            return Err(EmbedError::Config("embedding.openai.model must be set".into()));
        }
        if !(1..=65_536).contains(&config.dimensions) {
            return Err(EmbedError::Config(format!(
                "embedding.openai.dimensions must be between 1 and 65536 (got {})",
                config.dimensions
            )));
        }
        if !(1..=2048).contains(&config.batch_size) {
            return Err(EmbedError::Config(format!(
                "embedding.openai.batch_size must be between 1 and 2048 (got {})",
                config.batch_size
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| EmbedError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(OpenAiEmbedder {
            client,
            url: format!("{base}/embeddings"),
            model_id: format!("openai/{}", config.model),
            config,
        })
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The wait before retry number `retry` (1-based): the backoff doubled per earlier retry, capped.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.config.retry_backoff.saturating_mul(factor).min(self.config.max_backoff)
    }

    /// One batch, with retries.
    async fn embed_batch(&self, batch: &[String], offset: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut retry = 0;
        loop {
            let error = match self.request(batch, offset).await {
                Ok(vectors) => return Ok(vectors),
                Err(e) => e,
            };
            if !error.is_retryable() || retry >= self.config.max_retries {
                return Err(error);
            }
            retry += 1;
            let wait = match &error {
                EmbedError::RateLimited { retry_after: Some(after) } => (*after).min(self.config.max_backoff),
                _ => self.backoff(retry),
            };
            tracing::warn!(
                %error, url = %self.url, retry, max_retries = self.config.max_retries,
                wait_ms = wait.as_millis() as u64, "embedding request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One request, its answer checked.
    async fn request(&self, batch: &[String], offset: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = serde_json::to_vec(&Request { model: &self.config.model, input: batch, encoding_format: "float" })
            .map_err(|_| EmbedError::Config("cannot encode the request".into()))?;
        let mut req = self.client.post(&self.url).header(CONTENT_TYPE, "application/json").body(body);
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key.expose_secret());
        }
        let mut resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(status, resp.headers().get(RETRY_AFTER)));
        }
        let mut bytes = Vec::new();
        while let Some(piece) = resp.chunk().await.map_err(transport_error)? {
            if bytes.len() + piece.len() > MAX_RESPONSE_BYTES {
                return Err(EmbedError::InvalidResponse(format!("response larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            bytes.extend_from_slice(&piece);
        }
        let parsed: Response = serde_json::from_slice(&bytes).map_err(|e| {
            EmbedError::InvalidResponse(format!("not an embeddings response ({})", json_error_kind(&e)))
        })?;
        order(parsed.data, batch.len(), offset, self.config.dimensions)
    }
}

/// The kind of a JSON error, without its position or the text around it.
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

/// Puts the items in input order and checks them: indices `0..n` each once, then [`check_vectors`]. `offset` is
/// where this batch starts in the whole call, so errors name the caller's input index.
fn order(items: Vec<Item>, n: usize, offset: usize, dimensions: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    if items.len() != n {
        return Err(EmbedError::InvalidResponse(format!("{} embeddings for {n} inputs", items.len())));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; n];
    for item in items {
        let slot = slots.get_mut(item.index).ok_or_else(|| {
            EmbedError::InvalidResponse(format!("embedding index {} out of range", offset + item.index))
        })?;
        if slot.replace(item.embedding).is_some() {
            return Err(EmbedError::InvalidResponse(format!("embedding index {} repeated", offset + item.index)));
        }
    }
    let vectors: Vec<Vec<f32>> = slots.into_iter().map(|v| v.unwrap_or_default()).collect();
    check_vectors(&vectors, n, dimensions)?;
    Ok(vectors)
}

fn transport_error(e: reqwest::Error) -> EmbedError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    EmbedError::Unavailable { message: what.to_owned(), retryable: true }
}

fn status_error(status: StatusCode, retry_after: Option<&reqwest::header::HeaderValue>) -> EmbedError {
    match status.as_u16() {
        429 => EmbedError::RateLimited {
            retry_after: retry_after
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        408 | 500..=599 => EmbedError::Unavailable { message: format!("answered {status}"), retryable: true },
        401 | 403 => {
            EmbedError::Unavailable { message: format!("answered {status}: check the API key"), retryable: false }
        }
        _ => EmbedError::Unavailable {
            message: format!("answered {status}: check base_url and model"),
            retryable: false,
        },
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.config.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if let Some(index) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(EmbedError::Empty { index });
        }
        let mut out = Vec::with_capacity(texts.len());
        for (n, batch) in texts.chunks(self.config.batch_size).enumerate() {
            out.extend(self.embed_batch(batch, n * self.config.batch_size).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: usize, embedding: Vec<f32>) -> Item {
        Item { index, embedding }
    }

    #[test]
    fn settings_are_checked() {
        let ok = OpenAiConfig::new("http://127.0.0.1:9/v1/", "m", 4);
        let e = OpenAiEmbedder::new(ok.clone()).unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:9/v1/embeddings");
        assert_eq!(e.model_id(), "openai/m");
        assert_eq!(e.dimension(), 4);
        assert!(!e.compute_bound());
        for bad in [
            OpenAiConfig { base_url: "ftp://x".into(), ..ok.clone() },
            OpenAiConfig { base_url: "not a url".into(), ..ok.clone() },
            OpenAiConfig { model: " ".into(), ..ok.clone() },
            OpenAiConfig { dimensions: 0, ..ok.clone() },
            OpenAiConfig { batch_size: 0, ..ok.clone() },
        ] {
            assert!(matches!(OpenAiEmbedder::new(bad), Err(EmbedError::Config(_))));
        }
    }

    #[test]
    fn answers_are_reordered_and_checked() {
        let v = order(vec![item(1, vec![0.0, 1.0]), item(0, vec![1.0, 0.0])], 2, 0, 2).unwrap();
        assert_eq!(v, [vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!(matches!(order(vec![item(0, vec![1.0, 0.0])], 2, 0, 2), Err(EmbedError::InvalidResponse(_))));
        assert!(matches!(
            order(vec![item(0, vec![1.0]), item(0, vec![1.0])], 2, 0, 1),
            Err(EmbedError::InvalidResponse(m)) if m.contains("repeated")
        ));
        assert!(matches!(
            order(vec![item(5, vec![1.0])], 1, 64, 1),
            Err(EmbedError::InvalidResponse(m)) if m.contains("69")
        ));
        assert_eq!(
            order(vec![item(0, vec![1.0, 0.0, 0.0])], 1, 0, 2),
            Err(EmbedError::DimensionMismatch { expected: 2, got: 3 })
        );
        assert!(order(vec![item(0, vec![0.0, 0.0])], 1, 0, 2).is_err(), "a zero vector is refused");
    }

    #[test]
    fn statuses_map_to_retryable_or_not() {
        assert!(status_error(StatusCode::TOO_MANY_REQUESTS, None).is_retryable());
        let after = reqwest::header::HeaderValue::from_static("7");
        assert_eq!(
            status_error(StatusCode::TOO_MANY_REQUESTS, Some(&after)),
            EmbedError::RateLimited { retry_after: Some(Duration::from_secs(7)) }
        );
        assert!(status_error(StatusCode::BAD_GATEWAY, None).is_retryable());
        assert!(status_error(StatusCode::REQUEST_TIMEOUT, None).is_retryable());
        assert!(!status_error(StatusCode::UNAUTHORIZED, None).is_retryable());
        assert!(!status_error(StatusCode::NOT_FOUND, None).is_retryable());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut c = OpenAiConfig::new("http://127.0.0.1:9/v1", "m", 4);
        c.retry_backoff = Duration::from_millis(100);
        c.max_backoff = Duration::from_millis(350);
        let e = OpenAiEmbedder::new(c).unwrap();
        assert_eq!([1, 2, 3, 4].map(|r| e.backoff(r).as_millis()), [100, 200, 350, 350]);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_retried_then_reported_as_retryable() {
        // Port 9 (discard) on loopback is closed on test machines: every attempt fails to connect.
        let mut c = OpenAiConfig::new("http://127.0.0.1:9/v1", "m", 4);
        c.max_retries = 2;
        c.retry_backoff = Duration::from_millis(1);
        let e = OpenAiEmbedder::new(c).unwrap();
        let err = e.embed(&["hello".to_owned()]).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert_eq!(err.code(), "embed_unavailable");
        assert_eq!(e.embed(&["a".to_owned(), " ".to_owned()]).await, Err(EmbedError::Empty { index: 1 }));
        assert!(e.embed(&[]).await.unwrap().is_empty());
    }
}
