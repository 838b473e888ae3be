//! Tabular records as `records.copy` moves them: the `from[:to[:type]]` column mapping, the five column types,
//! and coercion of one value to a type. Pure: the formats that read and write records (CSV, JSON Lines, Parquet,
//! SQL tables) live in the adapters and the binary.
//!
//! A record is a JSON object while it is read and a list of values, one per output [`Field`], once mapped. A
//! coerced value has one shape per type: `integer` a JSON integer (i64), `float` a finite JSON number, `boolean`
//! a JSON boolean, `date` a `YYYY-MM-DD` string, `string` a JSON string; `null` is kept as `null`.

use serde_json::Value;

/// A column type of the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Integer,
    Float,
    Boolean,
    Date,
}

impl ColumnType {
    pub const ALL: [ColumnType; 5] =
        [ColumnType::String, ColumnType::Integer, ColumnType::Float, ColumnType::Boolean, ColumnType::Date];

    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
        }
    }

    pub fn parse(s: &str) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One item of the mapping: read `from`, write `to`, coerce to `ty` when given.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub from: String,
    pub to: String,
    pub ty: Option<ColumnType>,
}

/// A column of the output. `ty: None` writes values as they come: as they are in JSON Lines, as text in CSV,
/// Parquet and SQL tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: Option<ColumnType>,
}

impl Field {
    pub fn new(name: impl Into<String>, ty: Option<ColumnType>) -> Self {
        Field { name: name.into(), ty }
    }
}

/// The output fields of a mapping.
pub fn fields_of(columns: &[Column]) -> Vec<Field> {
    columns.iter().map(|c| Field::new(c.to.clone(), c.ty)).collect()
}

/// Parses `from[:to[:type]]` items separated by commas; the message says what is wrong.
pub fn parse_columns(spec: &str) -> Result<Vec<Column>, String> {
    let columns = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let mut parts = item.split(':').map(str::trim);
            let from = parts.next().unwrap_or_default().to_owned();
            let to = parts.next().filter(|s| !s.is_empty()).unwrap_or(&from).to_owned();
            let ty = match parts.next() {
                None | Some("") => None,
                Some(name) => Some(ColumnType::parse(name).ok_or_else(|| {
                    format!("column {from:?}: unknown type {name:?} (string, integer, float, boolean, date)")
                })?),
            };
            if from.is_empty() || parts.next().is_some() {
                return Err(format!("column mapping {item:?} is not from:to:type"));
            }
            Ok(Column { from, to, ty })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].iter().any(|o| o.to == c.to) {
            return Err(format!("column {:?} is written twice", c.to));
        }
    }
    Ok(columns)
}

/// A value as text: `None` for null, a string as it is, anything else as JSON.
pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Coerces one value to `ty`; `Err` says why not.
pub fn coerce(value: &Value, ty: ColumnType) -> Result<Value, String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Null => return Ok(Value::Null),
        other => other.to_string(),
    };
    match ty {
        ColumnType::String => Ok(match value {
            Value::String(s) => Value::String(s.clone()),
            _ => Value::String(text),
        }),
        ColumnType::Integer => text.parse::<i64>().map(Value::from).map_err(|_| format!("{text:?} is not an integer")),
        ColumnType::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(|| format!("{text:?} is not a number")),
        ColumnType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "t" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "f" => Ok(Value::Bool(false)),
            _ => Err(format!("{text:?} is not a boolean")),
        },
        ColumnType::Date => chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(|d| Value::from(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD)")),
    }
}

/// Whether `value` has the shape of a value coerced to `ty` (see the module docs); `null` fits every type and
/// anything fits an untyped field.
pub fn fits(value: &Value, ty: Option<ColumnType>) -> bool {
    value.is_null()
        || match ty {
            Some(ColumnType::Integer) => value.as_i64().is_some(),
            Some(ColumnType::Float) => value.as_f64().is_some(),
            Some(ColumnType::Boolean) => value.is_boolean(),
            Some(ColumnType::Date) => date_of(value).is_some(),
            Some(ColumnType::String) => value.is_string(),
            None => true,
        }
}

/// A coerced `date` value as a date (`None` for null or anything else).
pub fn date_of(value: &Value) -> Option<chrono::NaiveDate> {
    value.as_str().and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn column_specs() {
        let cols = parse_columns("id:user_id:integer, name, joined::date").unwrap();
        assert_eq!(cols[0], Column { from: "id".into(), to: "user_id".into(), ty: Some(ColumnType::Integer) });
        assert_eq!(cols[1].to, "name");
        assert_eq!(cols[2].ty, Some(ColumnType::Date));
        assert!(parse_columns("a:b:money").unwrap_err().contains("unknown type"));
        assert!(parse_columns("a:b:integer:x").is_err());
        assert!(parse_columns("a:x, b:x").unwrap_err().contains("written twice"));
        assert_eq!(fields_of(&cols)[0], Field::new("user_id", Some(ColumnType::Integer)));
    }

    #[test]
    fn coercion() {
        let table = [
            (json!("42"), ColumnType::Integer, Ok(json!(42))),
            (json!(" 42 "), ColumnType::Integer, Ok(json!(42))),
            (json!("4.5"), ColumnType::Integer, Err(())),
            (json!("4.5"), ColumnType::Float, Ok(json!(4.5))),
            (json!("NaN"), ColumnType::Float, Err(())),
            (json!("yes"), ColumnType::Boolean, Ok(json!(true))),
            (json!(false), ColumnType::Boolean, Ok(json!(false))),
            (json!("maybe"), ColumnType::Boolean, Err(())),
            (json!("2026-02-30"), ColumnType::Date, Err(())),
            (json!("2026-02-28"), ColumnType::Date, Ok(json!("2026-02-28"))),
            (json!(7), ColumnType::String, Ok(json!("7"))),
            (Value::Null, ColumnType::Integer, Ok(Value::Null)),
        ];
        for (v, ty, expected) in table {
            assert_eq!(coerce(&v, ty).map_err(|_| ()), expected, "{v} as {ty:?}");
        }
        assert_eq!(date_of(&json!("2026-03-01")), chrono::NaiveDate::from_ymd_opt(2026, 3, 1));
        assert_eq!(as_text(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(as_text(&Value::Null), None);
        assert!(fits(&json!(3), Some(ColumnType::Integer)) && !fits(&json!("3"), Some(ColumnType::Integer)));
        assert!(fits(&Value::Null, Some(ColumnType::Date)) && !fits(&json!("2026-13-01"), Some(ColumnType::Date)));
        assert!(fits(&json!([1]), None) && !fits(&json!(1), Some(ColumnType::String)));
    }
}
