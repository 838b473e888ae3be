//! Errors returned by store ports. Each carries a kind the HTTP layer maps to a stable code, and a retry hint
//! for background work.

/// A failure in a store port.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist (or belongs to another tenant, which callers must not be able to tell apart).
    #[error("{resource} not found")]
    NotFound { resource: &'static str },
    /// A resource with the same identity already exists.
    #[error("{resource} already exists")]
    AlreadyExists { resource: &'static str },
    /// An optimistic-concurrency check failed: someone else changed the row first.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store could not be reached or timed out; the operation may succeed if retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a corrupt row, a failed migration. Not retryable.
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
