//! Feature-set definitions: which windows to compute over an entity's events, which aggregates each window
//! carries, which events count (filters), and how late data is treated. Written as JSON (the API) or YAML (files
//! in a repository), validated with every problem listed at once, and stored as numbered versions.
//!
//! ```yaml
//! allowed_lateness: 30s
//! late_policy: correct          # drop (default) | hold | correct
//! correction_horizon: 1h        # correct only: how far behind the watermark a correction may reach
//! filters: [{field: /kind, op: eq, value: reading}]
//! windows:
//!   - {name: m1, type: tumbling, size: 1m, aggregates: [{name: n, op: count}, {name: t_mean, op: mean, field: /t}]}
//!   - {name: m5, type: sliding, size: 5m, slide: 1m, aggregates: [{name: t_max, op: max, field: /t}]}
//!   - {name: t_ewma, type: ewma, field: /t, half_life: 10m, every: 1m}
//!   - {name: t_z, type: zscore, field: /t, size: 1h, every: 1m}
//! ```
//!
//! Fields are addressed by JSON pointer (RFC 6901) into the event's `payload`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::duration::Span;
use crate::tenant::FieldViolation;

/// The most windows one feature set may declare (the engine keeps a 64-bit filter mask per event).
pub const MAX_WINDOWS: usize = 32;
/// The most aggregates one window may carry.
pub const MAX_AGGREGATES: usize = 32;
/// The most sliding windows one event may fall into (`size / slide`).
pub const MAX_SLIDES: i64 = 1_000;
/// The longest allowed lateness or correction horizon.
pub const MAX_LATENESS: Span = Span::from_days(7);

/// What happens to an event older than the entity's watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LatePolicy {
    /// Counted and discarded.
    #[default]
    Drop,
    /// Kept and counted in the earliest window still open (its time is moved up to the watermark), so it is
    /// emitted when the watermark passes that window.
    Hold,
    /// Placed in its own window(s); every window already emitted that it changes is recomputed and emitted again
    /// with the next revision. Limited to `correction_horizon` behind the watermark; older ones are dropped.
    Correct,
}

impl LatePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LatePolicy::Drop => "drop",
            LatePolicy::Hold => "hold",
            LatePolicy::Correct => "correct",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// Back-to-back windows of `size`.
    Tumbling,
    /// Windows of `size` starting every `slide`.
    Sliding,
    /// An exponentially weighted moving average of `field` with `half_life`, emitted every `every`.
    Ewma,
    /// The z-score of the latest value of `field` against the mean and standard deviation of the last `size`,
    /// emitted every `every`.
    Zscore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggOp {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Stddev,
    Last,
    DistinctCount,
}

impl AggOp {
    /// Whether the op reads its field as a number.
    pub fn numeric(self) -> bool {
        !matches!(self, AggOp::Count | AggOp::DistinctCount)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
}

/// Keeps an event only when the payload field satisfies the comparison (a missing field never does, except
/// under `ne`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDef {
    pub field: String,
    pub op: FilterOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateDef {
    pub name: String,
    pub op: AggOp,
    /// Required except for `count` (which then counts events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WindowKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregates: Vec<AggregateDef>,
}

/// A feature set as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSetDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub allowed_lateness: Span,
    #[serde(default)]
    pub late_policy: LatePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction_horizon: Option<Span>,
    /// Applied to every window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterDef>,
    pub windows: Vec<WindowDef>,
}

/// The horizon used under `correct` when none is given.
pub const DEFAULT_CORRECTION_HORIZON: Span = Span::from_micros_const(3_600_000_000);

/// Whether `name` is a valid feature-set or window name: a lowercase letter, then up to 63 lowercase letters,
/// digits, `_` or `-`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// A parsed JSON pointer (RFC 6901): tokens unescaped once, array indices parsed once, so the hot path only walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    tokens: Vec<(String, Option<usize>)>,
}

