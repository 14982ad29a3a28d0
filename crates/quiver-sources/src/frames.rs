//! `video_frames('path, glob or prefix' [, fps => 1.0] [, every_n => n]
//! [, keyframes_only => true] [, start => s] [, end => s] [, width => w]
//! [, height => h] [, frame_format => 'png' | 'jpeg' | 'raw']
//! [, on_error => 'fail' | 'null' | 'skip'])`: one row per sampled frame —
//! `path`, `frame_index`, `pts`, `is_keyframe`, `width`, `height`, `frame`
//! (an encoded image, or decoded pixels with `frame_format => 'raw'`) and
//! `error`.
//!
//! Predicates become seeks: `pts` compared with constants (`<`, `<=`, `>`,
//! `>=`, `=`, `BETWEEN`) narrow the window the decoder seeks to (the
//! keyframe at or before its start) and stops after; `WHERE is_keyframe`
//! decodes keyframes only (unless `fps` is set: sampling by rate looks at
//! every frame); `LIMIT` stops decoding. All of these are exact, so
//! DataFusion does not filter again. Files are spread over partitions, each
//! decoding its files in turn on a blocking thread and handing batches over
//! a queue of two: a consumer that stops reading stops the decoder.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder,
    UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};
use quiver_media::Pixels;
use quiver_media::arrow_types::{image_field, pixels_array, pixels_field};
use quiver_media::video::{
    FrameFormat, FrameImage, FrameReader, FrameSampling, Interrupt, VideoFrame, VideoLimits,
};
use quiver_settings::QuiverSettings;
use quiver_settings::progress::StatementProgress;

use crate::listing::{SplitArgs, parse_location, split_args};
use crate::media_scan::{
    BATCH_BYTES, OnError, PlannedListing, answerable_from_listing, balance, file_address,
    list_location, list_pruned, single_location,
};
use crate::video::StoreReader;

const FUNCTION: &str = "video_frames";
const COL_PATH: usize = 0;
const COL_INDEX: usize = 1;
const COL_PTS: usize = 2;
const COL_KEYFRAME: usize = 3;
const COL_WIDTH: usize = 4;
const COL_HEIGHT: usize = 5;
const COL_FRAME: usize = 6;

/// The schema of `video_frames` with frames handed out as `format`.
pub fn frames_schema(format: FrameFormat) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("frame_index", DataType::UInt64, true),
        Field::new("pts", DataType::Float64, true),
        Field::new("is_keyframe", DataType::Boolean, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
        match format {
            FrameFormat::Raw => pixels_field("frame"),
            FrameFormat::Png | FrameFormat::Jpeg => image_field("frame"),
        },
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// A bound on `pts`: the value and whether it is included.
type Bound = (f64, bool);

/// The `pts` window frames must fall in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Window {
    start: Option<Bound>,
    end: Option<Bound>,
}

impl Window {
    /// Keeps the tighter of the current start and `b`.
    fn narrow_start(&mut self, b: Bound) {
        self.start = Some(match self.start {
            Some(a) if a.0 > b.0 || (a.0 == b.0 && !a.1) => a,
            _ => b,
        });
    }

    /// Keeps the tighter of the current end and `b`.
    fn narrow_end(&mut self, b: Bound) {
        self.end = Some(match self.end {
            Some(a) if a.0 < b.0 || (a.0 == b.0 && !a.1) => a,
            _ => b,
        });
    }
}

/// The options of one `video_frames` call.
#[derive(Debug, Clone, PartialEq)]
struct FramesOptions {
    sampling: FrameSampling,
    window: Window,
    on_error: OnError,
}

fn number(name: &str, value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => plan_err!("{FUNCTION}: {name} must be a number, got '{value}'"),
    }
}

fn whole(name: &str, value: &str) -> Result<u64> {
    match value.trim().parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => plan_err!("{FUNCTION}: {name} must be a whole number of at least 1, got '{value}'"),
    }
}

fn pixels(name: &str, value: &str) -> Result<u32> {
    match value.trim().parse::<u32>() {
        Ok(v) if (1..=65_535).contains(&v) => Ok(v),
        _ => plan_err!("{FUNCTION}: {name} must be between 1 and 65535 pixels, got '{value}'"),
    }
}

