//! The `MetadataStore` contract, one suite run against every adapter: SQLite always (a fresh database file per
//! test), PostgreSQL when `FROSTBYTE_TEST_POSTGRES_URL` is set (a fresh schema per test, dropped afterwards, so
//! tests run in parallel against one database).
//!
//! ```sh
//! createdb -h 127.0.0.1 -U postgres fb_contract
//! FROSTBYTE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/fb_contract cargo test -p frostbyte-adapters
//! ```

use frostbyte_core::audit::{AuditEvent, AuditFilter, ChainVerifier, GENESIS_HASH, NewAuditEvent};
use frostbyte_core::auth::{ApiKeyRecord, Scope, generate_api_key};
use frostbyte_core::page::PageRequest;
use frostbyte_core::tenant::{Tenant, TenantConfig, TenantState, Tier};
use frostbyte_core::{StoreError, TenantId};
use serde_json::json;
use uuid::Uuid;

#[macro_use]
mod common;

use common::*;

contract_tests!(
    backend_pings_and_migrations_are_idempotent,
    tenants_create_get_and_refuse_duplicates,
    list_tenants_orders_filters_and_pages,
    transition_is_compare_and_set_on_state,
    config_update_is_compare_and_set_on_version,
    api_keys_are_scoped_to_their_tenant,
    revoke_is_idempotent_and_audited_once,
    revoke_all_revokes_only_live_keys,
    api_key_for_missing_tenant_is_not_found,
    every_mutation_appends_exactly_one_linked_event,
    concurrent_appends_never_fork_the_chain,
    concurrent_transitions_have_one_winner,
    list_audit_filters_pages_and_counts,
    audit_after_reads_in_batches_and_get_is_scoped,
    audit_tenants_lists_every_chain,
    audit_rows_are_append_only,
    altered_rows_are_found_once_the_triggers_are_dropped,
    corrupt_rows_are_internal_errors,
);

// --- helpers ---------------------------------------------------------------------------------------------------

/// Drops the append-only triggers (their names are part of the schema's contract).
async fn drop_audit_triggers(h: &Harness) {
    let sql = if h.is_postgres() {
        "DROP TRIGGER audit_events_no_update ON audit_events; DROP TRIGGER audit_events_no_delete ON audit_events; \
         DROP TRIGGER audit_events_no_truncate ON audit_events;"
    } else {
        "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;"
    };
    h.exec(sql).await.expect("drop triggers");
}

fn new_tenant(id: &TenantId) -> Tenant {
    let now = frostbyte_core::now();
    Tenant {
        tenant_id: id.clone(),
        tenant_name: format!("Tenant {id}"),
        contact_email: "ops@example.com".into(),
        tier: Tier::Enterprise,
        state: TenantState::Pending,
        state_reason: None,
        config: TenantConfig::default(),
        config_version: 1,
        created_at: now,
        updated_at: now,
    }
}

fn event(event_type: &str, resource_id: &str) -> NewAuditEvent {
    NewAuditEvent::new(event_type, "test", "tenant", resource_id, json!({"component": "test", "status": "ok"}))
}

fn new_key(tenant: &TenantId, name: &str) -> ApiKeyRecord {
    let generated = generate_api_key();
    ApiKeyRecord {
        key_id: frostbyte_core::ids::new_id(),
        tenant_id: tenant.clone(),
        name: name.into(),
        prefix: generated.prefix,
        key_hash: generated.hash,
        scopes: vec![Scope::Ingest, Scope::Query],
        created_at: frostbyte_core::now(),
        expires_at: Some(frostbyte_core::now() + chrono::Duration::days(30)),
        revoked_at: None,
    }
}

async fn create(h: &Harness, id: &TenantId) -> Tenant {
    let tenant = new_tenant(id);
    h.store.create_tenant(&tenant, event("TENANT_CREATED", id.as_str())).await.expect("create tenant");
    tenant
}

async fn all_events(h: &Harness, tenant: &TenantId) -> Vec<AuditEvent> {
    h.store.audit_after(tenant, 0, 10_000).await.expect("audit_after")
}

