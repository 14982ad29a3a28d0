//! Images as tables: `read_images('dir/' | 'glob' | 'file' [, 'on_error=…'])`
//! and `CREATE EXTERNAL TABLE t STORED AS IMAGES LOCATION '…'`, over every
//! object store.
//!
//! Columns: `path`, `size`, `modified` come from the listing; `format`,
//! `width`, `height` from the file's header (only its first 64 KiB are read
//! unless the header lies further in); `image` is the encoded bytes (read
//! only when selected); `error` says why a file could not be read (with
//! `on_error = 'null'`). A query that selects none of the header columns
//! reads no bytes at all, and `count(*)` reads only the listing (except with
//! `on_error = 'skip'`, where bad files must be found to be left out).
//! Filters on `path`, `size` and `modified` are evaluated on the listing
//! (pushed down as exact), so excluded files are never opened; filters that
//! also use `format` are evaluated on the header, so excluded files are
//! never read further. `exif` comes from the header bytes too (an EXIF
//! block beyond the first 64 KiB reads as NULL unless `image` is selected).
//! Batches hold at most `batch_size` files and, when the bytes are read,
//! about [`BATCH_BYTES`] of them, so memory stays bounded whatever the
//! listing's size.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanArray, RecordBatch, RecordBatchOptions, StringBuilder,
    TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{
    Session, TableFunctionArgs, TableFunctionImpl, TableProvider, TableProviderFactory,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DataFusionError, Result, plan_err, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{CreateExternalTable, Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use quiver_media::arrow_types::{exif_array, exif_data_type, image_field};
use quiver_media::exif::{ExifInfo, read_exif};
use quiver_media::{MediaError, probe_image};

use crate::listing::{SplitArgs, block_on_planning, list_media_files, parse_location, split_args};

/// Bytes read to find an image's header.
const HEADER_BYTES: u64 = 64 * 1024;
/// Bytes of images one batch holds at most (a single larger file still
/// makes a batch of its own).
pub const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Files read at once per partition.
const CONCURRENT_READS: usize = 8;

/// What to do with a file that is not a readable image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the query with an error naming the file (the default).
    #[default]
    Fail,
    /// Keep the row: NULL format, width, height and image; `error` says why.
    Null,
    /// Drop the row; the `skipped_files` metric counts it.
    Skip,
}

impl OnError {
    /// Parses `fail`, `null` or `skip`.
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "fail" => Ok(Self::Fail),
            "null" => Ok(Self::Null),
            "skip" => Ok(Self::Skip),
            other => plan_err!("on_error must be 'fail', 'null' or 'skip', not '{other}'"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Null => "null",
            Self::Skip => "skip",
        }
    }
}

