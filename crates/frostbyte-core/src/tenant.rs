//! Tenants: the lifecycle state machine and the versioned, validated per-tenant configuration.
//!
//! The state machine is the single source of truth for which transitions are legal; stores apply a transition
//! as a compare-and-set on the current state, so two concurrent callers cannot both win.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::ids::TenantId;

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TenantState {
    Pending,
    Provisioning,
    Active,
    Suspended,
    Deprovisioning,
    Deprovisioned,
    Failed,
}

impl TenantState {
    pub const ALL: [TenantState; 7] = [
        TenantState::Pending,
        TenantState::Provisioning,
        TenantState::Active,
        TenantState::Suspended,
        TenantState::Deprovisioning,
        TenantState::Deprovisioned,
        TenantState::Failed,
    ];

    /// The legal transitions. Everything not listed is refused.
    pub fn can_transition_to(self, to: TenantState) -> bool {
        use TenantState::*;
        matches!(
            (self, to),
            (Pending, Provisioning)
                | (Provisioning, Active)
                | (Provisioning, Failed)
                | (Active, Suspended)
                | (Active, Deprovisioning)
                | (Suspended, Active)
                | (Suspended, Deprovisioning)
                | (Deprovisioning, Deprovisioned)
                | (Deprovisioning, Failed)
                | (Failed, Provisioning)
                | (Failed, Deprovisioning)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Pending => "PENDING",
            TenantState::Provisioning => "PROVISIONING",
            TenantState::Active => "ACTIVE",
            TenantState::Suspended => "SUSPENDED",
            TenantState::Deprovisioning => "DEPROVISIONING",
            TenantState::Deprovisioned => "DEPROVISIONED",
            TenantState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<TenantState> {
        TenantState::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused lifecycle transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot move tenant from {from} to {to}")]
pub struct InvalidTransition {
    pub from: TenantState,
    pub to: TenantState,
}

/// Checks a transition against the state machine.
pub fn check_transition(from: TenantState, to: TenantState) -> Result<(), InvalidTransition> {
    if from.can_transition_to(to) { Ok(()) } else { Err(InvalidTransition { from, to }) }
}

/// The commercial tier; it selects plan limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    #[default]
    Standard,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Standard => "standard",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        [Tier::Free, Tier::Standard, Tier::Enterprise].into_iter().find(|t| t.as_str() == s)
    }
}

/// What to do with detected PII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum PiiPolicy {
    #[default]
    Redact,
    Flag,
    Block,
}

/// The PII types the policy stage knows.
pub const PII_TYPES: &[&str] =
    &["EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "DOB", "MEDICAL_RECORD", "PASSPORT"];

/// The platform's MIME allowlist; a tenant's `mime_allowlist` may only narrow it.
pub const PLATFORM_MIME_TYPES: &[&str] = &[
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "text/plain",
    "text/markdown",
    "text/html",
    "text/csv",
    "application/json",
    "image/png",
    "image/jpeg",
    "image/tiff",
];

/// Daily quotas and the request rate limit (token bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    pub runs_per_day: u32,
    pub documents_per_day: u32,
    pub requests_per_second: u32,
    pub burst: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { runs_per_day: 1_000, documents_per_day: 100_000, requests_per_second: 50, burst: 100 }
    }
}

