//! `InferenceExec` through SQL, with a deterministic "model" whose output
//! encodes its input (`echo(id) = id * 10 + 1`) and which records the
//! size of every call it gets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::{Result, exec_err};
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use quiver_exec::{InferenceExec, InferenceRule, StatementProgress};
use quiver_settings::QuiverSettings;

#[derive(Debug, Default)]
struct Calls {
    sizes: Mutex<Vec<usize>>,
    rows: AtomicUsize,
    /// Rows `tally` evaluated (as producers evaluate the model's
    /// arguments), and the most of them not yet passed to the model when
    /// a call started.
    evaluated: AtomicUsize,
    most_ahead: AtomicUsize,
    /// Where set, the bytes it held when each call started.
    pool: Mutex<Option<Arc<dyn MemoryPool>>>,
    reserved: Mutex<Vec<usize>>,
    /// Calls that ran to their end (past `delay`), not dropped on the way.
    finished: AtomicUsize,
}

/// A function's record of its calls, the same function when the record
/// is the same.
#[derive(Debug, Clone)]
struct Record(Arc<Calls>);

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Record {}
impl std::ops::Deref for Record {
    type Target = Calls;
    fn deref(&self) -> &Calls {
        &self.0
    }
}
impl std::hash::Hash for Record {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}

/// `tally(id)`: `id`, counting the rows it is evaluated over;
/// `slow_tally(id)` also takes `per_row` for each (a decoder).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Tally {
    name: &'static str,
    signature: Signature,
    calls: Record,
    per_row: Duration,
}

impl ScalarUDFImpl for Tally {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.calls
            .evaluated
            .fetch_add(args.number_rows, Ordering::SeqCst);
        std::thread::sleep(self.per_row * args.number_rows as u32);
        Ok(args.args[0].clone())
    }
}

/// `boom(id)`: `id`, but a panic at row 777 (a decoder that panics on
/// one bad file).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Boom {
    signature: Signature,
}

impl ScalarUDFImpl for Boom {
    fn name(&self) -> &str {
        "boom"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ids = args.args[0].to_array(args.number_rows)?;
        if ids
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .any(|id| id == 777)
        {
            panic!("boom: row 777");
        }
        Ok(ColumnarValue::Array(ids))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Echo {
    name: &'static str,
    signature: Signature,
    calls: Record,
    delay: Duration,
    fail_on: Option<i64>,
    panic_on: Option<i64>,
    /// Its `ideal_batch_size`.
    ideal: Option<usize>,
}

impl ScalarUDFImpl for Echo {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("echo runs asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for Echo {
    fn ideal_batch_size(&self) -> Option<usize> {
        self.ideal
    }

    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ids = args.args[0].to_array(args.number_rows)?;
        let ids = ids.as_primitive::<Int64Type>();
        self.calls
            .sizes
            .lock()
            .expect("lock")
            .push(args.number_rows);
        let called = self
            .calls
            .rows
            .fetch_add(args.number_rows, Ordering::SeqCst)
            + args.number_rows;
        let ahead = self
            .calls
            .evaluated
            .load(Ordering::SeqCst)
            .saturating_sub(called);
        self.calls.most_ahead.fetch_max(ahead, Ordering::SeqCst);
        let pool = self.calls.pool.lock().expect("lock").clone();
        if let Some(pool) = pool {
            self.calls
                .reserved
                .lock()
                .expect("lock")
                .push(pool.reserved());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.calls.finished.fetch_add(1, Ordering::SeqCst);
        if let Some(bad) = self.fail_on
            && ids.iter().flatten().any(|id| id == bad)
        {
            return exec_err!("echo: cannot take row {bad}");
        }
        if let Some(bad) = self.panic_on
            && ids.iter().flatten().any(|id| id == bad)
        {
            panic!("{}: row {bad} makes it panic", self.name);
        }
        let out: Int64Array = ids.iter().map(|id| id.map(|v| v * 10 + 1)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `partitions` partitions of `batches` batches of `rows` to `rows + 4`
/// ids each, ids numbered in order across partitions.
fn table(partitions: usize, batches: usize, rows: usize) -> MemTable {
    table_of(partitions, batches, |p, b| rows + (p * 7 + b * 3) % 5)
}

/// `partitions` partitions of `batches` batches, batch `b` of partition
/// `p` holding `rows(p, b)` ids.
fn table_of(partitions: usize, batches: usize, rows: impl Fn(usize, usize) -> usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let mut next = 0i64;
    let data = (0..partitions)
        .map(|p| {
            (0..batches)
                .map(|b| {
                    // Uneven batch sizes, so calls must cut across batches.
                    let n = rows(p, b);
                    let ids: Int64Array = (next..next + n as i64).collect();
                    next += n as i64;
                    RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).expect("batch")
                })
                .collect()
        })
        .collect();
    MemTable::try_new(schema, data).expect("table")
}

fn context(calls: &Arc<Calls>, delay: Duration, fail_on: Option<i64>) -> SessionContext {
    context_with_memory(calls, delay, fail_on, None)
}

fn context_with_memory(
    calls: &Arc<Calls>,
    delay: Duration,
    fail_on: Option<i64>,
    memory_limit: Option<usize>,
) -> SessionContext {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_limit(limit, 1.0);
    }
    let config = SessionConfig::new()
        .with_target_partitions(8)
        .with_option_extension(QuiverSettings::default())
        .with_extension(Arc::new(StatementProgress::default()));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(Arc::new(runtime.build().expect("runtime")))
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(InferenceRule::default()))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(
        AsyncScalarUDF::new(Arc::new(Echo {
            name: "echo",
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
            calls: Record(calls.clone()),
            delay,
            fail_on,
            panic_on: None,
            ideal: None,
        }))
        .into_scalar_udf(),
    );
    ctx.register_udf(
        AsyncScalarUDF::new(Arc::new(Echo {
            name: "echo_panics",
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
            calls: Record(calls.clone()),
            delay,
            fail_on: None,
            panic_on: Some(777),
            ideal: None,
        }))
        .into_scalar_udf(),
    );
    ctx.register_udf(ScalarUDF::new_from_impl(Boom {
        signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
    }));
    for (name, per_row) in [
        ("tally", Duration::ZERO),
        ("slow_tally", Duration::from_millis(5)),
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(Tally {
            name,
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
            calls: Record(calls.clone()),
            per_row,
        }));
    }
    ctx
}

async fn plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .expect("sql")
        .create_physical_plan()
        .await
        .expect("plan")
}

/// `SET key = value` in `ctx`.
async fn set(ctx: &SessionContext, key: &str, value: u64) {
    ctx.sql(&format!("SET {key} = {value}")).await.expect("SET");
}

fn find_inference(plan: &Arc<dyn ExecutionPlan>) -> Option<&InferenceExec> {
    if let Some(e) = plan.downcast_ref::<InferenceExec>() {
        return Some(e);
    }
    plan.children().into_iter().find_map(find_inference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_line_up_and_calls_fill_across_partitions() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table(8, 6, 5))).unwrap();
    set(&ctx, "quiver.inference.batch_size", 16).await;
    // Inputs that end flush the last call at once; no call before it
    // should ever wait this long.
    set(&ctx, "quiver.inference.max_wait_ms", 600000).await;
    let plan = plan(&ctx, "SELECT id, echo(id) AS e FROM t").await;
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    assert!(
        shown
            .contains("InferenceExec: batch_size=16, replicas=1, queue_depth=4, max_wait=600000ms"),
        "{shown}"
    );
    assert!(!shown.contains("AsyncFuncExec"), "{shown}");
    let exec = find_inference(&plan).expect("an InferenceExec");
    assert_eq!(exec.config().batch_size, 16);

