//! The lake's query engine: DataFusion over Custody's Iceberg tables, one tenant at a time.
//!
//! Every query, from an API endpoint or from SQL, runs in a context built for one tenant
//! ([`LakeEngine::tenant`]). Its only catalog, `custody`, holds one *view* per table of
//! [`TENANT_TABLES`]: the table filtered to `tenant_id = T` in the logical plan itself. The
//! tables are in no catalog, so no SQL text, join, subquery, alias or casing can name them;
//! whatever a query does, it reads the tenant's views.
//!
//! # How a table is read
//! Iceberg plans, DataFusion reads. The files of the table's current snapshot that may hold
//! the tenant's rows come from its manifests (partition `bucket(tenant_id)` and `tenant_id`
//! bounds), parsed once per process ([`Warehouse::tenant_files`]); DataFusion's Parquet scan
//! reads them with the query's filters: row groups and pages pruned by their statistics,
//! filters evaluated while decoding (so a tenant's rows in a shared row group cost their own
//! columns only), Parquet footers kept in the runtime's metadata cache. `tenant_id = T` is a
//! filter of every scan, and applied again above it by the view.
//!
//! The contexts have no `information_schema`, no other catalog, no URL tables, and SQL runs
//! with DDL, DML and statements (`SET`, `COPY`, …) refused. All queries share one memory pool
//! of [`MEMORY_LIMIT`] bytes: a query that needs more fails instead of the process.
//!
//! # Failure modes
//! A table that cannot be loaded, a plan that fails or an unreadable batch is a
//! [`QueryError`]; a query the user wrote wrongly is [`QueryError::Invalid`].

use std::sync::{Arc, OnceLock};

use futures::StreamExt;

use custody_operators::proof_store::ChainHashes;
use custody_operators::sinks::iceberg::{EventQuery, Warehouse};
use custody_operators::verify::EventRow;
use custody_schemas::tables;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::Session;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::provider_as_source;
use datafusion::datasource::view::ViewTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

/// The catalog (and schema) a tenant's queries see.
pub const CATALOG: &str = "custody";

/// The tables a tenant may query, each scoped to the tenant by its `tenant_id` column.
pub const TENANT_TABLES: [&str; 5] = [
    tables::EVENTS,
    tables::VIEW_CHANGES,
    tables::CHECKPOINTS,
    tables::CHAIN_HEADS,
    tables::QUARANTINE,
];

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is not one the engine accepts (bad SQL, unknown table, refused statement).
    #[error("{0}")]
    Invalid(String),
    /// The lake could not be read.
    #[error("lake: {0}")]
    Lake(#[from] custody_operators::error::Error),
    /// Planning or running the query failed.
    #[error("query: {0}")]
    Engine(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                QueryError::Invalid(e.to_string())
            }
            _ => QueryError::Engine(e.to_string()),
        }
    }
}

/// The query engine over one warehouse.
#[derive(Clone)]
pub struct LakeEngine {
    warehouse: Arc<Warehouse>,
    chain: ChainHashes,
}

/// A query context scoped to one tenant.
pub struct TenantLake {
    ctx: SessionContext,
    tenant: String,
    /// Chain hashes by position, from the proof store beside the lake.
    chain: ChainHashes,
}

/// The result of a SQL query: column names and rows (JSON values), at most the row limit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SqlAnswer {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each a JSON object by column name.
    pub rows: Vec<serde_json::Value>,
    /// Whether rows past the limit were left out.
    pub truncated: bool,
}

impl LakeEngine {
    /// The engine over `warehouse`.
    pub fn new(warehouse: Arc<Warehouse>) -> Self {
        let chain = ChainHashes::at(&warehouse.root().join("proofs"));
        LakeEngine { warehouse, chain }
    }

    /// A context whose catalog holds `tenant`'s views of every table of [`TENANT_TABLES`],
    /// at the tables' current snapshots.
    pub async fn tenant(&self, tenant: &str) -> Result<TenantLake, QueryError> {
        self.tenant_tables(tenant, &TENANT_TABLES).await
    }

