//! Schedules on the engine: create, list, update (enable/disable), delete, and [`Engine::fire_due`], which the
//! scheduler loop calls. See `frostbyte_core::pipelines::schedule` for exactly-once firing, catch-up, the
//! overlap policy and time zones.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::schedule::{next_fire, parse_cron, parse_timezone};
use frostbyte_core::pipelines::{Overlap, PipelineRun, RunStatus, Schedule, ScheduleChange, TemplateContext};
use frostbyte_core::tenant::FieldViolation;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Engine, EngineError};

/// A schedule as requested (create: `pipeline` and `cron_expression` required; update: every field optional).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// `domain/name`.
    pub pipeline: Option<String>,
    /// Five fields: minute hour day-of-month month day-of-week.
    pub cron_expression: Option<String>,
    /// `UTC` (default), a fixed offset such as `+02:00`, or an IANA zone such as `Europe/Berlin`.
    pub timezone: Option<String>,
    /// `skip` (default) or `queue`: what an occurrence does while the previous run is unfinished.
    pub overlap: Option<Overlap>,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    pub is_enabled: Option<bool>,
}

fn invalid(field: &str, value: impl Into<Value>, problem: impl Into<String>) -> EngineError {
    EngineError::Validation(vec![FieldViolation::new(field, value, problem)])
}

impl Engine {
    fn schedule_store(&self) -> Result<&Arc<dyn frostbyte_core::pipelines::ScheduleStore>, EngineError> {
        self.schedules.as_ref().ok_or(EngineError::NotFound("schedule store"))
    }

