//! Legal holds: what of a tenant's log may be neither expired by retention nor erased.
//!
//! A hold is placed and released by chained events of the tenant's own log
//! (`LEGAL_HOLD_PLACED`, `LEGAL_HOLD_RELEASED`), so the holds in force at any position of the
//! log are a function of the log: [`active`] folds the tenant's hold events in order. A hold
//! covers the whole tenant, one session, one agent, or a time range of event times
//! ([`Hold::covers`]). Retention ([`crate::retention`]) skips held events (and, under a
//! tenant-wide hold, the tenant's quarantined records); `custody erase` refuses to destroy a
//! held tenant's keys unless told to override, which its `DATA_ERASED` event records.
//!
//! # State
//! The active holds of the tenants asked about, read from the events table when needed (an
//! application of retention, an erasure, the API's listing): a scan of its `event_type`
//! column for the two hold types.
//!
//! # Failure modes
//! A hold event whose payload does not parse (it was validated before it was chained, so
//! only a damaged lake holds one) is skipped with a warning; a release of a hold that is not
//! in force changes nothing.

use std::collections::BTreeMap;

use crate::sinks::iceberg::StoredEvent;
use custody_schemas::event::payload::HoldScope;
use custody_schemas::time::parse_rfc3339;
use serde::Serialize;

/// One hold in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// Its id within the tenant.
    pub hold_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// What it covers.
    pub scope: HoldScope,
    /// The session, for a session hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The agent, for an agent hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Start of a range hold (UTC micros), if bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_us: Option<i64>,
    /// End of a range hold (UTC micros, exclusive), if bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_us: Option<i64>,
    /// Why.
    pub reason: String,
    /// Who placed it.
    pub requested_by: String,
    /// The position of its `LEGAL_HOLD_PLACED` event.
    pub seq: u64,
}

impl Hold {
    /// Whether an event of `session` by `agent` at `time_us` is held.
    pub fn covers(&self, session: &str, agent: &str, time_us: i64) -> bool {
        match self.scope {
            HoldScope::Tenant => true,
            HoldScope::Session => self.session_id.as_deref() == Some(session),
            HoldScope::Agent => self.agent_id.as_deref() == Some(agent),
            HoldScope::Range => {
                self.from_us.is_none_or(|f| time_us >= f) && self.to_us.is_none_or(|t| time_us < t)
            }
        }
    }

    /// Whether it holds the whole tenant.
    pub fn whole_tenant(&self) -> bool {
        self.scope == HoldScope::Tenant
    }

    /// The hold, for people: `H-1 (session s-9: "matter 42", placed by counsel@acme)`.
    pub fn describe(&self) -> String {
        let what = match self.scope {
            HoldScope::Tenant => "the whole tenant".to_string(),
            HoldScope::Session => format!("session {}", self.session_id.as_deref().unwrap_or("")),
            HoldScope::Agent => format!("agent {}", self.agent_id.as_deref().unwrap_or("")),
            HoldScope::Range => format!(
                "events from {} to {}",
                self.from_us.map_or(
                    "the start".to_string(),
                    custody_schemas::time::format_rfc3339
                ),
                self.to_us
                    .map_or("now".to_string(), custody_schemas::time::format_rfc3339)
            ),
        };
        format!(
            "{} ({what}: {:?}, placed by {})",
            self.hold_id, self.reason, self.requested_by
        )
    }
}

/// The holds in force after `events`, per tenant: each tenant's hold events folded in log
/// order (a hold placed again under the same id replaces the earlier one).
pub fn active(mut events: Vec<StoredEvent>) -> BTreeMap<String, Vec<Hold>> {
    events.sort_by(|a, b| (&a.tenant_id, a.seq).cmp(&(&b.tenant_id, b.seq)));
    let mut out: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for e in events {
        let Ok(p) = serde_json::from_str::<serde_json::Value>(&e.payload) else {
            tracing::warn!(tenant_id = %e.tenant_id, seq = e.seq, "unreadable hold event");
            continue;
        };
        let text = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let Some(hold_id) = text("hold_id") else {
            continue;
        };
        let holds = out.entry(e.tenant_id.clone()).or_default();
        holds.retain(|h| h.hold_id != hold_id);
        if e.event_type != "LEGAL_HOLD_PLACED" {
            continue;
        }
        let Some(scope) = p
            .get("scope")
            .and_then(|s| serde_json::from_value::<HoldScope>(s.clone()).ok())
        else {
            tracing::warn!(tenant_id = %e.tenant_id, seq = e.seq, "hold event without a scope");
            continue;
        };
        let time = |k: &str| text(k).and_then(|t| parse_rfc3339(&t).ok());
        holds.push(Hold {
            hold_id,
            tenant_id: e.tenant_id.clone(),
            scope,
            session_id: text("session_id"),
            agent_id: text("agent_id"),
            from_us: time("from"),
            to_us: time("to"),
            reason: text("reason").unwrap_or_default(),
            requested_by: text("requested_by").unwrap_or_default(),
            seq: e.seq,
        });
    }
    out.retain(|_, h| !h.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, event_type: &str, payload: &str) -> StoredEvent {
        StoredEvent {
            tenant_id: "acme".into(),
            seq,
            event_type: event_type.into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn holds_are_folded_from_the_log_and_cover_their_scope() {
        let holds = active(vec![
            event(
                9,
                "LEGAL_HOLD_RELEASED",
                r#"{"hold_id":"h1","reason":"closed","requested_by":"counsel"}"#,
            ),
            event(
                3,
                "LEGAL_HOLD_PLACED",
                r#"{"hold_id":"h1","scope":"session","session_id":"s-1","reason":"m-1","requested_by":"counsel"}"#,
            ),
            event(
                4,
                "LEGAL_HOLD_PLACED",
                r#"{"hold_id":"h2","scope":"range","from":"2026-01-01T00:00:00Z","to":"2026-02-01T00:00:00Z","reason":"m-2","requested_by":"counsel"}"#,
            ),
            event(
                5,
                "LEGAL_HOLD_PLACED",
                r#"{"hold_id":"h3","scope":"agent","agent_id":"a-7","reason":"m-3","requested_by":"counsel"}"#,
            ),
        ]);
        let acme = &holds["acme"];
        // h1 was released (the release comes later in the log, whatever the input order).
        let ids: Vec<&str> = acme.iter().map(|h| h.hold_id.as_str()).collect();
        assert_eq!(ids, ["h2", "h3"]);
        let jan = parse_rfc3339("2026-01-15T00:00:00Z").unwrap();
        let mar = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        assert!(acme[0].covers("s-1", "a-1", jan));
        assert!(!acme[0].covers("s-1", "a-1", mar));
        assert!(acme[1].covers("s-2", "a-7", mar));
        assert!(!acme[1].covers("s-2", "a-8", mar));
        assert!(!acme.iter().any(Hold::whole_tenant));
        let tenant = active(vec![event(
            1,
            "LEGAL_HOLD_PLACED",
            r#"{"hold_id":"all","scope":"tenant","reason":"m","requested_by":"c"}"#,
        )]);
        assert!(tenant["acme"][0].whole_tenant() && tenant["acme"][0].covers("x", "y", 0));
    }
}