/// The schema of every image table.
pub fn images_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("format", DataType::Utf8, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
        image_field("image"),
        Field::new("exif", exif_data_type(), true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

const COL_FORMAT: usize = 3;
const COL_WIDTH: usize = 4;
const COL_HEIGHT: usize = 5;
const COL_IMAGE: usize = 6;
const COL_EXIF: usize = 7;
const COL_ERROR: usize = 8;

/// A table over the image files at one location.
#[derive(Debug)]
pub struct ImagesTable {
    url: ListingTableUrl,
    on_error: OnError,
    schema: SchemaRef,
}

impl ImagesTable {
    /// A table over `location` (path, prefix ending in `/`, or glob) with
    /// options `on_error`.
    pub fn try_new(location: &str, options: &HashMap<String, String>) -> Result<Self> {
        let mut on_error = OnError::Fail;
        for (key, value) in options {
            match key.trim_start_matches("format.") {
                "on_error" => on_error = OnError::parse(value)?,
                other => {
                    return plan_err!("unknown image table option '{other}' (known: on_error)");
                }
            }
        }
        Ok(Self {
            url: parse_location(location)?,
            on_error,
            schema: images_schema(),
        })
    }
}

#[async_trait]
impl TableProvider for ImagesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if answerable_from_listing(f) || answerable_from_header(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let store_url = self.url.object_store();
        let store = state.runtime_env().object_store(&store_url)?;
        let mut listing = list_media_files(&self.url, store.as_ref());
        // Filters on path, size and modified prune the listing before any
        // file is read; when they are all such filters, a LIMIT can also
        // stop the listing early.
        let predicate = filters
            .iter()
            .filter(|f| answerable_from_listing(f))
            .map(|f| unnormalize_col(f.clone()))
            .reduce(Expr::and)
            .map(|e| {
                let listing_schema = DFSchema::try_from(listing_schema())?;
                state.create_physical_expr(e, &listing_schema)
            })
            .transpose()?;
        // Filters that need the format are checked on each file's header.
        let header_filter = filters
            .iter()
            .filter(|f| answerable_from_header(f))
            .map(|f| unnormalize_col(f.clone()))
            .reduce(Expr::and)
            .map(|e| {
                let header_schema = DFSchema::try_from(header_schema())?;
                state.create_physical_expr(e, &header_schema)
            })
            .transpose()?;
        let stop_at = if filters.iter().all(answerable_from_listing) {
            limit
        } else {
            None
        };
        let mut files = vec![];
        let mut chunk = vec![];
        loop {
            let next = listing.next().await;
            let done = next.is_none();
            if let Some(meta) = next {
                chunk.push(meta.map_err(|e| e.context(format!("listing {}", self.url)))?);
            }
            if chunk.len() >= 1024 || (done && !chunk.is_empty()) {
                files.extend(prune(
                    predicate.as_ref(),
                    &store_url,
                    std::mem::take(&mut chunk),
                )?);
            }
            if let Some(n) = stop_at
                && files.len() >= n
            {
                files.truncate(n);
                break;
            }
            if done {
                break;
            }
        }
        let partitions = state
            .config()
            .target_partitions()
            .clamp(1, files.len().max(1));
        let groups = balance(files, partitions);
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        Ok(Arc::new(ImagesExec::new(
            store_url,
            groups,
            Arc::clone(&self.schema),
            projection,
            self.on_error,
            stop_at,
            header_filter,
        )?))
    }
}

/// Splits files into `partitions` groups of about equal bytes (decoding
/// time follows size), largest first onto the lightest group, so that no
/// core is left with the big files; each group is in path order.
fn balance(mut files: Vec<ObjectMeta>, partitions: usize) -> Vec<Vec<ObjectMeta>> {
    files.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then_with(|| a.location.cmp(&b.location))
    });
    let mut groups: Vec<(u64, Vec<ObjectMeta>)> = vec![(0, vec![]); partitions.max(1)];
    for f in files {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(bytes, g)| (*bytes, g.len())) {
            lightest.0 += f.size.max(1);
            lightest.1.push(f);
        }
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_by(|a, b| a.location.cmp(&b.location));
            g
        })
        .collect()
}

/// Columns a filter may use to be answered from the listing alone.
const LISTING_COLUMNS: [&str; 3] = ["path", "size", "modified"];

/// The listing's part of [`images_schema`].
fn listing_schema() -> Schema {
    let all = images_schema();
    Schema::new(all.fields()[..LISTING_COLUMNS.len()].to_vec())
}

/// The header's part of [`images_schema`]: the listing and `format`.
fn header_schema() -> Schema {
    let all = images_schema();
    Schema::new(all.fields()[..=COL_FORMAT].to_vec())
}

/// True when `expr` uses `format` and otherwise only listing columns.
fn answerable_from_header(expr: &Expr) -> bool {
    let cols = expr.column_refs();
    cols.iter().any(|c| c.name == "format")
        && cols
            .iter()
            .all(|c| c.name == "format" || LISTING_COLUMNS.contains(&c.name.as_str()))
}

/// True when `expr` uses only `path`, `size` and `modified`.
fn answerable_from_listing(expr: &Expr) -> bool {
    let cols = expr.column_refs();
    !cols.is_empty()
        && cols
            .iter()
            .all(|c| LISTING_COLUMNS.contains(&c.name.as_str()))
}

/// Keeps the files for which `predicate` (over the listing columns) is true.
fn prune(
    predicate: Option<&Arc<dyn PhysicalExpr>>,
    store_url: &ObjectStoreUrl,
    files: Vec<ObjectMeta>,
) -> Result<Vec<ObjectMeta>> {
    let Some(predicate) = predicate else {
        return Ok(files);
    };
    let rows: Vec<Row> = files.into_iter().map(Row::listed).collect();
    let columns = (0..LISTING_COLUMNS.len())
        .map(|c| build_column(c, store_url, &rows))
        .collect();
    let batch = RecordBatch::try_new(Arc::new(listing_schema()), columns)?;
    let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Internal("a filter did not return booleans".into()))?;
    Ok(rows
        .into_iter()
        .zip(mask.iter())
        .filter(|(_, keep)| *keep == Some(true))
        .map(|(r, _)| r.meta)
        .collect())
}

