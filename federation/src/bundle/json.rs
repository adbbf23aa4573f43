//! A JSON tree that keeps duplicate object members visible.
//!
//! serde_json's own `Value` silently keeps the last of two members with the same
//! name. RFC 7517 §4 and SPIFFE TDB §5.1.1/§6.3 need duplicates to be *detected*, so
//! documents are first read into this tree, whose objects are ordered lists of
//! members, and the bundle rules then decide what a duplicate means where it occurs.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

/// One JSON value; objects keep every member in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The JSON type name, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "boolean",
            Self::Number(_) => "number",
            Self::String(_) => "string",
            Self::Array(_) => "array",
            Self::Object(_) => "object",
        }
    }
}

/// Members of an object, with lookups that notice duplicates.
pub(crate) struct Members<'a>(pub(crate) &'a [(String, Json)]);

impl<'a> Members<'a> {
    /// The first member name that occurs more than once, if any.
    pub(crate) fn first_duplicate(&self) -> Option<&'a str> {
        let mut seen = std::collections::BTreeSet::new();
        self.0
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| !seen.insert(*name))
    }

    /// The value of the member `name` (case-sensitive), if present.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Json> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A member whose name equals `name` ignoring ASCII case but differs from it; used
    /// to explain why a required member was "missing".
    pub(crate) fn case_variant(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| *n != name && n.eq_ignore_ascii_case(name))
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &'a str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, Json>()? {
            members.push((name, value));
        }
        Ok(Json::Object(members))
    }
}

/// Extend a JSON Pointer (RFC 6901) with one reference token, escaping `~` and `/`.
pub(crate) fn pointer(base: &str, token: &str) -> String {
    let escaped = token.replace('~', "~0").replace('/', "~1");
    format!("{base}/{escaped}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_kept_and_found() {
        let json: Json = serde_json::from_str(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        let Json::Object(members) = json else {
            panic!("not an object")
        };
        assert_eq!(members.len(), 3);
        assert_eq!(Members(&members).first_duplicate(), Some("a"));
    }

    #[test]
    fn pointer_escapes_tokens() {
        assert_eq!(pointer("/trust_domains", "a/b~c"), "/trust_domains/a~1b~0c");
    }
}
