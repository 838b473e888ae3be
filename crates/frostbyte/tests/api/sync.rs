//! `documents.sync` through the API: a directory (or an S3 prefix, here an in-memory object store behind the
//! same code) is taken in incrementally, an unchanged corpus is recognised, changes replace documents in place,
//! deletions erase them with receipts, refused files are counted, sources outside the allowed roots and spent
//! quotas are refused at run creation, and another tenant's documents are never touched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use frostbyte::engine::sync::SyncSettings;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestConfig, TestTenant, spawn_app_with};

/// An app whose tenants may sync `{dir}/{tenant}/…`.
async fn app_with_roots(dir: &Path) -> TestApp {
    let sync = SyncSettings::new(vec![format!("{}/{{tenant}}", dir.display())]);
    spawn_app_with(TestConfig { sync, ..TestConfig::default() }).await
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Starts a sync of `source`, runs it, and returns the finished run.
async fn sync(app: &TestApp, t: &TestTenant, tenant: &str, params: Value) -> Value {
    let r = app.start_run(&t.key, tenant, "documents/sync", &params).await;
    r.expect(202);
    let run_id = r.data()["run_id"].as_str().unwrap().to_owned();
    app.drive_runs().await;
    let run = app.get_run(&t.key, tenant, &run_id).await;
    run.expect(200);
    assert_eq!(run.data()["status"], "completed", "{}", run.text);
    run.data().clone()
}

fn counts(run: &Value) -> (u64, u64, u64, u64, u64) {
    let c = &run["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    (n("added"), n("updated"), n("deleted"), n("unchanged"), n("rejected"))
}

/// The filenames of the documents a keyword search for `word` finds.
async fn found(app: &TestApp, t: &TestTenant, tenant: &str, word: &str) -> Vec<String> {
    let r = app.search(&t.key, tenant, &json!({"query_text": word, "mode": "keyword"})).await;
    r.expect(200);
    let mut names: Vec<String> = r.data()["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["original_filename"].as_str().unwrap().to_owned())
        .collect();
    names.dedup();
    names
}

async fn doc_ids(app: &TestApp, t: &TestTenant, tenant: &str) -> Vec<(String, String)> {
    let r = app.list_documents(&t.key, tenant, "?limit=100").await;
    r.expect(200);
    let mut docs: Vec<(String, String)> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["original_filename"].as_str().unwrap().to_owned(), d["doc_id"].as_str().unwrap().to_owned()))
        .collect();
    docs.sort();
    docs
}

#[tokio::test]
async fn a_directory_syncs_incrementally_with_replacements_erasures_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_roots(dir.path()).await;
    let acme = app.tenant("acme").await;
    let corpus: PathBuf = dir.path().join("acme/handbook");
    write(&corpus.join("sailing.md"), "# Sailing\n\nTo tack a sailboat, turn the bow through the wind.\n");
    write(&corpus.join("kitchen.txt"), "The kitchen rota: espresso machine descaling on Fridays.\n");
    write(&corpus.join("guides/garden.md"), "# Garden\n\nPrune the lavender after flowering.\n");
    write(&corpus.join(".hidden/notes.md"), "hidden notes are never synced\n");
    let source = corpus.display().to_string();
    let params = json!({"source": source, "collection": "handbook", "metadata": "{\"team\": \"ops\"}"});

    // First sync: everything is new.
    let run = sync(&app, &acme, "acme", params.clone()).await;
    assert_eq!(counts(&run), (3, 0, 0, 0, 0), "{run}");
    assert_eq!((run["records_processed"].as_u64(), run["progress"].as_f64()), (Some(3), Some(1.0)));
    app.drain_pipeline().await;
    assert_eq!(found(&app, &acme, "acme", "sailboat").await, ["sailing.md"]);
    assert_eq!(found(&app, &acme, "acme", "lavender").await, ["guides/garden.md"]);
    let docs = doc_ids(&app, &acme, "acme").await;
    assert_eq!(docs.len(), 3);
    let listed = app.list_documents(&acme.key, "acme", "?collection=handbook").await;
    assert_eq!(listed.body["meta"]["total"], json!(3), "the collection parameter is applied");

    // Second sync: nothing changed, nothing is read.
    let run = sync(&app, &acme, "acme", params.clone()).await;
    assert_eq!(counts(&run), (0, 0, 0, 3, 0), "{run}");
    assert_eq!(doc_ids(&app, &acme, "acme").await, docs);

    // Modify one, delete one, add one, and add a file intake refuses.
    write(&corpus.join("sailing.md"), "# Sailing\n\nTo gybe, turn the stern through the wind; mind the boom.\n");
    std::fs::remove_file(corpus.join("kitchen.txt")).unwrap();
    write(&corpus.join("parking.md"), "Visitors park in the north lot.\n");
    std::fs::write(corpus.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0")
        .unwrap();
    let run = sync(&app, &acme, "acme", params.clone()).await;
    assert_eq!(counts(&run), (1, 1, 1, 1, 1), "{run}");
    assert_eq!(run["counts"]["rejected_reasons"], json!({"UNSUPPORTED_FORMAT": 1}), "{run}");
    let receipts = run["counts"]["erasure_receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["verified"], json!(true));
    let kitchen = docs.iter().find(|(n, _)| n == "kitchen.txt").unwrap();
    assert_eq!(receipts[0]["doc_id"], json!(kitchen.1));
    app.drain_pipeline().await;

    let after = doc_ids(&app, &acme, "acme").await;
    let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["guides/garden.md", "parking.md", "sailing.md"]);
    let id_of = |list: &[(String, String)], name: &str| list.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(id_of(&after, "sailing.md"), id_of(&docs, "sailing.md"), "replaced in place: the same doc id");
    assert!(found(&app, &acme, "acme", "sailboat").await.is_empty(), "the old version is gone from search");
    assert_eq!(found(&app, &acme, "acme", "gybe").await, ["sailing.md"]);
    assert!(found(&app, &acme, "acme", "espresso").await.is_empty(), "the deleted file's document is erased");
    assert_eq!(found(&app, &acme, "acme", "visitors").await, ["parking.md"]);
    app.get(&format!("/api/v1/query/acme/document/{}", kitchen.1), Some(&acme.key))
        .await
        .expect_error(404, "RESOURCE_NOT_FOUND");

    // Without delete_missing, files gone from the source keep their documents.
    std::fs::remove_file(corpus.join("parking.md")).unwrap();
    let mut keep = params.clone();
    keep["delete_missing"] = json!(false);
    let run = sync(&app, &acme, "acme", keep).await;
    assert_eq!(counts(&run), (0, 0, 0, 2, 1), "{run}");
    assert_eq!(run["counts"]["missing"], json!(1));
    assert_eq!(doc_ids(&app, &acme, "acme").await.len(), 3);

    // A document erased through the API comes back on the next sync: the source is the truth.
    let garden = id_of(&after, "guides/garden.md");
    app.erase_document(&acme.key, "acme", &garden).await.expect(200);
    let run = sync(&app, &acme, "acme", params).await;
    assert_eq!(counts(&run), (1, 0, 1, 1, 1), "garden re-added, parking erased now: {run}");
    app.audit_verify(&acme.key, "acme").await.expect(200);
}

#[tokio::test]
async fn sources_outside_the_allowed_roots_are_refused_at_run_creation() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_roots(dir.path()).await;
    let acme = app.tenant("acme").await;
    app.tenant("globex").await;
    std::fs::create_dir_all(dir.path().join("acme/docs")).unwrap();
    std::fs::create_dir_all(dir.path().join("globex/private")).unwrap();
    let refused = [
        "/etc".to_owned(),
        dir.path().join("globex/private").display().to_string(),
        format!("{}/acme/../globex/private", dir.path().display()),
        "relative/docs".to_owned(),
        "s3://corp/acme".to_owned(),
        dir.path().join("acme/missing").display().to_string(),
    ];
    for source in refused {
        let r = app.start_run(&acme.key, "acme", "documents/sync", &json!({"source": source})).await;
        r.expect_error(400, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"][0]["field"], "parameters.source", "{source}: {}", r.text);
    }
    #[cfg(unix)]
    {
        // A link inside the tenant's root that points out of it is refused too.
        std::os::unix::fs::symlink(dir.path().join("globex/private"), dir.path().join("acme/escape")).unwrap();
        let source = dir.path().join("acme/escape").display().to_string();
        let r = app.start_run(&acme.key, "acme", "documents/sync", &json!({"source": source})).await;
        r.expect_error(400, "VALIDATION_ERROR");
    }
    let ok = dir.path().join("acme/docs").display().to_string();
    app.start_run(&acme.key, "acme", "documents/sync", &json!({"source": ok})).await.expect(202);

    // With no roots configured, nothing may be synced.
    let bare = crate::helpers::spawn_app().await;
    let t = bare.tenant("acme").await;
    let r = bare.start_run(&t.key, "acme", "documents/sync", &json!({"source": ok})).await;
    r.expect_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn another_tenants_documents_are_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_roots(dir.path()).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let text = "Quarterly report: revenue grew in the northern region.\n";
    // globex has a document with the same name and bytes, uploaded and synced.
    app.upload_text(&globex.key, "globex", "report.md", text, &json!({}), None).await;
    write(&dir.path().join("globex/docs/report.md"), text);
    write(&dir.path().join("acme/docs/report.md"), text);
    write(&dir.path().join("acme/docs/other.md"), "Other notes about the southern region.\n");
    let g =
        sync(&app, &globex, "globex", json!({"source": dir.path().join("globex/docs").display().to_string()})).await;
    assert_eq!(counts(&g), (0, 0, 0, 1, 0), "globex's upload is recognised as the file: {g}");
    let globex_docs = doc_ids(&app, &globex, "globex").await;

    let acme_src = json!({"source": dir.path().join("acme/docs").display().to_string()});
    let a = sync(&app, &acme, "acme", acme_src.clone()).await;
    assert_eq!(counts(&a), (2, 0, 0, 0, 0), "acme never adopts globex's document: {a}");
    std::fs::remove_file(dir.path().join("acme/docs/report.md")).unwrap();
    std::fs::remove_file(dir.path().join("acme/docs/other.md")).unwrap();
    let a = sync(&app, &acme, "acme", acme_src).await;
    assert_eq!(counts(&a), (0, 0, 2, 0, 0), "{a}");
    assert!(doc_ids(&app, &acme, "acme").await.is_empty());
    assert_eq!(doc_ids(&app, &globex, "globex").await, globex_docs, "globex keeps its documents");
    // And globex cannot see or cancel acme's runs (the engine's isolation applies to sync runs too).
    let runs = app.list_runs(&globex.key, "globex", "pipeline=documents/sync").await;
    assert_eq!(runs.data().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn quotas_reject_files_past_them_and_refuse_runs_once_spent() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_roots(dir.path()).await;
    let acme = app.tenant("acme").await;
    app.patch_tenant("acme", &json!({"config": {"quotas": {"documents_per_day": 2}}})).await.expect(200);
    for (name, text) in [("a.md", "alpha text"), ("b.md", "bravo text"), ("c.md", "charlie text")] {
        write(&dir.path().join("acme/docs").join(name), text);
    }
    let params = json!({"source": dir.path().join("acme/docs").display().to_string()});
    let run = sync(&app, &acme, "acme", params.clone()).await;
    assert_eq!(counts(&run), (2, 0, 0, 0, 1), "{run}");
    assert_eq!(run["counts"]["rejected_reasons"], json!({"QUOTA_EXCEEDED": 1}));

    let r = app.start_run(&acme.key, "acme", "documents/sync", &params).await;
    r.expect_error(429, "QUOTA_EXCEEDED");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("documents_per_day limit of 2"), "{}", r.text);
    assert!(r.header("retry-after").is_some());
    // Pipelines that take nothing in still run.
    app.start_run(&acme.key, "acme", "audit/export", &json!({})).await.expect(202);

    // The storage quota, once spent, refuses ingesting runs too (a 2 GiB document against a 1 GB quota).
    app.patch_tenant("acme", &json!({"config": {"quotas": {"documents_per_day": 100}, "storage_quota_gb": 1}}))
        .await
        .expect(200);
    app.start_run(&acme.key, "acme", "documents/sync", &params).await.expect(202);
    let tenant = frostbyte_core::TenantId::parse("acme").unwrap();
    let now = frostbyte_core::now();
    let big = frostbyte_core::documents::DocumentRecord {
        doc_id: frostbyte_core::ids::new_id(),
        receipt_id: frostbyte_core::ids::new_id(),
        original_filename: "huge.bin".into(),
        mime_type: "text/plain".into(),
        size_bytes: 2 * 1024 * 1024 * 1024,
        raw_sha256: "ab".repeat(32),
        metadata: json!({}),
        collection: None,
        status: frostbyte_core::documents::DocumentStatus::Indexed,
        stages: frostbyte_core::documents::DocumentStages::received(),
        lineage: serde_json::Map::new(),
        error_code: None,
        created_at: now - chrono::Duration::days(2),
        updated_at: now,
    };
    let job =
        frostbyte_core::queue::NewJob::new(frostbyte_core::queue::Stage::Parse, big.doc_id.to_string(), json!({}));
    let event = frostbyte_core::audit::NewAuditEvent::new(
        "DOCUMENT_INGESTED",
        "test",
        "document",
        big.doc_id.to_string(),
        json!({"component": "test"}),
    );
    app.documents.create_document(&tenant, &big, job, event).await.unwrap();
    let r = app.start_run(&acme.key, "acme", "documents/sync", &params).await;
    r.expect_error(429, "QUOTA_EXCEEDED");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("storage quota of 1 GB"), "{}", r.text);
}

