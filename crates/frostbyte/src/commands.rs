//! What each CLI command does. Operator commands act directly on the configured stores with the actor `cli`,
//! through the same use-cases as the API.

use std::io::Write;

use anyhow::{Context, bail};
use frostbyte_core::TenantId;
use frostbyte_core::page::PageRequest;
use frostbyte_core::service::audit::{export_jsonl, verify_chain};
use frostbyte_core::service::{Actor, CreateKey, CreateTenant, ServiceError, TenantService};
use frostbyte_core::tenant::{Tenant, TenantState};
use serde_json::json;

use crate::app::open_stores;
use crate::cli::{AuditCommand, KeyCommand, TenantCommand};
use crate::config::Config;

/// Prints either JSON or a human rendering.
struct Out {
    json: bool,
}

impl Out {
    fn emit(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&value).expect("json serialises"));
        } else {
            print!("{}", human());
        }
    }
}

fn tenant_id(raw: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(raw).with_context(|| format!("invalid tenant id {raw:?}"))
}

/// Turns a use-case error into a message an operator can act on.
fn explain(e: ServiceError) -> anyhow::Error {
    match e {
        ServiceError::Validation(problems) => {
            let lines: Vec<String> =
                problems.iter().map(|p| format!("  - {}: {} (got {})", p.field, p.constraint, p.value)).collect();
            anyhow::anyhow!("invalid input:\n{}", lines.join("\n"))
        }
        other => anyhow::Error::new(other),
    }
}

fn tenant_json(t: &Tenant) -> serde_json::Value {
    json!({
        "tenant_id": t.tenant_id,
        "tenant_name": t.tenant_name,
        "contact_email": t.contact_email,
        "tier": t.tier,
        "state": t.state,
        "state_reason": t.state_reason,
        "config_version": t.config_version,
        "config": t.config,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    })
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let stores = open_stores(config).await?;
    println!("metadata store ({}) is migrated", stores.metadata.backend());
    Ok(())
}

pub fn check_config(config: &Config, json: bool) {
    let summary = config.summary();
    Out { json }.emit(json!(summary), || {
        let mut s = String::from("configuration is valid\n");
        for (k, v) in &summary {
            s.push_str(&format!("  {k:<24} {v}\n"));
        }
        s
    });
}

async fn service(config: &Config) -> anyhow::Result<TenantService> {
    let stores = open_stores(config).await?;
    Ok(TenantService::new(stores.metadata, stores.blobs, stores.documents))
}

pub async fn tenant(config: &Config, cmd: TenantCommand, json_out: bool) -> anyhow::Result<()> {
    let svc = service(config).await?;
    let out = Out { json: json_out };
    match cmd {
        TenantCommand::Create { tenant_id, name, email, tier, config: cfg } => {
            let cfg = cfg.map(|s| serde_json::from_str(&s).context("--config must be a JSON object")).transpose()?;
            let req =
                CreateTenant { tenant_id, tenant_name: name, contact_email: email, tier: Some(tier), config: cfg };
            let t = svc.create(req, &Actor::Cli).await.map_err(explain)?;
            out.emit(tenant_json(&t), || format!("created tenant {} ({})\n", t.tenant_id, t.state));
        }
        TenantCommand::List { state, page, limit } => {
            let state =
                state.map(|s| TenantState::parse(&s).with_context(|| format!("unknown state {s:?}"))).transpose()?;
            let list = svc.list(state, PageRequest::new(page, limit.min(1000))).await.map_err(explain)?;
            let items: Vec<_> = list.items.iter().map(tenant_json).collect();
            out.emit(json!({"tenants": items, "total": list.total}), || {
                let mut s = format!("{:<32} {:<14} {:<10} {:>7}  {}\n", "TENANT", "STATE", "TIER", "CONFIG", "NAME");
                for t in &list.items {
                    s.push_str(&format!(
                        "{:<32} {:<14} {:<10} {:>7}  {}\n",
                        t.tenant_id,
                        t.state,
                        t.tier.as_str(),
                        format!("v{}", t.config_version),
                        t.tenant_name
                    ));
                }
                s.push_str(&format!("{} tenant(s)\n", list.total));
                s
            });
        }
        TenantCommand::Get { tenant_id: id } => {
            let t = svc.get(&tenant_id(&id)?).await.map_err(explain)?;
            let value = tenant_json(&t);
            out.emit(value.clone(), || format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default()));
        }
        TenantCommand::Suspend { tenant_id: id, reason } => {
            let t = svc.suspend(&tenant_id(&id)?, reason.as_deref(), &Actor::Cli).await.map_err(explain)?;
            out.emit(tenant_json(&t), || format!("tenant {} is {}\n", t.tenant_id, t.state));
        }
        TenantCommand::Resume { tenant_id: id, reason } => {
            let t = svc.resume(&tenant_id(&id)?, reason.as_deref(), &Actor::Cli).await.map_err(explain)?;
            out.emit(tenant_json(&t), || format!("tenant {} is {}\n", t.tenant_id, t.state));
        }
    }
    Ok(())
}

