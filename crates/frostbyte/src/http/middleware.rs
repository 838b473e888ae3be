//! Cross-cutting middleware: the request context (request id in scope, every error in the envelope) and the HTTP
//! metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{EnvelopedError, for_bare_status};
use super::request_id::{self, X_REQUEST_ID};

/// Puts the request id in scope for the handler and turns any error response that did not come from an
/// [`ApiError`](super::ApiError) (the router's 405, a layer's 413) into the error envelope.
pub(crate) async fn request_context(req: Request, next: Next) -> Response {
    let id = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    request_id::scope(id, async move {
        let response = next.run(req).await;
        let status = response.status();
        if !(status.is_client_error() || status.is_server_error())
            || response.extensions().get::<EnvelopedError>().is_some()
        {
            return response;
        }
        let (mut parts, _) = response.into_parts();
        let mut enveloped = for_bare_status(status).into_response();
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        for (name, value) in parts.headers.iter() {
            if !enveloped.headers().contains_key(name) {
                enveloped.headers_mut().insert(name.clone(), value.clone());
            }
        }
        enveloped
    })
    .await
}

/// Counts requests and times them, labelled by the matched route template (never the raw path, which would give
/// one series per tenant and id).
pub(crate) async fn http_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "frostbyte_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!("frostbyte_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
