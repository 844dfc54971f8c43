//! Every tenant's Merkle tree and event index on disk, in the warehouse, read on demand: the
//! proof API's state does not live in memory, so memory does not grow with history.
//!
//! # Layout (`<warehouse>/proofs/`)
//! - `trees/<id>.nodes`: one tenant's tree (`<id>` is the hex of the first 16 bytes of
//!   SHA-256 of the tenant id), every node hash in post-order, 32 bytes each: appending leaf
//!   `n` writes the leaf and then the root of every perfect subtree it completes. The node of
//!   level `L` (covering `2^L` leaves) at index `i` is at position
//!   `2(m-1) - popcount(m-1) + L` where `m = (i+1)·2^L`, and a tree of `n` leaves holds
//!   `2n - popcount(n)` nodes. Any perfect subtree's root is one read; any root or RFC 6962
//!   proof is `O(log² n)` reads.
//! - `ids/<bb>.run` and `ids/<bb>.idx`: the event index, in 256 buckets by the first byte of
//!   the key; records of 24 bytes, the first 16 bytes of `SHA-256(tenant || 0x00 || event_id)`
//!   then the event's seq (u64, little endian). New records are appended to `.idx`; once it
//!   holds more than an eighth of `.run` (and at least [`MERGE_AT`] records) the two are merged
//!   into a new sorted `.run` (renamed over the old, then `.idx` emptied). A lookup is a binary
//!   search of `.run` and a scan of `.idx`: a few reads, whatever the history; each record is
//!   rewritten a bounded number of times on average (the runs grow geometrically).
//!   Sessions are indexed too, under `SHA-256(0x01 || tenant || 0x00 || session_id)`: for each
//!   epoch (or batch of a rebuild) a session appears in, a record of its first and of its last
//!   position in it, so a session's records bound its events ([`ProofStore::session_span`])
//!   and a session read from the lake opens only the files of its positions.
//! - `chains/<id>.hashes`: one tenant's chain hashes by position, 32 bytes each (event `seq`
//!   at byte `32·seq`), so that a row read alone from the lake is linked to its predecessor
//!   without a second read ([`ChainHashes`]).
//! - `indexed.json`: the last epoch whose events are all written, and the store's format
//!   ([`FORMAT`]); a store of another format is rebuilt from the lake.
//!
//! Nothing here is trusted: a node read from disk only ever ends up in a proof, and a proof
//! verifies against the signed checkpoint or it does not.
//!
//! # State
//! Per tenant touched: its right edge (the roots of its perfect subtrees, at most 64 hashes).
//!
//! # Failure modes
//! Files are written after the epoch commits, then the marker. A crash in between leaves the
//! marker behind: the epochs after it are written again from the lake on open. A tenant's
//! tree is cut back to the first leaf written again (so a torn tail, even one that looks like
//! whole nodes, does not survive); an index record written twice is the same record. A tail
//! shorter than one append is cut off when the tree is first read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};
use crate::record::Epoch;

/// Bytes of one index record.
const RECORD: usize = 24;
/// Least records in a bucket's unsorted tail before it is merged into the sorted run.
pub const MERGE_AT: u64 = 2048;
/// Bytes of one node (and of one chain hash).
const NODE: u64 = 32;
/// The layout written here; a store written in another is cleared on open (and rebuilt from
/// the lake by its owner).
pub const FORMAT: u64 = 3;

/// Nodes stored for a tree of `n` leaves.
fn nodes_for(n: u64) -> u64 {
    2 * n - u64::from(n.count_ones())
}

/// Position (in nodes) of the root of the perfect subtree of level `level` at index `index`.
fn position(level: u32, index: u64) -> u64 {
    let last = ((index + 1) << level) - 1;
    nodes_for(last) + u64::from(level)
}

/// The most leaves whose nodes fit in `nodes` stored nodes.
fn leaves_within(nodes: u64) -> u64 {
    let (mut lo, mut hi) = (0u64, nodes);
    // nodes_for is strictly increasing: the largest n with nodes_for(n) <= nodes.
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if nodes_for(mid) <= nodes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// One tenant's tree file and right edge.
#[derive(Debug)]
struct Tree {
    path: PathBuf,
    size: u64,
    /// Roots of the perfect subtrees covering `0..size`, largest first.
    edge: Vec<Hash>,
}

/// The store's directories.
const SUBDIRS: [&str; 3] = ["trees", "ids", "chains"];

/// The proof store of one warehouse.
#[derive(Debug)]
pub struct ProofStore {
    dir: PathBuf,
    trees: HashMap<String, Tree>,
    indexed: Option<Epoch>,
    /// [`MERGE_AT`] (lower in tests).
    merge_at: u64,
}

/// The first 16 bytes of SHA-256 of `parts`, one after another: an index key.
fn index_key(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
    }
    let d = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&d[..16]);
    key
}

/// The 16-byte index key of an event.
fn id_key(tenant: &str, event_id: &str) -> [u8; 16] {
    index_key(&[tenant.as_bytes(), &[0], event_id.as_bytes()])
}

/// `<dir>/<sub>/<id>.<ext>`, `<id>` the hex of the first 16 bytes of SHA-256 of the tenant.
fn tenant_path(dir: &Path, sub: &str, ext: &str, tenant: &str) -> PathBuf {
    let d = Sha256::digest(tenant.as_bytes());
    dir.join(sub)
        .join(format!("{}.{ext}", hex::encode(&d[..16])))
}