/// A tenant's configuration. Every field has a default, so `{}` is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub pii_policy: PiiPolicy,
    pub pii_types: Vec<String>,
    pub classification_threshold: f64,
    pub injection_flag_threshold: f64,
    pub injection_quarantine_threshold: f64,
    pub max_file_size_mb: u64,
    pub max_batch_size: u32,
    pub storage_quota_gb: u64,
    pub mime_allowlist: Vec<String>,
    pub retrieval_top_k_default: u32,
    pub retrieval_top_k_max: u32,
    /// Days a document is kept before `retention.sweep` erases it; `null` keeps documents until they are erased
    /// one by one.
    pub retention_days: Option<u32>,
    pub embedding_model: String,
    pub quotas: Quotas,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            pii_policy: PiiPolicy::Redact,
            pii_types: PII_TYPES.iter().map(|s| s.to_string()).collect(),
            classification_threshold: 0.7,
            injection_flag_threshold: 0.3,
            injection_quarantine_threshold: 0.7,
            max_file_size_mb: 500,
            max_batch_size: 1_000,
            storage_quota_gb: 100,
            mime_allowlist: PLATFORM_MIME_TYPES.iter().map(|s| s.to_string()).collect(),
            retrieval_top_k_default: 5,
            retrieval_top_k_max: 50,
            retention_days: Some(2_555),
            embedding_model: "hash".to_owned(),
            quotas: Quotas::default(),
        }
    }
}

/// One problem with a submitted value: which field, what was given, and what it must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldViolation {
    pub field: String,
    #[schema(value_type = Object)]
    pub value: Value,
    pub constraint: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, value: impl Into<Value>, constraint: impl Into<String>) -> Self {
        FieldViolation { field: field.into(), value: value.into(), constraint: constraint.into() }
    }
}

/// One changed leaf of a config update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfigChange {
    pub field: String,
    #[schema(value_type = Object)]
    pub old_value: Value,
    #[schema(value_type = Object)]
    pub new_value: Value,
}

fn check_range<T: PartialOrd + Copy + Into<Value>>(
    out: &mut Vec<FieldViolation>,
    field: &str,
    v: T,
    lo: T,
    hi: T,
    constraint: &str,
) {
    if v < lo || v > hi {
        out.push(FieldViolation::new(field, v, constraint));
    }
}

