//! `custody witness`: an independent party that cosigns each tenant's checkpoints only while the
//! log stays append-only, so that truncation, rollback, forks and deleted tenants are caught
//! without anyone holding a checkpoint by hand.
//!
//! The witness has its own key (`witness.key` in its state directory, created 0600 if missing;
//! its public key in `witness.pub`) and its own state (`cosigned.json`: per tenant, the last
//! checkpoint it cosigned and its cosignature). Every `--interval` it fetches every tenant's
//! latest checkpoint from the log's API (`GET /v1/checkpoints`), checks it is signed by the
//! log's key (`--log-key`), and that it extends the last one it cosigned: not older, not
//! smaller, the same root at the same size, else an RFC 9162 consistency proof between them
//! (`GET /v1/checkpoints/consistency`) that verifies. Then it cosigns it
//! ([`custody_operators::cosign`]) and publishes its state (the file, and `GET /cosigned` with
//! `--listen`). A checkpoint that fails is not cosigned, and the witness raises an alarm (error
//! log, `alarms` in its state, exit 1 with `--once`); a tenant it cosigned that is no longer
//! served is an alarm too. Verifiers use it with `custody verify --witness URL|FILE
//! --witness-key KEY`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use custody_operators::checkpoint::{Checkpoint, Signer, key_id};
use custody_operators::cosign::Witnessed;
use custody_operators::merkle::verify_consistency;
use custody_schemas::time::now_us;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// The state file's name in the witness directory.
pub const STATE_FILE: &str = "cosigned.json";

/// What a witness remembers and publishes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WitnessState {
    /// The witness key's id.
    pub witness_key_id: String,
    /// The log key's id.
    pub log_key_id: String,
    /// The log key (hex) this state follows: given by `--log-key`, or pinned on first use.
    #[serde(default)]
    pub log_key: String,
    /// Per tenant, the last checkpoint cosigned.
    pub tenants: BTreeMap<String, Witnessed>,
    /// Everything refused, newest last (bounded).
    #[serde(default)]
    pub alarms: Vec<String>,
}

/// How many alarms the state keeps.
const MAX_ALARMS: usize = 1000;

impl WitnessState {
    fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is unreadable", dir.join(STATE_FILE).display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))?;
        Ok(())
    }

    fn alarm(&mut self, message: String) {
        tracing::error!(%message, "witness alarm");
        self.alarms.push(format!(
            "{} {message}",
            custody_schemas::time::format_rfc3339(now_us())
        ));
        if self.alarms.len() > MAX_ALARMS {
            self.alarms.remove(0);
        }
    }
}

/// `custody witness` settings.
#[derive(Debug)]
pub struct WitnessOptions {
    /// The log's API base URL.
    pub log: String,
    /// The log's public key; `None`: the key this state follows, or on first use the key the
    /// log serves at `/v1/public-key`, pinned from then on.
    pub log_key: Option<VerifyingKey>,
    /// Bearer token for every tenant (admin or regulator of `*`), if the API has tokens.
    pub token: Option<String>,
    /// State directory.
    pub state: PathBuf,
    /// Poll period.
    pub interval: Duration,
    /// Poll once and exit (1 on an alarm).
    pub once: bool,
    /// Serve `GET /cosigned` here.
    pub listen: Option<String>,
}

/// The witness key: `witness.key` in `dir` (created 0600), published as `witness.pub`.
fn witness_key(dir: &Path) -> anyhow::Result<Signer> {
    let seed = crate::config::secret_32("CUSTODY_WITNESS_KEY", &dir.join("witness.key"))?;
    let signer = Signer::from_seed(&seed);
    std::fs::write(
        dir.join("witness.pub"),
        hex::encode(signer.public_key().as_bytes()),
    )?;
    Ok(signer)
}

#[derive(Deserialize)]
struct CheckpointsAnswer {
    checkpoints: Vec<Checkpoint>,
}

#[derive(Deserialize)]
struct ConsistencyAnswer {
    from_root: String,
    to_root: String,
    proof: Vec<String>,
}

fn decode(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).ok().map(|()| out)
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "GET {path}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(resp.json().await?)
    }
}

