//! What every media table (images, audio) shares: the `on_error` policy,
//! the listing columns (`path`, `size`, `modified`) and filters on them
//! evaluated before any file is opened, files balanced over partitions by
//! bytes, batches bounded in files and bytes, a LIMIT that stops reading,
//! and the planning-time check that a location has files.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatchOptions;
use datafusion::common::project_schema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use object_store::{ObjectStore, ObjectStoreExt};
use quiver_media::MediaError;
use quiver_settings::QuiverSettings;
use quiver_settings::progress::StatementProgress;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanArray, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result, plan_err};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::BaselineMetrics;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::ObjectMeta;

use async_trait::async_trait;
use datafusion::catalog::{
    TableFunctionArgs, TableFunctionImpl, TableProvider, TableProviderFactory,
};
use datafusion::datasource::TableType;
use datafusion::logical_expr::CreateExternalTable;

use crate::listing::{SplitArgs, block_on_planning, list_media_files, parse_location, split_args};
use crate::shared_chunks::ChunkSlot;

/// What to do with a file that cannot be read as the table's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the query with an error naming the file (the default).
    #[default]
    Fail,
    /// Keep the row: NULL header columns and bytes; `error` says why.
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

    /// The option's value as written.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Null => "null",
            Self::Skip => "skip",
        }
    }
}

/// Parses a media table's options: only `on_error` is known.
pub fn parse_options<'a>(
    kind: &str,
    options: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<OnError> {
    let mut on_error = OnError::Fail;
    for (key, value) in options {
        match key.trim_start_matches("format.") {
            "on_error" => on_error = OnError::parse(value)?,
            other => {
                return plan_err!("unknown {kind} table option '{other}' (known: on_error)");
            }
        }
    }
    Ok(on_error)
}

/// Columns a filter may use to be answered from the listing alone; every
/// media table starts with them, followed by `format`.
pub const LISTING_COLUMNS: [&str; 3] = ["path", "size", "modified"];
/// The index of `format` in every media table.
pub const COL_FORMAT: usize = 3;

/// The listing's columns.
pub fn listing_fields() -> Vec<Field> {
    vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]
}

fn listing_schema() -> Schema {
    Schema::new(listing_fields())
}

/// The listing's columns and `format`: what a header filter sees.
fn header_schema() -> Schema {
    let mut fields = listing_fields();
    fields.push(Field::new("format", DataType::Utf8, true));
    Schema::new(fields)
}

/// True when `expr` uses only `path`, `size` and `modified`.
pub fn answerable_from_listing(expr: &Expr) -> bool {
    let cols = expr.column_refs();
    !cols.is_empty()
        && cols
            .iter()
            .all(|c| LISTING_COLUMNS.contains(&c.name.as_str()))
}

