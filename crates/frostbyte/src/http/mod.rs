//! The HTTP API: routes, the envelope, authentication, per-tenant rate limits, request ids, metrics and the
//! generated OpenAPI document. Handlers are thin: extract, authorise, call a use-case, map the error.
//!
//! Entry points for the composition root: [`router`], [`openapi`] and [`install_metrics_recorder`].

pub mod auth;
mod context;
pub mod docs;
pub mod envelope;
pub mod error;
pub mod extract;
mod middleware;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod state;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use context::ApiContext;
pub use error::{ApiError, ErrorCode};
pub use state::{AppState, HttpSettings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Frostbyte API",
        description = "Multi-tenant, auditable ETL for retrieval-augmented applications. Success bodies are \
                       `{\"success\": true, \"data\": ...}`; errors are `{\"success\": false, \"error\": {code, \
                       message, details, request_id}}`. Authenticate with `Authorization: Bearer <token>`: the \
                       platform admin key, a tenant API key (`fbk_…`) or a JWT from `POST /api/v1/auth/token`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "Health, readiness, metrics and this document"),
        (name = "tenants", description = "Tenants and API keys (platform admin key)"),
        (name = "auth", description = "Access tokens"),
        (name = "audit", description = "The audit hash chain (scope `audit`)"),
        (name = "dead letters", description = "Jobs that spent their retries (scope `admin`)"),
        (name = "documents", description = "Document intake (scope `ingest`) and document views (scope `query`)"),
        (name = "embeddings", description = "OpenAI-compatible embeddings (admin key or scope `query`)"),
        (name = "pipeline", description = "Pipeline events as Server-Sent Events (any credential)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("admin key, fbk_ API key, or JWT")
                    .build(),
            ),
        );
    }
}

fn split() -> (Router<ApiContext>, utoipa::openapi::OpenApi) {
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(routes::api_routes()).split_for_parts()
}

/// The generated OpenAPI document (also served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

/// The whole application: every route plus request ids, tracing, metrics, body limits and the error envelope.
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, spec) = split();
    let docs_html: Arc<str> = docs::render(&spec).into();
    let max_body = state.settings.max_body_bytes;
    let events = state.events.clone();
    let ctx =
        ApiContext { app: state, limits: Arc::new(rate_limit::RateLimits::default()), spec: Arc::new(spec), docs_html };
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("unmatched");
            let request_id = req.headers().get(&request_id::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::debug_span!("request", method = %req.method(), route, request_id)
        })
        .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG));
    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .map_request(request_id::drop_insane::<axum::body::Body>)
        .layer(SetRequestIdLayer::new(request_id::X_REQUEST_ID.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id::X_REQUEST_ID.clone()))
        .layer(trace)
        .layer(axum::middleware::from_fn(middleware::http_metrics))
        .layer(axum::middleware::from_fn(middleware::request_context))
        // Code deep inside a request (intake) publishes pipeline events to this app's bus.
        .layer(axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
            crate::events::scope(events.clone(), next.run(req))
        }))
        // A panicking handler becomes a 500 in the envelope (via request_context) instead of a dropped connection.
        .layer(CatchPanicLayer::new())
        .layer(DefaultBodyLimit::max(max_body));
    routes
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(layers)
        .with_state(ctx)
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Durations of HTTP requests, in seconds.
const DURATION_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Installs the global Prometheus recorder on first call and returns a handle to it; later calls return the same
/// handle. If another recorder was installed first (by something else in the process), the handle renders an
/// empty, detached registry and a warning is logged.
pub fn install_metrics_recorder() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("frostbyte_http_request_duration_seconds".to_owned()),
                    &DURATION_BUCKETS,
                )
                .expect("bucket list is not empty");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder was already installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            metrics::describe_counter!("frostbyte_http_requests_total", "HTTP requests by method, route and status");
            metrics::describe_histogram!(
                "frostbyte_http_request_duration_seconds",
                metrics::Unit::Seconds,
                "HTTP request duration by method and route"
            );
            metrics::describe_gauge!("frostbyte_uptime_seconds", metrics::Unit::Seconds, "seconds since start-up");
            metrics::describe_gauge!("frostbyte_build_info", "build information; the value is always 1");
            metrics::gauge!("frostbyte_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}
