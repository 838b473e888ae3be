//! The pipeline engine (DESIGN.md §4): definitions ([`definitions`]), the built-in processors ([`processors`]),
//! and [`Engine`], the use-case the API, the CLI and the workers share.
//!
//! **Creating a run** ([`Engine::create_run`]): the definition must exist, the tenant must be `ACTIVE`, its
//! `quotas.runs_per_day` must not be spent (UTC day), the parameters must bind (required present, typed) and
//! every template must resolve. The run is stored `pending` with its `pipeline` job and `PIPELINE_RUN_CREATED` in
//! one transaction, so it survives a restart from the first moment.
//!
//! **Executing** ([`Engine::try_run_one`]): a worker claims the job and moves the run `validating` (checks again:
//! the tenant or the definitions may have changed) → `running` → `completed | failed | cancelled`, each transition
//! audited in its own transaction and published on the event bus; the closing one completes the job in the same
//! transaction. The processor runs in its own task: a panic becomes `failed` with the panic's message, never a
//! dead worker. It is raced against the definition's timeout (`failed`, "timed out after N s") and against
//! cancellation, which is signalled in-process at once and across processes by the run's `cancel_requested` flag,
//! polled while it runs. A retryable failure with attempts left goes back to the queue on the definition's
//! backoff (`PIPELINE_RUN_RETRYING`); the run stays `running` until a later attempt ends it.
//!
//! **Endings** ([`chain`], [`webhooks`]): the terminal transition writes, in its own transaction, the follow-up
//! runs the definition declares (`on_success` / `on_failure`, `triggered_by: "chain:{run_id}"`, one level deeper,
//! refused past `max_chain_depth`) and one webhook delivery per matching webhook; the delivery worker sends them
//! with retries. A failing webhook never changes the run.
//!
//! **Crashes**: the job's lease lapses and another worker resumes the run from the start (processors write
//! fixed target keys, so a rerun overwrites rather than duplicates). [`Engine::recover`] runs at start-up and
//! fails runs whose job can no longer run them (dead, abandoned, finished or missing), so no run stays
//! `running` forever.

pub mod bench;
pub mod chain;
pub mod command;
pub mod definitions;
#[cfg(test)]
mod flow_tests;
pub mod processors;
pub mod records;
mod reindex;
mod retention;
pub mod schedule_command;
pub mod schedules;
pub mod sync;
pub mod webhooks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::pipelines::{
    FollowUp, NewRun, PipelineDefinition, PipelineRun, RunFilter, RunStatus, RunStore, RunTransition, TemplateContext,
};
use frostbyte_core::ports::{BlobStore, MetadataStore};
use frostbyte_core::queue::{
    ClaimOptions, Job, JobError, JobQueue, JobStatus, NewJob, RetryPolicy, RunOnce, Stage, StageRetry,
};
use frostbyte_core::tenant::{FieldViolation, TenantState};
use frostbyte_core::{StoreError, TenantId};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::events::{Event, EventBus, Level};
use definitions::Definitions;
use processors::{CancelToken, Outcome, ProcessorError, ProcessorFn, RunContext};

/// The engine's settings (`[pipelines]` in config).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Where `{domain}/{name}.yml` definitions are read from (a missing directory is fine).
    pub dir: Option<PathBuf>,
    /// `{{env}}` in templates.
    pub env: String,
    /// How long a claimed run's job is leased; heartbeats extend it every third.
    pub lease: Duration,
    /// How often a running run's cancel flag is read from the store.
    pub cancel_poll: Duration,
    /// The most runs of one tenant executing at once.
    pub per_tenant_cap: u32,
    /// How often the scheduler looks for due schedules.
    pub schedule_poll: Duration,
    /// How deep follow-ups may chain: a run at this depth starts no follow-ups (the refusal is audited).
    pub max_chain_depth: u32,
    /// How failed webhook deliveries are retried.
    pub webhook_retry: frostbyte_core::pipelines::WebhookRetry,
    /// How long one webhook request may take.
    pub webhook_timeout: Duration,
    /// How often the delivery worker looks for due deliveries.
    pub webhook_poll: Duration,
    /// Webhook HMAC secrets by name, used when no environment variable of that name is set.
    pub webhook_secrets: std::collections::BTreeMap<String, secrecy::SecretString>,
    /// SQL databases `records.copy` may read and write (`sql://NAME/table`), each with the tenants allowed.
    pub connections: Arc<records::Connections>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            dir: None,
            env: "dev".into(),
            lease: Duration::from_secs(60),
            cancel_poll: Duration::from_millis(500),
            per_tenant_cap: 2,
            schedule_poll: Duration::from_secs(1),
            max_chain_depth: 5,
            webhook_retry: frostbyte_core::pipelines::WebhookRetry::default(),
            webhook_timeout: Duration::from_secs(10),
            webhook_poll: Duration::from_secs(1),
            webhook_secrets: std::collections::BTreeMap::new(),
            connections: Arc::default(),
        }
    }
}

