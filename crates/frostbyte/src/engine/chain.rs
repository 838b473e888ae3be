//! What a run's ending starts: the follow-up runs of `on_success` / `on_failure` and the webhook deliveries,
//! computed here and written by the store in the transaction of the terminal transition (so each is created
//! exactly once, however the process dies around it).
//!
//! A follow-up's parameters are resolved in the finished run's context (its variables, its parameters, and
//! `parent.run_id`, `parent.pipeline`, `parent.status`, `parent.records_processed`, `parent.error_message`), then
//! bound and checked against the follow-up's own definition exactly like a run requested through the API. A
//! follow-up that cannot start (the chain is `max_chain_depth` deep, the pipeline is gone, the tenant is not
//! ACTIVE, the daily run quota is spent, a parameter does not bind) is not created; the refusal is audited as
//! `PIPELINE_CHAIN_REFUSED` on the parent run, in the same transaction, with the reason.

use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{
    FollowUpSpec, NewDelivery, PipelineRun, RunStatus, RunTransition, TemplateContext, WebhookEvent,
};
use serde_json::{Map, Value, json};

use super::{ACTOR, Engine, EngineError};

impl Engine {
    /// Fills `change` (a terminal transition of `run`) with the follow-ups, deliveries and refusal notes it
    /// starts.
    pub(crate) async fn endings(&self, run: &PipelineRun, change: &mut RunTransition) {
        let Some(def) = self.definition(&run.domain, &run.pipeline) else { return };
        change.deliveries = self.deliveries_for(run, change.to);
        let specs = match change.to {
            RunStatus::Completed => &def.on_success,
            RunStatus::Failed => &def.on_failure,
            _ => return,
        };
        if specs.is_empty() {
            return;
        }
        let mut parent = run.clone();
        change.apply_to(&mut parent, frostbyte_core::now());
        for (index, spec) in specs.iter().enumerate() {
            match self.follow_up(&parent, index, spec).await {
                Ok(f) => change.follow_ups.push(f),
                Err(reason) => {
                    tracing::warn!(tenant = %run.tenant_id, run_id = %run.run_id, follow_up = %spec.pipeline, %reason, "follow-up refused");
                    change.notes.push(NewAuditEvent::new(
                        "PIPELINE_CHAIN_REFUSED",
                        ACTOR,
                        "pipeline_run",
                        run.run_id.to_string(),
                        json!({"component": "pipeline", "run_id": run.run_id.to_string(),
                               "pipeline": format!("{}/{}", run.domain, run.pipeline),
                               "follow_up": spec.pipeline, "index": index, "status": parent.status.as_str(),
                               "reason": reason}),
                    ));
                }
            }
        }
    }

    /// The deliveries a run ending in `status` owes its definition's webhooks.
    pub(crate) fn deliveries_for(&self, run: &PipelineRun, status: RunStatus) -> Vec<NewDelivery> {
        let (Some(def), Some(event)) = (self.definition(&run.domain, &run.pipeline), WebhookEvent::for_status(status))
        else {
            return Vec::new();
        };
        def.webhooks
            .iter()
            .filter(|w| w.events.contains(&event))
            .map(|w| NewDelivery {
                delivery_id: frostbyte_core::ids::new_id(),
                url: w.url.clone(),
                event,
                secret_env: w.secret_env.clone(),
            })
            .collect()
    }

    /// The follow-up number `index` of `parent` (already in its terminal state), or why it cannot start.
    async fn follow_up(
        &self,
        parent: &PipelineRun,
        index: usize,
        spec: &FollowUpSpec,
    ) -> Result<frostbyte_core::pipelines::FollowUp, String> {
        let depth = parent.chain_depth + 1;
        if depth > self.settings.max_chain_depth {
            return Err(format!(
                "chain depth limit reached: run {} is {} follow-ups deep and pipelines.max_chain_depth is {}",
                parent.run_id, parent.chain_depth, self.settings.max_chain_depth
            ));
        }
        let (domain, name) = spec.pipeline.split_once('/').ok_or_else(|| "not domain/name".to_owned())?;
        let def = self.definition(domain, name).ok_or_else(|| format!("pipeline {} is not defined", spec.pipeline))?;
        let ctx = parent_context(parent, &self.settings.env);
        let mut supplied = Map::new();
        for (k, v) in &spec.parameters {
            let value = ctx.resolve_value(v).map_err(|e| format!("parameters.{k}: {e}"))?;
            supplied.insert(k.clone(), value);
        }
        let now = frostbyte_core::now();
        self.check_can_start(&parent.tenant_id, &def, now).await.map_err(|e| match e {
            EngineError::QuotaExceeded { message, .. } => message,
            e => e.to_string(),
        })?;
        let by = format!("chain:{}", parent.run_id);
        let mut f = self.prepare(&def, &parent.tenant_id, supplied, &by, now).map_err(|e| match e {
            // Field names only: the audit records parameter names, never their values.
            EngineError::Validation(problems) => format!(
                "the follow-up's parameters do not bind: {}",
                problems.iter().map(|p| p.field.as_str()).collect::<Vec<_>>().join(", ")
            ),
            e => e.to_string(),
        })?;
        f.run.parent_run_id = Some(parent.run_id);
        f.run.chain_index = Some(u32::try_from(index).unwrap_or(u32::MAX));
        f.run.chain_depth = depth;
        if let Value::Object(d) = &mut f.audit.details {
            d.insert("parent_run_id".into(), json!(parent.run_id.to_string()));
            d.insert("chain_depth".into(), json!(depth));
        }
        Ok(f)
    }
}

/// The variables a follow-up's parameters are resolved with: the finished run's own, and `parent.*`.
pub(crate) fn parent_context(parent: &PipelineRun, env: &str) -> TemplateContext {
    let mut ctx =
        TemplateContext::for_run(parent.tenant_id.as_str(), env, parent.run_id, parent.created_at.date_naive())
            .with_params(&parent.parameters);
    ctx.set_var("parent.run_id", parent.run_id.to_string());
    ctx.set_var("parent.pipeline", format!("{}/{}", parent.domain, parent.pipeline));
    ctx.set_var("parent.status", parent.status.as_str());
    ctx.set_var("parent.records_processed", parent.records_processed.to_string());
    ctx.set_var("parent.error_message", parent.error_message.clone().unwrap_or_default());
    ctx
}
