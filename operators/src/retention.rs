//! Retention: removing each tenant's events older than its policy, with what derives from
//! them, as part of an epoch, so that the removal is sealed, completed after a crash, and
//! verifiable.
//!
//! # What is removed
//! An application is planned ([`plan`]) at a moment `now`: a tenant's event expires when its
//! time is before the start of `now`'s UTC day less the tenant's days (or its event type's:
//! [`Policy`]), unless it is a record of the log's own lifecycle (erasure, re-identification,
//! retention: [`EventType::is_lifecycle_record`]). With each expired event go its sealed
//! content in `custody.vault` (`event_id#field#…` entries); the tenant's quarantined records
//! go when the epoch that quarantined them was committed before the cutoff, with their sealed
//! raw input. The plan names every expired position, so applying it ([`stage`]) removes
//! exactly those rows, whatever files they sit in by then (compaction may have merged them).
//!
//! Events a legal hold covers ([`crate::holds`]) are kept whatever their age (counted as held),
//! and so are all quarantined records of a tenant under a tenant-wide hold.
//!
//! # What is kept
//! Each expired event's leaf hash, in `custody.expired` (32 bytes; nothing else of the event).
//! The chain is re-walked through it and the Merkle tree rebuilt from it, so every stored
//! checkpoint and every inclusion proof of a retained event still verifies. The tenant's
//! `RETENTION_APPLIED` event, chained in the same epoch, records the policy, the cutoff, the
//! counts and the expired ranges; `custody verify` accepts an expired position only inside a
//! range such an event declares.
//!
//! # How it is committed
//! Like a compaction ([`crate::compaction`]): for every data file holding an expired row, the
//! rows kept are written as a new file (none if nothing is kept); the epoch's manifest records
//! each replacement with the rows it removed ([`Compaction::expired`]), and the table's
//! commit for the epoch adds and removes in one snapshot. The views' changelog is rebuilt by
//! the epoch itself (the views recomputed from the retained events). Once committed, the
//! rewritten tables' older snapshots are expired and the files only they referenced deleted,
//! so no byte of an expired event is left in the warehouse's data or metadata files.
//!
//! # Bounds
//! Planning and applying read the event files of days before the latest cutoff, and the
//! quarantine and vault tables, one file at a time; the plan holds the expired positions as
//! ranges and the expired events' ids (for their vault entries).
//!
//! # Failure modes
//! A plan that no longer matches the lake (fewer expired rows found than planned) fails the
//! epoch's commit before anything is visible ([`Error::Retention`]); the application can be
//! planned again.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow_array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_select::filter::filter_record_batch;
use custody_schemas::event::EventType;
use custody_schemas::tables;
use iceberg::spec::{Literal, ManifestEntryRef, PrimitiveLiteral};
use iceberg::table::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::compaction::{Compaction, Staged, live_files};
use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::record::Epoch;
use crate::sinks::iceberg::{EventColumns, Warehouse};

/// The tables whose files an application rewrites (and whose older snapshots, which still
/// reference the removed rows, it expires).
pub const REWRITTEN_TABLES: [&str; 4] = [
    tables::EVENTS,
    tables::QUARANTINE,
    tables::VAULT,
    tables::VIEW_CHANGES,
];

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

/// The least retention the EU AI Act asks of deployers' logs (Art. 19(1), 26(6): at least six
/// months), in days.
pub const LEGAL_MINIMUM_DAYS: u64 = 183;

/// How long one tenant's events are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Days events are kept; `None`: forever.
    pub days: Option<u64>,
    /// Event types kept for another number of days than `days` (even when `days` is `None`).
    pub event_type_days: BTreeMap<String, u64>,
}

impl Policy {
    /// The time before which an event of `event_type` expires, counted back from `today_us`
    /// (the start of a UTC day); `None` if it is kept forever.
    pub fn cutoff(&self, today_us: i64, event_type: &str) -> Option<i64> {
        if EventType::parse(event_type).is_some_and(EventType::is_lifecycle_record) {
            return None;
        }
        let days = self
            .event_type_days
            .get(event_type)
            .copied()
            .or(self.days)?;
        let days = i64::try_from(days).ok()?;
        Some(today_us.saturating_sub(days.saturating_mul(DAY_US)))
    }

