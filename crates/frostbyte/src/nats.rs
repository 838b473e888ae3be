//! The NATS JetStream consumer of signal events (feature `nats`, `[signals.nats]`).
//!
//! Events for tenant T are published on `{subject_prefix}.T`; each message is one event JSON object, NDJSON
//! lines, or a JSON array. A durable pull consumer on `{subject_prefix}.*` (stream and consumer are created if
//! missing) pulls up to `batch_size` messages, and each tenant's messages of a batch go through the same
//! ingest as `POST /api/v1/signals/{tenant}/events` ([`crate::signals::decode_message`] +
//! [`SignalService::ingest`]): validation, `content_hash` dedup, feature computation, online and offline sinks.
//!
//! Outcomes, per message:
//! - **acked** only after the ingest committed (events, checkpoints and rows in one transaction); events refused
//!   one by one (`MISSING_FIELD`, `FUTURE_EVENT`, …) are counted as rejected and the rest of the message applies;
//! - **terminated** (`AckKind::Term`, never redelivered, counted by reason): a subject that is not
//!   `{prefix}.{tenant_id}` (`bad_subject`), an unknown tenant (`unknown_tenant`), a tenant that is not ACTIVE
//!   (`inactive_tenant`), a body that is not JSON/NDJSON (`invalid_json`), more than
//!   `[signals] max_events_per_request` events (`too_many_events`), a body over `[signals] max_body_bytes`
//!   (`too_large`), or a message none of whose events is valid (`no_valid_events`);
//! - **retried** (`Nak` with a delay): the store failed (nothing committed); JetStream redelivers it later.
//!
//! A message whose ack is lost (a dropped connection, a crash between commit and ack) is redelivered after
//! `ack_wait_secs`; its events are then duplicates and change nothing. The client reconnects on its own and the
//! pull stream is reopened after an error, so a dropped connection loses nothing and counts nothing twice.
//!
//! Metrics: `frostbyte_signals_nats_messages_total{outcome=acked|terminated|retried, reason}` and
//! `frostbyte_signals_nats_errors_total{kind}` (stream errors, reconnect trouble), besides the ingest metrics every
//! path records (`frostbyte_signals_events_total`, …).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use frostbyte_core::TenantId;
use frostbyte_core::ports::MetadataStore;
use frostbyte_core::signals::event::{Event, EventError};
use frostbyte_core::signals::service::{SignalError, SignalService};
use frostbyte_core::tenant::TenantState;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::NatsConfig;
use crate::signals::SignalsSettings;

/// How long a message whose ingest failed waits before JetStream redelivers it.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between attempts to (re)open the stream, consumer or pull.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URLs.
    pub urls: Vec<String>,
    pub subject_prefix: String,
    pub stream: String,
    pub durable: String,
    pub batch_size: usize,
    pub ack_wait: Duration,
    /// Idle heartbeat of the pull stream: a connection silent for twice this long is treated as broken.
    pub heartbeat: Duration,
}

impl NatsSettings {
    /// The settings `[signals.nats]` gives, or `None` when its `url` is empty.
    pub fn from_config(c: &NatsConfig) -> Option<NatsSettings> {
        let urls: Vec<String> = c.url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        if urls.is_empty() {
            return None;
        }
        Some(NatsSettings {
            urls,
            subject_prefix: c.subject_prefix.clone(),
            stream: c.stream.clone(),
            durable: c.durable.clone(),
            batch_size: c.batch_size,
            ack_wait: Duration::from_secs(c.ack_wait_secs),
            heartbeat: Duration::from_secs(5),
        })
    }

    /// The subject of a tenant's events.
    pub fn subject(&self, tenant: &TenantId) -> String {
        format!("{}.{tenant}", self.subject_prefix)
    }

    /// The tenant id a subject names, if it is `{prefix}.{one token}`.
    fn tenant_token<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let token = subject.strip_prefix(self.subject_prefix.as_str())?.strip_prefix('.')?;
        (!token.is_empty() && !token.contains('.')).then_some(token)
    }
}

/// What the consumer has done since it started (also exported as metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsumerCounts {
    /// Messages acknowledged after their events committed.
    pub acked: u64,
    /// Messages handed back for redelivery because the ingest failed.
    pub retried: u64,
    /// Messages terminated (never redelivered), by reason.
    pub terminated: BTreeMap<&'static str, u64>,
    /// Events stored.
    pub accepted: u64,
    /// Events already stored (a replayed or redelivered message): nothing changed.
    pub duplicates: u64,
    /// Events refused one by one inside otherwise usable messages, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Feature rows written.
    pub rows_emitted: u64,
    /// Pull-stream or connection errors met (each followed by a reconnect or a reopened stream).
    pub stream_errors: u64,
}