/// True when `expr` uses `format` and otherwise only listing columns.
pub fn answerable_from_header(expr: &Expr) -> bool {
    let cols = expr.column_refs();
    cols.iter().any(|c| c.name == "format")
        && cols
            .iter()
            .all(|c| c.name == "format" || LISTING_COLUMNS.contains(&c.name.as_str()))
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

/// Builds listing column `col` (0 path, 1 size, 2 modified) for `metas`.
pub fn listing_column<'a>(
    col: usize,
    store_url: &ObjectStoreUrl,
    metas: impl Iterator<Item = &'a ObjectMeta>,
) -> ArrayRef {
    match col {
        0 => {
            let mut b = StringBuilder::new();
            for m in metas {
                b.append_value(file_address(store_url, &m.location));
            }
            Arc::new(b.finish())
        }
        1 => {
            let mut b = UInt64Builder::new();
            for m in metas {
                b.append_value(m.size);
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            for m in metas {
                b.append_value(m.last_modified.timestamp_micros());
            }
            Arc::new(b.finish())
        }
    }
}

fn evaluate_mask(predicate: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<Vec<bool>> {
    let mask = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Internal("a filter did not return booleans".into()))?;
    Ok(mask.iter().map(|keep| keep == Some(true)).collect())
}

/// Filters on `format` (and listing columns) as one physical predicate,
/// checked on each file's header by [`passes_header_filter`].
pub fn header_filter(
    state: &dyn Session,
    filters: &[Expr],
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    filters
        .iter()
        .filter(|f| answerable_from_header(f))
        .map(|f| unnormalize_col(f.clone()))
        .reduce(Expr::and)
        .map(|e| {
            let schema = DFSchema::try_from(header_schema())?;
            state.create_physical_expr(e, &schema)
        })
        .transpose()
}

/// Whether one file with `format` passes a [`header_filter`].
pub fn passes_header_filter(
    filter: &Arc<dyn PhysicalExpr>,
    store_url: &ObjectStoreUrl,
    meta: &ObjectMeta,
    format: Option<&str>,
) -> Result<bool> {
    let mut columns: Vec<ArrayRef> = (0..LISTING_COLUMNS.len())
        .map(|c| listing_column(c, store_url, std::iter::once(meta)))
        .collect();
    let mut f = StringBuilder::new();
    f.append_option(format);
    columns.push(Arc::new(f.finish()));
    let batch = RecordBatch::try_new(Arc::new(header_schema()), columns)?;
    Ok(evaluate_mask(filter, &batch)?.first() == Some(&true))
}

/// Lists the files at `url`, keeping those that pass the filters on
/// listing columns. When all filters are such filters, a LIMIT stops the
/// listing early and is returned to stop the scan too.
pub async fn list_pruned(
    state: &dyn Session,
    url: &ListingTableUrl,
    filters: &[Expr],
    limit: Option<usize>,
    listed: Option<Vec<ObjectMeta>>,
) -> Result<(Vec<ObjectMeta>, Option<usize>)> {
    let store_url = url.object_store();
    let store = state.runtime_env().object_store(&store_url)?;
    let mut listing = match listed {
        Some(files) => futures::stream::iter(files.into_iter().map(Ok)).boxed(),
        None => list_media_files(url, store.as_ref()),
    };
    let predicate = filters
        .iter()
        .filter(|f| answerable_from_listing(f))
        .map(|f| unnormalize_col(f.clone()))
        .reduce(Expr::and)
        .map(|e| {
            let schema = DFSchema::try_from(listing_schema())?;
            state.create_physical_expr(e, &schema)
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
            chunk.push(meta.map_err(|e| e.context(format!("listing {url}")))?);
        }
        if chunk.len() >= 1024 || (done && !chunk.is_empty()) {
            let batch = std::mem::take(&mut chunk);
            match &predicate {
                None => files.extend(batch),
                Some(p) => {
                    let columns = (0..LISTING_COLUMNS.len())
                        .map(|c| listing_column(c, &store_url, batch.iter()))
                        .collect();
                    let rb = RecordBatch::try_new(Arc::new(listing_schema()), columns)?;
                    let keep = evaluate_mask(p, &rb)?;
                    files.extend(
                        batch
                            .into_iter()
                            .zip(keep)
                            .filter(|(_, k)| *k)
                            .map(|(m, _)| m),
                    );
                }
            }
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
    Ok((files, stop_at))
}

/// Splits files into `partitions` groups of about equal work (`cost` of
/// each file: decoding time follows size), largest first onto the lightest
/// group, so that no core is left with the big files; each group is in
/// path order.
pub fn balance(
    files: Vec<ObjectMeta>,
    partitions: usize,
    cost: impl Fn(&ObjectMeta) -> u64,
) -> Vec<Vec<ObjectMeta>> {
    let mut files: Vec<(u64, ObjectMeta)> = files.into_iter().map(|f| (cost(&f), f)).collect();
    files.sort_by(|(ca, a), (cb, b)| cb.cmp(ca).then_with(|| a.location.cmp(&b.location)));
    let mut groups: Vec<(u64, Vec<ObjectMeta>)> = vec![(0, vec![]); partitions.max(1)];
    for (c, f) in files {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(work, g)| (*work, g.len())) {
            lightest.0 += c.max(1);
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

/// Bytes of media one batch holds at most (a single larger file still
/// makes a batch of its own).
pub const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// The least a batch's byte budget is cut to under a memory limit.
const MIN_BATCH_BYTES: u64 = 1024 * 1024;

/// Bytes of media one batch of a scan of `partitions` partitions holds at
/// most: `wanted`, or less under a memory limit, so that the batches the
/// scan holds at once (two per partition: the one downstream and the one
/// being read ahead) take at most a quarter of it. With a 512 MB limit
/// and 16 partitions, 4 MiB instead of 16: 128 MiB of encoded media in
/// flight instead of 512.
pub fn batch_bytes_under(wanted: u64, limit: &MemoryLimit, partitions: usize) -> u64 {
    match limit {
        MemoryLimit::Finite(limit) => {
            let share = *limit as u64 / (8 * partitions.max(1) as u64);
            wanted.min(share.max(MIN_BATCH_BYTES))
        }
        MemoryLimit::Infinite | MemoryLimit::Unknown => wanted,
    }
}

/// Splits a partition's files into batches of at most `batch_size` files
/// and, when the bytes are read, about `bytes` of them.
pub fn chunk_files(
    files: Vec<ObjectMeta>,
    batch_size: usize,
    bytes: Option<u64>,
) -> Vec<Vec<ObjectMeta>> {
    let mut chunks = vec![];
    let mut chunk = vec![];
    let mut held = 0u64;
    for f in files {
        if !chunk.is_empty()
            && (chunk.len() >= batch_size || bytes.is_some_and(|max| held + f.size > max))
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

/// The stream of one partition: `batch` builds a batch from each chunk of
/// files `chunks` gives, reading one chunk ahead, and the stream ends once
/// `limit` rows are out.
///
/// With `reservation` (a scan that reads whole files), the bytes of the
/// chunks being read are reserved in the memory pool from the moment a
/// chunk's reading starts until its batch is handed downstream (where
/// the operator that holds it on accounts for it, as `InferenceExec`
/// does): the pool sees the scan's read-ahead, and other operators
/// under the same limit make room for it. The reservation only counts,
/// never refuses: the read-ahead is already bounded by
/// [`batch_bytes_under`] the limit.
pub fn partition_stream(
    schema: SchemaRef,
    chunks: impl Iterator<Item = Vec<ObjectMeta>> + Send + 'static,
    limit: Option<usize>,
    baseline: BaselineMetrics,
    reservation: Option<MemoryReservation>,
    batch: impl Fn(Vec<ObjectMeta>) -> BoxFuture<'static, Result<RecordBatch>> + Send + 'static,
) -> SendableRecordBatchStream {
    let limit = limit.unwrap_or(usize::MAX);
    let reservation = reservation.map(Arc::new);
    let reading = reservation.clone();
    // One chunk read ahead: the next batch's files are being read (on the
    // store's I/O threads) while the current one is decoded downstream.
    let stream = futures::stream::iter(chunks)
        .map(move |chunk| {
            let bytes = reading.as_ref().map_or(0, |r| {
                let bytes = chunk
                    .iter()
                    .map(|f| usize::try_from(f.size).unwrap_or(usize::MAX))
                    .fold(0usize, usize::saturating_add);
                r.grow(bytes);
                bytes
            });
            batch(chunk).map(move |b| (b, bytes))
        })
        .buffered(2)
        .scan(0usize, move |emitted, (batch, bytes)| {
            if let Some(r) = &reservation {
                r.shrink(bytes);
            }
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
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// The one location a `read_*` table function was given.
pub fn single_location(function: &str, example: &str, locations: &[String]) -> Result<String> {
    match locations {
        [one] => Ok(one.clone()),
        [] => plan_err!("{function} needs a location, e.g. {function}('{example}')"),
        [_, second, ..] => {
            plan_err!("{function} takes one location, got a second: '{second}'")
        }
    }
}

/// Lists `url` at planning, so that a location that cannot be listed or
/// holds no files fails before the query runs; the listing is kept for
/// the statement's scan ([`PlannedListing`]) rather than made twice.
pub fn list_location(
    state: &dyn Session,
    url: &ListingTableUrl,
    location: &str,
) -> Result<Vec<ObjectMeta>> {
    block_on_planning(async {
        let store = state.runtime_env().object_store(url.object_store())?;
        let files: Vec<ObjectMeta> = list_media_files(url, store.as_ref()).try_collect().await?;
        if files.is_empty() {
            return match url.get_glob() {
                Some(glob) => plan_err!("No files found at {url} matching {glob}"),
                None => plan_err!("No files found at {url}"),
            };
        }
        Ok(files)
    })
    .map_err(|e| e.context(format!("reading {location}")))
}

/// The listing a table function made at planning, handed to the first
/// scan of the same statement (later scans list again).
#[derive(Debug, Default)]
pub struct PlannedListing(std::sync::Mutex<Option<Vec<ObjectMeta>>>);

impl PlannedListing {
    /// Keeps `files` for the first scan.
    pub fn new(files: Vec<ObjectMeta>) -> Self {
        Self(std::sync::Mutex::new(Some(files)))
    }

    /// The listing, once.
    pub fn take(&self) -> Option<Vec<ObjectMeta>> {
        self.0.lock().ok().and_then(|mut l| l.take())
    }
}

/// What a scan must read from each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// The listing is enough.
    Nothing,
    /// The header: format and what the headers say.
    Header,
    /// The whole file.
    Everything,
}

/// What a kind of media adds to the shared scan: which columns need what,
/// and how a chunk of files becomes a batch.
pub trait MediaReader: fmt::Debug + Send + Sync + 'static {
    /// The operator's name in plans: `ImagesExec`, `AudioExec`.
    fn exec_name(&self) -> &'static str;
    /// The kind in messages: `image`, `audio`.
    fn kind(&self) -> &'static str;
    /// The `STORED AS` name: `IMAGES`, `AUDIO`.
    fn stored_as(&self) -> &'static str;
    /// The table function and an example location, for messages.
    fn table_function(&self) -> (&'static str, &'static str);
    /// The schema of every table of this kind.
    fn schema(&self) -> SchemaRef;
    /// The columns read from each file's header.
    fn header_columns(&self) -> &'static [usize];
    /// The column of encoded bytes.
    fn bytes_column(&self) -> usize;
    /// Bytes of files one batch holds at most when the bytes are read.
    fn batch_bytes(&self) -> u64 {
        BATCH_BYTES
    }
    /// The relative cost of decoding a byte of this file, guessed from its
    /// name, to balance partitions; only a hint (1 by default).
    fn cost_per_byte(&self, _meta: &ObjectMeta) -> u64 {
        1
    }
    /// Whether a whole file's bytes are readable media of this kind, as a
    /// scan that reads the bytes decides it (late materialization checks
    /// the bytes it fetches the same way).
    fn check(&self, bytes: &[u8]) -> std::result::Result<(), MediaError>;
    /// Reads `chunk` as far as `scan.reads` says and builds one batch of
    /// `scan.projected` (rows of bad files follow `scan.on_error`).
    fn batch(
        &self,
        scan: Arc<ScanContext>,
        chunk: Vec<ObjectMeta>,
    ) -> BoxFuture<'static, Result<RecordBatch>>;
}

/// What one partition of a media scan knows while it reads.
#[derive(Debug)]
pub struct ScanContext {
    /// The store the files are in.
    pub store: Arc<dyn ObjectStore>,
    /// Its URL, for addresses.
    pub store_url: ObjectStoreUrl,
    /// Columns of the table's schema to build, in order.
    pub projection: Vec<usize>,
    /// The projected schema.
    pub projected: SchemaRef,
    /// The policy for bad files.
    pub on_error: OnError,
    /// How much of each file to read.
    pub reads: Reads,
    /// Filters on `format`, checked on each header.
    pub header_filter: Option<Arc<dyn PhysicalExpr>>,
    /// Files left out by `on_error = 'skip'`.
    pub skipped: Count,
    /// The session's `quiver.*` settings (decode limits).
    pub settings: Arc<QuiverSettings>,
    /// The session's progress, which counts the files read.
    pub progress: Option<Arc<StatementProgress>>,
}

impl ScanContext {
    /// The file's address for messages: a local path or a URL.
    pub fn address(&self, meta: &ObjectMeta) -> String {
        file_address(&self.store_url, &meta.location)
    }

    fn io_error(&self, meta: &ObjectMeta, e: object_store::Error) -> DataFusionError {
        DataFusionError::ObjectStore(Box::new(e)).context(format!("reading {}", self.address(meta)))
    }

    /// The whole file.
    pub async fn get_all(&self, meta: &ObjectMeta) -> Result<Bytes> {
        self.store
            .get(&meta.location)
            .await
            .map_err(|e| self.io_error(meta, e))?
            .bytes()
            .await
            .map_err(|e| self.io_error(meta, e))
    }

    /// One byte range of the file.
    pub async fn get_range(&self, meta: &ObjectMeta, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&meta.location, range)
            .await
            .map_err(|e| self.io_error(meta, e))
    }

    /// Some byte ranges of the file, in one request where the store can.
    pub async fn get_ranges(&self, meta: &ObjectMeta, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.store
            .get_ranges(&meta.location, ranges)
            .await
            .map_err(|e| self.io_error(meta, e))
    }

    /// A file that is not readable media: the query's error under
    /// `on_error = 'fail'`, else the message for the `error` column.
    pub fn bad_file(&self, kind: &str, meta: &ObjectMeta, e: MediaError) -> Result<String> {
        match self.on_error {
            OnError::Fail => Err(DataFusionError::External(Box::new(e)).context(format!(
                "reading {kind} {} (on_error=fail; use 'on_error=null' or 'on_error=skip' to go on)",
                self.address(meta)
            ))),
            OnError::Null | OnError::Skip => Ok(e.to_string()),
        }
    }

    /// Whether a file with `format` passes the header filter.
    pub fn passes(&self, meta: &ObjectMeta, format: Option<&str>) -> Result<bool> {
        match &self.header_filter {
            Some(f) => passes_header_filter(f, &self.store_url, meta, format),
            None => Ok(true),
        }
    }

    /// Drops the rows of bad files under `on_error = 'skip'`, counting them.
    pub fn keep<R>(&self, rows: Vec<Option<R>>, failed: impl Fn(&R) -> bool) -> Vec<R> {
        rows.into_iter()
            .flatten()
            .filter(|r| {
                let drop = self.on_error == OnError::Skip && failed(r);
                if drop {
                    self.skipped.add(1);
                }
                !drop
            })
            .collect()
    }

    /// One batch of `rows` rows from the projected columns.
    pub fn finish(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.projected),
            columns,
            &options,
        )?)
    }
}

/// How the files at a location are read back, planned once per scan.
#[derive(Debug)]
pub struct MediaScan<'a> {
    /// The kind of media.
    pub reader: Arc<dyn MediaReader>,
    /// Where the files are.
    pub url: &'a ListingTableUrl,
    /// The table's schema.
    pub schema: &'a SchemaRef,
    /// The policy for bad files.
    pub on_error: OnError,
    /// Columns that are read from the header.
    pub header_columns: &'a [usize],
    /// The listing made at planning, if any.
    pub listed: Option<Vec<ObjectMeta>>,
}

impl MediaScan<'_> {
    /// Plans the scan: lists and prunes the files, balances them over
    /// partitions and builds a [`MediaExec`].
    pub async fn plan(
        self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (files, stop_at) = list_pruned(state, self.url, filters, limit, self.listed).await?;
        // Filters that need the format are checked on each file's header.
        let header_filter = header_filter(state, filters)?;
        let partitions = state
            .config()
            .target_partitions()
            .clamp(1, files.len().max(1));
        let reader = Arc::clone(&self.reader);
        let groups = balance(files, partitions, |f| {
            f.size.saturating_mul(reader.cost_per_byte(f))
        });
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let projected = project_schema(self.schema, Some(&projection))?;
        let wants = |c: usize| projection.contains(&c);
        let reads = if wants(self.reader.bytes_column()) {
            Reads::Everything
        } else if self.header_columns.iter().any(|c| wants(*c))
            || header_filter.is_some()
            // Skipping bad files needs their headers even for count(*).
            || self.on_error == OnError::Skip
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
        Ok(Arc::new(MediaExec {
            reader: self.reader,
            store_url: self.url.object_store(),
            groups: Arc::new(groups),
            projection,
            projected,
            on_error: self.on_error,
            limit: stop_at,
            header_filter,
            reads,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
            chunks: ChunkSlot::default(),
        }))
    }
}

/// Which filters a media table answers itself: those on the listing
/// columns and `format`.
pub fn filters_pushdown(filters: &[&Expr]) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if answerable_from_listing(f) || answerable_from_header(f) {
                TableProviderFilterPushDown::Exact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// Scans media files: one partition per group of files, batches of
/// `batch_size` rows (and about [`BATCH_BYTES`]), a few files read at once.
#[derive(Debug)]
pub struct MediaExec {
    reader: Arc<dyn MediaReader>,
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
    /// The chunks of the current execution, shared by its partitions.
    chunks: ChunkSlot,
}

impl DisplayAs for MediaExec {
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
            "{}: files={files}, projection=[{}], reads={}, on_error={}",
            self.reader.exec_name(),
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

impl ExecutionPlan for MediaExec {
    fn name(&self) -> &str {
        self.reader.exec_name()
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
            plan_err!("{} has no children", self.reader.exec_name())
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
        if partition >= self.groups.len() {
            return Err(DataFusionError::Internal(format!(
                "no partition {partition}"
            )));
        }
        let store = context.runtime_env().object_store(&self.store_url)?;
        let batch_size = context.session_config().batch_size();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let skipped = MetricBuilder::new(&self.metrics).counter("skipped_files", partition);
        let scan = Arc::new(ScanContext {
            store,
            store_url: self.store_url.clone(),
            projection: self.projection.clone(),
            projected: Arc::clone(&self.projected),
            on_error: self.on_error,
            reads: self.reads,
            header_filter: self.header_filter.clone(),
            skipped,
            settings: Arc::new(QuiverSettings::from_options(
                context.session_config().options(),
            )),
            progress: context
                .session_config()
                .get_extension::<StatementProgress>(),
        });
        let bytes = (self.reads == Reads::Everything).then(|| {
            batch_bytes_under(
                self.reader.batch_bytes(),
                &context.memory_pool().memory_limit(),
                self.groups.len(),
            )
        });
        let shared = self.chunks.open(partition, &context, || {
            self.groups
                .iter()
                .map(|g| chunk_files(g.clone(), batch_size, bytes))
                .collect()
        });
        let chunks = std::iter::from_fn(move || shared.next(partition));
        let reader = Arc::clone(&self.reader);
        let reservation = bytes.is_some().then(|| {
            MemoryConsumer::new(format!("{}[{partition}]", self.reader.exec_name()))
                .register(context.memory_pool())
        });
        Ok(partition_stream(
            Arc::clone(&self.projected),
            chunks,
            self.limit,
            baseline,
            reservation,
            move |chunk| reader.batch(Arc::clone(&scan), chunk),
        ))
    }
}

/// One batch of a media scan: reads the files of `chunk`, `concurrency`
/// at a time, with `read` (`None` for a file a header filter leaves out),
/// drops the rows of bad files (`failed`) under `on_error = 'skip'`, and
/// builds the projected columns with `column`.
pub async fn read_batch<R, Fut>(
    scan: &ScanContext,
    chunk: Vec<ObjectMeta>,
    concurrency: usize,
    read: impl Fn(ObjectMeta) -> Fut,
    failed: impl Fn(&R) -> bool,
    column: impl Fn(usize, &ObjectStoreUrl, &[R]) -> ArrayRef,
) -> Result<RecordBatch>
where
    Fut: std::future::Future<Output = Result<Option<R>>>,
{
    let files = chunk.len();
    let rows: Vec<Option<R>> = futures::stream::iter(chunk)
        .map(read)
        .buffered(concurrency)
        .try_collect()
        .await?;
    // A scan of the listing alone (its bytes fetched above a join, if
    // at all) reads no file.
    if let Some(progress) = scan
        .progress
        .as_ref()
        .filter(|_| scan.reads != Reads::Nothing)
    {
        progress.add_files(files);
    }
    let rows = scan.keep(rows, failed);
    let columns = scan
        .projection
        .iter()
        .map(|c| column(*c, &scan.store_url, &rows))
        .collect();
    scan.finish(columns, rows.len())
}

/// A `Utf8` column of optional values.
pub fn string_column<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

/// A `Binary` column of optional byte strings, allocated once.
pub fn binary_column<'a>(values: impl Iterator<Item = Option<&'a [u8]>> + Clone) -> ArrayRef {
    let (rows, bytes) = values
        .clone()
        .fold((0, 0), |(n, b), v| (n + 1, b + v.map_or(0, <[u8]>::len)));
    let mut b = BinaryBuilder::with_capacity(rows, bytes);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

/// A table over the media files at one location: `read_images(…)`,
/// `read_audio(…)`, `CREATE EXTERNAL TABLE … STORED AS IMAGES | AUDIO`.
#[derive(Debug)]
pub struct MediaTable {
    reader: Arc<dyn MediaReader>,
    url: ListingTableUrl,
    on_error: OnError,
    schema: SchemaRef,
    /// The listing the table function made at planning, for the first scan.
    listed: PlannedListing,
}

impl MediaTable {
    /// The kind of media.
    pub fn reader(&self) -> &Arc<dyn MediaReader> {
        &self.reader
    }

    /// The table's policy for bad files.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// A table over `location` (path, prefix ending in `/`, or glob) with
    /// options `on_error`.
    pub fn try_new(
        reader: Arc<dyn MediaReader>,
        location: &str,
        options: &HashMap<String, String>,
    ) -> Result<Self> {
        Ok(Self {
            url: parse_location(location)?,
            on_error: parse_options(reader.kind(), options)?,
            schema: reader.schema(),
            listed: PlannedListing::default(),
            reader,
        })
    }
}

#[async_trait]
impl TableProvider for MediaTable {
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
        Ok(filters_pushdown(filters))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        MediaScan {
            reader: Arc::clone(&self.reader),
            url: &self.url,
            schema: &self.schema,
            on_error: self.on_error,
            header_columns: self.reader.header_columns(),
            listed: self.listed.take(),
        }
        .plan(state, projection, filters, limit)
        .await
    }
}

/// `read_images(location [, 'on_error=…'])`, `read_audio(…)`: the table
/// function of one kind of media.
#[derive(Debug)]
pub struct ReadMediaFunction(pub Arc<dyn MediaReader>);

impl TableFunctionImpl for ReadMediaFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (function, example) = self.0.table_function();
        let SplitArgs { locations, options } = split_args(function, args.exprs())?;
        let location = single_location(function, example, &locations)?;
        let options: HashMap<String, String> = options.into_iter().collect();
        let mut table = MediaTable::try_new(Arc::clone(&self.0), &location, &options)?;
        table.listed = PlannedListing::new(list_location(args.session(), &table.url, &location)?);
        Ok(Arc::new(table))
    }
}

/// `CREATE EXTERNAL TABLE t STORED AS IMAGES | AUDIO LOCATION '…' [OPTIONS
/// ('on_error' 'skip')]`.
#[derive(Debug)]
pub struct MediaTableFactory(pub Arc<dyn MediaReader>);

#[async_trait]
impl TableProviderFactory for MediaTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let [location] = cmd.locations.as_slice() else {
            return plan_err!("an {} table takes one LOCATION", self.0.stored_as());
        };
        Ok(Arc::new(MediaTable::try_new(
            Arc::clone(&self.0),
            location,
            &cmd.options,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: usize, size: u64) -> Vec<ObjectMeta> {
        (0..n)
            .map(|i| ObjectMeta {
                location: format!("f{i}.jpg").into(),
                last_modified: Default::default(),
                size,
                e_tag: None,
                version: None,
            })
            .collect()
    }

    /// The pool's reserved bytes as each chunk's reading starts, then
    /// once the stream is read to its end, or dropped halfway.
    #[tokio::test]
    async fn chunks_being_read_are_reserved_until_handed_on() {
        use datafusion::arrow::array::{AsArray, UInt64Array};
        use datafusion::arrow::datatypes::UInt64Type;
        use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
        use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;

        let schema = Arc::new(Schema::new(vec![Field::new(
            "reserved",
            DataType::UInt64,
            false,
        )]));
        let run = |take: usize| {
            let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
            let reservation = MemoryConsumer::new("ImagesExec[0]").register(&pool);
            let chunks = vec![files(2, 1000), files(3, 500), files(1, 700), files(1, 10)];
            let (seen, out) = (Arc::clone(&pool), Arc::clone(&schema));
            let stream = partition_stream(
                Arc::clone(&schema),
                chunks.into_iter(),
                None,
                BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0),
                Some(reservation),
                move |_chunk| {
                    let reserved = seen.reserved() as u64;
                    let out = Arc::clone(&out);
                    async move {
                        Ok(RecordBatch::try_new(
                            out,
                            vec![Arc::new(UInt64Array::from(vec![reserved]))],
                        )?)
                    }
                    .boxed()
                },
            );
            (pool, stream.take(take))
        };
        let (pool, stream) = run(usize::MAX);
        let batches: Vec<RecordBatch> = stream.try_collect().await.expect("stream");
        let seen: Vec<u64> = batches
            .iter()
            .map(|b| b.column(0).as_primitive::<UInt64Type>().value(0))
            .collect();
        // 2,000 bytes; 1,500 more read ahead; the first handed on, 700
        // more; the second handed on, 10 more.
        assert_eq!(seen, [2000, 3500, 2200, 710]);
        assert_eq!(pool.reserved(), 0);

        let (pool, mut stream) = run(1);
        assert!(stream.next().await.is_some());
        assert_eq!(pool.reserved(), 1500, "the chunk read ahead");
        drop(stream);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_memory_limit_shrinks_the_batches_a_scan_holds() {
        let mib = 1024 * 1024;
        let limit = MemoryLimit::Finite(512 * 1024 * 1024);
        assert_eq!(batch_bytes_under(16 * mib, &limit, 16), 4 * mib);
        assert_eq!(batch_bytes_under(16 * mib, &limit, 2), 16 * mib);
        assert_eq!(
            batch_bytes_under(16 * mib, &MemoryLimit::Infinite, 16),
            16 * mib
        );
        let tiny = MemoryLimit::Finite(8 * 1024 * 1024);
        assert_eq!(batch_bytes_under(16 * mib, &tiny, 16), mib);
        // 625 files of 44 KB (a 16th of 10,000 small JPEGs, 27 MB): two
        // batches without a limit, seven under a 512 MB limit shared by 16
        // partitions.
        let budget = batch_bytes_under(BATCH_BYTES, &limit, 16);
        let chunks = chunk_files(files(625, 44_000), 8192, Some(budget));
        assert_eq!(chunks.len(), 7);
        assert!(
            chunks
                .iter()
                .all(|c| c.iter().map(|f| f.size).sum::<u64>() <= budget)
        );
        assert_eq!(
            chunk_files(files(625, 44_000), 8192, Some(BATCH_BYTES)).len(),
            2
        );
    }
}