impl FramesOptions {
    fn parse(options: &[(String, String)]) -> Result<Self> {
        let mut sampling = FrameSampling::default();
        let mut window = Window::default();
        let mut on_error = OnError::Fail;
        for (key, value) in options {
            match key.as_str() {
                "fps" => {
                    let fps = number(key, value)?;
                    if fps <= 0.0 {
                        return plan_err!("{FUNCTION}: fps must be greater than 0, got {fps}");
                    }
                    sampling.fps = Some(fps);
                }
                "every_n" => sampling.every_n = Some(whole(key, value)?),
                "keyframes_only" => {
                    sampling.keyframes_only = match value.trim().to_ascii_lowercase().as_str() {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => {
                            return plan_err!(
                                "{FUNCTION}: keyframes_only must be true or false, got '{value}'"
                            );
                        }
                    }
                }
                "start" => window.narrow_start((number(key, value)?, true)),
                "end" => window.narrow_end((number(key, value)?, false)),
                "width" => sampling.width = Some(pixels(key, value)?),
                "height" => sampling.height = Some(pixels(key, value)?),
                "frame_format" => {
                    sampling.format = FrameFormat::parse(value)
                        .map_err(|e| DataFusionError::Plan(format!("{FUNCTION}: {e}")))?;
                }
                "on_error" => on_error = OnError::parse(value)?,
                other => {
                    return plan_err!(
                        "{FUNCTION}: unknown option '{other}' (known: fps, every_n, keyframes_only, start, end, width, height, frame_format, on_error)"
                    );
                }
            }
        }
        Ok(Self {
            sampling,
            window,
            on_error,
        })
    }
}

/// `video_frames(…)`.
#[derive(Debug, Default)]
pub struct VideoFramesFunction;

impl TableFunctionImpl for VideoFramesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let SplitArgs { locations, options } = split_args(FUNCTION, args.exprs())?;
        let location = single_location(FUNCTION, "clips/*.mp4", &locations)?;
        let options = FramesOptions::parse(&options)?;
        let url = parse_location(&location)?;
        let listed = list_location(args.session(), &url, &location)?;
        Ok(Arc::new(VideoFramesTable {
            schema: frames_schema(options.sampling.format),
            url,
            options,
            listed: PlannedListing::new(listed),
        }))
    }
}

/// The rows `video_frames(…)` stands for.
#[derive(Debug)]
pub struct VideoFramesTable {
    url: ListingTableUrl,
    options: FramesOptions,
    schema: SchemaRef,
    listed: PlannedListing,
}

/// What a filter on `video_frames` becomes in the scan.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pushed {
    /// A filter on `path`, answered from the listing.
    Listing,
    /// Bounds on `pts`.
    Window(Window),
    /// `is_keyframe`.
    Keyframes,
}

fn is_column(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == name)
}

/// A constant as a float, looking through casts.
fn constant(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(Some(f)) if f.is_finite() => Some(f),
            _ => None,
        },
        Expr::Cast(c) => constant(&c.expr),
        Expr::TryCast(c) => constant(&c.expr),
        _ => None,
    }
}

fn pts_bound(op: Operator, value: f64) -> Option<Window> {
    let mut w = Window::default();
    match op {
        Operator::Gt => w.narrow_start((value, false)),
        Operator::GtEq => w.narrow_start((value, true)),
        Operator::Lt => w.narrow_end((value, false)),
        Operator::LtEq => w.narrow_end((value, true)),
        Operator::Eq => {
            w.narrow_start((value, true));
            w.narrow_end((value, true));
        }
        _ => return None,
    }
    Some(w)
}

