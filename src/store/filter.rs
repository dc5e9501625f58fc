//! Metadata filters on searches: which documents' chunks a search may
//! return. A filter is a JSON object whose keys are fields and whose values
//! are conditions, all of which must hold:
//!
//! - fields: `source`, `document_id`, `created_at` (Unix seconds), and
//!   `metadata.KEY` (a key of the document's metadata object; `a.b` reaches
//!   into nested objects);
//! - conditions: a value (equality), an array of values (any of them), or
//!   a range `{"gt" | "gte" | "lt" | "lte": number, ...}`.
//!
//! `{"source": "runbooks", "metadata.team": ["ops", "sre"],
//! "created_at": {"gte": 1767225600}}`
//!
//! A filter becomes one SQL condition over the `documents` table (alias
//! `d`), so it is applied inside every search mode, never by dropping
//! results after the fact.

use crate::error::{Error, Result};
use rusqlite::types::Value as Sql;
use serde_json::Value;

/// A parsed, validated filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    clauses: Vec<(Field, Condition)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Source,
    DocumentId,
    CreatedAt,
    /// A JSON path into the metadata object, e.g. `$."team"`.
    Metadata(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Equals(Sql),
    AnyOf(Vec<Sql>),
    /// Bounds: `(operator, value)` pairs such as `(">=", 3.0)`.
    Range(Vec<(&'static str, f64)>),
}

impl Filter {
    /// Parse a filter object; what it cannot mean is an `InvalidInput`
    /// error naming the key.
    pub fn parse(value: &Value) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(invalid(
                "`filter` must be an object of field: condition".into(),
            ));
        };
        let mut clauses = Vec::with_capacity(map.len());
        for (key, condition) in map {
            let field = match key.as_str() {
                "source" => Field::Source,
                "document_id" => Field::DocumentId,
                "created_at" => Field::CreatedAt,
                _ => match key.strip_prefix("metadata.") {
                    Some(path) => Field::Metadata(json_path(key, path)?),
                    None => {
                        return Err(invalid(format!(
                            "unknown filter field {key:?}: use source, document_id, \
                             created_at or metadata.KEY"
                        )))
                    }
                },
            };
            clauses.push((field, Condition::parse(key, condition)?));
        }
        Ok(Self { clauses })
    }

    /// The SQL condition over `documents d` and its parameters, in order.
    pub fn sql(&self) -> (String, Vec<Sql>) {
        if self.clauses.is_empty() {
            return ("1".into(), Vec::new());
        }
        let mut parts = Vec::with_capacity(self.clauses.len());
        let mut params = Vec::new();
        for (field, condition) in &self.clauses {
            // The column, and what it binds each time it appears.
            let (column, bound) = match field {
                Field::Source => ("d.source", None),
                Field::DocumentId => ("d.id", None),
                Field::CreatedAt => ("d.created_at", None),
                Field::Metadata(path) => {
                    ("json_extract(d.metadata, ?)", Some(Sql::Text(path.clone())))
                }
            };
            let column = |params: &mut Vec<Sql>| {
                params.extend(bound.clone());
                column
            };
            let part = match condition {
                Condition::Equals(Sql::Null) => format!("{} IS NULL", column(&mut params)),
                Condition::Equals(v) => {
                    let c = column(&mut params);
                    params.push(v.clone());
                    format!("{c} = ?")
                }
                Condition::AnyOf(values) => {
                    let c = column(&mut params);
                    params.extend(values.iter().cloned());
                    format!("{c} IN ({})", vec!["?"; values.len()].join(", "))
                }
                Condition::Range(bounds) => bounds
                    .iter()
                    .map(|(op, v)| {
                        let c = column(&mut params);
                        params.push(Sql::Real(*v));
                        format!("{c} {op} ?")
                    })
                    .collect::<Vec<_>>()
                    .join(" AND "),
            };
            parts.push(format!("({part})"));
        }
        (parts.join(" AND "), params)
    }
}

impl Condition {
    fn parse(key: &str, value: &Value) -> Result<Self> {
        match value {
            Value::Array(values) => {
                if values.is_empty() {
                    return Err(invalid(format!(
                        "filter {key:?}: an empty list matches nothing; leave the key out instead"
                    )));
                }
                let values = values
                    .iter()
                    .map(|v| scalar(key, v))
                    .collect::<Result<Vec<_>>>()?;
                if values.contains(&Sql::Null) {
                    return Err(invalid(format!(
                        "filter {key:?}: null is not allowed in a list"
                    )));
                }
                Ok(Condition::AnyOf(values))
            }
            Value::Object(bounds) => {
                if bounds.is_empty() {
                    return Err(invalid(format!(
                        "filter {key:?}: a range needs gt, gte, lt or lte"
                    )));
                }
                let mut out = Vec::with_capacity(bounds.len());
                for (op, v) in bounds {
                    let op = match op.as_str() {
                        "gt" => ">",
                        "gte" => ">=",
                        "lt" => "<",
                        "lte" => "<=",
                        _ => {
                            return Err(invalid(format!(
                                "filter {key:?}: unknown range bound {op:?} (use gt, gte, lt, lte)"
                            )))
                        }
                    };
                    let Some(v) = v.as_f64() else {
                        return Err(invalid(format!(
                            "filter {key:?}: range bounds must be numbers"
                        )));
                    };
                    out.push((op, v));
                }
                Ok(Condition::Range(out))
            }
            v => Ok(Condition::Equals(scalar(key, v)?)),
        }
    }
}

