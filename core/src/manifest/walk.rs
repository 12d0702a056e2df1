//! Reading foreign manifests (Kubernetes, Marathon) field by field from a JSON value: type errors
//! carry the field's path, and every field present that Hansa does not read becomes a warning.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

/// Errors and warnings of one document, each with the path of its field ("" for the document).
#[derive(Debug, Default)]
pub(crate) struct Diag {
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

impl Diag {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push((path.into(), message.into()));
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((path.into(), message.into()));
    }

    pub fn check(&mut self, path: impl Into<String>, r: Result<(), String>) {
        if let Err(message) = r {
            self.error(path, message);
        }
    }

    /// Warns that the field at `path` is ignored; empty values carry nothing and pass silently
    /// (tools like `kubectl create --dry-run` emit `creationTimestamp: null`, `status: {}`).
    pub fn unused(&mut self, path: &str, value: &Value) {
        let shown = match value {
            Value::Null => return,
            Value::Object(m) if m.is_empty() => return,
            Value::Array(a) if a.is_empty() => return,
            Value::String(s) if s.is_empty() => return,
            Value::Object(_) | Value::Array(_) => String::new(),
            Value::String(s) => format!("{} ", shorten(s)),
            other => format!("{other} "),
        };
        self.warn(path, format!("{shown}is not used by Hansa (ignored)"));
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

/// `parent.key`, or `key` at the document's root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// How a value reads in a type error: `string "three"`, `number 3.5`, `an object`.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {:?}", shorten(s)),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

fn type_error(d: &mut Diag, path: &str, expected: &str, got: &Value) {
    d.error(path, format!("expected {expected}, got {}", describe(got)));
}

/// A JSON object being read: remembers which keys were read, so that [`Obj::finish`] can warn
/// about the rest.
pub(crate) struct Obj<'v> {
    pub path: String,
    map: &'v Map<String, Value>,
    read: Vec<&'v str>,
}

impl<'v> Obj<'v> {
    /// `value` as an object; an error (and `None`) when it is something else.
    pub fn new(value: &'v Value, path: impl Into<String>, d: &mut Diag) -> Option<Self> {
        let path = path.into();
        match value {
            Value::Object(map) => Some(Obj {
                path,
                map,
                read: Vec::new(),
            }),
            other => {
                type_error(d, &path, "an object", other);
                None
            }
        }
    }

    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// The value of `key`, marked as read; `None` when absent or null.
    pub fn get(&mut self, key: &str) -> Option<&'v Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.read.push(k.as_str());
        (!v.is_null()).then_some(v)
    }

    /// Marks `key` as read without using it (it needs no warning).
    pub fn skip(&mut self, key: &str) {
        let _ = self.get(key);
    }

