//! The pipeline event stream (`GET /api/v1/pipeline/stream`, read with a real HTTP client as Server-Sent Events)
//! and the pipeline's audit events, whose input and output hashes chain stage to stage.

use std::time::Duration;

use frostbyte_core::TenantId;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{ADMIN_KEY, Sse, TestApp, drain, spawn_app};

const SSN: &str = "078-05-1120";
const WAIT: Duration = Duration::from_secs(10);

fn markdown(topic: &str) -> Vec<u8> {
    format!(
        "# {topic}\n\nThe {topic} team keeps its runbooks here. Payroll needs details before the first run.\n\n\
         ## Records\n\nEmployee SSN {SSN} is on file with human resources.\n\n- badge issued\n- laptop issued\n"
    )
    .into_bytes()
}

async fn upload(app: &TestApp, key: &str, tenant: &str, topic: &str) -> String {
    let r = app.upload(key, tenant, "notes.md", "text/markdown", &markdown(topic)).await;
    r.expect(202);
    r.data()["doc_id"].as_str().unwrap().to_owned()
}

fn is_indexed(doc_id: &str) -> impl Fn(&Sse) -> bool + '_ {
    move |e| e.data["document_id"] == doc_id && e.data["event_type"] == "INDEX_WRITTEN"
}

fn transitions(events: &[Sse], doc_id: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.data["document_id"] == doc_id)
        .map(|e| (e.data["stage"].as_str().unwrap().to_owned(), e.data["status"].as_str().unwrap_or("").to_owned()))
        .collect()
}

#[tokio::test]
async fn a_tenant_stream_starts_with_a_system_event_and_shows_only_its_own_stage_transitions() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    // Any scope may listen.
    let (audit_only, _) = app.key("acme", &["audit"]).await;
    let mut stream = app.stream(Some(&audit_only), None).await;
    assert_eq!(stream.status(), 200);
    assert!(
        stream.resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"),
        "{:?}",
        stream.resp.headers()
    );
    let first = stream.next(WAIT).await.expect("a connection event");
    assert_eq!(first.data["stage"], "SYSTEM");
    assert_eq!(first.data["message"], "connected");
    assert_eq!(first.id, None, "the connection event is not a resume point");

    let theirs = upload(&app, &other.key, "other", "logistics").await;
    let mine = upload(&app, &acme.key, "acme", "operations").await;
    drain(&app.pipeline("w1")).await;
    let events = stream.until(WAIT, is_indexed(&mine)).await;

    assert!(events.iter().all(|e| e.data["tenant_id"] == "acme"), "{events:#?}");
    assert!(!stream.raw.contains(&theirs), "another tenant's document leaked into the stream");
    let seen = transitions(&events, &mine);
    let expected: Vec<(String, String)> = [
        ("intake", "done"),
        ("parse", "running"),
        ("parse", "done"),
        ("policy", "running"),
        ("policy", "done"),
        ("embed", "running"),
        ("embed", "done"),
        ("index", "done"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, expected);
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("every pipeline event has an id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for e in &events {
        for field in ["stage", "message", "level", "timestamp", "tenant_id"] {
            assert!(e.data[field].is_string(), "{field} missing: {}", e.data);
        }
    }
    let indexed = events.last().unwrap();
    assert!(indexed.data["counts"]["chunks"].as_u64().unwrap() > 0, "{}", indexed.data);
    // Ids and counts only: nothing the document says.
    for text in [SSN, "Payroll", "runbooks", "operations"] {
        assert!(!stream.raw.contains(text), "{text} reached the stream");
    }
}

