//! `frostbyte schedule list|create|enable|disable|delete`: the same [`Engine`] schedule use-cases the API calls,
//! on the configured stores, recorded in the audit log with the actor `cli`.

use std::sync::Arc;

use anyhow::{Context, bail};
use frostbyte_core::TenantId;
use frostbyte_core::pipelines::{Overlap, Schedule};
use serde_json::{Map, json};
use uuid::Uuid;

use super::Engine;
use super::command::{emit, explain, parse_param};
use super::schedules::ScheduleRequest;
use crate::app::open_stores;
use crate::cli::ScheduleCommand;
use crate::config::Config;

fn describe(s: &Schedule) -> String {
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    format!(
        "{}  {}  {:?} {}  overlap={}  {}  next={}  last={}{}\n",
        s.schedule_id,
        s.pipeline,
        s.cron_expression,
        s.timezone,
        s.overlap.as_str(),
        if s.is_enabled { "enabled" } else { "disabled" },
        when(s.next_run_at),
        when(s.last_run_at),
        if s.skipped_count > 0 { format!("  skipped={}", s.skipped_count) } else { String::new() },
    )
}

async fn engine(config: &Config) -> anyhow::Result<Engine> {
    let stores = open_stores(config).await?;
    Ok(Engine::new(
        stores.runs,
        stores.metadata,
        stores.queue,
        stores.blobs,
        Arc::new(crate::events::EventBus::default()),
        config.pipelines.settings(),
    )
    .with_schedules(stores.schedules))
}

/// Runs one `schedule` subcommand.
pub async fn run(config: &Config, cmd: ScheduleCommand, json_out: bool) -> anyhow::Result<i32> {
    let engine = engine(config).await?;
    let tenant = |raw: &str| TenantId::parse(raw).with_context(|| format!("invalid tenant id {raw:?}"));
    let schedule_id = |raw: &str| Uuid::parse_str(raw).with_context(|| format!("invalid schedule id {raw:?}"));
    match cmd {
        ScheduleCommand::List { tenant: t } => {
            let list = engine.list_schedules(&tenant(&t)?).await.map_err(explain)?;
            emit(json_out, json!(list), || {
                if list.is_empty() { "no schedules\n".to_owned() } else { list.iter().map(describe).collect() }
            });
        }
        ScheduleCommand::Create { tenant: t, pipeline, cron, timezone, overlap, params, disabled } => {
            let overlap = match overlap.as_deref() {
                None => None,
                Some(o) => match Overlap::parse(o) {
                    Some(o) => Some(o),
                    None => bail!("--overlap {o:?} must be skip or queue"),
                },
            };
            let mut parameters = Map::new();
            for p in &params {
                let (k, v) = parse_param(p)?;
                parameters.insert(k, v);
            }
            let req = ScheduleRequest {
                pipeline: Some(pipeline),
                cron_expression: Some(cron),
                timezone,
                overlap,
                parameters: Some(parameters),
                is_enabled: Some(!disabled),
            };
            let s = engine.create_schedule(&tenant(&t)?, req, "cli").await.map_err(explain)?;
            emit(json_out, json!(s), || describe(&s));
        }
        ScheduleCommand::Enable { schedule_id: id, tenant: t } => {
            let req = ScheduleRequest { is_enabled: Some(true), ..Default::default() };
            let s = engine.update_schedule(&tenant(&t)?, schedule_id(&id)?, req, "cli").await.map_err(explain)?;
            emit(json_out, json!(s), || describe(&s));
        }
        ScheduleCommand::Disable { schedule_id: id, tenant: t } => {
            let req = ScheduleRequest { is_enabled: Some(false), ..Default::default() };
            let s = engine.update_schedule(&tenant(&t)?, schedule_id(&id)?, req, "cli").await.map_err(explain)?;
            emit(json_out, json!(s), || describe(&s));
        }
        ScheduleCommand::Delete { schedule_id: id, tenant: t } => {
            let id = schedule_id(&id)?;
            engine.delete_schedule(&tenant(&t)?, id, "cli").await.map_err(explain)?;
            emit(json_out, json!({"schedule_id": id, "deleted": true}), || format!("{id}  deleted\n"));
        }
    }
    Ok(0)
}
