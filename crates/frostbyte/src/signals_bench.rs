//! End-to-end signal benchmarks: `frostbyte signals bench-http` and `frostbyte signals bench-nats`.
//!
//! Each starts a real `frostbyte serve` (this executable) on the embedded default (SQLite and local files in a
//! temporary directory; document and pipeline workers off, so only signals use the database), creates a tenant, a key and the benchmark's feature set (tumbling + sliding + EWMA,
//! [`BENCH_FEATURE_SET`]) over the API, then times events from the wire to committed feature rows:
//! - `bench-http`: several clients `POST …/events` NDJSON batches concurrently; each entity is sent by one
//!   client, in time order; the clock stops when the last response (sent after the commit) arrives;
//! - `bench-nats`: the events are published to JetStream as NDJSON messages on the tenant's subject and the
//!   server's consumer ingests them; the clock stops when the server's
//!   `frostbyte_signals_events_total{outcome="accepted"}` reaches the number published.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use frostbyte_core::signals::bench::BENCH_FEATURE_SET;
use serde::Serialize;
use serde_json::{Value, json};

const TENANT: &str = "bench";
const BASE_SECS: i64 = 1_770_000_000;

/// What an end-to-end run measured.
#[derive(Debug, Clone, Serialize)]
pub struct WireReport {
    pub source: &'static str,
    pub events: u64,
    pub entities: u64,
    /// Concurrent HTTP clients (bench-http); one publisher for bench-nats.
    pub clients: u32,
    pub events_per_message: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub accepted: u64,
    /// Server's resident memory after the run, in bytes (Linux), for scale.
    pub server_rss_bytes: Option<u64>,
}

