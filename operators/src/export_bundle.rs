//! An export as one self-contained file: a POSIX tar archive (ustar) holding the events, the
//! signed manifest, the checkpoint the export was cut at and the public key, so that the
//! signature survives `curl -o` and e-mail (the response headers of a plain export do not).
//!
//! | File | Content |
//! |---|---|
//! | `events.ndjson` / `events.parquet` | the body, byte for byte what was signed |
//! | `manifest.json` | the [`ExportManifest`]: body SHA-256, events, cut, key id, signature |
//! | `checkpoint.json` | the tenant's signed checkpoint the export was cut at |
//! | `public-key.json` | `{algorithm, key_id, public_key}` of the signing key |
//! | `README.txt` | how to check it |
//!
//! [`verify_bundle`] checks one against a trusted key: the body hash and the manifest's
//! signature, the checkpoint's signature, and that the manifest names that checkpoint.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, key_id};
use crate::export::{ExportFormat, ExportManifest};

/// The manifest's file name in a bundle.
pub const MANIFEST: &str = "manifest.json";
/// The checkpoint's file name in a bundle.
pub const CHECKPOINT: &str = "checkpoint.json";
/// The public key's file name in a bundle.
pub const PUBLIC_KEY: &str = "public-key.json";
/// The instructions' file name in a bundle.
pub const README: &str = "README.txt";

/// Why a bundle does not check out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// Not a tar archive this module wrote (or truncated).
    #[error("not a readable tar archive: {0}")]
    Archive(String),
    /// A file the bundle must hold is missing.
    #[error("the bundle has no {0}")]
    Missing(String),
    /// A JSON file does not parse.
    #[error("{file} is unreadable: {reason}")]
    Unreadable {
        /// The file.
        file: String,
        /// The parser's message.
        reason: String,
    },
    /// The body's hash or the manifest's signature is wrong for the trusted key.
    #[error("the events do not match the signed manifest (body changed, or another key)")]
    BadManifest,
    /// The checkpoint's signature is wrong for the trusted key.
    #[error("the checkpoint is not signed by the trusted key")]
    BadCheckpoint,
    /// The manifest was cut at another checkpoint than the one bundled.
    #[error("the manifest names tree size {manifest} with another root than the checkpoint's")]
    OtherCheckpoint {
        /// The manifest's tree size.
        manifest: u64,
    },
}

/// The bundled public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledKey {
    /// Always `ed25519`.
    pub algorithm: String,
    /// Key id.
    pub key_id: String,
    /// The key, hex.
    pub public_key: String,
}

/// The body's file name for `format`.
pub fn body_file(format: ExportFormat) -> String {
    format!("events.{}", format.as_str())
}

/// The bundle of a signed export: a tar archive of the files above.
pub fn bundle(
    manifest: &ExportManifest,
    body: &[u8],
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
    mtime_secs: u64,
) -> Vec<u8> {
    let key = BundledKey {
        algorithm: "ed25519".into(),
        key_id: key_id(key),
        public_key: hex::encode(key.as_bytes()),
    };
    let readme = format!(
        "Signed export of tenant {tenant}'s audit log ({events} events), cut at its checkpoint of \
         tree size {size}.\n\n\
         Check it with the log's public key obtained out of band (not only the one bundled):\n\
         \n  custody verify-export THIS_FILE.tar --trusted-key KEY_HEX\n\n\
         By hand: SHA-256 of {body} must equal manifest.json's body_sha256; the Ed25519 \
         signature in manifest.json covers the lines\n\
         custody-export-v1 / tenant_id= / format= / body_sha256= / events= / tree_size= / root= / \
         key_id= (and from= / to= for a period), each ending in a newline;\n\
         checkpoint.json is the signed checkpoint whose tree_size and root the manifest names.\n",
        tenant = manifest.tenant_id,
        events = manifest.events,
        size = manifest.tree_size,
        body = body_file(manifest.format),
    );
    tar(
        &[
            (&body_file(manifest.format), body),
            (MANIFEST, &pretty(manifest)),
            (CHECKPOINT, &pretty(checkpoint)),
            (PUBLIC_KEY, &pretty(&key)),
            (README, readme.as_bytes()),
        ],
        mtime_secs,
    )
}

/// Pretty JSON with a final newline.
fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// What [`verify_bundle`] found.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    /// The manifest.
    pub manifest: ExportManifest,
    /// The checkpoint it was cut at.
    pub checkpoint: Checkpoint,
    /// The body.
    pub body: Vec<u8>,
    /// The bundled key (checked against the trusted one only if `trusted` was given).
    pub bundled_key: BundledKey,
}