impl TenantConfig {
    /// Every range and cross-field rule, all reported at once.
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        check_range(&mut out, "classification_threshold", self.classification_threshold, 0.0, 1.0, "between 0 and 1");
        check_range(&mut out, "injection_flag_threshold", self.injection_flag_threshold, 0.0, 1.0, "between 0 and 1");
        check_range(
            &mut out,
            "injection_quarantine_threshold",
            self.injection_quarantine_threshold,
            0.0,
            1.0,
            "between 0 and 1",
        );
        if self.injection_flag_threshold > self.injection_quarantine_threshold {
            out.push(FieldViolation::new(
                "injection_flag_threshold",
                self.injection_flag_threshold,
                "must not exceed injection_quarantine_threshold",
            ));
        }
        check_range(&mut out, "max_file_size_mb", self.max_file_size_mb, 1, 5_120, "between 1 and 5120");
        check_range(&mut out, "max_batch_size", self.max_batch_size, 1, 10_000, "between 1 and 10000");
        check_range(&mut out, "storage_quota_gb", self.storage_quota_gb, 1, 1_000_000, "between 1 and 1000000");
        check_range(&mut out, "retrieval_top_k_max", self.retrieval_top_k_max, 1, 1_000, "between 1 and 1000");
        if self.retrieval_top_k_default < 1 || self.retrieval_top_k_default > self.retrieval_top_k_max {
            out.push(FieldViolation::new(
                "retrieval_top_k_default",
                self.retrieval_top_k_default,
                "between 1 and retrieval_top_k_max",
            ));
        }
        if let Some(days) = self.retention_days {
            check_range(&mut out, "retention_days", days, 1, 36_500, "between 1 and 36500 (or null: no retention)");
        }
        for t in &self.pii_types {
            if !PII_TYPES.contains(&t.as_str()) {
                out.push(FieldViolation::new("pii_types", t.as_str(), format!("one of {}", PII_TYPES.join(", "))));
            }
        }
        if self.mime_allowlist.is_empty() {
            out.push(FieldViolation::new("mime_allowlist", Value::Array(vec![]), "at least one MIME type"));
        }
        for m in &self.mime_allowlist {
            if !PLATFORM_MIME_TYPES.contains(&m.as_str()) {
                out.push(FieldViolation::new("mime_allowlist", m.as_str(), "a MIME type on the platform allowlist"));
            }
        }
        if self.embedding_model.trim().is_empty() || self.embedding_model.len() > 200 {
            out.push(FieldViolation::new(
                "embedding_model",
                self.embedding_model.as_str(),
                "a non-empty name of at most 200 characters",
            ));
        }
        check_range(&mut out, "quotas.runs_per_day", self.quotas.runs_per_day, 1, 1_000_000, "between 1 and 1000000");
        check_range(
            &mut out,
            "quotas.documents_per_day",
            self.quotas.documents_per_day,
            1,
            100_000_000,
            "between 1 and 100000000",
        );
        check_range(
            &mut out,
            "quotas.requests_per_second",
            self.quotas.requests_per_second,
            1,
            100_000,
            "between 1 and 100000",
        );
        check_range(&mut out, "quotas.burst", self.quotas.burst, 1, 1_000_000, "between 1 and 1000000");
        out
    }

    /// Builds a config from a client-supplied JSON object over the defaults, reporting every problem at once.
    pub fn from_json(value: &Value) -> Result<TenantConfig, Vec<FieldViolation>> {
        TenantConfig::default().apply_patch(value).map(|(config, _)| config)
    }

    /// Applies a JSON merge patch (RFC 7396, without `null` deletes: a `null` is a type error, except for the
    /// optional `retention_days`, where it means no retention) and returns the
    /// new config with the list of changed leaves, or every problem found.
    pub fn apply_patch(&self, patch: &Value) -> Result<(TenantConfig, Vec<ConfigChange>), Vec<FieldViolation>> {
        let Value::Object(patch) = patch else {
            return Err(vec![FieldViolation::new("config", patch.clone(), "a JSON object")]);
        };
        let current = serde_json::to_value(self).expect("config serialises");
        let mut violations = Vec::new();
        let mut merged = current.clone();
        for (key, value) in patch {
            let Some(slot) = merged.get_mut(key) else {
                violations.push(FieldViolation::new(key.as_str(), value.clone(), "a known config field"));
                continue;
            };
            let candidate = merge(slot, value);
            // Type-check this field alone so that several bad fields are all reported.
            let mut probe = current.clone();
            probe[key.as_str()] = candidate.clone();
            match serde_json::from_value::<TenantConfig>(probe) {
                Ok(_) => *slot = candidate,
                Err(e) => violations.push(FieldViolation::new(key.as_str(), value.clone(), type_hint(key, &e))),
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        let config: TenantConfig = serde_json::from_value(merged.clone())
            .map_err(|e| vec![FieldViolation::new("config", Value::Null, e.to_string())])?;
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut changes = Vec::new();
        diff_leaves("", &current, &merged, &mut changes);
        Ok((config, changes))
    }
}

fn type_hint(key: &str, e: &serde_json::Error) -> String {
    let msg = e.to_string();
    // serde's messages name the expected type; strip the position suffix, which means nothing to a client.
    let msg = msg.split(" at line").next().unwrap_or(&msg);
    format!("{key}: {msg}")
}

fn merge(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out: Map<String, Value> = b.clone();
            for (k, v) in p {
                let merged = match b.get(k) {
                    Some(existing) => merge(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, p) => p.clone(),
    }
}

fn diff_leaves(prefix: &str, old: &Value, new: &Value, out: &mut Vec<ConfigChange>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let keys: BTreeMap<&String, ()> = o.keys().chain(n.keys()).map(|k| (k, ())).collect();
            for k in keys.keys() {
                let path = if prefix.is_empty() { (*k).clone() } else { format!("{prefix}.{k}") };
                diff_leaves(&path, o.get(*k).unwrap_or(&Value::Null), n.get(*k).unwrap_or(&Value::Null), out);
            }
        }
        (o, n) if o != n => {
            out.push(ConfigChange { field: prefix.to_owned(), old_value: o.clone(), new_value: n.clone() })
        }
        _ => {}
    }
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenant {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub contact_email: String,
    pub tier: Tier,
    pub state: TenantState,
    pub state_reason: Option<String>,
    pub config: TenantConfig,
    pub config_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How much a tenant stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct TenantUsage {
    pub documents_count: u64,
    pub chunks_count: u64,
    pub storage_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legal_transitions_are_exactly_the_documented_ones() {
        use TenantState::*;
        let legal = [
            (Pending, Provisioning),
            (Provisioning, Active),
            (Provisioning, Failed),
            (Active, Suspended),
            (Active, Deprovisioning),
            (Suspended, Active),
            (Suspended, Deprovisioning),
            (Deprovisioning, Deprovisioned),
            (Deprovisioning, Failed),
            (Failed, Provisioning),
            (Failed, Deprovisioning),
        ];
        for from in TenantState::ALL {
            for to in TenantState::ALL {
                assert_eq!(from.can_transition_to(to), legal.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn deprovisioned_is_terminal() {
        for to in TenantState::ALL {
            assert!(check_transition(TenantState::Deprovisioned, to).is_err());
        }
    }

    #[test]
    fn state_names_round_trip() {
        for s in TenantState::ALL {
            assert_eq!(TenantState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
    }

    #[test]
    fn default_config_is_valid() {
        assert!(TenantConfig::default().validate().is_empty());
    }

    #[test]
    fn patch_reports_every_problem_at_once() {
        let patch = json!({
            "classification_threshold": 1.5,
            "max_file_size_mb": "big",
            "no_such_field": 1,
            "retention_days": 0
        });
        let errors = TenantConfig::default().apply_patch(&patch).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        // Type and unknown-field errors are reported together; ranges are checked once types are right.
        assert!(fields.contains(&"max_file_size_mb"), "{fields:?}");
        assert!(fields.contains(&"no_such_field"), "{fields:?}");

        let patch = json!({"classification_threshold": 1.5, "retention_days": 0, "retrieval_top_k_default": 80});
        let errors = TenantConfig::default().apply_patch(&patch).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["classification_threshold", "retrieval_top_k_default", "retention_days"]);
    }

    #[test]
    fn patch_merges_nested_objects_and_lists_changes() {
        let (config, changes) =
            TenantConfig::default().apply_patch(&json!({"pii_policy": "block", "quotas": {"burst": 7}})).unwrap();
        assert_eq!(config.pii_policy, PiiPolicy::Block);
        assert_eq!(config.quotas.burst, 7);
        assert_eq!(config.quotas.runs_per_day, Quotas::default().runs_per_day, "siblings kept");
        assert_eq!(
            changes,
            vec![
                ConfigChange { field: "pii_policy".into(), old_value: json!("redact"), new_value: json!("block") },
                ConfigChange { field: "quotas.burst".into(), old_value: json!(100), new_value: json!(7) },
            ]
        );
    }

    #[test]
    fn patch_with_same_values_changes_nothing() {
        let (_, changes) = TenantConfig::default().apply_patch(&json!({"retention_days": 2555})).unwrap();
        assert!(changes.is_empty());
    }

    #[test]
    fn retention_may_be_switched_off_with_null_and_on_again() {
        let (off, changes) = TenantConfig::default().apply_patch(&json!({"retention_days": null})).unwrap();
        assert_eq!(off.retention_days, None);
        assert_eq!(changes[0].new_value, Value::Null);
        let (on, _) = off.apply_patch(&json!({"retention_days": 30})).unwrap();
        assert_eq!(on.retention_days, Some(30));
        assert!(off.apply_patch(&json!({"retention_days": 0})).is_err());
    }

    #[test]
    fn mime_allowlist_may_only_narrow_the_platform_list() {
        let errors =
            TenantConfig::default().apply_patch(&json!({"mime_allowlist": ["application/x-msdownload"]})).unwrap_err();
        assert_eq!(errors[0].field, "mime_allowlist");
        assert!(TenantConfig::default().apply_patch(&json!({"mime_allowlist": ["application/pdf"]})).is_ok());
    }
}