    /// The latest cutoff of any event type under this policy.
    fn latest_cutoff(&self, today_us: i64) -> Option<i64> {
        let days = self
            .days
            .into_iter()
            .chain(self.event_type_days.values().copied());
        days.filter_map(|d| i64::try_from(d).ok())
            .map(|d| today_us.saturating_sub(d.saturating_mul(DAY_US)))
            .max()
    }

    /// Whether anything ever expires under this policy.
    pub fn expires(&self) -> bool {
        self.days.is_some() || !self.event_type_days.is_empty()
    }
}

/// Every tenant's policy: its own, or the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    /// For tenants without their own, and for quarantined records no tenant owns.
    pub default: Policy,
    /// Tenant → its policy.
    pub tenants: BTreeMap<String, Policy>,
}

impl Policies {
    /// The policy of `tenant`.
    pub fn of(&self, tenant: &str) -> &Policy {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    fn latest_cutoff(&self, today_us: i64) -> Option<i64> {
        std::iter::once(&self.default)
            .chain(self.tenants.values())
            .filter_map(|p| p.latest_cutoff(today_us))
            .max()
    }
}

/// What one application removes of one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantPlan {
    /// The tenant's policy.
    pub policy: Policy,
    /// Events before this time (UTC micros) expire, event type overrides aside.
    pub cutoff_us: i64,
    /// The expired positions, `[first, last]` inclusive, ascending and disjoint.
    pub ranges: Vec<[u64; 2]>,
    /// Expired events.
    pub events: u64,
    /// Their ids (their vault entries go with them).
    pub event_ids: HashSet<String>,
    /// Quarantined records removed, as `(source, offset)` of `custody.quarantine`.
    pub quarantine: HashSet<(String, i64)>,
    /// Vault entries removed.
    pub vault: u64,
    /// Events past the cutoff kept because a legal hold covers them.
    pub held: u64,
}

impl TenantPlan {
    /// Whether the plan removes anything.
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.quarantine.is_empty() && self.vault == 0
    }

    /// Whether position `seq` expires.
    pub fn expires(&self, seq: u64) -> bool {
        let i = self.ranges.partition_point(|r| r[1] < seq);
        self.ranges.get(i).is_some_and(|r| r[0] <= seq)
    }
}

/// What one application removes: planned before its epoch, applied in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The start of the UTC day the cutoffs are counted back from.
    pub today_us: i64,
    /// The latest cutoff of any policy: no event after it expires.
    pub events_before_us: i64,
    /// Tenants with something to remove.
    pub tenants: BTreeMap<String, TenantPlan>,
    /// Quarantined records no tenant owns, removed under the default policy.
    pub unowned_quarantine: HashSet<(String, i64)>,
}

impl Plan {
    /// Whether the plan removes nothing.
    pub fn is_empty(&self) -> bool {
        self.tenants.values().all(TenantPlan::is_empty) && self.unowned_quarantine.is_empty()
    }

    /// Events removed in all.
    pub fn events(&self) -> u64 {
        self.tenants.values().map(|t| t.events).sum()
    }
}

/// The start of the UTC day of `now_us`.
pub fn day_start(now_us: i64) -> i64 {
    now_us.div_euclid(DAY_US) * DAY_US
}

/// The `[first, last]` ranges of the positions `seqs` (sorted here).
pub(crate) fn ranges(seqs: &mut [u64]) -> Vec<[u64; 2]> {
    seqs.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &s in seqs.iter() {
        match out.last_mut() {
            Some(r) if r[1] + 1 == s => r[1] = s,
            Some(r) if r[1] == s => {}
            _ => out.push([s, s]),
        }
    }
    out
}