    /// A context whose catalog holds `tenant`'s views of `names` (of [`TENANT_TABLES`]) only.
    pub async fn tenant_tables(
        &self,
        tenant: &str,
        names: &[&str],
    ) -> Result<TenantLake, QueryError> {
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, CATALOG)
            .with_target_partitions(2);
        // Filters are evaluated while decoding (late materialization): a tenant's few rows in a
        // shared row group cost their own columns, not the whole group's payloads.
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        let ctx = SessionContext::new_with_config_rt(config, runtime()?);
        let schema = Arc::new(MemorySchemaProvider::new());
        for &name in names {
            if !TENANT_TABLES.contains(&name) {
                return Err(QueryError::Invalid(format!("{name} is not a tenant table")));
            }
            let table = self.warehouse.table_current(name).await?;
            let provider: Arc<dyn TableProvider> = Arc::new(TenantTable::new(
                Arc::clone(&self.warehouse),
                table,
                tenant,
            )?);
            schema.register_table(name.to_string(), scoped(name, provider, tenant)?)?;
        }
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog.register_schema(CATALOG, schema)?;
        ctx.register_catalog(CATALOG, catalog);
        Ok(TenantLake {
            ctx,
            tenant: tenant.to_string(),
            chain: self.chain.clone(),
        })
    }
}

/// One tenant's part of a Custody table: the data files of the table's current snapshot that
/// may hold the tenant's rows ([`Warehouse::tenant_files`]), read by DataFusion's Parquet scan
/// (row-group and page pruning, filters pushed into decoding, footers cached by the runtime),
/// with `tenant_id = T` always among the scan's filters.
#[derive(Debug)]
struct TenantTable {
    warehouse: Arc<Warehouse>,
    table: iceberg::table::Table,
    tenant: String,
    schema: datafusion::arrow::datatypes::SchemaRef,
    /// `tenant_id = T`, a filter of every scan.
    tenant_filter: Expr,
}

impl TenantTable {
    fn new(
        warehouse: Arc<Warehouse>,
        table: iceberg::table::Table,
        tenant: &str,
    ) -> Result<Self, QueryError> {
        let schema = iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
            .map_err(|e| QueryError::Engine(e.to_string()))?;
        let tenant_filter = tenant_eq(&schema, tenant)?;
        Ok(TenantTable {
            warehouse,
            table,
            tenant: tenant.to_string(),
            schema: Arc::new(schema),
            tenant_filter,
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for TenantTable {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning and decoding, and applied again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let external = |e: QueryError| DataFusionError::External(Box::new(e));
        let files = self
            .warehouse
            .tenant_files(&self.table, &self.tenant, seq_bounds(filters))
            .await
            .map_err(|e| external(e.into()))?;
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let urls = files
            .iter()
            .map(|f| ListingTableUrl::parse(&f.path))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(&self.schema));
        let mut filters = filters.to_vec();
        filters.push(self.tenant_filter.clone());
        ListingTable::try_new(config)?
            .scan(state, projection, &filters, limit)
            .await
    }
}

/// The positions `filters` (conjuncts) allow, from their bounds on `seq` and lists of it;
/// `None` when they do not bound it.
fn seq_bounds(filters: &[Expr]) -> Option<std::ops::Range<i64>> {
    use datafusion::logical_expr::{BinaryExpr, Operator, expr::InList, utils::split_conjunction};
    let is_seq = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "seq");
    let int = |e: &Expr| match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
        _ => None,
    };
    let mut range: Option<std::ops::Range<i64>> = None;
    let mut narrow = |lo: i64, hi: i64| {
        let r = range.get_or_insert(i64::MIN..i64::MAX);
        *r = r.start.max(lo)..r.end.min(hi);
    };
    for conjunct in filters.iter().flat_map(split_conjunction) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_seq(left) => {
                let Some(v) = int(right) else { continue };
                match op {
                    Operator::Eq => narrow(v, v.saturating_add(1)),
                    Operator::GtEq => narrow(v, i64::MAX),
                    Operator::Gt => narrow(v.saturating_add(1), i64::MAX),
                    Operator::Lt => narrow(i64::MIN, v),
                    Operator::LtEq => narrow(i64::MIN, v.saturating_add(1)),
                    _ => {}
                }
            }
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) if is_seq(expr) => {
                let values: Option<Vec<i64>> = list.iter().map(int).collect();
                if let Some(values) = values
                    && let (Some(lo), Some(hi)) = (values.iter().min(), values.iter().max())
                {
                    narrow(*lo, hi.saturating_add(1));
                }
            }
            _ => {}
        }
    }
    range
}