impl ConsumerCounts {
    pub fn terminated_total(&self) -> u64 {
        self.terminated.values().sum()
    }
}

/// Shared, live [`ConsumerCounts`].
#[derive(Debug, Default)]
pub struct ConsumerStats(Mutex<ConsumerCounts>);

impl ConsumerStats {
    pub fn snapshot(&self) -> ConsumerCounts {
        self.0.lock().expect("consumer stats lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut ConsumerCounts)) {
        f(&mut self.0.lock().expect("consumer stats lock"));
    }
}

/// Why a message is not ingested.
enum Refusal {
    /// Never redelivered.
    Terminate(&'static str),
    /// Redelivered later (the store could not be asked).
    Retry(&'static str),
}

/// A message ready to ingest.
struct Decoded {
    message: jetstream::Message,
    items: Vec<Result<Event, EventError>>,
}

/// The consumer: pulls, ingests through [`SignalService`], acks after commit.
pub struct SignalConsumer {
    settings: NatsSettings,
    service: SignalService,
    limits: SignalsSettings,
    tenants: Arc<dyn MetadataStore>,
    stats: Arc<ConsumerStats>,
}

impl SignalConsumer {
    pub fn new(
        settings: NatsSettings,
        service: SignalService,
        limits: SignalsSettings,
        tenants: Arc<dyn MetadataStore>,
    ) -> Self {
        SignalConsumer { settings, service, limits, tenants, stats: Arc::default() }
    }

    /// The live counts (tests and benchmarks read them).
    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Connects (retrying until it can), makes sure the stream and the durable consumer exist, and consumes
    /// until `shutdown` turns true; the batch in hand is finished and acknowledged first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let client = connect(&self.settings).await?;
        let js = jetstream::new(client.clone());
        let Some(consumer) = self.open_consumer(&js, &mut shutdown).await else {
            return Ok(());
        };
        tracing::info!(
            stream = %self.settings.stream,
            durable = %self.settings.durable,
            subjects = %format!("{}.*", self.settings.subject_prefix),
            "NATS signal consumer running"
        );
        let mut backoff = Duration::from_millis(100);
        'reopen: loop {
            let opened = consumer
                .stream()
                .max_messages_per_batch(self.settings.batch_size)
                .expires(self.settings.heartbeat * 4)
                .heartbeat(self.settings.heartbeat)
                .messages()
                .await;
            let mut messages = match opened {
                Ok(m) => m,
                Err(error) => {
                    self.stream_error("open", &error.to_string());
                    if wait_or_stop(&mut shutdown, backoff).await {
                        break 'reopen;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'reopen;
                }
            };
            loop {
                let first = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => break 'reopen,
                    next = messages.next() => next,
                };
                let mut batch = match first {
                    Some(Ok(m)) => vec![m],
                    Some(Err(error)) => {
                        self.stream_error("pull", &error.to_string());
                        if wait_or_stop(&mut shutdown, backoff).await {
                            break 'reopen;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue 'reopen;
                    }
                    None => continue 'reopen,
                };
                backoff = Duration::from_millis(100);
                // Take whatever else has already arrived, without waiting.
                while batch.len() < self.settings.batch_size {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => batch.push(m),
                        _ => break,
                    }
                }
                self.process(batch).await;
            }
        }
        // Acks are publishes: send them before leaving. Pulled but unprocessed messages are redelivered.
        if let Err(error) = client.flush().await {
            tracing::warn!(%error, "could not flush NATS acknowledgements; those messages will be redelivered");
        }
        tracing::info!("NATS signal consumer stopped");
        Ok(())
    }

    fn stream_error(&self, kind: &'static str, error: &str) {
        tracing::warn!(kind, error, "NATS signal consumer: stream error; reopening");
        metrics::counter!("frostbyte_signals_nats_errors_total", "kind" => kind).increment(1);
        self.stats.update(|c| c.stream_errors += 1);
    }

