//! Keys outside the lake: the signing key, the key-encryption key and the PII master key come
//! from an external command (as a KMS or HSM client would give them), no key file is written
//! beside the warehouse, the signing key is rotated (the warehouse resumes only when the old
//! public key is declared, and verifies under both), and the KEK is rotated with
//! `custody rewrap-keys`, after which the old KEK is no longer needed to reveal a token.

use std::path::Path;
use std::process::Output;

use custody_tests::{config_changes, custody_command, generate_ndjson, read_tables, rows};
use serde_json::Value;

/// `custody ARGS` with no key in the environment.
fn custody(args: &[&str]) -> Output {
    custody_command()
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CUSTODY_SIGNING_KEY")
        .env_remove("CUSTODY_KEK")
        .env_remove("CUSTODY_MASTER_KEY")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Ed25519 public key (hex) of a 32-byte seed (hex).
fn public_of(seed: &str) -> String {
    let seed: [u8; 32] = hex::decode(seed).unwrap().try_into().unwrap();
    hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .as_bytes(),
    )
}

/// A config whose keys come from `script` (and, while rotating, the old signing key and KEK).
fn config(dir: &Path, script: &Path, previous_signer: Option<&str>, kek_previous: bool) -> String {
    let command = format!("command:sh {}", script.display());
    let mut text = format!(
        "[serve]\nlisten = \"off\"\n[vault]\ntokens = true\ncontent = true\n[keys]\n\
         signing = \"{command}\"\nkek = \"{command}\"\npii_master = \"{command}\"\n"
    );
    if kek_previous {
        text.push_str(&format!("kek_previous = \"{command}\"\n"));
    }
    if let Some(key) = previous_signer {
        text.push_str(&format!("signing_previous = [\"{key}\"]\n"));
    }
    let path = dir.join(format!(
        "custody-{}-{kek_previous}.toml",
        previous_signer.is_some()
    ));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn keys_come_from_providers_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("kms");
    std::fs::create_dir_all(&keys).unwrap();
    let write = |name: &str, value: &str| std::fs::write(keys.join(name), value).unwrap();
    let (signing_a, signing_b) = ("11".repeat(32), "22".repeat(32));
    let (kek_a, kek_b) = ("33".repeat(32), "44".repeat(32));
    write("signing", &signing_a);
    write("kek", &kek_a);
    write("pii-master", &"55".repeat(32));
    // The "KMS client": prints the key named by CUSTODY_KEY.
    let script = dir.path().join("kms.sh");
    std::fs::write(
        &script,
        format!("cat {}/\"$CUSTODY_KEY\"\n", keys.display()),
    )
    .unwrap();

    let input = dir.path().join("events.ndjson");
    generate_ndjson(&input, 600, 2);
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first = dir.path().join("first.ndjson");
    std::fs::write(&first, lines[..300].join("\n") + "\n").unwrap();
    let wh = dir.path().join("wh");
    let whs = wh.to_str().unwrap();
    let cfg = config(dir.path(), &script, None, false);
    ok(custody(&[
        "--config",
        &cfg,
        "run",
        "--input",
        first.to_str().unwrap(),
        "--warehouse",
        whs,
    ]));
    // No key was generated beside the warehouse: every one came from the provider.
    let key_dir = dir.path().join("wh.keys");
    for name in ["signing.key", "kek.key"] {
        assert!(!key_dir.join(name).exists(), "{name} was written");
    }
    let (pub_a, pub_b) = (public_of(&signing_a), public_of(&signing_b));
    // The keys in use are on record in custody.config_log, by id and public key only.
    let changes = config_changes(&wh);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["config"]["keys"]["signing"]["public_key"], pub_a);
    assert!(changes[0]["previous_digest"].is_null());
    let recorded = changes[0].to_string();
    for secret in [&signing_a, &kek_a, &"55".repeat(32)] {
        assert!(
            !recorded.contains(secret.as_str()),
            "a key in the system log"
        );
    }
    ok(custody(&[
        "--config",
        &cfg,
        "verify",
        "--warehouse",
        whs,
        "--trusted-key",
        &pub_a,
    ]));

    // Signing key rotation: the new key alone does not resume the warehouse sealed under the
    // old one; declared, it does, and seals on.
    write("signing", &signing_b);
    let rest = dir.path().join("rest.ndjson");
    std::fs::write(&rest, lines.join("\n") + "\n").unwrap();
    let refused = custody(&[
        "--config",
        &cfg,
        "run",
        "--input",
        rest.to_str().unwrap(),
        "--warehouse",
        whs,
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not verify under the signing key")
    );
    let rotating = config(dir.path(), &script, Some(&pub_a), false);
    ok(custody(&[
        "--config",
        &rotating,
        "run",
        "--input",
        rest.to_str().unwrap(),
        "--warehouse",
        whs,
    ]));
    ok(custody(&[
        "--config",
        &rotating,
        "verify",
        "--warehouse",
        whs,
        "--trusted-key",
        &pub_a,
        "--trusted-key",
        &pub_b,
    ]));
    let only_new = custody(&[
        "--config",
        &rotating,
        "verify",
        "--warehouse",
        whs,
        "--trusted-key",
        &pub_b,
    ]);
    assert!(
        !only_new.status.success(),
        "the old checkpoints need the old key"
    );
    // The rotation is a row of custody.config_log, sealed under the new key.
    let changes = config_changes(&wh);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1]["changed"], serde_json::json!(["keys"]));
    assert_eq!(changes[1]["previous_digest"], changes[0]["digest"]);
    let keys_now = &changes[1]["config"]["keys"];
    assert_eq!(keys_now["signing"]["public_key"], pub_b);
    assert_eq!(keys_now["signing_previous"][0]["public_key"], pub_a);

    // KEK rotation: both KEKs from the provider, every data key re-wrapped, then the new
    // one alone opens the vault.
    write("kek-previous", &kek_a);
    write("kek", &kek_b);
    let rewrapping = config(dir.path(), &script, Some(&pub_a), true);
    ok(custody(&[
        "--config",
        &rewrapping,
        "rewrap-keys",
        "--warehouse",
        whs,
    ]));
    let tables = read_tables(&wh);
    let token: Value = rows(&tables, "vault")
        .iter()
        .find(|v| v["kind"] == "token")
        .cloned()
        .unwrap();
    let revealed = ok(custody(&[
        "--config",
        &rotating,
        "reveal",
        "--warehouse",
        whs,
        "--tenant",
        token["tenant_id"].as_str().unwrap(),
        "--token",
        token["ref"].as_str().unwrap(),
        "--requested-by",
        "dpo@example.com",
        "--reason",
        "DSAR-7",
    ]));
    assert!(!revealed.trim().is_empty());
    assert!(text.contains(revealed.trim()), "{revealed}");
    // The KEK rotation is on record from the first epoch committed under the new KEK (the
    // reveal's DATA_REIDENTIFIED event).
    let changes = config_changes(&wh);
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(changes[2]["changed"], serde_json::json!(["keys"]));
    assert_eq!(changes[2]["recorded_by"], "custody reveal");
    assert_ne!(
        changes[2]["config"]["keys"]["kek"],
        changes[1]["config"]["keys"]["kek"]
    );
    assert_eq!(changes[2]["previous_digest"], changes[1]["digest"]);

    // A mistyped warehouse is refused before anything is made: no directory, no key.
    let typo = dir.path().join("whh");
    let typo_s = typo.to_str().unwrap();
    for args in [
        vec!["reveal", "--tenant", "t", "--token", "x"],
        vec!["erase", "--tenant", "t"],
        vec!["rewrap-keys"],
    ] {
        let mut all = vec!["--config", rotating.as_str()];
        all.extend(args.iter().copied());
        all.extend(["--warehouse", typo_s]);
        if args[0] != "rewrap-keys" {
            all.extend(["--requested-by", "x", "--reason", "y"]);
        }
        let out = custody(&all);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not a custody warehouse"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !typo.exists() && !dir.path().join("whh.keys").exists(),
            "{args:?}"
        );
    }
}