#[tokio::test]
async fn an_s3_prefix_syncs_through_the_object_store_code_path() {
    let bucket = Arc::new(InMemory::new());
    let sync_settings = SyncSettings::new(vec!["s3://corp/teams/{tenant}".into()]).with_bucket("corp", bucket.clone());
    let app = spawn_app_with(TestConfig { sync: sync_settings, ..TestConfig::default() }).await;
    let acme = app.tenant("acme").await;
    let put = |key: &str, text: &str| {
        let bucket = bucket.clone();
        let (key, text) = (ObjectPath::from(key), text.to_owned());
        async move { bucket.put(&key, text.into_bytes().into()).await.unwrap() }
    };
    put("teams/acme/docs/a.md", "Harbour opening hours are eight to six.").await;
    put("teams/acme/docs/deep/b.txt", "The ferry timetable changes in winter.").await;
    put("teams/acme/docs/.cache/x.md", "never synced").await;
    put("teams/acme/docsier/c.md", "outside the prefix by a whole segment").await;
    let params = json!({"source": "s3://corp/teams/acme/docs"});

    let run = sync(&app, &acme, "acme", params.clone()).await;
    assert_eq!(counts(&run), (2, 0, 0, 0, 0), "{run}");
    let run = sync(&app, &acme, "acme", params.clone()).await;
    assert_eq!(counts(&run), (0, 0, 0, 2, 0), "ETags match: {run}");

    put("teams/acme/docs/a.md", "Harbour opening hours are nine to five.").await;
    bucket.delete(&ObjectPath::from("teams/acme/docs/deep/b.txt")).await.unwrap();
    let run = sync(&app, &acme, "acme", params).await;
    assert_eq!(counts(&run), (0, 1, 1, 0, 0), "{run}");
    app.drain_pipeline().await;
    assert_eq!(found(&app, &acme, "acme", "nine").await, ["a.md"]);
    assert!(found(&app, &acme, "acme", "ferry").await.is_empty());

    for outside in ["s3://corp/teams/globex", "s3://corp/teams", "s3://other/teams/acme", "s3://corp/teams/acme-x"] {
        app.start_run(&acme.key, "acme", "documents/sync", &json!({"source": outside}))
            .await
            .expect_error(400, "VALIDATION_ERROR");
    }
}
