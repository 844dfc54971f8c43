//! The configuration log (`custody.config_log`): a record of the evidence-relevant
//! configuration each pipeline ran under, chained by digest and sealed with the epochs.
//!
//! A pipeline is given its configuration's evidence (what decides which events are kept, what
//! is tokenized, which rules are checked and which keys sign and seal: never a secret) and
//! the sink compares it, at the first epoch it commits, with the last row of the log. If it
//! differs (or the log is empty), a row is committed in that epoch, so it is under the
//! epoch's seal, signed with everything else the epoch wrote; the row names the previous
//! row's digest and the sections that changed. A configuration is thus on record from the
//! first epoch processed under it, and a change of policy or a key rotation cannot go
//! unrecorded.
//!
//! # State
//! The evidence until the first commit (one JSON document).
//!
//! # Failure modes
//! None beyond the commit's: the row is part of the epoch, which commits whole or not at all.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One row of `custody.config_log`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEntry {
    /// The first epoch processed under it (the one that committed the row).
    pub epoch: u64,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// SHA-256 (hex) of `config`.
    pub digest: String,
    /// The digest of the row before, if any.
    pub previous_digest: Option<String>,
    /// The sections of `config` that differ from the row before (all the first time).
    pub changed: Vec<String>,
    /// The configuration, canonical JSON (members sorted).
    pub config: String,
    /// The command that ran under it (`custody run`, …).
    pub recorded_by: String,
}

/// The evidence-relevant configuration a pipeline runs under, and the command running it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEvidence {
    /// The configuration, by section; keys by id and public key only.
    pub config: Value,
    /// The command running it.
    pub recorded_by: String,
}

/// SHA-256 (hex) of `config`'s canonical JSON (`Value`'s maps are sorted).
pub fn digest(config: &Value) -> String {
    hex::encode(Sha256::digest(config.to_string().as_bytes()))
}

/// The sections of `now` that differ from `before` (every section of `now` without one).
pub fn changed(before: Option<&Value>, now: &Value) -> Vec<String> {
    let Some(sections) = now.as_object() else {
        return Vec::new();
    };
    let mut out: Vec<String> = sections
        .iter()
        .filter(|(name, value)| before.and_then(|b| b.get(name.as_str())) != Some(value))
        .map(|(name, _)| name.clone())
        .collect();
    // A section removed is a change too.
    if let Some(before) = before.and_then(Value::as_object) {
        out.extend(
            before
                .keys()
                .filter(|name| !sections.contains_key(name.as_str()))
                .cloned(),
        );
    }
    out.sort();
    out
}

/// The row to commit at `epoch` for `evidence`, given the log's `last` row: `None` if the
/// configuration is the one last recorded.
pub fn entry(
    evidence: &ConfigEvidence,
    last: Option<&ConfigEntry>,
    epoch: u64,
    recorded_at: String,
) -> Option<ConfigEntry> {
    let digest = digest(&evidence.config);
    if last.is_some_and(|l| l.digest == digest) {
        return None;
    }
    let before: Option<Value> = last.and_then(|l| serde_json::from_str(&l.config).ok());
    Some(ConfigEntry {
        epoch,
        recorded_at,
        previous_digest: last.map(|l| l.digest.clone()),
        changed: changed(before.as_ref(), &evidence.config),
        config: evidence.config.to_string(),
        recorded_by: evidence.recorded_by.clone(),
        digest,
    })
}

/// What is wrong with a log (`entries` in epoch order): a row whose digest is not its
/// configuration's, that does not name the row before it, or that repeats it.
pub fn check(entries: &[ConfigEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut previous: Option<&ConfigEntry> = None;
    for e in entries {
        let recomputed = serde_json::from_str::<Value>(&e.config)
            .map(|c| digest(&c))
            .unwrap_or_default();
        if recomputed != e.digest {
            problems.push(format!(
                "the configuration recorded at epoch {} does not have its digest {}",
                e.epoch, e.digest
            ));
        }
        if e.previous_digest.as_deref() != previous.map(|p| p.digest.as_str()) {
            problems.push(format!(
                "the configuration recorded at epoch {} does not follow the one before it \
                 (previous_digest {:?})",
                e.epoch, e.previous_digest
            ));
        }
        if previous.is_some_and(|p| p.digest == e.digest || p.epoch >= e.epoch) {
            problems.push(format!(
                "the configuration recorded at epoch {} repeats or precedes the one before it",
                e.epoch
            ));
        }
        previous = Some(e);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn evidence(config: Value) -> ConfigEvidence {
        ConfigEvidence {
            config,
            recorded_by: "custody run".into(),
        }
    }

    #[test]
    fn changes_are_recorded_once_each_and_chained() {
        let a = evidence(json!({"keys": {"kek": "1"}, "retention": {"days": 180}}));
        let b = evidence(json!({"keys": {"kek": "2"}, "retention": {"days": 180}}));
        let first = entry(&a, None, 0, "t0".into()).unwrap();
        assert_eq!(first.changed, ["keys", "retention"]);
        assert_eq!(first.previous_digest, None);
        assert_eq!(entry(&a, Some(&first), 3, "t1".into()), None);
        let second = entry(&b, Some(&first), 5, "t2".into()).unwrap();
        assert_eq!(second.changed, ["keys"]);
        assert_eq!(
            second.previous_digest.as_deref(),
            Some(first.digest.as_str())
        );
        assert!(check(&[first.clone(), second.clone()]).is_empty());
        // Member order does not change the digest.
        let reordered: Value =
            serde_json::from_str(r#"{"retention":{"days":180},"keys":{"kek":"1"}}"#).unwrap();
        assert_eq!(digest(&reordered), first.digest);

        // A configuration edited in place, a row dropped, a row replayed: each is found.
        let mut edited = second.clone();
        edited.config = edited.config.replace("\"2\"", "\"3\"");
        assert_eq!(check(&[first.clone(), edited]).len(), 1);
        assert_eq!(check(std::slice::from_ref(&second)).len(), 1);
        assert!(!check(&[first.clone(), first.clone()]).is_empty());
        let gone = evidence(json!({"keys": {"kek": "2"}}));
        let third = entry(&gone, Some(&second), 6, "t3".into()).unwrap();
        assert_eq!(third.changed, ["retention"]);
    }
}
