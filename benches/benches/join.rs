//! The join benchmark of issue 3: a 5M-row fact table ⋈ a 1M-row
//! dimension table (generated Parquet), with both sides hash-repartitioned
//! on the key (`mode=Partitioned`):
//!
//! ```sql
//! SELECT d.category, count(*), sum(f.amount)
//! FROM fact f JOIN dim d ON f.key = d.id GROUP BY d.category
//! ```
//!
//! Each run is a child process of its own, so that its peak RSS is its
//! own:
//!
//! - **unlimited**: the hash join with no memory limit; its build side's
//!   size comes from `EXPLAIN ANALYZE` (`build_mem_used`);
//! - **under the limit**: the hash join, then the sort-merge join
//!   (`datafusion.optimizer.prefer_hash_join = false`: both sides sorted,
//!   spilling to disk, and merged) under `QUIVER_BENCH_JOIN_LIMIT`
//!   (default 24MB, smaller than the build side). DataFusion 55's hash
//!   join does not spill: it is expected to fail with "Resources
//!   exhausted", and the benchmark prints the error;
//! - **the least limit**: for each join, the smallest limit (to 2 MB)
//!   under which it completes, found by bisection, and its time there
//!   against the unlimited hash join's, its spills and its peak RSS. The
//!   result must be the unlimited run's.
//!
//! Under a limit, each sort sets aside 1 MB for merging its spills
//! (`datafusion.execution.sort_spill_reservation_bytes`; 10 MB by
//! default, more than a small limit has for all of them).
//!
//! `QUIVER_BENCH_ROWS` (5,000,000), `QUIVER_BENCH_DIM_ROWS` (1,000,000)
//! and `QUIVER_BENCH_ROUNDS` (3, medians) change it. Run with
//! `cargo bench -p quiver-benches --bench join`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use datafusion::arrow::util::pretty::pretty_format_batches;
use quiver::{Quiver, QuiverConfig};
use quiver_benches::{corpus_dir, env_usize, explain_lines, median, peak_rss_mb};

const QUERY: &str = "SELECT d.category, count(*) AS n, sum(CAST(f.amount * 100 AS BIGINT)) AS cents \
                     FROM fact f JOIN dim d ON f.key = d.id \
                     GROUP BY d.category ORDER BY d.category";

/// `datafusion.execution.sort_spill_reservation_bytes` under a limit.
const SORT_RESERVATION: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let rows = env_usize("QUIVER_BENCH_ROWS", 5_000_000);
    let dim_rows = env_usize("QUIVER_BENCH_DIM_ROWS", 1_000_000);
    let dir = corpus_dir(&format!("star-{rows}-{dim_rows}"));
    let (fact, dim) = (dir.join("fact.parquet"), dir.join("dim.parquet"));
    if !fact.exists() || !dim.exists() {
        let t = Instant::now();
        quiver::sample::write_star_schema(&dir, rows, dim_rows)?;
        println!(
            "generated {rows} fact rows and {dim_rows} dimension rows in {:.1?}",
            t.elapsed()
        );
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let join = args.get(at + 1).map(String::as_str).unwrap_or_default();
        let limit = args.get(at + 2).map(String::as_str);
        return child(join, limit, &fact, &dim);
    }

    let limit = std::env::var("QUIVER_BENCH_JOIN_LIMIT").unwrap_or_else(|_| "24MB".into());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 3).max(1);
    println!(
        "{rows}-row fact ⋈ {dim_rows}-row dimension (Parquet), {threads} cores, {rounds} rounds (medians)"
    );
    let unlimited = run_child("hash", None, rounds)?;
    let build_mb: f64 = unlimited.field("build_mb").parse().unwrap_or(f64::NAN);
    println!(
        "hash join, unlimited: {:.2} s, {:.2} M fact rows/s, build side {build_mb:.1} MB, peak RSS {} MB",
        unlimited.seconds,
        rows as f64 / unlimited.seconds / 1e6,
        unlimited.field("peak_rss_mb"),
    );
    let expected = unlimited.field("result");
    for join in ["hash", "merge"] {
        let name = if join == "hash" {
            "hash join"
        } else {
            "sort-merge join"
        };
        let under = run_child(join, Some(&limit), rounds)?;
        match under.field("error").as_str() {
            "" => println!(
                "{name} under {limit}: {}",
                under.summary(&unlimited, &expected)
            ),
            error => println!("{name} under {limit}: failed cleanly: {error}"),
        }
        // The least limit it completes under, to 2 MB: bisection between
        // a limit that fails and one that does not.
        let (mut low, mut high) = (0usize, 256usize);
        while high - low > 2 {
            let mid = (low + high) / 2;
            let report = run_child(join, Some(&format!("{mid}MB")), 1)?;
            if report.field("error").is_empty() {
                high = mid;
            } else {
                low = mid;
            }
        }
        let least = run_child(join, Some(&format!("{high}MB")), rounds)?;
        if !least.field("error").is_empty() {
            println!("{name}: does not complete under {high} MB either");
            continue;
        }
        println!(
            "{name}, the least limit it completes under: {high} MB ({:.2}× the unlimited build side): {}",
            high as f64 / build_mb,
            least.summary(&unlimited, &expected)
        );
        if least.field("result") != expected {
            return Err(format!("the {name}'s result under {high} MB differs").into());
        }
    }
    Ok(())
}

/// Runs a child for `join` under `limit` (none: unlimited) and returns
/// what it reported.
fn run_child(
    join: &str,
    limit: Option<&str>,
    rounds: usize,
) -> Result<Report, Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--child", join])
        .args(limit)
        .env("QUIVER_BENCH_ROUNDS", rounds.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "{join} under {limit:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(Report::parse(&stdout))
}

