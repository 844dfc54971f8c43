//! `custody hold` and the admin API's legal holds: placing and releasing them as chained
//! events, and listing those in force ([`custody_operators::holds`]).
//!
//! The command line appends the event itself (running the pipeline over it, like `custody
//! erase`); the API appends it to the authenticated access log, which the serving pipeline
//! chains within an epoch. Either way the event is validated first: an invalid request is
//! refused, never quarantined behind the caller's back.

use std::path::Path;

use anyhow::bail;
use custody_operators::holds::{Hold, active};
use custody_operators::sinks::iceberg::Warehouse;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;

/// What a new hold covers, as asked (`custody hold place`, `POST …/holds`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceHold {
    /// Its id (default: a new `hold-…`).
    #[serde(default)]
    pub hold_id: Option<String>,
    /// One session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// One agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Events from (RFC 3339).
    #[serde(default)]
    pub from: Option<String>,
    /// Events before (RFC 3339).
    #[serde(default)]
    pub to: Option<String>,
    /// Why.
    pub reason: String,
}

impl PlaceHold {
    /// The `LEGAL_HOLD_PLACED` payload: the whole tenant unless a session, an agent or a range
    /// is named (one of them).
    pub fn payload(&self, requested_by: &str) -> anyhow::Result<Value> {
        let range = self.from.is_some() || self.to.is_some();
        let scope = match (&self.session_id, &self.agent_id, range) {
            (None, None, false) => "tenant",
            (Some(_), None, false) => "session",
            (None, Some(_), false) => "agent",
            (None, None, true) => "range",
            _ => bail!("a hold covers the tenant, one session, one agent or one time range"),
        };
        let hold_id = self.hold_id.clone().unwrap_or_else(|| {
            format!("hold-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        });
        Ok(json!({
            "hold_id": hold_id,
            "scope": scope,
            "session_id": self.session_id,
            "agent_id": self.agent_id,
            "from": self.from,
            "to": self.to,
            "reason": self.reason,
            "requested_by": requested_by,
        }))
    }
}

/// A Custody event of `event_type` about `tenant`, checked against the schema as the pipeline
/// will check it; its id and the event.
pub fn hold_event(
    tenant: &str,
    requested_by: &str,
    event_type: &str,
    payload: Value,
) -> anyhow::Result<(String, Value)> {
    let (id, event) = crate::admin::custody_event(tenant, requested_by, event_type, payload);
    if let Err(e) = custody_schemas::decode_event(&serde_json::to_vec(&event)?) {
        bail!("{e}");
    }
    Ok((id, event))
}

/// The holds in force on `tenant` (on every tenant if `None`), from the warehouse's log.
pub fn in_force(warehouse: &Path, tenant: Option<&str>) -> anyhow::Result<Vec<Hold>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let events = runtime.block_on(async {
        let warehouse = Warehouse::open_read_only(warehouse).await?;
        warehouse.hold_events().await
    })?;
    Ok(active(events)
        .into_iter()
        .filter(|(t, _)| tenant.is_none_or(|want| want == t))
        .flat_map(|(_, holds)| holds)
        .collect())
}

/// Places a hold on `tenant`: records `LEGAL_HOLD_PLACED`; returns the hold's id.
pub fn place(
    config: &Config,
    warehouse: &Path,
    tenant: &str,
    hold: &PlaceHold,
    requested_by: &str,
) -> anyhow::Result<String> {
    let payload = hold.payload(requested_by)?;
    let hold_id = payload["hold_id"].as_str().unwrap_or_default().to_string();
    if in_force(warehouse, Some(tenant))?
        .iter()
        .any(|h| h.hold_id == hold_id)
    {
        bail!("hold {hold_id:?} is already in force on {tenant:?}");
    }
    let (_, event) = hold_event(tenant, requested_by, "LEGAL_HOLD_PLACED", payload)?;
    crate::admin::append_events(config, warehouse, &[event], None, None)?;
    Ok(hold_id)
}

/// Releases hold `hold_id` of `tenant`: records `LEGAL_HOLD_RELEASED`.
pub fn release(
    config: &Config,
    warehouse: &Path,
    tenant: &str,
    hold_id: &str,
    reason: &str,
    requested_by: &str,
) -> anyhow::Result<()> {
    if !in_force(warehouse, Some(tenant))?
        .iter()
        .any(|h| h.hold_id == hold_id)
    {
        bail!("no hold {hold_id:?} is in force on {tenant:?} (`custody hold list` lists them)");
    }
    let (_, event) = hold_event(
        tenant,
        requested_by,
        "LEGAL_HOLD_RELEASED",
        json!({"hold_id": hold_id, "reason": reason, "requested_by": requested_by}),
    )?;
    crate::admin::append_events(config, warehouse, &[event], None, None)
}
