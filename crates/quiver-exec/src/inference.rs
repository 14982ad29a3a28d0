//! `InferenceExec`: the streaming operator that runs model calls.
//!
//! DataFusion evaluates an async (model) function one input batch at a
//! time, inside each partition: eight partitions that each deliver a few
//! rows make eight small forward passes, and decoding stops while the
//! model runs. `InferenceExec` replaces that operator (`AsyncFuncExec`)
//! and keeps the stages apart:
//!
//! ```text
//!  partition 0 ─ input ─ arguments (decode, resize…) ─┐            ┌─ queue ─ output 0
//!  partition 1 ─ input ─ arguments ───────────────────┼─ batcher ──┼─ queue ─ output 1
//!  …                                                  ┘  (rows of  └─ …
//!                                                        all partitions → calls of
//!                                                        `batch_size` rows, `replicas`
//!                                                        at once, + 1 being prepared)
//! ```
//!
//! - One **producer** task per input partition pulls its input, evaluates
//!   the model functions' arguments (the CPU work upstream of the model,
//!   such as `image_decode`), and queues each batch twice: its rows to the
//!   shared batcher, and the batch itself, with a handle on its future
//!   results, to the partition's output queue (`queue_depth` slices, or
//!   more with few partitions).
//!   When the consumer stops reading, the output queue fills, the
//!   producer blocks, and so does everything upstream of it. A producer
//!   takes its places in both queues before it evaluates a slice's
//!   arguments, and the batcher's queue holds a few calls' worth of
//!   slices for all partitions together: decoded rows that wait for the
//!   model are bounded by the calls ahead, not by the partitions.
//! - The **batcher** gathers rows from every partition into calls of
//!   `batch_size` rows (a partly filled call waits at most `max_wait` for
//!   more, or, while `replicas` calls are in flight, until one of them
//!   ends: sent sooner, it would only wait for a replica), and keeps
//!   `replicas + 1` calls in flight: while the model's
//!   workers run forward passes, the next call prepares its inputs (the
//!   function's own preprocessing: tokenising, resizing, mel spectrograms).
//! - Each **output** stream hands its slices back in their input order,
//!   each with its model columns appended, as soon as its call is done
//!   (a LIMIT waits for one call, not for a whole input batch).
//!
//! Queued input batches (whole, until their last slice is handed on) and
//! the arguments of slices awaiting their calls are reserved in the
//! memory pool. Dropping the output streams (LIMIT reached, query
//! cancelled) aborts the producers and the batcher, and with them the
//! calls in flight.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::common::{DataFusionError, Result, ScalarValue, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::async_udf::AsyncScalarUDF;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;
use datafusion::physical_expr::equivalence::ProjectionMapping;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet,
    RecordOutput, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ChildStats, StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PhysicalExpr,
    PlanProperties,
};
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use quiver_settings::progress::StatementProgress;

/// Producers hand rows to the batcher in slices of `batch_size /
/// SLICES_PER_CALL` rows (rounded up).
const SLICES_PER_CALL: usize = 4;

/// How an `InferenceExec` batches and runs its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceConfig {
    /// Rows per model call, gathered across partitions.
    pub batch_size: usize,
    /// Calls running at once (the model runs each on its own worker).
    pub replicas: usize,
    /// Slices each partition keeps queued ahead of its consumer, at least.
    pub queue_depth: usize,
    /// How long a partly filled call waits for more rows.
    pub max_wait: Duration,
}

/// One model function of the operator: its arguments, evaluated by the
/// producers, and the async function the batcher calls.
#[derive(Debug, Clone)]
struct ModelCall {
    args: Vec<Arc<dyn PhysicalExpr>>,
    udf: ScalarUDF,
    arg_fields: Vec<FieldRef>,
    return_field: FieldRef,
    /// The most rows the function takes in one call, where it says
    /// (`ideal_batch_size`, as DataFusion's own async operator honours
    /// it: a download function's concurrency), when it shares an
    /// operator with a model whose calls are larger.
    max_rows: Option<usize>,
}

impl ModelCall {
    fn new(expr: &AsyncFuncExpr, schema: &Schema) -> Result<Self> {
        let Some(function) = expr.func.downcast_ref::<ScalarFunctionExpr>() else {
            return internal_err!("InferenceExec: {} is not a function call", expr.func);
        };
        if function
            .fun()
            .inner()
            .downcast_ref::<AsyncScalarUDF>()
            .is_none()
        {
            return internal_err!(
                "InferenceExec: {} is not an async function",
                function.name()
            );
        }
        Ok(Self {
            args: function.args().to_vec(),
            udf: function.fun().clone(),
            arg_fields: function
                .args()
                .iter()
                .map(|a| a.return_field(schema))
                .collect::<Result<_>>()?,
            return_field: expr.func.return_field(schema)?,
            max_rows: expr.ideal_batch_size()?.filter(|&n| n > 0),
        })
    }

    /// The function over `rows` rows of arguments, in calls of at most
    /// `max_rows` rows, as one array.
    async fn invoke(
        &self,
        args: Vec<ColumnarValue>,
        rows: usize,
        options: &Arc<ConfigOptions>,
    ) -> Result<ArrayRef> {
        let step = self.max_rows.unwrap_or(rows).max(1);
        if rows <= step {
            return self.invoke_once(args, rows, options).await;
        }
        let mut pieces = Vec::with_capacity(rows.div_ceil(step));
        for offset in (0..rows).step_by(step) {
            let n = step.min(rows - offset);
            let part = args.iter().map(|a| slice(a, offset, n)).collect();
            pieces.push(self.invoke_once(part, n, options).await?);
        }
        let pieces: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        Ok(concat(&pieces)?)
    }