/// `tenant_id = tenant`, the literal typed as the `tenant_id` column of `schema` is.
fn tenant_eq(
    schema: &datafusion::arrow::datatypes::Schema,
    tenant: &str,
) -> Result<Expr, QueryError> {
    let field = schema.field_with_name("tenant_id");
    let field = field.map_err(|e| QueryError::Engine(e.to_string()))?;
    let tenant = match field.data_type() {
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(tenant.to_string())),
        DataType::Utf8View => ScalarValue::Utf8View(Some(tenant.to_string())),
        _ => ScalarValue::Utf8(Some(tenant.to_string())),
    };
    Ok(col("tenant_id").eq(lit(tenant)))
}

/// Memory every lake query of the process shares; a query past it fails, not the process.
pub const MEMORY_LIMIT: usize = 512 * 1024 * 1024;

/// Parquet footers and page indexes kept for the process's queries (data files are immutable;
/// a footer of a compacted file is tens of KiB).
pub const METADATA_CACHE: usize = 256 * 1024 * 1024;

/// The runtime (and memory pool) of every query context.
fn runtime() -> Result<Arc<RuntimeEnv>, QueryError> {
    static RUNTIME: OnceLock<Arc<RuntimeEnv>> = OnceLock::new();
    if let Some(r) = RUNTIME.get() {
        return Ok(Arc::clone(r));
    }
    let built = RuntimeEnvBuilder::new()
        .with_memory_limit(MEMORY_LIMIT, 1.0)
        .with_metadata_cache_limit(METADATA_CACHE)
        .build_arc()?;
    Ok(Arc::clone(RUNTIME.get_or_init(|| built)))
}

/// `provider` seen through a view that keeps only `tenant`'s rows.
fn scoped(
    name: &str,
    provider: Arc<dyn TableProvider>,
    tenant: &str,
) -> Result<Arc<dyn TableProvider>, QueryError> {
    let filter = tenant_eq(&provider.schema(), tenant)
        .map_err(|e| QueryError::Engine(format!("{name}: {e}")))?;
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)?
        .filter(filter)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// Whether `prev` is the chain hash before `row`: `row.hash = chain_hash(prev, row.leaf)`.
fn links(prev: &[u8; 32], row: &EventRow) -> bool {
    let mut leaf = [0u8; 32];
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&row.leaf_hash, &mut leaf).is_ok()
        && hex::decode_to_slice(&row.hash, &mut hash).is_ok()
        && custody_operators::hashing::chain_hash(prev, &leaf) == hash
}

/// A timestamp literal of the lake's `timestamptz` columns.
fn micros(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(us),
        Some("+00:00".into()),
    ))
}

