//! Sending webhook deliveries: [`Engine::deliver_due`] (driven by [`run_deliveries`] beside the scheduler, and by
//! tests) takes every due `pending` delivery, leases it with a compare-and-set on its due time (so one process
//! sends each attempt), POSTs the JSON body and records the attempt with its audit event.
//!
//! The body is built from the stored run, which is terminal and so never changes between attempts: ids, tenant,
//! pipeline, status, counts and times, never parameters' values, error text or record contents. Headers:
//! `X-Frostbyte-Event`, `X-Frostbyte-Delivery` (the delivery id, for the receiver's deduplication),
//! `X-Frostbyte-Timestamp` (Unix seconds of the attempt) and, when the webhook names a secret,
//! `X-Frostbyte-Signature: sha256=<hex HMAC-SHA256 of the body>`. The secret comes from the environment variable
//! of that name, else from `[pipelines.webhook_secrets]`; a secret that is configured nowhere fails the delivery
//! at once (nothing is sent unsigned by mistake). A 2xx answer delivers; anything else is retried on
//! `webhook_retry`'s backoff until its attempts are spent. Audit events (`PIPELINE_WEBHOOK_DELIVERED`,
//! `PIPELINE_WEBHOOK_ATTEMPT_FAILED`, `PIPELINE_WEBHOOK_FAILED`) name the endpoint's host only, since webhook URLs
//! often carry tokens.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{AttemptRecord, Delivery, DeliveryAttempt, DeliveryStatus, PipelineRun};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::{ACTOR, Engine, EngineError};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Frostbyte-Signature";
/// The timestamp header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-Frostbyte-Timestamp";

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body announcing `run`'s ending.
pub fn body(delivery: &Delivery, run: &PipelineRun) -> Value {
    json!({
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "run_id": run.run_id,
        "tenant_id": run.tenant_id.as_str(),
        "pipeline": format!("{}/{}", run.domain, run.pipeline),
        "status": run.status,
        "records_processed": run.records_processed,
        "triggered_by": run.triggered_by,
        "parent_run_id": run.parent_run_id,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
    })
}

/// The host (and port) of a URL, for audit events and logs.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_owned()
}

impl Engine {
    fn http(&self) -> &reqwest_013::Client {
        self.http.get_or_init(|| {
            reqwest_013::Client::builder()
                .timeout(self.settings.webhook_timeout)
                .redirect(reqwest_013::redirect::Policy::none())
                .build()
                .expect("the webhook HTTP client builds")
        })
    }