    /// The function over `rows` rows of arguments in one call.
    async fn invoke_once(
        &self,
        args: Vec<ColumnarValue>,
        rows: usize,
        options: &Arc<ConfigOptions>,
    ) -> Result<ArrayRef> {
        let Some(udf) = self.udf.inner().downcast_ref::<AsyncScalarUDF>() else {
            return internal_err!(
                "InferenceExec: {} is not an async function",
                self.udf.name()
            );
        };
        let out = udf
            .invoke_async_with_args(ScalarFunctionArgs {
                args,
                arg_fields: self.arg_fields.clone(),
                number_rows: rows,
                return_field: self.return_field.clone(),
                config_options: options.clone(),
            })
            .await?;
        let array = out.to_array(rows)?;
        if array.len() != rows {
            return internal_err!(
                "{} returned {} rows for {rows}",
                self.udf.name(),
                array.len()
            );
        }
        Ok(array)
    }
}

/// Runs the model functions of a plan's projection over rows batched
/// across all input partitions (see the module documentation). Its
/// output is its input's columns followed by one column per function,
/// in the input's partitioning and order: a drop-in for DataFusion's
/// `AsyncFuncExec`, which [`crate::InferenceRule`] replaces with it.
#[derive(Debug)]
pub struct InferenceExec {
    exprs: Vec<Arc<AsyncFuncExpr>>,
    calls: Arc<[ModelCall]>,
    input: Arc<dyn ExecutionPlan>,
    config: InferenceConfig,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// The operator-wide figures in `metrics`, made once: a plan executed
    /// again adds to them rather than adding a second set (whose gauges
    /// `EXPLAIN ANALYZE` would sum).
    shared: SharedMetrics,
    /// The execution under way whose output partitions are not all taken.
    running: Mutex<Option<Running>>,
}

impl InferenceExec {
    /// The operator for `exprs` (the model calls of an `AsyncFuncExec`)
    /// over `input`.
    pub fn try_new(
        exprs: Vec<Arc<AsyncFuncExpr>>,
        input: Arc<dyn ExecutionPlan>,
        config: InferenceConfig,
    ) -> Result<Self> {
        let input_schema = input.schema();
        let calls = exprs
            .iter()
            .map(|e| ModelCall::new(e, &input_schema))
            .collect::<Result<Vec<_>>>()?;
        let fields: Fields = input_schema
            .fields()
            .iter()
            .cloned()
            .map(Ok)
            .chain(exprs.iter().map(|e| e.return_field(&input_schema)))
            .collect::<Result<Vec<_>>>()?
            .into();
        let schema = Arc::new(Schema::new(fields));
        let mapping = ProjectionMapping::try_new(
            exprs.iter().map(|e| (e.func.clone(), e.name().to_string())),
            &input_schema,
        )?;
        let cache = PlanProperties::new(
            input.equivalence_properties().project(&mapping, schema),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        let config = InferenceConfig {
            batch_size: config.batch_size.max(1),
            replicas: config.replicas.max(1),
            queue_depth: config.queue_depth.max(1),
            max_wait: config.max_wait,
        };
        let metrics = ExecutionPlanMetricsSet::new();
        Ok(Self {
            exprs,
            calls: calls.into(),
            input,
            config,
            cache: Arc::new(cache),
            shared: SharedMetrics::new(&metrics),
            metrics,
            running: Mutex::new(None),
        })
    }

    /// How this operator batches and runs its calls.
    pub fn config(&self) -> InferenceConfig {
        self.config
    }

    /// The model calls, as DataFusion planned them.
    pub fn exprs(&self) -> &[Arc<AsyncFuncExpr>] {
        &self.exprs
    }

    /// Starts an execution: the producers of every input partition and
    /// the batcher, whose tasks live as long as one output stream does.
    fn start(&self, context: &Arc<TaskContext>) -> Result<Running> {
        let partitions = self.input.output_partitioning().partition_count();
        let metrics = self.shared.for_execution();
        // Slices decoded ahead of the batcher: enough for the calls that
        // can run at once and the next, and one per partition so that
        // every partition can decode at the same time.
        let in_flight = SLICES_PER_CALL * (self.config.replicas + 1);
        let ahead = partitions.max(in_flight).max(1);
        let (chunk_tx, chunk_rx) = mpsc::channel(ahead);
        // A slice keeps its place in its output queue until its results
        // are taken: the queues together must hold the slices of the
        // calls in flight and those of the batcher's queue, or a few
        // partitions, all blocked, would cut the next call short (2
        // partitions of 4 slices made calls 60% full while a CPU model
        // was the slower stage). One more each for a batch's last,
        // partial slice.
        let depth = self
            .config
            .queue_depth
            .max((ahead + in_flight).div_ceil(partitions.max(1)) + 1);
        let mut tasks = JoinSet::new();
        let mut outputs = Vec::with_capacity(partitions);
        let freed = Arc::new(Notify::new());
        let stalls = Arc::new(Stalls::new(partitions));
        for partition in 0..partitions {
            let input = self.input.execute(partition, context.clone())?;
            let (out_tx, out_rx) = mpsc::channel(depth);
            let reservation = Arc::new(
                MemoryConsumer::new(format!("InferenceExec[{partition}]"))
                    .register(context.memory_pool()),
            );
            let producer = produce(Producer {
                input,
                stalls: stalls.clone(),
                slice_rows: self.config.batch_size.div_ceil(SLICES_PER_CALL),
                freed: freed.clone(),
                calls: self.calls.clone(),
                output: out_tx.clone(),
                chunks: chunk_tx.clone(),
                reservation: reservation.clone(),
                sending: 0,
                metrics: metrics.clone(),
            });
            // A panic upstream (an input operator, a decoder evaluating
            // the arguments) ends the producer's task: its partition must
            // fail with it, not end as if its input had.
            tasks.spawn(async move {
                let outcome = AssertUnwindSafe(producer).catch_unwind().await;
                if let Err(panic) = outcome {
                    let _ = out_tx
                        .send(Pending::Failed(DataFusionError::Execution(format!(
                            "InferenceExec: partition {partition}'s input or the model's arguments panicked: {}",
                            panic_message(panic.as_ref())
                        ))))
                        .await;
                }
            });
            outputs.push(Some((out_rx, reservation, freed.clone())));
        }
        drop(chunk_tx);
        let progress = context
            .session_config()
            .get_extension::<StatementProgress>();
        if let Some(progress) = &progress {
            // Only a count known for sure: an estimate (a filter's, 20%
            // of its input by default) made progress read past 100%.
            let rows = StatisticsContext::new()
                .compute(self.input.as_ref(), &StatisticsArgs::new())
                .ok()
                .and_then(|s| match s.num_rows {
                    datafusion::common::stats::Precision::Exact(rows) => Some(rows),
                    _ => None,
                });
            progress.expect_model_rows(rows);
        }
        tasks.spawn(batch(Batcher {
            stalls,
            progress,
            chunks: chunk_rx,
            calls: self.calls.clone(),
            config: self.config,
            options: context.session_config().options().clone(),
            metrics,
        }));
        Ok(Running {
            outputs,
            tasks: Arc::new(Tasks {
                _set: Mutex::new(tasks),
            }),
        })
    }
}

/// What an output stream takes over: its queue, its memory reservation
/// and the signal that it freed memory.
type OutputEnds = (mpsc::Receiver<Pending>, Arc<MemoryReservation>, Arc<Notify>);

/// An execution whose output streams are being handed out.
#[derive(Debug)]
struct Running {
    outputs: Vec<Option<OutputEnds>>,
    tasks: Arc<Tasks>,
}

/// The tasks of one execution: dropping the last output stream drops
/// them, which aborts them.
#[derive(Debug)]
struct Tasks {
    _set: Mutex<JoinSet<()>>,
}

impl DisplayAs for InferenceExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let exprs = self
            .exprs
            .iter()
            .map(|e| format!("{} as {}", e.func, e.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let c = self.config;
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "InferenceExec: batch_size={}, replicas={}, queue_depth={}, max_wait={}ms, exprs=[{exprs}]",
                c.batch_size,
                c.replicas,
                c.queue_depth,
                c.max_wait.as_millis()
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "batch_size={}", c.batch_size)?;
                writeln!(f, "replicas={}", c.replicas)?;
                writeln!(f, "queue_depth={}", c.queue_depth)?;
                writeln!(f, "max_wait={}ms", c.max_wait.as_millis())?;
                writeln!(f, "exprs={exprs}")
            }
        }
    }
}

