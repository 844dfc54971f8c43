//! Records every tenant API request in the tenant's own audit log.
//!
//! The server appends an `AUDIT_LOG_ACCESSED` event (who, which role, what path, what answer)
//! to `access-log.ndjson` in the warehouse, with a MAC under a key derived from the signing key
//! (a line appended by anyone else is quarantined as `unauthenticated`), and syncs it to disk
//! before the answer leaves; the
//! pipeline reads the file as the access-log partition of its source
//! ([`custody_operators::sources::access_log`]) and chains each event into the tenant's log.
//!
//! Which log: the tenant named in the path when the caller may read it (its own tenant, or an
//! admin's); for a request on a tenant the caller may not see, or one that does not exist, the
//! caller's own tenant (so an attempt is on record where its owner can see it, and no tenant
//! learns of another's probing). Requests without a valid token name no one and are only
//! counted (`custody_operator_errors_total` is not involved; the 401 is the record).
//!
//! # Failure modes
//! If the record cannot be written, the request is answered 503 instead: no access goes
//! unrecorded.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use custody_operators::sources::access_log::{ACCESS_LOG_FILE, AccessLine, access_mac_key};
use custody_schemas::time::format_rfc3339;
use serde_json::json;

/// Appends access events to the warehouse's access log, each line authenticated
/// ([`AccessLine`]) so that a line written by anyone else is quarantined, not chained.
pub struct AccessLog {
    file: Mutex<File>,
    key: [u8; 32],
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

/// One request to record.
#[derive(Debug)]
pub struct Access<'a> {
    /// The tenant whose log it goes to.
    pub tenant: &'a str,
    /// Token name.
    pub principal: &'a str,
    /// Role.
    pub role: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Query string.
    pub query: Option<&'a str>,
    /// The SQL text of a query request.
    pub sql: Option<&'a str>,
    /// Response status.
    pub status: u16,
}

impl AccessLog {
    /// Opens (creates) `warehouse`'s access log for appending, authenticating records under
    /// the key derived from `signing_seed`.
    pub fn open(warehouse: &Path, signing_seed: &[u8; 32]) -> std::io::Result<Self> {
        std::fs::create_dir_all(warehouse)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(warehouse.join(ACCESS_LOG_FILE))?;
        Ok(AccessLog {
            file: Mutex::new(file),
            key: access_mac_key(signing_seed),
        })
    }

    /// Appends one Custody event (a legal hold an administrator placed or released), under
    /// the same authentication, and syncs it to disk: the pipeline chains it.
    pub fn append_event(&self, event: &serde_json::Value) -> std::io::Result<()> {
        self.append(event.to_string())
    }

    fn append(&self, event: String) -> std::io::Result<()> {
        let line = AccessLine::new(&self.key, event);
        let mut line = serde_json::to_vec(&line)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("access log lock poisoned"))?;
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Appends one access event and syncs it to disk.
    pub fn record(&self, a: &Access<'_>) -> std::io::Result<()> {
        let now = custody_schemas::time::now_us();
        let mut event = json!({
            "event_id": format!("custody-access-{}", uuid::Uuid::new_v4()),
            "schema_version": custody_schemas::event::SCHEMA_VERSION,
            "tenant_id": a.tenant,
            "session_id": "custody-api",
            "agent_id": "custody-api",
            "user_id": a.principal,
            "event_type": "AUDIT_LOG_ACCESSED",
            "timestamp": format_rfc3339(now),
            "parent_event_id": null,
            "payload": {
                "principal": a.principal,
                "role": a.role,
                "method": a.method,
                "path": a.path,
                "query": a.query,
                "status": a.status,
            },
        });
        if let Some(sql) = a.sql {
            event["payload"]["sql"] = sql.into();
        }
        self.append(event.to_string())
    }
}
