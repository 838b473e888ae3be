//! `GET /api/v1/pipeline/stream`: the event bus ([`crate::events`]) as Server-Sent Events.
//!
//! The first event is a `SYSTEM` connection event (no `id:`, so it never moves a client's resume point). Then
//! every event the caller may see, each `data:` a JSON object `{stage, message, level, timestamp, tenant_id,
//! document_id?, run_id?, status?, event_type?, counts?, error_code?}` with its `id:`. A client that reconnects
//! with `Last-Event-ID` first gets the events it missed that are still in the bus's ring; if some had already left
//! the ring, a `SYSTEM` warning says so. A client too slow to keep up is told how many events it skipped.
//!
//! Any credential may listen: a tenant credential (any scope) sees only its tenant's events; the admin key sees
//! every tenant's, and `SYSTEM` events. Streams end when the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use frostbyte_core::TenantId;
use tokio::sync::broadcast::error::RecvError;

use crate::events::{Event, Level, Published, Subscription};
use crate::http::auth::{Principal, check_tenant_usable};
use crate::http::context::ApiContext;
use crate::http::error::{ApiError, ErrorEnvelope};

const TAG: &str = "pipeline";
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
    let tenant = match &principal {
        Principal::Admin => None,
        Principal::Tenant(cred) => {
            check_tenant_usable(&cred.tenant)?;
            Some(cred.tenant.tenant_id.clone())
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
    let state = StreamState::new(tenant, subscription, connected);
    let stream =
        futures::stream::unfold(state, |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

struct StreamState {
    tenant: Option<TenantId>,
    /// Events to send before reading the live feed (the connection event, a gap warning, the replay).
    pending: VecDeque<SseEvent>,
    sub: Subscription,
    done: bool,
}

impl StreamState {
    fn new(tenant: Option<TenantId>, sub: Subscription, connected: Event) -> Self {
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
        StreamState { tenant, pending, sub, done: false }
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
            tokio::select! {
                _ = self.sub.closed.changed() => {
                    self.done = true;
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