    pub fn str(&mut self, d: &mut Diag, key: &str) -> Option<&'v str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            other => {
                type_error(d, &self.path_of(key), "a string", other);
                None
            }
        }
    }

    pub fn string(&mut self, d: &mut Diag, key: &str) -> Option<String> {
        self.str(d, key).map(str::to_string)
    }

    pub fn number(&mut self, d: &mut Diag, key: &str) -> Option<&'v Number> {
        match self.get(key)? {
            Value::Number(n) => Some(n),
            other => {
                type_error(d, &self.path_of(key), "a number", other);
                None
            }
        }
    }

    pub fn int(&mut self, d: &mut Diag, key: &str) -> Option<i64> {
        let v = self.get(key)?;
        match v.as_i64() {
            Some(i) => Some(i),
            None => {
                type_error(d, &self.path_of(key), "an integer", v);
                None
            }
        }
    }

    /// An integer in `min..=max`, with an error naming the range otherwise.
    pub fn int_in<T: TryFrom<i64>>(
        &mut self,
        d: &mut Diag,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<T> {
        let i = self.int(d, key)?;
        if i < min {
            d.error(self.path_of(key), format!("must be >= {min} (got {i})"));
            return None;
        }
        if i > max {
            d.error(self.path_of(key), format!("must be <= {max} (got {i})"));
            return None;
        }
        T::try_from(i).ok()
    }

    pub fn bool(&mut self, d: &mut Diag, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                type_error(d, &self.path_of(key), "true or false", other);
                None
            }
        }
    }

    pub fn obj(&mut self, d: &mut Diag, key: &str) -> Option<Obj<'v>> {
        let path = self.path_of(key);
        Obj::new(self.get(key)?, path, d)
    }

    /// Like [`Obj::obj`], with an error when `key` is absent.
    pub fn required_obj(&mut self, d: &mut Diag, key: &str) -> Option<Obj<'v>> {
        if !self.has(key) {
            d.error(self.path_of(key), "missing");
        }
        self.obj(d, key)
    }

    /// The items of a list with their paths (`ports[0]`, ...); empty when absent.
    pub fn list(&mut self, d: &mut Diag, key: &str) -> Vec<(String, &'v Value)> {
        let path = self.path_of(key);
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
            Some(other) => {
                type_error(d, &path, "a list", other);
                Vec::new()
            }
        }
    }

    pub fn string_list(&mut self, d: &mut Diag, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (path, v) in self.list(d, key) {
            match v {
                Value::String(s) => out.push(s.clone()),
                other => type_error(d, &path, "a string", other),
            }
        }
        out
    }

    /// A map of strings to strings (labels, selectors, Marathon's env).
    pub fn string_map(&mut self, d: &mut Diag, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(mut m) = self.obj(d, key) else {
            return out;
        };
        for (k, v) in m.rest() {
            match v {
                Value::String(s) => {
                    out.insert(k.to_string(), s.clone());
                }
                other => type_error(d, &m.path_of(k), "a string", other),
            }
        }
        out
    }

    /// The keys not read yet, marked as read.
    pub fn rest(&mut self) -> Vec<(&'v str, &'v Value)> {
        let rest: Vec<(&'v str, &'v Value)> = self
            .map
            .iter()
            .filter(|(k, _)| !self.read.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        self.read.extend(rest.iter().map(|(k, _)| *k));
        rest
    }

    /// Warns about every key that was not read.
    pub fn finish(mut self, d: &mut Diag) {
        for (k, v) in self.rest() {
            d.unused(&self.path_of(k), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unread_fields_become_warnings_once_per_key() {
        let v = json!({"name": "a", "type": "LoadBalancer", "extra": {"deep": {"x": 1}}, "none": null, "empty": {}, "blank": ""});
        let mut d = Diag::default();
        let mut o = Obj::new(&v, "spec", &mut d).unwrap();
        assert_eq!(o.str(&mut d, "name"), Some("a"));
        o.finish(&mut d);
        assert!(d.errors.is_empty());
        assert_eq!(
            d.warnings,
            vec![
                (
                    "spec.extra".to_string(),
                    "is not used by Hansa (ignored)".to_string()
                ),
                (
                    "spec.type".to_string(),
                    "LoadBalancer is not used by Hansa (ignored)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn type_errors_name_the_field_and_the_value() {
        let v = json!({"instances": "three", "ports": [80, "x"], "n": -1});
        let mut d = Diag::default();
        let mut o = Obj::new(&v, "", &mut d).unwrap();
        assert_eq!(o.int(&mut d, "instances"), None);
        assert_eq!(o.string_list(&mut d, "ports"), vec!["x".to_string()]);
        assert_eq!(o.int_in::<u32>(&mut d, "n", 0, 10), None);
        assert_eq!(
            d.errors,
            vec![
                (
                    "instances".to_string(),
                    "expected an integer, got string \"three\"".to_string()
                ),
                (
                    "ports[0]".to_string(),
                    "expected a string, got number 80".to_string()
                ),
                ("n".to_string(), "must be >= 0 (got -1)".to_string()),
            ]
        );
    }
}