/// What a scan must read from each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// The listing is enough.
    Nothing,
    /// The header: format and dimensions.
    Header,
    /// The whole file.
    Everything,
}

/// Scans image files: one partition per group of files, batches of
/// `batch_size` rows, a few files read concurrently.
#[derive(Debug)]
pub struct ImagesExec {
    store_url: ObjectStoreUrl,
    groups: Arc<Vec<Vec<ObjectMeta>>>,
    projection: Vec<usize>,
    projected: SchemaRef,
    on_error: OnError,
    limit: Option<usize>,
    /// Filters on `format` (and listing columns), checked on each header.
    header_filter: Option<Arc<dyn PhysicalExpr>>,
    reads: Reads,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ImagesExec {
    fn new(
        store_url: ObjectStoreUrl,
        groups: Vec<Vec<ObjectMeta>>,
        schema: SchemaRef,
        projection: Vec<usize>,
        on_error: OnError,
        limit: Option<usize>,
        header_filter: Option<Arc<dyn PhysicalExpr>>,
    ) -> Result<Self> {
        let projected = project_schema(&schema, Some(&projection))?;
        let wants = |c: usize| projection.contains(&c);
        let reads = if wants(COL_IMAGE) {
            Reads::Everything
        } else if [COL_FORMAT, COL_WIDTH, COL_HEIGHT, COL_EXIF, COL_ERROR]
            .iter()
            .any(|c| wants(*c))
            || header_filter.is_some()
            // Skipping bad files needs their headers even for count(*).
            || on_error == OnError::Skip
        {
            Reads::Header
        } else {
            Reads::Nothing
        };
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&projected)),
            Partitioning::UnknownPartitioning(groups.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            store_url,
            groups: Arc::new(groups),
            projection,
            projected,
            on_error,
            limit,
            header_filter,
            reads,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for ImagesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let files: usize = self.groups.iter().map(Vec::len).sum();
        let cols: Vec<&str> = self
            .projected
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "ImagesExec: files={files}, projection=[{}], reads={}, on_error={}",
            cols.join(", "),
            match self.reads {
                Reads::Nothing => "listing",
                Reads::Header => "header",
                Reads::Everything => "file",
            },
            self.on_error.name()
        )?;
        if let Some(e) = &self.header_filter {
            write!(f, ", header_filter={e}")?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ImagesExec {
    fn name(&self) -> &str {
        "ImagesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        match &self.header_filter {
            Some(e) => f(e),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            plan_err!("ImagesExec has no children")
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let files = self
            .groups
            .get(partition)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("no partition {partition}")))?;
        let store = context.runtime_env().object_store(&self.store_url)?;
        let batch_size = context.session_config().batch_size();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let skipped = MetricBuilder::new(&self.metrics).counter("skipped_files", partition);
        let scan = Arc::new(PartitionScan {
            store,
            store_url: self.store_url.clone(),
            projection: self.projection.clone(),
            projected: Arc::clone(&self.projected),
            on_error: self.on_error,
            reads: self.reads,
            header_filter: self.header_filter.clone(),
            wants_exif: self.projection.contains(&COL_EXIF),
            skipped,
        });
        let limit = self.limit.unwrap_or(usize::MAX);
        let chunks = chunk_files(files, batch_size, self.reads == Reads::Everything);
        let stream = futures::stream::iter(chunks)
            .then(move |chunk| {
                let scan = Arc::clone(&scan);
                async move { scan.batch(chunk).await }
            })
            .scan(0usize, move |emitted, batch| {
                let out = match batch {
                    Ok(_) if *emitted >= limit => None,
                    Ok(b) => {
                        let take = b.num_rows().min(limit - *emitted);
                        *emitted += take;
                        Some(Ok(b.slice(0, take)))
                    }
                    Err(e) => Some(Err(e)),
                };
                futures::future::ready(out)
            })
            .inspect_ok(move |b| baseline.record_output(b.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.projected),
            stream,
        )))
    }
}