fn tenant_file(dir: &Path, tenant: &str) -> PathBuf {
    tenant_path(dir, "trees", "nodes", tenant)
}

fn chain_file(dir: &Path, tenant: &str) -> PathBuf {
    tenant_path(dir, "chains", "hashes", tenant)
}

/// One event to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredEvent<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Its position in the tenant's chain.
    pub seq: u64,
    /// The event id.
    pub event_id: &'a str,
    /// Its session.
    pub session_id: &'a str,
    /// Its Merkle leaf.
    pub leaf: Hash,
    /// Its chain hash.
    pub hash: Hash,
}

/// The 16-byte index key of a session: domain-separated from event keys by its leading
/// `0x01` (tenant ids are printable).
fn session_key(tenant: &str, session_id: &str) -> [u8; 16] {
    index_key(&[&[1], tenant.as_bytes(), &[0], session_id.as_bytes()])
}

/// Where a session's events lie in its tenant's chain, as far as the store knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSpan {
    /// Positions of the session's stored events are within `first..=last` (`None`: it has
    /// none stored).
    pub stored: Option<(u64, u64)>,
    /// Every event before this position is stored: the session's events at or after it
    /// may not be indexed yet (committed to the lake, not yet to the store).
    pub indexed: u64,
}

impl ProofStore {
    /// Opens (creating) the store in `dir` (`<warehouse>/proofs`).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        for sub in SUBDIRS {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let marker = match std::fs::read(dir.join("indexed.json")) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut store = ProofStore {
            dir: dir.to_path_buf(),
            trees: HashMap::new(),
            indexed: marker.as_ref().and_then(|v| v["epoch"].as_u64()),
            merge_at: MERGE_AT,
        };
        if store.indexed.is_some() && marker.and_then(|v| v["format"].as_u64()) != Some(FORMAT) {
            // Written by another Custody (without chain hashes or sessions): everything is
            // written again.
            store.clear()?;
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last epoch whose events are all stored.
    pub fn indexed_epoch(&self) -> Option<Epoch> {
        self.indexed
    }

    /// Forgets everything stored (a warehouse starting a new history).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.trees.clear();
        self.indexed = None;
        for sub in SUBDIRS {
            let path = self.dir.join(sub);
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
            std::fs::create_dir_all(&path)?;
        }
        match std::fs::remove_file(self.dir.join("indexed.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The tree of `tenant`, loaded from its file on first use (a torn tail is cut off).
    fn tree(&mut self, tenant: &str) -> std::io::Result<&mut Tree> {
        if !self.trees.contains_key(tenant) {
            let path = tenant_file(&self.dir, tenant);
            let tree = match File::open(&path) {
                Ok(file) => {
                    let len = file.metadata()?.len();
                    let size = leaves_within(len / NODE);
                    if nodes_for(size) * NODE != len {
                        OpenOptions::new()
                            .write(true)
                            .open(&path)?
                            .set_len(nodes_for(size) * NODE)?;
                    }
                    let edge = edge_of(&file, size)?;
                    Tree { path, size, edge }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tree {
                    path,
                    size: 0,
                    edge: Vec::new(),
                },
                Err(e) => return Err(e),
            };
            self.trees.insert(tenant.to_string(), tree);
        }
        // Panic-free: inserted above.
        Ok(self.trees.get_mut(tenant).expect("loaded"))
    }

    /// Stores one committed epoch's events (any order within a tenant is fine as long as
    /// seqs are contiguous), then records the epoch as stored.
    pub fn append<'a>(
        &mut self,
        epoch: Epoch,
        events: impl IntoIterator<Item = StoredEvent<'a>>,
    ) -> std::io::Result<()> {
        let mut by_tenant: HashMap<&str, Vec<(u64, Hash, Hash)>> = HashMap::new();
        let mut records = Records::default();
        for e in events {
            records.add(&e);
            by_tenant
                .entry(e.tenant)
                .or_default()
                .push((e.seq, e.leaf, e.hash));
        }
        records.flush(self)?;
        for (tenant, mut leaves) in by_tenant {
            leaves.sort_unstable_by_key(|(seq, ..)| *seq);
            self.extend(tenant, &leaves)?;
        }
        self.mark(epoch)
    }

    /// Starts writing events of any number of epochs, in any order (a rebuild, or a catch-up
    /// with the lake): memory stays bounded whatever their number, the leaves waiting in
    /// scratch files by position until [`Rebuild::finish`] builds the trees from them.
    pub fn rebuild(&mut self) -> std::io::Result<Rebuild<'_>> {
        let scratch = self.dir.join("rebuild");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)?;
        }
        std::fs::create_dir_all(&scratch)?;
        Ok(Rebuild {
            store: self,
            records: Records::default(),
            tenants: HashMap::new(),
            run: Run::default(),
        })
    }

    /// Writes `tenant`'s chain hashes and extends its tree with `leaves` (sorted by seq,
    /// contiguous, starting at or before the tree's size).
    fn extend(&mut self, tenant: &str, leaves: &[(u64, Hash, Hash)]) -> std::io::Result<()> {
        write_chain(&chain_file(&self.dir, tenant), leaves)?;
        let tree = self.tree(tenant)?;
        if let Some(&(first, ..)) = leaves.first()
            && first < tree.size
        {
            // Written again after a crash: what follows `first` is rewritten, so a torn
            // tail (which may look like whole nodes) does not survive.
            let file = OpenOptions::new().read(true).write(true).open(&tree.path)?;
            file.set_len(nodes_for(first) * NODE)?;
            tree.edge = edge_of(&file, first)?;
            tree.size = first;
        }
        let mut out = Vec::new();
        for &(seq, leaf, _) in leaves {
            if seq < tree.size {
                continue;
            }
            if seq > tree.size {
                return Err(std::io::Error::other(format!(
                    "proof store: tenant {tenant:?} leaf {seq} after {} leaves",
                    tree.size
                )));
            }
            let mut hash = leaf;
            out.extend_from_slice(&hash);
            let mut s = tree.size;
            while s & 1 == 1 {
                // Panic-free: one edge root per set bit of the size.
                let left = tree.edge.pop().expect("one root per set bit");
                hash = merkle::node(&left, &hash);
                out.extend_from_slice(&hash);
                s >>= 1;
            }
            tree.edge.push(hash);
            tree.size += 1;
        }
        if !out.is_empty() {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&tree.path)?
                .write_all(&out)?;
        }
        Ok(())
    }

    /// Records every event up to `epoch` as stored.
    fn mark(&mut self, epoch: Epoch) -> std::io::Result<()> {
        let marker = self.dir.join("indexed.json");
        let tmp = marker.with_extension("json.tmp");
        std::fs::write(&tmp, format!("{{\"epoch\":{epoch},\"format\":{FORMAT}}}"))?;
        std::fs::rename(&tmp, &marker)?;
        self.indexed = Some(epoch);
        Ok(())
    }

    fn bucket_paths(&self, bucket: usize) -> (PathBuf, PathBuf) {
        let ids = self.dir.join("ids");
        (
            ids.join(format!("{bucket:02x}.run")),
            ids.join(format!("{bucket:02x}.idx")),
        )
    }

    /// Appends index records to a bucket's tail (after cutting a torn record off it), and
    /// merges the tail into the sorted run once it is large enough.
    fn append_records(&self, bucket: usize, records: &[u8]) -> std::io::Result<()> {
        let (run_path, tail_path) = self.bucket_paths(bucket);
        let mut tail = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&tail_path)?;
        let len = tail.metadata()?.len();
        if len % RECORD as u64 != 0 {
            tail.set_len(len / RECORD as u64 * RECORD as u64)?;
        }
        tail.write_all(records)?;
        let tail_records = tail.metadata()?.len() / RECORD as u64;
        let run_records = match std::fs::metadata(&run_path) {
            Ok(m) => m.len() / RECORD as u64,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if tail_records < self.merge_at.max(run_records / 8) {
            return Ok(());
        }
        let mut run = Vec::with_capacity((run_records as usize) * RECORD);
        match File::open(&run_path) {
            Ok(mut f) => {
                f.read_to_end(&mut run)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        run.truncate(run.len() / RECORD * RECORD);
        let mut t = Vec::new();
        File::open(&tail_path)?.read_to_end(&mut t)?;
        let mut added: Vec<&[u8]> = t.chunks_exact(RECORD).collect();
        added.sort_unstable();
        // The run is sorted: one linear merge of the two (not a sort of everything, whose
        // cost per record would grow with the run).
        let sorted = merge_sorted(run.chunks_exact(RECORD), added.into_iter());
        let tmp = run_path.with_extension("run.tmp");
        {
            let mut out = std::io::BufWriter::new(File::create(&tmp)?);
            for r in &sorted {
                out.write_all(r)?;
            }
            out.flush()?;
        }
        std::fs::rename(&tmp, &run_path)?;
        // A crash before this leaves records in both: the same records, found either way.
        tail.set_len(0)?;
        Ok(())
    }

    /// Leaves stored for `tenant`.
    pub fn size(&mut self, tenant: &str) -> std::io::Result<u64> {
        Ok(self.tree(tenant)?.size)
    }

    /// The seq of `event_id` in `tenant`'s log: a binary search of the bucket's sorted run,
    /// then a scan of its tail.
    pub fn lookup(&self, tenant: &str, event_id: &str) -> std::io::Result<Option<u64>> {
        Ok(self.records(&id_key(tenant, event_id))?.first().copied())
    }

    /// Where `session_id`'s events lie in `tenant`'s chain. What is stored is read after how
    /// far it is stored (index records are written before the chain hashes that tell it), so
    /// the session's events are within `stored` or at or after `indexed`.
    pub fn session_span(&self, tenant: &str, session_id: &str) -> std::io::Result<SessionSpan> {
        let indexed = ChainHashes::at(&self.dir).len(tenant)?;
        let seqs = self.records(&session_key(tenant, session_id))?;
        let stored = seqs
            .iter()
            .min()
            .zip(seqs.iter().max())
            .map(|(a, b)| (*a, *b));
        Ok(SessionSpan { stored, indexed })
    }

    /// The seqs of every index record of `key`: a binary search of the bucket's sorted run
    /// for the first, the run read on while the key holds, then a scan of its tail.
    fn records(&self, key: &[u8; 16]) -> std::io::Result<Vec<u64>> {
        let (run_path, tail_path) = self.bucket_paths(key[0] as usize);
        let seq_of = |record: &[u8]| {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&record[16..RECORD]);
            u64::from_le_bytes(seq)
        };
        let open = |path: &Path| match File::open(path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let mut out = Vec::new();
        if let Some(run) = open(&run_path)? {
            let n = run.metadata()?.len() / RECORD as u64;
            let (mut lo, mut hi) = (0u64, n);
            let mut record = [0u8; RECORD];
            // The first record whose key is not below `key`.
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                run.read_exact_at(&mut record, mid * RECORD as u64)?;
                if record[..16] < key[..] {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            while lo < n {
                run.read_exact_at(&mut record, lo * RECORD as u64)?;
                if record[..16] != key[..] {
                    break;
                }
                out.push(seq_of(&record));
                lo += 1;
            }
        }
        if let Some(mut tail) = open(&tail_path)? {
            let mut buf = Vec::new();
            tail.read_to_end(&mut buf)?;
            out.extend(
                buf.chunks_exact(RECORD)
                    .filter(|r| r[..16] == key[..])
                    .map(seq_of),
            );
        }
        Ok(out)
    }

    /// Reads `tenant`'s tree for proofs over its first `size` leaves.
    pub fn reader(&mut self, tenant: &str, size: u64) -> std::io::Result<Option<TreeReader>> {
        let tree = self.tree(tenant)?;
        if size > tree.size || size == 0 {
            return Ok(None);
        }
        Ok(Some(TreeReader {
            file: File::open(&tree.path)?,
            size,
        }))
    }
}

/// Index records waiting to be written, by bucket, and the span of each session among the
/// events added since the last flush.
#[derive(Default)]
struct Records {
    buckets: Vec<Vec<u8>>,
    sessions: HashMap<[u8; 16], (u64, u64)>,
    len: usize,
}

impl Records {
    fn push(&mut self, key: [u8; 16], seq: u64) {
        if self.buckets.is_empty() {
            self.buckets = vec![Vec::new(); 256];
        }
        let bucket = &mut self.buckets[key[0] as usize];
        bucket.extend_from_slice(&key);
        bucket.extend_from_slice(&seq.to_le_bytes());
        self.len += 1;
    }

    fn add(&mut self, e: &StoredEvent<'_>) {
        self.push(id_key(e.tenant, e.event_id), e.seq);
        if !e.session_id.is_empty() {
            let span = self
                .sessions
                .entry(session_key(e.tenant, e.session_id))
                .or_insert((e.seq, e.seq));
            *span = (span.0.min(e.seq), span.1.max(e.seq));
        }
    }

    /// Appends the records to the buckets' tails. A session's records bound it: the least of
    /// them is its first event, the greatest its last (two per flush it appears in, whatever
    /// its length).
    fn flush(&mut self, store: &ProofStore) -> std::io::Result<()> {
        for (key, (first, last)) in std::mem::take(&mut self.sessions) {
            self.push(key, first);
            if last != first {
                self.push(key, last);
            }
        }
        for (i, records) in self.buckets.iter_mut().enumerate() {
            if !records.is_empty() {
                store.append_records(i, records)?;
                records.clear();
            }
        }
        self.len = 0;
        Ok(())
    }
}

/// Index records buffered by a [`Rebuild`] before they are appended (24 MB).
const REBUILD_RECORDS: usize = 1 << 20;
/// Leaves read back at a time when a [`Rebuild`] builds a tree (2 MB).
const REBUILD_LEAVES: u64 = 1 << 15;
/// Bytes of a leaf and its chain hash in a rebuild's scratch file.
const SCRATCH: u64 = 2 * NODE;

/// A run of one tenant's consecutive positions, waiting to be written to its scratch file.
#[derive(Default)]
struct Run {
    tenant: String,
    first: u64,
    bytes: Vec<u8>,
}

/// What a [`Rebuild`] has seen of one tenant.
struct Seen {
    first: u64,
    last: u64,
    count: u64,
}

/// Events of many epochs being written to a [`ProofStore`] in any order
/// ([`ProofStore::rebuild`]). State: the index records and session spans of the last
/// [`REBUILD_RECORDS`] events, one pending run of leaves, and three numbers per tenant;
/// leaves wait in `<store>/rebuild/` (64 bytes each) until [`Rebuild::finish`].
pub struct Rebuild<'s> {
    store: &'s mut ProofStore,
    records: Records,
    tenants: HashMap<String, Seen>,
    run: Run,
}

impl Rebuild<'_> {
    /// Adds one event.
    pub fn add(&mut self, e: StoredEvent<'_>) -> std::io::Result<()> {
        self.records.add(&e);
        if self.records.len >= REBUILD_RECORDS {
            self.records.flush(self.store)?;
        }
        match self.tenants.get_mut(e.tenant) {
            Some(seen) => {
                seen.first = seen.first.min(e.seq);
                seen.last = seen.last.max(e.seq);
                seen.count += 1;
            }
            None => {
                self.tenants.insert(
                    e.tenant.to_string(),
                    Seen {
                        first: e.seq,
                        last: e.seq,
                        count: 1,
                    },
                );
            }
        }
        let next = self.run.first + (self.run.bytes.len() as u64) / SCRATCH;
        if self.run.tenant != e.tenant || next != e.seq || self.run.bytes.len() >= 1 << 20 {
            self.write_run()?;
            self.run.tenant.clear();
            self.run.tenant.push_str(e.tenant);
            self.run.first = e.seq;
        }
        self.run.bytes.extend_from_slice(&e.leaf);
        self.run.bytes.extend_from_slice(&e.hash);
        Ok(())
    }

    fn scratch(&self, tenant: &str) -> PathBuf {
        tenant_path(&self.store.dir, "rebuild", "leaves", tenant)
    }

    fn write_run(&mut self) -> std::io::Result<()> {
        if self.run.bytes.is_empty() {
            return Ok(());
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.scratch(&self.run.tenant))?
            .write_all_at(&self.run.bytes, self.run.first * SCRATCH)?;
        self.run.bytes.clear();
        Ok(())
    }

    /// Writes everything added, builds each tenant's tree from its leaves in order, and
    /// records every event up to `epoch` as stored. A tenant whose events do not fill its
    /// positions (a gap) is an error, as in [`ProofStore::append`], and nothing is recorded as
    /// stored.
    pub fn finish(mut self, epoch: Epoch) -> std::io::Result<()> {
        self.write_run()?;
        self.records.flush(self.store)?;
        let mut tenants: Vec<(String, Seen)> =
            std::mem::take(&mut self.tenants).into_iter().collect();
        tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut buf = Vec::new();
        let mut leaves = Vec::new();
        for (tenant, seen) in tenants {
            if seen.count != seen.last - seen.first + 1 {
                return Err(std::io::Error::other(format!(
                    "proof store: tenant {tenant:?} has {} events at positions {}..={}",
                    seen.count, seen.first, seen.last
                )));
            }
            let path = self.scratch(&tenant);
            let file = File::open(&path)?;
            let mut at = seen.first;
            while at <= seen.last {
                let n = REBUILD_LEAVES.min(seen.last + 1 - at);
                buf.resize((n * SCRATCH) as usize, 0);
                file.read_exact_at(&mut buf, at * SCRATCH)?;
                leaves.clear();
                for (i, pair) in buf.chunks_exact(SCRATCH as usize).enumerate() {
                    let mut leaf = [0u8; 32];
                    let mut hash = [0u8; 32];
                    leaf.copy_from_slice(&pair[..32]);
                    hash.copy_from_slice(&pair[32..]);
                    leaves.push((at + i as u64, leaf, hash));
                }
                self.store.extend(&tenant, &leaves)?;
                at += n;
            }
            std::fs::remove_file(&path)?;
        }
        std::fs::remove_dir_all(self.store.dir.join("rebuild"))?;
        self.store.mark(epoch)
    }
}