#[tokio::test]
async fn the_admin_sees_every_tenant_and_last_event_id_resumes_where_the_client_left() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let mut admin = app.stream(Some(ADMIN_KEY), None).await;
    assert_eq!(admin.next(WAIT).await.unwrap().data["stage"], "SYSTEM");
    let a = upload(&app, &acme.key, "acme", "operations").await;
    let b = upload(&app, &other.key, "other", "logistics").await;
    drain(&app.pipeline("w1")).await;
    let mut events = admin.until(WAIT, is_indexed(&a)).await;
    if !events.iter().any(is_indexed(&b)) {
        events.extend(admin.until(WAIT, is_indexed(&b)).await);
    }
    let tenants: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e.data["tenant_id"].as_str()).collect();
    assert_eq!(tenants, ["acme", "other"].into());

    // Reconnect as acme from the middle: first the connection event, then acme's events after that id, in order.
    let mine: Vec<&Sse> = events.iter().filter(|e| e.data["tenant_id"] == "acme").collect();
    let resume_at = mine[2].id.unwrap();
    let mut resumed = app.stream(Some(&acme.key), Some(resume_at)).await;
    assert_eq!(resumed.next(WAIT).await.unwrap().data["stage"], "SYSTEM");
    let replay = resumed.until(WAIT, is_indexed(&a)).await;
    let replayed: Vec<u64> = replay.iter().map(|e| e.id.unwrap()).collect();
    let expected: Vec<u64> = mine[3..].iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(replayed, expected);
    assert!(replay.iter().all(|e| e.data["tenant_id"] == "acme"));
    // New events keep coming on the resumed stream.
    let c = upload(&app, &acme.key, "acme", "finance").await;
    let live = resumed.next(WAIT).await.unwrap();
    assert_eq!(live.data["document_id"], c.as_str());
    assert_eq!(live.data["stage"], "intake");
}

#[tokio::test]
async fn the_stream_needs_a_credential() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/pipeline/stream", None).await;
    r.expect_error(401, "AUTHENTICATION_REQUIRED");
    app.tenant("acme").await;
    let (key, _) = app.key("acme", &["query"]).await;
    app.suspend("acme").await.expect(200);
    app.get("/api/v1/pipeline/stream", Some(&key)).await.expect_error(403, "TENANT_SUSPENDED");
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn chain(app: &TestApp, key: &str, doc_id: &str) -> Vec<Value> {
    let r = app.audit_chain(key, "acme", doc_id).await;
    r.expect(200);
    assert_eq!(r.data()["hash_chain_valid"], true, "{}", r.text);
    r.data()["events"].as_array().unwrap().clone()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event_type"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}: {events:#?}");
    found[0]
}

