//! Data residency: which location's pipeline keeps an input.
//!
//! A tenant can be pinned to a storage location (`[tenants.T] location = "eu"`); each location
//! runs its own pipeline over its own warehouse and key directory, reading the same input.
//! Every input is kept by exactly one location: that of the first tenant it claims (for an
//! input that does not parse, the first `"tenant_id": "…"` in its bytes), or the default
//! location (tenants pinned nowhere) when it claims none. A pipeline passes on what another
//! location keeps, counting it, so an input's data, quarantined copies included, is only ever
//! written where its tenant lives.
//!
//! # State
//! The tenant → location map of the configuration (bounded by it).
//!
//! # Metrics
//! `custody_events_elsewhere_total{location}`, counted by the caller.

use std::collections::HashMap;

use crate::record::RawRecord;

/// This pipeline's location and where every pinned tenant lives.
#[derive(Clone, Debug, Default)]
pub struct Residency {
    /// This pipeline's location (`None`: the default location).
    here: Option<String>,
    /// Pinned tenant → its location.
    pinned: HashMap<String, String>,
}

/// The name the default location (tenants pinned nowhere) is reported under.
pub const DEFAULT_LOCATION: &str = "default";

impl Residency {
    /// A pipeline at `here` (`None`: the default location) with tenants pinned as `pinned`.
    pub fn new(here: Option<String>, pinned: impl IntoIterator<Item = (String, String)>) -> Self {
        Residency {
            here,
            pinned: pinned.into_iter().collect(),
        }
    }

    /// The location that keeps `tenant`'s data (`None`: the default location).
    pub fn location_of(&self, tenant: &str) -> Option<&str> {
        self.pinned.get(tenant).map(String::as_str)
    }

    /// Whether `tenant`'s data is kept here.
    pub fn is_here(&self, tenant: &str) -> bool {
        self.location_of(tenant) == self.here.as_deref()
    }

    /// Where `record` is kept, if not here: the location's name. Custody's own sources (the
    /// access log, admin events) are always kept here.
    pub fn elsewhere<'a>(&'a self, record: &RawRecord) -> Option<&'a str> {
        if record.partition < 0 || self.pinned.is_empty() && self.here.is_none() {
            return None;
        }
        let home = claimed_tenant(&record.bytes).and_then(|t| self.location_of(&t));
        if home == self.here.as_deref() {
            None
        } else {
            Some(home.unwrap_or(DEFAULT_LOCATION))
        }
    }
}

/// The first tenant `bytes` claim: the first top-level `tenant_id` string of a JSON object,
/// else (an input that does not parse, or was cut short) the first `"tenant_id": "…"` in it.
fn claimed_tenant(bytes: &[u8]) -> Option<String> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Some(first) = custody_schemas::json::top_level_strings(text, "tenant_id")
            .into_iter()
            .next()
    {
        return Some(first);
    }
    let key = b"\"tenant_id\"";
    let at = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &bytes[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(partition: i32, text: &str) -> RawRecord {
        RawRecord::new(partition, 0, text.as_bytes().to_vec())
    }

    #[test]
    fn every_input_is_kept_by_exactly_one_location() {
        let pinned = [("acme".to_string(), "eu".to_string())];
        let home = Residency::new(None, pinned.clone());
        let eu = Residency::new(Some("eu".into()), pinned);
        let inputs = [
            (r#"{"tenant_id":"acme","x":1}"#, "eu"),
            (r#"{"tenant_id":"globex"}"#, DEFAULT_LOCATION),
            // Cut short, invalid, or duplicated: the first claim.
            (
                r#"{"payload":{"a":"b"},"tenant_id" : "acme", "x": [1,"#,
                "eu",
            ),
            (r#"not json "tenant_id":"acme""#, "eu"),
            (r#"{"tenant_id":"acme","tenant_id":"globex"}"#, "eu"),
            (
                r#"{"tenant_id":"globex","tenant_id":"acme"}"#,
                DEFAULT_LOCATION,
            ),
            // No claim at all: the default location.
            ("\u{0}\u{1}garbage", DEFAULT_LOCATION),
            (r#"{"tenant_id":42}"#, DEFAULT_LOCATION),
        ];
        for (text, keeper) in inputs {
            let r = raw(0, text);
            let (at_home, at_eu) = (home.elsewhere(&r).is_none(), eu.elsewhere(&r).is_none());
            assert!(at_home != at_eu, "{text}: kept by exactly one");
            assert_eq!(at_eu, keeper == "eu", "{text}");
            let away = if at_home {
                eu.elsewhere(&r)
            } else {
                home.elsewhere(&r)
            };
            assert_eq!(away, Some(keeper), "{text}");
        }
        // Custody's own sources are always kept where they are written.
        assert_eq!(eu.elsewhere(&raw(-1, r#"{"tenant_id":"globex"}"#)), None);
        assert!(eu.is_here("acme") && !eu.is_here("globex") && home.is_here("globex"));
    }
}
