//! Embedding Quiver in a Rust program: build the engine from a config
//! (with `QUIVER_*` overrides), register files as tables, run SQL, stream
//! the result batch by batch, and export with `COPY`.
//!
//! ```text
//! cargo run -p quiver --example embed
//! ```

use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use quiver::{Quiver, QuiverConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Settings: TOML text here; `QuiverConfig::from_file("quiver.toml")` in
    // a real program. Environment variables such as
    // QUIVER_EXEC_MEMORY_LIMIT=2GiB override it.
    let config = QuiverConfig::from_toml(
        r#"
        [exec]
        memory_limit = "1GiB"
        batch_size = 4096
        "#,
    )?
    .with_env_overrides()?;
    let quiver = Quiver::builder().config(config).build()?;

    // Some data to query: the built-in sample dataset.
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("sample-data");
    quiver::sample::generate(&data)?;
    let data = data.display();

    // Files become tables: a directory, a single file, a glob.
    quiver
        .register_parquet("orders", &format!("{data}/orders/"))
        .await?;
    quiver
        .register_csv("customers", &format!("{data}/customers.csv"))
        .await?;
    println!("tables: {:?}", quiver.table_names());

    // Stream a result: batches arrive as they are computed.
    let mut stream = quiver
        .execute_stream(
            "SELECT c.country, count(*) AS orders, round(sum(o.amount), 2) AS revenue \
             FROM orders o JOIN customers c ON o.customer_id = c.id \
             GROUP BY c.country ORDER BY revenue DESC LIMIT 3",
        )
        .await?;
    while let Some(batch) = stream.next().await {
        println!("{}", pretty_format_batches(&[batch?])?);
    }

    // Table functions read files without registering them.
    let batches = quiver
        .collect(&format!(
            "SELECT kind, count(*) AS n FROM read_json('{data}/events.json') \
             GROUP BY kind ORDER BY n DESC"
        ))
        .await?;
    println!("{}", pretty_format_batches(&batches)?);

    // COPY writes Parquet (or CSV/JSON); a failed COPY leaves nothing.
    let out = dir.path().join("top_customers.parquet");
    quiver
        .collect(&format!(
            "COPY (SELECT customer_id, sum(amount) AS spent FROM orders \
             GROUP BY customer_id ORDER BY spent DESC LIMIT 10) \
             TO '{}' STORED AS PARQUET",
            out.display()
        ))
        .await?;
    let n = quiver
        .collect(&format!(
            "SELECT count(*) AS n FROM read_parquet('{}')",
            out.display()
        ))
        .await?;
    println!("{}", pretty_format_batches(&n)?);

    // The DataFusion context is there for everything else.
    let df = quiver.context().table("orders").await?;
    println!("orders has {} rows", df.count().await?);
    Ok(())
}