/// A JSON scalar as an SQL value (booleans as SQLite's JSON functions
/// return them: 1 and 0).
fn scalar(key: &str, value: &Value) -> Result<Sql> {
    Ok(match value {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(*b as i64),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Sql::Text(s.clone()),
        _ => {
            return Err(invalid(format!(
                "filter {key:?}: values must be strings, numbers, booleans or null"
            )))
        }
    })
}

/// `a.b` as SQLite's JSON path `$."a"."b"`.
fn json_path(key: &str, path: &str) -> Result<String> {
    let mut out = String::from("$");
    for part in path.split('.') {
        if part.is_empty() || part.contains('"') {
            return Err(invalid(format!(
                "filter {key:?}: metadata keys must be non-empty and contain no '\"'"
            )));
        }
        out.push_str(&format!(".\"{part}\""));
    }
    Ok(out)
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The ids of the documents a filter selects, in a real SQLite table.
    fn select(filter: Value) -> Vec<String> {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE documents (id TEXT, source TEXT, metadata TEXT, created_at INTEGER);
             INSERT INTO documents VALUES
               ('a', 'runbooks', '{\"team\": \"ops\", \"level\": 3, \"on_call\": true}', 100),
               ('b', 'runbooks', '{\"team\": \"sre\", \"level\": 5, \"tags\": {\"env\": \"prod\"}}', 200),
               ('c', 'wiki', '{\"team\": \"ops\"}', 300),
               ('d', NULL, '{}', 400);",
        )
        .unwrap();
        let (condition, params) = Filter::parse(&filter).unwrap().sql();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT d.id FROM documents d WHERE {condition} ORDER BY d.id"
            ))
            .unwrap();
        let ids = stmt
            .query_map(rusqlite::params_from_iter(params), |r| r.get(0))
            .unwrap();
        ids.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn filters_select_the_documents_they_name() {
        assert_eq!(select(json!({})), ["a", "b", "c", "d"]);
        assert_eq!(select(json!({"source": "runbooks"})), ["a", "b"]);
        assert_eq!(select(json!({"source": null})), ["d"]);
        assert_eq!(select(json!({"metadata.team": "ops"})), ["a", "c"]);
        assert_eq!(
            select(json!({"metadata.team": ["sre", "ops"], "source": "wiki"})),
            ["c"]
        );
        assert_eq!(select(json!({"document_id": ["b", "d", "zz"]})), ["b", "d"]);
        assert_eq!(
            select(json!({"created_at": {"gte": 200, "lt": 400}})),
            ["b", "c"]
        );
        assert_eq!(select(json!({"created_at": 300})), ["c"]);
        assert_eq!(select(json!({"metadata.level": {"gt": 3}})), ["b"]);
        assert_eq!(
            select(json!({"metadata.level": {"gte": 3, "lte": 4}})),
            ["a"]
        );
        assert_eq!(select(json!({"metadata.on_call": true})), ["a"]);
        assert_eq!(select(json!({"metadata.tags.env": "prod"})), ["b"]);
        assert!(select(json!({"metadata.team": "nobody"})).is_empty());
    }

    #[test]
    fn what_a_filter_cannot_mean_is_refused_by_name() {
        for (filter, words) in [
            (json!("ops"), "must be an object"),
            (json!({"team": "ops"}), "unknown filter field \"team\""),
            (json!({"source": []}), "empty list"),
            (json!({"source": [null]}), "null is not allowed"),
            (json!({"created_at": {}}), "needs gt, gte, lt or lte"),
            (
                json!({"created_at": {"after": 3}}),
                "unknown range bound \"after\"",
            ),
            (
                json!({"created_at": {"gt": "yesterday"}}),
                "must be numbers",
            ),
            (
                json!({"metadata.team": {"gt": 1, "x": 2}}),
                "unknown range bound",
            ),
            (json!({"metadata.": 1}), "must be non-empty"),
            (json!({"metadata.a\"b": 1}), "contain no"),
            (json!({"source": [["nested"]]}), "must be strings, numbers"),
        ] {
            let err = Filter::parse(&filter).unwrap_err().to_string();
            assert!(err.contains(words), "{filter}: {err}");
        }
    }
}
