//! The benchmark's baseline for `quiver run`: the same script through bare
//! DataFusion in a fresh process — register both tables with `CREATE
//! EXTERNAL TABLE`, run the query, print CSV to stdout and `Time: … ms` for
//! the query to stderr, as `quiver run --format csv --timing` does.
//!
//! Usage: `df_star FACT.parquet DIM.parquet QUERY`

use std::time::Instant;

use datafusion::arrow::csv::WriterBuilder;
use datafusion::prelude::SessionContext;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [fact, dim, query] = args.as_slice() else {
        return Err("usage: df_star FACT.parquet DIM.parquet QUERY".into());
    };
    let ctx = SessionContext::new();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE fact STORED AS PARQUET LOCATION '{fact}'"
    ))
    .await?;
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE dim STORED AS PARQUET LOCATION '{dim}'"
    ))
    .await?;
    let started = Instant::now();
    let batches = ctx.sql(query).await?.collect().await?;
    let mut w = WriterBuilder::new()
        .with_header(true)
        .build(std::io::stdout());
    for b in &batches {
        w.write(b)?;
    }
    eprintln!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}