/// A `frostbyte serve` child on a free port and a temporary data directory; killed on drop.
struct Server {
    child: Child,
    base: String,
    admin_key: String,
    http: reqwest_013::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(env: &[(&str, String)]) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir().context("temporary data directory")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let admin_key = format!("fba_bench_{}", uuid::Uuid::now_v7().simple());
        let exe = std::env::current_exe().context("this executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .env("FROSTBYTE_DATA_DIR", dir.path())
            .env("FROSTBYTE_HOST", "127.0.0.1")
            .env("FROSTBYTE_PORT", port.to_string())
            .env("FROSTBYTE_ADMIN_API_KEY", &admin_key)
            .env("FROSTBYTE_LOG", "warn")
            // Signals only: no document or pipeline workers polling the same SQLite file.
            .env("FROSTBYTE_WORKERS__COUNT", "0")
            .env("FROSTBYTE_PIPELINES__WORKERS", "0")
            .env("FROSTBYTE_SIGNALS__MAX_EVENTS_PER_REQUEST", "1000000")
            .env("FROSTBYTE_SIGNALS__MAX_BODY_BYTES", "268435456")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("cannot start `frostbyte serve`")?;
        let http = reqwest_013::Client::builder().timeout(Duration::from_secs(600)).build()?;
        let server = Server { child, base: format!("http://127.0.0.1:{port}"), admin_key, http, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.http.get(format!("{}/health", server.base)).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("`frostbyte serve` did not become healthy within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(&self, method: reqwest_013::Method, path: &str, key: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Creates the tenant, a key and the feature set; returns the key.
    async fn setup(&self) -> anyhow::Result<String> {
        use reqwest_013::Method;
        let body = json!({"tenant_id": TENANT, "tenant_name": "Benchmark", "contact_email": "ops@example.com",
                          "tier": "standard"});
        self.call(Method::POST, "/api/v1/admin/tenants", &self.admin_key, body).await?;
        let key = self
            .call(
                Method::POST,
                &format!("/api/v1/admin/tenants/{TENANT}/keys"),
                &self.admin_key,
                json!({"name": "bench", "scopes": ["ingest", "query"]}),
            )
            .await?;
        let key = key["data"]["api_key"].as_str().context("no api_key in the answer")?.to_owned();
        let def: Value = serde_yaml_ng::from_str(BENCH_FEATURE_SET)?;
        self.call(Method::PUT, &format!("/api/v1/signals/{TENANT}/feature-sets/bench"), &key, def).await?;
        Ok(key)
    }

    /// The server's `frostbyte_signals_events_total{outcome="accepted"}`.
    #[cfg(feature = "nats")]
    async fn accepted(&self) -> anyhow::Result<u64> {
        let text =
            self.http.get(format!("{}/metrics", self.base)).bearer_auth(&self.admin_key).send().await?.text().await?;
        Ok(text
            .lines()
            .find(|l| l.starts_with("frostbyte_signals_events_total{outcome=\"accepted\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64))
    }

    fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()?;
        Some(kb * 1024)
    }
}

/// Event `i`: entity `i % entities`, one reading per entity per second, a third of them up to 4 s late
/// (inside the feature set's 5 s lateness), like the in-process bench.
fn event_line(i: u64, entities: u64) -> String {
    let tick = (i / entities) as i64;
    let jitter_ms = if i.is_multiple_of(3) { -((i % 5) as i64) * 800 } else { 0 };
    let t = chrono::DateTime::from_timestamp_millis((BASE_SECS + tick) * 1000 + jitter_ms).expect("in range");
    format!(
        "{{\"entity_id\":\"device-{}\",\"event_time\":\"{}\",\"sequence\":{i},\"payload\":{{\"t\":{:.1},\"unit\":\"C\"}},\"source\":\"bench\"}}\n",
        i % entities,
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        20.0 + (i % 97) as f64 / 10.0
    )
}

/// NDJSON bodies of at most `per_body` events, each holding only the entities of `part` of `parts` (so one
/// sender owns each entity and sends it in time order).
fn bodies(events: u64, entities: u64, part: u64, parts: u64, per_body: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut body = String::new();
    let mut n = 0;
    for i in 0..events {
        if (i % entities) % parts != part {
            continue;
        }
        body.push_str(&event_line(i, entities));
        n += 1;
        if n == per_body {
            out.push(std::mem::take(&mut body));
            n = 0;
        }
    }
    if n > 0 {
        out.push(body);
    }
    out
}

/// `frostbyte signals bench-http`.
pub async fn http(events: u64, entities: u64, clients: u32, batch: u64) -> anyhow::Result<WireReport> {
    let server = Server::start(&[]).await?;
    let key = server.setup().await?;
    let parts = u64::from(clients);
    let work: Vec<Vec<String>> = (0..parts).map(|p| bodies(events, entities, p, parts, batch)).collect();
    let url = format!("{}/api/v1/signals/{TENANT}/events", server.base);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for list in work {
        let (http, url, key) = (server.http.clone(), url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            for body in list {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                if !status.is_success() {
                    bail!("POST events: {status}: {text}");
                }
                let v: Value = serde_json::from_str(&text)?;
                accepted += v["data"]["accepted"].as_u64().unwrap_or(0);
            }
            Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.context("bench client panicked")??;
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    Ok(WireReport {
        source: "http-ndjson",
        events,
        entities,
        clients,
        events_per_message: batch,
        seconds,
        events_per_sec: accepted as f64 / seconds,
        accepted,
        server_rss_bytes: server.rss_bytes(),
    })
}

/// `frostbyte signals bench-nats`.
#[cfg(feature = "nats")]
pub async fn nats(url: &str, events: u64, entities: u64, per_message: u64) -> anyhow::Result<WireReport> {
    use async_nats::jetstream;

    let id = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("fbbench.{id}");
    let stream = format!("FBBENCH_{id}");
    let env = [
        ("FROSTBYTE_SIGNALS__NATS__URL", url.to_owned()),
        ("FROSTBYTE_SIGNALS__NATS__SUBJECT_PREFIX", prefix.clone()),
        ("FROSTBYTE_SIGNALS__NATS__STREAM", stream.clone()),
        ("FROSTBYTE_SIGNALS__NATS__DURABLE", format!("fbbench-{id}")),
    ];
    let client = async_nats::connect(url).await.with_context(|| format!("cannot connect to NATS at {url}"))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{prefix}.*")],
        ..Default::default()
    })
    .await
    .context("cannot create the benchmark stream")?;
    let result = async {
        let server = Server::start(&env).await?;
        server.setup().await?;
        let messages = bodies(events, entities, 0, 1, per_message);
        let subject = format!("{prefix}.{TENANT}");
        let start = Instant::now();
        let mut acks = Vec::with_capacity(256);
        for body in messages {
            acks.push(js.publish(subject.clone(), body.into()).await?);
            if acks.len() == 256 {
                for a in acks.drain(..) {
                    a.await?;
                }
            }
        }
        for a in acks {
            a.await?;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let accepted = loop {
            let n = server.accepted().await?;
            if n >= events {
                break n;
            }
            if Instant::now() > deadline {
                bail!("only {n} of {events} events were committed within 600 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let seconds = start.elapsed().as_secs_f64().max(1e-9);
        Ok(WireReport {
            source: "nats-jetstream",
            events,
            entities,
            clients: 1,
            events_per_message: per_message,
            seconds,
            events_per_sec: accepted as f64 / seconds,
            accepted,
            server_rss_bytes: server.rss_bytes(),
        })
    }
    .await;
    let _ = js.delete_stream(&stream).await;
    result
}
