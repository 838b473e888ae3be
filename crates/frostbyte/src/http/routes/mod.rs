//! Every route, registered through `utoipa-axum` so that the router and the OpenAPI document are built from the
//! same list and cannot drift. Handlers sharing a path go in one `routes!` call (axum refuses a path twice).

pub mod audit;
pub mod batch;
pub mod dlq;
pub mod documents;
pub mod embeddings;
pub mod lifecycle;
pub mod pipelines;
pub mod schema;
pub mod search;
pub mod signals;
pub mod stream;
pub mod system;
pub mod tenants;
pub mod token;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::context::ApiContext;
use super::error::ApiError;

/// The routes with their OpenAPI operations.
pub(crate) fn api_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi_json))
        .routes(routes!(system::docs))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::patch_tenant))
        .routes(routes!(tenants::suspend_tenant))
        .routes(routes!(tenants::resume_tenant))
        .routes(routes!(tenants::deprovision_tenant))
        .routes(routes!(tenants::create_key, tenants::list_keys))
        .routes(routes!(tenants::revoke_key))
        .routes(routes!(token::issue_token))
        .routes(routes!(audit::list_events))
        .routes(routes!(audit::get_event))
        .routes(routes!(audit::resource_chain))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::export))
        .routes(routes!(dlq::list_dlq))
        .routes(routes!(dlq::retry_dlq))
        .routes(routes!(dlq::abandon_dlq))
        .merge(documents::upload_routes())
        .routes(routes!(documents::get_receipt))
        .routes(routes!(documents::get_document))
        .routes(routes!(embeddings::create_embeddings))
        .routes(routes!(stream::pipeline_stream))
        .merge(batch::batch_routes())
        .routes(routes!(batch::get_batch))
        .routes(routes!(schema::put_schema, schema::get_schema, schema::patch_schema))
        .merge(lifecycle::routes())
        .merge(signals::routes())
        .routes(routes!(search::search))
        .routes(routes!(search::get_chunk))
        .routes(routes!(search::list_documents))
        .routes(routes!(pipelines::list_pipelines))
        .routes(routes!(pipelines::start_run))
        .routes(routes!(pipelines::get_run))
        .routes(routes!(pipelines::list_runs))
        .routes(routes!(pipelines::cancel_run))
        .routes(routes!(pipelines::list_deliveries))
        .routes(routes!(pipelines::list_schedules, pipelines::create_schedule))
        .routes(routes!(pipelines::update_schedule, pipelines::delete_schedule))
}

/// Unknown paths. The message is distinct from a missing resource's, so clients (and the OpenAPI completeness
/// test) can tell "no such endpoint" from "no such tenant".
pub(crate) async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    let mut e = ApiError::not_found("resource");
    e.message = format!("no endpoint {method} {path}; see /openapi.json for the API");
    e
}

/// Known paths, wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    super::error::for_bare_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}