/// Writes the chain hashes of `events` (sorted by seq) at their positions in `path`. Written
/// again after a crash, the file is cut back to the first position written again. Positions
/// past a gap (a file lost or cut short) are not written: readers go to the lake for them.
fn write_chain(path: &Path, events: &[(u64, Hash, Hash)]) -> std::io::Result<()> {
    let Some(&(first, ..)) = events.first() else {
        return Ok(());
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let stored = file.metadata()?.len() / NODE;
    if first > stored {
        return Ok(());
    }
    if first < stored {
        file.set_len(first * NODE)?;
    }
    let mut out = Vec::with_capacity(events.len() * NODE as usize);
    for (i, (seq, _, chain)) in events.iter().enumerate() {
        if *seq != first + i as u64 {
            break;
        }
        out.extend_from_slice(chain);
    }
    file.write_all_at(&out, first * NODE)
}

/// Reads chain hashes by position from a proof store's `chains/` files: no lock, no state,
/// nothing trusted (a reader checks each hash against the row it links).
#[derive(Clone, Debug)]
pub struct ChainHashes {
    dir: PathBuf,
}

impl ChainHashes {
    /// The chain hashes of the proof store in `dir` (`<warehouse>/proofs`).
    pub fn at(dir: &Path) -> Self {
        ChainHashes {
            dir: dir.to_path_buf(),
        }
    }

    /// How many of `tenant`'s chain hashes are stored (every position before it).
    pub fn len(&self, tenant: &str) -> std::io::Result<u64> {
        match std::fs::metadata(chain_file(&self.dir, tenant)) {
            Ok(m) => Ok(m.len() / NODE),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The chain hash at each of `seqs` in `tenant`'s log, `None` where not stored (yet).
    pub fn get(&self, tenant: &str, seqs: &[u64]) -> std::io::Result<Vec<Option<Hash>>> {
        let file = match File::open(chain_file(&self.dir, tenant)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(vec![None; seqs.len()]);
            }
            Err(e) => return Err(e),
        };
        let stored = file.metadata()?.len() / NODE;
        seqs.iter()
            .map(|&seq| {
                if seq >= stored {
                    return Ok(None);
                }
                let mut hash = [0u8; 32];
                file.read_exact_at(&mut hash, seq * NODE)?;
                Ok(Some(hash))
            })
            .collect()
    }
}

/// The right edge of a tree of `size` leaves, read from its file.
fn edge_of(file: &File, size: u64) -> std::io::Result<Vec<Hash>> {
    let mut edge = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1 << level) != 0 {
            edge.push(read_node(file, level, start >> level)?);
            start += 1 << level;
        }
    }
    Ok(edge)
}

