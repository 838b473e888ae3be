//! `GET /api/v1/pipeline/stream`: the event bus ([`crate::events`]) as Server-Sent Events.
//!
//! The first event is a `SYSTEM` connection event (no `id:`, so it never moves a client's resume point). Then
//! every event the caller may see, each `data:` a JSON object `{stage, message, level, timestamp, tenant_id,
//! document_id?, run_id?, status?, event_type?, counts?, error_code?}` with its `id:`. A client that reconnects
//! with `Last-Event-ID` first gets the events it missed that are still in the bus's ring; if some had already left
//! the ring, a `SYSTEM` warning says so. A client too slow to keep up is told how many events it skipped.
//!
//! Any credential may listen: a tenant credential (any scope) sees only its tenant's events; the admin key sees
//! every tenant's, and `SYSTEM` events. A tenant stream re-checks its credential every [`RECHECK`] and ends (with a
//! `SYSTEM` warning) once the key is revoked or expired or the tenant is no longer ACTIVE. Streams end when the
//! server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use frostbyte_core::TenantId;
use frostbyte_core::ports::MetadataStore;
use frostbyte_core::tenant::TenantState;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::events::{Event, Level, Published, Subscription};
use crate::http::auth::{Principal, check_tenant_usable};
use crate::http::context::ApiContext;
use crate::http::error::{ApiError, ErrorEnvelope};

const TAG: &str = "pipeline";
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a tenant stream re-checks its credential and tenant.
pub const RECHECK: Duration = Duration::from_secs(1);

#[utoipa::path(
    get, path = "/api/v1/pipeline/stream", tag = TAG,
    summary = "Pipeline events as Server-Sent Events (resume with Last-Event-ID)",
    params(("Last-Event-ID" = Option<String>, Header, description = "Replay events after this id")),
    responses(
        (status = 200, description = "An event stream: a SYSTEM connection event, then `{stage, message, level, \
          timestamp, tenant_id, document_id?, run_id?}` events with ids", content_type = "text/event-stream",
          body = Published),
        (status = 401, description = "AUTHENTICATION_REQUIRED, TOKEN_EXPIRED or TOKEN_REVOKED", body = ErrorEnvelope),
        (status = 403, description = "TENANT_SUSPENDED", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pipeline_stream(
    State(ctx): State<ApiContext>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let (tenant, credential) = match &principal {
        Principal::Admin => (None, None),
        Principal::Tenant(cred) => {
            check_tenant_usable(&cred.tenant)?;
            let watch = Credential {
                store: ctx.store.clone(),
                tenant: cred.tenant.tenant_id.clone(),
                key_id: cred.key_id,
                recheck: tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK),
            };
            (Some(cred.tenant.tenant_id.clone()), Some(watch))
        }
    };
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let subscription = ctx.events.subscribe(last_event_id);
    tracing::debug!(tenant = ?tenant, ?last_event_id, "pipeline stream opened");
    let connected = Event::system("connected", Level::Info);
    let connected = match &tenant {
        Some(t) => Event { tenant_id: Some(t.clone()), ..connected },
        None => connected,
    };
    let state = StreamState::new(tenant, credential, subscription, connected);
    let stream =
        futures::stream::unfold(state, |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// A tenant stream's credential, re-checked while the stream is open.
struct Credential {
    store: Arc<dyn MetadataStore>,
    tenant: TenantId,
    key_id: Uuid,
    recheck: tokio::time::Interval,
}

impl Credential {
    /// False once the key is revoked or expired, or the tenant is not ACTIVE. A store error keeps the stream open:
    /// it is checked again at the next tick.
    async fn still_valid(&self) -> bool {
        let tenant = match self.store.get_tenant(&self.tenant).await {
            Ok(t) => t,
            Err(error) => {
                tracing::debug!(%error, "cannot re-check a stream's tenant");
                return true;
            }
        };
        if tenant.is_none_or(|t| t.state != TenantState::Active) {
            return false;
        }
        match self.store.get_api_key(&self.tenant, self.key_id).await {
            Ok(Some(key)) => key.check_usable(frostbyte_core::now()).is_ok(),
            Ok(None) => false,
            Err(_) => true,
        }
    }
}

struct StreamState {
    tenant: Option<TenantId>,
    credential: Option<Credential>,
    /// Events to send before reading the live feed (the connection event, a gap warning, the replay).
    pending: VecDeque<SseEvent>,
    sub: Subscription,
    done: bool,
}

impl StreamState {
    fn new(tenant: Option<TenantId>, credential: Option<Credential>, sub: Subscription, connected: Event) -> Self {
        let mut pending = VecDeque::new();
        pending.push_back(system(&connected));
        if sub.gap {
            pending.push_back(system(&Event {
                tenant_id: tenant.clone(),
                ..Event::system("some events since Last-Event-ID are no longer available", Level::Warn)
            }));
        }
        for e in sub.replay.iter().filter(|e| e.visible_to(tenant.as_ref())) {
            pending.push_back(published(e));
        }
        StreamState { tenant, credential, pending, sub, done: false }
    }

    /// The next SSE event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        loop {
            if self.done || *self.sub.closed.borrow() {
                return None;
            }
            let recheck = async {
                match self.credential.as_mut() {
                    Some(c) => {
                        c.recheck.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.sub.closed.changed() => {
                    self.done = true;
                }
                () = recheck => {
                    if let Some(c) = &self.credential && !c.still_valid().await {
                        self.done = true;
                        let closing = Event {
                            tenant_id: self.tenant.clone(),
                            ..Event::system("the credential or its tenant is no longer active; stream closed", Level::Warn)
                        };
                        return Some(system(&closing));
                    }
                }
                received = self.sub.live.recv() => match received {
                    Ok(e) if e.visible_to(self.tenant.as_ref()) => return Some(published(&e)),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let warning = Event {
                            tenant_id: self.tenant.clone(),
                            ..Event::system("the client fell behind; events were skipped", Level::Warn)
                        }
                        .count("skipped", n);
                        return Some(system(&warning));
                    }
                    Err(RecvError::Closed) => self.done = true,
                }
            }
        }
    }
}

/// A `SYSTEM` event: no id, so it never becomes a resume point.
fn system(event: &Event) -> SseEvent {
    let body = Published { id: 0, timestamp: frostbyte_core::now(), event: event.clone() };
    SseEvent::default().data(serde_json::to_string(&body).unwrap_or_default())
}

fn published(e: &Arc<Published>) -> SseEvent {
    SseEvent::default().id(e.id.to_string()).data(serde_json::to_string(&**e).unwrap_or_default())
}
