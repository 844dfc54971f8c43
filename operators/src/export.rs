//! Signed bulk exports of a tenant's events, as NDJSON or Parquet.
//!
//! The body is the tenant's events in chain order ([`EventRow`], the columns of
//! `custody.events`). The export is signed with the checkpoint key over
//! [`ExportManifest::message`]: the tenant, the format, the SHA-256 of the exact body bytes,
//! the number of events and the tree size and root of the checkpoint it was cut at. A holder of
//! the public key (`keys/<key_id>.pub`) checks the body hash and the signature, and then the
//! rows against the checkpoint (their leaf hashes rebuild its Merkle root). An export of a
//! period (`from`, `to`: event times) signs the period too; its rows are a part of the log,
//! each checked against the checkpoint with an inclusion proof.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::Signer;
use crate::error::Result;
use crate::verify::EventRow;

/// Domain separation of export signatures.
pub const EXPORT_DOMAIN: &str = "custody-export-v1\n";

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line.
    Ndjson,
    /// One Parquet file.
    Parquet,
}

impl ExportFormat {
    /// Parses `ndjson` or `parquet`.
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "ndjson" => Some(ExportFormat::Ndjson),
            "parquet" => Some(ExportFormat::Parquet),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Parquet => "parquet",
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// What an export's signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportManifest {
    /// Tenant.
    pub tenant_id: String,
    /// Format.
    pub format: ExportFormat,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
    /// Events in the body.
    pub events: u64,
    /// Tree size of the checkpoint the export was cut at.
    pub tree_size: u64,
    /// That checkpoint's Merkle root, hex.
    pub root: String,
    /// Signing key id.
    pub key_id: String,
    /// The export covers only events at or after this event time (RFC 3339), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The export covers only events before this event time (RFC 3339), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Ed25519 signature over [`ExportManifest::message`], hex.
    pub signature: String,
}

impl ExportManifest {
    /// The signed bytes.
    pub fn message(&self) -> Vec<u8> {
        let mut m = format!(
            "{EXPORT_DOMAIN}tenant_id={}\nformat={}\nbody_sha256={}\nevents={}\ntree_size={}\nroot={}\nkey_id={}\n",
            self.tenant_id,
            self.format.as_str(),
            self.body_sha256,
            self.events,
            self.tree_size,
            self.root,
            self.key_id
        );
        // A period is signed when there is one (a whole-log export's message is unchanged).
        if let Some(from) = &self.from {
            m.push_str(&format!("from={from}\n"));
        }
        if let Some(to) = &self.to {
            m.push_str(&format!("to={to}\n"));
        }
        m.into_bytes()
    }

    /// Whether `body` and the signature check out under `key`.
    pub fn verify(&self, body: &[u8], key: &VerifyingKey) -> bool {
        let Ok(sig) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&sig) else {
            return false;
        };
        hex::encode(Sha256::digest(body)) == self.body_sha256
            && key.verify_strict(&self.message(), &sig).is_ok()
    }
}

/// Encodes `rows` in `format`.
pub fn encode(rows: &[EventRow], format: ExportFormat) -> Result<Vec<u8>> {
    match format {
        ExportFormat::Ndjson => {
            let mut out = Vec::new();
            for r in rows {
                serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
                out.push(b'\n');
            }
            Ok(out)
        }
        ExportFormat::Parquet => parquet(rows),
    }
}

