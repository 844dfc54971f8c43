//! How Custody's tables are laid out in the lake: partition specs and partitioned writes.
//!
//! `custody.events` is partitioned by `bucket[8](tenant_id)` and `day(event_time)`, and
//! `custody.view_changes` by `bucket[8](tenant_id)`: a tenant's query reads the files of its
//! bucket only (Iceberg projects `tenant_id = T` onto the bucket, so whole manifests' worth of
//! files are pruned before a data file is opened), and retention can drop whole days. Rows
//! inside a file stay in `(tenant, seq)` order, so the row groups' statistics prune further.
//! The other tables are small and unpartitioned.
//!
//! Buckets rather than one partition per tenant: an epoch writes one file per partition it
//! touches, so a thousand tenants would mean a thousand files per epoch; eight buckets keep an
//! epoch's file count small while compaction ([`crate::compaction`]) merges each partition's
//! epoch files into few large ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, Int32Array, RecordBatch, UInt32Array};
use iceberg::spec::{
    Literal, PartitionKey, PartitionSpec, PrimitiveLiteral, Schema, Struct, Transform,
    UnboundPartitionSpec,
};
use iceberg::transform::create_transform_function;

use crate::error::{Error, Result};
use custody_schemas::tables;

/// Buckets of `tenant_id` in the partitioned tables.
pub const TENANT_BUCKETS: u32 = 8;

/// The partition spec Custody gives table `name` (unpartitioned for the small tables).
pub fn partition_spec(name: &str) -> Result<UnboundPartitionSpec> {
    let fields: &[(i32, &str, Transform)] = match name {
        tables::EVENTS => &[
            (1, "tenant_bucket", Transform::Bucket(TENANT_BUCKETS)),
            (10, "event_day", Transform::Day),
        ],
        tables::VIEW_CHANGES => &[(2, "tenant_bucket", Transform::Bucket(TENANT_BUCKETS))],
        _ => &[],
    };
    let mut spec = UnboundPartitionSpec::builder();
    for (source_id, name, transform) in fields {
        spec = spec.add_partition_field(*source_id, *name, *transform)?;
    }
    Ok(spec.build())
}

/// The partition spec as `(source field id, name, transform)` per field, to compare a table's
/// spec with the one this version writes.
pub fn spec_layout(spec: &PartitionSpec) -> Vec<(i32, String, String)> {
    spec.fields()
        .iter()
        .map(|f| (f.source_id, f.name.clone(), f.transform.to_string()))
        .collect()
}

/// The same for an unbound spec.
pub fn unbound_layout(spec: &UnboundPartitionSpec) -> Vec<(i32, String, String)> {
    spec.fields()
        .iter()
        .map(|f| (f.source_id, f.name.clone(), f.transform.to_string()))
        .collect()
}

/// `batch` split by partition of `spec`: each part with its partition key, rows in their
/// order within a part, parts in partition order. An unpartitioned spec gives the batch whole
/// with no key.
pub fn split_by_partition(
    spec: &PartitionSpec,
    schema: &Arc<Schema>,
    batch: RecordBatch,
) -> Result<Vec<(Option<PartitionKey>, RecordBatch)>> {
    if spec.is_unpartitioned() {
        return Ok(vec![(None, batch)]);
    }
    let mut values: Vec<Int32Array> = Vec::with_capacity(spec.fields().len());
    for field in spec.fields() {
        let source = schema.field_by_id(field.source_id).ok_or_else(|| {
            Error::SinkStopped(format!(
                "partition source field {} is gone",
                field.source_id
            ))
        })?;
        let column = batch.column_by_name(&source.name).ok_or_else(|| {
            Error::SinkStopped(format!(
                "partition source column {} is missing",
                source.name
            ))
        })?;
        let transformed = create_transform_function(&field.transform)?.transform(column.clone())?;
        let ints = arrow_cast_int32(transformed.as_ref())?;
        values.push(ints);
    }
    let mut parts: BTreeMap<Vec<Option<i32>>, Vec<u32>> = BTreeMap::new();
    let mut key = Vec::with_capacity(values.len());
    for row in 0..batch.num_rows() {
        key.clear();
        key.extend(
            values
                .iter()
                .map(|v| (!v.is_null(row)).then(|| v.value(row))),
        );
        match parts.get_mut(&key) {
            Some(rows) => rows.push(row as u32),
            None => {
                parts.insert(key.clone(), vec![row as u32]);
            }
        }
    }
    let single = parts.len() == 1;
    let mut out = Vec::with_capacity(parts.len());
    for (key, rows) in parts {
        let data = Struct::from_iter(
            key.into_iter()
                .map(|v| v.map(|v| Literal::Primitive(PrimitiveLiteral::Int(v)))),
        );
        let part = if single {
            batch.clone()
        } else {
            arrow_select::take::take_record_batch(&batch, &UInt32Array::from(rows))?
        };
        out.push((
            Some(PartitionKey::new(spec.clone(), schema.clone(), data)),
            part,
        ));
    }
    Ok(out)
}

/// A transform's output (Int32 for buckets, Date32 for days) as Int32 values.
fn arrow_cast_int32(array: &dyn Array) -> Result<Int32Array> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Int32Type};
    if let Some(a) = array.as_primitive_opt::<Int32Type>() {
        return Ok(a.clone());
    }
    if let Some(a) = array.as_primitive_opt::<Date32Type>() {
        return Ok(a.reinterpret_cast::<Int32Type>());
    }
    Err(Error::SinkStopped(format!(
        "unexpected partition value type {}",
        array.data_type()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::arrow::arrow_schema_to_schema;

    fn events_spec() -> (PartitionSpec, Arc<Schema>) {
        let schema =
            Arc::new(arrow_schema_to_schema(&tables::events_schema()).expect("iceberg schema"));
        let spec = partition_spec(tables::EVENTS)
            .expect("spec")
            .bind(schema.clone())
            .expect("bound");
        (spec, schema)
    }

    #[test]
    fn buckets_are_icebergs_murmur3() {
        // The spec's reference value: bucket(N, "iceberg") uses murmur3_x86_32 = 1210000089.
        let f = create_transform_function(&Transform::Bucket(TENANT_BUCKETS)).expect("bucket");
        let out = f
            .transform_literal(&iceberg::spec::Datum::string("iceberg"))
            .expect("transform")
            .expect("value");
        assert_eq!(
            out,
            iceberg::spec::Datum::int(1_210_000_089 % TENANT_BUCKETS as i32)
        );
    }

    #[test]
    fn small_tables_are_unpartitioned() {
        for name in tables::ALL_TABLES {
            let spec = partition_spec(name).expect("spec");
            let partitioned = matches!(name, tables::EVENTS | tables::VIEW_CHANGES);
            assert_eq!(!spec.fields().is_empty(), partitioned, "{name}");
        }
        let (spec, _) = events_spec();
        assert_eq!(spec.fields().len(), 2);
    }
}
