//! The batching benchmark of issue 3: `InferenceExec`'s batch fill and
//! throughput, with stand-ins for decoding and for the model whose costs
//! are set, so that the regimes of a GPU machine can be run on any
//! machine.
//!
//! - `decode(id)`, evaluated by the producers as `image_decode` is, takes
//!   `QUIVER_BENCH_DECODE_US` (15,900 µs: the H100 machine's 504 images/s
//!   over 8 partitions) per row on average, sleeping the producer's
//!   thread as a decoder would occupy it: rows cost in proportion to the
//!   pixels of the inference benchmark's four photo sizes, which they
//!   cycle through, each ± up to `QUIVER_BENCH_DECODE_JITTER_PCT` (30)%.
//! - `model(x)`, the async "model", runs one call at a time (one worker,
//!   as one replica does) and takes `QUIVER_BENCH_MODEL_CALL_US` (5,000)
//!   plus `QUIVER_BENCH_MODEL_ROW_US` (625) per row: 45 ms for 64 rows,
//!   the H100's 1,422 images/s.
//!
//! Both regimes at `QUIVER_BENCH_PARTITIONS` (8) partitions,
//! `QUIVER_BENCH_ROWS` (2,000) rows, batch size `QUIVER_BENCH_BATCH` (64),
//! each at every `max_wait_ms` of `QUIVER_BENCH_MAX_WAITS` (`100,250,500`):
//! - **decode slower**: the costs above; rows arrive at 8 / 15.9 ms = 503
//!   rows/s and the model could take 1,422. Target: mean batch fill ≥ 90%,
//!   throughput ≥ 0.9× the arrival rate.
//! - **model slower**: decoding 100× cheaper: throughput ≥ 0.9× the
//!   model's own rate, fill ≥ 90%.
//!
//! The runtime has `QUIVER_BENCH_THREADS` (16) worker threads, as the
//! machine the figures stand for has cores: the stand-ins sleep, so this
//! machine's own cores do not matter. Run with
//! `cargo bench -p quiver-benches --bench batching`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::{Result, exec_err};
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver::sample::PHOTO_SIZES;
use quiver_benches::env_usize;
use quiver_exec::{InferenceRule, StatementProgress};
use quiver_settings::QuiverSettings;

/// The calls the stand-in model took.
#[derive(Debug, Default)]
struct Tally {
    calls: AtomicUsize,
    rows: AtomicUsize,
}

/// `decode(id)`: `id`, after `per_row` per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Decode {
    signature: Signature,
    per_row: Duration,
    /// Percent.
    jitter: u32,
    /// The first id of each partition, which costs `stagger` times the
    /// partition's number more.
    starts: Vec<i64>,
    stagger: Duration,
}

impl ScalarUDFImpl for Decode {
    fn name(&self) -> &str {
        "decode"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ids = args.args[0].to_array(args.number_rows)?;
        let pixels = PHOTO_SIZES.map(|(w, h)| f64::from(w * h));
        let mean = pixels.iter().sum::<f64>() / pixels.len() as f64;
        let mut took = Duration::ZERO;
        for id in ids.as_primitive::<Int64Type>().iter().flatten() {
            let size = pixels[id.unsigned_abs() as usize % pixels.len()] / mean;
            took += self.per_row.mul_f64(self.cost(id, size));
            if let Some(p) = self.starts.iter().position(|&s| s == id) {
                took += times(self.stagger, p);
            }
        }
        std::thread::sleep(took);
        Ok(ColumnarValue::Array(ids))
    }
}

impl Decode {
    /// Row `id`'s cost in `per_row`s: `size` (its photo's pixels against
    /// the mean, as the inference benchmark's corpus cycles through four
    /// sizes, VGA to full HD), up to `jitter` more or less (the content),
    /// drawn from the id.
    fn cost(&self, id: i64, size: f64) -> f64 {
        // splitmix64 of the id, as a number in [-1, 1).
        let mut z = id.unsigned_abs().wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        size * (1.0 + f64::from(self.jitter) / 100.0 * unit)
    }
}

/// `model(x)`: `x + 1`, one call at a time, after `per_call` plus
/// `per_row` per row.
#[derive(Debug)]
struct Model {
    signature: Signature,
    per_call: Duration,
    per_row: Duration,
    worker: tokio::sync::Mutex<()>,
    tally: Arc<Tally>,
}

impl PartialEq for Model {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tally, &other.tally)
    }
}
impl Eq for Model {}
impl std::hash::Hash for Model {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.tally) as usize).hash(state);
    }
}