    // Each output partition: its input's ids, in order, each with its echo.
    let task = ctx.task_ctx();
    let partitions = plan.output_partitioning().partition_count();
    assert_eq!(partitions, 8);
    let mut total = 0;
    let mut streams = vec![];
    for p in 0..partitions {
        streams.push(plan.execute(p, task.clone()).unwrap());
    }
    let outputs = futures::future::join_all(
        streams
            .into_iter()
            .map(|s| s.map(|b| b.unwrap()).collect::<Vec<_>>()),
    )
    .await;
    for batches in outputs {
        let mut last = -1;
        for b in batches {
            let ids = b.column(0).as_primitive::<Int64Type>();
            let echoes = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                assert!(ids.value(i) > last, "order kept within a partition");
                last = ids.value(i);
                assert_eq!(echoes.value(i), ids.value(i) * 10 + 1);
            }
            total += b.num_rows();
        }
    }
    let expected: usize = (0..8)
        .flat_map(|p| (0..6).map(move |b| 5 + (p * 7 + b * 3) % 5))
        .sum();
    assert_eq!(total, expected);
    // Partitions deliver 5–9 rows per batch, handed on in slices of 4;
    // calls take 16 rows from several of them. Only the tail may be
    // short: when the last partitions' queues hold all that is left.
    let sizes = calls.sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), expected);
    let short = sizes.iter().filter(|&&s| s < 16).count();
    assert!(short <= 2, "{sizes:?}");
    // The session's progress: every row expected (the table's statistics
    // know its size) and done.
    let progress = task
        .session_config()
        .get_extension::<StatementProgress>()
        .expect("progress");
    assert_eq!(progress.model_total(), Some(expected as u64));
    assert_eq!(progress.model_done(), expected as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_counts_on_no_estimated_total() {
    // Under a filter the input's row count is DataFusion's guess (a fifth
    // of the table): progress has no total rather than one the rows run
    // past (400 of 160, 250%).
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table_of(2, 4, |_, _| 100)))
        .unwrap();
    let plan = plan(&ctx, "SELECT echo(id) FROM t WHERE id % 2 = 0").await;
    let task = ctx.task_ctx();
    collect(plan, task.clone()).await.unwrap();
    let progress = task
        .session_config()
        .get_extension::<StatementProgress>()
        .expect("progress");
    assert_eq!(progress.model_total(), None);
    assert_eq!(progress.model_done(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_prepared_ahead_of_a_slow_model_are_bounded_across_partitions() {
    // 16 partitions, a model slower than the arguments: producers may
    // evaluate (decode) only as many rows ahead of the model as the calls
    // ahead need and one slice per partition, not `queue_depth` slices
    // per partition (16 × 4 slices of 16 rows, 1,024 rows and more).
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(20), None);
    set(&ctx, "datafusion.execution.target_partitions", 16).await;
    ctx.register_table("t", Arc::new(table(16, 10, 40)))
        .unwrap();
    set(&ctx, "quiver.inference.batch_size", 64).await;
    let plan = plan(&ctx, "SELECT id, echo(tally(id)) AS e FROM t").await;
    assert_eq!(plan.output_partitioning().partition_count(), 16);
    let out = collect(plan, ctx.task_ctx()).await.unwrap();
    let rows: usize = out.iter().map(|b| b.num_rows()).sum();
    assert!(rows >= 16 * 10 * 40);
    assert_eq!(calls.evaluated.load(Ordering::SeqCst), rows);
    // The batcher's queue: 16 slices of 16 rows (one per partition), plus
    // the call it is gathering (64 rows and part of a slice); the calls
    // running are counted as passed.
    let ahead = calls.most_ahead.load(Ordering::SeqCst);
    assert!(ahead <= 16 * 16 + 64 + 16, "{ahead} rows evaluated ahead");
    assert!(ahead >= 64, "{ahead}: the model never waited for rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_few_partitions_keep_a_slower_model_in_full_calls() {
    // 2 partitions of 16-row batches, decoded at 5 ms a row, for a model
    // that takes 200 ms a call of 16, longer than max_wait (50 ms). The
    // output queues must hold the slices of the calls in flight and the
    // next call's, or every producer is blocked while the model runs and
    // the next call starts with what little was decoded since.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(200), None);
    set(&ctx, "datafusion.execution.target_partitions", 2).await;
    ctx.register_table("t", Arc::new(table_of(2, 8, |_, _| 16)))
        .unwrap();
    set(&ctx, "quiver.inference.batch_size", 16).await;
    set(&ctx, "quiver.inference.max_wait_ms", 50).await;
    let plan = plan(&ctx, "SELECT id, echo(slow_tally(id)) AS e FROM t").await;
    let out = collect(plan, ctx.task_ctx()).await.unwrap();
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 256);
    let sizes = calls.sizes.lock().unwrap().clone();
    let fill = 256.0 / (sizes.len() * 16) as f64;
    assert!(fill >= 0.9, "{} calls: {sizes:?}", sizes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_analyze_shows_the_batching() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(5), None);
    ctx.register_table("t", Arc::new(table(4, 4, 20))).unwrap();
    set(&ctx, "quiver.inference.batch_size", 32).await;
    let batches = ctx
        .sql("EXPLAIN ANALYZE SELECT sum(echo(id)) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = batches
        .iter()
        .map(|b| {
            let col = b.column(1).as_string::<i32>();
            (0..col.len())
                .map(|i| col.value(i).to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<String>();
    let line = text
        .lines()
        .find(|l| l.contains("InferenceExec"))
        .expect("an InferenceExec line");
    for metric in [
        "model_batches=",
        "model_rows=",
        "batch_fill_pct=",
        "model_busy=",
        "model_busy_pct=",
        "input_wait=",
        "output_blocked=",
        "preprocess=",
    ] {
        assert!(line.contains(metric), "{metric} missing: {line}");
    }
    let sizes = calls.sizes.lock().unwrap().clone();
    let rows: usize = sizes.iter().sum();
    assert_eq!(rows, 350);
    assert_eq!(metric(line, "model_rows"), rows.to_string(), "{line}");
    assert_eq!(metric(line, "output_rows"), rows.to_string(), "{line}");
    assert_eq!(
        metric(line, "model_batches"),
        sizes.len().to_string(),
        "{line}"
    );
    // Rows per call as a share of batch_size, on average.
    assert_eq!(
        metric(line, "batch_fill_pct"),
        (rows * 100 / (sizes.len() * 32)).to_string(),
        "{line}"
    );
    // Every call sleeps 5 ms while the model is counted busy, two calls at
    // most at once (one replica, one preparing).
    let busy = seconds(&metric(line, "model_busy"));
    assert!(busy >= 0.005 * sizes.len() as f64 / 2.0, "{line}");
    let pct: f64 = metric(line, "model_busy_pct").parse().expect("a number");
    assert!((1.0..=100.0).contains(&pct), "{line}");
    // The other times are there, as times (`seconds` panics otherwise).
    for time in ["input_wait", "output_blocked", "preprocess"] {
        seconds(&metric(line, time));
    }
}

/// `name`'s value in an `EXPLAIN ANALYZE` line (`name=value`).
fn metric(line: &str, name: &str) -> String {
    let at = line
        .find(&format!(" {name}="))
        .or_else(|| line.find(&format!("[{name}=")))
        .unwrap_or_else(|| panic!("{name} missing: {line}"));
    let value = &line[at + name.len() + 2..];
    value
        .split([',', ']'])
        .next()
        .expect("a value")
        .trim()
        .to_string()
}

/// A time metric (`953.70ms`, `1.39s`, `12µs`, `80ns`) in seconds.
fn seconds(value: &str) -> f64 {
    let (number, scale) = if let Some(v) = value.strip_suffix("ns") {
        (v, 1e-9)
    } else if let Some(v) = value.strip_suffix("µs") {
        (v, 1e-6)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1.0)
    } else {
        panic!("not a time: {value}")
    };
    number.parse::<f64>().expect("a number") * scale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partly_filled_call_waits_at_most_max_wait_for_more_rows() {
    // One partition of 64 rows decoded at 5 ms a row, in slices of 16 (80
    // ms each), for calls of 64. The producer is never blocked and has
    // not finished, so only the timer can cut a call short: with a 10 ms
    // wait the first call takes the first slice alone; with a long one,
    // all 64 rows in one call. (Before producers let the batcher run
    // ahead of their decoding, it waited behind it: one call of 64 with
    // either wait.)
    for (wait_ms, first) in [(10, 16), (600_000, 64)] {
        let calls = Arc::new(Calls::default());
        let ctx = context(&calls, Duration::ZERO, None);
        set(&ctx, "datafusion.execution.target_partitions", 1).await;
        ctx.register_table("t", Arc::new(table_of(1, 1, |_, _| 64)))
            .unwrap();
        set(&ctx, "quiver.inference.batch_size", 64).await;
        set(&ctx, "quiver.inference.max_wait_ms", wait_ms).await;
        let plan = plan(&ctx, "SELECT echo(slow_tally(id)) AS e FROM t").await;
        let out = collect(plan, ctx.task_ctx()).await.unwrap();
        assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 64);
        let sizes = calls.sizes.lock().unwrap().clone();
        assert_eq!(
            sizes.first(),
            Some(&first),
            "max_wait {wait_ms} ms: {sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_that_would_queue_behind_every_replica_gathers_until_one_is_free() {
    // As above with 128 rows, one replica and calls that take 300 ms.
    // The first call leaves with the first slice (80 ms) after 10 ms. The
    // second slice comes at 160 ms, while the first call runs until about
    // 390 ms: sent at 170 ms, a second call of 16 would only wait for the
    // replica, so it gathers on until the first ends (slices to 320 ms:
    // 48 rows), and the third fills to 64 while the second runs. (Before,
    // the second call left at 170 ms with 16 rows: [16, 16, 32, 16, 48].)
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(300), None);
    set(&ctx, "datafusion.execution.target_partitions", 1).await;
    ctx.register_table("t", Arc::new(table_of(1, 1, |_, _| 128)))
        .unwrap();
    set(&ctx, "quiver.inference.batch_size", 64).await;
    set(&ctx, "quiver.inference.max_wait_ms", 10).await;
    set(&ctx, "quiver.inference.replicas", 1).await;
    let plan = plan(&ctx, "SELECT echo(slow_tally(id)) AS e FROM t").await;
    let out = collect(plan, ctx.task_ctx()).await.unwrap();
    let ids: Vec<i64> = out
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, (0..128).map(|id| id * 10 + 1).collect::<Vec<_>>());
    let sizes = calls.sizes.lock().unwrap().clone();
    assert_eq!(sizes.first(), Some(&16), "{sizes:?}");
    assert!(sizes.len() <= 4 && sizes[1] >= 32, "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_stops_inference_early() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(2), None);
    ctx.register_table("t", Arc::new(table(8, 250, 50)))
        .unwrap();
    let batches = ctx
        .sql("SELECT echo(id) FROM t LIMIT 10")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = calls.rows.load(Ordering::SeqCst);
    // 100,000 rows in; queues of 4 batches per partition bound the work.
    assert!(rows < 10_000, "{rows} rows went through the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_waits_for_one_call_not_for_its_whole_input_batch() {
    // One input batch of 8,192 rows (a scan's batch may be thousands of
    // files) in calls of 16: each slice is handed on as soon as its call
    // is done, so LIMIT 1 stops after the calls in flight, not after 512
    // calls (the whole batch, as when a batch went out whole). The
    // filter on the model's column keeps the LIMIT from reaching the
    // table, as a WHERE on a model's label does.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(2), None);
    one_batch_in_slices_of_4(&ctx).await;
    let batches = ctx
        .sql("SELECT id FROM t WHERE echo(id) > 0 LIMIT 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = calls.rows.load(Ordering::SeqCst);
    assert!(rows <= 64, "{rows} rows went through the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn part_of_an_input_batch_goes_out_in_buffers_of_its_own() {
    // One batch of 8,192 ids (64 KB) in calls of 16: what goes out before
    // the rest of the batch is done is a copy, so that an operator that
    // keeps it (a sort, under a memory limit) counts its rows, not the
    // whole batch's 64 KB once per part.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(5), None);
    one_batch_in_slices_of_4(&ctx).await;
    let plan = plan(&ctx, "SELECT id, echo(id) FROM t").await;
    let mut stream = plan.execute(0, ctx.task_ctx()).unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() < 8192, "{} rows", first.num_rows());
    let bytes = first.get_array_memory_size();
    assert!(
        bytes < 16 << 10,
        "{} rows report {bytes} bytes",
        first.num_rows()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slices_whose_calls_are_done_go_out_together_as_their_input_batch() {
    // Batches of 64 rows in slices of 16 (calls of 64, the queue holding
    // all 12 slices): a consumer that comes back once the calls are done
    // gets each input batch whole (one batch, not four), its rows in
    // order.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table_of(1, 3, |_, _| 64)))
        .unwrap();
    set(&ctx, "datafusion.execution.target_partitions", 1).await;
    set(&ctx, "quiver.inference.batch_size", 64).await;
    let plan = plan(&ctx, "SELECT id, echo(id) FROM t").await;
    let mut stream = plan.execute(0, ctx.task_ctx()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sizes = vec![];
    let mut ids = vec![];
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        sizes.push(batch.num_rows());
        ids.extend(
            batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec(),
        );
    }
    assert_eq!(sizes, [64, 64, 64]);
    assert_eq!(ids, (0..192).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditions_that_read_no_model_column_filter_before_the_model() {
    // `WHERE id % 10 = 0 AND echo(id) IS NOT NULL`: DataFusion filters
    // after the model, which then sees all 800 rows; the condition on
    // `id` alone now runs below it, and the model sees the 80 that pass.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table_of(2, 4, |_, _| 100)))
        .unwrap();
    let sql = "SELECT id FROM t WHERE id % 10 = 0 AND echo(id) IS NOT NULL AND id >= 0";
    let plan = plan(&ctx, sql).await;
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    let model = shown.find("InferenceExec").expect(&shown);
    let cheap = shown
        .find("FilterExec: id@0 % 10 = 0 AND id@0 >= 0")
        .expect(&shown);
    assert!(cheap > model, "{shown}");
    let out = collect(plan, ctx.task_ctx()).await.unwrap();
    let mut ids: Vec<i64> = out
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..800).step_by(10).collect::<Vec<i64>>());
    assert_eq!(calls.rows.load(Ordering::SeqCst), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_stops_the_producers_and_dropping_cancels() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(1), None);
    ctx.register_table("t", Arc::new(table(4, 500, 50)))
        .unwrap();
    let plan = plan(&ctx, "SELECT id, echo(id) FROM t").await;
    let mut stream = plan.execute(0, ctx.task_ctx()).unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    // Partition 0 is read once; the others are never read. Everything
    // upstream stops once the queues are full.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_pause = calls.rows.load(Ordering::SeqCst);
    assert!(after_pause < 4 * 10 * 60, "{after_pause} rows ran");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.rows.load(Ordering::SeqCst), after_pause);
    drop(stream);
    // The other partitions were never asked for; the execution lives on in
    // the plan until they are. Asking for one and dropping it ends it.
    drop(plan.execute(1, ctx.task_ctx()).unwrap());
    drop(plan);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let settled = calls.rows.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.rows.load(Ordering::SeqCst), settled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_streams_stops_the_calls_in_flight() {
    // Calls of 3 s each: once one is running, the query is dropped (every
    // partition's stream, then the plan). The call in flight is dropped
    // with it, not run to its end, and no call starts after.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_secs(3), None);
    ctx.register_table("t", Arc::new(table(4, 20, 50))).unwrap();
    set(&ctx, "quiver.inference.replicas", 2).await;
    let plan = plan(&ctx, "SELECT id, echo(id) FROM t").await;
    let streams: Vec<_> = (0..plan.output_partitioning().partition_count())
        .map(|p| plan.execute(p, ctx.task_ctx()).unwrap())
        .collect();
    let reader = tokio::spawn(async move {
        let mut all = futures::stream::select_all(streams);
        while all.next().await.is_some() {}
    });
    let started = std::time::Instant::now();
    while calls.sizes.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no call started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reader.abort();
    assert!(reader.await.is_err_and(|e| e.is_cancelled()));
    drop(plan);
    let in_flight = calls.sizes.lock().unwrap().len();
    assert!(in_flight >= 1);
    // Longer than a call: one that had not been stopped would be done.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(calls.finished.load(Ordering::SeqCst), 0, "a call ran on");
    assert_eq!(
        calls.sizes.lock().unwrap().len(),
        in_flight,
        "a call started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_dropped_early_frees_its_memory_at_once() {
    // 8 partitions of 200 KB batches under 4 MB, deep queues, no stream
    // read: the producers fill the pool and wait for memory. Dropping
    // the stream of a partition holding memory (as a LIMIT above it does)
    // frees what it held at once, not when the last stream goes.
    let calls = Arc::new(Calls::default());
    let ctx = context_with_memory(&calls, Duration::ZERO, None, Some(4 << 20));
    ctx.register_table("t", Arc::new(wide_table())).unwrap();
    set(&ctx, "quiver.inference.batch_size", 16).await;
    set(&ctx, "quiver.inference.queue_depth", 64).await;
    let plan = plan(&ctx, "SELECT id, blob, echo(id) FROM t").await;
    let partitions = plan.output_partitioning().partition_count();
    assert_eq!(partitions, 8);
    let mut streams: Vec<_> = (0..partitions)
        .map(|p| plan.execute(p, ctx.task_ctx()).unwrap())
        .collect();
    let pool = ctx.runtime_env().memory_pool.clone();
    // What partition `p` holds, from the pool's report of its consumers
    // (the others take what it frees, so the pool's total stays full).
    let held_by = |p: usize| {
        let report = pool
            .downcast_ref::<TrackConsumersPool<GreedyMemoryPool>>()
            .expect("a tracking pool")
            .report_top(32);
        let name = format!("InferenceExec[{p}]#");
        report
            .lines()
            .find(|l| l.trim().starts_with(&name))
            .map(|l| l.trim().to_string())
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pool.reserved() > 3 << 20, "{} bytes", pool.reserved());
    // Which partitions won the race for memory varies: one that did.
    let (p, before) = (0..partitions)
        .find_map(|p| {
            held_by(p)
                .filter(|l| !l.contains("consumed 0.0 B"))
                .map(|l| (p, l))
        })
        .expect("a partition holds memory");
    drop(streams.remove(p));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = held_by(p);
    assert!(
        after.as_ref().is_none_or(|l| l.contains("consumed 0.0 B")),
        "before: {before}; after: {after:?}"
    );
    drop(streams);
    drop(plan);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.reserved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_call_fails_the_query_with_its_error() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, Some(777));
    ctx.register_table("t", Arc::new(table(4, 10, 30))).unwrap();
    let err = ctx
        .sql("SELECT echo(id) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("echo: cannot take row 777"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_upstream_or_in_a_call_fails_the_query_and_loses_no_rows_silently() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table(4, 10, 30))).unwrap();
    // A panic evaluating the arguments (as a decoder's would) used to end
    // its partition as if its input had ended: fewer rows, no error.
    for (sql, said) in [
        (
            "SELECT count(echo(boom(id))) FROM t",
            "panicked: boom: row 777",
        ),
        (
            "SELECT count(echo_panics(id)) FROM t",
            "echo_panics panicked: echo_panics: row 777 makes it panic",
        ),
    ] {
        let err = ctx
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .expect_err(sql)
            .to_string();
        assert!(err.contains(said), "{sql}: {err}");
    }
    // Without the bad row, every row.
    let out = ctx
        .sql("SELECT count(echo(boom(id))) FROM t WHERE id <> 777")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows = ctx
        .sql("SELECT count(*) FROM t WHERE id <> 777")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        out[0].column(0).as_primitive::<Int64Type>().value(0),
        rows[0].column(0).as_primitive::<Int64Type>().value(0)
    );
}

/// Table `t`: one partition, one batch of 8,192 ids (64 KB), called 16
/// rows at a time (slices of 4).
async fn one_batch_in_slices_of_4(ctx: &SessionContext) {
    ctx.register_table("t", Arc::new(table_of(1, 1, |_, _| 8192)))
        .expect("table");
    set(ctx, "datafusion.execution.target_partitions", 1).await;
    set(ctx, "quiver.inference.batch_size", 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_input_batch_is_reserved_once_until_its_last_slice_is_in() {
    // One batch of 8,192 ids (64 KB) in 512 calls of 16 rows (slices of
    // 4). The batch is alive (every slice is a view of it) until its
    // last slice's results are in and it is handed on, so every call
    // sees it reserved. Its slices' argument, the id column itself, is
    // not reserved again: a slice of it reports the whole column's
    // buffers, so the first call would see 64 KB more per queued slice.
    // Once the query is over, nothing is reserved.
    let calls = Arc::new(Calls::default());
    let ctx = context_with_memory(&calls, Duration::ZERO, None, Some(1 << 20));
    *calls.pool.lock().unwrap() = Some(ctx.runtime_env().memory_pool.clone());
    one_batch_in_slices_of_4(&ctx).await;
    let out = ctx
        .sql("SELECT count(echo(id)) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out[0].column(0).as_primitive::<Int64Type>().value(0), 8192);
    let seen = calls.reserved.lock().unwrap().clone();
    assert_eq!(seen.len(), 512);
    let least = seen.iter().copied().min().unwrap();
    assert!(least >= 64 << 10, "a call saw {least} bytes reserved");
    assert!(seen[0] < 96 << 10, "the first call saw {} bytes", seen[0]);
    assert_eq!(ctx.runtime_env().memory_pool.reserved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_cannot_be_finished_under_the_limit_fails_instead_of_waiting() {
    // One batch of 8,192 ids (64 KB) under a 48 KB limit: it cannot be
    // reserved with its first slice, and nothing this partition holds
    // could free memory: a "resources exhausted" error after a short
    // wait, not a hang.
    let calls = Arc::new(Calls::default());
    let ctx = context_with_memory(&calls, Duration::ZERO, None, Some(48 << 10));
    one_batch_in_slices_of_4(&ctx).await;
    let run = async {
        ctx.sql("SELECT count(echo(id + 1)) FROM t")
            .await?
            .collect()
            .await
    };
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("no hang")
        .unwrap_err()
        .to_string();
    assert!(err.contains("Resources exhausted"), "{err}");
    assert!(err.contains("InferenceExec[0]"), "{err}");
    assert_eq!(ctx.runtime_env().memory_pool.reserved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_function_that_wants_small_calls_gets_them_beside_a_larger_model() {
    // `echo` in calls of 16; `echo_small` (ideal_batch_size 5, as a
    // download function says how many requests it runs at once) in the
    // same operator never gets more than 5 rows a call, its results
    // still in line.
    let calls = Arc::new(Calls::default());
    let small = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_udf(
        AsyncScalarUDF::new(Arc::new(Echo {
            name: "echo_small",
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
            calls: Record(small.clone()),
            delay: Duration::ZERO,
            fail_on: None,
            panic_on: None,
            ideal: Some(5),
        }))
        .into_scalar_udf(),
    );
    ctx.register_table("t", Arc::new(table(4, 6, 9))).unwrap();
    set(&ctx, "quiver.inference.batch_size", 16).await;
    let plan = plan(&ctx, "SELECT id, echo(id) AS e, echo_small(id) AS s FROM t").await;
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    assert_eq!(shown.matches("InferenceExec").count(), 1, "{shown}");
    let out = collect(plan, ctx.task_ctx()).await.unwrap();
    let mut rows = 0;
    for b in &out {
        let ids = b.column(0).as_primitive::<Int64Type>();
        for c in [1, 2] {
            let got = b.column(c).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                assert_eq!(got.value(i), ids.value(i) * 10 + 1);
            }
        }
        rows += b.num_rows();
    }
    let sizes = small.sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), rows);
    assert!(sizes.iter().all(|&n| n <= 5), "{sizes:?}");
    let big = calls.sizes.lock().unwrap().clone();
    assert!(big.iter().any(|&n| n > 5), "{big:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_executed_again_reports_its_own_busy_share() {
    // A slow model (20 ms a call): busy most of each run. Run twice, the
    // share is still this run's, not both runs' busy time over one run.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(20), None);
    ctx.register_table("t", Arc::new(table(2, 4, 8))).unwrap();
    set(&ctx, "quiver.inference.batch_size", 8).await;
    let plan = plan(&ctx, "SELECT id, echo(id) AS e FROM t").await;
    for run in 0..2 {
        collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let metrics = find_inference(&plan)
            .and_then(|e| e.metrics())
            .expect("metrics");
        let pct = metrics
            .sum_by_name("model_busy_pct")
            .map(|m| m.as_usize())
            .expect("model_busy_pct");
        assert!((1..=100).contains(&pct), "run {run}: {pct}%");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_busy_counts_calls_that_overlap_until_a_limit_ends_the_query() {
    // Calls of 16 rows taking 20 ms, three in flight, never a gap between
    // them until LIMIT 20 ends the query (after two calls): the busy time
    // is counted as calls start and end, not only once none runs (which
    // read 1 ns here).
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(20), None);
    one_batch_in_slices_of_4(&ctx).await;
    set(&ctx, "quiver.inference.replicas", 2).await;
    let plan = plan(&ctx, "SELECT id FROM t WHERE echo(id) IS NOT NULL LIMIT 20").await;
    let out = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 20);
    let busy = find_inference(&plan)
        .and_then(|e| e.metrics())
        .and_then(|m| m.sum_by_name("model_busy"))
        .map(|m| m.as_usize())
        .expect("model_busy");
    assert!(busy >= 20_000_000, "model_busy {busy} ns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_run_calls_side_by_side() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::from_millis(40), None);
    ctx.register_table("t", Arc::new(table(4, 8, 16))).unwrap();
    set(&ctx, "quiver.inference.batch_size", 16).await;
    let run = |replicas: u64| {
        let ctx = ctx.clone();
        async move {
            set(&ctx, "quiver.inference.replicas", replicas).await;
            let started = std::time::Instant::now();
            let plan = plan(&ctx, "SELECT echo(id) FROM t").await;
            let out = collect(plan, ctx.task_ctx()).await.unwrap();
            assert!(out.iter().map(|b| b.num_rows()).sum::<usize>() > 500);
            started.elapsed()
        }
    };
    // About 36 calls of 40 ms: one at a time (plus one preparing) against
    // four at a time.
    let one = run(1).await;
    let four = run(4).await;
    assert!(four * 3 < one * 2, "4 replicas {four:?}, 1 replica {one:?}");
}

/// 1,600 rows of 10 KB each (16 MB) over 8 partitions.
fn wide_table() -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("blob", DataType::Utf8, false),
    ]));
    let data = (0..8i64)
        .map(|p| {
            (0..10i64)
                .map(|b| {
                    let ids: Int64Array = (0..20).map(|i| p * 1000 + b * 20 + i).collect();
                    let blobs: datafusion::arrow::array::StringArray =
                        (0..20).map(|_| Some("x".repeat(10_000))).collect();
                    RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(blobs)])
                        .expect("batch")
                })
                .collect()
        })
        .collect();
    MemTable::try_new(schema, data).expect("table")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queues_wait_for_memory_and_fail_cleanly_when_a_slice_cannot_fit() {
    // 1 MB: a few slices of 4 rows (40 KB) at a time; the query waits for
    // memory instead of failing, and finishes.
    let calls = Arc::new(Calls::default());
    let ctx = context_with_memory(&calls, Duration::from_millis(1), None, Some(1 << 20));
    ctx.register_table("t", Arc::new(wide_table())).unwrap();
    set(&ctx, "quiver.inference.batch_size", 16).await;
    let out = ctx
        .sql("SELECT max(length(blob)), count(echo(id)) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out[0].column(1).as_primitive::<Int64Type>().value(0), 1600);
    // 16 KB: not one slice fits; a clear error, not a hang or a crash.
    let ctx = context_with_memory(&calls, Duration::ZERO, None, Some(16 << 10));
    ctx.register_table("t", Arc::new(wide_table())).unwrap();
    set(&ctx, "quiver.inference.batch_size", 16).await;
    let err = ctx
        .sql("SELECT max(length(blob)), count(echo(id)) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Resources exhausted"), "{err}");
    assert!(err.contains("InferenceExec"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_read_one_after_another_never_wait_for_rows_that_cannot_come() {
    // The consumer reads partition 0 to its end before it looks at
    // partition 1: the other partitions' queues fill and their producers
    // block, so the batcher runs what it has instead of waiting out an
    // (hour-long) max_wait.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table(4, 20, 10))).unwrap();
    set(&ctx, "quiver.inference.batch_size", 64).await;
    set(&ctx, "quiver.inference.max_wait_ms", 3600000).await;
    let plan = plan(&ctx, "SELECT id, echo(id) FROM t").await;
    let read = async {
        let mut rows = 0;
        for p in 0..plan.output_partitioning().partition_count() {
            let mut stream = plan.execute(p, ctx.task_ctx()).unwrap();
            while let Some(batch) = stream.next().await {
                rows += batch.unwrap().num_rows();
            }
        }
        rows
    };
    let rows = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("no stall");
    assert_eq!(rows, calls.rows.load(Ordering::SeqCst));
    assert!(rows >= 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_row_input_batches_still_make_full_calls() {
    // 8 partitions of 1-row batches (as a scan of a few large files may
    // deliver them): queues of 4 batches each could hold 32 rows, half a
    // call; small batches are put together first, so calls are full.
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table_of(8, 60, |_, _| 1)))
        .unwrap();
    set(&ctx, "quiver.inference.batch_size", 64).await;
    set(&ctx, "quiver.inference.max_wait_ms", 600000).await;
    let plan = plan(&ctx, "SELECT id, echo(id) FROM t").await;
    let out = collect(plan, ctx.task_ctx()).await.unwrap();
    let rows: usize = out.iter().map(|b| b.num_rows()).sum();
    let sizes = calls.sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), rows);
    let short = sizes.iter().filter(|&&s| s < 64).count();
    assert!(short <= 2, "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_shows_every_setting_in_both_formats() {
    let calls = Arc::new(Calls::default());
    let ctx = context(&calls, Duration::ZERO, None);
    ctx.register_table("t", Arc::new(table(2, 1, 5))).unwrap();
    set(&ctx, "quiver.inference.queue_depth", 6).await;
    set(&ctx, "quiver.inference.max_wait_ms", 40).await;
    let plan = plan(&ctx, "SELECT echo(id) FROM t").await;
    let indent = displayable(plan.as_ref()).indent(true).to_string();
    assert!(
        indent.contains("InferenceExec: batch_size=32, replicas=1, queue_depth=6, max_wait=40ms"),
        "{indent}"
    );
    let tree = displayable(plan.as_ref()).tree_render().to_string();
    // The tree format shows `key: value` lines.
    for setting in [
        "batch_size: 32",
        "replicas: 1",
        "queue_depth: 6",
        "max_wait: 40ms",
    ] {
        assert!(tree.contains(setting), "{setting} missing: {tree}");
    }
}