/// Plans an application of `policies` at `now_us`: reads the events of the days before the
/// latest cutoff, and the quarantine and vault tables.
pub async fn plan(warehouse: &Warehouse, policies: &Policies, now_us: i64) -> Result<Plan> {
    let today_us = day_start(now_us);
    let mut plan = Plan {
        today_us,
        ..Plan::default()
    };
    let Some(latest) = policies.latest_cutoff(today_us) else {
        return Ok(plan);
    };
    plan.events_before_us = latest;
    let holds = crate::holds::active(warehouse.hold_events().await?);
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ids: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let events = warehouse.table(tables::EVENTS).await?;
    for entry in files_before(&events, latest).await? {
        for batch in read(&events, &entry).await? {
            let cols = EventColumns::of(&batch)?;
            for i in 0..batch.num_rows() {
                let tenant = cols.tenant.value(i);
                let Some(cutoff) = policies
                    .of(tenant)
                    .cutoff(today_us, cols.event_type.value(i))
                else {
                    continue;
                };
                if cols.time.value(i) >= cutoff {
                    continue;
                }
                if holds.get(tenant).is_some_and(|hs| {
                    hs.iter().any(|h| {
                        h.covers(
                            cols.session.value(i),
                            cols.agent.value(i),
                            cols.time.value(i),
                        )
                    })
                }) {
                    *held.entry(tenant.to_string()).or_default() += 1;
                    continue;
                }
                let seq = u64::try_from(cols.seq.value(i)).map_err(|_| Error::Retention {
                    table: tables::EVENTS.into(),
                    detail: format!("row {i} has a negative seq"),
                })?;
                seqs.entry(tenant.to_string()).or_default().push(seq);
                ids.entry(tenant.to_string())
                    .or_default()
                    .insert(cols.event_id(i)?);
            }
        }
    }
    for (tenant, n) in held {
        tenant_plan(&mut plan, policies, &tenant).held = n;
    }
    for (tenant, mut s) in seqs {
        let t = tenant_plan(&mut plan, policies, &tenant);
        t.ranges = ranges(&mut s);
        t.events = t.ranges.iter().map(|r| r[1] - r[0] + 1).sum();
        t.event_ids = ids.remove(&tenant).unwrap_or_default();
    }
    // Quarantined records: by the commit time of the epoch that quarantined them.
    let committed: HashMap<Epoch, i64> = warehouse
        .epoch_records(None)
        .await?
        .into_iter()
        .map(|r| (r.epoch, r.committed_at_us))
        .collect();
    let quarantine = warehouse.table(tables::QUARANTINE).await?;
    let (live, _) = live_files(&quarantine).await?;
    for entry in &live {
        for batch in read(&quarantine, entry).await? {
            let q = QuarantineColumns::of(&batch)?;
            for i in 0..batch.num_rows() {
                let tenant = (!q.tenant.is_null(i)).then(|| q.tenant.value(i));
                // A tenant-wide hold keeps its rejected input too.
                if tenant.is_some_and(|t| {
                    holds
                        .get(t)
                        .is_some_and(|hs| hs.iter().any(crate::holds::Hold::whole_tenant))
                }) {
                    continue;
                }
                let policy = tenant.map_or(&policies.default, |t| policies.of(t));
                // A record has no event type: the policy's days apply.
                let (Some(cutoff), Some(at)) = (
                    policy.cutoff(today_us, ""),
                    committed.get(&(q.epoch.value(i) as Epoch)),
                ) else {
                    continue;
                };
                if *at >= cutoff {
                    continue;
                }
                let key = (q.source.value(i).to_string(), q.offset.value(i));
                match tenant {
                    Some(t) => {
                        tenant_plan(&mut plan, policies, t).quarantine.insert(key);
                    }
                    None => {
                        plan.unowned_quarantine.insert(key);
                    }
                }
            }
        }
    }
    // Sealed content of the expired events and raw input of the expired records.
    let vault = warehouse.table(tables::VAULT).await?;
    let (live, _) = live_files(&vault).await?;
    for entry in &live {
        for batch in read(&vault, entry).await? {
            let v = VaultColumns::of(&batch)?;
            for i in 0..batch.num_rows() {
                if let Some(t) = plan.tenants.get_mut(v.tenant.value(i))
                    && expires_vault(t, v.kind.value(i), v.reference.value(i))
                {
                    t.vault += 1;
                }
            }
        }
    }
    plan.tenants.retain(|_, t| !t.is_empty());
    Ok(plan)
}