impl ScalarUDFImpl for Model {
    fn name(&self) -> &str {
        "model"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("model runs asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for Model {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let ids = args.args[0].to_array(rows)?;
        let _worker = self.worker.lock().await;
        tokio::time::sleep(self.per_call + times(self.per_row, rows)).await;
        self.tally.calls.fetch_add(1, Ordering::SeqCst);
        self.tally.rows.fetch_add(rows, Ordering::SeqCst);
        let out: Int64Array = ids
            .as_primitive::<Int64Type>()
            .iter()
            .map(|id| id.map(|v| v + 1))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The stand-ins' costs.
#[derive(Debug, Clone, Copy)]
struct Costs {
    decode_row: Duration,
    /// Percent.
    jitter: u32,
    model_call: Duration,
    model_row: Duration,
}

/// `d` times `n`.
fn times(d: Duration, n: usize) -> Duration {
    d.mul_f64(n as f64)
}

fn micros(name: &str, default: usize) -> Duration {
    Duration::from_micros(u64::try_from(env_usize(name, default)).unwrap_or(u64::MAX))
}

/// A context with the stand-ins and `rows` ids over `partitions`
/// partitions (one batch each: the producers cut it into slices).
fn context(
    costs: Costs,
    partitions: usize,
    rows: usize,
    stagger: Duration,
    tally: &Arc<Tally>,
) -> SessionContext {
    let each = rows.div_ceil(partitions);
    let starts = (0..partitions).map(|p| (p * each) as i64).collect();
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_option_extension(QuiverSettings::default())
        .with_extension(Arc::new(StatementProgress::default()));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(InferenceRule::for_every_async_function()))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(ScalarUDF::new_from_impl(Decode {
        signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        per_row: costs.decode_row,
        jitter: costs.jitter,
        starts,
        stagger,
    }));
    ctx.register_udf(
        AsyncScalarUDF::new(Arc::new(Model {
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
            per_call: costs.model_call,
            per_row: costs.model_row,
            worker: tokio::sync::Mutex::new(()),
            tally: tally.clone(),
        }))
        .into_scalar_udf(),
    );
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let data = (0..partitions)
        .map(|p| {
            let start = (p * each).min(rows);
            let end = ((p + 1) * each).min(rows);
            let ids: Int64Array = (start as i64..end as i64).collect();
            vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).expect("batch")]
        })
        .collect();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, data).expect("table")),
    )
    .expect("register");
    ctx
}

/// One run: rows/s and mean batch fill.
async fn run(
    costs: Costs,
    partitions: usize,
    rows: usize,
    batch: usize,
    stagger: Duration,
    wait: u64,
) -> (f64, f64) {
    let tally = Arc::new(Tally::default());
    let ctx = context(costs, partitions, rows, stagger, &tally);
    for (key, value) in [
        ("quiver.inference.batch_size", batch as u64),
        ("quiver.inference.max_wait_ms", wait),
    ] {
        ctx.sql(&format!("SET {key} = {value}")).await.expect("SET");
    }
    let started = Instant::now();
    let out = ctx
        .sql("SELECT sum(model(decode(id))) FROM t")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("query");
    let seconds = started.elapsed().as_secs_f64();
    let sum = out
        .first()
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0))
        .unwrap_or_default();
    let n = rows as i64;
    assert_eq!(sum, n * (n - 1) / 2 + n, "every row once, in line");
    let calls = tally.calls.load(Ordering::SeqCst);
    assert_eq!(
        tally.rows.load(Ordering::SeqCst),
        rows,
        "rows through the model"
    );
    (rows as f64 / seconds, rows as f64 / (calls * batch) as f64)
}

fn main() {
    let threads = env_usize("QUIVER_BENCH_THREADS", 16);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run_all(threads));
}

async fn run_all(threads: usize) {
    let partitions = env_usize("QUIVER_BENCH_PARTITIONS", 8);
    let rows = env_usize("QUIVER_BENCH_ROWS", 2_000);
    let batch = env_usize("QUIVER_BENCH_BATCH", 64);
    let listed = std::env::var("QUIVER_BENCH_MAX_WAITS").unwrap_or_else(|_| "100,250,500".into());
    let waits: Vec<u64> = listed
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let decode_slower = Costs {
        decode_row: micros("QUIVER_BENCH_DECODE_US", 15_900),
        jitter: u32::try_from(env_usize("QUIVER_BENCH_DECODE_JITTER_PCT", 30)).unwrap_or(100),
        model_call: micros("QUIVER_BENCH_MODEL_CALL_US", 5_000),
        model_row: micros("QUIVER_BENCH_MODEL_ROW_US", 625),
    };
    let model_slower = Costs {
        decode_row: decode_slower.decode_row / 100,
        ..decode_slower
    };
    println!("{rows} rows, {partitions} partitions, batch_size {batch}, {threads} runtime threads");
    // InferenceExec hands rows on in slices of a quarter call: partitions
    // started a slice's decoding apart, in turn, deliver them evenly.
    let even = |c: &Costs| times(c.decode_row, batch / 4).div_f64(partitions as f64);
    for (name, costs, stagger) in [
        (
            "decode slower, partitions in step",
            decode_slower,
            Duration::ZERO,
        ),
        (
            "decode slower, partitions staggered",
            decode_slower,
            even(&decode_slower),
        ),
        ("model slower", model_slower, even(&model_slower)),
    ] {
        let arrival = partitions as f64 / costs.decode_row.as_secs_f64();
        let model = batch as f64 / (costs.model_call + times(costs.model_row, batch)).as_secs_f64();
        let slower = arrival.min(model);
        println!(
            "{name}: decoding {:.0} µs/row per partition ({arrival:.0} rows/s over {partitions} partitions), partition p starting p × {:.1} ms late; model {:.0} µs/call + {:.0} µs/row ({model:.0} rows/s in full calls)",
            costs.decode_row.as_secs_f64() * 1e6,
            stagger.as_secs_f64() * 1e3,
            costs.model_call.as_secs_f64() * 1e6,
            costs.model_row.as_secs_f64() * 1e6,
        );
        for &wait in &waits {
            let (rate, fill) = run(costs, partitions, rows, batch, stagger, wait).await;
            println!(
                "  max_wait_ms {wait}: {rate:.0} rows/s = {:.2}× the slower stage (target >= 0.9), mean batch fill {:.0}% (target >= 90%)",
                rate / slower,
                fill * 100.0
            );
        }
    }
}