/// What a child printed: `key=value` words on its `result:` line.
struct Report {
    seconds: f64,
    fields: Vec<(String, String)>,
}

impl Report {
    fn parse(out: &str) -> Self {
        let line = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("result:"))
            .unwrap_or_default();
        let fields: Vec<(String, String)> = line
            .split(" ; ")
            .filter_map(|w| {
                let (k, v) = w.trim().split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        let seconds = fields
            .iter()
            .find(|(k, _)| k == "seconds")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(f64::NAN);
        Self { seconds, fields }
    }

    /// Its time against `unlimited`'s, its spills, its peak RSS, and
    /// whether its result is `expected`.
    fn summary(&self, unlimited: &Report, expected: &str) -> String {
        format!(
            "{:.2} s = {:.2}× the unlimited time, {} spills ({} MB), peak RSS {} MB, same result: {}",
            self.seconds,
            self.seconds / unlimited.seconds,
            self.field("spills"),
            self.field("spilled_mb"),
            self.field("peak_rss_mb"),
            self.field("result") == expected
        )
    }

    fn field(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// Runs `join` (`hash` or `merge`) under `limit` and prints its
/// `result:` line.
fn child(
    join: &str,
    limit: Option<&str>,
    fact: &Path,
    dim: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let case = format!("{join}, limit {}", limit.unwrap_or("none"));
    let hash = match join {
        "hash" => true,
        "merge" => false,
        other => return Err(format!("no join {other}").into()),
    };
    let limited = limit.is_some();
    let mut config = QuiverConfig::default().with_env_overrides()?;
    if let Some(limit) = limit {
        config.set("exec.memory_limit", limit, "bench")?;
    }
    let q = Quiver::builder().config(config).build()?;
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        q.register_parquet("fact", &fact.display().to_string())
            .await?;
        q.register_parquet("dim", &dim.display().to_string())
            .await?;
        if limited {
            // Each sort (the merge join's two, the final ORDER BY) sets
            // aside this much for merging its spills: 10 MB by default,
            // more than a small limit has for all of them.
            q.collect(&format!(
                "SET datafusion.execution.sort_spill_reservation_bytes = {SORT_RESERVATION}"
            ))
            .await?;
        }
        if !hash {
            q.collect("SET datafusion.optimizer.prefer_hash_join = false")
                .await?;
        }
        // The plan once, with its metrics: the join's mode, the build
        // side's memory, the spills.
        let started = Instant::now();
        let analyzed = match q.collect(&format!("EXPLAIN ANALYZE {QUERY}")).await {
            Ok(b) => b,
            Err(e) => {
                failed(&case, &e, started);
                return Ok(());
            }
        };
        let explain_s = started.elapsed().as_secs_f64();
        let plan = explain_lines(&analyzed);
        let joins: Vec<&String> = plan
            .iter()
            .filter(|l| l.contains("HashJoinExec") || l.contains("SortMergeJoin"))
            .collect();
        for line in &joins {
            let shown: String = line.trim().chars().take(160).collect();
            println!("{case}: {shown}…");
        }
        let sum = |name: &str| -> f64 {
            plan.iter()
                .flat_map(|l| metric_values(l, name))
                .sum::<f64>()
        };
        let mut times = vec![];
        let mut result = String::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let batches = match q.collect(QUERY).await {
                Ok(b) => b,
                // Near the least limit, one run may fit and the next not.
                Err(e) => {
                failed(&case, &e, started);
                return Ok(());
            }
            };
            times.push(t.elapsed());
            result = pretty_format_batches(&batches)?.to_string();
        }
        let seconds = median(times).as_secs_f64();
        println!(
            "{case}: median {seconds:.2} s over {rounds} rounds (the EXPLAIN ANALYZE run: {explain_s:.2} s)"
        );
        const MIB: f64 = 1024.0 * 1024.0;
        println!(
            "result: seconds={seconds:.3} ; build_mb={:.1} ; spills={:.0} ; spilled_mb={:.1} ; peak_rss_mb={:.0} ; result={}",
            sum("build_mem_used") / MIB,
            sum("spill_count"),
            sum("spilled_bytes") / MIB,
            peak_rss_mb(),
            result.replace('\n', "/")
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// Prints the `result:` line of a run that failed with `error`.
fn failed(case: &str, error: &dyn std::fmt::Display, started: Instant) {
    let error = error.to_string();
    let first = error.lines().next().unwrap_or_default();
    println!("{case}: {first}");
    if std::env::var_os("QUIVER_BENCH_VERBOSE").is_some() {
        println!("{error}");
    }
    println!(
        "result: seconds={:.3} ; error={first} ; peak_rss_mb={:.0}",
        started.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
}

/// The values of metric `name` on an `EXPLAIN ANALYZE` line, in bytes
/// or units where they carry one (`1.5 MB`, `2.50 K`, `12`).
fn metric_values(line: &str, name: &str) -> Vec<f64> {
    let Some(metrics) = line.split_once("metrics=[") else {
        return vec![];
    };
    metrics
        .1
        .split(", ")
        .filter_map(|m| {
            let value = m.trim().strip_prefix(&format!("{name}="))?;
            let value = value.trim_end_matches(']');
            let (number, unit) = value.split_once(' ').unwrap_or((value, ""));
            // Sizes in binary units, counts in decimal ones (DataFusion's
            // `human_readable_size` and `human_readable_count`).
            let scale = match unit {
                "KB" => 1024.0,
                "MB" => 1024.0 * 1024.0,
                "GB" => 1024.0 * 1024.0 * 1024.0,
                "K" => 1e3,
                "M" => 1e6,
                _ => 1.0,
            };
            number.parse::<f64>().ok().map(|n| n * scale)
        })
        .collect()
}