/// Checks that `new` extends `old` (both validly signed by the log); the reason otherwise.
async fn extends(client: &Client, old: &Checkpoint, new: &Checkpoint) -> Result<(), String> {
    if new.epoch < old.epoch {
        return Err(format!(
            "epoch went back from {} to {}",
            old.epoch, new.epoch
        ));
    }
    if new.tree_size < old.tree_size {
        return Err(format!(
            "the log shrank from {} to {} events (truncated or rolled back)",
            old.tree_size, new.tree_size
        ));
    }
    if new.tree_size == old.tree_size {
        return if new.root == old.root && new.chain_head == old.chain_head {
            Ok(())
        } else {
            Err(format!(
                "a different log of the same size {} (a fork)",
                new.tree_size
            ))
        };
    }
    if old.tree_size == 0 {
        return Ok(());
    }
    let path = format!(
        "/v1/checkpoints/consistency?tenant={}&from={}&to={}",
        percent_encoding::utf8_percent_encode(&new.tenant_id, percent_encoding::NON_ALPHANUMERIC),
        old.tree_size,
        new.tree_size
    );
    let answer: ConsistencyAnswer = client
        .get(&path)
        .await
        .map_err(|e| format!("no consistency proof: {e}"))?;
    let (Some(old_root), Some(new_root)) = (decode(&old.root), decode(&new.root)) else {
        return Err("malformed root".into());
    };
    let proof: Option<Vec<[u8; 32]>> = answer.proof.iter().map(|h| decode(h)).collect();
    let Some(proof) = proof else {
        return Err("malformed proof".into());
    };
    if answer.from_root != old.root || answer.to_root != new.root {
        return Err("the proof is for other roots".into());
    }
    if !verify_consistency(old.tree_size, new.tree_size, &old_root, &new_root, &proof) {
        return Err(format!(
            "the log at {} events does not extend the one cosigned at {} (a fork)",
            new.tree_size, old.tree_size
        ));
    }
    Ok(())
}

/// One round: fetch, check, cosign, publish. Returns the number of alarms raised.
async fn round(
    client: &Client,
    opts: &WitnessOptions,
    log_key: &VerifyingKey,
    signer: &Signer,
    state: &Arc<Mutex<WitnessState>>,
) -> anyhow::Result<usize> {
    let answer: CheckpointsAnswer = client.get("/v1/checkpoints").await?;
    let mut current = state
        .lock()
        .map_err(|_| anyhow::anyhow!("witness state poisoned"))?
        .clone();
    let before = current.alarms.len();
    let mut served = std::collections::BTreeSet::new();
    for cp in answer.checkpoints {
        served.insert(cp.tenant_id.clone());
        if !cp.verify(log_key) {
            current.alarm(format!(
                "tenant {:?}: checkpoint of epoch {} is not signed by the log key",
                cp.tenant_id, cp.epoch
            ));
            continue;
        }
        let verdict = match current.tenants.get(&cp.tenant_id) {
            None => Ok(()),
            Some(old) if old.checkpoint == cp => continue,
            Some(old) => extends(client, &old.checkpoint, &cp).await,
        };
        match verdict {
            Ok(()) => {
                let cosignature = signer.cosign(&cp, now_us());
                current.tenants.insert(
                    cp.tenant_id.clone(),
                    Witnessed {
                        checkpoint: cp,
                        cosignature,
                    },
                );
            }
            Err(why) => current.alarm(format!(
                "tenant {:?}: refused the checkpoint of epoch {}: {why}",
                cp.tenant_id, cp.epoch
            )),
        }
    }
    let gone: Vec<String> = current
        .tenants
        .keys()
        .filter(|t| !served.contains(*t))
        .cloned()
        .collect();
    for tenant in gone {
        current.alarm(format!(
            "tenant {tenant:?}: cosigned before, no longer served by the log (deleted?)"
        ));
    }
    current.save(&opts.state)?;
    let raised = current.alarms.len() - before;
    *state
        .lock()
        .map_err(|_| anyhow::anyhow!("witness state poisoned"))? = current;
    Ok(raised)
}

