//! Extractors whose rejections come out in the error envelope: a malformed or unexpected body is a 400 that says
//! what to fix, an oversized one a 413, a path parameter that cannot name anything a 404.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body (request DTOs deny unknown fields) or a JSON response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field and what it expected; the position suffix means little to a client.
            let text = e.body_text();
            let text = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(&text);
            ApiError::validation(format!("request body does not match the expected shape: {text}"), Vec::new())
        }
        JsonRejection::JsonSyntaxError(e) => {
            let text = e.body_text();
            let text = text.strip_prefix("Failed to parse the request body as JSON: ").unwrap_or(&text);
            ApiError::validation(format!("request body is not valid JSON: {text}"), Vec::new())
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::validation("send the request body as JSON with Content-Type: application/json", Vec::new())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, super::ErrorCode::PayloadTooLarge, "request body is too large")
        }
        other => ApiError::validation(format!("could not read the request body: {}", other.body_text()), Vec::new()),
    }
}

/// Path parameters. A value that fails to parse (a tenant id outside the grammar, a malformed UUID) cannot name an
/// existing resource, so it is answered like any unknown resource: 404.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                tracing::debug!(%rejection, "path parameter rejected");
                Err(ApiError::not_found("resource"))
            }
        }
    }
}

/// Query parameters; a malformed value is a 400 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
    ApiError::validation(format!("invalid query string: {text}"), Vec::new())
}
