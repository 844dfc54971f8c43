//! Where secret keys come from: the key providers of `[keys]`.
//!
//! Each secret (the signing seed, the key-encryption key and its predecessor during a
//! rotation, the PII master key) comes, when its `[keys]` entry is set, from one of:
//! - `file:PATH`: a file outside the warehouse (relative paths are in the key directory),
//!   readable by its owner only, holding the key as hex;
//! - `env:VAR`: an environment variable holding the key as hex;
//! - `command:PROGRAM ARG…`: a program run without a shell (a KMS or HSM client, a secrets
//!   manager's CLI) that prints the key as hex on its standard output and exits 0. It runs
//!   with `CUSTODY_KEY` set to the key's name (`signing`, `kek`, `kek-previous`,
//!   `pii-master`), standard input closed, and within [`COMMAND_TIMEOUT`].
//!
//! Unset entries keep the defaults: the variables named in `[checkpoints]`, `[vault]` and
//! `[pii]`, else the files in the key directory.
//!
//! # Failure modes
//! A provider that fails (no file, a file others can read, an unset variable, a command that
//! exits non-zero, times out or prints something else than hex) is a configuration error
//! naming the key and the provider: Custody never starts on a key it did not get.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::ConfigError;

/// Longest a key command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One key provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A file (in the key directory if relative).
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A program and its arguments.
    Command(Vec<String>),
}

impl KeySource {
    /// Parses `file:PATH`, `env:VAR` or `command:PROGRAM ARG…`; `None` for an empty entry.
    pub fn parse(entry: &str, name: &str) -> Result<Option<Self>, ConfigError> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Ok(None);
        }
        let invalid = |why: &str| {
            ConfigError::Invalid(format!(
                "keys.{name} = {entry:?}: {why} (expected \"file:PATH\", \"env:VAR\" or \
                 \"command:PROGRAM ARG…\")"
            ))
        };
        let (kind, rest) = entry
            .split_once(':')
            .ok_or_else(|| invalid("no provider"))?;
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(invalid("nothing after the provider"));
        }
        Ok(Some(match kind {
            "file" => KeySource::File(PathBuf::from(rest)),
            "env" => KeySource::Env(rest.to_string()),
            "command" => KeySource::Command(rest.split_whitespace().map(str::to_string).collect()),
            _ => return Err(invalid("unknown provider")),
        }))
    }

    /// The key's bytes, from their hex form, for key `name`; `warehouse` is refused as the
    /// place of a key file.
    pub fn load(
        &self,
        name: &str,
        key_dir: &Path,
        warehouse: &Path,
    ) -> Result<Vec<u8>, ConfigError> {
        let fail = |why: String| ConfigError::Invalid(format!("key {name} from {self}: {why}"));
        let text = match self {
            KeySource::Env(var) => std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| fail(format!("{var} is not set")))?,
            KeySource::File(path) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    key_dir.join(path)
                };
                if crate::config::is_within(&path, warehouse) {
                    return Err(fail(format!(
                        "{} is inside the warehouse: whoever can write the warehouse would hold \
                         the key",
                        path.display()
                    )));
                }
                owner_only(&path).map_err(&fail)?;
                std::fs::read_to_string(&path)
                    .map_err(|e| fail(format!("{}: {e}", path.display())))?
            }
            KeySource::Command(argv) => run(name, argv).map_err(&fail)?,
        };
        hex::decode(text.trim()).map_err(|_| fail("not hex".into()))
    }

    /// The key as 32 bytes.
    pub fn load_32(
        &self,
        name: &str,
        key_dir: &Path,
        warehouse: &Path,
    ) -> Result<[u8; 32], ConfigError> {
        let bytes = self.load(name, key_dir, warehouse)?;
        bytes.as_slice().try_into().map_err(|_| {
            ConfigError::Invalid(format!(
                "key {name} from {self}: {} bytes, expected 32 (64 hex digits)",
                bytes.len()
            ))
        })
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file:{}", p.display()),
            KeySource::Env(v) => write!(f, "env:{v}"),
            KeySource::Command(argv) => write!(f, "command:{}", argv.join(" ")),
        }
    }
}

/// Refuses a key file others may read.
fn owner_only(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {:o}); chmod 600",
                path.display(),
                mode & 0o777
            ));
        }
    }
    Ok(())
}

/// Runs a key command; its standard output.
fn run(name: &str, argv: &[String]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("no program")?;
    let mut child = Command::new(program)
        .args(args)
        .env("CUSTODY_KEY", name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not answer within {COMMAND_TIMEOUT:?}"
                ));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out).map_err(|e| e.to_string())?;
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        return Err(format!("{program} exited with {status}: {}", err.trim()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse_and_load() {
        assert_eq!(KeySource::parse("", "kek").unwrap(), None);
        assert!(KeySource::parse("vault:x", "kek").is_err());
        assert!(KeySource::parse("env:", "kek").is_err());
        let dir = tempfile::tempdir().unwrap();
        let (keys, warehouse) = (dir.path().join("keys"), dir.path().join("wh"));
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::create_dir_all(&warehouse).unwrap();
        let key = "ab".repeat(32);

        assert_eq!(
            KeySource::parse("command:kms-client --key custody", "kek").unwrap(),
            Some(KeySource::Command(vec![
                "kms-client".into(),
                "--key".into(),
                "custody".into()
            ]))
        );
        // A command, given the key's name.
        let echo = KeySource::Command(vec![
            "sh".into(),
            "-c".into(),
            format!("test \"$CUSTODY_KEY\" = kek && echo {key}"),
        ]);
        assert_eq!(echo.load_32("kek", &keys, &warehouse).unwrap(), [0xab; 32]);
        assert!(echo.load_32("signing", &keys, &warehouse).is_err());
        let failing =
            KeySource::Command(vec!["sh".into(), "-c".into(), "echo no >&2; exit 3".into()]);
        let err = failing
            .load("kek", &keys, &warehouse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited") && err.contains("no"), "{err}");

        // A file: relative to the key directory, owner-only, never inside the warehouse.
        let file = keys.join("kek.hex");
        std::fs::write(&file, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let source = KeySource::File("kek.hex".into());
        assert!(source.load("kek", &keys, &warehouse).is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            source.load_32("kek", &keys, &warehouse).unwrap(),
            [0xab; 32]
        );
        let inside = warehouse.join("kek.hex");
        std::fs::write(&inside, &key).unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            KeySource::File(inside)
                .load("kek", &keys, &warehouse)
                .is_err()
        );

        // An environment variable.
        assert!(
            KeySource::Env("CUSTODY_TEST_UNSET_KEY".into())
                .load("kek", &keys, &warehouse)
                .is_err()
        );
    }
}