/// Why the engine refused a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("tenant {0} is {1}, not ACTIVE")]
    TenantNotActive(TenantId, TenantState),
    #[error("the run request has {} problem(s)", .0.len())]
    Validation(Vec<FieldViolation>),
    #[error("{message}")]
    QuotaExceeded { message: String, retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Processors that take documents in, whose runs are refused while the tenant's intake quotas are spent.
pub const INGESTING: &[&str] = &[sync::PROCESSOR];

/// The actor of audit events the engine records on its own behalf.
const ACTOR: &str = "system:pipeline-engine";

/// The pipeline engine: definitions, the run store and what processors reach.
pub struct Engine {
    pub runs: Arc<dyn RunStore>,
    pub store: Arc<dyn MetadataStore>,
    pub queue: Arc<dyn JobQueue>,
    pub blobs: Arc<dyn BlobStore>,
    pub events: Arc<EventBus>,
    pub settings: EngineSettings,
    /// Schedules, when the deployment has them (see [`Engine::with_schedules`]).
    pub schedules: Option<Arc<dyn frostbyte_core::pipelines::ScheduleStore>>,
    /// The document plane, for processors that ingest, erase or re-embed documents (see
    /// [`Engine::with_documents`]).
    pub documents: Option<Arc<DocumentPlane>>,
    definitions: RwLock<Arc<Definitions>>,
    /// Tokens of the runs this process is executing, for prompt in-process cancellation.
    running: Mutex<HashMap<Uuid, CancelToken>>,
    /// The webhook client, built on first use.
    http: std::sync::OnceLock<reqwest_013::Client>,
}

/// What document-plane processors reach: intake (the same checks and writes as an upload), the chunk index and
/// the embedders. Erasure goes through [`DocumentPlane::lifecycle`], the same use-case as `DELETE` on a document.
#[derive(Clone)]
pub struct DocumentPlane {
    pub intake: Arc<crate::intake::Intake>,
    pub index: Arc<dyn frostbyte_core::index::ChunkIndex>,
    pub embedders: Arc<frostbyte_core::embed::EmbedderRegistry>,
    /// Shadow vectors of `documents.reindex` runs and their atomic swap.
    pub shadow: Arc<dyn frostbyte_core::reindex::ShadowIndex>,
    /// What `documents.sync` took in from each source file.
    pub sync_state: Arc<dyn frostbyte_core::pipelines::SyncStore>,
    /// Where `documents.sync` may read (`[pipelines] sync_roots`).
    pub sync_settings: sync::SyncSettings,
}

impl DocumentPlane {
    /// Erasure, replacement and export, as the HTTP API runs them.
    pub fn lifecycle(&self) -> frostbyte_core::service::lifecycle::DocumentLifecycle {
        frostbyte_core::service::lifecycle::DocumentLifecycle::new(
            self.intake.store.clone(),
            self.intake.documents.clone(),
            self.index.clone(),
            self.intake.blobs.clone(),
        )
    }
}

/// A run ready to execute: its definition, and everything resolved.
struct Resolved {
    definition: Arc<PipelineDefinition>,
    parameters: Map<String, Value>,
    source: Option<String>,
    target: Option<String>,
    options: Map<String, Value>,
}

/// How an execution ended.
enum Ending {
    Done(Outcome),
    Cancelled,
    TimedOut(u64),
    Panicked(String),
    Failed(ProcessorError),
}

pub(crate) fn violations(problems: Vec<(String, String)>) -> Vec<FieldViolation> {
    problems.into_iter().map(|(field, problem)| FieldViolation::new(field, Value::Null, problem)).collect()
}

fn start_of_day(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
}

impl Engine {
    pub fn new(
        runs: Arc<dyn RunStore>,
        store: Arc<dyn MetadataStore>,
        queue: Arc<dyn JobQueue>,
        blobs: Arc<dyn BlobStore>,
        events: Arc<EventBus>,
        settings: EngineSettings,
    ) -> Self {
        let defs = Definitions::load(settings.dir.as_deref());
        Engine {
            runs,
            store,
            queue,
            blobs,
            events,
            settings,
            schedules: None,
            documents: None,
            definitions: RwLock::new(Arc::new(defs)),
            running: Mutex::new(HashMap::new()),
            http: std::sync::OnceLock::new(),
        }
    }

    /// This engine with a schedule store: schedules can be managed and fired.
    pub fn with_schedules(mut self, schedules: Arc<dyn frostbyte_core::pipelines::ScheduleStore>) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// This engine with the document plane: `documents.*` and `retention.*` processors can run.
    pub fn with_documents(mut self, plane: DocumentPlane) -> Self {
        self.documents = Some(Arc::new(plane));
        self
    }

    /// The loaded definitions (and the refused files' problems).
    pub fn definitions(&self) -> Arc<Definitions> {
        self.definitions.read().expect("definitions lock").clone()
    }

    /// Reloads definitions from `dir` (and the shipped set).
    pub fn reload(&self, dir: Option<&std::path::Path>) -> Arc<Definitions> {
        let defs = Arc::new(Definitions::load(dir));
        *self.definitions.write().expect("definitions lock") = defs.clone();
        defs
    }

    fn definition(&self, domain: &str, name: &str) -> Option<Arc<PipelineDefinition>> {
        self.definitions().get(domain, name)
    }

    fn context(&self, tenant: &TenantId, run_id: Uuid, day: chrono::NaiveDate) -> TemplateContext {
        TemplateContext::for_run(tenant.as_str(), &self.settings.env, run_id, day)
    }

    /// Binds parameters and resolves every template of `def` for a run.
    fn resolve(
        &self,
        def: Arc<PipelineDefinition>,
        tenant: &TenantId,
        run_id: Uuid,
        day: chrono::NaiveDate,
        supplied: &Map<String, Value>,
    ) -> Result<Resolved, Vec<FieldViolation>> {
        let base = self.context(tenant, run_id, day);
        let parameters = def.bind_parameters(supplied, &base).map_err(violations)?;
        let ctx = base.with_params(&parameters);
        let mut problems = Vec::new();
        let mut resolve = |field: &str, s: &Option<String>| match s {
            Some(s) => match ctx.resolve(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push((field.to_owned(), e.to_string()));
                    None
                }
            },
            None => None,
        };
        let source = resolve("source", &def.source);
        let target = resolve("target", &def.target);
        let mut options = Map::new();
        for (k, v) in &def.options {
            match ctx.resolve_value(v) {
                Ok(v) => {
                    options.insert(k.clone(), v);
                }
                Err(e) => problems.push((format!("options.{k}"), e.to_string())),
            }
        }
        if !problems.is_empty() {
            return Err(violations(problems));
        }
        Ok(Resolved { definition: def, parameters, source, target, options })
    }

    /// Validates and stores a `pending` run with its job. See the module docs.
    pub async fn create_run(
        &self,
        tenant: &TenantId,
        domain: &str,
        name: &str,
        parameters: Map<String, Value>,
        triggered_by: &str,
    ) -> Result<PipelineRun, EngineError> {
        self.create_run_after(tenant, domain, name, parameters, triggered_by, None).await
    }

    /// [`Engine::create_run`] for a run that starts only once `waits_for` has ended (a schedule's `queue`
    /// overlap).
    pub async fn create_run_after(
        &self,
        tenant: &TenantId,
        domain: &str,
        name: &str,
        parameters: Map<String, Value>,
        triggered_by: &str,
        waits_for: Option<Uuid>,
    ) -> Result<PipelineRun, EngineError> {
        let def = self.definition(domain, name).ok_or(EngineError::NotFound("pipeline"))?;
        let now = frostbyte_core::now();
        self.check_can_start(tenant, &def, now).await?;
        let mut prepared = self.prepare(&def, tenant, parameters, triggered_by, now)?;
        prepared.run.waits_for = waits_for;
        let run_id = prepared.run.run_id;
        let run = self.runs.create_run(tenant, prepared.run, prepared.job, prepared.audit).await?;
        self.publish(&run, "PIPELINE_RUN_CREATED", None);
        tracing::info!(tenant = %tenant, run_id = %run_id, pipeline = %def.key(), "pipeline run created");
        Ok(run)
    }

    /// The tenant must exist and be `ACTIVE`, and its `quotas.runs_per_day` must not be spent; a run of an
    /// ingesting processor also needs room in the intake quotas.
    async fn check_can_start(
        &self,
        tenant: &TenantId,
        def: &PipelineDefinition,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let t = self.store.get_tenant(tenant).await?.ok_or(EngineError::NotFound("tenant"))?;
        if t.state != TenantState::Active {
            return Err(EngineError::TenantNotActive(tenant.clone(), t.state));
        }
        let limit = u64::from(t.config.quotas.runs_per_day);
        let used = self.runs.count_runs_since(tenant, start_of_day(now)).await?;
        if used >= limit {
            let midnight = start_of_day(now) + chrono::Duration::days(1);
            let retry_after_secs = u64::try_from((midnight - now).num_seconds()).unwrap_or(1).max(1);
            return Err(EngineError::QuotaExceeded {
                message: format!(
                    "tenant {tenant} has started {used} pipeline runs today, its quotas.runs_per_day limit of \
                     {limit}; the count resets at 00:00 UTC"
                ),
                retry_after_secs,
            });
        }
        if INGESTING.contains(&def.processor.as_str()) {
            self.check_intake_quotas(tenant, &t.config).await?;
        }
        Ok(())
    }

    /// Binds and resolves a run of `def` and builds what the store writes for it: the run, its job and
    /// `PIPELINE_RUN_CREATED`.
    fn prepare(
        &self,
        def: &Arc<PipelineDefinition>,
        tenant: &TenantId,
        parameters: Map<String, Value>,
        triggered_by: &str,
        now: DateTime<Utc>,
    ) -> Result<FollowUp, EngineError> {
        let run_id = frostbyte_core::ids::new_id();
        let resolved = self
            .resolve(def.clone(), tenant, run_id, now.date_naive(), &parameters)
            .map_err(EngineError::Validation)?;
        if def.processor == sync::PROCESSOR {
            let settings = self.documents.as_ref().map(|p| p.sync_settings.clone()).unwrap_or_default();
            if let Some(problem) = sync::check_source(resolved.source.as_deref(), tenant, &settings) {
                return Err(EngineError::Validation(violations(vec![("parameters.source".into(), problem)])));
            }
        }
        let new = NewRun::new(run_id, def.domain.clone(), def.name.clone(), resolved.parameters, triggered_by);
        let job = NewJob::new(Stage::Pipeline, run_id.to_string(), json!({"domain": def.domain, "pipeline": def.name}))
            .dedupe_key(format!("run:{run_id}"));
        let audit = self.audit(
            "PIPELINE_RUN_CREATED",
            triggered_by,
            run_id,
            def,
            json!({"status": "pending", "triggered_by": triggered_by,
                   "parameters": new.parameters.keys().collect::<Vec<_>>()}),
        );
        Ok(FollowUp { run: new, job, audit })
    }

    /// Refuses a run of an ingesting processor when the tenant's intake quotas are already spent: its
    /// `quotas.documents_per_day` (UTC day) or its `storage_quota_gb`, counted as intake counts them. A run that
    /// starts with room left rejects, file by file, what would pass them (`QUOTA_EXCEEDED` in its counts).
    async fn check_intake_quotas(
        &self,
        tenant: &TenantId,
        config: &frostbyte_core::tenant::TenantConfig,
    ) -> Result<(), EngineError> {
        let Some(plane) = &self.documents else { return Ok(()) };
        match plane.intake.quota_spent(tenant, config).await {
            Ok(None) => Ok(()),
            Ok(Some(q)) => Err(EngineError::QuotaExceeded {
                message: format!("this pipeline takes in documents, but {}", q.message),
                retry_after_secs: q.retry_after_secs,
            }),
            Err(crate::intake::IntakeError::Store(e)) => Err(e.into()),
            Err(e) => Err(EngineError::Store(StoreError::Unavailable(e.to_string()))),
        }
    }

    pub async fn get_run(&self, tenant: &TenantId, run_id: Uuid) -> Result<PipelineRun, EngineError> {
        self.runs.get_run(tenant, run_id).await?.ok_or(EngineError::NotFound("pipeline run"))
    }

    pub async fn list_runs(&self, tenant: &TenantId, filter: &RunFilter) -> Result<Vec<PipelineRun>, EngineError> {
        Ok(self.runs.list_runs(tenant, filter).await?)
    }

    /// Cancels a run: at once when pending; otherwise flags it and signals the executing task if it is here.
    pub async fn cancel(&self, tenant: &TenantId, run_id: Uuid, actor: &str) -> Result<PipelineRun, EngineError> {
        let deliveries = match self.runs.get_run(tenant, run_id).await? {
            Some(r) => self.deliveries_for(&r, RunStatus::Cancelled),
            None => Vec::new(),
        };
        let run = self.runs.request_cancel(tenant, run_id, actor, deliveries).await.map_err(|e| match e {
            StoreError::NotFound { .. } => EngineError::NotFound("pipeline run"),
            e => e.into(),
        })?;
        if run.status == RunStatus::Cancelled {
            self.publish(&run, "PIPELINE_RUN_CANCELLED", None);
        }
        if let Some(token) = self.running.lock().expect("running lock").get(&run_id) {
            token.cancel();
        }
        Ok(run)
    }

    fn audit(&self, kind: &str, actor: &str, run_id: Uuid, def: &PipelineDefinition, extra: Value) -> NewAuditEvent {
        let mut details = json!({"component": "pipeline", "run_id": run_id.to_string(), "pipeline": def.key(),
                                 "processor": def.processor});
        if let (Some(d), Value::Object(extra)) = (details.as_object_mut(), extra) {
            d.extend(extra);
        }
        NewAuditEvent::new(kind, actor, "pipeline_run", run_id.to_string(), details)
    }

    fn publish(&self, run: &PipelineRun, event_type: &str, error_code: Option<&str>) {
        let message = match run.status {
            RunStatus::Pending => "run created",
            RunStatus::Validating => "run validating",
            RunStatus::Running if event_type == "PIPELINE_RUN_RETRYING" => "run attempt failed; will retry",
            RunStatus::Running => "run started",
            RunStatus::Completed => "run completed",
            RunStatus::Failed => "run failed",
            RunStatus::Cancelled => "run cancelled",
        };
        let mut e = Event::new(format!("{}/{}", run.domain, run.pipeline), &run.tenant_id, message)
            .run(run.run_id)
            .status(run.status.as_str())
            .event_type(event_type)
            .count("records_processed", run.records_processed);
        e.level = match run.status {
            RunStatus::Failed => Level::Error,
            _ if event_type == "PIPELINE_RUN_RETRYING" => Level::Warn,
            _ => Level::Info,
        };
        if let Some(code) = error_code {
            e = e.error_code(code);
        }
        self.events.publish(e);
    }

    /// Applies a transition with its audit event and publishes it.
    async fn transition(
        &self,
        run: &PipelineRun,
        def: Option<&PipelineDefinition>,
        change: RunTransition,
        event_type: &str,
        extra: Value,
    ) -> Result<PipelineRun, StoreError> {
        let mut details = json!({"component": "pipeline", "run_id": run.run_id.to_string(),
                                 "pipeline": format!("{}/{}", run.domain, run.pipeline), "status": change.to.as_str()});
        if let Some(def) = def {
            details["processor"] = json!(def.processor);
        }
        if let (Some(d), Value::Object(extra)) = (details.as_object_mut(), extra) {
            d.extend(extra);
        }
        let audit = NewAuditEvent::new(event_type, ACTOR, "pipeline_run", run.run_id.to_string(), details);
        let code = (change.to == RunStatus::Failed).then_some("PIPELINE_RUN_FAILED");
        let mut change = change;
        if change.to.is_terminal() {
            self.endings(run, &mut change).await;
        }
        let chained = change.follow_ups.len();
        let updated = self.runs.transition_run(&run.tenant_id, run.run_id, change, audit).await?;
        self.publish(&updated, event_type, code);
        if chained > 0 {
            for child in self.runs.follow_ups(&updated.tenant_id, updated.run_id).await.unwrap_or_default() {
                self.publish(&child, "PIPELINE_RUN_CREATED", None);
            }
        }
        Ok(updated)
    }

    fn claim_options(&self, worker_id: &str) -> ClaimOptions {
        ClaimOptions::new(worker_id, self.settings.lease, self.settings.per_tenant_cap).stages([Stage::Pipeline])
    }

    /// Claims one pipeline job and executes its run to the end (or to a retry).
    pub async fn try_run_one(&self, worker_id: &str) -> anyhow::Result<RunOnce> {
        let Some(job) = self.queue.claim(&self.claim_options(worker_id), frostbyte_core::now()).await? else {
            return Ok(RunOnce::Idle);
        };
        let job_id = job.job_id;
        self.execute(job, worker_id, None).await?;
        Ok(RunOnce::Ran(job_id))
    }

    /// Executes a claimed job's run; `processor` replaces the registry's (tests use it for misbehaving ones).
    async fn execute(&self, job: Job, worker: &str, processor: Option<ProcessorFn>) -> anyhow::Result<()> {
        let tenant = job.tenant_id.clone();
        let finish_job = |result: Result<(), StoreError>| match result {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        let Ok(run_id) = Uuid::parse_str(&job.resource_id) else {
            let dead = RetryPolicy::uniform(StageRetry::new(1, Vec::new()));
            let error = JobError::new("INVALID_JOB", "the job's resource id is not a run id");
            self.queue.fail(job.job_id, worker, error, &dead, frostbyte_core::now()).await?;
            return Ok(());
        };
        let Some(mut run) = self.runs.get_run(&tenant, run_id).await? else {
            return finish_job(self.queue.complete(job.job_id, worker).await);
        };
        if run.status.is_terminal() {
            return finish_job(self.queue.complete(job.job_id, worker).await);
        }
        let def = self.definition(&run.domain, &run.pipeline);
        if run.cancel_requested {
            let change = RunTransition::to(RunStatus::Cancelled).completes_job(job.job_id, worker);
            return finish_job(
                self.transition(&run, def.as_deref(), change, "PIPELINE_RUN_CANCELLED", json!({})).await.map(|_| ()),
            );
        }
        let resumed = run.status != RunStatus::Pending;
        if resumed {
            tracing::warn!(tenant = %tenant, run_id = %run_id, attempt = job.attempts, "resuming an interrupted or retried run");
        }
        // Validating: checked again, since the tenant or the definitions may have changed since creation.
        if run.status != RunStatus::Running {
            let ty = if resumed { "PIPELINE_RUN_RESUMED" } else { "PIPELINE_RUN_VALIDATING" };
            run = match self
                .transition(
                    &run,
                    def.as_deref(),
                    RunTransition::to(RunStatus::Validating),
                    ty,
                    json!({"attempt": job.attempts}),
                )
                .await
            {
                Ok(r) => r,
                Err(StoreError::Conflict(_)) => return finish_job(self.queue.complete(job.job_id, worker).await),
                Err(e) => return Err(e.into()),
            };
        }
        let resolved = match self.validate_for_execution(&run, def).await {
            Ok(r) => r,
            Err(message) => {
                let change = RunTransition::to(RunStatus::Failed).error(message).completes_job(job.job_id, worker);
                return finish_job(
                    self.transition(&run, None, change, "PIPELINE_RUN_FAILED", json!({"phase": "validation"}))
                        .await
                        .map(|_| ()),
                );
            }
        };
        let def = resolved.definition.clone();
        let started_type =
            if run.status == RunStatus::Running { "PIPELINE_RUN_RESUMED" } else { "PIPELINE_RUN_STARTED" };
        run = match self
            .transition(
                &run,
                Some(&def),
                RunTransition::to(RunStatus::Running),
                started_type,
                json!({"attempt": job.attempts}),
            )
            .await
        {
            Ok(r) => r,
            Err(StoreError::Conflict(_)) => return finish_job(self.queue.complete(job.job_id, worker).await),
            Err(e) => return Err(e.into()),
        };
        let Some(processor) = processor.or_else(|| processors::lookup(&def.processor)) else {
            let change = RunTransition::to(RunStatus::Failed)
                .error(format!("processor {:?} is not in this build's registry", def.processor))
                .completes_job(job.job_id, worker);
            return finish_job(
                self.transition(&run, Some(&def), change, "PIPELINE_RUN_FAILED", json!({})).await.map(|_| ()),
            );
        };

        let token = CancelToken::default();
        self.running.lock().expect("running lock").insert(run_id, token.clone());
        let ctx = RunContext {
            tenant: tenant.clone(),
            run_id,
            definition: def.clone(),
            parameters: resolved.parameters,
            source: resolved.source,
            target: resolved.target,
            options: resolved.options,
            store: self.store.clone(),
            blobs: self.blobs.clone(),
            runs: self.runs.clone(),
            documents: self.documents.clone(),
            connections: self.settings.connections.clone(),
            cancel: token.clone(),
        };
        let ending = self.with_heartbeat(job.job_id, worker, self.supervise(&run, processor, ctx, token)).await;
        self.running.lock().expect("running lock").remove(&run_id);

        let (change, event_type, extra) = match ending {
            Ending::Done(outcome) => (
                RunTransition::to(RunStatus::Completed).records(outcome.records).counts(outcome.counts.clone()),
                "PIPELINE_RUN_COMPLETED",
                json!({"records_processed": outcome.records, "counts": outcome.counts}),
            ),
            Ending::Cancelled => (
                RunTransition::to(RunStatus::Cancelled).error("cancelled while running"),
                "PIPELINE_RUN_CANCELLED",
                json!({}),
            ),
            Ending::TimedOut(secs) => (
                RunTransition::to(RunStatus::Failed).error(format!("timed out after {secs} s")),
                "PIPELINE_RUN_FAILED",
                json!({"error_code": "PIPELINE_TIMEOUT"}),
            ),
            Ending::Panicked(message) => (
                RunTransition::to(RunStatus::Failed).error(format!("processor {} panicked: {message}", def.processor)),
                "PIPELINE_RUN_FAILED",
                json!({"error_code": "PROCESSOR_PANICKED"}),
            ),
            Ending::Failed(ProcessorError::Cancelled) => (
                RunTransition::to(RunStatus::Cancelled).error("cancelled while running"),
                "PIPELINE_RUN_CANCELLED",
                json!({}),
            ),
            Ending::Failed(ProcessorError::Failed { message, retryable }) => {
                if retryable && job.attempts < def.retry.max_attempts {
                    let retry = StageRetry::new(
                        def.retry.max_attempts,
                        def.retry.backoff_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
                    );
                    let note =
                        format!("attempt {} of {} failed: {message}; retrying", job.attempts, def.retry.max_attempts);
                    let change = RunTransition::to(RunStatus::Running).error(note);
                    self.transition(
                        &run,
                        Some(&def),
                        change,
                        "PIPELINE_RUN_RETRYING",
                        json!({"attempt": job.attempts}),
                    )
                    .await?;
                    let policy = RetryPolicy::uniform(retry);
                    let error = JobError::new("PIPELINE_RUN_FAILED", message);
                    return finish_job(
                        self.queue.fail(job.job_id, worker, error, &policy, frostbyte_core::now()).await.map(|_| ()),
                    );
                }
                (
                    RunTransition::to(RunStatus::Failed).error(message),
                    "PIPELINE_RUN_FAILED",
                    json!({"error_code": "PROCESSOR_FAILED"}),
                )
            }
        };
        let change = change.completes_job(job.job_id, worker);
        match self.transition(&run, Some(&def), change, event_type, extra).await {
            Ok(done) => {
                tracing::info!(tenant = %tenant, run_id = %run_id, status = done.status.as_str(), records = done.records_processed, "pipeline run finished");
                Ok(())
            }
            Err(StoreError::Conflict(reason)) => {
                tracing::warn!(run_id = %run_id, %reason, "run finished elsewhere or its lease was lost; nothing written");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Re-checks a run before it executes; the message says what is wrong.
    async fn validate_for_execution(
        &self,
        run: &PipelineRun,
        def: Option<Arc<PipelineDefinition>>,
    ) -> Result<Resolved, String> {
        let def = def.ok_or_else(|| format!("pipeline {}/{} is no longer defined", run.domain, run.pipeline))?;
        match self.store.get_tenant(&run.tenant_id).await {
            Ok(Some(t)) if t.state == TenantState::Active => {}
            Ok(Some(t)) => return Err(format!("tenant {} is {}, not ACTIVE", t.tenant_id, t.state)),
            Ok(None) => return Err("the tenant no longer exists".into()),
            Err(e) => return Err(format!("cannot read the tenant: {e}")),
        }
        self.resolve(def, &run.tenant_id, run.run_id, run.created_at.date_naive(), &run.parameters).map_err(
            |problems| problems.iter().map(|p| format!("{}: {}", p.field, p.constraint)).collect::<Vec<_>>().join("; "),
        )
    }

    /// Runs the processor in its own task, raced against the timeout and cancellation.
    async fn supervise(
        &self,
        run: &PipelineRun,
        processor: ProcessorFn,
        ctx: RunContext,
        token: CancelToken,
    ) -> Ending {
        let timeout_secs = ctx.definition.timeout_secs;
        let mut task = tokio::spawn(processor(ctx));
        let poll_flag = async {
            loop {
                tokio::time::sleep(self.settings.cancel_poll).await;
                if let Ok(Some(r)) = self.runs.get_run(&run.tenant_id, run.run_id).await
                    && r.cancel_requested
                {
                    token.cancel();
                }
            }
        };
        let ending = tokio::select! {
            joined = &mut task => return match joined {
                Ok(Ok(outcome)) if !token.is_cancelled() => Ending::Done(outcome),
                Ok(Ok(_)) => Ending::Cancelled,
                Ok(Err(e)) => Ending::Failed(e),
                Err(e) if e.is_panic() => Ending::Panicked(panic_message(e.into_panic())),
                Err(_) => Ending::Cancelled,
            },
            () = tokio::time::sleep(Duration::from_secs(timeout_secs)) => Ending::TimedOut(timeout_secs),
            () = token.cancelled() => Ending::Cancelled,
            () = poll_flag => Ending::Cancelled,
        };
        // Give the processor a moment to notice the token and stop cleanly, then stop it.
        token.cancel();
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
        }
        ending
    }

    /// Runs `work`, extending the job's lease every third of it.
    async fn with_heartbeat<F: std::future::Future>(&self, job_id: Uuid, worker: &str, work: F) -> F::Output {
        let every = (self.settings.lease / 3).max(Duration::from_millis(10));
        let beat = async {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match self.queue.heartbeat(job_id, worker, self.settings.lease, frostbyte_core::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job_id = %job_id, worker, "run lease lost; heartbeat stopped");
                        return;
                    }
                    Err(error) => tracing::warn!(job_id = %job_id, %error, "heartbeat failed; will retry"),
                }
            }
        };
        let mut work = std::pin::pin!(work);
        tokio::select! {
            out = &mut work => out,
            () = beat => work.await,
        }
    }

    /// Start-up recovery: fails every unfinished run whose job can no longer run it. Runs whose job is queued or
    /// leased are left to the queue (a lapsed lease is reclaimed and the run resumed). Returns how many failed.
    pub async fn recover(&self) -> anyhow::Result<u64> {
        let mut failed = 0;
        for run in self.runs.unfinished_runs().await? {
            let job = self.queue.get_job(&run.tenant_id, run.job_id).await?;
            let reason = match job.as_ref().map(|j| j.status) {
                Some(JobStatus::Queued | JobStatus::Running) => continue,
                Some(status) => format!("interrupted: the process running it stopped and its job is {status}"),
                None => "interrupted: its job no longer exists".to_owned(),
            };
            let def = self.definition(&run.domain, &run.pipeline);
            let change = RunTransition::to(RunStatus::Failed).error(reason);
            match self
                .transition(&run, def.as_deref(), change, "PIPELINE_RUN_FAILED", json!({"phase": "recovery"}))
                .await
            {
                Ok(_) => failed += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if failed > 0 {
            tracing::warn!(failed, "pipeline runs interrupted by a previous process were marked failed");
        }
        Ok(failed)
    }

    /// Executes runs in-process until `run_id` is finished (`frostbyte pipeline run --wait`).
    pub async fn drive_until_finished(
        &self,
        tenant: &TenantId,
        run_id: Uuid,
        worker: &str,
    ) -> anyhow::Result<PipelineRun> {
        loop {
            let run = self.get_run(tenant, run_id).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            if self.try_run_one(worker).await? == RunOnce::Idle {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned());
    JobError::new("", text).message
}

/// Runs pipeline jobs until `shutdown` turns true, sleeping `poll` when idle.
pub async fn run_worker(
    engine: Arc<Engine>,
    worker: String,
    poll: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tracing::info!(worker = %worker, "pipeline-engine worker started");
    while !*shutdown.borrow() {
        let idle = match engine.try_run_one(&worker).await {
            Ok(RunOnce::Ran(_)) => false,
            Ok(RunOnce::Idle) => true,
            Err(error) => {
                tracing::error!(worker = %worker, %error, "pipeline-engine worker could not run a job");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    tracing::info!(worker = %worker, "pipeline-engine worker stopped");
}

/// Recovers interrupted runs, then starts `count` engine workers.
pub fn spawn_workers(
    engine: &Arc<Engine>,
    count: u32,
    poll: Duration,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let host = std::process::id();
    (0..count)
        .map(|n| {
            let engine = engine.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if n == 0
                    && let Err(error) = engine.recover().await
                {
                    tracing::error!(%error, "cannot recover interrupted pipeline runs");
                }
                if n == 0 && engine.schedules.is_some() {
                    let interval = engine.settings.schedule_poll;
                    tokio::spawn(schedules::run_scheduler(engine.clone(), interval, shutdown.clone()));
                }
                if n == 0 {
                    let interval = engine.settings.webhook_poll;
                    tokio::spawn(webhooks::run_deliveries(engine.clone(), interval, shutdown.clone()));
                }
                run_worker(engine, format!("engine-{host}-{n}"), poll, shutdown).await;
            })
        })
        .collect()
}

/// A scratch SQLite store (in a temporary directory, migrated) and an in-memory blob store holding the tenant
/// `acme`: what the engine's unit tests run on.
#[cfg(test)]
pub(crate) async fn scratch_acme() -> (frostbyte_adapters::resolve::MetadataPorts, Arc<dyn BlobStore>, tempfile::TempDir)
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fb.db").display());
    let ports = frostbyte_adapters::resolve::metadata_ports(&url, 4).await.unwrap();
    ports.store.migrate().await.unwrap();
    let blobs = frostbyte_adapters::resolve::blob_store("memory://").unwrap();
    let tenants =
        frostbyte_core::service::TenantService::new(ports.store.clone(), blobs.clone(), ports.documents.clone());
    let req = frostbyte_core::service::tenants::CreateTenant {
        tenant_id: "acme".into(),
        tenant_name: "Acme".into(),
        contact_email: "ops@acme.test".into(),
        tier: None,
        config: None,
    };
    tenants.create(req, &frostbyte_core::service::tenants::Actor::Cli).await.unwrap();
    (ports, blobs, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn engine() -> (Engine, TenantId, tempfile::TempDir) {
        let (ports, blobs, dir) = crate::engine::scratch_acme().await;
        let tenant = TenantId::parse("acme").unwrap();
        let engine = Engine::new(
            ports.runs,
            ports.store,
            ports.queue,
            blobs,
            Arc::new(EventBus::default()),
            EngineSettings::default(),
        );
        (engine, tenant, dir)
    }

    async fn claim_and_execute(engine: &Engine, processor: ProcessorFn) -> PipelineRun {
        let job = engine.queue.claim(&engine.claim_options("w"), frostbyte_core::now()).await.unwrap().expect("a job");
        let tenant = job.tenant_id.clone();
        let run_id = Uuid::parse_str(&job.resource_id).unwrap();
        engine.execute(job, "w", Some(processor)).await.unwrap();
        engine.get_run(&tenant, run_id).await.unwrap()
    }

    fn params() -> Map<String, Value> {
        json!({"source": "in.csv", "target": "out.jsonl"}).as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn a_panicking_processor_fails_the_run_and_the_worker_lives() {
        let (engine, tenant, _dir) = engine().await;
        engine.create_run(&tenant, "records", "copy", params(), "test").await.unwrap();
        let run = claim_and_execute(&engine, |_| Box::pin(async { panic!("boom at row 3") })).await;
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error_message.as_deref(), Some("processor records.copy panicked: boom at row 3"));
        let job = engine.queue.get_job(&tenant, run.job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Succeeded, "the job is finished with the run");
        // The same engine goes on to run the next one.
        engine.create_run(&tenant, "records", "copy", params(), "test").await.unwrap();
        let next =
            claim_and_execute(&engine, |_| Box::pin(async { Ok(Outcome { records: 2, counts: Map::new() }) })).await;
        assert_eq!((next.status, next.records_processed), (RunStatus::Completed, 2));
    }

    /// A processor that works until it is cancelled, checking its token like the built-in ones.
    fn until_cancelled(ctx: RunContext) -> futures::future::BoxFuture<'static, Result<Outcome, ProcessorError>> {
        Box::pin(async move {
            loop {
                if ctx.cancel.is_cancelled() {
                    return Err(ProcessorError::Cancelled);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    #[tokio::test]
    async fn cancelling_an_executing_run_stops_it_promptly() {
        let (engine, tenant, _dir) = engine().await;
        let engine = Arc::new(engine);
        let run = engine.create_run(&tenant, "records", "copy", params(), "test").await.unwrap();
        let job = engine.queue.claim(&engine.claim_options("w"), frostbyte_core::now()).await.unwrap().unwrap();
        let exec = tokio::spawn({
            let engine = engine.clone();
            async move { engine.execute(job, "w", Some(until_cancelled)).await.unwrap() }
        });
        while engine.get_run(&tenant, run.run_id).await.unwrap().status != RunStatus::Running {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let asked = std::time::Instant::now();
        let flagged = engine.cancel(&tenant, run.run_id, "admin").await.unwrap();
        assert!(flagged.cancel_requested);
        tokio::time::timeout(Duration::from_secs(3), exec).await.expect("stopped promptly").unwrap();
        assert!(asked.elapsed() < Duration::from_secs(3));
        let done = engine.get_run(&tenant, run.run_id).await.unwrap();
        assert_eq!(done.status, RunStatus::Cancelled);
        assert_eq!(done.error_message.as_deref(), Some("cancelled while running"));
        let job = engine.queue.get_job(&tenant, done.job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Succeeded);
    }

    #[tokio::test]
    async fn a_run_past_its_timeout_fails_with_the_timeout() {
        let (engine, tenant, dir) = engine().await;
        let defs = dir.path().join("pipelines/ops");
        std::fs::create_dir_all(&defs).unwrap();
        std::fs::write(defs.join("slow.yml"), "name: slow\ndomain: ops\nprocessor: records.copy\ntimeout_secs: 1\n")
            .unwrap();
        assert!(engine.reload(Some(&dir.path().join("pipelines"))).errors.is_empty());
        engine.create_run(&tenant, "ops", "slow", Map::new(), "test").await.unwrap();
        let run = claim_and_execute(&engine, until_cancelled).await;
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error_message.as_deref(), Some("timed out after 1 s"));
    }

    #[tokio::test]
    async fn a_retryable_failure_goes_back_to_the_queue_then_fails() {
        let (engine, tenant, _dir) = engine().await;
        let created = engine.create_run(&tenant, "records", "copy", params(), "test").await.unwrap();
        let flaky: ProcessorFn = |_| {
            Box::pin(async {
                Err(ProcessorError::Failed { message: "blob store unavailable".into(), retryable: true })
            })
        };
        let first = claim_and_execute(&engine, flaky).await;
        assert_eq!(first.status, RunStatus::Running);
        assert!(first.error_message.as_deref().unwrap().contains("attempt 1 of 2 failed"), "{first:?}");
        let job = engine.queue.get_job(&tenant, created.job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Queued);
        // The backoff (30 s) has to pass before the job is claimable again.
        let later = frostbyte_core::now() + chrono::Duration::seconds(31);
        let job = engine.queue.claim(&engine.claim_options("w"), later).await.unwrap().expect("retry");
        engine.execute(job, "w", Some(flaky)).await.unwrap();
        let run = engine.get_run(&tenant, created.run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error_message.as_deref(), Some("blob store unavailable"));
    }

    #[tokio::test]
    async fn a_run_whose_job_died_is_failed_at_recovery() {
        let (engine, tenant, _dir) = engine().await;
        let run = engine.create_run(&tenant, "records", "copy", params(), "test").await.unwrap();
        assert_eq!(engine.recover().await.unwrap(), 0, "a queued job will still run it");
        // A worker took it, then the process died and the job's attempts were spent.
        let job = engine.queue.claim(&engine.claim_options("w"), frostbyte_core::now()).await.unwrap().unwrap();
        let dead = RetryPolicy::uniform(StageRetry::new(1, Vec::new()));
        engine
            .queue
            .fail(job.job_id, "w", JobError::new("LEASE_EXPIRED", "gone"), &dead, frostbyte_core::now())
            .await
            .unwrap();
        assert_eq!(engine.recover().await.unwrap(), 1);
        let run = engine.get_run(&tenant, run.run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert!(run.error_message.unwrap().contains("interrupted"));
    }

    /// A process killed mid-run: its heartbeats stop, the lease lapses, and another worker resumes the run from
    /// the start (audited `PIPELINE_RUN_RESUMED`) and finishes it; the run is never left `running`.
    #[tokio::test]
    async fn a_run_whose_process_was_killed_is_resumed_by_another_worker() {
        let (engine, tenant, _dir) = engine().await;
        let engine = Arc::new(engine);
        let run = engine.create_run(&tenant, "records", "copy", params(), "test").await.unwrap();
        let job = engine.queue.claim(&engine.claim_options("doomed"), frostbyte_core::now()).await.unwrap().unwrap();
        let doomed = tokio::spawn({
            let engine = engine.clone();
            async move { engine.execute(job, "doomed", Some(until_cancelled)).await }
        });
        while engine.get_run(&tenant, run.run_id).await.unwrap().status != RunStatus::Running {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // SIGKILL: the task stops between two awaits, with no transition and no further heartbeat.
        doomed.abort();
        assert!(doomed.await.unwrap_err().is_cancelled());
        assert_eq!(engine.get_run(&tenant, run.run_id).await.unwrap().status, RunStatus::Running);
        // A restart's recovery leaves it to the queue, since its job is still leased.
        assert_eq!(engine.recover().await.unwrap(), 0);
        // Before the lease lapses nobody else can take it; after, another worker does.
        assert!(engine.queue.claim(&engine.claim_options("heir"), frostbyte_core::now()).await.unwrap().is_none());
        let later = frostbyte_core::now() + chrono::Duration::from_std(engine.settings.lease).unwrap();
        let later = later + chrono::Duration::seconds(1);
        let job = engine.queue.claim(&engine.claim_options("heir"), later).await.unwrap().expect("the lapsed lease");
        assert_eq!(job.attempts, 2);
        engine
            .execute(job, "heir", Some(|_| Box::pin(async { Ok(Outcome { records: 5, counts: Map::new() }) })))
            .await
            .unwrap();
        let done = engine.get_run(&tenant, run.run_id).await.unwrap();
        assert_eq!((done.status, done.records_processed), (RunStatus::Completed, 5));
        let types: Vec<String> = engine
            .events
            .recent(64)
            .iter()
            .filter(|p| p.event.run_id == Some(run.run_id))
            .filter_map(|p| p.event.event_type.clone())
            .collect();
        assert_eq!(
            types,
            [
                "PIPELINE_RUN_CREATED",
                "PIPELINE_RUN_VALIDATING",
                "PIPELINE_RUN_STARTED",
                "PIPELINE_RUN_RESUMED",
                "PIPELINE_RUN_COMPLETED"
            ]
        );
    }
}