impl TenantLake {
    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant's events matching `query`, in chain order, at most `query.limit`.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<EventRow>, QueryError> {
        // A page of a chain whose length is known (or of a range of positions) walks windows of positions (growing four
        // times each), each read with `seq` bounds that prune files and row groups, until
        // the page is full: late materialization without a second pass.
        // The walk ends at the chain's end or at the range's, whichever is first.
        let Some(mut end) = query
            .end_seq
            .or(query.seq_range.map(|(_, stop)| stop))
            .filter(|_| query.seqs.is_none() && query.limit < usize::MAX)
        else {
            return self.events_once(query).await;
        };
        let mut start = query.after_seq.map_or(0, |a| a + 1);
        if let Some((first, stop)) = query.seq_range {
            start = start.max(first);
            end = end.min(stop);
        }
        let mut window = (query.limit as u64).saturating_mul(8).max(512);
        let mut rows: Vec<EventRow> = Vec::new();
        while start < end && rows.len() < query.limit {
            let stop = start.saturating_add(window).min(end);
            let part = EventQuery {
                seq_range: Some((start, stop)),
                limit: query.limit - rows.len(),
                end_seq: None,
                ..query.clone()
            };
            rows.extend(self.events_once(&part).await?);
            start = stop;
            window = window.saturating_mul(4);
        }
        rows.truncate(query.limit);
        Ok(rows)
    }

    async fn events_once(&self, query: &EventQuery) -> Result<Vec<EventRow>, QueryError> {
        let mut filters: Vec<Expr> = Vec::new();
        if let Some((start, stop)) = query.seq_range {
            filters.push(col("seq").gt_eq(lit(start as i64)));
            filters.push(col("seq").lt(lit(stop as i64)));
        }
        if let Some(after) = query.after_seq {
            filters.push(col("seq").gt(lit(after as i64)));
        }
        if let Some(t) = &query.event_type {
            filters.push(col("event_type").eq(lit(t.as_str())));
        }
        if query.model_version.is_some() {
            filters.push(col("event_type").eq(lit("MODEL_DECISION")));
        }
        if let Some(a) = &query.agent_id {
            filters.push(col("agent_id").eq(lit(a.as_str())));
        }
        if let Some(u) = &query.user_id {
            filters.push(col("user_id").eq(lit(u.as_str())));
        }
        if let Some(s) = &query.session_id {
            filters.push(col("session_id").eq(lit(s.as_str())));
        }
        if let Some(seqs) = &query.seqs {
            filters.push(col("seq").in_list(seqs.iter().map(|&s| lit(s as i64)).collect(), false));
        }
        if let Some(from) = query.from_us {
            filters.push(col("event_time").gt_eq(micros(from)));
        }
        if let Some(to) = query.to_us {
            filters.push(col("event_time").lt(micros(to)));
        }
        let mut df = self.ctx.table(tables::EVENTS).await?;
        if let Some(all) = filters.into_iter().reduce(Expr::and) {
            df = df.filter(all)?;
        }
        df = df.sort(vec![col("seq").sort(true, false)])?;
        // Filters the lake cannot evaluate (event ids, payload members) are applied to the
        // rows; the page is cut after them.
        let exact = query.event_ids.is_none() && query.model_version.is_none();
        if exact && query.limit < usize::MAX {
            df = df.limit(0, Some(query.limit))?;
        }
        let batches = df.collect().await?;
        let mut rows = custody_operators::sinks::iceberg::event_rows(&batches)?;
        rows.retain(|r| query.matches(&self.tenant, r));
        rows.truncate(query.limit);
        if !query.unlinked {
            self.fill_prev_hashes(&mut rows).await?;
        }
        Ok(rows)
    }

    /// Sets the `prev_hash` of rows whose predecessor in the chain was not among the rows read:
    /// the `hash` at `seq - 1`, from the proof store's chain hashes where they link the row
    /// (`hash = chain_hash(prev, leaf)`), else read from the lake with one query by position.
    async fn fill_prev_hashes(&self, rows: &mut [EventRow]) -> Result<(), QueryError> {
        use datafusion::arrow::array::{FixedSizeBinaryArray, Int64Array};
        let unlinked: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].prev_hash.is_empty() && rows[i].seq > 0)
            .collect();
        if unlinked.is_empty() {
            return Ok(());
        }
        let seqs: Vec<u64> = unlinked.iter().map(|&i| rows[i].seq as u64 - 1).collect();
        match self.chain.get(&self.tenant, &seqs) {
            Ok(stored) => {
                for (&i, prev) in unlinked.iter().zip(stored) {
                    if let Some(prev) = prev
                        && links(&prev, &rows[i])
                    {
                        rows[i].prev_hash = hex::encode(prev);
                    }
                }
            }
            // The lake answers instead.
            Err(e) => tracing::warn!(error = %e, "proof store: chain hashes unreadable"),
        }
        let missing: Vec<Expr> = rows
            .iter()
            .filter(|r| r.prev_hash.is_empty())
            .map(|r| lit(r.seq - 1))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let batches = self
            .ctx
            .table(tables::EVENTS)
            .await?
            .filter(col("seq").in_list(missing, false))?
            .select_columns(&["seq", "hash"])?
            .collect()
            .await?;
        let mut found = std::collections::HashMap::new();
        for batch in &batches {
            let (Some(seqs), Some(hashes)) = (
                batch.column(0).as_any().downcast_ref::<Int64Array>(),
                batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>(),
            ) else {
                return Err(QueryError::Engine("events: seq or hash mistyped".into()));
            };
            for i in 0..batch.num_rows() {
                found.insert(seqs.value(i), hex::encode(hashes.value(i)));
            }
        }
        for r in rows.iter_mut().filter(|r| r.prev_hash.is_empty()) {
            // A predecessor that is not there (a damaged log) links to nothing.
            r.prev_hash = found.remove(&(r.seq - 1)).unwrap_or_default();
        }
        Ok(())
    }

    /// The tenant's checkpoint of tree size `tree_size` (the first, if several were signed at
    /// that size), read with the size as a pushed-down filter.
    pub async fn checkpoint_at(
        &self,
        tree_size: u64,
    ) -> Result<Option<custody_operators::checkpoint::Checkpoint>, QueryError> {
        let df = self
            .ctx
            .table(tables::CHECKPOINTS)
            .await?
            .filter(col("tree_size").eq(lit(tree_size as i64)))?;
        let rows = custody_operators::sinks::iceberg::checkpoint_rows(df.collect().await?)?;
        Ok(rows.into_iter().min_by_key(|c| c.epoch))
    }

    /// Runs read-only `sql` over the tenant's views; at most `max_rows` rows are returned.
    pub async fn sql(&self, sql: &str, max_rows: usize) -> Result<SqlAnswer, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, options).await?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        // Read only as far as the limit (one row more tells that there was more).
        let mut stream = df.execute_stream().await?;
        let (mut batches, mut read) = (Vec::new(), 0usize);
        while read <= max_rows {
            let Some(batch) = stream.next().await.transpose()? else {
                break;
            };
            read += batch.num_rows();
            batches.push(batch);
        }
        drop(stream);
        let mut rows = batches_to_json(&batches)?;
        let truncated = rows.len() > max_rows;
        rows.truncate(max_rows);
        Ok(SqlAnswer {
            columns,
            rows,
            truncated,
        })
    }
}

