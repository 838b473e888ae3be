//! Tenant metadata schemas: checking a submitted JSON Schema (`PUT`/`PATCH …/tenants/{tenant}/schema`) and
//! validating an upload's custom metadata against the stored one, with the `jsonschema` crate.
//!
//! Remote `$ref`s are never fetched (the crate is built without its HTTP and file resolvers), so a schema cannot
//! make the server reach out. Violation messages mask instance values: metadata may carry personal data, and
//! error bodies and audit events must not echo it.

use frostbyte_core::tenant::FieldViolation;
use serde_json::Value;

/// Largest schema accepted, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Most violations reported for one value.
const MAX_VIOLATIONS: usize = 20;

/// A compiled schema, ready to validate metadata.
pub struct CompiledSchema {
    validator: jsonschema::Validator,
    pub version: i64,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema").field("version", &self.version).finish_non_exhaustive()
    }
}

fn pointer(path: &str) -> String {
    if path.is_empty() { "metadata".to_owned() } else { format!("metadata{path}") }
}

/// Checks that `schema` is a usable metadata schema: a JSON object, valid against its meta-schema, compilable,
/// and describing an object. Every problem is returned.
pub fn check(schema: &Value) -> Result<CompiledSchema, Vec<FieldViolation>> {
    let mut problems = Vec::new();
    let Value::Object(map) = schema else {
        return Err(vec![FieldViolation::new("schema", Value::Null, "a JSON Schema object")]);
    };
    if serde_json::to_vec(schema).map_or(0, |b| b.len()) > MAX_SCHEMA_BYTES {
        problems.push(FieldViolation::new("schema", Value::Null, format!("at most {MAX_SCHEMA_BYTES} bytes of JSON")));
    }
    match map.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => problems.push(FieldViolation::new(
            "schema.type",
            other.clone(),
            "\"object\" (document metadata is a JSON object)",
        )),
    }
    match jsonschema::meta::validator_for(schema) {
        Ok(meta) => {
            for e in meta.iter_errors(schema).take(MAX_VIOLATIONS) {
                let at = e.instance_path().as_str();
                let field = if at.is_empty() { "schema".to_owned() } else { format!("schema{at}") };
                problems.push(FieldViolation::new(field, Value::Null, e.to_string()));
            }
        }
        Err(e) => problems.push(FieldViolation::new("schema.$schema", Value::Null, format!("a known draft ({e})"))),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    match jsonschema::validator_for(schema) {
        Ok(validator) => Ok(CompiledSchema { validator, version: 0 }),
        Err(e) => {
            let at = e.schema_path().as_str();
            let field = if at.is_empty() { "schema".to_owned() } else { format!("schema{at}") };
            Err(vec![FieldViolation::new(field, Value::Null, e.to_string())])
        }
    }
}

impl CompiledSchema {
    /// Compiles a stored schema (already checked when it was stored).
    pub fn compile(schema: &Value, version: i64) -> Result<CompiledSchema, Vec<FieldViolation>> {
        check(schema).map(|c| CompiledSchema { version, ..c })
    }

    /// The violations of `metadata`, with instance values masked.
    pub fn violations(&self, metadata: &Value) -> Vec<FieldViolation> {
        self.validator
            .iter_errors(metadata)
            .take(MAX_VIOLATIONS)
            .map(|e| FieldViolation::new(pointer(e.instance_path().as_str()), Value::Null, e.masked().to_string()))
            .collect()
    }
}

/// A one-line summary of violations for per-file messages.
pub fn summarise(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.field, v.constraint)).collect();
    format!("metadata violates the tenant's schema: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_good_schema_compiles_and_validates_metadata_without_echoing_values() {
        let s = check(&json!({"type": "object", "properties": {"team": {"type": "string"},
                               "year": {"type": "integer", "minimum": 2000}}, "required": ["team"]}))
        .unwrap();
        assert!(s.violations(&json!({"team": "ops", "year": 2024})).is_empty());
        let v = s.violations(&json!({"year": 1999, "ssn": "078-05-1120"}));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().any(|x| x.field == "metadata/year"), "{v:?}");
        assert!(v.iter().all(|x| !x.constraint.contains("1999")), "values are masked: {v:?}");
    }

    #[test]
    fn bad_schemas_list_their_problems() {
        assert!(check(&json!([1, 2])).is_err());
        let p = check(&json!({"type": "array"})).unwrap_err();
        assert_eq!(p[0].field, "schema.type");
        let p = check(&json!({"type": "object", "properties": {"n": {"type": "nonsense"}}})).unwrap_err();
        assert!(p.iter().any(|x| x.field.starts_with("schema/properties/n")), "{p:?}");
        let p =
            check(&json!({"type": "object", "properties": {"n": {"type": "string", "pattern": "(["}}})).unwrap_err();
        assert!(!p.is_empty());
    }
}