async fn verify(h: &Harness, tenant: &TenantId) -> ChainVerifier {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let batch = h.store.audit_after(tenant, after, 7).await.expect("audit_after");
        let Some(last) = batch.last() else { break };
        after = last.seq;
        batch.iter().for_each(|e| verifier.push(e));
    }
    verifier
}

fn assert_kind<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: &str) {
    let kind = match &result {
        Err(StoreError::NotFound { .. }) => "not_found",
        Err(StoreError::AlreadyExists { .. }) => "already_exists",
        Err(StoreError::Conflict(_)) => "conflict",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Internal(_)) => "internal",
        Ok(_) => "ok",
    };
    assert_eq!(kind, expected, "{result:?}");
}

// --- the contract ----------------------------------------------------------------------------------------------

async fn backend_pings_and_migrations_are_idempotent(h: &Harness) {
    h.store.ping().await.expect("ping");
    h.store.migrate().await.expect("second migrate is a no-op");
    assert_eq!(h.store.backend(), if h.is_postgres() { "postgres" } else { "sqlite" });
}

async fn tenants_create_get_and_refuse_duplicates(h: &Harness) {
    let id = tid("create");
    let tenant = create(h, &id).await;
    let stored = h.store.get_tenant(&id).await.unwrap().expect("tenant is stored");
    assert_eq!(stored, tenant, "a tenant round-trips exactly, timestamps included");

    let mut again = new_tenant(&id);
    again.tenant_name = "Someone else".into();
    assert_kind(h.store.create_tenant(&again, event("TENANT_CREATED", id.as_str())).await, "already_exists");
    assert_eq!(h.store.get_tenant(&id).await.unwrap().unwrap().tenant_name, tenant.tenant_name);
    assert_eq!(all_events(h, &id).await.len(), 1, "a refused create appends nothing");

    assert!(h.store.get_tenant(&tid("absent")).await.unwrap().is_none());
}

async fn list_tenants_orders_filters_and_pages(h: &Harness) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = tid("list");
        create(h, &id).await;
        ids.push(id);
    }
    for id in &ids[..2] {
        h.store
            .transition_tenant(id, TenantState::Pending, TenantState::Provisioning, None, event("P", id.as_str()))
            .await
            .unwrap();
    }
    let all = h.store.list_tenants(None, PageRequest::new(1, 100)).await.unwrap();
    assert_eq!(all.total, 5);
    let listed: Vec<_> = all.items.iter().map(|t| t.tenant_id.clone()).collect();
    let mut expected = all.items.clone();
    expected.sort_by(|a, b| (a.created_at, &a.tenant_id).cmp(&(b.created_at, &b.tenant_id)));
    assert_eq!(listed, expected.iter().map(|t| t.tenant_id.clone()).collect::<Vec<_>>(), "created_at, tenant_id");

    let page2 = h.store.list_tenants(None, PageRequest::new(2, 2)).await.unwrap();
    assert_eq!(page2.total, 5);
    assert_eq!(page2.items.iter().map(|t| t.tenant_id.clone()).collect::<Vec<_>>(), listed[2..4]);
    let page3 = h.store.list_tenants(None, PageRequest::new(3, 2)).await.unwrap();
    assert_eq!(page3.items.len(), 1);

    let provisioning = h.store.list_tenants(Some(TenantState::Provisioning), PageRequest::new(1, 100)).await.unwrap();
    assert_eq!(provisioning.total, 2);
    assert!(provisioning.items.iter().all(|t| t.state == TenantState::Provisioning));
    let active = h.store.list_tenants(Some(TenantState::Active), PageRequest::new(1, 100)).await.unwrap();
    assert_eq!((active.total, active.items.len()), (0, 0));
}

