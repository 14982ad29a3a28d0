//! `quiver demo`: writes the sample dataset, runs the example queries of
//! `queries/` (compiled into the binary) over it, then serves it to
//! Postgres clients unless `--no-serve`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use quiver::TableDeclaration;

use crate::args::{EngineArgs, Format, OutputArgs};
use crate::run::run_script;

/// The example queries, in the order the demo runs them.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "queries/01_revenue_by_country.sql",
        include_str!("../../../queries/01_revenue_by_country.sql"),
    ),
    (
        "queries/02_category_trends.sql",
        include_str!("../../../queries/02_category_trends.sql"),
    ),
    (
        "queries/03_export_monthly.sql",
        include_str!("../../../queries/03_export_monthly.sql"),
    ),
    (
        "queries/04_event_funnel.sql",
        include_str!("../../../queries/04_event_funnel.sql"),
    ),
    (
        "queries/05_images.sql",
        include_str!("../../../queries/05_images.sql"),
    ),
    (
        "queries/06_image_transforms.sql",
        include_str!("../../../queries/06_image_transforms.sql"),
    ),
    (
        "queries/07_near_duplicates.sql",
        include_str!("../../../queries/07_near_duplicates.sql"),
    ),
    (
        "queries/08_audio.sql",
        include_str!("../../../queries/08_audio.sql"),
    ),
    (
        "queries/09_models.sql",
        include_str!("../../../queries/09_models.sql"),
    ),
    (
        "queries/10_classify.sql",
        include_str!("../../../queries/10_classify.sql"),
    ),
    (
        "queries/11_transcribe.sql",
        include_str!("../../../queries/11_transcribe.sql"),
    ),
    (
        "queries/12_zero_shot.sql",
        include_str!("../../../queries/12_zero_shot.sql"),
    ),
    (
        "queries/13_inference.sql",
        include_str!("../../../queries/13_inference.sql"),
    ),
    (
        "queries/14_media_joins.sql",
        include_str!("../../../queries/14_media_joins.sql"),
    ),
    (
        "queries/15_video.sql",
        include_str!("../../../queries/15_video.sql"),
    ),
];

/// The tables the demo serves to every client, as a config would declare
/// them: the orders (Parquet), the customers (CSV, held in memory) and the
/// photos (images): (name, format, location, in_memory).
const SHARED: &[(&str, &str, &str, bool)] = &[
    ("orders", "parquet", "sample-data/orders/", false),
    ("customers", "csv", "sample-data/customers.csv", true),
    ("photos", "images", "sample-data/images/", false),
];

/// Generates `workdir/sample-data` and runs every example query there.
pub async fn run_demo(
    workdir: &Path,
    serve_on: Option<&str>,
    engine_args: &EngineArgs,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(workdir)
        .with_context(|| format!("cannot create {}", workdir.display()))?;
    std::env::set_current_dir(workdir)
        .with_context(|| format!("cannot enter {}", workdir.display()))?;
    let mut files = quiver::sample::generate(Path::new("sample-data"))?;
    files.extend(quiver::sample::write_models(Path::new("sample-data"))?);
    // Video test patterns, encoded by the ffmpeg command (.ci/setup installs it).
    files.extend(quiver::sample_video::write_video(Path::new(
        "sample-data/video",
    ))?);
    println!(
        "Sample data: {} files in {}",
        files.len(),
        std::env::current_dir()?.join("sample-data").display()
    );
    let quiver = crate::engine(engine_args).await?;
    let output = OutputArgs {
        format: Format::Table,
        output: None,
        max_rows: 40,
        timing: false,
    };
    let mut sink = output.open()?;
    for (name, sql) in QUERIES {
        println!("== {name} ==");
        if !run_script(&quiver, name, sql, &mut sink, false).await {
            sink.discard();
            return Ok(ExitCode::FAILURE);
        }
    }
    sink.commit()?;
    let Some(listen) = serve_on else {
        println!(
            "\nDone. Try: quiver shell   (then: SELECT * FROM read_parquet('sample-data/orders/') LIMIT 5;)"
        );
        return Ok(ExitCode::SUCCESS);
    };
    // Every client's session sees the sample's tables, as a config's
    // [tables.*] would declare them.
    for (name, format, location, in_memory) in SHARED {
        let table = TableDeclaration {
            format: format.to_string(),
            location: location.to_string(),
            options: Default::default(),
            in_memory: *in_memory,
        };
        quiver
            .share_table(name, &table)
            .await
            .with_context(|| format!("cannot share table {name}"))?;
    }
    println!(
        "\nDone. The same data is now served to Postgres clients (tables {}), e.g.\n  psql -h 127.0.0.1 -p {} -c \"SELECT count(*) FROM orders\"",
        SHARED
            .iter()
            .map(|(n, ..)| *n)
            .collect::<Vec<_>>()
            .join(", "),
        listen.rsplit(':').next().unwrap_or("5433")
    );
    crate::serve(quiver, listen).await?;
    Ok(ExitCode::SUCCESS)
}