/// Checks a bundle against `trusted` (or, if `None`, the key it carries: that proves only
/// that the bundle is intact, not who made it).
pub fn verify_bundle(
    archive: &[u8],
    trusted: Option<&VerifyingKey>,
) -> Result<VerifiedBundle, BundleError> {
    let files = untar(archive)?;
    let file = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| BundleError::Missing(name.to_string()))
    };
    fn parse<T: serde::de::DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, BundleError> {
        serde_json::from_slice(bytes).map_err(|e| BundleError::Unreadable {
            file: name.to_string(),
            reason: e.to_string(),
        })
    }
    let manifest: ExportManifest = parse(MANIFEST, file(MANIFEST)?)?;
    let checkpoint: Checkpoint = parse(CHECKPOINT, file(CHECKPOINT)?)?;
    let bundled_key: BundledKey = parse(PUBLIC_KEY, file(PUBLIC_KEY)?)?;
    let body = file(&body_file(manifest.format))?.to_vec();
    let key = match trusted {
        Some(k) => *k,
        None => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(bundled_key.public_key.trim(), &mut bytes)
                .ok()
                .and_then(|()| VerifyingKey::from_bytes(&bytes).ok())
                .ok_or_else(|| BundleError::Unreadable {
                    file: PUBLIC_KEY.into(),
                    reason: "not an Ed25519 public key".into(),
                })?
        }
    };
    if !manifest.verify(&body, &key) {
        return Err(BundleError::BadManifest);
    }
    if !checkpoint.verify(&key) {
        return Err(BundleError::BadCheckpoint);
    }
    if checkpoint.tenant_id != manifest.tenant_id
        || checkpoint.tree_size != manifest.tree_size
        || checkpoint.root != manifest.root
    {
        return Err(BundleError::OtherCheckpoint {
            manifest: manifest.tree_size,
        });
    }
    Ok(VerifiedBundle {
        manifest,
        checkpoint,
        body,
        bundled_key,
    })
}

const BLOCK: usize = 512;

/// A ustar archive of regular files (mode 0644, owner 0), names shorter than 100 bytes.
pub fn tar(files: &[(&str, &[u8])], mtime_secs: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        let mut header = [0u8; BLOCK];
        let name = name.as_bytes();
        header[..name.len().min(99)].copy_from_slice(&name[..name.len().min(99)]);
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], bytes.len() as u64);
        octal(&mut header[136..148], mtime_secs);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is summed with its own field as spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(field.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(bytes);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// `value` as zero-padded octal filling `field` but its last byte (NUL).
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

/// The regular files of a ustar archive (other entries, such as directories, are skipped).
pub fn untar(mut bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    let bad = |why: &str| BundleError::Archive(why.to_string());
    let mut files = Vec::new();
    loop {
        if bytes.len() < BLOCK {
            return Err(bad("it ends inside a header"));
        }
        let (header, rest) = bytes.split_at(BLOCK);
        if header.iter().all(|&b| b == 0) {
            return Ok(files);
        }
        let stored: u64 =
            parse_octal(&header[148..156]).ok_or_else(|| bad("bad checksum field"))?;
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err(bad("a header's checksum is wrong"));
        }
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(header[..name_end].to_vec())
            .map_err(|_| bad("a name is not UTF-8"))?;
        let size = parse_octal(&header[124..136]).ok_or_else(|| bad("bad size field"))? as usize;
        let padded = size.div_ceil(BLOCK) * BLOCK;
        if rest.len() < padded {
            return Err(bad("it ends inside a file"));
        }
        if matches!(header[156], b'0' | 0) {
            files.push((name, rest[..size].to_vec()));
        }
        bytes = &rest[padded..];
    }
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Signer;
    use crate::export::{ExportCut, sign};

    #[test]
    fn tar_round_trips_and_refuses_damage() {
        let big = vec![7u8; 1300];
        let archive = tar(
            &[("a.txt", b"hello"), ("empty", b""), ("big.bin", &big)],
            1_700_000_000,
        );
        assert_eq!(archive.len() % BLOCK, 0);
        let files = untar(&archive).unwrap();
        assert_eq!(
            files,
            vec![
                ("a.txt".to_string(), b"hello".to_vec()),
                ("empty".to_string(), Vec::new()),
                ("big.bin".to_string(), big.clone()),
            ]
        );
        let mut damaged = archive.clone();
        damaged[3] ^= 1;
        assert!(matches!(untar(&damaged), Err(BundleError::Archive(_))));
        assert!(matches!(
            untar(&archive[..700]),
            Err(BundleError::Archive(_))
        ));
    }

    fn signed() -> (Signer, Vec<u8>) {
        let signer = Signer::from_seed(&[3; 32]);
        let body = b"{\"seq\":0}\n".to_vec();
        let checkpoint = signer.checkpoint("acme", 1, &[0xab; 32], &[1; 32], 0, 0, &[0; 32]);
        let manifest = sign(
            &signer,
            "acme",
            ExportFormat::Ndjson,
            &body,
            1,
            ExportCut {
                tree_size: 1,
                root: &checkpoint.root,
                from: None,
                to: None,
            },
        );
        let archive = bundle(&manifest, &body, &checkpoint, &signer.public_key(), 0);
        (signer, archive)
    }

    #[test]
    fn a_bundle_verifies_and_every_change_is_caught() {
        let (signer, archive) = signed();
        let ok = verify_bundle(&archive, Some(&signer.public_key())).unwrap();
        assert_eq!(ok.manifest.events, 1);
        assert_eq!(ok.body, b"{\"seq\":0}\n");
        assert!(verify_bundle(&archive, None).is_ok());
        let other = Signer::from_seed(&[4; 32]).public_key();
        assert_eq!(
            verify_bundle(&archive, Some(&other)).unwrap_err(),
            BundleError::BadManifest
        );
        // The body changed (the file rewritten with a valid header).
        let mut files = untar(&archive).unwrap();
        files[0].1 = b"{\"seq\":1}\n".to_vec();
        let named: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        assert_eq!(
            verify_bundle(&tar(&named, 0), Some(&signer.public_key())).unwrap_err(),
            BundleError::BadManifest
        );
        // A file left out.
        assert_eq!(
            verify_bundle(&tar(&named[1..], 0), None).unwrap_err(),
            BundleError::Missing("events.ndjson".into())
        );
    }
}
