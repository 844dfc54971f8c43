//! Signed report documents: a report's exact bytes under an Ed25519 signature, as JSON and
//! as an HTML page that carries the same signed bytes, so a regulator can check either
//! offline with the public key alone (`custody verify-report`, or any Ed25519 library:
//! see `tests/py/verify_report.py`).
//!
//! # Format (`custody-signed-report/1`)
//! `{"format", "key_id", "algorithm": "ed25519", "report_sha256", "signature", "report"}`:
//! `report` is the report's JSON text (compact, as served), `report_sha256` its SHA-256 and
//! `signature` the hex Ed25519 signature of [`DOMAIN`] followed by that text. `key_id` is the
//! first 16 hex digits of SHA-256 of the public key. The HTML page holds the document in
//! `<script type="application/json" id="custody-signed-report">`, with `<` written `\u003c`.

use custody_operators::checkpoint::{Signer, key_id, verify_signed};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::regulatory::{Report, ReportRow};

/// The document format.
pub const FORMAT: &str = "custody-signed-report/1";

/// Prefixed to the report's bytes in the signed message (no other statement of Custody's
/// starts with it, so a report signature can never be replayed as another one).
pub const DOMAIN: &[u8] = b"custody-report/v1\n";

/// The id of the HTML element holding the document.
pub const HTML_ID: &str = "custody-signed-report";

/// A signed report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// [`FORMAT`].
    pub format: String,
    /// Signing key id.
    pub key_id: String,
    /// `ed25519`.
    pub algorithm: String,
    /// SHA-256 of `report`, hex.
    pub report_sha256: String,
    /// Ed25519 signature of [`DOMAIN`] + `report`, hex.
    pub signature: String,
    /// The report's JSON text.
    pub report: String,
}

/// Why a document does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Not a signed report (unreadable, or no document in the page).
    #[error("not a signed report: {0}")]
    Malformed(String),
    /// A format this build does not know.
    #[error("unknown format {0:?}")]
    Format(String),
    /// Signed by another key than the trusted one.
    #[error("signed by key {found}, not the trusted key {trusted}")]
    WrongKey {
        /// The document's key id.
        found: String,
        /// The trusted key's id.
        trusted: String,
    },
    /// The report's bytes are not the ones hashed or signed.
    #[error("the report's bytes do not match its signature")]
    BadSignature,
}

/// The message a report's signature covers.
fn message(report: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + report.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(report.as_bytes());
    m
}

impl SignedReport {
    /// Signs `report` (its compact JSON text).
    pub fn sign(signer: &Signer, report: &Report) -> Self {
        // Panic-free: a report is plain data (strings, integers, JSON values).
        let text = serde_json::to_string(report).unwrap_or_default();
        SignedReport {
            format: FORMAT.into(),
            key_id: signer.key_id().to_string(),
            algorithm: "ed25519".into(),
            report_sha256: hex::encode(Sha256::digest(text.as_bytes())),
            signature: signer.sign_bytes(&message(&text)),
            report: text,
        }
    }

    /// Checks the document under `key`; the report's JSON on success.
    pub fn verify(&self, key: &VerifyingKey) -> Result<serde_json::Value, DocumentError> {
        if self.format != FORMAT || self.algorithm != "ed25519" {
            return Err(DocumentError::Format(format!(
                "{}/{}",
                self.format, self.algorithm
            )));
        }
        let trusted = key_id(key);
        if self.key_id != trusted {
            return Err(DocumentError::WrongKey {
                found: self.key_id.clone(),
                trusted,
            });
        }
        if hex::encode(Sha256::digest(self.report.as_bytes())) != self.report_sha256
            || !verify_signed(key, &self.key_id, &message(&self.report), &self.signature)
        {
            return Err(DocumentError::BadSignature);
        }
        serde_json::from_str(&self.report).map_err(|e| DocumentError::Malformed(e.to_string()))
    }