/// Splits a partition's files into batches of at most `batch_size` files
/// and, when `bytes` are read, about [`BATCH_BYTES`].
fn chunk_files(files: Vec<ObjectMeta>, batch_size: usize, bytes: bool) -> Vec<Vec<ObjectMeta>> {
    let mut chunks = vec![];
    let mut chunk = vec![];
    let mut held = 0u64;
    for f in files {
        if !chunk.is_empty()
            && (chunk.len() >= batch_size || (bytes && held + f.size > BATCH_BYTES))
        {
            chunks.push(std::mem::take(&mut chunk));
            held = 0;
        }
        held += f.size;
        chunk.push(f);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// One file's row before projection.
struct Row {
    meta: ObjectMeta,
    format: Option<&'static str>,
    width: Option<u32>,
    height: Option<u32>,
    bytes: Option<bytes::Bytes>,
    exif: Option<ExifInfo>,
    error: Option<String>,
}

impl Row {
    /// A row with only the listing's columns filled.
    fn listed(meta: ObjectMeta) -> Self {
        Self {
            meta,
            format: None,
            width: None,
            height: None,
            bytes: None,
            exif: None,
            error: None,
        }
    }
}

/// What one partition needs to read and build its batches.
struct PartitionScan {
    store: Arc<dyn ObjectStore>,
    store_url: ObjectStoreUrl,
    projection: Vec<usize>,
    projected: SchemaRef,
    on_error: OnError,
    reads: Reads,
    header_filter: Option<Arc<dyn PhysicalExpr>>,
    wants_exif: bool,
    skipped: Count,
}

impl PartitionScan {
    /// The file's address for messages: a local path or a URL.
    fn display_path(&self, meta: &ObjectMeta) -> String {
        file_address(&self.store_url, &meta.location)
    }

    /// Reads one file as far as the query needs; `None` when a header
    /// filter leaves it out.
    async fn read(&self, meta: ObjectMeta) -> Result<Option<Row>> {
        let mut row = Row::listed(meta);
        if self.reads == Reads::Nothing {
            return Ok(Some(row));
        }
        let path = self.display_path(&row.meta);
        let io = |e: object_store::Error| {
            DataFusionError::ObjectStore(Box::new(e)).context(format!("reading {path}"))
        };
        let get_all = || async {
            self.store
                .get(&row.meta.location)
                .await
                .map_err(io)?
                .bytes()
                .await
                .map_err(io)
        };
        // Read the whole file at once when it is needed and no header
        // filter may spare it, or when it is small anyway.
        let mut whole = (self.reads == Reads::Everything && self.header_filter.is_none())
            || row.meta.size <= HEADER_BYTES;
        let mut data = if whole {
            get_all().await?
        } else {
            self.store
                .get_range(&row.meta.location, 0..HEADER_BYTES)
                .await
                .map_err(io)?
        };
        let mut probed = probe_image(&data);
        if !whole && matches!(probed, Err(MediaError::Corrupt { .. })) {
            // The header may lie past the first bytes (large EXIF blocks).
            data = get_all().await?;
            whole = true;
            probed = probe_image(&data);
        }
        match probed {
            Ok(info) => {
                row.format = Some(info.format.name());
                row.width = Some(info.width);
                row.height = Some(info.height);
            }
            Err(e) => match self.on_error {
                OnError::Fail => {
                    return Err(DataFusionError::External(Box::new(e))
                        .context(format!("reading image {path} (on_error=fail; use 'on_error=null' or 'on_error=skip' to go on)")));
                }
                OnError::Null | OnError::Skip => row.error = Some(e.to_string()),
            },
        }
        if let Some(filter) = &self.header_filter
            && !self.passes(filter, &row)?
        {
            return Ok(None);
        }
        if row.error.is_none() {
            if self.reads == Reads::Everything && !whole {
                data = get_all().await?;
            }
            if self.wants_exif {
                row.exif = read_exif(&data);
            }
            if self.reads == Reads::Everything {
                row.bytes = Some(data);
            }
        }
        Ok(Some(row))
    }

    /// Evaluates a header filter on one file's row.
    fn passes(&self, filter: &Arc<dyn PhysicalExpr>, row: &Row) -> Result<bool> {
        let rows = std::slice::from_ref(row);
        let columns = (0..=COL_FORMAT)
            .map(|c| build_column(c, &self.store_url, rows))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(header_schema()), columns)?;
        let mask = filter.evaluate(&batch)?.into_array(1)?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("a filter did not return booleans".into()))?;
        Ok(mask.is_valid(0) && mask.value(0))
    }

    /// Reads a chunk of files and builds one batch.
    async fn batch(&self, chunk: Vec<ObjectMeta>) -> Result<RecordBatch> {
        let rows: Vec<Option<Row>> = futures::stream::iter(chunk)
            .map(|meta| self.read(meta))
            .buffered(CONCURRENT_READS)
            .try_collect()
            .await?;
        let rows: Vec<Row> = rows
            .into_iter()
            .flatten()
            .filter(|r| {
                let drop = self.on_error == OnError::Skip && r.error.is_some();
                if drop {
                    self.skipped.add(1);
                }
                !drop
            })
            .collect();
        let columns: Vec<ArrayRef> = self
            .projection
            .iter()
            .map(|c| build_column(*c, &self.store_url, &rows))
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.projected),
            columns,
            &options,
        )?)
    }
}

