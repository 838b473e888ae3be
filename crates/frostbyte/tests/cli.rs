//! The binary as an operator uses it: `serve` start-up and shutdown, and the tenant, key and audit commands,
//! including detection of an audit row altered behind the database's back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

fn frostbyte(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frostbyte"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FROSTBYTE_")) {
        cmd.env_remove(k);
    }
    cmd.env("FROSTBYTE_LOG", "warn").arg("--data-dir").arg(data_dir);
    cmd
}

fn run(data_dir: &Path, args: &[&str]) -> Output {
    frostbyte(data_dir).args(args).output().expect("frostbyte runs")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let out = run(data_dir, args);
    assert!(
        out.status.success(),
        "frostbyte {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn cli_manages_tenants_and_keys_and_finds_a_tampered_audit_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    let created = ok(data, &["tenant", "create", "acme", "--name", "Acme", "--email", "ops@acme.example"]);
    assert!(created.contains("created tenant acme (ACTIVE)"), "{created}");

    let bad = run(data, &["tenant", "create", "Bad_Id", "--name", "x", "--email", "nope"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("tenant_id") && err.contains("contact_email"), "both problems reported: {err}");

    let key: serde_json::Value = serde_json::from_str(&ok(
        data,
        &["--json", "key", "create", "--tenant", "acme", "--name", "ci", "--scopes", "query,audit"],
    ))
    .unwrap();
    assert!(key["api_key"].as_str().unwrap().starts_with("fbk_"));
    let listed = ok(data, &["key", "list", "--tenant", "acme"]);
    assert!(listed.contains("active") && !listed.contains(key["api_key"].as_str().unwrap()), "no secrets listed");

    ok(data, &["tenant", "suspend", "acme", "--reason", "billing"]);
    ok(data, &["tenant", "resume", "acme"]);
    let again = run(data, &["tenant", "resume", "acme"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot move tenant from ACTIVE to ACTIVE"));

    let verified = ok(data, &["audit", "verify", "--tenant", "acme"]);
    assert!(verified.starts_with("acme: ok ("), "{verified}");

    let export = data.join("acme.jsonl");
    ok(data, &["audit", "export", "--tenant", "acme", "--output", export.to_str().unwrap()]);
    let bytes = std::fs::read(&export).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("acme.jsonl.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["file_sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(manifest["event_count"].as_u64().unwrap() as usize, bytes.iter().filter(|b| **b == b'\n').count());
    assert!(manifest["event_count"].as_u64().unwrap() >= 6);

    // The database refuses to rewrite history...
    let db = format!("sqlite://{}", data.join("frostbyte.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let refused =
        sqlx::query("UPDATE audit_events SET details = '{}' WHERE tenant_id = 'acme' AND seq = 2").execute(&pool).await;
    assert!(refused.is_err(), "UPDATE on audit_events must be refused");
    assert!(sqlx::query("DELETE FROM audit_events WHERE tenant_id = 'acme'").execute(&pool).await.is_err());

    // ...so an attacker removes the protection first; verification still finds the altered row.
    sqlx::query("DROP TRIGGER audit_events_no_update").execute(&pool).await.unwrap();
    sqlx::query("UPDATE audit_events SET actor = 'someone-else' WHERE tenant_id = 'acme' AND seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let broken = run(data, &["audit", "verify", "--tenant", "acme"]);
    assert_eq!(broken.status.code(), Some(1));
    let text = String::from_utf8_lossy(&broken.stdout);
    assert!(text.contains("BROKEN at seq 2") && text.contains("hash_mismatch"), "{text}");
}

#[test]
fn check_config_reports_every_problem_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = frostbyte(dir.path())
        .env("FROSTBYTE_SERVER__MAX_BODY_BYTES", "1")
        .env("FROSTBYTE_SERVER__NO_SUCH_KEY", "1")
        .env("FROSTBYTE_JWT_SECRET", "short")
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 configuration problem(s)"), "{err}");
    for needle in ["max_body_bytes", "server.no_such_key", "auth.jwt_secret must be at least 32"] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }

    let secret = "a-perfectly-long-jwt-secret-for-this-test-0123";
    let out = frostbyte(dir.path()).env("FROSTBYTE_JWT_SECRET", secret).arg("check-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configuration is valid") && text.contains("auth.jwt_secret") && !text.contains(secret));
}

#[test]
fn serve_starts_cold_prints_the_admin_key_once_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");

    let start = |expect_key: bool| {
        let mut child = frostbyte(&data)
            .env("FROSTBYTE_LOG", "info")
            .env("FROSTBYTE_LOG__FORMAT", "json")
            .args(["serve", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut address = None;
        for line in stderr.by_ref() {
            let line = line.unwrap();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["fields"]["message"] == "frostbyte listening" {
                address = v["fields"]["address"].as_str().map(str::to_owned);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no listening line");
        }
        let address = address.expect("serve logs its address");
        // Keep draining the log so the server never writes into a closed pipe.
        let drain = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        let health = reqwest::blocking_get(&format!("http://{address}/health"));
        assert_eq!(health["status"], "healthy");

        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        let log = drain.join().unwrap();
        assert!(status.success(), "graceful exit on SIGTERM: {status:?}\n{log}");
        assert!(log.contains("frostbyte stopped"), "{log}");
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
        assert_eq!(stdout.contains(key.trim()), expect_key, "admin key printed only on first start: {stdout}");
    };
    start(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    start(false);
}

mod reqwest {
    //! A tiny blocking GET, so this file needs no blocking HTTP client feature.
    pub fn blocking_get(url: &str) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { ::reqwest::get(url).await.unwrap().json().await.unwrap() })
    }
}

#[test]
fn ingest_walks_a_tree_processes_it_and_skips_unchanged_files_on_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("guide")).unwrap();
    std::fs::write(docs.join("guide/intro.md"), "# Intro\n\nFrostbyte turns documents into searchable data.\n")
        .unwrap();
    std::fs::write(docs.join("table.csv"), "city,population\nOslo,709000\nBergen,289000\n").unwrap();
    std::fs::write(docs.join("image.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    ok(&data, &["tenant", "create", "acme", "--name", "Acme", "--email", "ops@acme.example"]);

    let out = run(&data, &["--json", "ingest", docs.to_str().unwrap(), "--tenant", "acme", "--collection", "handbook"]);
    assert_eq!(out.status.code(), Some(1), "a rejected file makes the exit code 1");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((first["accepted"].as_u64(), first["indexed"].as_u64()), (Some(2), Some(2)), "{first}");
    let rejected: Vec<_> = first["outcomes"].as_array().unwrap().iter().filter(|o| o["status"] == "rejected").collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (rejected[0]["name"].as_str(), rejected[0]["reason"].as_str()),
        (Some("docs/image.png"), Some("UNSUPPORTED_FORMAT"))
    );

    std::fs::remove_file(docs.join("image.png")).unwrap();
    std::fs::write(docs.join("table.csv"), "city,population\nOslo,709000\nTromsø,77000\n").unwrap();
    let second: serde_json::Value =
        serde_json::from_str(&ok(&data, &["--json", "ingest", docs.to_str().unwrap(), "--tenant", "acme"])).unwrap();
    assert_eq!(second["unchanged"], 1, "the untouched file is skipped: {second}");
    assert_eq!(
        (second["accepted"].as_u64(), second["indexed"].as_u64()),
        (Some(1), Some(1)),
        "the edited one is taken in"
    );

    let missing = run(&data, &["ingest", "/no/such/path", "--tenant", "acme"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/path"));
    let unknown = run(&data, &["ingest", docs.to_str().unwrap(), "--tenant", "nobody"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no tenant nobody"));
}

#[tokio::test]
async fn cli_lists_runs_waits_for_and_cancels_pipeline_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Definitions come from ./pipelines (the working directory) beside the shipped ones.
    let defs = data.join("pipelines/ops");
    std::fs::create_dir_all(&defs).unwrap();
    std::fs::write(
        defs.join("copy.yml"),
        "name: copy\ndomain: ops\nprocessor: records.copy\nsource: in.csv\ntarget: out.jsonl\n",
    )
    .unwrap();
    std::fs::write(defs.join("broken.yml"), "name: broken\ndomain: ops\nprocessor: no.such\n").unwrap();
    let in_dir = |args: &[&str]| frostbyte(data).current_dir(data).args(args).output().expect("frostbyte runs");

    let list = in_dir(&["pipeline", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("audit/export") && listed.contains("ops/copy"), "{listed}");
    assert!(listed.contains("INVALID") && listed.contains("broken.yml: processor"), "{listed}");
    assert!(!list.status.success(), "a refused definition makes `list` exit 1");

    ok(data, &["tenant", "create", "acme", "--name", "Acme", "--email", "ops@acme.example"]);
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let start = format!("start_date={day}");
    let end = format!("end_date={day}");
    let done: serde_json::Value = serde_json::from_slice(
        &in_dir(&["--json", "pipeline", "run", "audit/export", "--tenant", "acme", "-p", &start, "-p", &end, "--wait"])
            .stdout,
    )
    .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["records_processed"].as_u64().unwrap() >= 1);
    assert_eq!(done["triggered_by"], "cli");
    let export =
        data.join(format!("blobs/tenants/acme/exports/audit/{day}_{day}/{}.jsonl", done["run_id"].as_str().unwrap()));
    assert!(export.is_file(), "{} written", export.display());

    // A missing required parameter is refused before anything is stored.
    let bad = in_dir(&["pipeline", "run", "records/copy", "--tenant", "acme", "-p", "target=x.csv"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("parameters.source"));

    // The ops/copy source does not exist: the run fails with the reason, and `run --wait` exits 1.
    let failed = in_dir(&["pipeline", "run", "ops/copy", "--tenant", "acme", "--wait"]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stdout).contains("failed"), "{}", String::from_utf8_lossy(&failed.stdout));

    let pending: serde_json::Value =
        serde_json::from_slice(&in_dir(&["--json", "pipeline", "run", "audit/export", "--tenant", "acme"]).stdout)
            .unwrap();
    let id = pending["run_id"].as_str().unwrap();
    assert_eq!(pending["status"], "pending");
    let cancelled = String::from_utf8(in_dir(&["pipeline", "cancel", id, "--tenant", "acme"]).stdout).unwrap();
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let status = String::from_utf8(in_dir(&["pipeline", "status", id, "--tenant", "acme"]).stdout).unwrap();
    assert!(status.contains("cancelled"), "{status}");
    let history: serde_json::Value =
        serde_json::from_slice(&in_dir(&["--json", "pipeline", "history", "--tenant", "acme"]).stdout).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    let only_failed: serde_json::Value = serde_json::from_slice(
        &in_dir(&["--json", "pipeline", "history", "--tenant", "acme", "--status", "failed"]).stdout,
    )
    .unwrap();
    assert_eq!(only_failed.as_array().unwrap().len(), 1);

    // The document processors run in the CLI's process too: a sweep of a tenant without old documents.
    let swept: serde_json::Value = serde_json::from_slice(
        &in_dir(&["--json", "pipeline", "run", "retention/sweep", "--tenant", "acme", "--wait"]).stdout,
    )
    .unwrap();
    assert_eq!(
        (swept["status"].clone(), swept["records_processed"].clone()),
        (serde_json::json!("completed"), serde_json::json!(0)),
        "{swept}"
    );
    let manifest = data.join(format!(
        "blobs/tenants/acme/retention/{day}/{}.receipts.jsonl.manifest.json",
        swept["run_id"].as_str().unwrap()
    ));
    assert!(manifest.is_file(), "{} written", manifest.display());
}

#[tokio::test]
async fn cli_creates_lists_disables_enables_and_deletes_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(data, &["tenant", "create", "acme", "--name", "Acme", "--email", "ops@acme.example"]);

    let created: serde_json::Value = serde_json::from_str(&ok(
        data,
        &[
            "--json",
            "schedule",
            "create",
            "--tenant",
            "acme",
            "--pipeline",
            "audit/export",
            "--cron",
            "0 9 * * 1-5",
            "--timezone",
            "Europe/Berlin",
            "--overlap",
            "queue",
            "-p",
            "event_types=PIPELINE_RUN_FAILED",
        ],
    ))
    .unwrap();
    let id = created["schedule_id"].as_str().unwrap().to_owned();
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["overlap"], "queue");
    assert_eq!(created["parameters"]["event_types"], "PIPELINE_RUN_FAILED");
    assert!(created["next_run_at"].is_string());

    // Bad input: every problem names its field, and nothing is created.
    let bad = run(
        data,
        &[
            "schedule",
            "create",
            "--tenant",
            "acme",
            "--pipeline",
            "audit/export",
            "--cron",
            "0 9 * * *",
            "--timezone",
            "Mars/Base",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("timezone"), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad =
        run(data, &["schedule", "create", "--tenant", "acme", "--pipeline", "audit/export", "--cron", "every day"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cron_expression"));
    let bad = run(
        data,
        &[
            "schedule",
            "create",
            "--tenant",
            "acme",
            "--pipeline",
            "audit/export",
            "--cron",
            "0 9 * * *",
            "--overlap",
            "pile",
        ],
    );
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("skip or queue"));

    let listed = ok(data, &["schedule", "list", "--tenant", "acme"]);
    assert!(listed.contains(&id) && listed.contains("audit/export") && listed.contains("overlap=queue"), "{listed}");
    assert!(listed.contains("enabled"), "{listed}");

    let off: serde_json::Value =
        serde_json::from_str(&ok(data, &["--json", "schedule", "disable", &id, "--tenant", "acme"])).unwrap();
    assert_eq!((off["is_enabled"].as_bool(), off["next_run_at"].is_null()), (Some(false), true));
    let on: serde_json::Value =
        serde_json::from_str(&ok(data, &["--json", "schedule", "enable", &id, "--tenant", "acme"])).unwrap();
    assert_eq!(on["is_enabled"], true);
    assert!(on["next_run_at"].is_string());

    let deleted = ok(data, &["schedule", "delete", &id, "--tenant", "acme"]);
    assert!(deleted.contains("deleted"));
    assert!(ok(data, &["schedule", "list", "--tenant", "acme"]).contains("no schedules"));
    assert!(!run(data, &["schedule", "delete", &id, "--tenant", "acme"]).status.success(), "already gone");

    // Every change was appended to the audit chain, which still verifies.
    ok(data, &["audit", "verify", "--tenant", "acme"]);
}

#[tokio::test]
async fn pipeline_run_wait_syncs_a_directory_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(corpus.join("sub")).unwrap();
    std::fs::write(corpus.join("a.md"), "# Alpha\n\nThe alpha notes.\n").unwrap();
    std::fs::write(corpus.join("sub/b.txt"), "The bravo notes.\n").unwrap();
    let config = dir.path().join("frostbyte.toml");
    std::fs::write(&config, format!("[pipelines]\nsync_roots = [{:?}]\n", corpus.display().to_string())).unwrap();
    ok(&data, &["tenant", "create", "acme", "--name", "Acme", "--email", "ops@acme.example"]);
    let source = format!("source={}", corpus.display());
    let sync = || {
        let out = frostbyte(&data)
            .arg("--config")
            .arg(&config)
            .args(["--json", "pipeline", "run", "documents/sync", "--tenant", "acme", "-p", &source, "--wait"])
            .output()
            .expect("frostbyte runs");
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = sync();
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!((first["counts"]["added"].as_u64(), first["counts"]["unchanged"].as_u64()), (Some(2), Some(0)));
    let second = sync();
    assert_eq!((second["counts"]["added"].as_u64(), second["counts"]["unchanged"].as_u64()), (Some(0), Some(2)));

    // Without the root in the configuration the same source is refused before anything is stored.
    let refused = run(&data, &["pipeline", "run", "documents/sync", "--tenant", "acme", "-p", &source]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("parameters.source"));
}