async fn transition_is_compare_and_set_on_state(h: &Harness) {
    let id = tid("state");
    let created = create(h, &id).await;
    let moved = h
        .store
        .transition_tenant(&id, TenantState::Pending, TenantState::Provisioning, Some("go"), event("P", id.as_str()))
        .await
        .unwrap();
    assert_eq!(moved.state, TenantState::Provisioning);
    assert_eq!(moved.state_reason.as_deref(), Some("go"));
    assert!(moved.updated_at >= created.updated_at);
    assert_eq!(moved.created_at, created.created_at);
    assert_eq!(h.store.get_tenant(&id).await.unwrap().unwrap(), moved);

    // Stale `from`: someone else moved it first.
    assert_kind(
        h.store
            .transition_tenant(&id, TenantState::Pending, TenantState::Provisioning, None, event("P", id.as_str()))
            .await,
        "conflict",
    );
    assert_kind(
        h.store
            .transition_tenant(&tid("absent"), TenantState::Pending, TenantState::Active, None, event("P", "x"))
            .await,
        "not_found",
    );
    // A transition without a reason clears the previous one.
    let active = h
        .store
        .transition_tenant(&id, TenantState::Provisioning, TenantState::Active, None, event("A", id.as_str()))
        .await
        .unwrap();
    assert_eq!(active.state_reason, None);
    assert_eq!(all_events(h, &id).await.len(), 3, "create + two transitions; refusals append nothing");
}

async fn config_update_is_compare_and_set_on_version(h: &Harness) {
    let id = tid("config");
    create(h, &id).await;
    let mut config = TenantConfig { retention_days: Some(30), pii_types: vec!["EMAIL".into()], ..Default::default() };
    let updated = h.store.update_tenant_config(&id, 1, &config, event("C", id.as_str())).await.unwrap();
    assert_eq!(updated.config_version, 2);
    assert_eq!(updated.config, config);
    assert_eq!(h.store.get_tenant(&id).await.unwrap().unwrap(), updated);

    config.retention_days = Some(60);
    assert_kind(h.store.update_tenant_config(&id, 1, &config, event("C", id.as_str())).await, "conflict");
    assert_eq!(h.store.get_tenant(&id).await.unwrap().unwrap().config.retention_days, Some(30), "stale write refused");
    let again = h.store.update_tenant_config(&id, 2, &config, event("C", id.as_str())).await.unwrap();
    assert_eq!((again.config_version, again.config.retention_days), (3, Some(60)));

    assert_kind(h.store.update_tenant_config(&tid("absent"), 1, &config, event("C", "x")).await, "not_found");
    assert_eq!(all_events(h, &id).await.len(), 3);
}

async fn api_keys_are_scoped_to_their_tenant(h: &Harness) {
    let (a, b) = (tid("keys-a"), tid("keys-b"));
    create(h, &a).await;
    create(h, &b).await;
    let k1 = new_key(&a, "first");
    let k2 = new_key(&a, "second");
    let kb = new_key(&b, "other");
    for k in [&k1, &k2, &kb] {
        h.store.create_api_key(&k.tenant_id, k, event("API_KEY_CREATED", &k.key_id.to_string())).await.unwrap();
    }

    let listed = h.store.list_api_keys(&a).await.unwrap();
    assert_eq!(listed, vec![k1.clone(), k2.clone()], "a tenant sees its own keys, oldest first, exactly");
    assert_eq!(h.store.get_api_key(&a, k1.key_id).await.unwrap(), Some(k1.clone()));
    assert_eq!(h.store.get_api_key(&a, kb.key_id).await.unwrap(), None, "another tenant's key is invisible");
    assert_eq!(h.store.find_api_key_by_hash(&kb.key_hash).await.unwrap(), Some(kb.clone()), "lookup is global");
    assert_eq!(h.store.find_api_key_by_hash("no-such-hash").await.unwrap(), None);

    // The same hash (or key id) cannot be stored twice.
    let mut dup = new_key(&a, "dup");
    dup.key_hash = k1.key_hash.clone();
    assert_kind(h.store.create_api_key(&a, &dup, event("K", "dup")).await, "already_exists");
    let mut dup_id = new_key(&a, "dup");
    dup_id.key_id = k1.key_id;
    assert_kind(h.store.create_api_key(&a, &dup_id, event("K", "dup")).await, "already_exists");
    // A record naming another tenant is refused, not silently re-homed.
    assert!(h.store.create_api_key(&a, &new_key(&b, "wrong"), event("K", "x")).await.is_err());
    assert_eq!(h.store.list_api_keys(&a).await.unwrap().len(), 2);
}

