//! The in-process event bus behind `GET /api/v1/pipeline/stream`: what happened to documents and runs, as it
//! happens, for dashboards and operators.
//!
//! Publishing is one call: `state.events.publish(Event::new("parse", &tenant, "document parsed").document(id))`.
//! Code that has no handle on the state (intake, deep inside a request) uses [`publish_in_scope`], which reaches
//! the bus of the request being served.
//!
//! Every published event gets an id, increasing by one, and is kept in a bounded ring (the newest
//! [`EventBus::DEFAULT_RING`]) so a client that reconnects with `Last-Event-ID` gets what it missed. Ids start at
//! the process's start time in microseconds, so they keep increasing across restarts and an id from an earlier
//! process is recognised as older than anything the ring holds.
//!
//! Events carry ids, stages, statuses and counts, never document text, query text, PII or secrets: build them
//! from ids and numbers only. Each event names its tenant; the stream shows a tenant credential only its own
//! tenant's events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;
use uuid::Uuid;

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    /// `intake`, `parse`, `policy`, `embed`, `index`, a pipeline name, or `SYSTEM`.
    pub stage: String,
    /// A short, fixed description (`document parsed`): never document content.
    pub message: String,
    pub level: Level,
    /// The tenant the event belongs to; `None` only for `SYSTEM` events, which only the admin key sees.
    #[schema(value_type = Option<String>)]
    pub tenant_id: Option<TenantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    /// The stage's new status (`running`, `done`, `failed`, ...), when the event is a transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The audit event recording the same change, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Counts (`chunks`, `pii_detected`, `attempt`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// A stable error code, for failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl Event {
    /// An `info` event of `tenant` at `stage`.
    pub fn new(stage: impl Into<String>, tenant: &TenantId, message: impl Into<String>) -> Self {
        Event {
            stage: stage.into(),
            message: message.into(),
            level: Level::Info,
            tenant_id: Some(tenant.clone()),
            document_id: None,
            run_id: None,
            status: None,
            event_type: None,
            counts: BTreeMap::new(),
            error_code: None,
        }
    }

    /// A platform event (no tenant): only the admin key sees it.
    pub fn system(message: impl Into<String>, level: Level) -> Self {
        Event {
            stage: SYSTEM.to_owned(),
            message: message.into(),
            level,
            tenant_id: None,
            document_id: None,
            run_id: None,
            status: None,
            event_type: None,
            counts: BTreeMap::new(),
            error_code: None,
        }
    }

    pub fn document(mut self, doc_id: Uuid) -> Self {
        self.document_id = Some(doc_id);
        self
    }

    pub fn run(mut self, run_id: Uuid) -> Self {
        self.run_id = Some(run_id);
        self
    }

    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    pub fn count(mut self, name: impl Into<String>, n: u64) -> Self {
        self.counts.insert(name.into(), n);
        self
    }

    pub fn error_code(mut self, code: impl Into<String>) -> Self {
        self.error_code = Some(code.into());
        self
    }
}

/// The `stage` of connection and bus events.
pub const SYSTEM: &str = "SYSTEM";

/// A published event: the event with its id and time.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Published {
    /// The SSE `id:`; increasing.
    #[serde(skip)]
    pub id: u64,
    pub timestamp: DateTime<Utc>,
    #[serde(flatten)]
    pub event: Event,
}

impl Published {
    /// Whether a caller limited to `tenant` (`None`: the admin key, who sees everything) may see this event.
    pub fn visible_to(&self, tenant: Option<&TenantId>) -> bool {
        match tenant {
            None => true,
            Some(t) => self.event.tenant_id.as_ref() == Some(t),
        }
    }
}

struct Ring {
    next_id: u64,
    events: VecDeque<Arc<Published>>,
}

/// The bus: a broadcast channel for live subscribers and a ring of recent events for resumption.
pub struct EventBus {
    ring: Mutex<Ring>,
    capacity: usize,
    live: broadcast::Sender<Arc<Published>>,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(EventBus::DEFAULT_RING)
    }
}

/// What a new subscriber gets: the missed events it asked for, then the live feed.
pub struct Subscription {
    /// Events after the requested id, oldest first (all of them, visible or not: the caller filters).
    pub replay: Vec<Arc<Published>>,
    /// True when events after the requested id had already left the ring: the replay has a gap.
    pub gap: bool,
    pub live: broadcast::Receiver<Arc<Published>>,
    /// Turns true when the bus closes (shutdown): streams end.
    pub closed: watch::Receiver<bool>,
}

impl EventBus {
    /// Events kept for resumption.
    pub const DEFAULT_RING: usize = 1024;