/// A file's address as the `path` column shows it and `url_download`
/// reads it back: an absolute local path, or the store's URL and the key.
pub fn file_address(store_url: &ObjectStoreUrl, location: &object_store::path::Path) -> String {
    let base = store_url.as_str();
    if base.starts_with("file://") {
        format!("/{location}")
    } else {
        format!("{base}{location}")
    }
}

fn build_column(col: usize, store_url: &ObjectStoreUrl, rows: &[Row]) -> ArrayRef {
    match col {
        0 => {
            let mut b = StringBuilder::new();
            for r in rows {
                b.append_value(file_address(store_url, &r.meta.location));
            }
            Arc::new(b.finish())
        }
        1 => {
            let mut b = UInt64Builder::new();
            for r in rows {
                b.append_value(r.meta.size);
            }
            Arc::new(b.finish())
        }
        2 => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            for r in rows {
                b.append_value(r.meta.last_modified.timestamp_micros());
            }
            Arc::new(b.finish())
        }
        COL_FORMAT => {
            let mut b = StringBuilder::new();
            for r in rows {
                b.append_option(r.format);
            }
            Arc::new(b.finish())
        }
        COL_WIDTH | COL_HEIGHT => {
            let mut b = UInt32Builder::new();
            for r in rows {
                b.append_option(if col == COL_WIDTH { r.width } else { r.height });
            }
            Arc::new(b.finish())
        }
        COL_IMAGE => {
            let mut b = BinaryBuilder::new();
            for r in rows {
                match &r.bytes {
                    Some(data) => b.append_value(data),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        COL_EXIF => {
            let values: Vec<Option<ExifInfo>> = rows.iter().map(|r| r.exif.clone()).collect();
            Arc::new(exif_array(&values))
        }
        _ => {
            let mut b = StringBuilder::new();
            for r in rows {
                b.append_option(r.error.as_deref());
            }
            Arc::new(b.finish())
        }
    }
}

/// `read_images(location [, 'on_error=fail|null|skip'])`.
#[derive(Debug)]
pub struct ReadImagesFunction;

impl TableFunctionImpl for ReadImagesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let SplitArgs { locations, options } = split_args("read_images", args.exprs())?;
        let location = match locations.as_slice() {
            [one] => one.clone(),
            [] => {
                return plan_err!("read_images needs a location, e.g. read_images('photos/*.jpg')");
            }
            [_, second, ..] => {
                return plan_err!("read_images takes one location, got a second: '{second}'");
            }
        };
        let options: HashMap<String, String> = options.into_iter().collect();
        let table = ImagesTable::try_new(&location, &options)?;
        // Fail at planning, not mid-query, when the location cannot be listed.
        let state = args.session();
        block_on_planning(async {
            let store = state.runtime_env().object_store(table.url.object_store())?;
            let mut files = list_media_files(&table.url, store.as_ref());
            match files.next().await {
                Some(Err(e)) => Err(e),
                None => match table.url.get_glob() {
                    Some(glob) => plan_err!("No files found at {} matching {glob}", table.url),
                    None => plan_err!("No files found at {}", table.url),
                },
                Some(Ok(_)) => Ok(()),
            }
        })
        .map_err(|e| e.context(format!("reading {location}")))?;
        Ok(Arc::new(table))
    }
}

/// `CREATE EXTERNAL TABLE t STORED AS IMAGES LOCATION '…' [OPTIONS ('on_error' 'skip')]`.
#[derive(Debug, Default)]
pub struct ImagesTableFactory;

#[async_trait]
impl TableProviderFactory for ImagesTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let [location] = cmd.locations.as_slice() else {
            return plan_err!("an IMAGES table takes one LOCATION");
        };
        Ok(Arc::new(ImagesTable::try_new(location, &cmd.options)?))
    }
}