    /// Gets or creates the stream and the durable pull consumer, retrying until it works or shutdown.
    async fn open_consumer(
        &self,
        js: &jetstream::Context,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<PullConsumer> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.try_open_consumer(js).await {
                Ok(c) => return Some(c),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "NATS signal consumer: cannot open the stream or consumer; retrying");
                    metrics::counter!("frostbyte_signals_nats_errors_total", "kind" => "setup").increment(1);
                }
            }
            if wait_or_stop(shutdown, backoff).await {
                return None;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn try_open_consumer(&self, js: &jetstream::Context) -> anyhow::Result<PullConsumer> {
        let s = &self.settings;
        let filter = format!("{}.*", s.subject_prefix);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: s.stream.clone(),
                subjects: vec![filter.clone()],
                ..Default::default()
            })
            .await
            .with_context(|| format!("stream {}", s.stream))?;
        let consumer = stream
            .get_or_create_consumer(
                &s.durable,
                jetstream::consumer::pull::Config {
                    durable_name: Some(s.durable.clone()),
                    filter_subject: filter,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: s.ack_wait,
                    // Every message stays redeliverable until it is acked or terminated.
                    max_deliver: -1,
                    max_ack_pending: i64::try_from(s.batch_size.saturating_mul(4).max(1000)).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("durable consumer {}", s.durable))?;
        Ok(consumer)
    }

    /// Ingests one pulled batch: one ingest per tenant, then each message is acked, terminated or retried.
    async fn process(&self, batch: Vec<jetstream::Message>) {
        let mut tenants: HashMap<String, Result<TenantId, Refusal>> = HashMap::new();
        let mut groups: Vec<(TenantId, Vec<Decoded>)> = Vec::new();
        for message in batch {
            let token = self.settings.tenant_token(message.subject.as_str()).map(str::to_owned);
            let tenant = match token {
                None => Err(Refusal::Terminate("bad_subject")),
                Some(token) => {
                    if !tenants.contains_key(&token) {
                        let checked = self.check_tenant(&token).await;
                        tenants.insert(token.clone(), checked);
                    }
                    match &tenants[&token] {
                        Ok(t) => Ok(t.clone()),
                        Err(Refusal::Terminate(r)) => Err(Refusal::Terminate(r)),
                        Err(Refusal::Retry(r)) => Err(Refusal::Retry(r)),
                    }
                }
            };
            let decoded = tenant.and_then(|t| self.decode(&message).map(|items| (t, items)));
            match decoded {
                Ok((tenant, items)) => {
                    let entry = match groups.iter_mut().position(|(t, _)| *t == tenant) {
                        Some(i) => &mut groups[i].1,
                        None => {
                            groups.push((tenant, Vec::new()));
                            &mut groups.last_mut().expect("just pushed").1
                        }
                    };
                    entry.push(Decoded { message, items });
                }
                Err(Refusal::Terminate(reason)) => self.terminate(&message, reason).await,
                Err(Refusal::Retry(reason)) => self.retry(&message, reason).await,
            }
        }
        for (tenant, decoded) in groups {
            self.ingest(&tenant, decoded).await;
        }
    }

    async fn check_tenant(&self, token: &str) -> Result<TenantId, Refusal> {
        let tenant = TenantId::parse(token).map_err(|_| Refusal::Terminate("bad_subject"))?;
        match self.tenants.get_tenant(&tenant).await {
            Ok(Some(t)) if t.state == TenantState::Active => Ok(tenant),
            Ok(Some(_)) => Err(Refusal::Terminate("inactive_tenant")),
            Ok(None) => Err(Refusal::Terminate("unknown_tenant")),
            Err(error) => {
                tracing::warn!(%error, tenant = %tenant, "NATS signal consumer: cannot read the tenant");
                Err(Refusal::Retry("store_error"))
            }
        }
    }

    fn decode(&self, message: &jetstream::Message) -> Result<Vec<Result<Event, EventError>>, Refusal> {
        if message.payload.len() > self.limits.max_body_bytes {
            return Err(Refusal::Terminate("too_large"));
        }
        let items = crate::signals::decode_message(&message.payload, self.limits.max_events).map_err(|e| {
            Refusal::Terminate(match e {
                crate::signals::DecodeError::NotJson => "invalid_json",
                crate::signals::DecodeError::TooMany(_) => "too_many_events",
            })
        })?;
        if !items.iter().any(Result::is_ok) {
            if let Some(Err(e)) = items.first() {
                tracing::warn!(subject = %message.subject, reason = e.reason, message = %e.message, "NATS signal message has no valid event");
            }
            return Err(Refusal::Terminate("no_valid_events"));
        }
        Ok(items)
    }