async fn revoke_is_idempotent_and_audited_once(h: &Harness) {
    let (a, b) = (tid("revoke-a"), tid("revoke-b"));
    create(h, &a).await;
    create(h, &b).await;
    let key = new_key(&a, "k");
    h.store.create_api_key(&a, &key, event("API_KEY_CREATED", "k")).await.unwrap();

    assert_kind(h.store.revoke_api_key(&b, key.key_id, event("API_KEY_REVOKED", "k")).await, "not_found");
    assert_kind(h.store.revoke_api_key(&a, Uuid::now_v7(), event("API_KEY_REVOKED", "k")).await, "not_found");
    assert!(h.store.get_api_key(&a, key.key_id).await.unwrap().unwrap().revoked_at.is_none(), "untouched");

    let first = h.store.revoke_api_key(&a, key.key_id, event("API_KEY_REVOKED", "k")).await.unwrap();
    let revoked_at = first.revoked_at.expect("revoked");
    let second = h.store.revoke_api_key(&a, key.key_id, event("API_KEY_REVOKED", "k")).await.unwrap();
    assert_eq!(second.revoked_at, Some(revoked_at), "revoking twice keeps the first time");
    assert_eq!(h.store.get_api_key(&a, key.key_id).await.unwrap().unwrap(), first);
    assert_eq!(h.store.find_api_key_by_hash(&key.key_hash).await.unwrap().unwrap().revoked_at, Some(revoked_at));
    let types: Vec<_> = all_events(h, &a).await.into_iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["TENANT_CREATED", "API_KEY_CREATED", "API_KEY_REVOKED"]);
}

async fn revoke_all_revokes_only_live_keys(h: &Harness) {
    let (a, b) = (tid("all-a"), tid("all-b"));
    create(h, &a).await;
    create(h, &b).await;
    let keys: Vec<_> = (0..3).map(|i| new_key(&a, &format!("k{i}"))).collect();
    for k in &keys {
        h.store.create_api_key(&a, k, event("K", "k")).await.unwrap();
    }
    let other = new_key(&b, "other");
    h.store.create_api_key(&b, &other, event("K", "k")).await.unwrap();
    let early = h.store.revoke_api_key(&a, keys[0].key_id, event("R", "k")).await.unwrap();

    assert_eq!(h.store.revoke_all_api_keys(&a, event("API_KEYS_REVOKED", a.as_str())).await.unwrap(), 2);
    let after = h.store.list_api_keys(&a).await.unwrap();
    assert!(after.iter().all(|k| k.revoked_at.is_some()));
    assert_eq!(after[0].revoked_at, early.revoked_at, "an earlier revocation keeps its time");
    assert!(h.store.get_api_key(&b, other.key_id).await.unwrap().unwrap().revoked_at.is_none(), "other tenant");

    assert_eq!(h.store.revoke_all_api_keys(&a, event("API_KEYS_REVOKED", a.as_str())).await.unwrap(), 0);
    let last = all_events(h, &a).await;
    assert_eq!(last.last().unwrap().event_type, "API_KEYS_REVOKED", "recorded even when nothing was live");
    assert_kind(h.store.revoke_all_api_keys(&tid("absent"), event("R", "x")).await, "not_found");
}

async fn api_key_for_missing_tenant_is_not_found(h: &Harness) {
    let ghost = tid("ghost");
    assert_kind(h.store.create_api_key(&ghost, &new_key(&ghost, "k"), event("K", "k")).await, "not_found");
    assert!(all_events(h, &ghost).await.is_empty());
}

