//! `POST /v1/embeddings`: an OpenAI-compatible embeddings endpoint served from Frostbyte's own configured
//! embedders, so that anything speaking the OpenAI protocol (Frostbyte's own `openai` embedder included) can use
//! them. Request `{input: string | [string], model?, encoding_format?: "float", dimensions?, user?}`; answer
//! `{object: "list", data: [{object: "embedding", index, embedding}], model, usage}`, not wrapped in the API
//! envelope (errors are).
//!
//! Authentication: the platform admin key, or any tenant credential with the `query` scope. `model` is a name
//! from the `[embedding]` config (`hash`, `openai`) or an embedder's model id (`hash-v1-384`); omitted, the
//! configured default. `usage` counts whitespace-separated words, an approximation of tokens.
//!
//! Also here: [`check_embedding_model`], which tenant create and PATCH call so that a tenant cannot select an
//! embedder this deployment does not have.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use frostbyte_core::auth::Scope;
use frostbyte_core::embed::{EmbedError, check_vectors};
use frostbyte_core::tenant::FieldViolation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::auth::{Principal, check_tenant_usable};
use crate::http::context::ApiContext;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::Json;

const TAG: &str = "embeddings";
/// The most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;
/// The longest input, in characters.
pub const MAX_INPUT_CHARS: usize = 100_000;

/// One text or several.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// An OpenAI-compatible embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub input: EmbeddingInput,
    /// An embedder name or model id; the configured default when absent.
    pub model: Option<String>,
    /// Only `float` is supported.
    pub encoding_format: Option<String>,
    /// If given, must equal the model's dimension (vectors are never truncated).
    pub dimensions: Option<usize>,
    /// Accepted for compatibility and ignored.
    pub user: Option<String>,
}

/// One vector.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vec<f32>,
}

/// Approximate token counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// An OpenAI-compatible embeddings response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    /// The model id that produced the vectors (`hash-v1-384`).
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// Admin key, or a usable tenant credential with the `query` scope.
fn authorize(principal: &Principal) -> Result<(), ApiError> {
    let Principal::Tenant(cred) = principal else { return Ok(()) };
    check_tenant_usable(&cred.tenant)?;
    if !cred.scopes.contains(&Scope::Query) {
        return Err(ApiError::forbidden("this operation needs a credential with the `query` scope"));
    }
    Ok(())
}

fn check_inputs(input: EmbeddingInput) -> Result<Vec<String>, ApiError> {
    let texts = match input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(ts) => ts,
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid_field(
            "input",
            texts.len(),
            format!("a string or a list of 1 to {MAX_INPUTS} strings"),
        ));
    }
    let mut problems = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            problems.push(FieldViolation::new(format!("input[{i}]"), Value::Null, "non-empty text"));
        } else if t.chars().count() > MAX_INPUT_CHARS {
            problems.push(FieldViolation::new(
                format!("input[{i}]"),
                Value::Null,
                format!("at most {MAX_INPUT_CHARS} characters"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::validation("some inputs cannot be embedded", problems));
    }
    Ok(texts)
}

fn embed_error(e: EmbedError) -> ApiError {
    match e {
        EmbedError::Empty { index } => {
            ApiError::invalid_field(&format!("input[{index}]"), Value::Null, "text with at least one letter or digit")
        }
        EmbedError::TooLong { index, limit, .. } => {
            ApiError::invalid_field(&format!("input[{index}]"), Value::Null, format!("at most {limit} characters"))
        }
        other => {
            tracing::warn!(error = %other, code = other.code(), "embedder failed while serving /v1/embeddings");
            ApiError::unavailable(format!("the embedder could not answer ({})", other.code()))
        }
    }
}

#[utoipa::path(
    post, path = "/v1/embeddings", tag = TAG,
    summary = "OpenAI-compatible embeddings from Frostbyte's configured embedders (admin key or scope `query`)",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "The vectors, in input order (no envelope)", body = EmbeddingsResponse),
        (status = 400, description = "VALIDATION_ERROR: unknown model, empty input, unsupported encoding_format or dimensions", body = ErrorEnvelope),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_PERMISSIONS or TENANT_SUSPENDED", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the embedder behind the model is unavailable", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_embeddings(
    State(ctx): State<ApiContext>,
    principal: Principal,
    Json(body): Json<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    authorize(&principal)?;
    let embedder = match body.model.as_deref() {
        None => ctx.embedders.default_embedder(),
        Some(name) => ctx.embedders.get(name).ok_or_else(|| {
            ApiError::invalid_field("model", name, format!("one of {}", ctx.embedders.selectors().join(", ")))
        })?,
    };
    if let Some(format) = body.encoding_format.as_deref().filter(|f| *f != "float") {
        return Err(ApiError::invalid_field("encoding_format", format, "`float`"));
    }
    if let Some(d) = body.dimensions.filter(|d| *d != embedder.dimension()) {
        return Err(ApiError::invalid_field(
            "dimensions",
            d,
            format!("{} (the model's dimension)", embedder.dimension()),
        ));
    }
    let texts = check_inputs(body.input)?;
    let tokens: u64 = texts.iter().map(|t| t.split_whitespace().count() as u64).sum();
    let vectors = if embedder.compute_bound() {
        let (e, t) = (embedder.clone(), texts.clone());
        tokio::task::spawn_blocking(move || tokio::runtime::Handle::current().block_on(e.embed(&t)))
            .await
            .map_err(|e| ApiError::internal(&e))?
    } else {
        embedder.embed(&texts).await
    }
    .map_err(embed_error)?;
    check_vectors(&vectors, texts.len(), embedder.dimension()).map_err(embed_error)?;
    tracing::debug!(model = embedder.model_id(), inputs = texts.len(), "embeddings served");
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| EmbeddingData { object: "embedding", index, embedding })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: embedder.model_id().to_owned(),
        usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
    })
    .into_response())
}

/// Refuses a tenant config (create body or PATCH) whose `embedding_model` names no configured embedder, so the
/// mistake surfaces at once rather than as failed documents later.
pub(crate) fn check_embedding_model(ctx: &ApiContext, config: Option<&Value>) -> Result<(), ApiError> {
    let Some(model) = config.and_then(|c| c.get("embedding_model")).and_then(Value::as_str) else {
        return Ok(());
    };
    if ctx.embedders.contains(model) {
        return Ok(());
    }
    Err(ApiError::validation(
        format!("embedding_model {model:?} is not configured on this deployment"),
        vec![FieldViolation::new(
            "config.embedding_model",
            model,
            format!("one of {}", ctx.embedders.selectors().join(", ")),
        )],
    ))
}