    async fn ingest(&self, tenant: &TenantId, decoded: Vec<Decoded>) {
        let mut items = Vec::new();
        let mut messages = Vec::with_capacity(decoded.len());
        for d in decoded {
            items.extend(d.items);
            messages.push(d.message);
        }
        let now = frostbyte_core::now();
        match self.service.ingest(tenant, items, self.limits.ingest, now).await {
            Ok(report) => {
                crate::signals::record_ingest(&report, now);
                let mut rejected: BTreeMap<&'static str, u64> = BTreeMap::new();
                for e in &report.errors {
                    *rejected.entry(e.reason).or_default() += 1;
                }
                if !rejected.is_empty() {
                    tracing::warn!(tenant = %tenant, ?rejected, "NATS signal events refused");
                }
                tracing::debug!(
                    tenant = %tenant,
                    messages = messages.len(),
                    accepted = report.accepted,
                    duplicates = report.duplicates,
                    rejected = report.rejected,
                    rows = report.rows_emitted,
                    "NATS signal events ingested"
                );
                self.stats.update(|c| {
                    c.accepted += report.accepted;
                    c.duplicates += report.duplicates;
                    c.rows_emitted += report.rows_emitted;
                    for (reason, n) in &rejected {
                        *c.rejected.entry(reason).or_default() += n;
                    }
                });
                // Committed: now, and only now, acknowledge. A lost ack means a redelivery of duplicates.
                for m in &messages {
                    if let Err(error) = m.ack().await {
                        tracing::warn!(%error, "NATS ack failed; the message will be redelivered as duplicates");
                    }
                }
                metrics::counter!("frostbyte_signals_nats_messages_total", "outcome" => "acked", "reason" => "ok")
                    .increment(messages.len() as u64);
                self.stats.update(|c| c.acked += messages.len() as u64);
            }
            Err(SignalError::Invalid(problems)) => {
                tracing::warn!(tenant = %tenant, problems = problems.len(), "NATS signal batch refused as invalid");
                for m in &messages {
                    self.terminate(m, "invalid").await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, tenant = %tenant, messages = messages.len(), "NATS signal ingest failed; the messages will be redelivered");
                for m in &messages {
                    self.retry(m, "store_error").await;
                }
            }
        }
    }

    async fn terminate(&self, message: &jetstream::Message, reason: &'static str) {
        tracing::warn!(subject = %message.subject, reason, "NATS signal message terminated");
        metrics::counter!("frostbyte_signals_nats_messages_total", "outcome" => "terminated", "reason" => reason)
            .increment(1);
        self.stats.update(|c| *c.terminated.entry(reason).or_default() += 1);
        if let Err(error) = message.ack_with(AckKind::Term).await {
            tracing::warn!(%error, reason, "NATS terminate failed; the message will be redelivered and refused again");
        }
    }

    async fn retry(&self, message: &jetstream::Message, reason: &'static str) {
        metrics::counter!("frostbyte_signals_nats_messages_total", "outcome" => "retried", "reason" => reason)
            .increment(1);
        self.stats.update(|c| c.retried += 1);
        if let Err(error) = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await {
            tracing::debug!(%error, "NATS nak failed; the message is redelivered after ack_wait");
        }
    }
}

/// Connects to the servers, retrying in the background while they are unreachable; reconnects on its own.
async fn connect(settings: &NatsSettings) -> anyhow::Result<async_nats::Client> {
    let addrs = settings
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>().with_context(|| format!("invalid NATS URL {u:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    async_nats::ConnectOptions::new()
        .name("frostbyte-signals")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(2_000)))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => {
                    metrics::counter!("frostbyte_signals_nats_errors_total", "kind" => "disconnected").increment(1);
                    tracing::warn!("NATS disconnected; reconnecting");
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .connect(addrs)
        .await
        .context("cannot set up the NATS connection")
}

/// Sleeps for `d`; `true` when shutdown was asked meanwhile.
async fn wait_or_stop(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => true,
        () = tokio::time::sleep(d) => false,
    };
    stopped || *shutdown.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_the_one_token_after_the_prefix() {
        let c = NatsConfig { url: "nats://a:4222, nats://b:4222".into(), ..Default::default() };
        let s = NatsSettings::from_config(&c).unwrap();
        assert_eq!(s.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(s.tenant_token("frostbyte.signals.acme"), Some("acme"));
        assert_eq!(s.tenant_token("frostbyte.signals.acme.x"), None);
        assert_eq!(s.tenant_token("frostbyte.signals."), None);
        assert_eq!(s.tenant_token("frostbyte.signalsacme"), None);
        assert_eq!(s.tenant_token("other.acme"), None);
        assert!(NatsSettings::from_config(&NatsConfig::default()).is_none());
    }
}