pub async fn key(config: &Config, cmd: KeyCommand, json_out: bool) -> anyhow::Result<()> {
    let svc = service(config).await?;
    let out = Out { json: json_out };
    match cmd {
        KeyCommand::Create { tenant, name, scopes, expires_at } => {
            let expires_at = expires_at
                .map(|s| {
                    chrono::DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .with_context(|| format!("--expires-at {s:?} is not RFC 3339"))
                })
                .transpose()?;
            let created = svc
                .create_key(&tenant_id(&tenant)?, CreateKey { name, scopes, expires_at }, &Actor::Cli)
                .await
                .map_err(explain)?;
            let r = &created.record;
            out.emit(
                json!({"key_id": r.key_id, "api_key": created.api_key, "name": r.name, "scopes": r.scopes,
                       "prefix": r.prefix, "expires_at": r.expires_at}),
                || {
                    format!(
                        "created key {} for {}\n\n    {}\n\nStore it now: it is not shown again.\n",
                        r.key_id, r.tenant_id, created.api_key
                    )
                },
            );
        }
        KeyCommand::List { tenant } => {
            let keys = svc.list_keys(&tenant_id(&tenant)?).await.map_err(explain)?;
            let items: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({"key_id": k.key_id, "name": k.name, "prefix": k.prefix, "scopes": k.scopes,
                           "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at})
                })
                .collect();
            out.emit(json!({"keys": items}), || {
                let mut s = format!("{:<38} {:<14} {:<22} {:<8} {}\n", "KEY ID", "PREFIX", "SCOPES", "STATUS", "NAME");
                for k in &keys {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    let status = match k.check_usable(frostbyte_core::now()) {
                        Ok(()) => "active",
                        Err(frostbyte_core::auth::KeyUnusable::Revoked) => "revoked",
                        Err(frostbyte_core::auth::KeyUnusable::Expired) => "expired",
                    };
                    s.push_str(&format!(
                        "{:<38} {:<14} {:<22} {:<8} {}\n",
                        k.key_id,
                        k.prefix,
                        scopes.join(","),
                        status,
                        k.name
                    ));
                }
                s
            });
        }
        KeyCommand::Revoke { tenant, key_id } => {
            let key_id: uuid::Uuid = key_id.parse().with_context(|| format!("invalid key id {key_id:?}"))?;
            let k = svc.revoke_key(&tenant_id(&tenant)?, key_id, &Actor::Cli).await.map_err(explain)?;
            out.emit(json!({"key_id": k.key_id, "revoked_at": k.revoked_at}), || format!("revoked key {}\n", k.key_id));
        }
    }
    Ok(())
}

/// Returns the process exit code: 0 when every chain verified, 1 when any is broken.
pub async fn audit(config: &Config, cmd: AuditCommand, json_out: bool) -> anyhow::Result<i32> {
    let stores = open_stores(config).await?;
    let store = stores.metadata.as_ref();
    let out = Out { json: json_out };
    match cmd {
        AuditCommand::Verify { tenant } => {
            let tenants = match tenant {
                Some(t) => vec![tenant_id(&t)?],
                None => store.audit_tenants().await?,
            };
            let mut reports = Vec::new();
            let mut broken = 0;
            for t in &tenants {
                let report = verify_chain(store, t).await?;
                if !report.valid {
                    broken += 1;
                }
                reports.push((t.clone(), report));
            }
            let value = json!(reports.iter().map(|(t, r)| json!({"tenant_id": t, "report": r})).collect::<Vec<_>>());
            out.emit(value, || {
                let mut s = String::new();
                for (t, r) in &reports {
                    match &r.first_break {
                        None => s.push_str(&format!("{t}: ok ({} events)\n", r.events_checked)),
                        Some(b) => s.push_str(&format!(
                            "{t}: BROKEN at seq {} (event {}): {}; expected {}, found {} ({} break(s) in {} events)\n",
                            b.seq, b.event_id, b.kind, b.expected, b.found, r.breaks_found, r.events_checked
                        )),
                    }
                }
                if reports.is_empty() {
                    s.push_str("no audit events\n");
                }
                s
            });
            Ok(if broken > 0 { 1 } else { 0 })
        }
        AuditCommand::Export { tenant, from, to, event_types, output } => {
            let tenant = tenant_id(&tenant)?;
            let start = match from {
                Some(s) => frostbyte_core::parse_date_bound(&s, false)
                    .with_context(|| format!("--from {s:?} is not RFC 3339 or YYYY-MM-DD"))?,
                None => chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            };
            let end = match to {
                Some(s) => frostbyte_core::parse_date_bound(&s, true)
                    .with_context(|| format!("--to {s:?} is not RFC 3339 or YYYY-MM-DD"))?,
                None => frostbyte_core::now(),
            };
            if start > end {
                bail!("--from must not be after --to");
            }
            let (jsonl, manifest) = export_jsonl(store, &tenant, start, end, event_types.as_deref(), "cli").await?;
            let manifest_path = output.with_file_name(format!(
                "{}.manifest.json",
                output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into())
            ));
            write_atomically(&output, jsonl.as_bytes())?;
            write_atomically(&manifest_path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
            out.emit(json!({"file": output, "manifest": manifest}), || {
                format!(
                    "wrote {} events to {} (sha256 {})\nmanifest: {}\n",
                    manifest.event_count,
                    output.display(),
                    manifest.file_sha256,
                    manifest_path.display()
                )
            });
            Ok(0)
        }
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `frostbyte signals …` (the work lives in `crate::signals`).
pub async fn signals(config: &Config, cmd: crate::cli::SignalsCommand, json_out: bool) -> anyhow::Result<i32> {
    crate::signals::command(config, cmd, json_out).await
}