/// Runs the witness until interrupted (or one round with `once`).
pub fn run(opts: WitnessOptions) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&opts.state)?;
    let signer = witness_key(&opts.state)?;
    let mut state = WitnessState::load(&opts.state)?.unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client {
        http: crate::tls::http_client(
            crate::tls::cli_ca_file().as_deref(),
            Duration::from_secs(30),
        )?,
        base: opts.log.trim_end_matches('/').to_string(),
        token: opts.token.clone(),
    };
    let log_key = match (opts.log_key, state.log_key.as_str()) {
        (Some(key), _) => key,
        (None, "") => runtime.block_on(first_use_key(&client, &opts))?,
        (None, pinned) => {
            let mut key = [0u8; 32];
            hex::decode_to_slice(pinned, &mut key)
                .ok()
                .and_then(|()| VerifyingKey::from_bytes(&key).ok())
                .with_context(|| format!("{STATE_FILE}: log_key is not an Ed25519 key"))?
        }
    };
    let log_key_id = key_id(&log_key);
    if !state.log_key_id.is_empty() && state.log_key_id != log_key_id {
        bail!(
            "this witness state follows the log key {}, not {log_key_id}",
            state.log_key_id
        );
    }
    state.log_key_id = log_key_id;
    state.log_key = hex::encode(log_key.as_bytes());
    state.witness_key_id = signer.key_id().to_string();
    state.save(&opts.state)?;
    let state = Arc::new(Mutex::new(state));
    if let Some(listen) = &opts.listen {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("binding {listen}"))?;
        let addr: SocketAddr = listener.local_addr()?;
        let served = Arc::clone(&state);
        let app = axum::Router::new().route(
            "/cosigned",
            axum::routing::get(move || {
                let served = Arc::clone(&served);
                async move {
                    let state = served.lock().map(|s| s.clone()).unwrap_or_default();
                    axum::Json(state)
                }
            }),
        );
        // Served while the rounds below run on this runtime.
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "witness server stopped");
            }
        });
        println!("witness {} serving http://{addr}/cosigned", signer.key_id());
    }
    runtime.block_on(async {
        loop {
            match round(&client, &opts, &log_key, &signer, &state).await {
                Ok(alarms) if opts.once => {
                    let n = state.lock().map(|s| s.tenants.len()).unwrap_or(0);
                    println!("witnessed {n} tenant(s); {alarms} alarm(s)");
                    if alarms > 0 {
                        std::process::exit(1);
                    }
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if opts.once => return Err(e),
                Err(e) => tracing::warn!(error = %e, "witness round failed; retrying"),
            }
            tokio::time::sleep(opts.interval).await;
        }
    })
}

#[derive(Deserialize)]
struct PublicKeyAnswer {
    public_key: String,
}

/// The key the log serves, trusted on first use (waiting for the log to answer, unless
/// `--once`): from then on the state pins it, and a log that changes its key is refused.
async fn first_use_key(client: &Client, opts: &WitnessOptions) -> anyhow::Result<VerifyingKey> {
    loop {
        let fetched = async {
            let answer: PublicKeyAnswer = client.get("/v1/public-key").await?;
            let mut key = [0u8; 32];
            hex::decode_to_slice(answer.public_key.trim(), &mut key)
                .context("the log's public key is not 64 hex digits")?;
            VerifyingKey::from_bytes(&key).context("the log's public key is not an Ed25519 key")
        }
        .await;
        match fetched {
            Ok(key) => {
                tracing::warn!(
                    key_id = %key_id(&key),
                    "no --log-key: trusting the key the log serves and pinning it (trust on \
                     first use; pass --log-key to check it against one obtained out of band)"
                );
                return Ok(key);
            }
            Err(e) if opts.once => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the log's public key yet; retrying");
                tokio::time::sleep(opts.interval).await;
            }
        }
    }
}

/// Reads a witness's published state: `http(s)://…` (its `--listen` address, `/cosigned`
/// appended if missing) or a file (its `cosigned.json`, or its state directory).
pub fn read_published(source: &str) -> anyhow::Result<WitnessState> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let url = if source.ends_with("/cosigned") {
            source.to_string()
        } else {
            format!("{}/cosigned", source.trim_end_matches('/'))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(async {
            let resp = crate::tls::http_client(
                crate::tls::cli_ca_file().as_deref(),
                Duration::from_secs(30),
            )?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
            if !resp.status().is_success() {
                bail!("GET {url}: {}", resp.status());
            }
            Ok(resp.json().await?)
        });
    }
    let path = Path::new(source);
    let path = if path.is_dir() {
        path.join(STATE_FILE)
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}