async fn every_mutation_appends_exactly_one_linked_event(h: &Harness) {
    let id = tid("chain");
    let tenant = new_tenant(&id);
    h.store.create_tenant(&tenant, event("TENANT_CREATED", id.as_str())).await.unwrap();
    h.store
        .transition_tenant(
            &id,
            TenantState::Pending,
            TenantState::Provisioning,
            None,
            event("TENANT_PROVISIONING", "t"),
        )
        .await
        .unwrap();
    h.store.update_tenant_config(&id, 1, &TenantConfig::default(), event("TENANT_CONFIG_UPDATED", "t")).await.unwrap();
    let key = new_key(&id, "k");
    h.store.create_api_key(&id, &key, event("API_KEY_CREATED", "k")).await.unwrap();
    h.store.revoke_api_key(&id, key.key_id, event("API_KEY_REVOKED", "k")).await.unwrap();
    h.store.revoke_all_api_keys(&id, event("API_KEYS_REVOKED", "t")).await.unwrap();
    let appended = h
        .store
        .append_audit(
            &id,
            NewAuditEvent::new(
                "AUDIT_EXPORTED",
                "key:1",
                "export",
                "exp-1",
                json!({"z": [1, 2.5, {"b": null, "a": "é"}], "component": "audit", "status": "ok"}),
            ),
        )
        .await
        .unwrap();
    // Refusals append nothing.
    let _ = h.store.create_tenant(&tenant, event("TENANT_CREATED", "t")).await;
    let _ = h.store.transition_tenant(&id, TenantState::Active, TenantState::Suspended, None, event("X", "t")).await;
    let _ = h.store.update_tenant_config(&id, 1, &TenantConfig::default(), event("X", "t")).await;

    let events = all_events(h, &id).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "TENANT_CREATED",
            "TENANT_PROVISIONING",
            "TENANT_CONFIG_UPDATED",
            "API_KEY_CREATED",
            "API_KEY_REVOKED",
            "API_KEYS_REVOKED",
            "AUDIT_EXPORTED"
        ]
    );
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    assert_eq!(events[0].prev_hash, GENESIS_HASH);
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert!(events.iter().all(|e| e.tenant_id == id));
    assert_eq!(events.last(), Some(&appended), "the stored event is exactly the sealed one (details byte-exact)");
    let verifier = verify(h, &id).await;
    assert_eq!(verifier.events_checked(), 7);
    assert!(verifier.breaks().is_empty(), "{:?}", verifier.breaks());
}

async fn concurrent_appends_never_fork_the_chain(h: &Harness) {
    let id = tid("race");
    let other = tid("race-other");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = h.store.clone();
            let (id, other) = (id.clone(), other.clone());
            tokio::spawn(async move {
                if i % 5 == 0 {
                    store.append_audit(&other, event("OTHER", "o")).await.expect("append other");
                }
                store.append_audit(&id, event("RETRIEVAL", &format!("r-{i}"))).await.expect("append")
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("task").seq);
    }
    seqs.sort();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "every append got its own sequence number");
    let verifier = verify(h, &id).await;
    assert_eq!(verifier.events_checked(), 50);
    assert!(verifier.breaks().is_empty(), "{:?}", verifier.breaks());
    let verifier = verify(h, &other).await;
    assert_eq!(verifier.events_checked(), 10);
    assert!(verifier.breaks().is_empty(), "{:?}", verifier.breaks());
}

async fn concurrent_transitions_have_one_winner(h: &Harness) {
    let id = tid("cas");
    create(h, &id).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = h.store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                store
                    .transition_tenant(&id, TenantState::Pending, TenantState::Provisioning, None, event("P", "t"))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(all_events(h, &id).await.len(), 2, "create + the one winning transition");
}