fn read_node(file: &File, level: u32, index: u64) -> std::io::Result<Hash> {
    let mut hash = [0u8; 32];
    file.read_exact_at(&mut hash, position(level, index) * NODE)?;
    Ok(hash)
}

/// Proofs over the first `size` leaves of one tenant's stored tree.
#[derive(Debug)]
pub struct TreeReader {
    file: File,
    size: u64,
}

impl TreeReader {
    /// Leaf `index`.
    pub fn leaf(&self, index: u64) -> std::io::Result<Hash> {
        read_node(&self.file, 0, index)
    }

    /// MTH of leaves `start..end` (`start < end`, `start` aligned to the largest power of two
    /// below `end - start` as in RFC 6962's recursion).
    fn root_of(&self, start: u64, end: u64) -> std::io::Result<Hash> {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            return read_node(&self.file, n.trailing_zeros(), start / n);
        }
        let k = split(n);
        Ok(merkle::node(
            &self.root_of(start, start + k)?,
            &self.root_of(start + k, end)?,
        ))
    }

    /// The root of the tree of `size` leaves (`size <= self.size`).
    pub fn root(&self, size: u64) -> std::io::Result<Hash> {
        if size == 0 {
            return Ok(merkle::empty_root());
        }
        self.root_of(0, size.min(self.size))
    }

    /// RFC 6962 `PATH(index, D[size])`.
    pub fn inclusion_proof(&self, index: u64) -> std::io::Result<Vec<Hash>> {
        let mut out = Vec::new();
        let (mut start, mut end, mut m) = (0u64, self.size, index);
        let mut stack = Vec::new();
        while end - start > 1 {
            let k = split(end - start);
            if m < k {
                stack.push((start + k, end));
                end = start + k;
            } else {
                stack.push((start, start + k));
                start += k;
                m -= k;
            }
        }
        for (s, e) in stack.into_iter().rev() {
            out.push(self.root_of(s, e)?);
        }
        Ok(out)
    }

    /// RFC 6962 `PROOF(m, D[size])`, `0 < m <= size`.
    pub fn consistency_proof(&self, m: u64) -> std::io::Result<Vec<Hash>> {
        let mut stack = Vec::new();
        let (mut start, mut end, mut m, mut complete) = (0u64, self.size, m, true);
        loop {
            let n = end - start;
            if m == n {
                if !complete {
                    stack.push((start, end));
                }
                break;
            }
            let k = split(n);
            if m <= k {
                stack.push((start + k, end));
                end = start + k;
            } else {
                stack.push((start, start + k));
                start += k;
                m -= k;
                complete = false;
            }
        }
        stack
            .into_iter()
            .rev()
            .map(|(s, e)| self.root_of(s, e))
            .collect()
    }
}