/// Rows of `batches` as JSON objects (binary as hex, timestamps as RFC 3339).
fn batches_to_json(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, QueryError> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("");
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let formatters: Vec<(ArrayFormatter<'_>, &dyn Array)> = batch
            .columns()
            .iter()
            .map(|c| {
                ArrayFormatter::try_new(c.as_ref(), &options)
                    .map(|f| (f, c.as_ref()))
                    .map_err(|e| QueryError::Engine(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            for (field, (format, array)) in schema.fields().iter().zip(&formatters) {
                let value = if array.is_null(i) {
                    serde_json::Value::Null
                } else {
                    json_value(*array, i, format)
                };
                row.insert(field.name().clone(), value);
            }
            out.push(serde_json::Value::Object(row));
        }
    }
    Ok(out)
}

/// One cell: numbers and booleans as JSON numbers and booleans, anything else as its text.
fn json_value(
    array: &dyn datafusion::arrow::array::Array,
    i: usize,
    format: &datafusion::arrow::util::display::ArrayFormatter<'_>,
) -> serde_json::Value {
    use datafusion::arrow::array::{AsArray, types};
    match array.data_type() {
        DataType::Boolean => array.as_boolean().value(i).into(),
        DataType::Int8 => array.as_primitive::<types::Int8Type>().value(i).into(),
        DataType::Int16 => array.as_primitive::<types::Int16Type>().value(i).into(),
        DataType::Int32 => array.as_primitive::<types::Int32Type>().value(i).into(),
        DataType::Int64 => array.as_primitive::<types::Int64Type>().value(i).into(),
        DataType::UInt8 => array.as_primitive::<types::UInt8Type>().value(i).into(),
        DataType::UInt16 => array.as_primitive::<types::UInt16Type>().value(i).into(),
        DataType::UInt32 => array.as_primitive::<types::UInt32Type>().value(i).into(),
        DataType::UInt64 => array.as_primitive::<types::UInt64Type>().value(i).into(),
        DataType::Float32 => serde_json::Number::from_f64(f64::from(
            array.as_primitive::<types::Float32Type>().value(i),
        ))
        .map_or(serde_json::Value::Null, Into::into),
        DataType::Float64 => {
            serde_json::Number::from_f64(array.as_primitive::<types::Float64Type>().value(i))
                .map_or(serde_json::Value::Null, Into::into)
        }
        _ => format.value(i).to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_bounds_come_from_comparisons_and_lists_only() {
        let seq = || col("seq");
        assert_eq!(
            seq_bounds(&[seq().gt_eq(lit(10i64)).and(seq().lt(lit(20i64)))]),
            Some(10..20)
        );
        assert_eq!(seq_bounds(&[seq().eq(lit(7i64))]), Some(7..8));
        assert_eq!(
            seq_bounds(&[
                seq().gt(lit(3i64)),
                seq().in_list(vec![lit(9i64), lit(2i64), lit(30i64)], false)
            ]),
            Some(4..31)
        );
        assert_eq!(seq_bounds(&[seq().lt_eq(lit(5i64))]), Some(i64::MIN..6));
        // Anything else leaves `seq` unbounded.
        assert_eq!(seq_bounds(&[col("tenant_id").eq(lit("t"))]), None);
        assert_eq!(seq_bounds(&[seq().in_list(vec![lit(1i64)], true)]), None);
        assert_eq!(
            seq_bounds(&[seq().gt(lit(1i64)).or(seq().lt(lit(0i64)))]),
            None
        );
    }
}
