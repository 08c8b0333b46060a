//! Fides placeholders (`<name>`, `<a.b>`, `<name?>`) and the encodings Fides applies to
//! requests (FIDES-BEHAVIOUR.md §2): where placeholder values come from ([`Params`],
//! [`Lookup`]), the placeholders themselves ([`placeholder`]), Python's `str()` /
//! `json.dumps` text for substituted values ([`python`]), and quote_plus query strings,
//! form bodies with sorted keys and basic credentials ([`encode`]).

mod encode;
mod placeholder;
mod python;

pub use encode::{basic_header, encode_pairs, form_encode, quote_plus};
pub use placeholder::{Template, Unresolved};
pub use python::{python_float, python_json, python_repr, python_text};

use serde_json::Value;
use std::fmt;

/// Connection parameters (`secrets:` plus connector-param defaults). Values are secret:
/// `Debug` prints only the names.
#[derive(Clone, Default)]
pub struct Params(serde_json::Map<String, Value>);

impl Params {
    pub fn new(map: serde_json::Map<String, Value>) -> Params {
        Params(map)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn insert(&mut self, name: &str, value: Value) {
        self.0.insert(name.to_owned(), value);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Looks up `name` like pydash.get: the whole name first, then a dotted path.
    pub fn get(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(name) {
            return Some(v);
        }
        let mut parts = name.split('.');
        let mut current = self.0.get(parts.next()?)?;
        for part in parts {
            current = match current {
                Value::Object(map) => map.get(part)?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Where placeholder values come from: values known only at run time (`code`, `state`,
/// `refresh_token`, …) first, then the connection's params.
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    pub params: &'a Params,
    pub runtime: &'a [(&'a str, &'a str)],
}

impl<'a> Lookup<'a> {
    pub fn new(params: &'a Params) -> Lookup<'a> {
        Lookup {
            params,
            runtime: &[],
        }
    }

    /// The substituted text of a placeholder's value, or None when it is missing or null.
    pub fn text(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.runtime.iter().find(|(k, _)| *k == name) {
            return Some((*v).to_owned());
        }
        match self.params.get(name)? {
            Value::Null => None,
            value => Some(python_text(value)),
        }
    }
}

/// Params from a JSON object (for tests).
#[cfg(test)]
fn test_params(v: Value) -> Params {
    match v {
        Value::Object(m) => Params::new(m),
        _ => unreachable!(),
    }
}

/// A text filled on the spot (for tests).
#[cfg(test)]
fn test_assign(text: &str, lookup: &Lookup<'_>) -> Option<String> {
    placeholder::Template::parse(text).fill(lookup).ok()
}
