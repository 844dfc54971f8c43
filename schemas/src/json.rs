//! Borrowed JSON: a record parsed once into a tree whose strings point into the input, strict
//! about duplicate member names, written back as canonical JSON, and readable by serde (the
//! typed payloads validate against it without a second parse).
//!
//! Canonical JSON ([`Json::write_canonical`]): object members sorted by the UTF-8 bytes of
//! their names, no insignificant whitespace, strings escaped as `serde_json` does (only `"`,
//! `\` and control characters), numbers as `serde_json` prints them. It is what `serde_json`
//! writes for a [`serde_json::Value`] parsed from the same text, byte for byte (tested), at a
//! fraction of the cost: no map nodes and no copied strings.
//!
//! RFC 8259 §4 leaves duplicate names to the implementation, and implementations disagree: a
//! gateway that reads the first `tenant_id` and Custody reading the last would attribute one
//! record to two tenants. A duplicate name anywhere in the document is an error naming the
//! member and where it is.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    Visitor,
};

/// A JSON value whose strings borrow from the parsed text where they hold no escape.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// Any other number.
    F64(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// An array.
    Arr(Vec<Json<'a>>),
    /// An object: members sorted by name (bytes), names unique.
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// Parses `text` as JSON, refusing duplicate member names at any depth.
pub fn parse(text: &str) -> Result<Json<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Node { at: &At::Root }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parses `text` as a [`serde_json::Value`], refusing duplicate member names at any depth.
pub fn to_value(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    serde::Deserialize::deserialize(&parse(text)?)
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
            while let Some(key) = map.next_key_seed(Name)? {
                if key == self.0 {
                    if let serde_json::Value::String(s) = map.next_value()? {
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

impl<'a> Json<'a> {
    /// The member `name` of an object.
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(members) => members
                .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
                .ok()
                .map(|i| &members[i].1),
            _ => None,
        }
    }

    /// The member `name` of an object, to change it.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Json<'a>> {
        match self {
            Json::Obj(members) => members
                .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
                .ok()
                .map(|i| &mut members[i].1),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is a non-negative one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::U64(n) => Some(*n),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::U64(n) => Some(*n as f64),
            Json::I64(n) => Some(*n as f64),
            Json::F64(x) => Some(*x),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The kind of value, as error messages name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::U64(_) | Json::I64(_) | Json::F64(_) => "number",
            Json::Str(_) => "string",
            Json::Arr(_) => "array",
            Json::Obj(_) => "object",
        }
    }

    /// Every string inside this value (objects and arrays walked), to change them.
    pub fn for_each_str_mut(&mut self, f: &mut impl FnMut(&mut Cow<'a, str>)) {
        match self {
            Json::Str(s) => f(s),
            Json::Arr(items) => items.iter_mut().for_each(|i| i.for_each_str_mut(f)),
            Json::Obj(members) => members.iter_mut().for_each(|(_, v)| v.for_each_str_mut(f)),
            Json::Null | Json::Bool(_) | Json::U64(_) | Json::I64(_) | Json::F64(_) => {}
        }
    }

    /// Appends the canonical JSON of this value to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::U64(n) => write_u64(out, *n),
            Json::I64(n) => {
                if *n < 0 {
                    out.push(b'-');
                }
                write_u64(out, n.unsigned_abs());
            }
            // Writing a finite float to a Vec cannot fail (the parser makes no others).
            Json::F64(x) => drop(serde_json::to_writer(&mut *out, x)),
            Json::Str(s) => write_str(out, s),
            Json::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out);
                }
                out.push(b']');
            }
            Json::Obj(members) => {
                out.push(b'{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, name);
                    out.push(b':');
                    value.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The canonical JSON of this value.
    pub fn to_canonical(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_canonical(&mut out);
        // Panic-free: only valid UTF-8 (the input's strings and ASCII) was written.
        String::from_utf8(out).unwrap_or_default()
    }
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(u64_digits(v, &mut [0; 20]));
}

/// The decimal digits of `v`, written into `buf`.
pub fn u64_digits(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Whether `s` needs an escape as a JSON string (`"`, `\\` or a control character): most
/// strings go out as they are.
pub fn needs_escape(s: &str) -> bool {
    // Without short-circuit, so the scan vectorizes.
    s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Appends `s` as a JSON string, escaped as `serde_json` does: most strings need no escape
/// and go out as one slice.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_escape(s) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
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

/// A value seed that knows where it is (for the error message).
struct Node<'p> {
    at: &'p At<'p>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Json<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        // As `serde_json::Value`: non-negative integers are unsigned.
        Ok(if v >= 0 {
            Json::U64(v as u64)
        } else {
            Json::I64(v)
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(if v.is_finite() {
            Json::F64(v)
        } else {
            Json::Null
        })
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut out = Vec::new();
        loop {
            let at = At::Element(self.at, out.len());
            match seq.next_element_seed(Node { at: &at })? {
                Some(v) => out.push(v),
                None => return Ok(Json::Arr(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut out: Vec<(Cow<'de, str>, Json<'de>)> = Vec::with_capacity(16);
        while let Some(name) = map.next_key_seed(Name)? {
            let value = map.next_value_seed(Node {
                at: &At::Member(self.at, &name),
            })?;
            out.push((name, value));
        }
        // Most producers write members in order already.
        if !out.is_sorted_by(|a, b| a.0.as_bytes() < b.0.as_bytes()) {
            out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(de::Error::custom(format_args!(
                    "duplicate member name {:?} in the object at `{}`",
                    w[0].0, self.at
                )));
            }
        }
        Ok(Json::Obj(out))
    }
}

/// A member name, borrowed where it holds no escape.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// A string borrowed from the input where it holds no escape: the string type of the typed
/// payloads, which validate without copying.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Owned(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Text)
    }
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserializer<'de> for &'de Json<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            Json::Null => visitor.visit_unit(),
            Json::Bool(b) => visitor.visit_bool(*b),
            Json::U64(n) => visitor.visit_u64(*n),
            Json::I64(n) => visitor.visit_i64(*n),
            Json::F64(x) => visitor.visit_f64(*x),
            Json::Str(s) => visitor.visit_borrowed_str(s),
            Json::Arr(items) => {
                let mut seq = Seq(items.iter());
                let value = visitor.visit_seq(&mut seq)?;
                match seq.0.len() {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(items.len(), &"fewer elements")),
                }
            }
            Json::Obj(members) => {
                let mut map = Map {
                    members: members.iter(),
                    value: None,
                };
                let value = visitor.visit_map(&mut map)?;
                match map.members.len() {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(members.len(), &"fewer members")),
                }
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self {
            Json::Str(s) => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"string or map",
            )),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

impl Json<'_> {
    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Json::Null => Unexpected::Unit,
            Json::Bool(b) => Unexpected::Bool(*b),
            Json::U64(n) => Unexpected::Unsigned(*n),
            Json::I64(n) => Unexpected::Signed(*n),
            Json::F64(x) => Unexpected::Float(*x),
            Json::Str(s) => Unexpected::Str(s),
            Json::Arr(_) => Unexpected::Seq,
            Json::Obj(_) => Unexpected::Map,
        }
    }
}

struct Seq<'de>(std::slice::Iter<'de, Json<'de>>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = serde_json::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|v| seed.deserialize(v)).transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map<'de> {
    members: std::slice::Iter<'de, (Cow<'de, str>, Json<'de>)>,
    value: Option<&'de Json<'de>>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = serde_json::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.members.next() {
            Some((name, value)) => {
                self.value = Some(value);
                let name: &'de str = name;
                seed.deserialize(name.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom("a value before its name")),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert!(parse(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        let err = parse(r#"{"tenant_id":"a","x":1,"tenant_id":"b"}"#).unwrap_err();
        assert!(err.is_data());
        assert!(
            err.to_string()
                .contains("duplicate member name \"tenant_id\""),
            "{err}"
        );
        let err = parse(r#"{"p":{"q":[{"k":1,"k":1}]}}"#).unwrap_err();
        assert!(err.to_string().contains("`.p.q[0]`"), "{err}");
        // Escapes are decoded before names are compared.
        assert!(parse(r#"{"a":1,"\u0061":2}"#).is_err());
        assert!(parse(r#"{"a":1} x"#).is_err());
    }

    #[test]
    fn values_equal_the_lenient_parser_on_valid_input() {
        for text in [
            r#"{"a":[1,-2,3.5,1e300,"s\n",null,true,{}],"b":18446744073709551615}"#,
            r#"[]"#,
            r#""x""#,
        ] {
            assert_eq!(
                to_value(text).unwrap(),
                serde_json::from_str::<Value>(text).unwrap()
            );
        }
        let err = to_value(r#"{"p":{"q":[{"k":1,"k":1}]}}"#).unwrap_err();
        assert!(err.to_string().contains("`.p.q[0]`"), "{err}");
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

    /// Canonical text equals `serde_json`'s writing of a `Value` parsed from the same text,
    /// over generated documents of every shape.
    #[test]
    fn canonical_equals_serde_json_value() {
        let fixed = [
            r#"{"a":[1,-2,3.5,1e300,"s\n",null,true,{}],"b":18446744073709551615}"#,
            r#"{"z":1,"a":{"y":[],"b":"\u00e9\u0000\"\\/"},"m":-0.0,"n":-0,"e":1E2,"f":0.1}"#,
            r#"{"é":1,"e":2,"E":3,"ab":4,"a":5,"":6}"#,
            r#"[]"#,
            r#""x""#,
            r#"-9223372036854775808"#,
        ];
        let mut texts: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            texts.push(random_json(&mut seed, 0));
        }
        for text in &texts {
            let ours = parse(text).unwrap().to_canonical();
            let theirs =
                serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn random_json(seed: &mut u64, depth: usize) -> String {
        let pick = next(seed) % if depth > 3 { 6 } else { 8 };
        match pick {
            0 => "null".into(),
            1 => ["true", "false"][(next(seed) % 2) as usize].into(),
            2 => format!("{}", next(seed) as i64 >> (next(seed) % 64)),
            3 => {
                let forms = [
                    "1.5",
                    "-0.25",
                    "3e5",
                    "2E-3",
                    "1.0",
                    "0.1",
                    "123456789.123456789",
                ];
                forms[(next(seed) % forms.len() as u64) as usize].into()
            }
            4 | 5 => {
                let parts = [
                    "a",
                    "é",
                    "\\n",
                    "\\u0001",
                    "\\\"",
                    "\\/",
                    "日本",
                    " ",
                    "\\ud83d\\ude00",
                    "x@y.z",
                ];
                let n = next(seed) % 5;
                let body: String = (0..n)
                    .map(|_| parts[(next(seed) % parts.len() as u64) as usize])
                    .collect();
                format!("\"{body}\"")
            }
            6 => {
                let n = next(seed) % 4;
                let items: Vec<String> = (0..n).map(|_| random_json(seed, depth + 1)).collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let names = ["b", "a", "é", "A", "ab", "z", "_", "a b", "\\u0062x"];
                let mut used = std::collections::BTreeSet::new();
                let n = next(seed) % 5;
                let mut members = Vec::new();
                for _ in 0..n {
                    let name = names[(next(seed) % names.len() as u64) as usize];
                    let decoded = name.replace("\\u0062", "b");
                    if used.insert(decoded) {
                        members.push(format!(" \"{name}\" : {}", random_json(seed, depth + 1)));
                    }
                }
                format!("{{{}}}", members.join(","))
            }
        }
    }

    #[test]
    fn typed_structs_read_the_tree_as_serde_json_reads_text() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct T<'a> {
            #[serde(borrow)]
            s: Text<'a>,
            n: u64,
            #[serde(default, borrow)]
            o: Option<Text<'a>>,
            #[serde(borrow)]
            v: Vec<Text<'a>>,
            e: E,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum E {
            Yes,
        }
        for text in [
            r#"{"s":"x","n":1,"v":["a","b\n"],"e":"yes"}"#,
            r#"{"s":"x","n":1,"o":null,"v":[],"e":"yes"}"#,
            r#"{"s":"x","n":"1","v":[],"e":"yes"}"#,
            r#"{"s":"x","n":1,"v":[],"e":"no"}"#,
            r#"{"s":"x","n":1,"v":[],"e":"yes","extra":1}"#,
            r#"{"n":1,"v":[],"e":"yes"}"#,
            r#"{"s":2,"n":1,"v":[],"e":"yes"}"#,
            r#"{"s":"x","n":-1,"v":[1],"e":"yes"}"#,
        ] {
            let tree = parse(text).unwrap();
            let ours = serde_path_to_error::deserialize::<_, T>(&tree)
                .map_err(|e| format!("{} {}", e.path(), e.inner()));
            let value: Value = serde_json::from_str(text).unwrap();
            let theirs = serde_path_to_error::deserialize::<_, T>(value)
                .map(|_| ())
                .map_err(|e| format!("{} {}", e.path(), e.inner()));
            assert_eq!(
                ours.as_ref().map(|_| ()).map_err(Clone::clone),
                theirs,
                "{text}"
            );
            if let Ok(t) = ours {
                assert!(matches!(t.s.0, Cow::Borrowed(_)));
            }
        }
    }
}