impl ExecutionPlan for InferenceExec {
    fn name(&self) -> &str {
        "InferenceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for expr in &self.exprs {
            let expr: Arc<dyn PhysicalExpr> = expr.clone();
            if f(&expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("InferenceExec takes one input, got {}", children.len());
        }
        Ok(Arc::new(Self::try_new(
            self.exprs.clone(),
            children.swap_remove(0),
            self.config,
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.input.output_partitioning().partition_count();
        if partition >= partitions {
            return internal_err!("InferenceExec has {partitions} partitions, not {partition}");
        }
        let mut running = self
            .running
            .lock()
            .map_err(|_| DataFusionError::Internal("InferenceExec: state poisoned".into()))?;
        // A partition asked for twice belongs to a new execution.
        if running
            .as_ref()
            .is_none_or(|r| r.outputs[partition].is_none())
        {
            *running = Some(self.start(&context)?);
        }
        let Some(current) = running.as_mut() else {
            return internal_err!("InferenceExec: no execution");
        };
        let Some((queue, reservation, freed)) = current.outputs[partition].take() else {
            return internal_err!("InferenceExec: partition {partition} taken twice");
        };
        let tasks = current.tasks.clone();
        if current.outputs.iter().all(Option::is_none) {
            // Every stream handed out: they alone keep the tasks alive.
            *running = None;
        }
        let output = Output {
            queue,
            waiting: None,
            reservation,
            batch: 0,
            freed,
            _tasks: tasks,
            schema: self.schema(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::unfold(output, |mut output| async move {
            let item = output.next().await?;
            Some((item, output))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// As many rows as the input, its columns' statistics, nothing known
    /// of the model columns.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let Some(input) = input_stats.first() else {
            return Ok(Arc::new(Statistics::new_unknown(&self.schema())));
        };
        let mut stats = input.as_ref().clone();
        stats.total_byte_size = datafusion::common::stats::Precision::Absent;
        stats
            .column_statistics
            .extend(self.exprs.iter().map(|_| ColumnStatistics::new_unknown()));
        Ok(Arc::new(stats))
    }
}

/// The operator-wide figures of `EXPLAIN ANALYZE`.
#[derive(Debug, Clone)]
struct SharedMetrics {
    /// Model calls made.
    batches: Count,
    /// Rows passed to the model.
    model_rows: Count,
    /// Rows per call as a percentage of `batch_size`, on average.
    batch_fill_pct: Gauge,
    /// Time with at least one call running.
    model_busy: Time,
    /// `model_busy` as a percentage of the operator's running time.
    busy_pct: Gauge,
    /// Time the batcher had nothing to run and waited for input.
    input_wait: Time,
    /// Time producers were blocked on a full output queue.
    output_blocked: Time,
    /// Time producers spent evaluating the functions' arguments.
    preprocess: Time,
    /// When the execution started.
    started: Instant,
    /// `model_busy` then: a plan executed again adds to the same metrics.
    busy_before: usize,
}

impl SharedMetrics {
    fn new(set: &ExecutionPlanMetricsSet) -> Self {
        let model_busy = MetricBuilder::new(set).subset_time("model_busy", 0);
        Self {
            batches: MetricBuilder::new(set).global_counter("model_batches"),
            model_rows: MetricBuilder::new(set).global_counter("model_rows"),
            batch_fill_pct: MetricBuilder::new(set).global_gauge("batch_fill_pct"),
            busy_before: 0,
            model_busy,
            busy_pct: MetricBuilder::new(set).global_gauge("model_busy_pct"),
            input_wait: MetricBuilder::new(set).subset_time("input_wait", 0),
            output_blocked: MetricBuilder::new(set).subset_time("output_blocked", 0),
            preprocess: MetricBuilder::new(set).subset_time("preprocess", 0),
            started: Instant::now(),
        }
    }

    /// The same figures for an execution starting now (the busy share
    /// counts from here).
    fn for_execution(&self) -> Self {
        Self {
            started: Instant::now(),
            busy_before: self.model_busy.value(),
            ..self.clone()
        }
    }

    /// A call of `rows` rows made; `calls` and `rows_called` so far.
    fn called(&self, rows: usize, calls: usize, rows_called: usize, size: usize) {
        self.batches.add(1);
        self.model_rows.add(rows);
        self.batch_fill_pct
            .set(rows_called * 100 / (calls * size).max(1));
    }

    /// Brings `model_busy_pct` up to date (after each call, so that it is
    /// right whenever the last rows reach the consumer).
    fn update_busy(&self) {
        let elapsed = self.started.elapsed().as_nanos().max(1);
        let busy = self.model_busy.value().saturating_sub(self.busy_before);
        self.busy_pct.set((busy as u128 * 100 / elapsed) as usize);
    }
}

/// What a partition's output queue holds.
#[derive(Debug)]
enum Pending {
    Rows(Queued),
    Failed(DataFusionError),
}

/// A slice waiting in a partition's output queue for its model columns.
#[derive(Debug)]
struct Queued {
    /// The input batch it is a slice of, and where.
    input: RecordBatch,
    offset: usize,
    rows: usize,
    /// Whether it is its input batch's last slice.
    last: bool,
    result: oneshot::Receiver<Result<Vec<ArrayRef>>>,
    /// Reserved for the slice's arguments: freed once its result is in.
    args: usize,
    /// Reserved for the input batch, on its first slice only: freed
    /// once its last slice is handed on, since every slice keeps it alive.
    batch: usize,
}

/// A producer's batch as the batcher sees it: its evaluated arguments
/// (per function, per argument) and where its results go.
#[derive(Debug)]
struct Chunk {
    rows: usize,
    args: Vec<Vec<ColumnarValue>>,
    sink: Arc<Sink>,
    arrived: Instant,
}

/// Collects the results of one chunk, which calls may fill in pieces and
/// out of order, and sends them on once every row is in.
#[derive(Debug)]
struct Sink {
    rows: usize,
    state: Mutex<SinkState>,
}

#[derive(Debug)]
struct SinkState {
    pieces: Vec<(usize, Vec<ArrayRef>)>,
    filled: usize,
    reply: Option<oneshot::Sender<Result<Vec<ArrayRef>>>>,
}

impl Sink {
    fn new(rows: usize, reply: oneshot::Sender<Result<Vec<ArrayRef>>>) -> Self {
        Self {
            rows,
            state: Mutex::new(SinkState {
                pieces: vec![],
                filled: 0,
                reply: Some(reply),
            }),
        }
    }

    fn add(&self, offset: usize, arrays: Vec<ArrayRef>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.filled += arrays.first().map_or(0, |a| a.len());
        state.pieces.push((offset, arrays));
        if state.filled < self.rows {
            return;
        }
        let Some(reply) = state.reply.take() else {
            return;
        };
        let mut pieces = std::mem::take(&mut state.pieces);
        pieces.sort_by_key(|(offset, _)| *offset);
        let parts: Vec<Vec<ArrayRef>> = pieces.into_iter().map(|(_, a)| a).collect();
        let _ = reply.send(join_columns(&parts));
    }

    fn fail(&self, error: &Arc<DataFusionError>) {
        if let Ok(mut state) = self.state.lock()
            && let Some(reply) = state.reply.take()
        {
            let _ = reply.send(Err(DataFusionError::Shared(error.clone())));
        }
    }
}

struct Producer {
    input: SendableRecordBatchStream,
    stalls: Arc<Stalls>,
    slice_rows: usize,
    freed: Arc<Notify>,
    calls: Arc<[ModelCall]>,
    output: mpsc::Sender<Pending>,
    chunks: mpsc::Sender<Chunk>,
    reservation: Arc<MemoryReservation>,
    /// Reserved for the input batch being sliced: its consumer frees it
    /// only once the last slice is queued, so it is not memory that
    /// waiting on the consumer brings back.
    sending: usize,
    metrics: SharedMetrics,
}

/// What a caught panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    quiver_media::error::panic_message(panic).unwrap_or_else(|| "(no message)".to_string())
}

/// Evaluates `calls`' arguments over `batch`.
fn arguments(calls: &[ModelCall], batch: &RecordBatch) -> Result<Vec<Vec<ColumnarValue>>> {
    calls
        .iter()
        .map(|call| call.args.iter().map(|a| a.evaluate(batch)).collect())
        .collect()
}

/// One input partition: evaluate arguments, queue the batch for output and
/// its rows for the batcher, until the input ends or nobody listens.
async fn produce(mut p: Producer) {
    // However this ends (input done, consumer gone, aborted), the
    // batcher stops counting on rows from here.
    let _finished = FinishGuard(p.stalls.clone());
    let schema = p.input.schema();
    // Input batches smaller than a slice are put together first (as
    // DataFusion's own async operator does), so that queues bounded in
    // batches still hold enough rows for full calls.
    let mut held: Vec<RecordBatch> = vec![];
    let mut held_rows = 0;
    loop {
        let ended = match p.input.next().await {
            Some(Ok(b)) => {
                held_rows += b.num_rows();
                held.push(b);
                if held_rows < p.slice_rows {
                    continue;
                }
                false
            }
            Some(Err(e)) => {
                // No more rows from here, while it waits for its place.
                let _done = p.stalls.stall();
                let _ = p.output.send(Pending::Failed(e)).await;
                return;
            }
            None => true,
        };
        let batches = std::mem::take(&mut held);
        held_rows = 0;
        let batch = match batches.len() {
            0 => None,
            1 => batches.into_iter().next(),
            _ => match concat_batches(&schema, &batches) {
                Ok(b) => Some(b),
                Err(e) => {
                    let _done = p.stalls.stall();
                    let _ = p.output.send(Pending::Failed(e.into())).await;
                    return;
                }
            },
        };
        if let Some(batch) = batch.filter(|b| b.num_rows() > 0)
            && !p.send_batch(batch).await
        {
            return;
        }
        if ended {
            return;
        }
    }
}

impl Producer {
    /// Queues `batch` in slices of `slice_rows`: the arguments (decoded
    /// images…) of one slice at a time are in memory, and rows reach the
    /// batcher while the rest of the batch is still being prepared. False
    /// when the execution is over for this partition.
    async fn send_batch(&mut self, batch: RecordBatch) -> bool {
        let total = batch.num_rows();
        // The batch lives until its last slice's result is in: reserved
        // whole with its first slice, freed when its last slice is handed on.
        let mut bytes = batch.get_array_memory_size();
        let mut offset = 0;
        while offset < total {
            let rows = self.slice_rows.min(total - offset);
            if !self
                .send(&batch, offset, rows, std::mem::take(&mut bytes))
                .await
            {
                return false;
            }
            offset += rows;
        }
        self.sending = 0;
        true
    }
}

impl Producer {
    /// Queues the slice of `input` at `offset`, reserving its arguments and `batch` bytes of
    /// its input batch (all of it on the first slice, none after); false
    /// when the execution is over for this partition.
    ///
    /// Places come first, arguments after: a place in the output queue
    /// (waiting, stalled, while the consumer has its queue's slices to
    /// take) and one in the batcher's queue (waiting while it holds
    /// enough rows for the calls ahead), so that a producer that cannot
    /// hand a slice on has not decoded it, and the decoded rows alive at
    /// once are bounded across all partitions, not per partition.
    async fn send(
        &mut self,
        input: &RecordBatch,
        offset: usize,
        rows: usize,
        batch: usize,
    ) -> bool {
        let slice = input.slice(offset, rows);
        let output = match self.output.clone().try_reserve_owned() {
            Ok(place) => place,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(output)) => {
                // Blocked until the consumer takes a batch: while every
                // partition is, the batcher runs what it has.
                let _timer = self.metrics.output_blocked.timer();
                let _stalled = self.stalls.stall();
                match output.reserve_owned().await {
                    Ok(place) => place,
                    Err(_) => return false,
                }
            }
        };
        // The batcher ends before the producers only when it failed (it
        // panicked): the partition fails too, rather than end short.
        let Ok(mut place) = self.chunks.clone().reserve_owned().await else {
            output.send(Pending::Failed(batcher_gone()));
            return false;
        };
        // Evaluating the arguments (decoding) holds this runtime thread
        // for as long as it takes. A task this producer woke last (the
        // batcher, given the slice before) waits in the thread's own slot,
        // which other threads cannot take: it would run only after this
        // slice, and a partly filled call would wait for it rather than
        // `max_wait`. Letting it run first costs one trip through the
        // scheduler.
        tokio::task::yield_now().await;
        let args = {
            let _timer = self.metrics.preprocess.timer();
            arguments(&self.calls, &slice)
        };
        let args = match args {
            Ok(a) => a,
            Err(e) => {
                output.send(Pending::Failed(e));
                return false;
            }
        };
        // An argument that is one of the slice's columns (`embed_text(text)`)
        // is part of the input batch, reserved already: as a slice it
        // would report its whole input batch's buffers, once per slice.
        let args_bytes = args
            .iter()
            .flatten()
            .map(|a| match a {
                ColumnarValue::Array(a) if slice.columns().iter().any(|c| Arc::ptr_eq(c, a)) => 0,
                ColumnarValue::Array(a) => a.get_array_memory_size(),
                ColumnarValue::Scalar(_) => 0,
            })
            .sum::<usize>();
        let reserved = batch + args_bytes;
        if reserved > 0 && self.reservation.try_grow(reserved).is_err() {
            // Waiting for memory, which consumers free: the batcher's
            // place goes back meanwhile, so that a partition whose
            // consumer reads on is not kept from the batcher.
            drop(place);
            if let Err(e) = self.reserve(reserved).await {
                output.send(Pending::Failed(e));
                return false;
            }
            place = match self.chunks.clone().reserve_owned().await {
                Ok(place) => place,
                Err(_) => {
                    self.reservation.shrink(reserved);
                    output.send(Pending::Failed(batcher_gone()));
                    return false;
                }
            };
        }
        self.sending += batch;
        let (reply, result) = oneshot::channel();
        output.send(Pending::Rows(Queued {
            input: input.clone(),
            offset,
            rows,
            last: offset + rows == input.num_rows(),
            result,
            args: args_bytes,
            batch,
        }));
        place.send(Chunk {
            rows,
            args,
            sink: Arc::new(Sink::new(rows, reply)),
            arrived: Instant::now(),
        });
        true
    }

    /// Reserves `bytes` in the memory pool. While this partition has
    /// memory its consumer will free (batches queued whole, arguments
    /// awaiting their calls), a full pool means waiting for it
    /// (backpressure). Otherwise (nothing queued, or only the first
    /// slices of the batch being sliced, which stays until its last
    /// slice is in) it waits for other partitions to free memory, and
    /// fails with the pool's "resources exhausted" error once none has
    /// for [`RESERVE_PATIENCE`].
    async fn reserve(&mut self, bytes: usize) -> Result<()> {
        // While it waits it sends no rows: the batcher need not wait for
        // it to run what it has (which frees memory once consumed).
        let _stalled = self.stalls.stall();
        // Patience counts from when nothing more of this partition's
        // memory can come back, and starts again whenever an output of
        // this operator frees some: a producer that keeps losing the
        // memory freed to others waits as long as they progress (and
        // gets it once they finish), rather than failing the query.
        let mut stuck_since = None;
        loop {
            // Its consumer gone (a LIMIT above it was reached), nothing
            // will be freed for it: it ends, and its reservation with it.
            if self.output.is_closed() {
                return Err(DataFusionError::Execution(
                    "InferenceExec: the partition's output was dropped".into(),
                ));
            }
            let freed = self.freed.notified();
            let Err(e) = self.reservation.try_grow(bytes) else {
                return Ok(());
            };
            if self.reservation.size() <= self.sending {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RESERVE_PATIENCE {
                    return Err(e);
                }
            } else {
                stuck_since = None;
            }
            drop(e);
            if let Ok(()) = tokio::time::timeout(Duration::from_millis(10), freed).await {
                stuck_since = None;
            }
        }
    }
}

/// How many producers can send no rows now: finished, or blocked until
/// their consumer takes a batch (whose rows may be the very ones the
/// batcher holds). When all of them are, waiting for more rows is
/// pointless.
#[derive(Debug)]
struct Stalls {
    count: std::sync::atomic::AtomicUsize,
    partitions: usize,
    changed: Notify,
}

impl Stalls {
    fn new(partitions: usize) -> Self {
        Self {
            count: std::sync::atomic::AtomicUsize::new(0),
            partitions,
            changed: Notify::new(),
        }
    }

    fn all(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::SeqCst) >= self.partitions
    }

    /// Counts one producer stalled until the guard drops.
    fn stall(self: &Arc<Self>) -> StallGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_one();
        StallGuard(self.clone())
    }
}

struct StallGuard(Arc<Stalls>);

/// Counts its producer as finished (for good) when dropped.
struct FinishGuard(Arc<Stalls>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long every producer must stay stalled before the batcher runs a
/// partly filled call rather than wait for `max_wait`.
const STALL_GRACE: Duration = Duration::from_millis(5);

/// How long a partition with nothing queued waits for memory.
const RESERVE_PATIENCE: Duration = Duration::from_secs(2);

struct Batcher {
    stalls: Arc<Stalls>,
    progress: Option<Arc<StatementProgress>>,
    chunks: mpsc::Receiver<Chunk>,
    calls: Arc<[ModelCall]>,
    config: InferenceConfig,
    options: Arc<ConfigOptions>,
    metrics: SharedMetrics,
}

/// The part of a chunk one call covers.
struct Segment {
    sink: Arc<Sink>,
    offset: usize,
    rows: usize,
    args: Vec<Vec<ColumnarValue>>,
}

/// Time during which at least one call runs.
#[derive(Debug, Default)]
struct BusyClock {
    /// Calls running, and since when the time while any ran was last
    /// counted.
    state: Mutex<(usize, Option<Instant>)>,
}

impl BusyClock {
    /// Counts the time since the last change while a call ran, at every
    /// call that starts or ends: `model_busy` is current while calls
    /// overlap without a gap (a LIMIT that ends the query then still
    /// reads it right).
    fn change(&self, time: &Time, by: isize) {
        if let Ok(mut s) = self.state.lock() {
            let now = Instant::now();
            if let Some(since) = s.1.take() {
                time.add_duration(now.saturating_duration_since(since));
            }
            s.0 = s.0.saturating_add_signed(by);
            if s.0 > 0 {
                s.1 = Some(now);
            }
        }
    }

    fn enter(self: &Arc<Self>, time: &Time) -> BusyGuard {
        self.change(time, 1);
        BusyGuard {
            clock: self.clone(),
            time: time.clone(),
        }
    }
}

struct BusyGuard {
    clock: Arc<BusyClock>,
    time: Time,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.clock.change(&self.time, -1);
    }
}

/// Gathers rows of every partition into calls of `batch_size` rows and
/// runs them, `replicas + 1` at once.
async fn batch(mut b: Batcher) {
    let size = b.config.batch_size;
    let slots = b.config.replicas + 1;
    let permits = Arc::new(Semaphore::new(slots));
    let busy = Arc::new(BusyClock::default());
    let mut in_flight = JoinSet::new();
    let mut pending: VecDeque<(Chunk, usize)> = VecDeque::new();
    let mut pending_rows = 0usize;
    let mut closed = false;
    let (mut calls, mut rows_called) = (0usize, 0usize);
    loop {
        // A free slot first: while every slot is busy, rows pile up and
        // the next call is a full one.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        // What has arrived, then (if short) wait for more until the oldest
        // pending row has waited `max_wait`.
        while pending_rows < size && !closed {
            match b.chunks.try_recv() {
                Ok(chunk) => {
                    pending_rows += chunk.rows;
                    pending.push_back((chunk, 0));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        while pending_rows < size && !closed {
            let next = match pending.front() {
                None => {
                    let _timer = b.metrics.input_wait.timer();
                    Some(b.chunks.recv().await)
                }
                // Every producer done or blocked on its consumer, and no
                // other call running whose results could unblock one: no
                // more rows will come until these are run.
                // (A producer just unblocked may not have run yet: the
                // state must last STALL_GRACE.)
                Some(_) if b.stalls.all() && permits.available_permits() == slots - 1 => {
                    match tokio::time::timeout(STALL_GRACE, b.chunks.recv()).await {
                        Ok(next) => Some(next),
                        Err(_) if b.stalls.all() => break,
                        Err(_) => continue,
                    }
                }
                // Until the oldest row has waited `max_wait`; but while
                // `replicas` calls are in flight, until one of them ends
                // (each ending notifies `changed`): sent sooner, this one
                // would only wait for a replica. The cost: its own
                // preprocessing no longer overlaps the pass before it; a
                // full call leaves at once, so that is only while rows
                // are short.
                Some((oldest, _)) => {
                    let deadline =
                        tokio::time::Instant::from_std(oldest.arrived + b.config.max_wait);
                    let slot_free = permits.available_permits() > 0;
                    tokio::select! {
                        biased;
                        next = b.chunks.recv() => Some(next),
                        () = tokio::time::sleep_until(deadline), if slot_free => None,
                        () = b.stalls.changed.notified() => continue,
                    }
                }
            };
            match next {
                None => break,
                Some(None) => closed = true,
                Some(Some(chunk)) => {
                    pending_rows += chunk.rows;
                    pending.push_back((chunk, 0));
                }
            }
        }
        if pending_rows == 0 {
            if closed {
                break;
            }
            continue;
        }
        let take = pending_rows.min(size);
        let mut segments = vec![];
        let mut need = take;
        while need > 0 {
            let Some((chunk, offset)) = pending.front_mut() else {
                break;
            };
            let rows = (chunk.rows - *offset).min(need);
            segments.push(Segment {
                sink: chunk.sink.clone(),
                offset: *offset,
                rows,
                args: chunk
                    .args
                    .iter()
                    .map(|args| args.iter().map(|a| slice(a, *offset, rows)).collect())
                    .collect(),
            });
            *offset += rows;
            need -= rows;
            if *offset == chunk.rows {
                pending.pop_front();
            }
        }
        pending_rows -= take;
        calls += 1;
        rows_called += take;
        b.metrics.called(take, calls, rows_called, size);
        let calls_of = b.calls.clone();
        let options = b.options.clone();
        let guard_clock = busy.clone();
        let metrics = b.metrics.clone();
        let progress = b.progress.clone();
        let stalls = b.stalls.clone();
        in_flight.spawn(async move {
            run_call(
                &calls_of,
                segments,
                take,
                &options,
                &guard_clock,
                &metrics,
                progress.as_deref(),
            )
            .await;
            // A slot is free: the batcher looks again at whether to wait.
            drop(permit);
            stalls.changed.notify_one();
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// Column by column, `parts` (each a set of columns over consecutive
/// rows) as one set of columns; a single part is passed on, not copied.
/// `batch` copied into buffers of its own (the views of a byte-view
/// column compacted to the bytes they show).
fn compact(batch: &RecordBatch) -> Result<RecordBatch> {
    let rows = u32::try_from(batch.num_rows())
        .map_err(|_| DataFusionError::Internal("InferenceExec: a batch of 2^32 rows".into()))?;
    let taken = take_record_batch(batch, &UInt32Array::from_iter_values(0..rows))?;
    let columns = taken
        .columns()
        .iter()
        .map(|c| -> ArrayRef {
            match c.data_type() {
                DataType::BinaryView => Arc::new(c.as_binary_view().gc()),
                DataType::Utf8View => Arc::new(c.as_string_view().gc()),
                _ => Arc::clone(c),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// The error of a partition whose batcher is gone while it has rows.
fn batcher_gone() -> DataFusionError {
    DataFusionError::Execution(
        "InferenceExec: the batcher stopped before this partition's rows were called".into(),
    )
}

/// The error of a slice whose call went away without a result.
fn dropped_call() -> DataFusionError {
    DataFusionError::Execution("InferenceExec: the model call for these rows was dropped".into())
}

fn join_columns(parts: &[Vec<ArrayRef>]) -> Result<Vec<ArrayRef>> {
    if let [only] = parts {
        return Ok(only.clone());
    }
    let columns = parts.first().map_or(0, Vec::len);
    (0..columns)
        .map(|c| {
            let pieces: Vec<&dyn Array> = parts.iter().map(|p| p[c].as_ref()).collect();
            Ok(concat(&pieces)?)
        })
        .collect()
}

/// Rows `offset..offset + rows` of an argument.
fn slice(value: &ColumnarValue, offset: usize, rows: usize) -> ColumnarValue {
    match value {
        ColumnarValue::Array(a) => ColumnarValue::Array(a.slice(offset, rows)),
        ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s.clone()),
    }
}

/// The segments' pieces of one argument as one value: a constant stays a
/// constant.
fn join_argument(pieces: Vec<(ColumnarValue, usize)>) -> Result<ColumnarValue> {
    let first: Option<&ScalarValue> = match pieces.first() {
        Some((ColumnarValue::Scalar(s), _)) => Some(s),
        _ => None,
    };
    if let Some(first) = first
        && pieces
            .iter()
            .all(|(p, _)| matches!(p, ColumnarValue::Scalar(s) if s == first))
    {
        return Ok(ColumnarValue::Scalar(first.clone()));
    }
    let arrays = pieces
        .into_iter()
        .map(|(p, rows)| p.to_array(rows))
        .collect::<Result<Vec<_>>>()?;
    let parts: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(ColumnarValue::Array(concat(&parts)?))
}

/// One model call over `segments` (`rows` rows): each function in turn,
/// then each segment's rows of the results to its chunk.
async fn run_call(
    calls: &[ModelCall],
    mut segments: Vec<Segment>,
    rows: usize,
    options: &Arc<ConfigOptions>,
    clock: &Arc<BusyClock>,
    metrics: &SharedMetrics,
    progress: Option<&StatementProgress>,
) {
    let mut outputs = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let args = (0..call.args.len())
            .map(|j| {
                join_argument(
                    segments
                        .iter_mut()
                        .map(|s| {
                            let value = std::mem::replace(
                                &mut s.args[i][j],
                                ColumnarValue::Scalar(ScalarValue::Null),
                            );
                            (value, s.rows)
                        })
                        .collect(),
                )
            })
            .collect::<Result<Vec<_>>>();
        let result = match args {
            Ok(args) => {
                let _busy = clock.enter(&metrics.model_busy);
                AssertUnwindSafe(call.invoke(args, rows, options))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        Err(DataFusionError::Execution(format!(
                            "{} panicked: {}",
                            call.udf.name(),
                            panic_message(panic.as_ref())
                        )))
                    })
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(array) => outputs.push(array),
            Err(e) => {
                let e = Arc::new(e);
                for s in &segments {
                    s.sink.fail(&e);
                }
                return;
            }
        }
    }
    metrics.update_busy();
    if let Some(p) = progress {
        p.add_model_rows(rows);
    }
    let mut at = 0;
    for s in segments {
        s.sink.add(
            s.offset,
            outputs.iter().map(|a| a.slice(at, s.rows)).collect(),
        );
        at += s.rows;
    }
}

/// One output partition's stream state. Dropped before its end (a LIMIT
/// above it reached), it frees what it and its queue hold at once: the
/// other partitions may run on.
struct Output {
    queue: mpsc::Receiver<Pending>,
    /// Taken from the queue, not handed on yet: the slice after those
    /// handed on with the last batch, whose call is not done.
    waiting: Option<Pending>,
    /// The producer's reservation, shared.
    reservation: Arc<MemoryReservation>,
    /// Of `reservation`, the current input batch's bytes (and the
    /// arguments of the slice whose result is awaited).
    batch: usize,
    freed: Arc<Notify>,
    /// Held for its drop: the last stream gone aborts the tasks.
    _tasks: Arc<Tasks>,
    schema: SchemaRef,
    baseline: BaselineMetrics,
}

impl Drop for Output {
    fn drop(&mut self) {
        self.queue.close();
        let waiting = self.waiting.take();
        let queued = std::iter::from_fn(|| self.queue.try_recv().ok());
        for pending in waiting.into_iter().chain(queued) {
            if let Pending::Rows(q) = pending {
                self.reservation.shrink(q.args + q.batch);
            }
        }
        self.release_batch();
    }
}

impl Output {
    /// The next rows with their model columns, in input order, as soon as
    /// a slice's call is done: a LIMIT, a cursor or a client waiting for
    /// its first rows waits for one call, not for a whole input batch (a
    /// scan's batch may be thousands of files). The slices after it of
    /// the same input batch whose calls are done too go out with it, as
    /// one batch.
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        let pending = match self.waiting.take() {
            Some(pending) => Some(pending),
            None => self.queue.recv().await,
        };
        let first = match pending {
            Some(Pending::Rows(q)) => q,
            Some(Pending::Failed(e)) => {
                self.release_batch();
                return Some(Err(e));
            }
            None => {
                self.release_batch();
                return None;
            }
        };
        let Queued {
            input,
            offset,
            mut rows,
            mut last,
            result,
            args,
            batch,
        } = first;
        // The slice's arguments count with the batch while its result
        // is awaited, so that a stream dropped meanwhile frees them.
        self.batch += batch + args;
        let result = result.await.unwrap_or_else(|_| Err(dropped_call()));
        self.batch -= args;
        self.reservation.shrink(args);
        self.freed.notify_waiters();
        let mut parts = match result {
            Ok(columns) => vec![columns],
            Err(e) => {
                self.release_batch();
                return Some(Err(e));
            }
        };
        while !last {
            let Ok(pending) = self.queue.try_recv() else {
                break;
            };
            let Pending::Rows(mut next) = pending else {
                self.waiting = Some(pending);
                break;
            };
            let done = match next.result.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.waiting = Some(Pending::Rows(next));
                    break;
                }
                done => done.unwrap_or_else(|_| Err(dropped_call())),
            };
            let columns = match done {
                Ok(columns) => columns,
                // Handed on next time, after the rows before it.
                Err(e) => {
                    self.reservation.shrink(next.args + next.batch);
                    self.waiting = Some(Pending::Failed(e));
                    break;
                }
            };
            self.reservation.shrink(next.args);
            self.freed.notify_waiters();
            self.batch += next.batch;
            rows += next.rows;
            last = next.last;
            parts.push(columns);
        }
        // Part of an input batch goes out in buffers of its own: as a view
        // it would hold, and an operator that keeps it (a sort) would
        // count, the whole batch's buffers once per part.
        let whole = offset == 0 && rows == input.num_rows();
        let out = join_columns(&parts)
            .and_then(|columns| self.assemble(input.slice(offset, rows), columns))
            .and_then(|batch| if whole { Ok(batch) } else { compact(&batch) });
        // The input batch stays reserved until its last slice is handed
        // on: every slice is a view of it.
        if last || out.is_err() {
            self.release_batch();
        }
        Some(out)
    }

    /// Frees the current input batch: its last slice is handed on, or
    /// it failed, or the stream is dropped.
    fn release_batch(&mut self) {
        self.reservation.shrink(std::mem::take(&mut self.batch));
        self.freed.notify_waiters();
    }

    /// `slice` with its model columns appended.
    fn assemble(&self, slice: RecordBatch, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        let mut all = slice.columns().to_vec();
        all.extend(columns);
        Ok(RecordBatch::try_new(self.schema.clone(), all)?.record_output(&self.baseline))
    }
}
