//! Crash safety of the signals plane, with the real binary: a server killed with SIGKILL while a client streams
//! events (some of them late, inside the allowed lateness) is restarted on the same data directory; the client
//! resends the batch it got no answer for, and the end state is exactly an uninterrupted run's: the same events
//! (none lost, none counted twice) and the same feature rows, window by window, with the same revisions.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::SqlitePoolOptions;

const TENANT: &str = "acme";
const ADMIN_KEY: &str = "fba_signals_crash_test_admin_key_0123456789";
const EVENTS: u64 = 3_000;
const ENTITIES: u64 = 12;
const PER_BODY: u64 = 100;
const BASE_SECS: i64 = 1_770_000_000;
const FEATURE_SET: &str = r#"{
  "allowed_lateness": "5s",
  "late_policy": "correct",
  "windows": [
    {"name": "m1", "type": "tumbling", "size": "1m",
     "aggregates": [{"name": "n", "op": "count"}, {"name": "sum", "op": "sum", "field": "/t"}]},
    {"name": "m5", "type": "sliding", "size": "5m", "slide": "1m",
     "aggregates": [{"name": "mean", "op": "mean", "field": "/t"}]},
    {"name": "ewma", "type": "ewma", "field": "/t", "half_life": "10m", "every": "1m"}
  ]
}"#;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frostbyte"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FROSTBYTE_")) {
        cmd.env_remove(k);
    }
    let child = cmd
        .env("FROSTBYTE_LOG", "warn")
        .env("FROSTBYTE_DATA_DIR", data_dir)
        .env("FROSTBYTE_HOST", "127.0.0.1")
        .env("FROSTBYTE_PORT", port.to_string())
        .env("FROSTBYTE_ADMIN_API_KEY", ADMIN_KEY)
        .env("FROSTBYTE_WORKERS__COUNT", "0")
        .env("FROSTBYTE_PIPELINES__WORKERS", "0")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child, base: format!("http://127.0.0.1:{port}") }
}

async fn healthy(http: &reqwest::Client, server: &Server) {
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{}/health", server.base)).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(
    http: &reqwest::Client,
    server: &Server,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Value,
) -> Value {
    let r = http
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Creates the tenant, an ingest key and the feature set; returns the key.
async fn setup(http: &reqwest::Client, server: &Server) -> String {
    use reqwest::Method;
    let tenant = json!({"tenant_id": TENANT, "tenant_name": "Acme", "contact_email": "ops@acme.example"});
    call(http, server, Method::POST, "/api/v1/admin/tenants", ADMIN_KEY, tenant).await;
    let keys = format!("/api/v1/admin/tenants/{TENANT}/keys");
    let key =
        call(http, server, Method::POST, &keys, ADMIN_KEY, json!({"name": "k", "scopes": ["ingest", "query"]})).await;
    let key = key["data"]["api_key"].as_str().unwrap().to_owned();
    let def: Value = serde_json::from_str(FEATURE_SET).unwrap();
    call(http, server, Method::PUT, &format!("/api/v1/signals/{TENANT}/feature-sets/temps"), &key, def).await;
    key
}

/// NDJSON bodies of `PER_BODY` events: one reading per entity per second, every fourth one up to 4 s late.
fn bodies() -> Vec<String> {
    let mut out = Vec::new();
    let mut body = String::new();
    for i in 0..EVENTS {
        let tick = (i / ENTITIES) as i64;
        let late_ms = if i % 4 == 0 { (i % 5) as i64 * 800 } else { 0 };
        let t = chrono::DateTime::from_timestamp_millis((BASE_SECS + tick) * 1000 - late_ms).unwrap();
        body.push_str(&format!(
            "{{\"entity_id\":\"sensor-{}\",\"event_time\":\"{}\",\"sequence\":{i},\"payload\":{{\"t\":{}}},\"source\":\"test\"}}\n",
            i % ENTITIES,
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            (i % 37) as f64 / 4.0
        ));
        if (i + 1) % PER_BODY == 0 {
            out.push(std::mem::take(&mut body));
        }
    }
    out
}

async fn send(http: &reqwest::Client, server: &Server, key: &str, body: &str) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{}/api/v1/signals/{TENANT}/events", server.base))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body.to_owned())
        .send()
        .await
}

/// `(entity, window_end, feature_set) → (revision, values)` and the number of stored events.
async fn snapshot(data_dir: &Path) -> (BTreeMap<(String, i64, String), (i64, String)>, i64) {
    let url = format!("sqlite://{}?mode=ro", data_dir.join("frostbyte.db").display());
    let pool = SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let rows = sqlx::query(
        "SELECT entity_id, window_end, feature_set, revision, feature_values FROM signal_features WHERE tenant_id = ?",
    )
    .bind(TENANT)
    .fetch_all(&pool)
    .await
    .unwrap();
    let features = rows
        .iter()
        .map(|r| {
            let key = (r.get("entity_id"), r.get("window_end"), r.get("feature_set"));
            (key, (r.get("revision"), r.get("feature_values")))
        })
        .collect();
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signal_events WHERE tenant_id = ?")
        .bind(TENANT)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (features, events)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_stream_loses_and_double_counts_nothing_after_restart() {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let bodies = bodies();
    let dir = tempfile::tempdir().unwrap();

    // The reference: every batch sent to a server that keeps running.
    let reference = dir.path().join("reference");
    {
        let server = start(&reference);
        healthy(&http, &server).await;
        let key = setup(&http, &server).await;
        for body in &bodies {
            let r = send(&http, &server, &key, body).await.unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    }
    let (expected, events) = snapshot(&reference).await;
    assert_eq!(events, EVENTS as i64);
    assert!(expected.len() > 40, "a real number of feature rows: {}", expected.len());

    // The crash run: a third of the batches, then SIGKILL while the next one is in flight.
    let crashed = dir.path().join("crashed");
    let mut server = start(&crashed);
    healthy(&http, &server).await;
    let key = setup(&http, &server).await;
    let cut = bodies.len() / 3;
    for body in &bodies[..cut] {
        assert!(send(&http, &server, &key, body).await.unwrap().status().is_success());
    }
    let in_flight = send(&http, &server, &key, &bodies[cut]);
    let pid = server.child.id().to_string();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(2)).await;
        // SIGKILL: no graceful shutdown.
        assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    };
    let (answer, ()) = tokio::join!(in_flight, kill);
    server.child.wait().unwrap();
    // Either outcome is possible; an answered batch was committed, an unanswered one is sent again.
    let resend_from = match answer {
        Ok(r) if r.status().is_success() => cut + 1,
        _ => cut,
    };
    drop(server);

    let server = start(&crashed);
    healthy(&http, &server).await;
    for body in &bodies[resend_from..] {
        let r = send(&http, &server, &key, body).await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    // The client cannot know whether the batch in flight was committed before the kill: sending it once more is
    // always safe, and counts its events as duplicates.
    let again = send(&http, &server, &key, &bodies[cut]).await.unwrap();
    assert!(again.status().is_success());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["data"]["accepted"], json!(0), "a replayed batch changes nothing: {again}");
    drop(server);

    let (got, events) = snapshot(&crashed).await;
    assert_eq!(events, EVENTS as i64, "every event stored once");
    assert_eq!(got.len(), expected.len(), "the same feature rows as the uninterrupted run");
    assert_eq!(got, expected, "the same values and revisions, window by window");
}