async fn list_audit_filters_pages_and_counts(h: &Harness) {
    let id = tid("filter");
    let mut appended = Vec::new();
    for (kind, resource) in [
        ("DOC_INGESTED", "doc-1"),
        ("DOC_INGESTED", "doc-2"),
        ("DOC_DELETED", "doc-2"),
        ("DOC_INGESTED", "doc-1"),
        ("EXPORT", "doc-1"),
        ("DOC_DELETED", "doc-3"),
    ] {
        appended.push(h.store.append_audit(&id, event(kind, resource)).await.unwrap());
    }
    let seqs = |page: &frostbyte_core::page::Page<AuditEvent>| page.items.iter().map(|e| e.seq).collect::<Vec<_>>();
    let all = AuditFilter::default();

    let p1 = h.store.list_audit(&id, &all, PageRequest::new(1, 4)).await.unwrap();
    assert_eq!((p1.total, seqs(&p1)), (6, vec![6, 5, 4, 3]), "newest first");
    let p2 = h.store.list_audit(&id, &all, PageRequest::new(2, 4)).await.unwrap();
    assert_eq!((p2.total, seqs(&p2)), (6, vec![2, 1]));
    let p9 = h.store.list_audit(&id, &all, PageRequest::new(9, 4)).await.unwrap();
    assert_eq!((p9.total, p9.items.len()), (6, 0));
    assert_eq!(p1.items[0], appended[5], "listed events are exactly the stored ones");

    let by_type = AuditFilter { event_type: Some("DOC_INGESTED".into()), ..Default::default() };
    let page = h.store.list_audit(&id, &by_type, PageRequest::new(1, 2)).await.unwrap();
    assert_eq!((page.total, seqs(&page)), (3, vec![4, 2]));

    let by_resource = AuditFilter { resource_id: Some("doc-1".into()), ..Default::default() };
    let page = h.store.list_audit(&id, &by_resource, PageRequest::new(1, 10)).await.unwrap();
    assert_eq!((page.total, seqs(&page)), (3, vec![5, 4, 1]));

    let both = AuditFilter {
        event_type: Some("DOC_INGESTED".into()),
        resource_id: Some("doc-1".into()),
        ..Default::default()
    };
    let page = h.store.list_audit(&id, &both, PageRequest::new(1, 10)).await.unwrap();
    assert_eq!((page.total, seqs(&page)), (2, vec![4, 1]));

    // Start and end are inclusive.
    let (start, end) = (appended[1].timestamp, appended[3].timestamp);
    let window = AuditFilter { start: Some(start), end: Some(end), ..Default::default() };
    let page = h.store.list_audit(&id, &window, PageRequest::new(1, 10)).await.unwrap();
    let mut expected: Vec<i64> =
        appended.iter().filter(|e| e.timestamp >= start && e.timestamp <= end).map(|e| e.seq).collect();
    expected.reverse();
    assert_eq!(seqs(&page), expected);
    assert!(expected.contains(&2) && expected.contains(&4));
    assert_eq!(page.total, expected.len() as u64);
    let after_all =
        AuditFilter { start: Some(appended[5].timestamp + chrono::Duration::seconds(1)), ..Default::default() };
    assert_eq!(h.store.list_audit(&id, &after_all, PageRequest::new(1, 10)).await.unwrap().total, 0);

    let other = h.store.list_audit(&tid("nobody"), &all, PageRequest::new(1, 10)).await.unwrap();
    assert_eq!((other.total, other.items.len()), (0, 0), "another tenant sees nothing");
}

