//! Pipeline definitions: what a `pipelines/{domain}/{name}.yml` file says once it has been checked.
//!
//! A file deserialises into a [`RawDefinition`] (unknown fields refused), and [`RawDefinition::validate`] turns
//! it into a [`PipelineDefinition`] or every problem it has, each naming the file and the field. A definition
//! with any problem is never loaded. Parameter values supplied for a run are checked against the typed
//! [`ParamSpec`]s by [`PipelineDefinition::bind_parameters`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::template::{TemplateContext, has_template};
use super::webhook::{WebhookSpec, valid_secret_name, valid_webhook_url};

/// The type of a pipeline parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::Date => "date",
        }
    }

    /// Whether `value` is of this type (dates as `YYYY-MM-DD` strings).
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Date => value
                .as_str()
                .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10),
        }
    }
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub param_type: ParamType,
    #[serde(default)]
    pub required: bool,
    /// Used when the run does not supply the parameter; a string default may be a template (`{{yesterday}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// How a failed run is retried: at most `max_attempts` attempts in all, waiting `backoff_secs[n-1]` after the
/// n-th failure (the last entry once the list runs out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff_secs: Vec<u64>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec { max_attempts: 1, backoff_secs: Vec::new() }
    }
}

/// A run to start when a run of this pipeline ends (`on_success` / `on_failure`). Every string in
/// `parameters` is a template resolved in the finished run's context: its variables (`{{run_id}}` is the
/// finished run's id, `{{date}}` its day, …), its parameters (`{{params.NAME}}`), and `{{parent.run_id}}`,
/// `{{parent.pipeline}}` (`domain/name`), `{{parent.status}}`, `{{parent.records_processed}}` and
/// `{{parent.error_message}}` (empty when there is none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUpSpec {
    /// `domain/name` of a defined pipeline.
    pub pipeline: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, Value>,
}

/// The variables a follow-up's parameters may use beside the finished run's own.
pub const PARENT_VARIABLES: [&str; 5] =
    ["parent.run_id", "parent.pipeline", "parent.status", "parent.records_processed", "parent.error_message"];

/// The most follow-ups one list may declare.
pub const MAX_FOLLOW_UPS: usize = 10;
/// The most webhooks one definition may declare.
pub const MAX_WEBHOOKS: usize = 10;

/// A definition file as written. Everything the engine needs, nothing checked yet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefinition {
    pub name: String,
    pub domain: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub processor: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub parameters: Vec<ParamSpec>,
    /// A default cron schedule (five fields), kept as text until schedules are created from it.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub retry: RetrySpec,
    /// Processor-specific settings; every string in it is a template.
    #[serde(default)]
    pub options: BTreeMap<String, Value>,
    /// Runs to start when a run completes.
    #[serde(default)]
    pub on_success: Vec<FollowUpSpec>,
    /// Runs to start when a run fails (for good: not while it is being retried).
    #[serde(default)]
    pub on_failure: Vec<FollowUpSpec>,
    /// Notifications of run endings.
    #[serde(default)]
    pub webhooks: Vec<WebhookSpec>,
}

fn default_timeout() -> u64 {
    3_600
}

/// A checked definition.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PipelineDefinition {
    pub name: String,
    pub domain: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub processor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub parameters: Vec<ParamSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub timeout_secs: u64,
    pub retry: RetrySpec,
    #[schema(value_type = Object)]
    pub options: BTreeMap<String, Value>,
    pub on_success: Vec<FollowUpSpec>,
    pub on_failure: Vec<FollowUpSpec>,
    pub webhooks: Vec<WebhookSpec>,
    /// Where it was loaded from (`builtin:audit/export.yml` or a path).
    pub origin: String,
}

/// One problem with a definition file: the file, the field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DefinitionError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl DefinitionError {
    pub fn new(file: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Self {
        DefinitionError { file: file.into(), field: field.into(), message: message.into() }
    }
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.field, self.message)
    }
}

/// The longest timeout a definition may ask for: one day.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// The most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 10;

/// Names and domains: lowercase letters, digits, `_` and `-`, starting with a letter, at most 64 characters.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn valid_param_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The context a follow-up's parameters are checked in at load time: the finished run's variables and
/// parameters, and the `parent.*` variables.
pub fn chain_probe_context(params: &[ParamSpec]) -> TemplateContext {
    let mut ctx = probe_context(params);
    for v in PARENT_VARIABLES {
        ctx.set_var(v, "x");
    }
    ctx
}