/// The records of two sorted sequences in order, each distinct record once.
fn merge_sorted<'a>(
    a: impl Iterator<Item = &'a [u8]>,
    b: impl Iterator<Item = &'a [u8]>,
) -> Vec<&'a [u8]> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut out: Vec<&[u8]> = Vec::new();
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x <= y => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        if let Some(r) = next
            && out.last() != Some(&r)
        {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| Sha256::digest(i.to_le_bytes()).into())
            .collect()
    }

    /// An event of no session.
    fn ev<'a>(
        tenant: &'a str,
        seq: u64,
        event_id: &'a str,
        leaf: Hash,
        hash: Hash,
    ) -> StoredEvent<'a> {
        StoredEvent {
            tenant,
            seq,
            event_id,
            session_id: "",
            leaf,
            hash,
        }
    }

    /// A stand-in chain hash of position `i`.
    fn chain(i: usize) -> Hash {
        Sha256::digest(((i as u64 + 1) << 40).to_le_bytes()).into()
    }

    /// Lookups find every event (and nothing else) while tails are merged into sorted runs,
    /// after a crash between a merge's rename and the tail's truncation, and after a torn
    /// record at a tail's end.
    #[test]
    fn the_index_finds_every_event_across_merges() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ProofStore::open(dir.path()).unwrap();
        store.merge_at = 2;
        let all = leaves(3000);
        let ids: Vec<String> = (0..3000).map(|i| format!("ev-{i}")).collect();
        let mut at = 0;
        for (epoch, batch) in [1usize, 7, 300, 2, 900, 1790].into_iter().enumerate() {
            store
                .append(
                    epoch as u64,
                    (at..at + batch).map(|i| ev("t", i as u64, ids[i].as_str(), all[i], chain(i))),
                )
                .unwrap();
            at += batch;
            for i in (0..at).step_by(37).chain([at - 1]) {
                assert_eq!(store.lookup("t", &ids[i]).unwrap(), Some(i as u64));
            }
            assert_eq!(
                store.lookup("t", &ids[at.min(2999)]).unwrap(),
                (at == 3000).then_some(2999)
            );
            assert_eq!(store.lookup("u", &ids[0]).unwrap(), None);
        }
        let runs = std::fs::read_dir(dir.path().join("ids"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("run".as_ref()))
            .count();
        assert!(runs > 100, "{runs} sorted runs");
        // A merged tail left behind (crash before truncation) and a torn record.
        let (run, tail) = store.bucket_paths(id_key("t", &ids[5])[0] as usize);
        let run_bytes = std::fs::read(&run).unwrap();
        let mut bytes = run_bytes.clone();
        bytes.extend_from_slice(&[9; 7]);
        std::fs::write(&tail, &bytes).unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(store.lookup("t", id).unwrap(), Some(i as u64), "{i}");
        }
        let more: Vec<String> = (0..50).map(|i| format!("more-{i}")).collect();
        let extra = leaves(3050);
        store
            .append(
                9,
                (0..50).map(|i| {
                    let seq = 3000 + i;
                    ev("t", seq as u64, more[i].as_str(), extra[seq], chain(seq))
                }),
            )
            .unwrap();
        for (i, id) in more.iter().enumerate() {
            assert_eq!(store.lookup("t", id).unwrap(), Some(3000 + i as u64));
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(store.lookup("t", id).unwrap(), Some(i as u64), "{i}");
        }
    }

    #[test]
    fn positions_follow_post_order() {
        assert_eq!(
            [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0)].map(|(l, i)| position(l, i)),
            [0, 1, 2, 3, 4, 5, 6]
        );
        for n in 0..2000 {
            assert_eq!(leaves_within(nodes_for(n)), n);
            assert_eq!(leaves_within(nodes_for(n + 1) - 1), n, "{n}");
        }
    }

    /// Roots and proofs from the stored tree equal those computed from the leaves, at every
    /// size, over appends in uneven batches and a reopen.
    #[test]
    fn proofs_equal_the_in_memory_ones() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(70);
        let mut store = ProofStore::open(dir.path()).unwrap();
        let mut at = 0;
        for (epoch, batch) in [1usize, 2, 5, 13, 1, 30, 18].into_iter().enumerate() {
            let ids: Vec<String> = (at..at + batch).map(|i| format!("e{i}")).collect();
            store
                .append(
                    epoch as u64,
                    (at..at + batch)
                        .map(|i| ev("t", i as u64, ids[i - at].as_str(), all[i], chain(i))),
                )
                .unwrap();
            at += batch;
            if epoch == 3 {
                store = ProofStore::open(dir.path()).unwrap();
                assert_eq!(store.indexed_epoch(), Some(3));
            }
        }
        assert_eq!(store.size("t").unwrap(), 70);
        for size in 1..=70u64 {
            let r = store.reader("t", size).unwrap().unwrap();
            let prefix = &all[..size as usize];
            assert_eq!(r.root(size).unwrap(), merkle::root(prefix));
            for i in 0..size {
                assert_eq!(
                    Some(r.inclusion_proof(i).unwrap()),
                    merkle::inclusion_proof(prefix, i as usize),
                    "size {size} leaf {i}"
                );
            }
            for m in 1..=size {
                assert_eq!(
                    Some(r.consistency_proof(m).unwrap()),
                    merkle::consistency_proof(prefix, m as usize),
                    "size {size} from {m}"
                );
            }
        }
        assert_eq!(store.lookup("t", "e42").unwrap(), Some(42));
        assert_eq!(store.lookup("u", "e42").unwrap(), None);
        assert_eq!(store.lookup("t", "e70").unwrap(), None);
        assert!(store.reader("t", 71).unwrap().is_none());
    }

    /// Writing an epoch again (a crash before the marker) changes nothing, and a torn tail is
    /// cut back on open.
    #[test]
    fn replays_are_idempotent_and_torn_tails_cut() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(9);
        let mut store = ProofStore::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..9).map(|i| format!("e{i}")).collect();
        let events = |r: std::ops::Range<usize>| {
            r.map(|i| ev("t", i as u64, ids[i].as_str(), all[i], chain(i)))
                .collect::<Vec<_>>()
        };
        store.append(0, events(0..6)).unwrap();
        store.append(0, events(0..6)).unwrap();
        let path = tenant_file(dir.path(), "t");
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[7; 40])
            .unwrap();
        let mut store = ProofStore::open(dir.path()).unwrap();
        // 40 bytes: one whole node (it looks like a seventh leaf) and a torn one.
        assert_eq!(store.size("t").unwrap(), 7);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len + 32);
        // The chain file too: a torn tail that looks like a seventh hash.
        let chains = chain_file(dir.path(), "t");
        OpenOptions::new()
            .append(true)
            .open(&chains)
            .unwrap()
            .write_all(&[7; 40])
            .unwrap();
        store.append(1, events(4..9)).unwrap();
        let r = store.reader("t", 9).unwrap().unwrap();
        assert_eq!(r.root(9).unwrap(), merkle::root(&all));
        assert_eq!(store.lookup("t", "e3").unwrap(), Some(3));
        let seqs: Vec<u64> = (0..11).collect();
        let want: Vec<Option<Hash>> = (0..11).map(|i| (i < 9).then(|| chain(i))).collect();
        assert_eq!(ChainHashes::at(dir.path()).get("t", &seqs).unwrap(), want);
        assert_eq!(
            ChainHashes::at(dir.path()).get("u", &[0]).unwrap(),
            vec![None]
        );
    }

    /// A store of an older format (no chain hashes) is cleared on open, for its owner to
    /// write again from the lake; one of this format is kept.
    #[test]
    fn a_store_of_another_format_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(3);
        let mut store = ProofStore::open(dir.path()).unwrap();
        store
            .append(2, (0..3).map(|i| ev("t", i as u64, "e", all[i], chain(i))))
            .unwrap();
        assert_eq!(
            ProofStore::open(dir.path()).unwrap().indexed_epoch(),
            Some(2)
        );
        std::fs::write(dir.path().join("indexed.json"), r#"{"epoch":2}"#).unwrap();
        let mut store = ProofStore::open(dir.path()).unwrap();
        assert_eq!(store.indexed_epoch(), None);
        assert_eq!(store.size("t").unwrap(), 0);
        assert_eq!(
            ChainHashes::at(dir.path()).get("t", &[0]).unwrap(),
            vec![None]
        );
    }

    /// A small linear congruential generator: numbers below its argument.
    fn lcg(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        }
    }

    /// `n` events of two tenants as (tenant, seq, event id, session), sessions interleaved and
    /// picked with a bias to the recent.
    fn random_events(n: usize, seed: u64) -> Vec<(usize, u64, String, String)> {
        let mut next = lcg(seed);
        let mut events = Vec::new();
        let mut size = [0u64; 2];
        for _ in 0..n {
            let t = next(2) as usize;
            let session = if next(4) == 0 {
                next(40)
            } else {
                size[t] / 10 + next(3)
            };
            events.push((
                t,
                size[t],
                format!("e{t}-{}", size[t]),
                format!("s{session}"),
            ));
            size[t] += 1;
        }
        events
    }

    fn stored<'a>(
        tenants: &[&'a str],
        all: &[Hash],
        e: &'a (usize, u64, String, String),
    ) -> StoredEvent<'a> {
        StoredEvent {
            tenant: tenants[e.0],
            seq: e.1,
            event_id: e.2.as_str(),
            session_id: e.3.as_str(),
            leaf: all[e.1 as usize],
            hash: chain(e.1 as usize),
        }
    }

    /// Every session's span is its first and last position, whatever the interleaving of
    /// sessions and tenants, the epochs' sizes, merges of the index, replays and reopens; a
    /// session not stored has none, and `indexed` is how far the tenant's chain is stored.
    #[test]
    fn session_spans_bound_every_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ProofStore::open(dir.path()).unwrap();
        store.merge_at = 3;
        let tenants = ["t", "u"];
        let all = leaves(2000);
        let events = random_events(2000, 12345);
        let mut want: HashMap<(usize, String), (u64, u64)> = HashMap::new();
        let mut at = 0;
        for (epoch, batch) in [1usize, 5, 300, 2, 600, 1092].into_iter().enumerate() {
            let part = &events[at..at + batch];
            store
                .append(epoch as u64, part.iter().map(|e| stored(&tenants, &all, e)))
                .unwrap();
            if epoch == 3 {
                // Replayed after a crash, and the store reopened.
                store
                    .append(epoch as u64, part.iter().map(|e| stored(&tenants, &all, e)))
                    .unwrap();
                store = ProofStore::open(dir.path()).unwrap();
                store.merge_at = 3;
            }
            for (t, seq, _, session) in part {
                let span = want.entry((*t, session.clone())).or_insert((*seq, *seq));
                *span = (span.0.min(*seq), span.1.max(*seq));
            }
            at += batch;
            for ((t, session), span) in &want {
                let got = store.session_span(tenants[*t], session).unwrap();
                assert_eq!(got.stored, Some(*span), "{t} {session}");
            }
            for (t, tenant) in tenants.iter().enumerate() {
                let stored = events[..at].iter().filter(|e| e.0 == t).count() as u64;
                let got = store.session_span(tenant, "s-none").unwrap();
                assert_eq!(
                    got,
                    SessionSpan {
                        stored: None,
                        indexed: stored
                    }
                );
            }
        }
        // Sessions and events do not answer for each other.
        assert_eq!(store.lookup("t", "s1").unwrap(), None);
        assert_eq!(store.session_span("t", "et-0").unwrap().stored, None);
    }

    /// A store written by a rebuild, from nothing or catching up, of events in any order,
    /// equals the one written epoch by epoch: same trees and chain hashes, same lookups, and
    /// spans that bound every session; a gap fails the rebuild and nothing is marked stored.
    #[test]
    fn a_rebuild_in_any_order_equals_appends() {
        let tenants = ["t", "u"];
        let all = leaves(3000);
        let events = random_events(3000, 777);
        let appended = tempfile::tempdir().unwrap();
        let mut want = ProofStore::open(appended.path()).unwrap();
        for (epoch, part) in events.chunks(500).enumerate() {
            want.append(epoch as u64, part.iter().map(|e| stored(&tenants, &all, e)))
                .unwrap();
        }
        let mut shuffled: Vec<usize> = (0..events.len()).collect();
        let mut next = lcg(5);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, next(i as u64 + 1) as usize);
        }
        for prefix in [0, 1000, 2999] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = ProofStore::open(dir.path()).unwrap();
            store.merge_at = 5;
            if prefix > 0 {
                store
                    .append(
                        0,
                        events[..prefix].iter().map(|e| stored(&tenants, &all, e)),
                    )
                    .unwrap();
            }
            let mut rebuild = store.rebuild().unwrap();
            // A crash's replay: some stored events come again.
            for &i in shuffled
                .iter()
                .filter(|&&i| i >= prefix.saturating_sub(100))
            {
                rebuild.add(stored(&tenants, &all, &events[i])).unwrap();
            }
            rebuild.finish(5).unwrap();
            assert_eq!(store.indexed_epoch(), Some(5));
            assert!(!dir.path().join("rebuild").exists());
            let store = ProofStore::open(dir.path()).unwrap();
            for tenant in tenants {
                for path in [tenant_file, chain_file] {
                    assert_eq!(
                        std::fs::read(path(dir.path(), tenant)).unwrap(),
                        std::fs::read(path(appended.path(), tenant)).unwrap(),
                        "prefix {prefix}"
                    );
                }
            }
            let mut spans: HashMap<(usize, &str), (u64, u64)> = HashMap::new();
            for (t, seq, id, session) in &events {
                assert_eq!(store.lookup(tenants[*t], id).unwrap(), Some(*seq));
                let span = spans.entry((*t, session)).or_insert((*seq, *seq));
                *span = (span.0.min(*seq), span.1.max(*seq));
            }
            for ((t, session), span) in spans {
                let got = store.session_span(tenants[t], session).unwrap();
                assert_eq!(got.stored, Some(span), "{t} {session}");
            }
        }
        // A gap: position 10 of "t" missing.
        let dir = tempfile::tempdir().unwrap();
        let mut store = ProofStore::open(dir.path()).unwrap();
        let mut rebuild = store.rebuild().unwrap();
        for e in events.iter().filter(|e| !(e.0 == 0 && e.1 == 10)) {
            rebuild.add(stored(&tenants, &all, e)).unwrap();
        }
        assert!(rebuild.finish(5).is_err());
        assert_eq!(ProofStore::open(dir.path()).unwrap().indexed_epoch(), None);
    }
}
