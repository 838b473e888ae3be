//! The router's state: the application state the composition root built, plus what only the HTTP layer keeps
//! (rate-limit buckets, the generated spec and the rendered docs page).

use std::ops::Deref;
use std::sync::Arc;

use super::rate_limit::RateLimits;
use super::state::AppState;

/// What every handler receives. Dereferences to [`AppState`].
#[derive(Clone)]
pub struct ApiContext {
    pub(crate) app: Arc<AppState>,
    pub(crate) limits: Arc<RateLimits>,
    pub(crate) spec: Arc<utoipa::openapi::OpenApi>,
    pub(crate) docs_html: Arc<str>,
}

impl Deref for ApiContext {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.app
    }
}