    /// Checks a schedule's pipeline, cron, zone and parameters; returns its next firing after `now`.
    fn check_schedule(
        &self,
        tenant: &TenantId,
        s: &Schedule,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, EngineError> {
        let (domain, name) =
            s.pipeline.split_once('/').ok_or_else(|| invalid("pipeline", s.pipeline.as_str(), "domain/name"))?;
        let def = self
            .definition(domain, name)
            .ok_or_else(|| invalid("pipeline", s.pipeline.as_str(), "a defined pipeline"))?;
        parse_cron(&s.cron_expression)
            .map_err(|e| invalid("cron_expression", s.cron_expression.as_str(), e.to_string()))?;
        parse_timezone(&s.timezone).map_err(|e| invalid("timezone", s.timezone.as_str(), e.to_string()))?;
        let ctx = TemplateContext::for_run(tenant.as_str(), &self.settings.env, Uuid::nil(), now.date_naive());
        def.bind_parameters(&s.parameters, &ctx).map_err(|p| EngineError::Validation(super::violations(p)))?;
        if !s.is_enabled {
            return Ok(None);
        }
        next_fire(&s.cron_expression, &s.timezone, now)
            .map(Some)
            .map_err(|e| invalid("cron_expression", s.cron_expression.as_str(), e.to_string()))
    }

    fn schedule_audit(kind: &str, actor: &str, s: &Schedule) -> NewAuditEvent {
        NewAuditEvent::new(
            kind,
            actor,
            "pipeline_schedule",
            s.schedule_id.to_string(),
            json!({"component": "pipeline", "status": if s.is_enabled { "enabled" } else { "disabled" },
                   "pipeline": s.pipeline, "cron_expression": s.cron_expression, "timezone": s.timezone,
                   "overlap": s.overlap.as_str()}),
        )
    }

    pub async fn create_schedule(
        &self,
        tenant: &TenantId,
        req: ScheduleRequest,
        actor: &str,
    ) -> Result<Schedule, EngineError> {
        let store = self.schedule_store()?;
        self.store.get_tenant(tenant).await?.ok_or(EngineError::NotFound("tenant"))?;
        let now = frostbyte_core::now();
        let mut s = Schedule {
            schedule_id: frostbyte_core::ids::new_id(),
            tenant_id: tenant.clone(),
            pipeline: req.pipeline.ok_or_else(|| invalid("pipeline", Value::Null, "required"))?,
            cron_expression: req.cron_expression.ok_or_else(|| invalid("cron_expression", Value::Null, "required"))?,
            timezone: req.timezone.unwrap_or_else(|| "UTC".into()),
            overlap: req.overlap.unwrap_or_default(),
            parameters: req.parameters.unwrap_or_default(),
            is_enabled: req.is_enabled.unwrap_or(true),
            last_run_at: None,
            last_run_id: None,
            next_run_at: None,
            last_skipped_at: None,
            skipped_count: 0,
            created_at: now,
            updated_at: now,
        };
        s.next_run_at = self.check_schedule(tenant, &s, now)?;
        store.create_schedule(&s, Self::schedule_audit("PIPELINE_SCHEDULE_CREATED", actor, &s)).await?;
        Ok(s)
    }

    pub async fn list_schedules(&self, tenant: &TenantId) -> Result<Vec<Schedule>, EngineError> {
        Ok(self.schedule_store()?.list_schedules(tenant).await?)
    }

    pub async fn update_schedule(
        &self,
        tenant: &TenantId,
        id: Uuid,
        req: ScheduleRequest,
        actor: &str,
    ) -> Result<Schedule, EngineError> {
        let store = self.schedule_store()?;
        let mut s = store.get_schedule(tenant, id).await?.ok_or(EngineError::NotFound("schedule"))?;
        if req.pipeline.as_ref().is_some_and(|p| p != &s.pipeline) {
            return Err(invalid(
                "pipeline",
                req.pipeline.unwrap_or_default(),
                "unchanged (create a new schedule instead)",
            ));
        }
        let retimed = req.cron_expression.is_some() || req.timezone.is_some() || req.is_enabled.is_some();
        let change = ScheduleChange {
            cron_expression: req.cron_expression,
            timezone: req.timezone,
            overlap: req.overlap,
            parameters: req.parameters,
            is_enabled: req.is_enabled,
            next_run_at: None,
        };
        let now = frostbyte_core::now();
        let mut preview = s.clone();
        apply_preview(&mut preview, &change);
        let next = self.check_schedule(tenant, &preview, now)?;
        let change = ScheduleChange { next_run_at: retimed.then_some(next), ..change };
        s = store
            .update_schedule(tenant, id, change, Self::schedule_audit("PIPELINE_SCHEDULE_UPDATED", actor, &preview))
            .await?;
        Ok(s)
    }

    pub async fn delete_schedule(&self, tenant: &TenantId, id: Uuid, actor: &str) -> Result<(), EngineError> {
        let store = self.schedule_store()?;
        let s = store.get_schedule(tenant, id).await?.ok_or(EngineError::NotFound("schedule"))?;
        store.delete_schedule(tenant, id, Self::schedule_audit("PIPELINE_SCHEDULE_DELETED", actor, &s)).await?;
        Ok(())
    }

    /// Fires every schedule due at `now` (once each, whichever process wins its compare-and-set); the next
    /// firing is computed from `now`, so a long downtime fires one run, not one per missed occurrence. While the
    /// schedule's previous run is unfinished, its overlap policy decides (see [`Engine::overlap_decision`]).
    /// Returns the runs this call created.
    pub async fn fire_due(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>, EngineError> {
        let store = self.schedule_store()?;
        let mut created = Vec::new();
        for s in store.due_schedules(now, 100).await? {
            let Some(expected) = s.next_run_at else { continue };
            let next = match next_fire(&s.cron_expression, &s.timezone, now) {
                Ok(n) => n,
                Err(error) => {
                    tracing::error!(schedule_id = %s.schedule_id, %error, "schedule cannot compute its next firing");
                    continue;
                }
            };
            let waits_for = match self.overlap_decision(&s).await? {
                Ok(waits_for) => waits_for,
                Err((previous, reason)) => {
                    let audit = NewAuditEvent::new(
                        "PIPELINE_SCHEDULE_SKIPPED",
                        super::ACTOR,
                        "pipeline_schedule",
                        s.schedule_id.to_string(),
                        json!({"component": "pipeline", "status": "skipped", "pipeline": s.pipeline,
                               "overlap": s.overlap.as_str(), "occurrence": expected,
                               "previous_run_id": previous.to_string(), "reason": reason}),
                    );
                    if store.claim_skip(&s.tenant_id, s.schedule_id, expected, next, now, audit).await? {
                        tracing::info!(schedule_id = %s.schedule_id, tenant = %s.tenant_id, %reason, "scheduled occurrence skipped");
                    }
                    continue;
                }
            };
            if !store.claim_fire(&s.tenant_id, s.schedule_id, expected, next, now).await? {
                continue;
            }
            let Some((domain, name)) = s.pipeline.split_once('/') else { continue };
            let by = format!("schedule:{}", s.schedule_id);
            match self.create_run_after(&s.tenant_id, domain, name, s.parameters.clone(), &by, waits_for).await {
                Ok(run) => {
                    store.record_fired_run(&s.tenant_id, s.schedule_id, run.run_id).await?;
                    created.push(run.run_id);
                }
                Err(error) => {
                    tracing::warn!(schedule_id = %s.schedule_id, tenant = %s.tenant_id, %error, "scheduled run refused")
                }
            }
        }
        Ok(created)
    }

    /// What an occurrence of `s` does: `Ok(None)` starts a run now, `Ok(Some(previous))` queues one behind the
    /// unfinished previous run, `Err((previous, reason))` skips it.
    async fn overlap_decision(&self, s: &Schedule) -> Result<Result<Option<Uuid>, (Uuid, String)>, EngineError> {
        let Some(previous) = s.last_run_id else { return Ok(Ok(None)) };
        let Some(prev) = self.runs.get_run(&s.tenant_id, previous).await? else { return Ok(Ok(None)) };
        if prev.status.is_terminal() {
            return Ok(Ok(None));
        }
        Ok(match s.overlap {
            Overlap::Skip => Err((previous, format!("the previous run {previous} is still {}", prev.status))),
            Overlap::Queue if self.is_waiting(&prev).await? => {
                Err((previous, format!("run {previous} is already queued behind the run before it")))
            }
            Overlap::Queue => Ok(Some(previous)),
        })
    }

    /// Whether `run` is pending behind another run that has not ended.
    async fn is_waiting(&self, run: &PipelineRun) -> Result<bool, EngineError> {
        let (RunStatus::Pending, Some(waited)) = (run.status, run.waits_for_run_id) else { return Ok(false) };
        Ok(self.runs.get_run(&run.tenant_id, waited).await?.is_some_and(|w| !w.status.is_terminal()))
    }
}

/// The schedule as it would be after `change` (for validation before the write).
pub(crate) fn apply_preview(s: &mut Schedule, change: &ScheduleChange) {
    if let Some(c) = &change.cron_expression {
        s.cron_expression = c.clone();
    }
    if let Some(tz) = &change.timezone {
        s.timezone = tz.clone();
    }
    if let Some(o) = change.overlap {
        s.overlap = o;
    }
    if let Some(p) = &change.parameters {
        s.parameters = p.clone();
    }
    if let Some(e) = change.is_enabled {
        s.is_enabled = e;
    }
}

/// Fires due schedules every `interval` until `shutdown` turns true.
pub async fn run_scheduler(engine: Arc<Engine>, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tracing::info!("pipeline scheduler started");
    while !*shutdown.borrow() {
        if let Err(error) = engine.fire_due(frostbyte_core::now()).await {
            tracing::error!(%error, "pipeline scheduler could not fire due schedules");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!("pipeline scheduler stopped");
}
