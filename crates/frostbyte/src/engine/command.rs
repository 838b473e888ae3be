//! `frostbyte pipeline list|run|status|history|cancel`: the same [`Engine`] use-cases the API calls, on the
//! configured stores. `run --wait` executes the run in this process (as a worker would) until it finishes.

use std::sync::Arc;

use anyhow::{Context, bail};
use frostbyte_core::TenantId;
use frostbyte_core::pipelines::{PipelineRun, RunFilter, RunStatus};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Engine, EngineError};
use crate::app::open_stores;
use crate::cli::PipelineCommand;
use crate::config::Config;

pub(crate) fn explain(e: EngineError) -> anyhow::Error {
    match e {
        EngineError::Validation(problems) => {
            let lines: Vec<String> = problems.iter().map(|p| format!("  - {}: {}", p.field, p.constraint)).collect();
            anyhow::anyhow!("invalid request:\n{}", lines.join("\n"))
        }
        e => anyhow::anyhow!("{e}"),
    }
}

pub(crate) fn parse_param(raw: &str) -> anyhow::Result<(String, Value)> {
    let (name, value) = raw.split_once('=').with_context(|| format!("--param {raw:?} is not NAME=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.trim().to_owned(), value))
}

fn describe(run: &PipelineRun) -> String {
    let mut s = format!(
        "{}  {}/{}  {}  records={} progress={:.0}%",
        run.run_id,
        run.domain,
        run.pipeline,
        run.status,
        run.records_processed,
        run.progress * 100.0
    );
    if let Some(e) = &run.error_message {
        s.push_str(&format!("  error: {e}"));
    }
    s.push('\n');
    s
}

pub(crate) fn emit(json_out: bool, value: Value, human: impl FnOnce() -> String) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(&value).expect("json serialises"));
    } else {
        print!("{}", human());
    }
}

/// The engine over the configured stores, with schedules and the document plane (so `run --wait` can execute
/// every processor, `documents.sync` included).
async fn engine(config: &Config) -> anyhow::Result<Engine> {
    let stores = open_stores(config).await?;
    let (embedders, scanner) = crate::app::embedders_and_scanner(config)?;
    let plane = crate::app::document_plane(config, &stores, scanner, embedders);
    Ok(Engine::new(
        stores.runs.clone(),
        stores.metadata.clone(),
        stores.queue.clone(),
        stores.blobs.clone(),
        Arc::new(crate::events::EventBus::default()),
        config.pipelines.settings(),
    )
    .with_schedules(stores.schedules.clone())
    .with_documents(plane))
}

/// Runs one `pipeline` subcommand; the exit code is 1 when a waited-for run did not complete.
pub async fn run(config: &Config, cmd: PipelineCommand, json_out: bool) -> anyhow::Result<i32> {
    let engine = engine(config).await?;
    let tenant = |raw: &str| TenantId::parse(raw).with_context(|| format!("invalid tenant id {raw:?}"));
    let run_id = |raw: &str| Uuid::parse_str(raw).with_context(|| format!("invalid run id {raw:?}"));
    match cmd {
        PipelineCommand::List => {
            let defs = engine.definitions();
            let list: Vec<Value> = defs
                .all()
                .map(|d| {
                    json!({"domain": d.domain, "name": d.name, "display_name": d.display_name,
                                "processor": d.processor, "parameters": d.parameters, "origin": d.origin})
                })
                .collect();
            emit(json_out, json!({"pipelines": list, "invalid": defs.errors}), || {
                let mut s = String::new();
                for d in defs.all() {
                    let params: Vec<String> = d
                        .parameters
                        .iter()
                        .map(|p| format!("{}:{}{}", p.name, p.param_type.as_str(), if p.required { "!" } else { "" }))
                        .collect();
                    s.push_str(&format!(
                        "{:<24} {:<14} {}  [{}]\n",
                        d.key(),
                        d.processor,
                        d.display_name,
                        params.join(" ")
                    ));
                }
                for e in &defs.errors {
                    s.push_str(&format!("INVALID {e}\n"));
                }
                s
            });
            Ok(if defs.errors.is_empty() { 0 } else { 1 })
        }
        PipelineCommand::Run { pipeline, tenant: t, params, wait } => {
            let t = tenant(&t)?;
            let Some((domain, name)) = pipeline.split_once('/') else {
                bail!("name the pipeline as domain/name (for example audit/export)");
            };
            let mut parameters = Map::new();
            for p in &params {
                let (k, v) = parse_param(p)?;
                parameters.insert(k, v);
            }
            let run = engine.create_run(&t, domain, name, parameters, "cli").await.map_err(explain)?;
            if !wait {
                emit(json_out, json!(run), || describe(&run));
                return Ok(0);
            }
            let worker = format!("cli-{}", std::process::id());
            let done = engine.drive_until_finished(&t, run.run_id, &worker).await?;
            emit(json_out, json!(done), || describe(&done));
            Ok(if done.status == RunStatus::Completed { 0 } else { 1 })
        }
        PipelineCommand::Status { run_id: id, tenant: t } => {
            let run = engine.get_run(&tenant(&t)?, run_id(&id)?).await.map_err(explain)?;
            emit(json_out, json!(run), || describe(&run));
            Ok(0)
        }
        PipelineCommand::History { tenant: t, pipeline, status, limit } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(RunStatus::parse(s).with_context(|| format!("unknown status {s:?}"))?),
            };
            let filter = RunFilter { pipeline, status, limit: limit.clamp(1, 1000) };
            let runs = engine.list_runs(&tenant(&t)?, &filter).await.map_err(explain)?;
            emit(json_out, json!(runs), || runs.iter().map(describe).collect());
            Ok(0)
        }
        PipelineCommand::Cancel { run_id: id, tenant: t } => {
            let run = engine.cancel(&tenant(&t)?, run_id(&id)?, "cli").await.map_err(explain)?;
            emit(json_out, json!(run), || describe(&run));
            Ok(0)
        }
    }
}