/// A run's variables for checking templates at load time: every built-in variable, and the declared parameters
/// with placeholder values of their types.
fn probe_context(params: &[ParamSpec]) -> TemplateContext {
    let mut ctx = TemplateContext::probe();
    for p in params {
        let v = match p.param_type {
            ParamType::String => Value::from("x"),
            ParamType::Integer => Value::from(1),
            ParamType::Boolean => Value::from(true),
            ParamType::Date => Value::from("2026-01-01"),
        };
        ctx.set_param(&p.name, v);
    }
    ctx
}

impl RawDefinition {
    /// Checks the definition loaded from `file` (expected at `{domain}/{name}.yml` when `expected` is given).
    /// `known_processors` is the engine's registry. Returns every problem at once.
    pub fn validate(
        self,
        file: &str,
        expected: Option<(&str, &str)>,
        known_processors: &[&str],
    ) -> Result<PipelineDefinition, Vec<DefinitionError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| errors.push(DefinitionError::new(file, field, message));
        if !valid_name(&self.name) {
            err("name", "must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter".into());
        }
        if !valid_name(&self.domain) {
            err("domain", "must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter".into());
        }
        if let Some((domain, name)) = expected {
            if self.domain != domain {
                err("domain", format!("is {:?} but the file is in the {domain:?} directory", self.domain));
            }
            if self.name != name {
                err("name", format!("is {:?} but the file is named {name}.yml", self.name));
            }
        }
        if !known_processors.contains(&self.processor.as_str()) {
            err("processor", format!("unknown processor {:?}; known: {}", self.processor, known_processors.join(", ")));
        }
        if self.timeout_secs == 0 || self.timeout_secs > MAX_TIMEOUT_SECS {
            err("timeout_secs", format!("must be between 1 and {MAX_TIMEOUT_SECS} (got {})", self.timeout_secs));
        }
        if self.retry.max_attempts == 0 || self.retry.max_attempts > MAX_ATTEMPTS {
            err(
                "retry.max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS} (got {})", self.retry.max_attempts),
            );
        }
        if self.retry.backoff_secs.iter().any(|&s| s > MAX_TIMEOUT_SECS) {
            err("retry.backoff_secs", format!("each wait must be at most {MAX_TIMEOUT_SECS} s"));
        }
        if let Some(s) = &self.schedule
            && s.split_whitespace().count() != 5
        {
            err("schedule", format!("{s:?} is not a five-field cron expression"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.parameters.iter().enumerate() {
            let field = format!("parameters[{i}]");
            if !valid_param_name(&p.name) {
                err(&format!("{field}.name"), format!("{:?} must be lowercase letters, digits and '_'", p.name));
            }
            if !seen.insert(p.name.clone()) {
                err(&format!("{field}.name"), format!("parameter {:?} is declared twice", p.name));
            }
            if let Some(d) = &p.default {
                let templated = d.as_str().is_some_and(has_template);
                if !templated && !p.param_type.accepts(d) {
                    err(&format!("{field}.default"), format!("{d} is not a {}", p.param_type.as_str()));
                }
            }
        }
        // Every template must name a known variable: checked now, so a run never meets an unknown one.
        let ctx = probe_context(&self.parameters);
        let mut check = |field: String, v: &Value| {
            if let Err(e) = ctx.resolve_value(v) {
                errors.push(DefinitionError::new(file, field, e.to_string()));
            }
        };
        for (field, v) in [("source", &self.source), ("target", &self.target)] {
            if let Some(s) = v {
                check(field.to_owned(), &Value::from(s.as_str()));
            }
        }
        for (k, v) in &self.options {
            check(format!("options.{k}"), v);
        }
        for (i, p) in self.parameters.iter().enumerate() {
            if let Some(d) = &p.default {
                check(format!("parameters[{i}].default"), d);
            }
        }
        let chain_ctx = chain_probe_context(&self.parameters);
        for (list, specs) in [("on_success", &self.on_success), ("on_failure", &self.on_failure)] {
            if specs.len() > MAX_FOLLOW_UPS {
                errors.push(DefinitionError::new(file, list, format!("at most {MAX_FOLLOW_UPS} follow-ups")));
            }
            for (i, f) in specs.iter().enumerate() {
                let field = format!("{list}[{i}]");
                let well_formed = f.pipeline.split_once('/').is_some_and(|(d, n)| valid_name(d) && valid_name(n));
                if !well_formed {
                    errors.push(DefinitionError::new(
                        file,
                        format!("{field}.pipeline"),
                        format!("{:?} is not domain/name", f.pipeline),
                    ));
                }
                for (k, v) in &f.parameters {
                    if let Err(e) = chain_ctx.resolve_value(v) {
                        errors.push(DefinitionError::new(file, format!("{field}.parameters.{k}"), e.to_string()));
                    }
                }
            }
        }
        if self.webhooks.len() > MAX_WEBHOOKS {
            errors.push(DefinitionError::new(file, "webhooks", format!("at most {MAX_WEBHOOKS} webhooks")));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let mut err = |f: &str, m: String| errors.push(DefinitionError::new(file, format!("webhooks[{i}].{f}"), m));
            if !valid_webhook_url(&w.url) {
                err("url", format!("{:?} is not an absolute http:// or https:// URL", w.url));
            }
            if w.events.is_empty() {
                err("events", "name at least one of completed, failed, cancelled".into());
            }
            let unique: std::collections::BTreeSet<_> = w.events.iter().collect();
            if unique.len() != w.events.len() {
                err("events", "an event is listed twice".into());
            }
            if let Some(name) = &w.secret_env
                && !valid_secret_name(name)
            {
                err(
                    "secret_env",
                    format!("{name:?} must be the NAME of a secret (A-Z, 0-9, _), never the secret itself"),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(PipelineDefinition {
            display_name: self.display_name.unwrap_or_else(|| format!("{}/{}", self.domain, self.name)),
            name: self.name,
            domain: self.domain,
            description: self.description,
            processor: self.processor,
            source: self.source,
            target: self.target,
            parameters: self.parameters,
            schedule: self.schedule,
            timeout_secs: self.timeout_secs,
            retry: self.retry,
            options: self.options,
            on_success: self.on_success,
            on_failure: self.on_failure,
            webhooks: self.webhooks,
            origin: file.to_owned(),
        })
    }
}

impl PipelineDefinition {
    /// `domain/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.domain, self.name)
    }

    /// Checks a run's parameters against the declared ones and applies defaults (a template default is resolved
    /// in `ctx`). Unknown names, missing required ones and wrongly typed values are all reported, as
    /// `(field, problem)` pairs.
    pub fn bind_parameters(
        &self,
        supplied: &Map<String, Value>,
        ctx: &TemplateContext,
    ) -> Result<Map<String, Value>, Vec<(String, String)>> {
        let mut out = Map::new();
        let mut problems = Vec::new();
        for name in supplied.keys() {
            if !self.parameters.iter().any(|p| &p.name == name) {
                problems.push((format!("parameters.{name}"), format!("{} has no parameter {name:?}", self.key())));
            }
        }
        for p in &self.parameters {
            let field = format!("parameters.{}", p.name);
            let value = match (supplied.get(&p.name), &p.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => match ctx.resolve_value(d) {
                    Ok(v) => v,
                    Err(e) => {
                        problems.push((field, e.to_string()));
                        continue;
                    }
                },
                (None, None) if p.required => {
                    problems.push((field, format!("required {} parameter is missing", p.param_type.as_str())));
                    continue;
                }
                (None, None) => continue,
            };
            if !p.param_type.accepts(&value) {
                let hint = if p.param_type == ParamType::Date { " (YYYY-MM-DD)" } else { "" };
                problems.push((field, format!("{value} is not a {}{hint}", p.param_type.as_str())));
                continue;
            }
            out.insert(p.name.clone(), value);
        }
        if problems.is_empty() { Ok(out) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw() -> RawDefinition {
        RawDefinition {
            name: "export".into(),
            domain: "audit".into(),
            display_name: None,
            description: None,
            processor: "audit.export".into(),
            source: None,
            target: Some("exports/{{date}}/{{run_id}}.jsonl".into()),
            parameters: vec![
                ParamSpec {
                    name: "start_date".into(),
                    param_type: ParamType::Date,
                    required: false,
                    default: Some(json!("{{yesterday}}")),
                    description: None,
                },
                ParamSpec {
                    name: "limit".into(),
                    param_type: ParamType::Integer,
                    required: true,
                    default: None,
                    description: None,
                },
            ],
            schedule: Some("0 2 * * *".into()),
            timeout_secs: 60,
            retry: RetrySpec::default(),
            options: BTreeMap::new(),
            on_success: Vec::new(),
            on_failure: Vec::new(),
            webhooks: Vec::new(),
        }
    }

    #[test]
    fn a_good_definition_validates() {
        let d = raw().validate("f.yml", Some(("audit", "export")), &["audit.export"]).unwrap();
        assert_eq!(d.display_name, "audit/export");
        assert_eq!(d.key(), "audit/export");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut r = raw();
        r.processor = "nope".into();
        r.timeout_secs = 0;
        r.target = Some("{{nope}}".into());
        r.schedule = Some("every day".into());
        r.parameters[1].default = Some(json!("abc"));
        let errors = r.validate("x/y.yml", Some(("audit", "other")), &["audit.export"]).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in ["name", "processor", "timeout_secs", "target", "schedule", "parameters[1].default"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(errors.iter().all(|e| e.file == "x/y.yml"));
        assert!(errors.iter().any(|e| e.message.contains("nope")));
    }

    #[test]
    fn follow_ups_and_webhooks_are_checked_with_their_fields() {
        let mut r = raw();
        r.on_success = vec![FollowUpSpec {
            pipeline: "records/copy".into(),
            parameters: [
                ("source".to_owned(), json!("exports/{{run_id}}.jsonl")),
                ("note".to_owned(), json!("{{parent.status}} {{parent.records_processed}} {{params.limit}}")),
            ]
            .into(),
        }];
        r.webhooks = vec![WebhookSpec {
            url: "https://hooks.example.com/fb".into(),
            events: vec![super::super::WebhookEvent::Completed],
            secret_env: Some("ACME_HOOK".into()),
        }];
        let d = r.clone().validate("f.yml", None, &["audit.export"]).unwrap();
        assert_eq!(d.on_success.len(), 1);

        r.on_failure = vec![FollowUpSpec {
            pipeline: "nodomain".into(),
            parameters: [("x".to_owned(), json!("{{parent.nope}}"))].into(),
        }];
        r.webhooks[0].url = "ftp://x".into();
        r.webhooks[0].events.push(super::super::WebhookEvent::Completed);
        r.webhooks[0].secret_env = Some("s3cr3t-value".into());
        let errors = r.validate("f.yml", None, &["audit.export"]).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "on_failure[0].pipeline",
            "on_failure[0].parameters.x",
            "webhooks[0].url",
            "webhooks[0].events",
            "webhooks[0].secret_env",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(errors.iter().any(|e| e.message.contains("parent.nope")));
    }

    #[test]
    fn parameters_are_typed_defaulted_and_required() {
        let d = raw().validate("f.yml", None, &["audit.export"]).unwrap();
        let ctx = TemplateContext::for_run(
            "acme",
            "test",
            uuid::Uuid::nil(),
            chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        );
        let ok = d.bind_parameters(json!({"limit": 5}).as_object().unwrap(), &ctx).unwrap();
        assert_eq!(ok["start_date"], json!("2026-02-28"));
        assert_eq!(ok["limit"], json!(5));

        let cases = [
            (json!({}), "parameters.limit"),
            (json!({"limit": "5"}), "parameters.limit"),
            (json!({"limit": 5, "start_date": "01/02/2026"}), "parameters.start_date"),
            (json!({"limit": 5, "extra": 1}), "parameters.extra"),
        ];
        for (supplied, field) in cases {
            let problems = d.bind_parameters(supplied.as_object().unwrap(), &ctx).unwrap_err();
            assert!(problems.iter().any(|(f, _)| f == field), "{supplied}: {problems:?}");
        }
    }

    #[test]
    fn types_accept_only_their_values() {
        let table = [
            (ParamType::String, json!("a"), true),
            (ParamType::String, json!(1), false),
            (ParamType::Integer, json!(-3), true),
            (ParamType::Integer, json!(1.5), false),
            (ParamType::Boolean, json!(false), true),
            (ParamType::Boolean, json!("true"), false),
            (ParamType::Date, json!("2026-02-29"), false),
            (ParamType::Date, json!("2028-02-29"), true),
            (ParamType::Date, json!("2026-2-1"), false),
        ];
        for (t, v, expected) in table {
            assert_eq!(t.accepts(&v), expected, "{t:?} {v}");
        }
    }
}
