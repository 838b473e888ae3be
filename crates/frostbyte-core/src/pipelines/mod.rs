//! The pipeline engine's domain (DESIGN.md §4): pipeline definitions and their typed parameters
//! ([`definition`]), the `{{…}}` templates resolved per run ([`template`]), and runs with their state machine and
//! the [`RunStore`](run::RunStore) port the metadata stores implement ([`run`]), schedules ([`schedule`]),
//! webhook deliveries ([`webhook`]), and the column mapping and coercion of `records.copy` ([`records`]).
//!
//! Parsing YAML and executing processors happen in the binary (`frostbyte::engine`); this module is pure.

pub mod definition;
pub mod records;
pub mod run;
pub mod schedule;
pub mod sync;
pub mod template;
pub mod webhook;

pub use definition::{
    DefinitionError, FollowUpSpec, ParamSpec, ParamType, PipelineDefinition, RawDefinition, RetrySpec,
};
pub use run::{FollowUp, NewRun, PipelineRun, RunFilter, RunStatus, RunStore, RunTransition};
pub use schedule::{Overlap, Schedule, ScheduleChange, ScheduleError, ScheduleStore};
pub use sync::{SyncStore, SyncedFile, SyncedFileState};
pub use template::{TemplateContext, TemplateError};
pub use webhook::{
    AttemptRecord, Delivery, DeliveryAttempt, DeliveryStatus, NewDelivery, WebhookEvent, WebhookRetry, WebhookSpec,
};
