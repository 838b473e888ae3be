//! The NATS JetStream consumer of signal events, against a real NATS server (`FROSTBYTE_TEST_NATS_URL`; with
//! `FROSTBYTE_TEST_REQUIRE_NATS=1` a missing or unreachable server fails the tests instead of skipping them).
//! Every test uses its own subject prefix, stream and durable consumer, so runs never collide.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_trait::async_trait;
use frostbyte::nats::{ConsumerCounts, ConsumerStats, NatsSettings, SignalConsumer};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::error::{StoreError, StoreResult};
use frostbyte_core::signals::definition::FeatureSetDef;
use frostbyte_core::signals::engine::FeatureRow;
use frostbyte_core::signals::service::SignalService;
use frostbyte_core::signals::store::{
    EventCursor, FeatureSetVersion, SignalBatch, SignalStore, StateRecord, StoredEvent,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::helpers::*;

const T0: i64 = 1_770_000_000; // 2026-02-02T02:40:00Z, a whole minute

/// The server's URL, or `None` (skip) when it is not configured; panics when it is required but unreachable.
async fn nats_url() -> Option<String> {
    let required = std::env::var("FROSTBYTE_TEST_REQUIRE_NATS").is_ok_and(|v| v == "1");
    let url = std::env::var("FROSTBYTE_TEST_NATS_URL").ok().filter(|u| !u.is_empty());
    let Some(url) = url else {
        assert!(!required, "FROSTBYTE_TEST_REQUIRE_NATS=1 but FROSTBYTE_TEST_NATS_URL is not set");
        eprintln!("FROSTBYTE_TEST_NATS_URL is not set: skipping");
        return None;
    };
    let reachable = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url.as_str())).await;
    match reachable {
        Ok(Ok(_)) => Some(url),
        _ if required => panic!("FROSTBYTE_TEST_REQUIRE_NATS=1 but NATS at {url} is unreachable"),
        _ => {
            eprintln!("NATS at {url} is unreachable: skipping");
            None
        }
    }
}

fn at(secs: i64) -> String {
    chrono::DateTime::from_timestamp(T0 + secs, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ev(entity: &str, secs: i64, payload: Value) -> Value {
    json!({"entity_id": entity, "event_time": at(secs), "payload": payload, "source": "sensor"})
}

fn feature_set() -> Value {
    json!({
        "allowed_lateness": "30s",
        "late_policy": "drop",
        "windows": [
            {"name": "m1", "type": "tumbling", "size": "1m",
             "aggregates": [{"name": "n", "op": "count"}, {"name": "t_mean", "op": "mean", "field": "/t"},
                            {"name": "t_max", "op": "max", "field": "/t"}]},
            {"name": "m5", "type": "sliding", "size": "5m", "slide": "1m",
             "aggregates": [{"name": "n", "op": "count"}, {"name": "t_sum", "op": "sum", "field": "/t"}]},
            {"name": "t_ewma", "type": "ewma", "field": "/t", "half_life": "2m", "every": "1m"}
        ]
    })
}

/// `n` events over `entities` entities, a few seconds apart, slightly out of order (always within the 30 s
/// lateness), so the rows do not depend on how they are batched.
fn events(n: usize, entities: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let jitter = [0, 7, -5, 3, -9, 11][i % 6];
            let secs = (i as i64) * 3 + jitter + 20;
            ev(&format!("dev-{}", i % entities), secs, json!({"t": (i % 17) as f64 * 1.5 - 4.0}))
        })
        .collect()
}

fn ndjson(events: &[Value]) -> Vec<u8> {
    events.iter().flat_map(|e| format!("{e}\n").into_bytes()).collect()
}

/// One test's names on the server.
struct Names {
    prefix: String,
    stream: String,
    durable: String,
}

impl Names {
    fn new() -> Names {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Names { prefix: format!("fbtest.{id}"), stream: format!("FBTEST_{id}"), durable: format!("fbtest-{id}") }
    }

    fn subject(&self, tenant: &str) -> String {
        format!("{}.{tenant}", self.prefix)
    }

