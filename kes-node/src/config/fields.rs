//! Walking the YAML value tree: each mapping with its dotted path, so that every error names
//! the field it is about; scalars with `${VAR}` expanded.
use serde_norway::{Mapping, Value};

/// The fields of one YAML mapping, with the dotted path used in error messages.
pub(super) struct Fields<'a> {
    path: String,
    map: Option<&'a Mapping>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(path: &str, map: &'a Mapping) -> Result<Fields<'a>, String> {
        let fields = Fields {
            path: path.to_string(),
            map: Some(map),
        };
        // Keys must be strings, so that every later lookup and error message can name them.
        for key in map.keys() {
            if key.as_str().is_none() {
                return Err(format!(
                    "config: {}: field names must be strings, found {}",
                    fields.label(),
                    describe(key)
                ));
            }
        }
        Ok(fields)
    }

    /// A section that may be absent or empty (`tls:` with nothing under it).
    pub(super) fn from_value(path: &str, value: &'a Value) -> Result<Fields<'a>, String> {
        match value {
            Value::Null => Ok(Fields {
                path: path.to_string(),
                map: None,
            }),
            Value::Mapping(m) => Fields::new(path, m),
            other => Err(format!(
                "config: {path}: expected a mapping, found {}",
                describe(other)
            )),
        }
    }

    pub(super) fn label(&self) -> &str {
        if self.path.is_empty() {
            "top level"
        } else {
            &self.path
        }
    }

    pub(super) fn child(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Is `name` present (even if empty)?
    pub(super) fn contains(&self, name: &str) -> bool {
        self.map.is_some_and(|m| m.contains_key(name))
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        self.map?.get(name).filter(|v| !v.is_null())
    }

    /// Rejects fields that are neither `known` nor `ignored`.
    pub(super) fn check_known(&self, known: &[&str], ignored: &[&str]) -> Result<(), String> {
        let Some(map) = self.map else { return Ok(()) };
        for key in map.keys().filter_map(Value::as_str) {
            if !known.contains(&key) && !ignored.contains(&key) {
                return Err(format!(
                    "config: unknown field '{}': expected one of {}",
                    self.child(key),
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    pub(super) fn section(&self, name: &str) -> Result<Fields<'a>, String> {
        match self.map.and_then(|m| m.get(name)) {
            None => Ok(Fields {
                path: self.child(name),
                map: None,
            }),
            Some(value) => Fields::from_value(&self.child(name), value),
        }
    }

    /// The entries of a mapping whose keys are user-chosen names (`api`, `policy`).
    pub(super) fn entries(&self) -> Result<Vec<(String, &'a Value)>, String> {
        let Some(map) = self.map else {
            return Ok(Vec::new());
        };
        Ok(map
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect())
    }

    /// A scalar as a string, `${VAR}` expanded; empty means absent.
    pub(super) fn string(&self, name: &str) -> Result<Option<String>, String> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let s = scalar(&self.child(name), value)?;
        Ok((!s.is_empty()).then_some(s))
    }

    pub(super) fn bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(value) => {
                let field = self.child(name);
                let s = scalar(&field, value)?;
                match s.as_str() {
                    "" => Ok(None),
                    "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Some(true)),
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Some(false)),
                    _ => Err(format!(
                        "config: {field}: expected true or false, found '{s}'"
                    )),
                }
            }
        }
    }

    /// A list of scalars; each element may be `${VAR}`.
    pub(super) fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        let field = self.child(name);
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| scalar(&format!("{field}[{i}]"), item))
                .collect(),
            Some(other) => Err(format!(
                "config: {field}: expected a list, found {}",
                describe(other)
            )),
        }
    }
}

/// A scalar's text with `${VAR}` expanded and surrounding whitespace trimmed.
pub(super) fn scalar(field: &str, value: &Value) -> Result<String, String> {
    let s = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => {
            return Err(format!(
                "config: {field}: expected a value, found {}",
                describe(other)
            ))
        }
    };
    let trimmed = s.trim();
    match trimmed
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
    {
        Some(var) => {
            let var = var.trim();
            // Through `harden`: a running server no longer has KES_HSM_KEY in its environment.
            match crate::harden::var(var) {
                Ok(v) => Ok(v.trim().to_string()),
                Err(std::env::VarError::NotPresent) => Err(format!(
                    "config: {field}: environment variable '{var}' is not set"
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                    "config: {field}: environment variable '{var}' is not valid UTF-8"
                )),
            }
        }
        None => Ok(trimmed.to_string()),
    }
}

pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