/// What `filter` becomes in the scan, if it can be answered there
/// exactly. `by_rate`: sampling by fps, which looks at every frame, so
/// `is_keyframe` cannot skip the others.
fn classify(filter: &Expr, by_rate: bool) -> Option<Pushed> {
    if answerable_from_listing(filter) {
        return Some(Pushed::Listing);
    }
    match filter {
        Expr::Column(_) if is_column(filter, "is_keyframe") && !by_rate => Some(Pushed::Keyframes),
        Expr::IsTrue(inner) if is_column(inner, "is_keyframe") && !by_rate => {
            Some(Pushed::Keyframes)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if is_column(left, "is_keyframe")
                && *op == Operator::Eq
                && matches!(
                    right.as_ref(),
                    Expr::Literal(ScalarValue::Boolean(Some(true)), _)
                )
                && !by_rate
            {
                return Some(Pushed::Keyframes);
            }
            if is_column(left, "pts") {
                return pts_bound(*op, constant(right)?).map(Pushed::Window);
            }
            if is_column(right, "pts") {
                return pts_bound(op.swap()?, constant(left)?).map(Pushed::Window);
            }
            None
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr, "pts") => {
            let mut w = Window::default();
            w.narrow_start((constant(low)?, true));
            w.narrow_end((constant(high)?, true));
            Some(Pushed::Window(w))
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for VideoFramesTable {
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
        let by_rate = self.options.sampling.fps.is_some();
        Ok(filters
            .iter()
            .map(|f| match classify(f, by_rate) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
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
        let by_rate = self.options.sampling.fps.is_some();
        let mut sampling = self.options.sampling.clone();
        let mut window = self.options.window;
        for f in filters {
            match classify(f, by_rate) {
                Some(Pushed::Window(w)) => {
                    if let Some(s) = w.start {
                        window.narrow_start(s);
                    }
                    if let Some(e) = w.end {
                        window.narrow_end(e);
                    }
                }
                Some(Pushed::Keyframes) => sampling.keyframes_only = true,
                Some(Pushed::Listing) | None => {}
            }
        }
        sampling.start = window.start;
        sampling.end = window.end;
        let (files, _) = list_pruned(state, &self.url, filters, None, self.listed.take()).await?;
        let partitions = state
            .config()
            .target_partitions()
            .clamp(1, files.len().max(1));
        let groups = balance(files, partitions, |f| f.size);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Cores left over when there are fewer files than cores go to
        // FFmpeg's own frame threads.
        sampling.threads = (cores / groups.len().max(1)).max(1);
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        sampling.pixels = projection.contains(&COL_FRAME);
        let projected = project_schema(&self.schema, Some(&projection))?;
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&projected)),
            Partitioning::UnknownPartitioning(groups.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(VideoFramesExec {
            store_url: self.url.object_store(),
            groups: Arc::new(groups),
            sampling,
            on_error: self.options.on_error,
            limit,
            projection,
            projected,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Decodes the sampled frames of video files: one partition per group of
/// files.
#[derive(Debug)]
pub struct VideoFramesExec {
    store_url: ObjectStoreUrl,
    groups: Arc<Vec<Vec<ObjectMeta>>>,
    sampling: FrameSampling,
    on_error: OnError,
    limit: Option<usize>,
    projection: Vec<usize>,
    projected: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

fn bound_text(b: Bound, start: bool) -> String {
    match (start, b.1) {
        (true, true) => format!("pts >= {}", b.0),
        (true, false) => format!("pts > {}", b.0),
        (false, true) => format!("pts <= {}", b.0),
        (false, false) => format!("pts < {}", b.0),
    }
}

impl DisplayAs for VideoFramesExec {
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
            "VideoFramesExec: files={files}, projection=[{}]",
            cols.join(", ")
        )?;
        let s = &self.sampling;
        if let Some(fps) = s.fps {
            write!(f, ", fps={fps}")?;
        }
        if let Some(n) = s.every_n {
            write!(f, ", every_n={n}")?;
        }
        if s.keyframes_only {
            write!(f, ", keyframes_only")?;
        }
        if let Some(b) = s.start {
            write!(f, ", seek_to=[{}]", bound_text(b, true))?;
        }
        if let Some(b) = s.end {
            write!(f, ", stop_after=[{}]", bound_text(b, false))?;
        }
        if s.pixels {
            write!(f, ", frame_format={}", s.format.name())?;
            match (s.width, s.height) {
                (Some(w), Some(h)) => write!(f, ", size={w}x{h}")?,
                (Some(w), None) => write!(f, ", width={w}")?,
                (None, Some(h)) => write!(f, ", height={h}")?,
                (None, None) => {}
            }
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        write!(f, ", on_error={}", self.on_error.name())
    }
}

impl ExecutionPlan for VideoFramesExec {
    fn name(&self) -> &str {
        "VideoFramesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            plan_err!("VideoFramesExec has no children")
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
        let settings = QuiverSettings::from_options(context.session_config().options());
        let job = FramesJob {
            store: context.runtime_env().object_store(&self.store_url)?,
            store_url: self.store_url.clone(),
            files,
            sampling: self.sampling.clone(),
            limits: settings.video_limits,
            on_error: self.on_error,
            limit: self.limit.unwrap_or(usize::MAX),
            projection: self.projection.clone(),
            projected: Arc::clone(&self.projected),
            batch_size: context.session_config().batch_size().max(1),
            skipped: MetricBuilder::new(&self.metrics).counter("skipped_files", partition),
            decoded: MetricBuilder::new(&self.metrics).counter("decoded_frames", partition),
            reservation: MemoryConsumer::new(format!("VideoFramesExec[{partition}]"))
                .register(context.memory_pool()),
            progress: context
                .session_config()
                .get_extension::<StatementProgress>(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || job.run(&tx, &handle));
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .inspect(move |b| {
            if let Ok(b) = b {
                baseline.record_output(b.num_rows());
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.projected),
            stream,
        )))
    }
}

/// One row: a frame of a file, or a file's error.
struct FrameRow {
    path: Arc<str>,
    frame: Option<VideoFrame>,
    error: Option<String>,
}

/// One partition's decoding, on a blocking thread.
struct FramesJob {
    store: Arc<dyn ObjectStore>,
    store_url: ObjectStoreUrl,
    files: Vec<ObjectMeta>,
    sampling: FrameSampling,
    limits: VideoLimits,
    on_error: OnError,
    limit: usize,
    projection: Vec<usize>,
    projected: SchemaRef,
    batch_size: usize,
    skipped: Count,
    decoded: Count,
    reservation: MemoryReservation,
    /// The session's progress, which counts the files decoded.
    progress: Option<Arc<StatementProgress>>,
}

type Sender = tokio::sync::mpsc::Sender<Result<RecordBatch>>;

impl FramesJob {
    /// Decodes the files in turn, sending a batch whenever one is full;
    /// stops when the receiver is gone, at the limit, or at an error under
    /// `on_error = 'fail'`.
    fn run(mut self, tx: &Sender, handle: &tokio::runtime::Handle) {
        let mut rows: Vec<FrameRow> = vec![];
        let mut held = 0usize;
        let mut emitted = 0usize;
        let files = std::mem::take(&mut self.files);
        for meta in &files {
            if tx.is_closed() || emitted >= self.limit {
                return;
            }
            let path: Arc<str> = file_address(&self.store_url, &meta.location).into();
            let closed = tx.clone();
            let interrupt = Interrupt::when(move || closed.is_closed());
            let source = StoreReader::new(Arc::clone(&self.store), meta, handle.clone());
            let mut failure = None;
            match FrameReader::open(
                source,
                meta.location.as_ref(),
                self.sampling.clone(),
                self.limits,
                interrupt,
            ) {
                Err(e) => failure = Some(e),
                Ok(mut reader) => {
                    loop {
                        match reader.next_frame() {
                            Ok(Some(frame)) => {
                                let bytes = frame.image.as_ref().map_or(0, FrameImage::len);
                                // The frames a batch holds are reserved in
                                // the memory pool until it is handed over.
                                if let Err(e) = self.reservation.try_grow(bytes) {
                                    let _ = tx.blocking_send(Err(e.context(format!(
                                        "decoding frames of {path} (a batch holds at most {} frames or {BATCH_BYTES} bytes)",
                                        self.batch_size
                                    ))));
                                    return;
                                }
                                held += bytes;
                                rows.push(FrameRow {
                                    path: Arc::clone(&path),
                                    frame: Some(frame),
                                    error: None,
                                });
                                emitted += 1;
                                if emitted >= self.limit {
                                    break;
                                }
                                if (rows.len() >= self.batch_size || held as u64 >= BATCH_BYTES)
                                    && !self.send(tx, &mut rows, &mut held)
                                {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                    self.decoded.add(reader.decoded() as usize);
                }
            }
            if let Some(progress) = &self.progress {
                progress.add_files(1);
            }
            if let Some(e) = failure {
                if tx.is_closed() {
                    return;
                }
                match self.on_error {
                    OnError::Fail => {
                        let err = DataFusionError::External(Box::new(e)).context(format!(
                            "reading video {path} (on_error=fail; use on_error => 'null' or 'skip' to go on)"
                        ));
                        self.send(tx, &mut rows, &mut held);
                        let _ = tx.blocking_send(Err(err));
                        return;
                    }
                    OnError::Null => {
                        if emitted < self.limit {
                            emitted += 1;
                            rows.push(FrameRow {
                                path,
                                frame: None,
                                error: Some(e.to_string()),
                            });
                        }
                    }
                    OnError::Skip => self.skipped.add(1),
                }
            }
        }
        self.send(tx, &mut rows, &mut held);
    }

    /// Sends the rows held as one batch; false when the receiver is gone.
    fn send(&mut self, tx: &Sender, rows: &mut Vec<FrameRow>, held: &mut usize) -> bool {
        if rows.is_empty() {
            return !tx.is_closed();
        }
        let rows = std::mem::take(rows);
        *held = 0;
        let batch = self.batch(rows);
        self.reservation.free();
        tx.blocking_send(batch).is_ok()
    }

    fn batch(&self, mut rows: Vec<FrameRow>) -> Result<RecordBatch> {
        // Raw pixels move into their column rather than being copied.
        let raw: Vec<Option<Pixels>> = if self.sampling.format == FrameFormat::Raw {
            rows.iter_mut()
                .map(|r| match r.frame.as_mut().and_then(|f| f.image.take()) {
                    Some(FrameImage::Raw(p)) => Some(p),
                    _ => None,
                })
                .collect()
        } else {
            vec![]
        };
        let columns = self
            .projection
            .iter()
            .map(|c| self.column(*c, &rows, &raw))
            .collect::<Result<Vec<_>>>()?;
        let options =
            datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.projected),
            columns,
            &options,
        )?)
    }

    fn column(&self, col: usize, rows: &[FrameRow], raw: &[Option<Pixels>]) -> Result<ArrayRef> {
        let frames = || rows.iter().map(|r| r.frame.as_ref());
        Ok(match col {
            COL_PATH => {
                let mut b = StringBuilder::new();
                for r in rows {
                    b.append_value(&r.path);
                }
                Arc::new(b.finish())
            }
            COL_INDEX => {
                let mut b = UInt64Builder::new();
                for f in frames() {
                    b.append_option(f.map(|f| f.index));
                }
                Arc::new(b.finish())
            }
            COL_PTS => {
                let mut b = Float64Builder::new();
                for f in frames() {
                    b.append_option(f.map(|f| f.pts));
                }
                Arc::new(b.finish())
            }
            COL_KEYFRAME => {
                let mut b = BooleanBuilder::new();
                for f in frames() {
                    b.append_option(f.map(|f| f.is_keyframe));
                }
                Arc::new(b.finish())
            }
            COL_WIDTH | COL_HEIGHT => {
                let mut b = UInt32Builder::new();
                for f in frames() {
                    b.append_option(f.map(|f| if col == COL_WIDTH { f.width } else { f.height }));
                }
                Arc::new(b.finish())
            }
            COL_FRAME => match self.sampling.format {
                FrameFormat::Raw => Arc::new(pixels_array(raw)),
                FrameFormat::Png | FrameFormat::Jpeg => {
                    let bytes: usize = frames()
                        .map(|f| f.and_then(|f| f.image.as_ref()).map_or(0, FrameImage::len))
                        .sum();
                    let mut b = BinaryBuilder::with_capacity(rows.len(), bytes);
                    for f in frames() {
                        match f.and_then(|f| f.image.as_ref()) {
                            Some(FrameImage::Encoded(e)) => b.append_value(e),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
            },
            _ => {
                let mut b = StringBuilder::new();
                for r in rows {
                    b.append_option(r.error.as_deref());
                }
                Arc::new(b.finish())
            }
        })
    }
}