fn tenant_plan<'a>(plan: &'a mut Plan, policies: &Policies, tenant: &str) -> &'a mut TenantPlan {
    let today_us = plan.today_us;
    plan.tenants.entry(tenant.to_string()).or_insert_with(|| {
        let policy = policies.of(tenant).clone();
        let cutoff_us = policy.cutoff(today_us, "").unwrap_or(i64::MIN);
        TenantPlan {
            policy,
            cutoff_us,
            ..TenantPlan::default()
        }
    })
}

/// Whether the vault entry `(kind, reference)` goes with what `plan` removes.
fn expires_vault(plan: &TenantPlan, kind: &str, reference: &str) -> bool {
    match kind {
        "content" => reference
            .split_once('#')
            .is_some_and(|(event_id, _)| plan.event_ids.contains(event_id)),
        "quarantine" => reference
            .strip_prefix("quarantine:")
            .and_then(|r| r.rsplit_once(':'))
            .and_then(|(source, offset)| Some((source.to_string(), offset.parse().ok()?)))
            .is_some_and(|key| plan.quarantine.contains(&key)),
        _ => false,
    }
}

/// The live data files of the events table whose day partition is before `cutoff_us` (all
/// of them if the table is not partitioned by day).
async fn files_before(table: &Table, cutoff_us: i64) -> Result<Vec<ManifestEntryRef>> {
    let (live, _) = live_files(table).await?;
    let spec = table.metadata().default_partition_spec();
    let day = spec
        .fields()
        .iter()
        .position(|f| f.transform == iceberg::spec::Transform::Day);
    let cutoff_day = cutoff_us.div_euclid(DAY_US);
    Ok(live
        .into_iter()
        .filter(|e| {
            let Some(day) = day else { return true };
            match e
                .data_file()
                .partition()
                .fields()
                .get(day)
                .cloned()
                .flatten()
            {
                Some(Literal::Primitive(PrimitiveLiteral::Int(d))) => i64::from(d) < cutoff_day,
                _ => true,
            }
        })
        .collect())
}

async fn read(table: &Table, entry: &ManifestEntryRef) -> Result<Vec<RecordBatch>> {
    let bytes = table.file_io().new_input(entry.file_path())?.read().await?;
    ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .build()?
        .map(|b| b.map_err(Error::from))
        .collect()
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, table: &str, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Retention {
            table: table.into(),
            detail: format!("column {name:?} missing"),
        })
}

struct QuarantineColumns<'a> {
    source: &'a StringArray,
    offset: &'a Int64Array,
    epoch: &'a Int64Array,
    tenant: &'a StringArray,
}

impl<'a> QuarantineColumns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self> {
        let t = tables::QUARANTINE;
        Ok(QuarantineColumns {
            source: column(batch, t, "source")?,
            offset: column(batch, t, "source_offset")?,
            epoch: column(batch, t, "epoch")?,
            tenant: column(batch, t, "tenant_id")?,
        })
    }
}

struct VaultColumns<'a> {
    tenant: &'a StringArray,
    kind: &'a StringArray,
    reference: &'a StringArray,
}

impl<'a> VaultColumns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self> {
        let t = tables::VAULT;
        Ok(VaultColumns {
            tenant: column(batch, t, "tenant_id")?,
            kind: column(batch, t, "kind")?,
            reference: column(batch, t, "ref")?,
        })
    }
}

/// An application handed to the sink: the plan, and the views' changes that rebuilt them
/// from the retained events before the application's epoch (filled by the dataflow as it
/// replays them), which with the epoch's own changes become the views' whole changelog.
#[derive(Clone, Debug, Default)]
pub struct Job {
    /// What to remove.
    pub plan: Plan,
    /// The views' rebuilt history.
    pub history: std::sync::Arc<std::sync::Mutex<Vec<crate::record::ViewUpdate>>>,
}

/// An application written but not committed.
#[derive(Debug, Default)]
pub struct Applied {
    /// Table → its replacements.
    pub merges: BTreeMap<&'static str, Vec<Staged>>,
    /// `(tenant, seq, leaf)` of every expired event, for `custody.expired`.
    pub leaves: Vec<(String, u64, Hash)>,
}

