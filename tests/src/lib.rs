//! Fixtures for the end-to-end tests: the `custody` binary, a tansu broker on loopback, and a
//! pyiceberg reader of the warehouse.
//!
//! Paths come from the environment that `tests/run.sh` sets up (`CUSTODY_BIN`, `TANSU_BIN`,
//! `CUSTODY_PYTHON`), with defaults matching its cache layout.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn cache_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/custody")
}

/// The `custody` binary built in this target directory.
/// A `custody` command that serves no HTTP unless the test asks for an address (`--listen`,
/// or `CUSTODY__SERVE__LISTEN` set after this): a busy port is an error, and tests run in
/// parallel.
pub fn custody_command() -> Command {
    let mut command = Command::new(custody_bin());
    command.env("CUSTODY__SERVE__LISTEN", "off");
    command
}

pub fn custody_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CUSTODY_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/<test> -> target/debug/custody
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("custody");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p custody-pipeline` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// Runs `custody` with `args`, asserting success; returns stdout.
pub fn custody(args: &[&str]) -> String {
    let out = custody_output(args);
    assert!(
        out.status.success(),
        "custody {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 4000)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a deterministic workload of `events` events over `tenants` tenants as NDJSON.
pub fn generate_ndjson(path: &Path, events: u64, tenants: usize) {
    custody(&[
        "generate",
        "--events",
        &events.to_string(),
        "--tenants",
        &tenants.to_string(),
        "--out",
        path.to_str().expect("utf-8 path"),
    ]);
}

/// Runs `custody` with `args`.
pub fn custody_output(args: &[&str]) -> Output {
    custody_command()
        .args(args)
        .env("RUST_LOG", "warn")
        .env("CUSTODY__SERVE__LISTEN", "off")
        .output()
        .expect("spawn custody")
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

/// The Python interpreter with pyiceberg and PyNaCl (installed by `tests/run.sh`).
pub fn python() -> PathBuf {
    std::env::var("CUSTODY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("venv/bin/python"))
}

/// Every table of the warehouse, read with pyiceberg: `{"events": [row, ...], ...}`.
pub fn read_tables(warehouse: &Path) -> Value {
    read_columns(warehouse, &[])
}

/// Chosen tables and columns (`"events:tenant_id,seq"`), read with pyiceberg; every table if
/// `specs` is empty.
pub fn read_columns(warehouse: &Path, specs: &[&str]) -> Value {
    read_columns_with(warehouse, specs, &[])
}

/// [`read_columns`] with environment variables `env` set (object storage credentials).
pub fn read_columns_with(warehouse: &Path, specs: &[&str], env: &[(&str, &str)]) -> Value {
    let python = python();
    let script = manifest_dir().join("py/dump_tables.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(warehouse)
        .args(specs)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e} (tests/run.sh installs it)", python.display()));
    assert!(
        out.status.success(),
        "pyiceberg read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from dump_tables.py")
}

/// The rows of `table`.
pub fn rows<'a>(tables: &'a Value, table: &str) -> &'a Vec<Value> {
    tables[table].as_array().expect("table rows")
}

/// The changes of one view in `custody.view_changes` (read with its `view`, `tenant_id`, `key`,
/// `row` and `diff` columns), each as one flat object: `tenant_id`, `diff` and the row's fields,
/// with the key as `event_type` for `event_counts` and as `key` for the keyed views.
pub fn view_rows(tables: &Value, view: &str) -> Vec<Value> {
    rows(tables, "view_changes")
        .iter()
        .filter(|r| r["view"] == view)
        .map(|r| {
            let mut out = serde_json::Map::new();
            out.insert("tenant_id".into(), r["tenant_id"].clone());
            let key = r["key"].clone();
            match view {
                "event_counts" => {
                    out.insert("event_type".into(), key);
                }
                "hitl_latency" => {}
                _ => {
                    out.insert("key".into(), key);
                    out.insert("row".into(), r["row"].clone());
                }
            }
            if matches!(view, "event_counts" | "hitl_latency") {
                let fields: Value =
                    serde_json::from_str(r["row"].as_str().expect("row")).expect("row JSON");
                for (k, v) in fields.as_object().expect("row object") {
                    out.insert(k.clone(), v.clone());
                }
            }
            out.insert("diff".into(), r["diff"].clone());
            Value::Object(out)
        })
        .collect()
}

/// A tansu broker on a free loopback port, killed on drop.
pub struct Tansu {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Directory of the SQLite storage, for a broker that survives restarts.
    storage: Option<PathBuf>,
}

impl Tansu {
    /// Starts a broker with in-memory storage and waits until it accepts connections.
    pub fn start() -> Tansu {
        let addr = free_addr();
        let child = spawn_tansu(&addr, None);
        Tansu {
            child,
            addr,
            storage: None,
        }
    }

    /// Starts a broker storing its log in SQLite under `dir`, so that it can be restarted.
    pub fn start_persistent(dir: &Path) -> Tansu {
        let addr = free_addr();
        let child = spawn_tansu(&addr, Some(dir));
        Tansu {
            child,
            addr,
            storage: Some(dir.to_path_buf()),
        }
    }

    /// Kills the broker (SIGKILL) and returns once it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same address and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_tansu(&self.addr, self.storage.as_deref());
    }
}

/// A free loopback address, `127.0.0.1:PORT`.
pub fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// The port of a `HOST:PORT` address.
pub fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(_, port)| port)
}

/// A program installed from Debian's packages (tests/run.sh installs them): `$env` if set,
/// else the first of `names` that runs.
pub fn system_binary(env: &str, names: &[&str]) -> String {
    if let Ok(b) = std::env::var(env) {
        return b;
    }
    for name in names {
        if Command::new(name).arg("--version").output().is_ok() {
            return name.to_string();
        }
    }
    panic!("none of {names:?} found (tests/run.sh installs Debian's packages); or set {env}");
}

/// Alertmanager (Debian names it `prometheus-alertmanager`), or `$CUSTODY_ALERTMANAGER`.
pub fn alertmanager_binary() -> String {
    system_binary(
        "CUSTODY_ALERTMANAGER",
        &["prometheus-alertmanager", "alertmanager"],
    )
}

/// The tansu binary (`TANSU_BIN`, or where tests/run.sh installs it).
pub fn tansu_bin() -> PathBuf {
    std::env::var("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("tansu/bin/tansu"))
}

fn spawn_tansu(addr: &str, storage: Option<&Path>) -> Child {
    let bin = tansu_bin();
    let url = format!("tcp://{addr}");
    let mut command = Command::new(&bin);
    command.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ]);
    match storage {
        // tansu resolves sqlite:// paths against its working directory.
        Some(dir) => command
            .current_dir(dir)
            .args(["--storage-engine", "sqlite://tansu.db"]),
        None => command.args(["--storage-engine", "memory://tansu/"]),
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e} (tests/run.sh installs it)", bin.display()));
    await_listening(addr, "tansu", Duration::from_secs(30));
    child
}

/// Waits until something accepts connections on `addr`; panics after `timeout`.
pub fn await_listening(addr: &str, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The columns of `custody.events` that [`assert_chains_link`] needs (the ids read back as
/// text by `dump_tables.py`).
pub const CHAIN_COLUMNS: &str = "events:tenant_id,seq,event_id,schema_version,event_type,\
    session_id,agent_id,user_id,event_time,parent_event_id,payload,hash";

/// Checks each tenant's chain in the `events` rows (with at least [`CHAIN_COLUMNS`]): seq 0..
/// without gaps, each row's leaf recomputed from its content and its `hash` equal to
/// `SHA-256(0x02 ‖ previous hash ‖ leaf)`. Returns the number of tenants.
pub fn assert_chains_link(events: &[Value]) -> usize {
    use custody_operators::hashing::chain_hash;
    use custody_operators::verify::EventRow;
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string();
    let opt = |e: &Value, k: &str| e[k].as_str().map(str::to_string);
    let mut by_tenant: std::collections::BTreeMap<String, Vec<EventRow>> = Default::default();
    for e in events {
        let row = EventRow {
            tenant_id: text(e, "tenant_id"),
            seq: e["seq"].as_i64().expect("seq"),
            event_id: text(e, "event_id"),
            schema_version: text(e, "schema_version"),
            event_type: text(e, "event_type"),
            session_id: text(e, "session_id"),
            agent_id: text(e, "agent_id"),
            user_id: opt(e, "user_id"),
            event_time: text(e, "event_time"),
            parent_event_id: opt(e, "parent_event_id"),
            payload: text(e, "payload"),
            prev_hash: String::new(),
            hash: text(e, "hash"),
            leaf_hash: String::new(),
        };
        by_tenant
            .entry(row.tenant_id.clone())
            .or_default()
            .push(row);
    }
    for (tenant, chain) in &mut by_tenant {
        chain.sort_by_key(|r| r.seq);
        let mut prev = [0u8; 32];
        for (i, row) in chain.iter().enumerate() {
            assert_eq!(
                row.seq, i as i64,
                "tenant {tenant}: gap or duplicate at seq {}",
                row.seq
            );
            let leaf = row.recompute_leaf().expect("leaf");
            let hash = chain_hash(&prev, &leaf);
            assert_eq!(
                row.hash,
                hex::encode(hash),
                "tenant {tenant}: seq {} does not hash to its stored hash after its predecessor",
                row.seq
            );
            prev = hash;
        }
    }
    by_tenant.len()
}

/// The package directory: taken at run time from cargo (the build may have been made in
/// another checkout sharing the target directory), at build time otherwise.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

/// Reads a child's piped stderr on a thread, keeping every line, and tells when a line
/// containing `needle` first appears.
pub struct StderrWatch {
    seen: std::sync::mpsc::Receiver<bool>,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl StderrWatch {
    /// Takes `child`'s stderr (spawned with `Stdio::piped()`).
    pub fn new(child: &mut Child, needle: &'static str) -> StderrWatch {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, seen) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut found = false;
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !found && line.contains(needle) {
                    found = true;
                    let _ = tx.send(true);
                }
                lines.push(line);
            }
            let _ = tx.send(false);
            lines
        });
        StderrWatch { seen, reader }
    }

    /// Whether the needle appeared within `timeout` (false: stderr closed first, or time ran
    /// out).
    pub fn wait(&self, timeout: Duration) -> bool {
        self.seen.recv_timeout(timeout).unwrap_or(false)
    }

    /// Every line, once the child has ended (its stderr closed).
    pub fn lines(self) -> String {
        self.reader.join().expect("stderr reader").join("\n")
    }
}

/// A child process killed on drop (a `custody demo --serve`, say).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP/1.1 GET with a bearer token: status, headers (lowercase names) and the body
/// (de-chunked).
pub fn http_get(addr: &str, path: &str, token: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_request(addr, "GET", path, token, b"")
}

/// POSTs `body` (JSON) and reads the answer as JSON (`Null` if it is not JSON).
pub fn post_json(addr: &str, path: &str, token: &str, body: &serde_json::Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).expect("json");
    let (code, _, answer) = http_request(addr, "POST", path, token, &body);
    (code, serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

/// One HTTP/1.1 request with a bearer token: status, headers (lower-case names), body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write request");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let code: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 4 + size..];
        }
        body = out;
    }
    (code, headers, body)
}

/// [`http_get`] of a JSON answer: status and the parsed body (`Null` if it is not JSON).
pub fn get_json(addr: &str, path: &str, token: &str) -> (u16, Value) {
    let (code, _, body) = http_get(addr, path, token);
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `custody serve` over `warehouse`, listening on `addr` (a fixed signing key, warnings only,
/// stdout piped for [`await_line`]); callers may change it before spawning.
pub fn serve_command(warehouse: &Path, addr: &str) -> Command {
    let mut command = custody_command();
    command
        .args([
            "serve",
            "--warehouse",
            warehouse.to_str().expect("utf-8 path"),
        ])
        .args(["--listen", addr])
        .env("RUST_LOG", "warn")
        .env("CUSTODY_SIGNING_KEY", "07".repeat(32))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Waits (five minutes at most) until `child` prints a line containing `needle` on its piped
/// stdout, and returns it, killed on drop. Panics if it exits or takes longer.
pub fn await_line(mut child: Child, needle: &str) -> KillOnDrop {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let process = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(300);
    for line in std::io::BufReader::new(stdout).lines() {
        if line.expect("custody output").contains(needle) {
            return process;
        }
        assert!(
            Instant::now() < deadline,
            "custody did not print {needle:?}"
        );
    }
    panic!("custody exited before printing {needle:?}");
}

/// `custody serve` over `warehouse` on `addr`, once its views are rebuilt (killed on drop).
pub fn serve_warehouse(warehouse: &Path, addr: &str) -> KillOnDrop {
    let child = serve_command(warehouse, addr)
        .spawn()
        .expect("spawn custody serve");
    await_line(child, "views rebuilt")
}

/// The first event time of `custody generate` (and of `custody demo --start` with it).
pub const GENERATE_START: &str = "2026-03-08T00:00:00Z";

/// `custody demo --serve` with the config file `config` over `warehouse`, listening on `addr`;
/// returns once the workload is committed and the process goes on serving (killed on drop).
pub fn serve_demo(
    config: &Path,
    warehouse: &Path,
    addr: &str,
    events: u64,
    tenants: usize,
) -> KillOnDrop {
    let child = custody_command()
        .args([
            "--config",
            config.to_str().expect("utf-8 path"),
            "demo",
            "--serve",
        ])
        .args(["--events", &events.to_string()])
        .args(["--tenants", &tenants.to_string()])
        .args(["--warehouse", warehouse.to_str().expect("utf-8 path")])
        // The same bytes as `custody generate` (the tests' oracle input).
        .args(["--start", GENERATE_START])
        .env("CUSTODY__SERVE__LISTEN", addr)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn custody demo");
    await_line(child, "serving until interrupted")
}

/// The rows of `warehouse`'s `custody.config_log`, in epoch order, with `changed` and `config`
/// parsed.
pub fn config_changes(warehouse: &Path) -> Vec<Value> {
    let tables = read_columns(
        warehouse,
        &["config_log:epoch,recorded_at,digest,previous_digest,changed,config,recorded_by"],
    );
    let mut changes: Vec<Value> = rows(&tables, "config_log")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for field in ["changed", "config"] {
                let parsed: Value = serde_json::from_str(r[field].as_str().unwrap()).unwrap();
                r[field] = parsed;
            }
            r
        })
        .collect();
    changes.sort_by_key(|r| r["epoch"].as_i64());
    changes
}

/// Of `needles`, those found anywhere under `wh` (a warehouse, a key directory): in any
/// file's raw bytes (UUID ids also as their 16 bytes), or among the decoded values and
/// statistics of any Parquet file.
pub fn found_under(wh: &Path, needles: &[String]) -> Vec<String> {
    let raw: Vec<Vec<u8>> = files_under(wh)
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let out = Command::new(python())
        .arg(manifest_dir().join("py/file_text.py"))
        .arg(wh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&out.stdout).unwrap();
    // Every form of every needle, in one automaton: (form, needle index).
    let mut forms: Vec<Vec<u8>> = Vec::new();
    let mut of: Vec<usize> = Vec::new();
    for (i, n) in needles.iter().enumerate() {
        forms.push(n.as_bytes().to_vec());
        of.push(i);
        if let Ok(bytes) = hex::decode(n.replace('-', ""))
            && bytes.len() == 16
            && n.len() == 36
        {
            forms.push(bytes);
            of.push(i);
        }
    }
    let automaton = aho_corasick::AhoCorasick::new(&forms).unwrap();
    let mut hit = vec![false; needles.len()];
    for hay in raw
        .iter()
        .map(Vec::as_slice)
        .chain(decoded.values().map(|t| t.as_bytes()))
    {
        for m in automaton.find_overlapping_iter(hay) {
            hit[of[m.pattern().as_usize()]] = true;
        }
    }
    needles
        .iter()
        .zip(hit)
        .filter(|(_, h)| *h)
        .map(|(n, _)| n.clone())
        .collect()
}

/// A generated workload of `events` events over `tenants` tenants (written under `dir`),
/// re-dated by [`respan`] over the `days` days before noon today: its NDJSON lines, and that
/// noon in µs (whole-day cutoffs back from midnight fall at fixed points of the span).
pub fn spanned_workload(dir: &Path, events: u64, tenants: usize, days: i64) -> (Vec<String>, i64) {
    let generated = dir.join("generated.ndjson");
    generate_ndjson(&generated, events, tenants);
    let events: Vec<Value> = std::fs::read_to_string(&generated)
        .expect("generated workload")
        .lines()
        .map(|l| serde_json::from_str(l).expect("generated json"))
        .collect();
    const DAY_US: i64 = 86_400_000_000;
    let now_us = custody_schemas::time::now_us().div_euclid(DAY_US) * DAY_US + DAY_US / 2;
    (respan(&events, now_us, days), now_us)
}

/// `events` re-dated evenly over the `days` days before `now_us`, in order, each agent's
/// emitter chain (`previous_event_hash`) re-linked over the new bytes; as NDJSON lines.
pub fn respan(events: &[Value], now_us: i64, days: i64) -> Vec<String> {
    let step = days * 86_400_000_000i64 / events.len() as i64;
    let start = now_us - days * 86_400_000_000i64;
    let mut last: std::collections::BTreeMap<(String, String), String> =
        std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        e["timestamp"] = serde_json::json!(custody_schemas::time::format_rfc3339(
            start + i as i64 * step
        ));
        let key = (
            e["tenant_id"].as_str().unwrap().to_string(),
            e["agent_id"].as_str().unwrap().to_string(),
        );
        e["previous_event_hash"] =
            serde_json::json!(last.get(&key).cloned().unwrap_or("0".repeat(64)));
        let line = serde_json::to_string(&e).unwrap();
        last.insert(
            key,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line.as_bytes())),
        );
        out.push(line);
    }
    out
}

/// An S3-compatible server (s3s-fs, installed by `tests/run.sh`) on loopback, storing each
/// object as a file under its root directory (so tests can search the bytes it holds).
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Where the objects are: `<root>/<bucket>/<key>`.
    pub root: PathBuf,
    _process: KillOnDrop,
}

/// An S3 server that enforces Object Lock (moto, from PyPI, in the venv `tests/run.sh`
/// makes), for buckets whose objects storage must refuse to delete. Any credentials work.
pub struct LockingS3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _process: KillOnDrop,
}

impl LockingS3Server {
    /// Starts the server.
    pub fn start() -> LockingS3Server {
        let python = python();
        let addr = free_addr();
        let (host, port) = addr.split_once(':').unwrap();
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", host, "-p", port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn moto: {e} (tests/run.sh installs it)"));
        let process = KillOnDrop(child);
        await_listening(&addr, "moto", Duration::from_secs(60));
        LockingS3Server {
            endpoint: format!("http://{addr}"),
            _process: process,
        }
    }

    /// `tests/py/s3_lock.py ENDPOINT ARGS` (as the bucket's owner): its standard output.
    pub fn owner(&self, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(manifest_dir().join("py/s3_lock.py"))
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3_lock.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The access key the test server accepts.
pub const S3_ACCESS_KEY: &str = "custody-test";
/// The secret key the test server accepts.
pub const S3_SECRET_KEY: &str = "custody-test-secret";

impl S3Server {
    /// Starts a server over `root` with the buckets `buckets`.
    pub fn start(root: &Path, buckets: &[&str]) -> S3Server {
        for bucket in buckets {
            std::fs::create_dir_all(root.join(bucket)).unwrap();
        }
        let bin = std::env::var("CUSTODY_S3_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| cache_dir().join("s3s/bin/s3s-fs"));
        let addr = free_addr();
        let (host, port) = addr.split_once(':').unwrap();
        let child = Command::new(&bin)
            .args(["--host", host, "--port", port])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e} (tests/run.sh installs it)", bin.display()));
        let process = KillOnDrop(child);
        await_listening(&addr, "s3s-fs", Duration::from_secs(30));
        S3Server {
            endpoint: format!("http://{addr}"),
            root: root.to_path_buf(),
            _process: process,
        }
    }
}
