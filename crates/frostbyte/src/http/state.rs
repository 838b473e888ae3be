//! The state every handler shares: the ports, the use-cases, credentials and HTTP settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use frostbyte_core::batch::BatchStore;
use frostbyte_core::documents::DocumentStore;
use frostbyte_core::embed::EmbedderRegistry;
use frostbyte_core::index::ChunkIndex;
use frostbyte_core::ports::{BlobStore, MetadataStore};
use frostbyte_core::queue::JobQueue;
use frostbyte_core::scan::Scanner;
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
    pub tenants: TenantService,
    pub admin_key: SecretString,
    pub jwt_secret: SecretString,
    pub settings: HttpSettings,
    pub started_at: Instant,
    pub metrics: PrometheusHandle,
    /// The configured embedders by name and model id (the pipeline picks a tenant's by its `embedding_model`).
    pub embedders: Arc<EmbedderRegistry>,
    /// Pipeline events for `GET /api/v1/pipeline/stream`.
    pub events: Arc<crate::events::EventBus>,
    /// Batches, their files and the tenant metadata schema.
    pub batches: Arc<dyn BatchStore>,
    /// The malware scanner intake runs every file through (`[scan] scanner`).
    pub scanner: Arc<dyn Scanner>,
    /// Signal ingest, feature sets and features (`crate::signals`).
    pub signals: crate::signals::SignalsRuntime,
    /// The pipeline engine: definitions, runs and their execution.
    pub engine: Arc<crate::engine::Engine>,
}