/// Writes, for `epoch`, the files replacing every data file that holds a row `plan` removes
/// (nothing visible yet), and collects the expired events' leaves. Fails if the rows found
/// are not exactly the rows planned.
pub async fn stage(warehouse: &Warehouse, plan: &Plan, epoch: Epoch) -> Result<Applied> {
    let mut applied = Applied::default();
    // Events: only files of days before the latest cutoff can hold expired rows; compaction
    // may have merged them since the plan, so every such file is read.
    if plan.events() > 0 {
        let events = warehouse.table(tables::EVENTS).await?;
        let mut found: BTreeMap<&str, u64> = BTreeMap::new();
        for entry in files_before(&events, plan.events_before_us).await? {
            let mut batches = Vec::new();
            let mut removed = 0u64;
            for batch in read(&events, &entry).await? {
                let cols = EventColumns::of(&batch)?;
                let mut keep = Vec::with_capacity(batch.num_rows());
                for i in 0..batch.num_rows() {
                    let expired =
                        plan.tenants
                            .get_key_value(cols.tenant.value(i))
                            .filter(|(_, t)| {
                                u64::try_from(cols.seq.value(i)).is_ok_and(|s| t.expires(s))
                            });
                    if let Some((tenant, _)) = expired {
                        *found.entry(tenant.as_str()).or_default() += 1;
                        applied.leaves.push((
                            tenant.clone(),
                            cols.seq.value(i) as u64,
                            cols.leaf(i)?,
                        ));
                    }
                    keep.push(expired.is_none());
                }
                removed += keep.iter().filter(|k| !**k).count() as u64;
                batches.push(filter_record_batch(&batch, &BooleanArray::from(keep))?);
            }
            if removed > 0 {
                let staged =
                    rewrite(&events, tables::EVENTS, epoch, &entry, batches, removed).await?;
                applied
                    .merges
                    .entry(tables::EVENTS)
                    .or_default()
                    .push(staged);
            }
        }
        for (tenant, t) in &plan.tenants {
            let n = found.get(tenant.as_str()).copied().unwrap_or(0);
            if n != t.events {
                return Err(Error::Retention {
                    table: tables::EVENTS.into(),
                    detail: format!(
                        "tenant {tenant:?}: {n} expired events found, {} planned",
                        t.events
                    ),
                });
            }
        }
    }
    let quarantine = drop_rows(warehouse, tables::QUARANTINE, epoch, |batch| {
        let q = QuarantineColumns::of(batch)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                let key = (q.source.value(i).to_string(), q.offset.value(i));
                let owner = (!q.tenant.is_null(i)).then(|| q.tenant.value(i));
                !match owner {
                    Some(t) => plan
                        .tenants
                        .get(t)
                        .is_some_and(|p| p.quarantine.contains(&key)),
                    None => plan.unowned_quarantine.contains(&key),
                }
            })
            .collect())
    })
    .await?;
    let vault = drop_rows(warehouse, tables::VAULT, epoch, |batch| {
        let v = VaultColumns::of(batch)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                !plan
                    .tenants
                    .get(v.tenant.value(i))
                    .is_some_and(|t| expires_vault(t, v.kind.value(i), v.reference.value(i)))
            })
            .collect())
    })
    .await?;
    for (name, merges) in [(tables::QUARANTINE, quarantine), (tables::VAULT, vault)] {
        if !merges.is_empty() {
            applied.merges.insert(name, merges);
        }
    }
    applied.leaves.sort();
    Ok(applied)
}

/// The replacements, for `epoch`, of every live file of table `name` holding a row that
/// `keep` (one flag per row of a batch) does not keep.
async fn drop_rows(
    warehouse: &Warehouse,
    name: &'static str,
    epoch: Epoch,
    keep: impl Fn(&RecordBatch) -> Result<Vec<bool>>,
) -> Result<Vec<Staged>> {
    let table = warehouse.table(name).await?;
    let (live, _) = live_files(&table).await?;
    let mut out = Vec::new();
    for entry in live {
        let mut batches = Vec::new();
        let mut removed = 0u64;
        for batch in read(&table, &entry).await? {
            let kept = keep(&batch)?;
            removed += kept.iter().filter(|k| !**k).count() as u64;
            batches.push(filter_record_batch(&batch, &BooleanArray::from(kept))?);
        }
        if removed > 0 {
            out.push(rewrite(&table, name, epoch, &entry, batches, removed).await?);
        }
    }
    Ok(out)
}