#[tokio::test]
async fn pipeline_audit_events_chain_their_input_and_output_hashes() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let doc_id = upload(&app, &t.key, "acme", "operations").await;
    drain(&app.pipeline("w1")).await;
    let events = chain(&app, &t.key, &doc_id).await;

    let tenant = TenantId::parse("acme").unwrap();
    let raw = sha256_hex(&markdown("operations"));
    let canonical = app.blobs.get(&tenant, &format!("canonical/{doc_id}.json")).await.unwrap();
    let policed = app.blobs.get(&tenant, &format!("policed/{doc_id}.json")).await.unwrap();
    let ingested = of_type(&events, "DOCUMENT_INGESTED");
    let parsed = of_type(&events, "DOCUMENT_PARSED");
    let gate = of_type(&events, "POLICY_GATE_PASSED");
    let embedded = of_type(&events, "DOCUMENT_EMBEDDED");
    let written = of_type(&events, "INDEX_WRITTEN");
    let d = |e: &Value, k: &str| e["details"][k].as_str().unwrap_or_else(|| panic!("{k} missing in {e}")).to_owned();
    assert_eq!(d(ingested, "input_hash"), raw);
    assert_eq!(d(parsed, "input_hash"), raw);
    assert_eq!(d(parsed, "output_hash"), sha256_hex(&canonical), "the canonical JSON as stored");
    assert_eq!(d(gate, "input_hash"), d(parsed, "output_hash"));
    assert_eq!(d(gate, "output_hash"), sha256_hex(&policed), "the policed JSON as stored");
    assert_eq!(d(embedded, "input_hash"), d(gate, "output_hash"));
    assert_eq!(d(written, "input_hash"), d(embedded, "output_hash"));
    assert_eq!(d(embedded, "embed_model"), "hash-v1-384");
    let doc = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
    assert_eq!(doc.data()["lineage"]["index_sha256"], written["details"]["output_hash"], "{}", doc.text);
    let hashes: std::collections::BTreeSet<String> =
        [parsed, gate, embedded, written].iter().map(|e| d(e, "output_hash")).collect();
    assert_eq!(hashes.len(), 4, "every stage's output differs");

    // Stages come in pipeline order, each announced as started first.
    let order: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    let pos = |k: &str| order.iter().position(|x| *x == k).unwrap();
    assert!(pos("DOCUMENT_INGESTED") < pos("DOCUMENT_PARSED"));
    assert!(pos("DOCUMENT_PARSED") < pos("POLICY_GATE_PASSED"));
    assert!(pos("PII_DETECTED") < pos("POLICY_GATE_PASSED"));
    assert!(pos("POLICY_GATE_PASSED") < pos("DOCUMENT_EMBEDDED") && pos("DOCUMENT_EMBEDDED") < pos("INDEX_WRITTEN"));
    assert_eq!(order.iter().filter(|k| **k == "DOCUMENT_STAGE_STARTED").count(), 3);

    // PII: types and counts, never the value.
    let pii = of_type(&events, "PII_DETECTED");
    assert_eq!(pii["details"]["types"], json!({"SSN": 1}), "{pii}");
    assert_eq!(pii["details"]["action"], "redact");
    assert_eq!(d(pii, "input_hash"), d(parsed, "output_hash"));
    let all = app.audit_events(&t.key, "acme", "?limit=500").await;
    assert!(!all.text.contains(SSN));
}

#[tokio::test]
async fn a_blocked_document_fails_the_policy_gate_and_the_chain_stops_there() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    app.patch_tenant("acme", &json!({"config": {"pii_policy": "block"}})).await.expect(200);
    let doc_id = upload(&app, &t.key, "acme", "operations").await;
    assert_eq!(drain(&app.pipeline("w1")).await, 1, "parse and policy; nothing after the gate");
    let events = chain(&app, &t.key, &doc_id).await;
    let parsed = of_type(&events, "DOCUMENT_PARSED");
    let failed = of_type(&events, "POLICY_GATE_FAILED");
    assert_eq!(failed["details"]["input_hash"], parsed["details"]["output_hash"]);
    assert_eq!(failed["details"]["status"], "quarantined");
    assert_eq!(of_type(&events, "PII_DETECTED")["details"]["status"], "blocked");
    assert!(!events.iter().any(|e| e["event_type"] == "DOCUMENT_EMBEDDED" || e["event_type"] == "INDEX_WRITTEN"));
    let doc = app.get(&format!("/api/v1/query/acme/document/{doc_id}"), Some(&t.key)).await;
    assert_eq!(doc.data()["status"], "quarantined");
    assert_eq!(doc.data()["stages"]["embed"], "skipped");
}

#[tokio::test]
async fn an_open_stream_ends_when_its_tenant_is_suspended_or_its_key_revoked() {
    let app = spawn_app().await;
    app.tenant("acme").await;
    for revoke in [false, true] {
        let (key, key_id) = app.key("acme", &["query"]).await;
        let mut stream = app.stream(Some(&key), None).await;
        assert_eq!(stream.next(WAIT).await.unwrap().data["stage"], "SYSTEM");
        if revoke {
            app.revoke_key("acme", &key_id).await.expect(200);
        } else {
            app.suspend("acme").await.expect(200);
        }
        let closing = stream.next(Duration::from_secs(3)).await.expect("a closing event within the re-check");
        assert_eq!(closing.data["stage"], "SYSTEM");
        assert_eq!(closing.data["level"], "warn");
        assert!(stream.next(Duration::from_secs(3)).await.is_none(), "the stream ended");
        if !revoke {
            app.resume("acme").await.expect(200);
        }
    }
}
