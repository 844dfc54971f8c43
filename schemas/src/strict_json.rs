//! Strict JSON: RFC 8259 text into a [`Value`], refusing objects with duplicate member names.
//!
//! RFC 8259 §4 leaves duplicate names to the implementation, and implementations disagree: a
//! gateway that reads the first `tenant_id` and Custody reading the last would attribute one
//! record to two tenants. Custody accepts neither reading: a duplicate name anywhere in the
//! document is an error naming the member and where it is.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `text` as JSON, refusing duplicate member names at any depth.
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict { at: &At::Root }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Every string value of the top-level member `name` of a JSON object, in document order, even
/// when the name is duplicated (what a quarantine row must report about a record claiming two
/// tenants). Empty for anything that is not an object.
pub fn top_level_strings(text: &str, name: &str) -> Vec<String> {
    struct Collect<'a>(&'a str);
    impl<'de> Visitor<'de> for Collect<'_> {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == self.0 {
                    if let Value::String(s) = map.next_value::<Value>()? {
                        out.push(s);
                    }
                } else {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Collect(name)).unwrap_or_default()
}

/// Where a value is, built on the stack (no allocation unless an error is reported).
enum At<'a> {
    Root,
    Member(&'a At<'a>, &'a str),
    Element(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            At::Root => f.write_str("."),
            At::Member(At::Root, k) => write!(f, ".{k}"),
            At::Member(p, k) => write!(f, "{p}.{k}"),
            At::Element(At::Root, i) => write!(f, ".[{i}]"),
            At::Element(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

/// A [`Value`] seed that knows where it is (for the error message).
struct Strict<'a> {
    at: &'a At<'a>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let at = At::Element(self.at, out.len());
            match seq.next_element_seed(Strict { at: &at })? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict {
                at: &At::Member(self.at, &key),
            })?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate member name {key:?} in the object at `{}`",
                    self.at
                )));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert!(from_str(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        let err = from_str(r#"{"tenant_id":"a","x":1,"tenant_id":"b"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate member name \"tenant_id\"")
        );
        let err = from_str(r#"{"p":{"q":[{"k":1,"k":1}]}}"#).unwrap_err();
        assert!(err.to_string().contains("`.p.q[0]`"), "{err}");
        // Escapes are decoded before names are compared.
        assert!(from_str(r#"{"a":1,"\u0061":2}"#).is_err());
        assert!(from_str(r#"{"a":1} x"#).is_err());
    }

    #[test]
    fn values_equal_the_lenient_parser_on_valid_input() {
        for text in [
            r#"{"a":[1,-2,3.5,1e300,"s\n",null,true,{}],"b":18446744073709551615}"#,
            r#"[]"#,
            r#""x""#,
        ] {
            assert_eq!(
                from_str(text).unwrap(),
                serde_json::from_str::<Value>(text).unwrap()
            );
        }
    }

    #[test]
    fn every_claim_is_reported() {
        assert_eq!(
            top_level_strings(
                r#"{"tenant_id":"a","n":{"tenant_id":"z"},"tenant_id":"b"}"#,
                "tenant_id"
            ),
            ["a", "b"]
        );
        assert!(top_level_strings("[1]", "tenant_id").is_empty());
    }
}
