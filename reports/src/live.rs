//! The live state of every view, as served over HTTP.
//!
//! Fed with the view changes of each epoch once that epoch is committed to the lake, so what
//! is served is always backed by a committed snapshot (the `epoch` field says which).
//!
//! # State and its bound
//! Per tenant: event counts and HITL statistics; the rows of the keyed views that are still
//! live. A retired row ([`ViewUpdate::Retired`]: its session ended and was retired) leaves
//! memory for [`RetiredRows`], a file per tenant in the warehouse, and is served from there;
//! so memory holds open sessions' rows and the tenant-level views, not history.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use custody_operators::record::{Epoch, HitlStats, ViewId, ViewUpdate, WrittenEvent};
use serde::Serialize;

/// Current view contents, per tenant.
#[derive(Clone, Debug, Default)]
pub struct LiveViews {
    counts: BTreeMap<String, BTreeMap<String, i64>>,
    hitl: BTreeMap<String, HitlStats>,
    rows: BTreeMap<(ViewId, String), BTreeMap<String, String>>,
    coverage: BTreeMap<String, Coverage>,
    epoch: Option<Epoch>,
    retired: Option<RetiredRows>,
}

/// Retired rows on disk, in the warehouse (`<warehouse>/served/`): one file per tenant
/// (`<first 16 bytes of SHA-256(tenant), hex>.ndjson`) of `[view, key, row]` lines, a later
/// line for the same view and key replacing an earlier one; `retired.json` names the last
/// epoch written. Derived data: the lake's view changelogs hold every row.
#[derive(Clone, Debug)]
pub struct RetiredRows {
    dir: PathBuf,
    epoch: Option<Epoch>,
}

impl RetiredRows {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let epoch = match std::fs::read(dir.join("retired.json")) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["epoch"].as_u64()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(RetiredRows {
            dir: dir.to_path_buf(),
            epoch,
        })
    }

    /// The last epoch whose retired rows are written.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// Forgets every row (a warehouse starting a new history, or one behind the store).
    pub fn clear(&mut self) -> std::io::Result<()> {
        std::fs::remove_dir_all(&self.dir)?;
        std::fs::create_dir_all(&self.dir)?;
        self.epoch = None;
        Ok(())
    }

    fn file(&self, tenant: &str) -> PathBuf {
        use sha2::Digest;
        let d = sha2::Sha256::digest(tenant.as_bytes());
        self.dir.join(format!("{}.ndjson", hex::encode(&d[..16])))
    }

    /// Writes epoch `epoch`'s retired rows `(view, tenant, key, row)`.
    pub fn append(
        &mut self,
        epoch: Epoch,
        rows: &[(ViewId, &str, &str, &str)],
    ) -> std::io::Result<()> {
        let mut by_tenant: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for (view, tenant, key, row) in rows {
            let out = by_tenant.entry(tenant).or_default();
            serde_json::to_writer(&mut *out, &(view, key, row)).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        for (tenant, lines) in by_tenant {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.file(tenant))?
                .write_all(&lines)?;
        }
        let marker = self.dir.join("retired.json");
        let tmp = marker.with_extension("json.tmp");
        std::fs::write(&tmp, format!("{{\"epoch\":{epoch}}}"))?;
        std::fs::rename(&tmp, &marker)?;
        self.epoch = Some(epoch);
        Ok(())
    }

    /// `tenant`'s retired rows of `view`, by key. A torn last line is skipped.
    pub fn rows(&self, view: ViewId, tenant: &str) -> std::io::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let file = match std::fs::File::open(self.file(tenant)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for line in std::io::BufReader::new(file).lines() {
            if let Ok((v, key, row)) = serde_json::from_str::<(ViewId, String, String)>(&line?)
                && v == view
            {
                out.insert(key, row);
            }
        }
        Ok(out)
    }
}

/// Which input a tenant's view state covers: the report rows' provenance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Coverage {
    /// Committed events.
    pub events: i64,
    /// First and last epoch holding the tenant's events.
    pub epochs: (Epoch, Epoch),
    /// Per source partition, the first and last offset of the tenant's events.
    pub offsets: BTreeMap<i32, (i64, i64)>,
    /// Events removed by retention (as its `RETENTION_APPLIED` events say): their leaves are
    /// in the log, so the checkpoints count them.
    #[serde(default)]
    pub expired: i64,
}

/// The event counts of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventCountsView {
    /// Tenant.
    pub tenant_id: String,
    /// Last committed epoch reflected.
    pub epoch: Option<Epoch>,
    /// Total events.
    pub total: i64,
    /// Count per event type.
    pub by_type: BTreeMap<String, i64>,
}

