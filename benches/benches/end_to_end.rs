//! End-to-end throughput of a star join, through bare DataFusion, the
//! Quiver library and the `quiver run` binary, measured in one run:
//!
//! ```sql
//! SELECT d.category, count(*), avg(f.amount)
//! FROM fact f JOIN dim d ON f.key = d.id GROUP BY d.category
//! ```
//!
//! over a generated 5M-row Parquet fact table and a 1,000-row dimension
//! table. Run with
//! `cargo build --release -p quiver-cli && cargo bench -p quiver-benches`.
//! Rounds alternate between the three paths so that machine noise hits
//! them alike; the figures are medians. `QUIVER_BENCH_ROWS` and
//! `QUIVER_BENCH_ROUNDS` change the size and the number of rounds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use quiver::Quiver;
use quiver_benches::{env_usize, median};

const QUERY: &str = "SELECT d.category, count(*) AS n, avg(f.amount) AS avg_amount \
                     FROM fact f JOIN dim d ON f.key = d.id \
                     GROUP BY d.category ORDER BY d.category";

/// `target/release/quiver`, beside this bench's own binary.
fn quiver_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("quiver");
    bin.exists().then_some(bin)
}

fn round_rows(batches: &[RecordBatch]) -> String {
    // Averages are compared to 6 decimals: partial sums may add up in a
    // different order between runs.
    let text = pretty_format_batches(batches)
        .map(|t| t.to_string())
        .unwrap_or_default();
    text.lines()
        .map(|l| {
            l.split('|')
                .map(|cell| match cell.trim().parse::<f64>() {
                    Ok(x) if cell.contains('.') => format!("{x:.6}"),
                    _ => cell.trim().to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a command that prints `Time: X ms` for its query on stderr; returns
/// (wall time of the process, the query's own time).
fn timed_process(mut cmd: Command) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let out = cmd.output()?;
    let wall = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {stderr}").into());
    }
    let ms = stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Time: ")?
                .strip_suffix(" ms")?
                .parse::<f64>()
                .ok()
        })
        .next_back()
        .ok_or_else(|| format!("{cmd:?} printed no timing"))?;
    Ok((wall, Duration::from_secs_f64(ms / 1000.0)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful either way, so only --list is answered specially.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let rows = env_usize("QUIVER_BENCH_ROWS", 5_000_000);
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 15).max(1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-data")
        .join(format!("star-{rows}"));
    let (fact, dim) = (dir.join("fact.parquet"), dir.join("dim.parquet"));
    if !fact.exists() || !dim.exists() {
        let t = Instant::now();
        quiver::sample::write_star_schema(&dir, rows, 1_000)?;
        println!("generated {rows} fact rows in {:.1?}", t.elapsed());
    }
    let (fact_s, dim_s) = (fact.display().to_string(), dim.display().to_string());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // Bare DataFusion, defaults.
    let bare = SessionContext::new();
    // Quiver, defaults (memory pool, spilling, object stores).
    let quiver = Quiver::builder().build()?;
    rt.block_on(async {
        bare.register_parquet("fact", &fact_s, ParquetReadOptions::default())
            .await?;
        bare.register_parquet("dim", &dim_s, ParquetReadOptions::default())
            .await?;
        quiver.register_parquet("fact", &fact_s).await?;
        quiver.register_parquet("dim", &dim_s).await?;
        Ok::<_, datafusion::error::DataFusionError>(())
    })?;

    let script = dir.join("star.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE EXTERNAL TABLE fact STORED AS PARQUET LOCATION '{fact_s}';\n\
             CREATE EXTERNAL TABLE dim STORED AS PARQUET LOCATION '{dim_s}';\n{QUERY};\n"
        ),
    )?;
    let cli = quiver_binary();
    if cli.is_none() {
        println!(
            "note: target/release/quiver not found; run `cargo build --release -p quiver-cli` to time `quiver run` too"
        );
    }

    // Warm-up, and the results must agree.
    let (a, b) = rt.block_on(async {
        let a = bare.sql(QUERY).await?.collect().await?;
        let b = quiver.collect(QUERY).await?;
        Ok::<_, datafusion::error::DataFusionError>((a, b))
    })?;
    assert_eq!(
        round_rows(&a),
        round_rows(&b),
        "Quiver and DataFusion disagree"
    );
    println!("{}", pretty_format_batches(&b)?);

    let (mut t_bare, mut t_quiver) = (vec![], vec![]);
    // (whole process, the query's own time) for `quiver run` and for the
    // same script through bare DataFusion in a fresh process.
    let mut p_cli: Vec<(Duration, Duration)> = vec![];
    let mut p_df: Vec<(Duration, Duration)> = vec![];
    for _ in 0..rounds {
        let t = Instant::now();
        rt.block_on(async { bare.sql(QUERY).await?.collect().await })?;
        t_bare.push(t.elapsed());

        let t = Instant::now();
        rt.block_on(quiver.collect(QUERY))?;
        t_quiver.push(t.elapsed());

        if let Some(bin) = &cli {
            let mut cmd = Command::new(bin);
            cmd.args(["run", "--format", "csv", "--timing"])
                .arg(&script);
            p_cli.push(timed_process(cmd)?);
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_df_star"));
            cmd.args([&fact_s, &dim_s, QUERY]);
            p_df.push(timed_process(cmd)?);
        }
    }

    let report = |name: &str, d: Duration, base: Duration| {
        let rate = rows as f64 / d.as_secs_f64();
        let overhead = (d.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0;
        println!(
            "  {name:<28} median {:>9.1} ms  {:>7.2} M rows/s  overhead {overhead:+.1}%",
            d.as_secs_f64() * 1000.0,
            rate / 1e6
        );
    };
    let base = median(t_bare.clone());
    println!("star join + group by, {rows} fact rows, {rounds} rounds (medians)");
    println!("in this process (warm):");
    report("bare DataFusion", base, base);
    report("quiver library", median(t_quiver), base);
    if !p_cli.is_empty() {
        let whole = |v: &[(Duration, Duration)]| median(v.iter().map(|p| p.0).collect());
        let query = |v: &[(Duration, Duration)]| median(v.iter().map(|p| p.1).collect());
        println!("fresh processes (start-up, two CREATE EXTERNAL TABLEs, the query, CSV output):");
        let df_query = query(&p_df);
        report("bare DataFusion, the query", df_query, df_query);
        report("quiver run, the query", query(&p_cli), df_query);
        let df_whole = whole(&p_df);
        report("bare DataFusion, process", df_whole, df_whole);
        report("quiver run, process", whole(&p_cli), df_whole);
    }
    Ok(())
}