    /// Reads a document: its JSON, or an HTML page carrying it.
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let marker = format!("id=\"{HTML_ID}\">");
        let json = match text.find(&marker) {
            Some(at) => {
                let start = at + marker.len();
                let end = text[start..]
                    .find("</script>")
                    .ok_or_else(|| DocumentError::Malformed("unterminated script".into()))?;
                &text[start..start + end]
            }
            None => text,
        };
        serde_json::from_str(json).map_err(|e| DocumentError::Malformed(e.to_string()))
    }

    /// The document as JSON, safe to embed in HTML (`<` escaped).
    pub fn to_json(&self) -> String {
        // Panic-free: plain strings.
        serde_json::to_string_pretty(self)
            .unwrap_or_default()
            .replace('<', "\\u003c")
    }

    /// An HTML rendering of `report`, carrying this document (its signature covers the
    /// embedded report, not the rendering).
    pub fn to_html(&self, report: &Report) -> String {
        let mut h = String::with_capacity(8192);
        h.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        h.push_str(&format!(
            "<title>{} — {}</title>\n",
            esc(report.title),
            esc(&report.tenant_id)
        ));
        h.push_str(STYLE);
        h.push_str("</head>\n<body>\n");
        h.push_str(&format!("<h1>{}</h1>\n<dl>\n", esc(report.title)));
        let mut item = |k: &str, v: &str| {
            h.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", esc(k), esc(v)));
        };
        item("Tenant", &report.tenant_id);
        item("Report", report.report);
        match &report.scope {
            Some(s) => {
                item(
                    "Period from",
                    s.from.as_deref().unwrap_or("the log's start"),
                );
                item("Period to", s.to.as_deref().unwrap_or("the checkpoint"));
                item(
                    "As of checkpoint (tree size)",
                    &s.as_of_tree_size.to_string(),
                );
                item("Events in scope", &s.events.to_string());
                item("Clock", &s.clock);
            }
            None => item("Scope", "the whole log, live"),
        }
        if let Some(c) = report
            .rows
            .first()
            .and_then(|r| r.provenance.checkpoint.as_ref())
        {
            item("Checkpoint root", &c.root);
            item("Checkpoint epoch", &c.epoch.to_string());
        }
        item("Signing key id", &self.key_id);
        item("Report SHA-256", &self.report_sha256);
        item("Signature (Ed25519)", &self.signature);
        h.push_str("</dl>\n<table>\n<thead><tr><th>Requirement</th><th>Metric</th>");
        h.push_str("<th>Status</th><th>Value</th><th>Views</th></tr></thead>\n<tbody>\n");
        for row in &report.rows {
            h.push_str(&html_row(row));
        }
        h.push_str("</tbody>\n</table>\n<p class=\"note\">The signed document below is what ");
        h.push_str("counts: check it with <code>custody verify-report --trusted-key KEY ");
        h.push_str("FILE</code>, or with any Ed25519 library over <code>custody-report/v1\\n");
        h.push_str("</code> followed by the embedded report text.</p>\n");
        h.push_str(&format!(
            "<script type=\"application/json\" id=\"{HTML_ID}\">{}</script>\n",
            self.to_json()
        ));
        h.push_str("</body>\n</html>\n");
        h
    }
}

const STYLE: &str = "<style>body{font-family:sans-serif;margin:2em;max-width:70em}\
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4em;\
vertical-align:top;text-align:left}pre{margin:0;white-space:pre-wrap;font-size:.85em}\
dt{font-weight:bold}dd{margin:0 0 .4em 0;word-break:break-all}.met{color:#060}\
.not_met{color:#a00}.attention{color:#a60}.note{color:#555}</style>\n";

fn html_row(row: &ReportRow) -> String {
    // Panic-free: a JSON value serializes.
    let status = serde_json::to_value(row.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let value = serde_json::to_string_pretty(&row.value).unwrap_or_default();
    let views: Vec<&str> = row.provenance.views.keys().copied().collect();
    format!(
        "<tr><td>{}</td><td>{}</td><td class=\"{status}\">{}</td><td><pre>{}</pre></td>\
         <td>{}</td></tr>\n",
        esc(row.requirement),
        esc(row.metric),
        esc(&status.replace('_', " ")),
        esc(&value),
        esc(&views.join(", ")),
    )
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
