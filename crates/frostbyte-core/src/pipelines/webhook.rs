//! Webhook notifications of run endings: what a definition declares ([`WebhookSpec`]), the durable deliveries
//! the store keeps ([`Delivery`], one per webhook and ending, with every attempt's outcome), and the rule for
//! retrying them ([`WebhookRetry`]).
//!
//! A delivery is written in the same transaction as the run's terminal transition, so a crash right after a run
//! ends can neither lose nor duplicate it. The body is built from the stored (terminal, so unchanging) run when
//! it is sent: ids, tenant, pipeline, status, counts and times, never record contents. The HMAC secret is named
//! (`secret_env`), never written in the definition or stored.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::run::RunStatus;
use crate::ids::TenantId;

/// The run endings a webhook can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    Completed,
    Failed,
    Cancelled,
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Completed => "completed",
            WebhookEvent::Failed => "failed",
            WebhookEvent::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookEvent> {
        [WebhookEvent::Completed, WebhookEvent::Failed, WebhookEvent::Cancelled].into_iter().find(|e| e.as_str() == s)
    }

    /// The event of a terminal status (`None` for the others).
    pub fn for_status(status: RunStatus) -> Option<WebhookEvent> {
        match status {
            RunStatus::Completed => Some(WebhookEvent::Completed),
            RunStatus::Failed => Some(WebhookEvent::Failed),
            RunStatus::Cancelled => Some(WebhookEvent::Cancelled),
            _ => None,
        }
    }
}

/// A webhook as a definition declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://`.
    pub url: String,
    pub events: Vec<WebhookEvent>,
    /// The name of the HMAC secret: an environment variable, else `[pipelines.webhook_secrets]` in config.
    /// Without it the body is sent unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// Whether `name` can name a secret (`A-Z`, `0-9`, `_`, not starting with a digit, at most 128 characters).
pub fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `url` is an absolute `http(s)://host…` URL without spaces.
pub fn valid_webhook_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.starts_with(':')
    }) && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && url.len() <= 2048
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet accepted by the endpoint; another attempt is due at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed, or it could not be attempted (its secret is not configured).
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// A delivery to create with a run's terminal transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub delivery_id: Uuid,
    pub url: String,
    pub event: WebhookEvent,
    pub secret_env: Option<String>,
}

/// One attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    /// 1, 2, …
    pub attempt: u32,
    pub attempted_at: DateTime<Utc>,
    /// The endpoint's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why it failed (connection refused, timeout, non-2xx), never the body.
    pub error: Option<String>,
    pub delivered: bool,
}

/// A webhook delivery of one run ending, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Delivery {
    pub delivery_id: Uuid,
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub run_id: Uuid,
    pub url: String,
    pub event: WebhookEvent,
    /// The secret's name (never its value).
    pub secret_env: Option<String>,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (`None` once delivered or failed).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first (filled by `list_deliveries`; empty in `due_deliveries`).
    pub attempt_log: Vec<DeliveryAttempt>,
}

/// How failed deliveries are retried: at most `max_attempts` attempts, waiting `backoff[n-1]` after the n-th
/// failure (the last entry once the list runs out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRetry {
    pub max_attempts: u32,
    pub backoff: Vec<Duration>,
}

impl Default for WebhookRetry {
    fn default() -> Self {
        WebhookRetry {
            max_attempts: 6,
            backoff: [5, 30, 120, 600, 1800].into_iter().map(Duration::from_secs).collect(),
        }
    }
}

impl WebhookRetry {
    /// After failed attempt number `attempt`: when to try again, or `None` when the attempts are spent.
    pub fn next_after(&self, attempt: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if attempt >= self.max_attempts {
            return None;
        }
        let i = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let wait = self.backoff.get(i).or(self.backoff.last()).copied().unwrap_or(Duration::from_secs(1));
        Some(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1)))
    }
}

/// What an attempt changes on its delivery: the outcome, and the status and next due time that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: DeliveryAttempt,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_then_stop() {
        let r = WebhookRetry { max_attempts: 3, backoff: vec![Duration::from_secs(1), Duration::from_secs(10)] };
        let now = crate::now();
        assert_eq!(r.next_after(1, now), Some(now + chrono::Duration::seconds(1)));
        assert_eq!(r.next_after(2, now), Some(now + chrono::Duration::seconds(10)));
        assert_eq!(r.next_after(3, now), None);
    }

    #[test]
    fn urls_and_secret_names() {
        for ok in ["https://hooks.example.com/x?y=1", "http://127.0.0.1:8080/hook"] {
            assert!(valid_webhook_url(ok), "{ok}");
        }
        for bad in ["ftp://x", "https://", "https:///path", "http://a b", "hooks.example.com"] {
            assert!(!valid_webhook_url(bad), "{bad}");
        }
        assert!(valid_secret_name("ACME_HOOK_SECRET"));
        for bad in ["", "lower", "1ABC", "A-B", "A B"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }
}