impl Pointer {
    pub fn parse(s: &str) -> Option<Pointer> {
        if s.is_empty() {
            return Some(Pointer { tokens: Vec::new() });
        }
        let rest = s.strip_prefix('/')?;
        let tokens = rest
            .split('/')
            .map(|t| {
                let t = t.replace("~1", "/").replace("~0", "~");
                let idx = if t == "0" || (!t.starts_with('0') && !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                {
                    t.parse().ok()
                } else {
                    None
                };
                (t, idx)
            })
            .collect();
        Some(Pointer { tokens })
    }

    /// The addressed value, if present.
    #[inline]
    pub fn resolve<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for (key, idx) in &self.tokens {
            v = match v {
                Value::Object(m) => m.get(key.as_str())?,
                Value::Array(a) => a.get((*idx)?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

fn check_pointer(out: &mut Vec<FieldViolation>, path: &str, p: &str) {
    if Pointer::parse(p).is_none() {
        out.push(FieldViolation::new(path, p, "a JSON pointer into the payload, such as /temperature"));
    }
}

fn check_filters(out: &mut Vec<FieldViolation>, prefix: &str, filters: &[FilterDef]) {
    for (i, f) in filters.iter().enumerate() {
        let path = format!("{prefix}filters[{i}]");
        check_pointer(out, &format!("{path}.field"), &f.field);
        match (f.op, &f.value) {
            (FilterOp::Exists, Some(v)) => {
                out.push(FieldViolation::new(format!("{path}.value"), v.clone(), "absent for op exists"))
            }
            (FilterOp::Exists, None) => {}
            (FilterOp::Eq | FilterOp::Ne, None) => {
                out.push(FieldViolation::new(format!("{path}.value"), Value::Null, "present for op eq or ne"))
            }
            (FilterOp::Eq | FilterOp::Ne, Some(_)) => {}
            (_, v) => {
                if !v.as_ref().is_some_and(Value::is_number) {
                    out.push(FieldViolation::new(
                        format!("{path}.value"),
                        v.clone().unwrap_or(Value::Null),
                        "a number for op gt, gte, lt or lte",
                    ));
                }
            }
        }
    }
}

fn positive(out: &mut Vec<FieldViolation>, path: String, v: Option<Span>, what: &str) -> i64 {
    match v {
        Some(s) if s.micros() > 0 => s.micros(),
        Some(s) => {
            out.push(FieldViolation::new(path, s.to_string(), format!("a positive duration ({what})")));
            0
        }
        None => {
            out.push(FieldViolation::new(path, Value::Null, format!("present ({what})")));
            0
        }
    }
}

fn absent<T: Serialize>(out: &mut Vec<FieldViolation>, path: String, v: &Option<T>, kind: &str) {
    if let Some(v) = v {
        out.push(FieldViolation::new(
            path,
            serde_json::to_value(v).unwrap_or(Value::Null),
            format!("absent for a {kind} window"),
        ));
    }
}

impl FeatureSetDef {
    /// Decodes a JSON definition and validates it; every problem is listed.
    pub fn from_json(value: Value) -> Result<FeatureSetDef, Vec<FieldViolation>> {
        let def: FeatureSetDef = serde_json::from_value(value)
            .map_err(|e| vec![FieldViolation::new("definition", Value::Null, format!("a valid feature set: {e}"))])?;
        def.validated()
    }

    /// Decodes a YAML definition (the same fields) and validates it.
    pub fn from_yaml(text: &str) -> Result<FeatureSetDef, Vec<FieldViolation>> {
        let def: FeatureSetDef = serde_yaml_ng::from_str(text)
            .map_err(|e| vec![FieldViolation::new("definition", Value::Null, format!("a valid feature set: {e}"))])?;
        def.validated()
    }

    /// A YAML document as the JSON value the API accepts (so YAML and JSON share one validation path).
    pub fn yaml_to_json(text: &str) -> Result<Value, Vec<FieldViolation>> {
        serde_yaml_ng::from_str::<Value>(text)
            .map_err(|e| vec![FieldViolation::new("definition", Value::Null, format!("valid YAML: {e}"))])
    }

    fn validated(self) -> Result<FeatureSetDef, Vec<FieldViolation>> {
        let problems = self.validate();
        if problems.is_empty() { Ok(self) } else { Err(problems) }
    }

    /// Every rule, all problems at once.
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if self.allowed_lateness > MAX_LATENESS {
            out.push(FieldViolation::new("allowed_lateness", self.allowed_lateness.to_string(), "at most 7d"));
        }
        match (self.late_policy, self.correction_horizon) {
            (LatePolicy::Correct, Some(h)) if h > MAX_LATENESS || h.micros() == 0 => {
                out.push(FieldViolation::new("correction_horizon", h.to_string(), "between 1us and 7d"))
            }
            (LatePolicy::Drop | LatePolicy::Hold, Some(h)) => out.push(FieldViolation::new(
                "correction_horizon",
                h.to_string(),
                "absent unless late_policy is correct",
            )),
            _ => {}
        }
        if let Some(d) = &self.description
            && d.len() > 1000
        {
            out.push(FieldViolation::new("description", Value::Null, "at most 1000 bytes"));
        }
        check_filters(&mut out, "", &self.filters);
        if self.windows.is_empty() || self.windows.len() > MAX_WINDOWS {
            out.push(FieldViolation::new("windows", self.windows.len(), format!("1 to {MAX_WINDOWS} windows")));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in self.windows.iter().enumerate() {
            let p = format!("windows[{i}]");
            if !valid_name(&w.name) {
                out.push(FieldViolation::new(
                    format!("{p}.name"),
                    w.name.clone(),
                    "a lowercase name ([a-z][a-z0-9_-]{0,63})",
                ));
            } else if !names.insert(w.name.as_str()) {
                out.push(FieldViolation::new(format!("{p}.name"), w.name.clone(), "unique among the windows"));
            }
            check_filters(&mut out, &format!("{p}."), &w.filters);
            match w.kind {
                WindowKind::Tumbling | WindowKind::Sliding => {
                    let size = positive(&mut out, format!("{p}.size"), w.size, "the window length");
                    if w.kind == WindowKind::Sliding {
                        let slide = positive(&mut out, format!("{p}.slide"), w.slide, "how often a window starts");
                        if size > 0 && slide > 0 && (slide > size || size / slide > MAX_SLIDES) {
                            out.push(FieldViolation::new(
                                format!("{p}.slide"),
                                w.slide.map(|s| s.to_string()),
                                format!("at most size and at least size / {MAX_SLIDES}"),
                            ));
                        }
                    } else {
                        absent(&mut out, format!("{p}.slide"), &w.slide, "tumbling");
                    }
                    let kind = if w.kind == WindowKind::Sliding { "sliding" } else { "tumbling" };
                    absent(&mut out, format!("{p}.every"), &w.every, kind);
                    absent(&mut out, format!("{p}.half_life"), &w.half_life, kind);
                    absent(&mut out, format!("{p}.field"), &w.field, kind);
                    if w.aggregates.is_empty() || w.aggregates.len() > MAX_AGGREGATES {
                        out.push(FieldViolation::new(
                            format!("{p}.aggregates"),
                            w.aggregates.len(),
                            format!("1 to {MAX_AGGREGATES} aggregates"),
                        ));
                    }
                    let mut agg_names = std::collections::BTreeSet::new();
                    for (j, a) in w.aggregates.iter().enumerate() {
                        let ap = format!("{p}.aggregates[{j}]");
                        if !valid_name(&a.name) {
                            out.push(FieldViolation::new(format!("{ap}.name"), a.name.clone(), "a lowercase name"));
                        } else if !agg_names.insert(a.name.as_str()) {
                            out.push(FieldViolation::new(format!("{ap}.name"), a.name.clone(), "unique in the window"));
                        }
                        match &a.field {
                            Some(f) => check_pointer(&mut out, &format!("{ap}.field"), f),
                            None if a.op != AggOp::Count => {
                                out.push(FieldViolation::new(format!("{ap}.field"), Value::Null, "present for this op"))
                            }
                            None => {}
                        }
                    }
                }
                WindowKind::Ewma | WindowKind::Zscore => {
                    let kind = if w.kind == WindowKind::Ewma { "ewma" } else { "zscore" };
                    match &w.field {
                        Some(f) => check_pointer(&mut out, &format!("{p}.field"), f),
                        None => out.push(FieldViolation::new(format!("{p}.field"), Value::Null, "present")),
                    }
                    positive(&mut out, format!("{p}.every"), w.every, "how often a value is emitted");
                    if w.kind == WindowKind::Ewma {
                        positive(&mut out, format!("{p}.half_life"), w.half_life, "the decay half-life");
                        absent(&mut out, format!("{p}.size"), &w.size, kind);
                    } else {
                        positive(&mut out, format!("{p}.size"), w.size, "the rolling window length");
                        absent(&mut out, format!("{p}.half_life"), &w.half_life, kind);
                    }
                    absent(&mut out, format!("{p}.slide"), &w.slide, kind);
                    if !w.aggregates.is_empty() {
                        out.push(FieldViolation::new(
                            format!("{p}.aggregates"),
                            w.aggregates.len(),
                            format!("absent for a {kind} window"),
                        ));
                    }
                }
            }
        }
        out
    }

    /// The horizon corrections may reach back (zero unless the policy is `correct`).
    pub fn correction_horizon(&self) -> Span {
        match self.late_policy {
            LatePolicy::Correct => self.correction_horizon.unwrap_or(DEFAULT_CORRECTION_HORIZON),
            _ => Span::ZERO,
        }
    }
}

/// The example definition the tests share.
#[cfg(test)]
pub(crate) fn tests_yaml() -> &'static str {
    tests::YAML
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const YAML: &str = r#"
allowed_lateness: 30s
late_policy: correct
filters: [{field: /kind, op: eq, value: reading}]
windows:
  - {name: m1, type: tumbling, size: 1m, aggregates: [{name: n, op: count}, {name: t_mean, op: mean, field: /t}]}
  - {name: m5, type: sliding, size: 5m, slide: 1m, aggregates: [{name: t_max, op: max, field: /t}]}
  - {name: t_ewma, type: ewma, field: /t, half_life: 10m, every: 1m}
  - {name: t_z, type: zscore, field: /t, size: 1h, every: 1m}
"#;

    #[test]
    fn yaml_and_json_agree() {
        let y = FeatureSetDef::from_yaml(YAML).unwrap();
        let j = FeatureSetDef::from_json(serde_json::to_value(&y).unwrap()).unwrap();
        assert_eq!(y, j);
        assert_eq!(y.correction_horizon(), DEFAULT_CORRECTION_HORIZON);
        assert_eq!(y.windows[1].slide.unwrap().micros(), 60_000_000);
    }

    #[test]
    fn every_problem_is_listed() {
        let bad = json!({
            "allowed_lateness": "30d",
            "late_policy": "drop",
            "correction_horizon": "1h",
            "filters": [{"field": "kind", "op": "gt", "value": "x"}],
            "windows": [
                {"name": "M1", "type": "tumbling", "aggregates": []},
                {"name": "s", "type": "sliding", "size": "1m", "slide": "5m", "aggregates": [{"name": "x", "op": "sum"}]},
                {"name": "e", "type": "ewma", "every": "1m"},
                {"name": "e", "type": "zscore", "field": "/t", "size": "1h", "every": "1m", "half_life": "1m"},
            ]
        });
        let problems = FeatureSetDef::from_json(bad).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for want in [
            "allowed_lateness",
            "correction_horizon",
            "filters[0].field",
            "filters[0].value",
            "windows[0].name",
            "windows[0].size",
            "windows[0].aggregates",
            "windows[1].slide",
            "windows[1].aggregates[0].field",
            "windows[2].field",
            "windows[2].half_life",
            "windows[3].name",
            "windows[3].half_life",
        ] {
            assert!(fields.contains(&want), "{want} missing from {fields:?}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_refused() {
        assert!(FeatureSetDef::from_json(json!({"allowed_lateness": "1m", "windows": [], "extra": 1})).is_err());
        assert!(FeatureSetDef::from_json(json!({"allowed_lateness": "soon", "windows": []})).is_err());
        assert!(FeatureSetDef::from_yaml("allowed_lateness: [").is_err());
    }

    #[test]
    fn pointers_resolve() {
        let v = json!({"a": {"b/c": [10, {"~x": 2}]}});
        assert_eq!(Pointer::parse("/a/b~1c/1/~0x").unwrap().resolve(&v), Some(&json!(2)));
        assert_eq!(Pointer::parse("/a/b~1c/0").unwrap().resolve(&v), Some(&json!(10)));
        assert_eq!(Pointer::parse("/a/missing").unwrap().resolve(&v), None);
        assert_eq!(Pointer::parse("").unwrap().resolve(&v), Some(&v));
        assert!(Pointer::parse("a").is_none());
    }
}