    fn settings(&self, url: &str) -> NatsSettings {
        NatsSettings {
            urls: vec![url.to_owned()],
            subject_prefix: self.prefix.clone(),
            stream: self.stream.clone(),
            durable: self.durable.clone(),
            batch_size: 16,
            ack_wait: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// A publisher connected straight to the server, with the stream created.
struct Publisher {
    js: jetstream::Context,
    names: Names,
}

impl Publisher {
    async fn new(url: &str) -> Publisher {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let js = jetstream::new(client);
        let names = Names::new();
        js.get_or_create_stream(jetstream::stream::Config {
            name: names.stream.clone(),
            subjects: vec![format!("{}.*", names.prefix)],
            ..Default::default()
        })
        .await
        .expect("create the stream");
        Publisher { js, names }
    }

    async fn publish_to(&self, subject: String, body: Vec<u8>) {
        self.js.publish(subject, body.into()).await.expect("publish").await.expect("publish ack");
    }

    async fn publish(&self, tenant: &str, body: Vec<u8>) {
        self.publish_to(self.names.subject(tenant), body).await;
    }

    /// `(delivered but unacknowledged, not yet delivered)` of the durable consumer.
    async fn pending(&self) -> (usize, u64) {
        let stream = self.js.get_stream(&self.names.stream).await.expect("stream");
        let info = stream.consumer_info(&self.names.durable).await.expect("consumer info");
        (info.num_ack_pending, info.num_pending)
    }

    async fn cleanup(&self) {
        let _ = self.js.delete_stream(&self.names.stream).await;
    }
}

/// A running consumer and the switch that stops it.
struct Running {
    stats: Arc<ConsumerStats>,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn start(app: &TestApp, settings: NatsSettings, service: Option<SignalService>) -> Running {
        let service = service.unwrap_or_else(|| app.state.signals.service.clone());
        let consumer = SignalConsumer::new(settings, service, app.state.signals.settings, Arc::clone(&app.store));
        let stats = consumer.stats();
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(consumer.run(rx));
        Running { stats, stop, handle }
    }

    fn counts(&self) -> ConsumerCounts {
        self.stats.snapshot()
    }

    /// Waits (up to 30 s) until the counts satisfy `done`.
    async fn until(&self, what: &str, done: impl Fn(&ConsumerCounts) -> bool) -> ConsumerCounts {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = self.counts();
            if done(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; counts: {c:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the consumer to stop and checks that it does, cleanly.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        let joined = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
        joined.expect("the consumer stops on shutdown").expect("no panic").expect("clean stop");
    }
}

/// Waits (up to 30 s) until the durable consumer has nothing pending or unacknowledged.
async fn until_drained(publisher: &Publisher) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = publisher.pending().await;
        if pending == (0, 0) {
            return;
        }
        assert!(Instant::now() < deadline, "messages still pending: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every stored event of a tenant.
async fn stored_events(app: &TestApp, tenant: &str) -> Vec<StoredEvent> {
    let tenant = TenantId::parse(tenant).unwrap();
    app.state.signals.service.store().events_page(&tenant, i64::MIN, i64::MAX, None, 100_000).await.unwrap()
}

/// The feature views of `entities` for one tenant, for comparison (the tenant's name is not in them).
async fn features(app: &TestApp, key: &str, tenant: &str, entities: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..entities {
        let r = app.get_features(key, tenant, "device", &format!("dev-{i}")).await;
        r.expect(200);
        out.push(r.data().clone());
    }
    out
}

/// The reference: the same events through `POST …/events` (NDJSON) into another tenant.
async fn via_http(app: &TestApp, tenant: &str, events: &[Value], entities: usize) -> Vec<Value> {
    let t = app.tenant(tenant).await;
    app.put_feature_set(&t.key, tenant, "device", &feature_set()).await.expect(201);
    let r = app.post_ndjson(&t.key, tenant, ndjson(events)).await;
    r.expect(200);
    assert_eq!(r.data()["accepted"], json!(events.len()), "{}", r.text);
    features(app, &t.key, tenant, entities).await
}

#[tokio::test]
async fn events_from_nats_become_the_same_rows_as_over_http() {
    let Some(url) = nats_url().await else { return };
    let app = spawn_app().await;
    let t = app.tenant("nats-flow").await;
    app.put_feature_set(&t.key, "nats-flow", "device", &feature_set()).await.expect(201);
    let all = events(240, 4);
    let reference = via_http(&app, "http-flow", &all, 4).await;

    let p = Publisher::new(&url).await;
    // Single objects (one pretty-printed), NDJSON messages and a JSON array: every shape a message may have.
    p.publish("nats-flow", serde_json::to_vec_pretty(&all[0]).unwrap()).await;
    for e in &all[1..10] {
        p.publish("nats-flow", serde_json::to_vec(e).unwrap()).await;
    }
    for chunk in all[10..200].chunks(19) {
        p.publish("nats-flow", ndjson(chunk)).await;
    }
    p.publish("nats-flow", serde_json::to_vec(&all[200..]).unwrap()).await;
    let messages = 1 + 9 + 10 + 1;

    let consumer = Running::start(&app, p.names.settings(&url), None);
    let c = consumer.until("every event", |c| c.accepted == 240).await;
    until_drained(&p).await;
    let c2 = consumer.counts();
    assert_eq!((c2.accepted, c2.duplicates, c2.acked), (240, 0, messages), "{c:?}");
    assert!(c2.terminated.is_empty() && c2.rejected.is_empty(), "{c2:?}");
    assert_eq!(features(&app, &t.key, "nats-flow", 4).await, reference);
    assert_eq!(stored_events(&app, "nats-flow").await.len(), 240);
    consumer.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn a_replayed_message_counts_as_duplicates_and_changes_nothing() {
    let Some(url) = nats_url().await else { return };
    let app = spawn_app().await;
    let t = app.tenant("nats-replay").await;
    app.put_feature_set(&t.key, "nats-replay", "device", &feature_set()).await.expect(201);
    let all = events(60, 2);
    let p = Publisher::new(&url).await;
    p.publish("nats-replay", ndjson(&all[..30])).await;
    p.publish("nats-replay", ndjson(&all[30..])).await;
    let consumer = Running::start(&app, p.names.settings(&url), None);
    consumer.until("the first delivery", |c| c.acked == 2).await;
    let before = features(&app, &t.key, "nats-replay", 2).await;

    // The same messages published again (a producer retrying), plus one event also sent over HTTP.
    p.publish("nats-replay", ndjson(&all[..30])).await;
    p.publish("nats-replay", ndjson(&all[30..])).await;
    app.post_events(&t.key, "nats-replay", &json!([all[5]])).await.expect(200);
    let c = consumer.until("the replay", |c| c.acked == 4).await;
    assert_eq!((c.accepted, c.duplicates), (60, 60), "{c:?}");
    assert_eq!(features(&app, &t.key, "nats-replay", 2).await, before);
    assert_eq!(stored_events(&app, "nats-replay").await.len(), 60);
    consumer.stop().await;
    p.cleanup().await;
}

/// A signal store whose commits wait for a permit and fail while `fail_commits` is positive.
struct FaultyStore {
    inner: Arc<dyn SignalStore>,
    gate: Arc<Semaphore>,
    fail_commits: AtomicUsize,
    commits_started: AtomicUsize,
}

#[async_trait]
impl SignalStore for FaultyStore {
    async fn put_feature_set(
        &self,
        tenant: &TenantId,
        name: &str,
        definition: &FeatureSetDef,
        audit: NewAuditEvent,
    ) -> StoreResult<(FeatureSetVersion, bool)> {
        self.inner.put_feature_set(tenant, name, definition, audit).await
    }
    async fn get_feature_set(
        &self,
        tenant: &TenantId,
        name: &str,
        version: Option<i32>,
    ) -> StoreResult<Option<FeatureSetVersion>> {
        self.inner.get_feature_set(tenant, name, version).await
    }
    async fn list_feature_sets(&self, tenant: &TenantId) -> StoreResult<Vec<FeatureSetVersion>> {
        self.inner.list_feature_sets(tenant).await
    }
    async fn existing_events(&self, tenant: &TenantId, hashes: &[String]) -> StoreResult<Vec<String>> {
        self.inner.existing_events(tenant, hashes).await
    }
    async fn load_states(
        &self,
        tenant: &TenantId,
        feature_set: &str,
        version: i32,
        entities: &[String],
    ) -> StoreResult<Vec<StateRecord>> {
        self.inner.load_states(tenant, feature_set, version, entities).await
    }
    async fn commit_batch(&self, tenant: &TenantId, batch: &SignalBatch) -> StoreResult<()> {
        self.commits_started.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate").forget();
        let failing = self.fail_commits.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(StoreError::Unavailable("injected commit failure".into()));
        }
        self.inner.commit_batch(tenant, batch).await
    }
    async fn upsert_rows(&self, tenant: &TenantId, rows: &[FeatureRow]) -> StoreResult<u64> {
        self.inner.upsert_rows(tenant, rows).await
    }
    async fn events_page(
        &self,
        tenant: &TenantId,
        from: i64,
        to: i64,
        cursor: Option<&EventCursor>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.inner.events_page(tenant, from, to, cursor, limit).await
    }
    async fn feature_rows(
        &self,
        tenant: &TenantId,
        feature_set: &str,
        version: i32,
        entity_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<FeatureRow>> {
        self.inner.feature_rows(tenant, feature_set, version, entity_id, limit).await
    }
}

fn faulty(app: &TestApp, fail_commits: usize) -> Arc<FaultyStore> {
    Arc::new(FaultyStore {
        inner: Arc::clone(app.state.signals.service.store()),
        gate: Arc::new(Semaphore::new(0)),
        fail_commits: AtomicUsize::new(fail_commits),
        commits_started: AtomicUsize::new(0),
    })
}

async fn until_commits(store: &FaultyStore, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.commits_started.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "no commit attempt {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_message_is_acked_only_after_its_events_commit() {
    let Some(url) = nats_url().await else { return };
    let app = spawn_app().await;
    let t = app.tenant("nats-ack").await;
    app.put_feature_set(&t.key, "nats-ack", "device", &feature_set()).await.expect(201);
    let all = events(30, 3);
    let reference = via_http(&app, "http-ack", &all, 3).await;
    let store = faulty(&app, 1);
    let service = SignalService::new(store.clone());
    let p = Publisher::new(&url).await;
    p.publish("nats-ack", ndjson(&all)).await;
    let consumer = Running::start(&app, p.names.settings(&url), Some(service));

    // The commit is in progress: the message is delivered but not acknowledged.
    until_commits(&store, 1).await;
    assert_eq!(p.pending().await, (1, 0));
    assert_eq!(consumer.counts().acked, 0);
    // The commit fails: nothing is stored, the message is handed back and redelivered.
    store.gate.add_permits(1);
    consumer.until("the retry", |c| c.retried == 1).await;
    assert!(stored_events(&app, "nats-ack").await.is_empty());
    until_commits(&store, 2).await;
    assert_eq!(consumer.counts().acked, 0);
    assert_eq!(p.pending().await.0, 1);
    // The second commit succeeds: applied once, then acknowledged.
    store.gate.add_permits(1_000);
    let c = consumer.until("the ack", |c| c.acked == 1).await;
    assert_eq!((c.accepted, c.duplicates, c.retried), (30, 0, 1), "{c:?}");
    until_drained(&p).await;
    assert_eq!(stored_events(&app, "nats-ack").await.len(), 30);
    assert_eq!(features(&app, &t.key, "nats-ack", 3).await, reference);
    consumer.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn malformed_messages_are_terminated_and_counted() {
    let Some(url) = nats_url().await else { return };
    let app = spawn_app().await;
    let t = app.tenant("nats-bad").await;
    app.put_feature_set(&t.key, "nats-bad", "device", &feature_set()).await.expect(201);
    let p = Publisher::new(&url).await;
    p.publish("nats-bad", b"[{\"entity_id\": ".to_vec()).await; // a truncated array
    p.publish("nats-bad", b"not json at all".to_vec()).await;
    p.publish("nats-bad", json!({"entity_id": "dev-0", "payload": {}}).to_string().into_bytes()).await;
    p.publish("nats-bad", Vec::new()).await;
    let many: Vec<Value> = (0..SIGNALS_MAX_EVENTS + 1).map(|i| ev("dev-0", i as i64, json!({}))).collect();
    p.publish("nats-bad", ndjson(&many)).await;
    // A usable message with one bad line: the good event applies, the bad one is counted.
    let mixed = [ev("dev-0", 1, json!({"t": 1.0})).to_string(), json!({"entity_id": "dev-0"}).to_string()];
    p.publish("nats-bad", mixed.join("\n").into_bytes()).await;

    let consumer = Running::start(&app, p.names.settings(&url), None);
    let c = consumer.until("every message", |c| c.terminated_total() == 5 && c.acked == 1).await;
    assert_eq!(c.terminated.get("invalid_json"), Some(&1), "{c:?}");
    assert_eq!(c.terminated.get("no_valid_events"), Some(&3), "{c:?}");
    assert_eq!(c.terminated.get("too_many_events"), Some(&1), "{c:?}");
    assert_eq!(c.accepted, 1);
    assert_eq!(c.rejected.get("MISSING_FIELD"), Some(&1), "{c:?}");
    until_drained(&p).await;
    // Terminated messages are not redelivered, even after the ack wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(consumer.counts().terminated_total(), 5);
    assert_eq!(p.pending().await, (0, 0));
    assert_eq!(stored_events(&app, "nats-bad").await.len(), 1);
    let metrics = app.metrics(None).await;
    assert!(
        metrics.text.contains("frostbyte_signals_nats_messages_total{outcome=\"terminated\",reason=\"invalid_json\"}"),
        "{}",
        metrics.text
    );
    consumer.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn unknown_and_inactive_tenants_subjects_are_not_applied() {
    let Some(url) = nats_url().await else { return };
    let app = spawn_app().await;
    let t = app.tenant("nats-own").await;
    app.put_feature_set(&t.key, "nats-own", "device", &feature_set()).await.expect(201);
    let other = app.tenant("nats-paused").await;
    app.put_feature_set(&other.key, "nats-paused", "device", &feature_set()).await.expect(201);
    app.suspend("nats-paused").await.expect(200);
    let p = Publisher::new(&url).await;
    let body = ndjson(&events(5, 1));
    p.publish("nats-ghost", body.clone()).await;
    p.publish("nats-paused", body.clone()).await;
    p.publish("Not_A_Tenant", body.clone()).await;
    p.publish("nats-own", body).await;

    let consumer = Running::start(&app, p.names.settings(&url), None);
    let c = consumer.until("every message", |c| c.terminated_total() == 3 && c.acked == 1).await;
    assert_eq!(c.terminated.get("unknown_tenant"), Some(&1), "{c:?}");
    assert_eq!(c.terminated.get("inactive_tenant"), Some(&1), "{c:?}");
    assert_eq!(c.terminated.get("bad_subject"), Some(&1), "{c:?}");
    assert_eq!(c.accepted, 5);
    until_drained(&p).await;
    assert_eq!(stored_events(&app, "nats-own").await.len(), 5);
    assert!(stored_events(&app, "nats-paused").await.is_empty());
    app.resume("nats-paused").await.expect(200);
    app.get_features(&other.key, "nats-paused", "device", "dev-0").await.expect_error(404, "RESOURCE_NOT_FOUND");
    consumer.stop().await;
    p.cleanup().await;
}

/// A TCP proxy between the consumer and NATS whose connections can be cut (and refused) and then restored.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("nats://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if *cut_rx.borrow() {
                    let _ = client.shutdown().await;
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                    // Both sockets drop here: the connection is gone mid-stream.
                });
            }
        });
        Proxy { addr, cut }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

#[tokio::test]
async fn a_dropped_connection_loses_and_duplicates_nothing() {
    let Some(url) = nats_url().await else { return };
    let app = spawn_app().await;
    let t = app.tenant("nats-drop").await;
    app.put_feature_set(&t.key, "nats-drop", "device", &feature_set()).await.expect(201);
    let all = events(400, 5);
    let reference = via_http(&app, "http-drop", &all, 5).await;
    let store = faulty(&app, 0);
    let service = SignalService::new(store.clone());
    let p = Publisher::new(&url).await;
    let proxy = Proxy::start(&url).await;
    for chunk in all[..200].chunks(10) {
        p.publish("nats-drop", ndjson(chunk)).await;
    }
    let consumer = Running::start(&app, p.names.settings(&proxy.url()), Some(service));

    // A batch is being committed when the connection drops: its acks cannot reach the server.
    until_commits(&store, 1).await;
    proxy.cut();
    for chunk in all[200..].chunks(10) {
        p.publish("nats-drop", ndjson(chunk)).await;
    }
    store.gate.add_permits(1_000_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.restore();

    let c = consumer.until("every event", |c| c.accepted == 400).await;
    until_drained(&p).await;
    let c = {
        let after = consumer.counts();
        assert_eq!(after.accepted, 400, "{c:?} then {after:?}");
        after
    };
    assert!(c.terminated.is_empty() && c.retried == 0, "{c:?}");
    let stored = stored_events(&app, "nats-drop").await;
    assert_eq!(stored.len(), 400);
    assert_eq!(features(&app, &t.key, "nats-drop", 5).await, reference);
    consumer.stop().await;
    p.cleanup().await;
}