    /// The named secret: the environment variable, else the configured one.
    fn secret(&self, name: &str) -> Option<SecretString> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Some(SecretString::from(v)),
            _ => self.settings.webhook_secrets.get(name).cloned(),
        }
    }

    /// A run's deliveries with every attempt (404 for another tenant's run).
    pub async fn list_deliveries(&self, tenant: &TenantId, run_id: Uuid) -> Result<Vec<Delivery>, EngineError> {
        self.get_run(tenant, run_id).await?;
        Ok(self.runs.list_deliveries(tenant, run_id).await?)
    }

    /// Sends every delivery due at `now` once (those another process leased first are left to it). Returns how
    /// many attempts this call made.
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<usize, EngineError> {
        let mut attempts = 0;
        let lease = chrono::Duration::from_std(self.settings.webhook_timeout + Duration::from_secs(30))
            .unwrap_or(chrono::Duration::minutes(1));
        for d in self.runs.due_deliveries(now, 50).await? {
            let Some(expected) = d.next_attempt_at else { continue };
            if !self.runs.claim_delivery(&d.tenant_id, d.delivery_id, expected, now + lease).await? {
                continue;
            }
            self.attempt(d).await?;
            attempts += 1;
        }
        Ok(attempts)
    }

    /// One attempt of a leased delivery, recorded with its audit event.
    async fn attempt(&self, d: Delivery) -> Result<(), EngineError> {
        let number = d.attempts + 1;
        let run = self.runs.get_run(&d.tenant_id, d.run_id).await?;
        let attempted_at = frostbyte_core::now();
        // (status code, error, retryable)
        let (status_code, error, retryable) = match (&run, &d.secret_env) {
            (None, _) => (None, Some("the run no longer exists".to_owned()), false),
            (Some(_), Some(name)) if self.secret(name).is_none() => (
                None,
                Some(format!(
                    "secret {name} is not configured (environment variable or pipelines.webhook_secrets.{name})"
                )),
                false,
            ),
            (Some(run), secret_env) => {
                let payload = serde_json::to_vec(&body(&d, run)).expect("json serialises");
                let mut req = self
                    .http()
                    .post(&d.url)
                    .header("Content-Type", "application/json")
                    .header("User-Agent", "frostbyte-webhooks")
                    .header("X-Frostbyte-Event", d.event.as_str())
                    .header("X-Frostbyte-Delivery", d.delivery_id.to_string())
                    .header(TIMESTAMP_HEADER, attempted_at.timestamp().to_string());
                if let Some(secret) = secret_env.as_deref().and_then(|n| self.secret(n)) {
                    req = req.header(SIGNATURE_HEADER, signature(secret.expose_secret().as_bytes(), &payload));
                }
                match req.body(payload).send().await {
                    Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None, false),
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        (Some(code), Some(format!("the endpoint answered {code}")), true)
                    }
                    Err(e) => {
                        let what = if e.is_timeout() {
                            format!("no answer within {} ms", self.settings.webhook_timeout.as_millis())
                        } else if e.is_connect() {
                            "could not connect to the endpoint".to_owned()
                        } else {
                            format!("request failed: {}", e.without_url())
                        };
                        (None, Some(what), true)
                    }
                }
            }
        };
        let delivered = error.is_none();
        let next = if delivered || !retryable {
            None
        } else {
            self.settings.webhook_retry.next_after(number, frostbyte_core::now())
        };
        let status = match (delivered, next) {
            (true, _) => DeliveryStatus::Delivered,
            (false, Some(_)) => DeliveryStatus::Pending,
            (false, None) => DeliveryStatus::Failed,
        };
        let event_type = match status {
            DeliveryStatus::Delivered => "PIPELINE_WEBHOOK_DELIVERED",
            DeliveryStatus::Pending => "PIPELINE_WEBHOOK_ATTEMPT_FAILED",
            DeliveryStatus::Failed => "PIPELINE_WEBHOOK_FAILED",
        };
        let audit = NewAuditEvent::new(
            event_type,
            ACTOR,
            "pipeline_webhook_delivery",
            d.delivery_id.to_string(),
            json!({"component": "pipeline", "status": status.as_str(), "run_id": d.run_id.to_string(),
                   "event": d.event.as_str(), "host": host_of(&d.url), "attempt": number,
                   "status_code": status_code, "error": error, "next_attempt_at": next}),
        );
        match status {
            DeliveryStatus::Delivered => {
                tracing::info!(delivery_id = %d.delivery_id, run_id = %d.run_id, attempt = number, "webhook delivered")
            }
            _ => tracing::warn!(delivery_id = %d.delivery_id, run_id = %d.run_id, attempt = number,
                                error = error.as_deref().unwrap_or(""), final = next.is_none(), "webhook attempt failed"),
        }
        let record = AttemptRecord {
            attempt: DeliveryAttempt { attempt: number, attempted_at, status_code, error, delivered },
            status,
            next_attempt_at: next,
        };
        self.runs.record_delivery_attempt(&d.tenant_id, d.delivery_id, record, audit).await?;
        Ok(())
    }
}

/// Sends due webhook deliveries every `interval` until `shutdown` turns true.
pub async fn run_deliveries(engine: Arc<Engine>, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tracing::info!("pipeline webhook delivery started");
    while !*shutdown.borrow() {
        if let Err(error) = engine.deliver_due(frostbyte_core::now()).await {
            tracing::error!(%error, "pipeline webhook delivery could not send due deliveries");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!("pipeline webhook delivery stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn hosts_leave_paths_and_credentials_out() {
        assert_eq!(host_of("https://hooks.example.com/services/T0/B0/secret?x=1"), "hooks.example.com");
        assert_eq!(host_of("http://user:pw@127.0.0.1:8080/h"), "127.0.0.1:8080");
    }
}
