//! Crash safety of the document pipeline, with the real binary: a server killed with SIGKILL in the middle of
//! processing a batch, then restarted, ends with every accepted document indexed exactly once — the same chunks
//! (by file, position and text hash, with the deterministic chunk ids) and counts as an uninterrupted run, no
//! duplicates, no losses, and an empty queue and dead-letter list.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Row;
use sqlx::sqlite::SqlitePoolOptions;

const FILES: usize = 48;

fn frostbyte(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frostbyte"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FROSTBYTE_")) {
        cmd.env_remove(k);
    }
    cmd.env("FROSTBYTE_LOG", "warn").arg("--data-dir").arg(data_dir);
    cmd
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().expect("frostbyte runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A corpus of Markdown files big enough that processing takes a while: headings, paragraphs, lists, a table.
fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let words = [
        "lattice", "harbour", "quartz", "meadow", "signal", "ledger", "orbit", "cedar", "tundra", "falcon", "ember",
        "glacier", "prism", "summit", "willow", "zephyr", "anchor", "beacon", "canyon", "delta",
    ];
    for f in 0..FILES {
        let mut text = format!("# Report {f}\n\n");
        for s in 0..24 {
            text.push_str(&format!("## Section {s}\n\n"));
            for p in 0..3 {
                let sentence: Vec<&str> =
                    (0..40).map(|w| words[(f * 7 + s * 13 + p * 5 + w * 3) % words.len()]).collect();
                text.push_str(&format!("{}. Paragraph {p} of section {s} in file {f}.\n\n", sentence.join(" ")));
            }
            text.push_str("- first item\n- second item\n\n| key | value |\n|---|---|\n| a | 1 |\n| b | 2 |\n\n");
        }
        std::fs::write(dir.join(format!("report-{f:02}.md")), text).unwrap();
    }
}

/// `(filename, position) → (text_hash, chunk_id matches its deterministic id)` for every chunk of the tenant.
type Chunks = BTreeMap<(String, i64), String>;

async fn snapshot(data_dir: &Path) -> (Chunks, BTreeMap<String, i64>) {
    let url = format!("sqlite://{}?mode=ro", data_dir.join("frostbyte.db").display());
    let pool = SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let rows = sqlx::query(
        "SELECT d.original_filename AS name, c.doc_id, c.position, c.text_hash, c.chunk_id \
         FROM chunks c JOIN documents d ON d.tenant_id = c.tenant_id AND d.doc_id = c.doc_id \
         WHERE c.tenant_id = 'acme'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut chunks = Chunks::new();
    for r in &rows {
        let (name, doc_id, position, hash, id): (String, String, i64, String, String) =
            (r.get("name"), r.get("doc_id"), r.get("position"), r.get("text_hash"), r.get("chunk_id"));
        let expected = frostbyte_core::chunk::chunk_id(&doc_id, u32::try_from(position).unwrap(), &hash);
        assert_eq!(id, expected.to_string(), "chunk ids are the deterministic ones");
        assert!(chunks.insert((name, position), hash).is_none(), "no chunk twice");
    }
    let statuses = sqlx::query("SELECT status, COUNT(*) AS n FROM documents WHERE tenant_id = 'acme' GROUP BY status")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>("status"), r.get::<i64, _>("n")))
        .collect();
    pool.close().await;
    (chunks, statuses)
}

async fn scalar(data_dir: &Path, sql: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", data_dir.join("frostbyte.db").display());
    let pool = SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

async fn indexed(data_dir: &Path) -> i64 {
    scalar(data_dir, "SELECT COUNT(*) FROM documents WHERE status = 'indexed'").await
}

fn start_server(data_dir: &Path) -> Child {
    frostbyte(data_dir)
        .env("FROSTBYTE_WORKERS__COUNT", "2")
        .env("FROSTBYTE_WORKERS__POLL_INTERVAL_MS", "20")
        // A killed worker's jobs are taken over once their lease runs out.
        .env("FROSTBYTE_WORKERS__LEASE_SECS", "5")
        .args(["serve", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_batch_indexes_every_accepted_document_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    write_corpus(&corpus);

    // The reference: the same files ingested and processed without interruption.
    let reference = dir.path().join("reference");
    ok(frostbyte(&reference).args(["tenant", "create", "acme", "--name", "Acme", "--email", "ops@acme.example"]));
    ok(frostbyte(&reference).arg("ingest").arg(&corpus).args(["--tenant", "acme"]));
    let (expected, statuses) = snapshot(&reference).await;
    assert_eq!(statuses.get("indexed"), Some(&(FILES as i64)), "{statuses:?}");
    assert!(expected.len() > FILES * 4, "a real amount of work: {} chunks", expected.len());

    // The crash run: accept the batch, start the server, kill it with SIGKILL mid-way, start it again.
    let crashed = dir.path().join("crashed");
    ok(frostbyte(&crashed).args(["tenant", "create", "acme", "--name", "Acme", "--email", "ops@acme.example"]));
    ok(frostbyte(&crashed).arg("ingest").arg(&corpus).args(["--tenant", "acme", "--no-wait"]));
    assert_eq!(indexed(&crashed).await, 0);
    let mut server = start_server(&crashed);
    wait_until("the first documents to be indexed", Duration::from_secs(120), async || indexed(&crashed).await >= 2)
        .await;
    server.kill().unwrap(); // SIGKILL: no graceful shutdown, jobs left claimed mid-stage.
    server.wait().unwrap();
    let at_kill = indexed(&crashed).await;
    assert!(at_kill < FILES as i64, "killed in the middle of the batch ({at_kill} of {FILES} indexed)");

    let mut server = start_server(&crashed);
    let finished = async || {
        scalar(&crashed, "SELECT COUNT(*) FROM documents WHERE status = 'processing'").await == 0
            && scalar(&crashed, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").await == 0
    };
    wait_until("every document to finish", Duration::from_secs(180), finished).await;
    std::process::Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    server.wait().unwrap();

    let (got, statuses) = snapshot(&crashed).await;
    assert_eq!(statuses.get("indexed"), Some(&(FILES as i64)), "every accepted document indexed: {statuses:?}");
    assert_eq!(statuses.len(), 1, "nothing failed or quarantined: {statuses:?}");
    assert_eq!(got.len(), expected.len(), "same chunk count as the uninterrupted run");
    assert_eq!(got, expected, "same chunks, by file, position and text hash");
    assert_eq!(
        scalar(&crashed, "SELECT COUNT(*) FROM jobs WHERE status <> 'succeeded'").await,
        0,
        "every job succeeded; nothing dead-lettered"
    );
}
