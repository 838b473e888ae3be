//! `{{…}}` templates in pipeline definitions, resolved once per run.
//!
//! Variables: `{{tenant}}`, `{{env}}`, `{{date}}` (the run's day, `YYYY-MM-DD`, UTC), `{{yesterday}}`,
//! `{{year}}`, `{{month}}`, `{{day}}` (zero-padded), `{{run_id}}`, and each parameter as `{{params.NAME}}` or
//! `{{NAME}}` (a built-in variable wins over a parameter of the same name). Whitespace inside the braces is
//! ignored. A substituted value that itself contains a template is resolved again, at most
//! [`MAX_DEPTH`] levels deep, so a parameter default of `{{yesterday}}` works and a self-reference fails instead
//! of looping. An unknown variable or an unterminated `{{` is an error, never an empty string.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde_json::Value;
use uuid::Uuid;

/// How deep substituted values may nest templates.
pub const MAX_DEPTH: usize = 8;

/// Why a template could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template variable {{{{{0}}}}}")]
    Unknown(String),
    #[error("unterminated template: {{{{ without }}}}")]
    Unterminated,
    #[error("templates nest more than {MAX_DEPTH} levels deep (a variable refers to itself?)")]
    TooDeep,
}

/// Whether `s` contains a template opening.
pub fn has_template(s: &str) -> bool {
    s.contains("{{")
}

/// The variables of one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateContext {
    vars: BTreeMap<String, String>,
    params: BTreeMap<String, String>,
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl TemplateContext {
    /// The built-in variables for a run of `tenant` in `env` with `run_id`, on `date`.
    pub fn for_run(tenant: &str, env: &str, run_id: Uuid, date: NaiveDate) -> Self {
        let yesterday = date.pred_opt().unwrap_or(date);
        let vars = [
            ("tenant", tenant.to_owned()),
            ("env", env.to_owned()),
            ("date", date.format("%Y-%m-%d").to_string()),
            ("yesterday", yesterday.format("%Y-%m-%d").to_string()),
            ("year", format!("{:04}", date.year())),
            ("month", format!("{:02}", date.month())),
            ("day", format!("{:02}", date.day())),
            ("run_id", run_id.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        TemplateContext { vars, params: BTreeMap::new() }
    }

    /// Placeholder values for every built-in variable: checks definitions at load time.
    pub fn probe() -> Self {
        TemplateContext::for_run("tenant", "env", Uuid::nil(), NaiveDate::from_ymd_opt(2026, 1, 2).expect("date"))
    }

    /// Sets (or replaces) a variable, such as `parent.status` in a follow-up's context.
    pub fn set_var(&mut self, name: &str, value: impl Into<String>) {
        self.vars.insert(name.to_owned(), value.into());
    }

    pub fn set_param(&mut self, name: &str, value: Value) {
        self.params.insert(name.to_owned(), scalar_text(&value));
    }

    /// This context with every bound parameter set.
    pub fn with_params(mut self, params: &serde_json::Map<String, Value>) -> Self {
        for (k, v) in params {
            self.set_param(k, v.clone());
        }
        self
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        if let Some(p) = name.strip_prefix("params.") {
            return self.params.get(p).map(String::as_str);
        }
        self.vars.get(name).or_else(|| self.params.get(name)).map(String::as_str)
    }

    /// Resolves every template in `s`.
    pub fn resolve(&self, s: &str) -> Result<String, TemplateError> {
        self.resolve_at(s, 0)
    }

    fn resolve_at(&self, s: &str, depth: usize) -> Result<String, TemplateError> {
        if !has_template(s) {
            return Ok(s.to_owned());
        }
        if depth >= MAX_DEPTH {
            return Err(TemplateError::TooDeep);
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unterminated)?;
            let name = after[..end].trim();
            let value = self.lookup(name).ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
            out.push_str(&self.resolve_at(value, depth + 1)?);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Resolves every string in a JSON tree (object keys are left as they are).
    pub fn resolve_value(&self, v: &Value) -> Result<Value, TemplateError> {
        Ok(match v {
            Value::String(s) => Value::String(self.resolve(s)?),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.resolve_value(i)).collect::<Result<_, _>>()?),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve_value(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }
}

impl fmt::Display for TemplateContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} variables, {} parameters", self.vars.len(), self.params.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> TemplateContext {
        let run = Uuid::parse_str("0190c3a4-0000-7000-8000-000000000001").unwrap();
        let mut c = TemplateContext::for_run("acme", "prod", run, NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        c.set_param("limit", json!(10));
        c.set_param("prefix", json!("in/{{date}}"));
        c.set_param("loop", json!("{{params.loop}}"));
        c
    }

    #[test]
    fn resolves_the_table() {
        let table = [
            ("plain", "plain"),
            ("{{tenant}}", "acme"),
            ("{{ env }}", "prod"),
            ("{{date}}", "2026-03-01"),
            ("{{yesterday}}", "2026-02-28"),
            ("{{year}}/{{month}}/{{day}}", "2026/03/01"),
            ("{{run_id}}", "0190c3a4-0000-7000-8000-000000000001"),
            ("n={{params.limit}}", "n=10"),
            ("n={{limit}}", "n=10"),
            ("{{prefix}}/x", "in/2026-03-01/x"),
            ("a}}b", "a}}b"),
        ];
        let c = ctx();
        for (input, expected) in table {
            assert_eq!(c.resolve(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn errors_are_never_empty_strings() {
        let c = ctx();
        assert_eq!(c.resolve("x{{nope}}"), Err(TemplateError::Unknown("nope".into())));
        assert_eq!(c.resolve("{{params.nope}}"), Err(TemplateError::Unknown("params.nope".into())));
        assert_eq!(c.resolve("{{tenant"), Err(TemplateError::Unterminated));
        assert_eq!(c.resolve("{{loop}}"), Err(TemplateError::TooDeep));
    }

    #[test]
    fn resolves_through_json_trees() {
        let c = ctx();
        let v = json!({"a": ["{{tenant}}", 3, {"b": "{{day}}"}], "c": true});
        assert_eq!(c.resolve_value(&v).unwrap(), json!({"a": ["acme", 3, {"b": "01"}], "c": true}));
        assert!(c.resolve_value(&json!({"a": ["{{x}}"]})).is_err());
    }

    #[test]
    fn january_first_has_a_yesterday_in_the_previous_year() {
        let c = TemplateContext::for_run("t", "e", Uuid::nil(), NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_eq!(c.resolve("{{yesterday}}").unwrap(), "2025-12-31");
    }
}
