//! Interned names: the tenant, agent, event type, tool and model ids that view state keys on.
//!
//! A [`Name`] is a reference to the one copy of its text the process holds, so keys are two
//! words with no allocation of their own, equality and hashing look at the address only, and a
//! fact extracted from an event copies no string. Names order, print and (de)serialize as
//! their text, so snapshots and every output are as with `String`s.
//!
//! # State and its bound
//! One copy of each distinct text ever interned, never freed: the ids of tenants, agents,
//! event types, tools and models, a set the views' keys are bounded by already (drift keeps
//! every agent's first window, model attribution every model's use).
//!
//! Equality and hashing by address hold within one process, which is where names live: a
//! snapshot holds their texts, and routing between workers happens inside the process.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, PoisonError, RwLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interned id; see the module documentation.
#[derive(Clone, Copy)]
pub struct Name(&'static str);

static NAMES: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);

impl Name {
    /// The name of `text`, interning it if it is new.
    pub fn new(text: &str) -> Name {
        let found = NAMES
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(text)
            .copied();
        if let Some(name) = found {
            return Name(name);
        }
        let mut names = NAMES.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = names.get(text) {
            return Name(name);
        }
        let name: &'static str = Box::leak(text.into());
        names.insert(name);
        Name(name)
    }

    /// Its text.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Self {
        Name::new(text)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        // One copy per text: the same text is the same address.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(self.0, state);
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        if self == other {
            Ordering::Equal
        } else {
            self.0.cmp(other.0)
        }
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Name::new(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_order_and_read_as_their_text() {
        let texts = [
            "tenant-1",
            "tenant-10",
            "agent-7",
            "",
            "é",
            "tenant-1",
            "Tenant-1",
        ];
        let names: Vec<Name> = texts.iter().map(|t| Name::new(t)).collect();
        for (a, x) in texts.iter().zip(&names) {
            assert_eq!(x.as_str(), *a);
            assert_eq!(x.to_string(), *a);
            let json = serde_json::to_string(x).unwrap();
            assert_eq!(json, serde_json::to_string(a).unwrap());
            assert_eq!(serde_json::from_str::<Name>(&json).unwrap(), *x);
            for (b, y) in texts.iter().zip(&names) {
                assert_eq!(x == y, a == b, "{a} vs {b}");
                assert_eq!(x.cmp(y), a.cmp(b), "{a} vs {b}");
            }
        }
        // Interned once: the same text from anywhere is the same copy.
        let owned = String::from("tenant-1");
        assert!(std::ptr::eq(Name::new(&owned).as_str(), names[0].as_str()));
        let from_threads: Vec<Name> = (0..4)
            .map(|_| std::thread::spawn(|| Name::new("agent-from-a-thread")))
            .map(|h| h.join().unwrap())
            .collect();
        assert!(from_threads.windows(2).all(|w| w[0] == w[1]));
    }
}