/// The replacement of `entry` by its rows in `kept` (none if every row went).
async fn rewrite(
    table: &Table,
    name: &str,
    epoch: Epoch,
    entry: &ManifestEntryRef,
    kept: Vec<RecordBatch>,
    removed: u64,
) -> Result<Staged> {
    let rows: u64 = kept.iter().map(|b| b.num_rows() as u64).sum();
    if rows + removed != entry.record_count() {
        return Err(Error::Retention {
            table: name.into(),
            detail: format!(
                "{} holds {} rows, {rows} kept and {removed} removed",
                entry.file_path(),
                entry.record_count()
            ),
        });
    }
    let mut files = Vec::new();
    if rows > 0 {
        let schema = kept[0].schema();
        let merged = arrow_select::concat::concat_batches(&schema, &kept)?;
        files = crate::sinks::iceberg::write_parquet(
            table,
            &format!("compact-{epoch:012}"),
            merged,
            Some(crate::compaction::Policy::default().row_group_rows),
        )
        .await?;
    }
    let mut sha256 = Vec::with_capacity(files.len());
    for f in &files {
        let digest = crate::sinks::iceberg::data_file_sha256(table, f.file_path()).await?;
        sha256.push((f.file_path().to_string(), digest));
    }
    Ok(Staged {
        record: Compaction {
            inputs: vec![entry.file_path().to_string()],
            outputs: crate::sinks::iceberg::data_files_json(table, &files)?,
            rows,
            expired: removed,
            rebuild: false,
        },
        files,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_consecutive_positions() {
        assert_eq!(
            ranges(&mut [5, 1, 2, 3, 7, 8, 3]),
            vec![[1, 3], [5, 5], [7, 8]]
        );
        assert!(ranges(&mut []).is_empty());
    }

    #[test]
    fn a_plan_expires_exactly_its_ranges() {
        let t = TenantPlan {
            ranges: vec![[0, 9], [20, 20], [30, 39]],
            ..TenantPlan::default()
        };
        let expired: Vec<u64> = (0..50).filter(|s| t.expires(*s)).collect();
        let want: Vec<u64> = (0..10).chain([20]).chain(30..40).collect();
        assert_eq!(expired, want);
    }

    #[test]
    fn cutoffs_count_whole_days_back_and_spare_lifecycle_records() {
        let today = day_start(400 * DAY_US + 12_345);
        assert_eq!(today, 400 * DAY_US);
        let policy = Policy {
            days: Some(180),
            event_type_days: BTreeMap::from([("MODEL_DECISION".to_string(), 30)]),
        };
        assert_eq!(policy.cutoff(today, "TOOL_CALLED"), Some(220 * DAY_US));
        assert_eq!(policy.cutoff(today, "MODEL_DECISION"), Some(370 * DAY_US));
        assert_eq!(policy.cutoff(today, "RETENTION_APPLIED"), None);
        assert_eq!(policy.cutoff(today, "DATA_ERASED"), None);
        assert_eq!(Policy::default().cutoff(today, "TOOL_CALLED"), None);
        assert_eq!(policy.latest_cutoff(today), Some(370 * DAY_US));
    }

    #[test]
    fn vault_entries_follow_their_event_or_record() {
        let t = TenantPlan {
            event_ids: HashSet::from(["e1".to_string()]),
            quarantine: HashSet::from([("file:x#0".to_string(), 42)]),
            ..TenantPlan::default()
        };
        assert!(expires_vault(&t, "content", "e1#prompt#<CONTENT:tok_a>"));
        assert!(!expires_vault(&t, "content", "e2#prompt#<CONTENT:tok_b>"));
        assert!(expires_vault(&t, "quarantine", "quarantine:file:x#0:42"));
        assert!(!expires_vault(&t, "quarantine", "quarantine:file:x#0:43"));
        assert!(!expires_vault(&t, "token", "<EMAIL:tok_c>"));
    }
}