fn parquet(rows: &[EventRow]) -> Result<Vec<u8>> {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let schema = Arc::new(Schema::new(vec![
        text("tenant_id", false),
        Field::new("seq", DataType::Int64, false),
        text("event_id", false),
        text("schema_version", false),
        text("event_type", false),
        text("session_id", false),
        text("agent_id", false),
        text("user_id", true),
        text("event_time", false),
        text("parent_event_id", true),
        text("payload", false),
        text("prev_hash", false),
        text("hash", false),
        text("leaf_hash", false),
    ]));
    let col = |f: fn(&EventRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let opt = |f: fn(&EventRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            col(|r| &r.tenant_id),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seq))),
            col(|r| &r.event_id),
            col(|r| &r.schema_version),
            col(|r| &r.event_type),
            col(|r| &r.session_id),
            col(|r| &r.agent_id),
            opt(|r| r.user_id.as_deref()),
            col(|r| &r.event_time),
            opt(|r| r.parent_event_id.as_deref()),
            col(|r| &r.payload),
            col(|r| &r.prev_hash),
            col(|r| &r.hash),
            col(|r| &r.leaf_hash),
        ],
    )?;
    let mut out = Vec::new();
    let io = |e: parquet::errors::ParquetError| std::io::Error::other(e.to_string());
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).map_err(io)?;
    writer.write(&batch).map_err(io)?;
    writer.close().map_err(io)?;
    Ok(out)
}

/// The part of a tenant's log an export holds.
#[derive(Clone, Copy, Debug)]
pub struct ExportCut<'a> {
    /// Tree size of the checkpoint the export was cut at.
    pub tree_size: u64,
    /// That checkpoint's root, hex.
    pub root: &'a str,
    /// Event time range (RFC 3339), if the export is of a period.
    pub from: Option<&'a str>,
    /// See `from`.
    pub to: Option<&'a str>,
}

/// Signs an export of `tenant` whose `body` holds `events` rows, cut at `cut`.
pub fn sign(
    signer: &Signer,
    tenant: &str,
    format: ExportFormat,
    body: &[u8],
    events: u64,
    cut: ExportCut<'_>,
) -> ExportManifest {
    let mut m = ExportManifest {
        tenant_id: tenant.to_string(),
        format,
        body_sha256: hex::encode(Sha256::digest(body)),
        events,
        tree_size: cut.tree_size,
        root: cut.root.to_string(),
        key_id: signer.key_id().to_string(),
        from: cut.from.map(str::to_string),
        to: cut.to.map(str::to_string),
        signature: String::new(),
    };
    m.signature = signer.sign_bytes(&m.message());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> EventRow {
        EventRow {
            tenant_id: "acme".into(),
            seq,
            event_id: format!("e{seq}"),
            schema_version: "1.0".into(),
            event_type: "TASK_COMPLETED".into(),
            session_id: "s".into(),
            agent_id: "a".into(),
            user_id: None,
            event_time: "2026-03-08T00:00:00.000000Z".into(),
            parent_event_id: None,
            payload: "{}".into(),
            prev_hash: "00".into(),
            hash: "11".into(),
            leaf_hash: "22".into(),
        }
    }

    #[test]
    fn signed_exports_verify_and_tampering_fails() {
        let signer = Signer::from_seed(&[7; 32]);
        let rows = [row(0), row(1)];
        for format in [ExportFormat::Ndjson, ExportFormat::Parquet] {
            let body = encode(&rows, format).unwrap();
            let cut = ExportCut {
                tree_size: 2,
                root: "ab",
                from: None,
                to: None,
            };
            let m = sign(&signer, "acme", format, &body, 2, cut);
            assert!(m.verify(&body, &signer.public_key()));
            let mut tampered = body.clone();
            let mid = tampered.len() / 2;
            tampered[mid] ^= 1;
            assert!(!m.verify(&tampered, &signer.public_key()));
            let mut other = m.clone();
            other.tenant_id = "globex".into();
            assert!(!other.verify(&body, &signer.public_key()));
            // A period is signed: widening it after the fact breaks the signature.
            let period = ExportCut {
                from: Some("2026-01-01T00:00:00Z"),
                to: Some("2026-04-01T00:00:00Z"),
                ..cut
            };
            let m = sign(&signer, "acme", format, &body, 2, period);
            assert!(m.verify(&body, &signer.public_key()));
            let mut widened = m.clone();
            widened.from = None;
            assert!(!widened.verify(&body, &signer.public_key()));
        }
        let ndjson = encode(&rows, ExportFormat::Ndjson).unwrap();
        assert_eq!(ndjson.iter().filter(|b| **b == b'\n').count(), 2);
    }
}