async fn audit_after_reads_in_batches_and_get_is_scoped(h: &Harness) {
    let id = tid("after");
    let mut appended = Vec::new();
    for i in 0..10 {
        appended.push(h.store.append_audit(&id, event("E", &format!("r{i}"))).await.unwrap());
    }
    let seqs = |v: Vec<AuditEvent>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(h.store.audit_after(&id, 0, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(seqs(h.store.audit_after(&id, 3, 3).await.unwrap()), [4, 5, 6]);
    assert_eq!(seqs(h.store.audit_after(&id, 9, 5).await.unwrap()), [10]);
    assert!(h.store.audit_after(&id, 10, 5).await.unwrap().is_empty());

    let third = &appended[2];
    assert_eq!(h.store.get_audit(&id, third.event_id).await.unwrap().as_ref(), Some(third));
    assert_eq!(h.store.get_audit(&tid("nosy"), third.event_id).await.unwrap(), None, "scoped by tenant");
    assert_eq!(h.store.get_audit(&id, Uuid::now_v7()).await.unwrap(), None);
}

async fn audit_tenants_lists_every_chain(h: &Harness) {
    let (a, b) = (tid("chains-a"), tid("chains-b"));
    create(h, &a).await;
    h.store.append_audit(&b, event("E", "x")).await.unwrap();
    let quiet = tid("chains-quiet");
    let tenants = h.store.audit_tenants().await.unwrap();
    assert!(tenants.contains(&a) && tenants.contains(&b), "{tenants:?}");
    assert!(!tenants.contains(&quiet));
    let mut sorted = tenants.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(tenants, sorted, "distinct and sorted");
}

async fn audit_rows_are_append_only(h: &Harness) {
    let id = tid("immutable");
    create(h, &id).await;
    h.store.append_audit(&id, event("E", "x")).await.unwrap();

    let update = format!("UPDATE audit_events SET details = '{{}}' WHERE tenant_id = '{id}' AND seq = 1");
    let err = h.exec(&update).await.expect_err("UPDATE is refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let delete = format!("DELETE FROM audit_events WHERE tenant_id = '{id}'");
    assert!(h.exec(&delete).await.is_err(), "DELETE is refused");
    if h.is_postgres() {
        assert!(h.exec("TRUNCATE audit_events").await.is_err(), "TRUNCATE is refused");
        assert!(h.exec("TRUNCATE audit_heads").await.is_err(), "TRUNCATE of the heads is refused");
    }
    // The chain head cannot be rewound or removed either.
    assert!(h.exec(&format!("UPDATE audit_heads SET seq = 1 WHERE tenant_id = '{id}'")).await.is_err());
    assert!(h.exec(&format!("DELETE FROM audit_heads WHERE tenant_id = '{id}'")).await.is_err());
    // Nor moved ahead to an event that is not stored.
    assert!(h.exec(&format!("UPDATE audit_heads SET seq = seq + 5 WHERE tenant_id = '{id}'")).await.is_err());

    let verifier = verify(h, &id).await;
    assert_eq!(verifier.events_checked(), 2);
    assert!(verifier.breaks().is_empty());
    // Appends still work after the refusals.
    assert_eq!(h.store.append_audit(&id, event("E", "y")).await.unwrap().seq, 3);
}

async fn altered_rows_are_found_once_the_triggers_are_dropped(h: &Harness) {
    let id = tid("tamper");
    for i in 0..5 {
        h.store.append_audit(&id, event("E", &format!("r{i}"))).await.unwrap();
    }
    drop_audit_triggers(h).await;
    let update = format!(
        "UPDATE audit_events SET details = '{{\"component\":\"test\",\"status\":\"forged\"}}' \
         WHERE tenant_id = '{id}' AND seq = 3"
    );
    assert_eq!(h.exec(&update).await.expect("UPDATE succeeds without the trigger"), 1);

    let verifier = verify(h, &id).await;
    let first = verifier.first_break().expect("tampering is detected");
    assert_eq!((first.seq, first.kind.as_str()), (3, "hash_mismatch"));
    assert_eq!(verifier.breaks().len(), 1, "{:?}", verifier.breaks());

    // A deleted row shows up as a gap.
    h.exec(&format!("DELETE FROM audit_events WHERE tenant_id = '{id}' AND seq = 4")).await.unwrap();
    let verifier = verify(h, &id).await;
    assert!(verifier.breaks().iter().any(|b| b.seq == 5 && b.kind == "sequence_gap"), "{:?}", verifier.breaks());
}

async fn corrupt_rows_are_internal_errors(h: &Harness) {
    let id = tid("corrupt");
    create(h, &id).await;
    let key = new_key(&id, "k");
    h.store.create_api_key(&id, &key, event("K", "k")).await.unwrap();

    h.exec(&format!("UPDATE tenants SET state = 'DORMANT' WHERE tenant_id = '{id}'")).await.unwrap();
    assert_kind(h.store.get_tenant(&id).await, "internal");
    h.exec(&format!("UPDATE tenants SET state = 'PENDING', tier = 'platinum' WHERE tenant_id = '{id}'")).await.unwrap();
    assert_kind(h.store.get_tenant(&id).await, "internal");
    h.exec(&format!("UPDATE tenants SET tier = 'free', config = '{{\"nope\":1}}' WHERE tenant_id = '{id}'"))
        .await
        .unwrap();
    let err = h.store.get_tenant(&id).await.expect_err("bad config");
    assert!(matches!(&err, StoreError::Internal(m) if !m.contains("nope")), "{err:?}");
    assert_kind(h.store.list_tenants(None, PageRequest::new(1, 1000)).await, "internal");

    h.exec(&format!("UPDATE api_keys SET scopes = 'query,root' WHERE tenant_id = '{id}'")).await.unwrap();
    let err = h.store.get_api_key(&id, key.key_id).await.expect_err("bad scopes");
    assert!(matches!(&err, StoreError::Internal(m) if !m.contains("root")), "{err:?}");
}