/// The HITL latency statistics of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HitlLatencyView {
    /// Tenant.
    pub tenant_id: String,
    /// Last committed epoch reflected.
    pub epoch: Option<Epoch>,
    /// The statistics (all zero before the first completed review).
    #[serde(flatten)]
    pub stats: HitlStats,
}

impl LiveViews {
    /// Serves retired rows from `store` (and writes those retired from now on to it).
    pub fn set_retired(&mut self, store: RetiredRows) {
        self.retired = Some(store);
    }

    /// Applies one committed epoch's changes. Retractions are applied before insertions, and
    /// retirements last; retired rows go to the store unless it already holds the epoch.
    pub fn apply(&mut self, epoch: Epoch, updates: &[ViewUpdate]) {
        let mut ordered: Vec<&ViewUpdate> = updates.iter().collect();
        ordered.sort_by_key(|u| match u.diff() {
            d if d < 0 => 0,
            d if d > 0 => 1,
            _ => 2,
        });
        let mut retired: Vec<(ViewId, &str, &str, &str)> = Vec::new();
        for update in ordered {
            match update {
                ViewUpdate::Retired {
                    view,
                    tenant_id,
                    key,
                    row,
                } => {
                    if let Some(rows) = self.rows.get_mut(&(*view, tenant_id.clone())) {
                        rows.remove(key);
                        if rows.is_empty() {
                            self.rows.remove(&(*view, tenant_id.clone()));
                        }
                    }
                    retired.push((*view, tenant_id, key, row));
                }
                ViewUpdate::Row {
                    view,
                    tenant_id,
                    key,
                    row,
                    diff,
                } => {
                    let rows = self.rows.entry((*view, tenant_id.clone())).or_default();
                    if *diff > 0 {
                        rows.insert(key.clone(), row.clone());
                    } else if rows.get(key) == Some(row) {
                        rows.remove(key);
                    }
                }
                ViewUpdate::EventCount {
                    tenant_id,
                    event_type,
                    count,
                    diff,
                } => {
                    let tenant = self.counts.entry(tenant_id.clone()).or_default();
                    if *diff > 0 {
                        tenant.insert(event_type.clone(), *count);
                    } else if tenant.get(event_type) == Some(count) {
                        tenant.remove(event_type);
                    }
                }
                ViewUpdate::HitlLatency {
                    tenant_id,
                    stats,
                    diff,
                } => {
                    if *diff > 0 {
                        self.hitl.insert(tenant_id.clone(), stats.clone());
                    } else if self.hitl.get(tenant_id) == Some(stats) {
                        self.hitl.remove(tenant_id);
                    }
                }
            }
        }
        if let Some(store) = &mut self.retired
            && !retired.is_empty()
            && store.epoch() < Some(epoch)
            && let Err(e) = store.append(epoch, &retired)
        {
            tracing::error!(epoch, error = %e, "cannot write retired view rows");
        }
        self.epoch = Some(epoch);
    }

    /// Records which committed events the views now reflect.
    pub fn observe(&mut self, epoch: Epoch, events: &[WrittenEvent]) {
        for e in events {
            let c = match self.coverage.get_mut(e.tenant_id.as_str()) {
                Some(c) => c,
                None => self
                    .coverage
                    .entry(e.tenant_id.clone())
                    .or_insert_with(|| Coverage {
                        epochs: (epoch, epoch),
                        ..Coverage::default()
                    }),
            };
            c.events += 1;
            c.expired += i64::try_from(e.expired).unwrap_or(i64::MAX);
            c.epochs = (c.epochs.0.min(epoch), c.epochs.1.max(epoch));
            let o = c.offsets.entry(e.partition).or_insert((e.offset, e.offset));
            *o = (o.0.min(e.offset), o.1.max(e.offset));
        }
    }

    /// Forgets the coverage (before observing every committed event again).
    pub fn reset_coverage(&mut self) {
        self.coverage.clear();
    }

