//! The state every handler shares: the ports, the use-cases, credentials and HTTP settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use frostbyte_core::documents::DocumentStore;
use frostbyte_core::index::ChunkIndex;
use frostbyte_core::ports::{BlobStore, MetadataStore};
use frostbyte_core::queue::JobQueue;
use frostbyte_core::service::TenantService;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;

/// Settings the HTTP layer needs, taken from the typed config by the composition root.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest JSON request body accepted; larger ones get 413 `PAYLOAD_TOO_LARGE`.
    pub max_body_bytes: usize,
    /// Whether `/metrics` answers without credentials.
    pub metrics_public: bool,
    /// Lifetime of JWTs issued by `POST /api/v1/auth/token`.
    pub jwt_ttl: Duration,
    /// How hybrid search fuses its two rankings (config `[search]`).
    pub fusion: frostbyte_core::service::search::FusionSettings,
}

/// Shared application state.
pub struct AppState {
    pub store: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub documents: Arc<dyn DocumentStore>,
    pub index: Arc<dyn ChunkIndex>,
    /// Embeds search queries; its model id is compared with the indexed chunks' (`model_version_match`).
    pub embedder: Arc<dyn frostbyte_core::embed::Embedder>,
    pub tenants: TenantService,
    pub admin_key: SecretString,
    pub jwt_secret: SecretString,
    pub settings: HttpSettings,
    pub started_at: Instant,
    pub metrics: PrometheusHandle,
}