    /// A bus keeping the newest `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let start = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0).max(1);
        let (live, _) = broadcast::channel(capacity);
        EventBus {
            ring: Mutex::new(Ring { next_id: start, events: VecDeque::with_capacity(capacity) }),
            capacity,
            live,
            closed: watch::channel(false).0,
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock cannot leave the ring inconsistent (push and pop are single steps).
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes an event; returns its id. Never blocks on subscribers: a slow one misses events and is told so.
    pub fn publish(&self, event: Event) -> u64 {
        let mut ring = self.ring();
        let id = ring.next_id;
        ring.next_id += 1;
        let published = Arc::new(Published { id, timestamp: frostbyte_core::now(), event });
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(published.clone());
        // Sent under the lock, so a subscriber's replay and live feed neither overlap nor leave a hole.
        let _ = self.live.send(published);
        id
    }

    /// Subscribes; with `after`, first replays the ring's events with a larger id.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let ring = self.ring();
        let live = self.live.subscribe();
        let (replay, gap) = match after {
            None => (Vec::new(), false),
            Some(after) => {
                let replay: Vec<_> = ring.events.iter().filter(|e| e.id > after).cloned().collect();
                let oldest = ring.events.front().map_or(ring.next_id, |e| e.id);
                // Ids run without holes, so anything between `after` and the oldest kept event was dropped.
                (replay, after.saturating_add(1) < oldest && after < ring.next_id)
            }
        };
        Subscription { replay, gap, live, closed: self.closed.subscribe() }
    }

    /// The newest events (at most `n`), oldest first.
    pub fn recent(&self, n: usize) -> Vec<Arc<Published>> {
        let ring = self.ring();
        ring.events.iter().skip(ring.events.len().saturating_sub(n)).cloned().collect()
    }

    /// Ends every stream (at shutdown, so that open streams do not hold the server's drain).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

tokio::task_local! {
    static CURRENT: Arc<EventBus>;
}

/// Runs `fut` with `bus` as the bus [`publish_in_scope`] reaches (the HTTP layer wraps every request in it).
pub async fn scope<F: std::future::Future>(bus: Arc<EventBus>, fut: F) -> F::Output {
    CURRENT.scope(bus, fut).await
}

/// Publishes to the bus of the request being served; outside one (a CLI command) the event has no audience and
/// is dropped. Returns the id when published.
pub fn publish_in_scope(event: Event) -> Option<u64> {
    CURRENT.try_with(|bus| bus.publish(event)).ok()
}

/// Intake accepted a document (the one-line call intake makes).
pub fn document_accepted(tenant: &TenantId, doc: &frostbyte_core::documents::DocumentRecord) -> Option<u64> {
    publish_in_scope(
        Event::new("intake", tenant, "document accepted")
            .document(doc.doc_id)
            .status("done")
            .event_type("DOCUMENT_INGESTED")
            .count("size_bytes", doc.size_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn ids_increase_and_the_ring_is_bounded() {
        let bus = EventBus::new(3);
        let ids: Vec<u64> =
            (0..5).map(|i| bus.publish(Event::new("parse", &tenant("acme"), format!("e{i}")))).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        let recent = bus.recent(10);
        assert_eq!(recent.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);
    }

    #[tokio::test]
    async fn resume_replays_what_was_missed_then_goes_live() {
        let bus = EventBus::new(8);
        let a = bus.publish(Event::new("parse", &tenant("acme"), "one"));
        let b = bus.publish(Event::new("policy", &tenant("acme"), "two"));
        let mut sub = bus.subscribe(Some(a));
        assert_eq!(sub.replay.iter().map(|e| e.id).collect::<Vec<_>>(), [b]);
        assert!(!sub.gap);
        let c = bus.publish(Event::new("index", &tenant("acme"), "three"));
        assert_eq!(sub.live.recv().await.unwrap().id, c);
        // Nothing after the newest id: nothing to replay.
        assert!(bus.subscribe(Some(c)).replay.is_empty());
    }

    #[test]
    fn a_resume_point_older_than_the_ring_is_a_gap() {
        let bus = EventBus::new(2);
        let first = bus.publish(Event::new("parse", &tenant("acme"), "one"));
        for _ in 0..3 {
            bus.publish(Event::new("parse", &tenant("acme"), "more"));
        }
        let sub = bus.subscribe(Some(first));
        assert!(sub.gap);
        assert_eq!(sub.replay.len(), 2);
        assert!(!bus.subscribe(None).gap);
    }

    #[test]
    fn visibility_follows_the_tenant() {
        let bus = EventBus::new(4);
        bus.publish(Event::new("parse", &tenant("acme"), "mine"));
        bus.publish(Event::system("bus started", Level::Info));
        let events = bus.recent(4);
        assert!(events[0].visible_to(Some(&tenant("acme"))));
        assert!(!events[0].visible_to(Some(&tenant("other"))));
        assert!(!events[1].visible_to(Some(&tenant("acme"))), "system events are the admin's");
        assert!(events.iter().all(|e| e.visible_to(None)));
        let json = serde_json::to_value(&*events[0]).unwrap();
        assert_eq!(json["stage"], "parse");
        assert_eq!(json["tenant_id"], "acme");
        assert!(json.get("document_id").is_none() && json.get("id").is_none() && json["timestamp"].is_string());
    }

    #[tokio::test]
    async fn publishing_in_scope_reaches_the_scoped_bus_only() {
        assert_eq!(publish_in_scope(Event::new("intake", &tenant("acme"), "x")), None);
        let bus = Arc::new(EventBus::new(4));
        let id = scope(bus.clone(), async { publish_in_scope(Event::new("intake", &tenant("acme"), "x")) }).await;
        assert_eq!(bus.recent(1)[0].id, id.unwrap());
    }
}