    /// Writes the coverage to `path` (beside a snapshot of the views' state).
    pub fn save_coverage(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&self.coverage).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }

    /// Replaces the coverage with the one saved at `path`.
    pub fn load_coverage(&mut self, path: &Path) -> std::io::Result<()> {
        self.coverage =
            serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)?;
        Ok(())
    }

    /// What `tenant`'s view state covers.
    pub fn coverage(&self, tenant: &str) -> Option<&Coverage> {
        self.coverage.get(tenant)
    }

    /// The rows of a keyed view for `tenant`, by key, as JSON: the retired rows from the
    /// store, and the live ones over them.
    pub fn rows(&self, view: ViewId, tenant: &str) -> BTreeMap<String, String> {
        let mut out = match &self.retired {
            Some(store) => store.rows(view, tenant).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read retired view rows");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        if let Some(live) = self.rows.get(&(view, tenant.to_string())) {
            out.extend(live.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }

    /// The rows of a keyed view for `tenant`, parsed.
    pub fn rows_as<T: serde::de::DeserializeOwned>(&self, view: ViewId, tenant: &str) -> Vec<T> {
        self.rows(view, tenant)
            .values()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect()
    }

    /// Rows held in memory, over every view and tenant.
    pub fn live_rows(&self) -> usize {
        self.rows.values().map(BTreeMap::len).sum()
    }

    /// The last committed epoch reflected.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// Tenants with at least one event.
    pub fn tenants(&self) -> Vec<String> {
        self.counts.keys().cloned().collect()
    }

    /// Whether `tenant` has events.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.counts.contains_key(tenant)
    }

    /// Knows `tenant` even with no events (views recomputed over a period it has none in).
    pub fn add_tenant(&mut self, tenant: &str) {
        self.counts.entry(tenant.to_string()).or_default();
    }

    /// The event counts of `tenant`, if it has events.
    pub fn event_counts(&self, tenant: &str) -> Option<EventCountsView> {
        let by_type = self.counts.get(tenant)?.clone();
        Some(EventCountsView {
            tenant_id: tenant.to_string(),
            epoch: self.epoch,
            total: by_type.values().sum(),
            by_type,
        })
    }

    /// The HITL statistics of `tenant`, if it has events.
    pub fn hitl_latency(&self, tenant: &str) -> Option<HitlLatencyView> {
        self.counts.get(tenant)?;
        Some(HitlLatencyView {
            tenant_id: tenant.to_string(),
            epoch: self.epoch,
            stats: self.hitl.get(tenant).cloned().unwrap_or_default(),
        })
    }

    /// Total events over all tenants.
    pub fn total_events(&self) -> i64 {
        self.counts.values().flat_map(|m| m.values()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &str, ty: &str, count: i64, diff: i64) -> ViewUpdate {
        ViewUpdate::EventCount {
            tenant_id: t.into(),
            event_type: ty.into(),
            count,
            diff,
        }
    }

    fn row(key: &str, row: &str, diff: i64) -> ViewUpdate {
        ViewUpdate::Row {
            view: ViewId::Sessions,
            tenant_id: "a".into(),
            key: key.into(),
            row: row.into(),
            diff,
        }
    }

    fn retired(key: &str, row: &str) -> ViewUpdate {
        ViewUpdate::Retired {
            view: ViewId::Sessions,
            tenant_id: "a".into(),
            key: key.into(),
            row: row.into(),
        }
    }

    /// A retired row leaves memory and is served from the store; a row changed and retired in
    /// the same epoch is retired as changed; replaying an epoch the store holds writes nothing
    /// twice; a live row with the key of a retired one is served over it.
    #[test]
    fn retired_rows_are_served_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = LiveViews::default();
        live.set_retired(RetiredRows::open(dir.path()).unwrap());
        live.apply(0, &[row("s1", "{\"v\":1}", 1), row("s2", "{\"v\":1}", 1)]);
        live.apply(
            1,
            &[
                retired("s1", "{\"v\":2}"),
                row("s1", "{\"v\":2}", 1),
                row("s1", "{\"v\":1}", -1),
            ],
        );
        assert_eq!(live.live_rows(), 1);
        let rows = live.rows(ViewId::Sessions, "a");
        assert_eq!(rows["s1"], "{\"v\":2}");
        assert_eq!(rows["s2"], "{\"v\":1}");
        // The epoch again (a restart replaying it): nothing written twice.
        live.apply(1, &[retired("s1", "{\"v\":2}")]);
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.path().extension() == Some("ndjson".as_ref()))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(file.path())
                .unwrap()
                .lines()
                .count(),
            1
        );
        // A new live row under a retired key is served over it; reopened, the store serves.
        live.apply(2, &[row("s1", "{\"v\":3}", 1)]);
        assert_eq!(live.rows(ViewId::Sessions, "a")["s1"], "{\"v\":3}");
        let mut reopened = LiveViews::default();
        let store = RetiredRows::open(dir.path()).unwrap();
        assert_eq!(store.epoch(), Some(1));
        reopened.set_retired(store);
        assert_eq!(reopened.rows(ViewId::Sessions, "a")["s1"], "{\"v\":2}");
        assert!(reopened.rows(ViewId::Sessions, "b").is_empty());
    }

    #[test]
    fn applies_changes_in_any_order() {
        let mut live = LiveViews::default();
        live.apply(0, &[count("a", "X", 2, 1)]);
        live.apply(1, &[count("a", "X", 5, 1), count("a", "X", 2, -1)]);
        let v = live.event_counts("a").unwrap();
        assert_eq!((v.total, v.epoch), (5, Some(1)));
        assert!(live.event_counts("b").is_none());
        assert_eq!(live.hitl_latency("a").unwrap().stats, HitlStats::default());
    }
}
